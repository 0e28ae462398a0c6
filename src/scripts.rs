//! The Lua scripts in `lua/`, embedded at build time, with their SHA1s and
//! the argument layouts the store sends them.
//!
//! `redis::Script` computes each SHA1; the store sends `EVALSHA` itself, for
//! single calls and pipelines alike, and on NOSCRIPT loads the script and
//! re-sends only what did not run (`store::eval_script`,
//! `store::run_script_pipeline`).

use std::borrow::Cow;
use std::sync::LazyLock;

use redis::{Cmd, ConnectionLike, RedisResult, Value};

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

    /// `EVALSHA <sha> <n> <keys..> <head..> <each entity's args..>`: one
    /// call writing every entity in `entities`.
    pub fn call<'e, 'a: 'e>(
        &self,
        head: &[u64],
        entities: impl Iterator<Item = &'e EntityArgs<'a>> + Clone,
    ) -> Cmd {
        // Sized once for what follows (at most: a number is at most 20
        // digits), instead of grown argument by argument.
        let (mut args, mut bytes) = (3 + head.len(), 7 + 40 + 20 + 20 * head.len());
        let mut keys = 0;
        for e in entities.clone() {
            let (a, b) = e.cost();
            args += a;
            bytes += b;
            keys += e.segments;
        }
        let mut cmd = Cmd::with_capacity(args, bytes);
        cmd.arg("EVALSHA").arg(self.sha()).arg(keys);
        for e in entities.clone() {
            for _ in 0..e.segments {
                cmd.arg(&e.key);
            }
        }
        for h in head {
            cmd.arg(*h);
        }
        for e in entities {
            for a in &e.args {
                cmd.arg(a.as_ref());
            }
        }
        cmd
    }
}

pub static WRITE_BATCH_ROWS: LazyLock<LuaScript> = LazyLock::new(|| {
    LuaScript::new(
        "write_batch_rows",
        include_str!("../lua/write_batch_rows.lua"),
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
    [&WRITE_BATCH_ROWS, &WRITE_STREAMING, &READ_FRESH]
}

/// The most features one entity's part of a write call may set, and retract
/// (the scripts refuse more: Lua's `unpack` has a stack limit).
pub const MAX_SET_PER_ENTITY: usize = 3000;
pub const MAX_RETRACT_PER_ENTITY: usize = 5000;

/// The event-time head of one entity's part of a write call: T, M, V.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dated<'a> {
    pub event_time_ms: u64,
    pub dating: crate::store::views::Dating,
    pub view: &'a str,
}

/// A count argument: "0" to "255" borrowed from a table made once, not
/// formatted anew for every row.
fn count_arg(n: usize) -> Cow<'static, str> {
    static SMALL: LazyLock<Box<[String]>> =
        LazyLock::new(|| (0..=255u32).map(|n| n.to_string()).collect());
    match SMALL.get(n) {
        Some(text) => Cow::Borrowed(text.as_str()),
        None => Cow::Owned(n.to_string()),
    }
}

impl<'a> Dated<'a> {
    fn push_to(self, args: &mut Vec<Cow<'a, str>>) {
        args.push(Cow::Owned(self.event_time_ms.to_string()));
        args.push(Cow::Borrowed(self.dating.code()));
        args.push(Cow::Borrowed(self.view));
    }
}

/// One entity's part of a multi-entity write call: its key and its ARGV,
/// laid out as the script's header says. An entity whose features span
/// several views (or a view and none) is written as several segments, one
/// per view, each with its own dating: its key is repeated once per segment
/// in the same call, so the entity's write stays one atomic script call.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityArgs<'a> {
    pub key: String,
    pub args: Vec<Cow<'a, str>>,
    /// How many segments (KEYS entries, and reply pairs) it holds.
    pub segments: usize,
}

impl<'a> EntityArgs<'a> {
    pub fn new(key: String) -> Self {
        EntityArgs {
            key,
            args: Vec::new(),
            segments: 0,
        }
    }

