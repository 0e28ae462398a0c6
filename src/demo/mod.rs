//! The demo: synthetic users and the streaming worker that keeps some of
//! their features fresh. Only the demo names demo features; the store, the
//! loader and the server's API work with whatever features they are given.

pub mod synth;
pub mod worker;

use crate::registry::Registry;

/// Whether the demo can run on `registry`: its first entity declares every
/// feature the synthetic users and the worker write (the built-in demo
/// registry does). On any other registry the server seeds nothing, its
/// worker stays stopped and `/bulk-load` is refused, so no feature the
/// registry does not declare is ever written.
pub fn fits(registry: &Registry) -> bool {
    let declared = registry.feature_names(&registry.default_entity().name, None);
    synth::BATCH_FEATURES
        .iter()
        .chain(synth::STREAMING_FEATURES.iter())
        .all(|f| declared.contains(f))
}

/// Why a demo action is refused on a registry that does not fit it.
pub const NOT_FITTED: &str = "the demo writes the demo's features (examples/demo.toml), which \
                              this server's registry does not declare for its first entity";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_fits_its_own_registry_only() {
        assert!(fits(&Registry::demo()));
        let other = Registry::parse(
            "[[entity]]\nname = \"user\"\nkey_prefix = \"fs:user:\"\n\n\
             [[view]]\nname = \"p\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = 60\n\n\
             [[view.feature]]\nname = \"country_iso\"\ntype = \"string\"\n",
            "test",
        )
        .expect("parses");
        assert!(!fits(&other));
    }
}
