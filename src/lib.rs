//! An online feature store on Redis.
//!
//! Each entity is one hash at `<prefix><id>`. Batch features are written by
//! the `write_batch_rows` script under a key-level TTL; streaming features by
//! `write_streaming` with a per-field TTL; reads are plain `HMGET` (pipelined
//! for batches) or the `read_fresh` script when TTLs are wanted too. Reads
//! return `ReadValue`s: Redis holds bytes, and a value another tool wrote
//! need not be text.
//!
//! # A model's feature vector
//!
//! A Rust model server links the crate and reads a model's typed vector for
//! many entities in one round trip, with a status per value
//! (`present`, `missing`, `defaulted`, `invalid`, and `stale` when a
//! `max_age_ms` bound, the registry's or the call's, refuses an old value):
//!
//! ```
//! use feature_store::registry::Registry;
//! use feature_store::store::Status;
//! use feature_store::{FeatureMap, FeatureStore, FeatureValue, ManagedRedis, StoreConfig};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A throwaway redis-server for this example; a model server would open
//! // its own Redis URL instead.
//! let redis = ManagedRedis::start()?;
//! let store = FeatureStore::open(&redis.url(), StoreConfig::default())?;
//!
//! // What the batch pipeline wrote for u0001 (u0002 was never written).
//! let mut row = FeatureMap::new();
//! row.insert("risk_segment".into(), FeatureValue::Str("high".into()));
//! row.insert("account_age_days".into(), FeatureValue::Int(412));
//! store.bulk_load(&[("u0001".to_string(), row)], 3600)?;
//!
//! // The registry says which columns `fraud_v1` reads, their types and
//! // defaults (the demo's here; `Registry::load(path)` for your own file).
//! let registry = Registry::demo();
//! let fraud_v1 = registry.resolve_model("fraud_v1")?;
//! let ids = vec!["u0001".to_string(), "u0002".to_string()];
//! let vectors = store.vectors(&fraud_v1, &ids, None)?; // None: no age bound asked
//!
//! for (id, (values, status)) in ids.iter().zip(vectors.values.iter().zip(&vectors.status)) {
//!     let shown: Vec<String> = values
//!         .iter()
//!         .map(|v| v.as_ref().map_or("null".into(), |v| v.to_json().to_string()))
//!         .collect();
//!     println!("{id}: [{}]", shown.join(", "));
//! }
//! // u0001: ["high", 412, 0, null, 0, 0, 0, null]
//! // u0002: ["medium", null, 0, null, 0, 0, 0, null]
//! assert_eq!(vectors.columns[0].reference, "user_profile.risk_segment");
//! assert_eq!(vectors.status[0][0], Status::Present);
//! assert_eq!(vectors.status[0][2], Status::Defaulted); // tx_count_7d, default 0
//! assert_eq!(vectors.status[0][3], Status::Missing); // avg_amount_30d, no default
//! // u0002 has no row: the model's default for risk_segment, else missing.
//! assert_eq!(vectors.status[1][0], Status::Defaulted);
//! assert_eq!(vectors.status[1][1], Status::Missing);
//! # Ok(())
//! # }
//! ```

pub mod calendar;
pub mod capabilities;
pub mod commandstats;
pub mod demo;
pub mod error;
pub mod event_clock;
mod fast_hash;
pub mod logging;
pub mod managed_cluster;
pub mod managed_redis;
pub mod metrics;
pub mod pacing;
pub mod pool;
pub mod redis_url;
pub mod registry;
pub mod scripts;
pub mod store;
pub mod tls;
pub mod validate;
pub mod value;

pub use error::StoreError;
pub use managed_cluster::ManagedCluster;
pub use managed_redis::ManagedRedis;
pub use store::{FeatureStore, StoreConfig};
pub use value::{FeatureMap, FeatureValue, ReadValue};

pub mod loader;
pub mod server;
