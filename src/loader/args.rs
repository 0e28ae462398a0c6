//! The command line: `fs-loader [--count N | --from PATH...]`, `fs-loader
//! stream --from PATH`, `fs-loader scripts [--load]`, and the flags they share.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::limits;
use super::priority::CpuPriority;
use crate::pacing::PaceMode;

/// The only place the conventional local Redis is named: the loader is what
/// a nightly job runs against the real server, so it defaults to it.
pub const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379"; // the default, as redis-cli's
pub const DEFAULT_BATCH_TTL_SECONDS: u64 = 24 * 3600;
pub const DEFAULT_STREAM_TTL_SECONDS: u64 = 300;
/// Without --registry and --key-prefix: the demo's user keys.
pub const DEFAULT_KEY_PREFIX: &str = "fs:user:";

/// Load batch features into the Redis feature store: synthetic users
/// (`--count`), CSV or JSON-lines files (`--from`), streaming events
/// (`stream`), and print or load the Lua scripts (`scripts`).
///
/// Exit status: 0 every row was written; 1 some rows were not (rejected,
/// failed or malformed: see the summary and the failures list); 2 bad usage
/// or an unreadable input; 3 Redis was unavailable and the load stopped;
/// 130 interrupted (Ctrl-C), after writing the rows already read.
#[derive(Debug, Parser)]
#[command(name = "fs-loader", version)]
#[command(after_help = "Examples:\n  \
    fs-loader --count 1000000 --seed 7\n  \
    fs-loader --from users.csv --from extra.jsonl --failures failed.csv\n  \
    fs-loader --from events.jsonl --event-time-column ts\n  \
    fs-loader --registry features.toml --view user_profile --from users.csv\n  \
    kcat -C -t events | fs-loader stream --from - --ttl-seconds 300\n  \
    fs-loader scripts --load")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apply JSON-lines (or CSV) events as streaming writes: every feature
    /// gets a field TTL of --ttl-seconds (default 300).
    Stream(StreamArgs),
    /// Print each script's name, SHA1 and contract; --load also SCRIPT LOADs
    /// them, so `redis-cli EVALSHA <sha> ...` works.
    Scripts(ScriptsArgs),
}

/// What the default (batch) mode loads.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Synthetic users u0001..uN (the reference demo's generator).
    #[arg(long, value_name = "N", conflicts_with = "from")]
    pub count: Option<usize>,
    /// Seed of the synthetic users: the same seed gives the same rows.
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub seed: u64,
    #[command(flatten)]
    pub files: FileArgs,
}

/// Input files and how to read them.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// Input file (repeatable); `-` is standard input.
    #[arg(long, value_name = "PATH")]
    pub from: Vec<PathBuf>,
    /// Input format; by default from the extension (.csv; .jsonl/.ndjson/.json),
    /// else guessed from the first byte (`{` means JSON lines).
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// The id column (CSV) or key (flat JSON lines). Default: `user_id`, else `id`.
    #[arg(long, value_name = "NAME")]
    pub id_column: Option<String>,
}

#[derive(Debug, Args)]
pub struct StreamArgs {
    #[command(flatten)]
    pub files: FileArgs,
    /// Key TTL pinned on an entity that has none yet (a new entity).
    #[arg(long, value_name = "T", default_value_t = DEFAULT_BATCH_TTL_SECONDS)]
    pub batch_ttl_seconds: u64,
}

#[derive(Debug, Args)]
pub struct ScriptsArgs {
    /// SCRIPT LOAD every script into the Redis at --redis-url.
    #[arg(long)]
    pub load: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Csv,
    Jsonl,
}

