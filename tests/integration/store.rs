//! Every public `FeatureStore` method against a real Redis.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use feature_store::demo::synth::{self, BATCH_FEATURES, STREAMING_FEATURES};
use feature_store::store::BatchRow;
use feature_store::{FeatureMap, FeatureValue, ReadValue, StoreConfig, StoreError};

use crate::common;

fn streaming(pairs: &[(&str, FeatureValue)]) -> FeatureMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[test]
fn bulk_load_writes_every_row_across_chunks() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            chunk_size: 7,
            entities_per_call: 3,
            ..common::store_config()
        },
    );
    let rows: Vec<_> = synth::users(50, 42).collect();
    let report = store.bulk_load(&rows, 3600).expect("bulk load");
    assert_eq!(report.written, 50);
    assert!(report.is_complete(), "{:?}", report.failed);
    assert_eq!(store.count_entities().expect("count"), 50);
    for (id, features) in rows.iter().step_by(9) {
        let got = store.get_features(id, &BATCH_FEATURES).expect("read");
        let want: BTreeMap<String, ReadValue> = features
            .iter()
            .map(|(k, v)| (k.clone(), v.encode().into()))
            .collect();
        assert_eq!(got, want, "{id}");
        let ttl = store.key_ttl(id).expect("ttl");
        assert!((3590..=3600).contains(&ttl), "{id}: {ttl}");
    }
    assert_eq!(store.stats().batch_writes_total, 50);
}

#[test]
fn bulk_load_reports_bad_rows_and_writes_the_rest() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            chunk_size: 3,
            ..common::store_config()
        },
    );
    let mut rows: Vec<_> = synth::users(6, 1).collect();
    rows[1].0 = "bad id".into();
    rows[4].1.insert("bad name!".into(), 1i64.into());
    rows[5].1.insert("nan".into(), f64::NAN.into());
    let report = store.bulk_load(&rows, 600).expect("bulk load");
    assert_eq!(report.written, 3);
    let failed: Vec<(usize, &str)> = report
        .failed
        .iter()
        .map(|f| (f.index, f.id.as_str()))
        .collect();
    assert_eq!(failed, vec![(1, "bad id"), (4, "u0005"), (5, "u0006")]);
    assert!(report
        .failed
        .iter()
        .all(|f| matches!(f.error, StoreError::InvalidInput(_))));
    let mut conn = common::raw(&redis);
    assert_eq!(
        common::all_keys(&mut conn),
        ["fs:user:u0001", "fs:user:u0003", "fs:user:u0004"]
    );
}

#[test]
fn a_key_of_another_type_fails_only_its_own_row() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            entities_per_call: 4,
            ..common::store_config()
        },
    );
    let mut conn = common::raw(&redis);
    redis::cmd("SET")
        .arg("fs:user:u0003")
        .arg("not a hash")
        .query::<()>(&mut conn)
        .expect("SET");
    let rows: Vec<_> = synth::users(8, 1).collect();
    let report = store.bulk_load(&rows, 600).expect("bulk load");
    assert_eq!(report.written, 7);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(
        (report.failed[0].index, report.failed[0].id.as_str()),
        (2, "u0003")
    );
    assert!(
        report.failed[0].error.to_string().contains("WRONGTYPE"),
        "{:?}",
        report.failed[0]
    );

    let events: Vec<_> = rows
        .iter()
        .map(|(id, _)| (id.clone(), streaming(&[("tx_count_5m", 1i64.into())])))
        .collect();
    let report = store.update_streaming_many(&events, 60).expect("streaming");
    assert_eq!((report.written, report.failed.len()), (7, 1));
    let err = store
        .update_streaming("u0003", &events[2].1, 60)
        .expect_err("a string key is not an entity");
    assert!(err.to_string().contains("WRONGTYPE"), "{err}");
    let value: String = redis::cmd("GET")
        .arg("fs:user:u0003")
        .query(&mut conn)
        .expect("GET");
    assert_eq!(value, "not a hash");
}

#[test]
fn entities_per_call_is_validated() {
    let redis = common::redis();
    for bad in [0, feature_store::store::MAX_ENTITIES_PER_CALL + 1] {
        let config = StoreConfig {
            entities_per_call: bad,
            ..common::store_config()
        };
        let err = feature_store::FeatureStore::open(&redis.url(), config)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("entities per call"), "{err}");
    }
}

#[test]
fn bulk_load_refuses_bad_ttls_before_writing() {
    let redis = common::redis();
    let store = common::store(&redis);
    let rows: Vec<_> = synth::users(3, 1).collect();
    for ttl in [0, feature_store::store::MAX_TTL_SECONDS + 1] {
        let err = store.bulk_load(&rows, ttl).expect_err("bad ttl");
        assert!(err.to_string().contains("ttl must be 1 to"), "{err}");
    }
    assert_eq!(store.count_entities().expect("count"), 0);
}

