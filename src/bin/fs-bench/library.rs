//! The library rows: each `FeatureStore` path against the raw redis-rs
//! commands a hand-written client would send for the same data, on the same
//! Redis, interleaved.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use feature_store::demo::synth;
use feature_store::{FeatureMap, FeatureStore, ManagedRedis};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::measure::{paired, Recorder};
use crate::report::{Check, Figures, RatioOn, Row};
use crate::{BResult, Sizes};

/// The five features a read asks for: three batch, two streaming.
pub const READ_FIELDS: [&str; 5] = [
    "country_iso",
    "risk_segment",
    "tx_count_7d",
    "tx_count_5m",
    "failed_logins_15m",
];
/// The store's prefix (the default) and the baselines' prefixes, all the
/// same length so key sizes (and MEMORY USAGE) compare like for like.
pub const PREFIX: &str = "fs:user:";
pub const RAW_PREFIX: &str = "bl:user:";
pub const PLAIN_PREFIX: &str = "pl:user:";

pub const SEED: u64 = 20_240_605;
pub const BATCH_TTL: u64 = 24 * 3600;
/// Long enough that no streaming field expires during the run.
pub const STREAMING_TTL: u64 = 3600;

/// What the library rows share.
pub struct Ctx<'a> {
    pub redis: &'a ManagedRedis,
    pub store: &'a FeatureStore,
    pub raw: &'a mut redis::Connection,
    pub sizes: &'a Sizes,
    /// Users `u0001..` written by `bulk_load` (and by the baseline under
    /// `RAW_PREFIX`).
    pub loaded: usize,
    /// Users `u0001..` that also carry the five streaming features (11 in
    /// all): the read rows pick among these.
    pub streamed: usize,
    /// Entities per script call in the store's bulk writes (its config).
    pub per_call: usize,
}

pub fn raw_connection(url: &str) -> BResult<redis::Connection> {
    let client = redis::Client::open(url)?;
    let conn = client.get_connection_with_timeout(Duration::from_secs(2))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))?;
    Ok(conn)
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn complete(what: &str, report: feature_store::store::WriteReport) -> BResult<()> {
    match report.failed.first() {
        None => Ok(()),
        Some(f) => Err(format!(
            "{what}: {} rows failed, first {} ({})",
            report.failed.len(),
            f.id,
            f.error
        )
        .into()),
    }
}

/// Runs `ours` and `base` for the same chunk back to back, alternating which
/// goes first, and records each call as `chunk.len()` items.
fn alternate(
    k: usize,
    items: u64,
    ours: &mut Recorder,
    base: &mut Recorder,
    mut run_ours: impl FnMut() -> BResult<()>,
    mut run_base: impl FnMut() -> BResult<()>,
) -> BResult<()> {
    if k.is_multiple_of(2) {
        ours.time(items, &mut run_ours)?;
        base.time(items, &mut run_base)?;
    } else {
        base.time(items, &mut run_base)?;
        ours.time(items, &mut run_ours)?;
    }
    Ok(())
}

// ---- bulk_load ------------------------------------------------------------

