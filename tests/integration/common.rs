//! Shared test fixtures: a throwaway Redis (one server or a local cluster)
//! per test, a store on it, polling.
//!
//! `FS_TEST_BACKEND` picks what `redis()` starts: `standalone` (the
//! default) or `cluster` (3 primaries, no replicas). Tests whose subject is
//! one Redis process (stop, restart, server args, raw multi-key script
//! calls) use `standalone_redis()` on both.
//!
//! `FS_TEST_ACL=1` makes `redis()` create the ACL user `fsuser` with the
//! store's least privilege (`STORE_ACL`, as docs/operating.md gives it) on
//! every node, and hand the store, the server and the loader
//! `redis://fsuser:...@` URLs; the raw connections that check the data stay
//! the default user.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use feature_store::commandstats::CommandStats;
use feature_store::managed_cluster::ManagedCluster;
use feature_store::pool::PoolConfig;
use feature_store::{FeatureStore, ManagedRedis, StoreConfig};
use redis::{Cmd, ConnectionLike, RedisResult, Value};

/// The backend the suite runs on, from `FS_TEST_BACKEND`.
pub fn backend_is_cluster() -> bool {
    match std::env::var("FS_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("standalone") => false,
        Ok("cluster") => true,
        Ok(other) => panic!("FS_TEST_BACKEND={other}: expected `standalone` or `cluster`"),
    }
}

/// Whether `FS_TEST_ACL=1` asks for the store to run as an ACL user.
pub fn acl_is_on() -> bool {
    match std::env::var("FS_TEST_ACL").as_deref() {
        Err(_) | Ok("") | Ok("0") => false,
        Ok("1") => true,
        Ok(other) => panic!("FS_TEST_ACL={other}: expected 0 or 1"),
    }
}

/// The ACL user the store runs as under `FS_TEST_ACL=1`, and its password.
pub const ACL_USER: &str = "fsuser";
pub const ACL_PASSWORD: &str = "fs-test-Pw7";

/// The least privilege the store needs, the rules after
/// `ACL SETUSER <user> on >PASSWORD`: keys under `fs:` only, no Pub/Sub
/// channels, and only the commands the store and its Lua scripts call. docs/operating.md gives the
/// same rule to operators (a test checks they agree).
pub const STORE_ACL: &str = "resetkeys ~fs:* resetchannels -@all \
    +evalsha +script|load \
    +hset +hsetex +hdel +hmget +hkeys +hexpire +httl +expire +ttl +time +exists \
    +type +scan +unlink +dbsize +randomkey \
    +ping +client|setname +cluster|slots +asking";

/// `ACL SETUSER user on >password <STORE_ACL>` on one server.
pub fn create_store_user(conn: &mut impl ConnectionLike, user: &str, password: &str) {
    let mut cmd = redis::cmd("ACL");
    cmd.arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(format!(">{password}"));
    for rule in STORE_ACL.split_whitespace() {
        cmd.arg(rule);
    }
    let () = cmd.query(conn).expect("ACL SETUSER");
}

/// A fresh, empty Redis for one test, on the backend `FS_TEST_BACKEND`
/// chooses (with the store's ACL user under `FS_TEST_ACL=1`); stopped when
/// dropped.
pub fn redis() -> TestRedis {
    let redis = if backend_is_cluster() {
        TestRedis::Cluster(
            ManagedCluster::start(3, 0)
                .unwrap_or_else(|e| panic!("starting the test cluster: {e}")),
        )
    } else {
        TestRedis::Standalone(standalone_redis())
    };
    if acl_is_on() {
        let nodes: Vec<&ManagedRedis> = match &redis {
            TestRedis::Standalone(r) => vec![r],
            TestRedis::Cluster(c) => (0..c.len()).map(|i| c.node(i)).collect(),
        };
        for node in nodes {
            create_store_user(&mut node.raw(), ACL_USER, ACL_PASSWORD);
        }
    }
    redis
}

/// A fresh, empty single redis-server, whatever the backend: for tests
/// whose subject is one Redis process.
pub fn standalone_redis() -> ManagedRedis {
    ManagedRedis::start().unwrap_or_else(|e| panic!("starting the test redis-server: {e}"))
}

/// The Redis a test runs on: one server or a local cluster.
pub enum TestRedis {
    Standalone(ManagedRedis),
    Cluster(ManagedCluster),
}