#[test]
fn write_batch_rows_sets_and_retracts_atomically() {
    let redis = common::redis();
    let store = common::store(&redis);
    let row = |set: &[(&str, &str)], retract: &[&str]| BatchRow {
        event_time_ms: None,
        id: "u0001".into(),
        set: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        retract: retract.iter().map(|s| s.to_string()).collect(),
    };
    let report = store
        .write_batch_rows(&[row(&[("a", "1"), ("b", "2")], &[])], 600)
        .expect("write");
    assert_eq!(report.written, 1);
    let report = store
        .write_batch_rows(&[row(&[("a", "3")], &["b"])], 600)
        .expect("write");
    assert_eq!(report.written, 1);
    let got = store.get_features("u0001", &["a", "b"]).expect("read");
    assert_eq!(
        got,
        BTreeMap::from([("a".to_string(), ReadValue::from("3"))])
    );
    let report = store
        .write_batch_rows(&[row(&[], &[])], 600)
        .expect("write");
    assert_eq!((report.written, report.failed.len()), (0, 1));
}

#[test]
fn update_streaming_sets_field_ttls_and_keeps_batch_fields() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(1, 5).collect::<Vec<_>>(), 1000)
        .expect("load");
    let fields = streaming(&[
        ("tx_count_5m", 3i64.into()),
        ("last_device_id", "ios-9f02".into()),
    ]);
    store
        .update_streaming("u0001", &fields, 120)
        .expect("write");
    let ttls = store
        .field_ttls(
            "u0001",
            &["tx_count_5m", "last_device_id", "country_iso", "missing"],
        )
        .expect("ttls");
    assert!(
        (110..=120).contains(&ttls[0]) && (110..=120).contains(&ttls[1]),
        "{ttls:?}"
    );
    assert_eq!(&ttls[2..], &[-1, -2]);
    assert!(
        store.key_ttl("u0001").expect("ttl") <= 1000,
        "a streaming write does not extend the key"
    );

    // A new entity gets the store's batch TTL pinned.
    store
        .update_streaming("u0777", &fields, 120)
        .expect("write");
    let ttl = store.key_ttl("u0777").expect("ttl");
    assert!(ttl > 86_000, "pinned batch ttl {ttl}");
    assert_eq!(store.stats().streaming_writes_total, 2);
}

#[test]
fn update_streaming_refuses_bad_input_without_writing() {
    let redis = common::redis();
    let store = common::store(&redis);
    let ok = streaming(&[("tx_count_5m", 1i64.into())]);
    let cases: Vec<(&str, FeatureMap, u64, &str)> = vec![
        ("u1", ok.clone(), 0, "ttl must be"),
        ("u*", ok.clone(), 60, "entity id"),
        ("", ok.clone(), 60, "entity id"),
        ("u1", FeatureMap::new(), 60, "at least one feature"),
        ("u1", streaming(&[("a b", 1i64.into())]), 60, "feature name"),
        (
            "u1",
            streaming(&[("x", f64::INFINITY.into())]),
            60,
            "no text form",
        ),
    ];
    for (id, fields, ttl, expected) in cases {
        let err = store
            .update_streaming(id, &fields, ttl)
            .expect_err(expected);
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err:?}");
        assert!(
            err.to_string().contains(expected),
            "{err} should mention {expected}"
        );
    }
    assert_eq!(store.count_entities().expect("count"), 0);
}

#[test]
fn update_streaming_many_is_one_call_per_entity() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            chunk_size: 4,
            ..common::store_config()
        },
    );
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(9);
    let mut events: Vec<_> = (1..=10)
        .map(|i| {
            (
                synth::user_id(i),
                synth::streaming_features(&mut rng, 1_700_000_000_000),
            )
        })
        .collect();
    events[3].0 = "no/good".into();
    let report = store.update_streaming_many(&events, 60).expect("write");
    assert_eq!(report.written, 9);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].index, 3);
    let ttls = store
        .field_ttls("u0010", &STREAMING_FEATURES)
        .expect("ttls");
    assert!(ttls.iter().all(|t| (50..=60).contains(t)), "{ttls:?}");
}

#[test]
fn update_streaming_rows_writes_wire_form_rows_and_refuses_retractions() {
    let redis = common::redis();
    let store = common::store(&redis);
    let row = |id: &str, set: &[(&str, &str)], retract: &[&str]| BatchRow {
        event_time_ms: None,
        id: id.into(),
        set: set
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        retract: retract.iter().map(|s| s.to_string()).collect(),
    };
    let rows = [
        row("u0001", &[("tx_count_5m", "3")], &[]),
        row("u0002", &[("tx_count_5m", "4")], &["last_device_id"]),
        row("u0003", &[], &[]),
    ];
    let report = store.update_streaming_rows(&rows, 60).expect("write");
    assert_eq!(report.written, 1);
    let failed: Vec<usize> = report.failed.iter().map(|f| f.index).collect();
    assert_eq!(failed, vec![1, 2]);
    assert!(report.failed[0]
        .error
        .to_string()
        .contains("cannot retract"));
    let ttl = store.field_ttls("u0001", &["tx_count_5m"]).expect("ttl")[0];
    assert!((50..=60).contains(&ttl), "{ttl}");
    assert_eq!(
        store.key_ttl("u0002").expect("ttl"),
        -2,
        "a refused row writes nothing"
    );
    assert_eq!(store.stats().streaming_writes_total, 1);
}