/// `bulk_load` of `sizes.bulk_users` synthetic users, one chunk (one
/// pipeline) per call, against a pipeline of plain HSET + EXPIRE per user.
pub fn bulk_load(ctx: &mut Ctx) -> BResult<Row> {
    let chunk = ctx.store.chunk_size();
    let per_call = ctx.per_call;
    // Warm-up: load the scripts, fill the pool, grow the buffers.
    let mut rng = StdRng::seed_from_u64(SEED ^ 1);
    let warm: Vec<(String, FeatureMap)> = (0..chunk)
        .map(|n| (format!("warm{n}"), synth::batch_features(&mut rng)))
        .collect();
    complete("warm-up bulk_load", ctx.store.bulk_load(&warm, BATCH_TTL)?)?;
    raw_bulk(ctx.raw, &warm, BATCH_TTL)?;

    let mut ours = Recorder::default();
    let mut base = Recorder::default();
    let mut users = synth::users(ctx.sizes.bulk_users, SEED);
    let mut k = 0;
    loop {
        let rows: Vec<(String, FeatureMap)> = users.by_ref().take(chunk).collect();
        if rows.is_empty() {
            break;
        }
        let (store, raw) = (ctx.store, &mut *ctx.raw);
        alternate(
            k,
            rows.len() as u64,
            &mut ours,
            &mut base,
            || complete("bulk_load", store.bulk_load(&rows, BATCH_TTL)?),
            || raw_bulk(raw, &rows, BATCH_TTL),
        )?;
        k += 1;
    }
    ctx.loaded = ctx.sizes.bulk_users;
    let (ours, base) = (ours.summary(), base.summary());
    Ok(Row {
        id: "bulk_load",
        operation: format!(
            "`bulk_load`, {} synthetic users (6 batch features), {chunk} per pipeline",
            crate::report::count(ctx.sizes.bulk_users as f64)
        ),
        unit: "users",
        ours: Figures::Timed(ours),
        baseline_name: "raw pipelined HSET + EXPIRE (not atomic)".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::PerSec,
        goal: vec![Check::RatioAtLeast(0.8), Check::PerSecAtLeast(150_000.0)],
        note: format!(
            "one `bulk_load` call per {chunk} users (one round trip of `EVALSHA write_batch_rows`, \
             {per_call} users per script call, atomic per user), alternating with one pipeline of `HSET` + `EXPIRE` for the same rows under `{RAW_PREFIX}`; \
             both encode the same `FeatureMap`s; p50/p99 are per {chunk}-user pipeline, users/s is \
             users over time inside the calls (generating the rows is not timed)."
        ),
    })
}

pub fn raw_bulk(
    raw: &mut redis::Connection,
    rows: &[(String, FeatureMap)],
    ttl: u64,
) -> BResult<()> {
    raw_bulk_under(raw, RAW_PREFIX, rows, ttl)
}

/// [`raw_bulk`] under a prefix of the caller's.
pub fn raw_bulk_under(
    raw: &mut redis::Connection,
    prefix: &str,
    rows: &[(String, FeatureMap)],
    ttl: u64,
) -> BResult<()> {
    let mut pipe = redis::pipe();
    for (id, features) in rows {
        let key = format!("{prefix}{id}");
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        for (name, value) in features {
            hset.arg(name).arg(value.encode());
        }
        pipe.add_command(hset).ignore();
        pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
    }
    pipe.query::<()>(raw)?;
    Ok(())
}

// ---- update_streaming -----------------------------------------------------

/// `update_streaming_many` (5 streaming features per entity, one atomic
/// script call each, `chunk` per pipeline) against HSET + HEXPIRE pipelined.
pub fn update_streaming(ctx: &mut Ctx) -> BResult<Row> {
    let chunk = ctx.store.chunk_size();
    let per_call = ctx.per_call;
    let count = ctx.sizes.streaming_events.min(ctx.loaded);
    let mut rng = StdRng::seed_from_u64(SEED ^ 2);
    let event =
        |rng: &mut StdRng, n: usize| (synth::user_id(n), synth::streaming_features(rng, now_ms()));

    let warm: Vec<(String, FeatureMap)> = (0..chunk)
        .map(|n| {
            (
                format!("warm{n}"),
                synth::streaming_features(&mut rng, now_ms()),
            )
        })
        .collect();
    complete(
        "warm-up update_streaming_many",
        ctx.store.update_streaming_many(&warm, STREAMING_TTL)?,
    )?;
    raw_streaming(ctx.raw, &warm, STREAMING_TTL)?;

    let mut ours = Recorder::default();
    let mut base = Recorder::default();
    let mut next = 1;
    let mut k = 0;
    while next <= count {
        let end = (next + chunk - 1).min(count);
        let events: Vec<(String, FeatureMap)> = (next..=end).map(|n| event(&mut rng, n)).collect();
        next = end + 1;
        let (store, raw) = (ctx.store, &mut *ctx.raw);
        alternate(
            k,
            events.len() as u64,
            &mut ours,
            &mut base,
            || {
                complete(
                    "update_streaming_many",
                    store.update_streaming_many(&events, STREAMING_TTL)?,
                )
            },
            || raw_streaming(raw, &events, STREAMING_TTL),
        )?;
        k += 1;
    }
    ctx.streamed = count;
    Ok(Row {
        id: "update_streaming",
        operation: format!(
            "`update_streaming_many`, 5 streaming features x {} entities, {chunk} per pipeline",
            crate::report::count(count as f64)
        ),
        unit: "entities",
        ours: Figures::Timed(ours.summary()),
        baseline_name: "raw pipelined HSET + HEXPIRE (not atomic)".into(),
        baseline: Figures::Timed(base.summary()),
        ratio_on: RatioOn::PerSec,
        goal: vec![Check::RatioAtLeast(0.7)],
        note: format!(
            "one `update_streaming_many` call per {chunk} entities (one round trip of `EVALSHA \
             write_streaming`, {per_call} entities per script call: HSET + HEXPIRE + key-TTL check, \
             atomic per entity), alternating with \
             one pipeline of `HSET` + `HEXPIRE ... FIELDS 5` per entity for the same events; \
             p50/p99 per pipeline, entities/s over time inside the calls."
        ),
    })
}

