//! The HTTP server against hostile clients: absurd Content-Lengths, bodies
//! and heads trickled a byte at a time, connection floods, cross-origin
//! pages, and generated malformed requests. Each test spawns the real
//! `fs-server` on a test-managed Redis.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;

use crate::common::{self, wait_until};
use crate::server::Server;

/// The status line of whatever the server answers first on `s`.
fn read_status(s: &mut TcpStream) -> Option<u16> {
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let mut buf = [0u8; 4096];
    let n = s.read(&mut buf).ok()?;
    String::from_utf8_lossy(&buf[..n])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// The server closed `s` (end-of-file or reset), waiting up to `within`.
fn closed_by_server(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).ok();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// Still open from the client's side, without waiting.
fn still_open(mut s: &TcpStream) -> bool {
    s.set_nonblocking(true).ok();
    let mut buf = [0u8; 4096];
    let open = loop {
        match s.read(&mut buf) {
            Ok(0) => break false,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(_) => break false,
        }
    };
    s.set_nonblocking(false).ok();
    open
}

/// How long one `/healthz` takes, or None if it fails.
fn healthz_latency(addr: SocketAddr) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    raw.starts_with(b"HTTP/1.1 200").then(|| t.elapsed())
}

fn proc_status(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        })
        .and_then(|v| v.split_whitespace().next().and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

fn threads_of(pid: u32) -> u64 {
    proc_status(pid, "Threads:")
}

fn fds_of(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Sends a head declaring `length` plus a few body bytes; returns the
/// connection.
fn bomb(addr: SocketAddr, method: &str, path: &str, length: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connecting");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {length}\r\n\r\nuser=u0001"
    )
    .expect("sending the bomb");
    s
}

const HUGE_LENGTHS: [&str; 2] = ["1000000000000000", "18446744073709551615"];

/// Case 1: 1e15 made the drain's allocation abort the process; u64::MAX
/// made it panic and kill the request thread, so after `--threads` of them
/// the port stopped answering. Now: 413, the connection is closed, and the
/// server answers after more such requests than it has threads.
/// The attack tests each hold hundreds of connections and threads against
/// their server; run side by side on a 2-core machine they starve each
/// other's `/healthz` probes, which is not what they measure. One at a
/// time (other tests still run beside them).
fn one_attack_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ATTACKS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ATTACKS.lock().unwrap_or_else(|p| p.into_inner())
}

#[test]
fn huge_content_length_does_not_kill_the_server() {
    let _attack = one_attack_at_a_time();
    let redis = common::standalone_redis();
    let threads = 2;
    let mut server = Server::start(&redis.url(), &["--threads", &threads.to_string()]);
    for length in HUGE_LENGTHS {
        for (method, path) in [
            ("GET", "/healthz"),
            ("POST", "/read"),
            ("POST", "/bulk-load"),
        ] {
            for _ in 0..=threads {
                let mut s = bomb(server.addr, method, path, length);
                assert_eq!(read_status(&mut s), Some(413), "{method} {path} {length}");
                assert!(
                    closed_by_server(&mut s, Duration::from_secs(5)),
                    "{method} {path} {length}: the connection was left open"
                );
                assert!(server.is_running(), "the server died on {length}");
            }
        }
    }
    let latency = healthz_latency(server.addr).expect("/healthz after the bombs");
    assert!(latency < Duration::from_secs(1), "{latency:?}");
    assert!(server.is_running());
}

/// Case 2 (bodies): two connections trickling a 60000-byte body with only
/// two request threads starved `/healthz` as long as they trickled. Now
/// twice as many tricklers as request threads leave `/healthz` answering
/// within a second throughout (bodies are read off the request threads),
/// and each trickler gets 408 at the request deadline and is closed.
#[test]
fn trickled_bodies_get_408_and_never_starve_healthz() {
    let _attack = one_attack_at_a_time();
    let redis = common::standalone_redis();
    let server = Server::start(
        &redis.url(),
        &[
            "--threads",
            "2",
            "--request-timeout-ms",
            "1000",
            "--idle-timeout-ms",
            "1000",
        ],
    );
    let addr = server.addr;
    let tricklers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connecting");
                write!(
                    s,
                    "POST /read HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\nuser=u"
                )
                .expect("head");
                let started = Instant::now();
                // One byte every 200 ms: never silent long enough for the
                // idle timeout, so only a total deadline can end it.
                while started.elapsed() < Duration::from_secs(4) {
                    if s.write_all(b"0").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                let mut raw = Vec::new();
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                let _ = s.read_to_end(&mut raw);
                String::from_utf8_lossy(&raw).to_string()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100)); // the tricklers take both threads
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    while started.elapsed() < Duration::from_secs(3) {
        let latency = healthz_latency(addr).expect("/healthz while bodies trickle");
        worst = worst.max(latency);
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    for t in tricklers {
        let answer = t.join().expect("trickler");
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "trickler got {answer:?}"
        );
    }
}

