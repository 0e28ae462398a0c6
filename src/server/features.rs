//! `POST /v1/features`: a model's (or a feature list's) typed values for
//! many entities, in one round trip, as columns.
//!
//! Request, JSON only:
//! `{"model": "fraud_v1", "ids": ["u0001", ...]}` or
//! `{"entity": "user", "features": ["user_profile.country_iso", ...], "ids": [...]}`,
//! either with an optional `"max_age_ms": N` (0 to ten years): values older
//! than that (by event time, on Redis's clock) are `stale`. It tightens the
//! registry's bounds, never loosens them.
//! Answer: `features` (in the model's or the requested order, with their
//! types and the `max_age_ms` each was served under), `ids`, `values` (one
//! row per id, JSON-typed, `null` where nothing is served), `status`
//! (`present`, `missing`, `defaulted`, `invalid`, `stale` per value),
//! `invalid_count`, `stale_count`, `age_ms` (each stored value's age, only
//! when a bound applied), `elapsed_ms`.

use std::time::Instant;

use serde::ser::{Serialize, SerializeSeq, Serializer};
use serde_json::{json, Map, Value as Json};

use super::body::Params;
use super::errors::ApiError;
use super::http::Reply;
use super::App;
use crate::registry::{Column, FeatureType, Resolved, Value};
use crate::store::MAX_VECTOR_IDS;

/// The keys a request may hold: anything else is most likely a typo
/// (`feature` for `features`) and is refused rather than ignored.
const KEYS: [&str; 5] = ["model", "entity", "features", "ids", "max_age_ms"];

/// What a request asks for, before the registry resolves it.
struct Request<'a> {
    model: Option<&'a str>,
    entity: Option<&'a str>,
    features: Option<Vec<String>>,
    ids: Vec<String>,
}

pub fn features(app: &App, params: &Params) -> Result<Reply, ApiError> {
    let body = params.json.as_ref().ok_or_else(|| {
        ApiError::bad(
            "POST /v1/features takes a JSON body: {\"model\": \"...\", \"ids\": [...]} \
             or {\"entity\": \"...\", \"features\": [\"view.feature\", ...], \"ids\": [...]}",
        )
    })?;
    let request = parse(body)?;
    // Checked as every endpoint checks it (`Params::max_age_ms`).
    let max_age_ms = params.max_age_ms()?;
    let resolved = resolve(app, &request)?;
    let started = Instant::now();
    let vectors = app.store.vectors(&resolved, &request.ids, max_age_ms)?;
    let elapsed_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let mut answer = Map::new();
    if let Some(model) = request.model {
        answer.insert("model".into(), model.into());
    }
    answer.insert("entity".into(), resolved.entity.name.clone().into());
    answer.insert(
        "features".into(),
        vectors.columns.iter().map(describe).collect(),
    );
    let answer = Answer {
        head: answer,
        ids: &vectors.ids,
        values: Rows(&vectors.values),
        status: &vectors.status,
        invalid_count: vectors.invalid_count,
        stale_count: vectors.stale_count,
        age_ms: vectors.ages.as_deref(),
        elapsed_ms,
    };
    // Sized for the usual answer up front, so the buffer is not regrown
    // (and copied) several times on the way to ~25 KB for 100 x 10.
    let cells = answer.ids.len() * (vectors.columns.len() + 1);
    let mut out = Vec::with_capacity(1024 + cells * 24);
    serde_json::to_writer(&mut out, &answer)
        .map(|()| Reply::Json(out))
        .map_err(|e| ApiError::Internal(format!("encoding the response: {e}")))
}

fn parse(body: &Map<String, Json>) -> Result<Request<'_>, ApiError> {
    if let Some(key) = body.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(ApiError::bad(format!(
            "unknown key {key:?}; accepted: model, entity, features, ids, max_age_ms"
        )));
    }
    let string = |key: &str| -> Result<Option<&str>, ApiError> {
        match body.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::String(s)) => Ok(Some(s)),
            Some(_) => Err(ApiError::bad(format!("{key} must be a string"))),
        }
    };
    let strings = |key: &str| -> Result<Option<Vec<String>>, ApiError> {
        let refuse = || ApiError::bad(format!("{key} must be an array of strings"));
        match body.get(key) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(refuse))
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(refuse()),
        }
    };
    let ids = strings("ids")?.unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_VECTOR_IDS {
        return Err(ApiError::bad(format!(
            "ids must list 1 to {MAX_VECTOR_IDS} entities, got {}",
            ids.len()
        )));
    }
    let request = Request {
        model: string("model")?,
        entity: string("entity")?,
        features: strings("features")?,
        ids,
    };
    match (&request.model, &request.features) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "give either a model or a list of features, not both",
        )),
        (None, None) => Err(ApiError::bad(
            "name a model, or an entity and its features (\"view.feature\")",
        )),
        _ => Ok(request),
    }
}

