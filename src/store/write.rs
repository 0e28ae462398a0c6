//! The write paths: batch rows and streaming updates, each entity's write
//! one atomic script call (`write_batch_rows`, `write_streaming`), many of
//! them per call and per round trip, dated by event time (`views`,
//! `event_clock`); and the per-row checks callers can run before queueing.

use super::*;
use crate::fast_hash::FxHashMap;
use crate::scripts::{decode_written, Written};

impl FeatureStore {
    /// Writes each row (its features, then the key TTL) with
    /// `write_batch_rows`: `entities_per_call` rows per script call,
    /// `chunk_size` rows per round trip. Rows with a bad id, feature name or
    /// value are reported failed and not sent.
    pub fn bulk_load(
        &self,
        rows: &[(String, FeatureMap)],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(rows.iter().map(|(id, _)| id.as_str()));
        let report = self.write_scripted(
            &WRITE_BATCH_ROWS,
            &self.counters.batch_writes,
            &[ttl_seconds],
            rows,
            |(id, _)| id,
            |i, (id, features)| {
                check_features(features)?;
                if features.is_empty() {
                    return Err(StoreError::invalid("row has no features"));
                }
                self.batch_entity(
                    self.key_for(id)?,
                    times[i],
                    std::iter::empty(),
                    features.keys().map(String::as_str),
                    features.iter().map(|(k, v)| (k.as_str(), v.as_wire())),
                )
            },
        );
        Ok(report)
    }

