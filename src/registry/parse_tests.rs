//! Every check of `parse`, each asserting the line it names.

use proptest::prelude::*;

use super::{FeatureType, Registry, Value, ViewKind};

/// A valid registry: two entities, every type, two models.
const GOOD: &str = r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[entity]]
name = "merchant"
key_prefix = "fs:merchant:"
id_max_length = 16
id_chars = "_-"

[[view]]
name = "user_profile"
entity = "user"
kind = "batch"
ttl_seconds = 86400
features = [
  { name = "age", type = "int", default = 0 },
  { name = "score", type = "float", default = 1 },
  { name = "verified", type = "bool" },
  { name = "nickname", type = "string" },
  { name = "segment", type = "category", values = ["a", "b"], default = "a" },
  { name = "embedding", type = "float_vector", length = 3, default = [0, 0.5, 1] },
]

[[view]]
name = "merchant_live"
entity = "merchant"
kind = "stream"
ttl_seconds = 60

[[view.feature]]
name = "orders_1m"
type = "int"

[[model]]
name = "m1"
features = ["user_profile.embedding", "user_profile.age"]
defaults = { "user_profile.age" = 18 }

[[model]]
name = "m2"
features = ["merchant_live.orders_1m"]
"#;

/// The messages at the line holding `#!`, and the whole rendering.
fn problems_at_mark(text: &str) -> (Vec<String>, String) {
    let line = text
        .lines()
        .position(|l| l.contains("#!"))
        .expect("the test marks a line")
        + 1;
    match Registry::parse(text, "t.toml") {
        Ok(_) => (Vec::new(), "parsed".into()),
        Err(e) => (
            e.at_line(line).into_iter().map(str::to_owned).collect(),
            e.to_string(),
        ),
    }
}

/// `text` is refused with a message containing `want` on the marked line.
#[track_caller]
fn refused_at_mark(text: &str, want: &str) {
    let (at, all) = problems_at_mark(text);
    assert!(
        at.iter().any(|m| m.contains(want)),
        "want {want:?} on the #! line; got:\n{all}"
    );
}

fn good_with(extra: &str) -> String {
    format!("{GOOD}\n{extra}")
}

#[test]
fn the_demo_registry_parses() {
    let demo = Registry::demo();
    assert_eq!(demo.default_entity().key_prefix, "fs:user:");
    let names = |v: &str| -> Vec<String> {
        demo.view(v)
            .expect("view")
            .features
            .iter()
            .map(|f| f.name.clone())
            .collect()
    };
    assert_eq!(names("user_profile"), crate::demo::synth::BATCH_FEATURES);
    assert_eq!(
        names("user_activity"),
        crate::demo::synth::STREAMING_FEATURES
    );
    // What the server lists and reads by default, by kind and in all.
    use crate::registry::ViewKind;
    let synth = &crate::demo::synth::BATCH_FEATURES;
    assert_eq!(demo.feature_names("user", Some(ViewKind::Batch)), synth);
    let all: Vec<&str> = synth
        .iter()
        .chain(crate::demo::synth::STREAMING_FEATURES.iter())
        .copied()
        .collect();
    assert_eq!(demo.feature_names("user", None), all);
    assert!(demo.feature_names("merchant", None).is_empty());
    assert_eq!(
        demo.view("user_profile").map(|v| v.ttl_seconds),
        Some(86400)
    );
    assert_eq!(demo.view("user_activity").map(|v| v.ttl_seconds), Some(300));
    assert!(demo.model("fraud_v1").is_some());
}