#[test]
fn get_features_leaves_out_missing_fields_and_entities() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(2, 3).collect::<Vec<_>>(), 600)
        .expect("load");
    let got = store
        .get_features("u0001", &["country_iso", "no_such_feature"])
        .expect("read");
    assert_eq!(got.keys().collect::<Vec<_>>(), ["country_iso"]);
    assert!(store
        .get_features("u9999", &["country_iso"])
        .expect("read")
        .is_empty());
    assert!(store
        .get_features::<&str>("u0001", &[])
        .expect("read")
        .is_empty());
    let err = store.get_features("u 1", &["a"]).expect_err("bad id");
    assert!(matches!(err, StoreError::InvalidInput(_)));
    let err = store.get_features("u0001", &["a*"]).expect_err("bad name");
    assert!(matches!(err, StoreError::InvalidInput(_)));
    let stats = store.stats();
    // Two reads reached Redis (the empty name list did not).
    assert_eq!((stats.reads_total, stats.read_fields_total), (2, 1));
}

#[test]
fn batch_get_features_returns_feature_vectors_in_order() {
    let redis = common::redis();
    let store = common::store(&redis);
    let rows: Vec<_> = synth::users(30, 8).collect();
    store.bulk_load(&rows, 600).expect("load");
    let ids = ["u0030", "u0404", "u0001", "u0015"];
    let names = ["risk_segment", "nope", "tx_count_7d"];
    let got = store.batch_get_features(&ids, &names).expect("read");
    assert_eq!(got.len(), 4);
    assert_eq!(
        got[1],
        Ok(vec![None, None, None]),
        "a missing entity is all None"
    );
    for (i, id) in [(0, "u0030"), (2, "u0001"), (3, "u0015")] {
        let n: usize = id[1..].parse().expect("number");
        let want = &rows[n - 1].1;
        assert_eq!(
            got[i],
            Ok(vec![
                Some(want["risk_segment"].encode().into()),
                None,
                Some(want["tx_count_7d"].encode().into())
            ]),
            "{id}"
        );
    }
    let stats = store.stats();
    assert_eq!((stats.reads_total, stats.read_fields_total), (4, 6));
    assert!(store
        .batch_get_features::<&str, &str>(&[], &["a"])
        .expect("empty")
        .is_empty());
    let err = store
        .batch_get_features(&["u1", "bad id"], &["a"])
        .expect_err("bad id");
    assert!(matches!(err, StoreError::InvalidInput(_)));
}

#[test]
fn read_fresh_and_inspect_report_freshness() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(1, 2).collect::<Vec<_>>(), 900)
        .expect("load");
    store
        .update_streaming("u0001", &streaming(&[("tx_count_5m", 7i64.into())]), 100)
        .expect("write");
    let read = store
        .read_fresh("u0001", &["tx_count_5m", "country_iso", "gone"])
        .expect("read");
    assert!(read.exists());
    assert!((890..=900).contains(&read.key_ttl_seconds));
    assert_eq!(read.fields[0].text(), Some("7"));
    assert!((90..=100).contains(&read.fields[0].ttl_seconds));
    assert_eq!(read.fields[1].ttl_seconds, -1);
    assert_eq!(
        (read.fields[2].text(), read.fields[2].ttl_seconds),
        (None, -2)
    );

    let whole = store.inspect("u0001").expect("inspect");
    let names: Vec<_> = whole.fields.iter().map(|f| f.name.as_str()).collect();
    let mut want: Vec<_> = BATCH_FEATURES.to_vec();
    want.push("tx_count_5m");
    want.sort();
    assert_eq!(names, want);

    let missing = store.inspect("u0404").expect("inspect missing");
    assert!(!missing.exists());
    assert!(missing.fields.is_empty());
    let err = store
        .read_fresh::<&str>("u0001", &[])
        .expect_err("no names");
    assert!(matches!(err, StoreError::InvalidInput(_)));
}

#[test]
fn streaming_fields_expire_while_batch_fields_stay() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(1, 2).collect::<Vec<_>>(), 600)
        .expect("load");
    store
        .update_streaming("u0001", &streaming(&[("tx_count_5m", 1i64.into())]), 1)
        .expect("write");
    common::wait_until(
        "the streaming field expires",
        Duration::from_secs(5),
        || {
            store
                .get_features("u0001", &["tx_count_5m"])
                .expect("read")
                .is_empty()
        },
    );
    assert_eq!(
        store
            .get_features("u0001", &BATCH_FEATURES)
            .expect("read")
            .len(),
        6
    );
    assert_eq!(
        store.field_ttls("u0001", &["tx_count_5m"]).expect("ttl"),
        vec![-2]
    );
}

#[test]
fn entities_expire_with_their_batch_ttl() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(5, 2).collect::<Vec<_>>(), 1)
        .expect("load");
    assert_eq!(store.count_entities().expect("count"), 5);
    common::wait_until("every entity expires", Duration::from_secs(5), || {
        store.count_entities().expect("count") == 0
    });
    assert!(store
        .get_features("u0001", &BATCH_FEATURES)
        .expect("read")
        .is_empty());
    assert_eq!(store.key_ttl("u0001").expect("ttl"), -2);
}

