//! Typed feature vectors: a registry's columns for many entities, read in
//! one pipelined round trip (`FeatureStore::vectors`).
//!
//! Each stored value is read as its column's declared type. Text that does
//! not parse as that type (another tool wrote it, or the type changed) is
//! `Invalid`: it is served as missing would be (the column's default when
//! it has one, else nothing), never as a wrong value, and counted in
//! `Stats::invalid_values_total`. A key holding another type than a hash
//! makes that entity's every value `Invalid`; the other entities are served.
//!
//! A read can bound freshness: a column's own `max_age_ms` (from the
//! registry) or the request's, the smaller winning. Only then are event
//! times read, in the same round trip: `TIME` first (ages are measured on
//! Redis's clock, so client clock skew plays no part), then per id one
//! `HMGET` of the values and the few fields that date them (`dating`; a
//! second round trip only for entities with a partial write newer than
//! their view's last whole one). A value older than its bound,
//! or with no event time at all, is `Stale`: served as missing would be.
//! Without any bound the read is one plain `HMGET` per id, as it always was.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use redis::Value as Reply;
use serde::Serialize;

use super::dating::{DatedRow, DatingPlan};
use super::event_fields;
use super::FeatureStore;
use crate::error::StoreError;
use crate::registry::{Column, FeatureType, Resolved, Value};

/// How many entities one `vectors` call may name.
pub const MAX_VECTOR_IDS: usize = 1000;

/// Where a served value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Stored, and of the declared type.
    Present,
    /// Not stored (never written, expired, or the entity is missing) and no
    /// default: served as nothing.
    Missing,
    /// Not stored; the column's default is served.
    Defaulted,
    /// Stored, but not of the declared type: served as missing would be
    /// (the default when there is one), and counted.
    Invalid,
    /// Stored and of its type, but older than the column's bound (or with
    /// no event time, so not shown to be within it): served as missing
    /// would be (the default when there is one), and counted.
    Stale,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Missing => "missing",
            Status::Defaulted => "defaulted",
            Status::Invalid => "invalid",
            Status::Stale => "stale",
        }
    }
}

/// Typed values of many entities, columnar: row `i` is `ids[i]`, column `j`
/// is `columns[j]` (a model's order, or the order the features were named).
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    /// The columns read, each with the bound it was served under
    /// (`max_age_ms`: its own tightened by the request's).
    pub columns: Vec<Column>,
    pub ids: Vec<String>,
    /// `None` where nothing is served (missing, invalid or stale, without
    /// default).
    pub values: Vec<Vec<Option<Value>>>,
    pub status: Vec<Vec<Status>>,
    /// How many values are `Invalid`.
    pub invalid_count: usize,
    /// How many values are `Stale`.
    pub stale_count: usize,
    /// Each stored value's age in ms on Redis's clock, shaped as `values`
    /// (`None` where nothing is stored or no event time is): only when a
    /// bound made the read fetch event times, else `None`.
    pub ages: Option<Vec<Vec<Option<i64>>>>,
    /// Redis's clock (epoch ms) the ages were measured on: with `ages`.
    pub now_ms: Option<u64>,
}

impl FeatureStore {
    /// The `resolved` columns of each of `ids` (1 to [`MAX_VECTOR_IDS`]), as
    /// typed values with their statuses, in one pipelined round trip: one
    /// `HMGET` of the columns' fields per id, at `resolved.entity.key(id)`.
    /// Every id is checked against the entity's rules before anything is
    /// sent. A missing entity is all missing or defaulted, never an error.
    ///
    /// `max_age_ms` bounds every column's age (ms, by event time); it
    /// tightens a column's own bound from the registry, never loosens it.
    /// When any column ends up bounded, the same round trip also reads
    /// Redis's `TIME` and the values' event times (see the module doc), and
    /// values older than their bound, or undated, are `Stale`.
    pub fn vectors(
        &self,
        resolved: &Resolved,
        ids: &[String],
        max_age_ms: Option<u64>,
    ) -> Result<Vectors, StoreError> {
        self.vectors_dated(resolved, ids, max_age_ms, false)
    }

