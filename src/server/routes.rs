//! The endpoints: what each reads from its parameters, what it asks the
//! store, what it answers. Every handler returns `Result<Reply, ApiError>`;
//! `http::respond` turns errors into statuses.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::json;

use super::body::Params;
use super::errors::ApiError;
use super::http::Reply;
use super::App;
use crate::registry::{EntityType, ViewKind};
use crate::store::event_fields::Freshness;
use crate::store::{FeatureRow, FeatureStore, FieldState, MAX_TTL_SECONDS};
use crate::value::ReadValue;

pub const PAGE: &str = include_str!("page.html");

/// How many features one read may name.
pub const MAX_FIELDS: usize = 100;
/// How many entities one bulk load may write.
pub const MAX_BULK_LOAD: u64 = 100_000;
/// How many entities one batch read may name.
pub const MAX_BATCH_READ: u64 = 1000;
/// `/state` lists at most this many ids.
pub const STATE_IDS: usize = 500;
/// The seed of the synthetic users, so `u0001` is the same row every load.
const SYNTH_SEED: u64 = 42;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Endpoint {
    Page,
    Healthz,
    State,
    BulkLoad,
    Toggle,
    Read,
    BatchRead,
    Inspect,
    Reset,
    Registry,
    Features,
    Push,
    Metrics,
    FeastOnlineFeatures,
    FeastWrite,
    FeastHealth,
    FeastPush,
}

/// Every endpoint, in the order of its discriminant (metrics index by it).
pub const ENDPOINTS: [Endpoint; 17] = [
    Endpoint::Page,
    Endpoint::Healthz,
    Endpoint::State,
    Endpoint::BulkLoad,
    Endpoint::Toggle,
    Endpoint::Read,
    Endpoint::BatchRead,
    Endpoint::Inspect,
    Endpoint::Reset,
    Endpoint::Registry,
    Endpoint::Features,
    Endpoint::Push,
    Endpoint::Metrics,
    Endpoint::FeastOnlineFeatures,
    Endpoint::FeastWrite,
    Endpoint::FeastHealth,
    Endpoint::FeastPush,
];

impl Endpoint {
    /// The path the endpoint answers at (`/` for the page): the `route`
    /// label of its metrics and log lines.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::Page => "/",
            Endpoint::Healthz => "/healthz",
            Endpoint::State => "/state",
            Endpoint::BulkLoad => "/bulk-load",
            Endpoint::Toggle => "/worker/toggle",
            Endpoint::Read => "/read",
            Endpoint::BatchRead => "/batch-read",
            Endpoint::Inspect => "/inspect",
            Endpoint::Reset => "/reset",
            Endpoint::Registry => "/v1/registry",
            Endpoint::Features => "/v1/features",
            Endpoint::Push => "/v1/push",
            Endpoint::Metrics => "/metrics",
            Endpoint::FeastOnlineFeatures => "/get-online-features",
            Endpoint::FeastWrite => "/write-to-online-store",
            Endpoint::FeastHealth => "/health",
            Endpoint::FeastPush => "/push",
        }
    }
}

/// The endpoint at `path` and the one method it accepts.
pub fn lookup(path: &str) -> Option<(Endpoint, &'static str)> {
    Some(match path {
        "/" | "/index.html" => (Endpoint::Page, "GET"),
        "/healthz" => (Endpoint::Healthz, "GET"),
        "/state" => (Endpoint::State, "GET"),
        "/inspect" => (Endpoint::Inspect, "GET"),
        "/bulk-load" => (Endpoint::BulkLoad, "POST"),
        "/worker/toggle" => (Endpoint::Toggle, "POST"),
        "/read" => (Endpoint::Read, "POST"),
        "/batch-read" => (Endpoint::BatchRead, "POST"),
        "/reset" => (Endpoint::Reset, "POST"),
        "/v1/registry" => (Endpoint::Registry, "GET"),
        "/v1/features" => (Endpoint::Features, "POST"),
        "/v1/push" => (Endpoint::Push, "POST"),
        "/metrics" => (Endpoint::Metrics, "GET"),
        "/get-online-features" => (Endpoint::FeastOnlineFeatures, "POST"),
        "/write-to-online-store" => (Endpoint::FeastWrite, "POST"),
        "/health" => (Endpoint::FeastHealth, "GET"),
        "/push" => (Endpoint::FeastPush, "POST"),
        _ => return None,
    })
}

