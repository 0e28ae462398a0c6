//! The fault suite: the real `fs-server` and `fs-loader` against a Redis the
//! test kills, restarts (with and without persistence), flushes the scripts
//! of and pauses, under traffic.
//!
//! After each fault: the server is up and never panicked, every failed
//! request was a 503 `{"error": "redis unavailable: ..."}` answered within
//! the configured timeouts, the server recovered by itself (no restart), every key under
//! the prefix still has a key TTL and every streaming field a field TTL, and
//! the loader's accounting is exact. Each test prints one line of the fault
//! table in docs/operating.md (`cargo test --test faults -- --nocapture`).

#[path = "../integration/common.rs"]
mod common;
mod harness;

use std::time::{Duration, Instant};

use harness::*;

/// The server's `--redis-timeout-ms` in every fault test.
const REDIS_TIMEOUT_MS: u64 = 500;

/// The longest a failing request may take. The server uses the Redis
/// timeout for connect and pool checkout and at least 2 s for a command's
/// I/O (a long pipeline is one command), and after a transport failure
/// retries once on a live connection (a pooled one is PINGed first, which
/// can wait one more I/O timeout on a stalled Redis): two I/O timeouts and
/// a checkout, plus slack for a loaded 2-core machine.
fn failure_bound() -> Duration {
    let timeout = Duration::from_millis(REDIS_TIMEOUT_MS);
    2 * timeout.max(Duration::from_secs(2)) + timeout + Duration::from_secs(1)
}

/// How long Redis stays dead or paused: longer than every timeout above.
const OUTAGE: Duration = Duration::from_millis(3000);

/// `--threads` in every fault test but the pool one.
const THREADS: &str = "4";

fn server_flags<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let threads = if extra.contains(&"--threads") {
        None
    } else {
        Some(THREADS)
    };
    let mut flags = vec!["--redis-timeout-ms", "500"];
    if let Some(t) = threads {
        flags.extend(["--threads", t]);
    }
    flags.extend(["--refresh-ms", "200", "--streaming-ttl-seconds", "120"]);
    flags.extend_from_slice(extra);
    flags
}

/// The worker writing 10 entities every 20 ms, on 200 seeded users.
const WORKER: &[&str] = &[
    "--seed-demo",
    "--seed-users",
    "200",
    "--tick-ms",
    "20",
    "--users-per-tick",
    "10",
];

fn streaming_writes(server: &Server) -> u64 {
    server.get("/state").body()["stats"]["streaming_writes_total"]
        .as_u64()
        .unwrap_or(0)
}

fn persistence(persistent: bool) -> &'static str {
    if persistent {
        "AOF on"
    } else {
        "no persistence"
    }
}

// ---------------------------------------------------------------- kill

fn kill_during_reads(persistent: bool) {
    let _one_at_a_time = serial();
    let mut redis = Redis::start(persistent);
    let mut server = Server::start(&redis.url(), &server_flags(&[]));
    assert!(server.post("/bulk-load", "count=200").ok());
    let traffic = Traffic::start(server.addr, 4, READS);
    std::thread::sleep(Duration::from_millis(300)); // some traffic before the fault

    redis.kill();
    std::thread::sleep(OUTAGE);
    let restarting = Instant::now();
    redis.restart();
    let restart = restarting.elapsed();
    let recovered = time_to_recover(&server, restarting);
    std::thread::sleep(Duration::from_millis(200)); // some traffic after it
    let samples = traffic.finish();

    let what = format!("redis killed during reads, {}", persistence(persistent));
    let seen = check_failures(&what, &samples, failure_bound());
    assert!(
        samples.iter().any(|s| !s.reply.ok()),
        "{what}: no request saw the outage: {seen}"
    );
    server.assert_alive_without_panic(&what);
    let read = server.post("/read", "user=u0001&field=country_iso");
    assert!(read.ok(), "{what}: {read:?}");
    // With the AOF the data is back; without it, Redis came back empty.
    let expected = if persistent { 1 } else { 0 };
    assert_eq!(read.body()["returned_count"], expected, "{what}: {read:?}");
    check_invariants(&mut redis.conn(), &what);
    report(
        &what,
        &format!("{seen}; Redis up again in {} ms", restart.as_millis()),
        recovered,
    );
}

