//! The connection pool: r2d2 over sync redis connections with every timeout
//! bounded.
//!
//! r2d2's stock manager for `redis::Client` connects without a timeout and
//! PINGs on every checkout. This one connects, reads and writes with bounded
//! timeouts and skips the checkout PING (a second round trip on the hot
//! path); a connection that saw a transport error is marked broken and never
//! goes back into the pool, and the store retries once on a live one (see
//! `checkout_live`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::{ConnectionLike, RedisResult};

use crate::error::{is_transport_error, StoreError};
use crate::tls::TlsConfig;

/// Timeouts and size of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_size: u32,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// How long a caller waits for a free connection before `Unavailable`.
    pub checkout_timeout: Duration,
    /// CA and client certificate for `rediss://` (each cluster node's pool
    /// gets the same).
    pub tls: TlsConfig,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 16,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            checkout_timeout: Duration::from_secs(2),
            tls: TlsConfig::default(),
        }
    }
}

/// A pooled connection plus the verdict on whether it may be reused.
pub struct Conn {
    inner: redis::Connection,
    broken: bool,
    opened: Instant,
}

impl Conn {
    /// Marks the connection never to be reused (replies left unread on it).
    pub fn discard(&mut self) {
        self.broken = true;
    }

    /// Runs `f` on the raw connection and marks it broken when the error
    /// says the stream is in an unknown state (I/O, timeout, bad reply).
    pub fn run<T>(
        &mut self,
        f: impl FnOnce(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, StoreError> {
        f(&mut self.inner).map_err(|e| {
            if is_transport_error(&e) {
                self.broken = true;
            }
            StoreError::from(e)
        })
    }
}

pub struct Manager {
    client: redis::Client,
    connect_timeout: Duration,
    io_timeout: Duration,
    /// Why the latest connect failed; cleared by one that succeeds (see
    /// `get`).
    last_error: LastError,
}

/// Shared by a pool and its manager.
#[derive(Clone, Default)]
struct LastError(Arc<Mutex<Option<String>>>);

impl LastError {
    fn get(&self) -> Option<String> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set(&self, outcome: Option<String>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = outcome;
    }
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = redis::RedisError;

    fn connect(&self) -> RedisResult<Conn> {
        let connected = self
            .client
            .get_connection_with_timeout(self.connect_timeout)
            .and_then(|inner| {
                inner.set_read_timeout(Some(self.io_timeout))?;
                inner.set_write_timeout(Some(self.io_timeout))?;
                Ok(inner)
            });
        self.last_error
            .set(connected.as_ref().err().map(|e| e.to_string()));
        Ok(Conn {
            inner: connected?,
            broken: false,
            opened: Instant::now(),
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> RedisResult<()> {
        redis::cmd("PING").query::<()>(&mut conn.inner)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.inner.is_open()
    }
}

/// The r2d2 pool, and why its latest connect failed.
pub struct Pool {
    inner: r2d2::Pool<Manager>,
    last_error: LastError,
}

impl Pool {
    /// Connections open and idle now (what `/metrics` shows).
    pub fn state(&self) -> r2d2::State {
        self.inner.state()
    }

    pub fn max_size(&self) -> u32 {
        self.inner.max_size()
    }
}

/// A pooled connection, or `Unavailable` saying why none could be made.
/// r2d2 hands the latest connect error to only one of the callers whose
/// wait times out (the others read just "timed out waiting for
/// connection"), so the manager keeps its own copy and every caller gets the
/// cause: a refused connection, a certificate that does not verify, a wrong
/// password.
pub fn get(pool: &Pool) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
    pool.inner.get().map_err(|e| {
        let message = e.to_string();
        match pool.last_error.get() {
            Some(cause) if !message.contains(&cause) => {
                StoreError::Unavailable(format!("{message}: {cause}"))
            }
            _ => StoreError::Unavailable(message),
        }
    })
}

/// A connection to retry on after a transport error seen at `failed_at`.
///
/// Redis restarting (or `CLIENT KILL`) leaves every pooled connection dead
/// at once, and the pool does not test connections on checkout (that PING
/// would cost every request a round trip). So only here, on the error
/// path, a pooled connection opened before the failure is PINGed first and
/// dropped when dead: a dead one fails its PING at once, so a pool full of
/// them costs a few fast PINGs instead of a failed request. A PING that
/// times out ends the search: Redis is slow or gone, not restarted.
pub fn checkout_live(
    pool: &Pool,
    failed_at: Instant,
) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
    // Each dead connection dropped makes room for a new one, so this ends
    // with a fresh connection at the latest after the pool's size.
    for _ in 0..=pool.inner.max_size() {
        let mut conn = get(pool)?;
        if conn.opened > failed_at {
            return Ok(conn);
        }
        match redis::cmd("PING").query::<()>(&mut conn.inner) {
            Ok(()) => return Ok(conn),
            Err(e) => {
                conn.broken = true;
                if e.is_timeout() {
                    return Err(StoreError::from(e));
                }
            }
        }
    }
    Err(StoreError::Unavailable(
        "every pooled connection was dead and no new one answered".into(),
    ))
}

/// Builds the pool without connecting: the first request connects, so a
/// server can start (and answer 503) while Redis is still down.
pub fn build(url: &str, config: &PoolConfig) -> Result<Pool, StoreError> {
    let client = config.tls.client(url)?;
    let last_error = LastError::default();
    let manager = Manager {
        client,
        connect_timeout: config.connect_timeout,
        io_timeout: config.io_timeout,
        last_error: last_error.clone(),
    };
    let inner = r2d2::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(config.checkout_timeout)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager);
    Ok(Pool { inner, last_error })
}
