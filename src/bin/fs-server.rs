//! The feature store's HTTP server (page + JSON API + streaming worker).

use std::process::ExitCode;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use feature_store::capabilities;
use feature_store::demo;
use feature_store::demo::worker::{Worker, WorkerConfig};
use feature_store::logging::value;
use feature_store::pacing::{PaceMode, Pacer};
use feature_store::pool::PoolConfig;
use feature_store::redis_url::redact;
use feature_store::registry::Registry;
use feature_store::server::args::Args;
use feature_store::server::auth::{self, Auth};
use feature_store::server::cache::EntityCache;
use feature_store::server::conn;
use feature_store::server::metrics::HttpMetrics;
use feature_store::server::{alloc::HugeAllocSafe, App, Event, HttpConfig, HttpServer};
use feature_store::tls::TlsConfig;
use feature_store::{FeatureStore, ManagedRedis, StoreConfig};

/// Survives tiny_http's drain of a body declared 100 GB long (see the module).
#[global_allocator]
static ALLOC: HugeAllocSafe = HugeAllocSafe;

fn main() -> ExitCode {
    let args = Args::parse();
    feature_store::logging::init();
    feature_store::server::install_panic_hook();
    // Before anything starts: a registry with problems is a configuration
    // error to fix (exit 2, as for a bad flag), with every problem listed.
    // Tokens and the bind address are checked before anything starts too.
    let auth = match server_auth(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("fs-server: {e}");
            return ExitCode::from(2);
        }
    };
    let registry = match &args.registry {
        Some(path) => match Registry::load(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("fs-server: the registry has problems:\n{e}");
                return ExitCode::from(2);
            }
        },
        None => Registry::demo(),
    };
    let registry = match move_first_entity(registry, args.key_prefix.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("fs-server: --key-prefix: {e}");
            return ExitCode::from(2);
        }
    };
    // TLS files that cannot be used, or given for a Redis that is not
    // rediss://: a configuration error, as a bad flag.
    let tls = match args.tls.load() {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("fs-server: {e}");
            return ExitCode::from(2);
        }
    };
    if !tls.is_empty() {
        let url = args
            .redis_url
            .as_deref()
            .unwrap_or("redis://(the managed Redis)/");
        if let Err(e) = tls.client(url) {
            eprintln!("fs-server: {e}");
            return ExitCode::from(2);
        }
    }
    match run(args, registry, auth, tls) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fs-server: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--key-prefix` moves the registry's first entity, so the store and
/// every endpoint agree on where that entity's keys are.
fn move_first_entity(mut registry: Registry, prefix: Option<&str>) -> Result<Registry, String> {
    let Some(prefix) = prefix else {
        return Ok(registry);
    };
    feature_store::validate::key_prefix(prefix).map_err(|e| e.to_string())?;
    let others = registry.entities.iter().skip(1);
    if let Some(other) = others
        .map(|e| &e.key_prefix)
        .find(|p| p.starts_with(prefix) || prefix.starts_with(p.as_str()))
    {
        return Err(format!(
            "{prefix:?} overlaps another entity's prefix {other:?}: their keys would mix"
        ));
    }
    if let Some(first) = registry.entities.first_mut() {
        first.key_prefix = prefix.to_owned();
    }
    Ok(registry)
}

/// The server's tokens from the flags; refuses a non-loopback --host
/// without any (unless --insecure-no-auth).
fn server_auth(args: &Args) -> Result<Arc<Auth>, String> {
    let auth = Auth::new(
        args.read_token.as_ref().map(|s| s.expose()),
        args.admin_token.as_ref().map(|s| s.expose()),
        args.api_token_file.as_deref(),
    )?;
    auth::check_bind(&args.host, &auth, args.insecure_no_auth)?;
    let auth = Arc::new(auth);
    Auth::watch_file(&auth);
    Ok(auth)
}

fn run(args: Args, registry: Registry, auth: Arc<Auth>, tls: TlsConfig) -> Result<(), String> {
    // Kept alive until the end of `run`; dropping it stops redis-server.
    let mut managed = None;
    let (mode, url) = match &args.redis_url {
        Some(url) => ("external", url.clone()),
        None => {
            let redis =
                ManagedRedis::start().map_err(|e| format!("starting a managed Redis: {e}"))?;
            let url = redis.url();
            managed = Some(redis);
            ("embedded", url)
        }
    };
    let timeout = Duration::from_millis(args.redis_timeout_ms);
    let config = StoreConfig {
        key_prefix: registry.default_entity().key_prefix.clone(),
        batch_ttl_seconds: args.batch_ttl_seconds,
        streaming_ttl_seconds: args.streaming_ttl_seconds,
        pool: PoolConfig {
            // One connection per request thread, plus the worker and the
            // cache refresher: a request never waits for a connection.
            max_size: (args.threads as u32 + 4).max(8),
            connect_timeout: timeout,
            io_timeout: timeout.max(Duration::from_secs(2)),
            checkout_timeout: timeout,
            tls: tls.clone(),
        },
        ..StoreConfig::default()
    };
    let store = Arc::new(
        FeatureStore::open(&url, config)
            .map_err(|e| e.to_string())?
            .with_registry(&registry),
    );
    // An unsuitable Redis would fail every write: refuse to start. A Redis
    // that is down now is served as an outage (503s) until it is back.
    match store.missing_capabilities() {
        Ok(missing) if missing.is_empty() => {}
        Ok(missing) => return Err(capabilities::describe(&missing)),
        Err(e) => log::warn!(
            "event=capabilities_unknown cause={}",
            value(format!("could not check what this Redis supports: {e}"))
        ),
    }

    // What the demo writes: its own users on its registry, values of each
    // declared type on any other.
    let source = demo::Source::for_registry(&registry);
    let demo = managed.is_some() || args.seed_demo;
    if demo && args.seed_users > 0 && source.writes_batch() {
        let rows: Vec<_> = source.rows(args.seed_users as usize, 42).collect();
        let report = store
            .bulk_load(&rows, args.batch_ttl_seconds)
            .map_err(|e| format!("seeding demo users: {e}"))?;
        if let Some(f) = report.failed.first() {
            return Err(format!(
                "seeding demo users: {} failed, first {}: {}",
                report.failed.len(),
                f.id,
                f.error
            ));
        }
    }

    // No count before listening: the refresher's first tick runs in the
    // background, so a big keyspace never delays the first answer.
    let cache = EntityCache::new();
    cache.spawn_refresher(store.clone(), Duration::from_millis(args.refresh_ms));
    let ids = {
        let cache = cache.clone();
        Box::new(move || cache.ids())
    };
    // One pacer for all the server's bulk writes: /bulk-load and the worker.
    let pacer = Pacer::with_tls(
        PaceMode::budget_ms(args.write_latency_budget_ms),
        &url,
        &tls,
    )
    .map_err(|e| e.to_string())?;
    let worker = Worker::new(
        store.clone(),
        ids,
        WorkerConfig {
            users_per_tick: args.users_per_tick as usize,
            tick: Duration::from_millis(args.tick_ms),
            streaming_ttl_seconds: args.streaming_ttl_seconds,
            seed: std::process::id() as u64,
        },
    )
    .paced(pacer.clone())
    .writing(source.clone());
    if demo && source.writes_stream() {
        worker.start();
    }
    let registry_line = format!(
        "registry: {} ({} entities, {} views, {} models)",
        args.registry.as_ref().map_or_else(
            || "the demo's (examples/demo.toml)".to_owned(),
            |p| p.display().to_string()
        ),
        registry.entities.len(),
        registry.views.len(),
        registry.models.len(),
    );
    let app = Arc::new(App {
        store: store.clone(),
        registry: Arc::new(registry),
        worker,
        cache: cache.clone(),
        pacer,
        mode,
        control: Default::default(),
        reset: Default::default(),
        demo: source,
        metrics: (!args.no_metrics).then(HttpMetrics::default),
    });

    let (events, wake) = mpsc::channel();
    let on_signal = events.clone();
    ctrlc::set_handler(move || {
        let _ = on_signal.send(Event::Signal);
    })
    .map_err(|e| format!("installing the signal handler: {e}"))?;
    let nofile = conn::raise_nofile_limit();
    let max_connections = args
        .max_connections
        .map_or_else(|| conn::default_max_connections(nofile), |n| n as usize);
    let http = HttpServer::start(
        app.clone(),
        &HttpConfig {
            addr: format!("{}:{}", args.host, args.port),
            threads: args.threads as usize,
            max_body_bytes: args.max_body_bytes as usize,
            max_write_body_bytes: args.max_write_body_bytes as usize,
            io_timeout: Duration::from_millis(args.idle_timeout_ms),
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            max_connections,
            allowed_origins: args.allowed_origins.clone(),
            auth: auth.clone(),
            access_log: args.access_log,
            slow_request: Duration::from_millis(args.slow_request_ms),
        },
        events,
    )
    .map_err(|e| format!("listening on {}:{}: {e}", args.host, args.port))?;

    let addr = http.local_addr();
    match mode {
        "embedded" if matches!(app.demo, demo::Source::Demo) => {
            println!("mode: embedded (managed redis-server, demo data and worker)")
        }
        "embedded" => println!(
            "mode: embedded (managed redis-server, synthetic values of the registry's types and worker)"
        ),
        _ if demo => {
            println!("mode: external Redis, --seed-demo: demo users seeded, worker running")
        }
        _ => println!("mode: external Redis: nothing written until asked (worker stopped)"),
    }
    println!("redis: {}", redact(&url));
    println!("{registry_line}");
    println!(
        "key prefix {:?}, batch TTL {}s, streaming TTL {}s",
        store.key_prefix(),
        store.batch_ttl_seconds(),
        store.streaming_ttl_seconds(),
    );
    println!(
        "worker: {} users every {} ms",
        args.users_per_tick, args.tick_ms
    );
    println!(
        "bulk writes (/bulk-load, worker): {}",
        PaceMode::budget_ms(args.write_latency_budget_ms).describe()
    );
    println!(
        "http: {} threads, at most {max_connections} connections, request timeout {} ms",
        args.threads, args.request_timeout_ms
    );
    println!("auth: {}", auth.describe());
    log::info!(
        "event=start mode={mode} backend={} redis={} redis_version={} registry={} listen={addr} threads={} metrics={}",
        app.store.backend().kind,
        value(redis_address(&url)),
        value(redis_version(&app.store)),
        value(args.registry.as_ref().map_or_else(
            || "demo".to_owned(),
            |p| p.display().to_string()
        )),
        args.threads,
        !args.no_metrics,
    );
    println!("open http://{addr}/");

    let reason = wake.recv().unwrap_or(Event::Signal);
    log::info!("event=stop reason={}", value(format!("{reason:?}")));
    app.worker.stop();
    cache.shutdown();
    http.shutdown();
    drop(managed);
    match reason {
        Event::Signal => Ok(()),
        Event::AcceptFailed(e) => Err(format!("the accept loop stopped: {e}")),
    }
}

/// The URL's `host:port` part (no scheme, user, password or path): what
/// the start-up event names.
fn redis_address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_owned()
}

/// `redis_version` (or Valkey's `valkey_version`) from `INFO server`;
/// `unknown` when Redis cannot be asked now.
fn redis_version(store: &FeatureStore) -> String {
    let Ok(info) = store.info("server") else {
        return "unknown".to_owned();
    };
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    match field("valkey_version") {
        Some(v) => format!("valkey-{v}"),
        None => field("redis_version").unwrap_or_else(|| "unknown".to_owned()),
    }
}