pub fn dispatch(app: &App, endpoint: Endpoint, params: &Params) -> Result<Reply, ApiError> {
    match endpoint {
        Endpoint::Page => Ok(Reply::Html(PAGE)),
        Endpoint::Healthz => healthz(app),
        Endpoint::State => state(app),
        Endpoint::BulkLoad => bulk_load(app, params),
        Endpoint::Toggle => toggle(app),
        Endpoint::Read => read(app, params),
        Endpoint::BatchRead => batch_read(app, params),
        Endpoint::Inspect => inspect(app, params),
        Endpoint::Reset => reset(app),
        Endpoint::Registry => json_reply(&app.registry.to_json()),
        Endpoint::Features => super::features::features(app, params),
        Endpoint::Push => push(app, params),
        Endpoint::Metrics => metrics(app),
        Endpoint::FeastOnlineFeatures => super::feast::get_online_features(app, params),
        Endpoint::FeastWrite => super::feast::write_to_online_store(app, params),
        // Feast's probe path: the same check as ours (Redis answers).
        Endpoint::FeastHealth => healthz(app),
        Endpoint::FeastPush => super::feast::push(app, params),
    }
}

fn json_reply(value: &impl Serialize) -> Result<Reply, ApiError> {
    serde_json::to_vec(value)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))
}

fn ms_since(t: Instant) -> f64 {
    (t.elapsed().as_secs_f64() * 1e6).round() / 1e3
}

/// 404 when the server runs with `--no-metrics` (kept only to measure
/// what the metrics cost).
fn metrics(app: &App) -> Result<Reply, ApiError> {
    let Some(http) = &app.metrics else {
        return Err(ApiError::NotFound("metrics are off (--no-metrics)".into()));
    };
    super::metrics::render(app, http)
        .map(Reply::Metrics)
        .map_err(|e| ApiError::Internal(format!("encoding the metrics: {e}")))
}

fn healthz(app: &App) -> Result<Reply, ApiError> {
    app.store.ping()?;
    json_reply(&json!({ "ok": true }))
}

fn state(app: &App) -> Result<Reply, ApiError> {
    let snap = app.cache.get();
    let ids = &snap.ids[..snap.ids.len().min(STATE_IDS)];
    json_reply(&json!({
        "mode": app.mode,
        "backend": app.store.backend(),
        "key_prefix": app.store.key_prefix(),
        "batch_ttl_seconds": app.store.batch_ttl_seconds(),
        "streaming_ttl_seconds": app.store.streaming_ttl_seconds(),
        "entity_count": snap.count,
        "entity_count_source": snap.count_source.as_str(),
        "entity_count_exact": snap.count_source.is_exact(),
        "entity_ids": ids,
        "entity_ids_age_ms": snap.taken_at.elapsed().as_millis() as u64,
        "entity_ids_unlisted": snap.unlisted,
        "entity_ids_error": snap.error,
        "stats": app.store.stats(),
        "worker": app.worker.status(),
        "reset": app.reset.status(),
        "write_pacing": app.pacer.snapshot(),
        "batch_features": entity_features(app, Some(ViewKind::Batch)),
        "streaming_features": entity_features(app, Some(ViewKind::Stream)),
    }))
}

fn bulk_load(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let source = demo_source(app, ViewKind::Batch)?;
    let count = params.count(200, 1, MAX_BULK_LOAD)?;
    let ttl = params.ttl(app.store.batch_ttl_seconds(), 1, MAX_TTL_SECONDS)?;
    let started = Instant::now();
    // One pipeline's worth of rows at a time: a request's memory stays at
    // one slice whatever `count` is (100,000 rows built at once held about
    // 90 MB, which glibc's per-thread arenas then kept).
    let mut users = source.rows(count as usize, SYNTH_SEED);
    let mut written = 0;
    let mut failure = None;
    loop {
        let slice = app
            .store
            .chunk_size()
            .min(app.pacer.mode().rows_per_pipeline());
        let rows: Vec<_> = users.by_ref().take(slice).collect();
        if rows.is_empty() {
            break;
        }
        // Paced like the loader, so a big load does not slow the reads.
        app.pacer.admit(rows.len() as u64);
        let report = app.store.bulk_load(&rows, ttl)?;
        app.pacer.done(rows.len() as u64);
        written += report.written;
        // Stop at the first slice with a failure: the rest would most
        // likely fail the same way, and a re-run is always safe.
        if let Some(first) = report.failed.into_iter().next() {
            failure = Some(first);
            break;
        }
    }
    let elapsed_ms = ms_since(started);
    app.cache.refresh(&app.store);
    if let Some(first) = failure {
        let msg = format!(
            "loaded {written} of {count} users; first failure ({}): {}",
            first.id, first.error
        );
        return Err(ApiError::from_store(&first.error, msg));
    }
    json_reply(&json!({
        "loaded": written,
        "ttl_seconds": ttl,
        "elapsed_ms": elapsed_ms,
    }))
}

