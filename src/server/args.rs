//! The server's flags, each with an environment fallback.

use std::path::PathBuf;

use clap::Parser;

use super::auth::Secret;

/// Serve the feature store's page, JSON API and streaming worker.
///
/// Without --redis-url it starts its own throwaway Redis, seeds demo users
/// and runs the worker. With --redis-url it writes nothing until asked
/// (--seed-demo, or the page's buttons).
#[derive(Parser, Debug, Clone)]
#[command(name = "fs-server", version, about)]
pub struct Args {
    /// Redis to use, e.g. redis://127.0.0.1:6380/, with an ACL user
    /// redis://user:password@host:port/, over TLS rediss://host:port/, a
    /// cluster redis+cluster://h1:p1,h2:p2/ (rediss+cluster:// over TLS).
    /// Unset: start a managed one.
    #[arg(long, env = "FS_REDIS_URL")]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
    #[arg(long, env = "FS_HOST", default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, env = "FS_PORT", default_value_t = 8090)]
    pub port: u16,
    /// The feature registry (TOML: entities, views, models; see
    /// docs/registry.md). Unset: the demo's, examples/demo.toml.
    #[arg(long, env = "FS_REGISTRY", value_name = "PATH")]
    pub registry: Option<PathBuf>,
    /// The key prefix of the registry's first entity (the one `/read`,
    /// `/batch-read` and `/inspect` serve). Default: the registry's own
    /// (`fs:user:` for the demo).
    #[arg(long, env = "FS_KEY_PREFIX", value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    #[arg(long, env = "FS_BATCH_TTL_SECONDS", default_value_t = 86_400)]
    pub batch_ttl_seconds: u64,
    #[arg(long, env = "FS_STREAMING_TTL_SECONDS", default_value_t = 300)]
    pub streaming_ttl_seconds: u64,
    /// Demo users written at startup (embedded mode, or with --seed-demo).
    #[arg(long, env = "FS_SEED_USERS", default_value_t = 200,
          value_parser = clap::value_parser!(u64).range(0..=100_000))]
    pub seed_users: u64,
    /// With --redis-url: seed demo users and start the worker anyway.
    #[arg(long, env = "FS_SEED_DEMO")]
    pub seed_demo: bool,
    /// Entities the worker updates per tick.
    #[arg(long, env = "FS_USERS_PER_TICK", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub users_per_tick: u64,
    #[arg(long, env = "FS_TICK_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub tick_ms: u64,
    /// Request threads (the Redis pool gets a few more connections).
    #[arg(long, env = "FS_THREADS", default_value_t = 8,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Largest request body accepted; larger is answered 413.
    #[arg(long, env = "FS_MAX_BODY_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub max_body_bytes: u64,
    /// Largest body of a Feast write (`/write-to-online-store`, `/push`):
    /// Feast's SDK posts a whole DataFrame in one request, so these routes
    /// take more than --max-body-bytes (an admin route once tokens exist).
    #[arg(long, env = "FS_MAX_WRITE_BODY_BYTES", default_value_t = 8_388_608,
          value_parser = clap::value_parser!(u64).range(1024..=16_777_216))]
    pub max_write_body_bytes: u64,
    /// A client connection silent this long (idle keep-alive, a stalled
    /// body) is closed.
    #[arg(long, env = "FS_IDLE_TIMEOUT_MS", default_value_t = 15_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub idle_timeout_ms: u64,
    /// Total time a request body may take to arrive; past it the request is
    /// answered 408 and its connection closed. A connection that has not
    /// sent a whole request head within idle timeout + this is closed.
    #[arg(long, env = "FS_REQUEST_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub request_timeout_ms: u64,
    /// Open client connections above this are closed, those longest without
    /// a request first (each costs a thread inside tiny_http). Default:
    /// 1024, or less if the open-files limit (raised to its hard limit at
    /// start) is lower.
    #[arg(long, env = "FS_MAX_CONNECTIONS",
          value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub max_connections: Option<u64>,
    /// An origin (scheme://host[:port]) whose pages may POST here besides
    /// the server's own; repeat it, or comma-separate in the variable.
    #[arg(
        long = "allowed-origin",
        env = "FS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
    /// Connect, I/O and pool-checkout timeout towards Redis: how fast a
    /// request answers 503 when Redis is down.
    #[arg(long, env = "FS_REDIS_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub redis_timeout_ms: u64,
    /// How often the entity count is refreshed and the background scan
    /// (1% of Redis time at most) runs a step.
    #[arg(long, env = "FS_REFRESH_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=3_600_000))]
    pub refresh_ms: u64,
    /// `/bulk-load` and the streaming worker keep the latency their writes
    /// add to other clients' commands (reads included) under this many ms,
    /// slowing down as needed (as fs-loader's --latency-budget-ms;
    /// fractions allowed); 0: no pacing.
    #[arg(long, env = "FS_WRITE_LATENCY_BUDGET_MS", value_name = "MS", default_value_t = 1.0,
          value_parser = crate::pacing::parse_budget_ms)]
    pub write_latency_budget_ms: f64,
    /// A bearer token that may call the read routes (see README, "Tokens").
    /// At least 16 visible ASCII characters. Any token given: every route
    /// but the page and /healthz asks for one.
    #[arg(
        long,
        env = "FS_READ_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub read_token: Option<Secret>,
    /// A bearer token that may also write and control (bulk load, worker,
    /// reset, push).
    #[arg(
        long,
        env = "FS_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<Secret>,
    /// A file of tokens, one `read <token>` or `admin <token>` a line (`#`
    /// comments), several per role for rotation; re-read within a second
    /// when it changes, no restart needed.
    #[arg(long, env = "FS_API_TOKEN_FILE", value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// Serve a non-loopback --host without tokens (refused otherwise).
    #[arg(long, env = "FS_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Log one `event=access` line per request (method, route, status,
    /// ms, bytes; never the query string, a header or the body).
    #[arg(long, env = "FS_ACCESS_LOG")]
    pub access_log: bool,
    /// Requests that take longer are logged (`event=slow_request`, warn).
    #[arg(long, env = "FS_SLOW_REQUEST_MS", value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub slow_request_ms: u64,
    /// Turn `/metrics` and its per-request counting off: only there to
    /// measure what the counting costs (the bench does).
    #[arg(long, env = "FS_NO_METRICS", hide = true)]
    pub no_metrics: bool,
}
