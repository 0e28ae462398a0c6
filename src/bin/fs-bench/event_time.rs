//! The event-time rows: what comparing event times costs the write scripts,
//! against the scripts from before event time (`before/`, kept here as the
//! baseline only), and what a read bounded by a maximum age costs against
//! the same read unbounded.
//!
//! The write rows run on a Redis of their own, so their keys are new when
//! the first pass writes them and nothing else in the run sees them. Both
//! sides get the same synthetic rows, in the same script calls (as many
//! rows per call as the store puts in its own, `split_calls` over the
//! store's arguments) and the same pipelines (`chunk_size` rows), one
//! pipeline each in turn.

use feature_store::demo::synth;
use feature_store::registry::{Registry, Resolved, ViewKind};
use feature_store::scripts::{Dated, EntityArgs};
use feature_store::store::event_fields::{is_time_field, Freshness};
use feature_store::store::views::ViewMap;
use feature_store::store::{split_calls, BatchRow, WriteReport};
use feature_store::{
    event_clock, FeatureMap, FeatureStore, FeatureValue, ManagedRedis, StoreConfig,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

use crate::library::{
    now_ms, raw_connection, read_ids, Ctx, BATCH_TTL, PREFIX, SEED, STREAMING_TTL,
};
use crate::measure::{paired, Recorder};
use crate::report::{count, Check, Figures, RatioOn, Row};
use crate::BResult;

/// `write_batch_rows` and `write_streaming` as they were before event time.
const BEFORE_BATCH: &str = include_str!("before/write_batch_rows.lua");
const BEFORE_STREAMING: &str = include_str!("before/write_streaming.lua");
/// Where the before-scripts write: the store's prefix length, so the keys
/// cost the same.
const BEFORE_PREFIX: &str = "bf:user:";
/// The bound of the bounded reads.
const MAX_AGE_MS: u64 = 60_000;
/// The most users the batch write row loads (a full run's 1,000,000 would
/// triple the bench's load time for no steadier a ratio).
const MAX_BATCH_USERS: usize = 200_000;

/// One side's timings, per pass.
#[derive(Default)]
struct Passes {
    new_keys: Side,
    newer: Side,
}

/// One side of one pass: its calls' latencies, and the time Redis spent in
/// its script calls (`INFO commandstats` read around each).
#[derive(Default, Clone)]
struct Side {
    timed: Recorder,
    redis_usec: u64,
    rows: u64,
}

impl Side {
    /// Redis time per row, in microseconds.
    fn usec_per_row(&self) -> f64 {
        self.redis_usec as f64 / self.rows.max(1) as f64
    }
}

impl Passes {
    fn both(&self) -> Side {
        let mut all = self.new_keys.clone();
        all.timed.merge(&self.newer.timed);
        all.redis_usec += self.newer.redis_usec;
        all.rows += self.newer.rows;
        all
    }
}

/// The three write rows: `event_time_batch`, `event_time_streaming`,
/// `event_time_replay`.
pub fn write_rows(ctx: &Ctx, out: &mut Vec<Row>) -> BResult<()> {
    eprintln!("fs-bench: event time: a fresh Redis for the write rows ...");
    let redis = ManagedRedis::start()?;
    let config = StoreConfig::default();
    let (chunk, per_call) = (config.chunk_size, config.entities_per_call);
    let registry = Registry::demo();
    let store = FeatureStore::open(&redis.url(), config)?.with_registry(&registry);
    let views = ViewMap::from_registry(&registry);
    let mut raw = raw_connection(&redis.url())?;
    let mut stats = raw_connection(&redis.url())?;
    let batch_sha = load(&mut raw, BEFORE_BATCH)?;
    let streaming_sha = load(&mut raw, BEFORE_STREAMING)?;

    // ---- batch: new keys, then newer values, then a late replay.
    let users = ctx.sizes.bulk_users.min(MAX_BATCH_USERS);
    let first: Vec<(String, FeatureMap)> = synth::users(users, SEED ^ 21).collect();
    let second: Vec<(String, FeatureMap)> = synth::users(users, SEED ^ 22).collect();
    let warm: Vec<(String, FeatureMap)> = synth::users(chunk, SEED ^ 23)
        .map(|(id, f)| (format!("warm{id}"), f))
        .collect();
    // The store's split of a chunk into calls is worked out before the
    // before-script's pipeline is timed: the old store split its own calls
    // too, so leaving it out of the timing favours the baseline, if anything.
    let batch_groups = |rows: &[(String, FeatureMap)]| store_groups(&views, rows, per_call, false);
    let before_batch =
        |raw: &mut redis::Connection, rows: &[(String, FeatureMap)], groups: &[usize]| {
            send_before(raw, before_calls(Before::Batch, &batch_sha, rows, groups))
        };
    written("warm-up bulk_load", store.bulk_load(&warm, BATCH_TTL)?, 0)?;
    before_batch(&mut raw, &warm, &batch_groups(&warm))?;

    let (mut ours, mut base) = (Passes::default(), Passes::default());
    for (k, rows) in first.chunks(chunk).enumerate() {
        let groups = batch_groups(rows);
        alternate(
            k,
            rows.len() as u64,
            &mut stats,
            (&mut ours.new_keys, &mut base.new_keys),
            || written("bulk_load", store.bulk_load(rows, BATCH_TTL)?, 0),
            || before_batch(&mut raw, rows, &groups),
        )?;
    }
    // Older than every write from here on: the replay pass's time.
    let late = event_clock::now_ms();
    for (k, rows) in second.chunks(chunk).enumerate() {
        let groups = batch_groups(rows);
        alternate(
            k,
            rows.len() as u64,
            &mut stats,
            (&mut ours.newer, &mut base.newer),
            || written("bulk_load", store.bulk_load(rows, BATCH_TTL)?, 0),
            || before_batch(&mut raw, rows, &groups),
        )?;
    }
    let replay: Vec<BatchRow> = second
        .iter()
        .map(|(id, f)| BatchRow {
            event_time_ms: Some(late),
            ..BatchRow::from_features(id, f)
        })
        .collect();
    let (mut ours_replay, mut base_replay) = (Side::default(), Side::default());
    for (k, (rows, features)) in replay.chunks(chunk).zip(second.chunks(chunk)).enumerate() {
        let skipped: usize = features.iter().map(|(_, f)| f.len()).sum();
        let groups = batch_groups(features);
        alternate(
            k,
            rows.len() as u64,
            &mut stats,
            (&mut ours_replay, &mut base_replay),
            || {
                written(
                    "write_batch_rows (replay)",
                    store.write_batch_rows(rows, BATCH_TTL)?,
                    skipped,
                )
            },
            || before_batch(&mut raw, features, &groups),
        )?;
    }
    let batch_per_call = store_groups(&views, &first[..chunk.min(users)], per_call, false);
    let batch_per_call_before = before_groups(&first[..chunk.min(users)], per_call, false);

    // ---- streaming: on keys no batch row made, then newer updates.
    // FLUSHALL keeps the loaded scripts.
    redis::cmd("FLUSHALL").query::<()>(&mut raw)?;
    let events = ctx.sizes.streaming_events;
    let mut rng = StdRng::seed_from_u64(SEED ^ 24);
    let mut updates = |n: usize| -> Vec<(String, FeatureMap)> {
        (1..=n)
            .map(|i| {
                (
                    synth::user_id(i),
                    synth::streaming_features(&mut rng, now_ms()),
                )
            })
            .collect()
    };
    let (first, second) = (updates(events), updates(events));
    let warm: Vec<(String, FeatureMap)> = updates(chunk)
        .into_iter()
        .map(|(id, f)| (format!("warm{id}"), f))
        .collect();
    let streaming_groups =
        |rows: &[(String, FeatureMap)]| store_groups(&views, rows, per_call, true);
    let before_streaming =
        |raw: &mut redis::Connection, rows: &[(String, FeatureMap)], groups: &[usize]| {
            send_before(
                raw,
                before_calls(Before::Streaming, &streaming_sha, rows, groups),
            )
        };
    written(
        "warm-up update_streaming_many",
        store.update_streaming_many(&warm, STREAMING_TTL)?,
        0,
    )?;
    before_streaming(&mut raw, &warm, &streaming_groups(&warm))?;
    let (mut ours_s, mut base_s) = (Passes::default(), Passes::default());
    for (pass, rows) in [(0, &first), (1, &second)] {
        for (k, rows) in rows.chunks(chunk).enumerate() {
            let groups = streaming_groups(rows);
            let (o, b) = if pass == 0 {
                (&mut ours_s.new_keys, &mut base_s.new_keys)
            } else {
                (&mut ours_s.newer, &mut base_s.newer)
            };
            alternate(
                k,
                rows.len() as u64,
                &mut stats,
                (o, b),
                || {
                    written(
                        "update_streaming_many",
                        store.update_streaming_many(rows, STREAMING_TTL)?,
                        0,
                    )
                },
                || before_streaming(&mut raw, rows, &groups),
            )?;
        }
    }
    let streaming_per_call = store_groups(&views, &first[..chunk.min(events)], per_call, true);
    let streaming_per_call_before = before_groups(&first[..chunk.min(events)], per_call, true);
    drop(redis);

    let pass_ratios = |ours: &Passes, base: &Passes| {
        let r = |a: &Side, b: &Side| a.timed.summary().per_sec / b.timed.summary().per_sec;
        let us = |a: &Side, b: &Side| {
            format!(
                "{:.2} us against {:.2} us",
                a.usec_per_row(),
                b.usec_per_row()
            )
        };
        format!(
            "new keys {:.2}x, newer values {:.2}x. Redis's time in the script calls per row \
             (`INFO commandstats` read around each pipeline, untimed), ours against before: \
             new keys {}, newer values {}",
            r(&ours.new_keys, &base.new_keys),
            r(&ours.newer, &base.newer),
            us(&ours.new_keys, &base.new_keys),
            us(&ours.newer, &base.newer)
        )
    };
    let packing = |store: &[usize], before: &[usize]| {
        format!(
            "{} rows per script call (the store's split of its first pipeline; the event time's \
             three arguments per row close a call sooner at the argument budget: with the old \
             arguments the same budget would put {} in a call; the baseline's split is \
             worked out untimed)",
            store.first().copied().unwrap_or(0),
            before.first().copied().unwrap_or(0)
        )
    };
    crate::step(
        "event_time_batch",
        out,
        Ok(Row {
            id: "event_time_batch",
            operation: format!(
                "`bulk_load` with event times (whole-view dated), {} users x 2 passes (new keys, \
                 newer values), {chunk} per pipeline",
                count(users as f64)
            ),
            unit: "users",
            ours: Figures::Timed(ours.both().timed.summary()),
            baseline_name: "`write_batch_rows` from before event time, same rows, calls and \
                            pipelines"
                .into(),
            baseline: Figures::Timed(base.both().timed.summary()),
            ratio_on: RatioOn::PerSec,
            goal: vec![Check::RatioAtLeast(0.85)],
            note: format!(
                "on a Redis of its own: {} synthetic users written twice (new keys, then new \
                 values at a newer time: every feature written, none skipped), one `bulk_load` \
                 call per {chunk} users alternating with one pipeline of `EVALSHA` of the \
                 pre-event-time script (`src/bin/fs-bench/before/`) under `{BEFORE_PREFIX}`; \
                 both {}. Per pass: {}. p50/p99 per {chunk}-user pipeline; users/s over time \
                 inside the calls. Against raw HSET + EXPIRE: `script_cost_batch`.",
                count(users as f64),
                packing(&batch_per_call, &batch_per_call_before),
                pass_ratios(&ours, &base)
            ),
        }),
    )?;
    crate::step(
        "event_time_streaming",
        out,
        Ok(Row {
            id: "event_time_streaming",
            operation: format!(
                "`update_streaming_many` with event times (whole-view dated), 5 streaming \
                 features x {} entities x 2 passes, {chunk} per pipeline",
                count(events as f64)
            ),
            unit: "entities",
            ours: Figures::Timed(ours_s.both().timed.summary()),
            baseline_name: "`write_streaming` from before event time, same updates, calls and \
                            pipelines"
                .into(),
            baseline: Figures::Timed(base_s.both().timed.summary()),
            ratio_on: RatioOn::PerSec,
            goal: vec![Check::RatioAtLeast(0.85)],
            note: format!(
                "on the same Redis, flushed: {} entities updated twice (new keys, then every \
                 feature at a newer time), one `update_streaming_many` call per {chunk} entities \
                 alternating with one pipeline of the pre-event-time `write_streaming` under \
                 `{BEFORE_PREFIX}`; both {}. Per pass: {}. Against raw HSETEX / HSET + HEXPIRE: \
                 `script_cost_streaming`.",
                count(events as f64),
                packing(&streaming_per_call, &streaming_per_call_before),
                pass_ratios(&ours_s, &base_s)
            ),
        }),
    )?;
    crate::step(
        "event_time_replay",
        out,
        Ok(Row {
            id: "event_time_replay",
            operation: format!(
                "a late replay: `write_batch_rows` of the second pass's {} rows again, dated \
                 before it (every feature skipped)",
                count(users as f64)
            ),
            unit: "users",
            ours: Figures::Timed(ours_replay.timed.summary()),
            baseline_name: "the pre-event-time `write_batch_rows` on the same rows (it writes \
                            them again)"
                .into(),
            baseline: Figures::Timed(base_replay.timed.summary()),
            ratio_on: RatioOn::PerSec,
            goal: vec![],
            note: format!(
                "after `event_time_batch`, same Redis: the rows of its second pass sent once more \
                 with an event time older than that pass's, so the script reads each row's view \
                 time and skips all {} features (checked: `skipped_stale` is every feature), \
                 against the old script, which has no way to tell and rewrites them; same calls \
                 and pipelines. Redis's time in the script calls per row: {:.2} us against {:.2} us. \
                 No goal: a replay that changes nothing should cost less than a write.",
                count((users * 6) as f64),
                ours_replay.usec_per_row(),
                base_replay.usec_per_row()
            ),
        }),
    )
}

/// Runs `ours` and `base` for one chunk back to back, the first
/// alternating; reads Redis's script time around each (not timed).
fn alternate(
    k: usize,
    items: u64,
    stats: &mut redis::Connection,
    (ours, base): (&mut Side, &mut Side),
    mut run_ours: impl FnMut() -> BResult<()>,
    mut run_base: impl FnMut() -> BResult<()>,
) -> BResult<()> {
    let mut one = |side: &mut Side, run: &mut dyn FnMut() -> BResult<()>| -> BResult<()> {
        let before = evalsha_usec(stats)?;
        side.timed.time(items, run)?;
        side.redis_usec += evalsha_usec(stats)?.saturating_sub(before);
        side.rows += items;
        Ok(())
    };
    if k.is_multiple_of(2) {
        one(ours, &mut run_ours)?;
        one(base, &mut run_base)?;
    } else {
        one(base, &mut run_base)?;
        one(ours, &mut run_ours)?;
    }
    Ok(())
}

/// Redis's time in `EVALSHA` so far (the commands the scripts ran
/// included), from `INFO commandstats`.
fn evalsha_usec(stats: &mut redis::Connection) -> BResult<u64> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(stats)?;
    Ok(feature_store::commandstats::parse(&info)
        .get("evalsha")
        .map_or(0, |s| s.usec))
}

