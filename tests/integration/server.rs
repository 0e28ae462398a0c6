//! The real `fs-server` binary against a test-managed Redis: every endpoint
//! in both body encodings, every 4xx, Redis going away and coming back, and
//! the tiny_http traps (a 100 GB Content-Length, idle connections).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{self, wait_until};

/// A running fs-server; killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
}

impl Server {
    /// Starts the binary with `--redis-url` and `extra` flags on a free port
    /// and waits for its "open http://..." line.
    pub fn start(redis_url: &str, extra: &[&str]) -> Server {
        Server::start_with_timeout(redis_url, 300, extra)
    }

    /// As `start`, with `--redis-timeout-ms timeout_ms` (a TLS handshake
    /// in a debug build on a busy machine can take longer than 300 ms).
    pub fn start_with_timeout(redis_url: &str, timeout_ms: u64, extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
            .args([
                "--redis-url",
                redis_url,
                "--port",
                "0",
                "--redis-timeout-ms",
                &timeout_ms.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawning fs-server");
        let addr = wait_for_open_line(child.stdout.take().expect("stdout"));
        Server { child, addr }
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        send(self.addr, "GET", path, None, b"")
    }

    pub fn post_form(&self, path: &str, body: &str) -> (u16, Value) {
        send(
            self.addr,
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
    }

    pub fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        send(
            self.addr,
            "POST",
            path,
            Some("application/json"),
            body.to_string().as_bytes(),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request on a fresh connection; the status and the body (JSON, or a
/// string holding the raw text when it is not JSON).
pub fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let (status, _, body) = send_raw(addr, method, path, ctype, body);
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, value)
}

/// Status, headers and body bytes.
pub fn send_raw(
    addr: SocketAddr,
    method: &str,
    path: &str,
    ctype: Option<&str>,
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connecting to fs-server");
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = ctype {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("writing the request");
    s.write_all(body).expect("writing the body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the response");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    (status, head, raw[split + 4..].to_vec())
}

fn error_text(v: &Value) -> &str {
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("expected {{\"error\": ...}}, got {v}"))
}

fn keys(redis: &impl common::Backend) -> Vec<String> {
    common::all_keys(&mut common::raw(redis))
}

#[test]
fn server_external_redis_is_left_alone_until_asked() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("SET")
        .arg("other:key")
        .arg("keep me")
        .query(&mut conn)
        .unwrap();
    let server = Server::start(&redis.url(), &["--tick-ms", "50"]);

    let (status, state) = server.get("/state");
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["entity_count"], 0);
    assert_eq!(state["worker"]["running"], false, "{state}");
    assert_eq!(state["key_prefix"], "fs:user:");
    assert_eq!(state["batch_ttl_seconds"], 86400);
    assert_eq!(state["streaming_ttl_seconds"], 300);
    assert_eq!(
        keys(&redis),
        ["other:key"],
        "startup wrote into an external Redis"
    );

    // Reset deletes under the prefix only.
    assert_eq!(server.post_form("/bulk-load", "count=3").0, 200);
    let (status, reset) = server.post_form("/reset", "");
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["deleted"], 3);
    assert_eq!(keys(&redis), ["other:key"]);
}

#[test]
fn server_every_endpoint_in_both_encodings() {
    let redis = common::redis();
    let server = Server::start(&redis.url(), &[]);

    let (status, page) = send_raw(server.addr, "GET", "/", None, b"").into_tuple_page();
    assert_eq!(status, 200);
    assert!(
        page.contains("<html") && page.contains("Feature store"),
        "page: {}",
        &page[..page.len().min(200)]
    );
    assert_eq!(server.get("/healthz"), (200, json!({"ok": true})));

    // Bulk load, form then JSON.
    let (status, load) = server.post_form("/bulk-load", "count=50&ttl=600");
    assert_eq!(status, 200, "{load}");
    assert_eq!(load["loaded"], 50);
    assert_eq!(load["ttl_seconds"], 600);
    assert!(load["elapsed_ms"].as_f64().unwrap() >= 0.0);
    let (status, load) = server.post_json("/bulk-load", &json!({"count": 20, "ttl": 60}));
    assert_eq!(status, 200, "{load}");
    assert_eq!(
        (load["loaded"].as_u64(), load["ttl_seconds"].as_u64()),
        (Some(20), Some(60))
    );

    // State reflects the load at once (refreshed after the write).
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 50, "{state}");
    let ids = state["entity_ids"].as_array().unwrap();
    assert_eq!(ids.len(), 50);
    assert_eq!(ids[0], "u0001");
    assert!(state["entity_ids_age_ms"].as_u64().unwrap() < 60_000);
    assert_eq!(state["stats"]["batch_writes_total"], 70);
    for key in ["streaming_writes_total", "reads_total", "read_fields_total"] {
        assert!(state["stats"][key].is_u64(), "{key} in {state}");
    }
    for key in ["running", "paused", "tick_count", "writes_count"] {
        assert!(!state["worker"][key].is_null(), "{key} in {state}");
    }

