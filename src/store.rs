//! `FeatureStore`: the synchronous client the server, the loader and model
//! servers use.
//!
//! Writes go through the Lua scripts (each entity's write atomic; bulk work
//! sends up to `entities_per_call` entities per `EVALSHA`, fewer when they
//! are wide, and `chunk_size` per pipelined round trip); the hot reads are plain `HMGET`s. The places that
//! talk to more than one key at a time are few and named: `run_pipeline`,
//! `scan_keys`, and `write_scripted` (which groups entities into calls). A
//! cluster backend changes those three: pipelines split by node, SCAN on
//! every primary, and calls grouped by hash slot.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use redis::{Cmd, ErrorKind, Pipeline, ServerErrorKind, Value};
use serde::Serialize;

use crate::capabilities;
use crate::error::StoreError;
use crate::event_clock;
use crate::pool::{self, Conn, Pool, PoolConfig};
use crate::registry::Registry;
use crate::scripts::{
    Dated, EntityArgs, LuaScript, MAX_RETRACT_PER_ENTITY, MAX_SET_PER_ENTITY, READ_FRESH,
    WRITE_BATCH_ROWS, WRITE_STREAMING,
};
use crate::validate;
use crate::value::{escape_bytes, FeatureMap, ReadValue};

mod aged;
mod dating;
pub mod event_fields;
mod vectors;

