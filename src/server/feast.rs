//! Feast's feature-server API on our store, so Feast's Python SDK
//! (`online_store: {type: remote}`) reads from and writes to us:
//! `POST /get-online-features` (here, below), `POST
//! /write-to-online-store` and `POST /push` (further down).
//!
//! Request: `{"features": ["view:feature", ...]}` or `{"feature_service":
//! "name"}`, with `"entities": {"<join_key>": [values...]}` and optional
//! `"full_feature_names": bool`. Feast's view names are the registry's
//! `feast_name`s, its join keys the entities' `join_key`s, its feature
//! services our models. Answer, as columns: `{"metadata": {"feature_names":
//! [join_key, ...]}, "results": [{"values", "statuses",
//! "event_timestamps"}, ...]}`, the join key first. The shapes, and why
//! each choice, are in docs/feast.md.

use serde_json::{json, Map, Value as Json};

use super::body::Params;
use super::errors::ApiError;
use super::http::Reply;
use super::App;
use crate::registry::{Registry, Resolved, Value};
use crate::store::{Status, MAX_VECTOR_IDS};

/// Feast's answer for a value it has no time for (the zero protobuf
/// `Timestamp`): nothing stored, a default, or a value written undated.
const NO_TIME: &str = "1970-01-01T00:00:00Z";

/// 9999-12-31T23:59:59.999Z.
const LAST_TIMESTAMP_MS: i64 = 253_402_300_799_999;

/// Epoch ms as Feast writes a protobuf `Timestamp` in JSON: RFC 3339 in
/// UTC with `Z`, fractional seconds only when there are some.
fn timestamp(ms: i64) -> String {
    // A `Timestamp` ends with year 9999; the store takes event times past it.
    if !(0..=LAST_TIMESTAMP_MS).contains(&ms) {
        return NO_TIME.to_owned();
    }
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, m, d) = crate::calendar::civil_from_days(days);
    let s = ms_of_day / 1000;
    let whole = format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        s / 3600,
        s % 3600 / 60,
        s % 60
    );
    match ms_of_day % 1000 {
        0 => format!("{whole}Z"),
        frac => format!("{whole}.{frac:03}Z"),
    }
}

/// What a request asks for, before the registry resolves it.
#[derive(Debug)]
struct Request<'a> {
    join_key: &'a str,
    /// Each row's entity value as sent: echoed as the join key's column.
    keys: &'a [Json],
    /// The store's ids: strings as they are, integers as decimal text.
    ids: Vec<String>,
    target: Target<'a>,
    full_feature_names: bool,
}

#[derive(Debug)]
enum Target<'a> {
    Features(Vec<(&'a str, &'a str)>),
    Service(&'a str),
}

pub fn get_online_features(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let body = params.json.as_ref().ok_or_else(|| {
        ApiError::bad(
            "POST /get-online-features takes a JSON body: {\"features\": [\"view:feature\", ...] \
             or \"feature_service\": \"...\", \"entities\": {\"<join_key>\": [...]}}",
        )
    })?;
    let request = parse(body)?;
    let resolved = resolve(&app.registry, &request)?;
    let vectors = app
        .store
        .vectors_dated(&resolved, &request.ids, None, true)?;
    let rows = request.ids.len();
    let mut names = Vec::with_capacity(vectors.columns.len() + 1);
    names.push(Json::from(request.join_key));
    let mut results = Vec::with_capacity(vectors.columns.len() + 1);
    results.push(json!({
        "values": request.keys,
        "statuses": vec!["PRESENT"; rows],
        "event_timestamps": vec![NO_TIME; rows],
    }));
    for (j, column) in vectors.columns.iter().enumerate() {
        let name = if request.full_feature_names {
            let view = app
                .registry
                .view(&column.view)
                .map_or(column.view.as_str(), |v| v.feast_name.as_str());
            format!("{view}__{}", column.field)
        } else {
            column.field.clone()
        };
        names.push(name.into());
        let mut values = Vec::with_capacity(rows);
        let mut statuses = Vec::with_capacity(rows);
        let mut times = Vec::with_capacity(rows);
        for (i, (row, status)) in vectors.values.iter().zip(&vectors.status).enumerate() {
            let value = row.get(j).and_then(Option::as_ref);
            let status = status.get(j).copied();
            statuses.push(feast_status(value, status));
            values.push(value.map_or(Json::Null, Value::to_json));
            // The stored value's event time; a default has none of its own.
            let age = vectors
                .ages
                .as_ref()
                .and_then(|a| a.get(i)?.get(j).copied().flatten())
                .filter(|_| status == Some(Status::Present));
            let at = match (vectors.now_ms, age) {
                (Some(now), Some(age)) => timestamp(now as i64 - age),
                _ => NO_TIME.to_owned(),
            };
            times.push(at);
        }
        results.push(json!({
            "values": values,
            "statuses": statuses,
            "event_timestamps": times,
        }));
    }
    let answer = json!({"metadata": {"feature_names": names}, "results": results});
    serde_json::to_vec(&answer)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))
}