#[test]
fn redis_killed_during_reads_without_persistence_fails_fast_and_recovers() {
    kill_during_reads(false);
}

#[test]
fn redis_killed_during_reads_with_aof_fails_fast_and_recovers_with_the_data() {
    kill_during_reads(true);
}

fn kill_during_streaming_writes(persistent: bool) {
    let _one_at_a_time = serial();
    let mut redis = Redis::start(persistent);
    let mut server = Server::start(&redis.url(), &server_flags(WORKER));
    wait_until("the worker writes", Duration::from_secs(10), || {
        streaming_writes(&server) > 50
    });
    let traffic = Traffic::start(server.addr, 2, READS);

    redis.kill();
    std::thread::sleep(OUTAGE);
    let restarting = Instant::now();
    redis.restart();
    let restart = restarting.elapsed();
    let recovered = time_to_recover(&server, restarting);
    if !persistent {
        // Redis came back empty: give the worker entities again.
        assert!(server.post("/bulk-load", "count=200").ok());
    }
    let before = streaming_writes(&server);
    wait_until(
        "the worker writes again, without a restart",
        Duration::from_secs(10),
        || streaming_writes(&server) > before + 50,
    );
    let samples = traffic.finish();

    let what = format!(
        "redis killed during streaming writes, {}",
        persistence(persistent)
    );
    let seen = check_failures(&what, &samples, failure_bound());
    server.assert_alive_without_panic(&what);
    let state = server.get("/state");
    assert_eq!(state.body()["worker"]["running"], true, "{what}: {state:?}");
    let keys = check_invariants(&mut redis.conn(), &what);
    assert!(keys >= 200, "{what}: {keys} keys");
    report(
        &what,
        &format!("{seen}; Redis up again in {} ms", restart.as_millis()),
        recovered,
    );
}

#[test]
fn redis_killed_during_streaming_writes_without_persistence_leaves_no_field_without_ttl() {
    kill_during_streaming_writes(false);
}

#[test]
fn redis_killed_during_streaming_writes_with_aof_leaves_no_field_without_ttl() {
    kill_during_streaming_writes(true);
}

/// Redis restarted while no request is running (a quick failover, a
/// restart at night): the pool still holds connections to the old process,
/// and the first requests afterwards must not fail on them.
#[test]
fn redis_restarted_while_the_server_is_idle_fails_no_request_after() {
    let _one_at_a_time = serial();
    let mut redis = Redis::start(true);
    let mut server = Server::start(&redis.url(), &server_flags(&[]));
    assert!(server.post("/bulk-load", "count=20").ok());
    // Concurrent reads leave several connections idle in the pool.
    let warm = Traffic::start(server.addr, 4, READS);
    std::thread::sleep(Duration::from_millis(300));
    assert!(warm.finish().iter().all(|s| s.reply.ok()));

    redis.kill();
    let restarting = Instant::now();
    redis.restart();
    let restart = restarting.elapsed();
    let replies: Vec<Reply> = (0..8)
        .map(|i| {
            let (path, body) = READS[i % READS.len()];
            server.post(path, body)
        })
        .collect();
    let recovered = time_to_recover(&server, restarting);

    let what = "redis restarted while the server is idle, AOF on";
    server.assert_alive_without_panic(what);
    let failed: Vec<_> = replies.iter().filter(|r| !r.ok()).collect();
    assert!(
        failed.is_empty(),
        "{what}: Redis was back, yet {} of the {} requests after failed, first {:?}",
        failed.len(),
        replies.len(),
        failed.first()
    );
    check_invariants(&mut redis.conn(), what);
    report(
        what,
        &format!(
            "the 8 requests after: all 200; Redis up again in {} ms",
            restart.as_millis()
        ),
        recovered,
    );
}

