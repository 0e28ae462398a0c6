//! Finding entities, views and models by name, and resolving a request's
//! feature list to columns of one entity.

use serde_json::json;
use thiserror::Error;

use super::types::{
    tighter, Column, EntityType, FeatureDef, FeatureView, Model, Registry, Resolved, ViewKind,
};

/// A name a request gave that the registry cannot serve. Unknown names are
/// "not found" (404 over HTTP); the rest are malformed requests (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LookupError {
    #[error("unknown model {0:?}")]
    UnknownModel(String),
    #[error("unknown entity {0:?}")]
    UnknownEntity(String),
    #[error("unknown feature {reference:?} for entity {entity:?}")]
    UnknownFeature { entity: String, reference: String },
    #[error("features of one request must share an entity: {first:?} is a {first_entity}, {other:?} a {other_entity}")]
    MixedEntities {
        first: String,
        first_entity: String,
        other: String,
        other_entity: String,
    },
    #[error("feature {0:?} is named twice")]
    Duplicate(String),
    #[error("name at least one feature")]
    Empty,
}

impl LookupError {
    /// True for an unknown model, entity or feature (404); false for a
    /// malformed request (400).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            LookupError::UnknownModel(_)
                | LookupError::UnknownEntity(_)
                | LookupError::UnknownFeature { .. }
        )
    }
}

impl Registry {
    pub fn entity(&self, name: &str) -> Option<&EntityType> {
        self.entities.iter().find(|e| e.name == name)
    }

    pub fn view(&self, name: &str) -> Option<&FeatureView> {
        self.views.iter().find(|v| v.name == name)
    }

