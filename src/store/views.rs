//! Which view each feature belongs to, per key prefix: what decides how a
//! write is dated (`event_fields`). Built from the registry the server and
//! the loader share; every writer of a keyspace must use the same one, or
//! one writer's per-view time would not see another's per-feature times.

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::fast_hash::FxHashMap;
use crate::registry::Registry;

/// How a write is dated, as the write scripts' `M` argument says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dating {
    /// The features belong to no view: one time per feature.
    PerFeature,
    /// Part of a view's features: their own times, and the view's marker.
    PartOfView,
    /// Every feature of the view: one time for the view.
    WholeView,
}

impl Dating {
    /// The scripts' `M` argument.
    pub fn code(self) -> &'static str {
        match self {
            Dating::PerFeature => "0",
            Dating::PartOfView => "1",
            Dating::WholeView => "2",
        }
    }
}

#[derive(Debug, Default)]
struct View {
    name: String,
    features: BTreeSet<String>,
}

/// Feature -> view, per key prefix. Looked up for every name of every row
/// written: the maps hash with `fast_hash` (their keys come from the
/// registry, not from the rows; a row's names are only looked up).
#[derive(Debug, Default, Clone)]
pub struct ViewMap {
    by_prefix: FxHashMap<String, FxHashMap<String, Arc<View>>>,
}

/// The view argument sent when the features belong to none (the scripts
/// want a non-empty name and ignore it).
const NO_VIEW: &str = "-";

impl ViewMap {
    pub fn from_registry(registry: &Registry) -> ViewMap {
        let mut by_prefix: FxHashMap<String, FxHashMap<String, Arc<View>>> = FxHashMap::default();
        for view in &registry.views {
            let Some(entity) = registry.entity(&view.entity) else {
                continue;
            };
            let shared = Arc::new(View {
                name: view.name.clone(),
                features: view.features.iter().map(|f| f.name.clone()).collect(),
            });
            let features = by_prefix.entry(entity.key_prefix.clone()).or_default();
            for f in &view.features {
                features.insert(f.name.clone(), shared.clone());
            }
        }
        ViewMap { by_prefix }
    }

    /// The view `feature` belongs to under `prefix`, if any.
    pub fn view_of(&self, prefix: &str, feature: &str) -> Option<&str> {
        self.by_prefix
            .get(prefix)?
            .get(feature)
            .map(|v| v.name.as_str())
    }

    /// What `segments` answers when that is one segment (the names all of
    /// one view, or all of none), its dating and view, found without
    /// building it: the common write, checked for every row. `None` when
    /// the names span several views, when there are none, or when only
    /// counting them as a set can tell whole from part of a view (a name
    /// given twice, or a view of more than `SOLE_MAX_PAIRWISE` features):
    /// then `segments` answers.
    pub fn sole<'n>(
        &self,
        prefix: &str,
        names: impl Iterator<Item = &'n str> + Clone,
    ) -> Option<(Dating, &str)> {
        let mut rest = names.clone();
        let first = rest.next()?;
        let Some(features) = self.by_prefix.get(prefix) else {
            return Some((Dating::PerFeature, NO_VIEW));
        };
        let view = features.get(first);
        let mut count = 1usize;
        for name in rest {
            if !same_view(view, features.get(name)) {
                return None;
            }
            count += 1;
        }
        let Some(v) = view else {
            return Some((Dating::PerFeature, NO_VIEW));
        };
        let whole = v.features.len();
        // Fewer names than the view has features: part of it, whatever
        // repeats. As many: the whole view if no name repeats.
        if count < whole {
            Some((Dating::PartOfView, v.name.as_str()))
        } else if count == whole && count <= SOLE_MAX_PAIRWISE && distinct(names) {
            Some((Dating::WholeView, v.name.as_str()))
        } else {
            None
        }
    }

    /// How a write of `names` under `prefix` is dated: one segment per view
    /// its features belong to (whole or part of it), and one for the
    /// features of no view, each with the names it holds, in first-seen
    /// order.
    pub fn segments<'n>(
        &self,
        prefix: &str,
        names: impl Iterator<Item = &'n str>,
    ) -> Vec<Segment<'_, 'n>> {
        let features = self.by_prefix.get(prefix);
        let mut out: Vec<(Option<&Arc<View>>, BTreeSet<&'n str>)> = Vec::new();
        for name in names {
            let view = features.and_then(|f| f.get(name));
            let at = out.iter().position(|(v, _)| same_view(*v, view));
            match at {
                Some(i) => {
                    out[i].1.insert(name);
                }
                None => out.push((view, BTreeSet::from([name]))),
            }
        }
        out.into_iter()
            .map(|(view, names)| match view {
                None => Segment {
                    dating: Dating::PerFeature,
                    view: NO_VIEW,
                    names,
                },
                Some(v) => Segment {
                    dating: if names.len() == v.features.len() {
                        Dating::WholeView
                    } else {
                        Dating::PartOfView
                    },
                    view: v.name.as_str(),
                    names,
                },
            })
            .collect()
    }
}

