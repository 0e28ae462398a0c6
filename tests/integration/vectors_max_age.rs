//! Typed vectors under an age bound (`max_age_ms`): from the request, from
//! the registry (a feature's, a model's), the tightest winning. Event times
//! are written straight into Redis (`@<view>`, `<feature>@t`, relative to
//! Redis's own `TIME`), as the write scripts store them, so what is checked
//! is only how a read judges them.

use std::time::Duration;

use serde_json::{json, Value as Json};

use feature_store::registry::{Registry, Resolved, Value};
use feature_store::store::{Status, Vectors};

use crate::common::{self, wait_until};
use crate::registry::TWO_ENTITIES;
use crate::server::Server;

/// Redis's clock, in epoch ms: what a read measures ages against.
fn redis_now_ms(conn: &mut impl redis::ConnectionLike) -> u64 {
    let (s, us): (u64, u64) = redis::cmd("TIME").query(conn).expect("TIME");
    s * 1000 + us / 1000
}

fn hset(conn: &mut impl redis::ConnectionLike, key: &str, pairs: &[(&str, String)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (field, value) in pairs {
        cmd.arg(*field).arg(value);
    }
    cmd.query::<i64>(conn).expect("HSET");
}

/// An entity's two streaming values, `tx_count_5m = 7` (default 0) and
/// `last_device = d-1` (no default), written `age_ms` ago by Redis's clock
/// (a whole-view write: `@user_activity`).
fn write_activity(conn: &mut impl redis::ConnectionLike, id: &str, age_ms: u64) {
    let at = redis_now_ms(conn) - age_ms;
    hset(
        conn,
        &format!("fs:user:{id}"),
        &[
            ("tx_count_5m", "7".into()),
            ("last_device", "d-1".into()),
            ("@user_activity", at.to_string()),
        ],
    );
}

fn activity(registry: &Registry) -> Resolved {
    registry
        .resolve_features(
            Some("user"),
            &[
                "user_activity.tx_count_5m".into(),
                "user_activity.last_device".into(),
            ],
        )
        .expect("features")
}

fn two_entities() -> Registry {
    Registry::parse(TWO_ENTITIES, "two.toml").expect("TWO_ENTITIES is valid")
}

/// TWO_ENTITIES with bounds: `tx_count_5m` 3 s of its own, and a model
/// `activity_v1` of both streaming features bounded to 3 s as a whole.
fn bounded_registry_text() -> String {
    let own = "name = \"tx_count_5m\"\ntype = \"int\"\ndefault = 0\n";
    assert!(TWO_ENTITIES.contains(own), "TWO_ENTITIES changed");
    let text = TWO_ENTITIES.replace(own, &format!("{own}max_age_ms = 3000\n"));
    format!(
        "{text}\n[[model]]\nname = \"activity_v1\"\n\
         features = [\"user_activity.tx_count_5m\", \"user_activity.last_device\"]\n\
         max_age_ms = 3000\n"
    )
}

fn ids(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Every age read, asserted to lie in `lo..=hi` (ms).
#[track_caller]
fn assert_ages(v: &Vectors, row: usize, lo: i64, hi: i64) {
    let ages = v.ages.as_ref().expect("a bounded read answers ages");
    for (j, age) in ages[row].iter().enumerate() {
        let age = age.unwrap_or_else(|| panic!("row {row} column {j} has no age: {ages:?}"));
        assert!((lo..=hi).contains(&age), "row {row} column {j}: {age} ms");
    }
}

#[test]
fn a_value_older_than_the_requests_bound_is_stale_and_served_as_its_default() {
    let redis = common::redis();
    write_activity(&mut common::raw(&redis), "u1", 5000);
    let store = common::store(&redis);
    let registry = two_entities();
    let cols = activity(&registry);
    let u1 = ids(&["u1"]);

    let v = store.vectors(&cols, &u1, Some(1000)).expect("vectors");
    assert_eq!(v.status[0], [Status::Stale, Status::Stale]);
    // The feature's default where it has one, else nothing.
    assert_eq!(v.values[0], [Some(Value::Int(0)), None]);
    assert_eq!(v.stale_count, 2);
    assert_eq!(v.columns[0].max_age_ms, Some(1000), "the bound served");
    assert_ages(&v, 0, 5000, 7000);

    let v = store.vectors(&cols, &u1, Some(10_000)).expect("vectors");
    assert_eq!(v.status[0], [Status::Present, Status::Present]);
    assert_eq!(
        v.values[0],
        [Some(Value::Int(7)), Some(Value::String("d-1".into()))]
    );
    assert_eq!(v.stale_count, 0);
    assert_ages(&v, 0, 5000, 7000);
}

#[test]
fn an_undated_value_is_stale_under_any_bound_and_served_without_one() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    // Written by another tool, or before event times: no time field at all.
    hset(&mut conn, "fs:user:u2", &[("tx_count_5m", "7".into())]);
    let store = common::store(&redis);
    let cols = activity(&two_entities());
    let u2 = ids(&["u2"]);

    let v = store
        .vectors(&cols, &u2, Some(315_360_000_000))
        .expect("vectors");
    assert_eq!(v.status[0], [Status::Stale, Status::Missing]);
    assert_eq!(v.values[0], [Some(Value::Int(0)), None]);
    assert_eq!(v.ages, Some(vec![vec![None, None]]));

    let v = store.vectors(&cols, &u2, None).expect("vectors");
    assert_eq!(v.status[0], [Status::Present, Status::Missing]);
    assert_eq!(v.values[0], [Some(Value::Int(7)), None]);
}

#[test]
fn a_features_own_time_newer_than_its_views_judges_it_and_an_older_one_does_not() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    let now = redis_now_ms(&mut conn);
    hset(
        &mut conn,
        "fs:user:u1",
        &[
            ("tx_count_5m", "7".into()),
            ("last_device", "d-1".into()),
            ("@user_activity", (now - 5000).to_string()),
            // Updated alone since the view's last whole write.
            ("tx_count_5m@t", (now - 200).to_string()),
            // An own time older than the view's: the view's write is newer.
            ("last_device@t", (now - 9000).to_string()),
            // The view's marker: the newest own time, as the scripts keep it.
            ("@user_activity+", (now - 200).to_string()),
        ],
    );
    let store = common::store(&redis);
    let cols = activity(&two_entities());

    let v = store
        .vectors(&cols, &ids(&["u1"]), Some(1000))
        .expect("vectors");
    assert_eq!(v.status[0], [Status::Present, Status::Stale]);
    assert_eq!(v.values[0], [Some(Value::Int(7)), None]);
    let ages = &v.ages.as_ref().expect("ages")[0];
    assert!(
        ages[0].is_some_and(|a| (200..1000).contains(&a)),
        "{ages:?}"
    );
    assert!(
        ages[1].is_some_and(|a| (5000..7000).contains(&a)),
        "{ages:?}"
    );

    let v = store
        .vectors(&cols, &ids(&["u1"]), Some(8000))
        .expect("vectors");
    assert_eq!(v.status[0], [Status::Present, Status::Present]);
}

