//! The HTTP rows: the real `fs-server` binary, driven by a small keep-alive
//! HTTP/1.1 load generator of ours (std `TcpStream`, `Content-Length`
//! bodies, one request in flight per connection, every latency recorded).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::library::{self, Ctx, READ_FIELDS};
use crate::measure::{paired, Recorder};
use crate::report::{Check, Figures, RatioOn, Row};
use crate::BResult;

/// `name` (one of this package's binaries) next to this executable: cargo
/// puts every binary of the package in the same directory. `cargo run --bin
/// fs-bench` builds only the bench, so a release bench first asks cargo to
/// bring `name` up to date (a no-op when it is); a debug one (the test
/// suite's, where `cargo test` has built every binary) never builds.
pub fn sibling_bin(name: &str) -> BResult<PathBuf> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    if !cfg!(debug_assertions) {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        eprintln!("fs-bench: cargo build --release --bin {name} ...");
        let built = Command::new(&cargo)
            .args(["build", "--release", "--bin", name, "--manifest-path"])
            .arg(&manifest)
            .stdin(Stdio::null())
            .status();
        match built {
            Ok(s) if s.success() => {}
            Ok(s) if bin.exists() => {
                eprintln!("fs-bench: building {name} failed ({s}); using the one there")
            }
            Err(e) if bin.exists() => {
                eprintln!("fs-bench: could not run cargo ({e}); using the {name} there")
            }
            Ok(s) => return Err(format!("cargo build --release --bin {name} failed ({s})").into()),
            Err(e) => return Err(format!("running cargo to build {name}: {e}").into()),
        }
    }
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "no {name} next to {} (build it: cargo build --release --bins)",
            exe.display()
        )
        .into())
    }
}

// ---- the server under test ------------------------------------------------