#[test]
fn listing_counting_and_deleting_stay_under_the_prefix() {
    let redis = common::redis();
    let store = common::store(&redis);
    let mut conn = common::raw(&redis);
    for key in ["fs:user", "fs:userx:1", "fs:other:1", "unrelated"] {
        redis::cmd("SET")
            .arg(key)
            .arg("keep")
            .query::<()>(&mut conn)
            .expect("SET");
    }
    store
        .bulk_load(&synth::users(2500, 4).collect::<Vec<_>>(), 600)
        .expect("load");
    assert_eq!(store.count_entities().expect("count"), 2500);
    let ids = store.list_entity_ids(10).expect("list");
    assert_eq!(ids.len(), 10);
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "sorted: {ids:?}");
    assert!(ids.iter().all(|id| id.starts_with('u')));
    assert_eq!(store.list_entity_ids(0).expect("list").len(), 0);
    let (count, first) = store.count_and_list_entities(20).expect("census");
    assert_eq!((count, first.len()), (2500, 20));
    assert!(first.windows(2).all(|w| w[0] < w[1]), "sorted: {first:?}");
    assert_eq!(store.list_entity_ids(100_000).expect("list").len(), 2500);

    assert_eq!(store.delete_all().expect("delete"), 2500);
    assert_eq!(store.count_entities().expect("count"), 0);
    assert_eq!(
        common::all_keys(&mut conn),
        ["fs:other:1", "fs:user", "fs:userx:1", "unrelated"]
    );
}

/// Issue 8, case 10: a float 1e308 was stored as a 309-digit string. Floats
/// are stored as the shortest text that parses back to the same number.
#[test]
fn floats_are_stored_as_their_shortest_round_trip_text() {
    let redis = common::redis();
    let store = common::store(&redis);
    let cases = [
        ("big", 1e308, "1e308"),
        ("tiny", 5e-324, "5e-324"),
        ("tenth", 0.1, "0.1"),
        ("negzero", -0.0, "-0"),
        ("plain", 123456789.0, "123456789"),
    ];
    let features: FeatureMap = cases
        .iter()
        .map(|(name, x, _)| (name.to_string(), FeatureValue::Float(*x)))
        .collect();
    let report = store
        .bulk_load(&[("f1".to_string(), features)], 600)
        .expect("load");
    assert!(report.is_complete(), "{:?}", report.failed);
    let mut conn = common::raw(&redis);
    for (name, x, text) in cases {
        let stored: String = redis::cmd("HGET")
            .arg("fs:user:f1")
            .arg(name)
            .query(&mut conn)
            .expect("HGET");
        assert_eq!(stored, text);
        assert_eq!(
            stored.parse::<f64>().expect("parses").to_bits(),
            x.to_bits()
        );
    }
}

/// Keys another tool put under the prefix: a name that is not UTF-8 and one
/// with a space. The old scan decoded every name as a string, so one such
/// key failed every count (0 shown) and every reset (nothing deleted).
#[test]
fn keys_with_any_bytes_are_counted_and_deleted_but_never_listed() {
    let redis = common::redis();
    let store = common::store(&redis);
    let mut conn = common::raw(&redis);
    store
        .bulk_load(&synth::users(3, 4).collect::<Vec<_>>(), 600)
        .expect("load");
    for key in [&b"fs:user:\xff\xfe"[..], b"fs:user:a b", b"fs:user:"] {
        redis::cmd("HSET")
            .arg(key)
            .arg("f")
            .arg("v")
            .query::<()>(&mut conn)
            .expect("HSET");
    }
    let census = store.census(100).expect("census");
    assert_eq!(census.count, 6);
    assert_eq!(census.ids, ["u0001", "u0002", "u0003"]);
    assert_eq!(census.unlisted, 3);
    assert_eq!(store.count_entities().expect("count"), 6);
    assert_eq!(store.list_entity_ids(10).expect("list").len(), 3);

    assert_eq!(store.delete_all().expect("delete"), 6);
    let left: u64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
    assert_eq!(left, 0);
}

/// Property: whatever bytes other tools use for key names under the prefix
/// (and beside it), the count is exact, the listed ids are exactly the
/// valid ones (in one SCAN or in pages, as the server counts), and a reset deletes every key under the prefix and nothing
/// else.
#[test]
fn any_key_names_under_the_prefix_never_break_a_census_or_a_reset() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let redis = common::redis();
    let store = common::store(&redis);
    let conn = std::cell::RefCell::new(common::raw(&redis));
    let suffixes = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..12), 1..20);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&suffixes, |suffixes| {
            redis::cmd("FLUSHDB")
                .query::<()>(&mut *conn.borrow_mut())
                .expect("FLUSHDB");
            let _: () = redis::cmd("SET")
                .arg("fs:usex")
                .arg("beside the prefix")
                .query(&mut *conn.borrow_mut())
                .expect("SET");
            let mut keys = std::collections::BTreeSet::new();
            for s in &suffixes {
                let mut key = b"fs:user:".to_vec();
                key.extend_from_slice(s);
                let _: () = redis::cmd("HSET")
                    .arg(&key)
                    .arg("f")
                    .arg(s.as_slice())
                    .query(&mut *conn.borrow_mut())
                    .expect("HSET");
                keys.insert(s.clone());
            }
            let mut valid: Vec<String> = keys
                .iter()
                .filter_map(|s| std::str::from_utf8(s).ok())
                .filter(|id| feature_store::validate::entity_id(id).is_ok())
                .map(str::to_owned)
                .collect();
            valid.sort();
            let census = store.census(1000).expect("census");
            prop_assert_eq!(census.count, keys.len() as u64);
            prop_assert_eq!(&census.ids, &valid);
            prop_assert_eq!(census.unlisted, (keys.len() - valid.len()) as u64);
            // The server's incremental pass (small pages, no MATCH) finds the
            // same, and sees the key beside the prefix as foreign.
            let mut paged = feature_store::store::Census::default();
            let (mut cursor, mut foreign) = (0, 0);
            loop {
                let page = store
                    .census_page(cursor, 3, &mut paged, 1000)
                    .expect("census page");
                foreign += page.foreign;
                cursor = page.next;
                if cursor == 0 {
                    break;
                }
            }
            paged.ids.sort();
            prop_assert_eq!(&paged, &census);
            prop_assert_eq!(foreign, 1);
            for id in &valid {
                let got = store.get_features(id, &["f"]).expect("read");
                prop_assert_eq!(got.len(), 1);
            }
            prop_assert_eq!(store.delete_all().expect("reset"), keys.len() as u64);
            let left: u64 = redis::cmd("DBSIZE")
                .query(&mut *conn.borrow_mut())
                .expect("DBSIZE");
            prop_assert_eq!(left, 1, "only the key beside the prefix is left");
            Ok(())
        })
        .expect("property");
}