#[test]
fn a_registry_bound_applies_without_a_request_bound_and_a_request_only_tightens_it() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    write_activity(&mut conn, "fresh", 1500);
    write_activity(&mut conn, "old", 5000);
    let store = common::store(&redis);
    let registry = Registry::parse(&bounded_registry_text(), "bounded.toml").expect("valid");
    let both = ids(&["fresh", "old"]);
    let statuses = |resolved: &Resolved, bound: Option<u64>| {
        store
            .vectors(resolved, &both, bound)
            .expect("vectors")
            .status
    };
    use Status::{Present, Stale};

    // The features: tx_count_5m is bounded to 3 s by the registry;
    // last_device has no bound of its own.
    let cols = activity(&registry);
    assert_eq!(cols.columns[0].max_age_ms, Some(3000));
    assert_eq!(
        statuses(&cols, None),
        [[Present, Present], [Stale, Present]]
    );
    // A tighter request wins over the registry.
    assert_eq!(
        statuses(&cols, Some(1000)),
        [[Stale, Stale], [Stale, Stale]]
    );
    // A looser one binds the unbounded column, and does not loosen the
    // bounded one: "old" stays stale.
    assert_eq!(
        statuses(&cols, Some(10_000)),
        [[Present, Present], [Stale, Present]]
    );

    // The model's bound covers every one of its columns.
    let model = registry.resolve_model("activity_v1").expect("model");
    assert_eq!(statuses(&model, None), [[Present, Present], [Stale, Stale]]);
    assert_eq!(
        statuses(&model, Some(60_000)),
        [[Present, Present], [Stale, Stale]]
    );
}

