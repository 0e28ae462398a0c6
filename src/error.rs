//! The store layer's one error type.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum StoreError {
    /// The caller's input was refused before anything was sent to Redis.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// Redis could not be reached in time (connect, read or write timeout,
    /// dropped connection, pool exhausted). Safe to retry: every operation
    /// of the store is idempotent.
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error (a script refusal, OOM ...), or with a
    /// reply the store could not decode. Never an outage: retrying the same
    /// call gets the same answer.
    #[error("redis error: {0}")]
    Redis(String),
    /// The entity's key exists but holds another type (a key another tool
    /// wrote under the prefix): an error for that entity only.
    #[error("key {key} holds a {kind}, not a hash")]
    WrongType { key: String, kind: String },
}

impl StoreError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        StoreError::InvalidInput(msg.into())
    }

    /// True when a retry on a fresh connection may succeed.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        if e.kind() == redis::ErrorKind::Parse {
            // Almost always a reply that does not fit the type asked for (a
            // value that is not UTF-8 read as a string): retrying gets the
            // same reply, so it is not an outage. (The connection is still
            // dropped, see `is_transport_error`.)
            StoreError::Redis(format!("unexpected reply: {e}"))
        } else if is_transport_error(&e)
            || matches!(e.retry_method(), redis::RetryMethod::WaitAndRetry)
        {
            // WaitAndRetry: LOADING (a restart reading its AOF), MASTERDOWN,
            // TRYAGAIN, CLUSTERDOWN. Redis is there but cannot serve yet, and
            // will by itself: an outage to wait out, not a refusal.
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Redis(e.to_string())
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

/// Errors that say nothing about the command, only about the connection:
/// the connection they happened on must not be reused. `Parse` is here
/// because redis-rs gives the same kind to a garbled reply stream (the
/// connection is lost) and to a reply that does not fit the Rust type asked
/// for (the connection is fine); dropping a good connection costs one
/// reconnect, reusing a garbled one costs wrong answers. The store's reads
/// ask for raw `Value`s and decode them itself, so the data it reads never
/// raises `Parse` at all.
pub(crate) fn is_transport_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), redis::ErrorKind::Parse | redis::ErrorKind::Client)
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn a_reply_that_does_not_decode_is_not_an_outage() {
        let value = redis::Value::BulkString(vec![0xff, 0xfe]);
        let parse = redis::from_redis_value::<String>(value).expect_err("not UTF-8");
        let e = StoreError::from(redis::RedisError::from(parse));
        assert!(matches!(e, StoreError::Redis(_)), "{e:?}");
        assert!(!e.is_unavailable());
        let io = redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(StoreError::from(io).is_unavailable());
    }

    #[test]
    fn a_redis_still_loading_its_data_is_an_outage_to_wait_out() {
        let loading = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::BusyLoading),
            "Redis is loading the dataset in memory",
        ));
        assert!(StoreError::from(loading).is_unavailable());
        let refused = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "OOM command not allowed",
        ));
        assert!(!StoreError::from(refused).is_unavailable());
    }
}
