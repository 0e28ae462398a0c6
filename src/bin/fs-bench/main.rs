//! fs-bench: measures every path of the feature store against its physical
//! limit (raw Redis) in the same run, and writes `BENCHMARKS.md`.
//!
//!     cargo run --release --bin fs-bench              # full run, a few minutes
//!     cargo run --release --bin fs-bench -- --quick   # sanity run, under a minute
//!
//! It starts its own `redis-server` (never 6379), loads its own synthetic
//! users, and spawns the real `fs-server` binary for the HTTP rows.

mod cluster;
mod event_time;
mod feast;
mod http;
mod idle;
mod library;
mod loader;
mod measure;
mod report;
mod sharing;
mod vectors;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use feature_store::{FeatureStore, ManagedRedis, StoreConfig};

use crate::library::Ctx;
use crate::report::{Machine, Row};

pub type BResult<T> = Result<T, Box<dyn Error + Send + Sync>>;

/// Hand-written notes on what limits the rows that miss their goal (with the
/// profiles behind them), appended to the generated report.
const ANALYSIS: &str = include_str!("analysis.md");

/// Benchmark the feature store against raw Redis and write BENCHMARKS.md.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A sanity run with small counts (under a minute, even in a debug build).
    #[arg(long)]
    quick: bool,
    /// Where to write the report (default: BENCHMARKS.md at the repo root).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Skip the HTTP rows (no fs-server needed).
    #[arg(long)]
    no_http: bool,
    /// The fs-server binary (default: next to this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// The fs-loader binary (default: next to this executable).
    #[arg(long)]
    loader_bin: Option<PathBuf>,
    /// Users for the bulk_load row (default 1,000,000; 20,000 with --quick).
    #[arg(long)]
    users: Option<usize>,
    /// Seconds of the 8-client HTTP run (default 10; 2 with --quick).
    #[arg(long)]
    seconds: Option<u64>,
    /// Let idle CPUs halt as usual. By default the bench holds a 0 us
    /// latency request on /dev/cpu_dma_latency while it runs (when it may
    /// open it), so an idle CPU polls instead of halting: on a VM a halted
    /// vCPU takes tens of microseconds to wake, and every round trip of an
    /// otherwise idle machine pays it.
    #[arg(long)]
    let_cpus_idle: bool,
    /// Run one section alone (to try a change quickly): `sharing` (loading
    /// beside serving, the script costs), `idle` (an idle server on a big
    /// store), `cluster` (the store on a 3-primary cluster against one
    /// standalone Redis), `vectors` (the typed-vector rows, `vectors` and
    /// `v1_features`, on 20,000 loaded users unless `--users` says) or
    /// `feast` (Feast's Python SDK through our server against the same SDK
    /// through `feast serve`; needs Python, and installs Feast from PyPI
    /// into a cached virtualenv the first time).
    #[arg(long, value_enum)]
    only: Option<Section>,
    /// With `--only vectors`: a second fs-server (an older build, say) for
    /// an extra row, `POST /v1/features` on `--server-bin` against this
    /// one, the same requests alternating in blocks of 10 in one run.
    #[arg(long, value_name = "PATH")]
    vs_server_bin: Option<PathBuf>,
    /// An argument added to the paced `fs-loader` of the loading-beside-
    /// serving rows (repeatable), to try other pacing flags:
    /// `--loader-arg=--max-rate --loader-arg=50000`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    loader_arg: Vec<String>,
    /// An argument added to the loading-beside-serving rows' redis-server
    /// (repeatable), to see what a Redis setting does to the reads' tail:
    /// `--redis-arg=--activerehashing --redis-arg=no`.
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    redis_arg: Vec<String>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Section {
    Sharing,
    Idle,
    Cluster,
    Vectors,
    Feast,
}

/// How much each row does.
#[derive(Debug, Clone)]
pub struct Sizes {
    pub bulk_users: usize,
    pub streaming_events: usize,
    pub read_iters: usize,
    pub batch_iters: usize,
    pub rounds: usize,
    pub memory_entities: usize,
    pub redis_benchmark_single: usize,
    pub redis_benchmark_multi: usize,
    pub http_iters: usize,
    pub http_batch_iters: usize,
    pub http_clients: usize,
    pub http_seconds: u64,
    /// Feast SDK calls of 1 user, and of 100 users, each side.
    pub feast_iters: usize,
    pub feast_batch_iters: usize,
}