#[test]
fn every_value_synth_writes_parses_as_its_declared_type() {
    use rand::SeedableRng;
    let demo = Registry::demo();
    let ty = |name: &str| -> FeatureType {
        demo.views
            .iter()
            .flat_map(|v| &v.features)
            .find(|f| f.name == name)
            .map(|f| f.ty.clone())
            .unwrap_or_else(|| panic!("{name} is not in the demo registry"))
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let rows = crate::demo::synth::users(3000, 5).map(|(_, f)| f).chain(
        (0..3000).map(|i| crate::demo::synth::streaming_features(&mut rng, 1_716_998_413_541 + i)),
    );
    for row in rows {
        for (name, value) in row {
            let stored = value.encode();
            let parsed = ty(&name).parse_stored(stored.as_bytes());
            assert!(parsed.is_ok(), "{name} = {stored:?}: {parsed:?}");
        }
    }
}

#[test]
fn a_good_registry_keeps_file_order_types_and_defaults() {
    let r = Registry::parse(GOOD, "t.toml").expect("parses");
    assert_eq!(r.entities.len(), 2);
    assert_eq!(r.entity("merchant").map(|e| e.id_max_len), Some(16));
    let v = r.view("user_profile").expect("view");
    assert_eq!(v.kind, ViewKind::Batch);
    let names: Vec<&str> = v.features.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "age",
            "score",
            "verified",
            "nickname",
            "segment",
            "embedding"
        ]
    );
    assert_eq!(v.features[1].default, Some(Value::Float(1.0)));
    assert_eq!(v.features[5].ty, FeatureType::FloatVector(3));
    assert_eq!(
        v.features[5].default,
        Some(Value::FloatVector(vec![0.0, 0.5, 1.0]))
    );
    assert_eq!(
        r.view("merchant_live").map(|v| v.kind),
        Some(ViewKind::Stream)
    );
    let m = r.resolve_model("m1").expect("resolves");
    assert_eq!(m.entity.name, "user");
    let cols: Vec<(&str, Option<Value>)> = m
        .columns
        .iter()
        .map(|c| (c.reference.as_str(), c.default.clone()))
        .collect();
    assert_eq!(
        cols,
        [
            (
                "user_profile.embedding",
                Some(Value::FloatVector(vec![0.0, 0.5, 1.0]))
            ),
            // The model's default wins over the feature's 0.
            ("user_profile.age", Some(Value::Int(18))),
        ]
    );
}

#[test]
fn entity_ids_follow_the_entity_rules() {
    let r = Registry::parse(GOOD, "t.toml").expect("parses");
    let merchant = r.entity("merchant").expect("merchant");
    assert!(merchant.check_id("m_1-2").is_ok());
    assert!(merchant.check_id("m.1").is_err());
    assert!(merchant.check_id(&"m".repeat(17)).is_err());
    assert!(r.default_entity().check_id("a.b:c@d").is_ok());
    assert!(r.default_entity().check_id("u*").is_err());
}

#[test]
fn features_resolve_qualified_or_bare_within_one_entity() {
    use super::LookupError;
    let r = Registry::parse(GOOD, "t.toml").expect("parses");
    let refs = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let got = r
        .resolve_features(Some("user"), &refs(&["segment", "user_profile.age"]))
        .expect("resolves");
    assert_eq!(got.columns[0].reference, "user_profile.segment");
    assert_eq!(got.columns[0].field, "segment");
    // The entity comes from the first qualified reference.
    let got = r
        .resolve_features(None, &refs(&["merchant_live.orders_1m"]))
        .expect("resolves");
    assert_eq!(got.entity.name, "merchant");
    assert_eq!(got.columns[0].kind, ViewKind::Stream);

    let err = |e: Option<&str>, v: &[&str]| r.resolve_features(e, &refs(v)).unwrap_err();
    assert!(err(None, &["nope"]).is_not_found());
    assert!(err(Some("shop"), &["age"]).is_not_found());
    assert!(err(None, &["user_profile.nope"]).is_not_found());
    assert!(matches!(
        err(None, &["user_profile.age", "merchant_live.orders_1m"]),
        LookupError::MixedEntities { .. }
    ));
    // A bare name resolves in the entity asked for only.
    assert!(err(Some("merchant"), &["age"]).is_not_found());
    assert_eq!(err(None, &[]), LookupError::Empty);
    assert!(matches!(
        err(None, &["age", "user_profile.age"]),
        LookupError::Duplicate(_)
    ));
    assert!(r.resolve_model("nope").unwrap_err().is_not_found());
}

