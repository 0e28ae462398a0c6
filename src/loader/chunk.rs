//! A chunk of rows on its way to one pipeline, reused from chunk to chunk so
//! a long load allocates its strings once, not once per row.
//!
//! A chunk holds each entity id at most once: a row whose id is already in
//! the chunk is merged into the earlier one, in input order (`merge`). A
//! chunk whose calls are partly re-sent (a NOSCRIPT midway, a dropped
//! connection) can then never apply an older row of an id after a newer one.
//!
//! Rows without an event time of their own are merged (the chunk dates them
//! all alike when it is sent, so the later line rightly wins). Rows that
//! carry one (`--event-time-column`) are never merged: one row has one time,
//! and a merged row would date the older row's features with the newer time
//! (beating a value another writer dated in between). The chunk is sent
//! instead, and the row starts the next: the scripts then keep, per
//! feature, the newest event, whatever the order of the lines.

use std::collections::HashMap;
use std::fmt::{Display, Write as _};
use std::hash::{BuildHasherDefault, Hasher};

use crate::scripts::{MAX_RETRACT_PER_ENTITY, MAX_SET_PER_ENTITY};
use crate::store::BatchRow;
use crate::value::FeatureValue;

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
    /// Per slot: the input rows merged into it, in input order (one unless
    /// the id repeated within the chunk).
    origins: Vec<Vec<Origin>>,
    /// Per slot: strings taken back from the slot's last row, handed out
    /// again as names and values.
    spare: Vec<Vec<String>>,
    len: usize,
    /// Per slot: the row passed the reader's checks (see `pipeline`).
    checked: Vec<bool>,
    /// The id hash of each live row to its slot.
    slots: HashMap<u64, usize, BuildHasherDefault<IdHashHasher>>,
    /// Input rows in the live rows (>= `len` when rows were merged).
    inputs: usize,
}

impl Chunk {
    pub fn new(capacity: usize) -> Self {
        Chunk {
            rows: Vec::with_capacity(capacity),
            origins: Vec::with_capacity(capacity),
            spare: Vec::with_capacity(capacity),
            checked: Vec::with_capacity(capacity),
            len: 0,
            slots: HashMap::default(),
            inputs: 0,
        }
    }