#[test]
fn without_any_bound_the_read_is_todays_one_hmget_per_id_and_no_time() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    write_activity(&mut conn, "u1", 5000);
    let store = common::store(&redis);
    let cols = activity(&two_entities());
    let calls = |command: &str| {
        // Every node's count: on a cluster the ids are spread over them.
        common::command_stats(&redis)
            .get(command)
            .map_or(0, |c| c.calls)
    };
    let (time_before, hmget_before) = (calls("time"), calls("hmget"));
    let v = store
        .vectors(&cols, &ids(&["u1", "u3"]), None)
        .expect("vectors");
    assert_eq!(calls("time"), time_before, "no TIME without a bound");
    assert_eq!(calls("hmget"), hmget_before + 2);
    // The event-time fields are there, yet served as before: the values,
    // their statuses, no ages and nothing stale.
    assert_eq!(
        v.values,
        [
            vec![Some(Value::Int(7)), Some(Value::String("d-1".into()))],
            vec![Some(Value::Int(0)), None],
        ]
    );
    assert_eq!(
        v.status,
        [
            [Status::Present, Status::Present],
            [Status::Defaulted, Status::Missing]
        ]
    );
    assert_eq!((v.ages, v.stale_count), (None, 0));
    assert!(v.columns.iter().all(|c| c.max_age_ms.is_none()));

    // Bounded: one TIME and still one HMGET per id.
    let (time_before, hmget_before) = (calls("time"), calls("hmget"));
    store
        .vectors(&cols, &ids(&["u1", "u3"]), Some(1000))
        .expect("vectors");
    assert_eq!(calls("time"), time_before + 1);
    assert_eq!(calls("hmget"), hmget_before + 2);
}

#[test]
fn a_value_turns_stale_once_its_age_passes_the_bound_not_later() {
    let redis = common::redis();
    write_activity(&mut common::raw(&redis), "u1", 0);
    let store = common::store(&redis);
    let cols = activity(&two_entities());
    let bound = 700;
    let mut seen_fresh = false;
    wait_until("u1's values turn stale", Duration::from_secs(5), || {
        let v = store
            .vectors(&cols, &ids(&["u1"]), Some(bound))
            .expect("vectors");
        let ages = v.ages.as_ref().expect("ages");
        for (status, age) in v.status[0].iter().zip(&ages[0]) {
            let age = age.expect("dated");
            // Stale exactly when the age (on Redis's clock) exceeds
            // the bound: not before, not later.
            assert_eq!(*status == Status::Stale, age > bound as i64, "{age} ms");
        }
        seen_fresh |= v.status[0][0] == Status::Present;
        v.status[0] == [Status::Stale, Status::Stale]
    });
    assert!(
        seen_fresh,
        "the values were served while younger than the bound"
    );
}

fn features(server: &Server, body: Json) -> (u16, Json) {
    server.post_json("/v1/features", &body)
}