/// fs-server listens before it counts anything (its entity cache works in
/// the background); the margin covers a slow start on a loaded machine.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// A running `fs-server`, killed when dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// The server's CPU time so far (user + system, all threads), from
    /// `/proc`; `None` where that cannot be read.
    pub fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces), which ends
        // at the last ')': utime and stime are the 12th and 13th of them.
        let rest = &stat[stat.rfind(')')? + 2..];
        let mut fields = rest.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        // In USER_HZ ticks, which Linux fixes at 100 for /proc.
        Some(Duration::from_millis((utime + stime) * 10))
    }

    pub fn start(bin: &Path, redis_url: &str) -> BResult<Server> {
        Server::start_with_flags(bin, redis_url, &server_flags())
    }

    /// A server with these flags instead of the quiet target's.
    pub fn start_with_flags(bin: &Path, redis_url: &str, flags: &[String]) -> BResult<Server> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = std::env::temp_dir().join(format!("fs-bench-server-{port}.log"));
        let log_file = std::fs::File::create(&log)?;
        let mut cmd = Command::new(bin);
        cmd.args(["--redis-url", redis_url])
            .args(["--port", &port.to_string()])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let mut server = Server { child, addr, log };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> BResult<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Err(format!("fs-server exited with {status}:\n{}", self.log_text()).into());
            }
            if let Ok(mut c) = HttpClient::connect(self.addr) {
                if let Ok((200, _)) = c.request("GET", "/healthz", b"") {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "fs-server not ready within {READY_TIMEOUT:?}:\n{}",
                    self.log_text()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The flags that make the server a quiet target. With `--redis-url` it
/// seeds nothing and leaves its streaming worker stopped. Its entity cache
/// scans under a budget of 1% of Redis time whatever the size; refreshing
/// once an hour takes even that out of the measurements.
fn server_flags() -> Vec<String> {
    vec!["--refresh-ms".into(), "3600000".into()]
}

// ---- the load generator ---------------------------------------------------

/// One keep-alive HTTP/1.1 connection.
pub struct HttpClient {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    request: Vec<u8>,
    /// Sent as `Authorization: Bearer ...` on every request when set.
    token: Option<String>,
}

impl HttpClient {
    pub fn connect(addr: SocketAddr) -> io::Result<HttpClient> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        Ok(HttpClient {
            stream,
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            request: Vec::with_capacity(4096),
            token: None,
        })
    }

    /// This client sends `token` as a bearer token.
    pub fn with_token(mut self, token: &str) -> HttpClient {
        self.token = Some(token.to_owned());
        self
    }

    /// Sends one request and reads the whole response; returns the status
    /// and the body.
    pub fn request(&mut self, method: &str, path: &str, body: &[u8]) -> BResult<(u16, Vec<u8>)> {
        self.request.clear();
        write!(
            self.request,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )?;
        if let Some(t) = &self.token {
            write!(self.request, "Authorization: Bearer {t}\r\n")?;
        }
        self.request.extend_from_slice(b"\r\n");
        self.request.extend_from_slice(body);
        self.stream.write_all(&self.request)?;
        self.read_response()
    }

    pub fn post(&mut self, path: &str, body: &[u8]) -> BResult<(u16, Vec<u8>)> {
        self.request("POST", path, body)
    }

    fn read_response(&mut self) -> BResult<(u16, Vec<u8>)> {
        let head_end = loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n\r\n") {
                break self.start + i + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[self.start..head_end])
            .map_err(|_| "response head is not UTF-8")?
            .to_owned();
        self.start = head_end;
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line in {head:?}"))?;
        let mut length = None;
        let mut chunked = false;
        for line in lines {
            if let Some((k, v)) = line.split_once(':') {
                let (k, v) = (k.trim(), v.trim());
                if k.eq_ignore_ascii_case("content-length") {
                    length = Some(
                        v.parse::<usize>()
                            .map_err(|_| format!("bad content-length {v:?}"))?,
                    );
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let body = if chunked {
            self.read_chunked()?
        } else {
            self.take(length.unwrap_or(0))?
        };
        Ok((status, body))
    }

    fn read_chunked(&mut self) -> BResult<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.line()?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line()?.is_empty() {}
                return Ok(body);
            }
            body.extend_from_slice(&self.take(size)?);
            self.line()?;
        }
    }

    fn line(&mut self) -> BResult<String> {
        loop {
            if let Some(i) = find(&self.buf[self.start..self.end], b"\r\n") {
                let line =
                    String::from_utf8_lossy(&self.buf[self.start..self.start + i]).into_owned();
                self.start += i + 2;
                return Ok(line);
            }
            self.fill()?;
        }
    }

    fn take(&mut self, n: usize) -> BResult<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.start == self.end {
                self.fill()?;
            }
            let k = (n - out.len()).min(self.end - self.start);
            out.extend_from_slice(&self.buf[self.start..self.start + k]);
            self.start += k;
        }
        Ok(out)
    }

    /// Reads more bytes into the buffer (compacting it first).
    fn fill(&mut self) -> BResult<()> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.stream.read(&mut self.buf[self.end..])?;
        if n == 0 {
            return Err("server closed the connection".into());
        }
        self.end += n;
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn check_ok(what: &str, status: u16, body: &[u8]) -> BResult<()> {
    if status == 200 {
        Ok(())
    } else {
        Err(format!("{what}: HTTP {status}: {}", String::from_utf8_lossy(body)).into())
    }
}

/// Checks once that the server read what the bench wrote.
fn expect_field(body: &[u8], name: &str, want: u64) -> BResult<()> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    match v.get(name).and_then(|x| x.as_u64()) {
        Some(got) if got == want => Ok(()),
        _ => Err(format!(
            "expected \"{name}\": {want} in {}",
            String::from_utf8_lossy(body)
        )
        .into()),
    }
}

// ---- request bodies -------------------------------------------------------

pub fn read_body(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "user": id, "fields": READ_FIELDS }))
        .unwrap_or_default()
}

fn batch_body(ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ids": ids, "fields": READ_FIELDS }))
        .unwrap_or_default()
}

// ---- rows -----------------------------------------------------------------