/// Redis restarted on a large AOF answers `LOADING` until the data is back
/// in memory: requests meanwhile are an outage to wait out (503), not a
/// server error (500), and the first one after the load gets the data.
#[test]
fn redis_loading_its_aof_after_a_restart_answers_503_then_the_data() {
    let _one_at_a_time = serial();
    let mut redis = Redis::start(true);
    let mut server = Server::start(&redis.url(), &server_flags(&[]));
    assert!(server.post("/bulk-load", "count=20").ok());
    // A million small keys outside the prefix (DEBUG POPULATE), written
    // into the AOF's base by a rewrite, make the restart load for a while.
    let mut conn = redis.conn();
    redis::cmd("DEBUG")
        .arg("POPULATE")
        .arg(1_000_000)
        .arg("pad:")
        .arg(16)
        .query::<()>(&mut conn)
        .expect("DEBUG POPULATE");
    redis::cmd("BGREWRITEAOF")
        .query::<()>(&mut conn)
        .expect("BGREWRITEAOF");
    wait_until("the AOF rewrite", Duration::from_secs(60), || {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query(&mut conn)
            .expect("INFO");
        info.contains("aof_rewrite_in_progress:0") && info.contains("aof_rewrite_scheduled:0")
    });
    drop(conn);

    let restarting = Instant::now();
    redis.restart_nowait();
    let mut during = Vec::new();
    while !ping(&redis.url()) {
        let started = Instant::now();
        let reply = server.post("/read", "user=u0001&field=country_iso");
        during.push(Sample {
            path: "/read",
            started,
            reply,
        });
    }
    let loaded = restarting.elapsed();
    let recovered = time_to_recover(&server, restarting);

    let what = "redis loading its AOF after a restart";
    let seen = check_failures(what, &during, failure_bound());
    assert!(
        during.iter().any(|s| s.reply.status() == Some(503)),
        "{what}: no request ran while Redis was loading ({seen}): load more keys"
    );
    server.assert_alive_without_panic(what);
    let read = server.post("/read", "user=u0001&field=country_iso");
    assert_eq!(read.body()["returned_count"], 1, "{what}: {read:?}");
    report(
        what,
        &format!(
            "during the load {seen}; Redis loaded 1,000,000 keys in {} ms",
            loaded.as_millis()
        ),
        recovered,
    );
}

/// Rows in the loader's file for the bulk-load faults.
const LOAD_ROWS: usize = 30_000;

fn kill_during_bulk_load(persistent: bool) {
    let _one_at_a_time = serial();
    let mut redis = Redis::start(persistent);
    let mut server = Server::start(&redis.url(), &server_flags(&[]));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_rows(dir.path(), LOAD_ROWS);
    let mut loader = spawn_loader(
        &redis.url(),
        &file,
        &["--chunk-size", "500", "--connect-timeout-ms", "300"],
    );
    // The server's own bulk load runs too.
    let traffic = Traffic::start(server.addr, 1, &[("/bulk-load", "count=2000")]);
    let mut conn = redis.conn();
    wait_until("the load is under way", Duration::from_secs(60), || {
        dbsize(&mut conn) > 3000
    });
    drop(conn);

    redis.kill();
    assert!(
        loader.try_wait().expect("try_wait").is_none(),
        "the loader finished before the fault: make the file longer"
    );
    std::thread::sleep(OUTAGE);
    let restarting = Instant::now();
    redis.restart();
    let restart = restarting.elapsed();
    let recovered = time_to_recover(&server, restarting);
    let out = loader.wait_with_output().expect("waiting for fs-loader");
    let samples = traffic.finish();

    let what = format!(
        "redis killed during a bulk load, {}",
        persistence(persistent)
    );
    let seen = check_failures(&what, &samples, failure_bound());
    server.assert_alive_without_panic(&what);
    let summary = Summary::of(&out);
    summary.assert_accounted();
    // The default retries (5, from 200 ms doubling) outlast the outage.
    assert_eq!(summary.code, Some(0), "{what}:\n{}", summary.text);
    assert_eq!(
        summary.count("written"),
        LOAD_ROWS as u64,
        "{}",
        summary.text
    );
    let mut conn = redis.conn();
    let present = rows_present(&mut conn, LOAD_ROWS);
    if persistent {
        // Every row Redis confirmed was fsynced before the confirmation.
        assert_eq!(present, LOAD_ROWS, "{what}: rows written but not present");
    } else {
        // What Redis held when it died is gone; a re-run puts it back.
        let again = spawn_loader(&redis.url(), &file, &[])
            .wait_with_output()
            .expect("re-running fs-loader");
        let again = Summary::of(&again);
        assert_eq!(again.code, Some(0), "{}", again.text);
        assert_eq!(rows_present(&mut conn, LOAD_ROWS), LOAD_ROWS);
    }
    check_invariants(&mut conn, &what);
    report(
        &what,
        &format!(
            "server {seen}; loader exit 0, written {} of {LOAD_ROWS}, {present} present after; Redis up again in {} ms",
            summary.count("written"),
            restart.as_millis()
        ),
        recovered,
    );
}

