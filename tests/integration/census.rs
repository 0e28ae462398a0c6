//! The server's entity count at any size: `DBSIZE` when every key is under
//! the prefix, an incremental scan under a fixed Redis time budget
//! otherwise, and nothing keyspace-sized before the server answers.

use std::time::{Duration, Instant};

use crate::common::{self, wait_until};
use crate::server::Server;

/// Writes `n` entities (`fs:user:u1` ...) straight into Redis, one script
/// call per 50,000 so no call holds Redis long. On a cluster a script may
/// only touch its own slot's keys, so there the same writes go as plain
/// commands in pipelines (split by node).
fn load_raw(conn: &mut common::Raw, n: u64) {
    if let common::Raw::Cluster(_) = conn {
        let mut from = 1;
        while from <= n {
            let to = (from + 9_999).min(n);
            let mut pipe = redis::pipe();
            for i in from..=to {
                let k = format!("fs:user:u{i}");
                pipe.cmd("HSET")
                    .arg(&k)
                    .arg("country_iso")
                    .arg("DE")
                    .ignore();
                pipe.cmd("EXPIRE").arg(&k).arg(3600).ignore();
            }
            let _: () = pipe.query(conn).expect("loading");
            from = to + 1;
        }
        return;
    }
    let script = redis::Script::new(
        "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
           local k = 'fs:user:u' .. i \
           redis.call('HSET', k, 'country_iso', 'DE') \
           redis.call('EXPIRE', k, 3600) \
         end \
         return 1",
    );
    let mut from = 1;
    while from <= n {
        let to = (from + 49_999).min(n);
        let _: i64 = script.arg(from).arg(to).invoke(conn).expect("loading");
        from = to + 1;
    }
}

/// (calls, usec) of SCAN so far, from `INFO commandstats` (every node's,
/// summed: on a cluster the scan visits every primary).
fn scan_stats(redis: &common::TestRedis) -> (u64, u64) {
    let scan = redis
        .command_stats()
        .get("scan")
        .copied()
        .unwrap_or_default();
    (scan.calls, scan.usec)
}

/// Before: the server ran a full SCAN before it listened, so it answered
/// only after a pass over every key, and `/state` did not say how the count
/// was obtained.
#[test]
fn a_server_on_200k_entities_answers_at_once_with_the_exact_count() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    load_raw(&mut conn, 200_000);

    let started = Instant::now();
    let server = Server::start(&redis.url(), &[]);
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 200);
    let (status, state) = server.get("/state");
    assert_eq!(status, 200, "{state}");
    let answered = started.elapsed();
    assert!(
        answered < Duration::from_secs(1),
        "answered {answered:?} after start"
    );
    wait_until(
        "/state reports the exact count",
        Duration::from_secs(5),
        || {
            let s = server.get("/state").1;
            s["entity_count"] == 200_000
                && s["entity_count_exact"] == true
                && s["entity_count_source"] == "dbsize"
        },
    );
    // The first tick's pages already list ids to read.
    let (_, batch) = server.post_form("/batch-read", "count=10&field=country_iso");
    assert_eq!(batch["entity_count"], 10, "{batch}");
    assert_eq!(batch["values_found"], 10, "{batch}");
}

/// Before: an idle server scanned all 200,000 keys every second, about
/// half a second of Redis time per second. Now the scan's round trips are
/// charged to a budget of at most 1% of wall time (a quarter of it while
/// the count is DBSIZE, as here; 20 ms of credit at most): over 3 s at most
/// 30 ms plus the credit plus one page overrun (a round trip is longer than
/// the Redis time it holds, so this bound is firm). Measured: about 4 ms
/// over 3 s at 1%, against 230 ms before.
#[test]
fn an_idle_server_spends_about_one_percent_of_redis_on_its_scan() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    load_raw(&mut conn, 200_000);
    let server = Server::start(&redis.url(), &[]);
    wait_until("a first tick", Duration::from_secs(5), || {
        server.get("/state").1["entity_count"] == 200_000
    });

    let (calls0, usec0) = scan_stats(&redis);
    std::thread::sleep(Duration::from_secs(3));
    let (calls1, usec1) = scan_stats(&redis);
    let usec = usec1 - usec0;
    eprintln!(
        "idle scan: {usec} us of SCAN in {} calls over 3 s",
        calls1 - calls0
    );
    assert!(
        usec < 30_000 + 20_000 + 10_000,
        "SCAN held Redis {usec} us in {} calls over 3 s",
        calls1 - calls0
    );
    // At a quarter of 1% (the count is DBSIZE here) a page can take a
    // few seconds of credit to come, longer when a busy machine makes the
    // first tick's round trips (its debt) long.
    wait_until("the scan goes on, slowly", Duration::from_secs(30), || {
        scan_stats(&redis).0 > calls0
    });
}

/// `DBSIZE` is the count while every key is under the prefix; one key
/// outside it sends the count back to the scan, and `/state` says which.
#[test]
fn the_count_is_dbsize_only_while_every_key_is_under_the_prefix() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    let server = Server::start(&redis.url(), &["--refresh-ms", "50"]);
    let (status, load) = server.post_form("/bulk-load", "count=20");
    assert_eq!(status, 200, "{load}");
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 20, "{state}");
    assert_eq!(state["entity_count_source"], "dbsize", "{state}");
    assert_eq!(state["entity_count_exact"], true, "{state}");

    let _: () = redis::cmd("SET")
        .arg("someone:else")
        .arg("x")
        .query(&mut conn)
        .unwrap();
    wait_until(
        "the count comes from the scan",
        Duration::from_secs(10),
        || server.get("/state").1["entity_count_source"] == "scan",
    );
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 20, "{state}");
    assert_eq!(state["entity_count_exact"], true, "{state}");

    let _: () = redis::cmd("DEL")
        .arg("someone:else")
        .query(&mut conn)
        .unwrap();
    wait_until(
        "back to DBSIZE once the foreign key is gone",
        Duration::from_secs(10),
        || server.get("/state").1["entity_count_source"] == "dbsize",
    );
}

/// A reset of a big store takes a while (one SCAN page and one UNLINK at a
/// time); meanwhile `/state` says how far it got, reads keep being served,
/// and at the end every key under the prefix is gone and nothing else.
#[test]
fn a_reset_of_300k_entities_reports_progress_in_state_and_deletes_them_all() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    load_raw(&mut conn, 300_000);
    let _: () = redis::cmd("SET")
        .arg("other:tool")
        .arg("keep")
        .query(&mut conn)
        .expect("SET");
    let server = Server::start(&redis.url(), &[]);
    assert_eq!(server.get("/state").1["reset"], serde_json::Value::Null);

    std::thread::scope(|s| {
        let reset = s.spawn(|| server.post_form("/reset", ""));
        let mut seen = Vec::new();
        while !reset.is_finished() {
            let (status, state) = server.get("/state");
            assert_eq!(status, 200, "{state}");
            if let Some(n) = state["reset"]["deleted"].as_u64() {
                seen.push(n);
            }
        }
        let (status, body) = reset.join().expect("reset thread");
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["deleted"], 300_000, "{body}");
        assert!(
            seen.iter().any(|&n| n > 0 && n < 300_000),
            "no partial progress seen in /state: {seen:?}"
        );
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
    });
    assert_eq!(server.get("/state").1["reset"], serde_json::Value::Null);
    let left: u64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
    assert_eq!(left, 1, "only the other tool's key stays");
}