#[test]
fn malformed_toml_names_its_line() {
    refused_at_mark(
        "[[entity]]\nname = \"user\"\nkey_prefix = \"fs:\" \"x\" #!\n",
        "TOML",
    );
    refused_at_mark("[[entity]]\nname = \"user\"\nname = \"again\" #!\n", "TOML");
}

#[test]
fn an_empty_file_is_refused() {
    let err = Registry::parse("", "t.toml").unwrap_err();
    assert!(err.to_string().contains("at least one entity"), "{err}");
}

#[test]
fn an_unknown_type_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = 5\n[[view.feature]]\nname = \"x\"\ntype = \"integer\" #!\n"),
        "unknown type \"integer\"",
    );
}

#[test]
fn an_unknown_kind_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"online\" #!\nttl_seconds = 5\nfeatures = [{ name = \"x\", type = \"int\" }]\n"),
        "unknown kind \"online\"",
    );
}

#[test]
fn a_duplicate_entity_names_its_line() {
    refused_at_mark(
        &good_with("[[entity]]\nname = \"user\" #!\nkey_prefix = \"other:\"\n"),
        "entity \"user\" is already declared on line 3",
    );
}

#[test]
fn a_duplicate_view_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"merchant_live\" #!\nentity = \"merchant\"\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [{ name = \"y\", type = \"int\" }]\n"),
        "view \"merchant_live\" is already declared",
    );
}

#[test]
fn a_duplicate_feature_in_one_view_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [\n { name = \"x\", type = \"int\" },\n { name = \"x\", type = \"int\" }, #!\n]\n"),
        "feature \"x\" is already declared in view \"v\" on line",
    );
}

#[test]
fn a_feature_in_two_views_of_one_entity_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"stream\"\nttl_seconds = 5\nfeatures = [\n { name = \"age\", type = \"int\" }, #!\n]\n"),
        "already in view \"user_profile\"",
    );
    // Another entity is another hash: the same name is fine there.
    let ok = good_with("[[view]]\nname = \"v\"\nentity = \"merchant\"\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [{ name = \"age\", type = \"int\" }]\n");
    assert!(Registry::parse(&ok, "t.toml").is_ok());
}

#[test]
fn a_duplicate_model_names_its_line() {
    refused_at_mark(
        &good_with("[[model]]\nname = \"m2\" #!\nfeatures = [\"merchant_live.orders_1m\"]\n"),
        "model \"m2\" is already declared",
    );
}

#[test]
fn a_view_naming_a_missing_entity_names_its_line() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v\"\nentity = \"shop\" #!\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [{ name = \"x\", type = \"int\" }]\n"),
        "entity \"shop\", which is not declared",
    );
}

fn one_feature(line: &str) -> String {
    good_with(&format!(
        "[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = 5\n[[view.feature]]\n{line}\n"
    ))
}

#[test]
fn a_default_of_the_wrong_type_names_its_line() {
    for (feature, want) in [
        (
            "name = \"x\"\ntype = \"int\"\ndefault = \"zero\" #!",
            "expected int",
        ),
        (
            "name = \"x\"\ntype = \"int\"\ndefault = 1.5 #!",
            "expected int",
        ),
        (
            "name = \"x\"\ntype = \"bool\"\ndefault = 1 #!",
            "expected bool",
        ),
        (
            "name = \"x\"\ntype = \"float\"\ndefault = nan #!",
            "expected float",
        ),
        (
            "name = \"x\"\ntype = \"category\"\nvalues = [\"a\"]\ndefault = \"b\" #!",
            "expected one of [\"a\"]",
        ),
        (
            "name = \"x\"\ntype = \"float_vector\"\nlength = 2\ndefault = [1, 2, 3] #!",
            "expected float_vector[2], got an array of 3",
        ),
    ] {
        refused_at_mark(&one_feature(feature), want);
    }
}

