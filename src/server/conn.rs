//! Connection control on top of tiny_http 0.12: a total deadline for each
//! request body, a deadline for headers, a cap on open connections, and a
//! way to end a connection whose body we will not read.
//!
//! tiny_http owns every client socket and exposes none of them: it reads
//! headers on a thread of its own per connection (no limit on their number
//! or on how long a head may take), and when a `Request` with an unread body
//! is dropped it drains the rest of the declared length, blocking that
//! request thread for as long as the client keeps trickling. It cannot be
//! patched here, so this module finds the sockets itself:
//!
//! * **Finding a socket.** Every fd in `/proc/self/fd` whose local address
//!   is our listener's and that has a peer is a client connection (tiny_http
//!   holds two fds per connection, a reader and a writer clone of one
//!   socket). A `Request` names its peer (`remote_addr`), which is unique
//!   among live connections. A watchdog thread rescans every
//!   [`WATCH_EVERY`]; an error path that needs a socket not yet scanned
//!   rescans on the spot. Before acting on an fd its local and peer address
//!   are checked again, so a closed-and-reused fd number is left alone.
//! * **Closing without losing the response.** `shutdown(SHUT_RD)` before
//!   `respond`: the response is still written, tiny_http's drain then reads
//!   what is queued and sees end-of-file, and its connection thread, reading
//!   the next head, sees end-of-file too and closes the connection. A client
//!   that keeps pumping data defeats `SHUT_RD` (Linux still queues incoming
//!   data), so a connection still draining after [`DRAIN_GRACE`] has its fds
//!   replaced by `/dev/null` (`dup2`): every later read is end-of-file, the
//!   fd numbers stay valid for tiny_http to close, and the socket itself is
//!   released at once.
//! * **Body deadline.** A request thread registers its body read with a
//!   deadline (`--request-timeout-ms`); past it the watchdog shuts the
//!   socket's read side, the blocked read returns end-of-file, and the
//!   request is answered 408 and closed.
//! * **Head deadline and the connection cap.** A connection with no request
//!   in a request thread for longer than idle timeout + request timeout
//!   (since it was first seen or its last request finished) is trickling a
//!   head: an idle one would have been closed by the idle timeout already.
//!   It is closed. Over `--max-connections`, the newest connections with no
//!   request in hand are closed. Neither touches a connection whose request
//!   is in a request thread.
//!
//! Only the watchdog and error paths pay for any of this; a keep-alive
//! request with a small body takes one uncontended lock at its start and one
//! at its end.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use socket2::SockRef;

/// How often the watchdog rescans the connections.
pub const WATCH_EVERY: Duration = Duration::from_millis(100);
/// How long a connection may keep a request thread in tiny_http's drain
/// after its read side was shut, before its fds are replaced.
pub const DRAIN_GRACE: Duration = Duration::from_millis(500);

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
    Closing { since: Instant },
    /// No request in a request thread; the last one finished `at`.
    Idle { at: Instant },
}

#[derive(Debug)]
struct Conn {
    fds: Vec<RawFd>,
    first_seen: Instant,
}

#[derive(Default)]
struct State {
    /// Client connections by peer, as of the last scan.
    conns: HashMap<SocketAddr, Conn>,
    /// What request threads are doing, by peer.
    peers: HashMap<SocketAddr, Phase>,
    /// Connections closed by the watchdog (head deadline, over the cap).
    closed_by_watchdog: u64,
}

pub struct Connections {
    config: ConnConfig,
    state: Mutex<State>,
    /// Serializes rescans so concurrent error paths share one.
    scanning: Mutex<()>,
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

    /// Shuts the read side of every fd of `peer`'s connection; true if one
    /// was found. Rescans when the last scan does not know the peer.
    fn shut_read(&self, peer: SocketAddr) -> bool {
        let mut fds = self.fds_of(peer);
        if fds.is_empty() {
            self.rescan();
            fds = self.fds_of(peer);
        }
        let mut done = false;
        for fd in fds {
            if self.still_ours(fd, peer) {
                // SAFETY: the fd was checked just above to be a live socket
                // of this connection; shutdown does not close it.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                let sock = SockRef::from(&borrowed);
                done |= sock.shutdown(std::net::Shutdown::Read).is_ok();
            }
        }
        done
    }

