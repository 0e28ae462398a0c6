//! Which view each feature belongs to, per key prefix: what decides how a
//! write is dated (`event_fields`). Built from the registry the server and
//! the loader share; every writer of a keyspace must use the same one, or
//! one writer's per-view time would not see another's per-feature times.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::error::StoreError;
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

/// Feature -> view, per key prefix.
#[derive(Debug, Default, Clone)]
pub struct ViewMap {
    by_prefix: HashMap<String, HashMap<String, Arc<View>>>,
}

/// The view argument sent when the features belong to none (the scripts
/// want a non-empty name and ignore it).
const NO_VIEW: &str = "-";

impl ViewMap {
    pub fn from_registry(registry: &Registry) -> ViewMap {
        let mut by_prefix: HashMap<String, HashMap<String, Arc<View>>> = HashMap::new();
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

    /// How a write of `names` under `prefix` is dated, and the view name
    /// to send. A write mixing features of several views, or of a view and
    /// of none, is refused: one write has one time field to compare.
    pub fn dating<'n>(
        &self,
        prefix: &str,
        names: impl Iterator<Item = &'n str>,
    ) -> Result<(Dating, &str), StoreError> {
        let Some(features) = self.by_prefix.get(prefix) else {
            return Ok((Dating::PerFeature, NO_VIEW));
        };
        let mut view: Option<&Arc<View>> = None;
        let mut free: Option<&str> = None;
        let mut covered = BTreeSet::new();
        for name in names {
            match features.get(name) {
                None => free = Some(name),
                Some(v) => {
                    if let Some(seen) = view {
                        if !Arc::ptr_eq(seen, v) {
                            return Err(StoreError::invalid(format!(
                                "one write may hold the features of one view: {name:?} is of \
                                 view {:?}, others of view {:?}",
                                v.name, seen.name
                            )));
                        }
                    }
                    view = Some(v);
                    covered.insert(name);
                }
            }
        }
        match (view, free) {
            (None, _) => Ok((Dating::PerFeature, NO_VIEW)),
            (Some(v), Some(name)) => Err(StoreError::invalid(format!(
                "one write may hold the features of one view: {name:?} is of no view, \
                 others of view {:?}",
                v.name
            ))),
            (Some(v), None) if covered.len() == v.features.len() => {
                Ok((Dating::WholeView, v.name.as_str()))
            }
            (Some(v), None) => Ok((Dating::PartOfView, v.name.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_is_dated_by_the_view_it_covers() {
        let map = ViewMap::from_registry(&Registry::demo());
        let p = "fs:user:";
        let batch = Registry::demo()
            .views
            .iter()
            .find(|v| v.kind == crate::registry::ViewKind::Batch)
            .map(|v| {
                (
                    v.name.clone(),
                    v.features.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
                )
            })
            .expect("the demo has a batch view");
        let (name, features) = batch;
        let all = map.dating(p, features.iter().map(String::as_str));
        assert_eq!(all.expect("dated"), (Dating::WholeView, name.as_str()));
        let part = map.dating(p, features[..1].iter().map(String::as_str));
        assert_eq!(part.expect("dated"), (Dating::PartOfView, name.as_str()));
        let free = map.dating(p, ["mine", "yours"].into_iter());
        assert_eq!(free.expect("dated").0, Dating::PerFeature);
        assert!(map
            .dating(p, [features[0].as_str(), "mine"].into_iter())
            .is_err());
        // Another prefix knows no views.
        let other = map.dating("fs:other:", features.iter().map(String::as_str));
        assert_eq!(other.expect("dated").0, Dating::PerFeature);
    }
}
