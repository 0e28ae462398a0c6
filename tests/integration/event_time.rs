//! Event time at the script level: `write_batch_rows` and `write_streaming`
//! called with raw KEYS/ARGV as `redis-cli EVALSHA` would, each test one
//! rule of the contract in their headers (a feature is written only when
//! the event is newer than the one stored for it), checked with the
//! commands a user would run (HGETALL, PTTL, HPTTL).

use std::collections::{BTreeMap, HashMap};

use feature_store::scripts::{self, LuaScript, WRITE_BATCH_ROWS, WRITE_STREAMING};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::{RedisResult, Value};

use crate::common;

const BATCH_TTL: u64 = 86_400;
const FIELD_TTL: u64 = 300;
/// 2026-12-01T16:00:00Z in epoch ms.
const T0: u64 = 1_796_140_800_000;

fn s<T: ToString>(x: T) -> String {
    x.to_string()
}

fn load(c: &mut impl redis::ConnectionLike) {
    for script in scripts::all() {
        script.load(c).expect("SCRIPT LOAD");
    }
}

fn evalsha(
    c: &mut impl redis::ConnectionLike,
    script: &LuaScript,
    keys: &[String],
    args: &[String],
) -> RedisResult<Value> {
    redis::cmd("EVALSHA")
        .arg(script.sha())
        .arg(keys.len())
        .arg(keys)
        .arg(args)
        .query(c)
}

/// A batch row's part of ARGV: `T M V R S <R names> <S pairs>`.
fn row(t: u64, mode: u8, view: &str, retract: &[&str], set: &[(&str, &str)]) -> Vec<String> {
    let mut a = vec![s(t), s(mode), s(view), s(retract.len()), s(set.len())];
    a.extend(retract.iter().map(s));
    for (f, v) in set {
        a.extend([s(f), s(v)]);
    }
    a
}

/// A streaming update's part of ARGV: `T M V S <S pairs>`.
fn update(t: u64, mode: u8, view: &str, set: &[(&str, &str)]) -> Vec<String> {
    let mut a = vec![s(t), s(mode), s(view), s(set.len())];
    for (f, v) in set {
        a.extend([s(f), s(v)]);
    }
    a
}

/// One `write_batch_rows` call: `ttl`, then each (key, row) in order.
fn batch_call(
    c: &mut impl redis::ConnectionLike,
    ttl: u64,
    rows: &[(&str, Vec<String>)],
) -> RedisResult<Value> {
    let keys: Vec<String> = rows.iter().map(|(k, _)| s(k)).collect();
    let mut args = vec![s(ttl)];
    for (_, r) in rows {
        args.extend(r.iter().cloned());
    }
    evalsha(c, &WRITE_BATCH_ROWS, &keys, &args)
}

/// One `write_streaming` call: the field TTL, the batch TTL, then each
/// (key, update) in order.
fn stream_call(
    c: &mut impl redis::ConnectionLike,
    field_ttl: u64,
    batch_ttl: u64,
    updates: &[(&str, Vec<String>)],
) -> RedisResult<Value> {
    let keys: Vec<String> = updates.iter().map(|(k, _)| s(k)).collect();
    let mut args = vec![s(field_ttl), s(batch_ttl)];
    for (_, u) in updates {
        args.extend(u.iter().cloned());
    }
    evalsha(c, &WRITE_STREAMING, &keys, &args)
}

/// The reply of a call that must succeed: (written, skipped) per entity.
fn counts(reply: RedisResult<Value>) -> Vec<(i64, i64)> {
    let flat: Vec<i64> =
        redis::from_redis_value(reply.expect("the write succeeds")).expect("an array of integers");
    flat.chunks(2).map(|p| (p[0], p[1])).collect()
}

fn hgetall(c: &mut impl redis::ConnectionLike, key: &str) -> HashMap<String, String> {
    redis::cmd("HGETALL").arg(key).query(c).expect("HGETALL")
}

fn pttl(c: &mut impl redis::ConnectionLike, key: &str) -> i64 {
    redis::cmd("PTTL").arg(key).query(c).expect("PTTL")
}

fn hpttl(c: &mut impl redis::ConnectionLike, key: &str, fields: &[&str]) -> Vec<i64> {
    redis::cmd("HPTTL")
        .arg(key)
        .arg("FIELDS")
        .arg(fields.len())
        .arg(fields)
        .query(c)
        .expect("HPTTL")
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (s(k), s(v))).collect()
}

