//! Connection control on top of tiny_http 0.12: a total deadline for each
//! request body, a deadline and a size bound for heads, a cap on open
//! connections, and a way to end a connection whose body we will not read.
//!
//! tiny_http owns every client socket and exposes none of them: it reads
//! heads on a thread of its own per connection (no limit on their number,
//! their size or how long they take), and when a `Request` with an unread
//! body is dropped it drains the rest of the declared length, blocking that
//! request thread for as long as the client keeps sending. It cannot be
//! patched here, so this module finds the sockets itself:
//!
//! * **Finding a socket.** Every fd in `/proc/self/fd` whose local address
//!   is our listener's and that has a peer is a client connection (tiny_http
//!   holds two fds per connection, a reader and a writer clone of one
//!   socket). A `Request` names its peer (`remote_addr`), which is unique
//!   among live connections. A watchdog thread rescans every
//!   [`WATCH_EVERY`]; an error path that needs a socket not yet scanned
//!   rescans on the spot. An fd is never acted on directly: tiny_http may
//!   close it at any moment and the next accepted connection gets its
//!   number, so we duplicate it, check the duplicate's local and peer
//!   address, and act on the duplicate (see [`Connections::own_socket`]).
//!   Only `shutdown` is ever applied: it never closes an fd tiny_http owns.
//! * **Closing without losing the response.** `shutdown(SHUT_RD)` before
//!   `respond`: the response is still written; tiny_http's drain then reads
//!   what is queued and sees end-of-file, and its connection thread, reading
//!   the next head, sees end-of-file too and closes the connection. A client
//!   that keeps sending defeats `SHUT_RD` alone (Linux still queues incoming
//!   data), so a closer thread watches the socket's sent-byte count and, as
//!   soon as the response is on the wire (or after [`DRAIN_GRACE`]), shuts
//!   the write side too: Linux answers any further data with a reset, the
//!   drain's next read fails, and the thread is free.
//! * **Body deadline.** The thread reading a body (a body thread, see
//!   `bodies`) registers the read with a deadline (`--request-timeout-ms`);
//!   past it the watchdog shuts the socket's read side, the blocked read
//!   returns end-of-file, and the request is answered 408 and closed.
//! * **Heads.** A connection with no request in a request thread for longer
//!   than idle timeout + request timeout (since it was first seen or its
//!   last request finished) is trickling a head (an idle one would have
//!   been closed by the idle timeout already), and one that has made
//!   tiny_http read more than [`HEAD_BYTES`] meanwhile is sending an endless
//!   head (tiny_http buffers a head line without limit). Both are closed.
//! * **The cap.** Over `--max-connections`, the connections that have gone
//!   longest without a request in a request thread are closed first: they
//!   are the likeliest tricklers, while a new connection is about to send
//!   its request (closing the newest would turn a flood into a refusal of
//!   every new client).
//!
//! * **Unserved connections.** tiny_http gives each accepted connection a
//!   thread from a pool that counts a thread as idle until it actually runs
//!   again, so in a burst of connections (a flood of tricklers, then a
//!   client) many get queued behind the few threads it has just woken, and
//!   a queued connection is not read until some running one ends: the
//!   client waited out the tricklers' head deadline. A connection whose
//!   bytes have waited [`UNSERVED_AFTER`] without tiny_http reading any is
//!   such a one, and the watchdog then connects to the listener and hangs
//!   up: tiny_http starts a new thread for that connection (no thread is
//!   idle, or the queue would be empty), which, done with it at once, takes
//!   the next queued connection. Spare threads exit after 5 s.
//!
//! None of these touches a connection whose request is in a handler. Only
//! the watchdog and error paths pay for finding sockets; a keep-alive
//! request takes one uncontended lock at its start and one at its end (one
//! more when its body is on the socket).

use std::collections::HashMap;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// How often the watchdog rescans the connections.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// The longest a closing connection may hold a request thread in
/// tiny_http's drain once its response was taken but not seen leaving.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// How long a newly seen connection is spared by the cap: long enough for a
/// client with its request ready to be served on a busy 2-core machine.
const NEW_CONN_GRACE: Duration = Duration::from_millis(500);
/// How long a connection's bytes may wait unread by tiny_http before the
/// watchdog gives tiny_http's pool another thread (see the module docs).
pub const UNSERVED_AFTER: Duration = Duration::from_millis(200);
/// The watchdog reports the connections it closed at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How often the closer looks at connections whose response is going out.
const CLOSER_EVERY: Duration = Duration::from_millis(1);
/// Bytes tiny_http may read for one head (request line and headers, plus
/// a body of at most 1024 bytes it buffers itself) before the connection
/// is closed.
pub const HEAD_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone)]
pub struct ConnConfig {
    /// Our listener's address: the local address of every client socket.
    pub listener: SocketAddr,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub request_timeout: Duration,
}

