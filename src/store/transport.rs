//! The one module that talks to Redis: connections from the pool,
//! pipelines, script calls with NOSCRIPT recovery, and the decoding of
//! replies after the connection is done with them. A cluster backend
//! changes this module, and the call grouping in `write`.

use super::*;

impl FeatureStore {
    /// Runs a pipeline on one connection: one round trip. A cluster backend
    /// splits it by slot here. The reply is decoded after the connection is
    /// done with it (see `error::is_transport_error`).
    pub(crate) fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipe: &Pipeline,
    ) -> Result<T, StoreError> {
        let reply: Value = self.with_conn(|c| c.run(|c| pipe.query(c)))?;
        decode("pipeline", reply)
    }

    /// Calls `each` with batches of keys under the prefix until it breaks or
    /// the SCAN cursor returns to 0. Keys are bytes: Redis allows any, and
    /// one key another tool named with bytes that are not UTF-8 must not
    /// stop a count or a reset. Keys that do not start with the prefix
    /// (impossible with an escaped pattern, checked anyway) are dropped.
    pub(super) fn scan_keys(
        &self,
        mut each: impl FnMut(Vec<Vec<u8>>) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let pattern = validate::scan_pattern(&self.config.key_prefix);
        let prefix = self.config.key_prefix.as_bytes();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT);
            let reply: Value = self.with_conn(|c| c.run(|c| cmd.query(c)))?;
            let (next, keys): (u64, Vec<Vec<u8>>) = decode("SCAN", reply)?;
            let keys: Vec<Vec<u8>> = keys.into_iter().filter(|k| k.starts_with(prefix)).collect();
            if each(keys).is_break() || next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    /// Runs `op` on a pooled connection; when the connection fails under it
    /// (a Redis restart leaves every pooled connection stale), runs it once
    /// more on a fresh one. Every operation of the store is idempotent.
    pub(super) fn with_conn<T>(
        &self,
        mut op: impl FnMut(&mut Conn) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.pool.get()?;
        match op(&mut conn) {
            Err(e) if e.is_unavailable() => {
                let failed_at = Instant::now();
                drop(conn);
                let mut live = pool::checkout_live(&self.pool, failed_at)?;
                op(&mut live)
            }
            other => other,
        }
    }

    /// One pipeline of `EVALSHA`s, one reply per command. Calls that failed
    /// with NOSCRIPT (after `SCRIPT FLUSH`, a restart or a failover: nothing
    /// ran for them) are re-sent after loading the script, in the same
    /// pipeline as the `SCRIPT LOAD`, round after round while Redis keeps
    /// answering: a script flushed again between rounds (a flush loop, a
    /// failover storm) only costs another round. Rounds stop when a round
    /// fails to reach Redis, or after `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS`
    /// rounds in a row in which no call ran (a Redis that refuses to keep
    /// the script). Calls that ran are never sent again.
    pub(super) fn run_script_pipeline(
        &self,
        script: &LuaScript,
        pipe: &Pipeline,
    ) -> Vec<Result<Value, StoreError>> {
        let len = pipe.cmd_iter().count();
        let replies: Vec<Value> = match self.run_pipeline(pipe) {
            Ok(replies) => replies,
            Err(e) => return vec![Err(e); len],
        };
        let mut outcomes = Vec::with_capacity(len);
        let mut retry = Vec::new();
        for (i, reply) in replies.into_iter().enumerate() {
            outcomes.push(script_outcome(reply));
            if is_noscript(&outcomes[i]) {
                retry.push(i);
            }
        }
        let cmds: Vec<&Cmd> = pipe.cmd_iter().collect();
        let mut idle_rounds = 0;
        while !retry.is_empty() && idle_rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS {
            let mut again = redis::pipe();
            again.ignore_errors();
            again.cmd("SCRIPT").arg("LOAD").arg(script.source);
            for &i in &retry {
                again.add_command(cmds[i].clone());
            }
            let replies: Vec<Value> = match self.run_pipeline(&again) {
                Ok(replies) => replies,
                Err(e) => {
                    for &i in &retry {
                        outcomes[i] = Err(e.clone());
                    }
                    return outcomes;
                }
            };
            let mut replies = replies.into_iter();
            if let Some(Value::ServerError(e)) = replies.next() {
                // SCRIPT LOAD refused (scripting disabled, an ACL): no round
                // can succeed.
                let error = StoreError::Redis(format!("{}: SCRIPT LOAD: {e}", script.name));
                for &i in &retry {
                    outcomes[i] = Err(error.clone());
                }
                return outcomes;
            }
            let before = retry.len();
            let mut still = Vec::new();
            for (&i, reply) in retry.iter().zip(replies) {
                outcomes[i] = script_outcome(reply);
                if is_noscript(&outcomes[i]) {
                    still.push(i);
                }
            }
            idle_rounds = if still.len() < before {
                0
            } else {
                idle_rounds + 1
            };
            retry = still;
        }
        outcomes
    }

    /// Runs one command on the entity at `key`; a WRONGTYPE reply becomes
    /// `WrongType` naming what the key holds.
    pub(super) fn query_key(&self, key: &str, cmd: &Cmd) -> Result<Value, StoreError> {
        self.with_conn(|c| c.run(|c| cmd.query(c)))
            .map_err(|e| self.name_wrong_type(key, e))
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
                    .with_conn(|c| c.run(|c| cmd.query::<Value>(c)))
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
    /// a failover) loads the script on the same connection and calls again,
    /// up to `NOSCRIPT_ROUNDS_WITHOUT_PROGRESS` times.
    pub(super) fn eval_script<T: redis::FromRedisValue>(
        &self,
        script: &LuaScript,
        cmd: &Cmd,
    ) -> Result<T, StoreError> {
        self.with_conn(|c| {
            c.run(|c| {
                // A script flushed again between the load and the call (a
                // flush loop, back-to-back failovers) costs another round.
                let mut rounds = 0;
                loop {
                    match cmd.query(c) {
                        Err(e)
                            if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript)
                                && rounds < NOSCRIPT_ROUNDS_WITHOUT_PROGRESS =>
                        {
                            script.load(c)?;
                            rounds += 1;
                        }
                        other => return other,
                    }
                }
            })
        })
    }
}

/// How many rounds in a row `run_script_pipeline` re-loads the script
/// without any call running before it gives up on those calls. A flush
/// between the `SCRIPT LOAD` and the calls of the same pipeline is rare; a
/// Redis where eight rounds in a row lose the script is not keeping it.
pub(super) const NOSCRIPT_ROUNDS_WITHOUT_PROGRESS: u32 = 8;

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

pub(super) fn is_noscript(outcome: &Result<Value, StoreError>) -> bool {
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
