//! The server's one error type, and the one place it becomes an HTTP status.

use thiserror::Error;

use crate::error::StoreError;
use crate::registry::LookupError;

#[derive(Debug, Error)]
pub enum ApiError {
    /// The caller's input: a missing or malformed parameter, out of range.
    #[error("{0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method {method} not allowed on {path}; allowed: {allowed}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    #[error("request body too large: {declared} bytes declared, at most {limit} accepted")]
    PayloadTooLarge { declared: u64, limit: usize },
    /// The request is fine but the data is not what the store expects: an
    /// entity's key holds another type (written by another tool).
    #[error("{0}")]
    Conflict(String),
    #[error("request body not received in time")]
    BodyTimeout,
    /// No bearer token, or one the server does not know (see `auth`).
    #[error("{0}")]
    Unauthorized(String),
    /// A mutating request from another origin (a cross-site form or fetch),
    /// or a read token on a route that writes.
    #[error("{0}")]
    Forbidden(String),
    /// A body whose declared type is not one we parse.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// A handler panicked; the panic was logged and the thread lives on.
    #[error("internal error")]
    Panicked,
    #[error("redis unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn bad(msg: impl Into<String>) -> Self {
        ApiError::BadRequest(msg.into())
    }

    /// The HTTP status of each error: the only mapping in the server.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::BodyTimeout => 408,
            ApiError::Conflict(_) => 409,
            ApiError::PayloadTooLarge { .. } => 413,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Unavailable(_) => 503,
            ApiError::Internal(_) | ApiError::Panicked => 500,
        }
    }

    /// Logs a 5xx with its cause: called once per answered request, where
    /// the error becomes its status. The cause is the error's own words
    /// (a Redis or store message: never a feature value, a header or the
    /// query string); a 4xx is the caller's and is not logged.
    pub fn log_if_server_error(&self, method: &tiny_http::Method, route: &str) {
        let status = self.status();
        if status >= 500 {
            log::error!(
                "event=server_error method={} route={route} status={status} cause={}",
                crate::logging::value(method),
                crate::logging::value(self)
            );
        }
    }

    /// `{"error": "..."}`
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "error": self.to_string() }))
            .unwrap_or_else(|_| br#"{"error":"internal error"}"#.to_vec())
    }
}

impl ApiError {
    /// What a store error `e` becomes, said as `msg` (a route that tells
    /// more than the store's own words keeps the same status).
    pub fn from_store(e: &StoreError, msg: String) -> Self {
        match e {
            StoreError::InvalidInput(_) => ApiError::BadRequest(msg),
            StoreError::Unavailable(_) => ApiError::Unavailable(msg),
            StoreError::Redis(_) => ApiError::Internal(msg),
            StoreError::WrongType { .. } => ApiError::Conflict(msg),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = match &e {
            StoreError::InvalidInput(m) | StoreError::Unavailable(m) => m.clone(),
            StoreError::Redis(m) => format!("redis error: {m}"),
            StoreError::WrongType { .. } => e.to_string(),
        };
        ApiError::from_store(&e, msg)
    }
}

/// A name the registry cannot serve: an unknown model, entity or feature is
/// 404; a malformed list (two entities, a feature twice, none) is 400.
impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        if e.is_not_found() {
            ApiError::NotFound(e.to_string())
        } else {
            ApiError::BadRequest(e.to_string())
        }
    }
}
