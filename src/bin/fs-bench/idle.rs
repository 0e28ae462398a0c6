//! An idle server on a big store: what its background work (the entity
//! count and the id list) costs Redis, how soon it answers after start,
//! and how fast `/state` is, at 2,000,000 and 10,000,000 entities.
//!
//! Entities are written by a Lua loop inside Redis (one call per 50,000,
//! each a one-feature hash with a key TTL): the rows measure the server on
//! a big keyspace, not a load.

use std::path::Path;
use std::time::{Duration, Instant};

use feature_store::ManagedRedis;

use crate::http::{self, HttpClient, Server};
use crate::library;
use crate::measure::Recorder;
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

pub fn rows(server_bin: &Path, quick: bool, out: &mut Vec<Row>) -> BResult<()> {
    let (sizes, window): (&[u64], _) = if quick {
        (&[20_000], Duration::from_secs(2))
    } else {
        (&[2_000_000, 10_000_000], Duration::from_secs(10))
    };
    let redis = ManagedRedis::start()?;
    let url = redis.url();
    let mut raw = library::raw_connection(&url)?;
    let mut have = 0;
    for (i, &size) in sizes.iter().enumerate() {
        eprintln!("fs-bench: an idle server on {size} entities: writing them ...");
        write_entities(&mut raw, have + 1, size)?;
        have = size;
        let alone = redis_cpu_share(&mut raw, window)?;
        let started = Instant::now();
        let server = Server::start_with_flags(server_bin, &url, &[])?;
        let answered = started.elapsed();
        // Past its first tick: the count is settled, the server at rest.
        let first = state_count(&server)?;
        let with_server = redis_cpu_share(&mut raw, window)?;
        let state = time_get(&server, "/state", 50)?;
        let healthz = time_get(&server, "/healthz", 50)?;
        let count = state_count(&server)?;
        drop(server);
        if count != Some(size) {
            return Err(format!("/state counted {count:?} of {size} entities").into());
        }
        let n = crate::report::count(size as f64);
        let ids: [&'static str; 2] = match i {
            0 => ["idle_redis_cpu", "idle_state"],
            _ => ["idle_redis_cpu_large", "idle_state_large"],
        };
        let how = format!(
            "{n} entities (one-feature hashes with a key TTL, every key under the prefix); \
             fs-server with its default flags (`--refresh-ms 1000`); it answered `/healthz` \
             {} after it was spawned, and its first `/state` counted {}.",
            crate::report::ms(answered),
            first.map_or("nothing yet".to_owned(), |c| crate::report::count(c as f64))
        );
        crate::step(
            ids[0],
            out,
            Ok(Row {
                id: ids[0],
                operation: format!("Redis CPU with an idle fs-server on {n} entities"),
                unit: "core",
                ours: Figures::Percent { value: with_server },
                baseline_name: "the same Redis with no server".into(),
                baseline: Figures::Percent { value: alone },
                ratio_on: RatioOn::P50,
                goal: vec![Check::PercentAtMost(2.0)],
                note: format!(
                    "`used_cpu_sys` + `used_cpu_user` from `INFO cpu` over {} s, with and \
                     without the server. {how}",
                    window.as_secs()
                ),
            }),
        )?;
        crate::step(
            ids[1],
            out,
            Ok(Row {
                id: ids[1],
                operation: format!("HTTP `GET /state` on {n} entities"),
                unit: "req",
                ours: Figures::Timed(state.summary()),
                baseline_name: "`GET /healthz` (one PING)".into(),
                baseline: Figures::Timed(healthz.summary()),
                ratio_on: RatioOn::P50,
                goal: vec![Check::P99AtMost(Duration::from_millis(5))],
                note: format!("50 requests on one keep-alive connection. {how}"),
            }),
        )?;
    }
    Ok(())
}

/// Writes `fs:user:u<from>` .. `fs:user:u<to>` inside Redis, 50,000 per
/// call.
fn write_entities(raw: &mut redis::Connection, from: u64, to: u64) -> BResult<()> {
    let script = redis::Script::new(
        "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do \
           local k = 'fs:user:u' .. i \
           redis.call('HSET', k, 'country_iso', 'DE') \
           redis.call('EXPIRE', k, 86400) \
         end \
         return 1",
    );
    let mut next = from;
    while next <= to {
        let end = (next + 49_999).min(to);
        let _: i64 = script.arg(next).arg(end).invoke(raw)?;
        next = end + 1;
    }
    Ok(())
}

/// Percent of one core Redis used over `window`, from `INFO cpu`.
fn redis_cpu_share(raw: &mut redis::Connection, window: Duration) -> BResult<f64> {
    let before = library::redis_cpu_seconds(raw)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let after = library::redis_cpu_seconds(raw)?;
    Ok(100.0 * (after - before) / started.elapsed().as_secs_f64())
}

fn state_count(server: &Server) -> BResult<Option<u64>> {
    let mut client = HttpClient::connect(server.addr)?;
    let (status, body) = client.request("GET", "/state", b"")?;
    http::check_ok("GET /state", status, &body)?;
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    Ok(v["entity_count"].as_u64())
}

fn time_get(server: &Server, path: &str, n: usize) -> BResult<Recorder> {
    let mut client = HttpClient::connect(server.addr)?;
    let mut rec = Recorder::default();
    for _ in 0..n {
        let started = Instant::now();
        let (status, body) = client.request("GET", path, b"")?;
        rec.record(started.elapsed(), 1);
        http::check_ok(path, status, &body)?;
    }
    Ok(rec)
}
