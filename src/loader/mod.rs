//! The loader (`fs-loader`): the batch path. It materializes synthetic users
//! or CSV / JSON-lines files into Redis with `write_batch_rows`, applies
//! streaming events with `write_streaming`, and prints or loads the scripts
//! for debugging with `redis-cli`.
//!
//! Rooms: `args` (the command line), `input` (row sources), `chunk` (reused
//! row buffers, one row per id), `event_time` (a row's event time, parsed
//! strictly), `limits` (size checks before sending),
//! `pipeline` (reader, writers, retries), `schema` (the per-row check
//! against a registry's view), `summary` (the
//! account and the failures list), `progress`, `scripts` (the subcommand),
//! `error`.

pub mod args;
pub mod chunk;
pub mod error;
pub mod event_time;
pub mod input;
pub mod limits;
pub mod pipeline;
pub mod priority;
pub mod progress;
pub mod schema;
pub mod scripts;
pub mod summary;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use crate::capabilities;
use crate::demo::synth;
use crate::pacing::Pacer;
use crate::pool::PoolConfig;
use crate::registry::{Registry, ViewKind};
use crate::store::{FeatureStore, StoreConfig};
use args::{Cli, Command, CommonArgs, FileArgs};
use error::{exit, LoaderError};
use input::ReadOptions;
use limits::Limits;
use pipeline::{Input, Settings, WriteMode};
use priority::CpuPriority;
use progress::Progress;
use schema::Schema;
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
    if cli.common.view.is_some() && cli.common.registry.is_none() {
        return Err(usage("--view needs --registry PATH (or FS_REGISTRY)"));
    }
    if let Some(col) = &cli.common.event_time_column {
        if cli.load.count.is_some() {
            return Err(usage(
                "--event-time-column (or FS_EVENT_TIME_COLUMN) names an input column: \
                 --count's synthetic rows have none",
            ));
        }
        let id_columns = [&cli.load.files.id_column, &stream_id_column(&cli.command)];
        if col.is_empty()
            || id_columns
                .iter()
                .any(|id| id.as_deref() == Some(col.as_str()))
        {
            return Err(usage(
                "--event-time-column must name a column of its own, not empty nor the id column",
            ));
        }
    }
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
            let time_col = cli.common.event_time_column.as_deref();
            let schema = target(&cli.common, ViewKind::Stream, || {
                files_columns(&a.files, time_col)
            })?;
            // A stream view's TTL is each feature's: a value older than it
            // is gone, whatever else the entity holds.
            let field_ttl = cli
                .common
                .ttl_seconds
                .or(schema.as_ref().map(|s| s.view.ttl_seconds))
                .unwrap_or(args::DEFAULT_STREAM_TTL_SECONDS);
            let plan = Plan {
                what: "stream",
                mode: WriteMode::Stream {
                    field_ttl_seconds: field_ttl,
                },
                key_prefix: key_prefix(&cli.common, schema.as_deref())?,
                batch_ttl: a.batch_ttl_seconds,
                streaming_ttl: field_ttl,
                total: None,
                inputs: file_inputs(&a.files, false, schema, time_col)?,
            };
            load(&cli.common, plan)
        }
        None => {
            let schema = match cli.load.count {
                Some(_) => {
                    let schema = target(&cli.common, ViewKind::Batch, || {
                        Ok(synth::BATCH_FEATURES
                            .iter()
                            .map(|f| (*f).to_owned())
                            .collect())
                    })?;
                    if let Some(s) = &schema {
                        synthetic_fits(s)?;
                    }
                    schema
                }
                None => target(&cli.common, ViewKind::Batch, || {
                    files_columns(&cli.load.files, cli.common.event_time_column.as_deref())
                })?,
            };
            let ttl = cli
                .common
                .ttl_seconds
                .or(schema.as_ref().map(|s| s.view.ttl_seconds))
                .unwrap_or(args::DEFAULT_BATCH_TTL_SECONDS);
            let mode = WriteMode::Batch { ttl_seconds: ttl };
            let key_prefix = key_prefix(&cli.common, schema.as_deref())?;
            let plan = match cli.load.count {
                Some(count) => {
                    let seed = cli.load.seed;
                    Plan {
                        what: "batch load (synthetic)",
                        mode,
                        key_prefix,
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
                    key_prefix,
                    batch_ttl: ttl,
                    streaming_ttl: args::DEFAULT_STREAM_TTL_SECONDS,
                    total: None,
                    inputs: file_inputs(
                        &cli.load.files,
                        true,
                        schema,
                        cli.common.event_time_column.as_deref(),
                    )?,
                },
            };
            load(&cli.common, plan)
        }
    }
}

