//! The Feast rows: Feast's own Python SDK reading 1 and 100 users through
//! our `fs-server` (`online_store: remote`), against the same SDK reading
//! through `feast serve` on Feast's own Redis online store, on the same
//! Redis, interleaved in the same run; and the same reads as the bare HTTP
//! request the SDK sends, to both servers, so the rows show how much of a
//! call is the SDK's own work and how much the server's.
//!
//! Setup (untimed): the SDK's virtualenv (`scripts/feast-venv.sh`, shared
//! with the Feast SDK test), a Redis of its own, `fs-server` on it with a
//! registry of the view, a Feast repository of the same view (`online_store:
//! redis` on that Redis) applied with `feast apply`, the same users written
//! through both paths, then `feast serve` on that repository. The timing and
//! the check that both answer the written values are Feast's SDK's, in
//! `feast_driver.py`; this side turns its latencies into rows.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use feature_store::ManagedRedis;
use serde_json::Value as Json;

use crate::http::{HttpClient, Server};
use crate::measure::{Recorder, Summary};
use crate::report::{count, Figures, RatioOn, Row};
use crate::{BResult, Sizes};

/// The SDK side: loads the users, checks, times (see its doc).
const DRIVER: &str = include_str!("feast_driver.py");
/// The Feast repository's definitions (`feast apply`).
const DEFINITIONS: &str = include_str!("feast_definitions.py");

/// fs-server's side of `feast_definitions.py`: the same entity (join key
/// `user_id`, the default) and view (`user_profile`, its Feast name too).
const FS_REGISTRY: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[view]]
name = "user_profile"
entity = "user"
kind = "batch"
ttl_seconds = 86400
features = [
  { name = "country", type = "category", values = ["US", "GB", "DE", "FR", "JP"] },
  { name = "age_days", type = "int" },
  { name = "avg_amount", type = "float" },
  { name = "verified", type = "bool" },
  { name = "embedding", type = "float_vector", length = 8 },
]
"#;

/// Users written through both paths; the reads pick among them.
const USERS: usize = 1000;
/// Calls of each size and side the driver makes before recording.
const WARMUP: usize = 20;
/// `feast serve` imports Feast and reads the registry before it listens.
const SERVE_READY: Duration = Duration::from_secs(180);

