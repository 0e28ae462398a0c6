//! A throwaway `redis-server` owned by this process: the server's embedded
//! default and every test's Redis.
//!
//! It listens on a free loopback port, keeps its files in a temp dir, never
//! persists, and is shut down when dropped. A start that fails says why,
//! with the server's log.
//!
//! On Linux the child also dies with its parent: a server that is
//! SIGKILLed or aborts never runs its `Drop`, and an orphaned redis-server
//! would keep its port and memory. The parent-death signal is tied to the
//! *thread* that spawned the child (the kernel sends it when that thread
//! exits, not the process), so every child is spawned by one thread that
//! lives as long as the process: a Redis started or restarted from a
//! short-lived thread (a test's helper thread) then stays up.

use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ManagedRedisError {
    #[error("no redis-server >= 7.4 (or valkey-server >= 9.0) found: {0}")]
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
    /// Extra `redis-server` arguments, after the fixed ones.
    extra_args: Vec<String>,
    /// With TLS: the TLS port (kept across `restart`) and its arguments.
    tls: Option<(u16, Vec<String>)>,
}

/// The files a TLS test Redis presents and checks, all PEM.
#[derive(Debug, Clone)]
pub struct ServerTls {
    /// The server's certificate (for 127.0.0.1) and its key.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA client certificates are checked against.
    pub ca_file: PathBuf,
    /// `--tls-auth-clients yes`: a client without a certificate this CA
    /// signed is refused.
    pub require_client_cert: bool,
}

impl ManagedRedis {
    /// Starts a fresh server on a free port and waits until it answers PING.
    pub fn start() -> Result<Self, ManagedRedisError> {
        Self::start_with_args(&[])
    }

    /// As [`ManagedRedis::start`], with extra `redis-server` arguments (e.g.
    /// `["--rename-command", "HEXPIRE", ""]`), kept across `restart`.
    pub fn start_with_args(extra_args: &[&str]) -> Result<Self, ManagedRedisError> {
        Self::start_inner(extra_args, None)
    }

    /// As [`ManagedRedis::start_with_args`], also listening for TLS on a
    /// second port ([`ManagedRedis::tls_url`]) with `tls`'s certificates.
    /// The plain port stays open on loopback: readiness is checked there,
    /// and a test checks what the store wrote through it. Needs a
    /// redis-server built with TLS (`scripts/ensure-redis.sh` builds one).
    pub fn start_with_tls(tls: &ServerTls, extra_args: &[&str]) -> Result<Self, ManagedRedisError> {
        let yes_no = if tls.require_client_cert { "yes" } else { "no" };
        let args = vec![
            "--tls-cert-file".into(),
            tls.cert_file.display().to_string(),
            "--tls-key-file".into(),
            tls.key_file.display().to_string(),
            "--tls-ca-cert-file".into(),
            tls.ca_file.display().to_string(),
            "--tls-auth-clients".into(),
            yes_no.into(),
        ];
        Self::start_inner(extra_args, Some(args)).map_err(|e| match e {
            // Said plainly: the fix is a rebuild, not a look at the log.
            ManagedRedisError::NotReady { log, .. } if log.contains("TLS support") => {
                ManagedRedisError::NotReady {
                    reason: "this redis-server was built without TLS: run \
                             scripts/ensure-redis.sh (it rebuilds the cache with TLS) or \
                             set FS_REDIS_SERVER to one built with BUILD_TLS=yes"
                        .into(),
                    log,
                }
            }
            other => other,
        })
    }

    fn start_inner(
        extra_args: &[&str],
        tls_args: Option<Vec<String>>,
    ) -> Result<Self, ManagedRedisError> {
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
            extra_args: extra_args.iter().map(|a| a.to_string()).collect(),
            tls: None,
        };
        // The port is free when picked but another process may take it
        // before redis binds it: pick again a few times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            redis.port = free_port().map_err(spawn_err)?;
            if let Some(args) = &tls_args {
                redis.tls = Some((free_port().map_err(spawn_err)?, args.clone()));
            }
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

