//! The loader's one error type: what stops a run before or outside the
//! per-row accounting (a bad row is counted, not raised).

use std::path::PathBuf;

use thiserror::Error;

use crate::error::StoreError;
use crate::registry::RegistryError;

#[derive(Debug, Error)]
pub enum LoaderError {
    /// Flags that parse but do not make sense together.
    #[error("{0}")]
    Usage(String),
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An input that cannot be read as a whole (no header, no id column, an
    /// I/O error mid-file).
    #[error("{source_name}: {message}")]
    Input {
        source_name: String,
        message: String,
    },
    #[error("writing the failures file {path}: {source}")]
    FailuresFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing the metrics file {path}: {source}")]
    MetricsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--registry` names a file that cannot be read or has problems
    /// (each listed with its line).
    #[error("{0}")]
    Registry(#[from] RegistryError),
    /// The Redis lacks a command the scripts need (exit 2, before any
    /// input is read): `capabilities::describe` says which.
    #[error("{0}")]
    UnsupportedRedis(String),
    /// The store refused the configuration, or Redis failed a command
    /// outside the row accounting (`scripts --load`).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A --redis-ca-cert/--redis-client-cert/--redis-client-key file that
    /// is missing or not PEM (exit 2).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsFileError),
}

/// Exit statuses (documented in `--help` and the README).
pub mod exit {
    pub const OK: u8 = 0;
    /// Some rows were not written; the summary and failures list say which.
    pub const INCOMPLETE: u8 = 1;
    pub const USAGE: u8 = 2;
    /// Redis was unavailable (after the retries): the load stopped.
    pub const UNAVAILABLE: u8 = 3;
    /// Ctrl-C (SIGINT or SIGTERM): the rows read before it were written.
    pub const INTERRUPTED: u8 = 130;
}

impl LoaderError {
    pub fn exit_code(&self) -> u8 {
        match self {
            LoaderError::Store(e) if e.is_unavailable() => exit::UNAVAILABLE,
            LoaderError::Store(StoreError::Redis(_)) => exit::INCOMPLETE,
            LoaderError::FailuresFile { .. } | LoaderError::MetricsFile { .. } => exit::INCOMPLETE,
            _ => exit::USAGE,
        }
    }

    pub fn input(source_name: &str, message: impl Into<String>) -> Self {
        LoaderError::Input {
            source_name: source_name.to_owned(),
            message: message.into(),
        }
    }
}