    // Read: the form's repeated `field`, then JSON `fields`.
    let (status, read) =
        server.post_form("/read", "user=u0001&field=country_iso&field=tx_count_5m");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["requested"], json!(["country_iso", "tx_count_5m"]));
    assert!(read["values"]["country_iso"].is_string(), "{read}");
    assert_eq!(read["values"]["tx_count_5m"], Value::Null);
    assert_eq!(
        read["ttls"]["country_iso"], -1,
        "a batch field has no field TTL"
    );
    assert_eq!(read["ttls"]["tx_count_5m"], -2, "a missing field");
    assert_eq!(read["returned_count"], 1);
    let key_ttl = read["key_ttl_seconds"].as_i64().unwrap();
    assert!(
        (1..=60).contains(&key_ttl),
        "u0001 was reloaded with ttl 60: {key_ttl}"
    );
    let (status, read) = server.post_json(
        "/read",
        &json!({"user": "u0002", "fields": ["risk_segment", "avg_amount_30d"]}),
    );
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["returned_count"], 2);
    assert!(read["elapsed_ms"].as_f64().is_some());
    // No fields: every known feature.
    let (_, read) = server.post_form("/read", "user=u0003");
    assert_eq!(read["requested"].as_array().unwrap().len(), 11);
    // An unknown user: exists false, nothing returned.
    let (status, read) = server.post_form("/read", "user=nobody&field=country_iso");
    assert_eq!(status, 200);
    assert_eq!(
        (read["exists"].as_bool(), read["key_ttl_seconds"].as_i64()),
        (Some(false), Some(-2))
    );

    // Batch read by count (from the cached ids) and by ids.
    let (status, batch) = server.post_form(
        "/batch-read",
        "count=30&field=country_iso&field=risk_segment",
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["entity_count"], 30);
    // field_count: fields asked per entity; values_found: values returned.
    assert_eq!(batch["field_count"], 2);
    assert_eq!(batch["values_found"], 60);
    assert_eq!(batch["errors"], json!([]));
    let sample = batch["sample"].as_array().unwrap();
    assert_eq!(sample.len(), 10);
    assert_eq!(sample[0], json!({"id": "u0001", "values_found": 2}));
    let (status, batch) = server.post_json(
        "/batch-read",
        &json!({"ids": ["u0001", "u0002", "zzz"], "fields": ["country_iso"]}),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(
        (
            batch["entity_count"].as_u64(),
            batch["field_count"].as_u64(),
            batch["values_found"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert_eq!(batch["sample"][2], json!({"id": "zzz", "values_found": 0}));
    let (_, batch) = server.post_form("/batch-read", "ids=u0001,u0002");
    assert_eq!(batch["entity_count"], 2);

    // Inspect: the whole hash, sorted, with TTLs.
    let (status, inspect) = server.get("/inspect?user=u0001");
    assert_eq!(status, 200, "{inspect}");
    assert_eq!(inspect["exists"], true);
    let fields = inspect["fields"].as_array().unwrap();
    assert_eq!(fields.len(), 6);
    assert_eq!(fields[0]["name"], "account_age_days");
    assert_eq!(fields[0]["ttl_seconds"], -1);
    let (_, inspect) = server.get("/inspect?user=nobody");
    assert_eq!(
        (
            inspect["exists"].as_bool(),
            inspect["fields"].as_array().map(Vec::len)
        ),
        (Some(false), Some(0))
    );

    // Toggle: stopped (external mode) -> running -> paused -> running.
    let (status, w) = server.post_form("/worker/toggle", "");
    assert_eq!(status, 200);
    assert_eq!(
        (w["running"].as_bool(), w["paused"].as_bool()),
        (Some(true), Some(false))
    );
    let (_, w) = server.post_json("/worker/toggle", &json!({}));
    assert_eq!(
        (w["running"].as_bool(), w["paused"].as_bool()),
        (Some(true), Some(true))
    );
    let (_, w) = server.post_form("/worker/toggle", "");
    assert_eq!(
        (w["running"].as_bool(), w["paused"].as_bool()),
        (Some(true), Some(false))
    );

    // Reset: every entity gone, state says so at once.
    let (status, reset) = server.post_form("/reset", "");
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["deleted"], 50);
    assert_eq!(
        reset["worker"]["paused"], false,
        "reset restores a running worker"
    );
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 0);
    assert!(keys(&redis).is_empty(), "{:?}", keys(&redis));
}

trait PageTuple {
    fn into_tuple_page(self) -> (u16, String);
}
impl PageTuple for (u16, String, Vec<u8>) {
    fn into_tuple_page(self) -> (u16, String) {
        (self.0, String::from_utf8_lossy(&self.2).into())
    }
}

#[test]
fn server_answers_every_mistake_with_a_json_4xx() {
    let redis = common::redis();
    let server = Server::start(&redis.url(), &["--max-body-bytes", "16384"]);
    assert_eq!(server.post_form("/bulk-load", "count=5").0, 200);

    let bad: Vec<(&str, &str, &str)> = vec![
        ("/bulk-load", "count=0", "1 to 100000"),
        ("/bulk-load", "count=100001", "1 to 100000"),
        ("/bulk-load", "count=abc", "1 to 100000"),
        ("/bulk-load", "count=-5", "1 to 100000"),
        ("/bulk-load", "ttl=0", "ttl must be an integer from 1 to"),
        ("/batch-read", "count=1001", "1 to 1000"),
        ("/batch-read", "count=0", "1 to 1000"),
        ("/read", "field=country_iso", "missing parameter: user"),
        ("/read", "user=u0001&field=bad%20name", "feature"),
        ("/read", "user=u%2A&field=country_iso", ""),
        ("/read", "user=u0001&field=%zz", "percent-encoding"),
    ];
    for (path, body, expect) in bad {
        let (status, v) = server.post_form(path, body);
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert!(error_text(&v).contains(expect), "{path} {body}: {v}");
    }
    let bad_json = [
        ("/read", "{not json", "not valid JSON"),
        ("/read", "[1,2]", "must be an object"),
        ("/read", r#"{"user": 5}"#, "user must be a string"),
        ("/bulk-load", r#"{"count": 1.5}"#, "1 to 100000"),
        ("/bulk-load", r#"{"count": [1]}"#, "count must be a number"),
        ("/batch-read", r#"{"ids": []}"#, "1 to 1000"),
        (
            "/batch-read",
            r#"{"ids": "a,b", "fields": [1]}"#,
            "array of strings",
        ),
    ];
    for (path, body, expect) in bad_json {
        let (status, v) = send(
            server.addr,
            "POST",
            path,
            Some("application/json"),
            body.as_bytes(),
        );
        assert_eq!(status, 400, "{path} {body}: {v}");
        assert!(error_text(&v).contains(expect), "{path} {body}: {v}");
    }
    let many_ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    let (status, v) = server.post_json("/batch-read", &json!({ "ids": many_ids }));
    assert_eq!(status, 400, "{v}");
    assert!(error_text(&v).contains("1 to 1000"));
    let many_fields: Vec<String> = (0..101).map(|i| format!("f{i}")).collect();
    let (status, v) = server.post_json("/read", &json!({ "user": "u0001", "fields": many_fields }));
    assert_eq!(status, 400, "{v}");
    assert!(error_text(&v).contains("at most 100"));
    let (status, v) = server.get("/inspect");
    assert_eq!(status, 400);
    assert!(error_text(&v).contains("user"));

    let (status, v) = server.get("/nope");
    assert_eq!(status, 404);
    assert!(error_text(&v).contains("/nope"));
    let (status, head, body) = send_raw(server.addr, "GET", "/read", None, b"");
    assert_eq!(status, 405);
    assert!(head.contains("Allow: POST"), "{head}");
    assert!(String::from_utf8_lossy(&body).contains("\"error\""));
    for (method, path) in [
        ("POST", "/state"),
        ("DELETE", "/reset"),
        ("PUT", "/"),
        ("POST", "/inspect"),
    ] {
        let (status, v) = send(server.addr, method, path, None, b"");
        assert_eq!(status, 405, "{method} {path}");
        error_text(&v);
    }

    // A real body over the cap.
    let big = format!("user=u0001&pad={}", "x".repeat(20000));
    let (status, v) = server.post_form("/read", &big);
    assert_eq!(status, 413, "{v}");
    assert!(error_text(&v).contains("at most 16384"));

    // Nothing was written by any refused request.
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 5);
    assert_eq!(state["stats"]["batch_writes_total"], 5);
}

#[test]
fn server_answers_503_while_redis_is_down_and_recovers_by_itself() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let mut server = Server::start(&redis.url(), &[]);
    assert_eq!(server.post_form("/bulk-load", "count=10").0, 200);

    redis.stop();
    for (method, path, body) in [
        ("POST", "/read", "user=u0001"),
        ("POST", "/batch-read", "count=5"),
        ("GET", "/inspect?user=u0001", ""),
        ("POST", "/bulk-load", "count=5"),
        ("POST", "/reset", ""),
        ("GET", "/healthz", ""),
    ] {
        let started = Instant::now();
        let (status, v) = send(
            server.addr,
            method,
            path,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        );
        assert_eq!(status, 503, "{method} {path}: {v}");
        assert!(error_text(&v).contains("redis unavailable"), "{v}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    // State is served from the cache and says the scan is failing.
    wait_until(
        "state reports the failing scan",
        Duration::from_secs(10),
        || {
            let (status, s) = server.get("/state");
            status == 200 && s["entity_ids_error"].is_string()
        },
    );
    assert!(server.is_running());

    redis.restart().expect("restarting redis");
    wait_until("healthz back to 200", Duration::from_secs(10), || {
        server.get("/healthz").0 == 200
    });
    // The restarted Redis is empty; the server works against it unchanged.
    let (status, load) = server.post_form("/bulk-load", "count=3");
    assert_eq!(status, 200, "{load}");
    let (status, read) = server.post_form("/read", "user=u0003&field=country_iso");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["returned_count"], 1);
    wait_until("state scan recovers", Duration::from_secs(10), || {
        let (_, s) = server.get("/state");
        s["entity_ids_error"].is_null() && s["entity_count"] == 3
    });
}

#[test]
fn server_worker_writes_streaming_features_and_reset_restores_it() {
    let redis = common::redis();
    let server = Server::start(
        &redis.url(),
        &[
            "--seed-demo",
            "--seed-users",
            "20",
            "--tick-ms",
            "20",
            "--users-per-tick",
            "10",
            "--streaming-ttl-seconds",
            "120",
        ],
    );
    // The count comes from the background census, which may not have
    // ticked yet when the server first answers.
    wait_until(
        "/state counts the 20 seeded users",
        Duration::from_secs(10),
        || server.get("/state").1["entity_count"] == 20,
    );
    let (_, state) = server.get("/state");
    assert_eq!(state["worker"]["running"], true);
    wait_until("the worker wrote", Duration::from_secs(10), || {
        let (_, s) = server.get("/state");
        s["worker"]["writes_count"].as_u64() >= Some(20)
            && s["stats"]["streaming_writes_total"].as_u64() >= Some(20)
    });
    let (_, read) = server.post_form("/read", "user=u0001&field=last_login_ts&field=country_iso");
    let _ = read; // may or may not be picked yet; checked across users below
    let (_, batch) = server.post_form("/batch-read", "count=20&field=last_login_ts");
    assert!(batch["values_found"].as_u64().unwrap() > 0, "{batch}");

    // Reset while running: nothing left, and the worker is running again.
    let (status, reset) = server.post_form("/reset", "");
    assert_eq!(status, 200, "{reset}");
    assert!(reset["deleted"].as_u64().unwrap() >= 20);
    assert_eq!(
        (
            reset["worker"]["running"].as_bool(),
            reset["worker"]["paused"].as_bool()
        ),
        (Some(true), Some(false))
    );
    // With no entities the worker must not resurrect deleted ids.
    let ticks = server.get("/state").1["worker"]["tick_count"]
        .as_u64()
        .unwrap();
    wait_until("a few more ticks", Duration::from_secs(10), || {
        server.get("/state").1["worker"]["tick_count"]
            .as_u64()
            .unwrap()
            > ticks + 3
    });
    assert!(keys(&redis).is_empty(), "{:?}", keys(&redis));

    // Reset while paused leaves it paused.
    let (_, w) = server.post_form("/worker/toggle", "");
    assert_eq!(w["paused"], true);
    let (_, reset) = server.post_form("/reset", "");
    assert_eq!(reset["worker"]["paused"], true);
}

/// Issue 8, case 10: the worker picks its ids from the server's id cache.
/// A reset used to refresh that cache after its delete and nothing more, so
/// when the rescan failed (Redis briefly unreachable for it) the worker
/// went on writing to the deleted ids and recreated them. This runs the
/// reset the way `/reset` does (pause, wait out the tick, delete, clear the
/// cache, rescan, resume) with the rescan failing, and checks that no
/// entity comes back.
#[test]
fn after_a_reset_the_worker_recreates_no_entity_even_when_the_rescan_fails() {
    use std::sync::Arc;

    use feature_store::demo::synth;
    use feature_store::demo::worker::{Worker, WorkerConfig};
    use feature_store::pool::PoolConfig;
    use feature_store::server::cache::EntityCache;
    use feature_store::{FeatureStore, StoreConfig};

    let redis = common::redis();
    let store = Arc::new(common::store(&redis));
    store
        .bulk_load(&synth::users(30, 1).collect::<Vec<_>>(), 600)
        .expect("load");
    let cache = EntityCache::new();
    cache.refresh(&store);
    assert_eq!(cache.ids().len(), 30);
    let source = cache.clone();
    let worker = Worker::new(
        store.clone(),
        Box::new(move || source.ids()),
        WorkerConfig {
            users_per_tick: 10,
            tick: Duration::from_millis(10),
            streaming_ttl_seconds: 60,
            seed: 3,
        },
    );
    worker.start();
    wait_until("the worker writes", Duration::from_secs(10), || {
        worker.status().writes_count >= 20
    });

    // Nothing listens on port 1: every scan through this store fails.
    let unreachable = FeatureStore::open(
        "redis://127.0.0.1:1/",
        StoreConfig {
            pool: PoolConfig {
                max_size: 1,
                connect_timeout: Duration::from_millis(200),
                io_timeout: Duration::from_millis(200),
                checkout_timeout: Duration::from_millis(200),
                ..PoolConfig::default()
            },
            ..StoreConfig::default()
        },
    )
    .expect("open");
    worker.pause();
    assert!(worker.wait_for_idle(Duration::from_secs(5)));
    assert_eq!(store.delete_all().expect("delete"), 30);
    cache.clear();
    cache.refresh(&unreachable);
    assert!(cache.get().error.is_some(), "the rescan must have failed");
    worker.resume();

    let ticks = worker.status().tick_count;
    wait_until("ten more ticks", Duration::from_secs(10), || {
        worker.status().tick_count > ticks + 10
    });
    assert_eq!(store.count_entities().expect("count"), 0);
    assert!(cache.ids().is_empty());
    worker.stop();
}

/// Issue 8, case 5: one key under the prefix named with bytes that are not
/// UTF-8, and one value that is not UTF-8. Before: `/state` showed 0
/// entities, `/reset` answered 503 and deleted nothing, `/read` answered
/// 503 while `/healthz` said ok.
#[test]
fn bytes_that_are_not_utf8_never_look_like_an_outage() {
    let redis = common::redis();
    let server = Server::start(
        &redis.url(),
        &["--seed-demo", "--seed-users", "5", "--refresh-ms", "50"],
    );
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("HSET")
        .arg(&b"fs:user:\xff\xfe"[..])
        .arg("f")
        .arg("v")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("HSET")
        .arg("fs:user:u0001")
        .arg("blob")
        .arg(&b"\xff\xfe"[..])
        .query(&mut conn)
        .unwrap();

    wait_until(
        "/state counts the foreign key",
        Duration::from_secs(10),
        || server.get("/state").1["entity_count"] == 6,
    );
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_ids"].as_array().unwrap().len(), 5, "{state}");
    assert_eq!(state["entity_ids_unlisted"], 1, "{state}");
    assert_eq!(state["entity_ids_error"], Value::Null, "{state}");

    let (status, read) = server.post_form("/read", "user=u0001&field=blob&field=country_iso");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["values"]["blob"], json!({"base64": "//4="}));
    assert!(read["values"]["country_iso"].is_string(), "{read}");
    let (status, inspect) = server.get("/inspect?user=u0001");
    assert_eq!(status, 200, "{inspect}");
    let blob = inspect["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "blob")
        .cloned();
    assert_eq!(
        blob.map(|f| f["value"].clone()),
        Some(json!({"base64": "//4="}))
    );
    let (status, batch) = server.post_form("/batch-read", "count=10&field=blob");
    assert_eq!(
        (status, batch["values_found"].as_u64()),
        (200, Some(1)),
        "{batch}"
    );

    let (status, reset) = server.post_form("/reset", "");
    assert_eq!(status, 200, "{reset}");
    assert_eq!(reset["deleted"], 6);
    let left: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(left, 0);
}

/// Issue 8, case 6: three loader rows of 3000 distinct fields each for one
/// id made `/inspect` answer 500 "too many results to unpack". An entity
/// the loader wrote with 10,000 fields is served by every read endpoint.
#[test]
fn an_entity_of_10000_fields_is_served_by_every_endpoint() {
    let redis = common::redis();
    let server = Server::start(&redis.url(), &[]);
    // What the loader accepts: rows of up to 3000 features, several rows
    // per id. Four rows of 2500 distinct features, then one more.
    let mut input = String::new();
    for row in 0..4 {
        let features: serde_json::Map<String, Value> = (row * 2500..(row + 1) * 2500)
            .map(|i| (format!("f{i:05}"), json!(i)))
            .collect();
        input.push_str(&json!({"id": "wide1", "features": features}).to_string());
        input.push('\n');
    }
    input.push_str("{\"id\": \"wide1\", \"country_iso\": \"US\"}\n");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("wide.jsonl");
    std::fs::write(&path, input).expect("writing the input");
    let out = Command::new(env!("CARGO_BIN_EXE_fs-loader"))
        .env_remove("FS_REDIS_URL")
        .env_remove("FS_KEY_PREFIX")
        .args(["--redis-url", &redis.url(), "--quiet", "--from"])
        .arg(&path)
        .output()
        .expect("running fs-loader");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let (status, inspect) = get_large(server.addr, "/inspect?user=wide1");
    assert_eq!(status, 200, "{inspect}");
    assert_eq!(inspect["fields"].as_array().map(Vec::len), Some(10_001));
    // /read with no fields named: every known feature.
    let (status, read) = server.post_form("/read", "user=wide1");
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        (
            read["returned_count"].as_u64(),
            &read["values"]["country_iso"]
        ),
        (Some(1), &json!("US"))
    );
    let fields: Vec<String> = (0..100).map(|i| format!("f{:05}", i * 100)).collect();
    let (status, read) = server.post_json("/read", &json!({"user": "wide1", "fields": fields}));
    assert_eq!(
        (status, read["returned_count"].as_u64()),
        (200, Some(100)),
        "{read}"
    );
    let (status, batch) =
        server.post_json("/batch-read", &json!({"ids": ["wide1"], "fields": fields}));
    assert_eq!(
        (status, batch["values_found"].as_u64()),
        (200, Some(100)),
        "{batch}"
    );
}

/// A GET whose answer may be large: tiny_http sends bodies past 32 KB
/// chunked, which `send` does not decode.
fn get_large(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, head, body) = send_raw(addr, "GET", path, None, b"");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .expect("chunk size line");
            let size_text = String::from_utf8_lossy(&rest[..line_end]);
            let size = usize::from_str_radix(size_text.trim(), 16).expect("chunk size");
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            out.extend_from_slice(&rest[start..start + size]);
            rest = &rest[start + size + 2..];
        }
        out
    } else {
        body
    };
    let value = serde_json::from_slice(&body).expect("a JSON body");
    (status, value)
}