/// What a request thread is doing for a peer.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Reading the body; past `deadline` the socket's read side is shut.
    Body { deadline: Instant },
    /// Body read (or none); in a handler. Never touched.
    Handling,
    /// The read side was shut before responding; tiny_http may be draining.
    Closing,
    /// No request in a request thread; the last one finished `at`.
    Idle { at: Instant },
}

#[derive(Debug)]
struct Conn {
    fds: Vec<RawFd>,
    first_seen: Instant,
    /// Bytes the application had read from the socket when it was last
    /// seen with a request in hand (or first seen).
    read_mark: u64,
    /// Since when bytes have waited that tiny_http has never read.
    unserved_since: Option<Instant>,
}

#[derive(Default)]
struct State {
    /// Client connections by peer, as of the last scan.
    conns: HashMap<SocketAddr, Conn>,
    /// What request threads are doing, by peer.
    peers: HashMap<SocketAddr, Phase>,
    /// Connections closed by the watchdog (head deadline or size, the cap).
    closed_by_watchdog: u64,
}

/// A connection whose response is going out before it is closed.
struct Pending {
    peer: SocketAddr,
    /// Our own handle on the socket (see [`Connections::own_socket`]).
    sock: OwnedFd,
    sent_before: u64,
    since: Instant,
    /// When tiny_http took the whole response (it writes it right after).
    handed_over: Option<Instant>,
}

pub struct Connections {
    config: ConnConfig,
    state: Mutex<State>,
    /// Serializes rescans so concurrent error paths share one.
    scanning: Mutex<()>,
    closing: Mutex<Vec<Pending>>,
    closer_wake: Condvar,
}

/// A request in a request thread; marks its peer idle when dropped.
pub struct Ticket<'a> {
    conns: &'a Connections,
    peer: Option<SocketAddr>,
}

