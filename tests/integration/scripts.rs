//! The Lua scripts called as `redis-cli EVALSHA` would call them: raw KEYS
//! and ARGV, no store in between.

use std::collections::HashMap;

use feature_store::scripts::{self, LuaScript, READ_FRESH, WRITE_BATCH_ROWS, WRITE_STREAMING};
use redis::{RedisResult, Value};

use crate::common;

/// Event times (epoch ms) for the rows and updates below: 2026-12-01T16:00:00Z
/// and one and two seconds later.
const T: &str = "1796140800000";
const T1: &str = "1796140801000";
const T2: &str = "1796140802000";

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `EVALSHA <sha> <numkeys> <keys..> <args..>`, exactly what redis-cli sends.
fn evalsha(
    conn: &mut impl redis::ConnectionLike,
    script: &LuaScript,
    keys: &[&str],
    args: &[&str],
) -> RedisResult<Value> {
    redis::cmd("EVALSHA")
        .arg(script.sha())
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query(conn)
}

/// A call that must succeed, and its reply as integers (for the write
/// scripts two per entity: features written, features skipped as stale).
fn write_ok(
    conn: &mut impl redis::ConnectionLike,
    script: &LuaScript,
    keys: &[&str],
    args: &[&str],
) -> Vec<i64> {
    let reply = evalsha(conn, script, keys, args)
        .unwrap_or_else(|e| panic!("{} {keys:?} {args:?}: {e}", script.name));
    ints(reply)
}

fn load_all(conn: &mut impl redis::ConnectionLike) {
    for s in scripts::all() {
        let sha = s.load(conn).expect("SCRIPT LOAD");
        assert_eq!(sha, s.sha(), "{}: Redis computes the SHA1 we print", s.name);
    }
}

fn ints(v: Value) -> Vec<i64> {
    redis::from_redis_value(v).expect("an array of integers")
}

fn hgetall(conn: &mut impl redis::ConnectionLike, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL")
}

fn ttl(conn: &mut impl redis::ConnectionLike, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(conn).expect("TTL")
}

/// Milliseconds: shows whether a call refreshed a key TTL within the second.
fn pttl(conn: &mut impl redis::ConnectionLike, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(conn).expect("PTTL")
}

fn httl(conn: &mut impl redis::ConnectionLike, key: &str, fields: &[&str]) -> Vec<i64> {
    redis::cmd("HTTL")
        .arg(key)
        .arg("FIELDS")
        .arg(fields.len())
        .arg(fields)
        .query(conn)
        .expect("HTTL")
}

fn error_text(r: RedisResult<Value>) -> String {
    match r {
        Err(e) => e.to_string(),
        Ok(v) => panic!("expected an error reply, got {v:?}"),
    }
}

#[test]
fn batch_rows_set_fields_and_key_ttl() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:u0001";
    let args = [
        "86400",
        T,
        "2",
        "user_batch",
        "0",
        "2",
        "country_iso",
        "US",
        "tx_count_7d",
        "14",
    ];
    assert_eq!(
        write_ok(&mut c, &WRITE_BATCH_ROWS, &[key], &args),
        vec![2, 0]
    );
    let h = hgetall(&mut c, key);
    assert_eq!(
        h,
        map(&[
            ("country_iso", "US"),
            ("tx_count_7d", "14"),
            ("@user_batch", T),
        ]),
        "the values, and one time for the whole view"
    );
    let t = ttl(&mut c, key);
    assert!((86_390..=86_400).contains(&t), "key ttl {t}");
    assert_eq!(
        httl(&mut c, key, &["country_iso", "tx_count_7d", "@user_batch"]),
        vec![-1, -1, -1],
        "batch fields (and their time) carry no field TTL"
    );

    // The same call again (a retry): nothing is newer, so nothing changes,
    // not even the key TTL.
    let before = pttl(&mut c, key);
    let again = evalsha(&mut c, &WRITE_BATCH_ROWS, &[key], &args);
    assert_eq!(ints(again.expect("retry")), vec![0, 2]);
    assert_eq!(hgetall(&mut c, key), h);
    assert!(
        pttl(&mut c, key) <= before,
        "the retry refreshed the key TTL"
    );
}

#[test]
fn batch_rows_write_several_entities_in_one_call() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    redis::cmd("SET")
        .arg("fs:user:str")
        .arg("x")
        .query::<()>(&mut c)
        .expect("SET");
    let reply = write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:a", "fs:user:str", "fs:user:b"],
        &[
            "600", T, "1", "v", "0", "1", "x", "1", //
            T, "1", "v", "0", "1", "y", "2", //
            T, "2", "v", "0", "2", "x", "3", "z", "4",
        ],
    );
    assert_eq!(
        reply,
        vec![1, 0, -1, 0, 2, 0],
        "a non-hash key is skipped, the rest written"
    );
    assert_eq!(
        hgetall(&mut c, "fs:user:a"),
        map(&[("x", "1"), ("x@t", T), ("@v+", T)]),
        "a part of view v: the feature's own time, and the view's marker"
    );
    assert_eq!(
        hgetall(&mut c, "fs:user:b"),
        map(&[("x", "3"), ("z", "4"), ("@v", T)])
    );
    assert!(ttl(&mut c, "fs:user:a") > 590);
    assert!(ttl(&mut c, "fs:user:b") > 590);
    let untouched: String = redis::cmd("GET")
        .arg("fs:user:str")
        .query(&mut c)
        .expect("GET");
    assert_eq!(untouched, "x");
    assert_eq!(
        ttl(&mut c, "fs:user:str"),
        -1,
        "the skipped key got no TTL either"
    );
}

