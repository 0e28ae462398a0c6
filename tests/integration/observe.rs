//! What an operator watches: `/metrics` (parsed as Prometheus parses it)
//! and the server's log lines on stderr, from the real binary.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Metric};
use serde_json::json;

use crate::common::{self, wait_until};
use crate::server::{send, send_raw};

/// An fs-server whose stderr (its log) is kept, line by line.
struct LoggedServer {
    child: Child,
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

impl LoggedServer {
    fn start(redis_url: &str, extra: &[&str], fs_log: &str) -> LoggedServer {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
            .args(["--redis-url", redis_url, "--port", "0"])
            .args(["--redis-timeout-ms", "300"])
            .args(extra)
            .env("FS_LOG", fs_log)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning fs-server");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = crate::server::wait_for_open_line(child.stdout.take().expect("stdout"));
        LoggedServer { child, addr, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        self.lines()
            .into_iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .collect()
    }

    fn post(&self, path: &str, body: &str) -> u16 {
        send(
            self.addr,
            "POST",
            path,
            Some("application/x-www-form-urlencoded"),
            body.as_bytes(),
        )
        .0
    }

    fn scrape(&self) -> Scrape {
        let (status, head, body) = send_raw(self.addr, "GET", "/metrics", None, b"");
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert!(
            head.contains("text/plain; version=0.0.4"),
            "not the Prometheus text format: {head}"
        );
        let text = String::from_utf8(body).expect("UTF-8 metrics");
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parsing /metrics")
    }
}

impl Drop for LoggedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of the series `metric{labels}` (a histogram's count: its
/// `+Inf` bucket); 0 when the series is absent (nothing counted yet).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<f64> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Metric::Counter(v) | Metric::Gauge(v) | Metric::Untyped(v) => *v,
            Metric::Histogram(buckets) => buckets
                .iter()
                .find(|b| b.less_than.is_infinite())
                .map_or(0.0, |b| b.count),
            Metric::Summary(_) => panic!("{metric} is a summary"),
        })
        .collect();
    assert!(found.len() <= 1, "{metric}{labels:?} matches {found:?}");
    found.first().copied().unwrap_or(0.0)
}

#[test]
fn metrics_count_exactly_the_requests_sent() {
    let redis = common::redis();
    let server = LoggedServer::start(&redis.url(), &[], "info");
    assert_eq!(server.post("/bulk-load", "count=5"), 200);
    let before = server.scrape();

    for _ in 0..3 {
        assert_eq!(server.post("/read", "user=u0001"), 200);
    }
    for _ in 0..2 {
        assert_eq!(server.post("/batch-read", "ids=u0001,u0002"), 200);
    }
    assert_eq!(server.post("/read", ""), 400, "a read without a user");
    assert_eq!(server.post("/no/such/path", ""), 404);
    let after = server.scrape();

    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    let requests = "fs_http_requests_total";
    assert_eq!(
        delta(requests, &[("route", "/read"), ("status", "200")]),
        3.0
    );
    assert_eq!(
        delta(requests, &[("route", "/read"), ("status", "400")]),
        1.0
    );
    assert_eq!(
        delta(requests, &[("route", "/batch-read"), ("status", "200")]),
        2.0
    );
    // An unknown path is one bounded label, never the raw path.
    assert_eq!(
        delta(requests, &[("route", "unmatched"), ("status", "404")]),
        1.0
    );
    assert!(after
        .samples
        .iter()
        .all(|s| s.labels.get("route") != Some("/no/such/path")));
    let latency = "fs_http_request_duration_seconds";
    assert_eq!(delta(latency, &[("route", "/read")]), 4.0);
    assert_eq!(delta(latency, &[("route", "/batch-read")]), 2.0);
    // The store's own account: 3 single reads and 2 x 2 batch entities.
    assert_eq!(delta("fs_store_reads_total", &[]), 7.0);
    // One round trip per read, whatever else ran meanwhile (the refresher).
    assert!(delta("fs_redis_round_trips_total", &[]) >= 5.0);
    assert_eq!(value(&after, "fs_redis_up", &[]), 1.0);
    assert_eq!(value(&after, "fs_entities", &[]), 5.0);
    assert!(value(&after, "fs_redis_pool_max_connections", &[]) >= 8.0);
    // The bulk load's 5 rows were script calls.
    assert!(value(&after, "fs_redis_script_calls_total", &[]) >= 1.0);
    for kind in [
        "timeout",
        "refused",
        "pool_timeout",
        "unavailable",
        "server",
    ] {
        assert_eq!(
            value(&after, "fs_redis_errors_total", &[("kind", kind)]),
            0.0,
            "{kind}"
        );
    }
}

