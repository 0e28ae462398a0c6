//! The connection pool: r2d2 over sync redis connections with every timeout
//! bounded.
//!
//! r2d2's stock manager for `redis::Client` connects without a timeout and
//! PINGs on every checkout. This one connects, reads and writes with bounded
//! timeouts and skips the checkout PING (a second round trip on the hot
//! path); a connection that saw a transport error is marked broken and never
//! goes back into the pool, and the store retries once on a fresh one.

use std::time::Duration;

use redis::{ConnectionLike, RedisResult};

use crate::error::{is_transport_error, StoreError};

/// Timeouts and size of the pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub max_size: u32,
    pub connect_timeout: Duration,
    pub io_timeout: Duration,
    /// How long a caller waits for a free connection before `Unavailable`.
    pub checkout_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: 16,
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_secs(2),
            checkout_timeout: Duration::from_secs(2),
        }
    }
}

/// A pooled connection plus the verdict on whether it may be reused.
pub struct Conn {
    inner: redis::Connection,
    broken: bool,
}

impl Conn {
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
}

impl r2d2::ManageConnection for Manager {
    type Connection = Conn;
    type Error = redis::RedisError;

    fn connect(&self) -> RedisResult<Conn> {
        let inner = self
            .client
            .get_connection_with_timeout(self.connect_timeout)?;
        inner.set_read_timeout(Some(self.io_timeout))?;
        inner.set_write_timeout(Some(self.io_timeout))?;
        Ok(Conn {
            inner,
            broken: false,
        })
    }

    fn is_valid(&self, conn: &mut Conn) -> RedisResult<()> {
        redis::cmd("PING").query::<()>(&mut conn.inner)
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken || !conn.inner.is_open()
    }
}

pub type Pool = r2d2::Pool<Manager>;

/// Builds the pool without connecting: the first request connects, so a
/// server can start (and answer 503) while Redis is still down.
pub fn build(url: &str, config: &PoolConfig) -> Result<Pool, StoreError> {
    let client = redis::Client::open(url)
        .map_err(|e| StoreError::invalid(format!("bad redis url {url:?}: {e}")))?;
    let manager = Manager {
        client,
        connect_timeout: config.connect_timeout,
        io_timeout: config.io_timeout,
    };
    Ok(r2d2::Pool::builder()
        .max_size(config.max_size)
        .min_idle(Some(0))
        .test_on_check_out(false)
        .connection_timeout(config.checkout_timeout)
        .error_handler(Box::new(r2d2::NopErrorHandler))
        .build_unchecked(manager))
}