/// A first load: when none of a call's keys exists, the script reads no
/// stored time (EXISTS for the call, no HMGET per row), and a key that
/// repeats in the call is read again after its first row wrote it, so an
/// older row for it is still skipped. The same rows again find every key
/// and read each one.
#[test]
fn batch_rows_on_new_keys_read_nothing_but_a_repeated_key() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let keys = ["fs:user:n1", "fs:user:n2", "fs:user:n1", "fs:user:n3"];
    let args = [
        "600", T1, "2", "v", "0", "1", "x", "1", //
        T1, "2", "v", "0", "1", "x", "2", //
        T, "2", "v", "0", "1", "x", "old", //
        T1, "1", "w", "1", "1", "gone", "y", "3",
    ];
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut c)
        .expect("CONFIG RESETSTAT");
    let reply = write_ok(&mut c, &WRITE_BATCH_ROWS, &keys, &args);
    assert_eq!(
        reply,
        vec![1, 0, 1, 0, 0, 1, 2, 0],
        "the older row for n1 is skipped though n1 was new when the call began"
    );
    assert_eq!(
        calls(&mut c, "exists"),
        2,
        "EXISTS of the first key, then of all: no read per row"
    );
    assert_eq!(calls(&mut c, "hmget"), 1, "only the repeated key is read");
    assert_eq!(
        hgetall(&mut c, "fs:user:n1"),
        map(&[("x", "1"), ("@v", T1)])
    );
    assert_eq!(
        hgetall(&mut c, "fs:user:n3"),
        map(&[("y", "3"), ("y@t", T1), ("gone@t", T1), ("@w+", T1)]),
        "part of a view on a new key: own times, the retraction's tombstone, the marker"
    );
    for key in ["fs:user:n1", "fs:user:n2", "fs:user:n3"] {
        assert!(ttl(&mut c, key) > 590, "{key} has its TTL");
    }

    let again = write_ok(&mut c, &WRITE_BATCH_ROWS, &keys, &args);
    assert_eq!(
        again,
        vec![0, 1, 0, 1, 0, 1, 0, 2],
        "a retry changes nothing"
    );
    assert_eq!(
        calls(&mut c, "exists"),
        2 + 1,
        "the first key exists: one EXISTS of it alone"
    );
    assert_eq!(
        calls(&mut c, "hmget"),
        1 + 5,
        "existing keys are read: the view's times for each row, and n3's own times"
    );
}

#[test]
fn batch_rows_retract_in_the_same_call() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:u0002";
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["600", T, "2", "v", "0", "2", "a", "1", "b", "2"],
    );
    let reply = write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["900", T1, "2", "v", "1", "1", "b", "a", "10"],
    );
    assert_eq!(reply, vec![2, 0]);
    assert_eq!(hgetall(&mut c, key), map(&[("a", "10"), ("@v", T1)]));
    assert!(
        ttl(&mut c, key) > 600,
        "the key TTL is refreshed by each batch row"
    );

    // Retracting every feature leaves only the view's time (so an older row
    // cannot bring the values back), and it expires with the key.
    let reply = write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["900", T2, "2", "v", "2", "0", "a", "b"],
    );
    assert_eq!(reply, vec![2, 0]);
    assert_eq!(hgetall(&mut c, key), map(&[("@v", T2)]));
    assert!((890..=900).contains(&ttl(&mut c, key)));
}

#[test]
fn batch_row_clears_a_field_ttl_left_by_the_streaming_side() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:moved";
    write_ok(
        &mut c,
        &WRITE_STREAMING,
        &[key],
        &["300", "86400", T, "0", "-", "1", "segment", "hot"],
    );
    assert!(httl(&mut c, key, &["segment", "segment@t"])
        .iter()
        .all(|t| *t > 0));
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["86400", T1, "0", "-", "0", "1", "segment", "warm"],
    );
    assert_eq!(
        hgetall(&mut c, key),
        map(&[("segment", "warm"), ("segment@t", T1)])
    );
    assert_eq!(
        httl(&mut c, key, &["segment", "segment@t"]),
        vec![-1, -1],
        "a batch field (and its time) has no field TTL"
    );
}

