//! Reads bounded by `max_age_ms`, through the real server: ages on Redis's
//! clock, values left out once older than the bound, and event times shown.

use std::time::Duration;

use serde_json::Value;

use crate::common::{self, wait_until};
use crate::server::Server;

/// A streaming feature of the demo's stream view.
const STREAM_FEATURE: &str = "last_login_ts";

fn demo_server(redis: &impl common::Backend) -> Server {
    Server::start(
        &redis.url(),
        &[
            "--seed-demo",
            "--seed-users",
            "5",
            "--tick-ms",
            "20",
            "--users-per-tick",
            "5",
            "--streaming-ttl-seconds",
            "120",
        ],
    )
}

fn read(server: &Server, body: &str) -> Value {
    let (status, reply) = server.post_form("/read", body);
    assert_eq!(status, 200, "{reply}");
    reply
}

#[test]
fn a_bounded_read_turns_stale_at_the_bound_not_later_once_the_worker_pauses() {
    let redis = common::redis();
    let server = demo_server(&redis);
    let body = format!("user=u0001&field={STREAM_FEATURE}");
    wait_until(
        "the worker dated u0001's stream feature",
        Duration::from_secs(10),
        || read(&server, &body)["event_times_ms"][STREAM_FEATURE].is_u64(),
    );
    let (_, toggled) = server.post_form("/worker/toggle", "");
    assert_eq!(toggled["paused"], true, "{toggled}");
    // A tick already under way may still land: wait until the event time
    // stops moving (two reads 100 ms apart agree).
    let mut last = Value::Null;
    wait_until(
        "the worker's writes stopped",
        Duration::from_secs(10),
        || {
            let now = read(&server, &body)["event_times_ms"][STREAM_FEATURE].clone();
            let settled = now == last;
            last = now;
            if !settled {
                std::thread::sleep(Duration::from_millis(100));
            }
            settled
        },
    );
    let bound = 1500;
    let bounded = format!("{body}&max_age_ms={bound}");
    let mut fresh_seen = 0;
    let first_stale_age = loop {
        let r = read(&server, &bounded);
        let age = r["ages_ms"][STREAM_FEATURE]
            .as_i64()
            .expect("a dated value has an age");
        let verdict = r["freshness"][STREAM_FEATURE].as_str().expect("a verdict");
        if age <= bound {
            // Within the bound, on Redis's clock: served.
            assert_eq!(verdict, "fresh", "{r}");
            assert!(r["values"][STREAM_FEATURE].is_string(), "{r}");
            assert_eq!(r["stale"], serde_json::json!([]), "{r}");
            fresh_seen += 1;
        } else {
            assert_eq!(verdict, "stale", "{r}");
            assert!(r["values"][STREAM_FEATURE].is_null(), "{r}");
            assert_eq!(r["stale"], serde_json::json!([STREAM_FEATURE]), "{r}");
            break age;
        }
        assert!(age < 10 * bound, "never turned stale: {r}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(fresh_seen > 0, "the value was never seen fresh");
    // Polled every ~20 ms: the first stale answer comes right past the
    // bound, not seconds later.
    assert!(
        first_stale_age <= bound + 500,
        "turned stale only at age {first_stale_age} ms (bound {bound})"
    );
    // The same bound on a batch read leaves the value out and counts it.
    let (status, batch) = server.post_form(
        "/batch-read",
        &format!("ids=u0001&field={STREAM_FEATURE}&values=true&max_age_ms={bound}"),
    );
    assert_eq!(status, 200, "{batch}");
    assert_eq!(batch["stale_count"], 1, "{batch}");
    assert_eq!(batch["values_found"], 0, "{batch}");
    // Without a bound the value is still there (only its age grew).
    let unbounded = read(&server, &body);
    assert!(
        unbounded["values"][STREAM_FEATURE].is_string(),
        "{unbounded}"
    );
    assert_eq!(unbounded["freshness"][STREAM_FEATURE], "fresh");
}

#[test]
fn a_value_without_an_event_time_is_served_unbounded_and_left_out_under_a_bound() {
    let redis = common::redis();
    let server = demo_server(&redis);
    let mut conn = common::raw(&redis);
    // Another tool's write: a value, no event time.
    let _: () = redis::cmd("HSET")
        .arg("fs:user:x1")
        .arg("country_iso")
        .arg("NO")
        .query(&mut conn)
        .expect("HSET");
    let _: () = redis::cmd("EXPIRE")
        .arg("fs:user:x1")
        .arg(600)
        .query(&mut conn)
        .expect("EXPIRE");
    let plain = read(&server, "user=x1&field=country_iso");
    assert_eq!(plain["values"]["country_iso"], "NO", "{plain}");
    assert_eq!(plain["freshness"]["country_iso"], "undated", "{plain}");
    assert!(plain["event_times_ms"]["country_iso"].is_null(), "{plain}");
    let bounded = read(&server, "user=x1&field=country_iso&max_age_ms=60000");
    assert!(bounded["values"]["country_iso"].is_null(), "{bounded}");
    assert_eq!(
        bounded["stale"],
        serde_json::json!(["country_iso"]),
        "{bounded}"
    );
}

#[test]
fn inspect_shows_each_features_event_time_and_age_and_hides_the_time_fields() {
    let redis = common::redis();
    let server = demo_server(&redis);
    let (status, inspect) = server.get("/inspect?user=u0001");
    assert_eq!(status, 200, "{inspect}");
    let fields = inspect["fields"].as_array().expect("fields");
    assert!(!fields.is_empty(), "{inspect}");
    for f in fields {
        let name = f["name"].as_str().expect("name");
        assert!(!name.contains('@'), "a time field is listed: {inspect}");
        // Every demo feature was written by the store's scripts: dated.
        assert!(f["event_time_ms"].is_u64(), "{f}");
        assert!(f["age_ms"].is_i64(), "{f}");
        assert_eq!(f["freshness"], "fresh", "{f}");
    }
}

#[test]
fn a_max_age_that_is_not_a_whole_number_of_ms_is_refused() {
    let redis = common::redis();
    let server = demo_server(&redis);
    for bad in [
        "-1",
        "abc",
        "1e3",
        "1.5",
        "315360000001",
        "99999999999999999999",
    ] {
        let (status, reply) = server.post_form("/read", &format!("user=u0001&max_age_ms={bad}"));
        assert_eq!(status, 400, "{bad}: {reply}");
        assert!(
            reply["error"].as_str().unwrap_or("").contains("max_age_ms"),
            "{bad}: {reply}"
        );
        let (status, reply) =
            server.post_form("/batch-read", &format!("ids=u0001&max_age_ms={bad}"));
        assert_eq!(status, 400, "{bad}: {reply}");
    }
    let (status, reply) = server.post_json(
        "/read",
        &serde_json::json!({"user": "u0001", "max_age_ms": 0}),
    );
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["max_age_ms"], 0);
}

#[test]
fn a_partial_write_newer_than_its_views_last_whole_write_dates_its_feature_alone() {
    use feature_store::registry::Registry;
    use feature_store::store::BatchRow;
    let redis = common::redis();
    let store = common::store(&redis).with_registry(&Registry::demo());
    let registry = Registry::demo();
    let profile = registry
        .views
        .iter()
        .find(|v| v.kind == feature_store::registry::ViewKind::Batch)
        .expect("the demo's batch view");
    let names: Vec<&str> = profile.features.iter().map(|f| f.name.as_str()).collect();
    let mut conn = common::raw(&redis);
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query(&mut conn).expect("TIME");
    let now = secs * 1000 + micros / 1000;
    let whole = BatchRow {
        event_time_ms: Some(now - 60_000),
        id: "p1".into(),
        set: names.iter().map(|n| (n.to_string(), "1".into())).collect(),
        retract: Vec::new(),
    };
    let part = BatchRow {
        event_time_ms: Some(now - 1_000),
        id: "p1".into(),
        set: vec![(names[0].to_string(), "2".into())],
        retract: Vec::new(),
    };
    for row in [whole, part] {
        let report = store.write_batch_rows(&[row], 600).expect("write");
        assert_eq!((report.written, report.skipped_stale), (1, 0));
    }
    let aged = store
        .batch_get_features_within(&["p1"], &names, Some(30_000))
        .expect("read");
    let row = aged.rows[0].as_ref().expect("a row");
    // The feature the newer partial row wrote is judged by its own time.
    assert_eq!(row[0].as_ref().and_then(|v| v.as_str()), Some("2"));
    assert!(aged.ages_ms[0][0].is_some_and(|a| (1_000..30_000).contains(&a)));
    // The others keep the whole row's time, past the bound.
    for (j, value) in row.iter().enumerate().skip(1) {
        assert!(
            value.is_none(),
            "{} served: {:?}",
            names[j],
            aged.freshness[0]
        );
        assert!(aged.ages_ms[0][j].is_some_and(|a| a >= 60_000));
    }
    assert_eq!(aged.stale_count(), names.len() - 1);
    // `read_fresh` (what `/read` calls) judges them the same way.
    let fresh = store
        .read_fresh_within("p1", &names, Some(30_000))
        .expect("read_fresh");
    let served: Vec<Option<&str>> = fresh
        .fields
        .iter()
        .map(|f| f.value.as_ref().and_then(|v| v.as_str()))
        .collect();
    assert_eq!(served[0], Some("2"), "{fresh:?}");
    assert!(served[1..].iter().all(Option::is_none), "{fresh:?}");
    assert_eq!(fresh.fields[0].event_time_ms, Some(now - 1_000));
    assert_eq!(fresh.fields[1].event_time_ms, Some(now - 60_000));
    // A whole row newer than the partial one dates them all again, and a
    // replay of the partial one is skipped.
    let newer = BatchRow {
        event_time_ms: Some(now - 500),
        id: "p1".into(),
        set: names.iter().map(|n| (n.to_string(), "3".into())).collect(),
        retract: Vec::new(),
    };
    assert_eq!(
        store
            .write_batch_rows(&[newer], 600)
            .expect("write")
            .skipped_stale,
        0
    );
    let replay = BatchRow {
        event_time_ms: Some(now - 1_000),
        id: "p1".into(),
        set: vec![(names[0].to_string(), "2".into())],
        retract: Vec::new(),
    };
    assert_eq!(
        store
            .write_batch_rows(&[replay], 600)
            .expect("write")
            .skipped_stale,
        1
    );
    let aged = store
        .batch_get_features_within(&["p1"], &names, Some(30_000))
        .expect("read");
    assert_eq!(aged.stale_count(), 0);
    let row = aged.rows[0].as_ref().expect("a row");
    assert!(row
        .iter()
        .all(|v| v.as_ref().and_then(|v| v.as_str()) == Some("3")));
}