#[test]
fn redis_outage_logs_each_5xx_once_with_route_and_cause_and_the_way_down_and_back() {
    let mut redis = common::standalone_redis();
    let server = LoggedServer::start(&redis.url(), &["--refresh-ms", "100"], "info");
    wait_until("the start-up event", Duration::from_secs(5), || {
        !server
            .lines_with(&["event=start", "mode=external"])
            .is_empty()
    });
    redis.stop();
    assert_eq!(server.post("/read", "user=u0001"), 503);
    wait_until("the 5xx is logged", Duration::from_secs(5), || {
        !server.lines_with(&["event=server_error"]).is_empty()
    });
    let errors = server.lines_with(&["event=server_error"]);
    assert_eq!(errors.len(), 1, "one line per 5xx: {errors:?}");
    let line = &errors[0];
    assert!(line.contains("level=error"), "{line}");
    assert!(line.contains("route=/read"), "{line}");
    assert!(line.contains("status=503"), "{line}");
    assert!(line.contains("cause=\"redis unavailable"), "{line}");
    wait_until("Redis going away is logged", Duration::from_secs(5), || {
        !server.lines_with(&["event=redis_down"]).is_empty()
    });
    let scrape = server.scrape();
    assert_eq!(value(&scrape, "fs_redis_up", &[]), 0.0);
    // A stopped Redis refuses connections: the kind says so.
    let refused = value(&scrape, "fs_redis_errors_total", &[("kind", "refused")]);
    assert!(refused >= 1.0, "{line}; {:?}", scrape.samples);

    redis.restart().expect("restarting redis");
    wait_until(
        "Redis coming back is logged",
        Duration::from_secs(10),
        || !server.lines_with(&["event=redis_up"]).is_empty(),
    );
    // A transition, not every failed tick.
    assert_eq!(server.lines_with(&["event=redis_down"]).len(), 1);
    assert_eq!(server.post("/read", "user=u0001"), 200);
    assert_eq!(value(&server.scrape(), "fs_redis_up", &[]), 1.0);
}

#[test]
fn no_log_line_carries_a_token_a_url_password_or_a_feature_value() {
    const PASSWORD: &str = "pw-s3cret-4b1c";
    const TOKEN: &str = "secret-token-xyz";
    const VALUE: &str = "value-q7x9z";
    let redis = common::standalone_redis();
    // Set after start: the fixture's readiness PING has no password.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query(&mut common::raw(&redis))
        .expect("setting a password");
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}/", redis.port());
    let server = LoggedServer::start(
        &url,
        &["--access-log", "--slow-request-ms", "1", "--seed-demo"],
        "debug",
    );
    // A value the read will return.
    let (status, pushed) = send(
        server.addr,
        "POST",
        "/v1/push",
        Some("application/json"),
        json!({"view": "user_activity", "rows": [{"id": "u0001", "features": {"last_device_id": VALUE}}]})
            .to_string()
            .as_bytes(),
    );
    let read_path = format!("/read?user=u0001&token={TOKEN}");
    let mut s = TcpStream::connect(server.addr).expect("connect");
    write!(
        s,
        "POST {read_path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Connection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("write");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("read");
    assert_eq!(status, 200, "{pushed}");
    assert!(answer.contains(VALUE), "{pushed} then {answer}");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_until("the access line", Duration::from_secs(5), || {
        !server
            .lines_with(&["event=access", "route=/read", "status=200"])
            .is_empty()
    });
    let lines = server.lines();
    assert!(lines.iter().any(|l| l.contains("event=start")), "{lines:?}");
    for secret in [PASSWORD, TOKEN, VALUE, "Bearer", "user=u0001"] {
        let leaks: Vec<_> = lines.iter().filter(|l| l.contains(secret)).collect();
        assert!(leaks.is_empty(), "{secret:?} logged: {leaks:?}");
    }
}

