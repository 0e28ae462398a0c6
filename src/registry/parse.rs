//! Reading a registry file: TOML, checked completely, every problem with
//! its line.
//!
//! ```toml
//! [[entity]]
//! name = "user"
//! key_prefix = "fs:user:"
//! id_max_length = 64        # optional, 1..=128 (default 128)
//! id_chars = "_-"           # optional: punctuation allowed besides letters
//!                           # and digits, from "_-.:@" (the default)
//! join_key = "user_id"      # optional: Feast's key column (default <name>_id)
//!
//! [[view]]
//! name = "user_profile"
//! entity = "user"
//! kind = "batch"            # batch: key TTL | stream: per-field TTL
//! ttl_seconds = 86400       # 1..=315360000
//! feast_name = "profile"    # optional: Feast's name for the view (default: name)
//! feast_push_source = "profile_push"  # optional: Feast's push source feeding it
//!
//! [[view.feature]]          # in order; or `features = [{...}, ...]`
//! name = "risk_segment"
//! type = "category"         # int | float | bool | string | category | float_vector
//! values = ["low", "medium", "high"]   # category only
//! default = "low"           # optional, of the feature's type
//!
//! [[view.feature]]
//! name = "embedding"
//! type = "float_vector"
//! length = 4                # float_vector only, >= 1
//! max_age_ms = 60000        # optional, 1..=315360000000: older is stale
//!
//! [[model]]
//! name = "fraud_v1"
//! features = ["user_profile.risk_segment", "user_profile.embedding"]
//! defaults = { "user_profile.risk_segment" = "medium" }   # optional
//! max_age_ms = 600000                                     # optional, every column
//! max_ages_ms = { "user_profile.embedding" = 30000 }      # optional, per column
//! ```
//!
//! A column's age bound is the smallest of those given (the feature's, the
//! model's, the model's for it): a bound can only tighten, so a model
//! cannot serve a feature older than the feature itself allows.
//!
//! Every problem is collected before failing, so one run of the server
//! lists them all. The walk goes over toml's spanned document rather than
//! serde structs: a derive stops at the first missing field.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use super::error::{Problem, RegistryError};
use super::types::{
    EntityType, FeatureDef, FeatureType, FeatureView, Model, ModelFeature, Registry, Value,
    ViewKind, DEFAULT_ID_CHARS,
};
use crate::validate;

/// The longest TTL a view may declare: ten years, as the loader allows.
pub const MAX_TTL_SECONDS: i64 = 315_360_000;
/// The longest float vector (an embedding) a feature may declare.
pub const MAX_VECTOR_LEN: i64 = 65_536;
/// The largest `max_age_ms`: ten years, the longest TTL, in milliseconds.
pub const MAX_AGE_MS: i64 = MAX_TTL_SECONDS * 1000;
/// Entity, view and model names: short, and no dots (`view.feature`).
const MAX_OBJECT_NAME: usize = 64;

type Val<'i> = Spanned<DeValue<'i>>;

struct Ctx {
    line_starts: Vec<usize>,
    problems: Vec<Problem>,
}

impl Ctx {
    fn new(text: &str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Ctx {
            line_starts,
            problems: Vec::new(),
        }
    }

    fn line(&self, span: &Range<usize>) -> usize {
        self.line_starts
            .partition_point(|&s| s <= span.start)
            .max(1)
    }

    fn err(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let line = self.line(span);
        self.problems.push(Problem {
            line,
            message: message.into(),
        });
    }
}

