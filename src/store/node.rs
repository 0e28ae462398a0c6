//! One Redis server: its connection pool, pipelines on one connection, and
//! script calls with NOSCRIPT recovery. A standalone store is one node; a
//! cluster store is one node per primary, and `cluster` routes to them.
//!
//! Replies come back raw (an error reply is a `Value::ServerError`, never
//! an `Err`): what an error reply means is decided by the caller, which
//! knows whether it is a refusal, an outage or (on a cluster) a redirect.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use redis::{Cmd, ErrorKind, ServerErrorKind, Value};

use crate::error::StoreError;
use crate::pool::{self, Conn, Manager, Pool};
use crate::scripts::LuaScript;
use crate::store::RedisStats;
use r2d2::PooledConnection;

/// How many rounds in a row `Node::script_pipeline` re-loads the script
/// without any call running before it gives up on those calls. A flush
/// between the `SCRIPT LOAD` and the calls of the same pipeline is rare; a
/// Redis where eight rounds in a row lose the script is not keeping it.
pub(super) const NOSCRIPT_ROUNDS_WITHOUT_PROGRESS: u32 = 8;

pub(crate) struct Node {
    /// `host:port`, as the cluster names it (empty for a standalone store).
    pub(super) addr: String,
    pub(super) pool: Pool,
    /// Every time a pipeline or command went out on a connection.
    round_trips: AtomicU64,
    /// The rest of what `/metrics` shows of this node: atomics bumped next
    /// to the round trip, never a lock.
    counters: NodeCounters,
}

/// What a node counts besides its round trips (see `RedisStats`).
#[derive(Default)]
struct NodeCounters {
    script_calls: AtomicU64,
    noscript_reloads: AtomicU64,
    checkout_timeouts: AtomicU64,
    checkout_wait_micros: AtomicU64,
    /// Failed operations, by `ErrorClass` (after the store's own retry).
    errors: [AtomicU64; ErrorClass::ALL.len()],
}

/// How a failed operation failed, for the `kind` label of
/// `fs_redis_errors_total`. Told from the error's text: the store's error
/// type keeps the words, not redis-rs's kinds (its variants say what a
/// caller should do, not why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// A connect, read or write ran past `--redis-timeout-ms`.
    Timeout,
    /// Nothing listens at the address (Redis down, wrong port).
    Refused,
    /// No pooled connection came free within the checkout timeout.
    PoolTimeout,
    /// Any other outage: a dropped connection, LOADING, CLUSTERDOWN ...
    Unavailable,
    /// A key of another type than the store's hashes.
    WrongType,
    /// Redis answered with an error (a script refusal, OOM, an ACL ...).
    Server,
}

impl ErrorClass {
    pub const ALL: [ErrorClass; 6] = [
        ErrorClass::Timeout,
        ErrorClass::Refused,
        ErrorClass::PoolTimeout,
        ErrorClass::Unavailable,
        ErrorClass::WrongType,
        ErrorClass::Server,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Timeout => "timeout",
            ErrorClass::Refused => "refused",
            ErrorClass::PoolTimeout => "pool_timeout",
            ErrorClass::Unavailable => "unavailable",
            ErrorClass::WrongType => "wrong_type",
            ErrorClass::Server => "server",
        }
    }

    /// The class of `e`; `None` for input refused before Redis was asked.
    pub fn of(e: &StoreError) -> Option<ErrorClass> {
        Some(match e {
            StoreError::InvalidInput(_) => return None,
            StoreError::WrongType { .. } => ErrorClass::WrongType,
            StoreError::Redis(m) if m.contains("WRONGTYPE") => ErrorClass::WrongType,
            StoreError::Redis(_) => ErrorClass::Server,
            StoreError::Unavailable(m) => {
                let m = m.to_ascii_lowercase();
                let timed_out = |m: &str| {
                    m.contains("timed out")
                        || m.contains("timeout")
                        // A socket read timeout is EAGAIN on Linux.
                        || m.contains("temporarily unavailable")
                };
                // r2d2 says "timed out waiting for connection", followed by
                // the last connect error when there was one: that error is
                // the cause, the pool only waited for it.
                match m.split_once("waiting for connection") {
                    _ if m.contains("refused") => ErrorClass::Refused,
                    Some((_, cause)) if cause.trim().is_empty() => ErrorClass::PoolTimeout,
                    Some((_, cause)) if timed_out(cause) => ErrorClass::Timeout,
                    None if timed_out(&m) => ErrorClass::Timeout,
                    _ => ErrorClass::Unavailable,
                }
            }
        })
    }
}