#[test]
fn batch_row_refusals_write_nothing() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:existing";
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["600", T, "2", "v", "0", "1", "a", "1"],
    );
    let before = hgetall(&mut c, key);
    let before_ttl = pttl(&mut c, key);

    // Each case is sent for two keys: the existing one first, then a fresh
    // one, so a refusal that only comes with the second row shows whether
    // the first row (newer than the stored one) was written.
    let row1 = [T1, "2", "v", "0", "1", "a", "2"];
    let with_row1 = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["600"];
        args.extend(row1);
        args.extend(rest);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["600", T1, "2", "v", "0", "1", "a"],
            "row 1: fewer arguments",
        ),
        (
            with_row1(&[T1, "2", "v", "0"]),
            "row 2: counts must be integers",
        ),
        (
            with_row1(&[T1, "2", "v", "0", "1", "b"]),
            "row 2: fewer arguments",
        ),
        (
            with_row1(&[T1, "2", "v", "0", "1", "b", "3", "extra"]),
            "more arguments than",
        ),
        (
            vec!["abc", T1, "2", "v", "0", "1", "a", "2"],
            "ttl must be an integer",
        ),
        (
            vec!["0", T1, "2", "v", "0", "1", "a", "2"],
            "ttl must be an integer",
        ),
        (
            vec!["-5", T1, "2", "v", "0", "1", "a", "2"],
            "ttl must be an integer",
        ),
        (
            vec!["1.5", T1, "2", "v", "0", "1", "a", "2"],
            "ttl must be an integer",
        ),
        (
            vec!["315360001", T1, "2", "v", "0", "1", "a", "2"],
            "ttl must be an integer",
        ),
        (
            with_row1(&[T1, "2", "v", "0", "0"]),
            "row 2: nothing to write",
        ),
        (vec![], "ttl must be an integer"),
        (vec!["600"], "row 1: event time must be epoch ms"),
        (vec!["600", T1], "row 1: mode must be 0, 1 or 2"),
        (vec!["600", T1, "2"], "row 1: mode must be 0, 1 or 2"),
        (vec!["600", T1, "2", "v"], "row 1: counts must be integers"),
        (
            with_row1(&[T1, "3", "v", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2",
        ),
        (
            with_row1(&[T1, "02", "v", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2",
        ),
        (
            with_row1(&[T1, "2", "", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2, with a view name",
        ),
        (
            with_row1(&[T1, "0", "", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2, with a view name",
        ),
        (
            // `@v+` would be both view `v+`'s time and view `v`'s marker.
            with_row1(&[T1, "2", "v+", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2, with a view name (no '@', '+')",
        ),
        (
            with_row1(&[T1, "1", "@v", "0", "1", "b", "2"]),
            "row 2: mode must be 0, 1 or 2, with a view name (no '@', '+')",
        ),
        (
            vec!["600", T1, "2", "v", "x", "1", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "0", "3001", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "5001", "1", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "0", "1.5", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "-1", "1", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "0", "inf", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "0", "nan", "a", "2"],
            "counts must be integers",
        ),
        (
            vec!["600", T1, "2", "v", "3", "0", "a"],
            "row 1: fewer arguments",
        ),
        (
            vec!["600", T1, "2", "v", "0", "1", "", "2"],
            "row 1: feature names must be non-empty",
        ),
        (
            with_row1(&[T1, "2", "v", "1", "1", "", "b", "2"]),
            "row 2: feature names must be non-empty",
        ),
        (
            with_row1(&[T1, "2", "v", "0", "1", "", "2"]),
            "row 2: feature names must be non-empty",
        ),
    ];
    for (args, expected) in &cases {
        let err = error_text(evalsha(
            &mut c,
            &WRITE_BATCH_ROWS,
            &[key, "fs:user:fresh"],
            args,
        ));
        assert!(
            err.contains(expected),
            "args {args:?}: {err:?} should mention {expected:?}"
        );
        assert_eq!(
            hgetall(&mut c, key),
            before,
            "args {args:?} changed the existing row"
        );
        assert!(
            pttl(&mut c, key) <= before_ttl,
            "args {args:?} refreshed the TTL"
        );
        assert_eq!(
            ttl(&mut c, "fs:user:fresh"),
            -2,
            "args {args:?} created a key"
        );
    }
    let err = error_text(evalsha(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[],
        &["600", T1, "2", "v", "0", "1", "a", "1"],
    ));
    assert!(err.contains("no keys"), "{err}");
    assert_eq!(common::all_keys(&mut c), vec![key.to_string()]);
}

#[test]
fn streaming_write_sets_field_ttls_and_pins_a_missing_key_ttl() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:new";
    let reply = write_ok(
        &mut c,
        &WRITE_STREAMING,
        &[key],
        &[
            "300",
            "86400",
            T,
            "2",
            "user_stream",
            "2",
            "tx_count_5m",
            "3",
            "last_device_id",
            "ios-9f02",
        ],
    );
    assert_eq!(reply, vec![2, 0]);
    let ttls = httl(
        &mut c,
        key,
        &["tx_count_5m", "last_device_id", "@user_stream"],
    );
    assert!(
        ttls.iter().all(|t| (290..=300).contains(t)),
        "field ttls (the view's time expires with its values) {ttls:?}"
    );
    let t = ttl(&mut c, key);
    assert!(
        (86_390..=86_400).contains(&t),
        "new entity: key ttl pinned {t}"
    );

    // An entity with a batch TTL keeps it: the streaming write does not
    // extend the entity's life.
    let batch_key = "fs:user:batch";
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[batch_key],
        &["1000", T, "1", "user_batch", "0", "1", "country_iso", "US"],
    );
    let reply = write_ok(
        &mut c,
        &WRITE_STREAMING,
        &[batch_key],
        &[
            "300",
            "86400",
            T,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "1",
        ],
    );
    assert_eq!(reply, vec![1, 0]);
    assert!(ttl(&mut c, batch_key) <= 1000);
    assert_eq!(
        httl(&mut c, batch_key, &["country_iso", "country_iso@t"]),
        vec![-1, -1]
    );

    // A write that raced a reset (key deleted under it) still leaves a TTL.
    redis::cmd("DEL")
        .arg(batch_key)
        .query::<()>(&mut c)
        .expect("DEL");
    let reply = write_ok(
        &mut c,
        &WRITE_STREAMING,
        &[batch_key],
        &[
            "300",
            "86400",
            T1,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "2",
        ],
    );
    assert_eq!(reply, vec![1, 0]);
    let t = ttl(&mut c, batch_key);
    assert!((86_390..=86_400).contains(&t), "key ttl pinned again {t}");
}

#[test]
fn streaming_writes_several_entities_in_one_call() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:old"],
        &["1000", T, "1", "user_batch", "0", "1", "country_iso", "US"],
    );
    redis::cmd("SET")
        .arg("fs:user:str")
        .arg("x")
        .query::<()>(&mut c)
        .expect("SET");
    let reply = write_ok(
        &mut c,
        &WRITE_STREAMING,
        &["fs:user:old", "fs:user:str", "fs:user:new"],
        &[
            "60", "86400", T, "1", "s", "1", "a", "1", //
            T, "1", "s", "1", "a", "2", //
            T, "2", "s", "2", "a", "3", "b", "4",
        ],
    );
    assert_eq!(reply, vec![1, 0, -1, 0, 2, 0]);
    assert!(ttl(&mut c, "fs:user:old") <= 1000);
    assert!(httl(&mut c, "fs:user:new", &["a", "b", "@s"])
        .iter()
        .all(|t| (50..=60).contains(t)));
    assert_eq!(
        ttl(&mut c, "fs:user:str"),
        -1,
        "the skipped key is left as it was"
    );
}

#[test]
fn streaming_refusals_write_nothing() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    // A valid first update, so a refusal that comes with the second shows
    // whether the first was written.
    let with_update1 = |rest: &[&'static str]| -> Vec<&'static str> {
        let mut args = vec!["300", "86400", T, "2", "s", "1", "a", "1"];
        args.extend(rest);
        args
    };
    let update2 = [T, "2", "s", "1", "b", "2"];
    let with_ttls = |field: &'static str, batch: &'static str| -> Vec<&'static str> {
        let mut args = vec![field, batch, T, "2", "s", "1", "a", "1"];
        args.extend(update2);
        args
    };
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["300", "86400", T, "2", "s", "1", "a"],
            "update 1: fewer arguments",
        ),
        (with_update1(&[T, "2", "s"]), "update 2: count must be"),
        (with_update1(&[T, "2", "s", "0"]), "update 2: count must be"),
        (
            with_update1(&[T, "2", "s", "1", "b", "2", "extra"]),
            "more arguments than",
        ),
        (with_ttls("x", "86400"), "field ttl"),
        (with_ttls("0", "86400"), "field ttl"),
        (with_ttls("-1", "86400"), "field ttl"),
        (with_ttls("999999999999", "86400"), "field ttl"),
        (with_ttls("300", "0"), "batch ttl"),
        (with_ttls("300", ""), "batch ttl"),
        (vec!["300"], "batch ttl"),
        (
            vec!["300", "86400"],
            "update 1: event time must be epoch ms",
        ),
        (vec!["300", "86400", T], "update 1: mode must be 0, 1 or 2"),
        (
            with_update1(&[T, "3", "s", "1", "b", "2"]),
            "update 2: mode must be 0, 1 or 2",
        ),
        (
            with_update1(&[T, "1", "", "1", "b", "2"]),
            "update 2: mode must be 0, 1 or 2, with a view name",
        ),
        (
            with_update1(&[T, "0", "", "1", "b", "2"]),
            "update 2: mode must be 0, 1 or 2, with a view name",
        ),
        (
            with_update1(&[T, "2", "s+", "1", "b", "2"]),
            "update 2: mode must be 0, 1 or 2, with a view name (no '@', '+')",
        ),
        (
            with_update1(&[T, "2", "s", "1", "", "1"]),
            "update 2: feature names must be non-empty",
        ),
        (
            with_update1(&[T, "2", "s", "2", "b", "1", "", "2"]),
            "update 2: feature names must be non-empty",
        ),
        (
            with_update1(&[T, "2", "s", "1.5", "b", "1"]),
            "update 2: count must be",
        ),
        (
            with_update1(&[T, "2", "s", "3001", "b", "1"]),
            "update 2: count must be",
        ),
        (
            with_update1(&[T, "2", "s", "-1", "b", "1"]),
            "update 2: count must be",
        ),
        (
            with_update1(&[T, "2", "s", "nan", "b", "1"]),
            "update 2: count must be",
        ),
    ];
    for (args, expected) in &cases {
        let err = error_text(evalsha(
            &mut c,
            &WRITE_STREAMING,
            &["fs:user:s", "fs:user:t"],
            args,
        ));
        assert!(
            err.contains(expected),
            "args {args:?}: {err:?} should mention {expected:?}"
        );
        assert!(
            common::all_keys(&mut c).is_empty(),
            "args {args:?} wrote something"
        );
    }
    let err = error_text(evalsha(
        &mut c,
        &WRITE_STREAMING,
        &[],
        &["300", "86400", T, "2", "s", "1", "a", "1"],
    ));
    assert!(err.contains("no keys"), "{err}");
}

/// The HEXPIRE code check: with the script's own arguments every code is 1,
/// so the test provokes a 0 by giving the same script's HEXPIRE the XX
/// condition (HSET has just cleared any field TTL, so XX is never met).
/// Everything else, the check included, is the shipped script.
#[test]
fn streaming_write_fails_loudly_unless_every_hexpire_code_is_1() {
    // HSETEX renamed away: the HSET + HEXPIRE path, as on Redis 7.4.
    let redis = redis_with(&["--rename-command", "HSETEX", ""]);
    let mut c = common::raw(&redis);
    let call = "redis.pcall('HEXPIRE', key, field_ttl, 'FIELDS', #names, unpack(names))";
    assert!(
        WRITE_STREAMING.source.contains(call),
        "the script's HEXPIRE call changed; update this test"
    );
    let provoking = WRITE_STREAMING.source.replace(
        call,
        "redis.pcall('HEXPIRE', key, field_ttl, 'XX', 'FIELDS', #names, unpack(names))",
    );
    let err = redis::Script::new(&provoking)
        .key("fs:user:x")
        .arg(300)
        .arg(86400)
        .arg(T)
        .arg(2)
        .arg("v")
        .arg(2)
        .arg("a")
        .arg(1)
        .arg("b")
        .arg(2)
        .invoke::<Value>(&mut c)
        .expect_err("HEXPIRE answered 0: the write must fail");
    // Even the failed call left no key without a TTL.
    assert!(ttl(&mut c, "fs:user:x") > 0);
    // One code per field: the two values and the view's time.
    assert!(
        err.to_string()
            .contains("HEXPIRE did not set every field TTL: 0,0,0"),
        "{err}"
    );
}

#[test]
fn read_fresh_reports_values_field_ttls_key_ttl_and_redis_clock() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let key = "fs:user:r";
    write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &[key],
        &["1000", T, "2", "b", "0", "1", "country_iso", "US"],
    );
    write_ok(
        &mut c,
        &WRITE_STREAMING,
        &[key],
        &["300", "86400", T1, "2", "s", "1", "tx_count_5m", "3"],
    );

    type Reply = (i64, Vec<String>, Vec<Option<String>>, Vec<i64>, i64);
    let before = redis_now_ms(&mut c);
    let reply = evalsha(
        &mut c,
        &READ_FRESH,
        &[key],
        &["country_iso", "tx_count_5m", "nope", "@b", "@s"],
    )
    .expect("read_fresh");
    let after = redis_now_ms(&mut c);
    let (key_ttl, names, values, ttls, now_ms): Reply =
        redis::from_redis_value(reply).expect("reply shape");
    assert!((990..=1000).contains(&key_ttl), "{key_ttl}");
    assert_eq!(names, ["country_iso", "tx_count_5m", "nope", "@b", "@s"]);
    assert_eq!(
        values,
        [
            Some("US".to_string()),
            Some("3".to_string()),
            None,
            Some(T.to_string()),
            Some(T1.to_string())
        ],
        "the event times are read like any field"
    );
    assert_eq!(ttls[0], -1);
    assert!((290..=300).contains(&ttls[1]), "{ttls:?}");
    assert_eq!(ttls[2], -2);
    assert_eq!(ttls[3], -1, "{ttls:?}");
    assert!((290..=300).contains(&ttls[4]), "{ttls:?}");
    assert!(
        (before..=after).contains(&now_ms),
        "now_ms {now_ms} is Redis's TIME, between {before} and {after}"
    );

    // No names: the whole hash (inspect), times included.
    let reply = evalsha(&mut c, &READ_FRESH, &[key], &[]).expect("read_fresh");
    let (_, mut names, _, _, now_ms): Reply = redis::from_redis_value(reply).expect("reply shape");
    names.sort();
    assert_eq!(names, ["@b", "@s", "country_iso", "tx_count_5m"]);
    assert!(now_ms >= after);

    // A missing entity: -2, nils, -2s, and the clock still.
    let reply = evalsha(&mut c, &READ_FRESH, &["fs:user:none"], &["a", "b"]).expect("read_fresh");
    let (key_ttl, _, values, ttls, now_ms): Reply =
        redis::from_redis_value(reply).expect("reply shape");
    assert_eq!(
        (key_ttl, values, ttls),
        (-2, vec![None, None], vec![-2, -2])
    );
    assert!(now_ms >= after);
    let reply = evalsha(&mut c, &READ_FRESH, &["fs:user:none"], &[]).expect("read_fresh");
    let (key_ttl, names, _, _, now_ms): Reply =
        redis::from_redis_value(reply).expect("reply shape");
    assert_eq!((key_ttl, names.len()), (-2, 0));
    assert!(now_ms >= after);

    let err = error_text(evalsha(&mut c, &READ_FRESH, &[], &["a"]));
    assert!(err.contains("wrong number of keys"), "{err}");
    let err = error_text(evalsha(&mut c, &READ_FRESH, &[key], &[""]));
    assert!(err.contains("empty feature name"), "{err}");
}