fn flushall(c: &mut impl redis::ConnectionLike) {
    redis::cmd("FLUSHALL").query::<()>(c).expect("FLUSHALL");
}

/// Everything in the database: per key its PTTL, per field its value and
/// HPTTL.
type Snapshot = BTreeMap<String, (i64, BTreeMap<String, (String, i64)>)>;

fn snapshot(c: &mut impl redis::ConnectionLike) -> Snapshot {
    let mut out = Snapshot::new();
    for key in common::all_keys(c) {
        let fields = hgetall(c, &key);
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        let ttls = hpttl(c, &key, &names);
        let per = names
            .iter()
            .zip(ttls)
            .map(|(n, t)| (s(n), (fields[*n].clone(), t)))
            .collect();
        let key_ttl = pttl(c, &key);
        out.insert(key, (key_ttl, per));
    }
    out
}

/// Same keys, fields and values; every TTL within a second of the other
/// (so a TTL that was set again, to the other call's TTL, shows).
fn same_state(a: &Snapshot, b: &Snapshot) -> Result<(), String> {
    let shape = |x: &Snapshot| -> BTreeMap<String, BTreeMap<String, String>> {
        x.iter()
            .map(|(k, (_, f))| {
                let vals = f.iter().map(|(n, (v, _))| (n.clone(), v.clone())).collect();
                (k.clone(), vals)
            })
            .collect()
    };
    if shape(a) != shape(b) {
        return Err(format!("values differ:\n{a:?}\n{b:?}"));
    }
    for (key, (ta, fa)) in a {
        let (tb, fb) = &b[key];
        if (ta - tb).abs() > 1000 {
            return Err(format!("{key}: key TTL {ta} -> {tb}"));
        }
        for (name, (_, ha)) in fa {
            let hb = fb[name].1;
            if (ha - hb).abs() > 1000 {
                return Err(format!("{key}.{name}: field TTL {ha} -> {hb}"));
            }
        }
    }
    Ok(())
}

// ---- the same rules for every way of dating a write -------------------

/// Each way a write can be dated: the script, and the mode.
#[derive(Debug, Clone, Copy)]
enum Way {
    BatchWhole,
    BatchPart,
    BatchFree,
    StreamWhole,
    StreamPart,
    StreamFree,
}

const WAYS: [Way; 6] = [
    Way::BatchWhole,
    Way::BatchPart,
    Way::BatchFree,
    Way::StreamWhole,
    Way::StreamPart,
    Way::StreamFree,
];

const KEY: &str = "fs:user:u0001";

impl Way {
    fn mode(self) -> u8 {
        match self {
            Way::BatchWhole | Way::StreamWhole => 2,
            Way::BatchPart | Way::StreamPart => 1,
            Way::BatchFree | Way::StreamFree => 0,
        }
    }

    fn streaming(self) -> bool {
        matches!(self, Way::StreamWhole | Way::StreamPart | Way::StreamFree)
    }

    /// Writes features a and b of view v at `t`, both set to `value`, with
    /// TTLs chosen by `long` (so a write that touched a TTL shows).
    fn write(
        self,
        c: &mut impl redis::ConnectionLike,
        t: u64,
        value: &str,
        long: bool,
    ) -> Vec<(i64, i64)> {
        let set = [("a", value), ("b", value)];
        let (field_ttl, batch_ttl) = if long {
            (FIELD_TTL, BATCH_TTL)
        } else {
            (100, 1000)
        };
        let reply = if self.streaming() {
            stream_call(
                c,
                field_ttl,
                batch_ttl,
                &[(KEY, update(t, self.mode(), "v", &set))],
            )
        } else {
            batch_call(c, batch_ttl, &[(KEY, row(t, self.mode(), "v", &[], &set))])
        };
        counts(reply)
    }

    /// The time fields a write at `t` leaves.
    fn times(self, t: u64) -> Vec<(&'static str, String)> {
        match self.mode() {
            2 => vec![("@v", s(t))],
            1 => vec![("a@t", s(t)), ("b@t", s(t)), ("@v+", s(t))],
            _ => vec![("a@t", s(t)), ("b@t", s(t))],
        }
    }

    fn expected(self, t: u64, value: &str) -> HashMap<String, String> {
        let mut h = map(&[("a", value), ("b", value)]);
        h.extend(self.times(t).into_iter().map(|(k, v)| (s(k), v)));
        h
    }
}