    /// Like `bulk_load`, for rows that also retract features (the loader's
    /// input: a null or empty cell deletes that feature in the same call).
    pub fn write_batch_rows(
        &self,
        rows: &[BatchRow],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = undated_times(rows);
        let report = self.write_scripted(
            &WRITE_BATCH_ROWS,
            &self.counters.batch_writes,
            &[ttl_seconds],
            rows,
            |row| &row.id,
            |i, row| {
                let key = self.check_batch_row(row)?;
                self.batch_entity(
                    key,
                    row.event_time_ms.unwrap_or_else(|| times[i]),
                    row.retract.iter().map(String::as_str),
                    row.set.iter().map(|(k, _)| k.as_str()),
                    row.set
                        .iter()
                        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str()))),
                )
            },
        );
        Ok(report)
    }

    /// What `write_batch_rows` checks of each row before sending it (id,
    /// names, counts): a caller can refuse a row alone before merging or
    /// queueing it. Returns the row's key.
    pub fn check_batch_row(&self, row: &BatchRow) -> Result<String, StoreError> {
        let key = self.key_for(&row.id)?;
        if row.set.is_empty() && row.retract.is_empty() {
            return Err(StoreError::invalid("row has no features"));
        }
        check_counts(row.set.len(), row.retract.len())?;
        check_event_time(row.event_time_ms)?;
        for (name, _) in &row.set {
            validate::feature_name(name)?;
        }
        for name in &row.retract {
            validate::feature_name(name)?;
        }
        Ok(key)
    }

    /// What `update_streaming_rows` checks of each row before sending it.
    /// Returns the row's key.
    pub fn check_streaming_row(&self, row: &BatchRow) -> Result<String, StoreError> {
        let key = self.key_for(&row.id)?;
        if !row.retract.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write cannot retract features",
            ));
        }
        if row.set.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write needs at least one feature",
            ));
        }
        check_counts(row.set.len(), 0)?;
        check_event_time(row.event_time_ms)?;
        for (name, _) in &row.set {
            validate::feature_name(name)?;
        }
        Ok(key)
    }

    /// The largest single argument (bulk string) this Redis accepts
    /// (`proto-max-bulk-len`), when `CONFIG GET` is allowed; `None` when it
    /// is not (renamed, an ACL, a managed service). Redis answers a larger
    /// argument with a protocol error and closes the connection, which a
    /// client cannot tell from an outage: bulk writers use this to refuse
    /// such a row before sending it.
    pub fn max_bulk_len(&self) -> Result<Option<u64>, StoreError> {
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("proto-max-bulk-len");
        // Decoded after the connection is done with it, like every reply
        // the store reads (see `decode`).
        let reply = self
            .query(&cmd)
            .and_then(|v| decode::<Vec<String>>("CONFIG GET", v));
        match reply {
            Ok(pair) => Ok(pair.get(1).and_then(|v| v.parse().ok())),
            Err(e) if e.is_unavailable() => Err(e),
            // Refused (NOPERM, unknown command): the limit stays unknown.
            Err(_) => Ok(None),
        }
    }

    /// Writes `fields` for one entity, each with a field TTL of `ttl_seconds`,
    /// atomically (`write_streaming`). A key with no TTL gets the batch TTL.
    pub fn update_streaming(
        &self,
        id: &str,
        fields: &FeatureMap,
        ttl_seconds: u64,
    ) -> Result<(), StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let update = self.streaming_update(id, fields, event_clock::now_ms())?;
        let cmd = WRITE_STREAMING.call(
            &[ttl_seconds, self.config.batch_ttl_seconds],
            std::iter::once(&update),
        );
        let reply: Value = self.eval_script(&WRITE_STREAMING, &cmd)?;
        let outcome = decode_written(&WRITE_STREAMING, reply, std::iter::once(update.segments))
            .map_err(StoreError::Redis)?;
        match outcome.as_slice() {
            [Written::Ok { skipped_stale, .. }] => {
                self.counters.streaming_writes.fetch_add(1, Relaxed);
                self.counters
                    .skipped_stale
                    .fetch_add(*skipped_stale as u64, Relaxed);
                Ok(())
            }
            _ => Err(StoreError::Redis(wrong_type(&update.key))),
        }
    }

    /// Many streaming writes: `entities_per_call` per script call,
    /// `chunk_size` per round trip; each entity's write is atomic.
    pub fn update_streaming_many(
        &self,
        events: &[(String, FeatureMap)],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = implicit_times(events.iter().map(|(id, _)| id.as_str()));
        let report = self.write_scripted(
            &WRITE_STREAMING,
            &self.counters.streaming_writes,
            &[ttl_seconds, self.config.batch_ttl_seconds],
            events,
            |(id, _)| id,
            |i, (id, fields)| self.streaming_update(id, fields, times[i]),
        );
        Ok(report)
    }

    /// Like `update_streaming_many`, for rows already in their wire form
    /// (the loader's `stream` input). A streaming write cannot retract: a row
    /// with retractions is refused.
    pub fn update_streaming_rows(
        &self,
        rows: &[BatchRow],
        ttl_seconds: u64,
    ) -> Result<WriteReport, StoreError> {
        check_ttl("ttl", ttl_seconds)?;
        let times = undated_times(rows);
        let report = self.write_scripted(
            &WRITE_STREAMING,
            &self.counters.streaming_writes,
            &[ttl_seconds, self.config.batch_ttl_seconds],
            rows,
            |row| &row.id,
            |i, row| {
                let key = self.check_streaming_row(row)?;
                self.streaming_entity(
                    key,
                    row.event_time_ms.unwrap_or_else(|| times[i]),
                    row.set.iter().map(|(k, _)| k.as_str()),
                    row.set
                        .iter()
                        .map(|(k, v)| (k.as_str(), Cow::Borrowed(v.as_str()))),
                )
            },
        );
        Ok(report)
    }

    /// Sends `items` as multi-entity script calls, up to `entities_per_call`
    /// per call (fewer when their arguments pass a budget: `split_calls`)
    /// and `chunk_size` per round trip. `build` lays out one item's part
    /// of a call or refuses it; refused items, and items whose call failed or
    /// whose key held a non-hash, land in `failed`.
    pub(super) fn write_scripted<'a, T>(
        &self,
        script: &LuaScript,
        written: &AtomicU64,
        head: &[u64],
        items: &'a [T],
        id_of: impl Fn(&T) -> &str,
        build: impl Fn(usize, &'a T) -> Result<EntityArgs<'a>, StoreError>,
    ) -> WriteReport {
        let mut report = WriteReport::default();
        let per_call = self.config.entities_per_call;
        for (chunk_no, chunk) in items.chunks(self.config.chunk_size).enumerate() {
            let base = chunk_no * self.config.chunk_size;
            let mut ready = Vec::with_capacity(chunk.len());
            for (i, item) in chunk.iter().enumerate() {
                match build(base + i, item) {
                    Ok(entity) => ready.push((base + i, entity)),
                    Err(error) => report.failed.push(RowFailure {
                        index: base + i,
                        id: id_of(item).to_owned(),
                        error,
                    }),
                }
            }
            if ready.is_empty() {
                continue;
            }
            let sizes = self.call_sizes(&mut ready, per_call);
            let groups: Vec<&[(usize, EntityArgs)]> = sizes
                .iter()
                .scan(0, |start, &len| {
                    let group = &ready[*start..*start + len];
                    *start += len;
                    Some(group)
                })
                .collect();
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for group in &groups {
                pipe.add_command(script.call(head, group.iter().map(|(_, e)| e)));
            }
            let replies = self.run_script_pipeline(script, &pipe);
            for (group, reply) in groups.into_iter().zip(replies) {
                let outcomes = reply.and_then(|v| {
                    decode_written(script, v, group.iter().map(|(_, e)| e.segments))
                        .map_err(StoreError::Redis)
                });
                for (i, (index, entity)) in group.iter().enumerate() {
                    let error = match &outcomes {
                        Ok(o) => match o[i] {
                            Written::Ok { skipped_stale, .. } => {
                                report.written += 1;
                                report.skipped_stale += skipped_stale;
                                continue;
                            }
                            Written::NotAHash => StoreError::Redis(wrong_type(&entity.key)),
                        },
                        Err(e) => e.clone(),
                    };
                    report.failed.push(RowFailure {
                        index: *index,
                        id: id_of(&items[*index]).to_owned(),
                        error,
                    });
                }
            }
        }
        report.failed.sort_by_key(|f| f.index);
        written.fetch_add(report.written as u64, Relaxed);
        self.counters
            .skipped_stale
            .fetch_add(report.skipped_stale as u64, Relaxed);
        report
    }

    /// How many entities go in each call, in the order of `ready`
    /// (`split_calls`). On a cluster a call's keys must share a slot:
    /// `ready` is first grouped by slot (a stable sort, so one entity's
    /// writes keep their order) and no call spans two slots.
    fn call_sizes(&self, ready: &mut [(usize, EntityArgs)], per_call: usize) -> Vec<usize> {
        if !self.is_cluster() {
            return split_calls(ready.iter().map(|(_, e)| e.cost()), per_call);
        }
        let slot = |e: &EntityArgs| slots::key_slot(e.key.as_bytes());
        ready.sort_by_cached_key(|(_, e)| slot(e));
        let by_slot: Vec<u16> = ready.iter().map(|(_, e)| slot(e)).collect();
        let mut sizes = Vec::new();
        let mut start = 0;
        for run in by_slot.chunk_by(|a, b| a == b) {
            let part = &ready[start..start + run.len()];
            sizes.extend(split_calls(part.iter().map(|(_, e)| e.cost()), per_call));
            start += run.len();
        }
        sizes
    }

    /// One entity's part of a `write_streaming` call, after checking it.
    pub(super) fn streaming_update<'a>(
        &'a self,
        id: &str,
        fields: &'a FeatureMap,
        event_time_ms: u64,
    ) -> Result<EntityArgs<'a>, StoreError> {
        let key = self.key_for(id)?;
        check_features(fields)?;
        if fields.is_empty() {
            return Err(StoreError::invalid(
                "a streaming write needs at least one feature",
            ));
        }
        self.streaming_entity(
            key,
            event_time_ms,
            fields.keys().map(String::as_str),
            fields.iter().map(|(k, v)| (k.as_str(), v.as_wire())),
        )
    }

    /// One batch row's part of a write call: a segment per view its
    /// features belong to (`views::ViewMap::segments`), all at time `t`.
    /// `set_names` are the names of `set`, in its order (read without
    /// making its values).
    pub(super) fn batch_entity<'a>(
        &'a self,
        key: String,
        t: u64,
        retract: impl ExactSizeIterator<Item = &'a str> + Clone,
        set_names: impl Iterator<Item = &'a str> + Clone,
        set: impl ExactSizeIterator<Item = (&'a str, Cow<'a, str>)>,
    ) -> Result<EntityArgs<'a>, StoreError> {
        check_event_time(Some(t))?;
        let prefix = &self.config.key_prefix;
        let names = retract.clone().chain(set_names);
        let mut entity = EntityArgs::new(key);
        // Most rows are one segment: laid out as they come.
        if let Some((dating, view)) = self.views.sole(prefix, names.clone()) {
            entity.push_batch(dated_with(t, dating, view), retract, set);
            return Ok(entity);
        }
        let segments = self.views.segments(prefix, names);
        let set: Vec<_> = set.collect();
        for segment in &segments {
            let r: Vec<&str> = retract
                .clone()
                .filter(|n| segment.names.contains(n))
                .collect();
            let s: Vec<_> = set
                .iter()
                .filter(|(n, _)| segment.names.contains(n))
                .cloned()
                .collect();
            entity.push_batch(dated(t, segment), r.into_iter(), s.into_iter());
        }
        Ok(entity)
    }

    /// One streaming update's part of a write call, segmented as
    /// `batch_entity` is.
    pub(super) fn streaming_entity<'a>(
        &'a self,
        key: String,
        t: u64,
        set_names: impl Iterator<Item = &'a str> + Clone,
        set: impl ExactSizeIterator<Item = (&'a str, Cow<'a, str>)>,
    ) -> Result<EntityArgs<'a>, StoreError> {
        check_event_time(Some(t))?;
        let prefix = &self.config.key_prefix;
        let mut entity = EntityArgs::new(key);
        if let Some((dating, view)) = self.views.sole(prefix, set_names.clone()) {
            entity.push_streaming(dated_with(t, dating, view), set);
            return Ok(entity);
        }
        let segments = self.views.segments(prefix, set_names);
        let set: Vec<_> = set.collect();
        for segment in &segments {
            let s: Vec<_> = set
                .iter()
                .filter(|(n, _)| segment.names.contains(n))
                .cloned()
                .collect();
            entity.push_streaming(dated(t, segment), s.into_iter());
        }
        Ok(entity)
    }
}