#[test]
fn a_float_vector_without_a_length_names_its_line() {
    refused_at_mark(
        &one_feature("name = \"x\"\ntype = \"float_vector\" #!"),
        "needs `length`",
    );
    refused_at_mark(
        &one_feature("name = \"x\"\ntype = \"float_vector\"\nlength = 0 #!"),
        "length must be 1 to",
    );
}

#[test]
fn a_category_without_values_names_its_line() {
    refused_at_mark(
        &one_feature("name = \"x\"\ntype = \"category\" #!"),
        "needs `values`",
    );
    refused_at_mark(
        &one_feature("name = \"x\"\ntype = \"category\"\nvalues = [] #!"),
        "at least one value",
    );
    refused_at_mark(
        &one_feature("name = \"x\"\ntype = \"category\"\nvalues = [\"a\",\n \"a\"] #!"),
        "listed twice",
    );
}

#[test]
fn a_bad_feature_name_names_its_line() {
    refused_at_mark(
        &one_feature("name = \"a b\" #!\ntype = \"int\""),
        "feature name",
    );
    refused_at_mark(
        &one_feature("name = \"\" #!\ntype = \"int\""),
        "feature name",
    );
}

#[test]
fn a_model_naming_a_missing_view_or_feature_names_its_line() {
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\n \"nope.age\", #!\n]\n"),
        "view \"nope\", which is not declared",
    );
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\n \"user_profile.nope\", #!\n]\n"),
        "has no feature \"nope\"",
    );
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\n \"age\", #!\n]\n"),
        "must be \"view.feature\"",
    );
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\"user_profile.age\"]\ndefaults = { \"user_profile.score\" = 1.0 } #!\n"),
        "not in this model's features",
    );
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\"user_profile.age\"]\n[model.defaults]\n\"user_profile.age\" = \"old\" #!\n"),
        "expected int",
    );
}

/// GOOD with age bounds: the feature `age` 60 s, `score` none, the model
/// 30 s overall and its own bounds per column.
fn bounded(feature_bound: &str, model_lines: &str) -> String {
    format!(
        r#"
[[entity]]
name = "user"
key_prefix = "fs:user:"

[[view]]
name = "p"
entity = "user"
kind = "stream"
ttl_seconds = 300
features = [
  {{ name = "age", type = "int", max_age_ms = {feature_bound} }},
  {{ name = "score", type = "float" }},
  {{ name = "seen", type = "bool" }},
]

[[model]]
name = "m"
features = ["p.age", "p.score", "p.seen"]
{model_lines}
"#
    )
}