    /// As [`vectors`](Self::vectors); with `dated`, the values' event times
    /// are read (and `ages`, `now_ms` answered) even where no bound applies,
    /// for a caller that reports them (Feast's `event_timestamps`). An
    /// unbounded column is never stale for it.
    pub fn vectors_dated(
        &self,
        resolved: &Resolved,
        ids: &[String],
        max_age_ms: Option<u64>,
        dated: bool,
    ) -> Result<Vectors, StoreError> {
        if ids.is_empty() || ids.len() > MAX_VECTOR_IDS {
            return Err(StoreError::invalid(format!(
                "ids must list 1 to {MAX_VECTOR_IDS} entities, got {}",
                ids.len()
            )));
        }
        if resolved.columns.is_empty() {
            return Err(StoreError::invalid("name at least one feature"));
        }
        let entity = &resolved.entity;
        let mut columns = resolved.columns.clone();
        for c in &mut columns {
            c.max_age_ms = c.max_age_under(max_age_ms);
        }
        let plan = (dated || columns.iter().any(|c| c.max_age_ms.is_some())).then(|| {
            let names: Vec<&str> = columns.iter().map(|c| c.field.as_str()).collect();
            DatingPlan::new(&names, |f| {
                columns
                    .iter()
                    .find(|c| c.field == f)
                    .map(|c| c.view.as_str())
            })
        });
        let width = columns.len();
        let mut fields: Vec<Cow<'_, str>> = columns
            .iter()
            .map(|c| Cow::from(c.field.as_str()))
            .collect();
        if let Some(p) = &plan {
            fields.extend(p.fields.iter().map(|f| Cow::from(f.as_str())));
        }
        // Only a dated read goes back to the keys (`read_own_times`).
        let mut keys = Vec::with_capacity(if plan.is_some() { ids.len() } else { 0 });
        let mut pipe = redis::Pipeline::with_capacity(ids.len() + 1);
        pipe.ignore_errors();
        if plan.is_some() {
            pipe.cmd("TIME");
        }
        // Each HMGET sized once: grown argument by argument, its buffers
        // were reallocated several times per id (a tenth of a 100-id
        // read's CPU in the server's profile).
        let field_bytes: usize = fields.iter().map(|f| f.len()).sum();
        for id in ids {
            entity.check_id(id)?;
            let key = entity.key(id);
            let mut cmd = redis::Cmd::with_capacity(2 + fields.len(), 5 + key.len() + field_bytes);
            cmd.arg("HMGET").arg(&key);
            for f in &fields {
                cmd.arg(f.as_ref());
            }
            pipe.add_command(cmd);
            if plan.is_some() {
                keys.push(key);
            }
        }
        let replies: Vec<Reply> = self.run_pipeline(&pipe)?;
        let expected = ids.len() + usize::from(plan.is_some());
        if replies.len() != expected {
            return Err(StoreError::Redis(format!(
                "pipelined HMGET: {} replies for {} keys",
                replies.len(),
                ids.len()
            )));
        }
        let mut replies = replies.into_iter();
        let now_ms = match (&plan, plan.as_ref().and_then(|_| replies.next())) {
            (Some(_), Some(Reply::ServerError(e))) => return Err(super::server_error(e)),
            (Some(_), Some(reply)) => {
                Some(event_fields::time_reply_ms(&reply).ok_or_else(|| {
                    StoreError::Redis(format!("TIME: unexpected reply {reply:?}"))
                })?)
            }
            _ => None,
        };
        // Per id: the values' items and, on a bounded read, their times.
        let mut rows: Vec<DatedRow<Vec<Reply>>> = Vec::with_capacity(ids.len());
        for reply in replies {
            let mut raw = match reply {
                Reply::Array(items) if items.len() == fields.len() => items,
                // WRONGTYPE: another tool's key under the prefix. Its values
                // are not of any declared type; the other rows stand.
                Reply::ServerError(e) if e.code() == "WRONGTYPE" => {
                    vec![Reply::Okay; fields.len()]
                }
                Reply::ServerError(e) => return Err(super::server_error(e)),
                other => {
                    return Err(StoreError::Redis(format!(
                        "HMGET: unexpected reply {other:?}"
                    )))
                }
            };
            let dates = raw.split_off(width);
            let (times, needs) = match &plan {
                Some(p) => {
                    let first = p.first_pass(|i| reply_time(&dates[i]));
                    (first.times, first.needs_own)
                }
                None => (Vec::new(), Vec::new()),
            };
            rows.push(Ok((raw, times, needs)));
        }
        if let Some(p) = &plan {
            self.read_own_times(&keys, p, &mut rows)?;
        }
        let mut values = Vec::with_capacity(ids.len());
        let mut status = Vec::with_capacity(ids.len());
        let mut ages = Vec::with_capacity(if plan.is_some() { ids.len() } else { 0 });
        let mut invalid_count = 0;
        let mut stale_count = 0;
        let mut present_count = 0;
        for entity in rows {
            // A key that turned into another type between the round trips:
            // its values are as invalid as a WRONGTYPE in the first.
            let (raw, times, _) = entity
                .unwrap_or_else(|_| (vec![Reply::Okay; width], vec![None; width], Vec::new()));
            let mut row = Vec::with_capacity(width);
            let mut row_status = Vec::with_capacity(width);
            let mut row_ages = Vec::with_capacity(if plan.is_some() { width } else { 0 });
            for (j, (column, item)) in columns.iter().zip(raw).enumerate() {
                let (mut value, mut s) = typed(column, item);
                if let Some(now) = now_ms {
                    let mut age = None;
                    if s == Status::Present {
                        let (a, freshness) =
                            event_fields::judge(now, true, times[j], column.max_age_ms);
                        age = a;
                        if !freshness.is_served(column.max_age_ms.is_some()) {
                            (value, s) = (column.default.clone(), Status::Stale);
                        }
                    }
                    row_ages.push(age);
                }
                match s {
                    Status::Invalid => invalid_count += 1,
                    Status::Present => present_count += 1,
                    Status::Stale => stale_count += 1,
                    _ => {}
                }
                row.push(value);
                row_status.push(s);
            }
            values.push(row);
            status.push(row_status);
            if plan.is_some() {
                ages.push(row_ages);
            }
        }
        self.counters.reads.fetch_add(ids.len() as u64, Relaxed);
        self.counters.read_fields.fetch_add(present_count, Relaxed);
        self.counters
            .invalid_values
            .fetch_add(invalid_count as u64, Relaxed);
        Ok(Vectors {
            columns,
            ids: ids.to_vec(),
            values,
            status,
            invalid_count,
            stale_count,
            ages: plan.is_some().then_some(ages),
            now_ms,
        })
    }
}

