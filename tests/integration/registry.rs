//! The feature registry as the real `fs-server` loads and answers it:
//! `GET /v1/registry`, `--registry PATH` / `FS_REGISTRY`, and a registry
//! with problems refusing the start with every problem listed by line.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{self, wait_until};
use crate::server::Server;

/// Two entity types, a batch and a stream view each, every type, two
/// models: the registry the issue's acceptance tests describe.
pub const TWO_ENTITIES: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[entity]]
name = "merchant"
key_prefix = "fs:merchant:"
id_max_length = 32
id_chars = "_-"

[[view]]
name = "user_profile"
entity = "user"
kind = "batch"
ttl_seconds = 86400

[[view.feature]]
name = "country_iso"
type = "category"
values = ["US", "GB", "DE"]
default = "US"

[[view.feature]]
name = "age_days"
type = "int"

[[view.feature]]
name = "avg_amount"
type = "float"
default = 0.0

[[view.feature]]
name = "verified"
type = "bool"
default = false

[[view.feature]]
name = "nickname"
type = "string"

[[view.feature]]
name = "embedding"
type = "float_vector"
length = 4

[[view]]
name = "user_activity"
entity = "user"
kind = "stream"
ttl_seconds = 300

[[view.feature]]
name = "tx_count_5m"
type = "int"
default = 0

[[view.feature]]
name = "last_device"
type = "string"

[[view]]
name = "merchant_profile"
entity = "merchant"
kind = "batch"
ttl_seconds = 604800

[[view.feature]]
name = "mcc"
type = "category"
values = ["5411", "5812", "7995"]

[[view.feature]]
name = "chargeback_rate"
type = "float"

[[view]]
name = "merchant_live"
entity = "merchant"
kind = "stream"
ttl_seconds = 60

[[view.feature]]
name = "orders_1m"
type = "int"
default = 0

[[model]]
name = "fraud_v1"
features = [
    "user_profile.country_iso",
    "user_profile.age_days",
    "user_profile.verified",
    "user_profile.embedding",
    "user_activity.tx_count_5m",
]
defaults = { "user_profile.age_days" = 0, "user_activity.tx_count_5m" = -1 }

[[model]]
name = "merchant_risk_v1"
features = ["merchant_profile.mcc", "merchant_profile.chargeback_rate", "merchant_live.orders_1m"]
"#;

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing the registry file");
    path.display().to_string()
}