impl Connections {
    pub fn new(config: ConnConfig) -> Arc<Connections> {
        Arc::new(Connections {
            config,
            state: Mutex::new(State::default()),
            scanning: Mutex::new(()),
            closing: Mutex::new(Vec::new()),
            closer_wake: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request from `peer` is in a request thread. `body_on_socket`: its
    /// body is still in the socket (tiny_http reads bodies of at most 1024
    /// bytes itself, before handing the request over).
    pub fn begin(&self, peer: Option<SocketAddr>, body_on_socket: bool) -> Ticket<'_> {
        if let Some(p) = peer {
            let phase = if body_on_socket {
                Phase::Body {
                    deadline: Instant::now() + self.config.request_timeout,
                }
            } else {
                Phase::Handling
            };
            self.lock().peers.insert(p, phase);
        }
        Ticket { conns: self, peer }
    }

    /// The verified fds of `peer`'s connection; rescans when the last scan
    /// does not know the peer.
    fn fds_of(&self, peer: SocketAddr) -> Vec<RawFd> {
        let known = |me: &Self| {
            me.lock()
                .conns
                .get(&peer)
                .map(|c| c.fds.clone())
                .unwrap_or_default()
        };
        let mut fds = known(self);
        if fds.iter().all(|fd| !self.still_ours(*fd, peer)) {
            self.rescan();
            fds = known(self);
        }
        fds.retain(|fd| self.still_ours(*fd, peer));
        fds
    }

    /// Shuts `how` on `peer`'s socket; our handle on it, if it was found.
    fn shut(&self, peer: SocketAddr, how: Shutdown) -> Option<OwnedFd> {
        // Both fds share one socket: shutting one shuts it.
        let fd = *self.fds_of(peer).first()?;
        let sock = self.own_socket(fd, peer)?;
        SockRef::from(&sock).shutdown(how).ok()?;
        Some(sock)
    }

    /// A handle of our own on `peer`'s socket: a duplicate of `fd`, if `fd`
    /// is that socket. Checking `fd` and then shutting it is a race: when
    /// tiny_http closes the connection in between, the kernel gives the
    /// number to the next accepted one, and a client that connects again
    /// right after an answer had its new connection shut before its request
    /// was read (an empty response). A duplicate stays the socket it was
    /// checked to be for as long as it is held.
    fn own_socket(&self, fd: RawFd, peer: SocketAddr) -> Option<OwnedFd> {
        // SAFETY: F_DUPFD_CLOEXEC only adds an fd table entry; a stale
        // number yields EBADF or another file, which the check rejects.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return None;
        }
        // SAFETY: `dup` is a new fd that nothing else owns.
        let sock = unsafe { OwnedFd::from_raw_fd(dup) };
        let (local, p) = socket_addrs(sock.as_raw_fd())?;
        (p == peer && self.is_ours(local)).then_some(sock)
    }

    /// `fd` is still a socket from our listener to `peer`.
    fn still_ours(&self, fd: RawFd, peer: SocketAddr) -> bool {
        matches!(socket_addrs(fd), Some((local, p)) if p == peer && self.is_ours(local))
    }

    fn is_ours(&self, local: SocketAddr) -> bool {
        let l = self.config.listener;
        local.port() == l.port() && (l.ip().is_unspecified() || local.ip() == l.ip())
    }

    /// Rescans `/proc/self/fd` and updates the connection table.
    fn rescan(&self) {
        let _one = self.scanning.lock().unwrap_or_else(|p| p.into_inner());
        let found = self.scan();
        let now = Instant::now();
        let mut state = self.lock();
        let mut conns = HashMap::with_capacity(found.len());
        for (peer, fds) in found {
            let conn = match state.conns.remove(&peer) {
                Some(old) => Conn { fds, ..old },
                None => Conn {
                    read_mark: fds.first().map_or(0, |fd| app_read(*fd)),
                    fds,
                    first_seen: now,
                    unserved_since: None,
                },
            };
            conns.insert(peer, conn);
        }
        state.conns = conns;
        // Forget idle peers whose connection is gone.
        let State { conns, peers, .. } = &mut *state;
        peers.retain(|p, phase| !matches!(phase, Phase::Idle { .. }) || conns.contains_key(p));
    }

    /// Client connections of our listener: peer -> fds.
    fn scan(&self) -> HashMap<SocketAddr, Vec<RawFd>> {
        let mut found: HashMap<SocketAddr, Vec<RawFd>> = HashMap::new();
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return found;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some((local, peer)) = socket_addrs(fd) {
                if self.is_ours(local) {
                    found.entry(peer).or_default().push(fd);
                }
            }
        }
        found
    }

    /// One watchdog pass: enforce body deadlines, close head tricklers,
    /// endless heads and connections over the cap.
    fn watch_once(&self) {
        self.rescan();
        let now = Instant::now();
        let head_limit = self.config.idle_timeout + self.config.request_timeout;
        let mut shut_read = Vec::new();
        let mut shut_both = Vec::new();
        let mut unserved = 0;
        {
            let mut state = self.lock();
            let State {
                conns,
                peers,
                closed_by_watchdog,
            } = &mut *state;
            for (peer, phase) in peers.iter() {
                if matches!(*phase, Phase::Body { deadline } if now >= deadline) {
                    shut_read.push(*peer);
                }
            }
            let mut idle: Vec<(Instant, RawFd, SocketAddr)> = Vec::new();
            for (peer, conn) in conns.iter_mut() {
                let read = conn.fds.first().map_or(0, |fd| app_read(*fd));
                let received = conn.fds.first().and_then(|fd| tcp_info(*fd));
                if read == 0 && received.is_some_and(|i| i.tcpi_bytes_received > 0) {
                    let since = *conn.unserved_since.get_or_insert(now);
                    if now.duration_since(since) >= UNSERVED_AFTER {
                        unserved += 1;
                        conn.unserved_since = Some(now); // again later if need be
                    }
                } else {
                    conn.unserved_since = None;
                }
                let last = match peers.get(peer) {
                    None => conn.first_seen,
                    Some(Phase::Idle { at }) => {
                        if now.duration_since(*at) < WATCH_EVERY * 2 {
                            // Finished since the last pass or so: the body it
                            // read counts for that request, not the next head.
                            conn.read_mark = conn.read_mark.max(read);
                        }
                        (*at).max(conn.first_seen)
                    }
                    Some(_) => {
                        // A request thread has it: whatever was read so far
                        // belonged to that request.
                        conn.read_mark = read;
                        continue;
                    }
                };
                let head_bytes = read.saturating_sub(conn.read_mark);
                if now.duration_since(last) >= head_limit || head_bytes > HEAD_BYTES {
                    shut_both.push(*peer);
                    *closed_by_watchdog += 1;
                } else if now.duration_since(conn.first_seen) >= NEW_CONN_GRACE {
                    // A new connection gets a moment to hand over its
                    // request: connections first seen in the same pass tie
                    // on `last`, and a flood must not push out the client
                    // that arrived with it and has a request ready.
                    let fd = conn.fds.first().copied().unwrap_or(RawFd::MAX);
                    idle.push((last, fd, *peer));
                }
            }
            let over = conns
                .len()
                .saturating_sub(shut_both.len())
                .saturating_sub(self.config.max_connections);
            if over > 0 {
                // Longest without a request first: the likeliest tricklers;
                // a new connection is about to send its request.
                // Ties on `last`: the lower fd was (usually) accepted
                // earlier, so a client that came after a flood outlasts it.
                idle.sort_unstable_by_key(|(last, fd, _)| (*last, *fd));
                for (_, _, peer) in idle.into_iter().take(over) {
                    shut_both.push(peer);
                    *closed_by_watchdog += 1;
                }
            }
        }
        for _ in 0..unserved {
            self.poke_pool();
        }
        for peer in shut_read {
            self.shut(peer, Shutdown::Read);
        }
        for peer in shut_both {
            // Wakes tiny_http's blocked read with end-of-file; any byte the
            // client sends after this is answered with a reset.
            self.shut(peer, Shutdown::Both);
        }
    }

