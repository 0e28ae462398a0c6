//! `/read`, `/batch-read` and `/inspect` follow the registry: `entity`
//! picks the entity type (default: the first), reads go under its key
//! prefix with its id rules and features, and `/batch-read values:true`
//! answers the stored values. Each test runs the real `fs-server` on a
//! test-managed Redis with `TWO_ENTITIES` (user first, then merchant).

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::common;
use crate::loader::write_file;
use crate::registry::TWO_ENTITIES;
use crate::server::Server;

/// A server on `redis` serving `TWO_ENTITIES`; the tempdir holds the file.
fn two_entity_server(redis: &impl common::Backend) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_file(dir.path(), "features.toml", TWO_ENTITIES);
    let path = path.display().to_string();
    (Server::start(&redis.url(), &["--registry", &path]), dir)
}

fn hset(conn: &mut impl redis::ConnectionLike, key: &str, pairs: &[(&str, &str)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (f, v) in pairs {
        cmd.arg(*f).arg(*v);
    }
    let _: () = cmd.query(conn).expect("HSET");
}

/// Two merchants and a user that shares an id with one of them, so a read
/// under the wrong prefix shows.
fn seed(redis: &impl common::Backend) {
    let mut conn = common::raw(redis);
    hset(
        &mut conn,
        "fs:merchant:m1",
        &[
            ("mcc", "5812"),
            ("chargeback_rate", "0.02"),
            ("orders_1m", "7"),
        ],
    );
    hset(&mut conn, "fs:merchant:m2", &[("mcc", "7995")]);
    hset(&mut conn, "fs:user:m1", &[("nickname", "not-a-merchant")]);
}

#[test]
fn reads_of_the_merchant_entity_go_under_its_prefix_with_its_features() {
    let redis = common::redis();
    seed(&redis);
    let (server, _dir) = two_entity_server(&redis);

    for (status, read) in [
        server.post_form("/read", "entity=merchant&user=m1"),
        server.post_json("/read", &json!({"entity": "merchant", "user": "m1"})),
    ] {
        assert_eq!(status, 200, "{read}");
        assert_eq!(read["entity"], "merchant");
        assert_eq!(
            read["requested"],
            json!(["mcc", "chargeback_rate", "orders_1m"])
        );
        assert_eq!(
            read["values"],
            json!({"mcc": "5812", "chargeback_rate": "0.02", "orders_1m": "7"})
        );
        assert_eq!(read["returned_count"], 3);
    }

    // Named fields are read under the merchant's prefix too.
    let (_, read) = server.post_form("/read", "entity=merchant&user=m2&field=mcc");
    assert_eq!(read["values"], json!({"mcc": "7995"}));

    let (status, inspect) = server.get("/inspect?entity=merchant&user=m1");
    assert_eq!(status, 200, "{inspect}");
    assert_eq!(inspect["entity"], "merchant");
    let names: Vec<&str> = inspect["fields"]
        .as_array()
        .expect("fields")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["chargeback_rate", "mcc", "orders_1m"]);

    // No entity: the first one (user), its prefix and its 8 features.
    let (status, read) = server.post_form("/read", "user=m1");
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["entity"], "user");
    assert_eq!(read["requested"].as_array().map(Vec::len), Some(8));
    assert_eq!(read["values"]["nickname"], "not-a-merchant");
    assert_eq!(read["returned_count"], 1);
    let (_, inspect) = server.get("/inspect?user=m1");
    assert_eq!(inspect["entity"], "user");
    assert_eq!(inspect["fields"][0]["name"], "nickname");
    // Naming the first entity is the same as naming none.
    let (_, named) = server.post_form("/read", "entity=user&user=m1");
    assert_eq!(named["values"], read["values"]);
}

#[test]
fn an_unknown_entity_is_404_listing_the_known_ones() {
    let redis = common::redis();
    let (server, _dir) = two_entity_server(&redis);
    for (status, body) in [
        server.post_form("/read", "entity=shop&user=s1"),
        server.post_json("/batch-read", &json!({"entity": "shop", "ids": ["s1"]})),
        server.get("/inspect?entity=shop&user=s1"),
    ] {
        assert_eq!(status, 404, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("\"shop\""), "{error}");
        assert!(error.contains("known: user, merchant"), "{error}");
    }
}

#[test]
fn a_merchant_id_breaking_the_merchant_id_rules_is_400() {
    let redis = common::redis();
    let (server, _dir) = two_entity_server(&redis);
    let too_long = "m".repeat(33);
    // `.` is a user id character but not a merchant one (id_chars = "_-"),
    // and merchant ids stop at 32 characters.
    for (id, says) in [("m.1", "contains '.'"), (too_long.as_str(), "at most 32")] {
        for (status, body) in [
            server.post_form("/read", &format!("entity=merchant&user={id}")),
            server.post_json(
                "/batch-read",
                &json!({"entity": "merchant", "ids": ["m1", id]}),
            ),
            server.get(&format!("/inspect?entity=merchant&user={id}")),
        ] {
            assert_eq!(status, 400, "{id}: {body}");
            let error = body["error"].as_str().unwrap_or_default();
            assert!(error.contains("merchant id"), "{error}");
            assert!(error.contains(says), "{error}");
        }
        // The same id is a fine user id.
        let (status, body) = server.post_form("/read", &format!("user={id}"));
        assert_eq!(status, 200, "{id}: {body}");
    }
}