pub fn rows(ctx: &mut Ctx, server_bin: &Path, rows: &mut Vec<Row>) -> BResult<()> {
    eprintln!("fs-bench: starting {} ...", server_bin.display());
    let server = Server::start(server_bin, &ctx.redis.url())?;
    crate::step("http /read, 1 client", rows, read_one_client(ctx, &server))?;
    crate::step(
        "http /read, metrics on vs off",
        rows,
        read_metrics_cost(ctx, server_bin, &server),
    )?;
    crate::step("http /read, 8 clients", rows, read_concurrent(ctx, &server))?;
    crate::step(
        "http /read with tokens",
        rows,
        read_with_auth(ctx, server_bin),
    )?;
    crate::step("http /batch-read", rows, batch_read(ctx, &server))?;
    crate::step(
        "http /v1/features",
        rows,
        crate::vectors::http_row(ctx, &server),
    )?;
    Ok(())
}

/// `POST /read`, one keep-alive client, against the same read through the
/// library in this process.
fn read_one_client(ctx: &mut Ctx, server: &Server) -> BResult<Row> {
    let n = ctx.sizes.http_iters;
    let ids = library::read_ids(ctx.streamed, n, 6);
    let bodies: Vec<Vec<u8>> = ids.iter().map(|id| read_body(id)).collect();
    let mut client = HttpClient::connect(server.addr)?;
    let (status, body) = client.post("/read", &bodies[0])?;
    check_ok("POST /read", status, &body)?;
    expect_field(&body, "returned_count", READ_FIELDS.len() as u64)?;
    let store = ctx.store;
    let (ours, base) = paired(
        n / 10,
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let (status, body) = client.post("/read", &bodies[i])?;
            check_ok("POST /read", status, &body)
        },
        |i| -> BResult<()> {
            store.read_fresh(&ids[i], &READ_FIELDS)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "http_read",
        operation: "HTTP `POST /read`, 5 fields, one keep-alive client".into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: "the same read through the library (`read_fresh`, what `/read` calls)"
            .into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![
            Check::P50AtMost(Duration::from_micros(150)),
            Check::P99AtMost(Duration::from_millis(1)),
        ],
        note: format!(
            "{n} requests after {} warm-up ones over random users, on one keep-alive connection \
             (TCP_NODELAY), latency from the request's first byte written to the response's last \
             byte read; interleaved in {} rounds with the same reads through `FeatureStore` in \
             this process.",
            n / 10,
            ctx.sizes.rounds
        ),
    })
}

/// The bench's tokens (only ever given to its own servers).
const BENCH_READ_TOKEN: &str = "fs-bench-read-token-0001";
const BENCH_ADMIN_TOKEN: &str = "fs-bench-admin-token-0001";

/// `POST /read` on a server with tokens (the read token sent, checked on
/// every request), against the same read on a server without. Both are
/// started here, side by side with the same flags but the tokens, so
/// neither is warmer (the shared server has served the other rows).
fn read_with_auth(ctx: &mut Ctx, server_bin: &Path) -> BResult<Row> {
    let plain = Server::start(server_bin, &ctx.redis.url())?;
    let mut flags = server_flags();
    flags.extend(
        [
            "--read-token",
            BENCH_READ_TOKEN,
            "--admin-token",
            BENCH_ADMIN_TOKEN,
        ]
        .map(String::from),
    );
    let guarded = Server::start_with_flags(server_bin, &ctx.redis.url(), &flags)?;
    // Twice /read's count, in rounds of 10 requests a side: a 5% bound
    // needs the two sides to share the machine's noise closely.
    let n = ctx.sizes.http_iters * 2;
    let rounds = n / 10;
    let ids = library::read_ids(ctx.streamed, n, 8);
    let bodies: Vec<Vec<u8>> = ids.iter().map(|id| read_body(id)).collect();
    let mut with = HttpClient::connect(guarded.addr)?.with_token(BENCH_READ_TOKEN);
    let mut without = HttpClient::connect(plain.addr)?;
    // The guarded server really asks: no token, no read.
    let (status, _) = HttpClient::connect(guarded.addr)?.post("/read", &bodies[0])?;
    if status != 401 {
        return Err(format!("POST /read without a token: HTTP {status}, expected 401").into());
    }
    let (status, body) = with.post("/read", &bodies[0])?;
    check_ok("POST /read with the read token", status, &body)?;
    expect_field(&body, "returned_count", READ_FIELDS.len() as u64)?;
    let (ours, base) = paired(
        n / 10,
        n,
        rounds,
        |i| -> BResult<()> {
            let (status, body) = with.post("/read", &bodies[i])?;
            check_ok("POST /read with the read token", status, &body)
        },
        |i| -> BResult<()> {
            let (status, body) = without.post("/read", &bodies[i])?;
            check_ok("POST /read", status, &body)
        },
    )?;
    Ok(Row {
        id: "http_read_auth",
        operation: "HTTP `POST /read` on a server with tokens, read token sent, one client".into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: "the same `POST /read` on a server without tokens".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.05)],
        note: format!(
            "{n} requests after {} warm-up ones over random users, each server on its own \
             keep-alive connection, interleaved in {rounds} rounds of 10 a side; both servers \
             started for this row with the same flags but the tokens. The guarded one hashes \
             the bearer token (SHA-256) and compares it with each known digest in constant \
             time before reading the body.",
            n / 10,
        ),
    })
}