/// Issue 8, case 9: a hash `fs:user:a b` and a string under the prefix,
/// written by other tools. Before: `/batch-read count=5` answered 400 about
/// `a b` (an id the client never sent), and any request touching the
/// string answered 500 WRONGTYPE.
#[test]
fn keys_written_by_other_tools_never_fail_unrelated_requests() {
    let redis = common::redis();
    let server = Server::start(
        &redis.url(),
        &["--seed-demo", "--seed-users", "3", "--refresh-ms", "50"],
    );
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("HSET")
        .arg("fs:user:a b")
        .arg("country_iso")
        .arg("FR")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("fs:user:str1")
        .arg("not a hash")
        .query(&mut conn)
        .unwrap();
    wait_until("the cache sees both keys", Duration::from_secs(10), || {
        server.get("/state").1["entity_count"] == 5
    });
    let (_, state) = server.get("/state");
    assert_eq!(
        state["entity_ids"],
        json!(["str1", "u0001", "u0002", "u0003"])
    );

    let (status, batch) = server.post_form("/batch-read", "count=5&field=country_iso");
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["entity_count"], 4);
    assert_eq!(batch["found_count"], 3);
    assert_eq!(
        batch["errors"],
        json!([{"id": "str1", "error": "key fs:user:str1 holds a string, not a hash"}])
    );
    let (status, batch) = server.post_json(
        "/batch-read",
        &json!({"ids": ["u0001", "str1"], "fields": ["country_iso"]}),
    );
    assert_eq!(
        (status, batch["values_found"].as_u64()),
        (200, Some(1)),
        "{batch}"
    );
    assert_eq!(batch["errors"].as_array().map(Vec::len), Some(1), "{batch}");

    for (status, body) in [
        server.post_form("/read", "user=str1"),
        server.get("/inspect?user=str1"),
    ] {
        assert_eq!(status, 409, "{body}");
        assert_eq!(
            error_text(&body),
            "key fs:user:str1 holds a string, not a hash"
        );
    }
    let (status, read) = server.post_form("/read", "user=u0002");
    assert_eq!(status, 200, "{read}");
}

