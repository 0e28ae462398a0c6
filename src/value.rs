//! Feature values and their wire encoding.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// One feature's value. Redis stores strings; this is how each kind becomes
/// one: integers in decimal, floats in shortest round-trip form, booleans as
/// `true` / `false`.
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureValue {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

/// One entity's features by name.
pub type FeatureMap = BTreeMap<String, FeatureValue>;

impl FeatureValue {
    /// The string written to Redis. Rust's `Display` for `f64` is already the
    /// shortest text that parses back to the same number.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// The wire form, borrowed when the value already is a string.
    pub fn as_wire(&self) -> Cow<'_, str> {
        match self {
            FeatureValue::Str(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.encode()),
        }
    }

    /// Non-finite floats have no agreed text form a model server would parse
    /// back, so the store refuses them.
    pub fn is_encodable(&self) -> bool {
        !matches!(self, FeatureValue::Float(f) if !f.is_finite())
    }
}

impl fmt::Display for FeatureValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeatureValue::Str(s) => f.write_str(s),
            FeatureValue::Int(i) => write!(f, "{i}"),
            FeatureValue::Float(x) => write!(f, "{x}"),
            FeatureValue::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
        }
    }
}

impl From<&str> for FeatureValue {
    fn from(s: &str) -> Self {
        FeatureValue::Str(s.to_owned())
    }
}
impl From<String> for FeatureValue {
    fn from(s: String) -> Self {
        FeatureValue::Str(s)
    }
}
impl From<i64> for FeatureValue {
    fn from(i: i64) -> Self {
        FeatureValue::Int(i)
    }
}
impl From<f64> for FeatureValue {
    fn from(x: f64) -> Self {
        FeatureValue::Float(x)
    }
}
impl From<bool> for FeatureValue {
    fn from(b: bool) -> Self {
        FeatureValue::Bool(b)
    }
}

#[cfg(test)]
mod tests {
    use super::FeatureValue::*;

    #[test]
    fn encodes_as_design_section_3() {
        assert_eq!(Str("US".into()).encode(), "US");
        assert_eq!(Int(-14).encode(), "-14");
        assert_eq!(Float(92.4).encode(), "92.4");
        assert_eq!(Float(0.1 + 0.2).encode(), "0.30000000000000004");
        assert_eq!(Float(3.0).encode(), "3");
        assert_eq!(Bool(true).encode(), "true");
        assert_eq!(Bool(false).encode(), "false");
    }

    #[test]
    fn floats_round_trip() {
        for x in [92.4, 1e-300, 12345.678, -0.5, f64::MAX] {
            let back: f64 = Float(x).encode().parse().expect("parses");
            assert_eq!(back, x);
        }
    }

    #[test]
    fn non_finite_floats_are_refused() {
        assert!(!Float(f64::NAN).is_encodable());
        assert!(!Float(f64::INFINITY).is_encodable());
        assert!(Float(1.5).is_encodable());
        assert!(Str("x".into()).is_encodable());
    }
}