/// A value another tool wrote that is not UTF-8 comes back as its bytes
/// from every read path (the old code failed the read as "unavailable").
#[test]
fn values_that_are_not_utf8_are_returned_as_bytes_by_every_read_path() {
    let redis = common::redis();
    let store = common::store(&redis);
    let mut conn = common::raw(&redis);
    store
        .bulk_load(&synth::users(1, 4).collect::<Vec<_>>(), 600)
        .expect("load");
    let blob = vec![0xff, 0xfe, 0x00, b'a'];
    redis::cmd("HSET")
        .arg("fs:user:u0001")
        .arg("blob")
        .arg(blob.as_slice())
        .arg(&b"raw\xffname"[..])
        .arg("x")
        .query::<()>(&mut conn)
        .expect("HSET");
    let want = ReadValue::Bytes(blob.clone());

    let got = store
        .get_features("u0001", &["blob", "country_iso"])
        .expect("get");
    assert_eq!(got["blob"], want);
    assert!(got["country_iso"].as_str().is_some());
    let rows = store
        .batch_get_features(&["u0001"], &["blob"])
        .expect("batch");
    assert_eq!(rows, vec![Ok(vec![Some(want.clone())])]);
    let read = store.read_fresh("u0001", &["blob"]).expect("read_fresh");
    assert_eq!(read.fields[0].value, Some(want.clone()));
    let whole = store.inspect("u0001").expect("inspect");
    let blob_field = whole
        .fields
        .iter()
        .find(|f| f.name == "blob")
        .expect("blob");
    assert_eq!(blob_field.value, Some(want));
    // A field name that is not UTF-8 is shown escaped, as redis-cli does.
    assert!(
        whole.fields.iter().any(|f| f.name == "raw\\xffname"),
        "{:?}",
        whole.fields
    );
}

/// Property: any bytes another tool stores as a value come back unchanged
/// from every read path, as text exactly when they are UTF-8.
#[test]
fn any_value_bytes_come_back_unchanged_from_every_read_path() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let redis = common::redis();
    let store = common::store(&redis);
    let conn = std::cell::RefCell::new(common::raw(&redis));
    let values = proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..8);
    let mut runner = TestRunner::new(Config {
        cases: 64,
        ..Config::default()
    });
    runner
        .run(&values, |values| {
            let names: Vec<String> = (0..values.len()).map(|i| format!("v{i}")).collect();
            let mut cmd = redis::cmd("HSET");
            cmd.arg("fs:user:p1");
            for (name, value) in names.iter().zip(&values) {
                cmd.arg(name).arg(value.as_slice());
            }
            cmd.query::<()>(&mut *conn.borrow_mut()).expect("HSET");
            let check = |got: &ReadValue, want: &[u8]| {
                prop_assert_eq!(got.as_bytes(), want);
                prop_assert_eq!(got.as_str().is_some(), std::str::from_utf8(want).is_ok());
                Ok(())
            };
            let got = store.get_features("p1", &names).expect("get_features");
            let rows = store.batch_get_features(&["p1"], &names).expect("batch");
            let fresh = store.read_fresh("p1", &names).expect("read_fresh");
            let whole = store.inspect("p1").expect("inspect");
            let row = rows[0].as_ref().expect("row");
            for (i, (name, want)) in names.iter().zip(&values).enumerate() {
                check(&got[name], want)?;
                check(row[i].as_ref().expect("present"), want)?;
                check(fresh.fields[i].value.as_ref().expect("present"), want)?;
                check(whole.fields[i].value.as_ref().expect("present"), want)?;
            }
            redis::cmd("DEL")
                .arg("fs:user:p1")
                .query::<()>(&mut *conn.borrow_mut())
                .expect("DEL");
            Ok(())
        })
        .expect("property");
}