pub use aged::AgedRows;
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
    pool: Pool,
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
            pool: pool::build(redis_url, &config.pool)?,
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
            pool: self.pool.clone(),
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
        self.with_conn(|c| {
            capabilities::missing(&self.config.key_prefix, |cmd| {
                c.run(|r| cmd.query::<redis::Value>(r)).map(drop)
            })
        })
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
        }
    }

    /// `<prefix><id>`, after checking the id.
    pub fn key_for(&self, id: &str) -> Result<String, StoreError> {
        validate::entity_id(id)?;
        let mut key = String::with_capacity(self.config.key_prefix.len() + id.len());
        key.push_str(&self.config.key_prefix);
        key.push_str(id);
        Ok(key)
    }

    /// `INFO <section>`, as Redis prints it.
    pub fn info(&self, section: &str) -> Result<String, StoreError> {
        let mut cmd = redis::cmd("INFO");
        cmd.arg(section);
        let reply: Value = self.with_conn(|c| c.run(|c| cmd.query(c)))?;
        decode("INFO", reply)
    }

    /// Answers when Redis does.
    pub fn ping(&self) -> Result<(), StoreError> {
        self.with_conn(|c| c.run(|c| redis::cmd("PING").query::<()>(c)))
    }

    // ---- batch path -------------------------------------------------------

    /// Writes each row (its features, then the key TTL) with
    /// `write_batch_rows`: `entities_per_call` rows per script call,
    /// `chunk_size` rows per round trip. Rows with a bad id, feature name or
    /// value are reported failed and not sent.
    pub fn bulk_load(
        &self,
        rows: &[(String, FeatureMap)],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(rows.iter().map(|(id, _)| id.as_str()));
        let report = self.write_scripted(
            &WRITE_BATCH_ROWS,
            &self.counters.batch_writes,
            &[ttl_seconds],
            rows,
            |(id, _)| id,
            |i, (id, features)| {
                check_features(features)?;
                if features.is_empty() {
                    return Err(StoreError::invalid("row has no features"));
                }
                self.batch_entity(
                    self.key_for(id)?,
                    times[i],
                    Vec::new(),
                    features
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_wire()))
                        .collect(),
                )
            },
        );
        Ok(report)
    }

    /// Like `bulk_load`, for rows that also retract features (the loader's
    /// input: a null or empty cell deletes that feature in the same call).
    pub fn write_batch_rows(
        &self,
        rows: &[BatchRow],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(rows.iter().map(|r| r.id.as_str()));
        let report = self.write_scripted(
            &WRITE_BATCH_ROWS,
            &self.counters.batch_writes,
            &[ttl_seconds],
            rows,
            |row| &row.id,
            |i, row| {
                let key = self.check_batch_row(row)?;
                self.batch_entity(
                    key,
                    row.event_time_ms.unwrap_or(times[i]),
                    row.retract.iter().map(String::as_str).collect(),
                    row.set
                        .iter()
                        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                        .collect(),
                )
            },
        );
        Ok(report)
    }

    /// What `write_batch_rows` checks of each row before sending it (id,
    /// names, counts): a caller can refuse a row alone before merging or
    /// queueing it. Returns the row's key.
    pub fn check_batch_row(&self, row: &BatchRow) -> Result<String, StoreError> {
        let key = self.key_for(&row.id)?;
        if row.set.is_empty() && row.retract.is_empty() {
            return Err(StoreError::invalid("row has no features"));
        }
        check_counts(row.set.len(), row.retract.len())?;
        check_event_time(row.event_time_ms)?;
        for (name, _) in &row.set {
            validate::feature_name(name)?;
        }
        for name in &row.retract {
            validate::feature_name(name)?;
        }
        Ok(key)
    }

    /// What `update_streaming_rows` checks of each row before sending it.
    /// Returns the row's key.
    pub fn check_streaming_row(&self, row: &BatchRow) -> Result<String, StoreError> {
        let key = self.key_for(&row.id)?;
        if !row.retract.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write cannot retract features",
            ));
        }
        if row.set.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write needs at least one feature",
            ));
        }
        check_counts(row.set.len(), 0)?;
        check_event_time(row.event_time_ms)?;
        for (name, _) in &row.set {
            validate::feature_name(name)?;
        }
        Ok(key)
    }

    /// The largest single argument (bulk string) this Redis accepts
    /// (`proto-max-bulk-len`), when `CONFIG GET` is allowed; `None` when it
    /// is not (renamed, an ACL, a managed service). Redis answers a larger
    /// argument with a protocol error and closes the connection, which a
    /// client cannot tell from an outage: bulk writers use this to refuse
    /// such a row before sending it.
    pub fn max_bulk_len(&self) -> Result<Option<u64>, StoreError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("proto-max-bulk-len");
        // Decoded after the connection is done with it, like every reply
        // the store reads (see `decode`).
        let reply = self
            .with_conn(|c| c.run(|c| cmd.query::<Value>(c)))
            .and_then(|v| decode::<Vec<String>>("CONFIG GET", v));
        match reply {
            Ok(pair) => Ok(pair.get(1).and_then(|v| v.parse().ok())),
            Err(e) if e.is_unavailable() => Err(e),
            // Refused (NOPERM, unknown command): the limit stays unknown.
            Err(_) => Ok(None),
        }
    }

    // ---- streaming path ---------------------------------------------------

    /// Writes `fields` for one entity, each with a field TTL of `ttl_seconds`,
    /// atomically (`write_streaming`). A key with no TTL gets the batch TTL.
    pub fn update_streaming(
        &self,
        id: &str,
        fields: &FeatureMap,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let update = self.streaming_update(id, fields, event_clock::now_ms())?;
        let cmd = WRITE_STREAMING.call(
            &[ttl_seconds, self.config.batch_ttl_seconds],
            std::iter::once(&update),
        );
        let codes: Vec<i64> = self.eval_script(&WRITE_STREAMING, &cmd)?;
        if codes.len() != 2 * update.segments {
            return Err(StoreError::Redis(format!(
                "write_streaming: unexpected reply {codes:?}"
            )));
        }
        if codes.iter().step_by(2).any(|w| *w < 0) {
            return Err(StoreError::Redis(wrong_type(&update.key)));
        }
        let skipped: i64 = codes.iter().skip(1).step_by(2).sum();
        self.counters.streaming_writes.fetch_add(1, Relaxed);
        self.counters
            .skipped_stale
            .fetch_add(skipped.max(0) as u64, Relaxed);
        Ok(())
    }

    /// Many streaming writes: `entities_per_call` per script call,
    /// `chunk_size` per round trip; each entity's write is atomic.
    pub fn update_streaming_many(
        &self,
        events: &[(String, FeatureMap)],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(events.iter().map(|(id, _)| id.as_str()));
        let report = self.write_scripted(
            &WRITE_STREAMING,
            &self.counters.streaming_writes,
            &[ttl_seconds, self.config.batch_ttl_seconds],
            events,
            |(id, _)| id,
            |i, (id, fields)| self.streaming_update(id, fields, times[i]),
        );
        Ok(report)
    }

    /// Like `update_streaming_many`, for rows already in their wire form
    /// (the loader's `stream` input). A streaming write cannot retract: a row
    /// with retractions is refused.
    pub fn update_streaming_rows(
        &self,
        rows: &[BatchRow],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(rows.iter().map(|r| r.id.as_str()));
        let report = self.write_scripted(
            &WRITE_STREAMING,
            &self.counters.streaming_writes,
            &[ttl_seconds, self.config.batch_ttl_seconds],
            rows,
            |row| &row.id,
            |i, row| {
                let key = self.check_streaming_row(row)?;
                self.streaming_entity(
                    key,
                    row.event_time_ms.unwrap_or(times[i]),
                    row.set
                        .iter()
                        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str())))
                        .collect(),
                )
            },
        );
        Ok(report)
    }

    // ---- read path --------------------------------------------------------

    /// One `HMGET`: the named features that exist; missing ones are left out.
    /// Values are returned as stored, text or not (`ReadValue`).
    pub fn get_features<N: AsRef<str>>(
        &self,
        id: &str,
        names: &[N],
    ) -> Result<BTreeMap<String, ReadValue>, StoreError> {
        let key = self.key_for(id)?;
        check_names(names)?;
        if names.is_empty() {
            return Ok(BTreeMap::new());
        }
        let values = self
            .query_key(&key, &hmget(&key, names))
            .and_then(|v| decode_values("HMGET", v))?;
        Ok(self.count_read(zip_present(names, values)))
    }

    /// Pipelined `HMGET` for many entities in one round trip. Row `i` holds
    /// `ids[i]`'s values in the order of `names` (a feature vector for
    /// scoring), `None` where a feature or the whole entity is missing; or
    /// that entity's own error (its key holds another type), which leaves
    /// the other rows served. The call fails as a whole only for a bad id
    /// or name, or when Redis does not answer.
    pub fn batch_get_features<I: AsRef<str>, N: AsRef<str>>(
        &self,
        ids: &[I],
        names: &[N],
    ) -> Result<Vec<Result<FeatureRow, StoreError>>, StoreError> {
        check_names(names)?;
        let keys = ids
            .iter()
            .map(|id| self.key_for(id.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        if names.is_empty() || keys.is_empty() {
            return Ok(vec![Ok(Vec::new()); keys.len()]);
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for key in &keys {
            pipe.add_command(hmget(key, names));
        }
        let replies: Vec<Value> = self.run_pipeline(&pipe)?;
        if replies.len() != keys.len() {
            return Err(StoreError::Redis(format!(
                "pipelined HMGET: {} replies for {} keys",
                replies.len(),
                keys.len()
            )));
        }
        let rows: Vec<_> = keys
            .iter()
            .zip(replies)
            .map(|(key, reply)| match reply {
                Value::ServerError(e) => Err(self.name_wrong_type(key, server_error(e))),
                other => decode_values("HMGET", other),
            })
            .collect();
        let present = rows
            .iter()
            .flatten()
            .flatten()
            .filter(|v| v.is_some())
            .count();
        self.counters.reads.fetch_add(rows.len() as u64, Relaxed);
        self.counters.read_fields.fetch_add(present as u64, Relaxed);
        Ok(rows)
    }

    /// Values, per-field TTLs, event times and ages, and the key TTL in one
    /// round trip (`read_fresh`).
    pub fn read_fresh<N: AsRef<str>>(
        &self,
        id: &str,
        names: &[N],
    ) -> Result<FreshRead, StoreError> {
        self.read_fresh_within(id, names, None)
    }

    /// `read_fresh`, serving only values at most `max_age_ms` old on
    /// Redis's clock: an older one, or one with no event time, is left out
    /// and marked `Stale` or `Undated`.
    pub fn read_fresh_within<N: AsRef<str>>(
        &self,
        id: &str,
        names: &[N],
        max_age_ms: Option<u64>,
    ) -> Result<FreshRead, StoreError> {
        check_names(names)?;
        if names.is_empty() {
            return Err(StoreError::invalid(
                "read_fresh needs at least one feature name",
            ));
        }
        let read = self.fresh_read_script(id, names, max_age_ms)?;
        self.counters.reads.fetch_add(1, Relaxed);
        let present = read.fields.iter().filter(|f| f.value.is_some()).count();
        self.counters.read_fields.fetch_add(present as u64, Relaxed);
        Ok(read)
    }

    /// The whole hash with field TTLs and the key TTL (debugging; `HGETALL`
    /// cost). Fields are sorted by name; a field name another tool wrote
    /// with bytes that are not UTF-8 is shown escaped (`value::escape_bytes`).
    pub fn inspect(&self, id: &str) -> Result<FreshRead, StoreError> {
        let mut read = self.fresh_read_script::<&str>(id, &[], None)?;
        read.fields.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(read)
    }

    /// `HTTL` for the named fields: seconds left, -1 no field TTL, -2 missing.
    pub fn field_ttls<N: AsRef<str>>(&self, id: &str, names: &[N]) -> Result<Vec<i64>, StoreError> {
        let key = self.key_for(id)?;
        check_names(names)?;
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HTTL");
        cmd.arg(&key).arg("FIELDS").arg(names.len());
        for n in names {
            cmd.arg(n.as_ref());
        }
        self.query_key(&key, &cmd).and_then(|v| decode("HTTL", v))
    }

    /// `TTL` of the entity's key: seconds left, -1 none, -2 no such entity.
    pub fn key_ttl(&self, id: &str) -> Result<i64, StoreError> {
        let key = self.key_for(id)?;
        let mut cmd = redis::cmd("TTL");
        cmd.arg(&key);
        self.query_key(&key, &cmd).and_then(|v| decode("TTL", v))
    }

    // ---- keyspace ---------------------------------------------------------

    /// Keys under the prefix (a full SCAN: keep it off request paths),
    /// whatever they hold and whatever bytes their names are.
    pub fn count_entities(&self) -> Result<u64, StoreError> {
        self.census(0).map(|c| c.count)
    }

    /// Up to `limit` entity ids, sorted: only ids the store accepts
    /// (`validate::entity_id`), so every one can be read back. SCAN stops
    /// once `limit` are found.
    pub fn list_entity_ids(&self, limit: usize) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        if limit > 0 {
            let mut unlisted = 0;
            self.scan_keys(|keys| {
                self.take_ids(keys, &mut ids, &mut unlisted, limit);
                if ids.len() >= limit {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })?;
        }
        ids.sort();
        Ok(ids)
    }

    /// How many entities there are and up to `limit` of their ids (sorted),
    /// in one full SCAN: what a status page needs, for the price of a count.
    pub fn count_and_list_entities(&self, limit: usize) -> Result<(u64, Vec<String>), StoreError> {
        self.census(limit).map(|c| (c.count, c.ids))
    }

    /// One full SCAN: every key under the prefix counted, up to `limit` ids
    /// listed (sorted), and how many keys have a name the store would refuse
    /// as an id (written by another tool: not UTF-8, a space, a glob
    /// character ...). Those are counted and deleted by `delete_all`, never
    /// listed, so nothing picks an id from the list that it cannot read.
    pub fn census(&self, limit: usize) -> Result<Census, StoreError> {
        let mut census = Census::default();
        self.scan_keys(|keys| {
            census.count += keys.len() as u64;
            self.take_ids(keys, &mut census.ids, &mut census.unlisted, limit);
            ControlFlow::Continue(())
        })?;
        census.ids.sort();
        Ok(census)
    }

    /// One SCAN page of the whole keyspace (no MATCH, so keys outside the
    /// prefix are seen and counted in `foreign`), from `cursor`: the next
    /// cursor (0 once the pass is over) and the page's tallies, ids taken
    /// into `into` up to `limit` as `census` does. A pass of pages bounded
    /// by a time budget is how the server counts without a full SCAN per
    /// refresh; seeing the foreign keys tells it whether `DBSIZE` is exact.
    pub fn census_page(
        &self,
        cursor: u64,
        count: usize,
        into: &mut Census,
        limit: usize,
    ) -> Result<CensusPage, StoreError> {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("COUNT").arg(count.max(1));
        let reply: Value = self.with_conn(|c| c.run(|c| cmd.query(c)))?;
        let (next, keys): (u64, Vec<Vec<u8>>) = decode("SCAN", reply)?;
        let prefix = self.config.key_prefix.as_bytes();
        let (mine, foreign): (Vec<_>, Vec<_>) =
            keys.into_iter().partition(|k| k.starts_with(prefix));
        into.count += mine.len() as u64;
        self.take_ids(mine, &mut into.ids, &mut into.unlisted, limit);
        Ok(CensusPage {
            next,
            foreign: foreign.len() as u64,
        })
    }

    /// `DBSIZE` and `samples` `RANDOMKEY`s in one round trip: the number of
    /// keys in the database, and whether every sampled key is under the
    /// prefix (an empty database samples nothing and says true).
    pub fn dbsize_sampled(&self, samples: usize) -> Result<(u64, bool), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("DBSIZE");
        for _ in 0..samples {
            pipe.cmd("RANDOMKEY");
        }
        let mut values = self.run_pipeline::<Vec<Value>>(&pipe)?.into_iter();
        let size: u64 = match values.next() {
            Some(v) => decode("DBSIZE", v)?,
            None => return Err(StoreError::Redis("DBSIZE: an empty reply".into())),
        };
        let keys = values
            .map(|v| decode::<Option<Vec<u8>>>("RANDOMKEY", v))
            .collect::<Result<Vec<_>, _>>()?;
        let prefix = self.config.key_prefix.as_bytes();
        Ok((size, keys.iter().flatten().all(|k| k.starts_with(prefix))))
    }

    /// Moves valid ids from `keys` into `ids` until it holds `limit`;
    /// counts the keys whose id is not valid in `unlisted`.
    fn take_ids(
        &self,
        keys: Vec<Vec<u8>>,
        ids: &mut Vec<String>,
        unlisted: &mut u64,
        limit: usize,
    ) {
        let prefix = self.config.key_prefix.len();
        for key in keys {
            let id = key
                .get(prefix..)
                .and_then(|id| std::str::from_utf8(id).ok())
                .filter(|id| validate::entity_id(id).is_ok());
            match id {
                Some(id) if ids.len() < limit => ids.push(id.to_owned()),
                Some(_) => {}
                None => *unlisted += 1,
            }
        }
    }

    /// Deletes every key under the prefix (SCAN + UNLINK, one batch of keys
    /// at a time), whatever its name's bytes, and nothing else. Returns how
    /// many keys went.
    pub fn delete_all(&self) -> Result<u64, StoreError> {
        self.delete_all_reporting(|_| {})
    }

    /// `delete_all`, calling `deleted_so_far` after each batch with the
    /// running total: a reset of millions of keys takes seconds, and the
    /// page shows how far it got. Each batch (one SCAN page, one UNLINK)
    /// holds Redis for about a millisecond, so reads go on around it.
    pub fn delete_all_reporting(
        &self,
        mut deleted_so_far: impl FnMut(u64),
    ) -> Result<u64, StoreError> {
        let mut deleted = 0u64;
        let mut failure = None;
        self.scan_keys(|keys| {
            if keys.is_empty() {
                return ControlFlow::Continue(());
            }
            let mut cmd = redis::cmd("UNLINK");
            for key in &keys {
                cmd.arg(key.as_slice());
            }
            match self
                .with_conn(|c| c.run(|c| cmd.query::<Value>(c)))
                .and_then(|v| decode::<u64>("UNLINK", v))
            {
                Ok(n) => {
                    deleted += n;
                    deleted_so_far(deleted);
                    ControlFlow::Continue(())
                }
                Err(e) => {
                    failure = Some(e);
                    ControlFlow::Break(())
                }
            }
        })?;
        match failure {
            Some(e) => Err(e),
            None => Ok(deleted),
        }
    }

    // ---- the few places that talk to Redis in bulk ------------------------

    /// Runs a pipeline on one connection: one round trip. A cluster backend
    /// splits it by slot here. The reply is decoded after the connection is
    /// done with it (see `error::is_transport_error`).
    pub(crate) fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let reply: Value = self.with_conn(|c| c.run(|c| pipe.query(c)))?;
        decode("pipeline", reply)
    }

    /// Calls `each` with batches of keys under the prefix until it breaks or
    /// the SCAN cursor returns to 0. Keys are bytes: Redis allows any, and
    /// one key another tool named with bytes that are not UTF-8 must not
    /// stop a count or a reset. Keys that do not start with the prefix
    /// (impossible with an escaped pattern, checked anyway) are dropped.
    fn scan_keys(
        &self,
        mut each: impl FnMut(Vec<Vec<u8>>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let pattern = validate::scan_pattern(&self.config.key_prefix);
        let prefix = self.config.key_prefix.as_bytes();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let reply: Value = self.with_conn(|c| c.run(|c| cmd.query(c)))?;
            let (next, keys): (u64, Vec<Vec<u8>>) = decode("SCAN", reply)?;
            let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
            if each(keys).is_break() || next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Runs `op` on a pooled connection; when the connection fails under it
    /// (a Redis restart leaves every pooled connection stale), runs it once
    /// more on a fresh one. Every operation of the store is idempotent.
    fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        match op(&mut conn) {
            Err(e) if e.is_unavailable() => {
                let failed_at = Instant::now();
                drop(conn);
                let mut live = pool::checkout_live(&self.pool, failed_at)?;
                op(&mut live)
            }
            other => other,
        }
    }

    /// Sends `items` as multi-entity script calls, up to `entities_per_call`
    /// per call (fewer when their arguments pass a budget: `split_calls`)
    /// and `chunk_size` per round trip. `build` lays out one item's part
    /// of a call or refuses it; refused items, and items whose call failed or
    /// whose key held a non-hash, land in `failed`.
    fn write_scripted<'a, T>(
        &self,
        script: &LuaScript,
        written: &AtomicU64,
        head: &[u64],
        items: &'a [T],
        id_of: impl Fn(&T) -> &str,
        build: impl Fn(usize, &'a T) -> Result<EntityArgs<'a>, StoreError>,
    ) -> WriteReport {
        let mut report = WriteReport::default();
        let per_call = self.config.entities_per_call;
        for (chunk_no, chunk) in items.chunks(self.config.chunk_size).enumerate() {
            let base = chunk_no * self.config.chunk_size;
            let mut ready = Vec::with_capacity(chunk.len());
            for (i, item) in chunk.iter().enumerate() {
                match build(base + i, item) {
                    Ok(entity) => ready.push((base + i, entity)),
                    Err(error) => report.failed.push(RowFailure {
                        index: base + i,
                        id: id_of(item).to_owned(),
                        error,
                    }),
                }
            }
            if ready.is_empty() {
                continue;
            }
            let sizes = split_calls(ready.iter().map(|(_, e)| e.cost()), per_call);
            let groups: Vec<&[(usize, EntityArgs)]> = sizes
                .iter()
                .scan(0, |start, &len| {
                    let group = &ready[*start..*start + len];
                    *start += len;
                    Some(group)
                })
                .collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for group in &groups {
                pipe.add_command(script.call(head, group.iter().map(|(_, e)| e)));
            }
            let replies = self.run_script_pipeline(script, &pipe);
            for (group, reply) in groups.into_iter().zip(replies) {
                // Two integers per segment: features written, skipped.
                let segments: usize = group.iter().map(|(_, e)| e.segments).sum();
                let codes: Result<Vec<i64>, StoreError> = reply.and_then(|v| {
                    redis::from_redis_value::<Vec<i64>>(v)
                        .ok()
                        .filter(|codes| codes.len() == 2 * segments)
                        .ok_or_else(|| {
                            StoreError::Redis(format!("{}: unexpected reply", script.name))
                        })
                });
                let mut at = 0;
                for (index, entity) in group.iter() {
                    let mine = at..at + 2 * entity.segments;
                    at = mine.end;
                    let error = match &codes {
                        Ok(codes) if codes[mine.clone()].iter().step_by(2).all(|w| *w >= 0) => {
                            report.written += 1;
                            report.skipped_stale += codes[mine]
                                .iter()
                                .skip(1)
                                .step_by(2)
                                .map(|s| (*s).max(0) as usize)
                                .sum::<usize>();
                            continue;
                        }
                        Ok(_) => StoreError::Redis(wrong_type(&entity.key)),
                        Err(e) => e.clone(),
                    };
                    report.failed.push(RowFailure {
                        index: *index,
                        id: id_of(&items[*index]).to_owned(),
                        error,
                    });
                }
            }
        }
        report.failed.sort_by_key(|f| f.index);
        written.fetch_add(report.written as u64, Relaxed);
        self.counters
            .skipped_stale
            .fetch_add(report.skipped_stale as u64, Relaxed);
        report
    }

    /// One pipeline of `EVALSHA`s, one reply per command. Calls that failed
    /// with NOSCRIPT (after `SCRIPT FLUSH`, a restart or a failover: nothing
    /// ran for them) are re-sent after loading the script, in the same
    /// pipeline as the `SCRIPT LOAD`, round after round while Redis keeps
    /// answering: a script flushed again between rounds (a flush loop, a
    /// failover storm) only costs another round. Rounds stop when a round
    /// fails to reach Redis, or after `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS`
    /// rounds in a row in which no call ran (a Redis that refuses to keep
    /// the script). Calls that ran are never sent again.
    fn run_script_pipeline(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Vec<Result<Value, StoreError>> {
        let len = pipe.cmd_iter().count();
        let replies: Vec<Value> = match self.run_pipeline(pipe) {
            Ok(replies) => replies,
            Err(e) => return vec![Err(e); len],
        };
        let mut outcomes = Vec::with_capacity(len);
        let mut retry = Vec::new();
        for (i, reply) in replies.into_iter().enumerate() {
            outcomes.push(script_outcome(reply));
            if is_noscript(&outcomes[i]) {
                retry.push(i);
            }
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut idle_rounds = 0;
        while !retry.is_empty() && idle_rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS {
            let mut again = redis::pipe();
            again.ignore_errors();
            again.cmd("SCRIPT").arg("LOAD").arg(script.source);
            for &i in &retry {
                again.add_command(cmds[i].clone());
            }
            let replies: Vec<Value> = match self.run_pipeline(&again) {
                Ok(replies) => replies,
                Err(e) => {
                    for &i in &retry {
                        outcomes[i] = Err(e.clone());
                    }
                    return outcomes;
                }
            };
            let mut replies = replies.into_iter();
            if let Some(Value::ServerError(e)) = replies.next() {
                // SCRIPT LOAD refused (scripting disabled, an ACL): no round
                // can succeed.
                let error = StoreError::Redis(format!("{}: SCRIPT LOAD: {e}", script.name));
                for &i in &retry {
                    outcomes[i] = Err(error.clone());
                }
                return outcomes;
            }
            let before = retry.len();
            let mut still = Vec::new();
            for (&i, reply) in retry.iter().zip(replies) {
                outcomes[i] = script_outcome(reply);
                if is_noscript(&outcomes[i]) {
                    still.push(i);
                }
            }
            idle_rounds = if still.len() < before {
                0
            } else {
                idle_rounds + 1
            };
            retry = still;
        }
        outcomes
    }

    fn fresh_read_script<N: AsRef<str>>(
        &self,
        id: &str,
        names: &[N],
        max_age_ms: Option<u64>,
    ) -> Result<FreshRead, StoreError> {
        let key = self.key_for(id)?;
        let prefix = self.config.key_prefix.as_str();
        // The names, then the few fields that date them (`dating`): the
        // script reads any field it is given. With no names (inspect) it
        // answers the whole hash, time fields included.
        let plan = (!names.is_empty())
            .then(|| dating::DatingPlan::new(names, |n| self.views.view_of(prefix, n)));
        let mut cmd = READ_FRESH.evalsha(&key);
        for n in names {
            cmd.arg(n.as_ref());
        }
        for f in plan.iter().flat_map(|p| &p.fields) {
            cmd.arg(f);
        }
        let reply: Value = self
            .eval_script(&READ_FRESH, &cmd)
            .map_err(|e| self.name_wrong_type(&key, e))?;
        // Raw bytes first: a field name or value another tool wrote may be
        // anything, and must not fail the read.
        let (key_ttl_seconds, got_names, values, ttls, now_ms): FreshReply =
            decode("read_fresh", reply)?;
        if got_names.len() != values.len() || got_names.len() != ttls.len() {
            return Err(StoreError::Redis(
                "read_fresh: reply arrays differ in length".into(),
            ));
        }
        let n = if plan.is_some() {
            names.len()
        } else {
            got_names.len()
        };
        if got_names.len() < n {
            return Err(StoreError::Redis("read_fresh: a reply too short".into()));
        }
        let stored = |v: &Option<Vec<u8>>| v.as_deref().and_then(event_fields::parse_time);
        // Each feature's event time.
        let times: Vec<Option<u64>> = match &plan {
            Some(plan) => {
                let first = plan.first_pass(|i| stored(&values[n + i]));
                let mut times = first.times;
                if !first.needs_own.is_empty() {
                    // A partial write newer than its view's last whole one:
                    // those features' own times, one more round trip.
                    let own: Vec<&str> =
                        first.needs_own.iter().map(|&j| plan.own_field(j)).collect();
                    let got: Vec<Option<Vec<u8>>> = self
                        .query_key(&key, &hmget(&key, &own))
                        .and_then(|v| decode("HMGET", v))?;
                    for (&j, v) in first.needs_own.iter().zip(&got) {
                        times[j] = times[j].max(stored(v));
                    }
                }
                times
            }
            None => {
                // The whole hash: every time field is there to look up.
                let by_name: BTreeMap<&[u8], Option<u64>> = got_names
                    .iter()
                    .zip(&values)
                    .filter(|(f, _)| std::str::from_utf8(f).is_ok_and(event_fields::is_time_field))
                    .map(|(f, v)| (f.as_slice(), stored(v)))
                    .collect();
                let time_of = |field: &str| by_name.get(field.as_bytes()).copied().flatten();
                got_names
                    .iter()
                    .map(|name| {
                        let name = String::from_utf8_lossy(name);
                        let view = self
                            .views
                            .view_of(prefix, &name)
                            .and_then(|v| time_of(&event_fields::view_time_field(v)));
                        view.max(time_of(&event_fields::feature_time_field(&name)))
                    })
                    .collect()
            }
        };
        let fields = got_names
            .iter()
            .zip(values)
            .zip(ttls)
            .zip(times)
            .take(n)
            .filter(|(((name, _), _), _)| {
                plan.is_some() || !std::str::from_utf8(name).is_ok_and(event_fields::is_time_field)
            })
            .map(|(((name, value), ttl_seconds), time)| {
                let event_time_ms = time.filter(|_| value.is_some());
                let (age_ms, freshness) =
                    event_fields::judge(now_ms, value.is_some(), event_time_ms, max_age_ms);
                let served = freshness.is_served(max_age_ms.is_some());
                FieldState {
                    name: escape_bytes(name),
                    value: value.filter(|_| served).map(ReadValue::from),
                    ttl_seconds,
                    event_time_ms,
                    age_ms,
                    freshness,
                }
            })
            .collect();
        Ok(FreshRead {
            key_ttl_seconds,
            now_ms,
            fields,
        })
    }

    /// Runs one command on the entity at `key`; a WRONGTYPE reply becomes
    /// `WrongType` naming what the key holds.
    fn query_key(&self, key: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        self.with_conn(|c| c.run(|c| cmd.query(c)))
            .map_err(|e| self.name_wrong_type(key, e))
    }

    /// A WRONGTYPE error becomes `WrongType`, with the type from `TYPE`
    /// (one more round trip, on this error path only).
    pub(crate) fn name_wrong_type(&self, key: &str, e: StoreError) -> StoreError {
        match &e {
            // redis-rs prints the error code first, quoted: "WRONGTYPE": ...
            StoreError::Redis(m) if m.trim_start_matches('"').starts_with("WRONGTYPE") => {
                let mut cmd = redis::cmd("TYPE");
                cmd.arg(key);
                let kind = self
                    .with_conn(|c| c.run(|c| cmd.query::<Value>(c)))
                    .and_then(|v| decode::<String>("TYPE", v))
                    .unwrap_or_else(|_| "value of another type".into());
                StoreError::WrongType {
                    key: key.to_owned(),
                    kind,
                }
            }
            _ => e,
        }
    }

    /// One entity's part of a `write_streaming` call, after checking it.
    fn streaming_update<'a>(
        &'a self,
        id: &str,
        fields: &'a FeatureMap,
        event_time_ms: u64,
    ) -> Result<EntityArgs<'a>, StoreError> {
        let key = self.key_for(id)?;
        check_features(fields)?;
        if fields.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write needs at least one feature",
            ));
        }
        self.streaming_entity(
            key,
            event_time_ms,
            fields
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_wire()))
                .collect(),
        )
    }

    /// One batch row's part of a write call: a segment per view its
    /// features belong to (`views::ViewMap::segments`), all at time `t`.
    fn batch_entity<'a>(
        &'a self,
        key: String,
        t: u64,
        retract: Vec<&'a str>,
        set: Vec<(&'a str, Cow<'a, str>)>,
    ) -> Result<EntityArgs<'a>, StoreError> {
        check_event_time(Some(t))?;
        let names = retract.iter().copied().chain(set.iter().map(|(k, _)| *k));
        let segments = self.views.segments(&self.config.key_prefix, names);
        let mut entity = EntityArgs::new(key);
        if let [one] = segments.as_slice() {
            entity.push_batch(dated(t, one), retract.into_iter(), set.into_iter());
            return Ok(entity);
        }
        for segment in &segments {
            let r: Vec<&str> = retract
                .iter()
                .copied()
                .filter(|n| segment.names.contains(n))
                .collect();
            let s: Vec<_> = set
                .iter()
                .filter(|(n, _)| segment.names.contains(n))
                .cloned()
                .collect();
            entity.push_batch(dated(t, segment), r.into_iter(), s.into_iter());
        }
        Ok(entity)
    }

    /// One streaming update's part of a write call, segmented as
    /// `batch_entity` is.
    fn streaming_entity<'a>(
        &'a self,
        key: String,
        t: u64,
        set: Vec<(&'a str, Cow<'a, str>)>,
    ) -> Result<EntityArgs<'a>, StoreError> {
        check_event_time(Some(t))?;
        let names = set.iter().map(|(k, _)| *k);
        let segments = self.views.segments(&self.config.key_prefix, names);
        let mut entity = EntityArgs::new(key);
        if let [one] = segments.as_slice() {
            entity.push_streaming(dated(t, one), set.into_iter());
            return Ok(entity);
        }
        for segment in &segments {
            let s: Vec<_> = set
                .iter()
                .filter(|(n, _)| segment.names.contains(n))
                .cloned()
                .collect();
            entity.push_streaming(dated(t, segment), s.into_iter());
        }
        Ok(entity)
    }

    /// Runs one script call; on NOSCRIPT (after `SCRIPT FLUSH`, a restart or
    /// a failover) loads the script on the same connection and calls again,
    /// up to `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS` times.
    fn eval_script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.with_conn(|c| {
            c.run(|c| {
                // A script flushed again between the load and the call (a
                // flush loop, back-to-back failovers) costs another round.
                let mut rounds = 0;
                loop {
                    match cmd.query(c) {
                        Err(e)
                            if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                                && rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS =>
                        {
                            script.load(c)?;
                            rounds += 1;
                        }
                        other => return other,
                    }
                }
            })
        })
    }

    fn count_read(&self, row: BTreeMap<String, ReadValue>) -> BTreeMap<String, ReadValue> {
        self.counters.reads.fetch_add(1, Relaxed);
        self.counters
            .read_fields
            .fetch_add(row.len() as u64, Relaxed);
        row
    }
}