/// A stored event time from an `HMGET` item.
fn reply_time(item: &Reply) -> Option<u64> {
    match item {
        Reply::BulkString(b) => event_fields::parse_time(b),
        _ => None,
    }
}

/// One `HMGET` item as `column`'s type: bytes that parse are present, nil
/// is missing (or the default), anything else invalid (or the default).
fn typed(column: &Column, item: Reply) -> (Option<Value>, Status) {
    let parsed = match item {
        Reply::Nil => None,
        Reply::BulkString(bytes) => Some(match &column.ty {
            FeatureType::String | FeatureType::Category(_) => owned_text(&column.ty, bytes),
            ty => ty.parse_stored(&bytes).ok(),
        }),
        // HMGET answers bulk strings or nils only; anything else (or a
        // non-hash key, see above) is not a value of the column's type.
        _ => Some(None),
    };
    match parsed {
        Some(Some(value)) => (Some(value), Status::Present),
        None => match &column.default {
            Some(d) => (Some(d.clone()), Status::Defaulted),
            None => (None, Status::Missing),
        },
        Some(None) => (column.default.clone(), Status::Invalid),
    }
}

/// A string or category value, as `parse_stored` reads it, but keeping the
/// reply's own bytes as the `String` instead of copying them.
fn owned_text(ty: &FeatureType, bytes: Vec<u8>) -> Option<Value> {
    let s = String::from_utf8(bytes).ok()?;
    match ty {
        FeatureType::String => Some(Value::String(s)),
        FeatureType::Category(values) if values.contains(&s) => Some(Value::String(s)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::ViewKind;
    use proptest::prelude::*;

    fn column(ty: FeatureType, default: Option<Value>) -> Column {
        Column {
            reference: "v.f".into(),
            view: "v".into(),
            field: "f".into(),
            ty,
            default,
            kind: ViewKind::Batch,
            max_age_ms: None,
        }
    }

    #[test]
    fn each_reply_gets_its_status() {
        let int = column(FeatureType::Int, None);
        let with_default = column(FeatureType::Int, Some(Value::Int(-1)));
        let bulk = |s: &str| Reply::BulkString(s.as_bytes().to_vec());
        assert_eq!(
            typed(&int, bulk("42")),
            (Some(Value::Int(42)), Status::Present)
        );
        assert_eq!(typed(&int, Reply::Nil), (None, Status::Missing));
        assert_eq!(
            typed(&with_default, Reply::Nil),
            (Some(Value::Int(-1)), Status::Defaulted)
        );
        assert_eq!(typed(&int, bulk("abc")), (None, Status::Invalid));
        assert_eq!(
            typed(&with_default, bulk("4.5")),
            (Some(Value::Int(-1)), Status::Invalid)
        );
        assert_eq!(typed(&int, Reply::Okay), (None, Status::Invalid));
    }

    #[test]
    fn statuses_are_spelled_as_the_api_answers_them() {
        for s in [
            Status::Present,
            Status::Missing,
            Status::Defaulted,
            Status::Invalid,
            Status::Stale,
        ] {
            assert_eq!(
                serde_json::to_value(s).expect("serializes"),
                serde_json::json!(s.as_str())
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// The copy-free path for text types reads any stored bytes (not
        /// UTF-8, a category's value or near it) exactly as `parse_stored`.
        #[test]
        fn text_values_read_as_parse_stored_reads_them(
            bytes in prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..12),
                "(US|GB|DE|us|U S|\"US\"|\\u0000|é|)".prop_map(String::into_bytes),
                any::<String>().prop_map(String::into_bytes),
            ],
        ) {
            for ty in [
                FeatureType::String,
                FeatureType::Category(vec!["US".into(), "GB".into(), "DE".into(), "".into()]),
            ] {
                let c = column(ty.clone(), None);
                let (value, status) = typed(&c, Reply::BulkString(bytes.clone()));
                let want = ty.parse_stored(&bytes).ok();
                let want_status = if want.is_some() { Status::Present } else { Status::Invalid };
                prop_assert_eq!(value, want);
                prop_assert_eq!(status, want_status);
            }
        }
    }
}
