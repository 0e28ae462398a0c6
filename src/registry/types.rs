//! What a registry declares: entity types, feature views, models, and the
//! typed values their features hold.

use crate::error::StoreError;
use crate::validate;

/// Everything one registry file declares, each list in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Registry {
    pub entities: Vec<EntityType>,
    pub views: Vec<FeatureView>,
    pub models: Vec<Model>,
}

/// Default id punctuation: what `validate::entity_id` allows besides
/// letters and digits.
pub const DEFAULT_ID_CHARS: &str = "_-.:@";

/// A kind of entity (user, merchant): one Redis hash per id at
/// `<key_prefix><id>`, with every feature of every view of this entity as
/// a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityType {
    pub name: String,
    pub key_prefix: String,
    /// Ids are at most this long (at most `validate::MAX_ID_LEN`).
    pub id_max_len: usize,
    /// Punctuation allowed in ids besides ASCII letters and digits: a subset
    /// of [`DEFAULT_ID_CHARS`].
    pub id_chars: String,
    /// The name Feast's SDK gives this entity's key column (its
    /// `join_key`): `join_key` in the file, else `<name>_id`.
    pub join_key: String,
}

impl EntityType {
    /// The store's own id rules first (they keep keys under the prefix),
    /// then this entity's narrower ones.
    pub fn check_id(&self, id: &str) -> Result<(), StoreError> {
        validate::entity_id(id)?;
        if id.len() > self.id_max_len {
            return Err(StoreError::invalid(format!(
                "{} id must be at most {} characters, got {}",
                self.name,
                self.id_max_len,
                id.len()
            )));
        }
        if let Some(c) = id
            .chars()
            .find(|c| !c.is_ascii_alphanumeric() && !self.id_chars.contains(*c))
        {
            return Err(StoreError::invalid(format!(
                "{} id {id:?} contains {c:?}; allowed: letters, digits{}",
                self.name,
                if self.id_chars.is_empty() {
                    String::new()
                } else {
                    format!(", {}", self.id_chars)
                }
            )));
        }
        Ok(())
    }

    /// The Redis key of one entity.
    pub fn key(&self, id: &str) -> String {
        format!("{}{id}", self.key_prefix)
    }
}

/// How a view's values expire: a batch view's rows are written whole under
/// a key-level TTL; a stream view's features each get a per-field TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewKind {
    Batch,
    Stream,
}

impl ViewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewKind::Batch => "batch",
            ViewKind::Stream => "stream",
        }
    }
}

/// A named group of features of one entity, written together by one
/// pipeline (a daily batch job, a stream consumer).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureView {
    pub name: String,
    pub entity: String,
    pub kind: ViewKind,
    pub ttl_seconds: u64,
    /// The name Feast's SDK uses for this view (`feast_name` in the file,
    /// else the view's own name).
    pub feast_name: String,
    /// The Feast push source that feeds this view (`feast_push_source` in
    /// the file): `POST /push` of that name writes here.
    pub feast_push_source: Option<String>,
    /// In file order: a request naming the view's features gets them so.
    pub features: Vec<FeatureDef>,
}

impl FeatureView {
    pub fn feature(&self, name: &str) -> Option<&FeatureDef> {
        self.features.iter().find(|f| f.name == name)
    }
}

/// One feature: its hash field name, its type, and what to serve when it is
/// missing (unless a model says otherwise).
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureDef {
    pub name: String,
    pub ty: FeatureType,
    pub default: Option<Value>,
    /// The oldest value (by event time, in ms) a read may serve; older is
    /// `stale`. `None`: no bound of its own.
    pub max_age_ms: Option<u64>,
}

/// A feature's declared type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeatureType {
    Int,
    Float,
    Bool,
    String,
    /// A string from this closed list.
    Category(Vec<String>),
    /// Exactly this many finite floats (an embedding).
    FloatVector(usize),
}

/// A typed feature value. Floats are always finite.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Also a category's value.
    String(String),
    FloatVector(Vec<f64>),
}

/// A feature service: the ordered feature vector one model consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct Model {
    pub name: String,
    pub features: Vec<ModelFeature>,
    /// A bound on every column's age (ms); it only tightens the features'.
    pub max_age_ms: Option<u64>,
}

/// One column of a model: `view.feature`, with the model's own default
/// (which wins over the feature's) and its own age bound (which only
/// tightens the feature's and the model's).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFeature {
    pub view: String,
    pub feature: String,
    pub default: Option<Value>,
    pub max_age_ms: Option<u64>,
}

/// A request's columns, resolved against the registry: all of one entity.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    pub entity: EntityType,
    pub columns: Vec<Column>,
}

/// One resolved column.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    /// `view.feature`, as a response names it.
    pub reference: String,
    pub view: String,
    /// The hash field: the feature's name.
    pub field: String,
    pub ty: FeatureType,
    /// The model's default when it has one, else the feature's.
    pub default: Option<Value>,
    pub kind: ViewKind,
    /// The oldest value (ms, by event time) this column serves: the
    /// smallest of the bounds the registry gives it (the feature's, the
    /// model's, the model's for this feature). A read's own bound can
    /// tighten it further, never loosen it. `None`: unbounded.
    pub max_age_ms: Option<u64>,
}

impl Column {
    /// The bound a read serves this column under: its own, tightened by
    /// the request's.
    pub fn max_age_under(&self, request_max_age_ms: Option<u64>) -> Option<u64> {
        tighter(self.max_age_ms, request_max_age_ms)
    }
}

/// The tighter of two optional age bounds: a bound given anywhere holds.
pub(crate) fn tighter(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, y) => x.or(y),
    }
}
