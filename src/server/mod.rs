//! The HTTP server: a tiny_http listener, a bounded pool of request threads
//! (plus body threads for bodies still on the socket, see `bodies`), the
//! connection watchdog (`conn`), the routes and the embedded page.

pub mod alloc;
pub mod args;
pub mod auth;
pub mod bodies;
pub mod body;
pub mod cache;
pub mod conn;
pub mod errors;
pub mod feast;
pub mod features;
pub mod http;
pub mod metrics;
pub mod origin;
pub mod push;
pub mod reset;
pub mod routes;

use std::io;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tiny_http::{Method, Request};

use crate::demo::worker::Worker;
use crate::pacing::Pacer;
use crate::registry::Registry;
use crate::store::FeatureStore;
use bodies::{BodyPool, Permits};
use body::Params;
use cache::EntityCache;
use conn::{ConnConfig, Connections, Ticket};
use errors::ApiError;
use http::{Headers, Reply};
use origin::{BodyKind, OriginPolicy};
use routes::Endpoint;

/// Everything a request may touch.
pub struct App {
    pub store: Arc<FeatureStore>,
    /// What this server serves: loaded once at start (`--registry`).
    pub registry: Arc<Registry>,
    pub worker: Worker,
    pub cache: Arc<EntityCache>,
    /// Paces `/bulk-load` (shared with the worker): see `pacing`.
    pub pacer: Pacer,
    /// "embedded" or "external": shown in `/state`.
    pub mode: &'static str,
    /// Serializes worker toggles and resets, so a reset restores exactly
    /// the state it found.
    pub control: Mutex<()>,
    /// How far a running `/reset` got, for `/state`.
    pub reset: reset::ResetProgress,
    /// What the demo writes on this registry (the worker holds the same).
    pub demo: crate::demo::Source,
    /// The request counters `/metrics` shows; `None` with `--no-metrics`
    /// (there only to measure what they cost).
    pub metrics: Option<metrics::HttpMetrics>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: String,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// The same for Feast's write routes (whole DataFrames in one request).
    pub max_write_body_bytes: usize,
    /// Read/write timeout of every client socket (idle keep-alive included).
    pub io_timeout: Duration,
    /// Total time a request's body may take to arrive (and, added to
    /// `io_timeout`, a connection's next head).
    pub request_timeout: Duration,
    /// Open client connections above this are closed (longest idle first).
    pub max_connections: usize,
    /// Origins besides our own allowed to POST (see `origin`).
    pub allowed_origins: Vec<String>,
    /// Who may call what (see `auth`); `Auth::open()`: everyone.
    pub auth: Arc<auth::Auth>,
    /// One `event=access` line per request (`--access-log`).
    pub access_log: bool,
    /// Requests slower than this are logged (`--slow-request-ms`).
    pub slow_request: Duration,
}

/// Why the server wants to stop.
#[derive(Debug)]
pub enum Event {
    Signal,
    /// tiny_http's accept loop ended (it stops on any accept error).
    AcceptFailed(String),
}

pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// What every request thread shares.
struct Shared {
    app: Arc<App>,
    conns: Arc<Connections>,
    headers: Headers,
    origins: OriginPolicy,
    auth: Arc<auth::Auth>,
    body_limit: usize,
    /// `body_limit` for Feast's write routes (never below `body_limit`).
    write_body_limit: usize,
    /// Where requests with a body still on the socket are read.
    bodies: Arc<BodyPool>,
    /// How many of those may be in a handler at once (`--threads`).
    body_handlers: Permits,
    access_log: bool,
    slow_request: Duration,
}

impl Shared {
    /// The largest body `endpoint` takes.
    fn body_limit(&self, endpoint: Option<Endpoint>) -> usize {
        match endpoint {
            Some(Endpoint::FeastWrite | Endpoint::FeastPush) => self.write_body_limit,
            _ => self.body_limit,
        }
    }
}

