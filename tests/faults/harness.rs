//! Fixtures for the fault and load suites: a redis-server the test can kill,
//! restart (with or without persistence) and pause; the real `fs-server` and
//! `fs-loader` binaries; an HTTP client that reports instead of panicking;
//! traffic threads that record every answer; the store's invariants.

#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const PREFIX: &str = "fs:user:";

/// One fault at a time: the suite measures recovery times, which mean
/// nothing when several faults share two cores.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Polls `cond` every 10 ms until it holds; panics with `what` on timeout.
/// Returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    started.elapsed()
}

// ---------------------------------------------------------------- Redis

/// A redis-server on a fixed loopback port and data dir, so it can be
/// SIGKILLed and started again in place. `persistent` turns on the AOF with
/// `appendfsync always`: every write Redis confirmed survives the kill.
pub struct Redis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    pub persistent: bool,
}

impl Redis {
    pub fn start(persistent: bool) -> Redis {
        let dir = tempfile::Builder::new()
            .prefix("fs-fault-redis-")
            .tempdir()
            .expect("tempdir");
        let mut redis = Redis {
            child: None,
            dir,
            port: 0,
            persistent,
        };
        for attempt in 1.. {
            redis.port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if redis.spawn_and_wait(Duration::from_secs(10)) {
                return redis;
            }
            assert!(attempt < 5, "redis-server did not start:\n{}", redis.log());
        }
        unreachable!()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// SIGKILL: no shutdown save, no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port and data dir; returns once it
    /// answers PING (after loading its AOF, when persistent).
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.spawn_and_wait(Duration::from_secs(10)) {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts it again in place without waiting: Redis answers `LOADING`
    /// until its data is back in memory (`ping` says when).
    pub fn restart_nowait(&mut self) {
        self.kill();
        let bin = feature_store::managed_redis::redis_server_binary()
            .unwrap_or_else(|e| panic!("no redis-server: {e}"));
        self.child = Some(self.command(bin).spawn().expect("spawning redis-server"));
    }

    /// A fresh raw connection for checking and for causing faults.
    pub fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(self.url()).expect("url");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connecting to the test redis");
        conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
        conn
    }

    fn command(&self, bin: PathBuf) -> Command {
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--daemonize", "no"])
            .args(["--enable-debug-command", "yes"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.persistent {
            cmd.args(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            cmd.args(["--appendonly", "no"]);
        }
        cmd
    }

    fn spawn_and_wait(&mut self, timeout: Duration) -> bool {
        let bin = feature_store::managed_redis::redis_server_binary()
            .unwrap_or_else(|e| panic!("no redis-server: {e}"));
        let Ok(child) = self.command(bin).spawn() else {
            return false;
        };
        self.child = Some(child);
        let deadline = Instant::now() + timeout;
        loop {
            if !matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None))) {
                self.child = None;
                return false;
            }
            if ping(&self.url()) {
                return true;
            }
            if Instant::now() > deadline {
                self.kill();
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether Redis at `url` answers PING (not while it loads its data).
pub fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    // A Redis still loading its AOF answers LOADING: not ready yet.
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

// ---------------------------------------------------------------- fs-server

/// The real fs-server binary; its stderr goes to a file the test reads for
/// panics. Killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    stderr: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(redis_url: &str, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = dir.path().join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
            .env_remove("FS_REDIS_URL")
            .args(["--redis-url", redis_url, "--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("spawning fs-server");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                panic!(
                    "fs-server exited before printing its URL:\n{}",
                    std::fs::read_to_string(&stderr).unwrap_or_default()
                );
            };
            if let Some(rest) = line.strip_prefix("open http://") {
                break rest.trim_end_matches('/').parse().expect("address");
            }
        };
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            addr,
            stderr,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Still running, and never panicked (a panicking request thread may
    /// leave the process up but a thread short).
    pub fn assert_alive_without_panic(&mut self, after: &str) {
        let status = self.child.try_wait().expect("try_wait");
        assert!(
            status.is_none(),
            "{after}: fs-server exited ({status:?}):\n{}",
            self.stderr()
        );
        let stderr = self.stderr();
        assert!(
            !stderr.contains("panicked"),
            "{after}: fs-server panicked:\n{stderr}"
        );
    }

    pub fn get(&self, path: &str) -> Reply {
        request(self.addr, "GET", path, b"", Duration::from_secs(30))
    }

    pub fn post(&self, path: &str, form: &str) -> Reply {
        request(
            self.addr,
            "POST",
            path,
            form.as_bytes(),
            Duration::from_secs(30),
        )
    }

    /// Whether `fs-server --help` lists `flag` (flags that other work adds).
    pub fn has_flag(flag: &str) -> bool {
        let out = Command::new(env!("CARGO_BIN_EXE_fs-server"))
            .arg("--help")
            .output()
            .expect("fs-server --help");
        String::from_utf8_lossy(&out.stdout).contains(flag)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one HTTP request got: a status and JSON body, or the transport
/// error that kept it from getting one; and how long it took.
#[derive(Debug, Clone)]
pub struct Reply {
    pub result: Result<(u16, Value), String>,
    pub elapsed: Duration,
}

impl Reply {
    pub fn status(&self) -> Option<u16> {
        self.result.as_ref().ok().map(|(s, _)| *s)
    }

    pub fn ok(&self) -> bool {
        self.status() == Some(200)
    }

    pub fn body(&self) -> &Value {
        static NULL: Value = Value::Null;
        self.result.as_ref().map(|(_, v)| v).unwrap_or(&NULL)
    }

    /// A failure the way a client should see one: a 5xx whose body is
    /// `{"error": "..."}`.
    pub fn is_json_5xx(&self) -> bool {
        matches!(&self.result, Ok((s, v)) if (500..600).contains(s) && v["error"].is_string())
    }
}

/// One request on a fresh connection (`Connection: close`), form-encoded.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Reply {
    let started = Instant::now();
    let result = (|| -> Result<(u16, Value), String> {
        let mut s =
            TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(timeout)).ok();
        s.set_write_timeout(Some(timeout)).ok();
        let mut msg = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if method == "POST" {
            msg.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        msg.push_str("\r\n");
        let mut bytes = msg.into_bytes();
        bytes.extend_from_slice(body);
        s.write_all(&bytes).map_err(|e| format!("write: {e}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| format!("read: {e}"))?;
        parse_response(&raw)
    })();
    Reply {
        result,
        elapsed: started.elapsed(),
    }
}

pub fn parse_response(raw: &[u8]) -> Result<(u16, Value), String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no header end in {:?}", String::from_utf8_lossy(raw)))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    let body = &raw[split + 4..];
    let value = serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into()));
    Ok((status, value))
}

// ---------------------------------------------------------------- traffic

/// Requests that traffic threads send in turn.
pub const READS: &[(&str, &str)] = &[
    ("/read", "user=u0001&field=country_iso&field=tx_count_5m"),
    (
        "/batch-read",
        "count=20&field=country_iso&field=last_login_ts",
    ),
];

/// One answered (or not) request, stamped with when it started.
#[derive(Debug, Clone)]
pub struct Sample {
    pub path: &'static str,
    pub started: Instant,
    pub reply: Reply,
}

/// Threads sending requests back to back until stopped, keeping every
/// reply.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

impl Traffic {
    pub fn start(
        addr: SocketAddr,
        threads: usize,
        mix: &'static [(&'static str, &'static str)],
    ) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|t| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut samples = Vec::new();
                    let mut i = t;
                    while !stop.load(Ordering::Relaxed) {
                        let (path, body) = mix[i % mix.len()];
                        i += 1;
                        let started = Instant::now();
                        let reply =
                            request(addr, "POST", path, body.as_bytes(), Duration::from_secs(30));
                        samples.push(Sample {
                            path,
                            started,
                            reply,
                        });
                        // Not a spin: a few hundred requests a second is
                        // traffic enough and leaves the CPU to the server.
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    samples
                })
            })
            .collect();
        Traffic { stop, threads }
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .flat_map(|t| t.join().expect("traffic thread"))
            .collect()
    }
}