fn raw_streaming(
    raw: &mut redis::Connection,
    events: &[(String, FeatureMap)],
    ttl: u64,
) -> BResult<()> {
    let mut pipe = redis::pipe();
    for (id, fields) in events {
        let key = format!("{RAW_PREFIX}{id}");
        let mut hset = redis::cmd("HSET");
        hset.arg(&key);
        let mut hexpire = redis::cmd("HEXPIRE");
        hexpire.arg(&key).arg(ttl).arg("FIELDS").arg(fields.len());
        for (name, value) in fields {
            hset.arg(name).arg(value.encode());
            hexpire.arg(name);
        }
        pipe.add_command(hset).ignore();
        pipe.add_command(hexpire).ignore();
    }
    pipe.query::<()>(raw)?;
    Ok(())
}

// ---- reads ----------------------------------------------------------------

/// The ids the read rows walk: the same seeded sequence for every row.
pub fn read_ids(among: usize, n: usize, salt: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(SEED ^ salt);
    (0..n)
        .map(|_| synth::user_id(rng.gen_range(1..=among.max(1))))
        .collect()
}

fn hmget(key: &str) -> redis::Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key);
    for f in READ_FIELDS {
        cmd.arg(f);
    }
    cmd
}

/// `get_features` against one raw `HMGET` on one redis-rs connection.
pub fn get_features(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.read_iters;
    let ids = read_ids(ctx.streamed, n, 3);
    let (store, raw) = (ctx.store, &mut *ctx.raw);
    // Check once that the reads see what was written.
    let got = store.get_features(&ids[0], &READ_FIELDS)?;
    if got.len() != READ_FIELDS.len() {
        return Err(format!(
            "get_features({}) returned {got:?}: expected 5 features",
            ids[0]
        )
        .into());
    }
    let (ours, base) = paired(
        n / 10,
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            store.get_features(&ids[i], &READ_FIELDS)?;
            Ok(())
        },
        |i| -> BResult<()> {
            let key = format!("{PREFIX}{}", ids[i]);
            let _: Vec<Option<String>> = hmget(&key).query(raw)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "get_features",
        operation: "`get_features`, 5 fields, one entity, one client".into(),
        unit: "ops",
        ours: Figures::Timed(ours),
        baseline_name: "raw `HMGET` on one redis-rs connection".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.15)],
        note: format!(
            "{n} calls each side after {} warm-up calls, in {} alternating rounds, over random users \
             among the {} with 11 features; the baseline builds the key and reads `Vec<Option<String>>`, \
             ours also validates the id and names, checks a connection out of the pool and returns a map.",
            n / 10,
            ctx.sizes.rounds,
            ctx.streamed
        ),
    })
}

/// The same `get_features` figures against `redis-benchmark -c 1` HMGET.
pub fn get_features_vs_redis_benchmark(ctx: &mut Ctx, ours: Figures) -> BResult<Row> {
    let n = ctx.sizes.redis_benchmark_single;
    let rb = redis_benchmark(ctx.redis, 1, n)?;
    Ok(Row {
        id: "get_features_vs_redis_benchmark",
        operation: "`get_features`, 5 fields, one entity, one client (same run as above)".into(),
        unit: "ops",
        ours,
        baseline_name: "`redis-benchmark -c 1` HMGET, same 5 fields".into(),
        baseline: rb,
        ratio_on: RatioOn::P50,
        goal: vec![],
        note: format!(
            "`redis-benchmark -c 1 -n {n} --csv HMGET {PREFIX}u0001 <5 fields>` (C client, one \
             key, no pipelining); its p50 has 1 us resolution."
        ),
    })
}