    /// Connects to our listener and hangs up at once, so tiny_http's pool
    /// starts a thread that then serves queued connections.
    fn poke_pool(&self) {
        let target = super::http::loopback_target(self.config.listener);
        let _ = std::net::TcpStream::connect_timeout(&target, WATCH_EVERY);
    }

    /// Client connections open now, and how many the watchdog has closed.
    pub fn counts(&self) -> (usize, u64) {
        let state = self.lock();
        (state.conns.len(), state.closed_by_watchdog)
    }

    /// Starts the watchdog (every [`WATCH_EVERY`]) and the closer; both
    /// stop when `stop` is set.
    pub fn spawn_threads(self: &Arc<Self>, stop: Arc<AtomicBool>) -> io::Result<()> {
        let me = self.clone();
        let stop2 = stop.clone();
        std::thread::Builder::new()
            .name("fs-conn-watchdog".into())
            .spawn(move || {
                let (mut logged, mut logged_at) = (0, None::<Instant>);
                while !stop.load(Relaxed) {
                    // A panic here must not end the watchdog.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.watch_once()));
                    // What an operator needs to see, at most every LOG_EVERY.
                    let (open, closed) = me.counts();
                    if closed > logged && logged_at.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
                        log::warn!(
                            "event=connections_closed closed={} open={open} cap={} \
                             why={}",
                            closed - logged,
                            me.config.max_connections,
                            crate::logging::value(
                                "no request in time, an oversized head, or over --max-connections"
                            )
                        );
                        (logged, logged_at) = (closed, Some(Instant::now()));
                    }
                    std::thread::sleep(WATCH_EVERY);
                }
            })?;
        let me = self.clone();
        std::thread::Builder::new()
            .name("fs-conn-closer".into())
            .spawn(move || {
                while !stop2.load(Relaxed) {
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        me.close_pending()
                    }));
                }
            })?;
        Ok(())
    }

    /// tiny_http has taken `peer`'s whole response; its one write follows.
    pub fn response_handed_over(&self, peer: SocketAddr) {
        let mut pending = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        for p in pending.iter_mut().filter(|p| p.peer == peer) {
            p.handed_over.get_or_insert_with(Instant::now);
        }
    }

    /// One closer pass: waits for closing connections, then shuts each
    /// fully once its response has left (or its grace is over).
    fn close_pending(&self) {
        let mut pending = self.closing.lock().unwrap_or_else(|p| p.into_inner());
        if pending.is_empty() {
            pending = self
                .closer_wake
                .wait_timeout(pending, WATCH_EVERY)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        let now = Instant::now();
        pending.retain(|p| {
            // `p.sock` is ours, so this is the right socket even if
            // tiny_http has closed its fds already.
            let sent = tcp_info(p.sock.as_raw_fd()).map_or(0, |i| i.tcpi_bytes_sent);
            // Sent, or taken and not seen leaving (a kernel without the
            // counter, a full window), or never taken (HEAD, a failed write).
            let overdue = p
                .handed_over
                .map_or(now.duration_since(p.since) >= DRAIN_GRACE * 4, |t| {
                    now.duration_since(t) >= DRAIN_GRACE
                });
            if sent > p.sent_before || overdue {
                let _ = SockRef::from(&p.sock).shutdown(Shutdown::Both);
                return false;
            }
            true
        });
        let busy = !pending.is_empty();
        drop(pending);
        if busy {
            std::thread::sleep(CLOSER_EVERY);
        }
    }
}

