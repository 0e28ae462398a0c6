//! Rows, goals, the machine, and the markdown they become.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::measure::Summary;

/// What the ratio compares.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RatioOn {
    /// ours p50 / baseline p50 (lower is better).
    P50,
    /// ours ops/s / baseline ops/s (higher is better).
    PerSec,
    /// ours bytes / baseline bytes (lower is better).
    Bytes,
}

/// One condition of an issue goal.
#[derive(Debug, Clone, Copy)]
pub enum Check {
    RatioAtMost(f64),
    RatioAtLeast(f64),
    P50AtMost(Duration),
    P99AtMost(Duration),
    /// ours p99 / baseline p99 (both timed).
    P99RatioAtMost(f64),
    PerSecAtLeast(f64),
    /// A share of one core (`Figures::Percent`).
    PercentAtMost(f64),
}

impl Check {
    fn text(&self, on: RatioOn) -> String {
        match *self {
            Check::RatioAtMost(x) => format!("ratio <= {x}x{}", on.suffix()),
            Check::RatioAtLeast(x) => format!("ratio >= {x}x{}", on.suffix()),
            Check::P50AtMost(d) => format!("p50 <= {}", ms(d)),
            Check::P99AtMost(d) => format!("p99 <= {}", ms(d)),
            Check::P99RatioAtMost(x) => format!("ratio <= {x}x (p99)"),
            Check::PerSecAtLeast(x) => format!(">= {}/s", count(x)),
            Check::PercentAtMost(x) => format!("<= {x}% of a core"),
        }
    }
}

impl RatioOn {
    fn suffix(&self) -> &'static str {
        match self {
            RatioOn::P50 => " (p50)",
            RatioOn::PerSec => " (ops/s)",
            RatioOn::Bytes => " (bytes)",
        }
    }
}

/// A side's figures as the table shows them.
#[derive(Debug, Clone, Copy)]
pub enum Figures {
    Timed(Summary),
    /// Bytes per entity: median, 99th percentile, mean.
    Bytes {
        p50: f64,
        p99: f64,
        mean: f64,
    },
    /// Only a throughput and a p50 (what redis-benchmark's CSV gives).
    External {
        p50: Duration,
        p99: Duration,
        per_sec: f64,
    },
    /// One end-to-end run: a rate, no latency distribution.
    Rate {
        per_sec: f64,
    },
    /// Microseconds of Redis time per item (from `INFO commandstats`).
    RedisTime {
        usec: f64,
    },
    /// Percent of one CPU core.
    Percent {
        value: f64,
    },
}

impl Figures {
    fn p50(&self) -> f64 {
        match *self {
            Figures::Timed(s) => s.p50.as_secs_f64(),
            Figures::Bytes { mean, .. } => mean,
            Figures::External { p50, .. } => p50.as_secs_f64(),
            Figures::Rate { .. } => 0.0,
            Figures::RedisTime { usec } => usec,
            Figures::Percent { value } => value,
        }
    }
    fn p99(&self) -> Option<Duration> {
        match *self {
            Figures::Timed(s) => Some(s.p99),
            Figures::External { p99, .. } => Some(p99),
            _ => None,
        }
    }
    fn per_sec(&self) -> f64 {
        match *self {
            Figures::Timed(s) => s.per_sec,
            Figures::Bytes { .. } => 0.0,
            Figures::External { per_sec, .. } => per_sec,
            Figures::Rate { per_sec } => per_sec,
            Figures::RedisTime { .. } | Figures::Percent { .. } => 0.0,
        }
    }
    fn cells(&self, unit: &str) -> (String, String, String) {
        match *self {
            Figures::Timed(s) => (
                ms(s.p50),
                ms(s.p99),
                format!("{} {unit}/s", count(s.per_sec)),
            ),
            Figures::External { p50, p99, per_sec } => {
                (ms(p50), ms(p99), format!("{} {unit}/s", count(per_sec)))
            }
            Figures::Bytes { p50, p99, .. } => {
                (format!("{p50:.0} B"), format!("{p99:.0} B"), "-".into())
            }
            Figures::Rate { per_sec } => (
                "-".into(),
                "-".into(),
                format!("{} {unit}/s", count(per_sec)),
            ),
            Figures::RedisTime { usec } => (
                format!("{usec:.2} us/{unit} in Redis"),
                "-".into(),
                "-".into(),
            ),
            Figures::Percent { value } => {
                (format!("{value:.2}% of a {unit}"), "-".into(), "-".into())
            }
        }
    }
    fn short(&self, unit: &str) -> String {
        match *self {
            Figures::Timed(s) => format!(
                "p50 {}, p99 {}, {} {unit}/s",
                ms(s.p50),
                ms(s.p99),
                count(s.per_sec)
            ),
            Figures::External { p50, p99, per_sec } => {
                format!(
                    "p50 {}, p99 {}, {} {unit}/s",
                    ms(p50),
                    ms(p99),
                    count(per_sec)
                )
            }
            Figures::Bytes { p50, mean, .. } => format!("p50 {p50:.0} B, mean {mean:.1} B"),
            Figures::Rate { per_sec } => format!("{} {unit}/s", count(per_sec)),
            Figures::RedisTime { usec } => format!("{usec:.2} us of Redis time per {unit}"),
            Figures::Percent { value } => format!("{value:.2}% of a {unit}"),
        }
    }
}