/// `POST /v1/push` (see `push`): paced like `/bulk-load`.
fn push(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let (view, rows) = super::push::parse_body(&app.registry, params)?;
    let started = Instant::now();
    let outcome = super::push::push(
        &app.store,
        &app.registry,
        view,
        rows,
        |n| app.pacer.admit(n),
        |n| app.pacer.done(n),
    )?;
    json_reply(&outcome.to_json(&view.name, ms_since(started)))
}

fn toggle(app: &App) -> Result<Reply, ApiError> {
    demo_source(app, ViewKind::Stream)?;
    let _control = lock(&app.control);
    json_reply(&app.worker.toggle())
}

/// What the demo writes on this registry; refused (409) when its first
/// entity has no view of `kind` to write.
fn demo_source(app: &App, kind: ViewKind) -> Result<&crate::demo::Source, ApiError> {
    let source = &app.demo;
    let writes = match kind {
        ViewKind::Batch => source.writes_batch(),
        ViewKind::Stream => source.writes_stream(),
    };
    if writes {
        Ok(source)
    } else {
        Err(ApiError::Conflict(crate::demo::nothing_to_write(
            &app.registry,
            kind,
        )))
    }
}

/// The registry's features of the entity the server reads (its first),
/// of one kind of view or all, in file order.
fn entity_features(app: &App, kind: Option<ViewKind>) -> Vec<&str> {
    let registry = &app.registry;
    registry.feature_names(&registry.default_entity().name, kind)
}

/// The registry entity a read names (`entity`, default the first) and the
/// store reading under its key prefix.
struct Target<'a> {
    entity: &'a EntityType,
    /// `None` for the first entity: `app.store` already reads its prefix.
    /// Another entity's is the same pool under its prefix, made per request
    /// (a pool handle and a config copied, nothing next to a round trip).
    other: Option<FeatureStore>,
    app: &'a App,
}

impl<'a> Target<'a> {
    fn of(app: &'a App, params: &Params) -> Result<Target<'a>, ApiError> {
        let registry = &app.registry;
        let Some(name) = params.entity() else {
            return Ok(Target {
                entity: registry.default_entity(),
                other: None,
                app,
            });
        };
        let entity = registry.entity(name).ok_or_else(|| {
            let known: Vec<&str> = registry.entities.iter().map(|e| e.name.as_str()).collect();
            ApiError::NotFound(format!(
                "unknown entity {name:?}; known: {}",
                known.join(", ")
            ))
        })?;
        let other = if entity.name == registry.default_entity().name {
            None
        } else {
            Some(app.store.with_key_prefix(&entity.key_prefix)?)
        };
        Ok(Target { entity, other, app })
    }

    fn store(&self) -> &FeatureStore {
        self.other.as_ref().unwrap_or(&self.app.store)
    }

    fn is_first(&self) -> bool {
        self.other.is_none()
    }

    /// `id` under this entity's id rules (400 naming the rule broken).
    fn check(&self, id: &str) -> Result<(), ApiError> {
        Ok(self.entity.check_id(id)?)
    }
}

/// The requested feature names: as given (duplicates dropped, order kept),
/// or every feature the registry declares for the entity when none are.
fn fields<'a>(
    app: &'a App,
    entity: &'a EntityType,
    params: &'a Params,
) -> Result<Vec<&'a str>, ApiError> {
    if params.fields.is_empty() {
        return Ok(app.registry.feature_names(&entity.name, None));
    }
    if params.fields.len() > MAX_FIELDS {
        return Err(ApiError::bad(format!(
            "at most {MAX_FIELDS} fields per read, got {}",
            params.fields.len()
        )));
    }
    let mut out: Vec<&str> = Vec::with_capacity(params.fields.len());
    for f in &params.fields {
        if !out.contains(&f.as_str()) {
            out.push(f);
        }
    }
    Ok(out)
}

/// `{name: value}` straight from the read, without an intermediate map.
struct Values<'a>(&'a [FieldState]);
impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for f in self.0 {
            m.serialize_entry(&f.name, &f.value)?;
        }
        m.end()
    }
}

