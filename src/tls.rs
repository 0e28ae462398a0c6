//! TLS towards Redis: the CA and client-certificate files behind
//! `--redis-ca-cert`, `--redis-client-cert` and `--redis-client-key`, read
//! and checked once at start, and the `redis::Client` every connection of
//! the store is made from (each pool, each cluster node's, the pacer's
//! probe), so they all verify Redis the same way.
//!
//! A `rediss://` URL without a CA file verifies the server against the
//! system's roots (rustls-native-certs); with one, against that file only.

use std::fmt;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use thiserror::Error;

use crate::error::StoreError;
use crate::redis_url::{is_tls, redact};

/// The PEM files given for TLS, read into memory (a file that changes on
/// disk later takes a restart, as certificates do in redis-server).
#[derive(Clone, Default)]
pub struct TlsConfig {
    ca_cert: Option<Vec<u8>>,
    /// Certificate chain and private key, both PEM.
    client: Option<(Vec<u8>, Vec<u8>)>,
}

/// The key never goes into a log line, not even by `{:?}`.
impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca_cert", &self.ca_cert.as_ref().map(|_| "<set>"))
            .field("client", &self.client.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// A TLS file that cannot be used: the flag, the path and the problem.
#[derive(Debug, Error)]
pub enum TlsFileError {
    #[error("{flag} {}: {problem}", path.display())]
    File {
        flag: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error("--redis-client-cert and --redis-client-key go together: {0} is not given")]
    Unpaired(&'static str),
}

impl TlsConfig {
    /// Reads and checks the files: each must exist and hold PEM of the
    /// right kind (certificates; one private key).
    pub fn load(
        ca_cert: Option<&Path>,
        client_cert: Option<&Path>,
        client_key: Option<&Path>,
    ) -> Result<TlsConfig, TlsFileError> {
        let ca_cert = ca_cert
            .map(|p| read_certificates("--redis-ca-cert", p))
            .transpose()?;
        let client = match (client_cert, client_key) {
            (Some(cert), Some(key)) => Some((
                read_certificates("--redis-client-cert", cert)?,
                read_key("--redis-client-key", key)?,
            )),
            (Some(_), None) => return Err(TlsFileError::Unpaired("--redis-client-key")),
            (None, Some(_)) => return Err(TlsFileError::Unpaired("--redis-client-cert")),
            (None, None) => None,
        };
        Ok(TlsConfig { ca_cert, client })
    }

    /// No file given: a `rediss://` URL uses the system's roots.
    pub fn is_empty(&self) -> bool {
        self.ca_cert.is_none() && self.client.is_none()
    }

    /// The client for `url` with these files. Files given for a URL that is
    /// not `rediss://` are refused: they would silently go unused, and the
    /// operator meant to encrypt. Never connects. Errors name the URL
    /// without its password.
    pub fn client(&self, url: &str) -> Result<redis::Client, StoreError> {
        let bad = |e: &dyn fmt::Display| {
            StoreError::invalid(format!("bad redis url {:?}: {e}", redact(url)))
        };
        if self.is_empty() {
            return redis::Client::open(url).map_err(|e| bad(&e));
        }
        if !is_tls(url) {
            return Err(bad(
                &"--redis-ca-cert and --redis-client-cert/--redis-client-key need a rediss:// \
                  (or rediss+cluster://) url",
            ));
        }
        let certificates = redis::TlsCertificates {
            client_tls: self
                .client
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca_cert.clone(),
        };
        redis::Client::build_with_tls(url, certificates).map_err(|e| bad(&e))
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| TlsFileError::File {
        flag,
        path: path.to_owned(),
        problem: e.to_string(),
    })
}

/// One or more PEM certificates.
fn read_certificates(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read(flag, path)?;
    let problem = |problem: String| TlsFileError::File {
        flag,
        path: path.to_owned(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| problem(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(problem(
            "no PEM certificate in it (no \"-----BEGIN CERTIFICATE-----\")".into(),
        ));
    }
    Ok(pem)
}

/// One PEM private key (PKCS#8, PKCS#1 or SEC1).
fn read_key(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let pem = read(flag, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| TlsFileError::File {
        flag,
        path: path.to_owned(),
        problem: format!("no PEM private key in it: {e}"),
    })?;
    Ok(pem)
}

/// The TLS flags fs-server and fs-loader share (the loader's work before
/// or after its subcommand).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TlsArgs {
    /// CA certificate(s), PEM, that a rediss:// Redis's certificate must
    /// chain to, instead of the system's roots.
    #[arg(long, global = true, env = "FS_REDIS_CA_CERT", value_name = "FILE")]
    pub redis_ca_cert: Option<PathBuf>,
    /// Client certificate (chain), PEM, for a Redis that asks for one
    /// (tls-auth-clients); with --redis-client-key.
    #[arg(long, global = true, env = "FS_REDIS_CLIENT_CERT", value_name = "FILE")]
    pub redis_client_cert: Option<PathBuf>,
    /// The client certificate's private key, PEM.
    #[arg(long, global = true, env = "FS_REDIS_CLIENT_KEY", value_name = "FILE")]
    pub redis_client_key: Option<PathBuf>,
}

impl TlsArgs {
    /// The files read and checked (see [`TlsConfig::load`]).
    pub fn load(&self) -> Result<TlsConfig, TlsFileError> {
        TlsConfig::load(
            self.redis_ca_cert.as_deref(),
            self.redis_client_cert.as_deref(),
            self.redis_client_key.as_deref(),
        )
    }
}