    /// Live rows (after merging: distinct ids).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Input rows the live rows stand for.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    pub fn rows(&self) -> &[BatchRow] {
        &self.rows[..self.len]
    }

    /// Per live row, the input rows it holds.
    pub fn origins(&self) -> &[Vec<Origin>] {
        &self.origins[..self.len]
    }

    pub fn clear(&mut self) {
        self.len = 0;
        self.inputs = 0;
        self.slots.clear();
    }

    /// Starts a new row at the end of the chunk and returns its builder.
    /// (The row sources fill a one-row staging chunk this way; the reader
    /// then moves the row on with `absorb_new`, `merge` or `replace`.)
    pub fn push(&mut self, origin: Origin) -> RowBuilder<'_> {
        let i = self.new_slot();
        self.origins[i].push(origin);
        self.inputs += 1;
        let row = &mut self.rows[i];
        let spare = &mut self.spare[i];
        RowBuilder { row, spare }
    }

    /// One more live slot at the end (allocated on first use, else the
    /// dead slot there, still holding its old row).
    fn grow(&mut self) -> usize {
        let i = self.len;
        if i == self.rows.len() {
            self.rows.push(BatchRow::default());
            self.origins.push(Vec::new());
            self.spare.push(Vec::new());
            self.checked.push(false);
        }
        self.len += 1;
        i
    }

    /// A cleared live slot at the end, its strings moved to its spare list.
    fn new_slot(&mut self) -> usize {
        let i = self.grow();
        self.origins[i].clear();
        self.checked[i] = false;
        let row = &mut self.rows[i];
        let spare = &mut self.spare[i];
        // Move the last row's strings to the spare list instead of dropping
        // them: the next row reuses their buffers.
        row.id.clear();
        row.event_time_ms = None;
        for (k, v) in row.set.drain(..) {
            spare.push(k);
            spare.push(v);
        }
        spare.append(&mut row.retract);
        i
    }

    /// Drops the row just pushed (it turned out to be malformed).
    pub fn pop(&mut self) {
        if self.len > 0 {
            self.len -= 1;
            self.inputs -= self.origins[self.len].len();
        }
    }

    /// The slot of the live row whose id hashes to `hash` and is `id`.
    pub fn find(&self, hash: u64, id: &str) -> Option<usize> {
        self.slots
            .get(&hash)
            .copied()
            .filter(|&i| self.rows[i].id == id)
    }

    /// Whether the row in slot `i` passed the caller's checks (`mark_checked`).
    pub fn is_checked(&self, i: usize) -> bool {
        self.checked[i]
    }

    pub fn mark_checked(&mut self, i: usize) {
        self.checked[i] = true;
    }

    /// Moves the last row of `staging` (whose id hashes to `hash`) into a
    /// new slot at the end. The slot's old row goes to `staging`, whose next
    /// `push` recycles its strings.
    pub fn absorb_new(&mut self, staging: &mut Chunk, hash: u64, checked: bool) {
        let Some(s) = staging.len.checked_sub(1) else {
            return;
        };
        let i = self.grow();
        self.put(i, staging, s);
        self.checked[i] = checked;
        self.slots.insert(hash, i);
    }

    /// Replaces the row in slot `i` with the last row of `staging`.
    pub fn replace(&mut self, i: usize, staging: &mut Chunk) {
        if let Some(s) = staging.len.checked_sub(1) {
            self.inputs -= self.origins[i].len();
            self.put(i, staging, s);
            self.checked[i] = true;
        }
    }

    fn put(&mut self, i: usize, staging: &mut Chunk, s: usize) {
        // Swap whole rows: both sides keep their buffers for reuse.
        std::mem::swap(&mut self.rows[i], &mut staging.rows[s]);
        std::mem::swap(&mut self.origins[i], &mut staging.origins[s]);
        let n = self.origins[i].len();
        self.inputs += n;
        staging.len = s;
        staging.inputs -= n;
    }

    /// Merges the last row of `staging` (a later row of the same id) into
    /// slot `i`: its features override (set over retract, retract over
    /// set). Refused (`false`, nothing moved) when either row has its own
    /// event time, or the merged row could exceed the per-entity limits or
    /// `max_row_bytes`; the caller then
    /// sends this chunk and starts the next with the row.
    pub fn merge(&mut self, i: usize, staging: &mut Chunk, max_row_bytes: usize) -> bool {
        let Some(s) = staging.len.checked_sub(1) else {
            return true;
        };
        let (dst, src) = (&mut self.rows[i], &mut staging.rows[s]);
        if dst.event_time_ms.is_some()
            || src.event_time_ms.is_some()
            || dst.set.len() + src.set.len() > MAX_SET_PER_ENTITY
            || dst.retract.len() + src.retract.len() > MAX_RETRACT_PER_ENTITY
            || row_bytes(dst).saturating_add(row_bytes(src)) > max_row_bytes
        {
            return false;
        }
        merge(dst, src);
        let n = staging.origins[s].len();
        self.inputs += n;
        self.origins[i].extend_from_slice(&staging.origins[s]);
        staging.len = s;
        staging.inputs -= n;
        true
    }

    /// Dates every live row that has no event time of its own with `ms`.
    /// Called once, when the chunk is handed to its writer: its retries then
    /// send the very same times (a replay), and a later chunk gets a later
    /// time (`event_clock::now_ms` strictly increases).
    pub fn stamp(&mut self, ms: u64) {
        for row in &mut self.rows[..self.len] {
            row.event_time_ms.get_or_insert(ms);
        }
    }

    /// Whether some live row has no event time yet.
    pub fn needs_stamp(&self) -> bool {
        self.rows().iter().any(|r| r.event_time_ms.is_none())
    }

    /// Swaps two live rows (with their origins).
    fn swap(&mut self, a: usize, b: usize) {
        self.rows.swap(a, b);
        self.origins.swap(a, b);
        self.checked.swap(a, b);
    }

    /// Moves the rows at `indices` (ascending) to the front, in order, and
    /// keeps only them: what is left to retry. (The chunk is no longer
    /// filled after this, so the id index is dropped.)
    pub fn keep_only(&mut self, indices: &[usize]) {
        // Position k < indices[k] has been touched only by earlier swaps of
        // smaller indices, so indices[k] still holds its original row.
        for (k, &i) in indices.iter().enumerate() {
            self.swap(k, i);
        }
        self.len = indices.len();
        self.inputs = self.origins().iter().map(Vec::len).sum();
        self.slots.clear();
    }
}

/// The slot index is keyed by an id's hash, already a good hash: no need
/// to hash it again.
#[derive(Default)]
pub struct IdHashHasher(u64);

impl Hasher for IdHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// What a row puts on the wire, roughly: its id, names and values.
pub fn row_bytes(row: &BatchRow) -> usize {
    row.id.len()
        + row
            .set
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
        + row.retract.iter().map(String::len).sum::<usize>()
}

