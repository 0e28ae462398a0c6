//! The store, the server and the loader against a Redis that requires TLS,
//! with certificates made here (rcgen): a CA, a server certificate for
//! 127.0.0.1/localhost, a client certificate, and a second CA for the
//! wrong-CA case. And an ACL user's password, which no message shows.
//!
//! The ACL-limited run of the store suite itself is `FS_TEST_ACL=1` (see
//! `common::redis`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use feature_store::managed_redis::ServerTls;
use feature_store::pool::PoolConfig;
use feature_store::tls::TlsConfig;
use feature_store::{FeatureMap, FeatureStore, FeatureValue, ManagedRedis};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::common::{self, wait_until};
use crate::loader::{count, show, summary};
use crate::server::{send, Server};

const LOADER: &str = env!("CARGO_BIN_EXE_fs-loader");
const SERVER: &str = env!("CARGO_BIN_EXE_fs-server");

/// Connect timeout for TLS: a handshake in a debug build (ring unoptimized)
/// on a busy 2-core machine can take longer than the suite's usual 300 ms.
const TLS_TIMEOUT_MS: u64 = 3000;

/// The PEM files of one test, in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    /// A CA that signed nothing Redis presents.
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca(name: &str) -> (String, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("self-signing the CA");
    (cert.pem(), Issuer::new(params, key))
}

/// A leaf certificate `issuer` signs, and its key, as PEM.
fn leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
    usage: &[ExtendedKeyUsagePurpose],
) -> (String, String) {
    let key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).expect("leaf params");
    params.extended_key_usages = usage.to_vec();
    let cert = params.signed_by(&key, issuer).expect("signing");
    (cert.pem(), key.serialize_pem())
}

fn pki() -> Pki {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, issuer) = ca("feature store test CA");
    let (other_pem, _) = ca("some other CA");
    let (server_cert, server_key) = leaf(
        &issuer,
        &["127.0.0.1", "localhost"],
        // A cluster node also presents it as a client, on the cluster bus.
        &[
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    );
    let (client_cert, client_key) = leaf(
        &issuer,
        &["fs-client"],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    );
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("writing a PEM file");
        path
    };
    Pki {
        ca: write("ca.pem", &ca_pem),
        other_ca: write("other-ca.pem", &other_pem),
        server_cert: write("server.pem", &server_cert),
        server_key: write("server-key.pem", &server_key),
        client_cert: write("client.pem", &client_cert),
        client_key: write("client-key.pem", &client_key),
        dir,
    }
}

/// A redis-server with TLS on a second port, certificates from `pki`.
fn tls_redis(pki: &Pki, require_client_cert: bool) -> ManagedRedis {
    ManagedRedis::start_with_tls(
        &ServerTls {
            cert_file: pki.server_cert.clone(),
            key_file: pki.server_key.clone(),
            ca_file: pki.ca.clone(),
            require_client_cert,
        },
        &[],
    )
    .unwrap_or_else(|e| panic!("starting a TLS redis-server: {e}"))
}

fn tls_url(redis: &ManagedRedis) -> String {
    redis.tls_url().expect("started with TLS")
}

fn store_over(url: &str, tls: TlsConfig) -> Result<FeatureStore, feature_store::StoreError> {
    let mut config = common::store_config();
    config.pool = PoolConfig { tls, ..config.pool };
    FeatureStore::open(url, config)
}

fn row(id: &str, country: &str) -> (String, FeatureMap) {
    let mut features = FeatureMap::new();
    features.insert("country_iso".into(), FeatureValue::Str(country.into()));
    (id.to_owned(), features)
}