#[test]
fn a_columns_age_bound_is_the_smallest_the_registry_gives_it() {
    let bounds = |feature_bound: &str, model_lines: &str| -> Vec<Option<u64>> {
        let r = Registry::parse(&bounded(feature_bound, model_lines), "t.toml")
            .unwrap_or_else(|e| panic!("{e}"));
        r.resolve_model("m")
            .expect("resolves")
            .columns
            .iter()
            .map(|c| c.max_age_ms)
            .collect()
    };
    // The feature's own bound alone; the others are unbounded.
    assert_eq!(bounds("60000", ""), [Some(60_000), None, None]);
    // A model bound covers every column, and tightens the feature's only
    // where it is smaller.
    assert_eq!(
        bounds("60000", "max_age_ms = 30000"),
        [Some(30_000), Some(30_000), Some(30_000)]
    );
    assert_eq!(
        bounds("6000", "max_age_ms = 30000"),
        [Some(6_000), Some(30_000), Some(30_000)]
    );
    // Per column: tightens, never loosens.
    assert_eq!(
        bounds(
            "60000",
            "max_age_ms = 30000\nmax_ages_ms = { \"p.age\" = 90000, \"p.score\" = 500 }"
        ),
        [Some(30_000), Some(500), Some(30_000)]
    );
    assert_eq!(
        bounds("60000", "[model.max_ages_ms]\n\"p.seen\" = 1"),
        [Some(60_000), None, Some(1)]
    );
    // A feature list (no model) gets the features' own bounds.
    let r = Registry::parse(&bounded("60000", "max_age_ms = 1"), "t.toml").expect("parses");
    let cols = r
        .resolve_features(None, &["p.age".into(), "score".into()])
        .expect("resolves")
        .columns;
    assert_eq!(cols[0].max_age_ms, Some(60_000));
    assert_eq!(cols[1].max_age_ms, None);
    // The request's bound tightens a column's, never loosens it.
    assert_eq!(cols[0].max_age_under(Some(1000)), Some(1000));
    assert_eq!(cols[0].max_age_under(Some(90_000)), Some(60_000));
    assert_eq!(cols[0].max_age_under(None), Some(60_000));
    assert_eq!(cols[1].max_age_under(Some(5)), Some(5));
    assert_eq!(cols[1].max_age_under(None), None);
    // The largest bound is accepted.
    assert_eq!(bounds("315360000000", "")[0], Some(315_360_000_000));
}

#[test]
fn the_registry_json_shows_the_bounds_the_file_gives_and_only_those() {
    let text = bounded(
        "60000",
        "max_age_ms = 30000\nmax_ages_ms = { \"p.score\" = 500 }",
    );
    let j = Registry::parse(&text, "t.toml").expect("parses").to_json();
    assert_eq!(j["views"][0]["features"][0]["max_age_ms"], 60000);
    assert!(j["views"][0]["features"][1].get("max_age_ms").is_none());
    assert_eq!(j["models"][0]["max_age_ms"], 30000);
    assert!(j["models"][0]["features"][0].get("max_age_ms").is_none());
    assert_eq!(j["models"][0]["features"][1]["max_age_ms"], 500);
}

#[test]
fn a_bad_max_age_names_its_line() {
    for (bad, want) in [
        ("0", "max_age_ms must be 1 to 315360000000, got 0"),
        ("-5", "max_age_ms must be 1 to 315360000000, got -5"),
        ("315360000001", "got 315360000001"),
        ("99999999999999999999", "got 99999999999999999999"),
        ("1.5", "max_age_ms must be an integer"),
        ("\"60000\"", "max_age_ms must be an integer"),
        ("60e3", "max_age_ms must be an integer"),
        ("true", "max_age_ms must be an integer"),
    ] {
        // On a feature (the inline table's line)...
        let text = bounded(bad, "").replace(
            &format!("max_age_ms = {bad} }},"),
            &format!("max_age_ms = {bad} }}, #!"),
        );
        refused_at_mark(&text, want);
        // ... and as [[view.feature]].
        refused_at_mark(
            &one_feature(&format!(
                "name = \"x\"\ntype = \"int\"\nmax_age_ms = {bad} #!"
            )),
            want,
        );
        // On a model, and for one column of it.
        refused_at_mark(&bounded("1000", &format!("max_age_ms = {bad} #!")), want);
        refused_at_mark(
            &bounded(
                "1000",
                &format!("[model.max_ages_ms]\n\"p.age\" = {bad} #!"),
            ),
            if want.starts_with("max_age_ms must be an integer") {
                "max_ages_ms for \"p.age\" must be an integer"
            } else {
                want.trim_start_matches("max_age_ms ")
            },
        );
    }
}

#[test]
fn a_models_per_column_bound_must_name_its_features() {
    refused_at_mark(
        &bounded("1000", "max_ages_ms = { \"p.nope\" = 10 } #!"),
        "max_ages_ms for \"p.nope\", which is not in this model's features",
    );
    refused_at_mark(
        &bounded("1000", "max_ages_ms = 10 #!"),
        "`max_ages_ms` must be a table",
    );
    refused_at_mark(&bounded("1000", "max_age = 10 #!"), "unknown key `max_age`");
}