/// Applies `src` (a later row of the same id) on top of `dst`, moving its
/// strings: per feature, the later row's set or retraction wins.
fn merge(dst: &mut BatchRow, src: &mut BatchRow) {
    for (name, value) in src.set.drain(..) {
        if let Some(k) = dst.retract.iter().position(|r| *r == name) {
            dst.retract.swap_remove(k);
        }
        match dst.set.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => dst.set.push((name, value)),
        }
    }
    for name in src.retract.drain(..) {
        if let Some(k) = dst.set.iter().position(|(n, _)| *n == name) {
            dst.set.swap_remove(k);
        }
        if !dst.retract.contains(&name) {
            dst.retract.push(name);
        }
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

    /// Writes the id with `write`, appending to the (empty) id buffer.
    pub fn id_with(&mut self, write: impl FnOnce(&mut String)) {
        write(&mut self.row.id);
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

    /// Sets `name` to `value`'s wire text (`FeatureValue::encode`), written
    /// straight into a reused buffer.
    pub fn set_value(&mut self, name: &str, value: &FeatureValue) {
        let name = self.take(name);
        let mut text = self.take("");
        value.write_wire(&mut text);
        self.row.set.push((name, text));
    }

    /// The row's own event time (`--event-time-column`), epoch ms.
    pub fn event_time(&mut self, ms: u64) {
        self.row.event_time_ms = Some(ms);
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
        assert_eq!(c.origins(), &[vec![origin(2)]]);
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
        let lines: Vec<_> = c.origins().iter().map(|o| o[0].line).collect();
        assert_eq!(lines, [1, 2, 4, 5]);
        assert_eq!(c.inputs(), 4);
    }

    fn stage(staging: &mut Chunk, line: u64, id: &str, set: &[(&str, &str)], retract: &[&str]) {
        let mut r = staging.push(origin(line));
        r.id(id);
        for (k, v) in set {
            r.set(k, v);
        }
        for k in retract {
            r.retract(k);
        }
    }

    /// Routes a staged row as the reader does, without checks.
    fn absorb(c: &mut Chunk, staging: &mut Chunk, hash: u64, max: usize) -> bool {
        let id = staging.rows()[0].id.clone();
        match c.find(hash, &id) {
            Some(i) => c.merge(i, staging, max),
            None => {
                c.absorb_new(staging, hash, true);
                true
            }
        }
    }

    #[test]
    fn a_repeated_id_is_merged_in_input_order() {
        let (mut staging, mut c) = (Chunk::new(1), Chunk::new(4));
        stage(&mut staging, 1, "a", &[("x", "old"), ("y", "1")], &["z"]);
        assert!(absorb(&mut c, &mut staging, 7, usize::MAX));
        stage(&mut staging, 2, "b", &[("x", "b")], &[]);
        assert!(absorb(&mut c, &mut staging, 8, usize::MAX));
        // Later: x set again, y retracted, z set again.
        stage(&mut staging, 3, "a", &[("x", "new"), ("z", "2")], &["y"]);
        assert!(absorb(&mut c, &mut staging, 7, usize::MAX));
        assert!(staging.is_empty());
        assert_eq!((c.len(), c.inputs()), (2, 3));
        let a = &c.rows()[0];
        let mut set = a.set.clone();
        set.sort();
        assert_eq!(set, [("x".into(), "new".into()), ("z".into(), "2".into())]);
        assert_eq!(a.retract, ["y"]);
        assert_eq!(c.origins()[0], [origin(1), origin(3)]);
    }

    #[test]
    fn dated_rows_of_one_id_are_never_merged() {
        let (mut staging, mut c) = (Chunk::new(1), Chunk::new(4));
        stage(&mut staging, 1, "a", &[("x", "new")], &[]);
        staging.rows[0].event_time_ms = Some(20);
        assert!(absorb(&mut c, &mut staging, 7, usize::MAX));
        // An older event on a later line: merging would date "old" as 20.
        stage(&mut staging, 2, "a", &[("x", "old"), ("y", "1")], &[]);
        staging.rows[0].event_time_ms = Some(10);
        assert!(!absorb(&mut c, &mut staging, 7, usize::MAX));
        assert_eq!((staging.len(), c.len()), (1, 1));
        assert_eq!(c.rows()[0].set, [("x".to_string(), "new".to_string())]);
        assert_eq!(c.rows()[0].event_time_ms, Some(20));
    }

    #[test]
    fn a_stamp_dates_only_undated_rows_and_a_reused_slot_forgets_its_time() {
        let mut c = Chunk::new(2);
        c.push(origin(1)).id("a");
        c.push(origin(2)).event_time(5);
        assert!(c.needs_stamp());
        c.stamp(99);
        assert!(!c.needs_stamp());
        let times: Vec<_> = c.rows().iter().map(|r| r.event_time_ms).collect();
        assert_eq!(times, [Some(99), Some(5)]);
        c.stamp(100); // a retry keeps the first stamp
        assert_eq!(c.rows()[0].event_time_ms, Some(99));
        c.clear();
        c.push(origin(3)).id("b");
        assert_eq!(c.rows()[0].event_time_ms, None);
    }

    #[test]
    fn a_merge_past_the_row_limit_is_refused() {
        let (mut staging, mut c) = (Chunk::new(1), Chunk::new(4));
        stage(&mut staging, 1, "a", &[("x", "1234")], &[]);
        assert!(absorb(&mut c, &mut staging, 7, 10));
        stage(&mut staging, 2, "a", &[("y", "1234")], &[]);
        assert!(!absorb(&mut c, &mut staging, 7, 10));
        assert_eq!((staging.len(), c.len()), (1, 1));
    }
}