/// `Content-Length: 100000000000` with a short body: a naive tiny_http
/// server aborts on the 100 GB drain allocation.
#[test]
fn server_survives_a_content_length_bomb() {
    let redis = common::redis();
    let mut server = Server::start(
        &redis.url(),
        &["--threads", "2", "--idle-timeout-ms", "1000"],
    );
    assert_eq!(server.post_form("/bulk-load", "count=1").0, 200);

    let mut bombs = Vec::new();
    for path in ["/read", "/bulk-load", "/nope", "/read"] {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000000000\r\n\r\nuser=u0001").unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).expect("a response to the bomb");
        let head = String::from_utf8_lossy(&buf[..n]);
        let expected = if path == "/nope" { "404" } else { "413" };
        assert!(
            head.starts_with(&format!("HTTP/1.1 {expected}")),
            "{path}: {head}"
        );
        bombs.push(s); // held open: the drain must not wedge the server
    }
    let (status, read) = server.post_form("/read", "user=u0001&field=country_iso");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["returned_count"], 1);
    assert!(server.is_running());
    drop(bombs);
    assert_eq!(server.get("/healthz").0, 200);
}

/// 2x the thread bound of idle and stalled connections, then a normal
/// request: it is answered, and the idle ones are closed by the server.
#[test]
fn server_survives_idle_connections() {
    let redis = common::redis();
    let threads = 2;
    let server = Server::start(
        &redis.url(),
        &[
            "--threads",
            &threads.to_string(),
            "--idle-timeout-ms",
            "1000",
        ],
    );
    let mut idle = Vec::new();
    for i in 0..threads * 2 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        match i % 3 {
            0 => {}                                                        // connects, says nothing
            1 => write!(s, "POST /read HTTP/1.1\r\nHost: x\r\n").unwrap(), // half a head
            _ => write!(
                s,
                "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nuser="
            )
            .unwrap(), // a stalled body
        }
        idle.push(s);
    }
    // A stalled body is read on a request thread; give them time to be taken.
    let mut extra = Vec::new();
    for _ in 0..threads * 2 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        write!(
            s,
            "POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\nuser="
        )
        .unwrap();
        extra.push(s);
    }
    let started = Instant::now();
    let (status, v) = server.get("/healthz");
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );

    // The server closes silent connections after the idle timeout.
    for mut s in idle.into_iter().chain(extra) {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = Vec::new();
        let closed = s.read_to_end(&mut buf).is_ok();
        assert!(closed, "an idle connection was not closed by the server");
    }
    assert_eq!(server.get("/healthz").0, 200);
}

