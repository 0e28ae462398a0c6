//! The cluster backend: a `redis+cluster://` (or, over TLS,
//! `rediss+cluster://`) URL, the slot map, and
//! pipelines split by node with MOVED, ASK and TRYAGAIN handled per call.
//!
//! Why not the `redis` crate's own cluster client: in the version this
//! store builds with (1.8), its sync `cluster_pipe()` reads error replies as
//! values, so a MOVED or ASK inside a pipeline is never retried; one node
//! that cannot be reached fails the whole pipeline (calls that ran on the
//! other nodes are reported failed, and a send that fails half-way leaves
//! replies unread on the other nodes' connections); and NOSCRIPT in a
//! pipeline is not recovered. Routing here is small instead: a slot map from
//! `CLUSTER SLOTS`, one pool of plain connections per primary (the same
//! pools and NOSCRIPT rounds as a standalone store), and a call's
//! redirect re-sent alone. MOVED, ASK and TRYAGAIN mean the call did not
//! run, so re-sending it never writes twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::{Cmd, ServerErrorKind, Value};

use super::node::Node;
use super::slots::{key_slot, routing_key, SLOTS};
use crate::error::StoreError;
use crate::pool::{self, PoolConfig};
use crate::redis_url::{self, redact, CLUSTER_SCHEME, TLS_CLUSTER_SCHEME};
use crate::scripts::LuaScript;
use crate::store::RedisStats;

/// How many times a call is re-sent after a redirect before it fails as
/// an outage (a slot moving back and forth, a cluster that does not agree).
const REDIRECT_ROUNDS: usize = 5;

/// The least time between two slot-map refreshes asked for by outages (a
/// refresh after MOVED is never delayed: the map is known to be wrong).
const OUTAGE_REFRESH_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Cluster {
    /// `host:port` of the nodes named in the URL: where the first slot map
    /// comes from, and the fallback when no known node answers.
    seeds: Vec<String>,
    /// `user:password@` from the URL (empty without), for every node.
    userinfo: String,
    /// `rediss://` for every node of a `rediss+cluster://` URL, else
    /// `redis://`.
    node_scheme: &'static str,
    pool_config: PoolConfig,
    /// Every node routed to so far, by `host:port`: a refresh keeps the
    /// pools of the nodes that stay.
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    map: RwLock<Option<Arc<SlotMap>>>,
    /// When the map was last refreshed, and whether an outage asked for a
    /// refresh since.
    refresh: Mutex<(Option<Instant>, bool)>,
}

/// Which primary owns each slot.
pub(crate) struct SlotMap {
    /// An index into `primaries` per slot; `u16::MAX` where no node owns it.
    owner: Vec<u16>,
    pub(super) primaries: Vec<Arc<Node>>,
}

impl SlotMap {
    fn owner(&self, slot: u16) -> Option<&Arc<Node>> {
        self.primaries.get(self.owner[slot as usize] as usize)
    }
}

/// The calls of one round that go to one node: the node, whether after
/// `ASKING`, and each call's index with the target it was sent to.
type Group = (Arc<Node>, bool, Vec<usize>, Vec<Target>);

/// Where a call goes.
#[derive(Clone)]
enum Target {
    /// The owner of a slot, by the map.
    Slot(u16),
    /// A node a MOVED named (the map may not know yet).
    Moved(String),
    /// A node importing the slot: the call goes after `ASKING`.
    Ask(String),
    /// A command about the server, not a key.
    Any,
}

/// What an error reply asks the client to do instead.
enum Redirect {
    Moved(String),
    Ask(String),
    /// TRYAGAIN (a multi-key call whose keys are split by a migration) or
    /// CLUSTERDOWN: the same call again, a little later.
    Later,
}

/// A URL of one server of `url`: the first node a cluster URL names,
/// `url` itself otherwise. What a latency probe (the write pacer) connects
/// to: on a cluster one primary's latency stands for the others'.
pub fn one_node_url(url: &str) -> Result<String, StoreError> {
    if !redis_url::is_cluster(url) {
        return Ok(url.to_owned());
    }
    let cluster = Cluster::open(url, &PoolConfig::default())?;
    Ok(cluster.node_url(&cluster.seeds[0]))
}