/// Flags every mode accepts, before or after the subcommand.
#[derive(Debug, Args)]
pub struct CommonArgs {
    /// Redis to write to: redis://[user:password@]host:port/, rediss://
    /// for TLS, redis+cluster://h1:p1,h2:p2/ (rediss+cluster:// over TLS).
    #[arg(long, global = true, env = "FS_REDIS_URL", default_value = DEFAULT_REDIS_URL)]
    pub redis_url: String,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    /// Entity keys are <prefix><id>. Default: fs:user:, or with
    /// --registry the view's entity's prefix (another one is refused).
    #[arg(long, global = true, env = "FS_KEY_PREFIX", value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Check every row against this feature registry (TOML, see
    /// docs/registry.md): a row with a column the view does not declare, or
    /// a value not of its type, is rejected; values are stored in canonical
    /// form. Unset: rows are written as they are.
    #[arg(long, global = true, env = "FS_REGISTRY", value_name = "PATH")]
    pub registry: Option<PathBuf>,
    /// With --registry: the view the input fills. Default: the one view
    /// whose features include every column of the input.
    #[arg(long, global = true, value_name = "NAME")]
    pub view: Option<String>,
    /// Batch mode: the key TTL (default 86400, or the view's TTL with
    /// --registry). Stream mode: the per-field TTL (default 300, or the
    /// stream view's TTL).
    #[arg(long, global = true, value_name = "T")]
    pub ttl_seconds: Option<u64>,
    /// The CSV column or JSON key holding each row's event time; it is not
    /// a feature. An RFC 3339 date-time with an offset
    /// (2026-12-01T14:40:09Z, 2026-12-01T14:40:09.123+02:00) or epoch
    /// digits: below 100000000000 seconds, else milliseconds. A row without
    /// one, or with one in any other form, is rejected. Per feature, a write
    /// older than or as old as the stored one is skipped (`skipped_stale`).
    /// Unset: every row is dated when its pipeline is formed, so a later
    /// row of an id is always the newer.
    #[arg(long, global = true, env = "FS_EVENT_TIME_COLUMN", value_name = "NAME")]
    pub event_time_column: Option<String>,
    /// Rows per pipeline (one round trip each). Default: 10 when paced
    /// (short pipelines keep other clients' waits short), 1000 at full
    /// speed.
    #[arg(long, global = true, env = "FS_CHUNK_SIZE")]
    pub chunk_size: Option<usize>,
    /// Write rejected, failed and malformed rows here (CSV: source, line,
    /// id, kind, reason) instead of to stderr.
    #[arg(long, global = true, value_name = "PATH")]
    pub failures: Option<PathBuf>,
    /// At the end, write the run's counters (rows read, written, rejected,
    /// failed, malformed, skipped_stale, retries, elapsed seconds, exit
    /// code) here in the Prometheus text format, atomically (a temporary
    /// file renamed over it): for node_exporter's textfile collector, name
    /// it `*.prom` in its directory.
    #[arg(long, global = true, env = "FS_METRICS_FILE", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
    /// Stop at the first malformed line, or row without a valid event time
    /// (the default skips and counts it).
    #[arg(long, global = true)]
    pub strict: bool,
    /// No progress output.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Retries of rows whose write failed because Redis was unavailable.
    #[arg(long, global = true, default_value_t = 5)]
    pub retries: u32,
    /// First retry delay; it doubles on each retry (capped at 10 s).
    #[arg(long, global = true, value_name = "MS", default_value_t = 200)]
    pub retry_backoff_ms: u64,
    /// Connect timeout, and how long a write waits for a connection.
    #[arg(long, global = true, value_name = "MS", default_value_t = 1000)]
    pub connect_timeout_ms: u64,
    /// Pipelines in flight at once: while Redis runs one, the loader builds
    /// the next. Default: 3 when paced (each short pipeline is a round
    /// trip), 2 at full speed.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub writers: Option<u32>,
    /// The most bytes one feature value may have; a row with a larger one
    /// is rejected, not sent. (Also capped by the Redis's own
    /// proto-max-bulk-len when CONFIG GET is allowed.)
    #[arg(long, global = true, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_VALUE_BYTES)]
    pub max_value_bytes: usize,
    /// The most bytes a row's id, feature names and values may have
    /// together; a larger row is rejected, not sent.
    #[arg(long, global = true, value_name = "BYTES", default_value_t = limits::DEFAULT_MAX_ROW_BYTES)]
    pub max_row_bytes: usize,
    /// Share Redis with live traffic: keep the latency the load adds to
    /// other clients' commands (a PING on a side connection, every 20 ms)
    /// under MS milliseconds, slowing down and speeding up as needed.
    /// Fractions allowed (0.2 is 200 us). Default 1; 0 is --full-speed.
    #[arg(long, global = true, value_name = "MS", env = "FS_LATENCY_BUDGET_MS",
          value_parser = crate::pacing::parse_budget_ms)]
    pub latency_budget_ms: Option<f64>,
    /// A fixed cap instead of the latency budget: at most this many rows
    /// per second, whatever Redis's latency.
    #[arg(long, global = true, value_name = "ROWS_PER_S", env = "FS_MAX_RATE",
          conflicts_with = "latency_budget_ms",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_rate: Option<u64>,
    /// No pacing: as fast as Redis takes it (an empty Redis that nothing
    /// else uses). Same as --latency-budget-ms 0.
    #[arg(long, global = true, env = "FS_FULL_SPEED",
          conflicts_with_all = ["latency_budget_ms", "max_rate"])]
    pub full_speed: bool,
    /// The loader's own CPU priority on its host, so that Redis and the
    /// servers beside it get a core first: `low` (nice 19; the default when
    /// paced), `idle` (Linux's SCHED_IDLE: any other process that wakes runs
    /// first; on a busy host the load may barely progress) or `normal` (as
    /// started; the default with --full-speed).
    #[arg(
        long,
        global = true,
        value_name = "PRIORITY",
        env = "FS_CPU_PRIORITY",
        value_enum
    )]
    pub cpu_priority: Option<CpuPriority>,
    /// When stderr is not a terminal: a progress line every MS milliseconds.
    #[arg(long, global = true, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(50..))]
    pub progress_ms: u64,
}

