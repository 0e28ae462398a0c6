//! A chunk of rows on its way to one pipeline, reused from chunk to chunk so
//! a long load allocates its strings once, not once per row.

use std::fmt::{Display, Write as _};

use crate::store::BatchRow;

/// Where a row came from: which input (`Loader::sources` index) and which
/// line of it (1-based; the row number for synthetic input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    pub source: u32,
    pub line: u64,
}

/// `rows[..len]` are live; the slots past `len` keep their allocations for
/// the next rows.
pub struct Chunk {
    rows: Vec<BatchRow>,
    origins: Vec<Origin>,
    /// Per slot: strings taken back from the slot's last row, handed out
    /// again as names and values.
    spare: Vec<Vec<String>>,
    len: usize,
}

impl Chunk {
    pub fn new(capacity: usize) -> Self {
        Chunk {
            rows: Vec::with_capacity(capacity),
            origins: Vec::with_capacity(capacity),
            spare: Vec::with_capacity(capacity),
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn rows(&self) -> &[BatchRow] {
        &self.rows[..self.len]
    }

    pub fn origins(&self) -> &[Origin] {
        &self.origins[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Starts a new row at the end of the chunk and returns its builder.
    pub fn push(&mut self, origin: Origin) -> RowBuilder<'_> {
        let i = self.len;
        if i == self.rows.len() {
            self.rows.push(BatchRow::default());
            self.origins.push(origin);
            self.spare.push(Vec::new());
        }
        self.len += 1;
        self.origins[i] = origin;
        let row = &mut self.rows[i];
        let spare = &mut self.spare[i];
        // Move the last row's strings to the spare list instead of dropping
        // them: the next row reuses their buffers.
        row.id.clear();
        for (k, v) in row.set.drain(..) {
            spare.push(k);
            spare.push(v);
        }
        spare.append(&mut row.retract);
        RowBuilder { row, spare }
    }

    /// Drops the row just pushed (it turned out to be malformed).
    pub fn pop(&mut self) {
        self.len = self.len.saturating_sub(1);
    }

    /// Swaps two live rows (with their origins).
    pub fn swap(&mut self, a: usize, b: usize) {
        self.rows.swap(a, b);
        self.origins.swap(a, b);
    }

    /// Moves the rows at `indices` (ascending) to the front, in order, and
    /// keeps only them: what is left to retry.
    pub fn keep_only(&mut self, indices: &[usize]) {
        // Position k < indices[k] has been touched only by earlier swaps of
        // smaller indices, so indices[k] still holds its original row.
        for (k, &i) in indices.iter().enumerate() {
            self.swap(k, i);
        }
        self.len = indices.len();
    }
}

/// Fills one row of a chunk.
pub struct RowBuilder<'a> {
    row: &'a mut BatchRow,
    spare: &'a mut Vec<String>,
}

impl RowBuilder<'_> {
    pub fn id(&mut self, id: &str) {
        self.row.id.push_str(id);
    }

    pub fn id_display(&mut self, id: impl Display) {
        let _ = write!(self.row.id, "{id}");
    }

    pub fn id_str(&self) -> &str {
        &self.row.id
    }

    pub fn set(&mut self, name: &str, value: &str) {
        let name = self.take(name);
        let value = self.take(value);
        self.row.set.push((name, value));
    }

    pub fn set_display(&mut self, name: &str, value: impl Display) {
        let name = self.take(name);
        let mut text = self.take("");
        // Writing into a String cannot fail.
        let _ = write!(text, "{value}");
        self.row.set.push((name, text));
    }

    pub fn retract(&mut self, name: &str) {
        let name = self.take(name);
        self.row.retract.push(name);
    }

    fn take(&mut self, text: &str) -> String {
        let mut s = self.spare.pop().unwrap_or_default();
        s.clear();
        s.push_str(text);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(line: u64) -> Origin {
        Origin { source: 0, line }
    }

    #[test]
    fn slots_are_reset_on_reuse() {
        let mut c = Chunk::new(2);
        let mut r = c.push(origin(1));
        r.id("a");
        r.set("x", "1");
        r.retract("y");
        c.clear();
        let mut r = c.push(origin(2));
        r.id("b");
        r.set("z", "2");
        assert_eq!(c.rows().len(), 1);
        assert_eq!(c.rows()[0].id, "b");
        assert_eq!(c.rows()[0].set, vec![("z".to_string(), "2".to_string())]);
        assert!(c.rows()[0].retract.is_empty());
        assert_eq!(c.origins(), &[origin(2)]);
    }

    #[test]
    fn keep_only_moves_rows_to_the_front_in_order() {
        let mut c = Chunk::new(6);
        for i in 0..6 {
            c.push(origin(i)).id_display(i);
        }
        c.keep_only(&[1, 2, 4, 5]);
        let ids: Vec<_> = c.rows().iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["1", "2", "4", "5"]);
        let lines: Vec<_> = c.origins().iter().map(|o| o.line).collect();
        assert_eq!(lines, [1, 2, 4, 5]);
    }
}
