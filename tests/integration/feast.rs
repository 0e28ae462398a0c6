//! Feast's feature-server API on the real `fs-server`: what Feast's Python
//! SDK (`online_store: {type: remote}`) posts, and what it reads back.
//! Values are written straight into Redis (HSET), as any pipeline would,
//! so what is checked is how Feast's names, ids and statuses map onto the
//! registry's.

use serde_json::{json, Value as Json};

use crate::common;
use crate::server::{send, Server};

/// Feast names that differ from ours where they can: the user entity keeps
/// the default join key (`user_id`), the driver declares its own; the
/// profile view is `user_stats` to Feast.
const FEAST_REGISTRY: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[entity]]
name = "driver"
key_prefix = "fs:driver:"
join_key = "driver"
id_chars = "_-"

[[view]]
name = "user_profile"
feast_name = "user_stats"
entity = "user"
kind = "batch"
ttl_seconds = 86400
features = [
  { name = "country", type = "category", values = ["US", "GB"] },
  { name = "age_days", type = "int" },
  { name = "avg_amount", type = "float" },
  { name = "verified", type = "bool", default = false },
  { name = "embedding", type = "float_vector", length = 2 },
]

[[view]]
name = "user_activity"
entity = "user"
kind = "stream"
ttl_seconds = 300
feast_push_source = "user_push"
features = [{ name = "tx_count_5m", type = "int", max_age_ms = 60000 }]

[[view]]
name = "user_flags"
entity = "user"
kind = "stream"
ttl_seconds = 300
feast_push_source = "user_push"
features = [{ name = "flagged", type = "bool" }]

[[view]]
name = "driver_hourly"
entity = "driver"
kind = "batch"
ttl_seconds = 3600
features = [{ name = "trips", type = "int" }]

[[model]]
name = "fraud_v1"
features = ["user_activity.tx_count_5m", "user_profile.country"]
"#;

const NO_TIME: &str = "1970-01-01T00:00:00Z";

fn start(redis: &common::TestRedis, dir: &tempfile::TempDir) -> Server {
    let path = dir.path().join("feast.toml");
    std::fs::write(&path, FEAST_REGISTRY).expect("writing the registry file");
    Server::start(&redis.url(), &["--registry", &path.display().to_string()])
}

fn hset(conn: &mut impl redis::ConnectionLike, key: &str, pairs: &[(&str, &str)]) {
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (field, value) in pairs {
        cmd.arg(*field).arg(*value);
    }
    cmd.query::<i64>(conn).expect("HSET");
}

/// As some releases of Feast's SDK post it: JSON, no Content-Type.
fn post_untyped(server: &Server, body: &Json) -> (u16, Json) {
    send(
        server.addr,
        "POST",
        "/get-online-features",
        None,
        body.to_string().as_bytes(),
    )
}

/// Each body posted to `path` is answered `want` with an error naming
/// `says`.
fn assert_each_refused(server: &Server, path: &str, cases: &[(Json, u16, &str)]) {
    for (body, want, says) in cases {
        let (status, v) = server.post_json(path, body);
        assert_eq!(status, *want, "{body}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{body}: want {says:?} in {v}");
    }
}

fn column(v: &Json, i: usize, what: &str) -> Json {
    v["results"][i][what].clone()
}

