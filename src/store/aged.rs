//! Reads bounded by a maximum age: a pipelined `HMGET` as unbounded reads
//! send, with Redis's clock (`TIME`) first and, per entity, the fields that
//! date its values (`dating`) after the values themselves.

use std::sync::atomic::Ordering::Relaxed;

use redis::Value;

use super::dating::{DatedRow, DatingPlan};
use super::event_fields::{self, Freshness};
use super::{check_names, decode_values, server_error, FeatureRow, FeatureStore};
use crate::error::StoreError;
use crate::value::ReadValue;

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
    /// on Redis's clock (`None`: no bound, ages still reported). One round
    /// trip, and a second only for entities with a partial write newer
    /// than their view's last whole one (`dating`).
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
        let prefix = self.key_prefix();
        let plan = DatingPlan::new(names, |n| self.views.view_of(prefix, n));
        let n = names.len();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("TIME");
        for key in &keys {
            let cmd = pipe.cmd("HMGET").arg(key);
            for name in names {
                cmd.arg(name.as_ref());
            }
            for f in &plan.fields {
                cmd.arg(f);
            }
        }
        let mut replies = self.run_pipeline::<Vec<Value>>(&pipe)?.into_iter();
        let now_ms = replies
            .next()
            .as_ref()
            .and_then(event_fields::time_reply_ms)
            .ok_or_else(|| StoreError::Redis("TIME: unexpected reply".into()))?;
        // Per entity: its values and their times, or its error.
        let mut read: Vec<DatedRow<FeatureRow>> = Vec::with_capacity(keys.len());
        for key in &keys {
            let reply = replies
                .next()
                .ok_or_else(|| StoreError::Redis(format!("pipelined HMGET: no reply for {key}")))?;
            let raw = match reply {
                Value::ServerError(e) => Err(self.name_wrong_type(key, server_error(e))),
                other => decode_values("HMGET", other),
            };
            read.push(match raw {
                Ok(mut raw) if raw.len() == n + plan.fields.len() => {
                    let dates = raw.split_off(n);
                    let first = plan.first_pass(|i| stored_time(&dates[i]));
                    Ok((raw, first.times, first.needs_own))
                }
                Ok(_) => {
                    return Err(StoreError::Redis(
                        "pipelined HMGET: a reply of the wrong length".into(),
                    ))
                }
                Err(e) => Err(e),
            });
        }
        self.read_own_times(&keys, &plan, &mut read)?;
        let mut out = AgedRows {
            now_ms,
            rows: Vec::with_capacity(keys.len()),
            freshness: Vec::with_capacity(keys.len()),
            ages_ms: Vec::with_capacity(keys.len()),
        };
        let mut present = 0;
        for entity in read {
            let (values, times, _) = match entity {
                Ok(entity) => entity,
                Err(e) => {
                    out.rows.push(Err(e));
                    out.freshness.push(vec![Freshness::Missing; n]);
                    out.ages_ms.push(vec![None; n]);
                    continue;
                }
            };
            let mut row = Vec::with_capacity(n);
            let mut verdicts = Vec::with_capacity(n);
            let mut ages = Vec::with_capacity(n);
            for (value, time) in values.into_iter().zip(times) {
                let dated = time.filter(|_| value.is_some());
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

    /// The follow-up round trip: the own times of the names `first_pass`
    /// asked for, merged into their times (the newer wins). Nothing is sent
    /// when no entity needs it.
    pub(super) fn read_own_times<T>(
        &self,
        keys: &[String],
        plan: &DatingPlan,
        read: &mut [DatedRow<T>],
    ) -> Result<(), StoreError> {
        let wanted: Vec<usize> = (0..read.len())
            .filter(|&i| matches!(&read[i], Ok((_, _, needs)) if !needs.is_empty()))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in &wanted {
            if let Ok((_, _, needs)) = &read[i] {
                let cmd = pipe.cmd("HMGET").arg(&keys[i]);
                for &j in needs {
                    cmd.arg(plan.own_field(j));
                }
            }
        }
        let replies = self.run_pipeline::<Vec<Value>>(&pipe)?;
        for (&i, reply) in wanted.iter().zip(replies) {
            let own = match reply {
                Value::ServerError(e) => Err(self.name_wrong_type(&keys[i], server_error(e))),
                other => decode_values("HMGET", other),
            };
            match (own, &mut read[i]) {
                (Ok(own), Ok((_, times, needs))) if own.len() == needs.len() => {
                    for (&j, value) in needs.iter().zip(own) {
                        times[j] = times[j].max(stored_time(&value));
                    }
                }
                (Ok(_), _) => {
                    return Err(StoreError::Redis(
                        "pipelined HMGET: a reply of the wrong length".into(),
                    ))
                }
                (Err(e), slot) => *slot = Err(e),
            }
        }
        Ok(())
    }
}

fn stored_time(value: &Option<ReadValue>) -> Option<u64> {
    value
        .as_ref()
        .and_then(|v| event_fields::parse_time(v.as_bytes()))
}