/// How many rounds in a row `run_script_pipeline` re-loads the script
/// without any call running before it gives up on those calls. A flush
/// between the `SCRIPT LOAD` and the calls of the same pipeline is rare; a
/// Redis where eight rounds in a row lose the script is not keeping it.
const NOSCRIPT_ROUNDS_WITHOUT_PROGRESS: u32 = 8;

const NOSCRIPT: &str = "NOSCRIPT";

/// One script call's reply: its value, or its error reply.
fn script_outcome(reply: Value) -> Result<Value, StoreError> {
    match reply {
        Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript) => {
            Err(StoreError::Redis(NOSCRIPT.into()))
        }
        // Through the one conversion, so a LOADING or MASTERDOWN reply to a
        // pipelined call is an outage to wait out, as it is for a lone one.
        Value::ServerError(e) => Err(server_error(e)),
        other => Ok(other),
    }
}

fn is_noscript(outcome: &Result<Value, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Redis(m)) if m == NOSCRIPT)
}

/// How many entities go in each script call, in order: a call closes at
/// `per_call` entities, or before the next entity would take it past
/// `MAX_ARGS_PER_CALL` arguments or `MAX_ARG_BYTES_PER_CALL` bytes. Every
/// entity lands in exactly one call; one larger than a budget goes alone.
/// `costs` are each entity's (arguments, bytes), as `EntityArgs::cost`.
pub fn split_calls(costs: impl IntoIterator<Item = (usize, usize)>, per_call: usize) -> Vec<usize> {
    let per_call = per_call.max(1);
    let mut sizes = Vec::new();
    let (mut len, mut args, mut bytes) = (0usize, 0usize, 0usize);
    for (a, b) in costs {
        if len > 0
            && (len == per_call
                || args.saturating_add(a) > MAX_ARGS_PER_CALL
                || bytes.saturating_add(b) > MAX_ARG_BYTES_PER_CALL)
        {
            sizes.push(len);
            (len, args, bytes) = (0, 0, 0);
        }
        len += 1;
        args = args.saturating_add(a);
        bytes = bytes.saturating_add(b);
    }
    if len > 0 {
        sizes.push(len);
    }
    sizes
}