#[test]
fn loader_metrics_file_parses_and_equals_the_summary() {
    use crate::loader::{count, run, show, summary, write_file};
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,ts,country_iso,tx_count_7d\n\
         u1,1700000000000,US,3\n\
         u2,1700000000000,GB,4\n\
         bad id,1700000000000,DE,1\n\
         u4,1700000000000\n",
    );
    let prom = dir.path().join("fs_loader.prom");
    let args = [
        "--from",
        csv.to_str().expect("utf-8 path"),
        "--event-time-column",
        "ts",
        "--metrics-file",
        prom.to_str().expect("utf-8 path"),
    ];
    run(&redis, &args);
    // Again: the same event times leave every feature as it is.
    let out = run(&redis, &args);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(count(&s, "skipped_stale"), 4, "{s:?}");

    let text = std::fs::read_to_string(&prom).expect("the metrics file");
    let scrape =
        Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("parsing the metrics file");
    for (metric, name) in [
        ("fs_loader_rows_read_total", "read"),
        ("fs_loader_rows_written_total", "written"),
        ("fs_loader_rows_rejected_total", "rejected"),
        ("fs_loader_rows_failed_total", "failed"),
        ("fs_loader_lines_malformed_total", "malformed"),
        ("fs_loader_skipped_stale_total", "skipped_stale"),
    ] {
        assert_eq!(
            value(&scrape, metric, &[]),
            count(&s, name) as f64,
            "{metric}\n{text}"
        );
    }
    assert_eq!(value(&scrape, "fs_loader_retries_total", &[]), 0.0);
    assert_eq!(value(&scrape, "fs_loader_exit_code", &[]), 1.0);
    let elapsed: f64 = s["elapsed"]
        .trim_end_matches(" s")
        .parse()
        .expect("elapsed seconds");
    let in_file = value(&scrape, "fs_loader_elapsed_seconds", &[]);
    assert!((in_file - elapsed).abs() < 0.002, "{in_file} vs {elapsed}");
    // Written through a temporary file that is renamed, none left behind.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .expect("listing")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["fs_loader.prom", "users.csv"]);
}

#[test]
fn a_script_flush_shows_as_one_noscript_reload_and_the_calls_sent_again() {
    let redis = common::standalone_redis();
    let server = LoggedServer::start(&redis.url(), &[], "info");
    assert_eq!(server.post("/bulk-load", "count=3"), 200);
    let before = server.scrape();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut common::raw(&redis))
        .expect("SCRIPT FLUSH");
    assert_eq!(server.post("/bulk-load", "count=3"), 200);
    let after = server.scrape();
    let delta = |metric: &str| value(&after, metric, &[]) - value(&before, metric, &[]);
    // The 3 rows (one script call) hit NOSCRIPT once, are sent again
    // after one SCRIPT LOAD, and nothing failed.
    assert_eq!(delta("fs_redis_noscript_reloads_total"), 1.0);
    assert_eq!(delta("fs_redis_script_calls_total"), 2.0);
    assert_eq!(delta("fs_store_batch_writes_total"), 3.0);
    assert_eq!(
        value(&after, "fs_redis_errors_total", &[("kind", "server")]),
        0.0
    );
}
