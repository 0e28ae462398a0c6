//! Typed feature vectors: `POST /v1/features` on the real `fs-server` and
//! `FeatureStore::vectors`, against the two-entity registry. Values are
//! written straight into Redis (HSET, HEXPIRE), as any pipeline or tool
//! would, so what is checked is only how they are read and typed.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value as Json};

use feature_store::registry::{FeatureType, Registry, Value};
use feature_store::store::Status;
use feature_store::StoreError;

use crate::common::{self, wait_until};
use crate::registry::TWO_ENTITIES;
use crate::server::{send, Server};

fn registry_file(dir: &tempfile::TempDir) -> String {
    let path = dir.path().join("two.toml");
    std::fs::write(&path, TWO_ENTITIES).expect("writing the registry file");
    path.display().to_string()
}

fn two_entities() -> Registry {
    Registry::parse(TWO_ENTITIES, "two.toml").expect("TWO_ENTITIES is valid")
}

fn hset(conn: &mut impl redis::ConnectionLike, key: &str, pairs: &[(&str, &[u8])]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (field, value) in pairs {
        cmd.arg(*field).arg(*value);
    }
    cmd.query::<i64>(conn).expect("HSET");
}

fn hexpire(conn: &mut impl redis::ConnectionLike, key: &str, seconds: u64, field: &str) {
    let codes: Vec<i64> = redis::cmd("HEXPIRE")
        .arg(key)
        .arg(seconds)
        .arg("FIELDS")
        .arg(1)
        .arg(field)
        .query(conn)
        .expect("HEXPIRE");
    assert_eq!(codes, [1], "HEXPIRE {key} {field}");
}

/// u1 has every fraud_v1 feature, valid; u2 has invalid text in three of
/// them; u3 was never written. m1 has every merchant feature, m2 none.
fn write_fixture(conn: &mut impl redis::ConnectionLike) {
    hset(
        conn,
        "fs:user:u1",
        &[
            ("country_iso", b"GB"),
            ("age_days", b"412"),
            ("avg_amount", b"92.5"),
            ("verified", b"true"),
            ("nickname", b"ana"),
            ("embedding", b"[0.1,0.25,-3,1e-5]"),
            ("tx_count_5m", b"7"),
            ("last_device", b"d-1"),
        ],
    );
    hexpire(conn, "fs:user:u1", 300, "tx_count_5m");
    hset(
        conn,
        "fs:user:u2",
        &[
            ("age_days", b"abc"),
            ("verified", b"yes"),
            ("embedding", b"[1,2]"),
        ],
    );
    hset(
        conn,
        "fs:merchant:m1",
        &[
            ("mcc", b"5812"),
            ("chargeback_rate", b"0.02"),
            ("orders_1m", b"5"),
        ],
    );
    hexpire(conn, "fs:merchant:m1", 60, "orders_1m");
}

fn features(server: &Server, body: Json) -> (u16, Json) {
    server.post_json("/v1/features", &body)
}