/// The pacing a load runs with when no flag says otherwise.
pub const DEFAULT_LATENCY_BUDGET_MS: f64 = 1.0;

impl CommonArgs {
    pub fn pace_mode(&self) -> PaceMode {
        match (self.full_speed, self.max_rate, self.latency_budget_ms) {
            (true, _, _) => PaceMode::FullSpeed,
            (false, Some(rate), _) => PaceMode::MaxRate(rate),
            (false, None, ms) => PaceMode::budget_ms(ms.unwrap_or(DEFAULT_LATENCY_BUDGET_MS)),
        }
    }
    pub fn cpu_priority(&self) -> CpuPriority {
        self.cpu_priority
            .unwrap_or_else(|| CpuPriority::default_for(self.pace_mode() != PaceMode::FullSpeed))
    }
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
            .unwrap_or_else(|| self.pace_mode().rows_per_pipeline())
    }
    pub fn writers(&self) -> u32 {
        self.writers
            .unwrap_or_else(|| self.pace_mode().writers_in_flight())
    }
    pub fn retry_backoff(&self) -> Duration {
        Duration::from_millis(self.retry_backoff_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn common_flags_work_after_the_subcommand() {
        let cli = Cli::try_parse_from(["fs-loader", "stream", "--from", "-", "--chunk-size", "7"])
            .expect("parses");
        assert_eq!(cli.common.chunk_size(), 7);
        assert!(matches!(cli.command, Some(Command::Stream(_))));
    }

    /// The common flags of `fs-loader --count 1 <args>`.
    fn common(args: &[&str]) -> Result<CommonArgs, clap::Error> {
        let mut argv = vec!["fs-loader", "--count", "1"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).map(|c| c.common)
    }

    fn pace(args: &[&str]) -> Result<PaceMode, clap::Error> {
        common(args).map(|c| c.pace_mode())
    }

    #[test]
    fn pacing_flags_pick_the_mode_and_conflict() {
        assert_eq!(
            pace(&[]).expect("parses"),
            PaceMode::Budget(Duration::from_millis(1))
        );
        assert_eq!(
            pace(&["--latency-budget-ms", "5"]).expect("parses"),
            PaceMode::Budget(Duration::from_millis(5))
        );
        assert_eq!(
            pace(&["--latency-budget-ms", "0"]).expect("parses"),
            PaceMode::FullSpeed
        );
        assert_eq!(
            pace(&["--full-speed"]).expect("parses"),
            PaceMode::FullSpeed
        );
        assert_eq!(
            pace(&["--max-rate", "500"]).expect("parses"),
            PaceMode::MaxRate(500)
        );
        assert_eq!(
            pace(&["--latency-budget-ms", "0.25"]).expect("parses"),
            PaceMode::Budget(Duration::from_micros(250))
        );
        assert!(pace(&["--latency-budget-ms", "0.001"]).is_err());
        assert!(pace(&["--latency-budget-ms", "-1"]).is_err());
        assert!(pace(&["--max-rate", "0"]).is_err());
        assert!(pace(&["--full-speed", "--max-rate", "5"]).is_err());
        assert!(pace(&["--full-speed", "--latency-budget-ms", "2"]).is_err());
        assert!(pace(&["--max-rate", "5", "--latency-budget-ms", "2"]).is_err());
    }

    #[test]
    fn a_paced_load_gives_way_on_the_cpu_unless_told_and_full_speed_does_not() {
        let priority = |args: &[&str]| common(args).expect("parses").cpu_priority();
        assert_eq!(priority(&[]), CpuPriority::Low);
        assert_eq!(priority(&["--max-rate", "500"]), CpuPriority::Low);
        assert_eq!(priority(&["--full-speed"]), CpuPriority::Normal);
        assert_eq!(priority(&["--latency-budget-ms", "0"]), CpuPriority::Normal);
        assert_eq!(priority(&["--cpu-priority", "low"]), CpuPriority::Low);
        assert_eq!(
            priority(&["--full-speed", "--cpu-priority", "idle"]),
            CpuPriority::Idle
        );
        assert!(common(&["--cpu-priority", "high"]).is_err());
    }

    #[test]
    fn pipelines_are_short_when_paced_and_long_at_full_speed_unless_given() {
        let chunk = |args: &[&str]| common(args).expect("parses").chunk_size();
        assert_eq!(chunk(&[]), 10);
        assert_eq!(chunk(&["--max-rate", "500"]), 10);
        assert_eq!(chunk(&["--full-speed"]), 1000);
        assert_eq!(chunk(&["--latency-budget-ms", "0"]), 1000);
        assert_eq!(chunk(&["--chunk-size", "64"]), 64);
        assert_eq!(chunk(&["--full-speed", "--chunk-size", "64"]), 64);
    }

    #[test]
    fn a_paced_load_keeps_three_pipelines_in_flight_and_full_speed_two_unless_given() {
        let writers = |args: &[&str]| common(args).expect("parses").writers();
        assert_eq!(writers(&[]), 3);
        assert_eq!(writers(&["--max-rate", "500"]), 3);
        assert_eq!(writers(&["--full-speed"]), 2);
        assert_eq!(writers(&["--latency-budget-ms", "0"]), 2);
        assert_eq!(writers(&["--writers", "5"]), 5);
        assert_eq!(writers(&["--full-speed", "--writers", "1"]), 1);
        assert!(common(&["--writers", "0"]).is_err());
        assert!(common(&["--writers", "17"]).is_err());
    }

    #[test]
    fn count_and_from_conflict() {
        assert!(Cli::try_parse_from(["fs-loader", "--count", "3", "--from", "a.csv"]).is_err());
    }
}