/// An entity of 10,000 fields (four loader-sized rows): every read path
/// serves it whole. `read_fresh` once failed with Lua's "too many results
/// to unpack" past ~8000 names.
#[test]
fn an_entity_of_10000_fields_is_served_by_every_read_path() {
    let redis = common::redis();
    let store = common::store(&redis);
    let names: Vec<String> = (0..10_000).map(|i| format!("f{i:05}")).collect();
    let rows: Vec<BatchRow> = names
        .chunks(2500)
        .map(|chunk| BatchRow {
            event_time_ms: None,
            id: "wide1".into(),
            set: chunk.iter().map(|n| (n.clone(), format!("v{n}"))).collect(),
            retract: Vec::new(),
        })
        .collect();
    let report = store.write_batch_rows(&rows, 600).expect("write");
    assert!(report.is_complete(), "{:?}", report.failed);

    let got = store.get_features("wide1", &names).expect("get_features");
    assert_eq!(got.len(), 10_000);
    assert_eq!(got["f09999"], "vf09999");
    let batch = store
        .batch_get_features(&["wide1", "nobody"], &names)
        .expect("batch_get_features");
    let first = batch[0].as_ref().expect("row");
    assert_eq!(first.iter().filter(|v| v.is_some()).count(), 10_000);
    assert_eq!(batch[1].as_ref().expect("row").iter().flatten().count(), 0);
    let read = store.read_fresh("wide1", &names).expect("read_fresh");
    assert_eq!(read.fields.len(), 10_000);
    assert!(read
        .fields
        .iter()
        .all(|f| f.value.is_some() && f.ttl_seconds == -1));
    assert_eq!(read.fields[9_999].text(), Some("vf09999"));
    let whole = store.inspect("wide1").expect("inspect");
    assert_eq!(whole.fields.len(), 10_000);
    assert_eq!(whole.fields[0].name, "f00000");
    assert_eq!(whole.fields[0].text(), Some("vf00000"));
    assert_eq!(
        store.field_ttls("wide1", &names).expect("field_ttls").len(),
        10_000
    );
}

/// A key of another type under the prefix (a string another tool SET) is
/// an error naming its type, for that entity only: the old code failed a
/// whole batch with a bare WRONGTYPE.
#[test]
fn a_key_of_another_type_is_an_error_for_that_entity_only() {
    let redis = common::redis();
    let store = common::store(&redis);
    let mut conn = common::raw(&redis);
    store
        .bulk_load(&synth::users(2, 4).collect::<Vec<_>>(), 600)
        .expect("load");
    let _: () = redis::cmd("SET")
        .arg("fs:user:str1")
        .arg("not a hash")
        .query(&mut conn)
        .expect("SET");
    let wrong = |e: StoreError| match e {
        StoreError::WrongType { key, kind } => {
            assert_eq!((key.as_str(), kind.as_str()), ("fs:user:str1", "string"));
            assert_eq!(
                StoreError::WrongType { key, kind }.to_string(),
                "key fs:user:str1 holds a string, not a hash"
            );
        }
        other => panic!("expected WrongType, got {other:?}"),
    };
    wrong(store.get_features("str1", &["a"]).expect_err("get"));
    wrong(store.read_fresh("str1", &["a"]).expect_err("read_fresh"));
    wrong(store.inspect("str1").expect_err("inspect"));
    wrong(store.field_ttls("str1", &["a"]).expect_err("field_ttls"));

    let rows = store
        .batch_get_features(&["u0001", "str1", "u0002"], &["country_iso"])
        .expect("the batch is answered");
    assert!(rows[0].as_ref().is_ok_and(|r| r[0].is_some()));
    wrong(rows[1].clone().expect_err("str1"));
    assert!(rows[2].as_ref().is_ok_and(|r| r[0].is_some()));
    // Listed (its id is valid), counted, and deleted by a reset.
    assert_eq!(store.count_entities().expect("count"), 3);
    assert_eq!(store.delete_all().expect("delete"), 3);
}

#[test]
fn prefixes_are_validated_and_isolated() {
    let redis = common::redis();
    for bad in ["", "fs:*", "fs:[a]", "fs user:"] {
        let config = StoreConfig {
            key_prefix: bad.into(),
            ..common::store_config()
        };
        assert!(
            feature_store::FeatureStore::open(&redis.url(), config).is_err(),
            "{bad:?}"
        );
    }
    let a = common::store_with(
        &redis,
        StoreConfig {
            key_prefix: "fs:a:".into(),
            ..common::store_config()
        },
    );
    let b = common::store_with(
        &redis,
        StoreConfig {
            key_prefix: "fs:{b}:".into(),
            ..common::store_config()
        },
    );
    a.bulk_load(&synth::users(3, 1).collect::<Vec<_>>(), 60)
        .expect("a");
    b.bulk_load(&synth::users(2, 1).collect::<Vec<_>>(), 60)
        .expect("b");
    assert_eq!(
        (
            a.count_entities().expect("a"),
            b.count_entities().expect("b")
        ),
        (3, 2)
    );
    assert_eq!(b.delete_all().expect("delete b"), 2);
    assert_eq!(a.count_entities().expect("a"), 3);
    assert_eq!(b.key_prefix(), "fs:{b}:");
}