impl TestRedis {
    /// What the store, the server and the loader are given: `redis://...`
    /// or `redis+cluster://...`, as the ACL user under `FS_TEST_ACL=1`.
    pub fn url(&self) -> String {
        let url = match self {
            TestRedis::Standalone(r) => r.url(),
            TestRedis::Cluster(c) => c.url(),
        };
        match url.split_once("://") {
            Some((scheme, rest)) if acl_is_on() => {
                format!("{scheme}://{ACL_USER}:{ACL_PASSWORD}@{rest}")
            }
            _ => url,
        }
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self, TestRedis::Cluster(_))
    }

    /// `INFO commandstats` summed over every node (on a cluster the
    /// store's own `info` is one primary's).
    pub fn command_stats(&self) -> CommandStats {
        let nodes: Vec<&ManagedRedis> = match self {
            TestRedis::Standalone(r) => vec![r],
            TestRedis::Cluster(c) => (0..c.len()).map(|i| c.node(i)).collect(),
        };
        let mut sum = CommandStats::new();
        for node in nodes {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query(&mut node.raw())
                .expect("INFO commandstats");
            for (name, stat) in feature_store::commandstats::parse(&info) {
                let total = sum.entry(name).or_default();
                total.calls += stat.calls;
                total.usec += stat.usec;
            }
        }
        sum
    }

    /// Every node's log, for failure messages.
    pub fn log(&self) -> String {
        match self {
            TestRedis::Standalone(r) => r.log(),
            TestRedis::Cluster(c) => c.logs(),
        }
    }
}

/// What the fixtures need from a Redis, standalone or cluster.
pub trait Backend {
    /// A raw connection to it: a plain `redis::Connection` to one server,
    /// a `Raw` to the chosen backend.
    type Conn: ConnectionLike + Send + 'static;
    /// The URL the store, the server and the loader are given.
    fn url(&self) -> String;
    fn raw(&self) -> Self::Conn;
}

/// How long a test's own connection waits for Redis before the command
/// fails: far above any command the tests send.
const RAW_TIMEOUT: Duration = Duration::from_secs(10);

impl Backend for ManagedRedis {
    type Conn = redis::Connection;
    fn url(&self) -> String {
        ManagedRedis::url(self)
    }
    /// With read and write timeouts, as the cluster's connections have: a
    /// reply that never arrives (seen once on this VM's loopback: Redis had
    /// sent `+OK`, and it sat in the socket's send queue for minutes) must
    /// fail the test with an error, not hang the whole suite.
    fn raw(&self) -> redis::Connection {
        let client = redis::Client::open(ManagedRedis::url(self)).expect("url");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connecting to the test redis");
        conn.set_read_timeout(Some(RAW_TIMEOUT))
            .and_then(|()| conn.set_write_timeout(Some(RAW_TIMEOUT)))
            .expect("setting the test connection's timeouts");
        conn
    }
}

impl Backend for TestRedis {
    type Conn = Raw;
    fn url(&self) -> String {
        TestRedis::url(self)
    }
    fn raw(&self) -> Raw {
        match self {
            TestRedis::Standalone(r) => Raw::Standalone(r.raw()),
            TestRedis::Cluster(c) => {
                let nodes: Vec<String> = (0..c.len())
                    .map(|i| format!("redis://127.0.0.1:{}/", c.port(i)))
                    .collect();
                let client = redis::cluster::ClusterClient::builder(nodes)
                    .connection_timeout(Duration::from_secs(2))
                    .response_timeout(Duration::from_secs(2))
                    .build()
                    .expect("cluster client");
                Raw::Cluster(Box::new(
                    client
                        .get_connection()
                        .expect("connecting to the test cluster"),
                ))
            }
        }
    }
}

/// A backend shared across proptest cases behind a lock.
impl<B: Backend> Backend for std::sync::MutexGuard<'_, B> {
    type Conn = B::Conn;
    fn url(&self) -> String {
        (**self).url()
    }
    fn raw(&self) -> B::Conn {
        (**self).raw()
    }
}

/// A raw connection, for checking what is really in Redis: the redis
/// crate's own client, independent of the store's transport. On a cluster
/// it routes key commands by slot and KEYS, DBSIZE, FLUSHALL and SCRIPT
/// LOAD/FLUSH to every primary.
pub enum Raw {
    Standalone(redis::Connection),
    Cluster(Box<redis::cluster::ClusterConnection>),
}

/// `INFO commandstats` summed over every node of `redis`.
pub fn command_stats(redis: &TestRedis) -> CommandStats {
    redis.command_stats()
}

pub fn raw<B: Backend>(redis: &B) -> B::Conn {
    redis.raw()
}