/// Case 2 (heads): connections that trickle a head one byte at a time each
/// held a tiny_http thread with no bound. Now the newest beyond
/// `--max-connections` are closed at once, the rest at the head deadline,
/// the thread count stays bounded, and `/healthz` answers.
#[test]
fn head_tricklers_beyond_max_connections_are_closed_and_threads_stay_bounded() {
    let _attack = one_attack_at_a_time();
    let redis = common::standalone_redis();
    let max = 20;
    let server = Server::start(
        &redis.url(),
        &[
            "--threads",
            "2",
            "--max-connections",
            &max.to_string(),
            "--idle-timeout-ms",
            "1000",
            "--request-timeout-ms",
            "1000",
        ],
    );
    let pid = server.pid();
    let mut conns: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(server.addr).expect("connecting");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: ")
                .expect("half a head");
            s
        })
        .collect();
    let started = Instant::now();
    let mut capped_at = None;
    let mut peak_threads = 0;
    // Trickle one head byte every 300 ms on every connection (under the
    // idle timeout) and watch the server close them.
    while started.elapsed() < Duration::from_secs(6) {
        for s in conns.iter_mut() {
            let _ = s.write_all(b"a");
        }
        let open = conns.iter().filter(|s| still_open(s)).count();
        peak_threads = peak_threads.max(threads_of(pid));
        if open <= max && capped_at.is_none() {
            capped_at = Some(started.elapsed());
        }
        if open == 0 {
            break;
        }
        let latency = healthz_latency(server.addr).expect("/healthz during the flood");
        assert!(
            latency < Duration::from_secs(1),
            "/healthz took {latency:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let capped_at = capped_at.expect("the connections were never capped");
    assert!(
        capped_at < Duration::from_secs(2),
        "capped only after {capped_at:?}"
    );
    let open = conns.iter().filter(|s| still_open(s)).count();
    assert_eq!(open, 0, "head tricklers outlived the head deadline");
    // tiny_http keeps a finished connection's thread 5 s for reuse.
    wait_until(
        "threads back under the cap",
        Duration::from_secs(15),
        || threads_of(pid) <= (max + 30) as u64,
    );
    eprintln!("peak threads {peak_threads} (100 head tricklers, cap {max})");
    assert!(healthz_latency(server.addr).is_some());
}

/// tiny_http buffers a head line without limit: a client streaming one
/// endless header grew the server's memory for as long as it sent. Now the
/// connection is cut once tiny_http has read about a megabyte of head, and
/// the server's peak memory stays small.
#[test]
fn an_endless_request_head_is_cut_off_before_it_costs_memory() {
    let _attack = one_attack_at_a_time();
    let redis = common::standalone_redis();
    let server = Server::start(&redis.url(), &[]);
    let pid = server.pid();
    let mut s = TcpStream::connect(server.addr).expect("connecting");
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        .expect("head start");
    let limit = 256usize << 20;
    let pump = {
        let mut w = s.try_clone().expect("clone");
        w.set_write_timeout(Some(Duration::from_secs(2))).ok();
        std::thread::spawn(move || {
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0usize;
            while sent < limit && w.write_all(&chunk).is_ok() {
                sent += chunk.len();
            }
            sent
        })
    };
    let started = Instant::now();
    assert!(
        closed_by_server(&mut s, Duration::from_secs(20)),
        "an endless head was still being read after 20 s"
    );
    let cut_after = started.elapsed();
    let sent = pump.join().expect("pump");
    let peak_kb = proc_status(pid, "VmHWM:");
    eprintln!(
        "endless head: closed after {cut_after:?}, {} MiB sent; server peak RSS {} MiB",
        sent >> 20,
        peak_kb >> 10
    );
    assert!(
        sent < limit,
        "the server took {} MiB of one head",
        limit >> 20
    );
    assert!(peak_kb < 128 * 1024, "server peak RSS {peak_kb} kB");
    assert!(healthz_latency(server.addr).is_some());
}

/// The issue's acceptance check: 1e15 and u64::MAX lengths, 400 idle
/// connections and 96 half-sent 5 MB bodies held open together; `/healthz`
/// polled throughout answers within a second each time, and the process
/// lives.
#[test]
fn healthz_answers_within_a_second_under_the_acceptance_attack() {
    let _attack = one_attack_at_a_time();
    let redis = common::standalone_redis();
    let mut server = Server::start(&redis.url(), &["--max-connections", "1024"]);
    let addr = server.addr;
    let pid = server.pid();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut worst = Duration::ZERO;
            let mut polls = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let latency = healthz_latency(addr).unwrap_or(Duration::from_secs(3600));
                worst = worst.max(latency);
                polls += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            (worst, polls)
        })
    };
    let mut held = Vec::new();
    for length in HUGE_LENGTHS {
        for (method, path) in [("GET", "/state"), ("POST", "/reset")] {
            held.push(bomb(addr, method, path, length));
        }
    }
    for _ in 0..400 {
        held.push(TcpStream::connect(addr).expect("an idle connection"));
    }
    let senders: Vec<_> = (0..96)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).expect("connecting");
                let total = 5 * 1024 * 1024;
                let _ = write!(
                    s,
                    "POST /bulk-load HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {total}\r\n\r\n"
                );
                let chunk = vec![b'a'; 64 * 1024];
                let mut sent = 0;
                while sent < total / 2 {
                    if s.write_all(&chunk).is_err() {
                        break; // the server refused it and closed: fine
                    }
                    sent += chunk.len();
                }
                s
            })
        })
        .collect();
    for t in senders {
        held.push(t.join().expect("sender"));
    }
    let mut peak_threads = 0;
    let mut peak_fds = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        peak_threads = peak_threads.max(threads_of(pid));
        peak_fds = peak_fds.max(fds_of(pid));
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, polls) = poller.join().expect("poller");
    eprintln!(
        "acceptance: /healthz max {worst:?} over {polls} polls; peak threads {peak_threads}, peak fds {peak_fds}"
    );
    assert!(polls > 10, "only {polls} polls");
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    assert!(server.is_running());
    drop(held);
}