/// Feast's status of one served value. A value served is `PRESENT`, a
/// default included (Feast has no "defaulted", and the value is the
/// answer); so the SDK, which keeps only `PRESENT` values on some paths,
/// never drops one we serve. Nothing served: `OUTSIDE_MAX_AGE` when it was
/// too old, else `NOT_FOUND` (never written, expired, or not of its type).
fn feast_status(value: Option<&Value>, status: Option<Status>) -> &'static str {
    match (value, status) {
        (Some(_), _) => "PRESENT",
        (None, Some(Status::Stale)) => "OUTSIDE_MAX_AGE",
        (None, _) => "NOT_FOUND",
    }
}

/// The request's shape. Keys Feast's server accepts but that change
/// nothing here (`include_feature_view_version_metadata`, or any a newer
/// SDK adds) are ignored, as Feast's own server ignores unknown keys.
fn parse(body: &Map<String, Json>) -> Result<Request<'_>, ApiError> {
    let Some(entities) = body.get("entities") else {
        return Err(ApiError::bad(
            "no \"entities\": give {\"<join_key>\": [values...]}",
        ));
    };
    let Json::Object(entities) = entities else {
        return Err(ApiError::bad(
            "\"entities\" must be an object: {\"<join_key>\": [values...]}",
        ));
    };
    let mut keys = entities.iter();
    let (join_key, keys) = match (keys.next(), keys.next()) {
        (Some(one), None) => one,
        (None, _) => return Err(ApiError::bad("\"entities\" names no join key")),
        (Some(_), Some(_)) => {
            return Err(ApiError::bad(format!(
                "\"entities\" names {} join keys; one entity per request (composite keys are not supported)",
                entities.len()
            )))
        }
    };
    let Json::Array(keys) = keys else {
        return Err(ApiError::bad(format!(
            "entities.{join_key} must be an array of values"
        )));
    };
    if keys.is_empty() || keys.len() > MAX_VECTOR_IDS {
        return Err(ApiError::bad(format!(
            "entities.{join_key} must list 1 to {MAX_VECTOR_IDS} values, got {}",
            keys.len()
        )));
    }
    let ids = keys
        .iter()
        .map(|v| entity_id(join_key, v))
        .collect::<Result<Vec<_>, _>>()?;
    let full_feature_names = match body.get("full_feature_names") {
        None | Some(Json::Null) => false,
        Some(Json::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::bad(
                "\"full_feature_names\" must be true or false",
            ))
        }
    };
    let service = match body.get("feature_service") {
        None | Some(Json::Null) => None,
        Some(Json::String(s)) => Some(s.as_str()),
        Some(_) => return Err(ApiError::bad("\"feature_service\" must be a string")),
    };
    let features = match body.get("features") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(feature_ref)
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(ApiError::bad(
                "\"features\" must be an array of \"view:feature\" strings",
            ))
        }
    };
    let target = match (service, features.is_empty()) {
        (Some(_), false) => {
            return Err(ApiError::bad(
                "give either \"features\" or \"feature_service\", not both",
            ))
        }
        (Some(s), true) => Target::Service(s),
        (None, false) => Target::Features(features),
        (None, true) => {
            return Err(ApiError::bad(
                "name the features ([\"view:feature\", ...]) or a \"feature_service\"",
            ))
        }
    };
    Ok(Request {
        join_key,
        keys,
        ids,
        target,
        full_feature_names,
    })
}