/// Runs redis-benchmark with one custom HMGET and reads its CSV line.
pub fn redis_benchmark(redis: &ManagedRedis, clients: usize, requests: usize) -> BResult<Figures> {
    let bin = redis.benchmark_path();
    let out = Command::new(&bin)
        .args(["-h", "127.0.0.1", "-p", &redis.port().to_string()])
        .args([
            "-c",
            &clients.to_string(),
            "-n",
            &requests.to_string(),
            "--csv",
        ])
        .arg("HMGET")
        .arg(format!("{PREFIX}u0001"))
        .args(READ_FIELDS)
        .output()
        .map_err(|e| format!("running {}: {e}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!(
            "{} exited with {}: {}{}",
            bin.display(),
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    parse_redis_benchmark_csv(&text)
        .ok_or_else(|| format!("unexpected redis-benchmark output: {text}").into())
}

/// `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"`
fn parse_redis_benchmark_csv(text: &str) -> Option<Figures> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = split_csv(lines.next()?);
    let values: Vec<String> = split_csv(lines.next()?);
    let col = |name: &str| -> Option<f64> {
        let i = header.iter().position(|h| h == name)?;
        values.get(i)?.parse().ok()
    };
    let ms = |x: f64| Duration::from_secs_f64(x / 1000.0);
    Some(Figures::External {
        per_sec: col("rps")?,
        p50: ms(col("p50_latency_ms")?),
        p99: ms(col("p99_latency_ms")?),
    })
}

fn split_csv(line: &str) -> Vec<String> {
    // redis-benchmark quotes every cell; the test name is the only one with
    // spaces and has no commas or quotes of its own.
    line.split("\",\"")
        .map(|c| c.trim().trim_matches('"').to_owned())
        .collect()
}

/// `read_fresh` (one script call) against HMGET + HTTL + TTL, three round trips.
pub fn read_fresh(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.read_iters;
    let ids = read_ids(ctx.streamed, n, 4);
    let (store, raw) = (ctx.store, &mut *ctx.raw);
    let (ours, base) = paired(
        n / 10,
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            store.read_fresh(&ids[i], &READ_FIELDS)?;
            Ok(())
        },
        |i| -> BResult<()> {
            let key = format!("{PREFIX}{}", ids[i]);
            let _: Vec<Option<String>> = hmget(&key).query(raw)?;
            let mut httl = redis::cmd("HTTL");
            httl.arg(&key)
                .arg("FIELDS")
                .arg(READ_FIELDS.len())
                .arg(&READ_FIELDS[..]);
            let _: Vec<i64> = httl.query(raw)?;
            let _: i64 = redis::cmd("TTL").arg(&key).query(raw)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "read_fresh",
        operation: "`read_fresh` (values + field TTLs + key TTL, one script call), 5 fields".into(),
        unit: "ops",
        ours: Figures::Timed(ours),
        baseline_name: "HMGET + HTTL + TTL, three round trips (what the demos do)".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![],
        note: format!(
            "{n} calls each side, interleaved like `get_features`; the issue sets no goal \
             (one round trip instead of three should make the ratio well under 1)."
        ),
    })
}