    /// A `write_batch_rows` segment: T, M, V, R, S, R names, S pairs.
    pub fn push_batch(
        &mut self,
        dated: Dated<'a>,
        retract: impl ExactSizeIterator<Item = &'a str>,
        set: impl ExactSizeIterator<Item = (&'a str, Cow<'a, str>)>,
    ) {
        self.args.reserve(5 + retract.len() + 2 * set.len());
        dated.push_to(&mut self.args);
        self.args.push(count_arg(retract.len()));
        self.args.push(count_arg(set.len()));
        self.args.extend(retract.map(Cow::Borrowed));
        for (name, value) in set {
            self.args.push(Cow::Borrowed(name));
            self.args.push(value);
        }
        self.segments += 1;
    }

    /// A `write_streaming` segment: T, M, V, S, S pairs.
    pub fn push_streaming(
        &mut self,
        dated: Dated<'a>,
        set: impl ExactSizeIterator<Item = (&'a str, Cow<'a, str>)>,
    ) {
        self.args.reserve(4 + 2 * set.len());
        dated.push_to(&mut self.args);
        self.args.push(count_arg(set.len()));
        for (name, value) in set {
            self.args.push(Cow::Borrowed(name));
            self.args.push(value);
        }
        self.segments += 1;
    }

    /// What this entity adds to a call: (arguments, bytes), its keys
    /// included. What `store::split_calls` budgets.
    pub fn cost(&self) -> (usize, usize) {
        let bytes =
            self.args.iter().map(|a| a.len()).sum::<usize>() + self.key.len() * self.segments;
        (self.args.len() + self.segments, bytes)
    }
}

/// What a write script (`write_batch_rows`, `write_streaming`) did to one
/// entity, its segments' replies summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Its features written, and those left alone as stale (the stored
    /// event time was the same or newer).
    Ok {
        written: usize,
        skipped_stale: usize,
    },
    /// Its key holds another type than a hash: nothing was written to it.
    NotAHash,
}

/// Decodes a write script's reply: two integers per segment (features
/// written, skipped as stale; -1, 0 for a key that is not a hash), for the
/// entities of one call in order, given each one's segment count. `Err`
/// names what did not fit (a reply another version of the script, or
/// something else, sent).
pub fn decode_written(
    script: &LuaScript,
    reply: Value,
    segments: impl Iterator<Item = usize>,
) -> Result<Vec<Written>, String> {
    let codes: Vec<i64> = redis::from_redis_value(reply)
        .map_err(|e| format!("{}: unexpected reply: {e}", script.name))?;
    let mut out = Vec::new();
    let mut at = 0;
    for n in segments {
        let Some(mine) = codes.get(at..at + 2 * n) else {
            return Err(format!("{}: a reply too short", script.name));
        };
        at += 2 * n;
        out.push(if mine.iter().step_by(2).any(|w| *w < 0) {
            Written::NotAHash
        } else {
            let sum = |from: usize| {
                mine.iter()
                    .skip(from)
                    .step_by(2)
                    .map(|c| (*c).max(0) as usize)
                    .sum()
            };
            Written::Ok {
                written: sum(0),
                skipped_stale: sum(1),
            }
        });
    }
    if at != codes.len() {
        return Err(format!("{}: a reply too long", script.name));
    }
    Ok(out)
}

/// `read_fresh`'s reply, its bytes as Redis sent them.
#[derive(Debug, Clone, PartialEq)]
pub struct FreshReply {
    /// Seconds left on the key; -1 none; -2 no such key.
    pub key_ttl: i64,
    pub names: Vec<Vec<u8>>,
    pub values: Vec<Option<Vec<u8>>>,
    /// Per name: seconds left; -1 no field TTL; -2 missing.
    pub field_ttls: Vec<i64>,
    /// Redis's clock (`TIME`), epoch ms.
    pub now_ms: u64,
}

impl FreshReply {
    /// `EVALSHA read_fresh 1 <key> <fields..>`: any fields, event-time
    /// fields included; none reads the whole hash.
    pub fn call<F: AsRef<str>>(key: &str, fields: impl Iterator<Item = F>) -> Cmd {
        let mut cmd = READ_FRESH.evalsha(key);
        for f in fields {
            cmd.arg(f.as_ref());
        }
        cmd
    }

