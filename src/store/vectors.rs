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
//! `HMGET` of the values, each column's view time `@<view>` and own time
//! `<feature>@t` (layout in `event_fields`). A value older than its bound,
//! or with no event time at all, is `Stale`: served as missing would be.
//! Without any bound the read is one plain `HMGET` per id, as it always was.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;

use redis::Value as Reply;
use serde::Serialize;

use super::event_fields::{self, Freshness};
use super::{hmget, FeatureStore};
use crate::error::StoreError;
use crate::registry::{Column, Resolved, Value};

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
        let times = columns
            .iter()
            .any(|c| c.max_age_ms.is_some())
            .then(|| TimeFields::of(&columns));
        let width = columns.len();
        let mut fields: Vec<Cow<'_, str>> = columns
            .iter()
            .map(|c| Cow::from(c.field.as_str()))
            .collect();
        if let Some(t) = &times {
            fields.extend(t.fields.iter().map(|f| Cow::from(f.as_str())));
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        if times.is_some() {
            pipe.cmd("TIME");
        }
        for id in ids {
            entity.check_id(id)?;
            pipe.add_command(hmget(&entity.key(id), &fields));
        }
        let replies: Vec<Reply> = self.run_pipeline(&pipe)?;
        let expected = ids.len() + usize::from(times.is_some());
        if replies.len() != expected {
            return Err(StoreError::Redis(format!(
                "pipelined HMGET: {} replies for {} keys",
                replies.len(),
                ids.len()
            )));
        }
        let mut replies = replies.into_iter();
        let now_ms = match (&times, times.as_ref().and_then(|_| replies.next())) {
            (Some(_), Some(Reply::ServerError(e))) => return Err(super::server_error(e)),
            (Some(_), Some(reply)) => {
                Some(event_fields::time_reply_ms(&reply).ok_or_else(|| {
                    StoreError::Redis(format!("TIME: unexpected reply {reply:?}"))
                })?)
            }
            _ => None,
        };
        let mut values = Vec::with_capacity(ids.len());
        let mut status = Vec::with_capacity(ids.len());
        let mut ages = Vec::with_capacity(if times.is_some() { ids.len() } else { 0 });
        let mut invalid_count = 0;
        let mut stale_count = 0;
        let mut present_count = 0;
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
            let mut row = Vec::with_capacity(width);
            let mut row_status = Vec::with_capacity(width);
            let mut row_ages = Vec::with_capacity(if times.is_some() { width } else { 0 });
            // Past the values: the time fields (none on an unbounded read).
            let time_items = raw.split_off(width);
            for (j, (column, item)) in columns.iter().zip(raw).enumerate() {
                let (mut value, mut s) = typed(column, item);
                if let (Some(t), Some(now)) = (&times, now_ms) {
                    let mut age = None;
                    if s == Status::Present {
                        let (a, freshness) = judge(column, t, j, &time_items, now);
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
            if times.is_some() {
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
            ages: times.is_some().then_some(ages),
        })
    }
}

/// The event-time fields a bounded read asks for after the columns' values:
/// each distinct view's time once, then each column's own time.
struct TimeFields {
    /// `@<view>`... then `<feature>@t`..., in that order.
    fields: Vec<String>,
    /// Per column, the index of its view among the distinct views.
    view_of: Vec<usize>,
    views: usize,
}

impl TimeFields {
    fn of(columns: &[Column]) -> TimeFields {
        let mut views: Vec<&str> = Vec::new();
        let view_of = columns
            .iter()
            .map(|c| {
                views.iter().position(|v| *v == c.view).unwrap_or_else(|| {
                    views.push(&c.view);
                    views.len() - 1
                })
            })
            .collect();
        let fields = views
            .iter()
            .map(|v| event_fields::view_time_field(v))
            .chain(
                columns
                    .iter()
                    .map(|c| event_fields::feature_time_field(&c.field)),
            )
            .collect();
        TimeFields {
            fields,
            view_of,
            views: views.len(),
        }
    }
}

/// Column `j`'s age and verdict, from the time fields that follow the
/// values in its row (`items`, the row's `HMGET` items past the values).
fn judge(
    column: &Column,
    t: &TimeFields,
    j: usize,
    items: &[Reply],
    now_ms: u64,
) -> (Option<i64>, Freshness) {
    let time = |i: usize| match items.get(i) {
        Some(Reply::BulkString(b)) => event_fields::parse_time(b),
        _ => None,
    };
    let view_time = time(t.view_of[j]);
    let own_time = time(t.views + j);
    event_fields::judge(
        now_ms,
        true,
        event_fields::effective_time(view_time, own_time),
        column.max_age_ms,
    )
}

/// One `HMGET` item as `column`'s type: bytes that parse are present, nil
/// is missing (or the default), anything else invalid (or the default).
fn typed(column: &Column, item: Reply) -> (Option<Value>, Status) {
    let parsed = match item {
        Reply::Nil => None,
        Reply::BulkString(bytes) => Some(column.ty.parse_stored(&bytes).ok()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{FeatureType, ViewKind};

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
    fn a_bounded_read_asks_each_views_time_once_and_each_features_own() {
        let mut cols = vec![
            column(FeatureType::Int, None),
            column(FeatureType::Int, None),
            column(FeatureType::Int, None),
        ];
        (cols[1].view, cols[1].field) = ("w".into(), "g".into());
        cols[2].field = "h".into();
        let t = TimeFields::of(&cols);
        assert_eq!(t.fields, ["@v", "@w", "f@t", "g@t", "h@t"]);
        assert_eq!(t.view_of, [0, 1, 0]);

        // The newer of the view's time and the feature's own judges it.
        let bulk = |s: &str| Reply::BulkString(s.as_bytes().to_vec());
        let mut bounded = cols[0].clone();
        bounded.max_age_ms = Some(1000);
        let items = [
            bulk("5000"),
            Reply::Nil,
            bulk("8500"),
            Reply::Nil,
            bulk("x"),
        ];
        assert_eq!(
            judge(&bounded, &t, 0, &items, 10_000),
            (Some(1500), Freshness::Stale)
        );
        let items = [
            bulk("5000"),
            Reply::Nil,
            bulk("9500"),
            Reply::Nil,
            bulk("x"),
        ];
        assert_eq!(
            judge(&bounded, &t, 0, &items, 10_000),
            (Some(500), Freshness::Fresh)
        );
        // Column 2 shares the view's time; its own is not a number.
        assert_eq!(
            judge(&bounded, &t, 2, &items, 10_000),
            (Some(5000), Freshness::Stale)
        );
        // Column 1: no time anywhere.
        assert_eq!(
            judge(&bounded, &t, 1, &items, 10_000),
            (None, Freshness::Undated)
        );
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
}