fn entity_keys(redis: &impl common::Backend) -> usize {
    common::all_keys(&mut common::raw(redis)).len()
}

/// Case 8 with curl's view: a POST naming another origin is 403 and
/// deletes nothing; JSON sent as text/plain is 415; a same-origin POST and
/// an `--allowed-origin` one still work.
#[test]
fn cross_origin_posts_are_refused_and_bodies_need_their_declared_type() {
    let redis = common::standalone_redis();
    let server = Server::start(
        &redis.url(),
        &["--allowed-origin", "http://ops.example:8443"],
    );
    assert_eq!(server.post_form("/bulk-load", "count=5").0, 200);
    let post = |origin: Option<&str>, ctype: &str, path: &str, body: &str| {
        let mut s = TcpStream::connect(server.addr).expect("connecting");
        let mut head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n",
            server.addr,
            body.len()
        );
        if let Some(o) = origin {
            head.push_str(&format!("Origin: {o}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).expect("head");
        s.write_all(body.as_bytes()).expect("body");
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("response");
        let text = String::from_utf8_lossy(&raw).to_string();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        (status, text)
    };
    let form = "application/x-www-form-urlencoded";
    let (status, text) = post(Some("http://evil.example"), form, "/reset", "x=1");
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("\"error\""), "{text}");
    assert_eq!(post(Some("null"), form, "/reset", "x=1").0, 403);
    assert_eq!(
        entity_keys(&redis),
        5,
        "a cross-origin reset deleted entities"
    );

    let (status, text) = post(None, "text/plain", "/bulk-load", r#"{"count": 7}"#);
    assert_eq!(status, 415, "{text}");
    assert_eq!(post(None, form, "/bulk-load", r#"{"count": 7}"#).0, 415);
    assert_eq!(entity_keys(&redis), 5);

    let same = format!("http://{}", server.addr);
    assert_eq!(
        post(
            Some(&same),
            "application/json",
            "/bulk-load",
            r#"{"count": 6}"#
        )
        .0,
        200
    );
    assert_eq!(entity_keys(&redis), 6);
    assert_eq!(
        post(Some("http://ops.example:8443"), form, "/reset", "").0,
        200
    );
    assert_eq!(entity_keys(&redis), 0);
}

/// A one-page HTTP server on another port (so another origin) serving
/// `html`; stops with the test process.
fn serve_page(html: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding the page server");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 8192];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                html.len()
            );
            let _ = s.shutdown(Shutdown::Write);
        }
    });
    addr
}