/// Redis's clock, as `TIME` gives it, in epoch ms.
fn redis_now_ms(c: &mut impl redis::ConnectionLike) -> i64 {
    let (sec, usec): (i64, i64) = redis::cmd("TIME").query(c).expect("TIME");
    sec * 1000 + usec / 1000
}

#[test]
fn read_fresh_runs_on_a_read_only_replica_path() {
    // `flags=no-writes` lets EVALSHA_RO run it; the write scripts refuse.
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let ok: RedisResult<Value> = redis::cmd("EVALSHA_RO")
        .arg(READ_FRESH.sha())
        .arg(1)
        .arg("fs:user:a")
        .arg("x")
        .query(&mut c);
    assert!(ok.is_ok(), "{ok:?}");
    let refused: RedisResult<Value> = redis::cmd("EVALSHA_RO")
        .arg(WRITE_BATCH_ROWS.sha())
        .arg(1)
        .arg("fs:user:a")
        .arg(&["60", T, "2", "v", "0", "1", "x", "1"])
        .query(&mut c);
    assert!(refused.is_err());
    assert!(common::all_keys(&mut c).is_empty());
}

#[test]
fn after_script_flush_evalsha_says_noscript_and_the_store_reloads() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    load_all(&mut c);
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut c)
        .expect("SCRIPT FLUSH");
    let err = error_text(evalsha(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:a"],
        &["60", T, "2", "v", "0", "1", "x", "1"],
    ));
    assert!(err.to_uppercase().contains("NOSCRIPT"), "{err}");

    // The store recovers on every write path: a pipelined bulk load, a
    // single streaming write, a pipelined streaming batch, and the read script.
    let store = common::store(&redis);
    let rows: Vec<_> = feature_store::demo::synth::users(25, 1).collect();
    let report = store.bulk_load(&rows, 600).expect("bulk load");
    assert_eq!((report.written, report.failed.len()), (25, 0));
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut c)
        .expect("SCRIPT FLUSH");
    let mut fields = feature_store::FeatureMap::new();
    fields.insert("tx_count_5m".into(), 4i64.into());
    store
        .update_streaming("u0001", &fields, 300)
        .expect("streaming write after flush");
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut c)
        .expect("SCRIPT FLUSH");
    let events: Vec<_> = (2..=6)
        .map(|i| (feature_store::demo::synth::user_id(i), fields.clone()))
        .collect();
    let report = store
        .update_streaming_many(&events, 300)
        .expect("streaming batch");
    assert_eq!((report.written, report.failed.len()), (5, 0));
    redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query::<()>(&mut c)
        .expect("SCRIPT FLUSH");
    let read = store
        .read_fresh("u0003", &["tx_count_5m", "country_iso"])
        .expect("read after flush");
    assert_eq!(read.fields[0].text(), Some("4"));
    assert!(read.fields[1].value.is_some());

    // Every row written exactly as asked: 25 keys, each with 6 batch fields.
    assert_eq!(common::all_keys(&mut c).len(), 25);
    let stats: HashMap<String, String> = redis::cmd("INFO")
        .arg("commandstats")
        .query::<redis::InfoDict>(&mut c)
        .map(|info| {
            info.iter()
                .filter_map(|(k, v)| match v {
                    Value::SimpleString(s) => Some((k.clone(), s.clone())),
                    Value::BulkString(b) => {
                        Some((k.clone(), String::from_utf8_lossy(b).into_owned()))
                    }
                    _ => None,
                })
                .collect()
        })
        .expect("INFO commandstats");
    let calls = |cmd: &str| -> u64 {
        stats
            .get(&format!("cmdstat_{cmd}"))
            .and_then(|s| s.strip_prefix("calls="))
            .and_then(|s| s.split(',').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    // 25 bulk rows + 1 single + 5 pipelined streaming writes: each ran once,
    // none twice (only the calls that met NOSCRIPT were re-sent). Every
    // write sets a key TTL (streaming ones with EXPIRE NX). Streaming
    // fields are written by HSETEX where Redis has it, else by HSET.
    assert_eq!(calls("hset") + calls("hsetex"), 31, "{stats:?}");
    assert_eq!(calls("expire"), 31, "{stats:?}");
    // 3 loads by the test, then one reload per flush.
    assert_eq!(calls("script|load"), 7, "{stats:?}");
}

// ---- a Redis that refuses a TTL command --------------------------------

/// A Redis started with extra arguments (e.g. a command renamed away).
fn redis_with(args: &[&str]) -> feature_store::ManagedRedis {
    feature_store::ManagedRedis::start_with_args(args)
        .unwrap_or_else(|e| panic!("starting redis-server {args:?}: {e}"))
}

/// A connection as `user` (password `pw`).
fn connect_as(redis: &feature_store::ManagedRedis, user: &str) -> redis::Connection {
    let url = format!("redis://{user}:pw@127.0.0.1:{}/", redis.port());
    redis::Client::open(url)
        .expect("url")
        .get_connection_with_timeout(std::time::Duration::from_secs(2))
        .expect("connecting as the ACL user")
}

/// Creates `user` (password `pw`): every key, channel and command, then
/// `rules` (e.g. `-expire`, or a selector) on top.
fn acl_user(admin: &mut redis::Connection, user: &str, rules: &[&str]) {
    redis::cmd("ACL")
        .arg(&["SETUSER", user, "on", ">pw", "~*", "&*", "+@all"])
        .arg(rules)
        .query::<()>(admin)
        .unwrap_or_else(|e| panic!("ACL SETUSER {user} {rules:?}: {e}"));
}

/// Every key with no TTL (TTL -1): what a refused TTL must never leave.
fn keys_without_ttl(c: &mut impl redis::ConnectionLike) -> Vec<String> {
    common::all_keys(c)
        .into_iter()
        .filter(|k| ttl(c, k) == -1)
        .collect()
}

/// A batch row for `key` written (with its TTL) through a working path.
fn seed_batch_row(c: &mut impl redis::ConnectionLike, key: &str) {
    redis::cmd("HSET")
        .arg(key)
        .arg("country_iso")
        .arg("US")
        .query::<()>(c)
        .expect("HSET");
    redis::cmd("EXPIRE")
        .arg(key)
        .arg(1000)
        .query::<()>(c)
        .expect("EXPIRE");
}

#[test]
fn streaming_write_without_hexpire_writes_nothing_and_leaves_no_key_without_a_ttl() {
    // Neither HSETEX nor HEXPIRE: no way to give a field its TTL.
    let redis = redis_with(&[
        "--rename-command",
        "HEXPIRE",
        "",
        "--rename-command",
        "HSETEX",
        "",
    ]);
    let mut c = common::raw(&redis);
    load_all(&mut c);
    seed_batch_row(&mut c, "fs:user:old1");
    let err = error_text(evalsha(
        &mut c,
        &WRITE_STREAMING,
        &["fs:user:new1", "fs:user:old1"],
        &[
            "300",
            "86400",
            T,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "3",
            T,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "4",
        ],
    ));
    assert_eq!(keys_without_ttl(&mut c), Vec::<String>::new());
    assert!(err.contains("HEXPIRE is refused"), "{err}");
    assert_eq!(common::all_keys(&mut c), vec!["fs:user:old1"]);
    assert_eq!(
        hgetall(&mut c, "fs:user:old1"),
        map(&[("country_iso", "US")])
    );
}

#[test]
fn batch_rows_without_expire_write_nothing_and_leave_no_key_without_a_ttl() {
    let redis = redis_with(&["--rename-command", "EXPIRE", ""]);
    let mut c = common::raw(&redis);
    load_all(&mut c);
    let err = error_text(evalsha(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:new1", "fs:user:new2"],
        &[
            "86400",
            T,
            "1",
            "user_batch",
            "0",
            "1",
            "country_iso",
            "US",
            T,
            "1",
            "user_batch",
            "0",
            "1",
            "country_iso",
            "FR",
        ],
    ));
    assert_eq!(keys_without_ttl(&mut c), Vec::<String>::new());
    assert!(err.contains("EXPIRE is refused"), "{err}");
    // The streaming script needs EXPIRE too.
    let err = error_text(evalsha(
        &mut c,
        &WRITE_STREAMING,
        &["fs:user:new3"],
        &[
            "300",
            "86400",
            T,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "3",
        ],
    ));
    assert!(err.contains("EXPIRE is refused"), "{err}");
    assert_eq!(common::all_keys(&mut c), Vec::<String>::new());
}

#[test]
fn write_scripts_for_a_user_denied_expire_leave_no_key_without_a_ttl() {
    let redis = common::standalone_redis();
    let mut admin = common::raw(&redis);
    load_all(&mut admin);
    acl_user(&mut admin, "writer", &["-expire"]);
    let mut c = connect_as(&redis, "writer");
    let err = error_text(evalsha(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:new1"],
        &["86400", T, "1", "user_batch", "0", "1", "country_iso", "US"],
    ));
    assert_eq!(keys_without_ttl(&mut admin), Vec::<String>::new());
    assert!(err.contains("EXPIRE is refused"), "{err}");
    let err = error_text(evalsha(
        &mut c,
        &WRITE_STREAMING,
        &["fs:user:new2"],
        &[
            "300",
            "86400",
            T,
            "1",
            "user_stream",
            "1",
            "tx_count_5m",
            "3",
        ],
    ));
    assert!(err.contains("EXPIRE is refused"), "{err}");
    assert_eq!(common::all_keys(&mut admin), Vec::<String>::new());
}

/// A user whose ACL predates the first-load check (no `EXISTS`) writes new
/// keys as before: each row reads its stored times, nothing is refused.
#[test]
fn batch_rows_for_a_user_denied_exists_read_each_row_and_write_the_same() {
    let redis = common::standalone_redis();
    let mut admin = common::raw(&redis);
    load_all(&mut admin);
    acl_user(&mut admin, "writer", &["-exists"]);
    let mut c = connect_as(&redis, "writer");
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query(&mut admin)
        .expect("CONFIG RESETSTAT");
    let reply = write_ok(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:e1", "fs:user:e2"],
        &[
            "600", T, "2", "v", "0", "1", "x", "1", T, "2", "v", "0", "1", "x", "2",
        ],
    );
    assert_eq!(reply, vec![1, 0, 1, 0]);
    assert_eq!(calls(&mut admin, "exists"), 0);
    assert_eq!(calls(&mut admin, "hmget"), 2, "one read per row");
    assert_eq!(
        hgetall(&mut admin, "fs:user:e2"),
        map(&[("x", "2"), ("@v", T)])
    );
    assert_eq!(keys_without_ttl(&mut admin), Vec::<String>::new());
}

/// An ACL selector lets the TTL command through for `fs:user:a*` only, so
/// the up-front check (made on the first key) passes and the TTL command
/// fails after the HSET of the second entity: the script must take that
/// entity's fields (values and times) back, and keep the first one whole.
#[test]
fn a_ttl_refused_after_the_write_takes_the_entity_back() {
    let redis = common::standalone_redis();
    let mut admin = common::raw(&redis);
    load_all(&mut admin);
    for (user, cmds) in [
        ("batch", &["expire"][..]),
        ("stream", &["hsetex", "hexpire"]),
    ] {
        let mut rules: Vec<String> = cmds.iter().map(|c| format!("-{c}")).collect();
        let allowed: Vec<String> = cmds.iter().map(|c| format!("+{c}")).collect();
        rules.push(format!("(~fs:user:a* {})", allowed.join(" ")));
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        acl_user(&mut admin, user, &rules);
    }
    seed_batch_row(&mut admin, "fs:user:b2");

    let mut c = connect_as(&redis, "batch");
    // Row 2 takes both paths' fields: a view time (mode 2) on b1, an own
    // time and a marker (mode 1) on b3.
    for (key, mode) in [("fs:user:b1", "2"), ("fs:user:b3", "1")] {
        let err = error_text(evalsha(
            &mut c,
            &WRITE_BATCH_ROWS,
            &["fs:user:a1", key],
            &[
                "86400",
                T,
                mode,
                "user_batch",
                "0",
                "1",
                "country_iso",
                "US",
                T,
                mode,
                "user_batch",
                "0",
                "1",
                "country_iso",
                "FR",
            ],
        ));
        assert_eq!(keys_without_ttl(&mut admin), Vec::<String>::new());
        assert!(err.contains(&format!("EXPIRE failed on {key}")), "{err}");
    }
    assert_eq!(
        common::all_keys(&mut admin),
        vec!["fs:user:a1", "fs:user:b2"]
    );
    assert_eq!(
        hgetall(&mut admin, "fs:user:a1"),
        map(&[("country_iso", "US"), ("@user_batch", T)])
    );

    let mut c = connect_as(&redis, "stream");
    for key in ["fs:user:b1", "fs:user:b2"] {
        let err = error_text(evalsha(
            &mut c,
            &WRITE_STREAMING,
            &["fs:user:a3", key],
            &[
                "300",
                "86400",
                T,
                "1",
                "user_stream",
                "1",
                "tx_count_5m",
                "3",
                T,
                "1",
                "user_stream",
                "1",
                "tx_count_5m",
                "4",
            ],
        ));
        // HSETEX, refused on that key, wrote nothing (on Redis 7.4: HSET
        // wrote and HEXPIRE failed, and the fields were taken back).
        assert!(
            err.contains(&format!("HSETEX failed on {key}"))
                || err.contains(&format!("HEXPIRE failed on {key}")),
            "{err}"
        );
    }
    assert_eq!(keys_without_ttl(&mut admin), Vec::<String>::new());
    assert_eq!(
        common::all_keys(&mut admin),
        vec!["fs:user:a1", "fs:user:a3", "fs:user:b2"]
    );
    // b2 keeps its batch row; the streaming field it was given is gone.
    assert_eq!(
        hgetall(&mut admin, "fs:user:b2"),
        map(&[("country_iso", "US")])
    );
    let a3 = httl(&mut admin, "fs:user:a3", &["tx_count_5m", "tx_count_5m@t"]);
    assert!(a3.iter().all(|t| *t > 0), "{a3:?}");
}

/// The take-back after a refused EXPIRE must remove only what that row
/// wrote: a feature it skipped (stored newer) keeps its value, and the
/// view's time (written by an earlier whole row) keeps dating the view's
/// features, so an older row still cannot overwrite them.
#[test]
fn a_ttl_refused_after_the_write_takes_back_only_what_the_row_wrote() {
    let redis = common::standalone_redis();
    let mut admin = common::raw(&redis);
    load_all(&mut admin);
    acl_user(&mut admin, "batch", &["-expire", "(~fs:user:a* +expire)"]);
    // b1: a whole row at T, then country_iso alone at T2.
    let b1 = ["fs:user:b1"];
    let whole_at_t = [
        "86400",
        T,
        "2",
        "user_batch",
        "0",
        "2",
        "country_iso",
        "US",
        "tx_count_7d",
        "14",
    ];
    write_ok(&mut admin, &WRITE_BATCH_ROWS, &b1, &whole_at_t);
    let part = [
        "86400",
        T2,
        "1",
        "user_batch",
        "0",
        "1",
        "country_iso",
        "US2",
    ];
    write_ok(&mut admin, &WRITE_BATCH_ROWS, &b1, &part);
    // A part row at T1 for a1 and b1: on b1 it skips country_iso (T2 is
    // newer), writes tx_count_7d, and its EXPIRE is refused.
    let mut c = connect_as(&redis, "batch");
    let row = [
        T1,
        "1",
        "user_batch",
        "0",
        "2",
        "country_iso",
        "FR",
        "tx_count_7d",
        "15",
    ];
    let mut args = vec!["86400"];
    args.extend(row);
    args.extend(row);
    let err = error_text(evalsha(
        &mut c,
        &WRITE_BATCH_ROWS,
        &["fs:user:a1", "fs:user:b1"],
        &args,
    ));
    assert!(err.contains("EXPIRE failed on fs:user:b1"), "{err}");
    // (The @user_batch+ marker may stay: it only makes later writes look
    // at per-feature times.)
    let h = hgetall(&mut admin, "fs:user:b1");
    let get = |f: &str| h.get(f).map(String::as_str);
    assert_eq!(
        (get("country_iso"), get("country_iso@t"), get("@user_batch")),
        (Some("US2"), Some(T2), Some(T)),
        "the skipped feature and the view's time are not the failed row's to take: {h:?}"
    );
    assert_eq!(
        (get("tx_count_7d"), get("tx_count_7d@t")),
        (None, None),
        "the failed row's value and time are taken back: {h:?}"
    );
    // And so the whole row at T, sent again, still writes nothing.
    let reply = write_ok(&mut admin, &WRITE_BATCH_ROWS, &b1, &whole_at_t);
    assert_eq!(reply, vec![0, 2]);
    assert_eq!(hgetall(&mut admin, "fs:user:b1")["country_iso"], "US2");
}

// ---- HSETEX, and the HSET + HEXPIRE path without it --------------------

/// Calls of each command since the last look (`INFO commandstats`).
fn calls(c: &mut impl redis::ConnectionLike, name: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(c)
        .expect("INFO");
    feature_store::commandstats::parse(&info)
        .get(name)
        .map_or(0, |s| s.calls)
}

/// One streaming call for a new entity (a whole view), an entity with a
/// batch TTL (part of a view) and an update naming a feature twice; what
/// every path must leave behind.
fn streaming_call_leaves_fields_with_ttls(c: &mut impl redis::ConnectionLike) {
    load_all(c);
    seed_batch_row(c, "fs:user:old");
    let reply = write_ok(
        c,
        &WRITE_STREAMING,
        &["fs:user:new", "fs:user:old", "fs:user:twice"],
        &[
            "300", "86400", T, "2", "s", "2", "a", "1", "b", "2", //
            T, "1", "s", "1", "a", "3", //
            T, "2", "s", "2", "a", "4", "a", "5",
        ],
    );
    assert_eq!(reply, vec![2, 0, 1, 0, 2, 0]);
    assert_eq!(
        hgetall(c, "fs:user:new"),
        map(&[("a", "1"), ("b", "2"), ("@s", T)])
    );
    assert!(httl(c, "fs:user:new", &["a", "b", "@s"])
        .iter()
        .all(|t| (290..=300).contains(t)));
    assert!((86_390..=86_400).contains(&ttl(c, "fs:user:new")));
    // The batch row keeps its key TTL and its batch field stays without one;
    // the feature's own time expires with it; the view's marker lives with
    // the key.
    assert!(ttl(c, "fs:user:old") <= 1000);
    assert_eq!(
        hgetall(c, "fs:user:old"),
        map(&[("country_iso", "US"), ("a", "3"), ("a@t", T), ("@s+", T)])
    );
    let old = httl(c, "fs:user:old", &["country_iso", "a", "a@t", "@s+"]);
    assert_eq!((old[0], old[3]), (-1, -1), "{old:?}");
    assert!((290..=300).contains(&old[1]), "{old:?}");
    assert!((290..=300).contains(&old[2]), "{old:?}");
    // A repeated name: the last value, with its TTL.
    assert_eq!(hgetall(c, "fs:user:twice"), map(&[("a", "5"), ("@s", T)]));
    assert!((290..=300).contains(&httl(c, "fs:user:twice", &["a"])[0]));
    assert_eq!(keys_without_ttl(c), Vec::<String>::new());
}

#[test]
fn streaming_write_sets_fields_and_their_ttls_with_one_hsetex_per_entity() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    streaming_call_leaves_fields_with_ttls(&mut c);
    assert_eq!(calls(&mut c, "hsetex"), 3);
    assert_eq!(calls(&mut c, "hexpire"), 0);
    assert_eq!(
        calls(&mut c, "hset"),
        2,
        "only the seeded batch row and the @s+ marker (no field TTL)"
    );
}

