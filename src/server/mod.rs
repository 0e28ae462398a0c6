//! The HTTP server: a tiny_http listener, a bounded pool of request threads,
//! the routes and the embedded page.

pub mod alloc;
pub mod args;
pub mod body;
pub mod cache;
pub mod errors;
pub mod http;
pub mod routes;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tiny_http::{Method, Request};

use crate::store::FeatureStore;
use crate::worker::Worker;
use body::Params;
use cache::EntityCache;
use errors::ApiError;
use http::{Headers, Reply};

/// Everything a request may touch.
pub struct App {
    pub store: Arc<FeatureStore>,
    pub worker: Worker,
    pub cache: Arc<EntityCache>,
    /// "embedded" or "external": shown in `/state`.
    pub mode: &'static str,
    /// Serializes worker toggles and resets, so a reset restores exactly
    /// the state it found.
    pub control: Mutex<()>,
}

#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub addr: String,
    pub threads: usize,
    pub max_body_bytes: usize,
    /// Read/write timeout of every client socket (idle keep-alive included).
    pub io_timeout: Duration,
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
        let headers = Arc::new(Headers::default());
        let threads = (0..config.threads.max(1))
            .map(|_| {
                let (server, app, stop, headers, events) = (
                    server.clone(),
                    app.clone(),
                    stop.clone(),
                    headers.clone(),
                    events.clone(),
                );
                let limit = config.max_body_bytes;
                std::thread::spawn(move || {
                    while !stop.load(Relaxed) {
                        // A timeout, not `recv`, so the stop flag is seen.
                        match server.recv_timeout(Duration::from_millis(250)) {
                            Ok(Some(req)) => handle(&app, req, limit, &headers),
                            Ok(None) => {}
                            Err(e) => {
                                let _ = events.send(Event::AcceptFailed(e.to_string()));
                                break;
                            }
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

fn handle(app: &App, mut req: Request, body_limit: usize, headers: &Headers) {
    let result = route(app, &mut req, body_limit);
    http::respond(req, result, headers);
}

fn route(app: &App, req: &mut Request, body_limit: usize) -> Result<Reply, ApiError> {
    let url = req.url();
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let Some((endpoint, allowed)) = routes::lookup(path) else {
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
    let mut params = Params::default();
    params.add_form(query)?;
    if allowed == "POST" {
        let body = http::read_body(req, body_limit)?;
        if !body.iter().all(u8::is_ascii_whitespace) {
            if is_json(req, &body) {
                params.add_json(&body)?;
            } else {
                let text = std::str::from_utf8(&body)
                    .map_err(|_| ApiError::bad("form body is not valid UTF-8"))?;
                params.add_form(text.trim())?;
            }
        }
    }
    routes::dispatch(app, endpoint, &params)
}

/// A JSON content type, or a body that starts like one (`curl -d '{...}'`
/// sends the form content type).
fn is_json(req: &Request, body: &[u8]) -> bool {
    let declared = req
        .headers()
        .iter()
        .find(|h| h.field.equiv("Content-Type"))
        .map(|h| h.value.as_str().to_ascii_lowercase());
    match declared {
        Some(ct) if ct.contains("json") => true,
        Some(ct) if ct.contains("x-www-form-urlencoded") => {
            body.trim_ascii_start().first() == Some(&b'{')
        }
        _ => body.trim_ascii_start().first() == Some(&b'{'),
    }
}