#[test]
fn redis_down_is_unavailable_quickly_and_the_store_recovers() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(3, 1).collect::<Vec<_>>(), 600)
        .expect("load");
    assert!(store.ping().is_ok());
    redis.stop();
    let started = Instant::now();
    let err = store
        .get_features("u0001", &["country_iso"])
        .expect_err("redis is down");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let report = store
        .bulk_load(&synth::users(2, 1).collect::<Vec<_>>(), 600)
        .expect("report");
    assert_eq!(report.written, 0);
    assert!(report.failed.iter().all(|f| f.error.is_unavailable()));

    redis.restart().expect("restart");
    // Pooled connections are stale now; the first call on each retries on a
    // fresh connection instead of failing.
    store
        .bulk_load(&synth::users(3, 1).collect::<Vec<_>>(), 600)
        .expect("load after restart");
    assert_eq!(
        store
            .get_features("u0001", &["country_iso"])
            .expect("read")
            .len(),
        1
    );
}

#[test]
fn a_restart_under_pooled_connections_costs_no_failed_call() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(1, 1).collect::<Vec<_>>(), 600)
        .expect("load");
    store.ping().expect("warm the pool");
    redis.restart().expect("restart");
    store
        .ping()
        .expect("stale connection retried transparently");
    assert!(
        store
            .get_features("u0001", &["country_iso"])
            .expect("read")
            .is_empty(),
        "restart lost the data"
    );
}

