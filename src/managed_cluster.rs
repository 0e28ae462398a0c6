//! A throwaway Redis Cluster owned by this process: the cluster tests' and
//! the bench's backend.
//!
//! Every node is a [`ManagedRedis`] started in cluster mode, with its own
//! `nodes.conf` in its temp dir and an explicit cluster-bus port (the
//! default, port + 10000, may be taken or exceed 65535). The cluster is
//! built with plain commands (`CLUSTER ADDSLOTSRANGE`, `MEET`, `REPLICATE`),
//! not `redis-cli --cluster`, so only the server binary is needed.
//!
//! Node indices are fixed at start: `0..primaries` are the primaries, each
//! owning an even share of the 16384 slots in order; then the replicas,
//! those of primary `p` at `primaries + p * replicas_per_primary + r`. Roles
//! can change later (a failover), indices never do.
//!
//! "Converged" (what [`ManagedCluster::wait_converged`] waits for) means:
//! every running node says `cluster_state:ok`; every running node's
//! `CLUSTER NODES` shows the same owner for every one of the 16384 slots and
//! the same primary for every replica, with each slot owned by a running
//! node and no running node flagged failing or in handshake; and every
//! running replica of a running primary has `master_link_status:up`.
//!
//! Start time has a floor: a cluster primary holds `cluster_state:fail` for
//! its first 2 s (the server's "writable delay", so a rebooted primary does
//! not take writes before the cluster can reconfigure it). Nodes are
//! therefore started in parallel, and that delay runs while they meet.

use std::collections::HashMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::managed_redis::{ManagedRedis, ManagedRedisError, ServerTls};

/// Redis Cluster's fixed number of hash slots.
pub const SLOTS: u16 = 16384;

#[derive(Debug, Error)]
pub enum ManagedClusterError {
    #[error("invalid cluster request: {0}")]
    Invalid(String),
    #[error(transparent)]
    Node(#[from] ManagedRedisError),
    #[error("node {node} (port {port}): {command}: {source}")]
    Redis {
        node: usize,
        port: u16,
        command: String,
        #[source]
        source: redis::RedisError,
    },
    /// Carries every node's log, as a failed single-node start does.
    #[error("{reason}\n{logs}")]
    Failed { reason: String, logs: String },
}

/// How a cluster is configured; `Default` is what `start` uses.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `cluster-node-timeout`: how long a silent node takes to be declared
    /// failed. Small by default so fault tests detect failures quickly.
    pub node_timeout: Duration,
    /// `cluster-require-full-coverage`: whether the cluster stops serving
    /// when a slot has no live owner (Redis's default, yes).
    pub require_full_coverage: bool,
    /// How long a start, a failover or `wait_converged` may take.
    pub converge_timeout: Duration,
    /// Every node also listens for TLS with these certificates, and the
    /// cluster bus runs over TLS (`tls-cluster yes`, without which `CLUSTER
    /// SLOTS` names plain ports even to a TLS client). See
    /// [`ManagedCluster::tls_url`].
    pub tls: Option<ServerTls>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            node_timeout: Duration::from_millis(2000),
            require_full_coverage: true,
            converge_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
}

struct Node {
    redis: ManagedRedis,
    id: String,
    bus_port: u16,
}

pub struct ManagedCluster {
    nodes: Vec<Node>,
    /// How many nodes were started as primaries (the first ones).
    initial_primaries: usize,
    options: ClusterOptions,
}

/// How often the waits poll the nodes.
const POLL: Duration = Duration::from_millis(25);
/// Per-command timeout on the harness's own connections.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// MIGRATE's timeout, in milliseconds.
const MIGRATE_TIMEOUT_MS: u64 = 5000;

impl ManagedCluster {
    /// Starts `primaries` primaries with `replicas_per_primary` replicas
    /// each, with the default options, and waits until converged.
    pub fn start(
        primaries: usize,
        replicas_per_primary: usize,
    ) -> Result<Self, ManagedClusterError> {
        Self::start_with(primaries, replicas_per_primary, ClusterOptions::default())
    }

