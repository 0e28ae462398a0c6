//! `POST /v1/push` on the real `fs-server` with the two-entity registry:
//! what a mixed batch writes (read back raw: values, key TTLs, field TTLs),
//! each entity under its own prefix, the 400/404/503 cases, and generated
//! hostile bodies.

use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::common;
use crate::registry::TWO_ENTITIES;
use crate::server::{send, Server};

/// A server with the two-entity registry (and room for a 1001-row body).
fn start(redis: &impl common::Backend) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("features.toml");
    std::fs::write(&path, TWO_ENTITIES).expect("writing the registry");
    let server = Server::start(
        &redis.url(),
        &[
            "--registry",
            &path.display().to_string(),
            "--max-body-bytes",
            "1048576",
        ],
    );
    (server, dir)
}

fn hgetall(conn: &mut impl redis::ConnectionLike, key: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = crate::common::features(conn, key).into_iter().collect();
    pairs.sort();
    pairs
}

fn ttl(conn: &mut impl redis::ConnectionLike, key: &str) -> i64 {
    redis::cmd("TTL").arg(key).query(conn).expect("TTL")
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

/// `(id, status)` of every row of an answer, in order.
fn statuses(answer: &Value) -> Vec<(String, String)> {
    answer["rows"]
        .as_array()
        .unwrap_or_else(|| panic!("no rows in {answer}"))
        .iter()
        .map(|r| {
            (
                r["id"].as_str().unwrap_or("<null>").to_owned(),
                r["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn error_of(answer: &Value, row: usize) -> String {
    answer["rows"][row]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("row {row} has no error: {answer}"))
        .to_owned()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    out.sort();
    out
}

#[test]
fn a_mixed_push_writes_exactly_the_good_rows_and_names_each_bad_one() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let body = json!({"view": "user_profile", "rows": [
        {"id": "u0001", "features": {"country_iso": "GB", "age_days": 120, "avg_amount": 92.4,
                                     "verified": true, "nickname": "ann b", "embedding": [0.1, 0.25, -3, 1e-7]}},
        {"id": "u0002", "features": {"age_days": 5, "shoe_size": 42}},
        {"id": "u0003", "features": {"age_days": 1.5}},
        {"id": "u0004", "features": {"embedding": [1, 2, 3, 4, 5]}},
        {"id": "bad id!", "features": {"age_days": 1}},
        {"id": "u0005", "features": {"avg_amount": 7}},
        {"id": "u0006", "features": {"country_iso": "FR"}},
        {"id": "u0007", "features": {}},
        {"id": 8, "features": {"age_days": 1}},
        {"id": "u0009", "features": {"verified": "yes", "nickname": 3}},
    ]});
    let (status, answer) = server.post_json("/v1/push", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["view"], "user_profile");
    assert_eq!(answer["written"], 2, "{answer}");
    assert_eq!(answer["rejected"], 8, "{answer}");
    assert!(answer["elapsed_ms"].is_number(), "{answer}");
    let want: Vec<(String, String)> = [
        ("u0001", "written"),
        ("u0002", "rejected"),
        ("u0003", "rejected"),
        ("u0004", "rejected"),
        ("bad id!", "rejected"),
        ("u0005", "written"),
        ("u0006", "rejected"),
        ("u0007", "rejected"),
        ("<null>", "rejected"),
        ("u0009", "rejected"),
    ]
    .iter()
    .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
    .collect();
    assert_eq!(statuses(&answer), want);
    assert!(answer["rows"][0].get("error").is_none(), "{answer}");
    // Each reason names the feature (and its type).
    let e = error_of(&answer, 1);
    assert!(e.contains("unknown feature \"shoe_size\""), "{e}");
    let e = error_of(&answer, 2);
    assert!(e.contains("\"age_days\" (int)") && e.contains("1.5"), "{e}");
    let e = error_of(&answer, 3);
    assert!(
        e.contains("\"embedding\" (float_vector[4])") && e.contains("array of 5"),
        "{e}"
    );
    let e = error_of(&answer, 4);
    assert!(e.contains("bad id!"), "{e}");
    let e = error_of(&answer, 6);
    assert!(
        e.contains("\"country_iso\" (category)") && e.contains("\"FR\""),
        "{e}"
    );
    let e = error_of(&answer, 7);
    assert!(e.contains("features is empty"), "{e}");
    let e = error_of(&answer, 8);
    assert!(e.contains("id must be a string"), "{e}");
    // Every problem of a row, not just the first.
    let e = error_of(&answer, 9);
    assert!(
        e.contains("\"verified\" (bool)") && e.contains("\"nickname\" (string)"),
        "{e}"
    );

    let mut conn = common::raw(&redis);
    assert_eq!(
        common::all_keys(&mut conn),
        ["fs:user:u0001", "fs:user:u0005"],
        "only the good rows are written"
    );
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0001"),
        pairs(&[
            ("country_iso", "GB"),
            ("age_days", "120"),
            ("avg_amount", "92.4"),
            ("verified", "true"),
            ("nickname", "ann b"),
            ("embedding", "[0.1,0.25,-3,1e-7]"),
        ])
    );
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0005"),
        pairs(&[("avg_amount", "7")])
    );
    // The batch view's TTL on the key, none on the fields.
    for key in ["fs:user:u0001", "fs:user:u0005"] {
        let t = ttl(&mut conn, key);
        assert!((86_390..=86_400).contains(&t), "{key} TTL {t}");
    }
    assert_eq!(
        httl(&mut conn, "fs:user:u0001", &["age_days", "embedding"]),
        [-1, -1]
    );
    // Counted like the loader's writes.
    let (_, state) = server.get("/state");
    assert_eq!(state["stats"]["batch_writes_total"], 2, "{state}");
}

#[test]
fn stream_pushes_set_the_views_field_ttl_under_each_entitys_prefix() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let (status, answer) = server.post_json(
        "/v1/push",
        &json!({"view": "user_activity", "rows": [
            {"id": "u0001", "features": {"tx_count_5m": 3, "last_device": "ios-9f02"}},
            {"id": "u0002", "features": {"tx_count_5m": null}},
            {"id": "u0003", "features": {"country_iso": "US"}},
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer)[0].1, "written", "{answer}");
    // A stream view only sets values; another view's feature is unknown here.
    let e = error_of(&answer, 1);
    assert!(
        e.contains("\"tx_count_5m\" (int)") && e.contains("null"),
        "{e}"
    );
    let e = error_of(&answer, 2);
    assert!(e.contains("unknown feature \"country_iso\""), "{e}");

    let (status, answer) = server.post_json(
        "/v1/push",
        &json!({"view": "merchant_live", "rows": [
            {"id": "m_42", "features": {"orders_1m": 7}},
            {"id": "m.42", "features": {"orders_1m": 7}},
            {"id": "m".repeat(33), "features": {"orders_1m": 7}},
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["written"], 1, "{answer}");
    // The merchant entity's own id rules: "_-" only, at most 32 characters.
    assert!(error_of(&answer, 1).contains("'.'"), "{answer}");
    assert!(
        error_of(&answer, 2).contains("at most 32 characters"),
        "{answer}"
    );

    let mut conn = common::raw(&redis);
    assert_eq!(
        common::all_keys(&mut conn),
        ["fs:merchant:m_42", "fs:user:u0001"]
    );
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0001"),
        pairs(&[("tx_count_5m", "3"), ("last_device", "ios-9f02")])
    );
    assert_eq!(
        hgetall(&mut conn, "fs:merchant:m_42"),
        pairs(&[("orders_1m", "7")])
    );
    // The stream view's TTL on each field...
    for t in httl(&mut conn, "fs:user:u0001", &["tx_count_5m", "last_device"]) {
        assert!((290..=300).contains(&t), "user field TTL {t}");
    }
    let t = httl(&mut conn, "fs:merchant:m_42", &["orders_1m"])[0];
    assert!((50..=60).contains(&t), "merchant field TTL {t}");
    // ...and a new key gets its entity's batch TTL, so it is never immortal.
    let t = ttl(&mut conn, "fs:user:u0001");
    assert!((86_390..=86_400).contains(&t), "user key TTL {t}");
    let t = ttl(&mut conn, "fs:merchant:m_42");
    assert!((604_790..=604_800).contains(&t), "merchant key TTL {t}");
    let (_, state) = server.get("/state");
    assert_eq!(state["stats"]["streaming_writes_total"], 2, "{state}");
}

#[test]
fn a_batch_push_of_the_second_entity_writes_under_its_prefix_with_its_ttl() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let (status, answer) = server.post_json(
        "/v1/push",
        &json!({"view": "merchant_profile", "rows": [
            {"id": "m_1", "features": {"mcc": "5411", "chargeback_rate": 0.0125}},
            {"id": "m_2", "features": {"mcc": "9999"}},
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        [
            ("m_1".to_owned(), "written".to_owned()),
            ("m_2".to_owned(), "rejected".to_owned())
        ]
    );
    let mut conn = common::raw(&redis);
    assert_eq!(common::all_keys(&mut conn), ["fs:merchant:m_1"]);
    assert_eq!(
        hgetall(&mut conn, "fs:merchant:m_1"),
        pairs(&[("mcc", "5411"), ("chargeback_rate", "0.0125")])
    );
    let t = ttl(&mut conn, "fs:merchant:m_1");
    assert!((604_790..=604_800).contains(&t), "merchant key TTL {t}");
}

#[test]
fn a_null_retracts_a_batch_feature_and_keeps_the_rest() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let push = |features: Value| {
        server.post_json(
            "/v1/push",
            &json!({"view": "user_profile", "rows": [{"id": "u0001", "features": features}]}),
        )
    };
    let (status, answer) = push(json!({"nickname": "ann", "age_days": 3}));
    assert_eq!(
        (status, answer["written"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    let (status, answer) = push(json!({"nickname": null, "verified": false}));
    assert_eq!(
        (status, answer["written"].clone()),
        (200, json!(1)),
        "{answer}"
    );
    let mut conn = common::raw(&redis);
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0001"),
        pairs(&[("age_days", "3"), ("verified", "false")])
    );
}

#[test]
fn malformed_pushes_are_400_with_the_range_and_unknown_views_404() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let row = json!({"id": "u0001", "features": {"age_days": 1}});
    let too_many: Vec<Value> = (0..1001).map(|_| row.clone()).collect();
    for (body, want) in [
        (
            json!({"view": "user_profile", "rows": []}),
            "1 to 1000 rows, got 0",
        ),
        (
            json!({"view": "user_profile", "rows": too_many}),
            "1 to 1000 rows, got 1001",
        ),
        (json!({"rows": [row.clone()]}), "missing view"),
        (
            json!({"view": 3, "rows": [row.clone()]}),
            "view must be a string",
        ),
        (json!({"view": "user_profile"}), "missing rows"),
        (
            json!({"view": "user_profile", "rows": {}}),
            "rows must be an array",
        ),
        (json!([row.clone()]), "JSON body must be an object"),
    ] {
        let (status, answer) = server.post_json("/v1/push", &body);
        assert_eq!(status, 400, "{body}: {answer}");
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "want {want:?} in {error:?}");
    }
    let (status, answer) = server.post_form("/v1/push", "view=user_profile");
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("JSON body"),
        "{answer}"
    );
    let (status, answer) =
        server.post_json("/v1/push", &json!({"view": "user_profiles", "rows": [row]}));
    assert_eq!(status, 404, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown view \"user_profiles\""),
        "{answer}"
    );
    assert_eq!(server.get("/v1/push").0, 405);
    assert!(common::all_keys(&mut common::raw(&redis)).is_empty());
}

#[test]
fn a_push_while_redis_is_down_is_503_and_works_again_after() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let (server, _dir) = start(&redis);
    let body = json!({"view": "user_activity",
                      "rows": [{"id": "u0001", "features": {"tx_count_5m": 1}}]});
    redis.stop();
    let (status, answer) = server.post_json("/v1/push", &body);
    assert_eq!(status, 503, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("redis unavailable"),
        "{answer}"
    );
    redis.restart().expect("restarting redis");
    common::wait_until("healthz back to 200", Duration::from_secs(10), || {
        server.get("/healthz").0 == 200
    });
    let (status, answer) = server.post_json("/v1/push", &body);
    assert_eq!(
        (status, answer["written"].clone()),
        (200, json!(1)),
        "{answer}"
    );
}

/// Push-shaped bodies with every part possibly wrong: views real and not,
/// rows of real and unknown features, values of any JSON type, ids of any
/// text; and now and then no push shape at all.
fn hostile_body() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|x| json!(x)),
        ".{0,12}".prop_map(Value::from),
    ];
    let value = scalar.prop_recursive(2, 16, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let name = prop_oneof![
        prop::sample::select(vec![
            "country_iso",
            "age_days",
            "avg_amount",
            "verified",
            "nickname",
            "embedding",
            "tx_count_5m",
            "last_device",
            "mcc",
            "chargeback_rate",
            "orders_1m",
        ])
        .prop_map(str::to_owned),
        ".{0,10}",
    ];
    let id = prop_oneof![
        "[a-z0-9_]{1,8}".prop_map(Value::from),
        ".{0,140}".prop_map(Value::from),
        value.clone(),
    ];
    let features = prop_oneof![
        prop::collection::btree_map(name, value.clone(), 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        value.clone(),
    ];
    let row = prop_oneof![
        4 => (id, features).prop_map(|(id, features)| json!({"id": id, "features": features})),
        1 => value.clone(),
    ];
    let view = prop_oneof![
        3 => prop::sample::select(vec![
            "user_profile",
            "user_activity",
            "merchant_profile",
            "merchant_live",
        ])
        .prop_map(Value::from),
        1 => "[a-z_]{1,14}".prop_map(Value::from),
        1 => value.clone(),
    ];
    prop_oneof![
        6 => (view, prop::collection::vec(row, 0..8))
            .prop_map(|(view, rows)| json!({"view": view, "rows": rows})),
        1 => value,
    ]
}

#[test]
fn random_push_bodies_never_get_a_5xx_nor_kill_the_server() {
    let redis = common::redis();
    let (mut server, _dir) = start(&redis);
    let mut runner = TestRunner::new(Config {
        cases: 192,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    // How many answers were each status: the generator must reach the
    // handler's per-row checks, not only its 400s.
    let counts = std::cell::RefCell::new([0u32; 3]);
    runner
        .run(&hostile_body(), |body| {
            let bytes = body.to_string();
            let (status, answer) = send(
                server.addr,
                "POST",
                "/v1/push",
                Some("application/json"),
                bytes.as_bytes(),
            );
            prop_assert!(
                matches!(status, 200 | 400 | 404),
                "status {status} for {bytes}: {answer}"
            );
            counts.borrow_mut()[match status {
                200 => 0,
                400 => 1,
                _ => 2,
            }] += 1;
            if status == 200 {
                let rows = answer["rows"].as_array().map_or(0, Vec::len);
                prop_assert_eq!(Some(rows), body["rows"].as_array().map(Vec::len));
                let written = answer["written"].as_u64().unwrap_or(u64::MAX);
                let rejected = answer["rejected"].as_u64().unwrap_or(u64::MAX);
                prop_assert_eq!(written + rejected, rows as u64, "{}", answer);
            } else {
                prop_assert!(answer["error"].is_string(), "{}", answer);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let [ok, bad, not_found] = counts.into_inner();
    assert!(
        ok >= 20 && bad >= 10 && not_found >= 5,
        "200: {ok}, 400: {bad}, 404: {not_found}"
    );
    assert!(server.is_running());
    assert_eq!(server.get("/healthz").0, 200);
    // Whatever was written is under the registry's two prefixes.
    for key in common::all_keys(&mut common::raw(&redis)) {
        assert!(
            key.starts_with("fs:user:") || key.starts_with("fs:merchant:"),
            "{key}"
        );
    }
}

#[test]
fn a_row_whose_key_holds_another_type_fails_alone() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("SET")
        .arg("fs:user:u0002")
        .arg("another tool's string")
        .query(&mut conn)
        .expect("SET");
    let (status, answer) = server.post_json(
        "/v1/push",
        &json!({"view": "user_profile", "rows": [
            {"id": "u0001", "features": {"age_days": 1}},
            {"id": "u0002", "features": {"age_days": 2}},
            {"id": "u0003", "features": {"age_days": 3}},
        ]}),
    );
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        (&answer["written"], &answer["rejected"], &answer["failed"]),
        (&json!(2), &json!(0), &json!(1)),
        "{answer}"
    );
    assert_eq!(answer["rows"][1]["status"], "failed", "{answer}");
    assert!(error_of(&answer, 1).contains("fs:user:u0002"), "{answer}");
    let value: String = redis::cmd("GET")
        .arg("fs:user:u0002")
        .query(&mut conn)
        .expect("GET");
    assert_eq!(value, "another tool's string");
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0003"),
        pairs(&[("age_days", "3")])
    );
}

#[test]
fn a_store_under_another_prefix_writes_there_and_shares_the_counters() {
    let redis = common::redis();
    let store = common::store(&redis);
    let merchants = store
        .with_key_prefix("fs:merchant:")
        .expect("a valid prefix");
    assert_eq!(merchants.key_prefix(), "fs:merchant:");
    assert_eq!(store.key_prefix(), "fs:user:");
    let row = feature_store::store::BatchRow {
        event_time_ms: None,
        id: "m_1".into(),
        set: vec![("mcc".into(), "5411".into())],
        retract: Vec::new(),
    };
    let report = merchants
        .write_batch_rows(std::slice::from_ref(&row), 60)
        .expect("write");
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(
        common::all_keys(&mut common::raw(&redis)),
        ["fs:merchant:m_1"]
    );
    // One set of counters for every prefix.
    assert_eq!(store.stats().batch_writes_total, 1);
    for bad in ["", "fs:*:", "fs user:"] {
        assert!(store.with_key_prefix(bad).is_err(), "{bad:?} accepted");
    }
    let pinned = merchants.with_batch_ttl(120).expect("a valid TTL");
    assert_eq!(pinned.batch_ttl_seconds(), 120);
    assert!(pinned.with_batch_ttl(0).is_err());
}

/// What a push wrote is what a model reads: both views of the user pushed,
/// then `fraud_v1` through `/v1/features`, typed, with the model's default
/// where nothing was pushed and a rejected row leaving nothing behind.
#[test]
fn what_a_push_wrote_reads_back_typed_through_v1_features() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let (status, profile) = server.post_json(
        "/v1/push",
        &json!({"view": "user_profile", "rows": [
            {"id": "u1", "features": {"country_iso": "DE", "age_days": 40, "verified": true,
                                      "embedding": [0.5, -1.25, 0, 3]}},
            {"id": "u2", "features": {"age_days": "old"}},
        ]}),
    );
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["written"], 1, "{profile}");
    assert_eq!(profile["rejected"], 1, "{profile}");
    let (status, activity) = server.post_json(
        "/v1/push",
        &json!({"view": "user_activity", "rows": [{"id": "u1", "features": {"tx_count_5m": 7}}]}),
    );
    assert_eq!(status, 200, "{activity}");

    let (status, v) = server.post_json(
        "/v1/features",
        &json!({"model": "fraud_v1", "ids": ["u1", "u2"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["values"],
        json!([
            ["DE", 40, true, [0.5, -1.25, 0.0, 3.0], 7],
            ["US", 0, false, null, -1]
        ]),
        "{v}"
    );
    assert_eq!(
        v["status"],
        json!([
            ["present", "present", "present", "present", "present"],
            [
                "defaulted",
                "defaulted",
                "defaulted",
                "missing",
                "defaulted"
            ]
        ]),
        "{v}"
    );
}

#[test]
fn a_pushed_event_older_than_the_stored_one_is_skipped_and_counted() {
    let redis = common::redis();
    let (server, _dir) = start(&redis);
    let push =
        |rows: Value| server.post_json("/v1/push", &json!({"view": "user_activity", "rows": rows}));
    let t = 1_796_140_800_000u64;
    let (status, answer) = push(json!([
        {"id": "u0001", "event_time_ms": t, "features": {"tx_count_5m": 5}},
    ]));
    assert_eq!(
        (status, answer["skipped_stale"].clone()),
        (200, json!(0)),
        "{answer}"
    );
    // A late event and a replay of the first: neither changes the value.
    let (status, answer) = push(json!([
        {"id": "u0001", "event_time_ms": t - 1000, "features": {"tx_count_5m": 4}},
        {"id": "u0001", "event_time_ms": t, "features": {"tx_count_5m": 6}},
    ]));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["written"], 2, "{answer}");
    assert_eq!(answer["skipped_stale"], 2, "{answer}");
    let mut conn = common::raw(&redis);
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0001"),
        pairs(&[("tx_count_5m", "5")])
    );
    // A newer one wins.
    let (_, answer) = push(json!([
        {"id": "u0001", "event_time_ms": t + 1, "features": {"tx_count_5m": 7}},
    ]));
    assert_eq!(answer["skipped_stale"], 0, "{answer}");
    assert_eq!(
        hgetall(&mut conn, "fs:user:u0001"),
        pairs(&[("tx_count_5m", "7")])
    );
    // A time that is not epoch ms rejects its row alone.
    for bad in [
        json!(-1),
        json!(1.5),
        json!("1796140800000"),
        json!(1_000_000_000_000_000u64),
    ] {
        let (status, answer) = push(json!([
            {"id": "u0002", "event_time_ms": bad, "features": {"tx_count_5m": 1}},
            {"id": "u0003", "features": {"tx_count_5m": 1}},
        ]));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            statuses(&answer),
            vec![
                ("u0002".to_string(), "rejected".to_string()),
                ("u0003".to_string(), "written".to_string())
            ],
            "{bad}: {answer}"
        );
        assert!(
            error_of(&answer, 0).contains("event_time_ms must be an integer"),
            "{answer}"
        );
    }
}