/// A write that went through whole, with exactly `skipped` features
/// skipped as stale (a row that skips where it should write times the
/// wrong work).
fn written(what: &str, report: WriteReport, skipped: usize) -> BResult<()> {
    if let Some(f) = report.failed.first() {
        return Err(format!(
            "{what}: {} rows failed, first {} ({})",
            report.failed.len(),
            f.id,
            f.error
        )
        .into());
    }
    if report.skipped_stale != skipped {
        return Err(format!(
            "{what}: {} features skipped as stale, expected {skipped}",
            report.skipped_stale
        )
        .into());
    }
    Ok(())
}

/// `SCRIPT LOAD`s a before-script; returns its SHA1.
fn load(raw: &mut redis::Connection, source: &str) -> BResult<String> {
    let sha: String = redis::cmd("SCRIPT").arg("LOAD").arg(source).query(raw)?;
    Ok(sha)
}

/// An event time of today's width (13 digits), for sizing calls without
/// taking a time from `event_clock` (each call there moves it on).
const SAMPLE_TIME_MS: u64 = 1_796_140_800_000;

/// How many rows the store puts in each script call of one pipeline:
/// `split_calls` over the arguments it sends (`EntityArgs`, dated as its
/// `ViewMap` dates these features).
fn store_groups(
    views: &ViewMap,
    rows: &[(String, FeatureMap)],
    per_call: usize,
    streaming: bool,
) -> Vec<usize> {
    let costs = rows.iter().map(|(id, features)| {
        let mut entity = EntityArgs::new(format!("{PREFIX}{id}"));
        for segment in views.segments(PREFIX, features.keys().map(String::as_str)) {
            let dated = Dated {
                event_time_ms: SAMPLE_TIME_MS,
                dating: segment.dating,
                view: segment.view,
            };
            let set: Vec<_> = features
                .iter()
                .filter(|(k, _)| segment.names.contains(k.as_str()))
                .map(|(k, v)| (k.as_str(), v.as_wire()))
                .collect();
            if streaming {
                entity.push_streaming(dated, set.into_iter());
            } else {
                entity.push_batch(dated, std::iter::empty(), set.into_iter());
            }
        }
        entity.cost()
    });
    split_calls(costs.collect::<Vec<_>>(), per_call)
}