#[test]
fn get_online_features_answers_feasts_columns_typed_with_the_join_key_first() {
    let redis = common::redis();
    hset(
        &mut common::raw(&redis),
        "fs:user:u1",
        &[
            ("country", "GB"),
            ("age_days", "412"),
            ("avg_amount", "92.5"),
            ("verified", "true"),
            ("embedding", "[0.5,-2]"),
        ],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let body = json!({
        "features": ["user_stats:country", "user_stats:age_days", "user_stats:avg_amount",
                     "user_stats:verified", "user_stats:embedding"],
        "entities": {"user_id": ["u1", "u2"]},
        "full_feature_names": false,
        "include_feature_view_version_metadata": false,
    });
    let (status, v) = post_untyped(&server, &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "user_id",
            "country",
            "age_days",
            "avg_amount",
            "verified",
            "embedding"
        ])
    );
    let want_values = [
        json!(["u1", "u2"]),
        json!(["GB", null]),
        json!([412, null]),
        json!([92.5, null]),
        // u2 has no `verified`: its default is the answer, so PRESENT.
        json!([true, false]),
        json!([[0.5, -2.0], null]),
    ];
    let want_statuses = [
        json!(["PRESENT", "PRESENT"]),
        json!(["PRESENT", "NOT_FOUND"]),
        json!(["PRESENT", "NOT_FOUND"]),
        json!(["PRESENT", "NOT_FOUND"]),
        json!(["PRESENT", "PRESENT"]),
        json!(["PRESENT", "NOT_FOUND"]),
    ];
    assert_eq!(v["results"].as_array().map(Vec::len), Some(6), "{v}");
    for (i, (values, statuses)) in want_values.iter().zip(&want_statuses).enumerate() {
        assert_eq!(&column(&v, i, "values"), values, "column {i}: {v}");
        assert_eq!(&column(&v, i, "statuses"), statuses, "column {i}: {v}");
        assert_eq!(
            column(&v, i, "event_timestamps"),
            json!([NO_TIME, NO_TIME]),
            "column {i}"
        );
    }
    // Integral floats stay floats on the wire (Feast types values by them).
    hset(
        &mut common::raw(&redis),
        "fs:user:u1",
        &[("avg_amount", "3")],
    );
    let (_, v) = post_untyped(
        &server,
        &json!({"features": ["user_stats:avg_amount"], "entities": {"user_id": ["u1"]}}),
    );
    assert!(v["results"][1]["values"][0].is_f64(), "{v}");
}

