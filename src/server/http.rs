//! HTTP plumbing around tiny_http 0.12: the listener, bounded body reads,
//! and responses. The tiny_http traps it closes (with `conn` and `alloc`):
//!
//! * TCP_NODELAY: set on the listener, inherited by every accepted socket
//!   (Linux copies socket options on accept), so keep-alive responses do not
//!   stall on Nagle + delayed ACK.
//! * Idle and slow connections: tiny_http has no read timeout, so the
//!   listener also carries SO_RCVTIMEO/SO_SNDTIMEO, again inherited by
//!   accepted sockets. A connection that sends nothing for that long is
//!   closed; a body read or a drain that stalls fails instead of holding a
//!   thread forever. Linux also applies SO_RCVTIMEO to `accept()` itself and
//!   tiny_http's accept loop stops on any error, so a heartbeat thread
//!   connects to the listener well within the timeout to keep `accept()`
//!   returning (see `spawn_heartbeat`).
//! * Huge declared bodies: checked against the cap before the body is
//!   touched and answered 413; tiny_http's drain of the unread body then
//!   allocates the declared length, which `alloc::HugeAllocSafe` serves
//!   with a bounded lazy mapping (a length over `isize::MAX` panics instead,
//!   caught by the request thread), and `conn` ends the drain by closing
//!   the connection once the answer has left.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tiny_http::{Header, Request, Response, StatusCode};

use super::errors::ApiError;

/// Binds `addr` with TCP_NODELAY and I/O timeouts that accepted sockets
/// inherit.
pub fn listen(addr: &str, io_timeout: Duration) -> io::Result<TcpListener> {
    let addr: SocketAddr = addr.to_socket_addrs()?.next().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "address resolves to nothing")
    })?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.set_read_timeout(Some(io_timeout))?;
    socket.set_write_timeout(Some(io_timeout))?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Connects to `addr` every `every` and hangs up at once, so tiny_http's
/// accept loop never sees the listener's receive timeout expire. Stops when
/// `stop` is set.
pub fn spawn_heartbeat(addr: SocketAddr, every: Duration, stop: Arc<AtomicBool>) {
    let target = loopback_target(addr);
    std::thread::spawn(move || {
        while !stop.load(Relaxed) {
            if let Ok(s) = TcpStream::connect_timeout(&target, every) {
                drop(s);
            }
            std::thread::park_timeout(every);
        }
    });
}

/// Where this process reaches its own listener on `addr`: a wildcard bind
/// through loopback.
pub fn loopback_target(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(a) if a.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], a.port()))
        }
        SocketAddr::V6(a) if a.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
        }
        other => other,
    }
}

/// The request body, at most `limit` bytes. A declared length over the
/// limit is refused before a byte is read (see module docs). A body that
/// stops short of its declared length is refused too: past the request
/// deadline (the watchdog shut the socket's read side) as 408, otherwise as
/// 400.
pub fn read_body(
    req: &mut Request,
    limit: usize,
    deadline_passed: impl Fn() -> bool,
) -> Result<Vec<u8>, ApiError> {
    let declared = req.body_length();
    if let Some(n) = declared {
        if n > limit {
            return Err(ApiError::PayloadTooLarge {
                declared: n as u64,
                limit,
            });
        }
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(limit));
    // Without a length (chunked), read one byte past the limit to tell
    // "exactly at the limit" from "over it".
    let cap = declared.unwrap_or(limit + 1) as u64;
    match req.as_reader().take(cap).read_to_end(&mut body) {
        Ok(_) => {}
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            return Err(ApiError::BodyTimeout)
        }
        Err(_) if deadline_passed() => return Err(ApiError::BodyTimeout),
        Err(e) => {
            return Err(ApiError::bad(format!(
                "could not read the request body: {e}"
            )))
        }
    }
    if body.len() > limit {
        return Err(ApiError::PayloadTooLarge {
            declared: body.len() as u64,
            limit,
        });
    }
    if let Some(n) = declared {
        if body.len() < n {
            if deadline_passed() {
                return Err(ApiError::BodyTimeout);
            }
            return Err(ApiError::bad(format!(
                "the request body ended after {} of {n} declared bytes",
                body.len()
            )));
        }
    }
    Ok(body)
}

/// The request's body is still in the socket when we get the request:
/// tiny_http buffers a declared body of at most 1024 bytes itself, unless
/// the client expects `100 Continue`; chunked bodies are always read live.
pub fn body_on_socket(req: &Request) -> bool {
    let header = |name: &'static str| req.headers().iter().any(|h| h.field.equiv(name));
    if header("Transfer-Encoding") {
        return true;
    }
    match req.body_length() {
        Some(0) | None => false,
        Some(n) => n > 1024 || header("Expect"),
    }
}

