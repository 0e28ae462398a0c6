//! Shared test fixtures: a throwaway Redis per test, a store on it, polling.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use feature_store::pool::PoolConfig;
use feature_store::{FeatureStore, ManagedRedis, StoreConfig};

/// A fresh, empty redis-server for one test; stopped when dropped.
pub fn redis() -> ManagedRedis {
    ManagedRedis::start().unwrap_or_else(|e| panic!("starting the test redis-server: {e}"))
}

/// A raw connection, for checking what is really in Redis.
pub fn raw(redis: &ManagedRedis) -> redis::Connection {
    let client = redis::Client::open(redis.url()).expect("url");
    client
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connecting to the test redis")
}

pub fn store_config() -> StoreConfig {
    StoreConfig {
        pool: PoolConfig {
            max_size: 4,
            connect_timeout: Duration::from_millis(500),
            io_timeout: Duration::from_secs(2),
            checkout_timeout: Duration::from_secs(1),
        },
        ..StoreConfig::default()
    }
}

pub fn store(redis: &ManagedRedis) -> FeatureStore {
    store_with(redis, store_config())
}

pub fn store_with(redis: &ManagedRedis, config: StoreConfig) -> FeatureStore {
    FeatureStore::open(&redis.url(), config).expect("opening the store")
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes; panics with
/// `what` on timeout.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Every key in the database (tests only: KEYS is fine on a tiny test db).
pub fn all_keys(conn: &mut redis::Connection) -> Vec<String> {
    let mut keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).expect("KEYS");
    keys.sort();
    keys
}

/// The per-entity invariants: `key` has a key TTL (PTTL, so a key about to
/// expire is not rounded to 0), every streaming field a field TTL and no
/// batch field one. With `only_demo_fields`, any other field fails too.
/// Keys and fields that expire while being checked are skipped.
pub fn check_entity_ttls(
    conn: &mut redis::Connection,
    key: &str,
    step: &str,
    only_demo_fields: bool,
) {
    use feature_store::demo::synth::{BATCH_FEATURES, STREAMING_FEATURES};
    let ttl: i64 = redis::cmd("PTTL").arg(key).query(conn).expect("PTTL");
    if ttl == -2 {
        return; // expired between listing and PTTL
    }
    // 0: under a millisecond left, expiring now (not immortal: that is -1).
    assert!(ttl >= 0, "{step}: {key} has no key TTL ({ttl})");
    let fields: Vec<String> = redis::cmd("HKEYS").arg(key).query(conn).expect("HKEYS");
    if fields.is_empty() {
        return;
    }
    let ttls: Vec<i64> = redis::cmd("HPTTL")
        .arg(key)
        .arg("FIELDS")
        .arg(fields.len())
        .arg(&fields)
        .query(conn)
        .expect("HPTTL");
    for (field, t) in fields.iter().zip(ttls) {
        if t == -2 {
            continue; // expired between HKEYS and HPTTL
        }
        // A feature's own event time follows its feature's rule; a view's
        // time and marker are bounded by the key TTL checked above.
        let field = field.strip_suffix("@t").unwrap_or(field);
        if field.starts_with('@') {
            continue;
        }
        if STREAMING_FEATURES.contains(&field) {
            assert!(
                t > 0,
                "{step}: streaming field {key}.{field} has no field TTL ({t})"
            );
        } else if BATCH_FEATURES.contains(&field) {
            assert_eq!(
                t, -1,
                "{step}: batch field {key}.{field} carries a field TTL"
            );
        } else {
            assert!(!only_demo_fields, "{step}: unknown field {field}");
        }
    }
}

/// An entity's features as `HGETALL` shows them, without the event-time
/// fields the write scripts keep beside them (`@<view>`, `<feature>@t`).
pub fn features(
    conn: &mut redis::Connection,
    key: &str,
) -> std::collections::HashMap<String, String> {
    let all: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg(key).query(conn).expect("HGETALL");
    all.into_iter()
        .filter(|(f, _)| !feature_store::store::event_fields::is_time_field(f))
        .collect()
}
