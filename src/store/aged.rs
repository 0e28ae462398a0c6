//! Reads bounded by a maximum age: the same one round trip as a pipelined
//! `HMGET`, with Redis's clock (`TIME`) first and, per entity, the fields
//! that date each value (`event_fields`) after the values themselves.

use std::sync::atomic::Ordering::Relaxed;

use redis::Value;

use super::event_fields::{self, Freshness};
use super::{check_names, decode_values, server_error, FeatureRow, FeatureStore};
use crate::error::StoreError;

/// Many entities' values under a maximum age (`batch_get_features_within`).
#[derive(Debug)]
pub struct AgedRows {
    /// Redis's clock at the read, epoch ms.
    pub now_ms: u64,
    /// As `batch_get_features` answers, with every value that is stale or
    /// undated under the bound left out (`None`).
    pub rows: Vec<Result<FeatureRow, StoreError>>,
    /// Per row, per name: the verdict (`Missing` for an errored row).
    pub freshness: Vec<Vec<Freshness>>,
    /// Per row, per name: the value's age in ms when it is dated.
    pub ages_ms: Vec<Vec<Option<i64>>>,
}

impl AgedRows {
    /// Values left out for being older than the bound, or undated.
    pub fn stale_count(&self) -> usize {
        self.freshness
            .iter()
            .flatten()
            .filter(|f| matches!(f, Freshness::Stale | Freshness::Undated))
            .count()
    }
}

impl FeatureStore {
    /// `batch_get_features`, serving only values at most `max_age_ms` old
    /// on Redis's clock (`None`: no bound, ages still reported), in one
    /// round trip.
    pub fn batch_get_features_within<I: AsRef<str>, N: AsRef<str>>(
        &self,
        ids: &[I],
        names: &[N],
        max_age_ms: Option<u64>,
    ) -> Result<AgedRows, StoreError> {
        check_names(names)?;
        let keys = ids
            .iter()
            .map(|id| self.key_for(id.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        let fields = self.dated_fields(names);
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("TIME");
        for key in &keys {
            let cmd = pipe.cmd("HMGET").arg(key);
            for f in &fields.all {
                cmd.arg(f);
            }
        }
        let mut replies = self.run_pipeline::<Vec<Value>>(&pipe)?.into_iter();
        let now_ms = replies
            .next()
            .as_ref()
            .and_then(event_fields::time_reply_ms)
            .ok_or_else(|| StoreError::Redis("TIME: unexpected reply".into()))?;
        let n = names.len();
        let mut out = AgedRows {
            now_ms,
            rows: Vec::with_capacity(keys.len()),
            freshness: Vec::with_capacity(keys.len()),
            ages_ms: Vec::with_capacity(keys.len()),
        };
        let mut present = 0;
        for key in &keys {
            let reply = replies
                .next()
                .ok_or_else(|| StoreError::Redis(format!("pipelined HMGET: no reply for {key}")))?;
            let raw = match reply {
                Value::ServerError(e) => Err(self.name_wrong_type(key, server_error(e))),
                other => decode_values("HMGET", other),
            };
            let raw = match raw {
                Ok(raw) if raw.len() == fields.all.len() => raw,
                Ok(_) => {
                    return Err(StoreError::Redis(
                        "pipelined HMGET: a reply of the wrong length".into(),
                    ))
                }
                Err(e) => {
                    out.rows.push(Err(e));
                    out.freshness.push(vec![Freshness::Missing; n]);
                    out.ages_ms.push(vec![None; n]);
                    continue;
                }
            };
            let time = |i: usize| {
                raw[i]
                    .as_ref()
                    .and_then(|v| event_fields::parse_time(v.as_bytes()))
            };
            let mut row = Vec::with_capacity(n);
            let mut verdicts = Vec::with_capacity(n);
            let mut ages = Vec::with_capacity(n);
            for i in 0..n {
                let value = raw[i].clone();
                let view_time = fields.view_slot[i].and_then(time);
                let own_time = time(n + i);
                let dated =
                    event_fields::effective_time(view_time, own_time).filter(|_| value.is_some());
                let (age, verdict) =
                    event_fields::judge(now_ms, value.is_some(), dated, max_age_ms);
                let served = verdict.is_served(max_age_ms.is_some());
                present += usize::from(served && value.is_some());
                row.push(value.filter(|_| served));
                verdicts.push(verdict);
                ages.push(age);
            }
            out.rows.push(Ok(row));
            out.freshness.push(verdicts);
            out.ages_ms.push(ages);
        }
        self.counters.reads.fetch_add(keys.len() as u64, Relaxed);
        self.counters.read_fields.fetch_add(present as u64, Relaxed);
        Ok(out)
    }

    /// What one entity's `HMGET` asks for to date `names`: the names, then
    /// each one's own time field, then each distinct view's time field.
    fn dated_fields<N: AsRef<str>>(&self, names: &[N]) -> DatedFields {
        let prefix = self.key_prefix();
        let n = names.len();
        let mut all: Vec<String> = names.iter().map(|n| n.as_ref().to_owned()).collect();
        all.extend(
            names
                .iter()
                .map(|f| event_fields::feature_time_field(f.as_ref())),
        );
        let mut view_slot = Vec::with_capacity(n);
        for name in names {
            let slot = self.views.view_of(prefix, name.as_ref()).map(|view| {
                let field = event_fields::view_time_field(view);
                match all[2 * n..].iter().position(|f| *f == field) {
                    Some(at) => 2 * n + at,
                    None => {
                        all.push(field);
                        all.len() - 1
                    }
                }
            });
            view_slot.push(slot);
        }
        DatedFields { all, view_slot }
    }
}

struct DatedFields {
    /// Every field to read, in order.
    all: Vec<String>,
    /// Per name, where its view's time is in `all`, if it has a view.
    view_slot: Vec<Option<usize>>,
}