/// Writes one row through `store`, reads it back through it, and checks on
/// the plain port (the default user) that Redis really holds it.
fn write_and_read_back(store: &FeatureStore, redis: &ManagedRedis) {
    let report = store
        .bulk_load(&[row("u0001", "NZ")], 3600)
        .expect("writing over TLS");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    let read = store
        .get_features("u0001", &["country_iso"])
        .expect("reading over TLS");
    assert_eq!(read["country_iso"].as_str(), Some("NZ"));
    let stored: Option<String> = redis::cmd("HGET")
        .arg("fs:user:u0001")
        .arg("country_iso")
        .query(&mut redis.raw_plain())
        .expect("HGET on the plain port");
    assert_eq!(stored.as_deref(), Some("NZ"));
}

/// What a certificate refused by rustls reads like in any message.
fn names_unknown_issuer(text: &str) -> bool {
    text.contains("invalid peer certificate") && text.contains("UnknownIssuer")
}

trait PlainConn {
    fn raw_plain(&self) -> redis::Connection;
}

impl PlainConn for ManagedRedis {
    fn raw_plain(&self) -> redis::Connection {
        common::Backend::raw(self)
    }
}

#[test]
fn a_store_over_tls_with_the_ca_given_writes_and_reads_back() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let tls = TlsConfig::load(Some(&pki.ca), None, None).expect("the CA file");
    let store = store_over(&tls_url(&redis), tls).expect("opening the store");
    write_and_read_back(&store, &redis);
    // The pacer's probe connects with the same files: it measures.
    let pacer = feature_store::pacing::Pacer::with_tls(
        feature_store::pacing::PaceMode::budget_ms(5.0),
        &tls_url(&redis),
        &TlsConfig::load(Some(&pki.ca), None, None).expect("the CA file"),
    )
    .expect("a pacer");
    wait_until(
        "the probe's first PING over TLS",
        Duration::from_secs(10),
        || {
            pacer.admit(1); // the probe measures while writes are admitted
            let s = pacer.snapshot();
            assert!(s.probe_error.is_none(), "{s:?}");
            s.redis_latency_ms.is_some()
        },
    );
}

#[test]
fn a_redis_requiring_client_certificates_serves_the_store_that_has_one() {
    let pki = pki();
    let redis = tls_redis(&pki, true);
    let with_cert = TlsConfig::load(Some(&pki.ca), Some(&pki.client_cert), Some(&pki.client_key))
        .expect("the files");
    let store = store_over(&tls_url(&redis), with_cert).expect("opening the store");
    write_and_read_back(&store, &redis);

    // Without one the handshake is refused: an outage naming TLS, not a
    // wrong answer.
    let without = TlsConfig::load(Some(&pki.ca), None, None).expect("the CA file");
    let store = store_over(&tls_url(&redis), without).expect("opening the store");
    let e = store
        .get_features("u0001", &["country_iso"])
        .expect_err("no client certificate");
    assert!(e.is_unavailable(), "{e:?}");
}

#[test]
fn a_wrong_ca_is_refused_naming_the_certificate_problem() {
    let pki = pki();
    let redis = tls_redis(&pki, false);
    let url = tls_url(&redis);

    // The store: an outage whose message names the certificate problem.
    let wrong = TlsConfig::load(Some(&pki.other_ca), None, None).expect("the other CA");
    let store = store_over(&url, wrong).expect("opening the store");
    let e = store
        .get_features("u0001", &["country_iso"])
        .expect_err("a server certificate from another CA");
    assert!(e.is_unavailable(), "{e:?}");
    assert!(names_unknown_issuer(&e.to_string()), "{e}");

    // Every caller waiting at once is told the cause, not only the one
    // r2d2 hands its last error to.
    std::thread::scope(|scope| {
        let waiting: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| store.get_features("u0001", &["country_iso"])))
            .collect();
        for w in waiting {
            let e = w.join().expect("a reader").expect_err("another CA");
            assert!(names_unknown_issuer(&e.to_string()), "{e}");
        }
    });

    // The system's roots do not know the test CA either.
    let store = store_over(&url, TlsConfig::default()).expect("opening the store");
    let e = store
        .get_features("u0001", &["country_iso"])
        .expect_err("a private CA");
    assert!(names_unknown_issuer(&e.to_string()), "{e}");

    // The server: 503 with that cause.
    let other_ca = pki.other_ca.display().to_string();
    let server = Server::start_with_timeout(&url, TLS_TIMEOUT_MS, &["--redis-ca-cert", &other_ca]);
    let (status, body) = server.post_form("/read", "user=u0001");
    assert_eq!(status, 503, "{body}");
    assert!(names_unknown_issuer(&body.to_string()), "{body}");
    let (status, _) = server.get("/healthz");
    assert_eq!(status, 503);

    // The loader: exit 3 (Redis unavailable), and it says why.
    let out = loader(&[
        "--redis-url",
        &url,
        "--redis-ca-cert",
        &other_ca,
        "--count",
        "5",
        "--retries",
        "1",
        "--retry-backoff-ms",
        "10",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert!(names_unknown_issuer(&show(&out)), "{}", show(&out));

    // With the right CA the same server and loader work.
    let ca = pki.ca.display().to_string();
    let out = loader(&["--redis-url", &url, "--redis-ca-cert", &ca, "--count", "5"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&summary(&out), "written"), 5, "{}", show(&out));
    let server = Server::start_with_timeout(&url, TLS_TIMEOUT_MS, &["--redis-ca-cert", &ca]);
    let (status, body) = server.post_form("/read", "user=u0005&field=country_iso");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["returned_count"], 1, "{body}");
}