pub struct Row {
    /// Short stable name (the test checks every one is present).
    pub id: &'static str,
    pub operation: String,
    /// What one op is: "req", "user", "entity", "batch".
    pub unit: &'static str,
    pub ours: Figures,
    pub baseline_name: String,
    pub baseline: Figures,
    pub ratio_on: RatioOn,
    pub goal: Vec<Check>,
    /// A line of context under the table (how it was measured).
    pub note: String,
}

impl Row {
    pub fn ratio(&self) -> f64 {
        let (a, b) = match self.ratio_on {
            RatioOn::P50 | RatioOn::Bytes => (self.ours.p50(), self.baseline.p50()),
            RatioOn::PerSec => (self.ours.per_sec(), self.baseline.per_sec()),
        };
        if b > 0.0 {
            a / b
        } else {
            f64::NAN
        }
    }

    /// `None` when the issue sets no goal for this row.
    pub fn met(&self) -> Option<bool> {
        if self.goal.is_empty() {
            return None;
        }
        let ratio = self.ratio();
        let (p50, p99, per_sec) = match self.ours {
            Figures::Timed(s) => (s.p50, s.p99, s.per_sec),
            Figures::External { p50, p99, per_sec } => (p50, p99, per_sec),
            Figures::Bytes { .. } => (Duration::ZERO, Duration::ZERO, 0.0),
            // A single run has no latency to check.
            Figures::Rate { per_sec } => (Duration::ZERO, Duration::ZERO, per_sec),
            Figures::RedisTime { .. } | Figures::Percent { .. } => {
                (Duration::ZERO, Duration::ZERO, 0.0)
            }
        };
        let p99_ratio = match (self.ours.p99(), self.baseline.p99()) {
            (Some(a), Some(b)) if !b.is_zero() => a.as_secs_f64() / b.as_secs_f64(),
            _ => f64::NAN,
        };
        Some(self.goal.iter().all(|c| match *c {
            Check::RatioAtMost(x) => ratio <= x,
            Check::RatioAtLeast(x) => ratio >= x,
            Check::P50AtMost(d) => p50 <= d,
            Check::P99AtMost(d) => p99 <= d,
            Check::P99RatioAtMost(x) => p99_ratio <= x,
            Check::PercentAtMost(x) => match self.ours {
                Figures::Percent { value } => value <= x,
                _ => false,
            },
            Check::PerSecAtLeast(x) => per_sec >= x,
        }))
    }

    fn goal_text(&self) -> String {
        if self.goal.is_empty() {
            return "-".into();
        }
        self.goal
            .iter()
            .map(|c| c.text(self.ratio_on))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn met_text(&self) -> &'static str {
        match self.met() {
            None => "n/a",
            Some(true) => "**met**",
            Some(false) => "**missed**",
        }
    }
}

/// Where and when the numbers were taken.
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub redis_version: String,
    pub redis_path: String,
    pub date_utc: String,
    pub git_commit: String,
    pub load_start: String,
    pub load_end: String,
    pub mode: &'static str,
    pub build: &'static str,
    /// What the bench did about CPU idle states.
    pub cpu_idle: String,
    pub elapsed: Duration,
}