impl Cluster {
    /// Parses `redis+cluster://[user[:password]@]host:port[,host:port...]/`
    /// (`rediss+cluster://` for TLS to every node). Nothing is connected:
    /// the first call fetches the slot map.
    pub(super) fn open(url: &str, pool_config: &PoolConfig) -> Result<Cluster, StoreError> {
        let bad =
            |why: &str| StoreError::invalid(format!("bad redis url {:?}: {why}", redact(url)));
        let (node_scheme, rest) = if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
            ("redis://", rest)
        } else if let Some(rest) = url.strip_prefix(TLS_CLUSTER_SCHEME) {
            ("rediss://", rest)
        } else {
            return Err(bad(
                "a cluster url starts with redis+cluster:// or rediss+cluster://",
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        if !(path.is_empty() || path == "0") {
            return Err(bad("a cluster has only database 0"));
        }
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(i) => (&authority[..=i], &authority[i + 1..]),
            None => ("", authority),
        };
        let mut seeds = Vec::new();
        for host in hosts.split(',') {
            let (name, port) = host
                .rsplit_once(':')
                .ok_or_else(|| bad(&format!("{host:?} is not host:port")))?;
            if name.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(bad(&format!("{host:?} is not host:port")));
            }
            seeds.push(host.to_owned());
        }
        let cluster = Cluster {
            seeds,
            userinfo: userinfo.to_owned(),
            node_scheme,
            pool_config: pool_config.clone(),
            nodes: Mutex::default(),
            map: RwLock::default(),
            refresh: Mutex::default(),
        };
        // Every seed's URL must parse as a node's would (with the TLS files).
        for seed in &cluster.seeds {
            pool_config.tls.client(&cluster.node_url(seed))?;
        }
        Ok(cluster)
    }

    fn node_url(&self, addr: &str) -> String {
        format!("{}{}{addr}/", self.node_scheme, self.userinfo)
    }