impl Sizes {
    fn full() -> Sizes {
        Sizes {
            bulk_users: 1_000_000,
            streaming_events: 200_000,
            read_iters: 20_000,
            batch_iters: 2_000,
            rounds: 10,
            memory_entities: 10_000,
            redis_benchmark_single: 50_000,
            redis_benchmark_multi: 400_000,
            http_iters: 20_000,
            http_batch_iters: 2_000,
            http_clients: 8,
            http_seconds: 10,
            feast_iters: 2_000,
            feast_batch_iters: 500,
        }
    }

    fn quick() -> Sizes {
        Sizes {
            bulk_users: 20_000,
            streaming_events: 10_000,
            read_iters: 2_000,
            batch_iters: 100,
            rounds: 4,
            memory_entities: 500,
            redis_benchmark_single: 5_000,
            redis_benchmark_multi: 20_000,
            http_iters: 1_000,
            http_batch_iters: 100,
            http_clients: 8,
            http_seconds: 2,
            feast_iters: 200,
            feast_batch_iters: 50,
        }
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("fs-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> BResult<()> {
    let started = Instant::now();
    let mut sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    if let Some(users) = args.users {
        sizes.bulk_users = users.max(1000);
    }
    if args.only == Some(Section::Vectors) {
        // Enough users for random reads; loading a million would dwarf
        // the rows this section is for.
        sizes.bulk_users = args.users.unwrap_or(20_000).max(1000);
        sizes.streaming_events = sizes.bulk_users;
    }
    if let Some(s) = args.seconds {
        sizes.http_seconds = s.max(1);
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("BENCHMARKS.md"));

    let (_awake, cpu_idle) = if args.let_cpus_idle {
        (None, "left as configured (`--let-cpus-idle`)".to_owned())
    } else {
        keep_cpus_awake()
    };
    eprintln!("fs-bench: CPU idle states {cpu_idle}");
    eprintln!("fs-bench: starting redis-server ...");
    let redis = ManagedRedis::start()?;
    let config = StoreConfig::default();
    let per_call = config.entities_per_call;
    // Dated by the demo's views, as the server and the loader date them.
    let store = FeatureStore::open(&redis.url(), config)?
        .with_registry(&feature_store::registry::Registry::demo());
    let mut raw = library::raw_connection(&redis.url())?;
    let version = library::redis_version(&mut raw)?;
    let mut machine = Machine::probe(
        version,
        redis.server_path().display().to_string(),
        if args.quick { "quick" } else { "full" },
    );
    machine.cpu_idle = cpu_idle;
    eprintln!(
        "fs-bench: {} mode, redis {} on port {}, load {}",
        machine.mode,
        machine.redis_version,
        redis.port(),
        machine.load_start
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut ctx = Ctx {
        redis: &redis,
        store: &store,
        raw: &mut raw,
        sizes: &sizes,
        loaded: 0,
        streamed: 0,
        per_call,
    };

    if args.only.is_none() {
        all_but_the_sections(&args, &mut ctx, &mut rows, &mut skipped)?;
    }
    let server_bin = server_bin(&args)?;
    if args.only == Some(Section::Vectors) {
        let vs = args.vs_server_bin.as_deref();
        vectors::section(&mut ctx, server_bin.as_deref(), vs, &mut rows)?;
    }
    let loader_bin = match args.loader_bin.clone() {
        Some(p) => p,
        None => http::sibling_bin("fs-loader")?,
    };
    match &server_bin {
        None => skipped.push("loading beside serving, the idle server (`--no-http`)".into()),
        Some(bin) => {
            if matches!(args.only, None | Some(Section::Sharing)) {
                sharing::rows(
                    &ctx,
                    bin,
                    &loader_bin,
                    &args.loader_arg,
                    &args.redis_arg,
                    &mut rows,
                )?;
            }
            if matches!(args.only, None | Some(Section::Idle)) {
                idle::rows(bin, args.quick, &mut rows)?;
            }
        }
    }

    if matches!(args.only, None | Some(Section::Cluster)) {
        cluster::rows(&sizes, &mut rows)?;
    }

    match (&server_bin, args.only) {
        (_, Some(s)) if s != Section::Feast => {}
        (None, _) => skipped.push("the Feast SDK rows (`--no-http`)".into()),
        // Python's start-up and `feast serve`'s alone outlast a quick run.
        (Some(_), None) if args.quick => {
            skipped.push("the Feast SDK rows (`--quick`; `--only feast --quick` runs them)".into())
        }
        (Some(bin), only) => feast::rows(&sizes, bin, only.is_some(), &mut rows, &mut skipped)?,
    }

    machine.load_end = report::loadavg();
    machine.elapsed = started.elapsed();
    println!("{}", report::table(&rows));
    let md = report::markdown(&machine, &rows, &skipped, ANALYSIS);
    std::fs::write(&out, md).map_err(|e| format!("writing {}: {e}", out.display()))?;
    eprintln!(
        "fs-bench: wrote {} ({:.0} s, load {} at the end)",
        out.display(),
        machine.elapsed.as_secs_f64(),
        machine.load_end
    );
    Ok(())
}

/// Every row but the two sections `--only` can pick: the library rows, the
/// HTTP rows and the loader on an empty Redis.
fn all_but_the_sections(
    args: &Args,
    ctx: &mut Ctx,
    rows: &mut Vec<Row>,
    skipped: &mut Vec<String>,
) -> BResult<()> {
    step("bulk_load", rows, library::bulk_load(ctx))?;
    step("update_streaming", rows, library::update_streaming(ctx))?;
    step("get_features", rows, library::get_features(ctx))?;
    let ours = rows[rows.len() - 1].ours;
    step(
        "get_features vs redis-benchmark",
        rows,
        library::get_features_vs_redis_benchmark(ctx, ours),
    )?;
    step("read_fresh", rows, library::read_fresh(ctx))?;
    step("batch_get_features", rows, library::batch_get_features(ctx))?;
    step("vectors", rows, vectors::library_row(ctx))?;
    step("read_max_age", rows, event_time::read_max_age(ctx))?;
    step(
        "read_max_age_vectors",
        rows,
        event_time::read_max_age_vectors(ctx),
    )?;
    step("memory", rows, library::memory(ctx))?;
    event_time::write_rows(ctx, rows)?;
    match server_bin(args)? {
        None => skipped.push("the HTTP rows (`--no-http`)".into()),
        Some(bin) => http::rows(ctx, &bin, rows)?,
    }
    // Last, on a Redis of its own.
    let loader_bin = match args.loader_bin.clone() {
        Some(p) => p,
        None => http::sibling_bin("fs-loader")?,
    };
    step("loader", rows, loader::row(ctx, &loader_bin))
}

fn server_bin(args: &Args) -> BResult<Option<PathBuf>> {
    Ok(match (args.no_http, args.server_bin.clone()) {
        (true, _) => None,
        (false, Some(p)) => Some(p),
        (false, None) => Some(http::sibling_bin("fs-server")?),
    })
}

/// Asks the kernel for a 0 us wake-up latency for as long as the returned
/// file stays open (the PM QoS interface): idle CPUs then poll rather than
/// halt. The file is opened close-on-exec, so the children do not hold it.
fn keep_cpus_awake() -> (Option<std::fs::File>, String) {
    use std::io::Write;
    let path = "/dev/cpu_dma_latency";
    match std::fs::OpenOptions::new().write(true).open(path) {
        Ok(mut f) => match f.write_all(&0i32.to_ne_bytes()) {
            Ok(()) => (
                Some(f),
                format!("kept awake: a 0 us request held on `{path}` for the run (idle CPUs poll instead of halting)"),
            ),
            Err(e) => (None, format!("left as configured: writing `{path}` failed: {e}")),
        },
        Err(e) => (None, format!("left as configured: `{path}`: {e}")),
    }
}

/// Adds a finished row and says so on stderr.
pub(crate) fn step(name: &str, rows: &mut Vec<Row>, row: BResult<Row>) -> BResult<()> {
    let row = row.map_err(|e| format!("{name}: {e}"))?;
    eprintln!(
        "fs-bench: {name}: ratio {:.2}x{}",
        row.ratio(),
        match row.met() {
            Some(true) => ", goal met",
            Some(false) => ", goal missed",
            None => "",
        }
    );
    rows.push(row);
    Ok(())
}
