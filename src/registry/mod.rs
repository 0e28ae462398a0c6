//! The feature registry: which entities, feature views and models this
//! store serves, and each feature's type.
//!
//! One TOML file declares it (format in `parse` and docs/registry.md);
//! without one, the demo's registry (`examples/demo.toml`) is used. The
//! layout in Redis does not change: one hash per entity at
//! `<key_prefix><id>`, the feature names as fields, values as readable text
//! (see `Value::encode`).

mod error;
mod lookup;
mod types;
mod value;

pub use error::{Problem, RegistryError};
pub use lookup::LookupError;
pub use types::{
    Column, EntityType, FeatureDef, FeatureType, FeatureView, Model, ModelFeature, Registry,
    Resolved, Value, ViewKind, DEFAULT_ID_CHARS,
};
