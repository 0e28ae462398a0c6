//! The loader (`fs-loader`): the batch path. It materializes synthetic users
//! or CSV / JSON-lines files into Redis with `write_batch_rows`, applies
//! streaming events with `write_streaming`, and prints or loads the scripts
//! for debugging with `redis-cli`.
//!
//! Rooms: `args` (the command line), `input` (row sources), `chunk` (reused
//! row buffers, one row per id), `limits` (size checks before sending),
//! `pipeline` (reader, writers, retries), `summary` (the
//! account and the failures list), `progress`, `scripts` (the subcommand),
//! `error`.

pub mod args;
pub mod chunk;
pub mod error;
pub mod input;
pub mod limits;
pub mod pipeline;
pub mod progress;
pub mod scripts;
pub mod summary;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::capabilities;
use crate::pacing::Pacer;
use crate::pool::PoolConfig;
use crate::store::{FeatureStore, StoreConfig};
use args::{Cli, Command, CommonArgs, FileArgs};
use error::{exit, LoaderError};
use input::ReadOptions;
use limits::Limits;
use pipeline::{Input, Settings, WriteMode};
use progress::Progress;
use summary::{Ending, FailureSink};

/// Read/write timeout of one pipeline: a chunk of script calls takes
/// milliseconds; this only bounds a hung server.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `fs-loader`'s main: parses the command line, runs, maps the outcome to
/// the documented exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("fs-loader: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

pub fn run(cli: Cli) -> Result<u8, LoaderError> {
    let load_flags_given = cli.load.count.is_some()
        || !cli.load.files.from.is_empty()
        || cli.load.files.format.is_some()
        || cli.load.files.id_column.is_some();
    match cli.command {
        Some(Command::Scripts(a)) => {
            if load_flags_given {
                return Err(usage(
                    "`scripts` takes no --count/--from/--format/--id-column",
                ));
            }
            scripts::run(&cli.common, a.load)?;
            Ok(exit::OK)
        }
        Some(Command::Stream(a)) => {
            if load_flags_given {
                return Err(usage(
                    "give stream's inputs after `stream`: fs-loader stream --from PATH",
                ));
            }
            let field_ttl = cli
                .common
                .ttl_seconds
                .unwrap_or(args::DEFAULT_STREAM_TTL_SECONDS);
            let plan = Plan {
                what: "stream",
                mode: WriteMode::Stream {
                    field_ttl_seconds: field_ttl,
                },
                batch_ttl: a.batch_ttl_seconds,
                streaming_ttl: field_ttl,
                total: None,
                inputs: file_inputs(&a.files, false)?,
            };
            load(&cli.common, plan)
        }
        None => {
            let ttl = cli
                .common
                .ttl_seconds
                .unwrap_or(args::DEFAULT_BATCH_TTL_SECONDS);
            let mode = WriteMode::Batch { ttl_seconds: ttl };
            let plan = match cli.load.count {
                Some(count) => {
                    let seed = cli.load.seed;
                    Plan {
                        what: "batch load (synthetic)",
                        mode,
                        batch_ttl: ttl,
                        streaming_ttl: args::DEFAULT_STREAM_TTL_SECONDS,
                        total: Some(count as u64),
                        inputs: vec![Input {
                            name: "synthetic".into(),
                            open: Box::new(move || Ok(Box::new(input::synthetic(count, seed)))),
                        }],
                    }
                }
                None if cli.load.files.from.is_empty() => {
                    return Err(usage(
                        "nothing to load: give --count N or --from PATH (see --help)",
                    ))
                }
                None => Plan {
                    what: "batch load",
                    mode,
                    batch_ttl: ttl,
                    streaming_ttl: args::DEFAULT_STREAM_TTL_SECONDS,
                    total: None,
                    inputs: file_inputs(&cli.load.files, true)?,
                },
            };
            load(&cli.common, plan)
        }
    }
}

struct Plan {
    what: &'static str,
    mode: WriteMode,
    batch_ttl: u64,
    streaming_ttl: u64,
    total: Option<u64>,
    inputs: Vec<Input>,
}

