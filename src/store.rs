//! `FeatureStore`: the synchronous client the server, the loader and model
//! servers use. This file is the facade: configuration, the types callers
//! see, opening the store and the checks every path shares. The rest is in
//! `store/`, one file per part:
//!
//! - `write`: batch rows and streaming updates through the Lua scripts (each
//!   entity's write atomic; up to `entities_per_call` entities per `EVALSHA`,
//!   fewer when they are wide, `chunk_size` per pipelined round trip), dated
//!   by event time (`views`, `event_fields`);
//! - `read`: plain `HMGET`s and `read_fresh`; `aged` and `vectors` for reads
//!   bounded by a maximum age and typed vectors (`dating` is what dates
//!   them);
//! - `keyspace`: counting, listing and deleting under the prefix;
//! - `transport`: the seam every call to Redis goes through, to one
//!   server (`node`) or to a cluster's primaries by hash slot (`cluster`,
//!   `slots`); on a cluster, `write` groups its calls by slot.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use redis::{Cmd, Pipeline, ServerErrorKind, Value};
use serde::Serialize;

use crate::capabilities;
use crate::error::StoreError;
use crate::event_clock;
use crate::pool::{self, PoolConfig};
use crate::registry::Registry;
use crate::scripts::{
    Dated, EntityArgs, LuaScript, MAX_RETRACT_PER_ENTITY, MAX_SET_PER_ENTITY, READ_FRESH,
    WRITE_BATCH_ROWS, WRITE_STREAMING,
};
use crate::validate;
use crate::value::{escape_bytes, FeatureMap, ReadValue};

mod aged;
mod cluster;
mod dating;
pub mod event_fields;
mod keyspace;
mod node;
mod read;
pub mod slots;
mod transport;
mod vectors;
mod write;

pub use aged::AgedRows;
pub use cluster::one_node_url;
pub use node::ErrorClass;
pub use transport::Backend;
use transport::{decode, decode_values, hmget, ok_reply, server_error, Transport};
pub use write::split_calls;
pub mod views;

use event_fields::Freshness;
pub use vectors::{Status, Vectors, MAX_VECTOR_IDS};
use views::ViewMap;

/// The longest TTL the store accepts (ten years); longer is almost surely a
/// unit mistake (milliseconds for seconds).
pub const MAX_TTL_SECONDS: u64 = 10 * 365 * 24 * 3600;
/// The most rows one pipeline carries.
pub const MAX_CHUNK_SIZE: usize = 100_000;
/// The most entities one script call carries (a call blocks Redis while it
/// runs: 1000 rows is a few milliseconds).
pub const MAX_ENTITIES_PER_CALL: usize = 1000;
/// A script call also closes before its arguments pass either budget, so
/// that a call of wide rows holds Redis about as long as one of narrow rows
/// (at most about 0.5 ms). Measured with `INFO commandstats` on Redis 8:
/// 50 synthetic streaming updates (12 arguments each) take about 0.4 ms a
/// call, 40 batch rows of 6 features (15 arguments) about 0.3 ms; a row's
/// cost grows faster than its width (a 100-feature HSET alone is about
/// 75 us, an HSETEX about 170 us), so 600 arguments, two such rows, is the
/// budget. A row over a budget is sent alone: it is one atomic write, and
/// one of more than about 250 features holds Redis over 0.5 ms by itself.
pub const MAX_ARGS_PER_CALL: usize = 600;
/// See `MAX_ARGS_PER_CALL`: bytes of keys and arguments per call. A script
/// copies every argument into Lua and back, about 3 us per KiB of values
/// on Redis 8 (50 rows of six 5.5 KB values: 4.7 ms a call), so 64 KiB is
/// about 0.2-0.3 ms.
pub const MAX_ARG_BYTES_PER_CALL: usize = 64 * 1024;
/// How many keys one SCAN call asks for.
const SCAN_COUNT: usize = 1000;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub key_prefix: String,
    /// Key-level TTL of batch rows, and the one a streaming write pins on a
    /// key that has none.
    pub batch_ttl_seconds: u64,
    /// Default per-field TTL of streaming features.
    pub streaming_ttl_seconds: u64,
    /// Rows per pipeline (one round trip) in bulk writes.
    pub chunk_size: usize,
    /// Entities per script call in bulk writes, at most: one call's fixed
    /// cost inside Redis is shared by this many. A call of wide rows closes
    /// sooner (`MAX_ARGS_PER_CALL`, `MAX_ARG_BYTES_PER_CALL`).
    pub entities_per_call: usize,
    pub pool: PoolConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            key_prefix: "fs:user:".into(),
            batch_ttl_seconds: 24 * 3600,
            streaming_ttl_seconds: 300,
            chunk_size: 1000,
            entities_per_call: 50,
            pool: PoolConfig::default(),
        }
    }
}