/// The request's columns: the model's, or the named features'.
fn resolve(app: &App, request: &Request) -> Result<Resolved, ApiError> {
    let Some(model) = request.model else {
        let features = request.features.as_deref().unwrap_or_default();
        return Ok(app.registry.resolve_features(request.entity, features)?);
    };
    let resolved = app.registry.resolve_model(model)?;
    match request.entity {
        Some(entity) if entity != resolved.entity.name => Err(ApiError::bad(format!(
            "model {model:?} reads entity {:?}, not {entity:?}",
            resolved.entity.name
        ))),
        _ => Ok(resolved),
    }
}

/// One column as the answer lists it: its reference, type and default.
fn describe(column: &Column) -> Json {
    let mut out = json!({
        "name": column.reference,
        "type": column.ty.name(),
        "kind": column.kind.as_str(),
        "default": column.default.as_ref().map(Value::to_json),
        "max_age_ms": column.max_age_ms,
    });
    match &column.ty {
        FeatureType::Category(values) => out["values"] = json!(values),
        FeatureType::FloatVector(n) => out["length"] = json!(n),
        _ => {}
    }
    out
}

/// The answer, serialized straight from the read (no JSON tree of the
/// values: up to 1000 rows of them).
#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(flatten)]
    head: Map<String, Json>,
    ids: &'a [String],
    values: Rows<'a>,
    status: &'a [Vec<crate::store::Status>],
    invalid_count: usize,
    stale_count: usize,
    /// Only when a bound made the read fetch event times.
    #[serde(skip_serializing_if = "Option::is_none")]
    age_ms: Option<&'a [Vec<Option<i64>>]>,
    elapsed_ms: f64,
}

struct Rows<'a>(&'a [Vec<Option<Value>>]);

impl Serialize for Rows<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut rows = s.serialize_seq(Some(self.0.len()))?;
        for row in self.0 {
            rows.serialize_element(&Row(row))?;
        }
        rows.end()
    }
}

struct Row<'a>(&'a [Option<Value>]);

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut row = s.serialize_seq(Some(self.0.len()))?;
        for value in self.0 {
            row.serialize_element(&value.as_ref().map(Typed))?;
        }
        row.end()
    }
}

/// A value JSON-typed: numbers as numbers, bools as bools, vectors as
/// arrays (as `Value::to_json`, without building the tree).
struct Typed<'a>(&'a Value);

impl Serialize for Typed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Int(i) => s.serialize_i64(*i),
            // Finite by construction (`parse_stored` refuses NaN and inf).
            Value::Float(x) => s.serialize_f64(*x),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::String(v) => s.serialize_str(v),
            Value::FloatVector(xs) => xs.serialize(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_values_serialize_as_to_json_does() {
        let values = vec![
            Some(Value::Int(-3)),
            Some(Value::Float(0.25)),
            Some(Value::Bool(true)),
            Some(Value::String("US".into())),
            Some(Value::FloatVector(vec![1.5, -2.0])),
            None,
        ];
        let rows = [values.clone()];
        let got = serde_json::to_value(Rows(&rows)).expect("serializes");
        let want: Vec<Json> = values
            .iter()
            .map(|v| v.as_ref().map_or(Json::Null, Value::to_json))
            .collect();
        assert_eq!(got, json!([want]));
    }

    #[test]
    fn a_request_names_a_model_or_features_never_both_nor_unknown_keys() {
        let parsed = |v: Json| {
            let Json::Object(map) = v else {
                unreachable!("tests pass objects")
            };
            parse(&map).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(parsed(json!({"model": "m", "ids": ["a"]})).is_ok());
        assert!(parsed(json!({"entity": "user", "features": ["f"], "ids": ["a"]})).is_ok());
        for (body, says) in [
            (
                json!({"model": "m", "features": ["f"], "ids": ["a"]}),
                "not both",
            ),
            (json!({"ids": ["a"]}), "name a model"),
            (json!({"model": "m", "ids": []}), "1 to 1000"),
            (json!({"model": "m"}), "1 to 1000"),
            (json!({"model": "m", "ids": [1]}), "array of strings"),
            (json!({"model": 3, "ids": ["a"]}), "must be a string"),
            (
                json!({"model": "m", "feature": ["f"], "ids": ["a"]}),
                "unknown key \"feature\"",
            ),
        ] {
            let e = parsed(body.clone()).expect_err(&body.to_string());
            assert!(e.contains(says), "{body}: {e}");
        }
    }
}