impl ConnectionLike for Raw {
    fn req_packed_command(&mut self, cmd: &[u8]) -> RedisResult<Value> {
        match self {
            Raw::Standalone(c) => c.req_packed_command(cmd),
            Raw::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    /// A plain pipeline on the cluster client goes to one node; a check's
    /// pipeline may span slots, so on a cluster it goes through the crate's
    /// cluster pipeline instead (split by node, one round trip per node).
    fn req_packed_commands(
        &mut self,
        cmd: &[u8],
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        match self {
            Raw::Standalone(c) => c.req_packed_commands(cmd, offset, count),
            Raw::Cluster(c) => {
                let mut pipe = redis::cluster::cluster_pipe();
                for one in unpack(cmd) {
                    pipe.add_command(one);
                }
                let replies: Vec<Value> = pipe.query(c)?;
                Ok(replies.into_iter().skip(offset).take(count).collect())
            }
        }
    }

    fn req_command(&mut self, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Raw::Standalone(c) => c.req_command(cmd),
            Raw::Cluster(c) => c.req_command(cmd),
        }
    }

    fn get_db(&self) -> i64 {
        0
    }

    fn check_connection(&mut self) -> bool {
        match self {
            Raw::Standalone(c) => c.check_connection(),
            Raw::Cluster(c) => c.check_connection(),
        }
    }

    fn is_open(&self) -> bool {
        match self {
            Raw::Standalone(c) => c.is_open(),
            Raw::Cluster(c) => c.is_open(),
        }
    }
}

/// Packed commands (`*<n>\r\n` then `$<len>\r\n<bytes>\r\n` per
/// argument, as the client packs them) back into commands.
fn unpack(mut bytes: &[u8]) -> Vec<Cmd> {
    fn number(bytes: &mut &[u8], tag: u8) -> usize {
        let end = bytes
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a packed line ends in CRLF");
        assert_eq!(
            bytes[0], tag,
            "a packed command's line starts with {}",
            tag as char
        );
        let n = std::str::from_utf8(&bytes[1..end])
            .ok()
            .and_then(|s| s.parse().ok())
            .expect("a packed length");
        *bytes = &bytes[end + 2..];
        n
    }
    let mut cmds = Vec::new();
    while !bytes.is_empty() {
        let mut cmd = redis::Cmd::new();
        for _ in 0..number(&mut bytes, b'*') {
            let len = number(&mut bytes, b'$');
            cmd.arg(&bytes[..len]);
            bytes = &bytes[len + 2..];
        }
        cmds.push(cmd);
    }
    cmds
}

pub fn store_config() -> StoreConfig {
    StoreConfig {
        pool: PoolConfig {
            max_size: 4,
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(2),
            checkout_timeout: Duration::from_secs(1),
            ..PoolConfig::default()
        },
        ..StoreConfig::default()
    }
}

pub fn store(redis: &impl Backend) -> FeatureStore {
    store_with(redis, store_config())
}

pub fn store_with(redis: &impl Backend, config: StoreConfig) -> FeatureStore {
    FeatureStore::open(&redis.url(), config).expect("opening the store")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with
/// `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every key in the database (tests only: KEYS is fine on a tiny test db).
pub fn all_keys(conn: &mut impl ConnectionLike) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
    keys.sort();
    keys
}

/// The per-entity invariants: `key` has a key TTL (PTTL, so a key about to
/// expire is not rounded to 0), every streaming field a field TTL and no
/// batch field one. With `only_demo_fields`, any other field fails too.
/// Keys and fields that expire while being checked are skipped.
pub fn check_entity_ttls(
    conn: &mut impl ConnectionLike,
    key: &str,
    step: &str,
    only_demo_fields: bool,
) {
    use feature_store::demo::synth::{BATCH_FEATURES, STREAMING_FEATURES};
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(conn).expect("PTTL");
    if ttl == -2 {
        return; // expired between listing and PTTL
    }
    // 0: under a millisecond left, expiring now (not immortal: that is -1).
    assert!(ttl >= 0, "{step}: {key} has no key TTL ({ttl})");
    let fields: Vec<String> = redis::cmd("HKEYS").arg(key).query(conn).expect("HKEYS");
    if fields.is_empty() {
        return;
    }
    let ttls: Vec<i64> = redis::cmd("HPTTL")
        .arg(key)
        .arg("FIELDS")
        .arg(fields.len())
        .arg(&fields)
        .query(conn)
        .expect("HPTTL");
    for (field, t) in fields.iter().zip(ttls) {
        if t == -2 {
            continue; // expired between HKEYS and HPTTL
        }
        // A feature's own event time follows its feature's rule; a view's
        // time and marker are bounded by the key TTL checked above.
        let field = field.strip_suffix("@t").unwrap_or(field);
        if field.starts_with('@') {
            continue;
        }
        if STREAMING_FEATURES.contains(&field) {
            assert!(
                t > 0,
                "{step}: streaming field {key}.{field} has no field TTL ({t})"
            );
        } else if BATCH_FEATURES.contains(&field) {
            assert_eq!(
                t, -1,
                "{step}: batch field {key}.{field} carries a field TTL"
            );
        } else {
            assert!(!only_demo_fields, "{step}: unknown field {field}");
        }
    }
}

/// An entity's features as `HGETALL` shows them, without the event-time
/// fields the write scripts keep beside them (`@<view>`, `<feature>@t`).
pub fn features(
    conn: &mut impl ConnectionLike,
    key: &str,
) -> std::collections::HashMap<String, String> {
    let all: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL");
    all.into_iter()
        .filter(|(f, _)| !feature_store::store::event_fields::is_time_field(f))
        .collect()
}