/// An entity value as our id: a string as it is, an integer (what Feast
/// sends for an `Int64` join key) as its decimal text. Anything else would
/// need a spelling of our choosing (`1.0` or `1`?), so it is refused.
fn entity_id(join_key: &str, v: &Json) -> Result<String, ApiError> {
    match v {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
        other => Err(ApiError::bad(format!(
            "entities.{join_key}: {other} is not an id; send strings or integers"
        ))),
    }
}

/// `"view:feature"`, split.
fn feature_ref(v: &Json) -> Result<(&str, &str), ApiError> {
    let Json::String(s) = v else {
        return Err(ApiError::bad(format!(
            "a feature must be a \"view:feature\" string, got {v}"
        )));
    };
    s.split_once(':')
        .filter(|(view, feature)| !view.is_empty() && !feature.is_empty())
        .ok_or_else(|| ApiError::bad(format!("feature {s:?} is not written \"view:feature\"")))
}

/// The request's columns, checked against its join key.
fn resolve(registry: &Registry, request: &Request) -> Result<Resolved, ApiError> {
    let resolved = match &request.target {
        Target::Service(name) => registry.resolve_model(name).map_err(|e| {
            if e.is_not_found() {
                ApiError::NotFound(format!("feature service {name:?} is not in the registry"))
            } else {
                e.into()
            }
        })?,
        Target::Features(refs) => {
            let mut ours = Vec::with_capacity(refs.len());
            for (view, feature) in refs {
                let v = registry
                    .views
                    .iter()
                    .find(|v| v.feast_name == *view)
                    .ok_or_else(|| {
                        ApiError::NotFound(format!(
                            "feature view {view:?} is not in the registry (as a view's feast_name or name)"
                        ))
                    })?;
                if v.feature(feature).is_none() {
                    return Err(ApiError::NotFound(format!(
                        "feature view {view:?} has no feature {feature:?}"
                    )));
                }
                ours.push(format!("{}.{feature}", v.name));
            }
            registry.resolve_features(None, &ours)?
        }
    };
    if resolved.entity.join_key != request.join_key {
        return Err(ApiError::bad(format!(
            "these features are of entity {:?}, whose join key is {:?}, not {:?}",
            resolved.entity.name, resolved.entity.join_key, request.join_key
        )));
    }
    Ok(resolved)
}

/// `POST /write-to-online-store`: a DataFrame, as columns, into one view.
///
/// `{"feature_view_name": "<feast_name>", "df": {"<join_key>": [...],
/// "<feature>": [...], "event_timestamp": [...], "created": [...]}}`, as
/// Feast's SDK sends it for `write_to_online_store` and `materialize`.
/// Every row is checked (the entity's id rules, each column a feature of
/// the view, each value of its type, the event time) before anything is
/// written: one bad row refuses the whole request (400), as a Feast user
/// whose write raised expects nothing of it to be stored. The rows then go
/// through `/v1/push`'s path (the loader's scripts: a batch view as whole
/// rows, a stream view as streaming updates, each entity atomically), one
/// round trip per `MAX_PUSH_ROWS` rows. `event_timestamp` dates each row
/// (ISO 8601; without an offset it is UTC, as Feast's SDK sends it);
/// `created` is Feast's bookkeeping and is not stored. A null feature
/// retracts it in a batch view (the row is written whole) and is left out
/// of a stream view's update (which only sets values).
pub fn write_to_online_store(app: &App, params: &Params) -> Result<Reply, ApiError> {
    const SHAPE: &str = r#"{"feature_view_name": "<view>", "df": {"<join_key>": [...], "<feature>": [...], "event_timestamp": [...]}}"#;
    let (name, body) = named_body(params, "feature_view_name", SHAPE)?;
    let df = columns(body, SHAPE)?;
    let view = app
        .registry
        .views
        .iter()
        .find(|v| v.feast_name == name)
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "feature view {name:?} is not in the registry (as a view's feast_name or name)"
            ))
        })?;
    let rows = checked_rows(app, view, df, &[])?;
    let (written, skipped_stale) = write_rows(app, view, &rows)?;
    let answer = json!({
        "feature_view_name": name,
        "written": written,
        "skipped_stale": skipped_stale,
    });
    serde_json::to_vec(&answer)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))
}