/// See the module doc for the format.
pub(super) fn parse(text: &str, origin: &str) -> Result<Registry, RegistryError> {
    let mut ctx = Ctx::new(text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        // The document is partial: checking its meaning would only add
        // noise about what the parser dropped.
        for e in syntax {
            let span = e.span().unwrap_or(0..0);
            ctx.err(&span, format!("TOML: {}", e.message().trim_end()));
        }
        return Err(finish(ctx, origin));
    }
    let doc_span = doc.span();
    let doc = doc.into_inner();
    check_keys(&mut ctx, &doc, &["entity", "view", "model"], "the file");

    let entity_tables = tables(&mut ctx, &doc, "entity");
    // Names of items that have problems of their own still count as
    // declared, so one mistake is reported once, not again at every use.
    let entity_names = names(&entity_tables);
    let entities = entity_tables
        .into_iter()
        .filter_map(|(t, span)| entity(&mut ctx, t, &span))
        .collect::<Vec<_>>();
    if entities.is_empty() && doc.get("entity").is_none() {
        ctx.err(&doc_span, "no [[entity]]: declare at least one entity type");
    }
    check_entities(&mut ctx, &entities);

    let view_tables = tables(&mut ctx, &doc, "view");
    let view_names = names(&view_tables);
    let mut views = Vec::new();
    for (t, span) in view_tables {
        if let Some(v) = view(&mut ctx, t, &span, &entity_names) {
            views.push(v);
        }
    }
    check_views(&mut ctx, &views);

    let mut models = Vec::new();
    for (t, span) in tables(&mut ctx, &doc, "model") {
        if let Some(m) = model(&mut ctx, t, &span, &views, &view_names) {
            models.push(m);
        }
    }
    check_models(&mut ctx, &models);

    if !ctx.problems.is_empty() {
        return Err(finish(ctx, origin));
    }
    Ok(Registry {
        entities: entities.into_iter().map(|(e, _)| e).collect(),
        views: views.into_iter().map(|pv| pv.view).collect(),
        models: models.into_iter().map(|(m, _)| m).collect(),
    })
}

fn finish(mut ctx: Ctx, origin: &str) -> RegistryError {
    ctx.problems.sort();
    ctx.problems.dedup();
    RegistryError {
        origin: origin.to_owned(),
        problems: ctx.problems,
    }
}

