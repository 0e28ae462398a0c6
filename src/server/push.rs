//! `POST /v1/push`: a team's services write their own features over HTTP.
//!
//! The body names a feature view of the registry and up to
//! `MAX_PUSH_ROWS` rows of it: `{"view": "user_activity", "rows": [{"id":
//! "u0001", "features": {"tx_count_5m": 3}}]}`. Every row is checked against
//! the view before anything is sent (the entity's id rules, each feature
//! known to the view, each value of its declared type); a row that fails is
//! rejected with its reason and the others are written. The good rows go
//! through the loader's scripts under the view's entity prefix, in one
//! pipelined round trip:
//! - a batch view: `write_batch_rows`, the view's TTL as the key TTL; a
//!   JSON `null` retracts that feature (as an empty loader cell does);
//! - a stream view: `write_streaming`, the view's TTL as every field's TTL;
//!   a `null` is refused (a streaming write only sets values).
//!
//! A row may carry `"event_time_ms"` (epoch ms); without it the row is
//! dated now. Per feature, only a newer event than the stored one writes;
//! the others are counted in `skipped_stale`.
//!
//! The answer says, per row and in input order, whether it was written,
//! rejected (its input) or failed (Redis refused it, e.g. the key holds
//! another type). A well-formed request is answered 200 whatever its rows'
//! fate; only a malformed body (400), an unknown view (404) and Redis being
//! unreachable (503) fail it whole.

use serde_json::{json, Map, Value as J};

use super::body::Params;
use super::errors::ApiError;
use crate::error::StoreError;
use crate::registry::{EntityType, FeatureView, Registry, ViewKind};
use crate::store::{BatchRow, FeatureStore, WriteReport, MAX_EVENT_TIME_MS};

/// How many rows one push may carry: one pipeline's worth, so a push is one
/// round trip and holds Redis a few milliseconds at most.
pub const MAX_PUSH_ROWS: usize = 1000;

/// What happened to one row of a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowStatus {
    Written,
    /// Its input: refused before anything was sent.
    Rejected(String),
    /// Sent, and Redis refused it (the others were written).
    Failed(String),
}

/// A push's outcome, before it becomes JSON.
#[derive(Debug)]
pub struct PushOutcome {
    /// Each row's id as sent (`None` when it was not a string) and status,
    /// in input order.
    pub rows: Vec<(Option<String>, RowStatus)>,
    /// Features the written rows left alone: the stored value's event time
    /// was the same or newer.
    pub skipped_stale: usize,
}

/// The view and rows of a push body; 400 for a malformed one, 404 for an
/// unknown view.
pub fn parse_body<'a>(
    registry: &'a Registry,
    params: &'a Params,
) -> Result<(&'a FeatureView, &'a [J]), ApiError> {
    const SHAPE: &str = r#"{"view": "<view>", "rows": [{"id": "<id>", "features": {...}}]}"#;
    let body: &Map<String, J> = params
        .json
        .as_ref()
        .ok_or_else(|| ApiError::bad(format!("send a JSON body (application/json): {SHAPE}")))?;
    let view = match body.get("view") {
        Some(J::String(v)) => v,
        Some(_) => return Err(ApiError::bad("view must be a string")),
        None => return Err(ApiError::bad(format!("missing view: the body is {SHAPE}"))),
    };
    let rows = match body.get("rows") {
        Some(J::Array(rows)) => rows,
        Some(_) => {
            return Err(ApiError::bad(
                "rows must be an array of {\"id\": ..., \"features\": {...}}",
            ))
        }
        None => return Err(ApiError::bad(format!("missing rows: the body is {SHAPE}"))),
    };
    if rows.is_empty() || rows.len() > MAX_PUSH_ROWS {
        return Err(ApiError::bad(format!(
            "rows must list 1 to {MAX_PUSH_ROWS} rows, got {}",
            rows.len()
        )));
    }
    let view = registry
        .view(view)
        .ok_or_else(|| ApiError::NotFound(format!("unknown view {view:?}")))?;
    Ok((view, rows))
}

/// Checks every row against `view` and writes the good ones in one round
/// trip. `admit`/`done` pace the write (the server's pacer). `Err` only
/// when nothing could be written because Redis is unreachable.
pub fn push(
    store: &FeatureStore,
    registry: &Registry,
    view: &FeatureView,
    rows: &[J],
    admit: impl FnOnce(u64),
    done: impl FnOnce(u64),
) -> Result<PushOutcome, ApiError> {
    let entity = registry.entity(&view.entity).ok_or_else(|| {
        // `Registry::parse` refuses a view of an undeclared entity.
        ApiError::Internal(format!(
            "view {:?} names entity {:?}, which the registry lacks",
            view.name, view.entity
        ))
    })?;
    let mut out: Vec<(Option<String>, RowStatus)> = Vec::with_capacity(rows.len());
    let mut good: Vec<BatchRow> = Vec::new();
    // For each good row, its position in `rows`.
    let mut good_at: Vec<usize> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let id = row.get("id").and_then(J::as_str).map(str::to_owned);
        match check_row(view, entity, row) {
            Ok(batch_row) => {
                good.push(batch_row);
                good_at.push(i);
                out.push((id, RowStatus::Written));
            }
            Err(why) => out.push((id, RowStatus::Rejected(why))),
        }
    }
    if good.is_empty() {
        return Ok(PushOutcome {
            rows: out,
            skipped_stale: 0,
        });
    }
    let n = good.len() as u64;
    admit(n);
    let report = write(store, registry, view, entity, &good);
    done(n);
    let report = report.map_err(ApiError::from)?;
    if report.written == 0 {
        if let Some(f) = report.failed.iter().find(|f| f.error.is_unavailable()) {
            return Err(ApiError::from_store(
                &f.error,
                format!("nothing pushed: {}", f.error),
            ));
        }
    }
    for failure in report.failed {
        let Some(&i) = good_at.get(failure.index) else {
            continue;
        };
        out[i].1 = match failure.error {
            // Refused by the store's own checks before sending.
            StoreError::InvalidInput(why) => RowStatus::Rejected(why),
            e => RowStatus::Failed(e.to_string()),
        };
    }
    Ok(PushOutcome {
        rows: out,
        skipped_stale: report.skipped_stale,
    })
}