/// The value of the first header called `name`.
pub fn header<'r>(req: &'r Request, name: &'static str) -> Option<&'r str> {
    req.headers()
        .iter()
        .find(|h| h.field.equiv(name))
        .map(|h| h.value.as_str())
}

/// What a route answers with.
pub enum Reply {
    Json(Vec<u8>),
    Html(&'static str),
    /// The Prometheus text format (`/metrics`).
    Metrics(String),
}

pub struct Headers {
    json: Header,
    html: Header,
    metrics: Header,
    no_store: Header,
    allow_get: Header,
    allow_post: Header,
    /// On every 401: the scheme the client must use.
    www_authenticate: Header,
}

impl Default for Headers {
    fn default() -> Headers {
        let h = |k: &str, v: &str| {
            Header::from_bytes(k.as_bytes(), v.as_bytes())
                .unwrap_or_else(|_| unreachable!("static header"))
        };
        Headers {
            json: h("Content-Type", "application/json"),
            html: h("Content-Type", "text/html; charset=utf-8"),
            metrics: h("Content-Type", crate::metrics::CONTENT_TYPE),
            no_store: h("Cache-Control", "no-store"),
            allow_get: h("Allow", "GET"),
            allow_post: h("Allow", "POST"),
            www_authenticate: h("WWW-Authenticate", "Bearer realm=\"fs-server\""),
        }
    }
}

/// The largest error body sent on a connection about to be closed: with
/// tiny_http's head (under 300 bytes) it fits its 1024-byte write buffer,
/// so the whole response leaves in one write (`conn` relies on it).
const CLOSING_BODY_MAX: usize = 640;

/// Sends `result`; errors become `{"error": ...}` with their status.
/// Returns the body's length (for the access log).
/// `on_sent`: the connection is closed after this response (an error path
/// that did not read the body); called once tiny_http has taken the whole
/// response, right before its one write.
pub fn respond(
    req: Request,
    result: Result<Reply, ApiError>,
    headers: &Headers,
    on_sent: Option<Box<dyn FnOnce() + Send>>,
) -> usize {
    let closing = on_sent.is_some();
    let (status, body, ctype, allow) = match result {
        Ok(Reply::Json(body)) => (200, body, &headers.json, None),
        Ok(Reply::Html(page)) => (200, page.as_bytes().to_vec(), &headers.html, None),
        Ok(Reply::Metrics(text)) => (200, text.into_bytes(), &headers.metrics, None),
        Err(e) => {
            let mut body = e.to_json();
            if closing && body.len() > CLOSING_BODY_MAX {
                body = short_error_json(&e.to_string());
            }
            let allow = match &e {
                ApiError::MethodNotAllowed { allowed, .. } if *allowed == "GET" => {
                    Some(&headers.allow_get)
                }
                ApiError::MethodNotAllowed { .. } => Some(&headers.allow_post),
                ApiError::Unauthorized(_) => Some(&headers.www_authenticate),
                _ => None,
            };
            (e.status(), body, &headers.json, allow)
        }
    };
    let len = body.len();
    let mut fields = vec![ctype.clone(), headers.no_store.clone()];
    fields.extend(allow.cloned());
    let status = StatusCode(status);
    let data = std::io::Cursor::new(body);
    // A client that hung up is not our error.
    let _ = match on_sent {
        None => req.respond(Response::new(status, fields, data, Some(len), None)),
        Some(f) => {
            let data = NotifyAtEnd {
                inner: data,
                on_end: Some(f),
            };
            req.respond(Response::new(status, fields, data, Some(len), None))
        }
    };
    len
}

/// A response body that calls `on_end` when tiny_http has read all of it.
struct NotifyAtEnd<R> {
    inner: R,
    on_end: Option<Box<dyn FnOnce() + Send>>,
}

impl<R: Read> Read for NotifyAtEnd<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            if let Some(f) = self.on_end.take() {
                f();
            }
        }
        Ok(n)
    }
}

/// `{"error": ...}` with the message cut to fit [`CLOSING_BODY_MAX`].
fn short_error_json(msg: &str) -> Vec<u8> {
    let mut cut: String = msg.chars().take(200).collect();
    cut.push_str("...");
    serde_json::to_vec(&serde_json::json!({ "error": cut }))
        .ok()
        .filter(|b| b.len() <= CLOSING_BODY_MAX)
        .unwrap_or_else(|| br#"{"error":"request refused"}"#.to_vec())
}