/// The tables of an array of tables (`[[key]]` or `key = [{...}]`).
fn tables<'a, 'i>(
    ctx: &mut Ctx,
    parent: &'a DeTable<'i>,
    key: &str,
) -> Vec<(&'a DeTable<'i>, Range<usize>)> {
    let Some(v) = parent.get(key) else {
        return Vec::new();
    };
    let Some(items) = v.get_ref().as_array() else {
        ctx.err(
            &v.span(),
            format!("`{key}` must be an array of tables ([[{key}]])"),
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for item in items {
        match item.get_ref().as_table() {
            Some(t) => out.push((t, item.span())),
            None => ctx.err(&item.span(), format!("each `{key}` must be a table")),
        }
    }
    out
}

/// The string `name`s of some tables, valid or not.
fn names(tables: &[(&DeTable<'_>, Range<usize>)]) -> HashSet<String> {
    tables
        .iter()
        .filter_map(|(t, _)| t.get("name")?.get_ref().as_str().map(str::to_owned))
        .collect()
}

fn check_keys(ctx: &mut Ctx, t: &DeTable<'_>, allowed: &[&str], what: &str) {
    for key in t.keys() {
        if !allowed.contains(&key.get_ref().as_ref()) {
            ctx.err(
                &key.span(),
                format!(
                    "unknown key `{}` in {what} (expected one of: {})",
                    key.get_ref(),
                    allowed.join(", ")
                ),
            );
        }
    }
}

/// A required string; reports a missing key at the table's line.
fn req_str(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    span: &Range<usize>,
    key: &str,
    what: &str,
) -> Option<(String, Range<usize>)> {
    match t.get(key) {
        None => {
            ctx.err(span, format!("{what} has no `{key}`"));
            None
        }
        Some(v) => match v.get_ref().as_str() {
            Some(s) => Some((s.to_owned(), v.span())),
            None => {
                ctx.err(&v.span(), format!("`{key}` must be a string"));
                None
            }
        },
    }
}

fn opt_int(ctx: &mut Ctx, t: &DeTable<'_>, key: &str) -> Option<(Option<i64>, Range<usize>)> {
    let v = t.get(key)?;
    let n = v
        .get_ref()
        .as_integer()
        .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok());
    if n.is_none() {
        ctx.err(&v.span(), format!("`{key}` must be an integer"));
    }
    Some((n, v.span()))
}

/// A `max_age_ms` value: an integer number of milliseconds, 1 to
/// [`MAX_AGE_MS`]. `label` names it in the message (`max_age_ms`, or a
/// model's per-feature entry).
fn max_age(ctx: &mut Ctx, v: &Val<'_>, label: &str) -> Option<u64> {
    let Some(i) = v.get_ref().as_integer() else {
        ctx.err(
            &v.span(),
            format!("{label} must be an integer (milliseconds)"),
        );
        return None;
    };
    match i64::from_str_radix(i.as_str(), i.radix()) {
        Ok(n) if (1..=MAX_AGE_MS).contains(&n) => Some(n as u64),
        Ok(n) => {
            ctx.err(
                &v.span(),
                format!("{label} must be 1 to {MAX_AGE_MS}, got {n}"),
            );
            None
        }
        // Beyond 64 bits: still a number, just far too big.
        Err(_) => {
            ctx.err(
                &v.span(),
                format!("{label} must be 1 to {MAX_AGE_MS}, got {}", i.as_str()),
            );
            None
        }
    }
}

/// An entity, view or model name: it appears in URLs, JSON and
/// `view.feature` references, so no dots.
fn object_name(ctx: &mut Ctx, name: &str, span: &Range<usize>, what: &str) -> bool {
    let ok = !name.is_empty()
        && name.len() <= MAX_OBJECT_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        ctx.err(
            span,
            format!("{what} name {name:?} must be 1 to {MAX_OBJECT_NAME} of letters, digits, _ -"),
        );
    }
    ok
}

fn entity(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    span: &Range<usize>,
) -> Option<(EntityType, Range<usize>)> {
    check_keys(
        ctx,
        t,
        &[
            "name",
            "key_prefix",
            "id_max_length",
            "id_chars",
            "join_key",
        ],
        "an [[entity]]",
    );
    let name = req_str(ctx, t, span, "name", "an [[entity]]");
    let prefix = req_str(ctx, t, span, "key_prefix", "an [[entity]]");
    let mut ok = true;
    if let Some((n, s)) = &name {
        ok &= object_name(ctx, n, s, "entity");
    }
    if let Some((p, s)) = &prefix {
        if let Err(e) = validate::key_prefix(p) {
            ctx.err(s, strip_invalid(e));
            ok = false;
        }
    }
    let mut id_max_len = validate::MAX_ID_LEN;
    if let Some((n, s)) = opt_int(ctx, t, "id_max_length") {
        match n {
            Some(n) if (1..=validate::MAX_ID_LEN as i64).contains(&n) => id_max_len = n as usize,
            Some(n) => {
                ctx.err(
                    &s,
                    format!(
                        "id_max_length must be 1 to {}, got {n}",
                        validate::MAX_ID_LEN
                    ),
                );
                ok = false;
            }
            None => ok = false,
        }
    }
    let mut id_chars = DEFAULT_ID_CHARS.to_owned();
    if let Some(v) = t.get("id_chars") {
        match v.get_ref().as_str() {
            Some(chars) => {
                if let Some(c) = chars.chars().find(|c| !DEFAULT_ID_CHARS.contains(*c)) {
                    ctx.err(
                        &v.span(),
                        format!("id_chars may only hold {DEFAULT_ID_CHARS:?}, got {c:?}"),
                    );
                    ok = false;
                }
                id_chars = chars.to_owned();
            }
            None => {
                ctx.err(&v.span(), "`id_chars` must be a string");
                ok = false;
            }
        }
    }
    let join_key = opt_object_name(ctx, t, "join_key", "Feast join key");
    ok &= join_key.is_ok();
    let ((name, name_span), (key_prefix, _)) = (name?, prefix?);
    let join_key = join_key.ok()?.unwrap_or_else(|| format!("{name}_id"));
    ok.then_some((
        EntityType {
            name,
            key_prefix,
            id_max_len,
            id_chars,
            join_key,
        },
        name_span,
    ))
}

/// An optional name for Feast (`join_key`, `feast_name`): the rules of
/// our own object names, so it is never ambiguous in `view:feature`.
/// `Err` when given but refused (already reported).
fn opt_object_name(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    key: &str,
    what: &str,
) -> Result<Option<String>, ()> {
    let Some(v) = t.get(key) else {
        return Ok(None);
    };
    match v.get_ref().as_str() {
        Some(s) if object_name(ctx, s, &v.span(), what) => Ok(Some(s.to_owned())),
        Some(_) => Err(()),
        None => {
            ctx.err(&v.span(), format!("`{key}` must be a string"));
            Err(())
        }
    }
}

fn strip_invalid(e: crate::error::StoreError) -> String {
    match e {
        crate::error::StoreError::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

/// Duplicate names, and prefixes where one entity's keys would fall under
/// another's (`fs:u` and `fs:user:`): a SCAN of one would list the other.
fn check_entities(ctx: &mut Ctx, entities: &[(EntityType, Range<usize>)]) {
    for (i, (e, span)) in entities.iter().enumerate() {
        for (earlier, first) in &entities[..i] {
            if earlier.name != e.name && earlier.join_key == e.join_key {
                let line = ctx.line(first);
                ctx.err(
                    span,
                    format!(
                        "join_key {:?} of entity {:?} is already entity {:?}'s (line {line}): Feast's requests name an entity by it",
                        e.join_key, e.name, earlier.name
                    ),
                );
            }
            if earlier.name == e.name {
                let line = ctx.line(first);
                ctx.err(
                    span,
                    format!("entity {:?} is already declared on line {line}", e.name),
                );
            } else if e.key_prefix.starts_with(&earlier.key_prefix)
                || earlier.key_prefix.starts_with(&e.key_prefix)
            {
                let line = ctx.line(first);
                ctx.err(
                    span,
                    format!(
                        "key_prefix {:?} of entity {:?} overlaps {:?} of entity {:?} (line {line}): one is a prefix of the other",
                        e.key_prefix, e.name, earlier.key_prefix, earlier.name
                    ),
                );
            }
        }
    }
}

fn view(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    span: &Range<usize>,
    entities: &HashSet<String>,
) -> Option<ParsedView> {
    check_keys(
        ctx,
        t,
        &[
            "name",
            "entity",
            "kind",
            "ttl_seconds",
            "feast_name",
            "feast_push_source",
            "feature",
            "features",
        ],
        "a [[view]]",
    );
    let name = req_str(ctx, t, span, "name", "a [[view]]");
    let mut ok = match &name {
        Some((n, s)) => object_name(ctx, n, s, "view"),
        None => false,
    };
    let entity = req_str(ctx, t, span, "entity", "a [[view]]");
    if let Some((e, s)) = &entity {
        if !entities.contains(e) {
            ctx.err(s, format!("view names entity {e:?}, which is not declared"));
            ok = false;
        }
    }
    let kind = match req_str(ctx, t, span, "kind", "a [[view]]") {
        Some((k, _)) if k == "batch" => Some(ViewKind::Batch),
        Some((k, _)) if k == "stream" => Some(ViewKind::Stream),
        Some((k, s)) => {
            ctx.err(&s, format!("unknown kind {k:?} (expected batch or stream)"));
            None
        }
        None => None,
    };
    let ttl = match opt_int(ctx, t, "ttl_seconds") {
        None => {
            ctx.err(span, "a [[view]] has no `ttl_seconds`");
            None
        }
        Some((Some(n), _)) if (1..=MAX_TTL_SECONDS).contains(&n) => Some(n as u64),
        Some((Some(n), s)) => {
            ctx.err(
                &s,
                format!("ttl_seconds must be 1 to {MAX_TTL_SECONDS}, got {n}"),
            );
            None
        }
        Some((None, _)) => None,
    };
    let key = match (t.get("feature"), t.get("features")) {
        (Some(_), Some(v)) => {
            ctx.err(
                &v.span(),
                "give the features as [[view.feature]] or `features`, not both",
            );
            ok = false;
            "feature"
        }
        (None, Some(_)) => "features",
        _ => "feature",
    };
    if t.get(key).is_none() {
        ctx.err(span, "a [[view]] has no features ([[view.feature]])");
        ok = false;
    }
    let mut features = Vec::new();
    for (ft, fspan) in tables(ctx, t, key) {
        match feature(ctx, ft, &fspan) {
            Some(f) => features.push(f),
            None => ok = false,
        }
    }
    let feast_name = opt_object_name(ctx, t, "feast_name", "Feast view");
    ok &= feast_name.is_ok();
    let feast_push_source = opt_object_name(ctx, t, "feast_push_source", "Feast push source");
    ok &= feast_push_source.is_ok();
    let ((name, name_span), (entity, _), kind, ttl_seconds) = (name?, entity?, kind?, ttl?);
    let feast_name = feast_name.ok()?.unwrap_or_else(|| name.clone());
    let feast_push_source = feast_push_source.ok()?;
    ok.then(|| ParsedView {
        view: FeatureView {
            name,
            entity,
            kind,
            ttl_seconds,
            feast_name,
            feast_push_source,
            features: features.iter().map(|(f, _)| f.clone()).collect(),
        },
        span: name_span,
        feature_spans: features.into_iter().map(|(_, s)| s).collect(),
    })
}

/// A view with where its name and each feature's name are, for the checks
/// across views.
struct ParsedView {
    view: FeatureView,
    span: Range<usize>,
    feature_spans: Vec<Range<usize>>,
}

fn feature(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    span: &Range<usize>,
) -> Option<(FeatureDef, Range<usize>)> {
    check_keys(
        ctx,
        t,
        &["name", "type", "values", "length", "default", "max_age_ms"],
        "a feature",
    );
    let name = req_str(ctx, t, span, "name", "a feature");
    let mut ok = true;
    if let Some((n, s)) = &name {
        if let Err(e) = validate::feature_name(n) {
            ctx.err(s, strip_invalid(e));
            ok = false;
        }
    }
    let ty_name = req_str(ctx, t, span, "type", "a feature");
    let values = t.get("values");
    let length = opt_int(ctx, t, "length");
    let ty = match ty_name.as_ref().map(|(n, s)| (n.as_str(), s)) {
        Some(("int", _)) => Some(FeatureType::Int),
        Some(("float", _)) => Some(FeatureType::Float),
        Some(("bool", _)) => Some(FeatureType::Bool),
        Some(("string", _)) => Some(FeatureType::String),
        Some(("category", s)) => category_values(ctx, values, s).map(FeatureType::Category),
        Some(("float_vector", s)) => match &length {
            None => {
                ctx.err(s, "a float_vector needs `length` (how many floats)");
                None
            }
            Some((Some(n), _)) if (1..=MAX_VECTOR_LEN).contains(n) => {
                Some(FeatureType::FloatVector(*n as usize))
            }
            Some((Some(n), ls)) => {
                ctx.err(ls, format!("length must be 1 to {MAX_VECTOR_LEN}, got {n}"));
                None
            }
            Some((None, _)) => None,
        },
        Some((other, s)) => {
            ctx.err(
                s,
                format!(
                    "unknown type {other:?} (expected int, float, bool, string, category, float_vector)"
                ),
            );
            None
        }
        None => None,
    };
    if let (Some(v), Some(t)) = (values, &ty) {
        if !matches!(t, FeatureType::Category(_)) {
            ctx.err(&v.span(), "`values` is only for a category");
            ok = false;
        }
    }
    if let (Some((_, ls)), Some(t)) = (&length, &ty) {
        if !matches!(t, FeatureType::FloatVector(_)) {
            ctx.err(ls, "`length` is only for a float_vector");
            ok = false;
        }
    }
    let default = match (t.get("default"), &ty) {
        (Some(d), Some(ty)) => match typed(d, ty) {
            Ok(v) => Some(v),
            Err(why) => {
                ctx.err(&d.span(), format!("default: {why}"));
                ok = false;
                None
            }
        },
        _ => None,
    };
    let max_age_ms = match t.get("max_age_ms") {
        None => None,
        Some(v) => {
            let bound = max_age(ctx, v, "max_age_ms");
            ok &= bound.is_some();
            bound
        }
    };
    let ((name, name_span), ty) = (name?, ty?);
    ok.then_some((
        FeatureDef {
            name,
            ty,
            default,
            max_age_ms,
        },
        name_span,
    ))
}

fn category_values(
    ctx: &mut Ctx,
    values: Option<&Val<'_>>,
    type_span: &Range<usize>,
) -> Option<Vec<String>> {
    let Some(v) = values else {
        ctx.err(type_span, "a category needs `values` (its allowed strings)");
        return None;
    };
    let Some(items) = v.get_ref().as_array() else {
        ctx.err(&v.span(), "`values` must be an array of strings");
        return None;
    };
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    let mut ok = true;
    for item in items {
        match item.get_ref().as_str() {
            Some(s) if out.iter().any(|x| x == s) => {
                ctx.err(
                    &item.span(),
                    format!("category value {s:?} is listed twice"),
                );
                ok = false;
            }
            Some(s) => out.push(s.to_owned()),
            None => {
                ctx.err(&item.span(), "`values` must be an array of strings");
                ok = false;
            }
        }
    }
    if ok && out.is_empty() {
        ctx.err(&v.span(), "a category needs at least one value");
        ok = false;
    }
    ok.then_some(out)
}

/// A TOML default as the feature's type: through its JSON form, so a
/// default obeys exactly the rules a pushed value does.
fn typed(v: &Val<'_>, ty: &FeatureType) -> Result<Value, String> {
    ty.parse_json(&to_json(v.get_ref()))
}

fn to_json(v: &DeValue<'_>) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        DeValue::String(s) => J::String(s.to_string()),
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).map_or(J::Null, J::from),
        DeValue::Float(f) => f
            .as_str()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or(J::Null, J::Number),
        DeValue::Boolean(b) => J::Bool(*b),
        DeValue::Datetime(d) => J::String(d.to_string()),
        DeValue::Array(items) => items.iter().map(|i| to_json(i.get_ref())).collect(),
        DeValue::Table(_) => J::Object(serde_json::Map::new()),
    }
}

/// Duplicate view names, and a field name in two views of one entity: the
/// entity is one hash, so the second view would overwrite the first's
/// field.
fn check_views(ctx: &mut Ctx, views: &[ParsedView]) {
    let mut fields: HashMap<(&str, &str), (&str, usize)> = HashMap::new();
    for (i, pv) in views.iter().enumerate() {
        let v = &pv.view;
        if let Some(first) = views[..i].iter().find(|x| x.view.name == v.name) {
            let line = ctx.line(&first.span);
            ctx.err(
                &pv.span,
                format!("view {:?} is already declared on line {line}", v.name),
            );
            continue;
        }
        if let Some(first) = views[..i]
            .iter()
            .find(|x| x.view.feast_name == v.feast_name)
        {
            let line = ctx.line(&first.span);
            ctx.err(
                &pv.span,
                format!(
                    "feast_name {:?} of view {:?} is already view {:?}'s (line {line}): Feast's requests name a view by it",
                    v.feast_name, v.name, first.view.name
                ),
            );
        }
        for (f, fspan) in v.features.iter().zip(&pv.feature_spans) {
            let here = ctx.line(fspan);
            match fields.get(&(v.entity.as_str(), f.name.as_str())) {
                Some((other, line)) if *other == v.name => ctx.err(
                    fspan,
                    format!("feature {:?} is already declared in view {:?} on line {line}", f.name, v.name),
                ),
                Some((other, line)) => ctx.err(
                    fspan,
                    format!(
                        "feature {:?} is already in view {other:?} (line {line}) of entity {:?}: an entity is one hash, so field names must be unique across its views",
                        f.name, v.entity
                    ),
                ),
                None => {
                    fields.insert((&v.entity, &f.name), (&v.name, here));
                }
            }
        }
    }
}

fn model(
    ctx: &mut Ctx,
    t: &DeTable<'_>,
    span: &Range<usize>,
    views: &[ParsedView],
    view_names: &HashSet<String>,
) -> Option<(Model, Range<usize>)> {
    check_keys(
        ctx,
        t,
        &["name", "features", "defaults", "max_age_ms", "max_ages_ms"],
        "a [[model]]",
    );
    let name = req_str(ctx, t, span, "name", "a [[model]]");
    let mut ok = match &name {
        Some((n, s)) => object_name(ctx, n, s, "model"),
        None => false,
    };
    let mut features: Vec<(ModelFeature, &FeatureDef, &str)> = Vec::new();
    // References into views that have problems of their own.
    let mut unchecked: Vec<&str> = Vec::new();
    match t.get("features") {
        None => {
            ctx.err(span, "a [[model]] has no `features`");
            ok = false;
        }
        Some(list) => match list.get_ref().as_array() {
            None => {
                ctx.err(
                    &list.span(),
                    "`features` must be an array of \"view.feature\" strings",
                );
                ok = false;
            }
            Some(items) if items.is_empty() => {
                ctx.err(&list.span(), "a model needs at least one feature");
                ok = false;
            }
            Some(items) => {
                let mut entity: Option<(&str, String)> = None;
                for item in items {
                    let s = item.span();
                    let Some(reference) = item.get_ref().as_str() else {
                        ctx.err(
                            &s,
                            "`features` must be an array of \"view.feature\" strings",
                        );
                        ok = false;
                        continue;
                    };
                    let Some((vname, fname)) = reference.split_once('.') else {
                        ctx.err(&s, format!("{reference:?} must be \"view.feature\""));
                        ok = false;
                        continue;
                    };
                    let Some(view) = views.iter().map(|pv| &pv.view).find(|v| v.name == vname)
                    else {
                        if view_names.contains(vname) {
                            // The view's own problems are reported already.
                            unchecked.push(reference);
                        } else {
                            ctx.err(
                                &s,
                                format!(
                                    "{reference:?} names view {vname:?}, which is not declared"
                                ),
                            );
                        }
                        ok = false;
                        continue;
                    };
                    let Some(def) = view.feature(fname) else {
                        ctx.err(
                            &s,
                            format!("{reference:?}: view {vname:?} has no feature {fname:?}"),
                        );
                        ok = false;
                        continue;
                    };
                    match &entity {
                        Some((e, first)) if *e != view.entity => {
                            ctx.err(
                                &s,
                                format!(
                                    "{reference:?} is a feature of entity {:?}, but {first:?} is of {e:?}: a model reads one entity",
                                    view.entity
                                ),
                            );
                            ok = false;
                            continue;
                        }
                        Some(_) => {}
                        None => entity = Some((&view.entity, reference.to_owned())),
                    }
                    if features
                        .iter()
                        .any(|(f, _, _)| f.view == vname && f.feature == fname)
                    {
                        ctx.err(&s, format!("{reference:?} is listed twice"));
                        ok = false;
                        continue;
                    }
                    features.push((
                        ModelFeature {
                            view: vname.to_owned(),
                            feature: fname.to_owned(),
                            default: None,
                            max_age_ms: None,
                        },
                        def,
                        reference,
                    ));
                }
            }
        },
    }
    if let Some(d) = t.get("defaults") {
        match d.get_ref().as_table() {
            None => {
                ctx.err(
                    &d.span(),
                    "`defaults` must be a table of \"view.feature\" = value",
                );
                ok = false;
            }
            Some(defaults) => {
                for (key, value) in defaults.iter() {
                    let reference = key.get_ref().as_ref();
                    let Some((mf, def, _)) = features.iter_mut().find(|(_, _, r)| *r == reference)
                    else {
                        if unchecked.contains(&reference) {
                            continue;
                        }
                        ctx.err(
                            &key.span(),
                            format!(
                                "default for {reference:?}, which is not in this model's features"
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    match typed(value, &def.ty) {
                        Ok(v) => mf.default = Some(v),
                        Err(why) => {
                            ctx.err(&value.span(), format!("default for {reference:?}: {why}"));
                            ok = false;
                        }
                    }
                }
            }
        }
    }
    if let Some(d) = t.get("max_ages_ms") {
        match d.get_ref().as_table() {
            None => {
                ctx.err(
                    &d.span(),
                    "`max_ages_ms` must be a table of \"view.feature\" = milliseconds",
                );
                ok = false;
            }
            Some(bounds) => {
                for (key, value) in bounds.iter() {
                    let reference = key.get_ref().as_ref();
                    let Some((mf, _, _)) = features.iter_mut().find(|(_, _, r)| *r == reference)
                    else {
                        if unchecked.contains(&reference) {
                            continue;
                        }
                        ctx.err(
                            &key.span(),
                            format!(
                                "max_ages_ms for {reference:?}, which is not in this model's features"
                            ),
                        );
                        ok = false;
                        continue;
                    };
                    match max_age(ctx, value, &format!("max_ages_ms for {reference:?}")) {
                        Some(ms) => mf.max_age_ms = Some(ms),
                        None => ok = false,
                    }
                }
            }
        }
    }
    let max_age_ms = match t.get("max_age_ms") {
        None => None,
        Some(v) => {
            let bound = max_age(ctx, v, "max_age_ms");
            ok &= bound.is_some();
            bound
        }
    };
    let (name, name_span) = name?;
    ok.then(|| {
        (
            Model {
                name,
                features: features.into_iter().map(|(f, _, _)| f).collect(),
                max_age_ms,
            },
            name_span,
        )
    })
}

fn check_models(ctx: &mut Ctx, models: &[(Model, Range<usize>)]) {
    let mut seen: HashSet<&str> = HashSet::new();
    for (i, (m, span)) in models.iter().enumerate() {
        if !seen.insert(&m.name) {
            if let Some((_, first)) = models[..i].iter().find(|(x, _)| x.name == m.name) {
                let line = ctx.line(first);
                ctx.err(
                    span,
                    format!("model {:?} is already declared on line {line}", m.name),
                );
            }
        }
    }
}