/// How many entities go in each script call, in order: a call closes at
/// `per_call` entities, or before the next entity would take it past
/// `MAX_ARGS_PER_CALL` arguments or `MAX_ARG_BYTES_PER_CALL` bytes. Every
/// entity lands in exactly one call; one larger than a budget goes alone.
/// `costs` are each entity's (arguments, bytes), as `EntityArgs::cost`.
pub fn split_calls(costs: impl IntoIterator<Item = (usize, usize)>, per_call: usize) -> Vec<usize> {
    let per_call = per_call.max(1);
    let mut sizes = Vec::new();
    let (mut len, mut args, mut bytes) = (0usize, 0usize, 0usize);
    for (a, b) in costs {
        if len > 0
            && (len == per_call
                || args.saturating_add(a) > MAX_ARGS_PER_CALL
                || bytes.saturating_add(b) > MAX_ARG_BYTES_PER_CALL)
        {
            sizes.push(len);
            (len, args, bytes) = (0, 0, 0);
        }
        len += 1;
        args = args.saturating_add(a);
        bytes = bytes.saturating_add(b);
    }
    if len > 0 {
        sizes.push(len);
    }
    sizes
}

pub(super) fn dated<'a>(t: u64, segment: &views::Segment<'a, '_>) -> Dated<'a> {
    dated_with(t, segment.dating, segment.view)
}