#[test]
fn v1_features_serves_a_models_typed_values_statuses_and_defaults() {
    let redis = common::redis();
    write_fixture(&mut common::raw(&redis));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);

    let (status, v) = features(
        &server,
        json!({"model": "fraud_v1", "ids": ["u1", "u2", "u3"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["model"], "fraud_v1");
    assert_eq!(v["entity"], "user");
    assert_eq!(v["ids"], json!(["u1", "u2", "u3"]));
    let names: Vec<&str> = v["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "user_profile.country_iso",
            "user_profile.age_days",
            "user_profile.verified",
            "user_profile.embedding",
            "user_activity.tx_count_5m",
        ]
    );
    assert_eq!(v["features"][0]["type"], "category");
    assert_eq!(v["features"][0]["values"], json!(["US", "GB", "DE"]));
    assert_eq!(v["features"][1]["default"], 0, "the model's default wins");
    assert_eq!(v["features"][3]["type"], "float_vector[4]");
    assert_eq!(v["features"][3]["length"], 4);
    assert_eq!(v["features"][4]["kind"], "stream");

    assert_eq!(
        v["values"],
        json!([
            ["GB", 412, true, [0.1, 0.25, -3.0, 1e-5], 7],
            // Invalid text is served as missing: the default, or null.
            ["US", 0, false, null, -1],
            ["US", 0, false, null, -1],
        ])
    );
    assert_eq!(
        v["status"],
        json!([
            ["present", "present", "present", "present", "present"],
            ["defaulted", "invalid", "invalid", "invalid", "defaulted"],
            [
                "defaulted",
                "defaulted",
                "defaulted",
                "missing",
                "defaulted"
            ],
        ])
    );
    assert_eq!(v["invalid_count"], 3);
    assert!(v["elapsed_ms"].as_f64().is_some(), "{v}");

    let (_, state) = server.get("/state");
    assert_eq!(state["stats"]["invalid_values_total"], 3, "{state}");
}

#[test]
fn v1_features_serves_an_explicit_feature_list_of_either_entity_in_its_order() {
    let redis = common::redis();
    write_fixture(&mut common::raw(&redis));
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);

    // Bare names and view.feature mixed; the answer keeps the asked order.
    let (status, v) = features(
        &server,
        json!({"entity": "merchant",
               "features": ["merchant_live.orders_1m", "mcc", "merchant_profile.chargeback_rate"],
               "ids": ["m1", "m2"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v.get("model").is_none(), "{v}");
    assert_eq!(v["entity"], "merchant");
    assert_eq!(
        v["features"]
            .as_array()
            .expect("features")
            .iter()
            .map(|f| f["name"].clone())
            .collect::<Vec<_>>(),
        [
            "merchant_live.orders_1m",
            "merchant_profile.mcc",
            "merchant_profile.chargeback_rate"
        ]
    );
    assert_eq!(v["values"], json!([[5, "5812", 0.02], [0, null, null]]));
    assert_eq!(
        v["status"],
        json!([
            ["present", "present", "present"],
            ["defaulted", "missing", "missing"]
        ])
    );

    // The user entity's string and float features, and the merchant model.
    let (status, v) = features(
        &server,
        json!({"features": ["user_profile.nickname", "user_profile.avg_amount", "user_activity.last_device"],
               "ids": ["u1", "u3"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["entity"], "user", "the first view.feature's entity");
    assert_eq!(
        v["values"],
        json!([["ana", 92.5, "d-1"], [null, 0.0, null]])
    );
    let (status, v) = features(&server, json!({"model": "merchant_risk_v1", "ids": ["m1"]}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["entity"], "merchant");
    assert_eq!(v["values"], json!([["5812", 0.02, 5]]));
}

#[test]
fn an_expired_stream_value_is_served_as_its_default() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    write_fixture(&mut conn);
    hexpire(&mut conn, "fs:user:u1", 1, "tx_count_5m");
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);
    let ask = || features(&server, json!({"model": "fraud_v1", "ids": ["u1"]}));

    let mut last = Json::Null;
    wait_until(
        "the 1 s field TTL of tx_count_5m passes",
        Duration::from_secs(5),
        || {
            let (status, v) = ask();
            assert_eq!(status, 200, "{v}");
            last = v;
            last["status"][0][4] == "defaulted"
        },
    );
    assert_eq!(last["values"][0][4], -1, "the model's default: {last}");
    // The batch values of the same entity are untouched.
    assert_eq!(
        last["status"][0],
        json!(["present", "present", "present", "present", "defaulted"])
    );
    let gone: bool = redis::cmd("HEXISTS")
        .arg("fs:user:u1")
        .arg("tx_count_5m")
        .query::<bool>(&mut conn)
        .map(|exists| !exists)
        .expect("HEXISTS");
    assert!(gone, "Redis itself expired the field");
}

#[test]
fn v1_features_refuses_bad_requests_with_400_and_unknown_names_with_404() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);
    let too_many: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
    for (body, code, says) in [
        (
            json!({"model": "fraud_v1", "ids": []}),
            400,
            "ids must list 1 to 1000 entities, got 0",
        ),
        (
            json!({"model": "fraud_v1", "ids": too_many}),
            400,
            "ids must list 1 to 1000 entities, got 1001",
        ),
        (json!({"model": "fraud_v1"}), 400, "ids must list 1 to 1000"),
        (
            json!({"entity": "user", "features": [], "ids": ["u1"]}),
            400,
            "name at least one feature",
        ),
        (json!({"ids": ["u1"]}), 400, "name a model"),
        (
            json!({"model": "fraud_v1", "features": ["age_days"], "ids": ["u1"]}),
            400,
            "not both",
        ),
        (
            json!({"model": "fraud_v1", "ids": ["u1"], "feature": "x"}),
            400,
            "unknown key \"feature\"",
        ),
        (
            json!({"model": "fraud_v1", "entity": "merchant", "ids": ["u1"]}),
            400,
            "reads entity \"user\"",
        ),
        (
            json!({"entity": "merchant", "features": ["mcc"], "ids": ["m.1"]}),
            400,
            "merchant id \"m.1\" contains '.'",
        ),
        (json!({"model": "fraud_v1", "ids": ["u 1"]}), 400, "u 1"),
        (
            json!({"features": ["mcc", "user_profile.age_days"], "ids": ["u1"], "entity": "merchant"}),
            400,
            "must share an entity",
        ),
        (
            json!({"entity": "user", "features": ["age_days", "user_profile.age_days"], "ids": ["u1"]}),
            400,
            "named twice",
        ),
        (
            json!({"model": "fraud_v2", "ids": ["u1"]}),
            404,
            "unknown model \"fraud_v2\"",
        ),
        (
            json!({"entity": "shop", "features": ["mcc"], "ids": ["u1"]}),
            404,
            "unknown entity \"shop\"",
        ),
        (
            json!({"entity": "user", "features": ["user_profile.age"], "ids": ["u1"]}),
            404,
            "unknown feature \"user_profile.age\"",
        ),
        (
            json!({"entity": "user", "features": ["mcc"], "ids": ["u1"]}),
            404,
            "unknown feature \"mcc\" for entity \"user\"",
        ),
    ] {
        let (status, v) = features(&server, body.clone());
        assert_eq!(status, code, "{body}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: {error:?} lacks {says:?}");
    }
    let (status, v) = send(
        server.addr,
        "POST",
        "/v1/features",
        Some("application/json"),
        b"{\"model\": \"fraud_v1\", \"ids\": [\"u1\"",
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not valid JSON"),
        "{v}"
    );
    let (status, v) = server.post_form("/v1/features", "model=fraud_v1&ids=u1");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("takes a JSON body"),
        "{v}"
    );
    assert_eq!(server.get("/v1/features").0, 405);
}

#[test]
fn v1_features_answers_503_while_redis_is_down() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);
    assert_eq!(
        features(&server, json!({"model": "fraud_v1", "ids": ["u1"]})).0,
        200
    );
    redis.stop();
    let started = Instant::now();
    let (status, v) = features(&server, json!({"model": "fraud_v1", "ids": ["u1"]}));
    assert_eq!(status, 503, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap_or_default()
            .contains("redis unavailable"),
        "{v}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn feature_store_vectors_types_the_same_values_as_the_endpoint() {
    let redis = common::redis();
    write_fixture(&mut common::raw(&redis));
    let store = common::store(&redis);
    let registry = two_entities();
    let ids: Vec<String> = ["u1", "u2", "u3"].map(String::from).to_vec();
    let v = store
        .vectors(
            &registry.resolve_model("fraud_v1").expect("model"),
            &ids,
            None,
        )
        .expect("vectors");
    use Status::*;
    assert_eq!(v.ids, ids);
    assert_eq!(
        v.values,
        vec![
            vec![
                Some(Value::String("GB".into())),
                Some(Value::Int(412)),
                Some(Value::Bool(true)),
                Some(Value::FloatVector(vec![0.1, 0.25, -3.0, 1e-5])),
                Some(Value::Int(7)),
            ],
            vec![
                Some(Value::String("US".into())),
                Some(Value::Int(0)),
                Some(Value::Bool(false)),
                None,
                Some(Value::Int(-1)),
            ],
            vec![
                Some(Value::String("US".into())),
                Some(Value::Int(0)),
                Some(Value::Bool(false)),
                None,
                Some(Value::Int(-1)),
            ],
        ]
    );
    assert_eq!(
        v.status,
        vec![
            vec![Present; 5],
            vec![Defaulted, Invalid, Invalid, Invalid, Defaulted],
            vec![Defaulted, Defaulted, Defaulted, Missing, Defaulted],
        ]
    );
    assert_eq!(v.invalid_count, 3);
    assert_eq!(store.stats().invalid_values_total, 3);

    let merchant = registry
        .resolve_features(
            Some("merchant"),
            &["chargeback_rate".into(), "merchant_live.orders_1m".into()],
        )
        .expect("features");
    let m = store
        .vectors(&merchant, &["m1".into(), "m2".into()], None)
        .expect("vectors");
    assert_eq!(
        m.values,
        vec![
            vec![Some(Value::Float(0.02)), Some(Value::Int(5))],
            vec![None, Some(Value::Int(0))],
        ]
    );
    assert_eq!(m.status[1], [Missing, Defaulted]);
}

#[test]
fn feature_store_vectors_refuses_a_bad_id_before_sending_anything() {
    let redis = common::redis();
    let store = common::store(&redis);
    let registry = two_entities();
    let merchant = registry.resolve_model("merchant_risk_v1").expect("model");
    let hmget_calls = || {
        // Every node's count: on a cluster the ids are spread over them.
        common::command_stats(&redis)
            .get("hmget")
            .map_or(0, |c| c.calls)
    };
    let before = hmget_calls();
    let long = "m".repeat(33);
    for ids in [
        vec!["m1".to_string(), "m:2".to_string()],
        vec!["m1".to_string(), long],
        vec![],
        vec!["m1".to_string(); 1001],
    ] {
        let e = store.vectors(&merchant, &ids, None).expect_err("refused");
        assert!(matches!(e, StoreError::InvalidInput(_)), "{e:?}");
    }
    assert_eq!(hmget_calls(), before, "nothing was sent");
}

#[test]
fn a_key_of_another_type_is_invalid_for_that_entity_only() {
    let redis = common::redis();
    let mut conn = common::raw(&redis);
    write_fixture(&mut conn);
    redis::cmd("SET")
        .arg("fs:user:str")
        .arg("x")
        .query::<()>(&mut conn)
        .expect("SET");
    let store = common::store(&redis);
    let model = two_entities().resolve_model("fraud_v1").expect("model");
    let v = store
        .vectors(&model, &["str".into(), "u1".into()], None)
        .expect("vectors");
    assert_eq!(v.status[0], [Status::Invalid; 5]);
    assert_eq!(v.status[1], [Status::Present; 5]);
    assert_eq!(v.invalid_count, 5);
}

/// Whether `value` is a value of `ty`: the right variant, a category among
/// its values, a vector of its length, floats finite.
fn fits(ty: &FeatureType, value: &Value) -> bool {
    match (ty, value) {
        (FeatureType::Int, Value::Int(_)) | (FeatureType::Bool, Value::Bool(_)) => true,
        (FeatureType::Float, Value::Float(x)) => x.is_finite(),
        (FeatureType::String, Value::String(_)) => true,
        (FeatureType::Category(values), Value::String(s)) => values.contains(s),
        (FeatureType::FloatVector(n), Value::FloatVector(xs)) => {
            xs.len() == *n && xs.iter().all(|x| x.is_finite())
        }
        _ => false,
    }
}

/// Bytes a hostile or careless writer might leave in a field: anything,
/// and near misses of every type.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..48),
        "[-+]?[0-9]{0,25}(\\.[0-9]{0,5})?([eE][-+]?[0-9]{1,4})?".prop_map(String::into_bytes),
        Just(b"NaN".to_vec()),
        Just(b"inf".to_vec()),
        Just(b"[1,2,3,4,5]".to_vec()),
        Just(b"[1,2,3,NaN]".to_vec()),
        Just(b"[1, 2, 3, 4]".to_vec()),
        Just(b"[]".to_vec()),
        Just(b"True".to_vec()),
        Just(b"US\0".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        "\\[[0-9eE.,+ -]{0,30}\\]".prop_map(String::into_bytes),
    ]
}