    /// `rediss://127.0.0.1:<tls port>/` when started with TLS.
    pub fn tls_url(&self) -> Option<String> {
        self.tls
            .as_ref()
            .map(|(port, _)| format!("rediss://127.0.0.1:{port}/"))
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

    /// The child's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn spawn_and_wait(&mut self) -> Result<(), ManagedRedisError> {
        let mut command = Command::new(&self.bin);
        die_with_parent(&mut command);
        command
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log"])
            .args(&self.extra_args);
        if let Some((port, args)) = &self.tls {
            command.args(["--tls-port", &port.to_string()]).args(args);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child =
            spawn_from_lasting_thread(command).map_err(|source| ManagedRedisError::Spawn {
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
            if answers_as(&addr, self.pid()) {
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

/// Spawns `command` from one thread kept for the life of the process, so
/// that the parent-death signal (tied to the spawning thread) fires only
/// when the process itself dies.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<Result<mpsc::Sender<Request>, String>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                // Ends never: `SPAWNER` holds the sender for good.
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| requests)
            .map_err(|e| format!("starting the spawner thread: {e}"))
    });
    let requests = spawner.as_ref().map_err(|e| io::Error::other(e.clone()))?;
    let (reply, answer) = mpsc::channel();
    requests
        .send((command, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

/// Asks the kernel to SIGTERM the child when the spawning thread exits
/// (see the module doc), so redis-server never outlives a killed server.
/// The bench uses it for `feast serve` too.
#[cfg(target_os = "linux")]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made
    // (prctl, getppid), and nothing is allocated.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGTERM as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before prctl ran: then no signal
            // will ever come, and the child must not start.
            if libc::getppid() != parent {
                return Err(io::Error::other("the parent exited during spawn"));
            }
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
pub fn die_with_parent(_command: &mut Command) {}

/// Whether the server at `url` answers and is the process `pid`: another
/// server that took the port first (two starts picking the same free port
/// at once) must not pass for ours, whose bind then fails.
fn answers_as(url: &str, pid: Option<u32>) -> bool {
    let Ok(client) = redis::Client::open(url) else {
        return false;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
        return false;
    };
    let Ok(info) = redis::cmd("INFO").arg("server").query::<String>(&mut conn) else {
        return false;
    };
    let answered = info
        .lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse::<u32>().ok());
    answered.is_some() && answered == pid
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
        return if is_supported_server(&bin) {
            Ok(bin)
        } else {
            Err(format!(
                "FS_REDIS_SERVER={} is not a redis-server >= 7.4 or valkey-server >= 9.0",
                bin.display()
            ))
        };
    }
    let cached = cache_dir().join("redis/bin/redis-server");
    for candidate in [PathBuf::from("redis-server"), cached] {
        if is_supported_server(&candidate) {
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
    if out.status.success() && is_supported_server(Path::new(&path)) {
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

/// Runs `BIN --version` and checks it with [`version_supported`].
fn is_supported_server(bin: &Path) -> bool {
    match Command::new(bin).arg("--version").output() {
        Ok(out) => version_supported(&String::from_utf8_lossy(&out.stdout)),
        Err(_) => false,
    }
}

/// Whether a `--version` line names a server with everything the scripts
/// need (HEXPIRE, HTTL, EXPIRE NX): Redis >= 7.4, or Valkey >= 9.0. Both
/// print `v=MAJOR.MINOR.PATCH`, and Valkey 8 (no hash-field TTLs) has a
/// number above 7.4, so the product name decides which minimum applies.
pub fn version_supported(version_output: &str) -> bool {
    let Some(v) = version_output
        .split_whitespace()
        .find_map(|w| w.strip_prefix("v="))
    else {
        return false;
    };
    let mut parts = v.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        return false;
    };
    let minimum = if version_output.to_ascii_lowercase().contains("valkey") {
        (9, 0)
    } else {
        (7, 4)
    };
    (major, minor) >= minimum
}

#[cfg(test)]
mod tests {
    use super::version_supported;

    #[test]
    fn valkey_8_is_refused_and_valkey_9_accepted() {
        let line = |product: &str, v: &str| {
            format!("{product} server v={v} sha=00000000:1 malloc=jemalloc-5.3.0 bits=64 build=1")
        };
        assert!(!version_supported(&line("Valkey", "8.1.1")));
        assert!(!version_supported(&line("Valkey", "8.0.0")));
        assert!(version_supported(&line("Valkey", "9.0.0")));
        assert!(version_supported(&line("Valkey", "9.1.2")));
        assert!(!version_supported(&line("Redis", "7.2.4")));
        assert!(version_supported(&line("Redis", "7.4.0")));
        assert!(version_supported(&line("Redis", "8.0.2")));
        assert!(!version_supported("redis-server: command not found"));
        assert!(!version_supported("Redis server v=x.y"));
    }
}