/// The four rows, or the section listed as skipped when the SDK's
/// virtualenv cannot be had (no Python, no PyPI). `required` (`--only
/// feast`) makes that an error instead. Anything failing after the
/// virtualenv is an error either way: a row that cannot be trusted fails.
pub fn rows(
    sizes: &Sizes,
    server_bin: &Path,
    required: bool,
    rows: &mut Vec<Row>,
    skipped: &mut Vec<String>,
) -> BResult<()> {
    let venv = match feast_venv() {
        Ok(v) => v,
        Err(e) if !required => {
            eprintln!("fs-bench: skipping the Feast rows: {e}");
            skipped.push(format!("the Feast SDK rows: {e}"));
            return Ok(());
        }
        Err(e) => return Err(format!("the Feast SDK rows: {e}").into()),
    };
    eprintln!("fs-bench: Feast rows: starting redis-server and fs-server ...");
    let redis = ManagedRedis::start()?;
    let dir = tempfile::tempdir()?;
    let registry = dir.path().join("fs.toml");
    std::fs::write(&registry, FS_REGISTRY)?;
    let server = Server::start_with_flags(
        server_bin,
        &redis.url(),
        &[
            "--refresh-ms".into(),
            "3600000".into(),
            "--registry".into(),
            registry.display().to_string(),
        ],
    )?;

    let repo = dir.path().join("feast_repo");
    std::fs::create_dir_all(repo.join("data"))?;
    std::fs::write(repo.join("definitions.py"), DEFINITIONS)?;
    let online_redis = format!(
        "online_store:\n  type: redis\n  connection_string: \"127.0.0.1:{}\"\n",
        redis.port()
    );
    std::fs::write(
        repo.join("feature_store.yaml"),
        feature_store_yaml("data/registry.db", &online_redis),
    )?;
    let serve_addr = free_addr()?;
    // The clients share the repository's registry: only their online store
    // differs.
    let registry_db = repo.join("data/registry.db").display().to_string();
    let client = |name: &str, addr: SocketAddr| -> BResult<PathBuf> {
        let path = dir.path().join(name);
        std::fs::create_dir_all(&path)?;
        let remote = format!("online_store:\n  type: remote\n  path: http://{addr}\n");
        std::fs::write(
            path.join("feature_store.yaml"),
            feature_store_yaml(&registry_db, &remote),
        )?;
        Ok(path)
    };
    let ours_client = client("client_ours", server.addr)?;
    let feast_client = client("client_feast", serve_addr)?;
    let driver = dir.path().join("feast_driver.py");
    std::fs::write(&driver, DRIVER)?;

    eprintln!("fs-bench: Feast rows: feast apply, then {USERS} users written through both ...");
    run(
        Command::new(venv.join("bin/feast"))
            .arg("apply")
            .current_dir(&repo),
        "feast apply",
    )?;
    run(
        Command::new(venv.join("bin/python"))
            .arg(&driver)
            .arg("load")
            .arg(&repo)
            .arg(&ours_client)
            .arg(USERS.to_string()),
        "feast_driver.py load",
    )?;

    eprintln!("fs-bench: Feast rows: starting feast serve on {serve_addr} ...");
    let serve = FeastServe::start(&venv, &repo, serve_addr, &dir.path().join("serve.log"))?;
    eprintln!(
        "fs-bench: Feast rows: {} + {} SDK calls each side ...",
        sizes.feast_iters, sizes.feast_batch_iters
    );
    let said = run(
        Command::new(venv.join("bin/python"))
            .arg(&driver)
            .arg("bench")
            .arg(&ours_client)
            .arg(&feast_client)
            .arg(USERS.to_string())
            .arg(sizes.feast_iters.to_string())
            .arg(sizes.feast_batch_iters.to_string())
            .arg(sizes.rounds.to_string()),
        "feast_driver.py bench",
    )?;
    drop(serve);
    drop(server);

    let answer: Json = said
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .ok_or_else(|| format!("feast_driver.py bench printed no JSON:\n{said}"))?;
    let version = answer["feast_version"].as_str().unwrap_or("?").to_owned();
    let python = answer["python"].as_str().unwrap_or("?").to_owned();
    let features = answer["features"].as_u64().unwrap_or(0);
    let figures = |way: &str, size: &str, side: &str| -> BResult<Summary> {
        let ns = answer["samples_ns"][way][size][side]
            .as_array()
            .filter(|a| !a.is_empty())
            .ok_or_else(|| format!("feast_driver.py bench gave no {way}/{size}/{side} samples"))?;
        let mut r = Recorder::with_capacity(ns.len());
        for v in ns {
            let v = v.as_u64().ok_or("a latency that is not a number of ns")?;
            r.record(Duration::from_nanos(v), 1);
        }
        Ok(r.summary())
    };
    let sdk_call = format!(
        "timed in the SDK's own process around `store.get_online_features(features=[the {features} \
         features of view user_profile], entity_rows=[...]).to_dict()`, what a Feast user calls: the \
         SDK building the request, HTTP to the server (keep-alive, the SDK's pooled session), the \
         server reading Redis, the answer back into Python values"
    );
    let http_call = format!(
        "timed around the request that SDK call sends, alone: `requests.Session().post(.../get-online-features, \
         json={{\"features\": [the {features}], \"entities\": {{\"user_id\": [...]}}}})` and `.json()` \
         of the answer: HTTP to the server (keep-alive), the server reading Redis, the JSON parsed; \
         the rest of the SDK row is the SDK's own work, the same on both sides"
    );
    let setup = format!(
        "Feast {version}, Python {python}, one client calling in sequence, both servers and Redis on \
         this machine. {} users written through both paths first (ours through the SDK's \
         `write_to_online_store` to fs-server's `/write-to-online-store`, Feast's with \
         `write_to_online_store` into its Redis online store, both on one redis-server), and both \
         checked to answer exactly the written values, typed, for 1 and for 100 users. `feast \
         serve`: its defaults (one gunicorn worker), access log off, `--max-requests 0` (no worker \
         restart mid-run); fs-server: its defaults",
        count(USERS as f64)
    );
    for (id, way, size, n) in [
        ("feast_sdk_read_1", "sdk", "one", sizes.feast_iters),
        (
            "feast_sdk_read_100",
            "sdk",
            "hundred",
            sizes.feast_batch_iters,
        ),
        ("feast_http_read_1", "http", "one", sizes.feast_iters),
        (
            "feast_http_read_100",
            "http",
            "hundred",
            sizes.feast_batch_iters,
        ),
    ] {
        let users = if size == "one" {
            "1 random user"
        } else {
            "100 random users"
        };
        let (operation, baseline_name, measured) = if way == "sdk" {
            (
                format!("Feast SDK `get_online_features(...).to_dict()`, {users} x {features} features, through fs-server"),
                format!("the same SDK call through `feast serve` (Feast {version}, its Redis online store) on the same Redis"),
                &sdk_call,
            )
        } else {
            (
                format!("the same read as bare HTTP `POST /get-online-features` ({users} x {features} features) to fs-server"),
                format!("the same request to `feast serve` (Feast {version}, its Redis online store) on the same Redis"),
                &http_call,
            )
        };
        let row = Row {
            id,
            operation,
            unit: "calls",
            ours: Figures::Timed(figures(way, size, "ours")?),
            baseline_name,
            baseline: Figures::Timed(figures(way, size, "feast")?),
            ratio_on: RatioOn::P50,
            goal: Vec::new(),
            note: format!(
                "{measured}. {} calls of {users} each side after {WARMUP} unrecorded, interleaved in \
                 {} rounds (fs-server first in even rounds, `feast serve` in odd ones) on the same \
                 random users among {}. {setup}.",
                count(n as f64),
                sizes.rounds,
                count(USERS as f64),
            ),
        };
        crate::step(id, rows, Ok(row))?;
    }
    Ok(())
}

