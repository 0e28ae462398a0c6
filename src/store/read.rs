//! The read paths: plain `HMGET`s (one entity, or many pipelined in one
//! round trip), and `read_fresh`, which adds TTLs, event times and ages in
//! one script call. Reads bounded by a maximum age are in `aged`.

use super::*;
use crate::scripts::FreshReply;

impl FeatureStore {
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

    pub(super) fn fresh_read_script<N: AsRef<str>>(
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
        let cmd = FreshReply::call(
            &key,
            names.iter().map(AsRef::as_ref).chain(
                plan.iter()
                    .flat_map(|p| p.fields.iter().map(String::as_str)),
            ),
        );
        let reply: Value = self
            .eval_script(&READ_FRESH, &cmd)
            .map_err(|e| self.name_wrong_type(&key, e))?;
        // Raw bytes first: a field name or value another tool wrote may be
        // anything, and must not fail the read.
        let FreshReply {
            key_ttl: key_ttl_seconds,
            names: got_names,
            values,
            field_ttls: ttls,
            now_ms,
        } = FreshReply::decode(reply).map_err(StoreError::Redis)?;
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
                // A partial write newer than its view's last whole one: those
                // features' own times, one more round trip (as `aged` does).
                let mut row = [Ok(((), first.times, first.needs_own))];
                self.read_own_times(std::slice::from_ref(&key), plan, &mut row)?;
                let [row] = row;
                row?.1
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

    pub(super) fn count_read(
        &self,
        row: BTreeMap<String, ReadValue>,
    ) -> BTreeMap<String, ReadValue> {
        self.counters.reads.fetch_add(1, Relaxed);
        self.counters
            .read_fields
            .fetch_add(row.len() as u64, Relaxed);
        row
    }
}

pub(super) fn zip_present<N: AsRef<str>>(
    names: &[N],
    values: FeatureRow,
) -> BTreeMap<String, ReadValue> {
    names
        .iter()
        .zip(values)
        .filter_map(|(n, v)| v.map(|v| (n.as_ref().to_owned(), v)))
        .collect()
}
