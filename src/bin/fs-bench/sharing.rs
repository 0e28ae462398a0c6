//! Loading beside serving: what a load does to the reads of live traffic,
//! and how much Redis time the write scripts cost per row.
//!
//! One fresh Redis and one `fs-server`. Two probes run throughout each
//! phase: a model-server-like client sending `POST /read` on one keep-alive
//! connection about 500 times a second, and `PING` on a connection of its
//! own every few milliseconds. The phases, in one run:
//!
//! 1. idle: nothing else runs (again before each later loading phase; the
//!    idle figures pool those windows);
//! 2. a plain builder (synthesis + pipelined HSET + EXPIRE on one
//!    connection, not atomic) loads the users;
//! 3. `fs-loader --count N` with its default flags loads the same users;
//! 4. the plain builder again, onto fresh keys, held to the rate step 3
//!    reached, 10 users per round trip: the floor a load at that pace sets
//!    on this machine, whatever its writes cost;
//! 5. `fs-loader --count N --full-speed`.
//!
//! The script rows read `INFO commandstats` around a phase: the script's
//! own time per row (`EVALSHA`) against the time of the commands it runs
//! inside (counted by Redis under their own names), which is what the same
//! writes cost without a script.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use feature_store::commandstats;
use feature_store::demo::synth;
use feature_store::{FeatureStore, ManagedRedis, StoreConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::http::{self, HttpClient, Server};
use crate::library::{self, Ctx};
use crate::loader::{self, SEED};
use crate::measure::{Recorder, Summary};
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

/// Users the `/read` probe picks among (written before the idle phase).
const READ_USERS: usize = 10_000;
/// Pause between two probe reads: about 500 reads/s, a steady model
/// server rather than a client that would itself saturate a core.
const READ_GAP: Duration = Duration::from_millis(2);
const PING_GAP: Duration = Duration::from_millis(5);
/// The held builder's keys: fresh, beside the other phases' keys.
const HELD_PREFIX: &str = "hb:user:";
/// Users per round trip of the held builder: the paced loader's pipeline.
const PACED_PIPELINE: usize = 10;
/// Streaming events for the `write_streaming` cost row.
const STREAMING_EVENTS: usize = 100_000;

/// The commands a write script runs inside, by `INFO commandstats` name.
const INNER_COMMANDS: [&str; 6] = ["hset", "hdel", "expire", "hexpire", "hsetex", "hpexpire"];

/// Latencies the probes saw during one phase.
struct Seen {
    read: Summary,
    ping: Summary,
    /// Redis CPU seconds (`INFO cpu`) the phase took, probes included.
    redis_cpu: f64,
}

/// The probes' samples of the idle windows, pooled: one before each loading
/// phase, so the idle figures cover the whole run (this machine's quiet and
/// noisy minutes alike) as the loading phases do, not only its first
/// seconds.
#[derive(Default)]
struct Idle {
    pooled: Probed,
    windows: u32,
}

impl Idle {
    fn window(
        &mut self,
        server: &Server,
        url: &str,
        ids: &Arc<Vec<String>>,
        for_: Duration,
    ) -> BResult<()> {
        eprintln!("fs-bench:   idle, {for_:?} ...");
        let ((), probed) = probe_during(server, url, ids, || {
            std::thread::sleep(for_);
            Ok(())
        })?;
        self.pooled.merge(&probed);
        self.windows += 1;
        Ok(())
    }
}

pub fn rows(
    ctx: &Ctx,
    server_bin: &Path,
    loader_bin: &Path,
    paced_args: &[String],
    redis_args: &[String],
    out: &mut Vec<Row>,
) -> BResult<()> {
    let users = ctx.sizes.bulk_users;
    let quick = users < 100_000;
    let idle_for = if quick {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(3)
    };
    eprintln!("fs-bench: loading beside serving: a fresh Redis and fs-server ...");
    let redis_args: Vec<&str> = redis_args.iter().map(String::as_str).collect();
    let redis = ManagedRedis::start_with_args(&redis_args)?;
    let url = redis.url();
    let store = FeatureStore::open(&url, StoreConfig::default())?
        .with_registry(&feature_store::registry::Registry::demo());
    let readable: Vec<_> = synth::users(READ_USERS.min(users), SEED).collect();
    for chunk in readable.chunks(loader::CHUNK) {
        let report = store.bulk_load(chunk, library::BATCH_TTL)?;
        if !report.failed.is_empty() {
            return Err(format!("preloading: {} rows failed", report.failed.len()).into());
        }
    }
    let ids: Arc<Vec<String>> = Arc::new(readable.into_iter().map(|(id, _)| id).collect());
    let server = Server::start(server_bin, &url)?;
    let mut raw = library::raw_connection(&url)?;

    let mut idle = Idle::default();
    idle.window(&server, &url, &ids, idle_for)?;
    eprintln!("fs-bench:   a plain builder, {users} users ...");
    let (builder_rate, builder) = during(&server, &url, &ids, || loader::build_plain(&url, users))?;
    idle.window(&server, &url, &ids, idle_for)?;
    eprintln!("fs-bench:   fs-loader --count {users} (default flags) ...");
    reset_stats(&mut raw)?;
    let (paced_rate, paced) = during(&server, &url, &ids, || {
        let flags: Vec<&str> = paced_args.iter().map(String::as_str).collect();
        loader::run_loader(loader_bin, &url, users, &flags)
    })?;
    let batch_cost = script_cost(&mut raw, users)?;
    idle.window(&server, &url, &ids, idle_for)?;
    eprintln!(
        "fs-bench:   a plain builder held to {paced_rate:.0} users/s, {PACED_PIPELINE} per pipeline ..."
    );
    let (held_rate, held) = during(&server, &url, &ids, || {
        loader::build_plain_paced(&url, HELD_PREFIX, users, paced_rate, PACED_PIPELINE)
    })?;
    let full_flag = "--full-speed";
    let full = if loader::supports(loader_bin, full_flag) {
        idle.window(&server, &url, &ids, idle_for)?;
        eprintln!("fs-bench:   fs-loader --count {users} {full_flag} ...");
        Some(during(&server, &url, &ids, || {
            loader::run_loader(loader_bin, &url, users, &[full_flag])
        })?)
    } else {
        None
    };
    let events = if quick { 10_000 } else { STREAMING_EVENTS };
    eprintln!("fs-bench:   write_streaming, {events} events ...");
    reset_stats(&mut raw)?;
    stream_events(&store, events)?;
    let streaming_cost = script_cost(&mut raw, events)?;
    drop(server);
    let idle_windows = idle.windows;
    let idle = idle.pooled.seen();

    let n = crate::report::count(users as f64);
    let mut probes = format!(
        "The probes: `POST /read` (5 fields) on one keep-alive connection every {} ms among \
         {} preloaded users, and `PING` on a connection of its own every {} ms, through each \
         phase. The idle figures pool {idle_windows} idle windows of {} s, one before each \
         loading phase.",
        READ_GAP.as_millis(),
        crate::report::count(READ_USERS.min(users) as f64),
        PING_GAP.as_millis(),
        idle_for.as_secs_f64()
    );
    if !redis_args.is_empty() {
        probes.push_str(&format!(
            " redis-server started with `{}`.",
            redis_args.join(" ")
        ));
    }
    if !paced_args.is_empty() {
        probes.push_str(&format!(
            " The paced loader given `{}`.",
            paced_args.join(" ")
        ));
    }
    crate::step(
        "/read during fs-loader",
        out,
        Ok(Row {
            id: "read_during_load",
            operation: format!(
                "HTTP `POST /read` while `fs-loader --count {n}` runs (default flags)"
            ),
            unit: "req",
            ours: Figures::Timed(paced.read),
            baseline_name: "the same reads, idle".into(),
            baseline: Figures::Timed(idle.read),
            ratio_on: RatioOn::P50,
            goal: vec![Check::RatioAtMost(2.0), Check::P99RatioAtMost(2.0)],
            note: format!(
                "{probes} The goal: p50 and p99 within 2x of the idle figures while the loader \
                 paces itself (its default latency budget)."
            ),
        }),
    )?;
    crate::step(
        "PING during fs-loader",
        out,
        Ok(Row {
            id: "ping_during_load",
            operation: format!("Redis `PING` while `fs-loader --count {n}` runs (default flags)"),
            unit: "req",
            ours: Figures::Timed(paced.ping),
            baseline_name: "the same PINGs, idle".into(),
            baseline: Figures::Timed(idle.ping),
            ratio_on: RatioOn::P50,
            goal: vec![Check::P50AtMost(Duration::from_millis(1))],
            note: format!("{probes} The goal: PING p50 under 1 ms during the load."),
        }),
    )?;
    crate::step(
        "fs-loader beside reads",
        out,
        Ok(Row {
            id: "paced_loader",
            operation: format!("`fs-loader --count {n}` (default flags) while the probes read"),
            unit: "users",
            ours: Figures::Rate {
                per_sec: paced_rate,
            },
            baseline_name: "a plain builder (pipelined HSET + EXPIRE, not atomic) beside the \
                            same probes"
                .into(),
            baseline: Figures::Rate {
                per_sec: builder_rate,
            },
            ratio_on: RatioOn::PerSec,
            goal: vec![Check::PerSecAtLeast(45_000.0)],
            note: format!(
                "wall time of the whole `fs-loader` process while the probes ran; the builder \
                 loaded the same users (under its own prefix) just before. {probes}"
            ),
        }),
    )?;
    crate::step(
        "/read during a plain builder",
        out,
        Ok(Row {
            id: "read_during_builder",
            operation: format!("HTTP `POST /read` while a plain builder loads {n} users"),
            unit: "req",
            ours: Figures::Timed(builder.read),
            baseline_name: "the same reads, idle".into(),
            baseline: Figures::Timed(idle.read),
            ratio_on: RatioOn::P50,
            goal: vec![],
            note: format!(
                "context for `read_during_load`: what a non-atomic load at its own full speed \
                 does to the same reads (PING p50 {}, p99 {}). {probes}",
                crate::report::ms(builder.ping.p50),
                crate::report::ms(builder.ping.p99)
            ),
        }),
    )?;
    crate::step(
        "/read during a held builder",
        out,
        Ok(Row {
            id: "read_during_held_builder",
            operation: format!(
                "HTTP `POST /read` while a plain builder loads {n} users at the paced loader's rate"
            ),
            unit: "req",
            ours: Figures::Timed(held.read),
            baseline_name: "the same reads, idle".into(),
            baseline: Figures::Timed(idle.read),
            ratio_on: RatioOn::P50,
            goal: vec![],
            note: format!(
                "the floor for `read_during_load`: pipelined HSET + EXPIRE (no script, no \
                 event time, half the Redis time per user) held to the rate the paced loader \
                 reached ({} users/s asked, {} reached), {PACED_PIPELINE} users per round trip \
                 as the paced loader sends them, onto fresh keys: what a load at that pace does \
                 to the same reads on this machine when its writes cost Redis as little as they \
                 can (PING p50 {}, p99 {}). {probes}",
                crate::report::count(paced_rate),
                crate::report::count(held_rate),
                crate::report::ms(held.ping.p50),
                crate::report::ms(held.ping.p99)
            ),
        }),
    )?;
    if let Some((full_rate, full)) = full {
        crate::step(
            "/read during fs-loader --full-speed",
            out,
            Ok(Row {
                id: "read_during_full_speed",
                operation: format!(
                    "HTTP `POST /read` while `fs-loader --count {n} --full-speed` runs"
                ),
                unit: "req",
                ours: Figures::Timed(full.read),
                baseline_name: "the same reads, idle".into(),
                baseline: Figures::Timed(idle.read),
                ratio_on: RatioOn::P50,
                goal: vec![],
                note: format!(
                    "what the pacing saves: the loader unpaced ({} users/s) beside the same \
                     probes (PING p50 {}, p99 {}). {probes}",
                    crate::report::count(full_rate),
                    crate::report::ms(full.ping.p50),
                    crate::report::ms(full.ping.p99)
                ),
            }),
        )?;
    }
    let per_user = |cpu: f64| cpu * 1e6 / users.max(1) as f64;
    crate::step(
        "Redis CPU per row",
        out,
        Ok(Row {
            id: "redis_cpu_per_row",
            operation: format!("Redis CPU per user, `fs-loader --count {n}` (default flags)"),
            unit: "user",
            ours: Figures::RedisTime {
                usec: per_user(paced.redis_cpu),
            },
            baseline_name: "the plain builder (pipelined HSET + EXPIRE, two commands per user)"
                .into(),
            baseline: Figures::RedisTime {
                usec: per_user(builder.redis_cpu),
            },
            ratio_on: RatioOn::P50,
            goal: vec![],
            note: format!(
                "`used_cpu_user` + `used_cpu_sys` from `INFO cpu` over each phase, over the \
                 users it loaded (the probes' reads included, on both sides). Unlike the script \
                 rows below, this counts what `INFO commandstats` leaves out: reading, parsing \
                 and answering each command, which one `EVALSHA` per {} rows pays once and a \
                 plain pipeline pays for every `HSET` and `EXPIRE`.",
                ctx.per_call
            ),
        }),
    )?;
    for (id, script, cost, what) in [
        (
            "script_cost_batch",
            "write_batch_rows",
            batch_cost,
            format!("the `fs-loader --count {n}` phase above (synthetic users, 6 batch features)"),
        ),
        (
            "script_cost_streaming",
            "write_streaming",
            streaming_cost,
            format!(
                "{} `update_streaming_many` events of 5 streaming features each",
                crate::report::count(events as f64)
            ),
        ),
    ] {
        crate::step(
            id,
            out,
            Ok(Row {
                id,
                operation: format!("Redis time per row inside `{script}`"),
                unit: "row",
                ours: Figures::RedisTime { usec: cost.script },
                baseline_name: format!(
                    "the commands it runs inside ({}), their own time",
                    cost.inner_names.join(" + ")
                ),
                baseline: Figures::RedisTime { usec: cost.inner },
                ratio_on: RatioOn::P50,
                goal: vec![Check::RatioAtMost(1.5)],
                note: format!(
                    "`INFO commandstats` reset before and read after {what}: `evalsha` usec over \
                     rows, against the usec Redis counts for the writing commands the script ran \
                     (the same writes without a script). {:.0} us per script call. Since event \
                     time the script also reads each row's stored times (`HMGET` of the view's \
                     time and marker, and of own times where a write covered part of a view) \
                     before it writes: that read is in the script's time and left out of the \
                     baseline, which stays the raw writes alone; `HMGET`'s own time was {:.2} us \
                     per row.{}",
                    cost.per_call,
                    cost.reads,
                    if cost.read_fresh_calls > 0 {
                        format!(
                            " The `/read` probe's {} `read_fresh` calls (counted by their `HTTL`) \
                             are in the `evalsha` and `HMGET` figures too.",
                            crate::report::count(cost.read_fresh_calls as f64)
                        )
                    } else {
                        String::new()
                    }
                ),
            }),
        )?;
    }
    Ok(())
}

/// Runs `work` while the two probes run; returns its result and what the
/// probes saw.
/// The probes' samples over one phase.
#[derive(Default)]
struct Probed {
    read: Recorder,
    ping: Recorder,
    redis_cpu: f64,
}

impl Probed {
    fn merge(&mut self, other: &Probed) {
        self.read.merge(&other.read);
        self.ping.merge(&other.ping);
        self.redis_cpu += other.redis_cpu;
    }

    fn seen(&self) -> Seen {
        Seen {
            read: self.read.summary(),
            ping: self.ping.summary(),
            redis_cpu: self.redis_cpu,
        }
    }
}

/// Runs `work` with the probes going, and summarizes what they saw.
fn during<T>(
    server: &Server,
    url: &str,
    ids: &Arc<Vec<String>>,
    work: impl FnOnce() -> BResult<T>,
) -> BResult<(T, Seen)> {
    let (result, probed) = probe_during(server, url, ids, work)?;
    Ok((result, probed.seen()))
}

fn probe_during<T>(
    server: &Server,
    url: &str,
    ids: &Arc<Vec<String>>,
    work: impl FnOnce() -> BResult<T>,
) -> BResult<(T, Probed)> {
    let mut raw = library::raw_connection(url)?;
    let cpu_before = library::redis_cpu_seconds(&mut raw)?;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = spawn_reader(server.addr, ids.clone(), stop.clone());
    let pinger = spawn_pinger(url.to_owned(), stop.clone());
    let result = work();
    stop.store(true, Relaxed);
    let read = join(reader)?;
    let ping = join(pinger)?;
    let redis_cpu = library::redis_cpu_seconds(&mut raw)? - cpu_before;
    Ok((
        result?,
        Probed {
            read,
            ping,
            redis_cpu,
        },
    ))
}

fn join(h: JoinHandle<BResult<Recorder>>) -> BResult<Recorder> {
    h.join().map_err(|_| "a probe thread panicked")?
}

fn spawn_reader(
    addr: SocketAddr,
    ids: Arc<Vec<String>>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<BResult<Recorder>> {
    std::thread::spawn(move || {
        let mut client = HttpClient::connect(addr)?;
        let mut rng = StdRng::seed_from_u64(SEED ^ 11);
        let mut rec = Recorder::default();
        while !stop.load(Relaxed) {
            let id = &ids[rng.gen_range(0..ids.len())];
            let body = http::read_body(id);
            let started = Instant::now();
            let (status, reply) = client.post("/read", &body)?;
            rec.record(started.elapsed(), 1);
            http::check_ok("POST /read", status, &reply)?;
            std::thread::sleep(READ_GAP);
        }
        Ok(rec)
    })
}

fn spawn_pinger(url: String, stop: Arc<AtomicBool>) -> JoinHandle<BResult<Recorder>> {
    std::thread::spawn(move || {
        let mut conn = library::raw_connection(&url)?;
        let mut rec = Recorder::default();
        while !stop.load(Relaxed) {
            let started = Instant::now();
            redis::cmd("PING").query::<()>(&mut conn)?;
            rec.record(started.elapsed(), 1);
            std::thread::sleep(PING_GAP);
        }
        Ok(rec)
    })
}

fn stream_events(store: &FeatureStore, events: usize) -> BResult<()> {
    let mut rng = StdRng::seed_from_u64(SEED ^ 12);
    let chunk = store.chunk_size();
    let mut next = 1;
    while next <= events {
        let end = (next + chunk - 1).min(events);
        let batch: Vec<_> = (next..=end)
            .map(|n| {
                let now = library::now_ms();
                (synth::user_id(n), synth::streaming_features(&mut rng, now))
            })
            .collect();
        let report = store.update_streaming_many(&batch, library::STREAMING_TTL)?;
        if !report.failed.is_empty() {
            return Err(format!("streaming: {} events failed", report.failed.len()).into());
        }
        next = end + 1;
    }
    Ok(())
}

/// Redis time per row of a phase's script calls, and of the commands they
/// ran inside.
#[derive(Debug, Clone)]
struct ScriptCost {
    script: f64,
    inner: f64,
    per_call: f64,
    inner_names: Vec<String>,
    /// `HMGET` usec per row: the stored event times the scripts read
    /// before writing (and any `read_fresh` call's values).
    reads: f64,
    /// `read_fresh` calls in the phase (the `/read` probe's), counted by
    /// their `HTTL`, which no write script runs.
    read_fresh_calls: u64,
}

fn reset_stats(raw: &mut redis::Connection) -> BResult<()> {
    redis::cmd("CONFIG").arg("RESETSTAT").query::<()>(raw)?;
    Ok(())
}

fn script_cost(raw: &mut redis::Connection, rows: usize) -> BResult<ScriptCost> {
    let info: String = redis::cmd("INFO").arg("commandstats").query(raw)?;
    let stats = commandstats::parse(&info);
    let script = stats
        .get("evalsha")
        .copied()
        .ok_or("no evalsha in INFO commandstats")?;
    let (calls, usec) = (script.calls, script.usec);
    let mut inner = 0;
    let mut inner_names = Vec::new();
    for name in INNER_COMMANDS {
        if let Some(stat) = stats.get(name) {
            inner += stat.usec;
            // A probe or two (the loader's capability check) is not
            // something the script runs.
            if stat.calls as f64 >= rows as f64 / 100.0 {
                inner_names.push(name.to_uppercase());
            }
        }
    }
    let stat = |name: &str| stats.get(name).copied().unwrap_or_default();
    let rows = rows.max(1) as f64;
    Ok(ScriptCost {
        script: usec as f64 / rows,
        inner: inner as f64 / rows,
        per_call: usec as f64 / calls.max(1) as f64,
        inner_names,
        reads: stat("hmget").usec as f64 / rows,
        read_fresh_calls: stat("httl").calls,
    })
}