#[test]
fn hostile_stored_bytes_never_panic_nor_serve_a_wrong_type() {
    let redis = common::redis();
    // `TestRunner::run` takes a `Fn`.
    let conn = std::cell::RefCell::new(common::raw(&redis));
    let store = common::store(&redis);
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&redis.url(), &["--registry", &registry_file(&dir)]);
    let registry = two_entities();
    let all: Vec<String> = registry
        .views_of("user")
        .flat_map(|v| {
            v.features
                .iter()
                .map(move |f| format!("{}.{}", v.name, f.name))
        })
        .collect();
    let resolved = registry
        .resolve_features(Some("user"), &all)
        .expect("every user feature");
    let fields: Vec<&str> = resolved.columns.iter().map(|c| c.field.as_str()).collect();

    let mut runner = TestRunner::new(Config::with_cases(96));
    runner
        .run(&prop::collection::vec(hostile(), fields.len()), |raw| {
            let pairs: Vec<(&str, &[u8])> = fields
                .iter()
                .copied()
                .zip(raw.iter().map(Vec::as_slice))
                .collect();
            hset(&mut conn.borrow_mut(), "fs:user:h", &pairs);
            let v = store
                .vectors(&resolved, &["h".into()], None)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for ((column, value), status) in
                resolved.columns.iter().zip(&v.values[0]).zip(&v.status[0])
            {
                match status {
                    Status::Present => {
                        let value = value.as_ref().expect("a present value");
                        prop_assert!(fits(&column.ty, value), "{column:?} served {value:?}");
                        // And it is what the bytes say, not a guess.
                        let stored = raw[fields
                            .iter()
                            .position(|f| *f == column.field)
                            .expect("field")]
                        .clone();
                        prop_assert_eq!(Ok(value.clone()), column.ty.parse_stored(&stored));
                    }
                    Status::Invalid => prop_assert_eq!(value, &column.default),
                    other => prop_assert!(false, "{} stored but {other:?}", column.reference),
                }
            }
            // The server answers the same, as JSON of the right shapes.
            let (status, body) = server.post_json(
                "/v1/features",
                &json!({"entity": "user", "features": all, "ids": ["h"]}),
            );
            prop_assert_eq!(status, 200, "{}", body);
            let want: Vec<Json> = v.values[0]
                .iter()
                .map(|x| x.as_ref().map_or(Json::Null, Value::to_json))
                .collect();
            // Through the same text and parser as the answer: serde_json's
            // default number parser is not correctly rounded, so the text
            // the server sent is compared, not the float parsed from it.
            let want: Json = serde_json::from_str(&json!(want).to_string()).expect("JSON");
            prop_assert_eq!(&body["values"][0], &want);
            let statuses: Vec<&str> = v.status[0].iter().map(|s| s.as_str()).collect();
            prop_assert_eq!(&body["status"][0], &json!(statuses));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}
