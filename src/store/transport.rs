//! The seam between the store and Redis: every call the store makes goes
//! through here, to one standalone node or to a cluster's nodes by hash
//! slot (`cluster`), and the replies are decoded here after the connection
//! is done with them. The rest of the store does not know which backend it
//! runs on.

use super::*;
use cluster::Cluster;
use node::Node;

/// Where the store's calls go: chosen by the URL's scheme.
pub(crate) enum Transport {
    Standalone(Arc<Node>),
    Cluster(Box<Cluster>),
}

impl Transport {
    pub(super) fn round_trips(&self) -> u64 {
        match self {
            Transport::Standalone(node) => node.round_trips(),
            Transport::Cluster(c) => c.round_trips(),
        }
    }

    /// What the connections did, summed over the nodes.
    pub(super) fn redis_stats(&self) -> RedisStats {
        let mut stats = RedisStats::default();
        match self {
            Transport::Standalone(node) => node.add_stats(&mut stats),
            Transport::Cluster(c) => c.add_stats(&mut stats),
        }
        stats
    }

    /// `redis+cluster://...` (`rediss+cluster://` over TLS) is a cluster;
    /// anything else a standalone server (`redis://`, `rediss://`,
    /// `unix://`). Nothing is connected yet.
    pub(crate) fn open(url: &str, config: &PoolConfig) -> Result<Transport, StoreError> {
        if crate::redis_url::is_cluster(url) {
            return Ok(Transport::Cluster(Box::new(Cluster::open(url, config)?)));
        }
        Ok(Transport::Standalone(Arc::new(Node::new(
            String::new(),
            pool::build(url, config)?,
        ))))
    }
}

/// Which backend a store runs on, for status pages.
#[derive(Debug, Clone, Serialize)]
pub struct Backend {
    /// `standalone` or `cluster`.
    pub kind: &'static str,
    /// Primaries serving the keyspace: 1 standalone; on a cluster as the
    /// store's slot map says, `None` before the store has fetched one.
    pub nodes: Option<usize>,
}

impl FeatureStore {
    /// The backend, and on a cluster how many primaries its slot map has.
    /// Never a call to Redis: status pages read it on every refresh.
    pub fn backend(&self) -> Backend {
        match &*self.transport {
            Transport::Standalone(_) => Backend {
                kind: "standalone",
                nodes: Some(1),
            },
            Transport::Cluster(c) => Backend {
                kind: "cluster",
                nodes: c.known_primaries(),
            },
        }
    }