/// What `/metrics` costs `/read`: the server as shipped against the same
/// binary started with `--no-metrics` (a hidden flag kept only for this
/// row), each on one keep-alive client, interleaved round by round on the
/// same Redis so both see the same machine.
fn read_metrics_cost(ctx: &mut Ctx, server_bin: &Path, server: &Server) -> BResult<Row> {
    let n = ctx.sizes.http_iters;
    let mut flags = server_flags();
    flags.push("--no-metrics".into());
    let bare = Server::start_with_flags(server_bin, &ctx.redis.url(), &flags)?;
    let ids = library::read_ids(ctx.streamed, n, 7);
    let bodies: Vec<Vec<u8>> = ids.iter().map(|id| read_body(id)).collect();
    let mut with = HttpClient::connect(server.addr)?;
    let mut without = HttpClient::connect(bare.addr)?;
    let (status, body) = without.request("GET", "/metrics", b"")?;
    if status != 404 {
        return Err(format!("--no-metrics still serves /metrics ({status}): {body:?}").into());
    }
    let (ours, base) = paired(
        n / 10,
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let (status, body) = with.post("/read", &bodies[i])?;
            check_ok("POST /read", status, &body)
        },
        |i| -> BResult<()> {
            let (status, body) = without.post("/read", &bodies[i])?;
            check_ok("POST /read (--no-metrics)", status, &body)
        },
    )?;
    Ok(Row {
        id: "http_read_metrics",
        operation: "HTTP `POST /read`, 5 fields, one keep-alive client, metrics counted".into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: "the same server binary with `--no-metrics`".into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::RatioAtMost(1.05)],
        note: format!(
            "{n} requests after {} warm-up ones to each of two servers on the same Redis, one \
             counting every request for `/metrics` (route and status counters, a latency \
             histogram) and one started with `--no-metrics`; interleaved in {} rounds.",
            n / 10,
            ctx.sizes.rounds
        ),
    })
}

/// `POST /read` from 8 keep-alive clients for `http_seconds`, against
/// `redis-benchmark -c 8` HMGET (run before and after; the mean is used).
fn read_concurrent(ctx: &mut Ctx, server: &Server) -> BResult<Row> {
    let clients = ctx.sizes.http_clients;
    let secs = ctx.sizes.http_seconds;
    let before = library::redis_benchmark(ctx.redis, clients, ctx.sizes.redis_benchmark_multi)?;
    let ours = drive(
        server.addr,
        clients,
        Duration::from_secs(secs),
        ctx.streamed,
    )?;
    let after = library::redis_benchmark(ctx.redis, clients, ctx.sizes.redis_benchmark_multi)?;
    let base = match (before, after) {
        (
            Figures::External {
                p50: a50,
                p99: a99,
                per_sec: a,
            },
            Figures::External {
                p50: b50,
                p99: b99,
                per_sec: b,
            },
        ) => Figures::External {
            p50: (a50 + b50) / 2,
            p99: (a99 + b99) / 2,
            per_sec: (a + b) / 2.0,
        },
        (x, _) => x,
    };
    Ok(Row {
        id: "http_read_concurrent",
        operation: format!("HTTP `POST /read`, {clients} concurrent keep-alive clients, {secs} s"),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name: format!("`redis-benchmark -c {clients}` HMGET, same 5 fields"),
        baseline: base,
        ratio_on: RatioOn::PerSec,
        goal: vec![Check::PerSecAtLeast(25_000.0)],
        note: format!(
            "{clients} threads, each with its own keep-alive connection and one request in flight, \
             for {secs} s after a 0.5 s warm-up; req/s is requests completed over wall time, \
             p50/p99 over every request. The baseline is `redis-benchmark -c {clients} -n {}` \
             run just before and just after (mean of the two); the issue's goal is the absolute \
             25,000 req/s (about 0.4x of raw Redis)."
        ,
            ctx.sizes.redis_benchmark_multi
        ),
    })
}