fn dated_with(t: u64, dating: views::Dating, view: &str) -> Dated<'_> {
    Dated {
        event_time_ms: t,
        dating,
        view,
    }
}

/// The event time of each row of one write call that carries none of its
/// own: the call's time (`event_clock`), one millisecond later for each
/// earlier row of the same id, so a later row of an id still wins over an
/// earlier one in the same call (an equal time would be a replay).
///
/// The map hashes with `fast_hash`: its ids may be chosen by a client (a
/// push), but it lives for one call, whose rows are bounded (a push carries
/// at most 1000), so even ids chosen to collide cost a few milliseconds,
/// less than writing them does.
pub(super) fn implicit_times<'i>(ids: impl Iterator<Item = &'i str>) -> Vec<u64> {
    let now = event_clock::now_ms();
    let mut seen: FxHashMap<&str, u64> = FxHashMap::default();
    let times: Vec<u64> = ids
        .map(|id| {
            let k = seen.entry(id).or_insert(0);
            let t = now + *k;
            *k += 1;
            t
        })
        .collect();
    if let Some(last) = times.iter().max() {
        event_clock::not_before(*last);
    }
    times
}

/// `implicit_times` for rows that may carry their own times, indexed like
/// them; empty when every row does (the loader dates its chunks before
/// writing them): no row then takes a time from it.
fn undated_times(rows: &[BatchRow]) -> Vec<u64> {
    if rows.iter().all(|r| r.event_time_ms.is_some()) {
        return Vec::new();
    }
    implicit_times(rows.iter().map(|r| r.id.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every entity in exactly one call, in order; no call over
        /// `per_call` entities, and none over a budget unless it holds a
        /// single entity that is over it alone.
        #[test]
        fn calls_stay_within_the_budgets_and_take_every_entity_once(
            costs in proptest::collection::vec((1usize..2000, 1usize..100_000), 0..300),
            per_call in 1usize..100,
        ) {
            let sizes = split_calls(costs.iter().copied(), per_call);
            prop_assert_eq!(sizes.iter().sum::<usize>(), costs.len());
            let mut start = 0;
            for len in sizes {
                prop_assert!(len >= 1 && len <= per_call);
                let group = &costs[start..start + len];
                let args: usize = group.iter().map(|c| c.0).sum();
                let bytes: usize = group.iter().map(|c| c.1).sum();
                prop_assert!(
                    len == 1 || (args <= MAX_ARGS_PER_CALL && bytes <= MAX_ARG_BYTES_PER_CALL),
                    "{len} entities, {args} args, {bytes} bytes"
                );
                // Closed only when the next entity would not fit.
                if let Some(next) = costs.get(start + len) {
                    prop_assert!(
                        len == per_call
                            || args + next.0 > MAX_ARGS_PER_CALL
                            || bytes + next.1 > MAX_ARG_BYTES_PER_CALL
                    );
                }
                start += len;
            }
        }
    }

    #[test]
    fn a_repeated_id_is_dated_a_millisecond_later_each_time_and_dated_rows_need_no_times() {
        let t = implicit_times(["a", "b", "a", "a", "c", "b"].into_iter());
        let base = t[0];
        assert_eq!(t, [base, base, base + 1, base + 2, base, base + 1]);
        // The clock moved past every time handed out.
        assert!(event_clock::now_ms() > base + 2);

        let row = |id: &str, t: Option<u64>| BatchRow {
            id: id.into(),
            event_time_ms: t,
            ..BatchRow::default()
        };
        assert!(undated_times(&[row("a", Some(5)), row("a", Some(6))]).is_empty());
        let mixed = undated_times(&[row("a", Some(5)), row("a", None), row("b", None)]);
        assert_eq!(mixed.len(), 3);
        assert_eq!(mixed[1], mixed[2] + 1, "the second row of a is a ms later");
    }

    #[test]
    fn narrow_rows_fill_a_call_and_wide_rows_close_it_early() {
        // Synthetic streaming updates: 5 features, 12 arguments with the key.
        assert_eq!(split_calls(vec![(12, 150); 120], 50), vec![50, 50, 20]);
        // Synthetic batch rows: 6 features, 15 arguments: 40 fit.
        assert_eq!(split_calls(vec![(15, 150); 100], 50), vec![40, 40, 20]);
        // 100-feature rows: 203 arguments each, so 2 per call.
        assert_eq!(split_calls(vec![(203, 3000); 5], 50), vec![2, 2, 1]);
        // One row over both budgets goes alone.
        assert_eq!(
            split_calls(vec![(15, 150), (9000, 1 << 20), (15, 150)], 50),
            vec![1, 1, 1]
        );
    }
}