#[test]
fn an_equal_event_time_is_a_no_op_values_times_and_ttls_unchanged() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    for way in WAYS {
        flushall(&mut c);
        assert_eq!(way.write(&mut c, T0, "1", true), vec![(2, 0)], "{way:?}");
        let before = snapshot(&mut c);
        // The same time again, other values and much shorter TTLs: had
        // anything been written, the values or the TTLs would show it.
        assert_eq!(way.write(&mut c, T0, "2", false), vec![(0, 2)], "{way:?}");
        assert_eq!(hgetall(&mut c, KEY), way.expected(T0, "1"), "{way:?}");
        same_state(&before, &snapshot(&mut c)).unwrap_or_else(|e| panic!("{way:?}: {e}"));
    }
}

#[test]
fn an_older_event_is_skipped_and_a_newer_one_wins() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    for way in WAYS {
        flushall(&mut c);
        assert_eq!(way.write(&mut c, T0 + 10, "1", true), vec![(2, 0)]);
        let before = snapshot(&mut c);
        assert_eq!(
            way.write(&mut c, T0 + 9, "old", false),
            vec![(0, 2)],
            "{way:?}"
        );
        same_state(&before, &snapshot(&mut c)).unwrap_or_else(|e| panic!("{way:?}: {e}"));

        assert_eq!(
            way.write(&mut c, T0 + 11, "new", false),
            vec![(2, 0)],
            "{way:?}"
        );
        assert_eq!(
            hgetall(&mut c, KEY),
            way.expected(T0 + 11, "new"),
            "{way:?}"
        );
        // The newer write's TTLs: a batch row sets the key TTL (1000 s); a
        // streaming update sets its fields' TTLs (100 s) and leaves the
        // key's alone.
        let key_ttl = pttl(&mut c, KEY);
        let times: Vec<&str> = way.times(0).iter().map(|(k, _)| *k).collect();
        let mut fields = vec!["a", "b"];
        fields.extend(times.iter().filter(|k| !k.ends_with('+')));
        let ttls = hpttl(&mut c, KEY, &fields);
        if way.streaming() {
            assert!(key_ttl > 1_000_000, "{way:?}: key TTL {key_ttl}");
            assert!(
                ttls.iter().all(|t| (99_000..=100_000).contains(t)),
                "{way:?}: {fields:?} {ttls:?}"
            );
        } else {
            assert!(
                (999_000..=1_000_000).contains(&key_ttl),
                "{way:?}: {key_ttl}"
            );
            assert!(ttls.iter().all(|t| *t == -1), "{way:?}: {ttls:?}");
        }
    }
}

// ---- retractions --------------------------------------------------------

#[test]
fn whole_rows_an_older_retraction_cannot_delete_a_newer_value_nor_an_older_value_undo_a_newer_retraction(
) {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let whole = |t: u64, retract_a: bool, value: &str| {
        if retract_a {
            row(t, 2, "v", &["a"], &[("b", value)])
        } else {
            row(t, 2, "v", &[], &[("a", value), ("b", value)])
        }
    };
    assert_eq!(
        counts(batch_call(
            &mut c,
            BATCH_TTL,
            &[(KEY, whole(T0 + 10, false, "1"))]
        )),
        vec![(2, 0)]
    );
    // An older retraction: skipped, a keeps its value.
    assert_eq!(
        counts(batch_call(
            &mut c,
            BATCH_TTL,
            &[(KEY, whole(T0 + 5, true, "x"))]
        )),
        vec![(0, 2)]
    );
    assert_eq!(
        hgetall(&mut c, KEY),
        map(&[("a", "1"), ("b", "1"), ("@v", &s(T0 + 10))])
    );
    // A newer one deletes it...
    assert_eq!(
        counts(batch_call(
            &mut c,
            BATCH_TTL,
            &[(KEY, whole(T0 + 20, true, "2"))]
        )),
        vec![(2, 0)]
    );
    // ...and an older value cannot bring it back.
    assert_eq!(
        counts(batch_call(
            &mut c,
            BATCH_TTL,
            &[(KEY, whole(T0 + 15, false, "3"))]
        )),
        vec![(0, 2)]
    );
    assert_eq!(
        hgetall(&mut c, KEY),
        map(&[("b", "2"), ("@v", &s(T0 + 20))])
    );
    assert!(pttl(&mut c, KEY) > 0);
}