#[test]
fn streaming_write_without_hsetex_falls_back_to_hset_and_hexpire() {
    let redis = redis_with(&["--rename-command", "HSETEX", ""]);
    let mut c = common::raw(&redis);
    streaming_call_leaves_fields_with_ttls(&mut c);
    assert_eq!(calls(&mut c, "hexpire"), 3);
    assert_eq!(
        calls(&mut c, "hset"),
        5,
        "the seeded row, three updates and the @s+ marker"
    );
}

#[test]
fn streaming_write_with_hsetex_needs_no_hexpire() {
    let redis = redis_with(&["--rename-command", "HEXPIRE", ""]);
    let mut c = common::raw(&redis);
    streaming_call_leaves_fields_with_ttls(&mut c);
}

/// The HSETEX reply check: with the script's own arguments HSETEX answers
/// 1; the test provokes a 0 by giving the same call the FNX condition on a
/// field that exists. Everything else is the shipped script.
#[test]
fn streaming_write_fails_loudly_unless_hsetex_set_every_field() {
    let redis = common::standalone_redis();
    let mut c = common::raw(&redis);
    let call = "redis.pcall('HSETEX', key, 'EX', field_ttl, 'FIELDS', k, unpack(pairs_list, a, b))";
    assert!(
        WRITE_STREAMING.source.contains(call),
        "the script's HSETEX call changed; update this test"
    );
    // The one-write path's own HSETEX (the time first, pairs from ARGV).
    let direct = "redis.pcall('HSETEX', key, 'EX', field_ttl, 'FIELDS', s + 1, vt, t,";
    assert!(
        WRITE_STREAMING.source.contains(direct),
        "the script's one-write HSETEX call changed; update this test"
    );
    let provoking = WRITE_STREAMING
        .source
        .replace(
            call,
            "redis.pcall('HSETEX', key, 'FNX', 'EX', field_ttl, 'FIELDS', k, unpack(pairs_list, a, b))",
        )
        .replace(
            direct,
            "redis.pcall('HSETEX', key, 'FNX', 'EX', field_ttl, 'FIELDS', s + 1, vt, t,",
        );
    let script = redis::Script::new(&provoking);
    let once = |c: &mut redis::Connection, t: &str| {
        script
            .key("fs:user:x")
            .arg(300)
            .arg(86400)
            .arg(t)
            .arg(2)
            .arg("v")
            .arg(1)
            .arg("a")
            .arg(1)
            .invoke::<Value>(c)
    };
    once(&mut c, T).expect("new fields: FNX is met");
    // A newer event, so the script writes again (an equal one is skipped).
    let err = once(&mut c, T1).expect_err("HSETEX answered 0: the write must fail");
    assert!(ttl(&mut c, "fs:user:x") > 0);
    assert!(
        err.to_string()
            .contains("HSETEX did not set every field: 0"),
        "{err}"
    );
}