#[test]
fn v1_features_max_age_ms_serves_stale_values_as_defaults_with_their_ages() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bounded.toml");
    std::fs::write(&path, bounded_registry_text()).expect("writing the registry");
    let server = Server::start(&redis.url(), &["--registry", &path.display().to_string()]);
    // Written once the server is up, so the ages below are the test's.
    let mut conn = common::raw(&redis);
    let now = redis_now_ms(&mut conn);
    hset(
        &mut conn,
        "fs:user:u1",
        &[
            ("country_iso", "GB".into()),
            ("age_days", "412".into()),
            ("verified", "true".into()),
            ("embedding", "[0.1,0.25,-3,1e-5]".into()),
            ("@user_profile", (now - 100).to_string()),
            ("tx_count_5m", "7".into()),
            ("@user_activity", (now - 5000).to_string()),
        ],
    );

    // fraud_v1: four batch columns, then tx_count_5m (model default -1).
    let (status, v) = features(
        &server,
        json!({"model": "fraud_v1", "ids": ["u1"], "max_age_ms": 1000}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["status"][0],
        json!(["present", "present", "present", "present", "stale"])
    );
    assert_eq!(
        v["values"][0],
        json!(["GB", 412, true, [0.1, 0.25, -3.0, 1e-5], -1])
    );
    assert_eq!(v["stale_count"], 1);
    assert_eq!(v["invalid_count"], 0);
    assert_eq!(v["features"][0]["max_age_ms"], 1000);
    let ages = v["age_ms"][0].as_array().expect("age_ms").clone();
    assert!(
        ages[..4]
            .iter()
            .all(|a| (100..1000).contains(&a.as_i64().unwrap_or(-1))),
        "{v}"
    );
    assert!(
        (5000..7000).contains(&ages[4].as_i64().unwrap_or(-1)),
        "{v}"
    );

    // Looser than the registry's 3 s for tx_count_5m: still stale; the
    // batch columns get the request's bound.
    let (_, v) = features(
        &server,
        json!({"model": "fraud_v1", "ids": ["u1"], "max_age_ms": 60000}),
    );
    assert_eq!(v["status"][0][4], "stale", "{v}");
    assert_eq!(v["status"][0][0], "present", "{v}");
    assert_eq!(v["features"][4]["max_age_ms"], 3000, "{v}");
    assert_eq!(v["features"][0]["max_age_ms"], 60000, "{v}");

    // No request bound: the registry's applies, and ages are shown since
    // the read was bounded.
    let (_, v) = features(&server, json!({"model": "fraud_v1", "ids": ["u1"]}));
    assert_eq!(v["status"][0][4], "stale", "{v}");
    assert_eq!(v["features"][0]["max_age_ms"], Json::Null, "{v}");
    assert!(v["age_ms"].is_array(), "{v}");

    // A read of unbounded columns only answers as it always did.
    let (_, v) = features(
        &server,
        json!({"entity": "user", "features": ["country_iso", "age_days"], "ids": ["u1"]}),
    );
    assert_eq!(v["status"][0], json!(["present", "present"]), "{v}");
    assert_eq!(v["stale_count"], 0);
    assert!(v.get("age_ms").is_none(), "{v}");
}

#[test]
fn v1_features_refuses_a_max_age_ms_that_is_not_a_whole_number_of_ms_in_range() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("two.toml");
    std::fs::write(&path, TWO_ENTITIES).expect("writing the registry");
    let server = Server::start(&redis.url(), &["--registry", &path.display().to_string()]);
    for bad in [
        json!(-1),
        json!(1.5),
        json!("1000"),
        json!(315_360_000_001u64),
        json!(true),
    ] {
        let (status, v) = features(
            &server,
            json!({"model": "fraud_v1", "ids": ["u1"], "max_age_ms": bad}),
        );
        assert_eq!(status, 400, "{bad}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("max_age_ms must be an integer from 0 to 315360000000"),
            "{bad}: {error}"
        );
    }
    for fine in [json!(0), json!(null), json!(315_360_000_000u64)] {
        let (status, v) = features(
            &server,
            json!({"model": "fraud_v1", "ids": ["u1"], "max_age_ms": fine}),
        );
        assert_eq!(status, 200, "{fine}: {v}");
    }
}

#[test]
fn the_page_marks_a_stale_value_and_shows_its_age() {
    let Some(bin) = crate::server::chromium() else {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed; CI must run the browser tests");
        }
        eprintln!("SKIPPED the_page_marks_a_stale_value_and_shows_its_age: no chromium");
        return;
    };
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bounded.toml");
    std::fs::write(&path, bounded_registry_text()).expect("writing the registry");
    let server = Server::start(&redis.url(), &["--registry", &path.display().to_string()]);
    // fraud_v1 (the page's first model) reads tx_count_5m, bounded to 3 s
    // by the registry; this one is 5 s old.
    write_activity(&mut common::raw(&redis), "u1", 5000);

    let dom = crate::server::run_chromium(
        &bin,
        "--dump-dom",
        &format!("http://{}/?user=u1&run=model", server.addr),
    );
    assert!(
        dom.contains("model: ok"),
        "the model step did not run:\n{dom}"
    );
    // The model's default (-1) is served, marked stale, with its age.
    let cell = dom
        .split("<td")
        .find(|td| td.contains("class=\"st-stale\""))
        .unwrap_or_else(|| panic!("no stale cell:\n{dom}"));
    assert!(cell.contains(">-1 (stale: default)<"), "{cell}");
    // Chromium starts after the write: the age is at least the 5 s.
    let age: u64 = cell
        .split("title=\"age ")
        .nth(1)
        .and_then(|t| t.split(" ms").next())
        .map(|t| t.replace(',', ""))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no age in {cell}"));
    assert!((5000..120_000).contains(&age), "{cell}");
    assert!(dom.contains("stale <b>1</b>"), "{dom}");
}