/// The good rows through the loader's scripts, under the entity's prefix.
fn write(
    store: &FeatureStore,
    registry: &Registry,
    view: &FeatureView,
    entity: &EntityType,
    rows: &[BatchRow],
) -> Result<WriteReport, StoreError> {
    let store = store.with_key_prefix(&entity.key_prefix)?;
    match view.kind {
        ViewKind::Batch => store.write_batch_rows(rows, view.ttl_seconds),
        ViewKind::Stream => {
            // A stream push that creates the entity pins a key TTL (no key
            // is left immortal): the entity's batch TTL when it has batch
            // views, and never shorter than the fields' own.
            let key_ttl = registry
                .views_of(&entity.name)
                .filter(|v| v.kind == ViewKind::Batch)
                .map(|v| v.ttl_seconds)
                .max()
                .unwrap_or(store.batch_ttl_seconds())
                .max(view.ttl_seconds);
            store
                .with_batch_ttl(key_ttl)?
                .update_streaming_rows(rows, view.ttl_seconds)
        }
    }
}

/// One row as the store writes it, or every reason it cannot be (each
/// naming the feature and its type).
pub fn check_row(view: &FeatureView, entity: &EntityType, row: &J) -> Result<BatchRow, String> {
    let Some(row) = row.as_object() else {
        return Err(r#"a row must be an object {"id": ..., "features": {...}}"#.into());
    };
    let id = match row.get("id") {
        Some(J::String(id)) => id,
        Some(_) => return Err("id must be a string".into()),
        None => return Err("missing id".into()),
    };
    entity.check_id(id).map_err(|e| e.to_string())?;
    let features = match row.get("features") {
        Some(J::Object(f)) if !f.is_empty() => f,
        Some(J::Object(_)) => {
            return Err(format!(
                "features is empty: name at least one feature of view {:?}",
                view.name
            ))
        }
        Some(_) => return Err("features must be an object of name: value".into()),
        None => return Err("missing features".into()),
    };
    let event_time_ms = match row.get("event_time_ms") {
        None | Some(J::Null) => None,
        Some(J::Number(n)) => match n.as_u64() {
            Some(t) if t <= MAX_EVENT_TIME_MS => Some(t),
            _ => return Err(event_time_error(&n.to_string())),
        },
        Some(other) => return Err(event_time_error(&other.to_string())),
    };
    let mut out = BatchRow {
        event_time_ms,
        id: id.clone(),
        set: Vec::with_capacity(features.len()),
        retract: Vec::new(),
    };
    let mut problems = Vec::new();
    for (name, value) in features {
        let Some(def) = view.feature(name) else {
            problems.push(format!(
                "unknown feature {name:?}: view {:?} has no such feature",
                view.name
            ));
            continue;
        };
        let ty = def.ty.name();
        match (value, view.kind) {
            (J::Null, ViewKind::Batch) => out.retract.push(name.clone()),
            (J::Null, ViewKind::Stream) => problems.push(format!(
                "feature {name:?} ({ty}): null cannot be pushed to a stream view \
                 (a streaming write only sets values; leave the feature out)"
            )),
            _ => match def.ty.parse_json(value) {
                Ok(v) => out.set.push((name.clone(), v.encode())),
                Err(why) => problems.push(format!("feature {name:?} ({ty}): {why}")),
            },
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems.join("; "))
    }
}

fn event_time_error(got: &str) -> String {
    format!("event_time_ms must be an integer from 0 to {MAX_EVENT_TIME_MS} (epoch ms), got {got}")
}

impl PushOutcome {
    /// The answer's body.
    pub fn to_json(&self, view: &str, elapsed_ms: f64) -> J {
        let count =
            |want: fn(&RowStatus) -> bool| self.rows.iter().filter(|(_, s)| want(s)).count();
        let rows: Vec<J> = self
            .rows
            .iter()
            .map(|(id, status)| match status {
                RowStatus::Written => json!({ "id": id, "status": "written" }),
                RowStatus::Rejected(e) => json!({ "id": id, "status": "rejected", "error": e }),
                RowStatus::Failed(e) => json!({ "id": id, "status": "failed", "error": e }),
            })
            .collect();
        json!({
            "view": view,
            "written": count(|s| matches!(s, RowStatus::Written)),
            "rejected": count(|s| matches!(s, RowStatus::Rejected(_))),
            "failed": count(|s| matches!(s, RowStatus::Failed(_))),
            "skipped_stale": self.skipped_stale,
            "rows": rows,
            "elapsed_ms": elapsed_ms,
        })
    }
}