/// Debian's chromium, or None (then the browser test skips, or fails on CI).
pub fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless chromium on `url` with `action` (`--dump-dom` or
/// `--screenshot=...`) and returns its stdout.
pub fn run_chromium(bin: &std::path::Path, action: &str, url: &str) -> String {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut child = Command::new(bin)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1280,2600",
            // Lets the page's fetches and the scripted run finish first.
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(action)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting chromium");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        out
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            _ if Instant::now() > deadline => {
                let _ = child.kill();
                panic!("chromium did not finish within 120 s");
            }
            _ => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    reader.join().unwrap_or_default()
}

/// The page in headless Chromium: a scripted run clicks through read,
/// pause/resume, inspect, batch read, reset and load; a value holding markup
/// shows as text; a screenshot lands in target/.
#[test]
fn server_page_in_headless_chromium() {
    let Some(bin) = chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed (apt-get install -y chromium); CI must run the browser test");
        }
        eprintln!("SKIPPED server_page_in_headless_chromium: /usr/bin/chromium not found (apt-get install -y chromium)");
        return;
    };
    let redis = common::redis();
    let server = Server::start(
        &redis.url(),
        &["--seed-demo", "--seed-users", "20", "--tick-ms", "200"],
    );
    let evil = "<img src=x onerror=alert(1)>";
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("HSET")
        .arg("fs:user:u0001")
        .arg("country_iso")
        .arg(evil)
        .query(&mut conn)
        .unwrap();

    let base = format!("http://{}/", server.addr);
    let dom = run_chromium(
        &bin,
        "--dump-dom",
        &format!("{base}?user=u0001&run=model,read,toggle,toggle,inspect,batch,reset,load"),
    );
    assert!(
        dom.contains("data-run-done=\"1\""),
        "the scripted run did not finish:\n{dom}"
    );
    for step in [
        "model: ok",
        "read: ok",
        "toggle: ok (paused)",
        "toggle: ok (running)",
        "inspect: ok",
        "batch: ok",
        "reset: ok",
        "load: ok",
    ] {
        assert!(
            dom.contains(step),
            "{step} missing from the run log:\n{dom}"
        );
    }
    // Shown as text by both the read and the inspect panel; never a tag.
    let escaped = "&lt;img src=x onerror=alert(1)&gt;";
    assert!(
        dom.matches(escaped).count() >= 2,
        "the value is not shown as text:\n{dom}"
    );
    assert!(
        !dom.contains("<img"),
        "markup from Redis became an element:\n{dom}"
    );
    // The batch panel: 11 fields asked for each entity, the values found
    // counted apart (before, "fields" showed the values found).
    assert!(dom.contains("fields <b>11 each</b>"), "{dom}");
    // The read and inspect panels show each value's age (the seeded users
    // were written by the store's scripts, so every value is dated).
    assert!(dom.matches("<th>age</th>").count() >= 2, "{dom}");
    assert!(dom.contains("stale <b>0</b>"), "{dom}");
    assert!(dom.contains("values found <b>"), "{dom}");
    assert!(dom.contains("Deleted 20 entities."), "{dom}");
    assert!(dom.contains("Loaded 200 users"), "{dom}");
    // The model panel: the demo's fraud_v1 vector, typed, each value with
    // its status, and the registry's views with their typed features.
    assert!(
        dom.contains(
            "title=\"user_profile.risk_segment\">risk_segment<div class=\"type\">category</div>"
        ),
        "the model panel shows no vector:\n{dom}"
    );
    assert!(dom.contains("st-present"), "{dom}");
    assert!(dom.contains("account_age_days: int"), "{dom}");
    // The state card says how the server's writes are paced.
    assert!(dom.contains("latency budget 1 ms"), "{dom}");
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 200, "{state}");
    assert_eq!(
        (
            state["worker"]["running"].as_bool(),
            state["worker"]["paused"].as_bool()
        ),
        (Some(true), Some(false))
    );

    // A screenshot of the page with the hostile value on show.
    let _: () = redis::cmd("HSET")
        .arg("fs:user:u0001")
        .arg("country_iso")
        .arg(evil)
        .query(&mut conn)
        .unwrap();
    let target = std::path::Path::new(env!("CARGO_BIN_EXE_fs-server"))
        .parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf();
    let shot = target.join("fs-server-page.png");
    let _ = std::fs::remove_file(&shot);
    run_chromium(
        &bin,
        &format!("--screenshot={}", shot.display()),
        &format!("{base}?user=u0001&run=read,batch,inspect,model"),
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "no screenshot at {}", shot.display());
    eprintln!("screenshot: {}", shot.display());
}

