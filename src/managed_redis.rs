//! A throwaway `redis-server` owned by this process: the server's embedded
//! default and every test's Redis.
//!
//! It listens on a free loopback port, keeps its files in a temp dir, never
//! persists, and is shut down when dropped. A start that fails says why,
//! with the server's log.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ManagedRedisError {
    #[error("no redis-server >= 7.4 found: {0}")]
    NotFound(String),
    #[error("could not start {bin}: {source}")]
    Spawn {
        bin: String,
        #[source]
        source: io::Error,
    },
    #[error("redis-server did not become ready: {reason}\n--- redis-server log ---\n{log}")]
    NotReady { reason: String, log: String },
}

/// How long a start may take before it is declared failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ManagedRedis {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
    /// More `redis-server` arguments, e.g. `--proto-max-bulk-len 1mb`.
    extra_args: Vec<String>,
}

impl ManagedRedis {
    /// Starts a fresh server on a free port and waits until it answers PING.
    pub fn start() -> Result<Self, ManagedRedisError> {
        Self::start_with_args(&[])
    }

    /// Like `start`, with more `redis-server` arguments (a smaller
    /// `--proto-max-bulk-len`, a `--rename-command`), kept across `restart`.
    pub fn start_with_args(extra_args: &[&str]) -> Result<Self, ManagedRedisError> {
        let bin = redis_server_binary()?;
        let spawn_err = |source| ManagedRedisError::Spawn {
            bin: bin.display().to_string(),
            source,
        };
        let dir = tempfile::Builder::new()
            .prefix("fs-redis-")
            .tempdir()
            .map_err(spawn_err)?;
        let mut redis = ManagedRedis {
            child: None,
            dir,
            port: 0,
            bin: bin.clone(),
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
        };
        // The port is free when picked but another process may take it
        // before redis binds it: pick again a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            redis.port = free_port().map_err(spawn_err)?;
            match redis.spawn_and_wait() {
                Ok(()) => return Ok(redis),
                Err(e) if attempt >= 5 => return Err(e),
                Err(_) => continue,
            }
        }
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `redis-server` binary this instance runs.
    pub fn server_path(&self) -> &Path {
        &self.bin
    }

    /// The `redis-cli` next to the server binary (or on PATH).
    pub fn cli_path(&self) -> PathBuf {
        sibling_tool(&self.bin, "cli")
    }

    /// The `redis-benchmark` next to the server binary (or on PATH).
    pub fn benchmark_path(&self) -> PathBuf {
        sibling_tool(&self.bin, "benchmark")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the server (its data is gone: nothing is persisted).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty, after `stop`.
    pub fn restart(&mut self) -> Result<(), ManagedRedisError> {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.spawn_and_wait() {
                Ok(()) => return Ok(()),
                // The old socket can linger briefly; retry until the deadline.
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    fn spawn_and_wait(&mut self) -> Result<(), ManagedRedisError> {
        let child = Command::new(&self.bin)
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| ManagedRedisError::Spawn {
                bin: self.bin.display().to_string(),
                source,
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        let addr = format!("redis://127.0.0.1:{}/", self.port);
        loop {
            if !self.is_running() {
                self.child = None;
                return Err(ManagedRedisError::NotReady {
                    reason: "redis-server exited".into(),
                    log: self.log(),
                });
            }
            if ping(&addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(ManagedRedisError::NotReady {
                    reason: format!("no PONG within {READY_TIMEOUT:?}"),
                    log: self.log(),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ManagedRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(url: &str) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    redis::cmd("PING").query::<String>(&mut conn).is_ok()
}

fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn sibling_tool(server: &Path, tool: &str) -> PathBuf {
    let name = server
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("redis-server")
        .replace("server", tool);
    let sibling = server.with_file_name(&name);
    if sibling.exists() {
        sibling
    } else {
        PathBuf::from(name)
    }
}

/// The redis-server this process uses, found once: `$FS_REDIS_SERVER`, a
/// `redis-server` >= 7.4 on PATH, the project's cache, or else the project's
/// `scripts/ensure-redis.sh` (which builds one into the cache the first time).
pub fn redis_server_binary() -> Result<PathBuf, ManagedRedisError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_redis_server)
        .clone()
        .map_err(ManagedRedisError::NotFound)
}

fn find_redis_server() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os("FS_REDIS_SERVER") {
        let bin = PathBuf::from(bin);
        return if version_at_least_7_4(&bin) {
            Ok(bin)
        } else {
            Err(format!(
                "FS_REDIS_SERVER={} is not a redis-server >= 7.4",
                bin.display()
            ))
        };
    }
    let cached = cache_dir().join("redis/bin/redis-server");
    for candidate in [PathBuf::from("redis-server"), cached] {
        if version_at_least_7_4(&candidate) {
            return Ok(candidate);
        }
    }
    let ensure = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/ensure-redis.sh");
    if !ensure.exists() {
        return Err("set FS_REDIS_SERVER or put redis-server >= 7.4 on PATH".into());
    }
    let out = Command::new("bash")
        .arg(&ensure)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", ensure.display()))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && version_at_least_7_4(Path::new(&path)) {
        Ok(PathBuf::from(path))
    } else {
        Err(format!("{} failed ({})", ensure.display(), out.status))
    }
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("FS_REDIS_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/redis-feature-store")
}

/// Parses `v=MAJOR.MINOR` from `--version` (redis and valkey both print it).
fn version_at_least_7_4(bin: &Path) -> bool {
    let Ok(out) = Command::new(bin).arg("--version").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let Some(v) = text.split_whitespace().find_map(|w| w.strip_prefix("v=")) else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (major, minor) >= (7, 4)
}