/// Whether two names' views are one: the same view, or both of none.
fn same_view(a: Option<&Arc<View>>, b: Option<&Arc<View>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => Arc::ptr_eq(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// The most names `ViewMap::sole` compares pair by pair to tell that none
/// repeats.
const SOLE_MAX_PAIRWISE: usize = 32;

fn distinct<'n>(names: impl Iterator<Item = &'n str> + Clone) -> bool {
    let mut rest = names;
    while let Some(a) = rest.next() {
        if rest.clone().any(|b| a == b) {
            return false;
        }
    }
    true
}

/// The features of one write that one view (or none) dates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment<'v, 'n> {
    pub dating: Dating,
    pub view: &'v str,
    pub names: BTreeSet<&'n str>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_write_is_dated_by_the_views_it_covers_one_segment_each() {
        let registry = Registry::demo();
        let map = ViewMap::from_registry(&registry);
        let p = "fs:user:";
        let names = |kind| {
            registry
                .views
                .iter()
                .find(|v| v.kind == kind)
                .map(|v| {
                    (
                        v.name.clone(),
                        v.features
                            .iter()
                            .map(|f| f.name.clone())
                            .collect::<Vec<_>>(),
                    )
                })
                .expect("the demo has both kinds of view")
        };
        let (batch, batch_features) = names(crate::registry::ViewKind::Batch);
        let (stream, stream_features) = names(crate::registry::ViewKind::Stream);
        let whole = map.segments(p, batch_features.iter().map(String::as_str));
        assert_eq!(whole.len(), 1);
        assert_eq!(
            (whole[0].dating, whole[0].view),
            (Dating::WholeView, batch.as_str())
        );
        let part = map.segments(p, batch_features[..1].iter().map(String::as_str));
        assert_eq!(
            (part[0].dating, part[0].view),
            (Dating::PartOfView, batch.as_str())
        );
        let free = map.segments(p, ["mine", "yours", "mine"].into_iter());
        assert_eq!(free.len(), 1);
        assert_eq!(free[0].dating, Dating::PerFeature);
        assert_eq!(free[0].names.len(), 2);
        let mixed = map.segments(
            p,
            [
                stream_features[0].as_str(),
                "mine",
                batch_features[0].as_str(),
            ]
            .into_iter(),
        );
        let got: Vec<_> = mixed.iter().map(|s| (s.dating, s.view)).collect();
        assert_eq!(
            got,
            vec![
                (Dating::PartOfView, stream.as_str()),
                (Dating::PerFeature, NO_VIEW),
                (Dating::PartOfView, batch.as_str()),
            ]
        );
        // Another prefix knows no views.
        let other = map.segments("fs:other:", batch_features.iter().map(String::as_str));
        assert_eq!(other[0].dating, Dating::PerFeature);
    }

    /// Names to draw writes from: every feature of the demo's views, and
    /// names of none.
    fn pool() -> Vec<String> {
        let registry = Registry::demo();
        let mut names: Vec<String> = registry
            .views
            .iter()
            .flat_map(|v| v.features.iter().map(|f| f.name.clone()))
            .collect();
        names.extend(["mine", "yours", "theirs"].map(String::from));
        names
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// `sole` answers only what `segments` does, and for every write of
        /// distinct names that `segments` finds to be one segment.
        #[test]
        fn the_sole_segment_is_the_one_segments_finds(
            picks in proptest::collection::vec(any::<prop::sample::Index>(), 0..16),
            view in any::<prop::sample::Index>(),
            mode in 0..3u8,
            other_prefix in any::<bool>(),
        ) {
            let registry = Registry::demo();
            let map = ViewMap::from_registry(&registry);
            let prefix = if other_prefix { "fs:other:" } else { "fs:user:" };
            let pool = pool();
            let view = view.get(&registry.views);
            let names: Vec<&str> = match mode {
                // Any names.
                0 => picks.iter().map(|i| i.get(&pool).as_str()).collect(),
                // Names of one view, some maybe twice.
                1 => picks.iter().map(|i| i.get(&view.features).name.as_str()).collect(),
                // A whole view, in another order.
                _ => view.features.iter().rev().map(|f| f.name.as_str()).collect(),
            };
            let segments = map.segments(prefix, names.iter().copied());
            let sole = map.sole(prefix, names.iter().copied());
            if let Some((dating, view)) = sole {
                prop_assert_eq!(segments.len(), 1);
                prop_assert_eq!((dating, view), (segments[0].dating, segments[0].view));
            } else if segments.len() == 1 {
                let unique: BTreeSet<&str> = names.iter().copied().collect();
                prop_assert!(unique.len() < names.len(), "{:?}", names);
            }
        }
    }
}
