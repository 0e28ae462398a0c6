//! The loader row: the real `fs-loader` binary materializing synthetic
//! users end to end (synthesis, validation, its pipelined writers), against
//! what a plain non-atomic builder does (synthesis + one connection of pipelined
//! HSET + EXPIRE). Each side gets a fresh, empty Redis of its own, as a
//! nightly load into a new instance would, so neither pays for the keys the
//! other rows left behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use feature_store::demo::synth;
use feature_store::ManagedRedis;

use crate::library::{self, Ctx};
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

pub const SEED: u64 = 7;
pub const CHUNK: usize = 1000;

pub fn row(ctx: &Ctx, loader: &Path) -> BResult<Row> {
    let users = ctx.sizes.bulk_users;
    let flags: &[&str] = if supports(loader, "--full-speed") {
        &["--full-speed"]
    } else {
        &[]
    };
    let ours = loader_rate(loader, users, flags)?;
    let base = builder_rate(users)?;
    Ok(Row {
        id: "loader",
        operation: format!(
            "`fs-loader --count {}{}` (the real binary, end to end)",
            crate::report::count(users as f64),
            flags.iter().map(|f| format!(" {f}")).collect::<String>()
        ),
        unit: "users",
        ours: Figures::Rate { per_sec: ours },
        baseline_name: "a plain builder: synthesis + pipelined HSET + EXPIRE on one \
                        connection (not atomic)"
            .into(),
        baseline: Figures::Rate { per_sec: base },
        ratio_on: RatioOn::PerSec,
        // Issue 4: 1.5x a plain Rust builder, which loads about 90k
        // users/s here with a plain pipelined HSET + EXPIRE.
        goal: vec![Check::PerSecAtLeast(135_000.0)],
        note: format!(
            "wall time of one `fs-loader --count {users} --quiet{}` process (synthesis, validation \
             and writing with its default 2 writers of {CHUNK}-row chunks, up to 50 rows per \
             `write_batch_rows` call: 33 of these 6-feature rows, where the 600-argument budget \
             closes a call first), and of the same users synthesized and written as \
             pipelined `HSET` + `EXPIRE` in {CHUNK}-user chunks on one connection; each into a \
             fresh, empty Redis, where nothing else runs (hence full speed: no pacing). The goal \
             is 1.5x a plain builder (about 90k users/s here).",
            flags.iter().map(|f| format!(" {f}")).collect::<String>()
        ),
    })
}

/// Users per second of one `fs-loader --count users` run into an empty Redis.
fn loader_rate(loader: &Path, users: usize, flags: &[&str]) -> BResult<f64> {
    let redis = ManagedRedis::start()?;
    run_loader(loader, &redis.url(), users, flags)
}

/// Users per second of one `fs-loader --count users --quiet` process with
/// `flags`, checked to have written every user.
pub fn run_loader(loader: &Path, url: &str, users: usize, flags: &[&str]) -> BResult<f64> {
    let started = Instant::now();
    let out = Command::new(loader)
        .args(["--count", &users.to_string(), "--seed", &SEED.to_string()])
        .args(["--quiet", "--redis-url", url])
        .args(flags)
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
            "fs-loader --count {users} {flags:?} ended {} having written {written:?}:\n{summary}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(users as f64 / elapsed.as_secs_f64())
}

/// Whether this fs-loader has `flag` (an older binary given with
/// `--loader-bin` may not).
pub fn supports(loader: &Path, flag: &str) -> bool {
    Command::new(loader)
        .arg("--help")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).contains(flag))
        .unwrap_or(false)
}

/// Users per second of the plain way into an empty Redis.
fn builder_rate(users: usize) -> BResult<f64> {
    let redis = ManagedRedis::start()?;
    build_plain(&redis.url(), users)
}

/// The plain builder held to `rate` users/s, `per_pipeline` users per
/// round trip, under `prefix` (fresh keys beside the other phases'): what
/// any load at that pace does to other clients, with the least Redis work
/// a row can take. Answers the users/s it reached.
pub fn build_plain_paced(
    url: &str,
    prefix: &str,
    users: usize,
    rate: f64,
    per_pipeline: usize,
) -> BResult<f64> {
    let mut raw = library::raw_connection(url)?;
    let started = Instant::now();
    let mut rows = synth::users(users, SEED);
    let mut sent = 0usize;
    loop {
        let chunk: Vec<_> = rows.by_ref().take(per_pipeline.max(1)).collect();
        if chunk.is_empty() {
            break;
        }
        let due = started + Duration::from_secs_f64(sent as f64 / rate.max(1.0));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        library::raw_bulk_under(&mut raw, prefix, &chunk, 86_400)?;
        sent += chunk.len();
    }
    Ok(users as f64 / started.elapsed().as_secs_f64())
}

/// Synthesizes `users` and writes them as pipelined HSET + EXPIRE (under
/// the baseline's prefix) on one connection, unpaced; users per second.
pub fn build_plain(url: &str, users: usize) -> BResult<f64> {
    build_plain_paced(url, library::RAW_PREFIX, users, f64::INFINITY, CHUNK)
}