#[test]
fn a_loader_and_a_server_over_mutual_tls_write_and_read() {
    let pki = pki();
    let redis = tls_redis(&pki, true);
    let url = tls_url(&redis);
    let files = [
        "--redis-ca-cert",
        pki.ca.to_str().expect("utf-8 path"),
        "--redis-client-cert",
        pki.client_cert.to_str().expect("utf-8 path"),
        "--redis-client-key",
        pki.client_key.to_str().expect("utf-8 path"),
    ];
    let mut args = vec!["--redis-url", url.as_str(), "--count", "7"];
    args.extend(files);
    let out = loader(&args);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&summary(&out), "written"), 7, "{}", show(&out));
    let server = Server::start_with_timeout(&url, TLS_TIMEOUT_MS, &files);
    let (status, body) = server.post_form("/read", "user=u0007&field=country_iso");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["returned_count"], 1, "{body}");
    // /bulk-load goes through the pacer, whose probe needs the client
    // certificate too.
    let (status, body) = server.post_form("/bulk-load", "count=3");
    assert_eq!(status, 200, "{body}");
}

#[test]
fn tls_files_that_are_missing_or_not_pem_stop_the_start_with_exit_2() {
    let pki = pki();
    let missing = pki.dir.path().join("nope.pem");
    let not_pem = pki.dir.path().join("notes.txt");
    std::fs::write(&not_pem, "just some text\n").expect("writing");
    let p = |p: &Path| p.display().to_string();
    let url = "rediss://127.0.0.1:1/";
    let cases: Vec<(Vec<String>, Vec<String>)> = vec![
        (
            vec!["--redis-ca-cert".into(), p(&missing)],
            vec![p(&missing), "No such file".into()],
        ),
        (
            vec!["--redis-ca-cert".into(), p(&not_pem)],
            vec![p(&not_pem), "no PEM certificate".into()],
        ),
        (
            vec![
                "--redis-client-cert".into(),
                p(&pki.client_cert),
                "--redis-client-key".into(),
                p(&pki.client_cert),
            ],
            vec![p(&pki.client_cert), "no PEM private key".into()],
        ),
        (
            vec!["--redis-client-cert".into(), p(&pki.client_cert)],
            vec!["--redis-client-key".into()],
        ),
    ];
    for (flags, expected) in &cases {
        for (bin, extra) in [
            (SERVER, &["--port", "0"][..]),
            (LOADER, &["--count", "1"][..]),
        ] {
            let out = Command::new(bin)
                .args(["--redis-url", url])
                .args(flags)
                .args(extra)
                .stdin(Stdio::null())
                .output()
                .expect("running the binary");
            let text = show(&out);
            assert_eq!(out.status.code(), Some(2), "{bin} {flags:?}: {text}");
            for part in expected {
                assert!(text.contains(part.as_str()), "{bin} {flags:?}: {text}");
            }
        }
    }
    // TLS files for a plain redis:// URL would go unused: refused too.
    let ca = p(&pki.ca);
    for (bin, extra) in [
        (SERVER, &["--port", "0"][..]),
        (LOADER, &["--count", "1"][..]),
    ] {
        let out = Command::new(bin)
            .args([
                "--redis-url",
                "redis://127.0.0.1:1/",
                "--redis-ca-cert",
                &ca,
            ])
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("running the binary");
        assert_eq!(out.status.code(), Some(2), "{bin}: {}", show(&out));
        assert!(show(&out).contains("rediss://"), "{bin}: {}", show(&out));
    }
}