#[test]
fn redis_killed_during_a_bulk_load_without_persistence_is_accounted_exactly() {
    kill_during_bulk_load(false);
}

#[test]
fn redis_killed_during_a_bulk_load_with_aof_loses_no_written_row() {
    kill_during_bulk_load(true);
}

// ---------------------------------------------------------------- scripts

/// The script cache emptied every 10 ms (a failover storm, an operator's
/// `SCRIPT FLUSH` in a loop) while the server bulk-loads, serves reads and
/// runs the worker and the loader writes: Redis keeps answering, so nothing
/// may fail.
#[test]
fn script_flush_every_10ms_under_traffic_fails_nothing() {
    let _one_at_a_time = serial();
    let redis = Redis::start(false);
    let mut server = Server::start(&redis.url(), &server_flags(WORKER));
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = 20_000;
    let file = write_rows(dir.path(), rows);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flusher = {
        let stop = stop.clone();
        let mut conn = redis.conn();
        std::thread::spawn(move || {
            let mut flushes = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query::<()>(&mut conn)
                    .expect("SCRIPT FLUSH");
                flushes += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            flushes
        })
    };
    let reads = Traffic::start(server.addr, 2, READS);
    let loads = Traffic::start(server.addr, 1, &[("/bulk-load", "count=2000")]);
    let before = streaming_writes(&server);
    let out = spawn_loader(&redis.url(), &file, &["--chunk-size", "100"])
        .wait_with_output()
        .expect("fs-loader");
    // At least two seconds of flushes under traffic, however fast the load.
    std::thread::sleep(Duration::from_secs(2));
    let worker_writes = streaming_writes(&server) - before;
    let mut samples = reads.finish();
    samples.extend(loads.finish());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flushes = flusher.join().expect("flusher");
    let end = Instant::now();
    let recovered = time_to_recover(&server, end);

    let what = "SCRIPT FLUSH every 10 ms";
    let seen = check_failures(what, &samples, failure_bound());
    server.assert_alive_without_panic(what);
    let summary = Summary::of(&out);
    let failed: Vec<_> = samples.iter().filter(|s| !s.reply.ok()).collect();
    assert!(
        failed.is_empty(),
        "{what}: Redis answered throughout, yet {} of {} requests failed, first {:?}\nthe loader meanwhile: {}",
        failed.len(),
        samples.len(),
        failed.first(),
        summary.text
    );
    summary.assert_accounted();
    assert_eq!(summary.code, Some(0), "{what}:\n{}", summary.text);
    assert_eq!(summary.count("written"), rows as u64, "{}", summary.text);
    let mut conn = redis.conn();
    assert_eq!(rows_present(&mut conn, rows), rows);
    assert!(worker_writes > 0, "{what}: the worker wrote nothing");
    check_invariants(&mut conn, what);
    report(
        what,
        &format!(
            "{flushes} flushes; server {seen}; loader exit 0, {rows} of {rows} written; worker kept writing"
        ),
        recovered,
    );
}