    pub fn decode(reply: Value) -> Result<FreshReply, String> {
        type Wire = (i64, Vec<Vec<u8>>, Vec<Option<Vec<u8>>>, Vec<i64>, u64);
        let (key_ttl, names, values, field_ttls, now_ms): Wire = redis::from_redis_value(reply)
            .map_err(|e| format!("read_fresh: unexpected reply: {e}"))?;
        if names.len() != values.len() || names.len() != field_ttls.len() {
            return Err("read_fresh: reply arrays differ in length".into());
        }
        Ok(FreshReply {
            key_ttl,
            names,
            values,
            field_ttls,
            now_ms,
        })
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

    #[test]
    fn a_call_lays_out_keys_head_and_each_segment_as_the_contract_says() {
        use crate::store::views::Dating;
        let at = |dating, view| Dated {
            event_time_ms: 1_716_998_413_541,
            dating,
            view,
        };
        let mut narrow = EntityArgs::new("fs:user:u1".into());
        narrow.push_batch(
            at(Dating::WholeView, "profile"),
            ["a", "b"].into_iter(),
            [("x", Cow::Borrowed("1")), ("y", Cow::Owned("2.5".into()))].into_iter(),
        );
        narrow.push_batch(at(Dating::PerFeature, "-"), [].into_iter(), [].into_iter());
        // Past the table of small counts.
        let names: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
        let mut wide = EntityArgs::new("fs:user:u2".into());
        wide.push_streaming(
            at(Dating::PartOfView, "activity"),
            names.iter().map(|n| (n.as_str(), Cow::Borrowed("v"))),
        );

        let got = WRITE_BATCH_ROWS.call(&[86_400, 300], [&narrow, &wide].into_iter());
        let t = "1716998413541";
        let mut want: Vec<String> = ["EVALSHA", WRITE_BATCH_ROWS.sha(), "3"]
            .into_iter()
            .chain(["fs:user:u1", "fs:user:u1", "fs:user:u2", "86400", "300"])
            .chain([t, "2", "profile", "2", "2", "a", "b", "x", "1", "y", "2.5"])
            .chain([t, "0", "-", "0", "0"])
            .chain([t, "1", "activity", "300"])
            .map(String::from)
            .collect();
        for n in &names {
            want.extend([n.clone(), "v".into()]);
        }
        let mut expected = redis::cmd(&want[0]);
        for a in &want[1..] {
            expected.arg(a);
        }
        assert_eq!(got.get_packed_command(), expected.get_packed_command());
        // 16 arguments and 2 keys; 48 bytes of arguments and 2 keys of 10.
        assert_eq!(narrow.cost(), (16 + 2, 48 + 2 * 10));
    }

    #[test]
    fn count_arguments_are_their_decimal_text() {
        for n in (0..1000).chain([3000, 5000, usize::MAX]) {
            assert_eq!(count_arg(n), n.to_string());
        }
    }

    #[test]
    fn a_write_reply_is_summed_per_entity_over_its_segments() {
        let reply = Value::Array([2, 1, 3, 0, -1, 0, 0, 4].map(Value::Int).to_vec());
        let got = decode_written(&WRITE_BATCH_ROWS, reply, [2, 1, 1].into_iter());
        assert_eq!(
            got,
            Ok(vec![
                Written::Ok {
                    written: 5,
                    skipped_stale: 1
                },
                Written::NotAHash,
                Written::Ok {
                    written: 0,
                    skipped_stale: 4
                },
            ])
        );
        let short = Value::Array(vec![Value::Int(1)]);
        assert!(decode_written(&WRITE_BATCH_ROWS, short, [1].into_iter()).is_err());
        let long = Value::Array([1, 0, 1, 0].map(Value::Int).to_vec());
        assert!(decode_written(&WRITE_BATCH_ROWS, long, [1].into_iter()).is_err());
        assert!(decode_written(&WRITE_BATCH_ROWS, Value::Okay, [1].into_iter()).is_err());
    }
}