/// With `--registry`: the view this load fills, `--view` or else inferred
/// from the input's columns, checked to be of the mode's kind (a batch view
/// is written as whole rows under a key TTL, a stream view field by field
/// with a field TTL). None without a registry.
fn target(
    common: &CommonArgs,
    kind: ViewKind,
    columns: impl FnOnce() -> Result<BTreeSet<String>, LoaderError>,
) -> Result<Option<Arc<Schema>>, LoaderError> {
    let Some(path) = &common.registry else {
        return Ok(None);
    };
    let registry = Registry::load(path)?;
    let schema = match &common.view {
        Some(name) => Schema::named(&registry, name),
        None => Schema::infer(&registry, &columns()?),
    }
    .map_err(|e| LoaderError::Usage(format!("{}: {e}", path.display())))?;
    if schema.view.kind != kind {
        let how = match schema.view.kind {
            ViewKind::Stream => "load it with `fs-loader stream` (a field TTL per feature)",
            ViewKind::Batch => "load it without `stream` (whole rows under a key TTL)",
        };
        return Err(LoaderError::Usage(format!(
            "view {:?} is a {} view: {how}",
            schema.view.name,
            schema.view.kind.as_str()
        )));
    }
    Ok(Some(Arc::new(schema)))
}

/// The feature columns of the `--from` files, to infer the view from (the
/// event time column is no feature, so it is left out). Standard input and
/// pipes cannot be looked at ahead of the load.
fn files_columns(
    files: &FileArgs,
    event_time_column: Option<&str>,
) -> Result<BTreeSet<String>, LoaderError> {
    if files.from.is_empty() {
        return Err(usage("no input: give --from PATH (`-` for standard input)"));
    }
    let mut all = BTreeSet::new();
    for path in &files.from {
        let id_column = files.id_column.as_deref();
        match input::first_columns(path, files.format, id_column, event_time_column)? {
            Some(columns) => all.extend(columns),
            None => {
                return Err(usage(
                    "the view cannot be inferred from standard input or a pipe: give --view NAME",
                ))
            }
        }
    }
    Ok(all)
}

/// `--count` writes the demo's synthetic users: with a registry, only into
/// a view exactly like the demo's, or its rows would not be of the view.
fn synthetic_fits(schema: &Schema) -> Result<(), LoaderError> {
    let demo = Registry::demo();
    let same_view = demo.view(&schema.view.name) == Some(&schema.view);
    let same_entity = demo.entity(&schema.entity.name) == Some(&schema.entity);
    if same_view && same_entity {
        return Ok(());
    }
    Err(LoaderError::Usage(format!(
        "--count writes the demo's synthetic users, which are not rows of view {:?}: \
         load your own rows with --from",
        schema.view.name
    )))
}

/// The keys' prefix: the registry's entity's (a `--key-prefix` that
/// disagrees would write where no reader of the registry looks), else
/// `--key-prefix`, else the default.
fn key_prefix(common: &CommonArgs, schema: Option<&Schema>) -> Result<String, LoaderError> {
    match (schema, &common.key_prefix) {
        (Some(s), Some(given)) if *given != s.entity.key_prefix => {
            Err(LoaderError::Usage(format!(
                "--key-prefix {given:?} disagrees with the registry: view {:?} is of entity \
                 {:?}, whose keys are {:?}<id> (drop --key-prefix / FS_KEY_PREFIX)",
                s.view.name, s.entity.name, s.entity.key_prefix
            )))
        }
        (Some(s), _) => Ok(s.entity.key_prefix.clone()),
        (None, given) => Ok(given
            .clone()
            .unwrap_or_else(|| args::DEFAULT_KEY_PREFIX.to_owned())),
    }
}

struct Plan {
    what: &'static str,
    mode: WriteMode,
    key_prefix: String,
    batch_ttl: u64,
    streaming_ttl: u64,
    total: Option<u64>,
    inputs: Vec<Input>,
}

/// Sets the run's CPU priority (see `priority`) and says which it got: one
/// asked for by flag must take, the default may fall back to normal (with a
/// warning) where the system refuses it.
fn lower_cpu_priority(common: &CommonArgs) -> Result<CpuPriority, LoaderError> {
    let wanted = common.cpu_priority();
    match wanted.apply() {
        Ok(()) => Ok(wanted),
        Err(e) if common.cpu_priority.is_some() => {
            Err(usage(&format!("--cpu-priority {wanted}: {e}")))
        }
        Err(e) => {
            eprintln!("fs-loader: warning: kept the normal CPU priority ({wanted} refused: {e})");
            Ok(CpuPriority::Normal)
        }
    }
}