/// `clients` threads hammering `POST /read` for `run` after a warm-up.
fn drive(
    addr: SocketAddr,
    clients: usize,
    run: Duration,
    among: usize,
) -> BResult<crate::measure::Summary> {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(clients + 1));
    let mut handles = Vec::new();
    for c in 0..clients {
        let (stop, measuring, barrier) = (stop.clone(), measuring.clone(), barrier.clone());
        let ids = library::read_ids(among, 4096, 100 + c as u64);
        let bodies: Vec<Vec<u8>> = ids.iter().map(|id| read_body(id)).collect();
        handles.push(std::thread::spawn(move || -> BResult<Recorder> {
            let mut client = HttpClient::connect(addr);
            barrier.wait();
            let client = client.as_mut().map_err(|e| format!("connect: {e}"))?;
            let mut rec = Recorder::with_capacity(200_000);
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let (status, body) = client.post("/read", &bodies[i % bodies.len()])?;
                let took = t.elapsed();
                check_ok("POST /read", status, &body)?;
                if measuring.load(Ordering::Relaxed) {
                    rec.record(took, 1);
                }
                i += 1;
            }
            Ok(rec)
        }));
    }
    barrier.wait();
    std::thread::sleep(Duration::from_millis(500));
    measuring.store(true, Ordering::Relaxed);
    let t = Instant::now();
    std::thread::sleep(run);
    measuring.store(false, Ordering::Relaxed);
    let wall = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let mut all = Recorder::default();
    for h in handles {
        let rec = h.join().map_err(|_| "a load-generator thread panicked")??;
        all.merge(&rec);
    }
    Ok(all.summary_over(wall))
}

/// `POST /batch-read` of 100 users against the same batch through the library.
fn batch_read(ctx: &mut Ctx, server: &Server) -> BResult<Row> {
    let n = ctx.sizes.http_batch_iters;
    let ids = library::read_ids(ctx.streamed, n * 100, 7);
    let bodies: Vec<Vec<u8>> = ids.chunks(100).map(batch_body).collect();
    let mut client = HttpClient::connect(server.addr)?;
    let (status, body) = client.post("/batch-read", &bodies[0])?;
    check_ok("POST /batch-read", status, &body)?;
    expect_field(&body, "found_count", 100)?;
    expect_field(&body, "field_count", READ_FIELDS.len() as u64)?;
    expect_field(&body, "values_found", 100 * READ_FIELDS.len() as u64)?;
    let store = ctx.store;
    let (ours, base) = paired(
        (n / 10).max(5),
        n,
        ctx.sizes.rounds,
        |i| -> BResult<()> {
            let (status, body) = client.post("/batch-read", &bodies[i])?;
            check_ok("POST /batch-read", status, &body)
        },
        |i| -> BResult<()> {
            store.batch_get_features(&ids[i * 100..(i + 1) * 100], &READ_FIELDS)?;
            Ok(())
        },
    )?;
    Ok(Row {
        id: "http_batch_read",
        operation: "HTTP `POST /batch-read`, 100 entities x 5 fields, one keep-alive client".into(),
        unit: "req",
        ours: Figures::Timed(ours),
        baseline_name:
            "the same batch through the library (`batch_get_features`, what `/batch-read` calls)"
                .into(),
        baseline: Figures::Timed(base),
        ratio_on: RatioOn::P50,
        goal: vec![Check::P50AtMost(Duration::from_millis(1))],
        note: format!(
            "{n} requests of 100 random users each, interleaved in {} rounds with the same \
             batches through `FeatureStore` in this process.",
            ctx.sizes.rounds
        ),
    })
}