#[test]
fn a_model_mixing_entities_names_its_line() {
    refused_at_mark(
        &good_with("[[model]]\nname = \"m3\"\nfeatures = [\n \"user_profile.age\",\n \"merchant_live.orders_1m\", #!\n]\n"),
        "a model reads one entity",
    );
}

#[test]
fn a_ttl_out_of_range_names_its_line() {
    for ttl in ["0", "-1", "315360001"] {
        refused_at_mark(
            &good_with(&format!("[[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"batch\"\nttl_seconds = {ttl} #!\nfeatures = [{{ name = \"x\", type = \"int\" }}]\n")),
            "ttl_seconds must be 1 to 315360000",
        );
    }
}

#[test]
fn an_empty_or_overlapping_key_prefix_names_its_line() {
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\"\nkey_prefix = \"\" #!\n"),
        "key prefix must be",
    );
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\" #!\nkey_prefix = \"fs:u\"\n"),
        "overlaps \"fs:user:\"",
    );
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\" #!\nkey_prefix = \"fs:user:vip:\"\n"),
        "one is a prefix of the other",
    );
}

#[test]
fn unknown_and_missing_keys_name_their_line() {
    refused_at_mark(
        &good_with("[[view]] #!\nname = \"v\"\nentity = \"user\"\nkind = \"batch\"\nfeatures = [{ name = \"x\", type = \"int\" }]\n"),
        "no `ttl_seconds`",
    );
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\"\nprefix = \"x:\" #!\n"),
        "unknown key `prefix`",
    );
    refused_at_mark(
        &good_with("[[entity]] #!\nname = \"shop\"\n"),
        "no `key_prefix`",
    );
}

#[test]
fn every_problem_is_listed_one_per_line_in_line_order() {
    let text = "[[entity]]\nname = \"user\"\nkey_prefix = \"fs:user:\"\n\
        [[view]]\nname = \"v\"\nentity = \"user\"\nkind = \"daily\"\nttl_seconds = 0\n\
        features = [{ name = \"x\", type = \"integer\" }]\n";
    let err = Registry::parse(text, "f.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "f.toml:7: unknown kind \"daily\" (expected batch or stream)\n\
         f.toml:8: ttl_seconds must be 1 to 315360000, got 0\n\
         f.toml:9: unknown type \"integer\" (expected int, float, bool, string, category, float_vector)"
    );
}

#[test]
fn a_missing_file_is_one_problem_naming_the_path() {
    let err = Registry::load(std::path::Path::new("/nonexistent/features.toml")).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("/nonexistent/features.toml: cannot read the registry"),
        "{err}"
    );
}

/// Pieces of registry files, shuffled into near-valid documents.
fn fragment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("[[entity]]\n".to_string()),
        Just("[[view]]\n".to_string()),
        Just("[[view.feature]]\n".to_string()),
        Just("[[model]]\n".to_string()),
        Just("[model.defaults]\n".to_string()),
        Just("[model.max_ages_ms]\n".to_string()),
        "(name|key_prefix|entity|kind|type|values|length|default|features|ttl_seconds|id_chars|id_max_length|max_age_ms|max_ages_ms) = ".prop_map(|s| s),
        "\"[a-z_.:]{0,8}\"\n",
        "-?[0-9]{1,12}\n",
        Just("[\"a\", \"b\"]\n".to_string()),
        Just("[1, 2.5]\n".to_string()),
        Just("{ \"v.f\" = 1 }\n".to_string()),
        Just("\"batch\"\n".to_string()),
        Just("\"float_vector\"\n".to_string()),
        Just("\"category\"\n".to_string()),
        ".{0,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "(?s).{0,300}") {
        let _ = Registry::parse(&text, "t.toml");
    }

    #[test]
    fn near_valid_files_never_panic_and_report_real_lines(
        parts in prop::collection::vec(fragment(), 0..40)
    ) {
        let text = parts.concat();
        let lines = text.lines().count().max(1);
        if let Err(e) = Registry::parse(&text, "t.toml") {
            prop_assert!(!e.problems.is_empty());
            for p in &e.problems {
                prop_assert!(p.line >= 1 && p.line <= lines + 1, "{} of {}", p.line, lines);
            }
        }
    }
}

