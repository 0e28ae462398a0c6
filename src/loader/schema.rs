//! Loading against a registry (`--registry`): which view an input fills,
//! and the per-row check of its ids and cells against that view.
//!
//! A cell is parsed as its feature's declared type and written as that
//! value's canonical text (`Value::encode`), so what Redis holds is exactly
//! what a typed reader parses back (`1.50` is stored `1.5`, `True` `true`).
//! A row with a column the view does not declare, or a value that is not
//! of its type, is rejected whole with a reason naming the column: a model
//! must never read a half-written or mistyped row.

use std::collections::BTreeSet;

use crate::registry::{EntityType, FeatureDef, FeatureView, Registry};

/// The view an input is loaded into, with its entity (key prefix, id rules).
#[derive(Debug, Clone)]
pub struct Schema {
    pub view: FeatureView,
    pub entity: EntityType,
}

impl Schema {
    /// The view named `view`'s schema; unknown: the views there are.
    pub fn named(registry: &Registry, view: &str) -> Result<Schema, String> {
        let found = registry.view(view).ok_or_else(|| {
            format!(
                "no view {view:?} in the registry; its views: {}",
                view_names(registry)
            )
        })?;
        Self::of(registry, found)
    }

    fn of(registry: &Registry, view: &FeatureView) -> Result<Schema, String> {
        // `Registry::parse` refuses a view of an undeclared entity; this
        // only guards a registry built by hand.
        let entity = registry.entity(&view.entity).ok_or_else(|| {
            format!(
                "view {:?} names the unknown entity {:?}",
                view.name, view.entity
            )
        })?;
        Ok(Schema {
            view: view.clone(),
            entity: entity.clone(),
        })
    }

    /// The one view whose features include every column of the input.
    /// None or several: an error listing the candidates, so the user can
    /// pick one with `--view`.
    pub fn infer(registry: &Registry, columns: &BTreeSet<String>) -> Result<Schema, String> {
        if columns.is_empty() {
            return Err("no feature columns found to infer the view from; give --view".into());
        }
        let fits: Vec<&FeatureView> = registry
            .views
            .iter()
            .filter(|v| columns.iter().all(|c| v.feature(c).is_some()))
            .collect();
        match fits.as_slice() {
            [one] => Self::of(registry, one),
            [] => {
                let lacks: Vec<String> = registry
                    .views
                    .iter()
                    .map(|v| {
                        let missing: Vec<&str> = columns
                            .iter()
                            .filter(|c| v.feature(c).is_none())
                            .map(String::as_str)
                            .collect();
                        format!("{} lacks {}", v.name, missing.join(", "))
                    })
                    .collect();
                Err(format!(
                    "no view of the registry has every column of the input ({}): {}; \
                     give --view or fix the columns",
                    join(columns),
                    lacks.join("; ")
                ))
            }
            several => {
                let names: Vec<&str> = several.iter().map(|v| v.name.as_str()).collect();
                Err(format!(
                    "the input's columns ({}) fit several views: {}; choose one with --view",
                    join(columns),
                    names.join(", ")
                ))
            }
        }
    }

    /// The entity's id rules (narrower than the store's).
    pub fn check_id(&self, id: &str) -> Result<(), String> {
        self.entity.check_id(id).map_err(|e| e.to_string())
    }

    /// The view's feature named by a column.
    pub fn feature(&self, column: &str) -> Result<&FeatureDef, String> {
        self.view.feature(column).ok_or_else(|| {
            format!(
                "unknown feature {column:?} in view {:?} (its features: {})",
                self.view.name,
                self.view
                    .features
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }

    /// A non-empty text cell (CSV) of `column`: its canonical stored text.
    pub fn text_cell(&self, column: &str, text: &str) -> Result<String, String> {
        let def = self.feature(column)?;
        def.ty
            .parse_text(text)
            .map(|v| v.encode())
            .map_err(|why| format!("column {column:?}: {why}"))
    }

    /// A non-null JSON value of `column`: its canonical stored text. JSON
    /// is typed, so it must already be of the declared type (a number for
    /// an int, an array for a vector): `"5"` is not an int.
    pub fn json_cell(&self, column: &str, value: &serde_json::Value) -> Result<String, String> {
        let def = self.feature(column)?;
        def.ty
            .parse_json(value)
            .map(|v| v.encode())
            .map_err(|why| format!("column {column:?}: {why}"))
    }
}

fn view_names(registry: &Registry) -> String {
    registry
        .views
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn join(columns: &BTreeSet<String>) -> String {
    columns
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const TOML: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[entity]]
name = "merchant"
key_prefix = "fs:merchant:"
id_chars = "_"

[[view]]
name = "user_profile"
entity = "user"
kind = "batch"
ttl_seconds = 100

[[view.feature]]
name = "age"
type = "int"

[[view.feature]]
name = "score"
type = "float"

[[view]]
name = "merchant_profile"
entity = "merchant"
kind = "batch"
ttl_seconds = 100

[[view.feature]]
name = "age"
type = "int"
"#;

    fn registry() -> Registry {
        Registry::parse(TOML, "t.toml").expect("parses")
    }

    fn cols(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_view_is_inferred_from_the_columns_or_the_candidates_are_listed() {
        let r = registry();
        let s = Schema::infer(&r, &cols(&["age", "score"])).expect("one view fits");
        assert_eq!(
            (s.view.name.as_str(), s.entity.name.as_str()),
            ("user_profile", "user")
        );
        let err = Schema::infer(&r, &cols(&["age"])).expect_err("two fit");
        assert!(err.contains("user_profile, merchant_profile"), "{err}");
        let err = Schema::infer(&r, &cols(&["age", "zip"])).expect_err("none fits");
        assert!(err.contains("user_profile lacks zip"), "{err}");
        assert!(err.contains("merchant_profile lacks zip"), "{err}");
        assert!(Schema::named(&r, "nope")
            .expect_err("unknown")
            .contains("user_profile"));
    }

    #[test]
    fn cells_are_typed_and_canonical() {
        let s = Schema::named(&registry(), "user_profile").expect("view");
        assert_eq!(s.text_cell("score", "1.50").as_deref(), Ok("1.5"));
        assert_eq!(s.json_cell("age", &json!(7)).as_deref(), Ok("7"));
        assert_eq!(
            s.text_cell("age", "abc").unwrap_err(),
            "column \"age\": expected int, got \"abc\""
        );
        assert!(s.json_cell("age", &json!("7")).is_err());
        let err = s.text_cell("zip", "1").unwrap_err();
        assert!(
            err.starts_with("unknown feature \"zip\" in view \"user_profile\""),
            "{err}"
        );
        let m = Schema::named(&registry(), "merchant_profile").expect("view");
        assert!(m.check_id("m_1").is_ok());
        assert!(m.check_id("m-1").is_err());
    }
}