/// Every sample either a 200 or a 5xx JSON error answered within `bound`;
/// and since every fault here is Redis being away, slow or loading, that
/// 5xx is a 503 `redis unavailable` (something to wait out), never a 500.
/// Returns what a user saw, e.g. `200 x412, 503 x37 (slowest failure 0.31 s)`.
pub fn check_failures(what: &str, samples: &[Sample], bound: Duration) -> String {
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut slowest_failure = Duration::ZERO;
    let mut errors: Vec<String> = Vec::new();
    for s in samples {
        let key = match s.reply.status() {
            Some(code) => code.to_string(),
            None => "no answer".into(),
        };
        *counts.entry(key).or_default() += 1;
        if s.reply.ok() {
            continue;
        }
        assert!(
            s.reply.is_json_5xx(),
            "{what}: {} got {:?} after {:?}, not a 5xx JSON error",
            s.path,
            s.reply.result,
            s.reply.elapsed
        );
        assert!(
            s.reply.elapsed <= bound,
            "{what}: {} answered {:?} only after {:?} (bound {bound:?})",
            s.path,
            s.reply.result,
            s.reply.elapsed
        );
        let (code, body) = s.reply.result.as_ref().expect("checked above");
        assert!(
            *code == 503
                && body["error"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("redis unavailable")),
            "{what}: {} got {code} {body}: Redis being away is a 503 to wait out",
            s.path
        );
        slowest_failure = slowest_failure.max(s.reply.elapsed);
        let error = format!("{code} {}", body["error"].as_str().unwrap_or_default());
        if !errors.contains(&error) {
            errors.push(error);
        }
    }
    for e in &errors {
        eprintln!("  {what}: {e}");
    }
    let mut parts: Vec<_> = counts.into_iter().collect();
    parts.sort();
    let mut seen = parts
        .iter()
        .map(|(code, n)| format!("{code} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    if slowest_failure > Duration::ZERO {
        seen.push_str(&format!(
            " (slowest failure {:.2} s)",
            slowest_failure.as_secs_f64()
        ));
    }
    seen
}

/// Polls until `/healthz` is 200 and a `/read` is 200; the time from
/// `since` (when the fault ended) to that first working read.
pub fn time_to_recover(server: &Server, since: Instant) -> Duration {
    wait_until(
        "healthz and a read back to 200 without a restart",
        Duration::from_secs(30),
        || server.get("/healthz").ok() && server.post("/read", "user=u0001").ok(),
    );
    since.elapsed()
}

/// One line of the fault table (copied into docs/operating.md): the time
/// to recover runs from the end of the fault (the restart command, the end
/// of the pause) to the first working `/read`.
pub fn report(fault: &str, seen: &str, recovered: Duration) {
    eprintln!("FAULT | {fault} | {seen} | {} ms", recovered.as_millis());
}

// ---------------------------------------------------------------- invariants

/// Every key is under the prefix and has a key TTL; every streaming field
/// has a field TTL and no batch field has one.
pub fn check_invariants(conn: &mut redis::Connection, step: &str) -> usize {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
    for key in &keys {
        assert!(
            key.starts_with(PREFIX),
            "{step}: key outside the prefix: {key}"
        );
        crate::common::check_entity_ttls(conn, key, step, false);
    }
    keys.len()
}

pub fn dbsize(conn: &mut redis::Connection) -> u64 {
    redis::cmd("DBSIZE").query(conn).unwrap_or(0)
}

// ---------------------------------------------------------------- fs-loader

/// `rows` JSON lines `{"id": "l000001", "features": {"tx_count_7d": 1, ...}}`.
pub fn write_rows(dir: &Path, rows: usize) -> PathBuf {
    let path = dir.join("rows.jsonl");
    let mut out = std::io::BufWriter::new(File::create(&path).expect("rows file"));
    for n in 1..=rows {
        writeln!(
            out,
            "{{\"id\": \"{}\", \"features\": {{\"tx_count_7d\": {n}, \"country_iso\": \"DE\"}}}}",
            loader_id(n)
        )
        .expect("writing rows");
    }
    out.flush().expect("flush");
    path
}

pub fn loader_id(n: usize) -> String {
    format!("l{n:06}")
}

/// The loader on `file`, started in the background.
pub fn spawn_loader(redis_url: &str, file: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_fs-loader"))
        .env_remove("FS_REDIS_URL")
        .env_remove("FS_KEY_PREFIX")
        .env_remove("FS_CHUNK_SIZE")
        .args(["--redis-url", redis_url, "--quiet", "--from"])
        .arg(file)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader")
}

/// The loader's summary, `name: value` per line.
pub struct Summary {
    pub fields: HashMap<String, String>,
    pub code: Option<i32>,
    pub text: String,
}

impl Summary {
    pub fn of(out: &Output) -> Summary {
        let stdout = String::from_utf8_lossy(&out.stdout);
        Summary {
            fields: stdout
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
            code: out.status.code(),
            text: format!(
                "exit {:?}\n--- stdout\n{stdout}--- stderr (tail)\n{}",
                out.status.code(),
                tail(&String::from_utf8_lossy(&out.stderr), 2000)
            ),
        }
    }

    pub fn count(&self, name: &str) -> u64 {
        self.fields
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no number {name:?} in the summary:\n{}", self.text))
    }

    /// read = written + rejected + failed, whatever happened.
    pub fn assert_accounted(&self) {
        assert_eq!(
            self.count("read"),
            self.count("written") + self.count("rejected") + self.count("failed"),
            "the loader's accounting:\n{}",
            self.text
        );
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// How many of rows `1..=rows` are in Redis with the value the file gave.
pub fn rows_present(conn: &mut redis::Connection, rows: usize) -> usize {
    let mut present = 0;
    for chunk in (1..=rows).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for &n in chunk {
            pipe.cmd("HGET")
                .arg(format!("{PREFIX}{}", loader_id(n)))
                .arg("tx_count_7d");
        }
        let values: Vec<Option<String>> = pipe.query(conn).expect("HGET pipeline");
        present += chunk
            .iter()
            .zip(values)
            .filter(|(n, v)| v.as_deref() == Some(n.to_string().as_str()))
            .count();
    }
    present
}