/// Case 8 in a real browser: a page on another origin auto-submits a form
/// POST to /reset and fires `fetch` POSTs (no-cors, text/plain JSON and a
/// form) at /reset and /bulk-load. Every entity is still there afterwards.
#[test]
fn a_page_on_another_origin_cannot_reset_the_store() {
    let Some(bin) = crate::server::chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed (apt-get install -y chromium)");
        }
        eprintln!("SKIPPED a_page_on_another_origin_cannot_reset_the_store: no chromium");
        return;
    };
    let redis = common::standalone_redis();
    let server = Server::start(&redis.url(), &[]);
    assert_eq!(server.post_form("/bulk-load", "count=5").0, 200);
    let target = format!("http://{}", server.addr);
    let page = format!(
        r#"<!doctype html><html><body>
<form id="f" method="POST" action="{target}/reset"><input name="x" value="1"></form>
<iframe name="sink" id="sink"></iframe>
<script>
const post = (path, type, body) => fetch("{target}" + path, {{
  method: "POST", mode: "no-cors", headers: {{"Content-Type": type}}, body }}).catch(() => {{}});
Promise.all([
  post("/reset", "text/plain", "{{}}"),
  post("/reset", "application/x-www-form-urlencoded", "x=1"),
  post("/bulk-load", "text/plain", '{{"count": 1}}'),
]).then(() => {{
  const f = document.getElementById("f"); f.target = "sink"; f.submit();
  setTimeout(() => document.body.setAttribute("data-done", "1"), 2000);
}});
</script></body></html>"#
    );
    let evil = serve_page(page);
    let dom = crate::server::run_chromium(&bin, "--dump-dom", &format!("http://{evil}/"));
    assert!(
        dom.contains("data-done=\"1\""),
        "the page did not run:\n{dom}"
    );
    assert_eq!(
        entity_keys(&redis),
        5,
        "a page on another origin changed the store"
    );
    let (_, state) = server.get("/state");
    assert_eq!(state["entity_count"], 5, "{state}");
}

/// One generated malformed request.
#[derive(Debug, Clone)]
struct Hostile {
    method: &'static str,
    path: String,
    query: String,
    ctype: Option<&'static str>,
    origin: Option<&'static str>,
    body: Vec<u8>,
    /// Declared length relative to the body sent: 0 exact, >0 more than
    /// sent (the client then closes its side), <0 a huge declared length.
    length: i8,
}