/// Every client connection dropped by Redis every 100 ms (`CLIENT KILL TYPE
/// normal`: what a proxy's idle timeout, a Redis `timeout` setting or a
/// failover does to pooled connections) under reads, the worker and a
/// loader: Redis itself answers throughout, so a request retried on a fresh
/// connection must succeed and the loader must write every row.
#[test]
fn client_connections_killed_every_100ms_fail_nothing() {
    let _one_at_a_time = serial();
    let redis = Redis::start(false);
    let mut server = Server::start(&redis.url(), &server_flags(WORKER));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_rows(dir.path(), LOAD_ROWS);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let stop = stop.clone();
        let mut conn = redis.conn();
        std::thread::spawn(move || {
            let mut killed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SKIPME: this connection survives its own kills.
                killed += redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg("normal")
                    .arg("SKIPME")
                    .arg("yes")
                    .query::<u64>(&mut conn)
                    .expect("CLIENT KILL");
                std::thread::sleep(Duration::from_millis(100));
            }
            killed
        })
    };
    let traffic = Traffic::start(server.addr, 4, READS);
    let before = streaming_writes(&server);
    let out = spawn_loader(&redis.url(), &file, &["--chunk-size", "500"])
        .wait_with_output()
        .expect("fs-loader");
    // At least two seconds of traffic, however fast the load was.
    std::thread::sleep(Duration::from_secs(2));
    let worker_writes = streaming_writes(&server) - before;
    let samples = traffic.finish();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let killed = killer.join().expect("killer");
    let end = Instant::now();
    let recovered = time_to_recover(&server, end);

    let what = "CLIENT KILL TYPE normal every 100 ms";
    let seen = check_failures(what, &samples, failure_bound());
    server.assert_alive_without_panic(what);
    let summary = Summary::of(&out);
    summary.assert_accounted();
    let failed: Vec<_> = samples.iter().filter(|s| !s.reply.ok()).collect();
    assert!(
        failed.is_empty(),
        "{what}: Redis answered throughout, yet {} of {} requests failed ({} /read, {} /batch-read), first {:?}\nthe loader meanwhile: {}",
        failed.len(),
        samples.len(),
        failed.iter().filter(|s| s.path == "/read").count(),
        failed.iter().filter(|s| s.path == "/batch-read").count(),
        failed.first(),
        summary.text
    );
    assert_eq!(summary.code, Some(0), "{what}:\n{}", summary.text);
    let mut conn = redis.conn();
    assert_eq!(rows_present(&mut conn, LOAD_ROWS), LOAD_ROWS);
    assert!(worker_writes > 0, "{what}: the worker wrote nothing");
    assert!(killed > 0, "{what}: no connection was killed");
    check_invariants(&mut conn, what);
    report(
        what,
        &format!("{killed} connections killed; server {seen}; loader exit 0, {LOAD_ROWS} of {LOAD_ROWS} written"),
        recovered,
    );
}

// ---------------------------------------------------------------- pauses

