//! An online feature store on Redis.
//!
//! Each entity is one hash at `<prefix><id>`. Batch features are written by
//! the `write_batch_rows` script under a key-level TTL; streaming features by
//! `write_streaming` with a per-field TTL; reads are plain `HMGET` (pipelined
//! for batches) or the `read_fresh` script when TTLs are wanted too. Reads
//! return `ReadValue`s: Redis holds bytes, and a value another tool wrote
//! need not be text.

pub mod capabilities;
pub mod commandstats;
pub mod demo;
pub mod error;
pub mod managed_redis;
pub mod pacing;
pub mod pool;
pub mod registry;
pub mod scripts;
pub mod store;
pub mod validate;
pub mod value;

pub use error::StoreError;
pub use managed_redis::ManagedRedis;
pub use store::{FeatureStore, StoreConfig};
pub use value::{FeatureMap, FeatureValue, ReadValue};

pub mod loader;
pub mod server;