fn wrong_type(key: &str) -> String {
    format!("WRONGTYPE {key} holds a value that is not a hash; row not written")
}

fn dated<'a>(t: u64, segment: &views::Segment<'a, '_>) -> Dated<'a> {
    Dated {
        event_time_ms: t,
        dating: segment.dating,
        view: segment.view,
    }
}

/// The event time of each row of one write call that carries none of its
/// own: the call's time (`event_clock`), one millisecond later for each
/// earlier row of the same id, so a later row of an id still wins over an
/// earlier one in the same call (an equal time would be a replay).
fn implicit_times<'i>(ids: impl Iterator<Item = &'i str>) -> Vec<u64> {
    let now = event_clock::now_ms();
    let mut seen: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    let times: Vec<u64> = ids
        .map(|id| {
            let k = seen.entry(id).or_insert(0);
            let t = now + *k;
            *k += 1;
            t
        })
        .collect();
    if let Some(last) = times.iter().max() {
        event_clock::not_before(*last);
    }
    times
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

fn hmget<N: AsRef<str>>(key: &str, names: &[N]) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key);
    for n in names {
        cmd.arg(n.as_ref());
    }
    cmd
}

/// `read_fresh`'s reply as bytes: {key TTL, names, values, field TTLs,
/// Redis's clock in ms}.
type FreshReply = (i64, Vec<Vec<u8>>, Vec<Option<Vec<u8>>>, Vec<i64>, u64);