/// `POST /push`: `{"push_source_name", "df", "to"}`, Feast's push for HTTP
/// clients (its SDK pushes through `/write-to-online-store`). Every view
/// whose `feast_push_source` is that name gets the rows, checked whole for
/// all of them before any is written; each view takes the df's columns it
/// has (a column no such view has is refused). `to` must be `online` (the
/// default): this server has no offline store, and a push that asked for
/// one is refused rather than half done.
pub fn push(app: &App, params: &Params) -> Result<Reply, ApiError> {
    const SHAPE: &str = r#"{"push_source_name": "<name>", "df": {"<join_key>": [...], "<feature>": [...], "event_timestamp": [...]}, "to": "online"}"#;
    let (name, body) = named_body(params, "push_source_name", SHAPE)?;
    match body.get("to") {
        None | Some(Json::Null) => {}
        Some(Json::String(to)) if to == "online" => {}
        Some(Json::String(to)) if to == "offline" || to == "online_and_offline" => {
            return Err(ApiError::bad(format!(
                "\"to\": {to:?} needs an offline store, which this server does not have; push \"online\""
            )))
        }
        Some(other) => {
            return Err(ApiError::bad(format!(
                "\"to\" must be one of online, offline, online_and_offline; got {other}"
            )))
        }
    }
    let df = columns(body, SHAPE)?;
    let views: Vec<&crate::registry::FeatureView> = app
        .registry
        .views
        .iter()
        .filter(|v| v.feast_push_source.as_deref() == Some(name))
        .collect();
    if views.is_empty() {
        return Err(ApiError::NotFound(format!(
            "push source {name:?} feeds no view (a view's feast_push_source)"
        )));
    }
    let fed: Vec<&str> = views
        .iter()
        .flat_map(|v| v.features.iter().map(|f| f.name.as_str()))
        .collect();
    let keys: Vec<&str> = views
        .iter()
        .filter_map(|v| app.registry.entity(&v.entity))
        .map(|e| e.join_key.as_str())
        .collect();
    if let Some(column) = df.keys().find(|c| {
        let c = c.as_str();
        !(fed.contains(&c) || keys.contains(&c) || c == "event_timestamp" || c == "created")
    }) {
        return Err(ApiError::bad(format!(
            "df.{column} is not a feature of the views push source {name:?} feeds (their features: {}), nor a join key, event_timestamp or created",
            fed.join(", ")
        )));
    }
    let mut checked = Vec::with_capacity(views.len());
    for view in &views {
        // A view none of whose features the df holds has nothing to take
        // (its columns are still checked, by the views that do).
        if !df.keys().any(|k| view.feature(k).is_some()) {
            continue;
        }
        let rows = checked_rows(app, view, df, &fed)?;
        checked.push((*view, rows));
    }
    if checked.is_empty() {
        return Err(ApiError::bad(format!(
            "df holds no feature of the views push source {name:?} feeds (their features: {})",
            fed.join(", ")
        )));
    }
    let mut written = Map::new();
    let mut skipped_stale = 0;
    for (view, rows) in checked {
        let (n, stale) = write_rows(app, view, &rows)?;
        written.insert(view.feast_name.clone(), n.into());
        skipped_stale += stale;
    }
    let answer = json!({
        "push_source_name": name,
        "written": written,
        "skipped_stale": skipped_stale,
    });
    serde_json::to_vec(&answer)
        .map(Reply::Json)
        .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))
}