/// The same split over the arguments the before-scripts take (no T, M, V):
/// how the store packed its calls before event time, for the notes.
fn before_groups(rows: &[(String, FeatureMap)], per_call: usize, streaming: bool) -> Vec<usize> {
    let costs = rows.iter().map(|(id, f)| {
        let args = if streaming { 1 } else { 2 } + 2 * f.len();
        let bytes = PREFIX.len()
            + id.len()
            + f.iter()
                .map(|(k, v)| k.len() + v.as_wire().len())
                .sum::<usize>();
        (args + 1, bytes)
    });
    split_calls(costs.collect::<Vec<_>>(), per_call)
}

/// The pre-event-time scripts' argument layouts, which differ only in
/// their head and in the batch rows' retraction count.
#[derive(Clone, Copy)]
enum Before {
    /// `write_batch_rows`: TTL, then per row R = 0, S, S pairs.
    Batch,
    /// `write_streaming`: field TTL, batch TTL, then per update S, S pairs.
    Streaming,
}

/// One `EVALSHA` of a pre-event-time script per group of `rows`.
fn before_calls(
    script: Before,
    sha: &str,
    rows: &[(String, FeatureMap)],
    groups: &[usize],
) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    let mut at = 0;
    for &len in groups {
        let group = &rows[at..at + len];
        at += len;
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(sha).arg(len);
        for (id, _) in group {
            cmd.arg(format!("{BEFORE_PREFIX}{id}"));
        }
        match script {
            Before::Batch => cmd.arg(BATCH_TTL),
            Before::Streaming => cmd.arg(STREAMING_TTL).arg(BATCH_TTL),
        };
        for (_, features) in group {
            if let Before::Batch = script {
                cmd.arg(0);
            }
            cmd.arg(features.len());
            for (name, value) in features {
                cmd.arg(name).arg(value.as_wire().as_ref());
            }
        }
        pipe.add_command(cmd);
    }
    pipe
}

