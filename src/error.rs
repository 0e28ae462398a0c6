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
        if is_transport_error(&e) {
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
/// for (the connection is fine): the store therefore asks for raw `Value`s
/// and decodes them itself, so a value it cannot decode is a `Redis` error
/// about that value, never an outage.
pub(crate) fn is_transport_error(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.kind(), redis::ErrorKind::Parse | redis::ErrorKind::Client)
}