fn load(common: &CommonArgs, plan: Plan) -> Result<u8, LoaderError> {
    let config = StoreConfig {
        key_prefix: common.key_prefix.clone(),
        batch_ttl_seconds: plan.batch_ttl,
        streaming_ttl_seconds: plan.streaming_ttl,
        chunk_size: common.chunk_size(),
        pool: PoolConfig {
            max_size: common.writers + 1,
            connect_timeout: common.connect_timeout(),
            io_timeout: IO_TIMEOUT,
            checkout_timeout: common.connect_timeout(),
        },
        ..StoreConfig::default()
    };
    // Validates prefix, TTLs and chunk size; does not connect.
    let store = FeatureStore::open(&common.redis_url, config)?;
    let mut failures = FailureSink::create(common.failures.as_deref())?;
    // Its probe sleeps until the first write, and stops when it is dropped.
    let pacer = Pacer::new(common.pace_mode(), &common.redis_url)?;
    let mut progress = Progress::new(common.quiet, plan.total)
        .with_pace(&pacer, Duration::from_millis(common.progress_ms));
    let mut settings = Settings {
        mode: plan.mode,
        chunk_size: common.chunk_size(),
        writers: common.writers as usize,
        retries: common.retries,
        backoff: common.retry_backoff(),
        strict: common.strict,
        limits: Limits {
            max_value_bytes: common.max_value_bytes,
            max_row_bytes: common.max_row_bytes,
            redis_max_bulk: None,
        },
    };
    // First Ctrl-C: stop reading, finish what is in flight, print the
    // account. A second one exits at once. (Failing to install the handler
    // only loses that nicety.)
    let _ = ctrlc::set_handler(|| {
        if pipeline::INTERRUPTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            std::process::exit(i32::from(exit::INTERRUPTED));
        }
    });
    let started = Instant::now();
    // Before any input is read: rows taken from a pipe while Redis is down
    // would be consumed and lost to the caller (only their ids listed).
    if let Err(e) = pipeline::wait_for_redis(&store, &settings) {
        let ending = Ending {
            stopped: Some(format!("redis unavailable before the load started: {e}")),
            last_read: None,
            failures_listed: 0,
            failures_to: failures.describe(),
            pace: None,
        };
        let text = summary::render(plan.what, &Default::default(), started.elapsed(), &ending);
        let _ = std::io::stdout().write_all(text.as_bytes());
        return Ok(exit::UNAVAILABLE);
    }
    // Also before any input is read: an unsuitable Redis fails every row.
    let missing = store.missing_capabilities()?;
    if !missing.is_empty() {
        return Err(LoaderError::UnsupportedRedis(capabilities::describe(
            &missing,
        )));
    }
    // Rows with a value Redis would refuse are rejected before sending
    // (Redis would close the connection on them). Unknown when CONFIG is
    // not allowed; the writers then tell such a row from an outage.
    settings.limits.redis_max_bulk = store.max_bulk_len().ok().flatten();
    let outcome = pipeline::run_paced(
        &store,
        Some(&pacer),
        plan.inputs,
        settings,
        &mut failures,
        &mut progress,
    );
    let elapsed = started.elapsed();
    let finish_error = failures.finish().err();
    let ending = Ending {
        stopped: outcome.stopped.clone(),
        last_read: outcome.last_read.clone(),
        failures_listed: failures.listed(),
        failures_to: failures.describe(),
        pace: Some(pacer.snapshot().summary_text()),
    };
    // A closed stdout must not turn a finished load into a panic.
    let text = summary::render(plan.what, &outcome.counts, elapsed, &ending);
    let _ = std::io::stdout().write_all(text.as_bytes());
    if let Some(e) = outcome.error.or(finish_error) {
        return Err(e);
    }
    Ok(if outcome.unavailable {
        exit::UNAVAILABLE
    } else if outcome.interrupted {
        exit::INTERRUPTED
    } else if outcome.counts.complete() && outcome.stopped.is_none() {
        exit::OK
    } else {
        exit::INCOMPLETE
    })
}

/// The `--from` inputs, checked to exist now (a typo fails before anything
/// is written) and opened one after the other as the load reaches them.
fn file_inputs(files: &FileArgs, allow_retract: bool) -> Result<Vec<Input>, LoaderError> {
    if files.from.is_empty() {
        return Err(usage("no input: give --from PATH (`-` for standard input)"));
    }
    if files.from.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(usage("standard input (`-`) can be read only once"));
    }
    let options = ReadOptions {
        id_column: files.id_column.clone(),
        allow_retract,
    };
    let mut inputs = Vec::with_capacity(files.from.len());
    for path in &files.from {
        let path: PathBuf = path.clone();
        let name = if path.as_os_str() == "-" {
            "stdin".to_owned()
        } else {
            std::fs::metadata(&path).map_err(|source| LoaderError::Open {
                path: path.clone(),
                source,
            })?;
            path.display().to_string()
        };
        let (format, options) = (files.format, options.clone());
        inputs.push(Input {
            name,
            open: Box::new(move || input::open(&path)?.into_source(format, &options)),
        });
    }
    Ok(inputs)
}

fn usage(msg: &str) -> LoaderError {
    LoaderError::Usage(msg.to_owned())
}
