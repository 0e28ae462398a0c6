//! Size limits a row must meet before it is sent: one huge cell must cost
//! its own row, not the load (Redis answers an argument over its
//! `proto-max-bulk-len` by closing the connection, which looks like an
//! outage to every row sharing the pipeline).

use super::chunk::row_bytes;
use crate::store::BatchRow;

/// Default `--max-value-bytes`: 1 MiB. Feature values are numbers, codes
/// and short strings; the largest common kind, an embedding written as text
/// (1536 floats), is 20-30 KB. A megabyte is 30 times that, and small next
/// to Redis's default `proto-max-bulk-len` (512 MB), so a value above it is
/// almost surely a mistake upstream (a blob, a whole document) that would
/// also slow every read of its entity.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1 << 20;
/// Default `--max-row-bytes`: 8 MiB, room for a few values at the value
/// limit or thousands of ordinary features. One script call carries up to
/// 50 rows and blocks Redis while it runs: rows this size already make a
/// call of hundreds of megabytes.
pub const DEFAULT_MAX_ROW_BYTES: usize = 8 << 20;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// The most bytes one feature value may have (`--max-value-bytes`).
    pub max_value_bytes: usize,
    /// The most bytes a row's id, names and values may have together
    /// (`--max-row-bytes`).
    pub max_row_bytes: usize,
    /// Redis's own `proto-max-bulk-len`, when it could be read.
    pub redis_max_bulk: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            max_row_bytes: DEFAULT_MAX_ROW_BYTES,
            redis_max_bulk: None,
        }
    }
}

impl Limits {
    /// Why `row` is too large to send, or `Ok`.
    pub fn check_sizes(&self, row: &BatchRow) -> Result<(), String> {
        for (name, value) in &row.set {
            if value.len() > self.max_value_bytes {
                return Err(format!(
                    "value of feature {name:?} is {} bytes, over --max-value-bytes ({})",
                    value.len(),
                    self.max_value_bytes
                ));
            }
            if let Some(redis) = self.redis_max_bulk {
                if value.len() as u64 > redis {
                    return Err(format!(
                        "value of feature {name:?} is {} bytes, over Redis's proto-max-bulk-len ({redis})",
                        value.len()
                    ));
                }
            }
        }
        let bytes = row_bytes(row);
        if bytes > self.max_row_bytes {
            return Err(format!(
                "row is {bytes} bytes, over --max-row-bytes ({})",
                self.max_row_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(value_len: usize, fields: usize) -> BatchRow {
        BatchRow {
            event_time_ms: None,
            id: "u1".into(),
            set: (0..fields)
                .map(|i| (format!("f{i}"), "x".repeat(value_len)))
                .collect(),
            retract: Vec::new(),
        }
    }

    #[test]
    fn each_limit_names_itself() {
        let limits = Limits {
            max_value_bytes: 100,
            max_row_bytes: 250,
            redis_max_bulk: Some(50),
        };
        assert!(limits.check_sizes(&row(40, 2)).is_ok());
        let e = limits.check_sizes(&row(60, 1)).unwrap_err();
        assert!(e.contains("proto-max-bulk-len (50)"), "{e}");
        let e = limits.check_sizes(&row(101, 1)).unwrap_err();
        assert!(e.contains("--max-value-bytes (100)"), "{e}");
        let e = limits.check_sizes(&row(40, 8)).unwrap_err();
        assert!(e.contains("--max-row-bytes (250)"), "{e}");
    }
}