    /// The pool for the node at `addr`, made on first use.
    fn node(&self, addr: &str) -> Result<Arc<Node>, StoreError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = nodes.get(addr) {
            return Ok(node.clone());
        }
        let pool = pool::build(&self.node_url(addr), &self.pool_config)?;
        let node = Arc::new(Node::new(addr.to_owned(), pool));
        nodes.insert(addr.to_owned(), node.clone());
        Ok(node)
    }

    /// The slot map: the one known, refreshed first when an outage asked for
    /// it; fetched when there is none yet.
    pub(super) fn slot_map(&self) -> Result<Arc<SlotMap>, StoreError> {
        let current = self.map.read().unwrap_or_else(|p| p.into_inner()).clone();
        let due = {
            let refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
            refresh.1
                && refresh
                    .0
                    .is_none_or(|at| at.elapsed() >= OUTAGE_REFRESH_INTERVAL)
        };
        match current {
            Some(map) if !due => Ok(map),
            // A failed refresh after an outage keeps the map it had: the
            // node that went away may be the only one that failed.
            Some(map) => Ok(self.refresh().unwrap_or(map)),
            None => self.refresh(),
        }
    }

    /// Asks for a refresh at the next call (a node could not be reached: a
    /// failover may have moved its slots).
    fn outage_seen(&self) {
        self.refresh.lock().unwrap_or_else(|p| p.into_inner()).1 = true;
    }

    /// Fetches `CLUSTER SLOTS` from the first node that answers: the
    /// primaries known, then the seeds. On a fresh connection each, so a
    /// pool waiting on a dead node does not hold the refresh up.
    pub(super) fn refresh(&self) -> Result<Arc<SlotMap>, StoreError> {
        {
            let mut refresh = self.refresh.lock().unwrap_or_else(|p| p.into_inner());
            *refresh = (Some(Instant::now()), false);
        }
        let mut candidates: Vec<String> = match &*self.map.read().unwrap_or_else(|p| p.into_inner())
        {
            Some(map) => map.primaries.iter().map(|n| n.addr.clone()).collect(),
            None => Vec::new(),
        };
        for seed in &self.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut last = StoreError::Unavailable("no cluster node to ask".into());
        for addr in &candidates {
            match self
                .ask_slots(addr)
                .and_then(|reply| self.slot_map_from(addr, reply))
            {
                Ok(map) => {
                    let map = Arc::new(map);
                    *self.map.write().unwrap_or_else(|p| p.into_inner()) = Some(map.clone());
                    return Ok(map);
                }
                Err(e) => last = e,
            }
        }
        Err(match last {
            StoreError::Unavailable(m) => {
                StoreError::Unavailable(format!("no cluster node answered CLUSTER SLOTS: {m}"))
            }
            other => other,
        })
    }

    fn ask_slots(&self, addr: &str) -> Result<Value, StoreError> {
        let client = self.pool_config.tls.client(&self.node_url(addr))?;
        let mut conn = client.get_connection_with_timeout(self.pool_config.connect_timeout)?;
        conn.set_read_timeout(Some(self.pool_config.io_timeout))?;
        conn.set_write_timeout(Some(self.pool_config.io_timeout))?;
        let mut cmd = redis::cmd("CLUSTER");
        cmd.arg("SLOTS");
        Ok(cmd.query::<Value>(&mut conn)?)
    }

    /// The map a `CLUSTER SLOTS` reply from `asked` describes. A node with
    /// no endpoint (an empty or `?` host) is the node asked.
    fn slot_map_from(&self, asked: &str, reply: Value) -> Result<SlotMap, StoreError> {
        let bad = || StoreError::Redis(format!("CLUSTER SLOTS from {asked}: unexpected reply"));
        let ranges = match reply {
            Value::Array(ranges) => ranges,
            Value::ServerError(e) => return Err(super::server_error(e)),
            _ => return Err(bad()),
        };
        let asked_host = asked.rsplit_once(':').map_or(asked, |(h, _)| h);
        let mut owner = vec![u16::MAX; SLOTS];
        let mut primaries: Vec<Arc<Node>> = Vec::new();
        for range in ranges {
            let Value::Array(parts) = range else {
                return Err(bad());
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(primary))) =
                (parts.first(), parts.get(1), parts.get(2))
            else {
                return Err(bad());
            };
            let host = match primary.first() {
                Some(Value::BulkString(h)) => String::from_utf8_lossy(h).into_owned(),
                Some(Value::SimpleString(h)) => h.clone(),
                _ => return Err(bad()),
            };
            let Some(Value::Int(port)) = primary.get(1) else {
                return Err(bad());
            };
            let host = if host.is_empty() || host == "?" {
                asked_host.to_owned()
            } else {
                host
            };
            let addr = format!("{host}:{port}");
            let index = match primaries.iter().position(|n| n.addr == addr) {
                Some(i) => i,
                None => {
                    primaries.push(self.node(&addr)?);
                    primaries.len() - 1
                }
            };
            let (start, end) = (*start, *end);
            if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
                return Err(bad());
            }
            for slot in start..=end {
                owner[slot as usize] = index as u16;
            }
        }
        Ok(SlotMap { owner, primaries })
    }

    /// Round trips sent to every node routed to so far.
    pub(super) fn round_trips(&self) -> u64 {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        nodes.values().map(|n| n.round_trips()).sum()
    }

    /// Every node's counters and pool state, summed.
    pub(super) fn add_stats(&self, into: &mut RedisStats) {
        let nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        for node in nodes.values() {
            node.add_stats(into);
        }
    }

    /// How many primaries the slot map the store has names, without asking
    /// the cluster (`None` before the first call fetched one).
    pub(super) fn known_primaries(&self) -> Option<usize> {
        let map = self.map.read().unwrap_or_else(|p| p.into_inner());
        map.as_ref().map(|m| m.primaries.len())
    }

    /// The primaries, each once: for SCAN, INFO and the like.
    pub(super) fn primaries(&self) -> Result<Vec<Arc<Node>>, StoreError> {
        Ok(self.slot_map()?.primaries.clone())
    }

    /// A pipeline split by node: each node's part in one round trip, the
    /// replies back in the order of `cmds` (raw: an error reply is a
    /// `Value::ServerError`). A command about the server (TIME) goes to the
    /// node of the first command with a key. One node that cannot be
    /// reached fails the whole pipeline: it is a read, and a read with
    /// missing parts is not an answer.
    pub(super) fn pipeline(&self, cmds: &[&Cmd]) -> Result<Vec<Value>, StoreError> {
        self.route(cmds, None).into_iter().collect()
    }

    /// Script calls split by node, each node's part through its NOSCRIPT
    /// rounds (a script lost on one node is loaded there and only that
    /// node's calls that did not run are sent again). One outcome per call:
    /// a node that cannot be reached fails its calls only.
    pub(super) fn script_pipeline(
        &self,
        script: &LuaScript,
        cmds: &[&Cmd],
    ) -> Vec<Result<Value, StoreError>> {
        self.route(cmds, Some(script))
    }

    /// Sends every call to its node, all nodes' parts written before any
    /// reply is read (so the nodes work at once), then re-sends the calls
    /// redirected, round after round. Script calls (`script`) go through
    /// their node's NOSCRIPT rounds.
    fn route(&self, cmds: &[&Cmd], script: Option<&LuaScript>) -> Vec<Result<Value, StoreError>> {
        let mut outcomes: Vec<Result<Value, StoreError>> = vec![Ok(Value::Nil); cmds.len()];
        let keyed = cmds.iter().find_map(|c| routing_key(c)).map(key_slot);
        let mut pending: Vec<(usize, Target)> = cmds
            .iter()
            .enumerate()
            .map(|(i, c)| match routing_key(c) {
                Some(key) => (i, Target::Slot(key_slot(key))),
                None => (i, keyed.map_or(Target::Any, Target::Slot)),
            })
            .collect();
        for round in 0..=REDIRECT_ROUNDS {
            let map = match self.slot_map() {
                Ok(map) => map,
                Err(e) => {
                    for (i, _) in pending {
                        outcomes[i] = Err(e.clone());
                    }
                    return outcomes;
                }
            };
            let mut groups: Vec<Group> = Vec::new();
            for (i, target) in pending {
                let (node, asking) = match self.target_node(&map, &target) {
                    Ok(found) => found,
                    Err(e) => {
                        outcomes[i] = Err(e);
                        continue;
                    }
                };
                match groups
                    .iter_mut()
                    .find(|(n, a, _, _)| n.addr == node.addr && *a == asking)
                {
                    Some((_, _, indices, targets)) => {
                        indices.push(i);
                        targets.push(target);
                    }
                    None => groups.push((node, asking, vec![i], vec![target])),
                }
            }
            let sent: Vec<_> = groups
                .iter()
                .map(|(node, asking, indices, _)| {
                    node.send(None, indices.iter().map(|&i| cmds[i]), *asking)
                })
                .collect();
            let mut next = Vec::new();
            let (mut moved, mut later) = (false, false);
            for ((node, asking, indices, targets), sent) in groups.into_iter().zip(sent) {
                let first = sent.finish(&node).and_then(|replies| {
                    if replies.len() == indices.len() {
                        Ok(replies)
                    } else {
                        Err(StoreError::Redis(format!(
                            "{}: {} replies for {} calls",
                            node.addr,
                            replies.len(),
                            indices.len()
                        )))
                    }
                });
                let sent: Vec<Result<Value, StoreError>> = match script {
                    Some(script) => {
                        let part: Vec<&Cmd> = indices.iter().map(|&i| cmds[i]).collect();
                        node.count_script_calls(part.len());
                        node.noscript_rounds(script, &part, asking, first)
                    }
                    None => match first {
                        Ok(replies) => replies.into_iter().map(Ok).collect(),
                        Err(e) => vec![Err(e); indices.len()],
                    },
                };
                for ((i, target), outcome) in indices.into_iter().zip(targets).zip(sent) {
                    if matches!(&outcome, Err(e) if e.is_unavailable()) {
                        self.outage_seen();
                    }
                    match outcome.as_ref().ok().and_then(|v| redirect(v, &node.addr)) {
                        Some(Redirect::Moved(addr)) => {
                            moved = true;
                            next.push((i, Target::Moved(addr)));
                        }
                        Some(Redirect::Ask(addr)) => next.push((i, Target::Ask(addr))),
                        Some(Redirect::Later) => {
                            later = true;
                            next.push((i, target));
                        }
                        None => {}
                    }
                    outcomes[i] = outcome;
                }
            }
            if next.is_empty() {
                return outcomes;
            }
            if round == REDIRECT_ROUNDS {
                for (i, _) in next {
                    let reply = match &outcomes[i] {
                        Ok(Value::ServerError(e)) => e.to_string(),
                        _ => String::new(),
                    };
                    outcomes[i] = Err(StoreError::Unavailable(format!(
                        "the cluster still redirects after {REDIRECT_ROUNDS} tries: {reply}"
                    )));
                }
                return outcomes;
            }
            if moved {
                // The map is wrong; the calls go where MOVED said meanwhile.
                let _ = self.refresh();
            }
            if later {
                // A migration or a failover in progress: give it a moment.
                std::thread::sleep(Duration::from_millis(10 << round));
            }
            pending = next;
        }
        outcomes
    }

    fn target_node(&self, map: &SlotMap, target: &Target) -> Result<(Arc<Node>, bool), StoreError> {
        match target {
            Target::Slot(slot) => map
                .owner(*slot)
                .cloned()
                .map(|n| (n, false))
                .ok_or_else(|| {
                    self.outage_seen();
                    StoreError::Unavailable(format!("no cluster node serves slot {slot}"))
                }),
            Target::Any => map
                .primaries
                .first()
                .cloned()
                .map(|n| (n, false))
                .ok_or_else(|| StoreError::Unavailable("the cluster has no primary".into())),
            Target::Moved(addr) => Ok((self.node(addr)?, false)),
            Target::Ask(addr) => Ok((self.node(addr)?, true)),
        }
    }
}

