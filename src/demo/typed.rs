//! Synthetic values for any registry: what the demo writes when the
//! registry is not the demo's own. Each value is drawn from its declared
//! type (a category from its values, a vector of its length), so whatever
//! the demo writes reads back typed through `/v1/features`.

use rand::seq::SliceRandom;
use rand::Rng;

use crate::registry::{FeatureType, FeatureView, Value};
use crate::value::FeatureMap;

/// One value of type `ty`.
pub fn value(ty: &FeatureType, rng: &mut impl Rng) -> Value {
    match ty {
        FeatureType::Int => Value::Int(rng.gen_range(0..=1000)),
        FeatureType::Float => Value::Float((rng.gen_range(0.0..500.0f64) * 100.0).round() / 100.0),
        FeatureType::Bool => Value::Bool(rng.gen()),
        FeatureType::String => Value::String(format!("s-{:04x}", rng.gen::<u16>())),
        FeatureType::Category(values) => match values.choose(rng) {
            Some(v) => Value::String(v.clone()),
            // A category without values is refused when the registry is
            // parsed; an empty string keeps this total anyway.
            None => Value::String(String::new()),
        },
        FeatureType::FloatVector(n) => Value::FloatVector(
            (0..*n)
                .map(|_| (rng.gen_range(-1.0..1.0f64) * 1000.0).round() / 1000.0)
                .collect(),
        ),
    }
}

/// Every feature of `views`, each with a value of its type.
pub fn row<'a>(views: impl IntoIterator<Item = &'a FeatureView>, rng: &mut impl Rng) -> FeatureMap {
    views
        .into_iter()
        .flat_map(|v| v.features.iter())
        .map(|f| (f.name.clone(), value(&f.ty, rng).to_feature_value()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const TYPES: &str = r#"
[[entity]]
name = "shop"
key_prefix = "t:shop:"

[[view]]
name = "p"
entity = "shop"
kind = "batch"
ttl_seconds = 60

[[view.feature]]
name = "a"
type = "int"
[[view.feature]]
name = "b"
type = "float"
[[view.feature]]
name = "c"
type = "bool"
[[view.feature]]
name = "d"
type = "string"
[[view.feature]]
name = "e"
type = "category"
values = ["x", "y"]
[[view.feature]]
name = "f"
type = "float_vector"
length = 5
"#;

    #[test]
    fn every_value_reads_back_as_its_declared_type() {
        let registry = Registry::parse(TYPES, "test").expect("parses");
        let view = registry.view("p").expect("view");
        let mut rng = StdRng::seed_from_u64(3);
        for _ in 0..500 {
            let row = row([view], &mut rng);
            assert_eq!(row.len(), 6);
            for f in &view.features {
                let stored = row[&f.name].encode();
                let back = f.ty.parse_stored(stored.as_bytes());
                assert!(back.is_ok(), "{}: {stored:?} {back:?}", f.name);
            }
        }
    }
}