/// Reads fs-server's stdout until its "open http://..." line and returns
/// the address; the rest is drained on a thread, so the server never
/// blocks on a full pipe.
pub fn wait_for_open_line(stdout: std::process::ChildStdout) -> SocketAddr {
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("fs-server exited before printing its URL")
            .expect("reading fs-server's stdout");
        if let Some(rest) = line.strip_prefix("open http://") {
            break rest
                .trim_end_matches('/')
                .parse()
                .expect("address in the open line");
        }
    };
    std::thread::spawn(move || lines.for_each(drop));
    addr
}

/// Runs fs-server with `args` (and `env`) and waits (at most 20 s) for it
/// to exit; its exit code and stderr. A server that starts instead is
/// killed and the test fails.
pub fn run_until_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-server");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fs-server {args:?} started instead of refusing");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    (status.code(), stderr)
}

#[test]
fn server_refuses_to_start_on_a_redis_without_hexpire() {
    let redis = feature_store::ManagedRedis::start_with_args(&["--rename-command", "HEXPIRE", ""])
        .expect("starting redis without HEXPIRE");
    let (code, stderr) = run_until_exit(&["--redis-url", &redis.url(), "--port", "0"], &[]);
    assert!(matches!(code, Some(c) if c != 0), "{code:?} {stderr}");
    assert!(stderr.contains("HEXPIRE ("), "{stderr}");
    assert!(stderr.contains("Redis >= 7.4 or Valkey >= 9.0"), "{stderr}");
    assert!(keys(&redis).is_empty(), "{:?}", keys(&redis));
}