/// Cumulative counters since the store was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Batch rows written.
    pub batch_writes_total: u64,
    /// Streaming writes (one per entity update).
    pub streaming_writes_total: u64,
    /// Entity reads (one per entity in a batch read).
    pub reads_total: u64,
    /// Feature values returned by reads.
    pub read_fields_total: u64,
    /// Stored values a typed read (`vectors`) found not of their declared
    /// type, and served as missing.
    pub invalid_values_total: u64,
    /// Features a write left alone because the stored value's event time
    /// was the same or newer (replays, retries, late events).
    pub skipped_stale_total: u64,
    /// Round trips to Redis: one per pipeline or command sent to a node (a
    /// cluster pipeline costs one per node it touches).
    pub redis_round_trips_total: u64,
}

/// What the store's Redis connections did since it was opened (summed over
/// a cluster's nodes), and its pools now: what `/metrics` shows of Redis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RedisStats {
    pub round_trips_total: u64,
    /// Script calls sent (`EVALSHA`), a call re-sent after NOSCRIPT again.
    pub script_calls_total: u64,
    /// Rounds that re-loaded a script Redis had lost (NOSCRIPT: after a
    /// restart, a failover or `SCRIPT FLUSH`).
    pub noscript_reloads_total: u64,
    /// Failed operations (after the store's one retry on a fresh
    /// connection), indexed like `ErrorClass::ALL`.
    pub errors_total: [u64; ErrorClass::ALL.len()],
    /// Checkouts that found no connection within the checkout timeout.
    pub pool_checkout_timeouts_total: u64,
    /// Time spent waiting for a pooled connection, in microseconds.
    pub pool_checkout_wait_micros_total: u64,
    /// Connections open now, idle now, and the most the pools may open.
    pub pool_connections: u64,
    pub pool_idle: u64,
    pub pool_max: u64,
}

#[derive(Default)]
struct Counters {
    batch_writes: AtomicU64,
    streaming_writes: AtomicU64,
    reads: AtomicU64,
    read_fields: AtomicU64,
    invalid_values: AtomicU64,
    skipped_stale: AtomicU64,
}

/// One batch row: features to set and features to retract (delete), written
/// in one script call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRow {
    pub id: String,
    pub set: Vec<(String, String)>,
    pub retract: Vec<String>,
    /// When the row's event happened, in milliseconds since the epoch.
    /// `None`: the time of the write call (`event_clock::now_ms`).
    pub event_time_ms: Option<u64>,
}

impl BatchRow {
    pub fn from_features(id: &str, features: &FeatureMap) -> BatchRow {
        BatchRow {
            id: id.to_owned(),
            set: features
                .iter()
                .map(|(k, v)| (k.clone(), v.encode()))
                .collect(),
            retract: Vec::new(),
            event_time_ms: None,
        }
    }
}

/// A row (or event) that was not written, and why.
#[derive(Debug)]
pub struct RowFailure {
    /// Its position in the slice passed to the write call.
    pub index: usize,
    pub id: String,
    pub error: StoreError,
}

/// The outcome of a bulk write: every input row is either counted in
/// `written` or listed in `failed`, never both.
#[derive(Debug, Default)]
pub struct WriteReport {
    pub written: usize,
    pub failed: Vec<RowFailure>,
    /// Features the written rows did not change because the stored value
    /// is as new or newer (same or later event time): a replay, a retry,
    /// an event that arrived late.
    pub skipped_stale: usize,
}

impl WriteReport {
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// One entity's values in the order of the names asked for: `None` where a
/// feature (or the whole entity) is missing.
pub type FeatureRow = Vec<Option<ReadValue>>;

/// What one SCAN of the prefix found (`FeatureStore::census`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    /// Every key under the prefix.
    pub count: u64,
    /// Up to the limit asked for, sorted; only ids the store accepts.
    pub ids: Vec<String>,
    /// Keys under the prefix whose id the store would refuse (another
    /// tool's keys): counted, never listed.
    pub unlisted: u64,
}

/// One page of a census pass (`FeatureStore::census_page`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CensusPage {
    /// The cursor to continue from; 0 when the pass is over.
    pub next: u64,
    /// Keys on the page outside the prefix.
    pub foreign: u64,
    /// This page ended one node's scan (a cluster is scanned one primary
    /// after the other; standalone, the last page of the pass).
    pub node_done: bool,
}