/// The df's rows for `view`, every one checked (400 naming up to five bad
/// rows, nothing written). `others`: feature names of sibling views fed by
/// the same push, which this view leaves to them.
fn checked_rows(
    app: &App,
    view: &crate::registry::FeatureView,
    df: &Map<String, Json>,
    others: &[&str],
) -> Result<Vec<Json>, ApiError> {
    let entity = app.registry.entity(&view.entity).ok_or_else(|| {
        // `Registry::parse` refuses a view of an undeclared entity.
        ApiError::Internal(format!("view {:?} has no entity", view.name))
    })?;
    let rows = df_rows(view, &entity.join_key, df, others)?;
    let mut problems = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        if let Err(why) = super::push::check_row(view, entity, row) {
            problems.push(format!("row {i}: {why}"));
        }
    }
    if !problems.is_empty() {
        let more = problems.len().saturating_sub(5);
        problems.truncate(5);
        let tail = if more > 0 {
            format!("; and {more} more")
        } else {
            String::new()
        };
        return Err(ApiError::bad(format!(
            "nothing written: {}{tail}",
            problems.join("; ")
        )));
    }
    Ok(rows)
}

/// Checked rows into `view`, one round trip per `MAX_PUSH_ROWS`: how many
/// were written and how many features were older than the stored ones.
/// 409 when Redis refused some (they are named).
fn write_rows(
    app: &App,
    view: &crate::registry::FeatureView,
    rows: &[Json],
) -> Result<(usize, usize), ApiError> {
    let (mut written, mut skipped_stale, mut failed) = (0, 0, Vec::new());
    for chunk in rows.chunks(super::push::MAX_PUSH_ROWS) {
        let outcome = super::push::push(
            &app.store,
            &app.registry,
            view,
            chunk,
            |n| app.pacer.admit(n),
            |n| app.pacer.done(n),
        )?;
        skipped_stale += outcome.skipped_stale;
        for (id, status) in outcome.rows {
            match status {
                super::push::RowStatus::Written => written += 1,
                super::push::RowStatus::Rejected(why) | super::push::RowStatus::Failed(why) => {
                    failed.push(format!("{}: {why}", id.unwrap_or_default()))
                }
            }
        }
    }
    if !failed.is_empty() {
        return Err(ApiError::Conflict(format!(
            "{written} rows written, {} not: {}",
            failed.len(),
            failed.join("; ")
        )));
    }
    Ok((written, skipped_stale))
}

/// A write's JSON body and the name it is for (`key`, a string), or a 400
/// that shows `shape`.
fn named_body<'p>(
    params: &'p Params,
    key: &str,
    shape: &str,
) -> Result<(&'p str, &'p serde_json::Map<String, Json>), ApiError> {
    let body = params
        .json
        .as_ref()
        .ok_or_else(|| ApiError::bad(format!("send a JSON body (application/json): {shape}")))?;
    match body.get(key) {
        Some(Json::String(n)) => Ok((n.as_str(), body)),
        Some(_) => Err(ApiError::bad(format!("\"{key}\" must be a string"))),
        None => Err(ApiError::bad(format!("no \"{key}\": {shape}"))),
    }
}

/// A write's `df`: its columns by name, or a 400 that shows `shape`.
fn columns<'b>(
    body: &'b serde_json::Map<String, Json>,
    shape: &str,
) -> Result<&'b serde_json::Map<String, Json>, ApiError> {
    match body.get("df") {
        Some(Json::Object(df)) => Ok(df),
        _ => Err(ApiError::bad(format!(
            "\"df\" must be an object of columns: {shape}"
        ))),
    }
}