#[test]
fn partial_rows_an_older_retraction_cannot_delete_a_newer_value_nor_an_older_value_undo_a_newer_retraction(
) {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let part = |t: u64, retract: bool, value: &str| {
        if retract {
            row(t, 1, "v", &["a"], &[])
        } else {
            row(t, 1, "v", &[], &[("a", value)])
        }
    };
    let write = |c: &mut common::Raw, r: Vec<String>| counts(batch_call(c, BATCH_TTL, &[(KEY, r)]));
    assert_eq!(write(&mut c, part(T0 + 10, false, "1")), vec![(1, 0)]);
    assert_eq!(write(&mut c, part(T0 + 5, true, "")), vec![(0, 1)]);
    assert_eq!(
        hgetall(&mut c, KEY),
        map(&[("a", "1"), ("a@t", &s(T0 + 10)), ("@v+", &s(T0 + 10))])
    );
    // A newer retraction deletes the value; its time stays as a tombstone...
    assert_eq!(write(&mut c, part(T0 + 20, true, "")), vec![(1, 0)]);
    // ...that neither an older partial row nor an older whole row gets past
    // (the whole row still takes b, which had no newer time).
    assert_eq!(write(&mut c, part(T0 + 15, false, "2")), vec![(0, 1)]);
    assert_eq!(
        write(&mut c, row(T0 + 15, 2, "v", &[], &[("a", "3"), ("b", "3")])),
        vec![(1, 1)]
    );
    assert_eq!(
        hgetall(&mut c, KEY),
        map(&[
            ("a@t", &s(T0 + 20)),
            ("@v+", &s(T0 + 20)),
            ("b", "3"),
            ("@v", &s(T0 + 15)),
        ])
    );
    assert_eq!(
        hpttl(&mut c, KEY, &["a@t", "@v+", "b", "@v"]),
        vec![-1; 4],
        "batch times live as long as the key"
    );
    assert!(pttl(&mut c, KEY) > 0, "the tombstone expires with the key");
}

// ---- a part of a view against the whole of it --------------------------

#[test]
fn a_newer_partial_write_keeps_its_feature_against_an_older_whole_write_which_takes_the_others() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let abc = |v: &'static str| [("a", v), ("b", v), ("c", v)];
    for streaming in [false, true] {
        flushall(&mut c);
        // Whole at T0, part (b) at T0+20, then a late whole at T0+10;
        // streaming parts get a longer field TTL, so it shows who wrote.
        let write =
            |c: &mut common::Raw, t: u64, mode: u8, set: &[(&str, &str)], field_ttl: u64| {
                counts(if streaming {
                    stream_call(c, field_ttl, BATCH_TTL, &[(KEY, update(t, mode, "v", set))])
                } else {
                    batch_call(c, BATCH_TTL, &[(KEY, row(t, mode, "v", &[], set))])
                })
            };
        assert_eq!(write(&mut c, T0, 2, &abc("0"), FIELD_TTL), vec![(3, 0)]);
        assert_eq!(
            write(&mut c, T0 + 20, 1, &[("b", "part")], 900),
            vec![(1, 0)]
        );
        assert_eq!(
            write(&mut c, T0 + 10, 2, &abc("late"), FIELD_TTL),
            vec![(2, 1)]
        );
        let t = |d: u64| s(T0 + d);
        assert_eq!(
            hgetall(&mut c, KEY),
            map(&[
                ("a", "late"),
                ("b", "part"),
                ("c", "late"),
                ("@v", &t(10)),
                ("b@t", &t(20)),
                ("@v+", &t(20)),
            ]),
            "streaming {streaming}"
        );
        if streaming {
            let ttls = hpttl(&mut c, KEY, &["b", "b@t", "a", "c", "@v", "@v+"]);
            assert!(
                ttls[..2].iter().all(|t| *t > 800_000),
                "b keeps its part's TTL: {ttls:?}"
            );
            assert!(
                ttls[2..5].iter().all(|t| (290_000..=300_000).contains(t)),
                "{ttls:?}"
            );
            assert_eq!(ttls[5], -1, "the marker has no field TTL");
        }
        // c alone at T0+25, then a whole write at T0+22: newer than b's own
        // time, which it takes away, older than c's, which stays.
        assert_eq!(
            write(&mut c, T0 + 25, 1, &[("c", "part")], 900),
            vec![(1, 0)]
        );
        assert_eq!(
            write(&mut c, T0 + 22, 2, &abc("22"), FIELD_TTL),
            vec![(2, 1)]
        );
        assert_eq!(
            hgetall(&mut c, KEY),
            map(&[
                ("a", "22"),
                ("b", "22"),
                ("c", "part"),
                ("@v", &t(22)),
                ("c@t", &t(25)),
                ("@v+", &t(25)),
            ]),
            "streaming {streaming}"
        );
        // A whole write newer than every time dates the view alone again.
        assert_eq!(
            write(&mut c, T0 + 30, 2, &abc("3"), FIELD_TTL),
            vec![(3, 0)]
        );
        assert_eq!(
            hgetall(&mut c, KEY),
            map(&[("a", "3"), ("b", "3"), ("c", "3"), ("@v", &t(30))]),
            "streaming {streaming}"
        );
    }
}