/// Sends one pipeline of before-script calls; every call must answer an
/// array (an error reply fails the row).
fn send_before(raw: &mut redis::Connection, pipe: redis::Pipeline) -> BResult<()> {
    let replies: Vec<redis::Value> = pipe.query(raw)?;
    match replies
        .iter()
        .find(|v| !matches!(v, redis::Value::Array(_)))
    {
        None => Ok(()),
        Some(v) => Err(format!("a pre-event-time script answered {v:?}").into()),
    }
}

// ---- reads ----------------------------------------------------------------

/// The demo user's eleven features, as hash fields and as `view.feature`.
fn user_features() -> (Vec<String>, Vec<String>) {
    let registry = Registry::demo();
    let mut names = Vec::new();
    let mut refs = Vec::new();
    for view in registry.views.iter().filter(|v| v.entity == "user") {
        for f in &view.features {
            names.push(f.name.clone());
            refs.push(format!("{}.{}", view.name, f.name));
        }
    }
    (names, refs)
}

/// Makes sure every value the read rows will ask for is within the bound,
/// rewriting the ids it asks for (same features, now) if some are not: a
/// full run reaches these rows a while after loading, and a value left out
/// as stale would time a shorter answer.
fn fresh_enough(ctx: &Ctx, ids: &[String], names: &[String]) -> BResult<()> {
    let mut stale = 0;
    for chunk in ids.chunks(100) {
        let read = ctx
            .store
            .batch_get_features_within(chunk, names, Some(MAX_AGE_MS))?;
        stale += read
            .freshness
            .iter()
            .flatten()
            .filter(|f| **f != Freshness::Fresh)
            .count();
    }
    if stale == 0 {
        return Ok(());
    }
    eprintln!("fs-bench:   {stale} values older than {MAX_AGE_MS} ms: rewriting their users ...");
    let mut distinct: Vec<&String> = ids.iter().collect();
    distinct.sort();
    distinct.dedup();
    let mut rng = StdRng::seed_from_u64(SEED ^ 25);
    for chunk in distinct.chunks(ctx.store.chunk_size()) {
        let batch: Vec<(String, FeatureMap)> = chunk
            .iter()
            .map(|id| ((*id).clone(), synth::batch_features(&mut rng)))
            .collect();
        written(
            "refresh bulk_load",
            ctx.store.bulk_load(&batch, BATCH_TTL)?,
            0,
        )?;
        let streaming: Vec<(String, FeatureMap)> = chunk
            .iter()
            .map(|id| ((*id).clone(), synth::streaming_features(&mut rng, now_ms())))
            .collect();
        written(
            "refresh update_streaming_many",
            ctx.store.update_streaming_many(&streaming, STREAMING_TTL)?,
            0,
        )?;
    }
    Ok(())
}