#[test]
fn the_documented_format_example_parses_with_the_bounds_it_describes() {
    let doc = include_str!("../../docs/registry.md");
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let block = &doc[start..];
    let block = &block[..block.find("```").expect("the block ends")];
    let r = Registry::parse(block, "docs/registry.md").unwrap_or_else(|e| panic!("{e}"));
    let bounds: Vec<(String, Option<u64>)> = r
        .resolve_model("fraud_v1")
        .expect("resolves")
        .columns
        .into_iter()
        .map(|c| (c.reference, c.max_age_ms))
        .collect();
    // As the doc says: the column's own entry beats the feature's hour
    // and the model's day; the other column gets the model's day.
    assert_eq!(
        bounds,
        [
            ("user_profile.risk_segment".to_string(), Some(86_400_000)),
            ("user_profile.embedding".to_string(), Some(600_000)),
        ]
    );
}

#[test]
fn feast_names_default_to_entity_id_and_the_view_name() {
    let r = Registry::parse(GOOD, "t.toml").expect("GOOD parses");
    assert_eq!(r.entities[0].join_key, "user_id");
    assert_eq!(r.entities[1].join_key, "merchant_id");
    assert_eq!(r.views[0].feast_name, "user_profile");
    let text = GOOD
        .replacen(
            "name = \"user\"\n",
            "name = \"user\"\njoin_key = \"customer\"\n",
            1,
        )
        .replacen(
            "name = \"user_profile\"\n",
            "name = \"user_profile\"\nfeast_name = \"customer_stats\"\n",
            1,
        );
    let r = Registry::parse(&text, "t.toml").expect("feast names parse");
    assert_eq!(r.entities[0].join_key, "customer");
    assert_eq!(r.views[0].feast_name, "customer_stats");
    assert_eq!(r.views[1].feast_name, "merchant_live");
    assert_eq!(r.views[1].feast_push_source, None);
    let text = GOOD.replacen(
        "name = \"merchant_live\"\n",
        "name = \"merchant_live\"\nfeast_push_source = \"orders_push\"\n",
        1,
    );
    let r = Registry::parse(&text, "t.toml").expect("a push source parses");
    assert_eq!(r.views[1].feast_push_source.as_deref(), Some("orders_push"));
}

#[test]
fn a_join_key_two_entities_share_is_refused() {
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\" #!\nkey_prefix = \"fs:shop:\"\njoin_key = \"merchant_id\"\n"),
        "join_key \"merchant_id\" of entity \"shop\" is already entity \"merchant\"'s",
    );
}

#[test]
fn a_feast_name_two_views_share_is_refused() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v2\" #!\nfeast_name = \"merchant_live\"\nentity = \"merchant\"\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [{ name = \"y\", type = \"int\" }]\n"),
        "feast_name \"merchant_live\" of view \"v2\" is already view \"merchant_live\"'s",
    );
}

#[test]
fn a_feast_name_or_join_key_with_a_colon_is_refused() {
    refused_at_mark(
        &good_with("[[view]]\nname = \"v2\"\nfeast_name = \"a:b\" #!\nentity = \"merchant\"\nkind = \"batch\"\nttl_seconds = 5\nfeatures = [{ name = \"y\", type = \"int\" }]\n"),
        "Feast view name \"a:b\" must be",
    );
    refused_at_mark(
        &good_with("[[entity]]\nname = \"shop\"\nkey_prefix = \"fs:shop:\"\njoin_key = 7 #!\n"),
        "`join_key` must be a string",
    );
}