// ---- refusals -------------------------------------------------------------

/// Sends `rows` (batch) and `updates` (streaming) for an existing entity
/// and a fresh one, and checks the call is refused with `why` and writes
/// nothing: the existing entity (its row newer than the stored one) is
/// unchanged and the fresh one not created.
fn refused_before_any_write(
    c: &mut impl redis::ConnectionLike,
    what: &str,
    batch: Option<[Vec<String>; 2]>,
    stream: Option<[Vec<String>; 2]>,
    why: &str,
) {
    // One hash tag: a call's keys share a slot, so the same call runs on
    // one server and on a cluster.
    const OLD: &str = "fs:user:{t}:old";
    const FRESH: &str = "fs:user:{t}:fresh";
    flushall(c);
    counts(batch_call(
        c,
        BATCH_TTL,
        &[(OLD, row(T0, 2, "v", &[], &[("a", "0")]))],
    ));
    let before = snapshot(c);
    let mut replies = Vec::new();
    if let Some([r1, r2]) = batch {
        replies.push(batch_call(c, 1000, &[(OLD, r1), (FRESH, r2)]));
    }
    if let Some([u1, u2]) = stream {
        replies.push(stream_call(c, 100, 1000, &[(OLD, u1), (FRESH, u2)]));
    }
    for reply in replies {
        let err = match reply {
            Err(e) => e.to_string(),
            Ok(v) => panic!("{what}: expected a refusal, got {v:?}"),
        };
        assert!(err.contains(why), "{what}: {err:?} should mention {why:?}");
        same_state(&before, &snapshot(c)).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(common::all_keys(c), vec![OLD], "{what} created a key");
    }
}

#[test]
fn a_feature_name_holding_at_is_refused_before_any_write() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let ok_row = row(T0 + 1, 2, "v", &[], &[("a", "1")]);
    let ok_update = update(T0 + 1, 2, "v", &[("a", "1")]);
    for name in ["a@t", "@v", "@v+", "x@y", "@"] {
        refused_before_any_write(
            &mut c,
            &format!("{name} set in the second entity"),
            Some([ok_row.clone(), row(T0 + 1, 1, "v", &[], &[(name, "1")])]),
            Some([ok_update.clone(), update(T0 + 1, 1, "v", &[(name, "1")])]),
            "feature names must be non-empty, without '@'",
        );
        refused_before_any_write(
            &mut c,
            &format!("{name} retracted in the second entity"),
            Some([ok_row.clone(), row(T0 + 1, 0, "-", &[name], &[])]),
            None,
            "feature names must be non-empty, without '@'",
        );
        refused_before_any_write(
            &mut c,
            &format!("{name} after a good feature, first entity"),
            Some([
                row(T0 + 1, 0, "-", &[], &[("b", "1"), (name, "1")]),
                ok_row.clone(),
            ]),
            Some([
                update(T0 + 1, 0, "-", &[("b", "1"), (name, "1")]),
                ok_update.clone(),
            ]),
            "feature names must be non-empty, without '@'",
        );
    }
}