/// `{name: what}` for each field: its event time, age or verdict.
struct Dating<'a, F: Fn(&FieldState) -> serde_json::Value>(&'a [FieldState], F);
impl<F: Fn(&FieldState) -> serde_json::Value> Serialize for Dating<'_, F> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for f in self.0 {
            m.serialize_entry(&f.name, &(self.1)(f))?;
        }
        m.end()
    }
}

/// `{name: ttl_seconds}`
struct Ttls<'a>(&'a [FieldState]);
impl Serialize for Ttls<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for f in self.0 {
            m.serialize_entry(&f.name, &f.ttl_seconds)?;
        }
        m.end()
    }
}

fn read(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let target = Target::of(app, params)?;
    let user = params.user()?;
    target.check(user)?;
    let fields = fields(app, target.entity, params)?;
    let max_age_ms = params.max_age_ms()?;
    let started = Instant::now();
    let read = target
        .store()
        .read_fresh_within(user, &fields, max_age_ms)?;
    let elapsed_ms = ms_since(started);
    let returned = read.fields.iter().filter(|f| f.value.is_some()).count();
    let stale: Vec<&str> = read
        .fields
        .iter()
        .filter(|f| matches!(f.freshness, Freshness::Stale | Freshness::Undated))
        .filter(|_| max_age_ms.is_some())
        .map(|f| f.name.as_str())
        .collect();
    json_reply(&json!({
        "entity": target.entity.name,
        "user": user,
        "exists": read.exists(),
        "requested": fields,
        "values": Values(&read.fields),
        "ttls": Ttls(&read.fields),
        "event_times_ms": Dating(&read.fields, |f| json!(f.event_time_ms)),
        "ages_ms": Dating(&read.fields, |f| json!(f.age_ms)),
        "freshness": Dating(&read.fields, |f| json!(f.freshness)),
        "max_age_ms": max_age_ms,
        "stale": stale,
        "now_ms": read.now_ms,
        "key_ttl_seconds": read.key_ttl_seconds,
        "returned_count": returned,
        "elapsed_ms": elapsed_ms,
    }))
}

fn batch_read(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let target = Target::of(app, params)?;
    let fields = fields(app, target.entity, params)?;
    let with_values = params.values()?;
    let snap;
    let ids: &[String] = match &params.ids {
        Some(ids) => {
            if ids.is_empty() || ids.len() as u64 > MAX_BATCH_READ {
                return Err(ApiError::bad(format!(
                    "ids must list 1 to {MAX_BATCH_READ} entities, got {}",
                    ids.len()
                )));
            }
            for id in ids {
                target.check(id)?;
            }
            ids
        }
        // The id cache lists the first entity's keys only.
        None if !target.is_first() => {
            return Err(ApiError::bad(format!(
                "give ids for entity {}: count samples the ids of {} only",
                target.entity.name,
                app.registry.default_entity().name
            )))
        }
        None => {
            let count = params.count(100, 1, MAX_BATCH_READ)? as usize;
            snap = app.cache.ids();
            &snap[..count.min(snap.len())]
        }
    };
    let max_age_ms = params.max_age_ms()?;
    let started = Instant::now();
    // A bound costs the event-time fields and TIME in the same round trip;
    // without one the read is the plain pipelined HMGET.
    let (rows, stale_count) = match max_age_ms {
        None => (target.store().batch_get_features(ids, &fields)?, 0),
        Some(bound) => {
            let aged = target
                .store()
                .batch_get_features_within(ids, &fields, Some(bound))?;
            let stale = aged.stale_count();
            (aged.rows, stale)
        }
    };
    let elapsed_ms = ms_since(started);
    let present = |r: &FeatureRow| r.iter().filter(|v| v.is_some()).count();
    let mut values_found = 0;
    let mut found = 0;
    let mut errors = Vec::new();
    for (id, row) in ids.iter().zip(&rows) {
        match row {
            Ok(row) => {
                let n = present(row);
                values_found += n;
                found += usize::from(n > 0);
            }
            // One entity's problem (a key of another type) is reported for
            // that entity; the others are answered.
            Err(e) => errors.push(json!({ "id": id, "error": e.to_string() })),
        }
    }
    let sample: Vec<_> = ids
        .iter()
        .zip(&rows)
        .take(10)
        .map(|(id, r)| match r {
            Ok(r) => json!({ "id": id, "values_found": present(r) }),
            Err(e) => json!({ "id": id, "values_found": 0, "error": e.to_string() }),
        })
        .collect();
    let mut answer = json!({
        "entity": target.entity.name,
        "entity_count": ids.len(),
        "found_count": found,
        "field_count": fields.len(),
        "values_found": values_found,
        "max_age_ms": max_age_ms,
        "stale_count": stale_count,
        "requested": fields,
        "elapsed_ms": elapsed_ms,
        "sample": sample,
        "errors": errors,
    });
    if !with_values {
        return json_reply(&answer);
    }
    // Serialized straight from the rows (up to 1000 x 100 values): the
    // head above is small, the values are not put in a JSON tree.
    let serde_json::Value::Object(head) = answer.take() else {
        return Err(ApiError::Internal(
            "the batch-read head is an object".into(),
        ));
    };
    json_reply(&WithValues {
        head,
        values: EntityValues {
            ids,
            fields: &fields,
            rows: &rows,
        },
    })
}

