//! The Lua scripts in `lua/`, embedded at build time, with their SHA1s and
//! the argument layouts the store sends them.
//!
//! `redis::Script` computes each SHA1; the store sends `EVALSHA` itself, for
//! single calls and pipelines alike, and on NOSCRIPT loads the script and
//! re-sends only what did not run (`store::eval_script`,
//! `store::run_script_pipeline`).

use std::sync::LazyLock;

use redis::{Cmd, ConnectionLike, RedisResult, ToRedisArgs};

/// One embedded script.
pub struct LuaScript {
    /// What the script is called in `lua/` (without `.lua`) and in the CLI.
    pub name: &'static str,
    pub source: &'static str,
    script: redis::Script,
}

impl LuaScript {
    fn new(name: &'static str, source: &'static str) -> Self {
        LuaScript {
            name,
            source,
            script: redis::Script::new(source),
        }
    }

    /// The SHA1 Redis knows the script by (`EVALSHA <sha> ...`).
    pub fn sha(&self) -> &str {
        self.script.get_hash()
    }

    /// The contract: the header comment between `--[[` and `]]`.
    pub fn contract(&self) -> &'static str {
        let start = self.source.find("--[[").map(|i| i + 4).unwrap_or(0);
        let end = self.source[start..]
            .find("]]")
            .map(|i| start + i)
            .unwrap_or(self.source.len());
        self.source[start..end].trim_matches('\n')
    }

    /// `SCRIPT LOAD`s the source; returns the SHA1 Redis reports.
    pub fn load(&self, conn: &mut dyn ConnectionLike) -> RedisResult<String> {
        redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.source)
            .query(conn)
    }

    /// An `EVALSHA <sha> 1 <key>` command, ready for its ARGV.
    pub fn evalsha(&self, key: &str) -> Cmd {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(self.sha()).arg(1).arg(key);
        cmd
    }
}

pub static WRITE_BATCH_ROW: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "write_batch_row",
        include_str!("../lua/write_batch_row.lua"),
    )
});
pub static WRITE_STREAMING: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "write_streaming",
        include_str!("../lua/write_streaming.lua"),
    )
});
pub static READ_FRESH: LazyLock<LuaScript> =
    LazyLock::new(|| LuaScript::new("read_fresh", include_str!("../lua/read_fresh.lua")));

/// Every script, in the order the CLI prints them.
pub fn all() -> [&'static LuaScript; 3] {
    [&WRITE_BATCH_ROW, &WRITE_STREAMING, &READ_FRESH]
}

/// Appends `write_batch_row`'s ARGV: ttl, retract count, retracted names,
/// field/value pairs.
pub fn batch_row_args<'a, V: ToRedisArgs>(
    cmd: &mut Cmd,
    ttl_seconds: u64,
    retract: impl ExactSizeIterator<Item = &'a str>,
    pairs: impl Iterator<Item = (&'a str, V)>,
) {
    cmd.arg(ttl_seconds).arg(retract.len());
    for name in retract {
        cmd.arg(name);
    }
    for (name, value) in pairs {
        cmd.arg(name).arg(value);
    }
}

/// Appends `write_streaming`'s ARGV: field ttl, batch ttl, pairs.
pub fn streaming_args<'a, V: ToRedisArgs>(
    cmd: &mut Cmd,
    field_ttl_seconds: u64,
    batch_ttl_seconds: u64,
    pairs: impl Iterator<Item = (&'a str, V)>,
) {
    cmd.arg(field_ttl_seconds).arg(batch_ttl_seconds);
    for (name, value) in pairs {
        cmd.arg(name).arg(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_script_has_a_contract_header() {
        for s in all() {
            let c = s.contract();
            assert!(c.contains("KEYS[1]"), "{}", s.name);
            assert!(c.contains("ARGV"), "{}", s.name);
            assert!(c.contains("Reply"), "{}", s.name);
            assert!(c.contains("redis-cli EVALSHA"), "{}", s.name);
            assert!(s.source.starts_with("#!lua"), "{}", s.name);
            assert_eq!(s.sha().len(), 40);
        }
    }

    #[test]
    fn read_fresh_is_declared_read_only() {
        assert!(READ_FRESH.source.starts_with("#!lua flags=no-writes"));
    }
}
