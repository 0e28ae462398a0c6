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
mod parse;
#[cfg(test)]
mod parse_tests;
mod types;
mod value;

pub use error::{Problem, RegistryError};
pub use lookup::LookupError;
pub use parse::{MAX_AGE_MS, MAX_TTL_SECONDS, MAX_VECTOR_LEN};
pub use types::{
    Column, EntityType, FeatureDef, FeatureType, FeatureView, Model, ModelFeature, Registry,
    Resolved, Value, ViewKind, DEFAULT_ID_CHARS,
};

use std::path::Path;

/// The demo's registry, used when none is given.
const DEMO: &str = include_str!("../../examples/demo.toml");

impl Registry {
    /// A registry file's text; `origin` names it in error messages. Checks
    /// everything and reports every problem with its line.
    pub fn parse(text: &str, origin: &str) -> Result<Registry, RegistryError> {
        parse::parse(text, origin)
    }

    pub fn load(path: &Path) -> Result<Registry, RegistryError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| RegistryError {
            origin: origin.clone(),
            problems: vec![Problem {
                line: 0,
                message: format!("cannot read the registry: {e}"),
            }],
        })?;
        Self::parse(&text, &origin)
    }

    /// `examples/demo.toml`, compiled in: the seeds' user entity with its
    /// batch and stream views.
    pub fn demo() -> Registry {
        // The text is fixed at build time and a unit test parses it, so this
        // cannot fail at run time.
        Self::parse(DEMO, "examples/demo.toml")
            .unwrap_or_else(|e| panic!("the built-in demo registry is invalid:\n{e}"))
    }
}