/// One feature as `read_fresh` sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldState {
    /// As stored; a name another tool wrote with bytes that are not UTF-8
    /// (or a backslash) is escaped (`\xNN`, `\\`: `value::escape_bytes`).
    pub name: String,
    /// `None` when the field is missing (never written, expired, retracted).
    /// In JSON a string, or `{"base64": ...}` for a value that is not UTF-8.
    pub value: Option<ReadValue>,
    /// Seconds left; -1 no field TTL (batch field); -2 missing.
    pub ttl_seconds: i64,
    /// When the value's event happened (epoch ms): the newer of its view's
    /// time and its own (`event_fields`). `None`: missing, or undated.
    pub event_time_ms: Option<u64>,
    /// Redis's clock minus `event_time_ms`.
    pub age_ms: Option<i64>,
    /// The verdict against the read's maximum age; a value that is not
    /// served under it (`Freshness::is_served`) is left out of `value`.
    pub freshness: Freshness,
}

impl FieldState {
    /// The value when it is present and UTF-8 text.
    pub fn text(&self) -> Option<&str> {
        self.value.as_ref().and_then(ReadValue::as_str)
    }
}

/// Values and freshness of one entity, read in one round trip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FreshRead {
    /// Seconds left on the key; -1 no TTL; -2 no such entity.
    pub key_ttl_seconds: i64,
    /// Redis's clock at the read (epoch ms): what ages are measured on.
    pub now_ms: u64,
    pub fields: Vec<FieldState>,
}

impl FreshRead {
    pub fn exists(&self) -> bool {
        self.key_ttl_seconds != -2
    }
}

pub struct FeatureStore {
    /// The connections: one server's pool, or a cluster's (shared with
    /// every store made by `with_key_prefix`).
    transport: Arc<Transport>,
    config: StoreConfig,
    /// Shared with every store made by `with_key_prefix`, so `stats` counts
    /// the writes to every entity type.
    counters: Arc<Counters>,
    /// Which view each feature belongs to: how writes are dated and reads
    /// aged (`views`, `event_fields`). Empty: every feature is dated alone.
    views: Arc<ViewMap>,
}

impl FeatureStore {
    /// Validates the configuration and builds the pool. It does not connect:
    /// the first operation does, so this succeeds while Redis is down.
    pub fn open(redis_url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        validate::key_prefix(&config.key_prefix)?;
        check_ttl("batch ttl", config.batch_ttl_seconds)?;
        check_ttl("streaming ttl", config.streaming_ttl_seconds)?;
        if config.chunk_size == 0 || config.chunk_size > MAX_CHUNK_SIZE {
            return Err(StoreError::invalid(format!(
                "chunk size must be 1 to {MAX_CHUNK_SIZE}, got {}",
                config.chunk_size
            )));
        }
        if config.entities_per_call == 0 || config.entities_per_call > MAX_ENTITIES_PER_CALL {
            return Err(StoreError::invalid(format!(
                "entities per call must be 1 to {MAX_ENTITIES_PER_CALL}, got {}",
                config.entities_per_call
            )));
        }
        Ok(FeatureStore {
            transport: Arc::new(Transport::open(redis_url, &config.pool)?),
            config,
            counters: Arc::default(),
            views: Arc::default(),
        })
    }

    /// The same store dating writes by the views of `registry`: a write
    /// covering a whole view keeps one event time for it, instead of one
    /// per feature (see `event_fields`). Every writer of a keyspace must
    /// use the same registry.
    pub fn with_registry(mut self, registry: &Registry) -> FeatureStore {
        self.views = Arc::new(ViewMap::from_registry(registry));
        self
    }

    /// The same store (its pool, counters and settings) building keys under
    /// another prefix: one registry entity type's hashes (`fs:merchant:`)
    /// written through the same connections and scripts. The prefix is
    /// checked as `open` checks its own. Cheap: the pool is shared, not
    /// rebuilt, and no connection is made. The capability check done at
    /// start probed the commands under the first prefix; an ACL that limits
    /// keys by pattern must allow this prefix too, else its writes fail
    /// (each row reported, nothing half-written: see the scripts).
    pub fn with_key_prefix(&self, prefix: &str) -> Result<FeatureStore, StoreError> {
        validate::key_prefix(prefix)?;
        Ok(FeatureStore {
            transport: self.transport.clone(),
            config: StoreConfig {
                key_prefix: prefix.to_owned(),
                ..self.config.clone()
            },
            counters: self.counters.clone(),
            views: self.views.clone(),
        })
    }