#[test]
fn concurrent_readers_and_writers_share_the_pool() {
    let redis = common::redis();
    let store = common::store(&redis);
    store
        .bulk_load(&synth::users(100, 1).collect::<Vec<_>>(), 600)
        .expect("load");
    std::thread::scope(|s| {
        for t in 0..6 {
            let store = &store;
            s.spawn(move || {
                for i in 0..50 {
                    let id = synth::user_id((t * 50 + i) % 100 + 1);
                    if t % 2 == 0 {
                        let f = streaming(&[("tx_count_5m", (i as i64).into())]);
                        store.update_streaming(&id, &f, 60).expect("write");
                    } else {
                        assert_eq!(
                            store
                                .get_features(&id, &["country_iso"])
                                .expect("read")
                                .len(),
                            1
                        );
                    }
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!(stats.streaming_writes_total, 150);
    assert_eq!(stats.reads_total, 150);
}

#[test]
fn bulk_writes_recover_from_scripts_flushed_again_and_again() {
    let redis = common::redis();
    let store = common::store_with(
        &redis,
        StoreConfig {
            chunk_size: 500,
            entities_per_call: 5,
            ..common::store_config()
        },
    );
    let rows: Vec<_> = synth::users(20_000, 3).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let reports = std::thread::scope(|scope| {
        // The scripts vanish every 2 ms, as after back-to-back failovers.
        // A flush that fails (its reply late past the connection's timeout)
        // is only one fault fewer: the next one comes on a new connection.
        scope.spawn(|| {
            let mut conn = common::raw(&redis);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let flushed: redis::RedisResult<()> =
                    redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn);
                if flushed.is_err() {
                    conn = common::raw(&redis);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let reports: Vec<_> = rows
            .chunks(1000)
            .map(|part| store.bulk_load(part, 3600).expect("bulk load"))
            .collect();
        // Single streaming writes (the server's /update) too.
        for (id, _) in rows.iter().take(500) {
            let fields = streaming(&[("tx_count_5m", FeatureValue::Int(1))]);
            store
                .update_streaming(id, &fields, 300)
                .unwrap_or_else(|e| panic!("streaming write of {id}: {e}"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        reports
    });
    let failed: Vec<_> = reports.iter().flat_map(|r| &r.failed).collect();
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(reports.iter().map(|r| r.written).sum::<usize>(), 20_000);
    assert_eq!(store.count_entities().expect("count"), 20_000);
}

/// Rows of random widths through both write paths: every row written
/// exactly once, and a script call closes at 50 rows or before its
/// arguments pass the budget (600 arguments, 64 KiB), so a call of wide rows
/// holds Redis about as long as one of narrow rows. The expected number of
/// calls is counted here from the rule itself; Redis counts the calls made
/// (`INFO commandstats`). Before, every call carried 50 rows whatever their
/// width.
#[test]
fn rows_of_any_width_are_written_once_in_calls_within_the_budget() {
    use common::command_stats as command_usec;
    use feature_store::commandstats::delta;
    use feature_store::store::{MAX_ARGS_PER_CALL, MAX_ARG_BYTES_PER_CALL};
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    let redis = common::redis();
    let store = common::store(&redis);
    let conn = std::cell::RefCell::new(common::raw(&redis));
    // Loaded first, so no call meets NOSCRIPT (Redis counts that call too).
    for script in feature_store::scripts::all() {
        script.load(&mut *conn.borrow_mut()).expect("SCRIPT LOAD");
    }
    // (features set, features retracted, value length) per row; mostly
    // narrow, some wide.
    let width = prop_oneof![3 => 1usize..10, 1 => 10usize..400];
    let rows = proptest::collection::vec((width, 0usize..5, 0usize..200), 1..90);
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&rows, |shape| {
            redis::cmd("FLUSHDB")
                .query::<()>(&mut *conn.borrow_mut())
                .expect("FLUSHDB");
            let rows: Vec<BatchRow> = shape
                .iter()
                .enumerate()
                .map(|(i, &(set, retract, len))| BatchRow {
                    event_time_ms: None,
                    id: format!("w{i}"),
                    set: (0..set)
                        .map(|f| (format!("f{f}"), "v".repeat(len)))
                        .collect(),
                    retract: (0..retract).map(|f| format!("gone{f}")).collect(),
                })
                .collect();
            // The rule, counted independently: (arguments, bytes) per row
            // are the key, the event-time head (a 13-digit time, the dating
            // mode, "-" for no view), the counts, the names and the values.
            let expected_calls = |rows: &[BatchRow], streaming: bool| {
                let (mut calls, mut n, mut args, mut bytes) = (0, 0, 0, 0);
                for row in rows {
                    let counts = if streaming { 1 } else { 2 };
                    let a = 1 + 3 + counts + row.retract.len() + 2 * row.set.len();
                    let b = format!("fs:user:{}", row.id).len()
                        + 13
                        + 1
                        + 1
                        + if streaming {
                            row.set.len().to_string().len()
                        } else {
                            row.retract.len().to_string().len() + row.set.len().to_string().len()
                        }
                        + row.retract.iter().map(String::len).sum::<usize>()
                        + row
                            .set
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>();
                    if n > 0
                        && (n == 50
                            || args + a > MAX_ARGS_PER_CALL
                            || bytes + b > MAX_ARG_BYTES_PER_CALL)
                    {
                        (calls, n, args, bytes) = (calls + 1, 0, 0, 0);
                    }
                    (n, args, bytes) = (n + 1, args + a, bytes + b);
                }
                calls + 1
            };
            // On a cluster a call holds one slot's rows: the rule cuts each
            // slot's rows (in order) on its own. The slots are Redis's own
            // (`CLUSTER KEYSLOT`), not the store's.
            let slot_of = |id: &str| -> i64 {
                if !redis.is_cluster() {
                    return 0;
                }
                redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(format!("fs:user:{id}"))
                    .query(&mut *conn.borrow_mut())
                    .expect("CLUSTER KEYSLOT")
            };
            let expected_calls = |rows: &[BatchRow], streaming: bool| {
                let mut by_slot: std::collections::BTreeMap<i64, Vec<BatchRow>> =
                    Default::default();
                for row in rows {
                    by_slot
                        .entry(slot_of(&row.id))
                        .or_default()
                        .push(row.clone());
                }
                by_slot
                    .values()
                    .map(|slot_rows| expected_calls(slot_rows, streaming))
                    .sum::<u64>()
            };
            let before = command_usec(&redis);
            let report = store.write_batch_rows(&rows, 600).expect("batch");
            let d = delta(&before, &command_usec(&redis));
            prop_assert_eq!(report.written, rows.len());
            prop_assert_eq!(d["evalsha"].calls, expected_calls(&rows, false));
            // One HSET per row, more for a row past the scripts' slice
            // of 4000 arguments (its values and their event times).
            prop_assert!(d["hset"].calls >= rows.len() as u64);
            prop_assert_eq!(d["expire"].calls, rows.len() as u64);

            let streaming_rows: Vec<BatchRow> = rows
                .iter()
                .map(|r| BatchRow {
                    event_time_ms: None,
                    retract: Vec::new(),
                    ..r.clone()
                })
                .collect();
            let before = command_usec(&redis);
            let report = store
                .update_streaming_rows(&streaming_rows, 300)
                .expect("streaming");
            let d = delta(&before, &command_usec(&redis));
            prop_assert_eq!(report.written, rows.len());
            prop_assert_eq!(d["evalsha"].calls, expected_calls(&streaming_rows, true));
            let writes = d.get("hsetex").or(d.get("hset")).map_or(0, |s| s.calls);
            prop_assert_eq!(writes, rows.len() as u64);
            for row in rows.iter().step_by(7) {
                let names: Vec<&str> = row.set.iter().map(|(k, _)| k.as_str()).collect();
                let got = store.get_features(&row.id, &names).expect("read");
                prop_assert_eq!(got.len(), row.set.len());
                prop_assert!(store.key_ttl(&row.id).expect("ttl") > 0);
            }
            Ok(())
        })
        .expect("property");
}

/// Not a check: what the write scripts cost Redis against the commands they
/// wrap, for narrow and wide rows (`cargo test --test integration
/// script_cost_report -- --ignored --nocapture`).
#[test]
#[ignore]
fn script_cost_report() {
    use feature_store::commandstats::{batch_script_cost, streaming_script_cost};
    let redis = common::redis();
    let store = common::store(&redis);
    for (what, rows, width) in [("narrow", 50_000, 6), ("wide", 5_000, 100)] {
        let rows: Vec<BatchRow> = (0..rows)
            .map(|i| BatchRow {
                event_time_ms: None,
                id: format!("c{i}"),
                set: (0..width)
                    .map(|f| (format!("feature_{f}"), format!("{}", i * f)))
                    .collect(),
                retract: Vec::new(),
            })
            .collect();
        let b = batch_script_cost(&store, &rows, 86400).expect("batch cost");
        let s = streaming_script_cost(&store, &rows, 300).expect("streaming cost");
        for (name, c) in [("write_batch_rows", b), ("write_streaming", s)] {
            println!(
                "{name} {what} ({width} features): script {:.2} us/row, wrapped {:.2} us/row, \
                 ratio {:.2}, {:.0} us/call over {} calls",
                c.script_us_per_row(),
                c.wrapped_us_per_row(),
                c.ratio(),
                c.us_per_call(),
                c.calls
            );
        }
    }
}