#[test]
fn only_get_online_features_takes_a_body_without_content_type() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let (status, v) = post_untyped(
        &server,
        &json!({"features": ["user_stats:country"], "entities": {"user_id": ["u1"]}}),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = send(
        server.addr,
        "POST",
        "/v1/features",
        None,
        json!({"model": "fraud_v1", "ids": ["u1"]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(status, 415, "{v}");
}

#[test]
fn a_feature_service_reads_its_model_with_full_feature_names_and_max_age() {
    let redis = common::redis();
    // No event time: under the feature's max_age_ms it is not shown fresh.
    hset(
        &mut common::raw(&redis),
        "fs:user:u1",
        &[("country", "US"), ("tx_count_5m", "4")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let (status, v) = server.post_json(
        "/get-online-features",
        &json!({"feature_service": "fraud_v1", "entities": {"user_id": ["u1"]},
                "full_feature_names": true}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["metadata"]["feature_names"],
        json!([
            "user_id",
            "user_activity__tx_count_5m",
            "user_stats__country"
        ])
    );
    assert_eq!(column(&v, 1, "values"), json!([null]));
    assert_eq!(column(&v, 1, "statuses"), json!(["OUTSIDE_MAX_AGE"]));
    assert_eq!(column(&v, 2, "values"), json!(["US"]));
    assert_eq!(column(&v, 2, "statuses"), json!(["PRESENT"]));
}

#[test]
fn integer_entity_values_read_the_ids_of_their_decimal_text() {
    let redis = common::redis();
    hset(
        &mut common::raw(&redis),
        "fs:driver:1001",
        &[("trips", "5")],
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let (status, v) = server.post_json(
        "/get-online-features",
        &json!({"features": ["driver_hourly:trips"], "entities": {"driver": [1001, 7]}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["metadata"]["feature_names"], json!(["driver", "trips"]));
    // The join key's column echoes the values as sent: numbers stay numbers.
    assert_eq!(column(&v, 0, "values"), json!([1001, 7]));
    assert_eq!(column(&v, 1, "values"), json!([5, null]));
    assert_eq!(column(&v, 1, "statuses"), json!(["PRESENT", "NOT_FOUND"]));
}

#[test]
fn unknown_names_are_404_and_bad_shapes_400_each_saying_why() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let user = json!({"user_id": ["u1"]});
    assert_each_refused(
        &server,
        "/get-online-features",
        &[
            // Feast knows the view as its feast_name only.
            (
                json!({"features": ["user_profile:country"], "entities": user}),
                404,
                "feature view \"user_profile\" is not in the registry",
            ),
            (
                json!({"features": ["user_stats:nope"], "entities": user}),
                404,
                "feature view \"user_stats\" has no feature \"nope\"",
            ),
            (
                json!({"feature_service": "nope", "entities": user}),
                404,
                "feature service \"nope\" is not in the registry",
            ),
            (
                json!({"features": ["user_stats:country"], "entities": {"driver": ["d1"]}}),
                400,
                "whose join key is \"user_id\", not \"driver\"",
            ),
            (
                json!({"features": ["user_stats:country", "driver_hourly:trips"], "entities": user}),
                400,
                "driver",
            ),
            (
                json!({"features": ["user_stats.country"], "entities": user}),
                400,
                "view:feature",
            ),
            (
                json!({"features": ["user_stats:country"]}),
                400,
                "no \"entities\"",
            ),
            (
                json!({"features": ["user_stats:country"], "entities": {"user_id": ["bad id!"]}}),
                400,
                "id",
            ),
        ],
    );
    let (status, v) = post_untyped(&server, &json!("not an object"));
    assert_eq!(status, 400, "{v}");
}

fn hget(redis: &common::TestRedis, key: &str, field: &str) -> Option<String> {
    redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query(&mut common::raw(redis))
        .expect("HGET")
}

/// 2026-12-01T18:00:00Z in epoch ms.
const EVENT_MS: u64 = 1_796_148_000_000;

#[test]
fn write_to_online_store_writes_a_batch_view_typed_dated_and_readable() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    // As Feast's SDK sends it: naive UTC times, `created` null.
    let (status, v) = server.post_json(
        "/write-to-online-store",
        &json!({"feature_view_name": "user_stats",
                "df": {"user_id": ["u1", "u2"],
                       "country": ["GB", "US"],
                       "age_days": [412, 3],
                       "avg_amount": [92.5, 1.0],
                       "verified": [true, null],
                       "embedding": [[0.5, -2.0], [1.0, 2.0]],
                       "event_timestamp": ["2026-12-01T18:00:00", "2026-12-01T18:00:00.250000"],
                       "created": [null, null]},
                "allow_registry_cache": false}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["written"], 2, "{v}");
    assert_eq!(
        hget(&redis, "fs:user:u1", "age_days").as_deref(),
        Some("412")
    );
    assert_eq!(
        hget(&redis, "fs:user:u1", "embedding").as_deref(),
        Some("[0.5,-2]")
    );
    // The row covered the whole view: one date for it, the event's.
    assert_eq!(
        hget(&redis, "fs:user:u1", "@user_profile"),
        Some(EVENT_MS.to_string())
    );
    assert_eq!(
        hget(&redis, "fs:user:u2", "@user_profile"),
        Some((EVENT_MS + 250).to_string())
    );
    // A null in a batch row retracts the feature: u2 is served the default.
    assert_eq!(hget(&redis, "fs:user:u2", "verified"), None);
    let (status, v) = post_untyped(
        &server,
        &json!({"features": ["user_stats:age_days", "user_stats:verified", "user_stats:embedding"],
                "entities": {"user_id": ["u1", "u2"]}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(column(&v, 1, "values"), json!([412, 3]));
    assert_eq!(column(&v, 2, "values"), json!([true, false]));
    assert_eq!(column(&v, 3, "values"), json!([[0.5, -2.0], [1.0, 2.0]]));
    // Each stored value's event time; a default served has none.
    assert_eq!(
        column(&v, 1, "event_timestamps"),
        json!(["2026-12-01T18:00:00Z", "2026-12-01T18:00:00.250Z"])
    );
    assert_eq!(
        column(&v, 2, "event_timestamps"),
        json!(["2026-12-01T18:00:00Z", NO_TIME])
    );
}

#[test]
fn write_to_online_store_updates_a_stream_view_per_field_and_keeps_the_newest_event() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let write = |count: i64, at: &str| {
        server.post_json(
            "/write-to-online-store",
            &json!({"feature_view_name": "user_activity",
                    "df": {"user_id": ["u1"], "tx_count_5m": [count],
                           "event_timestamp": [at], "created": [null]}}),
        )
    };
    let (status, v) = write(4, "2026-12-01T18:00:00");
    assert_eq!(status, 200, "{v}");
    let ttl: Vec<i64> = redis::cmd("HTTL")
        .arg("fs:user:u1")
        .arg("FIELDS")
        .arg(1)
        .arg("tx_count_5m")
        .query(&mut common::raw(&redis))
        .expect("HTTL");
    assert!(
        ttl[0] > 0 && ttl[0] <= 300,
        "the view's TTL on the field: {ttl:?}"
    );
    // An older event (a replay) does not put an old value back.
    let (status, v) = write(1, "2026-12-01T17:00:00");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["skipped_stale"], 1, "{v}");
    assert_eq!(
        hget(&redis, "fs:user:u1", "tx_count_5m").as_deref(),
        Some("4")
    );
}

#[test]
fn write_to_online_store_writes_nothing_when_one_row_is_bad() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let df = |ages: Json| {
        json!({"feature_view_name": "user_stats",
               "df": {"user_id": ["u1", "u2"], "age_days": ages,
                      "event_timestamp": ["2026-12-01T18:00:00", "2026-12-01T18:00:00"]}})
    };
    assert_each_refused(
        &server,
        "/write-to-online-store",
        &[
            (df(json!([1, 1.5])), 400, "row 1"),
            (df(json!([1, "2"])), 400, "row 1"),
            (df(json!([1])), 400, "differ in length"),
            (
                json!({"feature_view_name": "user_stats", "df": {"user_id": ["u1"], "agedays": [1]}}),
                400,
                "df.agedays is not a feature of view \"user_stats\"",
            ),
            (
                json!({"feature_view_name": "user_stats", "df": {"age_days": [1]}}),
                400,
                "no \"user_id\" column",
            ),
            (
                json!({"feature_view_name": "user_stats",
                   "df": {"user_id": ["u1"], "age_days": [1], "event_timestamp": ["noon"]}}),
                400,
                "event_timestamp",
            ),
            (
                json!({"feature_view_name": "nope", "df": {"user_id": ["u1"]}}),
                404,
                "feature view \"nope\" is not in the registry",
            ),
        ],
    );
    assert!(common::all_keys(&mut common::raw(&redis)).is_empty());
}

#[test]
fn write_to_online_store_takes_integer_join_keys_as_their_decimal_text() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let (status, v) = server.post_json(
        "/write-to-online-store",
        &json!({"feature_view_name": "driver_hourly",
                "df": {"driver": [1001], "trips": [5], "event_timestamp": ["2026-12-01T18:00:00"]}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        hget(&redis, "fs:driver:1001", "trips").as_deref(),
        Some("5")
    );
}

#[test]
fn health_is_200_with_redis_and_503_without_and_needs_no_token() {
    let mut redis = common::standalone_redis();
    let server = Server::start(&redis.url(), &["--read-token", "read-7c1f9e2a4b6d8035"]);
    assert_eq!(server.get("/health").0, 200);
    redis.stop();
    let (status, v) = server.get("/health");
    assert_eq!(status, 503, "{v}");
}

/// fs-server's side of the repository `feast_sdk/definitions.py` declares.
const FEAST_SDK_REGISTRY: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[view]]
name = "user_stats"
entity = "user"
kind = "batch"
ttl_seconds = 86400
features = [
  { name = "country", type = "category", values = ["US", "GB"] },
  { name = "age_days", type = "int" },
  { name = "avg_amount", type = "float" },
  { name = "verified", type = "bool" },
  { name = "embedding", type = "float_vector", length = 2 },
]

[[view]]
name = "user_activity"
entity = "user"
kind = "stream"
ttl_seconds = 300
features = [{ name = "tx_count_5m", type = "int" }]

[[model]]
name = "fraud_v1"
features = ["user_activity.tx_count_5m", "user_stats.country"]
"#;

/// A JSON POST with a bearer token: the status and the JSON answer.
fn post_with_token(server: &Server, path: &str, token: &str, body: &Json) -> (u16, Json) {
    use std::io::{Read, Write};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(server.addr).expect("connecting to fs-server");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Authorization: Bearer {token}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).expect("writing the request");
    s.write_all(body.as_bytes()).expect("writing the body");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("reading the answer");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header end");
    let status = String::from_utf8_lossy(&raw[..split])
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let v = serde_json::from_slice(&raw[split + 4..]).unwrap_or(Json::Null);
    (status, v)
}

/// The virtualenv with Feast's SDK (pinned) that `scripts/feast-venv.sh`
/// makes once from PyPI and keeps beside the cached redis-server (about
/// 40 s and 600 MB the first time); fs-bench's Feast rows use the same one.
/// `None`, said loudly, where there is no Python outside CI (the script
/// exits 3); in CI that fails, as does any other failure to make it.
fn feast_venv() -> Option<std::path::PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/feast-venv.sh");
    let out = std::process::Command::new("bash")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) && std::env::var_os("CI").is_none() {
        eprintln!(
            "SKIPPED feasts_own_sdk_writes_and_reads_through_our_server: {}",
            stderr.trim()
        );
        return None;
    }
    assert!(out.status.success(), "{script}: {}\n{stderr}", out.status);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().expect("the virtualenv's path");
    Some(std::path::PathBuf::from(dir))
}

/// Feast's own SDK, pointed at our server by `online_store: remote`:
/// `feast apply`, `write_to_online_store` of a small DataFrame into a
/// batch view and `push` of one to a stream view's push source, then `get_online_features(...).to_dict()` by
/// features and by feature service (with full names) answers exactly those
/// values, typed, a missing entity as None (`feast_sdk/check.py`). The same
/// values come back through `/v1/features` and `HGET`.
#[test]
fn feasts_own_sdk_writes_and_reads_through_our_server() {
    let Some(venv) = feast_venv() else { return };
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = dir.path().join("fs.toml");
    std::fs::write(&registry, FEAST_SDK_REGISTRY).expect("writing the registry");
    // With a token, as in production: Feast's client sends a configured
    // `user_token` as a bearer token (its `kubernetes` auth type).
    let token = "admin-5d0c8f1e7a2b4c69";
    let server = Server::start(
        &redis.url(),
        &[
            "--registry",
            &registry.display().to_string(),
            "--admin-token",
            token,
        ],
    );
    let repo = dir.path().join("repo");
    std::fs::create_dir_all(repo.join("data")).expect("making the Feast repository");
    std::fs::write(
        repo.join("definitions.py"),
        include_str!("feast_sdk/definitions.py"),
    )
    .expect("writing definitions.py");
    std::fs::write(
        repo.join("feature_store.yaml"),
        format!(
            "project: fs\nregistry: data/registry.db\nprovider: local\n\
             online_store:\n  type: remote\n  path: http://{}\n\
             offline_store:\n  type: file\nentity_key_serialization_version: 3\n\
             auth:\n  type: kubernetes\n  user_token: {token}\n",
            server.addr
        ),
    )
    .expect("writing feature_store.yaml");
    let check = dir.path().join("check.py");
    std::fs::write(&check, include_str!("feast_sdk/check.py")).expect("writing check.py");
    let feast = |program: std::path::PathBuf, args: &[&std::ffi::OsStr]| {
        let out = std::process::Command::new(program)
            .args(args)
            .current_dir(&repo)
            .env("FEAST_USAGE", "False")
            .output()
            .expect("running Feast");
        let text = format!(
            "{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{:?}: {}\n{text}", args, out.status);
        text
    };
    feast(venv.join("bin/feast"), &["apply".as_ref()]);
    let said = feast(
        venv.join("bin/python"),
        &[check.as_os_str(), repo.as_os_str()],
    );
    assert!(said.contains("\"by_service\""), "{said}");

    let (status, v) = post_with_token(
        &server,
        "/v1/features",
        token,
        &json!({"model": "fraud_v1", "ids": ["u1", "u2"]}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["values"], json!([[4, "GB"], [null, "US"]]));
    // And without the token, Feast's read is refused like any other.
    let (status, _) = server.post_json(
        "/get-online-features",
        &json!({"features": ["user_stats:country"], "entities": {"user_id": ["u1"]}}),
    );
    assert_eq!(status, 401);
    assert_eq!(
        hget(&redis, "fs:user:u1", "age_days").as_deref(),
        Some("412")
    );
    assert_eq!(
        hget(&redis, "fs:user:u2", "avg_amount").as_deref(),
        Some("1")
    );
    assert_eq!(
        hget(&redis, "fs:user:u1", "embedding").as_deref(),
        Some("[0.5,-2]")
    );
}

#[test]
fn push_writes_every_view_its_push_source_feeds() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let (status, v) = server.post_json(
        "/push",
        &json!({"push_source_name": "user_push", "to": "online",
                "df": {"user_id": ["u1", "u2"], "tx_count_5m": [3, 4], "flagged": [true, null],
                       "event_timestamp": ["2026-12-01T18:00:00", "2026-12-01T18:00:00"]}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["written"],
        json!({"user_activity": 2, "user_flags": 1}),
        "{v}"
    );
    assert_eq!(
        hget(&redis, "fs:user:u2", "tx_count_5m").as_deref(),
        Some("4")
    );
    assert_eq!(
        hget(&redis, "fs:user:u1", "flagged").as_deref(),
        Some("true")
    );
    // A stream update only sets values: u2's null flag is left unset.
    assert_eq!(hget(&redis, "fs:user:u2", "flagged"), None);
    // Columns of only one of the views: the other is left alone.
    let (status, v) = server.post_json(
        "/push",
        &json!({"push_source_name": "user_push",
                "df": {"user_id": ["u3"], "flagged": [false]}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["written"], json!({"user_flags": 1}), "{v}");
}

#[test]
fn push_refuses_offline_unknown_sources_and_bad_rows_writing_nothing() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start(&redis, &dir);
    let df = json!({"user_id": ["u1"], "tx_count_5m": [3]});
    assert_each_refused(
        &server,
        "/push",
        &[
            (
                json!({"push_source_name": "user_push", "df": df, "to": "online_and_offline"}),
                400,
                "offline store",
            ),
            (
                json!({"push_source_name": "user_push", "df": df, "to": "sideways"}),
                400,
                "must be one of",
            ),
            (
                json!({"push_source_name": "nope", "df": df}),
                404,
                "push source \"nope\" feeds no view",
            ),
            (
                json!({"push_source_name": "user_push",
                   "df": {"user_id": ["u1", "u2"], "tx_count_5m": [3, 1.5], "flagged": [true, true]}}),
                400,
                "row 1",
            ),
            (
                json!({"push_source_name": "user_push", "df": {"user_id": ["u1"], "country": ["GB"]}}),
                400,
                "df.country is not a feature",
            ),
            (
                json!({"push_source_name": "user_push", "df": {"user_id": ["u1"]}}),
                400,
                "df holds no feature",
            ),
        ],
    );
    assert!(common::all_keys(&mut common::raw(&redis)).is_empty());
}

/// Feast's SDK posts a whole DataFrame in one request, so Feast's write
/// routes take bodies past `--max-body-bytes` (up to their own limit);
/// every other route keeps the smaller one.
#[test]
fn a_feast_write_past_max_body_bytes_is_taken_up_to_its_own_limit() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let rows = 3000;
    let ids: Vec<String> = (0..rows).map(|n| format!("u{n:05}")).collect();
    let body = json!({"feature_view_name": "user_stats",
                      "df": {"user_id": ids,
                             "age_days": (0..rows).collect::<Vec<_>>(),
                             "event_timestamp": vec!["2026-12-01T18:00:00"; rows],
                             "created": vec![Json::Null; rows]}});
    assert!(
        body.to_string().len() > 65_536,
        "the body must pass the default limit"
    );

    let server = start(&redis, &dir);
    let (status, v) = server.post_json("/write-to-online-store", &body);
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["written"], rows, "{v}");
    assert_eq!(
        hget(&redis, "fs:user:u02999", "age_days").as_deref(),
        Some("2999")
    );
    let (status, v) = server.post_json("/v1/push", &body);
    assert_eq!(status, 413, "other routes keep --max-body-bytes: {v}");
    drop(server);

    let redis = common::redis();
    let path = dir.path().join("feast.toml");
    let server = Server::start(
        &redis.url(),
        &[
            "--registry",
            &path.display().to_string(),
            "--max-write-body-bytes",
            "4096",
        ],
    );
    let (status, v) = server.post_json("/write-to-online-store", &body);
    assert_eq!(status, 413, "{v}");
    assert_eq!(hget(&redis, "fs:user:u00000", "age_days"), None);
}