/// A reply decoded after the connection is done with it: a reply that does
/// not fit is an error about that reply, never an outage.
fn decode<T: redis::FromRedisValue>(what: &str, reply: Value) -> Result<T, StoreError> {
    redis::from_redis_value(reply)
        .map_err(|e| StoreError::Redis(format!("{what}: unexpected reply: {e}")))
}

/// An `HMGET` reply: one value (any bytes) or nil per name.
pub(crate) fn decode_values(what: &str, reply: Value) -> Result<FeatureRow, StoreError> {
    let values: Vec<Option<Vec<u8>>> = decode(what, reply)?;
    Ok(values.into_iter().map(|v| v.map(ReadValue::from)).collect())
}

/// A pipelined command's own error reply (the others in the pipeline ran).
pub(crate) fn server_error(e: redis::ServerError) -> StoreError {
    StoreError::from(redis::RedisError::from(e))
}

fn zip_present<N: AsRef<str>>(names: &[N], values: FeatureRow) -> BTreeMap<String, ReadValue> {
    names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| v.map(|v| (n.as_ref().to_owned(), v)))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every entity in exactly one call, in order; no call over
        /// `per_call` entities, and none over a budget unless it holds a
        /// single entity that is over it alone.
        #[test]
        fn calls_stay_within_the_budgets_and_take_every_entity_once(
            costs in proptest::collection::vec((1usize..2000, 1usize..100_000), 0..300),
            per_call in 1usize..100,
        ) {
            let sizes = split_calls(costs.iter().copied(), per_call);
            prop_assert_eq!(sizes.iter().sum::<usize>(), costs.len());
            let mut start = 0;
            for len in sizes {
                prop_assert!(len >= 1 && len <= per_call);
                let group = &costs[start..start + len];
                let args: usize = group.iter().map(|c| c.0).sum();
                let bytes: usize = group.iter().map(|c| c.1).sum();
                prop_assert!(
                    len == 1 || (args <= MAX_ARGS_PER_CALL && bytes <= MAX_ARG_BYTES_PER_CALL),
                    "{len} entities, {args} args, {bytes} bytes"
                );
                // Closed only when the next entity would not fit.
                if let Some(next) = costs.get(start + len) {
                    prop_assert!(
                        len == per_call
                            || args + next.0 > MAX_ARGS_PER_CALL
                            || bytes + next.1 > MAX_ARG_BYTES_PER_CALL
                    );
                }
                start += len;
            }
        }
    }

    #[test]
    fn narrow_rows_fill_a_call_and_wide_rows_close_it_early() {
        // Synthetic streaming updates: 5 features, 12 arguments with the key.
        assert_eq!(split_calls(vec![(12, 150); 120], 50), vec![50, 50, 20]);
        // Synthetic batch rows: 6 features, 15 arguments: 40 fit.
        assert_eq!(split_calls(vec![(15, 150); 100], 50), vec![40, 40, 20]);
        // 100-feature rows: 203 arguments each, so 2 per call.
        assert_eq!(split_calls(vec![(203, 3000); 5], 50), vec![2, 2, 1]);
        // One row over both budgets goes alone.
        assert_eq!(
            split_calls(vec![(15, 150), (9000, 1 << 20), (15, 150)], 50),
            vec![1, 1, 1]
        );
    }

    /// A reply as Redis sends it on the wire.
    fn server_reply(wire: &str) -> Value {
        redis::parse_redis_value(wire.as_bytes()).expect("a RESP error line")
    }

    #[test]
    fn a_script_call_refused_while_redis_loads_is_an_outage_not_a_refusal() {
        let loading = server_reply("-LOADING Valkey is loading the dataset in memory\r\n");
        assert!(script_outcome(loading)
            .expect_err("an error")
            .is_unavailable());
        let refused = server_reply("-ERR bad ttl\r\n");
        let e = script_outcome(refused).expect_err("an error");
        assert!(matches!(e, StoreError::Redis(_)), "{e:?}");
        let noscript = server_reply("-NOSCRIPT No matching script\r\n");
        assert!(is_noscript(&script_outcome(noscript)));
    }
}