/// `batch_get_features_within(.., Some(60 s))` of 100 users x 11 features
/// against `batch_get_features` of the same.
pub fn read_max_age(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.batch_iters;
    let ids = read_ids(ctx.streamed, n * 100, 13);
    let (names, _) = user_features();
    fresh_enough(ctx, &ids, &names)?;
    let store = ctx.store;
    let mut left_out = 0usize;
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let read = store.batch_get_features_within(
                &ids[i * 100..(i + 1) * 100],
                &names,
                Some(MAX_AGE_MS),
            )?;
            left_out += read.stale_count();
            Ok(())
        },
        |i| -> BResult<()> {
            let rows = store.batch_get_features(&ids[i * 100..(i + 1) * 100], &names)?;
            if rows.len() != 100 {
                return Err(format!("batch_get_features returned {} rows", rows.len()).into());
            }
            Ok(())
        },
    )?;
    Ok(Row {
        id: "read_max_age",
        operation: format!(
            "`batch_get_features_within`, 100 entities x {} features, `max_age_ms` {MAX_AGE_MS}",
            names.len()
        ),
        unit: "batches",
        ours: Figures::Timed(ours),
        baseline_name: "`batch_get_features` of the same (pipelined HMGET, no bound)".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.3)],
        note: format!(
            "{n} batches of 100 random users each side (the 11 features of the demo's two user \
             views, every one dated by a whole-view write), interleaved in {} rounds; ours adds \
             `TIME` to the pipeline and each view's time and marker (4 fields) to each `HMGET`, \
             then ages and judges every value on Redis's clock; {} values were left out as stale \
             while timed (all fresh when the row began).",
            ctx.sizes.rounds,
            count(left_out as f64)
        ),
    })
}