    pub fn model(&self, name: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.name == name)
    }

    /// The first entity in the file: what a request naming none means.
    ///
    /// # Panics
    /// Only on a `Registry` built by hand without entities: `parse` refuses
    /// a file that declares none.
    pub fn default_entity(&self) -> &EntityType {
        &self.entities[0]
    }

    /// The feature names of `entity`'s views of `kind` (every kind when
    /// `None`), in file order: what a read of "everything" asks for.
    pub fn feature_names<'a>(&'a self, entity: &'a str, kind: Option<ViewKind>) -> Vec<&'a str> {
        self.views_of(entity)
            .filter(|v| kind.is_none_or(|k| v.kind == k))
            .flat_map(|v| v.features.iter().map(|f| f.name.as_str()))
            .collect()
    }

    /// The views of one entity, in file order.
    pub fn views_of<'a>(&'a self, entity: &'a str) -> impl Iterator<Item = &'a FeatureView> + 'a {
        self.views.iter().filter(move |v| v.entity == entity)
    }

    /// A model's columns in the model's order, with its defaults and its
    /// age bounds (each column's the smallest of the feature's, the
    /// model's and the model's for that feature).
    pub fn resolve_model(&self, name: &str) -> Result<Resolved, LookupError> {
        let model = self
            .model(name)
            .ok_or_else(|| LookupError::UnknownModel(name.to_owned()))?;
        let refs: Vec<String> = model
            .features
            .iter()
            .map(|f| format!("{}.{}", f.view, f.feature))
            .collect();
        let mut resolved = self.resolve_features(None, &refs)?;
        for (column, mf) in resolved.columns.iter_mut().zip(&model.features) {
            if mf.default.is_some() {
                column.default = mf.default.clone();
            }
            column.max_age_ms =
                tighter(column.max_age_ms, tighter(model.max_age_ms, mf.max_age_ms));
        }
        Ok(resolved)
    }

    /// Columns for `view.feature` references (or bare feature names: field
    /// names are unique per entity, so a bare name is never ambiguous within
    /// one). Without `entity`, the entity is the first qualified
    /// reference's, else the default entity.
    pub fn resolve_features(
        &self,
        entity: Option<&str>,
        refs: &[String],
    ) -> Result<Resolved, LookupError> {
        if refs.is_empty() {
            return Err(LookupError::Empty);
        }
        let entity = match entity {
            Some(name) => self
                .entity(name)
                .ok_or_else(|| LookupError::UnknownEntity(name.to_owned()))?,
            None => refs
                .iter()
                .find_map(|r| {
                    let (view, _) = r.split_once('.')?;
                    self.entity(&self.view(view)?.entity)
                })
                .unwrap_or_else(|| self.default_entity()),
        };
        let mut columns: Vec<Column> = Vec::with_capacity(refs.len());
        for reference in refs {
            let (view, def) = self.find_feature(&entity.name, reference)?;
            if view.entity != entity.name {
                let first = columns
                    .first()
                    .map_or_else(|| refs[0].clone(), |c| c.reference.clone());
                return Err(LookupError::MixedEntities {
                    first,
                    first_entity: entity.name.clone(),
                    other: reference.clone(),
                    other_entity: view.entity.clone(),
                });
            }
            let qualified = format!("{}.{}", view.name, def.name);
            if columns.iter().any(|c| c.reference == qualified) {
                return Err(LookupError::Duplicate(qualified));
            }
            columns.push(Column {
                reference: qualified,
                view: view.name.clone(),
                field: def.name.clone(),
                ty: def.ty.clone(),
                default: def.default.clone(),
                kind: view.kind,
                max_age_ms: def.max_age_ms,
            });
        }
        Ok(Resolved {
            entity: entity.clone(),
            columns,
        })
    }

    /// `view.feature` in any view (the caller checks the entity), or a bare
    /// name among `entity`'s views. A feature name may itself hold dots, so
    /// a reference whose prefix is no view is tried as a bare name.
    fn find_feature<'a>(
        &'a self,
        entity: &'a str,
        reference: &'a str,
    ) -> Result<(&'a FeatureView, &'a FeatureDef), LookupError> {
        if let Some((view, feature)) = reference.split_once('.') {
            if let Some(v) = self.view(view) {
                return v.feature(feature).map(|f| (v, f)).ok_or_else(|| {
                    LookupError::UnknownFeature {
                        entity: v.entity.clone(),
                        reference: reference.to_owned(),
                    }
                });
            }
        }
        self.views_of(entity)
            .find_map(|v| v.feature(reference).map(|f| (v, f)))
            .ok_or_else(|| LookupError::UnknownFeature {
                entity: entity.to_owned(),
                reference: reference.to_owned(),
            })
    }

    /// The registry as `GET /v1/registry` answers it: every list in file
    /// order, types spelled as in the file.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "default_entity": self.entities.first().map(|e| e.name.clone()),
            "entities": self.entities.iter().map(|e| json!({
                "name": e.name,
                "key_prefix": e.key_prefix,
                "id_max_length": e.id_max_len,
                "id_chars": e.id_chars,
            })).collect::<Vec<_>>(),
            "views": self.views.iter().map(|v| json!({
                "name": v.name,
                "entity": v.entity,
                "kind": v.kind.as_str(),
                "ttl_seconds": v.ttl_seconds,
                "features": v.features.iter().map(|f| {
                    let mut out = json!({
                        "name": f.name,
                        "type": f.ty.name(),
                        "default": f.default.as_ref().map(|d| d.to_json()),
                    });
                    match &f.ty {
                        super::FeatureType::Category(values) => out["values"] = json!(values),
                        super::FeatureType::FloatVector(n) => out["length"] = json!(n),
                        _ => {}
                    }
                    if let Some(ms) = f.max_age_ms {
                        out["max_age_ms"] = json!(ms);
                    }
                    out
                }).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "models": self.models.iter().map(|m| {
                let mut out = json!({
                    "name": m.name,
                    "entity": m.features.first()
                        .and_then(|f| self.view(&f.view))
                        .map(|v| v.entity.clone()),
                    "features": m.features.iter().map(|f| {
                        let mut out = json!({
                            "reference": format!("{}.{}", f.view, f.feature),
                            "default": f.default.as_ref().map(|d| d.to_json()),
                        });
                        if let Some(ms) = f.max_age_ms {
                            out["max_age_ms"] = json!(ms);
                        }
                        out
                    }).collect::<Vec<_>>(),
                });
                if let Some(ms) = m.max_age_ms {
                    out["max_age_ms"] = json!(ms);
                }
                out
            }).collect::<Vec<_>>(),
        })
    }
}