/// `batch_get_features` of 100 entities x 5 fields against 100 pipelined HMGETs.
pub fn batch_get_features(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.batch_iters;
    let ids = read_ids(ctx.streamed, n * 100, 5);
    let (store, raw) = (ctx.store, &mut *ctx.raw);
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let rows = store.batch_get_features(&ids[i * 100..(i + 1) * 100], &READ_FIELDS)?;
            if rows.len() != 100 {
                return Err(format!("batch_get_features returned {} rows", rows.len()).into());
            }
            Ok(())
        },
        |i| -> BResult<()> {
            let mut pipe = redis::pipe();
            for id in &ids[i * 100..(i + 1) * 100] {
                pipe.add_command(hmget(&format!("{PREFIX}{id}")));
            }
            let _: Vec<Vec<Option<String>>> = pipe.query(raw)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "batch_get_features",
        operation: "`batch_get_features`, 100 entities x 5 fields".into(),
        unit: "batches",
        ours: Figures::Timed(ours),
        baseline_name: "raw pipelined HMGET (100 in one round trip)".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.15)],
        note: format!(
            "{n} batches of 100 random users each side, interleaved; the baseline reads \
             `Vec<Vec<Option<String>>>`, and so does ours (values in the order of the names) after \
             validating the ids and names and checking a connection out of the pool."
        ),
    })
}

// ---- memory ---------------------------------------------------------------