#[test]
fn a_bad_event_time_is_refused_before_any_write() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let ok_row = row(T0 + 1, 2, "v", &[], &[("a", "1")]);
    let ok_update = update(T0 + 1, 2, "v", &[("a", "1")]);
    for bad in [
        "-1",
        "01",
        "00",
        "1234567890123456",
        "1.5",
        "1e3",
        "+1",
        " 1",
        "0x10",
        "",
        "abc",
    ] {
        let mut bad_row = ok_row.clone();
        bad_row[0] = s(bad);
        let mut bad_update = ok_update.clone();
        bad_update[0] = s(bad);
        refused_before_any_write(
            &mut c,
            &format!("time {bad:?} for the second entity"),
            Some([ok_row.clone(), bad_row]),
            Some([ok_update.clone(), bad_update]),
            "2: event time must be epoch ms",
        );
    }
    // The bounds that are accepted: 0, and 15 digits.
    flushall(&mut c);
    for (t, key) in [("0", "fs:user:zero"), ("999999999999999", "fs:user:far")] {
        let mut r = row(0, 2, "v", &[], &[("a", "1")]);
        r[0] = s(t);
        assert_eq!(
            counts(batch_call(&mut c, BATCH_TTL, &[(key, r)])),
            vec![(1, 0)]
        );
        assert_eq!(hgetall(&mut c, key)["@v"], t);
    }
}

// ---- TTLs of the time fields --------------------------------------------

#[test]
fn streaming_times_carry_the_field_ttl_and_the_view_marker_none() {
    let redis = common::redis();
    let mut c = common::raw(&redis);
    load(&mut c);
    let reply = stream_call(
        &mut c,
        FIELD_TTL,
        BATCH_TTL,
        &[
            (KEY, update(T0, 2, "w", &[("a", "1"), ("b", "1")])),
            (KEY, update(T0, 1, "p", &[("c", "1")])),
            (KEY, update(T0, 0, "-", &[("d", "1")])),
        ],
    );
    assert_eq!(counts(reply), vec![(2, 0), (1, 0), (1, 0)]);
    let fields = ["a", "b", "@w", "c", "c@t", "d", "d@t"];
    let ttls = hpttl(&mut c, KEY, &fields);
    for (f, t) in fields.iter().zip(&ttls) {
        assert!(
            (290_000..=300_000).contains(t),
            "{f} carries the field TTL: {t}"
        );
    }
    assert_eq!(
        hpttl(&mut c, KEY, &["@p+"]),
        vec![-1],
        "the marker lives with the key"
    );
    let key_ttl = pttl(&mut c, KEY);
    assert!((86_390_000..=86_400_000).contains(&key_ttl), "{key_ttl}");
    assert_eq!(
        hgetall(&mut c, KEY).len(),
        fields.len() + 1,
        "no other field"
    );
}

// ---- any arrival order ----------------------------------------------------

/// Which features an event writes: the batch view `b`, the streaming view
/// `s`, or free features `x` (no view, mode 0), which both scripts write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Group {
    B,
    S,
    X,
}

impl Group {
    fn names(self) -> [&'static str; 3] {
        match self {
            Group::B => ["b0", "b1", "b2"],
            Group::S => ["s0", "s1", "s2"],
            Group::X => ["x0", "x1", "x2"],
        }
    }

    /// The view's name, and its time field (free features have none).
    fn view(self) -> (&'static str, Option<&'static str>) {
        match self {
            Group::B => ("b", Some("@b")),
            Group::S => ("s", Some("@s")),
            Group::X => ("-", None),
        }
    }
}

/// Two entities, so most events meet another of the same entity.
const ENTITIES: usize = 2;

/// One hash tag for every entity: a call groups several, and its keys must
/// share a slot on a cluster.
fn entity_key(e: usize) -> String {
    format!("fs:user:{{e}}:e{e}")
}

/// One event: a batch row or a streaming update for one entity at one
/// time, covering the whole of its view (mode 2), or the features in
/// `mask` (mode 1, or mode 0 for free features). A batch event retracts
/// the features in `nulls`.
#[derive(Debug, Clone)]
struct Event {
    id: usize,
    streaming: bool,
    group: Group,
    whole: bool,
    entity: usize,
    mask: u8,
    nulls: u8,
    time: u64,
}

impl Event {
    fn covers(&self, f: usize) -> bool {
        self.whole || self.mask & (1 << f) != 0
    }

    fn retracts(&self, f: usize) -> bool {
        !self.streaming && self.nulls & (1 << f) != 0
    }

    /// What feature `f` holds after this event: None for a retraction.
    /// Each event writes its own values, so the end state shows who won.
    fn value(&self, f: usize) -> Option<String> {
        (!self.retracts(f)).then(|| format!("e{}.{f}", self.id))
    }