impl Ticket<'_> {
    /// The body was read (or failed to be); the handler runs now.
    pub fn body_done(&self) {
        if let Some(p) = self.peer {
            self.conns.lock().peers.insert(p, Phase::Handling);
        }
    }

    /// The body will not be read to its end: shut the connection's read
    /// side so the response still goes out but tiny_http's drain ends and
    /// the connection closes; the closer shuts the rest once the response
    /// has left. The response must go out in one write (see
    /// `http::respond`), so "bytes were sent" means "all of it was".
    pub fn close_after_response(&self) {
        let Some(peer) = self.peer else { return };
        self.conns.lock().peers.insert(peer, Phase::Closing);
        if let Some(sock) = self.conns.shut(peer, Shutdown::Read) {
            let sent_before = tcp_info(sock.as_raw_fd()).map_or(0, |i| i.tcpi_bytes_sent);
            let mut pending = self.conns.closing.lock().unwrap_or_else(|p| p.into_inner());
            pending.push(Pending {
                peer,
                sock,
                sent_before,
                since: Instant::now(),
                handed_over: None,
            });
            self.conns.closer_wake.notify_one();
        }
    }

    /// The body deadline passed.
    pub fn body_deadline_passed(&self) -> bool {
        let Some(p) = self.peer else { return false };
        match self.conns.lock().peers.get(&p) {
            Some(Phase::Body { deadline }) => Instant::now() >= *deadline,
            _ => false,
        }
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.peer {
            self.conns
                .lock()
                .peers
                .insert(p, Phase::Idle { at: Instant::now() });
        }
    }
}

/// Runs `f` on the socket behind `fd`.
fn with_sock<T>(fd: RawFd, f: impl FnOnce(&SockRef<'_>) -> io::Result<T>) -> io::Result<T> {
    // SAFETY: the fd is only borrowed for calls that fail harmlessly (EBADF,
    // ENOTSOCK) if it is not, or no longer, a socket; callers check it is
    // the connection they mean right before. Nothing here closes it.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    f(&SockRef::from(&borrowed))
}

/// The local and peer address of `fd`, if it is a connected socket.
fn socket_addrs(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    with_sock(fd, |s| {
        let local = s.local_addr()?.as_socket();
        let peer = s.peer_addr()?.as_socket();
        Ok(local.zip(peer))
    })
    .ok()
    .flatten()
}

/// The kernel's TCP counters for `fd`.
fn tcp_info(fd: RawFd) -> Option<libc::tcp_info> {
    // SAFETY: getsockopt writes at most `len` bytes into the zeroed struct.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (rc == 0).then_some(info)
    }
}

/// Bytes the application has read from `fd`'s socket: received minus what
/// still waits in the receive queue.
fn app_read(fd: RawFd) -> u64 {
    let received = tcp_info(fd).map_or(0, |i| i.tcpi_bytes_received);
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    let rc = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut queued) };
    if rc != 0 {
        return received;
    }
    received.saturating_sub(queued.max(0) as u64)
}

/// Raises the soft open-files limit to the hard one and returns it; a
/// connection costs two fds (tiny_http clones each socket).
pub fn raise_nofile_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
    }
    lim.rlim_cur
}

/// The default `--max-connections`: 1024, or less when the open-files
/// limit cannot hold two fds per connection plus a reserve for Redis
/// connections and the process itself.
pub fn default_max_connections(nofile: u64) -> usize {
    const RESERVE: u64 = 128;
    (nofile.saturating_sub(RESERVE) / 2).clamp(16, 1024) as usize
}