    /// As [`ManagedCluster::start`], with explicit options.
    pub fn start_with(
        primaries: usize,
        replicas_per_primary: usize,
        options: ClusterOptions,
    ) -> Result<Self, ManagedClusterError> {
        if primaries == 0 || primaries > usize::from(SLOTS) {
            return Err(ManagedClusterError::Invalid(format!(
                "{primaries} primaries: need 1..={SLOTS}"
            )));
        }
        let total = primaries * (1 + replicas_per_primary);
        // In parallel: each primary's writable delay starts with its
        // process, so the nodes should start together.
        let started: Vec<Result<(ManagedRedis, u16), ManagedClusterError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = (0..total)
                    .map(|_| scope.spawn(|| start_node(&options)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(ManagedClusterError::Invalid(
                                "a node's start panicked".into(),
                            ))
                        })
                    })
                    .collect()
            });
        let mut nodes = Vec::with_capacity(total);
        for node in started {
            let (redis, bus_port) = node?;
            nodes.push(Node {
                redis,
                id: String::new(),
                bus_port,
            });
        }
        let mut cluster = ManagedCluster {
            nodes,
            initial_primaries: primaries,
            options,
        };
        match cluster.form(primaries, replicas_per_primary) {
            Ok(()) => {}
            Err(e @ ManagedClusterError::Failed { .. }) => return Err(e),
            Err(e) => return Err(cluster.with_logs(format!("forming the cluster: {e}"))),
        }
        Ok(cluster)
    }

    fn form(
        &mut self,
        primaries: usize,
        replicas_per_primary: usize,
    ) -> Result<(), ManagedClusterError> {
        for i in 0..self.nodes.len() {
            let mut conn = self.conn(i)?;
            self.nodes[i].id = self.query(i, &mut conn, redis::cmd("CLUSTER").arg("MYID"))?;
            // Distinct epochs up front, as `redis-cli --cluster create`
            // does, so no epoch collision has to be resolved by gossip.
            self.query::<()>(
                i,
                &mut conn,
                redis::cmd("CLUSTER").arg("SET-CONFIG-EPOCH").arg(i + 1),
            )?;
            if i < primaries {
                let (first, last) = slot_share(i, primaries);
                self.query::<()>(
                    i,
                    &mut conn,
                    redis::cmd("CLUSTER")
                        .arg("ADDSLOTSRANGE")
                        .arg(first)
                        .arg(last),
                )?;
            }
        }
        let mut first = self.conn(0)?;
        for i in 1..self.nodes.len() {
            let (port, bus) = (self.nodes[i].redis.port(), self.nodes[i].bus_port);
            self.query::<()>(
                0,
                &mut first,
                redis::cmd("CLUSTER")
                    .arg("MEET")
                    .arg("127.0.0.1")
                    .arg(port)
                    .arg(bus),
            )?;
        }
        // A replica can only follow a primary it knows as one.
        let deadline = Instant::now() + self.options.converge_timeout;
        let mut pending: Vec<usize> = (primaries..self.nodes.len()).collect();
        while !pending.is_empty() {
            let mut last_error = String::new();
            pending.retain(|&replica| {
                let primary = (replica - primaries) / replicas_per_primary.max(1);
                let command = redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(&self.nodes[primary].id)
                    .clone();
                match self
                    .conn(replica)
                    .and_then(|mut c| self.query::<()>(replica, &mut c, &command))
                {
                    Ok(()) => false,
                    Err(e) => {
                        last_error = e.to_string();
                        true
                    }
                }
            });
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(ManagedClusterError::Invalid(format!(
                    "replicas {pending:?} never accepted CLUSTER REPLICATE: {last_error}"
                )));
            }
            std::thread::sleep(POLL);
        }
        self.wait_converged()
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,.../`: every node that was
    /// started as a primary (the store's cluster URL form; any node would
    /// do as a seed, the client discovers the rest).
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .take(self.initial_primaries)
            .map(|n| format!("127.0.0.1:{}", n.redis.port()))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    /// `rediss+cluster://127.0.0.1:t1,.../` with each started primary's TLS
    /// port, when started with `ClusterOptions::tls`.
    pub fn tls_url(&self) -> Option<String> {
        let seeds: Option<Vec<String>> = self
            .nodes
            .iter()
            .take(self.initial_primaries)
            .map(|n| {
                n.redis.tls_url().map(|u| {
                    u.trim_start_matches("rediss://")
                        .trim_end_matches('/')
                        .to_owned()
                })
            })
            .collect();
        seeds.map(|s| format!("rediss+cluster://{}/", s.join(",")))
    }

    /// Number of nodes, primaries and replicas.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    pub fn node(&self, index: usize) -> &ManagedRedis {
        &self.nodes[index].redis
    }

    /// The node itself, so a test can `stop()` or `restart()` it (a
    /// restart keeps its dir, so its `nodes.conf`: it rejoins with the same
    /// id, empty).
    pub fn node_mut(&mut self, index: usize) -> &mut ManagedRedis {
        &mut self.nodes[index].redis
    }

    /// The node's cluster id (`CLUSTER MYID`), fixed for its lifetime.
    pub fn node_id(&self, index: usize) -> &str {
        &self.nodes[index].id
    }

    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].redis.port()
    }

    /// The node's cluster-bus port.
    pub fn bus_port(&self, index: usize) -> u16 {
        self.nodes[index].bus_port
    }

    /// The node index with this cluster id, if any.
    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.id == id)
    }

    /// What the node says it is now (`ROLE`).
    pub fn role(&self, index: usize) -> Result<Role, ManagedClusterError> {
        let mut conn = self.conn(index)?;
        let reply: Vec<redis::Value> = self.query(index, &mut conn, &redis::cmd("ROLE"))?;
        let role = match reply.first() {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        // Redis and Valkey 9 say master/slave; the newer names are accepted
        // in case a later server switches.
        match role.as_str() {
            "master" | "primary" => Ok(Role::Primary),
            "slave" | "replica" => Ok(Role::Replica),
            _ => Err(ManagedClusterError::Invalid(format!(
                "node {index}: unexpected ROLE reply {reply:?}"
            ))),
        }
    }

    /// The node that owns `slot`, as a live node sees it.
    pub fn primary_of_slot(&mut self, slot: u16) -> Result<usize, ManagedClusterError> {
        if slot >= SLOTS {
            return Err(ManagedClusterError::Invalid(format!(
                "slot {slot} >= {SLOTS}"
            )));
        }
        let asked = self.live_node()?;
        let view = self.view(asked, &mut self.conn(asked)?)?;
        let owners = self
            .owners(asked, &view)
            .map_err(ManagedClusterError::Invalid)?;
        owners[usize::from(slot)].ok_or_else(|| {
            ManagedClusterError::Invalid(format!("node {asked} sees no owner for slot {slot}"))
        })
    }

    /// The node that owns `key`'s slot now.
    pub fn primary_of_key(&mut self, key: &[u8]) -> Result<usize, ManagedClusterError> {
        let slot = self.keyslot(key)?;
        self.primary_of_slot(slot)
    }

    /// The nodes that own slots now, as a live node sees them, in index
    /// order (after a failover, the promoted replica instead of its old
    /// primary).
    pub fn primaries(&mut self) -> Result<Vec<usize>, ManagedClusterError> {
        let asked = self.live_node()?;
        let view = self.view(asked, &mut self.conn(asked)?)?;
        let owners = self
            .owners(asked, &view)
            .map_err(ManagedClusterError::Invalid)?;
        let mut primaries: Vec<usize> = owners.into_iter().flatten().collect();
        primaries.sort_unstable();
        primaries.dedup();
        Ok(primaries)
    }

    /// `CLUSTER KEYSLOT key`, asked of a live node.
    pub fn keyslot(&mut self, key: &[u8]) -> Result<u16, ManagedClusterError> {
        let asked = self.live_node()?;
        let mut conn = self.conn(asked)?;
        self.query(
            asked,
            &mut conn,
            redis::cmd("CLUSTER").arg("KEYSLOT").arg(key),
        )
    }

    /// Polls until the cluster is converged (see the module doc) or the
    /// options' timeout passes; then the error says what was still wrong,
    /// with every node's log.
    pub fn wait_converged(&mut self) -> Result<(), ManagedClusterError> {
        let deadline = Instant::now() + self.options.converge_timeout;
        loop {
            let reason = match self.converged() {
                Ok(()) => return Ok(()),
                Err(reason) => reason,
            };
            if Instant::now() > deadline {
                return Err(self.with_logs(format!(
                    "not converged within {:?}: {reason}",
                    self.options.converge_timeout
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Same as [`ManagedCluster::wait_converged`].
    pub fn wait_ok(&mut self) -> Result<(), ManagedClusterError> {
        self.wait_converged()
    }

    /// `CLUSTER FAILOVER` on `replica`; waits until it is a primary and
    /// the cluster has converged on that. This is the coordinated kind (no
    /// FORCE): the replica's primary must be up, and no acknowledged write
    /// is lost. A replica whose primary is stopped is promoted by the
    /// cluster itself after `node_timeout`: `wait_converged` waits for it.
    pub fn failover(&mut self, replica: usize) -> Result<(), ManagedClusterError> {
        self.check_index(replica)?;
        if self.role(replica)? != Role::Replica {
            return Err(ManagedClusterError::Invalid(format!(
                "node {replica} is not a replica"
            )));
        }
        let mut conn = self.conn(replica)?;
        self.query::<()>(replica, &mut conn, redis::cmd("CLUSTER").arg("FAILOVER"))?;
        let deadline = Instant::now() + self.options.converge_timeout;
        while self.role(replica).ok() != Some(Role::Primary) {
            if Instant::now() > deadline {
                return Err(self.with_logs(format!(
                    "node {replica} did not become primary within {:?}",
                    self.options.converge_timeout
                )));
            }
            std::thread::sleep(POLL);
        }
        self.wait_converged()
    }

    /// Step 1 of a slot migration: `to` imports `slot`, `from` migrates it.
    /// From here on `from` answers ASK for the slot's keys it no longer has.
    pub fn begin_migration(
        &mut self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), ManagedClusterError> {
        self.check_migration(slot, from, to)?;
        let (from_id, to_id) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
        // Target first, so no ASK ever points at a node not importing yet.
        let mut target = self.conn(to)?;
        self.query::<()>(
            to,
            &mut target,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("IMPORTING")
                .arg(from_id),
        )?;
        let mut source = self.conn(from)?;
        self.query::<()>(
            from,
            &mut source,
            redis::cmd("CLUSTER")
                .arg("SETSLOT")
                .arg(slot)
                .arg("MIGRATING")
                .arg(to_id),
        )
    }

    /// Step 2, repeatable: moves up to `max` of the slot's keys still on
    /// `from` to `to` (`GETKEYSINSLOT` + `MIGRATE ... KEYS`); returns how
    /// many moved (0: none left).
    pub fn migrate_some_keys(
        &mut self,
        slot: u16,
        from: usize,
        to: usize,
        max: usize,
    ) -> Result<usize, ManagedClusterError> {
        self.check_migration(slot, from, to)?;
        let mut source = self.conn(from)?;
        let keys: Vec<Vec<u8>> = self.query(
            from,
            &mut source,
            redis::cmd("CLUSTER")
                .arg("GETKEYSINSLOT")
                .arg(slot)
                .arg(max),
        )?;
        if keys.is_empty() {
            return Ok(0);
        }
        // No REPLACE: a key on both sides would be a bug worth an error.
        let mut migrate = redis::cmd("MIGRATE");
        migrate
            .arg("127.0.0.1")
            .arg(self.port(to))
            .arg("")
            .arg(0)
            .arg(MIGRATE_TIMEOUT_MS)
            .arg("KEYS")
            .arg(&keys);
        // "NOKEY" when they all expired meanwhile: still nothing left to do.
        let _: String = self.query(from, &mut source, &migrate)?;
        Ok(keys.len())
    }

    /// Step 3: moves the slot's remaining keys, then gives the slot to `to`
    /// on every primary (`SETSLOT NODE`, target and source first), and
    /// waits until the cluster has converged.
    pub fn finish_migration(
        &mut self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), ManagedClusterError> {
        while self.migrate_some_keys(slot, from, to, 100)? > 0 {}
        let mut order = vec![to, from];
        for i in 0..self.nodes.len() {
            if !order.contains(&i)
                && self.nodes[i].redis.is_running()
                && self.role(i)? == Role::Primary
            {
                order.push(i);
            }
        }
        let to_id = self.nodes[to].id.clone();
        for i in order {
            let mut conn = self.conn(i)?;
            self.query::<()>(
                i,
                &mut conn,
                redis::cmd("CLUSTER")
                    .arg("SETSLOT")
                    .arg(slot)
                    .arg("NODE")
                    .arg(&to_id),
            )?;
        }
        self.wait_converged()
    }

    /// All three steps at once.
    pub fn migrate_slot(
        &mut self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), ManagedClusterError> {
        self.begin_migration(slot, from, to)?;
        self.finish_migration(slot, from, to)
    }

    /// Every node's log so far, each under a header.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                format!(
                    "--- node {i} (port {}) log ---\n{}",
                    n.redis.port(),
                    n.redis.log()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn with_logs(&self, reason: String) -> ManagedClusterError {
        ManagedClusterError::Failed {
            reason,
            logs: self.logs(),
        }
    }

    fn check_index(&self, index: usize) -> Result<(), ManagedClusterError> {
        if index < self.nodes.len() {
            Ok(())
        } else {
            Err(ManagedClusterError::Invalid(format!(
                "node {index}: the cluster has {} nodes",
                self.nodes.len()
            )))
        }
    }

    fn check_migration(
        &self,
        slot: u16,
        from: usize,
        to: usize,
    ) -> Result<(), ManagedClusterError> {
        self.check_index(from)?;
        self.check_index(to)?;
        if slot >= SLOTS || from == to {
            return Err(ManagedClusterError::Invalid(format!(
                "migrating slot {slot} from node {from} to node {to}"
            )));
        }
        Ok(())
    }

    fn live_node(&mut self) -> Result<usize, ManagedClusterError> {
        (0..self.nodes.len())
            .find(|&i| self.nodes[i].redis.is_running())
            .ok_or_else(|| ManagedClusterError::Invalid("no node is running".into()))
    }

    fn conn(&self, index: usize) -> Result<redis::Connection, ManagedClusterError> {
        let port = self.port(index);
        let redis_err = |source| ManagedClusterError::Redis {
            node: index,
            port,
            command: "connect".into(),
            source,
        };
        let client = redis::Client::open(self.nodes[index].redis.url()).map_err(redis_err)?;
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(1))
            .map_err(redis_err)?;
        conn.set_read_timeout(Some(IO_TIMEOUT)).map_err(redis_err)?;
        conn.set_write_timeout(Some(IO_TIMEOUT))
            .map_err(redis_err)?;
        Ok(conn)
    }

    fn query<T: redis::FromRedisValue>(
        &self,
        index: usize,
        conn: &mut redis::Connection,
        command: &redis::Cmd,
    ) -> Result<T, ManagedClusterError> {
        command
            .query(conn)
            .map_err(|source| ManagedClusterError::Redis {
                node: index,
                port: self.port(index),
                command: command_name(command),
                source,
            })
    }

    /// One node's `CLUSTER NODES`, parsed.
    fn view(
        &self,
        index: usize,
        conn: &mut redis::Connection,
    ) -> Result<Vec<NodeLine>, ManagedClusterError> {
        let text: String = self.query(index, conn, redis::cmd("CLUSTER").arg("NODES"))?;
        Ok(text.lines().filter_map(NodeLine::parse).collect())
    }

    /// Slot -> owning node index, from one node's view; an error if a slot
    /// is claimed twice or by an unknown node.
    fn owners(&self, asked: usize, view: &[NodeLine]) -> Result<Vec<Option<usize>>, String> {
        let mut owners = vec![None; usize::from(SLOTS)];
        for line in view.iter().filter(|l| l.is_primary()) {
            if line.slots.is_empty() {
                continue;
            }
            let owner = self
                .index_of(&line.id)
                .ok_or_else(|| format!("node {asked} sees unknown node {}", line.id))?;
            for &(first, last) in &line.slots {
                for slot in first..=last {
                    let cell = &mut owners[usize::from(slot)];
                    if let Some(other) = cell.replace(owner) {
                        return Err(format!(
                            "node {asked} sees slot {slot} owned by nodes {other} and {owner}"
                        ));
                    }
                }
            }
        }
        Ok(owners)
    }

    /// `Ok` when converged (see the module doc), else what is not yet.
    fn converged(&mut self) -> Result<(), String> {
        let running: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].redis.is_running())
            .collect();
        let mut agreed: Option<(usize, Picture)> = None;
        for &i in &running {
            let picture = self.picture(i, &running)?;
            match &agreed {
                None => agreed = Some((i, picture)),
                Some((first, seen)) => {
                    if let Some(slot) =
                        (0..picture.owners.len()).find(|&s| picture.owners[s] != seen.owners[s])
                    {
                        return Err(format!(
                            "slot {slot}: node {first} says owner {:?}, node {i} says {:?}",
                            seen.owners[slot], picture.owners[slot]
                        ));
                    }
                    if picture.primary_of != seen.primary_of {
                        return Err(format!(
                            "nodes {first} and {i} disagree on who replicates whom"
                        ));
                    }
                }
            }
        }
        let Some((_, picture)) = agreed else {
            return Err("no node is running".into());
        };
        if let Some(owner) = picture
            .owners
            .iter()
            .flatten()
            .find(|o| !running.contains(o))
        {
            return Err(format!("stopped node {owner} still owns slots"));
        }
        for &i in &running {
            match picture.primary_of.get(&i) {
                Some(Some(primary)) if running.contains(primary) => self.link_up(i)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// What node `i` says: it is ok, knows every running node as healthy,
    /// and sees every slot owned once.
    fn picture(&self, i: usize, running: &[usize]) -> Result<Picture, String> {
        let mut conn = self.conn(i).map_err(|e| e.to_string())?;
        let info: String = self
            .query(i, &mut conn, redis::cmd("CLUSTER").arg("INFO"))
            .map_err(|e| e.to_string())?;
        let state = info_field(&info, "cluster_state").unwrap_or("?");
        if state != "ok" {
            return Err(format!("node {i} says cluster_state:{state}"));
        }
        let view = self.view(i, &mut conn).map_err(|e| e.to_string())?;
        for &j in running {
            let id = &self.nodes[j].id;
            let line = view
                .iter()
                .find(|l| &l.id == id)
                .ok_or_else(|| format!("node {i} does not know node {j}"))?;
            if let Some(flag) = line
                .flags
                .iter()
                .find(|f| matches!(f.as_str(), "fail" | "fail?" | "handshake" | "noaddr"))
            {
                return Err(format!("node {i} flags running node {j} {flag}"));
            }
        }
        let owners = self.owners(i, &view)?;
        if let Some(slot) = owners.iter().position(Option::is_none) {
            return Err(format!("node {i} sees no owner for slot {slot}"));
        }
        let mut primary_of = HashMap::new();
        for line in &view {
            let node = self
                .index_of(&line.id)
                .ok_or_else(|| format!("node {i} sees unknown node {}", line.id))?;
            let primary = match &line.primary {
                Some(id) => Some(
                    self.index_of(id)
                        .ok_or_else(|| format!("node {i} sees unknown primary {id}"))?,
                ),
                None => None,
            };
            primary_of.insert(node, primary);
        }
        Ok(Picture { owners, primary_of })
    }

    /// `Ok` when replica `i` has its primary's link up.
    fn link_up(&self, i: usize) -> Result<(), String> {
        let mut conn = self.conn(i).map_err(|e| e.to_string())?;
        let info: String = self
            .query(i, &mut conn, redis::cmd("INFO").arg("replication"))
            .map_err(|e| e.to_string())?;
        match info_field(&info, "master_link_status") {
            Some("up") => Ok(()),
            link => Err(format!("replica {i}: master_link_status:{link:?}")),
        }
    }
}

/// One node's picture of the cluster: slot -> owner, node -> its primary.
struct Picture {
    owners: Vec<Option<usize>>,
    primary_of: HashMap<usize, Option<usize>>,
}

/// One line of `CLUSTER NODES`:
/// `<id> <addr> <flags> <primary|-> <ping> <pong> <epoch> <link> <slots>...`
struct NodeLine {
    id: String,
    flags: Vec<String>,
    primary: Option<String>,
    /// Owned slot ranges; the `[slot->-id]` migration markers are skipped.
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            return None;
        }
        let primary = match fields[3] {
            "-" => None,
            id => Some(id.to_string()),
        };
        let slots = fields[8..]
            .iter()
            .filter(|s| !s.starts_with('['))
            .filter_map(|s| match s.split_once('-') {
                Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                None => {
                    let slot = s.parse().ok()?;
                    Some((slot, slot))
                }
            })
            .collect();
        Some(NodeLine {
            id: fields[0].to_string(),
            flags: fields[2].split(',').map(str::to_string).collect(),
            primary,
            slots,
        })
    }

    fn is_primary(&self) -> bool {
        self.flags.iter().any(|f| f == "master")
    }
}

/// The `[first, last]` slots primary `index` of `primaries` starts with.
fn slot_share(index: usize, primaries: usize) -> (usize, usize) {
    let slots = usize::from(SLOTS);
    (
        index * slots / primaries,
        (index + 1) * slots / primaries - 1,
    )
}

fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

fn command_name(command: &redis::Cmd) -> String {
    command
        .args_iter()
        .take(2)
        .map(|a| match a {
            redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            _ => "?".into(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Starts one cluster-mode node; the bus port is picked here, and picked
/// again if the node could not bind it.
fn start_node(options: &ClusterOptions) -> Result<(ManagedRedis, u16), ManagedClusterError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let bus_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| ManagedClusterError::Invalid(format!("picking a bus port: {e}")))?
            .port();
        let node_timeout = options.node_timeout.as_millis().to_string();
        let bus = bus_port.to_string();
        let full_coverage = if options.require_full_coverage {
            "yes"
        } else {
            "no"
        };
        let mut args = vec![
            "--cluster-enabled",
            "yes",
            // Relative to the node's own dir, so each has its own.
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-port",
            &bus,
            "--cluster-node-timeout",
            &node_timeout,
            "--cluster-require-full-coverage",
            full_coverage,
            // A primary otherwise waits 5 s for more replicas before it
            // starts a sync: every replica would take 5 s to come up.
            "--repl-diskless-sync-delay",
            "0",
        ];
        let started = match &options.tls {
            Some(tls) => {
                args.extend(["--tls-cluster", "yes"]);
                ManagedRedis::start_with_tls(tls, &args)
            }
            None => ManagedRedis::start_with_args(&args),
        };
        match started {
            Ok(redis) => return Ok((redis, bus_port)),
            Err(e) if attempt >= 3 => return Err(e.into()),
            Err(_) => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{slot_share, NodeLine, SLOTS};

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(128))]
        #[test]
        fn slot_shares_cover_every_slot_once(primaries in 1usize..=usize::from(SLOTS)) {
            let mut next = 0;
            for i in 0..primaries {
                let (first, last) = slot_share(i, primaries);
                proptest::prop_assert_eq!(first, next);
                proptest::prop_assert!(last >= first);
                next = last + 1;
            }
            proptest::prop_assert_eq!(next, usize::from(SLOTS));
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]
        #[test]
        fn a_hostile_cluster_nodes_line_never_panics(line in "[ -~]{0,200}") {
            let _ = NodeLine::parse(&line);
        }
    }

    #[test]
    fn cluster_nodes_lines_parse_slots_and_skip_migration_markers() {
        let line = "07c3 127.0.0.1:30004@31004,host master - 0 1 1 connected 0-5460 7000 [5461->-e7d1] [5462-<-292f]";
        let parsed = NodeLine::parse(line).expect("parsed");
        assert_eq!(parsed.id, "07c3");
        assert!(parsed.is_primary());
        assert_eq!(parsed.primary, None);
        assert_eq!(parsed.slots, vec![(0, 5460), (7000, 7000)]);
        let replica = "e7d1 127.0.0.1:30005@31005 myself,slave 07c3 0 1 1 connected";
        let parsed = NodeLine::parse(replica).expect("parsed");
        assert!(!parsed.is_primary());
        assert_eq!(parsed.primary.as_deref(), Some("07c3"));
        assert!(parsed.slots.is_empty());
    }
}