/// `MEMORY USAGE` of entities written by the store (6 batch fields under a
/// key TTL + 5 streaming fields with field TTLs) against the same fields and
/// values written as one plain HSET (no TTLs) under a same-length prefix.
pub fn memory(ctx: &mut Ctx) -> BResult<Row> {
    let n = ctx.sizes.memory_entities.min(ctx.streamed);
    let raw = &mut *ctx.raw;
    let mut ours = Vec::with_capacity(n);
    let mut plain = Vec::with_capacity(n);
    // The baseline rows' copies (`RAW_PREFIX`): the same data written with
    // raw HSET + EXPIRE + HEXPIRE, i.e. the same TTL layout without scripts.
    let mut raw_ttl = Vec::with_capacity(n);
    let mut enc_ours = String::new();
    let mut enc_plain = String::new();
    for start in (1..=n).step_by(500) {
        let ids: Vec<String> = (start..=(start + 499).min(n)).map(synth::user_id).collect();
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HGETALL").arg(format!("{PREFIX}{id}"));
        }
        let hashes: Vec<Vec<(String, String)>> = pipe.query(raw)?;
        let mut pipe = redis::pipe();
        for (id, fields) in ids.iter().zip(&hashes) {
            // The copy holds the features only: what the event times
            // (`@<view>` fields) cost is part of what this row measures.
            let fields: Vec<&(String, String)> = fields
                .iter()
                .filter(|(f, _)| !feature_store::store::event_fields::is_time_field(f))
                .collect();
            if fields.len() != 11 {
                return Err(
                    format!("{PREFIX}{id} has {} features, expected 11", fields.len()).into(),
                );
            }
            let key = format!("{PLAIN_PREFIX}{id}");
            pipe.cmd("DEL").arg(&key).ignore();
            pipe.cmd("HSET").arg(&key).arg(fields).ignore();
        }
        pipe.query::<()>(raw)?;
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(format!("{PREFIX}{id}"))
                .arg("SAMPLES")
                .arg(0);
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(format!("{PLAIN_PREFIX}{id}"))
                .arg("SAMPLES")
                .arg(0);
            pipe.cmd("MEMORY")
                .arg("USAGE")
                .arg(format!("{RAW_PREFIX}{id}"))
                .arg("SAMPLES")
                .arg(0);
        }
        let sizes: Vec<Option<u64>> = pipe.query(raw)?;
        for triple in sizes.chunks(3) {
            let [Some(a), Some(b), c] = [triple[0], triple[1], triple[2]] else {
                return Err("memory: MEMORY USAGE found no key".into());
            };
            ours.push(a as f64);
            plain.push(b as f64);
            if let Some(c) = c {
                raw_ttl.push(c as f64);
            }
        }
        if enc_ours.is_empty() {
            enc_ours = object_encoding(raw, &format!("{PREFIX}{}", ids[0]))?;
            enc_plain = object_encoding(raw, &format!("{PLAIN_PREFIX}{}", ids[0]))?;
        }
    }
    let figures = |mut v: Vec<f64>| -> Figures {
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Figures::Bytes {
            p50: at(0.5),
            p99: at(0.99),
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    };
    if ours.is_empty() {
        return Err("memory: no entities to measure".into());
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (o, p) = (mean(&ours), mean(&plain));
    let same_layout = if raw_ttl.is_empty() {
        String::new()
    } else {
        let r = mean(&raw_ttl);
        format!(
            " Of the {:.0} B ours takes over the plain HSET, {:.0} B is the per-field-TTL \
             encoding, which the same data written with raw HSET + EXPIRE + HEXPIRE (no script, \
             no event times, `{RAW_PREFIX}`) takes too ({r:.1} B on average), and {:.0} B the \
             event times, one `@<view>` field per view written whole (ours against that \
             same-TTL layout: {:.2}x).",
            o - p,
            r - p,
            o - r,
            o / r
        )
    };
    // What the layout would cost if every feature carried its own time.
    let per_feature = crate::event_time::per_feature_layout_bytes(ctx.store, raw, n)?;
    let per_feature = if per_feature.is_empty() {
        String::new()
    } else {
        let f = mean(&per_feature);
        format!(
            " Dated feature by feature instead (`<feature>@t` beside each value, as features of \
             no view and partial writes are; the same values rewritten under a prefix no view \
             covers, then deleted), an entity takes {f:.1} B ({:.2}x the plain HSET).",
            f / p
        )
    };
    // Against the layout before event times (the same data and TTLs,
    // written raw), when the baseline rows left that copy; else against
    // the plain hash, with no goal (it also counts the TTLs' cost).
    let (baseline_name, baseline, goal) = if raw_ttl.is_empty() {
        (
            "the same 11 feature fields and values as one plain HSET".to_owned(),
            figures(plain),
            vec![],
        )
    } else {
        (
            format!(
                "the same 11 features in the layout before event times (raw HSET + EXPIRE + \
                 HEXPIRE: the same TTLs, no event time; plain HSET, no TTLs: {p:.1} B)"
            ),
            figures(raw_ttl),
            vec![Check::RatioAtMost(1.35)],
        )
    };
    Ok(Row {
        id: "memory",
        operation: "Redis memory per entity, 11 features (`MEMORY USAGE`)".into(),
        unit: "bytes",
        ours: figures(ours),
        baseline_name,
        baseline,
        ratio_on: RatioOn::Bytes,
        goal,
        note: format!(
            "`MEMORY USAGE <key> SAMPLES 0` of {n} entities written by `bulk_load` + \
             `update_streaming_many` (key TTL, 5 field TTLs, an event time per view; encoding \
             `{enc_ours}`) and of a copy of each (same feature names and values, `HSET` only, no \
             TTLs, no event times; encoding `{enc_plain}`) under a \
             prefix of the same length; ratio of means.{same_layout}{per_feature}"
        ),
    })
}

fn object_encoding(raw: &mut redis::Connection, key: &str) -> BResult<String> {
    Ok(redis::cmd("OBJECT").arg("ENCODING").arg(key).query(raw)?)
}

/// `redis_version` from INFO server.
pub fn redis_version(raw: &mut redis::Connection) -> BResult<String> {
    let info: String = redis::cmd("INFO").arg("server").query(raw)?;
    Ok(info
        .lines()
        .find_map(|l| {
            l.strip_prefix("redis_version:")
                .or_else(|| l.strip_prefix("valkey_version:"))
        })
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| "unknown".into()))
}

/// Redis's CPU time so far (user + system, all its threads), from `INFO cpu`.
pub fn redis_cpu_seconds(raw: &mut redis::Connection) -> BResult<f64> {
    let info: String = redis::cmd("INFO").arg("cpu").query(raw)?;
    let field = |name: &str| -> BResult<f64> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("no {name} in INFO cpu").into())
    };
    Ok(field("used_cpu_sys")? + field("used_cpu_user")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_redis_benchmark_csv() {
        let text = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\
                    \"HMGET fs:user:u0001 a b c d e\",\"13764.62\",\"0.067\",\"0.016\",\"0.071\",\"0.119\",\"0.183\",\"5.159\"\n";
        let Some(Figures::External { p50, p99, per_sec }) = parse_redis_benchmark_csv(text) else {
            panic!("no parse");
        };
        assert!((per_sec - 13764.62).abs() < 1e-6);
        assert_eq!(p50, Duration::from_secs_f64(0.071 / 1000.0));
        assert_eq!(p99, Duration::from_secs_f64(0.183 / 1000.0));
    }
}