    /// This event's part of its call's ARGV.
    fn args(&self) -> Vec<String> {
        let names = self.group.names();
        let covered: Vec<usize> = (0..3).filter(|f| self.covers(*f)).collect();
        let retract: Vec<&str> = covered
            .iter()
            .filter(|f| self.retracts(**f))
            .map(|f| names[*f])
            .collect();
        let values: Vec<(usize, String)> = covered
            .iter()
            .filter_map(|f| self.value(*f).map(|v| (*f, v)))
            .collect();
        let set: Vec<(&str, &str)> = values
            .iter()
            .map(|(f, v)| (names[*f], v.as_str()))
            .collect();
        let mode = match (self.group, self.whole) {
            (Group::X, _) => 0,
            (_, true) => 2,
            (_, false) => 1,
        };
        let (view, _) = self.group.view();
        if self.streaming {
            update(self.time, mode, view, &set)
        } else {
            row(self.time, mode, view, &retract, &set)
        }
    }
}

fn events() -> impl Strategy<Value = (Vec<Event>, Vec<usize>)> {
    // (kind, entity, mask, nulls, time): kinds are a batch row of view b
    // (whole or part), a streaming update of view s (whole or part), and
    // free features from either script; six times for up to 15 events,
    // so ties are common.
    let event = (0u8..6, 0..ENTITIES, 1u8..8, 0u8..8, 0u64..6);
    prop::collection::vec(event, 1..16).prop_flat_map(|raw| {
        let n = raw.len();
        let order = Just((0..n).collect::<Vec<_>>()).prop_shuffle();
        // Duplicates (retries, replays), each inserted anywhere.
        let dups = prop::collection::vec((0..n, 0..=n), 0..6);
        (Just(raw), order, dups).prop_map(|(raw, mut order, dups)| {
            let events = raw
                .into_iter()
                .enumerate()
                .map(|(id, (kind, entity, mask, nulls, t))| {
                    let (streaming, group, whole) = match kind {
                        0 => (false, Group::B, true),
                        1 => (false, Group::B, false),
                        2 => (true, Group::S, true),
                        3 => (true, Group::S, false),
                        4 => (false, Group::X, false),
                        _ => (true, Group::X, false),
                    };
                    Event {
                        id,
                        streaming,
                        group,
                        whole,
                        entity,
                        mask,
                        nulls,
                        time: T0 + 1000 * t,
                    }
                })
                .collect();
            for (which, at) in dups {
                order.insert(at.min(order.len()), which);
            }
            (events, order)
        })
    })
}

/// Sends the arrivals in order; consecutive events for the same script go
/// in one call of up to 3 entities (an entity may come twice in a call).
/// Returns the features written.
fn deliver(c: &mut impl redis::ConnectionLike, arrivals: &[&Event]) -> i64 {
    let mut written = 0;
    let mut i = 0;
    while i < arrivals.len() {
        let streaming = arrivals[i].streaming;
        let mut group: Vec<(String, Vec<String>)> = Vec::new();
        while i < arrivals.len() && arrivals[i].streaming == streaming && group.len() < 3 {
            group.push((entity_key(arrivals[i].entity), arrivals[i].args()));
            i += 1;
        }
        let parts: Vec<(&str, Vec<String>)> =
            group.iter().map(|(k, a)| (k.as_str(), a.clone())).collect();
        let reply = if streaming {
            stream_call(c, FIELD_TTL, BATCH_TTL, &parts)
        } else {
            batch_call(c, BATCH_TTL, &parts)
        };
        written += counts(reply).iter().map(|(w, _)| w).sum::<i64>();
    }
    written
}

/// Per (entity, group, feature): the event that must decide it, the
/// newest; among events of the same time, the first to arrive (an equal
/// time is skipped).
fn deciding_events<'a>(arrivals: &[&'a Event]) -> HashMap<(usize, Group, usize), &'a Event> {
    let mut out: HashMap<(usize, Group, usize), &Event> = HashMap::new();
    for e in arrivals {
        for f in (0..3).filter(|f| e.covers(*f)) {
            let slot = out.entry((e.entity, e.group, f)).or_insert(e);
            if e.time > slot.time {
                *slot = e;
            }
        }
    }
    out
}