/// Runs `pause` (which stalls Redis for `OUTAGE`) under reads, the worker
/// and a loader, then checks and reports.
fn paused(what: &str, pause: impl FnOnce(&Redis)) {
    let _one_at_a_time = serial();
    let redis = Redis::start(false);
    let mut server = Server::start(&redis.url(), &server_flags(WORKER));
    wait_until("the worker writes", Duration::from_secs(10), || {
        streaming_writes(&server) > 20
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_rows(dir.path(), LOAD_ROWS);
    let mut loader = spawn_loader(&redis.url(), &file, &["--chunk-size", "500"]);
    let traffic = Traffic::start(server.addr, 4, READS);
    let mut conn = redis.conn();
    wait_until("the load is under way", Duration::from_secs(60), || {
        dbsize(&mut conn) > 1200
    });

    let started = Instant::now();
    pause(&redis);
    assert!(
        loader.try_wait().expect("try_wait").is_none(),
        "the loader finished before the fault: make the file longer"
    );
    let end = started + OUTAGE;
    std::thread::sleep(end.saturating_duration_since(Instant::now()));
    let recovered = time_to_recover(&server, end);
    let before = streaming_writes(&server);
    wait_until("the worker writes again", Duration::from_secs(10), || {
        streaming_writes(&server) > before + 20
    });
    let out = loader.wait_with_output().expect("waiting for fs-loader");
    let samples = traffic.finish();

    let seen = check_failures(what, &samples, failure_bound());
    server.assert_alive_without_panic(what);
    let summary = Summary::of(&out);
    summary.assert_accounted();
    // Redis answers again well within the loader's retries.
    assert_eq!(summary.code, Some(0), "{what}:\n{}", summary.text);
    assert_eq!(
        summary.count("written"),
        LOAD_ROWS as u64,
        "{}",
        summary.text
    );
    assert_eq!(rows_present(&mut conn, LOAD_ROWS), LOAD_ROWS, "{what}");
    check_invariants(&mut conn, what);
    report(
        what,
        &format!("server {seen}; loader exit 0, {LOAD_ROWS} of {LOAD_ROWS} written"),
        recovered,
    );
}

#[test]
fn redis_client_pause_longer_than_the_timeouts_fails_fast_and_recovers() {
    paused("CLIENT PAUSE 3000 ALL", |redis| {
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(OUTAGE.as_millis() as u64)
            .arg("ALL")
            .query::<()>(&mut redis.conn())
            .expect("CLIENT PAUSE");
    });
}

#[test]
fn redis_debug_sleep_longer_than_the_timeouts_fails_fast_and_recovers() {
    paused("DEBUG SLEEP 3", |redis| {
        let mut conn = redis.conn();
        // DEBUG SLEEP blocks the caller too: run it aside.
        std::thread::spawn(move || {
            redis::cmd("DEBUG")
                .arg("SLEEP")
                .arg(OUTAGE.as_secs_f64())
                .query::<()>(&mut conn)
                .expect("DEBUG SLEEP (needs --enable-debug-command yes)");
        });
    });
}

/// Six times as many concurrent requests as request threads, three times
/// the Redis pool, all arriving while Redis is paused: every one is
/// answered (a JSON 503 in time, or a 200 once Redis is back), none hangs.
#[test]
fn more_requests_than_the_pool_while_redis_is_paused_are_all_answered() {
    let _one_at_a_time = serial();
    let redis = Redis::start(false);
    // --threads 2: a pool of 8 Redis connections (threads + 4, at least 8).
    let mut server = Server::start(&redis.url(), &server_flags(&["--threads", "2"]));
    assert!(server.post("/bulk-load", "count=50").ok());
    let clients = 24;

    let started = Instant::now();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(OUTAGE.as_millis() as u64)
        .arg("ALL")
        .query::<()>(&mut redis.conn())
        .expect("CLIENT PAUSE");
    let addr = server.addr;
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let (path, body) = READS[i % READS.len()];
                let t = Instant::now();
                Sample {
                    path,
                    started: t,
                    reply: request(addr, "POST", path, body.as_bytes(), Duration::from_secs(60)),
                }
            })
        })
        .collect();
    let samples: Vec<Sample> = threads
        .into_iter()
        .map(|t| t.join().expect("client"))
        .collect();
    let end = started + OUTAGE;
    let what = "pool exhausted: 24 requests, 2 threads, pool 8, Redis paused 3 s";
    let seen = check_failures(what, &samples, failure_bound());
    // Queued requests wait for a thread, so the last ones finish later than
    // the bound of one request: but all by the end of the pause plus one
    // bound, not one bound per queued request.
    for s in &samples {
        assert!(
            s.started + s.reply.elapsed <= end + failure_bound(),
            "{what}: {} answered {:?} after {:?}",
            s.path,
            s.reply.result,
            s.reply.elapsed
        );
    }
    server.assert_alive_without_panic(what);
    let recovered = time_to_recover(&server, end);
    check_invariants(&mut redis.conn(), what);
    report(what, &seen, recovered);
}