    fn fds_of(&self, peer: SocketAddr) -> Vec<RawFd> {
        self.lock()
            .conns
            .get(&peer)
            .map(|c| c.fds.clone())
            .unwrap_or_default()
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
            let first_seen = state.conns.get(&peer).map_or(now, |c| c.first_seen);
            conns.insert(peer, Conn { fds, first_seen });
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

    /// One watchdog pass: enforce body deadlines, end drains that outlast
    /// their grace, close head tricklers and connections over the cap.
    pub fn watch_once(&self) {
        self.rescan();
        let now = Instant::now();
        let header_limit = self.config.idle_timeout + self.config.request_timeout;
        let mut shut = Vec::new(); // (peer, replace fds?)
        {
            let mut state = self.lock();
            let State {
                conns,
                peers,
                closed_by_watchdog,
            } = &mut *state;
            for (peer, phase) in peers.iter() {
                match *phase {
                    Phase::Body { deadline } if now >= deadline => shut.push((*peer, false)),
                    Phase::Closing { since } if now.duration_since(since) >= DRAIN_GRACE => {
                        shut.push((*peer, true))
                    }
                    _ => {}
                }
            }
            let mut idle: Vec<(Instant, SocketAddr)> = Vec::new();
            for (peer, conn) in conns.iter() {
                let last = match peers.get(peer) {
                    None => conn.first_seen,
                    Some(Phase::Idle { at }) => (*at).max(conn.first_seen),
                    Some(_) => continue, // a request thread has it
                };
                if now.duration_since(last) >= header_limit {
                    shut.push((*peer, true));
                    *closed_by_watchdog += 1;
                } else {
                    idle.push((conn.first_seen, *peer));
                }
            }
            let over = conns.len().saturating_sub(self.config.max_connections);
            if over > 0 {
                idle.sort_unstable_by(|a, b| b.0.cmp(&a.0)); // newest first
                for (_, peer) in idle.into_iter().take(over) {
                    shut.push((peer, true));
                    *closed_by_watchdog += 1;
                }
            }
        }
        for (peer, replace) in shut {
            if replace {
                self.close_now(peer);
            } else {
                self.shut_read(peer);
            }
        }
    }

    /// Ends `peer`'s connection whatever the client sends: its fds become
    /// `/dev/null` (end-of-file on read), and the socket is released.
    fn close_now(&self, peer: SocketAddr) {
        let Ok(null) = std::fs::File::open("/dev/null") else {
            self.shut_read(peer);
            return;
        };
        for fd in self.fds_of(peer) {
            if self.still_ours(fd, peer) {
                // Wake a thread blocked in read first; then swap the fd.
                // SAFETY: checked just above to be this connection's socket.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                let sock = SockRef::from(&borrowed);
                let _ = sock.shutdown(std::net::Shutdown::Both);
                // SAFETY: dup2 atomically replaces an fd we verified; the fd
                // number stays open, so its owner closes it as usual.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
    }

    /// Client connections open now, and how many the watchdog has closed.
    pub fn counts(&self) -> (usize, u64) {
        let state = self.lock();
        (state.conns.len(), state.closed_by_watchdog)
    }

    /// Runs `watch_once` every [`WATCH_EVERY`] until `stop` is set.
    pub fn spawn_watchdog(self: &Arc<Self>, stop: Arc<AtomicBool>) -> io::Result<()> {
        let me = self.clone();
        std::thread::Builder::new()
            .name("fs-conn-watchdog".into())
            .spawn(move || {
                while !stop.load(Relaxed) {
                    // A panic here must not end the watchdog.
                    let _ =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| me.watch_once()));
                    std::thread::sleep(WATCH_EVERY);
                }
            })
            .map(drop)
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
    /// side so the response still goes out but tiny_http's drain ends at
    /// once and the connection closes.
    pub fn close_after_response(&self) {
        if let Some(p) = self.peer {
            self.conns.lock().peers.insert(
                p,
                Phase::Closing {
                    since: Instant::now(),
                },
            );
            self.conns.shut_read(p);
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

/// The local and peer address of `fd`, if it is a connected socket.
fn socket_addrs(fd: RawFd) -> Option<(SocketAddr, SocketAddr)> {
    // SAFETY: only getsockname/getpeername are called; on an fd that is
    // not (or no longer) a socket they fail and nothing else happens.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = SockRef::from(&borrowed);
    let local = sock.local_addr().ok()?.as_socket()?;
    let peer = sock.peer_addr().ok()?.as_socket()?;
    Some((local, peer))
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
    lim.rlim_cur as u64
}

/// The default `--max-connections`: 1024, or less when the open-files
/// limit cannot hold two fds per connection plus a reserve for Redis
/// connections and the process itself.
pub fn default_max_connections(nofile: u64) -> usize {
    const RESERVE: u64 = 128;
    (nofile.saturating_sub(RESERVE) / 2).clamp(16, 1024) as usize
}