#[test]
fn batch_read_with_values_answers_each_entitys_stored_values_in_id_order() {
    let redis = common::redis();
    seed(&redis);
    let (server, _dir) = two_entity_server(&redis);
    let want = json!([
        {"id": "m2", "values": {"mcc": "7995", "chargeback_rate": null, "orders_1m": null}},
        {"id": "nobody", "values": {"mcc": null, "chargeback_rate": null, "orders_1m": null}},
        {"id": "m1", "values": {"mcc": "5812", "chargeback_rate": "0.02", "orders_1m": "7"}},
    ]);
    for (status, batch) in [
        server.post_json(
            "/batch-read",
            &json!({"entity": "merchant", "ids": ["m2", "nobody", "m1"], "values": true}),
        ),
        server.post_form(
            "/batch-read",
            "entity=merchant&ids=m2,nobody,m1&values=true",
        ),
    ] {
        assert_eq!(status, 200, "{batch}");
        assert_eq!(batch["entity"], "merchant");
        assert_eq!(batch["values"], want);
        // The counting shape is unchanged alongside.
        assert_eq!(batch["entity_count"], 3);
        assert_eq!(batch["found_count"], 2);
        assert_eq!(batch["values_found"], 4);
        assert_eq!(batch["field_count"], 3);
    }

    // Named fields, in the order named; a user read with values.
    let (_, batch) = server.post_json(
        "/batch-read",
        &json!({"entity": "merchant", "ids": ["m1"], "fields": ["orders_1m", "mcc"], "values": true}),
    );
    assert_eq!(
        batch["values"],
        json!([{"id": "m1", "values": {"orders_1m": "7", "mcc": "5812"}}])
    );
    let (_, batch) = server.post_json(
        "/batch-read",
        &json!({"ids": ["m1"], "fields": ["nickname"], "values": true}),
    );
    assert_eq!(batch["entity"], "user");
    assert_eq!(
        batch["values"],
        json!([{"id": "m1", "values": {"nickname": "not-a-merchant"}}])
    );

    // Without `values` (or with false) the answer has none, as before.
    for (_, batch) in [
        server.post_json("/batch-read", &json!({"entity": "merchant", "ids": ["m1"]})),
        server.post_form("/batch-read", "entity=merchant&ids=m1&values=false"),
    ] {
        assert_eq!(batch.get("values"), None, "{batch}");
        assert_eq!(batch["values_found"], 3);
    }
    // A value that is no boolean is refused, not ignored.
    let (status, body) = server.post_form("/batch-read", "ids=m1&values=yes");
    assert_eq!(status, 400, "{body}");
}

#[test]
fn batch_read_count_for_a_non_first_entity_is_refused_unless_ids_are_given() {
    let redis = common::redis();
    seed(&redis);
    let (server, _dir) = two_entity_server(&redis);
    for (status, body) in [
        server.post_form("/batch-read", "entity=merchant&count=5"),
        server.post_json("/batch-read", &json!({"entity": "merchant"})),
    ] {
        assert_eq!(status, 400, "{body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains("give ids for entity merchant"), "{error}");
    }
    let (status, body) = server.post_form("/batch-read", "entity=merchant&count=5&ids=m1");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["values_found"], 3);
    // The first entity samples its ids from the cache as before.
    let (status, body) = server.post_form("/batch-read", "entity=user&count=5");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entity"], "user");
}

/// Generated entity names and ids: a known entity with an id its rules
/// accept is 200, a bad id 400, an unknown entity 404; never a 5xx, and
/// never a read outside the entity's prefix.
#[test]
fn generated_entities_and_ids_are_answered_by_the_entitys_rules() {
    let redis = common::redis();
    let (server, _dir) = two_entity_server(&redis);
    let registry = feature_store::registry::Registry::parse(TWO_ENTITIES, "two.toml")
        .expect("TWO_ENTITIES parses");
    let entity = prop_oneof![
        Just("user".to_owned()),
        Just("merchant".to_owned()),
        "[a-z]{1,8}",
    ];
    let id = prop_oneof!["[a-z0-9_.:@-]{1,40}", ".{0,12}"];
    let mut runner = TestRunner::new(Config {
        cases: 96,
        failure_persistence: None,
        max_shrink_iters: 0,
        ..Config::default()
    });
    runner
        .run(&(entity, id), |(entity, id)| {
            let (status, body) = server.post_json(
                "/batch-read",
                &json!({"entity": entity, "ids": [id], "values": true}),
            );
            let want = match registry.entity(&entity) {
                None => 404,
                Some(e) if e.check_id(&id).is_err() => 400,
                Some(_) => 200,
            };
            prop_assert_eq!(status, want, "{} {:?}: {}", entity, id, body);
            if status == 200 {
                prop_assert_eq!(&body["entity"], &Value::from(entity.as_str()));
                prop_assert_eq!(&body["values"][0]["id"], &Value::from(id.as_str()));
            }
            Ok(())
        })
        .expect("every generated request answered by its entity's rules");
}
