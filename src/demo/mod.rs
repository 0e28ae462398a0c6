//! The demo: synthetic users and the streaming worker that keeps some of
//! their features fresh. Only the demo names demo features; the store, the
//! loader and the server's API work with whatever features they are given.

pub mod synth;
pub mod typed;
pub mod worker;

use rand::Rng;

use crate::registry::{FeatureView, Registry, ViewKind};
use crate::value::FeatureMap;

/// Whether the demo's own synthetic users fit `registry`: its first entity
/// declares every feature they and the worker write (the built-in demo
/// registry does). On any other registry the demo writes values of each
/// declared type instead (`Source::Typed`).
pub fn fits(registry: &Registry) -> bool {
    let declared = registry.feature_names(&registry.default_entity().name, None);
    synth::BATCH_FEATURES
        .iter()
        .chain(synth::STREAMING_FEATURES.iter())
        .all(|f| declared.contains(f))
}

/// What the demo writes (seeding, `/bulk-load`, the worker) on a registry,
/// always for its first entity, the one the server's demo endpoints serve.
#[derive(Debug, Clone)]
pub enum Source {
    /// The demo's registry: realistic users and events (`synth`).
    Demo,
    /// Any other: a value of each declared type (`typed`), for the batch
    /// views (bulk loads) and the stream views (the worker, each view with
    /// its own field TTL).
    Typed {
        batch: Vec<FeatureView>,
        stream: Vec<FeatureView>,
    },
}

impl Source {
    pub fn for_registry(registry: &Registry) -> Source {
        if fits(registry) {
            return Source::Demo;
        }
        let entity = &registry.default_entity().name;
        let of = |kind| {
            registry
                .views_of(entity)
                .filter(|v| v.kind == kind)
                .cloned()
                .collect()
        };
        Source::Typed {
            batch: of(ViewKind::Batch),
            stream: of(ViewKind::Stream),
        }
    }

    pub fn writes_batch(&self) -> bool {
        matches!(self, Source::Demo)
            || matches!(self, Source::Typed { batch, .. } if !batch.is_empty())
    }

    pub fn writes_stream(&self) -> bool {
        matches!(self, Source::Demo)
            || matches!(self, Source::Typed { stream, .. } if !stream.is_empty())
    }

    /// `count` rows `u0001..` of batch features, the same for the same seed.
    pub fn rows(
        &self,
        count: usize,
        seed: u64,
    ) -> Box<dyn Iterator<Item = (String, FeatureMap)> + Send> {
        match self {
            Source::Demo => Box::new(synth::users(count, seed)),
            Source::Typed { batch, .. } => {
                let batch = batch.clone();
                let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
                Box::new(
                    (1..=count).map(move |n| (synth::user_id(n), typed::row(&batch, &mut rng))),
                )
            }
        }
    }

    /// One tick's streaming writes for `ids`: each as (field TTL, events).
    /// The demo's events take `demo_ttl`; a stream view's take its own.
    pub fn events(
        &self,
        ids: &[String],
        rng: &mut impl Rng,
        now_ms: i64,
        demo_ttl: u64,
    ) -> Vec<(u64, Vec<(String, FeatureMap)>)> {
        match self {
            Source::Demo => {
                let events = ids
                    .iter()
                    .map(|id| (id.clone(), synth::streaming_features(rng, now_ms)))
                    .collect();
                vec![(demo_ttl, events)]
            }
            Source::Typed { stream, .. } => stream
                .iter()
                .map(|view| {
                    let events = ids
                        .iter()
                        .map(|id| (id.clone(), typed::row([view], rng)))
                        .collect();
                    (view.ttl_seconds, events)
                })
                .collect(),
        }
    }
}

/// Why a demo write is refused: the registry's first entity has no view of
/// that kind to write.
pub fn nothing_to_write(registry: &Registry, kind: ViewKind) -> String {
    format!(
        "the demo writes the {} views of entity {:?}, and the registry declares none",
        kind.as_str(),
        registry.default_entity().name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_writes_its_own_users_on_its_registry_and_typed_values_on_others() {
        assert!(fits(&Registry::demo()));
        assert!(matches!(
            Source::for_registry(&Registry::demo()),
            Source::Demo
        ));
        let other = Registry::parse(
            "[[entity]]\nname = \"user\"\nkey_prefix = \"fs:user:\"\n\n\
             [[view]]\nname = \"p\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = 60\n\n\
             [[view.feature]]\nname = \"country_iso\"\ntype = \"string\"\n",
            "test",
        )
        .expect("parses");
        assert!(!fits(&other));
        let source = Source::for_registry(&other);
        assert!(source.writes_batch());
        assert!(!source.writes_stream());
        let rows: Vec<_> = source.rows(3, 1).collect();
        assert_eq!(rows.len(), 3);
        assert!(rows
            .iter()
            .all(|(_, f)| f.len() == 1 && f.contains_key("country_iso")));
    }
}