#[test]
fn a_key_of_another_type_stays_invalid_under_a_bound() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    redis::cmd("SET")
        .arg("fs:user:str")
        .arg("x")
        .query::<()>(&mut conn)
        .expect("SET");
    write_activity(&mut conn, "u1", 0);
    let store = common::store(&redis);
    let v = store
        .vectors(
            &activity(&two_entities()),
            &ids(&["str", "u1"]),
            Some(60_000),
        )
        .expect("vectors");
    assert_eq!(v.status[0], [Status::Invalid, Status::Invalid]);
    assert_eq!(v.status[1], [Status::Present, Status::Present]);
    assert_eq!((v.invalid_count, v.stale_count), (2, 0));
    assert_eq!(
        v.ages.as_ref().map(|a| a[0].clone()),
        Some(vec![None, None])
    );
}

/// What another tool might leave in an event-time field: a valid time
/// (old or new, as text), near misses, or any bytes.
fn hostile_time(now: u64) -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    use proptest::prelude::*;
    prop_oneof![
        (0..20_000u64).prop_map(move |back| (now - back).to_string().into_bytes()),
        (0..5_000u64).prop_map(move |ahead| (now + ahead).to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..20),
        "[-+ ]?[0-9]{0,17}(\\.[0-9]{0,3})?(e[0-9])?".prop_map(String::into_bytes),
    ]
}

#[test]
fn hostile_event_time_fields_never_serve_a_value_older_than_the_bound() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let redis = common::redis();
    let conn = std::cell::RefCell::new(common::raw(&redis));
    let now = redis_now_ms(&mut conn.borrow_mut());
    let store = common::store(&redis);
    let cols = activity(&two_entities());
    let bound = 10_000u64;
    let mut runner = TestRunner::new(Config::with_cases(96));
    runner
        .run(
            &(hostile_time(now), hostile_time(now), any::<bool>()),
            |(view_time, own_time, with_own)| {
                let mut cmd = redis::cmd("HSET");
                cmd.arg("fs:user:h")
                    .arg("tx_count_5m")
                    .arg("7")
                    .arg("@user_activity")
                    .arg(&view_time);
                if with_own {
                    // With the view's marker, as the scripts write an own
                    // time (the newest own time: here the only one).
                    cmd.arg("tx_count_5m@t")
                        .arg(&own_time)
                        .arg("@user_activity+")
                        .arg(&own_time);
                }
                cmd.query::<i64>(&mut *conn.borrow_mut()).expect("HSET");
                if !with_own {
                    redis::cmd("HDEL")
                        .arg("fs:user:h")
                        .arg("tx_count_5m@t")
                        .arg("@user_activity+")
                        .query::<i64>(&mut *conn.borrow_mut())
                        .expect("HDEL");
                }
                let v = store
                    .vectors(&cols, &ids(&["h"]), Some(bound))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let age = v.ages.as_ref().expect("ages")[0][0];
                // A time counts only as plain decimal text; the newer wins.
                let parse = |b: &[u8]| -> Option<u64> {
                    let s = std::str::from_utf8(b).ok()?;
                    (!s.is_empty() && s.len() <= 15 && s.bytes().all(|c| c.is_ascii_digit()))
                        .then(|| s.parse().ok())
                        .flatten()
                };
                let own = if with_own { parse(&own_time) } else { None };
                let newest = parse(&view_time).max(own);
                match (v.status[0][0], age) {
                    (Status::Present, Some(a)) => {
                        prop_assert!(a <= bound as i64, "served at age {a}");
                        prop_assert!(newest.is_some());
                        prop_assert_eq!(v.values[0][0].clone(), Some(Value::Int(7)));
                    }
                    (Status::Stale, Some(a)) => prop_assert!(a > bound as i64, "stale at {a}"),
                    (Status::Stale, None) => prop_assert_eq!(newest, None),
                    other => prop_assert!(false, "{:?}", other),
                }
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