    /// Runs a pipeline: on one connection standalone (one round trip), on
    /// a cluster split by node (one round trip per node), MOVED and ASK
    /// followed per command. On a cluster every reply comes back, errors as
    /// values, as with `ignore_errors` (every pipeline of the store is
    /// one). The reply is decoded after the connection is done with it
    /// (see `error::is_transport_error`).
    pub(crate) fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let reply: Value = match &*self.transport {
            Transport::Standalone(node) => node.with_conn(|c| c.run(|c| pipe.query(c)))?,
            Transport::Cluster(c) => {
                let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
                Value::Array(c.pipeline(&cmds)?)
            }
        };
        decode("pipeline", reply)
    }

    /// One command, routed by its key (any node for a command without
    /// one); an error reply is an `Err`.
    pub(super) fn query(&self, cmd: &Cmd) -> Result<Value, StoreError> {
        match &*self.transport {
            Transport::Standalone(node) => node.query(cmd),
            Transport::Cluster(c) => match c.pipeline(&[cmd])?.pop() {
                Some(Value::ServerError(e)) => Err(server_error(e)),
                Some(reply) => Ok(reply),
                None => Err(StoreError::Redis("no reply".into())),
            },
        }
    }

    /// `cmd` on every primary (the one server standalone); an error reply
    /// from any is an `Err`.
    pub(super) fn query_each_node(&self, cmd: &Cmd) -> Result<Vec<Value>, StoreError> {
        self.pipeline_on_each_node(std::slice::from_ref(cmd))?
            .into_iter()
            .map(|mut replies| match replies.pop() {
                Some(reply) => ok_reply(reply),
                None => Err(StoreError::Redis("no reply".into())),
            })
            .collect()
    }

    /// The same commands on every primary (the one server standalone) in
    /// one round trip: written to every node before any reply is read. The
    /// replies raw, per node.
    pub(super) fn pipeline_on_each_node(
        &self,
        cmds: &[Cmd],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let nodes = self.nodes()?;
        let sent: Vec<_> = nodes
            .iter()
            .map(|node| node.send(None, cmds.iter(), false))
            .collect();
        // Every round trip is read, even after one failed.
        let replies: Vec<_> = nodes
            .iter()
            .zip(sent)
            .map(|(node, sent)| sent.finish(node))
            .collect();
        replies.into_iter().collect()
    }

    /// The standalone node, or a cluster's primaries.
    pub(super) fn nodes(&self) -> Result<Vec<Arc<Node>>, StoreError> {
        match &*self.transport {
            Transport::Standalone(node) => Ok(vec![node.clone()]),
            Transport::Cluster(c) => c.primaries(),
        }
    }

    /// `SCRIPT LOAD`s every script on every node (the one server, or each
    /// primary), so `redis-cli EVALSHA` works by hand on any of them. The
    /// SHA1 each node reports must be the script's own.
    pub fn load_scripts(&self) -> Result<Vec<(&'static str, String)>, StoreError> {
        let mut loaded = Vec::new();
        for node in self.nodes()? {
            for script in crate::scripts::all() {
                let mut cmd = redis::cmd("SCRIPT");
                cmd.arg("LOAD").arg(script.source);
                let sha: String = decode("SCRIPT LOAD", node.query(&cmd)?)?;
                if sha != script.sha() {
                    return Err(StoreError::Redis(format!(
                        "{}: Redis reports SHA1 {sha}, expected {}",
                        script.name,
                        script.sha()
                    )));
                }
                loaded.push((script.name, sha));
            }
        }
        Ok(loaded)
    }

    /// Calls `each` with batches of keys under the prefix until it breaks or
    /// every node's SCAN cursor returns to 0 (a cluster is scanned one
    /// primary after the other). Keys are bytes: Redis allows any, and one
    /// key another tool named with bytes that are not UTF-8 must not stop a
    /// count or a reset. Keys that do not start with the prefix (impossible
    /// with an escaped pattern, checked anyway) are dropped.
    pub(super) fn scan_keys(
        &self,
        mut each: impl FnMut(Vec<Vec<u8>>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let pattern = validate::scan_pattern(&self.config.key_prefix);
        let prefix = self.config.key_prefix.as_bytes();
        for node in self.nodes()? {
            let mut cursor: u64 = 0;
            loop {
                let mut cmd = redis::cmd("SCAN");
                cmd.arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
                let (next, keys): (u64, Vec<Vec<u8>>) = decode("SCAN", node.query(&cmd)?)?;
                let keys: Vec<Vec<u8>> =
                    keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
                if each(keys).is_break() {
                    return Ok(());
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(())
    }

    /// One SCAN page of node `node` (in `nodes` order) from `cursor`:
    /// `(next cursor, keys)`, and how many nodes there are.
    pub(super) fn scan_page(
        &self,
        node: usize,
        cursor: u64,
        count: usize,
    ) -> Result<(u64, Vec<Vec<u8>>, usize), StoreError> {
        let nodes = self.nodes()?;
        let Some(at) = nodes.get(node) else {
            return Ok((0, Vec::new(), nodes.len()));
        };
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor).arg("COUNT").arg(count.max(1));
        let (next, keys): (u64, Vec<Vec<u8>>) = decode("SCAN", at.query(&cmd)?)?;
        Ok((next, keys, nodes.len()))
    }

    /// Whether calls go to a cluster, where a call's keys must share a slot.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(&*self.transport, Transport::Cluster(_))
    }

    /// The slot each key lives in on a cluster; `None` standalone, where
    /// calls may mix any keys.
    pub(super) fn slot_of(&self, key: &[u8]) -> Option<u16> {
        match &*self.transport {
            Transport::Standalone(_) => None,
            Transport::Cluster(_) => Some(slots::key_slot(key)),
        }
    }

    /// Script calls in one pipeline (one per node on a cluster), one
    /// outcome per call: its reply, or its error. Calls that failed with
    /// NOSCRIPT are re-sent after loading the script on their node
    /// (`node::Node::script_pipeline`); calls that ran are never sent
    /// again.
    pub(super) fn run_script_pipeline(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Vec<Result<Value, StoreError>> {
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let outcomes = match &*self.transport {
            Transport::Standalone(node) => node.script_pipeline(script, &cmds, false),
            Transport::Cluster(c) => c.script_pipeline(script, &cmds),
        };
        outcomes
            .into_iter()
            .map(|o| o.and_then(script_outcome))
            .collect()
    }

    /// Runs one command on the entity at `key`; a WRONGTYPE reply becomes
    /// `WrongType` naming what the key holds.
    pub(super) fn query_key(&self, key: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        self.query(cmd).map_err(|e| self.name_wrong_type(key, e))
    }

    /// A WRONGTYPE error becomes `WrongType`, with the type from `TYPE`
    /// (one more round trip, on this error path only).
    pub(crate) fn name_wrong_type(&self, key: &str, e: StoreError) -> StoreError {
        match &e {
            // redis-rs prints the error code first, quoted: "WRONGTYPE": ...
            StoreError::Redis(m) if m.trim_start_matches('"').starts_with("WRONGTYPE") => {
                let mut cmd = redis::cmd("TYPE");
                cmd.arg(key);
                let kind = self
                    .query(&cmd)
                    .and_then(|v| decode::<String>("TYPE", v))
                    .unwrap_or_else(|_| "value of another type".into());
                StoreError::WrongType {
                    key: key.to_owned(),
                    kind,
                }
            }
            _ => e,
        }
    }

    /// Runs one script call; on NOSCRIPT (after `SCRIPT FLUSH`, a restart or
    /// a failover) loads the script on the node and calls again.
    pub(super) fn eval_script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        let reply = match &*self.transport {
            Transport::Standalone(node) => node.eval(script, cmd)?,
            Transport::Cluster(c) => match c.script_pipeline(script, &[cmd]).pop() {
                Some(outcome) => outcome.and_then(script_outcome)?,
                None => return Err(StoreError::Redis(format!("{}: no reply", script.name))),
            },
        };
        decode(script.name, reply)
    }
}

pub(super) const NOSCRIPT: &str = "NOSCRIPT";

/// One script call's reply: its value, or its error reply.
pub(super) fn script_outcome(reply: Value) -> Result<Value, StoreError> {
    match reply {
        Value::ServerError(e) if e.kind() == Some(ServerErrorKind::NoScript) => {
            Err(StoreError::Redis(NOSCRIPT.into()))
        }
        // Through the one conversion, so a LOADING or MASTERDOWN reply to a
        // pipelined call is an outage to wait out, as it is for a lone one.
        Value::ServerError(e) => Err(server_error(e)),
        other => Ok(other),
    }
}

#[cfg(test)]
fn is_noscript(outcome: &Result<Value, StoreError>) -> bool {
    matches!(outcome, Err(StoreError::Redis(m)) if m == NOSCRIPT)
}

pub(super) fn hmget<N: AsRef<str>>(key: &str, names: &[N]) -> Cmd {
    let mut cmd = redis::cmd("HMGET");
    cmd.arg(key);
    for n in names {
        cmd.arg(n.as_ref());
    }
    cmd
}

/// A reply decoded after the connection is done with it: a reply that does
/// not fit is an error about that reply, never an outage.
pub(super) fn decode<T: redis::FromRedisValue>(what: &str, reply: Value) -> Result<T, StoreError> {
    redis::from_redis_value(reply)
        .map_err(|e| StoreError::Redis(format!("{what}: unexpected reply: {e}")))
}

/// An `HMGET` reply: one value (any bytes) or nil per name.
pub(crate) fn decode_values(what: &str, reply: Value) -> Result<FeatureRow, StoreError> {
    let values: Vec<Option<Vec<u8>>> = decode(what, reply)?;
    Ok(values.into_iter().map(|v| v.map(ReadValue::from)).collect())
}

/// A raw reply, its error reply an `Err` (through the one conversion, so
/// LOADING is an outage and a refusal is a refusal).
pub(super) fn ok_reply(reply: Value) -> Result<Value, StoreError> {
    match reply {
        Value::ServerError(e) => Err(server_error(e)),
        other => Ok(other),
    }
}

/// A pipelined command's own error reply (the others in the pipeline ran).
pub(crate) fn server_error(e: redis::ServerError) -> StoreError {
    StoreError::from(redis::RedisError::from(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply as Redis sends it on the wire.
    fn server_reply(wire: &str) -> Value {
        redis::parse_redis_value(wire.as_bytes()).expect("a RESP error line")
    }

    #[test]
    fn a_script_call_refused_while_redis_loads_is_an_outage_not_a_refusal() {
        let loading = server_reply("-LOADING Valkey is loading the dataset in memory\r\n");
        assert!(script_outcome(loading)
            .expect_err("an error")
            .is_unavailable());
        let refused = server_reply("-ERR bad ttl\r\n");
        let e = script_outcome(refused).expect_err("an error");
        assert!(matches!(e, StoreError::Redis(_)), "{e:?}");
        let noscript = server_reply("-NOSCRIPT No matching script\r\n");
        assert!(is_noscript(&script_outcome(noscript)));
    }
}