impl Node {
    pub(super) fn new(addr: String, pool: Pool) -> Node {
        Node {
            addr,
            pool,
            round_trips: AtomicU64::new(0),
            counters: NodeCounters::default(),
        }
    }

    pub(super) fn round_trips(&self) -> u64 {
        self.round_trips.load(Relaxed)
    }

    /// Adds this node's counters and pool state to `into`.
    pub(super) fn add_stats(&self, into: &mut RedisStats) {
        let c = &self.counters;
        into.round_trips_total += self.round_trips();
        into.script_calls_total += c.script_calls.load(Relaxed);
        into.noscript_reloads_total += c.noscript_reloads.load(Relaxed);
        into.pool_checkout_timeouts_total += c.checkout_timeouts.load(Relaxed);
        into.pool_checkout_wait_micros_total += c.checkout_wait_micros.load(Relaxed);
        for (total, n) in into.errors_total.iter_mut().zip(&c.errors) {
            *total += n.load(Relaxed);
        }
        // One short lock inside r2d2, at scrape time only.
        let state = self.pool.state();
        into.pool_connections += u64::from(state.connections);
        into.pool_idle += u64::from(state.idle_connections);
        into.pool_max += u64::from(self.pool.max_size());
    }

    /// A pooled connection, the wait (and a wait that ran out) counted.
    fn checkout(&self) -> Result<PooledConnection<Manager>, StoreError> {
        let started = Instant::now();
        let conn = pool::get(&self.pool);
        let waited = started.elapsed().as_micros() as u64;
        self.counters
            .checkout_wait_micros
            .fetch_add(waited, Relaxed);
        conn.inspect_err(|_| {
            self.counters.checkout_timeouts.fetch_add(1, Relaxed);
        })
    }