/// `FeatureStore::vectors(.., Some(60 s))` against `vectors(.., None)`, 100
/// users x 11 typed features.
pub fn read_max_age_vectors(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.batch_iters;
    let ids = read_ids(ctx.streamed, n * 100, 14);
    let (names, refs) = user_features();
    fresh_enough(ctx, &ids, &names)?;
    let resolved: Resolved = Registry::demo().resolve_features(Some("user"), &refs)?;
    let store = ctx.store;
    let mut stale = 0usize;
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let v = store.vectors(&resolved, &ids[i * 100..(i + 1) * 100], Some(MAX_AGE_MS))?;
            stale += v.stale_count;
            Ok(())
        },
        |i| -> BResult<()> {
            let v = store.vectors(&resolved, &ids[i * 100..(i + 1) * 100], None)?;
            if v.values.len() != 100 {
                return Err(format!("vectors returned {} rows", v.values.len()).into());
            }
            Ok(())
        },
    )?;
    Ok(Row {
        id: "read_max_age_vectors",
        operation: format!(
            "`FeatureStore::vectors`, 100 entities x {} typed features, `max_age_ms` {MAX_AGE_MS}",
            refs.len()
        ),
        unit: "batches",
        ours: Figures::Timed(ours),
        baseline_name: "`FeatureStore::vectors` of the same, no bound".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![],
        note: format!(
            "{n} batches of 100 random users each side, interleaved in {} rounds; the bounded \
             read also fetches `TIME` and the views' times and reports every value's age; {} \
             values were served stale while timed. No goal of its own (`read_max_age` carries \
             the issue's).",
            ctx.sizes.rounds,
            count(stale as f64)
        ),
    })
}

