//! Typed feature vectors: a registry's columns for many entities, read in
//! one pipelined round trip (`FeatureStore::vectors`).
//!
//! Each stored value is read as its column's declared type. Text that does
//! not parse as that type (another tool wrote it, or the type changed) is
//! `Invalid`: it is served as missing would be (the column's default when
//! it has one, else nothing), never as a wrong value, and counted in
//! `Stats::invalid_values_total`. A key holding another type than a hash
//! makes that entity's every value `Invalid`; the other entities are served.

use std::sync::atomic::Ordering::Relaxed;

use redis::Value as Reply;
use serde::Serialize;

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
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Present => "present",
            Status::Missing => "missing",
            Status::Defaulted => "defaulted",
            Status::Invalid => "invalid",
        }
    }
}

/// Typed values of many entities, columnar: row `i` is `ids[i]`, column `j`
/// is `columns[j]` (a model's order, or the order the features were named).
#[derive(Debug, Clone, PartialEq)]
pub struct Vectors {
    pub columns: Vec<Column>,
    pub ids: Vec<String>,
    /// `None` where nothing is served (missing or invalid, without default).
    pub values: Vec<Vec<Option<Value>>>,
    pub status: Vec<Vec<Status>>,
    /// How many values are `Invalid`.
    pub invalid_count: usize,
}

impl FeatureStore {
    /// The `resolved` columns of each of `ids` (1 to [`MAX_VECTOR_IDS`]), as
    /// typed values with their statuses, in one pipelined round trip: one
    /// `HMGET` of the columns' fields per id, at `resolved.entity.key(id)`.
    /// Every id is checked against the entity's rules before anything is
    /// sent. A missing entity is all missing or defaulted, never an error.
    pub fn vectors(&self, resolved: &Resolved, ids: &[String]) -> Result<Vectors, StoreError> {
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
        let fields: Vec<&str> = resolved.columns.iter().map(|c| c.field.as_str()).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for id in ids {
            entity.check_id(id)?;
            pipe.add_command(hmget(&entity.key(id), &fields));
        }
        let replies: Vec<Reply> = self.run_pipeline(&pipe)?;
        if replies.len() != ids.len() {
            return Err(StoreError::Redis(format!(
                "pipelined HMGET: {} replies for {} keys",
                replies.len(),
                ids.len()
            )));
        }
        let width = resolved.columns.len();
        let mut values = Vec::with_capacity(ids.len());
        let mut status = Vec::with_capacity(ids.len());
        let mut invalid_count = 0;
        let mut present_count = 0;
        for reply in replies {
            let raw = match reply {
                Reply::Array(items) if items.len() == width => items,
                // WRONGTYPE: another tool's key under the prefix. Its values
                // are not of any declared type; the other rows stand.
                Reply::ServerError(e) if e.code() == "WRONGTYPE" => {
                    vec![Reply::Okay; width]
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
            for (column, item) in resolved.columns.iter().zip(raw) {
                let (value, s) = typed(column, item);
                match s {
                    Status::Invalid => invalid_count += 1,
                    Status::Present => present_count += 1,
                    _ => {}
                }
                row.push(value);
                row_status.push(s);
            }
            values.push(row);
            status.push(row_status);
        }
        self.counters.reads.fetch_add(ids.len() as u64, Relaxed);
        self.counters.read_fields.fetch_add(present_count, Relaxed);
        self.counters
            .invalid_values
            .fetch_add(invalid_count as u64, Relaxed);
        Ok(Vectors {
            columns: resolved.columns.clone(),
            ids: ids.to_vec(),
            values,
            status,
            invalid_count,
        })
    }
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
    fn statuses_are_spelled_as_the_api_answers_them() {
        for s in [
            Status::Present,
            Status::Missing,
            Status::Defaulted,
            Status::Invalid,
        ] {
            assert_eq!(
                serde_json::to_value(s).expect("serializes"),
                serde_json::json!(s.as_str())
            );
        }
    }
}