    /// Counts a failed operation by its class; returns `result` as it is.
    fn note<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &result {
            if let Some(class) = ErrorClass::of(e) {
                self.counters.errors[class as usize].fetch_add(1, Relaxed);
            }
        }
        result
    }

    /// Runs `op` on a pooled connection; when the connection fails under it
    /// (a Redis restart leaves every pooled connection stale), runs it once
    /// more on a fresh one. Every operation of the store is idempotent.
    pub(super) fn with_conn<T>(
        &self,
        op: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = self.with_conn_uncounted(op);
        self.note(result)
    }

    fn with_conn_uncounted<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.checkout()?;
        self.round_trips.fetch_add(1, Relaxed);
        match op(&mut conn) {
            Err(e) if e.is_unavailable() => {
                let failed_at = Instant::now();
                drop(conn);
                let mut live = pool::checkout_live(&self.pool, failed_at)?;
                self.round_trips.fetch_add(1, Relaxed);
                op(&mut live)
            }
            other => other,
        }
    }

    /// One command, its reply raw.
    pub(super) fn query(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        self.with_conn(|c| c.run(|c| cmd.query::<Value>(c)))
    }

    /// A pipeline of script calls, one raw reply per call, or the transport
    /// error that kept a call's reply from arriving. Calls that failed with
    /// NOSCRIPT (after `SCRIPT FLUSH`, a restart or a failover: nothing ran
    /// for them) are re-sent after loading the script, in the same pipeline
    /// as the `SCRIPT LOAD`, round after round while Redis keeps answering:
    /// a script flushed again between rounds only costs another round.
    /// Rounds stop when a round fails to reach Redis, or after
    /// `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS` rounds in a row in which no call
    /// ran. Calls that ran are never sent again.
    ///
    /// With `asking`, every call goes after an `ASKING` (a cluster slot
    /// being imported by this node: see `cluster`).
    pub(super) fn script_pipeline(
        &self,
        script: &LuaScript,
        cmds: &[&Cmd],
        asking: bool,
    ) -> Vec<Result<Value, StoreError>> {
        let first = self.calls(None, cmds.iter().copied(), asking);
        self.count_script_calls(cmds.len());
        self.noscript_rounds(script, cmds, asking, first)
    }

    /// The NOSCRIPT rounds of `script_pipeline`, after the first round's
    /// replies (`first`, sent by the caller).
    pub(super) fn noscript_rounds(
        &self,
        script: &LuaScript,
        cmds: &[&Cmd],
        asking: bool,
        first: Result<Vec<Value>, StoreError>,
    ) -> Vec<Result<Value, StoreError>> {
        let replies = match first {
            Ok(replies) => replies,
            Err(e) => return vec![Err(e); cmds.len()],
        };
        let mut outcomes: Vec<Result<Value, StoreError>> = replies.into_iter().map(Ok).collect();
        let mut retry: Vec<usize> = (0..cmds.len())
            .filter(|&i| is_noscript(&outcomes[i]))
            .collect();
        let mut idle_rounds = 0;
        while !retry.is_empty() && idle_rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS {
            self.counters.noscript_reloads.fetch_add(1, Relaxed);
            self.count_script_calls(retry.len());
            let again = retry.iter().map(|&i| cmds[i]);
            let mut replies = match self.calls(Some(script), again, asking) {
                Ok(replies) => replies.into_iter(),
                Err(e) => {
                    for &i in &retry {
                        outcomes[i] = Err(e.clone());
                    }
                    return outcomes;
                }
            };
            if let Some(Value::ServerError(e)) = replies.next() {
                // SCRIPT LOAD refused (scripting disabled, an ACL): no round
                // can succeed.
                let error = StoreError::Redis(format!("{}: SCRIPT LOAD: {e}", script.name));
                for &i in &retry {
                    outcomes[i] = Err(error.clone());
                }
                return outcomes;
            }
            let before = retry.len();
            let mut still = Vec::new();
            for (&i, reply) in retry.iter().zip(replies) {
                outcomes[i] = Ok(reply);
                if is_noscript(&outcomes[i]) {
                    still.push(i);
                }
            }
            idle_rounds = if still.len() < before {
                0
            } else {
                idle_rounds + 1
            };
            retry = still;
        }
        outcomes
    }

    /// `n` script calls sent (a NOSCRIPT re-send counts again).
    pub(super) fn count_script_calls(&self, n: usize) {
        self.counters.script_calls.fetch_add(n as u64, Relaxed);
    }

    /// One round trip: a `SCRIPT LOAD` of `load` when given (its reply
    /// first), then `cmds`, each after an `ASKING` when `asking` (whose
    /// replies are dropped).
    fn calls<'a>(
        &self,
        load: Option<&LuaScript>,
        cmds: impl Iterator<Item = &'a Cmd>,
        asking: bool,
    ) -> Result<Vec<Value>, StoreError> {
        self.send(load, cmds, asking).finish(self)
    }

    /// Writes a round trip's commands (as `calls` lays them out) on a
    /// connection and returns without reading the replies: a cluster writes
    /// every node's part before it reads any, so the nodes work at once.
    pub(super) fn send<'a>(
        &self,
        load: Option<&LuaScript>,
        cmds: impl Iterator<Item = &'a Cmd>,
        asking: bool,
    ) -> Sent {
        let mut pipe = redis::pipe();
        if let Some(script) = load {
            pipe.cmd("SCRIPT").arg("LOAD").arg(script.source);
        }
        for cmd in cmds {
            if asking {
                pipe.cmd("ASKING");
            }
            pipe.add_command(cmd.clone());
        }
        let packed = pipe.get_packed_pipeline();
        let replies = pipe.len();
        let conn = match self.checkout() {
            Err(e) => Written::NoConnection(e),
            Ok(mut conn) => {
                self.round_trips.fetch_add(1, Relaxed);
                match conn.run(|c| c.send_packed_command(&packed)) {
                    Ok(()) => Written::Pending(conn),
                    Err(e) => Written::Lost(e),
                }
            }
        };
        Sent {
            packed,
            replies,
            keep_from: usize::from(load.is_some()),
            asking,
            conn,
        }
    }

    /// Runs one script call; on NOSCRIPT (after `SCRIPT FLUSH`, a restart or
    /// a failover) loads the script on the same connection and calls again,
    /// up to `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS` times.
    pub(super) fn eval(&self, script: &LuaScript, cmd: &Cmd) -> Result<Value, StoreError> {
        self.with_conn(|c| {
            self.count_script_calls(1);
            c.run(|c| {
                // A script flushed again between the load and the call (a
                // flush loop, back-to-back failovers) costs another round.
                let mut rounds = 0;
                loop {
                    match cmd.query::<Value>(c) {
                        Err(e)
                            if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                                && rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS =>
                        {
                            self.counters.noscript_reloads.fetch_add(1, Relaxed);
                            self.count_script_calls(1);
                            script.load(c)?;
                            rounds += 1;
                        }
                        other => return other,
                    }
                }
            })
        })
    }
}