/// What an error reply from `from` redirects to, if it does.
fn redirect(reply: &Value, from: &str) -> Option<Redirect> {
    let Value::ServerError(e) = reply else {
        return None;
    };
    let to = |e: &redis::ServerError| -> Option<String> {
        // "MOVED 3999 127.0.0.1:6381"; an endpoint Redis does not know is
        // ":6381" (the host of the node that answered).
        let addr = e.details()?.split_ascii_whitespace().nth(1)?;
        match addr.strip_prefix(':') {
            Some(port) => Some(format!("{}:{port}", from.rsplit_once(':')?.0)),
            None => Some(addr.to_owned()),
        }
    };
    match e.kind()? {
        ServerErrorKind::Moved => to(e).map(Redirect::Moved),
        ServerErrorKind::Ask => to(e).map(Redirect::Ask),
        ServerErrorKind::TryAgain | ServerErrorKind::ClusterDown => Some(Redirect::Later),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(url: &str) -> Result<Cluster, StoreError> {
        Cluster::open(url, &PoolConfig::default())
    }

    #[test]
    fn a_cluster_url_names_its_seeds_and_refuses_what_a_cluster_lacks() {
        let c = open("redis+cluster://127.0.0.1:7000,127.0.0.1:7001/").expect("two seeds");
        assert_eq!(c.seeds, ["127.0.0.1:7000", "127.0.0.1:7001"]);
        let c = open("redis+cluster://app:s3cret@10.0.0.1:6380").expect("with a user");
        assert_eq!(
            c.node_url("10.0.0.2:6380"),
            "redis://app:s3cret@10.0.0.2:6380/"
        );
        let c = open("rediss+cluster://app:s3cret@10.0.0.1:6380/").expect("over TLS");
        assert_eq!(
            c.node_url("10.0.0.2:6380"),
            "rediss://app:s3cret@10.0.0.2:6380/"
        );
        for bad in [
            "redis+cluster:///",
            "redis+cluster://127.0.0.1/",
            "redis+cluster://127.0.0.1:0/",
            "redis+cluster://127.0.0.1:7000,/",
            "redis+cluster://127.0.0.1:7000/3",
            "redis://127.0.0.1:7000/",
        ] {
            let e = open(bad).err().unwrap_or_else(|| panic!("{bad} was taken"));
            assert!(matches!(e, StoreError::InvalidInput(_)), "{bad}: {e:?}");
        }
        // A refused URL's message never carries the password.
        for bad in [
            "redis+cluster://app:s3cret@127.0.0.1/",
            "rediss+cluster://app:s3cret@127.0.0.1:7000/3",
        ] {
            let e = open(bad).err().unwrap_or_else(|| panic!("{bad} was taken"));
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
    }

    fn reply(wire: &str) -> Value {
        redis::parse_redis_value(wire.as_bytes()).expect("a RESP line")
    }

    #[test]
    fn redirects_name_the_node_to_ask() {
        let from = "127.0.0.1:7000";
        match redirect(&reply("-MOVED 3999 127.0.0.1:7002\r\n"), from) {
            Some(Redirect::Moved(a)) => assert_eq!(a, "127.0.0.1:7002"),
            _ => panic!("not a MOVED"),
        }
        match redirect(&reply("-ASK 3999 :7001\r\n"), from) {
            Some(Redirect::Ask(a)) => assert_eq!(a, "127.0.0.1:7001"),
            _ => panic!("not an ASK"),
        }
        assert!(matches!(
            redirect(
                &reply("-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
                from
            ),
            Some(Redirect::Later)
        ));
        assert!(redirect(&reply("-ERR bad ttl\r\n"), from).is_none());
        assert!(redirect(&reply(":1\r\n"), from).is_none());
    }
}