/// `feature_store.yaml` of one repository: the same project and registry,
/// the online store given.
fn feature_store_yaml(registry: &str, online_store: &str) -> String {
    format!(
        "project: fsbench\nregistry: {registry}\nprovider: local\n{online_store}\
         offline_store:\n  type: file\nentity_key_serialization_version: 3\n"
    )
}

/// The virtualenv `scripts/feast-venv.sh` makes once (Feast pinned, with
/// its Redis extra), or why not.
fn feast_venv() -> BResult<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/feast-venv.sh");
    eprintln!("fs-bench: Feast rows: {} ...", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match stdout.lines().last() {
        Some(dir) if out.status.success() => Ok(PathBuf::from(dir)),
        _ => Err(format!(
            "no Feast virtualenv ({} {}): {}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
        .into()),
    }
}

/// Runs a Feast command (telemetry off) to its end: its stdout, or an
/// error with everything it said.
fn run(cmd: &mut Command, what: &str) -> BResult<String> {
    let out = cmd
        .env("FEAST_USAGE", "False")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(stdout)
}

/// A loopback address no one listens on now.
fn free_addr() -> BResult<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A running `feast serve` (a gunicorn master and its worker), in a process
/// group of its own, ended whole when dropped.
struct FeastServe {
    child: Child,
    log: PathBuf,
}

impl FeastServe {
    fn start(venv: &Path, repo: &Path, addr: SocketAddr, log: &Path) -> BResult<FeastServe> {
        use std::os::unix::process::CommandExt;
        let log_file = std::fs::File::create(log)?;
        let mut cmd = Command::new(venv.join("bin/feast"));
        cmd.arg("serve")
            .args([
                "--host",
                &addr.ip().to_string(),
                "--port",
                &addr.port().to_string(),
            ])
            .args(["--no-access-log", "--max-requests", "0"])
            .current_dir(repo)
            .env("FEAST_USAGE", "False")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .process_group(0);
        // Spawned from the main thread: the signal comes when fs-bench dies.
        feature_store::managed_redis::die_with_parent(&mut cmd);
        let child = cmd
            .spawn()
            .map_err(|e| format!("starting feast serve: {e}"))?;
        let mut serve = FeastServe {
            child,
            log: log.to_owned(),
        };
        let deadline = Instant::now() + SERVE_READY;
        loop {
            if let Some(status) = serve.child.try_wait()? {
                return Err(
                    format!("feast serve exited with {status}:\n{}", serve.log_text()).into(),
                );
            }
            if health(addr) == Some(200) {
                return Ok(serve);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "feast serve not ready within {SERVE_READY:?}:\n{}",
                    serve.log_text()
                )
                .into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal_group(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.child.id()) else {
            return;
        };
        // SAFETY: kill(2) takes plain integers; the group is the child's
        // own (process_group(0)), so nothing else is signalled.
        unsafe {
            libc::kill(-pid, signal);
        }
    }
}

impl Drop for FeastServe {
    /// SIGTERM lets gunicorn stop its worker; SIGKILL to the group after a
    /// grace period takes whatever is left.
    fn drop(&mut self) {
        self.signal_group(libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET /health`, or `None` while nothing answers.
fn health(addr: SocketAddr) -> Option<u16> {
    let mut client = HttpClient::connect(addr).ok()?;
    client
        .request("GET", "/health", b"")
        .ok()
        .map(|(status, _)| status)
}