impl Machine {
    pub fn probe(redis_version: String, redis_path: String, mode: &'static str) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
            );
        Machine {
            cpu_model,
            cores,
            redis_version,
            redis_path,
            date_utc: now_utc(),
            git_commit: git_commit(),
            load_start: loadavg(),
            load_end: String::new(),
            mode,
            build: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            cpu_idle: String::new(),
            elapsed: Duration::ZERO,
        }
    }
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn git_commit() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match run(&["rev-parse", "--short=12", "HEAD"]) {
        Some(sha) => {
            let dirty = run(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            if dirty {
                format!("{sha} (with uncommitted changes)")
            } else {
                sha
            }
        }
        None => "unknown (not a git checkout)".into(),
    }
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock (civil-from-days).
fn now_utc() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = feature_store::calendar::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// 1234567.8 -> "1,234,568"
pub fn count(x: f64) -> String {
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// The results table alone (what the terminal shows).
pub fn table(rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str(
        "| operation | p50 | p99 | ops/s | baseline (same run) | baseline figure | ratio | goal | met? |\n",
    );
    out.push_str("|---|---:|---:|---:|---|---|---:|---|---|\n");
    for r in rows {
        let (p50, p99, per_sec) = r.ours.cells(r.unit);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {:.2}x{} | {} | {} |",
            r.operation,
            p50,
            p99,
            per_sec,
            r.baseline_name,
            r.baseline.short(r.unit),
            r.ratio(),
            r.ratio_on.suffix(),
            r.goal_text(),
            r.met_text()
        );
    }
    out
}

/// The whole BENCHMARKS.md.
pub fn markdown(machine: &Machine, rows: &[Row], skipped: &[String], analysis: &str) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Generated by `cargo run --release --bin fs-bench` (do not edit by hand: \
         rerun it). Every row is measured against a baseline taken **in the same \
         run, on the same Redis, interleaved with it**, so the ratio survives a \
         noisy shared machine even when the absolute numbers do not.\n\n",
    );
    out.push_str("## Machine\n\n| | |\n|---|---|\n");
    let _ = writeln!(out, "| date | {} |", machine.date_utc);
    let _ = writeln!(
        out,
        "| mode | {} ({} build of fs-bench) |",
        machine.mode, machine.build
    );
    let _ = writeln!(out, "| CPU | {} |", machine.cpu_model);
    let _ = writeln!(
        out,
        "| cores | {} (client, server and Redis share them) |",
        machine.cores
    );
    let _ = writeln!(
        out,
        "| Redis | {} (`{}`) |",
        machine.redis_version, machine.redis_path
    );
    let _ = writeln!(out, "| CPU idle states | {} |", machine.cpu_idle);
    let _ = writeln!(out, "| git commit | {} |", machine.git_commit);
    let _ = writeln!(
        out,
        "| load average (1/5/15 min) | {} at start, {} at end |",
        machine.load_start, machine.load_end
    );
    let _ = writeln!(out, "| run took | {:.0} s |", machine.elapsed.as_secs_f64());
    out.push_str("\n## Results\n\n");
    out.push_str(&table(rows));
    if !skipped.is_empty() {
        out.push_str("\nNot measured in this run:\n\n");
        for s in skipped {
            let _ = writeln!(out, "- {s}");
        }
    }
    out.push_str("\n## Goals (issues 4 and 5)\n\n");
    let met = rows.iter().filter(|r| r.met() == Some(true)).count();
    let with_goal = rows.iter().filter(|r| r.met().is_some()).count();
    let _ = writeln!(out, "{met} of {with_goal} goals met in this run.\n");
    for r in rows.iter().filter(|r| r.met().is_some()) {
        let _ = writeln!(
            out,
            "- {} `{}`: {} (ours {}, ratio {:.2}x{})",
            r.met_text(),
            r.id,
            r.goal_text(),
            r.ours.short(r.unit),
            r.ratio(),
            r.ratio_on.suffix()
        );
    }
    out.push_str("\n## How each row is measured\n\n");
    for r in rows {
        let _ = writeln!(out, "- `{}`: {}", r.id, r.note);
    }
    if !analysis.trim().is_empty() {
        out.push('\n');
        out.push_str(analysis.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_get_separators() {
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
    }

    #[test]
    fn date_is_plausible() {
        let d = now_utc();
        assert!(d.starts_with("20"), "{d}");
        assert!(d.ends_with("UTC"));
    }
}