fn is_noscript(outcome: &Result<Value, StoreError>) -> bool {
    matches!(outcome, Ok(Value::ServerError(e)) if e.kind() == Some(ServerErrorKind::NoScript))
}

/// A round trip written on a connection, its replies not read yet (see
/// `Node::send`). Finish every one: dropped unread, its connection is
/// discarded, never reused with replies pending.
pub(super) struct Sent {
    packed: Vec<u8>,
    /// How many replies the connection owes (`ASKING`s included).
    replies: usize,
    /// Replies before this index are the `SCRIPT LOAD`'s (kept as they are).
    keep_from: usize,
    asking: bool,
    conn: Written,
}

enum Written {
    /// Sent; the replies are on their way.
    Pending(PooledConnection<Manager>),
    /// The connection failed under the write: worth once more on a fresh one.
    Lost(StoreError),
    /// No connection to be had (the pool's wait ran out): nothing was sent.
    NoConnection(StoreError),
    Finished,
}

impl Sent {
    /// Reads the replies; when the connection failed under the round trip
    /// (a Redis restart leaves every pooled connection stale), sends it
    /// once more on a fresh one, as `Node::with_conn` does. The replies
    /// are raw, one per command, the `ASKING`s' dropped.
    pub(super) fn finish(self, node: &Node) -> Result<Vec<Value>, StoreError> {
        node.note(self.finish_uncounted(node))
    }

    fn finish_uncounted(mut self, node: &Node) -> Result<Vec<Value>, StoreError> {
        let replies = self.replies;
        let read = |c: &mut redis::Connection| {
            (0..replies)
                .map(|_| c.recv_response())
                .collect::<Result<Vec<_>, _>>()
        };
        let first = match std::mem::replace(&mut self.conn, Written::Finished) {
            Written::Pending(mut conn) => conn.run(read),
            Written::Lost(e) => Err(e),
            Written::NoConnection(e) => return Err(e),
            Written::Finished => return Err(StoreError::Redis("a round trip read twice".into())),
        };
        let replies = match first {
            Ok(replies) => replies,
            Err(e) if e.is_unavailable() => {
                let failed_at = Instant::now();
                let mut live = pool::checkout_live(&node.pool, failed_at)?;
                node.round_trips.fetch_add(1, Relaxed);
                live.run(|c| {
                    c.send_packed_command(&self.packed)?;
                    read(c)
                })?
            }
            Err(e) => return Err(e),
        };
        if !self.asking {
            return Ok(replies);
        }
        // After the SCRIPT LOAD's reply: ASKING's +OK, the call's reply, ...
        let (load, calls) = replies.split_at(self.keep_from.min(replies.len()));
        let mut kept = load.to_vec();
        kept.extend(calls.iter().skip(1).step_by(2).cloned());
        Ok(kept)
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Written::Pending(conn) = &mut self.conn {
            conn.discard();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorClass;
    use crate::error::StoreError;

    #[test]
    fn an_error_is_classed_by_its_cause_not_by_the_pool_that_waited_for_it() {
        let class = |m: &str| ErrorClass::of(&StoreError::Unavailable(m.into()));
        let refused = "timed out waiting for connection: Connection refused (os error 111)";
        assert_eq!(class(refused), Some(ErrorClass::Refused));
        assert_eq!(
            class("timed out waiting for connection"),
            Some(ErrorClass::PoolTimeout)
        );
        assert_eq!(
            class("Resource temporarily unavailable (os error 11)"),
            Some(ErrorClass::Timeout)
        );
        assert_eq!(class("broken pipe"), Some(ErrorClass::Unavailable));
        let wrong = StoreError::Redis("WRONGTYPE Operation against a key".into());
        assert_eq!(ErrorClass::of(&wrong), Some(ErrorClass::WrongType));
        assert_eq!(ErrorClass::of(&StoreError::invalid("bad id")), None);
    }
}