fn param_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("u0001".to_owned()),
        Just("*".to_owned()),
        Just("?".to_owned()),
        Just("[a-z]".to_owned()),
        Just("%+1".to_owned()),
        Just("%zz".to_owned()),
        Just("%".to_owned()),
        Just("%ff%fe".to_owned()),
        Just("%00%01%1b".to_owned()),
        Just("-1".to_owned()),
        Just("0".to_owned()),
        Just("3".to_owned()),
        Just("100001".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("1e308".to_owned()),
        Just("a,b,,c".to_owned()),
        Just("x".repeat(5000)),
        "[a-zA-Z0-9%+*?\\[\\]_.,-]{0,40}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        Just("user"),
        Just("id"),
        Just("field"),
        Just("fields[]"),
        Just("ids"),
        Just("count"),
        Just("ttl"),
        Just("junk"),
    ];
    prop::collection::vec((key, param_value()), 0..5).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn json_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(br#"{"user": "u0001", "fields": ["a", 1]}"#.to_vec()),
        Just(br#"{"count": -5}"#.to_vec()),
        Just(br#"{"count": 1e400}"#.to_vec()),
        Just(br#"{"count": 18446744073709551616}"#.to_vec()),
        Just(br#"{"ids": "*"}"#.to_vec()),
        Just(br#"{"ids": [null, {}, []]}"#.to_vec()),
        Just(br#"{"user": "\u0000\u001b[31m"}"#.to_vec()),
        Just(br#"[1, 2]"#.to_vec()),
        Just(br#"{"user": "u0001""#.to_vec()),
        Just(b"{\"user\": \"\xff\xfe\"}".to_vec()),
        Just(b"\"just a string\"".to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn hostile() -> impl Strategy<Value = Hostile> {
    let endpoint = prop_oneof![
        Just("/healthz"),
        Just("/state"),
        Just("/inspect"),
        Just("/read"),
        Just("/batch-read"),
        Just("/bulk-load"),
        Just("/worker/toggle"),
        Just("/reset"),
        Just("/nope"),
        Just("/read/../reset"),
    ];
    let method = prop_oneof![Just("GET"), Just("POST"), Just("PUT"), Just("DELETE")];
    let ctype = prop_oneof![
        Just(None),
        Just(Some("application/json")),
        Just(Some("application/x-www-form-urlencoded")),
        Just(Some("text/plain")),
        Just(Some("multipart/form-data; boundary=x")),
        Just(Some("application/json; charset=latin1")),
    ];
    let origin = prop_oneof![
        4 => Just(None),
        1 => Just(Some("http://evil.example")),
        1 => Just(Some("null")),
    ];
    let body = prop_oneof![
        query().prop_map(String::into_bytes),
        json_body(),
        Just(Vec::new()),
    ];
    (method, endpoint, query(), ctype, origin, body, -1i8..=3).prop_map(
        |(method, path, query, ctype, origin, body, length)| Hostile {
            method,
            path: path.to_owned(),
            query,
            ctype,
            origin,
            body,
            // Mostly exact lengths; sometimes short or huge.
            length: match length {
                -1 => -1,
                3 => 1,
                _ => 0,
            },
        },
    )
}

/// Sends `h` on a fresh connection; the status and the body.
fn send_hostile(addr: SocketAddr, h: &Hostile) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect(addr).expect("connecting");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let declared = match h.length {
        0 => h.body.len().to_string(),
        l if l > 0 => (h.body.len() + 100).to_string(),
        _ => "99999999999999999".to_owned(),
    };
    let target = if h.query.is_empty() {
        h.path.clone()
    } else {
        format!("{}?{}", h.path, h.query)
    };
    let mut head = format!(
        "{} {target} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {declared}\r\n",
        h.method
    );
    if let Some(ct) = h.ctype {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    if let Some(o) = h.origin {
        head.push_str(&format!("Origin: {o}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(&h.body);
    if h.length != 0 {
        let _ = s.shutdown(Shutdown::Write); // truncated: the client gives up
    }
    let sent_at = Instant::now();
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw);
    if raw.is_empty() && h.length > 0 {
        // tiny_http reads a body of at most 1024 bytes before handing the
        // request over; cut short, it closes without an answer.
        return (499, b"{}".to_vec());
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| {
            // How the read ended tells a server that closed at once (EOF
            // within microseconds) from one that never answered (timeout).
            panic!(
                "no response head for {h:?}: {:?} (read {read:?} after {:?}, from {:?})",
                String::from_utf8_lossy(&raw),
                sent_at.elapsed(),
                s.local_addr()
            )
        });
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, raw[split + 4..].to_vec())
}

/// Generated malformed requests to every endpoint of one server: each is
/// answered 2xx or 4xx with a JSON body (never a 5xx while Redis is up),
/// the process stays alive, and no key outside the prefix appears.
#[test]
fn malformed_requests_get_a_json_4xx_never_a_5xx_or_a_foreign_key() {
    let redis = common::standalone_redis();
    let mut server = Server::start(&redis.url(), &["--request-timeout-ms", "2000"]);
    assert_eq!(server.post_form("/bulk-load", "count=3").0, 200);
    let addr = server.addr;
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    });
    let started = Instant::now();
    runner
        .run(&hostile(), |h| {
            let (status, body) = send_hostile(addr, &h);
            prop_assert!(
                (200..300).contains(&status) || (400..500).contains(&status),
                "status {status} for {h:?}: {}",
                String::from_utf8_lossy(&body)
            );
            let json: Result<Value, _> = serde_json::from_slice(&body);
            prop_assert!(
                json.is_ok(),
                "not JSON for {h:?}: {}",
                String::from_utf8_lossy(&body)
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(server.is_running(), "the server died");
    assert!(healthz_latency(addr).is_some());
    let keys = common::all_keys(&mut common::raw(&redis));
    let foreign: Vec<_> = keys.iter().filter(|k| !k.starts_with("fs:user:")).collect();
    assert!(foreign.is_empty(), "keys outside the prefix: {foreign:?}");
    eprintln!("256 hostile requests in {:?}", started.elapsed());
}