fn check_arrival_order(
    c: &mut impl redis::ConnectionLike,
    events: &[Event],
    order: &[usize],
) -> Result<(), TestCaseError> {
    flushall(c);
    let arrivals: Vec<&Event> = order.iter().map(|i| &events[*i]).collect();
    deliver(c, &arrivals);
    let deciding = deciding_events(&arrivals);
    let snap = snapshot(c);
    for ent in 0..ENTITIES {
        let key = entity_key(ent);
        let Some((key_ttl, fields)) = snap.get(&key) else {
            prop_assert!(
                !deciding.keys().any(|(e, ..)| *e == ent),
                "{} was written, and is missing",
                key
            );
            continue;
        };
        prop_assert!(*key_ttl > 0, "{} has no key TTL ({})", key, key_ttl);
        let time_of = |field: &str| fields.get(field).and_then(|(v, _)| v.parse::<u64>().ok());
        let mut known = vec![s("@b+"), s("@s+")];
        for group in [Group::B, Group::S, Group::X] {
            let (_, view_field) = group.view();
            let view_time = view_field.and_then(time_of);
            known.extend(view_field.map(s));
            for (f, name) in group.names().iter().enumerate() {
                let own = format!("{name}@t");
                known.extend([s(name), own.clone()]);
                let got = fields.get(*name);
                let Some(e) = deciding.get(&(ent, group, f)) else {
                    prop_assert!(
                        got.is_none() && !fields.contains_key(&own),
                        "{}.{} never written: {:?}",
                        key,
                        name,
                        got
                    );
                    continue;
                };
                prop_assert_eq!(
                    got.map(|(v, _)| v.clone()),
                    e.value(f),
                    "{}.{}: the value of event {:?}",
                    key,
                    name,
                    e
                );
                prop_assert_eq!(
                    view_time.max(time_of(&own)),
                    Some(e.time),
                    "{}.{}: its event time",
                    key,
                    name
                );
                // An own time stays only while not older than the view's
                // (equal: a whole write that tied with it skipped the
                // feature); a whole write that covers a feature takes its
                // own time away.
                if let (Some(own_t), Some(view_t)) = (time_of(&own), view_time) {
                    prop_assert!(
                        own_t >= view_t,
                        "{}.{}: a leftover own time {} under the view's {}",
                        key,
                        name,
                        own_t,
                        view_t
                    );
                }
                // A streaming write gives the value and its own time the
                // field TTL; a batch write leaves them none.
                for (field, (_, ttl)) in [name, own.as_str()]
                    .iter()
                    .filter_map(|n| fields.get(*n).map(|v| (n, v)))
                {
                    if e.streaming {
                        prop_assert!(*ttl > 0, "{}.{} has no field TTL", key, field);
                    } else {
                        prop_assert_eq!(*ttl, -1, "{}.{} carries a field TTL", key, field);
                    }
                }
            }
        }
        // Nothing else; the view fields' TTLs as the view's script sets
        // them (the markers none).
        for (field, (_, ttl)) in fields {
            prop_assert!(known.contains(field), "{}: stray field {}", key, field);
            match field.as_str() {
                "@b" | "@b+" | "@s+" => {
                    prop_assert_eq!(*ttl, -1, "{}.{}: no field TTL", key, field)
                }
                "@s" => prop_assert!(*ttl > 0, "{}.@s has no field TTL", key),
                _ => {}
            }
        }
    }

    // The whole sequence again: every event is now equal or older.
    let written = deliver(c, &arrivals);
    prop_assert_eq!(written, 0, "a replay writes nothing");
    if let Err(e) = same_state(&snap, &snapshot(c)) {
        prop_assert!(false, "a replay changed the state: {}", e);
    }
    Ok(())
}

fn every_arrival_order_ends_at_the_newest_events(redis: &impl common::Backend) {
    // The runner takes a `Fn`: the connection is borrowed per case.
    let conn = std::cell::RefCell::new(common::raw(redis));
    load(&mut conn.borrow_mut());
    let mut runner = TestRunner::new(Config {
        cases: 64,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&events(), |(events, order)| {
            check_arrival_order(&mut conn.borrow_mut(), &events, &order)
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_arrival_order_with_duplicates_ends_at_each_features_newest_event_and_a_replay_changes_nothing(
) {
    every_arrival_order_ends_at_the_newest_events(&common::redis());
}

/// The same where HSETEX is missing (Redis 7.4: HSET then HEXPIRE).
#[test]
fn every_arrival_order_ends_at_the_newest_events_without_hsetex() {
    let redis = feature_store::ManagedRedis::start_with_args(&["--rename-command", "HSETEX", ""])
        .expect("starting redis-server without HSETEX");
    every_arrival_order_ends_at_the_newest_events(&redis);
}