#[test]
fn a_cluster_over_tls_serves_the_store_on_every_primary() {
    let pki = pki();
    let cluster = feature_store::ManagedCluster::start_with(
        3,
        0,
        feature_store::managed_cluster::ClusterOptions {
            tls: Some(ServerTls {
                cert_file: pki.server_cert.clone(),
                key_file: pki.server_key.clone(),
                ca_file: pki.ca.clone(),
                require_client_cert: false,
            }),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("starting a TLS cluster: {e}"));
    let url = cluster.tls_url().expect("started with TLS");
    assert!(url.starts_with("rediss+cluster://"), "{url}");
    let tls = TlsConfig::load(Some(&pki.ca), None, None).expect("the CA file");
    let store = store_over(&url, tls).expect("opening the store");
    // Ids enough to land on every primary.
    let rows: Vec<_> = (0..60).map(|i| row(&format!("u{i:04}"), "PT")).collect();
    let report = store.bulk_load(&rows, 3600).expect("writing over TLS");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    assert_eq!(store.backend().nodes, Some(3));
    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
    let read = store
        .batch_get_features(&ids, &["country_iso"])
        .expect("reading over TLS");
    assert_eq!(read.len(), 60);
    for (id, r) in ids.iter().zip(&read) {
        let values = r.as_ref().unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(
            values[0].as_ref().and_then(|v| v.as_str()),
            Some("PT"),
            "{id}"
        );
    }
    // Each primary holds part of them: every node was reached over TLS.
    for i in 0..cluster.len() {
        let size: u64 = redis::cmd("DBSIZE")
            .query(&mut cluster.node(i).raw_plain())
            .expect("DBSIZE");
        assert!(size > 0, "node {i} holds no entity");
    }
    // A wrong CA fails on the cluster as on one server, naming the cause.
    let wrong = TlsConfig::load(Some(&pki.other_ca), None, None).expect("the other CA");
    let e = store_over(&url, wrong)
        .expect("opening the store")
        .get_features("u0001", &["country_iso"])
        .expect_err("another CA");
    assert!(names_unknown_issuer(&e.to_string()), "{e}");
}

/// A Redis with an ACL user `fsuser` of the store's least privilege
/// (`common::STORE_ACL`).
fn acl_redis() -> ManagedRedis {
    let redis = common::standalone_redis();
    common::create_store_user(&mut redis.raw_plain(), "fsuser", "pw-Zq81x");
    redis
}

#[test]
fn an_acl_users_password_is_never_printed() {
    let redis = acl_redis();
    let url = format!("redis://fsuser:pw-Zq81x@127.0.0.1:{}/", redis.port());

    // The server runs as the user, and says so without the password.
    let mut child = Command::new(SERVER)
        .args([
            "--redis-url",
            &url,
            "--port",
            "0",
            "--seed-demo",
            "--seed-users",
            "3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-server");
    let stdout = child.stdout.take().expect("stdout");
    let mut printed = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
        let line = line.expect("reading stdout");
        printed.push_str(&line);
        printed.push('\n');
        if line.starts_with("open http://") {
            break;
        }
    }
    let _ = child.kill();
    let out = child.wait_with_output().expect("waiting for fs-server");
    printed.push_str(&String::from_utf8_lossy(&out.stderr));
    assert!(
        printed.contains(&format!(
            "redis: redis://fsuser:***@127.0.0.1:{}/",
            redis.port()
        )),
        "{printed}"
    );
    assert!(!printed.contains("pw-Zq81x"), "{printed}");

    // A wrong password: the loader fails, and neither password is shown.
    let wrong = format!("redis://fsuser:wrong-Pq3@127.0.0.1:{}/", redis.port());
    let out = loader(&["--redis-url", &wrong, "--count", "2", "--retries", "0"]);
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!show(&out).contains("wrong-Pq3"), "{}", show(&out));
    // A URL the store refuses: its message shows it redacted.
    let bad = "redis+cluster://fsuser:pw-Zq81x@127.0.0.1/";
    let out = loader(&["--redis-url", bad, "--count", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(show(&out).contains("fsuser:***@"), "{}", show(&out));
    assert!(!show(&out).contains("pw-Zq81x"), "{}", show(&out));

    // The right one: the loader writes as the user.
    let out = loader(&["--redis-url", &url, "--count", "4"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(!show(&out).contains("pw-Zq81x"), "{}", show(&out));
    let server = Server::start(&url, &[]);
    let (status, body) = send(
        server.addr,
        "POST",
        "/read",
        Some("application/x-www-form-urlencoded"),
        b"user=u0004&field=country_iso",
    );
    assert_eq!(status, 200, "{body}");
}

/// fs-loader with no environment that could point it elsewhere.
fn loader(args: &[&str]) -> Output {
    Command::new(LOADER)
        .env_remove("FS_REDIS_URL")
        .env_remove("FS_KEY_PREFIX")
        .env_remove("FS_REGISTRY")
        .arg("--quiet")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running fs-loader")
}

#[test]
fn the_store_acl_confines_the_user_to_fs_keys_and_the_stores_commands() {
    let redis = acl_redis();
    let url = format!("redis://fsuser:pw-Zq81x@127.0.0.1:{}/", redis.port());
    let mut conn = redis::Client::open(url.as_str())
        .expect("url")
        .get_connection()
        .expect("AUTH as fsuser");
    // The store works as the user...
    let store = FeatureStore::open(&url, common::store_config()).expect("opening");
    let report = store.bulk_load(&[row("u1", "FR")], 60).expect("writing");
    assert!(report.failed.is_empty(), "{:?}", report.failed);
    // ...and the user can touch nothing else: another key, or a command
    // the store never sends.
    for cmd in [
        redis::cmd("SET").arg("other:key").arg("x").clone(),
        redis::cmd("HGET").arg("other:key").arg("f").clone(),
        redis::cmd("FLUSHALL").clone(),
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg("1")
            .clone(),
        redis::cmd("KEYS").arg("*").clone(),
    ] {
        let e = cmd.query::<redis::Value>(&mut conn).expect_err("refused");
        assert!(e.to_string().to_uppercase().contains("NOPERM"), "{e}");
    }
    let other = FeatureStore::open(
        &url,
        feature_store::StoreConfig {
            key_prefix: "other:".into(),
            ..common::store_config()
        },
    )
    .expect("opening");
    let refusal = match other.bulk_load(&[row("u1", "FR")], 60) {
        Ok(report) => {
            assert_eq!(report.written, 0, "{report:?}");
            format!("{:?}", report.failed)
        }
        Err(e) => e.to_string(),
    };
    assert!(refusal.to_uppercase().contains("NOPERM"), "{refusal}");
}

#[test]
fn the_documented_acl_is_the_one_the_suite_runs_under() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operating.md"))
        .expect("docs/operating.md");
    let words = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let rule = words(common::STORE_ACL);
    assert!(
        words(&doc.replace('\\', " ")).contains(&rule),
        "docs/operating.md does not give the ACL the suite runs under:\n{rule}"
    );
}