    /// The same store pinning `ttl_seconds` (instead of the batch TTL it was
    /// opened with) on a key a streaming write finds without a TTL: a
    /// stream view's push gives a new entity its entity's batch TTL.
    pub fn with_batch_ttl(mut self, ttl_seconds: u64) -> Result<FeatureStore, StoreError> {
        check_ttl("batch ttl", ttl_seconds)?;
        self.config.batch_ttl_seconds = ttl_seconds;
        Ok(self)
    }

    /// What the scripts need that this Redis refuses (empty: nothing):
    /// callers check it once at connect time and refuse to start when
    /// something is missing. `Err` only when Redis cannot be reached.
    pub fn missing_capabilities(&self) -> Result<Vec<capabilities::Missing>, StoreError> {
        capabilities::missing(&self.config.key_prefix, |cmd| self.query(cmd).map(drop))
    }

    pub fn key_prefix(&self) -> &str {
        &self.config.key_prefix
    }
    pub fn batch_ttl_seconds(&self) -> u64 {
        self.config.batch_ttl_seconds
    }
    pub fn streaming_ttl_seconds(&self) -> u64 {
        self.config.streaming_ttl_seconds
    }
    pub fn chunk_size(&self) -> usize {
        self.config.chunk_size
    }

    pub fn stats(&self) -> Stats {
        Stats {
            batch_writes_total: self.counters.batch_writes.load(Relaxed),
            streaming_writes_total: self.counters.streaming_writes.load(Relaxed),
            reads_total: self.counters.reads.load(Relaxed),
            read_fields_total: self.counters.read_fields.load(Relaxed),
            invalid_values_total: self.counters.invalid_values.load(Relaxed),
            skipped_stale_total: self.counters.skipped_stale.load(Relaxed),
            redis_round_trips_total: self.transport.round_trips(),
        }
    }

    /// Counters and pool state of the connections to Redis (no Redis call).
    pub fn redis_stats(&self) -> RedisStats {
        self.transport.redis_stats()
    }

    /// `<prefix><id>`, after checking the id.
    pub fn key_for(&self, id: &str) -> Result<String, StoreError> {
        validate::entity_id(id)?;
        let mut key = String::with_capacity(self.config.key_prefix.len() + id.len());
        key.push_str(&self.config.key_prefix);
        key.push_str(id);
        Ok(key)
    }

    /// `INFO <section>`, as Redis prints it (on a cluster, the first
    /// primary's).
    pub fn info(&self, section: &str) -> Result<String, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(section);
        decode("INFO", self.query(&cmd)?)
    }

    /// Answers when Redis does (on a cluster, every primary).
    pub fn ping(&self) -> Result<(), StoreError> {
        self.query_each_node(&redis::cmd("PING")).map(drop)
    }

    // ---- batch path -------------------------------------------------------
}

fn wrong_type(key: &str) -> String {
    format!("WRONGTYPE {key} holds a value that is not a hash; row not written")
}

/// The largest event time the scripts take: 15 digits, exact in Lua's
/// numbers (about the year 33658).
pub const MAX_EVENT_TIME_MS: u64 = 999_999_999_999_999;

fn check_event_time(event_time_ms: Option<u64>) -> Result<(), StoreError> {
    match event_time_ms {
        Some(t) if t > MAX_EVENT_TIME_MS => Err(StoreError::invalid(format!(
            "event time {t} is past the largest, {MAX_EVENT_TIME_MS} (epoch ms)"
        ))),
        _ => Ok(()),
    }
}

fn check_counts(set: usize, retract: usize) -> Result<(), StoreError> {
    if set > MAX_SET_PER_ENTITY || retract > MAX_RETRACT_PER_ENTITY {
        return Err(StoreError::invalid(format!(
            "an entity's write may set at most {MAX_SET_PER_ENTITY} and retract at most \
             {MAX_RETRACT_PER_ENTITY} features, got {set} and {retract}"
        )));
    }
    Ok(())
}

fn check_ttl(what: &str, ttl: u64) -> Result<(), StoreError> {
    if ttl == 0 || ttl > MAX_TTL_SECONDS {
        return Err(StoreError::invalid(format!(
            "{what} must be 1 to {MAX_TTL_SECONDS} seconds, got {ttl}"
        )));
    }
    Ok(())
}

pub(crate) fn check_names<N: AsRef<str>>(names: &[N]) -> Result<(), StoreError> {
    names
        .iter()
        .try_for_each(|n| validate::feature_name(n.as_ref()))
}

fn check_features(features: &FeatureMap) -> Result<(), StoreError> {
    check_counts(features.len(), 0)?;
    for (name, value) in features {
        validate::feature_name(name)?;
        if !value.is_encodable() {
            return Err(StoreError::invalid(format!(
                "feature {name:?} has a value with no text form ({value:?})"
            )));
        }
    }
    Ok(())
}