/// The process ids whose parent is `parent` (from /proc/<pid>/stat).
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid.and_then(|p| p.parse::<u32>().ok()) == Some(parent) {
            found.push((pid, comm));
        }
    }
    found
}

/// Gone, or a zombie nobody reaps (a container's init may not): not running.
fn is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

#[test]
fn managed_redis_dies_when_the_server_is_killed() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
        .env_remove("FS_REDIS_URL")
        .args(["--port", "0", "--seed-users", "0", "--tick-ms", "1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning fs-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        if line.expect("reading stdout").starts_with("open http://") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    let redis: Vec<_> = children_of(child.id())
        .into_iter()
        .filter(|(_, comm)| comm.contains("redis") || comm.contains("valkey"))
        .collect();
    assert_eq!(redis.len(), 1, "the embedded redis-server: {redis:?}");
    let redis_pid = redis[0].0;
    assert!(!is_gone(redis_pid));

    child.kill().expect("SIGKILL fs-server");
    child.wait().expect("reaping fs-server");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !is_gone(redis_pid) {
        if Instant::now() > deadline {
            // Leave no orphan behind the failing test.
            let _ = Command::new("kill").arg(redis_pid.to_string()).status();
            panic!("the embedded redis-server {redis_pid} outlived its killed server");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The parent-death signal is tied to the spawning thread: a Redis started
/// (or restarted) on a helper thread must not die when that thread ends.
#[test]
fn managed_redis_started_from_a_finished_thread_keeps_running() {
    // Standalone on both backends: the subject is `ManagedRedis` itself.
    let mut redis = std::thread::spawn(common::standalone_redis)
        .join()
        .expect("the starting thread");
    let mut conn = common::raw(&redis);
    // Nothing to poll for: give a signal, if one were sent, time to land.
    std::thread::sleep(Duration::from_millis(500));
    assert!(redis.is_running(), "{}", redis.log());
    let pong: String = redis::cmd("PING").query(&mut conn).expect("PING");
    assert_eq!(pong, "PONG");
    std::thread::scope(|s| {
        s.spawn(|| redis.restart().expect("restart"));
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(redis.is_running(), "{}", redis.log());
}

/// The suite runs where `FS_TEST_BACKEND` says: a server on the suite's
/// Redis reports that backend, and a cluster's three primaries, in
/// `/state`. Before, the variable was ignored and every test ran on one
/// server.
#[test]
fn state_reports_the_backend_fs_test_backend_chose() {
    let redis = common::redis();
    assert_eq!(redis.is_cluster(), common::backend_is_cluster());
    let server = Server::start(&redis.url(), &[]);
    let (status, state) = server.get("/state");
    assert_eq!(status, 200, "{state}");
    let (kind, nodes) = if common::backend_is_cluster() {
        ("cluster", 3)
    } else {
        ("standalone", 1)
    };
    assert_eq!(state["backend"]["kind"], kind, "{state}");
    assert_eq!(state["backend"]["nodes"], nodes, "{state}");
}