#[test]
fn v1_registry_answers_the_demo_registry_when_none_is_given() {
    let redis = common::redis();
    let server = Server::start(&redis.url(), &[]);
    let (status, body) = server.get("/v1/registry");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["default_entity"], "user");
    assert_eq!(body["entities"][0]["key_prefix"], "fs:user:");
    let views: Vec<(&str, &str, u64, usize)> = body["views"]
        .as_array()
        .expect("views")
        .iter()
        .map(|v| {
            (
                v["name"].as_str().unwrap_or_default(),
                v["kind"].as_str().unwrap_or_default(),
                v["ttl_seconds"].as_u64().unwrap_or_default(),
                v["features"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    assert_eq!(
        views,
        [
            ("user_profile", "batch", 86400, 6),
            ("user_activity", "stream", 300, 5)
        ]
    );
    assert_eq!(body["views"][0]["features"][1]["name"], "risk_segment");
    assert_eq!(body["views"][0]["features"][1]["type"], "category");
    assert_eq!(
        body["views"][0]["features"][1]["values"],
        json!(["low", "medium", "high"])
    );
    assert_eq!(body["models"][0]["name"], "fraud_v1");
}

#[test]
fn v1_registry_answers_the_file_given_with_the_registry_flag() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "features.toml", TWO_ENTITIES);
    let server = Server::start(&redis.url(), &["--registry", &path]);
    let (status, body) = server.get("/v1/registry");
    assert_eq!(status, 200, "{body}");
    let entities: Vec<&str> = body["entities"]
        .as_array()
        .expect("entities")
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert_eq!(entities, ["user", "merchant"]);
    assert_eq!(body["entities"][1]["id_max_length"], 32);
    let embedding = &body["views"][0]["features"][5];
    assert_eq!(
        embedding,
        &json!({"name": "embedding", "type": "float_vector[4]", "length": 4, "default": null})
    );
    assert_eq!(body["views"][0]["features"][0]["default"], "US");
    assert_eq!(body["views"][0]["features"][3]["default"], false);
    let model = &body["models"][0];
    assert_eq!(model["entity"], "user");
    assert_eq!(
        model["features"][4],
        json!({"reference": "user_activity.tx_count_5m", "default": -1})
    );
    assert_eq!(body["models"][1]["entity"], "merchant");
    // A GET-only endpoint.
    let (status, _) = server.post_form("/v1/registry", "");
    assert_eq!(status, 405);
}

/// The server lists and reads the registry's features, not the demo's:
/// before, `/state` and a `/read` without fields named the demo's 11.
#[test]
fn state_and_read_follow_the_registry_given() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "features.toml", TWO_ENTITIES);
    let server = Server::start(&redis.url(), &["--registry", &path]);
    let (_, state) = server.get("/state");
    assert_eq!(
        state["batch_features"],
        json!([
            "country_iso",
            "age_days",
            "avg_amount",
            "verified",
            "nickname",
            "embedding"
        ])
    );
    assert_eq!(
        state["streaming_features"],
        json!(["tx_count_5m", "last_device"])
    );
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("HSET")
        .arg("fs:user:u1")
        .arg("nickname")
        .arg("ada")
        .query(&mut conn)
        .expect("HSET");
    let (status, read) = server.post_form("/read", "user=u1");
    assert_eq!(status, 200, "{read}");
    assert_eq!(
        read["requested"],
        json!([
            "country_iso",
            "age_days",
            "avg_amount",
            "verified",
            "nickname",
            "embedding",
            "tx_count_5m",
            "last_device"
        ]),
        "{read}"
    );
    assert_eq!(read["values"]["nickname"], "ada", "{read}");

    // The demo's bulk load writes values of each declared type to the
    // first entity's batch view: every one reads back typed.
    let (status, load) = server.post_form("/bulk-load", "count=30");
    assert_eq!(status, 200, "{load}");
    assert_eq!(load["loaded"], 30, "{load}");
    let ids: Vec<String> = (1..=30).map(|n| format!("u{n:04}")).collect();
    let (status, v) = server.post_json(
        "/v1/features",
        &json!({"entity": "user", "features": ["user_profile.country_iso", "user_profile.age_days",
                "user_profile.avg_amount", "user_profile.verified", "user_profile.nickname",
                "user_profile.embedding"], "ids": ids}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["invalid_count"], 0, "{v}");
    let statuses = v["status"].as_array().expect("status");
    assert!(
        statuses
            .iter()
            .flat_map(|r| r.as_array().into_iter().flatten())
            .all(|s| s == "present"),
        "{v}"
    );
}

/// `--key-prefix` moves the first entity, for every endpoint alike; a
/// prefix that would mix its keys with another entity's stops the start.
#[test]
fn key_prefix_moves_the_first_entity_everywhere() {
    let redis = common::redis();
    let server = Server::start(&redis.url(), &["--key-prefix", "t:"]);
    let (_, registry) = server.get("/v1/registry");
    assert_eq!(registry["entities"][0]["key_prefix"], "t:", "{registry}");
    assert_eq!(server.get("/state").1["key_prefix"], "t:");
    let mut conn = common::raw(&redis);
    let _: () = redis::cmd("HSET")
        .arg("t:u1")
        .arg("country_iso")
        .arg("DE")
        .query(&mut conn)
        .expect("HSET");
    let (_, read) = server.post_form("/read", "user=u1&field=country_iso");
    assert_eq!(read["values"]["country_iso"], "DE", "{read}");
    drop(server);

    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "features.toml", TWO_ENTITIES);
    let out = Command::new(env!("CARGO_BIN_EXE_fs-server"))
        .args(["--redis-url", &redis.url(), "--registry", &path])
        .args(["--key-prefix", "fs:merchant:x"])
        .stdin(Stdio::null())
        .output()
        .expect("running fs-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("overlaps"), "{stderr}");
}

