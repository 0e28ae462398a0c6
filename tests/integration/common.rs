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