// ---- memory ---------------------------------------------------------------

/// A prefix of the store's length that no registry view covers, so a write
/// under it dates every feature by its own time.
const PER_FEATURE_PREFIX: &str = "pf:user:";

/// `MEMORY USAGE` of users `1..=n` rewritten with every feature dated by
/// its own time (`<feature>@t`, as features of no view and partial writes
/// are): the same values, batch features by `bulk_load`, streaming ones by
/// `update_streaming_many`, under `PER_FEATURE_PREFIX` (deleted after).
pub fn per_feature_layout_bytes(
    store: &FeatureStore,
    raw: &mut redis::Connection,
    n: usize,
) -> BResult<Vec<f64>> {
    let registry = Registry::demo();
    let batch_names = registry.feature_names("user", Some(ViewKind::Batch));
    let per_feature = store.with_key_prefix(PER_FEATURE_PREFIX)?;
    let mut sizes = Vec::with_capacity(n);
    for start in (1..=n).step_by(500) {
        let ids: Vec<String> = (start..=(start + 499).min(n)).map(synth::user_id).collect();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(format!("{PREFIX}{id}"));
        }
        let hashes: Vec<Vec<(String, String)>> = pipe.query(raw)?;
        let (mut batch, mut streaming) = (Vec::new(), Vec::new());
        for (id, fields) in ids.iter().zip(hashes) {
            let (mut b, mut s) = (FeatureMap::new(), FeatureMap::new());
            for (name, value) in fields {
                if is_time_field(&name) {
                    continue;
                }
                let side = if batch_names.contains(&name.as_str()) {
                    &mut b
                } else {
                    &mut s
                };
                side.insert(name, FeatureValue::Str(value));
            }
            batch.push((id.clone(), b));
            streaming.push((id.clone(), s));
        }
        written(
            "per-feature bulk_load",
            per_feature.bulk_load(&batch, BATCH_TTL)?,
            0,
        )?;
        written(
            "per-feature update_streaming_many",
            per_feature.update_streaming_many(&streaming, STREAMING_TTL)?,
            0,
        )?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(format!("{PER_FEATURE_PREFIX}{id}"))
                .arg("SAMPLES")
                .arg(0);
        }
        let got: Vec<Option<u64>> = pipe.query(raw)?;
        sizes.extend(got.into_iter().flatten().map(|b| b as f64));
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("DEL")
                .arg(format!("{PER_FEATURE_PREFIX}{id}"))
                .ignore();
        }
        pipe.query::<()>(raw)?;
    }
    Ok(sizes)
}