/// The demo on another registry: `--seed-demo` seeds the first entity's
/// batch view with values of each declared type, and the worker writes its
/// stream view, each field with the view's TTL; all of it reads back typed.
#[test]
fn the_demo_on_another_registry_writes_its_views_typed() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "features.toml", TWO_ENTITIES);
    let server = Server::start(
        &redis.url(),
        &[
            "--registry",
            &path,
            "--seed-demo",
            "--seed-users",
            "10",
            "--tick-ms",
            "20",
            // Not the view's 300 s: the worker must take the view's.
            "--streaming-ttl-seconds",
            "1000",
        ],
    );
    wait_until(
        "the worker writes the stream view",
        Duration::from_secs(10),
        || server.get("/state").1["worker"]["writes_count"].as_u64() >= Some(20),
    );
    let ids: Vec<String> = (1..=10).map(|n| format!("u{n:04}")).collect();
    let (status, v) = server.post_json(
        "/v1/features",
        &json!({"entity": "user", "features": ["user_profile.embedding", "user_activity.tx_count_5m",
                "user_activity.last_device"], "ids": ids}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["invalid_count"], 0, "{v}");
    let rows = v["status"].as_array().expect("status");
    assert!(
        rows.iter().all(|r| r[0] == "present"),
        "every user seeded: {v}"
    );
    assert!(
        rows.iter().any(|r| r[1] == "present" && r[2] == "present"),
        "the worker wrote: {v}"
    );
    // Field TTLs are the stream view's (300 s), not the server's default.
    let mut conn = common::raw(&redis);
    for id in &ids {
        let ttls: Vec<i64> = redis::cmd("HTTL")
            .arg(format!("fs:user:{id}"))
            .arg("FIELDS")
            .arg(2)
            .arg("tx_count_5m")
            .arg("embedding")
            .query(&mut conn)
            .expect("HTTL");
        assert!(
            ttls[0] == -2 || (250..=300).contains(&ttls[0]),
            "{id}: {ttls:?}"
        );
        assert_eq!(ttls[1], -1, "a batch field has no field TTL: {id}");
    }
}

/// Runs fs-server expecting it to stop by itself; its exit code and stderr.
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fs-server"))
        // Nothing listens on port 1: a server that got as far as Redis
        // would fail differently (or, embedded, would start).
        .args(["--redis-url", "redis://127.0.0.1:1/", "--port", "0"])
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-server");
    let mut status = None;
    wait_until("fs-server to exit", Duration::from_secs(20), || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("reading stderr");
    (status.and_then(|s| s.code()), stderr)
}

#[test]
fn an_invalid_registry_stops_the_start_with_exit_2_and_every_problem_by_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = TWO_ENTITIES
        .replace("type = \"bool\"", "type = \"boolean\"")
        .replace(
            "kind = \"stream\"\nttl_seconds = 60",
            "kind = \"live\"\nttl_seconds = 60",
        )
        .replace(
            "\"merchant_profile.chargeback_rate\",",
            "\"merchant_profile.chargeback_pct\",",
        );
    let path = write(dir.path(), "bad.toml", &bad);
    let line_of = |needle: &str| {
        bad.lines()
            .position(|l| l.contains(needle))
            .map(|i| i + 1)
            .expect("needle in the file")
    };
    let want = [
        format!(
            "{path}:{}: unknown type \"boolean\"",
            line_of("type = \"boolean\"")
        ),
        format!(
            "{path}:{}: unknown kind \"live\"",
            line_of("kind = \"live\"")
        ),
        format!(
            "{path}:{}: \"merchant_profile.chargeback_pct\": view \"merchant_profile\" has no feature",
            line_of("merchant_profile.chargeback_pct")
        ),
    ];

    let (code, stderr) = run_to_exit(&["--registry", &path], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    for line in &want {
        assert!(
            stderr.contains(line.as_str()),
            "want {line:?} in:\n{stderr}"
        );
    }
    // Exactly those: a broken view's features are not reported again
    // where a model names them.
    assert_eq!(stderr.lines().count(), 1 + want.len(), "{stderr}");

    // The environment variable is the flag's fallback.
    let (code, stderr) = run_to_exit(&[], &[("FS_REGISTRY", &path)]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(want[0].as_str()), "{stderr}");

    let missing = dir.path().join("nope.toml").display().to_string();
    let (code, stderr) = run_to_exit(&["--registry", &missing], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{missing}: cannot read the registry")),
        "{stderr}"
    );
}

#[test]
fn the_two_entity_registry_parses_as_the_library_reads_it() {
    let r = feature_store::registry::Registry::parse(TWO_ENTITIES, "two.toml")
        .unwrap_or_else(|e| panic!("{e}"));
    let resolved = r.resolve_model("merchant_risk_v1").expect("model");
    assert_eq!(resolved.entity.key_prefix, "fs:merchant:");
    let _: Value = r.to_json();
}
