//! The loader row: the real `fs-loader` binary materializing synthetic
//! users end to end (synthesis, validation, its pipelined writers), against
//! the raw pipelined HSET + EXPIRE measured by the `bulk_load` row of the
//! same run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::library::Ctx;
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

/// Its own prefix, so it writes fresh keys as a nightly job would.
const PREFIX: &str = "ld:user:";

pub fn row(ctx: &Ctx, loader: &Path, raw_bulk: Figures) -> BResult<Row> {
    let users = ctx.sizes.bulk_users;
    let started = Instant::now();
    let out = Command::new(loader)
        .args(["--count", &users.to_string(), "--seed", "7", "--quiet"])
        .args(["--key-prefix", PREFIX, "--redis-url", &ctx.redis.url()])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", loader.display()))?;
    let elapsed = started.elapsed();
    let summary = String::from_utf8_lossy(&out.stdout);
    let written = summary
        .lines()
        .find_map(|l| l.strip_prefix("written: "))
        .and_then(|n| n.trim().parse::<usize>().ok());
    if !out.status.success() || written != Some(users) {
        return Err(format!(
            "fs-loader --count {users} ended {} having written {written:?}:\n{summary}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(Row {
        id: "loader",
        operation: format!(
            "`fs-loader --count {}` (the real binary, end to end)",
            crate::report::count(users as f64)
        ),
        unit: "users",
        ours: Figures::Rate {
            per_sec: users as f64 / elapsed.as_secs_f64(),
        },
        baseline_name: "raw pipelined HSET + EXPIRE (the `bulk_load` row's baseline; not atomic)"
            .into(),
        baseline: raw_bulk,
        ratio_on: RatioOn::PerSec,
        // Issue 4: 1.5x the seeds' Rust builder, which loads about 90k
        // users/s here with a plain pipelined HSET + EXPIRE.
        goal: vec![Check::PerSecAtLeast(135_000.0)],
        note: format!(
            "wall time of one `fs-loader --count {users} --quiet` process (synthesis, validation \
             and writing, with its default 2 writers of 1000-row chunks, 50 rows per \
             `write_batch_rows` call) into the bench's Redis under `{PREFIX}`; the goal is 1.5x the \
             seeds' builder (a plain pipelined HSET + EXPIRE at about 90k users/s here)."
        ),
    })
}