/// The DataFrame's columns as `/v1/push` rows (`{"id", "features",
/// "event_time_ms"}`); 400 for a column that is not the join key, a
/// feature of `view`, `event_timestamp` or `created`, or columns of
/// different lengths.
fn df_rows(
    view: &crate::registry::FeatureView,
    join_key: &str,
    df: &Map<String, Json>,
    others: &[&str],
) -> Result<Vec<Json>, ApiError> {
    let mut len = None;
    for (name, column) in df {
        let Json::Array(values) = column else {
            return Err(ApiError::bad(format!(
                "df.{name} must be an array (a column)"
            )));
        };
        match len {
            Some(n) if n != values.len() => {
                return Err(ApiError::bad(format!(
                    "df's columns differ in length: df.{name} has {}, another {n}",
                    values.len()
                )))
            }
            _ => len = Some(values.len()),
        }
        let known = name == join_key
            || name == "event_timestamp"
            || name == "created"
            || view.feature(name).is_some()
            || others.contains(&name.as_str());
        if !known {
            return Err(ApiError::bad(format!(
                "df.{name} is not a feature of view {:?} (its features: {}), nor {join_key:?}, event_timestamp or created",
                view.feast_name,
                view.features
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let Some(Json::Array(keys)) = df.get(join_key) else {
        return Err(ApiError::bad(format!(
            "df has no {join_key:?} column: the join key of view {:?}'s entity",
            view.feast_name
        )));
    };
    let times = match df.get("event_timestamp") {
        Some(Json::Array(ts)) => Some(ts),
        _ => None,
    };
    let mut rows = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let id = entity_id(join_key, key).map_err(|e| ApiError::bad(format!("row {i}: {e}")))?;
        let mut features = Map::new();
        for (name, column) in df {
            if view.feature(name).is_none() {
                continue;
            }
            let value = column.get(i).cloned().unwrap_or(Json::Null);
            // A stream update only sets values: a missing one is left out.
            if value.is_null() && view.kind == crate::registry::ViewKind::Stream {
                continue;
            }
            features.insert(name.clone(), value);
        }
        // Nothing to set: the row is no update of a stream view.
        if features.is_empty() && view.kind == crate::registry::ViewKind::Stream {
            continue;
        }
        let event_time_ms = match times.and_then(|ts| ts.get(i)) {
            None | Some(Json::Null) => Json::Null,
            Some(t) => event_time(t)
                .map(Json::from)
                .map_err(|why| ApiError::bad(format!("row {i}: event_timestamp {why}")))?,
        };
        rows.push(json!({"id": id, "features": features, "event_time_ms": event_time_ms}));
    }
    Ok(rows)
}

/// An `event_timestamp` in epoch ms. Feast's SDK sends naive ISO 8601 text
/// that it has converted to UTC (`2026-12-01T18:00:00.123456`), so text
/// without an offset is read as UTC here; with one, or as epoch digits, it
/// is read as the loader reads event times.
fn event_time(t: &Json) -> Result<u64, String> {
    let Json::String(text) = t else {
        return crate::loader::event_time::parse_json(t);
    };
    let time_part = text.get(10..).unwrap_or("");
    let has_offset = time_part.ends_with(['Z', 'z']) || time_part.contains(['+', '-']);
    if !time_part.is_empty() && !has_offset {
        return crate::loader::event_time::parse_text(&format!("{text}Z"));
    }
    crate::loader::event_time::parse_text(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parsed(v: Json) -> Result<(), String> {
        let Json::Object(map) = v else {
            unreachable!("tests pass objects")
        };
        parse(&map).map(|_| ()).map_err(|e| e.to_string())
    }

    #[test]
    fn bad_shapes_are_refused_with_what_is_wrong() {
        let e = json!({"user_id": ["u1"]});
        assert!(parsed(json!({"entities": e, "features": ["v:f"]})).is_ok());
        assert!(parsed(json!({"entities": e, "feature_service": "m"})).is_ok());
        for (body, says) in [
            (json!({"features": ["v:f"]}), "no \"entities\""),
            (
                json!({"entities": [], "features": ["v:f"]}),
                "must be an object",
            ),
            (json!({"entities": {}, "features": ["v:f"]}), "no join key"),
            (
                json!({"entities": {"a": [1], "b": [2]}, "features": ["v:f"]}),
                "composite keys",
            ),
            (
                json!({"entities": {"a": "x"}, "features": ["v:f"]}),
                "array",
            ),
            (
                json!({"entities": {"a": []}, "features": ["v:f"]}),
                "1 to 1000",
            ),
            (
                json!({"entities": {"a": [1.5]}, "features": ["v:f"]}),
                "not an id",
            ),
            (
                json!({"entities": {"a": [true]}, "features": ["v:f"]}),
                "not an id",
            ),
            (json!({"entities": e, "features": ["v.f"]}), "view:feature"),
            (json!({"entities": e, "features": [":f"]}), "view:feature"),
            (json!({"entities": e, "features": [3]}), "view:feature"),
            (json!({"entities": e}), "name the features"),
            (
                json!({"entities": e, "features": ["v:f"], "feature_service": "m"}),
                "not both",
            ),
            (
                json!({"entities": e, "features": ["v:f"], "full_feature_names": "yes"}),
                "true or false",
            ),
        ] {
            let got = parsed(body.clone()).expect_err(&body.to_string());
            assert!(got.contains(says), "{body}: {got}");
        }
    }

    #[test]
    fn integer_entity_values_are_their_decimal_text() {
        assert_eq!(entity_id("k", &json!(1001)).ok(), Some("1001".into()));
        assert_eq!(entity_id("k", &json!(-7)).ok(), Some("-7".into()));
        assert_eq!(
            entity_id("k", &json!(u64::MAX)).ok(),
            Some(u64::MAX.to_string())
        );
        assert_eq!(entity_id("k", &json!("u0001")).ok(), Some("u0001".into()));
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_fractions_only_when_there_are_some() {
        assert_eq!(timestamp(0), NO_TIME);
        assert_eq!(timestamp(1_796_148_000_000), "2026-12-01T18:00:00Z");
        assert_eq!(timestamp(1_796_148_000_250), "2026-12-01T18:00:00.250Z");
        assert_eq!(timestamp(LAST_TIMESTAMP_MS), "9999-12-31T23:59:59.999Z");
        assert_eq!(timestamp(LAST_TIMESTAMP_MS + 1), NO_TIME);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every millisecond from 1970 to the end of year 9999 reads as
        /// the `time` crate writes it.
        #[test]
        fn timestamps_agree_with_the_time_crate(ms in 0i64..=LAST_TIMESTAMP_MS) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .expect("in range");
            let want = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()
            );
            let got = timestamp(ms);
            prop_assert!(got.starts_with(&want), "{ms}: {got} vs {want}");
            prop_assert_eq!(got.contains('.'), t.millisecond() != 0);
        }
    }

    #[test]
    fn feasts_naive_event_timestamps_are_utc() {
        let at = |s: &str| event_time(&json!(s));
        assert_eq!(at("1970-01-01T00:00:01"), Ok(1000));
        assert_eq!(at("1970-01-01T00:00:01.250000"), Ok(1250));
        assert_eq!(at("1970-01-01T00:00:01+00:00"), Ok(1000));
        assert_eq!(at("1970-01-01T01:00:01+01:00"), Ok(1000));
        assert_eq!(at("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(event_time(&json!(1)), Ok(1000));
        assert!(at("yesterday").is_err());
        assert!(at("").is_err());
    }

    #[test]
    fn a_served_value_is_present_and_nothing_is_never_present() {
        let v = Value::Int(1);
        assert_eq!(feast_status(Some(&v), Some(Status::Present)), "PRESENT");
        assert_eq!(feast_status(Some(&v), Some(Status::Defaulted)), "PRESENT");
        assert_eq!(feast_status(None, Some(Status::Missing)), "NOT_FOUND");
        assert_eq!(feast_status(None, Some(Status::Invalid)), "NOT_FOUND");
        assert_eq!(feast_status(None, Some(Status::Stale)), "OUTSIDE_MAX_AGE");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever JSON arrives, parsing answers a value or an error.
        #[test]
        fn any_request_shape_parses_or_is_refused_never_panics(
            key in "[a-z_]{0,8}",
            values in prop::collection::vec(
                prop_oneof![
                    any::<i64>().prop_map(Json::from),
                    any::<f64>().prop_map(Json::from),
                    "[ -~]{0,12}".prop_map(Json::from),
                    Just(Json::Null),
                ],
                0..6,
            ),
            features in prop::collection::vec("[a-z:._]{0,10}", 0..4),
            service in prop::option::of("[a-z]{0,6}"),
        ) {
            let mut entities = Map::new();
            entities.insert(key, Json::Array(values));
            let body = json!({
                "entities": entities,
                "features": features,
                "feature_service": service,
            });
            let _ = parsed(body);
        }
    }
}
