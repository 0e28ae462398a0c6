//! Redis's own accounting of the time each command takes (`INFO
//! commandstats`): how the cost of the write scripts is measured against
//! the commands they wrap, in microseconds of Redis time, whatever else the
//! machine is doing.
//!
//! A script's `usec` includes the commands it calls, and those commands are
//! also counted under their own names (Redis >= 7), so the script's Lua
//! overhead is its `usec` minus theirs.

use std::collections::HashMap;

use crate::error::StoreError;
use crate::store::{BatchRow, FeatureStore, WriteReport};

/// One command's totals since Redis started (or `CONFIG RESETSTAT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandStat {
    pub calls: u64,
    pub usec: u64,
}

/// Totals per command, by lower-case name (`evalsha`, `hset`, ...;
/// subcommands as Redis spells them, e.g. `script|load`).
pub type CommandStats = HashMap<String, CommandStat>;

/// Parses an `INFO commandstats` reply. Lines that are not
/// `cmdstat_<name>:calls=<n>,usec=<n>,...` (headers, blank lines, fields
/// this version does not have, garbage) are skipped: the reply comes from a
/// server, never trusted to be well formed.
pub fn parse(info: &str) -> CommandStats {
    let mut stats = CommandStats::new();
    for line in info.lines() {
        let Some(rest) = line.trim_end_matches('\r').strip_prefix("cmdstat_") else {
            continue;
        };
        let Some((name, fields)) = rest.split_once(':') else {
            continue;
        };
        let mut stat = CommandStat::default();
        let (mut calls, mut usec) = (false, false);
        for field in fields.split(',') {
            match field.split_once('=') {
                Some(("calls", v)) => {
                    if let Ok(n) = v.parse() {
                        stat.calls = n;
                        calls = true;
                    }
                }
                Some(("usec", v)) => {
                    if let Ok(n) = v.parse() {
                        stat.usec = n;
                        usec = true;
                    }
                }
                _ => {}
            }
        }
        if calls && usec && !name.is_empty() {
            stats.insert(name.to_ascii_lowercase(), stat);
        }
    }
    stats
}

/// What happened between two snapshots: per command, the calls and usec
/// added (a command missing from `before` counts from zero; a counter that
/// went down, after `CONFIG RESETSTAT`, counts from zero too).
pub fn delta(before: &CommandStats, after: &CommandStats) -> CommandStats {
    after
        .iter()
        .filter_map(|(name, a)| {
            let b = before.get(name).copied().unwrap_or_default();
            let d = if a.calls < b.calls || a.usec < b.usec {
                *a
            } else {
                CommandStat {
                    calls: a.calls - b.calls,
                    usec: a.usec - b.usec,
                }
            };
            (d.calls > 0).then(|| (name.clone(), d))
        })
        .collect()
}

/// The store's Redis's `INFO commandstats`, parsed.
pub fn command_usec(store: &FeatureStore) -> Result<CommandStats, StoreError> {
    store.info("commandstats").map(|info| parse(&info))
}

/// What writing some rows cost Redis, by `INFO commandstats`: through the
/// script, and as the plain commands the script wraps sent in a pipeline.
/// Only meaningful on a Redis nothing else writes to meanwhile.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ScriptCost {
    pub rows: u64,
    /// `EVALSHA` calls and their time (the commands they ran included).
    pub calls: u64,
    pub script_usec: u64,
    /// The time of the commands the script ran, counted inside it.
    pub inner_usec: u64,
    /// The same commands sent by the client, outside any script.
    pub wrapped_usec: u64,
}

impl ScriptCost {
    pub fn script_us_per_row(&self) -> f64 {
        per(self.script_usec, self.rows)
    }
    pub fn wrapped_us_per_row(&self) -> f64 {
        per(self.wrapped_usec, self.rows)
    }
    /// How long one call holds Redis, on average.
    pub fn us_per_call(&self) -> f64 {
        per(self.script_usec, self.calls)
    }
    /// Script time over wrapped time (1.0: the script costs nothing more).
    pub fn ratio(&self) -> f64 {
        self.script_usec as f64 / self.wrapped_usec.max(1) as f64
    }
}

fn per(usec: u64, n: u64) -> f64 {
    usec as f64 / n.max(1) as f64
}

/// The commands the write scripts run.
const WRAPPED: [&str; 5] = ["hset", "hdel", "expire", "hsetex", "hexpire"];

fn sum_of(d: &CommandStats, names: &[&str]) -> u64 {
    names.iter().filter_map(|n| d.get(*n)).map(|s| s.usec).sum()
}

/// Writes `rows` with `write_batch_rows`, then again as pipelined
/// HDEL/HSET/EXPIRE, each time onto deleted keys, and reports both costs.
/// The rows are left written. Rows the store refuses are not counted.
pub fn batch_script_cost(
    store: &FeatureStore,
    rows: &[BatchRow],
    ttl_seconds: u64,
) -> Result<ScriptCost, StoreError> {
    measure(
        store,
        rows,
        |store, rows| store.write_batch_rows(rows, ttl_seconds),
        |key, row, _, pipe| {
            if !row.retract.is_empty() {
                pipe.cmd("HDEL").arg(key).arg(&row.retract);
            }
            if !row.set.is_empty() {
                let cmd = pipe.cmd("HSET").arg(key);
                for (k, v) in &row.set {
                    cmd.arg(k).arg(v);
                }
            }
            pipe.cmd("EXPIRE").arg(key).arg(ttl_seconds);
        },
    )
}