impl HttpServer {
    /// Binds and starts `config.threads` request threads. `events` hears
    /// about a dead accept loop.
    pub fn start(
        app: Arc<App>,
        config: &HttpConfig,
        events: Sender<Event>,
    ) -> io::Result<HttpServer> {
        let listener = http::listen(&config.addr, config.io_timeout)?;
        let addr = listener.local_addr()?;
        let server = tiny_http::Server::from_listener(listener, None)
            .map_err(|e| io::Error::other(e.to_string()))?;
        let server = Arc::new(server);
        let stop = Arc::new(AtomicBool::new(false));
        http::spawn_heartbeat(addr, config.io_timeout / 4, stop.clone());
        let (threads, max_connections) = (config.threads.max(1), config.max_connections.max(1));
        let conns = Connections::new(ConnConfig {
            listener: addr,
            max_connections,
            idle_timeout: config.io_timeout,
            request_timeout: config.request_timeout,
        });
        conns.spawn_threads(stop.clone())?;
        let shared = Arc::new(Shared {
            app,
            conns: conns.clone(),
            headers: Headers::default(),
            origins: OriginPolicy::new(&config.allowed_origins),
            auth: config.auth.clone(),
            body_limit: config.max_body_bytes,
            write_body_limit: config.max_write_body_bytes.max(config.max_body_bytes),
            bodies: BodyPool::new(max_connections),
            body_handlers: Permits::new(threads),
            access_log: config.access_log,
            slow_request: config.slow_request,
        });
        let threads = (0..threads)
            .map(|_| {
                let (server, shared, stop, events) =
                    (server.clone(), shared.clone(), stop.clone(), events.clone());
                std::thread::spawn(move || {
                    // `serve` catches every panic of a request; should one
                    // escape anyway, the loop starts again instead of the
                    // pool losing a thread.
                    while !stop.load(Relaxed) {
                        let run = catch_unwind(AssertUnwindSafe(|| {
                            serve(&server, &shared, &stop, &events)
                        }));
                        if run.is_ok() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Ok(HttpServer {
            addr,
            stop,
            threads,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops taking requests; in-flight ones finish.
    pub fn shutdown(self) {
        self.stop.store(true, Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Takes requests until `stop` (or the accept loop dies).
fn serve(
    server: &tiny_http::Server,
    shared: &Arc<Shared>,
    stop: &AtomicBool,
    events: &Sender<Event>,
) {
    while !stop.load(Relaxed) {
        // A timeout, not `recv`, so the stop flag is seen.
        match server.recv_timeout(Duration::from_millis(250)) {
            Ok(Some(req)) => handle(shared, req),
            Ok(None) => {}
            Err(e) => {
                let _ = events.send(Event::AcceptFailed(e.to_string()));
                break;
            }
        }
    }
}

/// Answers one request; one whose body is still on the socket is passed
/// to a body thread (see `bodies`), so a slow sender holds no request
/// thread.
fn handle(shared: &Arc<Shared>, req: Request) {
    let on_socket = http::body_on_socket(&req);
    // Looked up once: the body limit, the handler and the metrics use it.
    let found = routes::lookup(path_of(req.url()));
    let limit = shared.body_limit(found.map(|(e, _)| e));
    let declared_ok = req.body_length().is_none_or(|n| n <= limit);
    if *req.method() == Method::Post && declared_ok && on_socket {
        let me = shared.clone();
        let job = Box::new(move || answer(&me, req, found, on_socket, Some(&me.body_handlers)));
        match shared.bodies.submit(job) {
            Ok(()) => {}
            Err(job) => job(), // every body thread busy: read it here
        }
        return;
    }
    answer(shared, req, found, on_socket, None)
}

/// Routes and answers one request. Neither a handler's panic nor one in
/// tiny_http's drain (a declared length over `isize::MAX` makes its
/// `vec![0; n]` panic) can end the thread: both are caught here, and the
/// request is never dropped while unwinding. `found`: the route table's
/// entry for the request's path. `on_socket`: the body is
/// still in the socket (`http::body_on_socket`). `permits`: taken before
/// the handler runs (on body threads).
fn answer(
    shared: &Shared,
    mut req: Request,
    found: Option<(Endpoint, &'static str)>,
    on_socket: bool,
    permits: Option<&Permits>,
) {
    let started = Instant::now();
    let method = req.method().clone();
    let endpoint = found.map(|(e, _)| e);
    let ticket = shared.conns.begin(req.remote_addr().copied(), on_socket);
    let mut body_read = false;
    let result = catch_unwind(AssertUnwindSafe(|| {
        route(
            shared,
            &mut req,
            found,
            &ticket,
            on_socket,
            &mut body_read,
            permits,
        )
    }))
    .unwrap_or(Err(ApiError::Panicked));
    let mut on_sent: Option<Box<dyn FnOnce() + Send>> = None;
    if on_socket && !body_read {
        ticket.close_after_response();
        if let Some(peer) = req.remote_addr().copied() {
            let conns = shared.conns.clone();
            on_sent = Some(Box::new(move || conns.response_handed_over(peer)));
        }
    }
    let status = match &result {
        Ok(_) => 200,
        Err(e) => {
            e.log_if_server_error(&method, metrics::route_label(endpoint));
            e.status()
        }
    };
    let bytes = catch_unwind(AssertUnwindSafe(|| {
        http::respond(req, result, &shared.headers, on_sent)
    }))
    .unwrap_or(0);
    drop(ticket);
    observe(shared, &method, endpoint, status, started.elapsed(), bytes);
}

/// `url` without its query string.
fn path_of(url: &str) -> &str {
    url.split_once('?').map_or(url, |(path, _)| path)
}

/// Counts an answered request, and logs it when slow or asked to
/// (`--access-log`). Never the query string, a header or the body: the
/// route is the route table's fixed path.
fn observe(
    shared: &Shared,
    method: &Method,
    endpoint: Option<Endpoint>,
    status: u16,
    took: Duration,
    bytes: usize,
) {
    if let Some(m) = &shared.app.metrics {
        m.record(endpoint, status, took);
    }
    let slow = took >= shared.slow_request;
    if !(slow || shared.access_log) {
        return;
    }
    let route = metrics::route_label(endpoint);
    let ms = took.as_secs_f64() * 1e3;
    let method = crate::logging::value(method);
    if slow {
        log::warn!("event=slow_request method={method} route={route} status={status} ms={ms:.3} bytes={bytes}");
    }
    if shared.access_log {
        log::info!(
            "event=access method={method} route={route} status={status} ms={ms:.3} bytes={bytes}"
        );
    }
}

fn route(
    shared: &Shared,
    req: &mut Request,
    found: Option<(Endpoint, &'static str)>,
    ticket: &Ticket,
    on_socket: bool,
    body_read: &mut bool,
    permits: Option<&Permits>,
) -> Result<Reply, ApiError> {
    let url = req.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let Some((endpoint, allowed)) = found else {
        return Err(ApiError::NotFound(format!("no endpoint at {path}")));
    };
    let method_ok = match req.method() {
        Method::Get => allowed == "GET",
        Method::Post => allowed == "POST",
        _ => false,
    };
    if !method_ok {
        return Err(ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            path: path.to_owned(),
            allowed,
        });
    }
    // Before the body is read: a caller without a token gets nothing more.
    let need = auth::Need::of(endpoint, allowed);
    shared
        .auth
        .check(need, http::header(req, "Authorization"))?;
    // Before anything else reads it; GET bodies are never read, so any
    // over the cap is refused too.
    let limit = shared.body_limit(Some(endpoint));
    if let Some(n) = req.body_length().filter(|n| *n > limit) {
        return Err(ApiError::PayloadTooLarge {
            declared: n as u64,
            limit,
        });
    }
    if allowed == "GET" && on_socket {
        // Never read, so the connection is closed after the answer, which
        // must then be short (see `http::respond`).
        return Err(ApiError::bad(
            "a GET request must not carry a body (over 1024 bytes)",
        ));
    }
    let mut params = Params::default();
    params.add_form(query)?;
    if allowed == "POST" {
        shared.origins.check(req)?;
        let body = http::read_body(req, limit, || ticket.body_deadline_passed())?;
        *body_read = true;
        ticket.body_done();
        if !body.iter().all(u8::is_ascii_whitespace) {
            let content_type = http::header(req, "Content-Type");
            // Some releases of Feast's SDK post this read's JSON with no
            // Content-Type; a read changes nothing, so nothing is lost by
            // taking it as JSON here (every other route still refuses it).
            let kind = if content_type.is_none() && endpoint == Endpoint::FeastOnlineFeatures {
                BodyKind::Json
            } else {
                origin::body_kind(content_type, &body)?
            };
            match kind {
                BodyKind::Json => params.add_json(&body)?,
                BodyKind::Form => {
                    let text = std::str::from_utf8(&body)
                        .map_err(|_| ApiError::bad("form body is not valid UTF-8"))?;
                    params.add_form(text.trim())?;
                }
            }
        }
    }
    let _permit = permits.map(Permits::acquire);
    routes::dispatch(&shared.app, endpoint, &params)
}

/// Prints each distinct panic (by source location) once to stderr, so a
/// client that triggers one repeatedly cannot flood the log.
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    let seen: Mutex<std::collections::HashSet<String>> = Mutex::default();
    std::panic::set_hook(Box::new(move |info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let first = seen
            .lock()
            .map(|mut s| s.len() < 1000 && s.insert(at.clone()))
            .unwrap_or(false);
        if first {
            default(info);
            log::error!(
                "event=panic at={} note={}",
                crate::logging::value(&at),
                crate::logging::value(
                    "further panics here are not logged; the request thread lives on"
                )
            );
        }
    }));
}