/// `/batch-read`'s answer with `values: true`.
#[derive(serde::Serialize)]
struct WithValues<'a> {
    #[serde(flatten)]
    head: serde_json::Map<String, serde_json::Value>,
    values: EntityValues<'a>,
}

/// `[{id, values: {field: value-or-null}}, ...]` in the order of the ids,
/// the stored text as `/read` shows it; an entity whose read failed (its
/// key holds another type) is `{id, values: null, error}`.
struct EntityValues<'a> {
    ids: &'a [String],
    fields: &'a [&'a str],
    rows: &'a [Result<FeatureRow, crate::error::StoreError>],
}

impl Serialize for EntityValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.ids.len()))?;
        for (id, row) in self.ids.iter().zip(self.rows) {
            seq.serialize_element(&EntityRow {
                id,
                fields: self.fields,
                row,
            })?;
        }
        seq.end()
    }
}

struct EntityRow<'a> {
    id: &'a str,
    fields: &'a [&'a str],
    row: &'a Result<FeatureRow, crate::error::StoreError>,
}

impl Serialize for EntityRow<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", self.id)?;
        match self.row {
            Ok(row) => m.serialize_entry(
                "values",
                &FieldValues {
                    fields: self.fields,
                    row,
                },
            )?,
            Err(e) => {
                m.serialize_entry("values", &())?;
                m.serialize_entry("error", &e.to_string())?;
            }
        }
        m.end()
    }
}

/// `{field: value-or-null}`: a row as `batch_get_features` read it, in the
/// order of `fields` (an empty row, when no field was asked, is all null).
struct FieldValues<'a> {
    fields: &'a [&'a str],
    row: &'a [Option<ReadValue>],
}

impl Serialize for FieldValues<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.fields.len()))?;
        for (i, name) in self.fields.iter().enumerate() {
            m.serialize_entry(name, &self.row.get(i).and_then(Option::as_ref))?;
        }
        m.end()
    }
}

fn inspect(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let target = Target::of(app, params)?;
    let user = params.user()?;
    target.check(user)?;
    let started = Instant::now();
    let read = target.store().inspect(user)?;
    let elapsed_ms = ms_since(started);
    json_reply(&json!({
        "entity": target.entity.name,
        "user": user,
        "exists": read.exists(),
        "key_ttl_seconds": read.key_ttl_seconds,
        "fields": read.fields,
        "elapsed_ms": elapsed_ms,
    }))
}

/// Pauses the worker and waits out its tick so no streaming write races the
/// delete, deletes under the prefix only, then restores the worker.
fn reset(app: &App) -> Result<Reply, ApiError> {
    let _control = lock(&app.control);
    let before = app.worker.status();
    app.worker.pause();
    let result = if app.worker.wait_for_idle(Duration::from_secs(10)) {
        let progress = app.reset.start();
        let deleted = app
            .store
            .delete_all_reporting(|n| progress.deleted_so_far(n))
            .map_err(ApiError::from);
        drop(progress);
        // Forget the old ids before the worker resumes, so it never writes
        // to a deleted id, even when the refresh below fails or a scan from
        // before the delete lands late (the cache drops those).
        app.cache.clear();
        deleted
    } else {
        Err(ApiError::Unavailable(
            "the worker's tick did not finish within 10 s".into(),
        ))
    };
    app.cache.refresh(&app.store);
    if before.running && !before.paused {
        app.worker.resume();
    }
    let deleted = result?;
    json_reply(&json!({ "deleted": deleted, "worker": app.worker.status() }))
}

fn lock(m: &Mutex<()>) -> MutexGuard<'_, ()> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
