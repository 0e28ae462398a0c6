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
//! * Responses in many small writes: tiny_http writes the head through its
//!   1 KB buffer and then copies the body in 8 KB reads, so a 25 KB answer
//!   left in five `send`s, each a TCP segment that can wake the client.
//!   `respond` writes the head and body itself, in one write (see
//!   `write_whole`).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};
use tiny_http::{HTTPVersion, Header, Method, Request, Response, StatusCode};

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
    let status = StatusCode(status);
    // The connection's next request may be read once this is written: a
    // response that closes it keeps tiny_http's path and its `on_sent`.
    // HEAD never reaches a route (405), but tiny_http knows to send no
    // body for it, so it keeps that path too.
    if on_sent.is_none() && *req.method() != Method::Head {
        let fields = [Some(ctype), Some(&headers.no_store), allow];
        let version = req.http_version().clone();
        let mut writer = req.into_writer();
        // A client that hung up is not our error.
        let _ = write_whole(
            &mut writer,
            &version,
            status,
            fields.into_iter().flatten(),
            &body,
        );
        return len;
    }
    let mut fields = vec![ctype.clone(), headers.no_store.clone()];
    fields.extend(allow.cloned());
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

/// Writes a whole response, head and body, in one `write_all` of one
/// buffer: tiny_http's writer is a 1 KB `BufWriter`, which passes a write
/// larger than its buffer straight to the socket when empty, so the
/// response leaves in one `send` (the kernel may still split it). The head
/// is tiny_http's, byte for byte: `Server`, `Date`, the given fields, then
/// `Content-Length` (never chunked, whatever the size).
fn write_whole<'h>(
    writer: &mut impl Write,
    version: &HTTPVersion,
    status: StatusCode,
    fields: impl Iterator<Item = &'h Header>,
    body: &[u8],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(body.len() + 256);
    write!(
        out,
        "HTTP/{}.{} {} {}\r\nServer: tiny-http (Rust)\r\nDate: {}\r\n",
        version.0,
        version.1,
        status.0,
        status.default_reason_phrase(),
        http_date(SystemTime::now())
    )?;
    for h in fields {
        out.extend_from_slice(h.field.as_str().as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    write!(out, "Content-Length: {}\r\n\r\n", body.len())?;
    out.extend_from_slice(body);
    writer.write_all(&out)?;
    writer.flush()
}

/// `t` as an HTTP date (RFC 9110's IMF-fixdate, always GMT), as
/// `Sun, 06 Nov 1994 08:49:37 GMT`.
fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // A clock before 1970 is a broken clock: say 1970 rather than fail.
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = crate::calendar::civil_from_days(days as i64);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// Counts the writes it is given, keeping their bytes.
    #[derive(Default)]
    struct Writes {
        bytes: Vec<u8>,
        calls: usize,
    }

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            self.bytes.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The `Date` header's value blanked, so two heads written a second
    /// apart compare.
    fn undated(bytes: &[u8]) -> Vec<u8> {
        let text = String::from_utf8_lossy(bytes);
        text.lines()
            .map(|l| {
                if l.starts_with("Date: ") {
                    "Date: -"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes()
    }

    fn head_fields() -> Vec<Header> {
        let h = Headers::default();
        vec![h.json, h.no_store]
    }

    #[test]
    fn a_whole_response_is_one_write_of_tiny_https_own_bytes() {
        // Up to tiny_http's chunking threshold (32 KB) its bytes are ours.
        for len in [0, 5, 1023, 1024, 8192, 25_000, 32_767] {
            let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let mut ours = Writes::default();
            write_whole(
                &mut ours,
                &HTTPVersion(1, 1),
                StatusCode(200),
                head_fields().iter(),
                &body,
            )
            .expect("writes");
            assert_eq!(ours.calls, 1, "{len} bytes");
            let mut theirs = Vec::new();
            Response::new(
                StatusCode(200),
                head_fields(),
                Cursor::new(body.clone()),
                Some(len),
                None,
            )
            .raw_print(&mut theirs, HTTPVersion(1, 1), &[], false, None)
            .expect("prints");
            assert_eq!(undated(&ours.bytes), undated(&theirs), "{len} bytes");
        }
    }

    #[test]
    fn a_large_answer_keeps_its_content_length_where_tiny_http_would_chunk() {
        let body = vec![b'x'; 300_000];
        let mut ours = Writes::default();
        write_whole(
            &mut ours,
            &HTTPVersion(1, 1),
            StatusCode(200),
            head_fields().iter(),
            &body,
        )
        .expect("writes");
        assert_eq!(ours.calls, 1);
        let text = String::from_utf8_lossy(&ours.bytes);
        assert!(text.contains("\r\nContent-Length: 300000\r\n\r\n"));
        assert!(!text.contains("Transfer-Encoding"));
        assert!(ours.bytes.ends_with(&body));
    }

    #[test]
    fn http_dates_are_imf_fixdates() {
        let at = |s: u64| http_date(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        // RFC 9110's own example.
        assert_eq!(at(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(at(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(at(4_102_444_799), "Thu, 31 Dec 2099 23:59:59 GMT");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Any second up to year 9999 formats as the `time` crate does.
        #[test]
        fn http_dates_agree_with_the_time_crate(secs in 0u64..253_402_300_800) {
            let fmt = time::format_description::parse_borrowed::<2>(
                "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT",
            )
            .expect("a valid description");
            let want = time::OffsetDateTime::from_unix_timestamp(secs as i64)
                .expect("in range")
                .format(&fmt)
                .expect("formats");
            prop_assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(secs)), want);
        }
    }
}