fn load(common: &CommonArgs, plan: Plan) -> Result<u8, LoaderError> {
    let tls = common.tls.load()?;
    let config = StoreConfig {
        key_prefix: plan.key_prefix.clone(),
        batch_ttl_seconds: plan.batch_ttl,
        streaming_ttl_seconds: plan.streaming_ttl,
        chunk_size: common.chunk_size(),
        pool: PoolConfig {
            max_size: common.writers() + 1,
            connect_timeout: common.connect_timeout(),
            io_timeout: IO_TIMEOUT,
            checkout_timeout: common.connect_timeout(),
            tls: tls.clone(),
        },
        ..StoreConfig::default()
    };
    // Validates prefix, TTLs and chunk size; does not connect.
    // Writes are dated by the views of the registry the server reads with
    // (the demo's when none is given): see `store::views`.
    let dating = match &common.registry {
        Some(path) => Registry::load(path)?,
        None => Registry::demo(),
    };
    let store = FeatureStore::open(&common.redis_url, config)?.with_registry(&dating);
    let mut failures = FailureSink::create(common.failures.as_deref())?;
    // Its probe sleeps until the first write, and stops when it is dropped.
    let pacer = Pacer::with_tls(common.pace_mode(), &common.redis_url, &tls)?;
    // After the probe started (it keeps the priority of the clients it
    // stands for), before the writers do (they inherit this thread's).
    let priority = lower_cpu_priority(common)?;
    let mut progress = Progress::new(common.quiet, plan.total)
        .with_pace(&pacer, Duration::from_millis(common.progress_ms));
    let mut settings = Settings {
        mode: plan.mode,
        chunk_size: common.chunk_size(),
        writers: common.writers() as usize,
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
        let elapsed = started.elapsed();
        let text = summary::render(plan.what, &Default::default(), elapsed, &ending);
        let _ = std::io::stdout().write_all(text.as_bytes());
        if let Some(path) = &common.metrics_file {
            summary::write_metrics_file(path, &Default::default(), elapsed, 0, exit::UNAVAILABLE)?;
        }
        return Ok(exit::UNAVAILABLE);
    }
    // Also before any input is read: an unsuitable Redis fails every row.
    let missing = pipeline::retry_while_unavailable(&settings, || store.missing_capabilities())?;
    if !missing.is_empty() {
        return Err(LoaderError::UnsupportedRedis(capabilities::describe(
            &missing,
        )));
    }
    // Rows with a value Redis would refuse are rejected before sending
    // (Redis would close the connection on them). Unknown when CONFIG is
    // not allowed; the writers then tell such a row from an outage.
    settings.limits.redis_max_bulk =
        pipeline::retry_while_unavailable(&settings, || store.max_bulk_len())
            .ok()
            .flatten();
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
        pace: Some(format!(
            "{}; cpu priority {priority}",
            pacer.snapshot().summary_text()
        )),
    };
    // A closed stdout must not turn a finished load into a panic.
    let text = summary::render(plan.what, &outcome.counts, elapsed, &ending);
    let _ = std::io::stdout().write_all(text.as_bytes());
    let result = match outcome.error.or(finish_error) {
        Some(e) => Err(e),
        None if outcome.unavailable => Ok(exit::UNAVAILABLE),
        None if outcome.interrupted => Ok(exit::INTERRUPTED),
        None if outcome.counts.complete() && outcome.stopped.is_none() => Ok(exit::OK),
        None => Ok(exit::INCOMPLETE),
    };
    if let Some(path) = &common.metrics_file {
        let code = match &result {
            Ok(code) => *code,
            Err(e) => e.exit_code(),
        };
        let written =
            summary::write_metrics_file(path, &outcome.counts, elapsed, outcome.retries, code);
        // The load's own error says more than the metrics file's.
        if let (Err(e), Ok(_)) = (written, &result) {
            return Err(e);
        }
    }
    result
}

/// The `--from` inputs, checked to exist now (a typo fails before anything
/// is written) and opened one after the other as the load reaches them.
fn file_inputs(
    files: &FileArgs,
    allow_retract: bool,
    schema: Option<Arc<Schema>>,
    event_time_column: Option<&str>,
) -> Result<Vec<Input>, LoaderError> {
    if files.from.is_empty() {
        return Err(usage("no input: give --from PATH (`-` for standard input)"));
    }
    if files.from.iter().filter(|p| p.as_os_str() == "-").count() > 1 {
        return Err(usage("standard input (`-`) can be read only once"));
    }
    let options = ReadOptions {
        id_column: files.id_column.clone(),
        allow_retract,
        schema,
        event_time_column: event_time_column.map(str::to_owned),
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

/// `stream --id-column`, if given.
fn stream_id_column(command: &Option<Command>) -> Option<String> {
    match command {
        Some(Command::Stream(a)) => a.files.id_column.clone(),
        _ => None,
    }
}

fn usage(msg: &str) -> LoaderError {
    LoaderError::Usage(msg.to_owned())
}