/// Like `batch_script_cost`, for `write_streaming` (rows without
/// retractions): wrapped is HSETEX + EXPIRE NX when the script used HSETEX,
/// else HSET + EXPIRE NX + HEXPIRE.
pub fn streaming_script_cost(
    store: &FeatureStore,
    rows: &[BatchRow],
    ttl_seconds: u64,
) -> Result<ScriptCost, StoreError> {
    let batch_ttl = store.batch_ttl_seconds();
    measure(
        store,
        rows,
        |store, rows| store.update_streaming_rows(rows, ttl_seconds),
        |key, row, hsetex, pipe| {
            let n = row.set.len();
            if hsetex {
                let cmd = pipe
                    .cmd("HSETEX")
                    .arg(key)
                    .arg("EX")
                    .arg(ttl_seconds)
                    .arg("FIELDS")
                    .arg(n);
                for (k, v) in &row.set {
                    cmd.arg(k).arg(v);
                }
                pipe.cmd("EXPIRE").arg(key).arg(batch_ttl).arg("NX");
            } else {
                let cmd = pipe.cmd("HSET").arg(key);
                for (k, v) in &row.set {
                    cmd.arg(k).arg(v);
                }
                pipe.cmd("EXPIRE").arg(key).arg(batch_ttl).arg("NX");
                let cmd = pipe
                    .cmd("HEXPIRE")
                    .arg(key)
                    .arg(ttl_seconds)
                    .arg("FIELDS")
                    .arg(n);
                for (k, _) in &row.set {
                    cmd.arg(k);
                }
            }
        },
    )
}

fn measure(
    store: &FeatureStore,
    rows: &[BatchRow],
    write: impl Fn(&FeatureStore, &[BatchRow]) -> Result<WriteReport, StoreError>,
    wrap: impl Fn(&str, &BatchRow, bool, &mut redis::Pipeline),
) -> Result<ScriptCost, StoreError> {
    let keys: Vec<String> = rows
        .iter()
        .filter_map(|r| store.key_for(&r.id).ok())
        .collect();
    let delete = |store: &FeatureStore| -> Result<(), StoreError> {
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            pipe.cmd("DEL").arg(chunk).ignore();
            store.run_pipeline::<()>(&pipe)?;
        }
        Ok(())
    };
    delete(store)?;
    let before = command_usec(store)?;
    let report = write(store, rows)?;
    let d = delta(&before, &command_usec(store)?);
    let script = d.get("evalsha").copied().unwrap_or_default();
    let hsetex = d.contains_key("hsetex");
    let failed: std::collections::HashSet<usize> = report.failed.iter().map(|f| f.index).collect();
    delete(store)?;
    let before = command_usec(store)?;
    let mut written = 0u64;
    let ok: Vec<(usize, &BatchRow)> = rows
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .collect();
    for chunk in ok.chunks(1000) {
        let mut pipe = redis::pipe();
        // A refused command (a key of another type) is the script's -1 too.
        pipe.ignore_errors();
        for (_, row) in chunk {
            if let Ok(key) = store.key_for(&row.id) {
                wrap(&key, row, hsetex, &mut pipe);
                written += 1;
            }
        }
        store.run_pipeline::<redis::Value>(&pipe)?;
    }
    let w = delta(&before, &command_usec(store)?);
    Ok(ScriptCost {
        rows: written.min(report.written as u64),
        calls: script.calls,
        script_usec: script.usec,
        inner_usec: sum_of(&d, &WRAPPED),
        wrapped_usec: sum_of(&w, &WRAPPED),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_of_a_real_reply() {
        let info = "# Commandstats\r\ncmdstat_hset:calls=4,usec=20,usec_per_call=5.00,\
                    rejected_calls=0,failed_calls=0\r\ncmdstat_script|load:calls=1,usec=7,\
                    usec_per_call=7.00\r\n\r\n";
        let s = parse(info);
        assert_eq!(s["hset"], CommandStat { calls: 4, usec: 20 });
        assert_eq!(s["script|load"], CommandStat { calls: 1, usec: 7 });
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn delta_counts_what_was_added() {
        let before = parse("cmdstat_hset:calls=4,usec=20\ncmdstat_get:calls=1,usec=1\n");
        let after = parse("cmdstat_hset:calls=6,usec=29\ncmdstat_get:calls=1,usec=1\ncmdstat_expire:calls=2,usec=3\n");
        let d = delta(&before, &after);
        assert_eq!(d["hset"], CommandStat { calls: 2, usec: 9 });
        assert_eq!(d["expire"], CommandStat { calls: 2, usec: 3 });
        assert!(!d.contains_key("get"));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn a_hostile_reply_never_panics(info in ".{0,400}", lines in proptest::collection::vec(
            "cmdstat_[a-z|]{0,6}:(calls|usec|x)=[0-9a-z-]{0,22}(,(calls|usec)=[0-9-]{0,21}){0,3}", 0..8)) {
            let joined = lines.join("\r\n");
            let _ = parse(&info);
            let a = parse(&joined);
            let _ = delta(&a, &parse(&info));
            let _ = delta(&parse(&info), &a);
        }
    }
}
