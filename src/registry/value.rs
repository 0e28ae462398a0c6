//! Typed values and their text form in Redis.
//!
//! The stored text stays readable in `redis-cli`: ints in decimal, floats in
//! the shortest text that parses back to the same number, bools as `true` /
//! `false` (as `FeatureValue` writes them), strings as they are, and float
//! vectors as a JSON array (`[0.1,0.25]`). `parse_stored(encode(v)) == v`
//! for every value.

use crate::value::FeatureValue;

use super::types::{FeatureType, Value};

/// How much of a refused input an error message quotes.
const QUOTE_MAX: usize = 40;

impl FeatureType {
    /// The type's name as the registry file and responses spell it:
    /// `int`, `category`, `float_vector[8]`.
    pub fn name(&self) -> String {
        match self {
            FeatureType::Int => "int".into(),
            FeatureType::Float => "float".into(),
            FeatureType::Bool => "bool".into(),
            FeatureType::String => "string".into(),
            FeatureType::Category(_) => "category".into(),
            FeatureType::FloatVector(n) => format!("float_vector[{n}]"),
        }
    }

    /// What Redis holds, as this type. `Err` means the stored bytes are not
    /// a value of this type (another tool wrote them, or the type changed):
    /// the caller serves it as missing, never as a wrong value.
    pub fn parse_stored(&self, raw: &[u8]) -> Result<Value, String> {
        match std::str::from_utf8(raw) {
            Ok(s) => self.parse_text(s),
            Err(_) => Err(format!(
                "expected {}, got bytes that are not UTF-8",
                self.name()
            )),
        }
    }

    /// A text cell (CSV) as this type. Same rules as the stored form, plus
    /// the spellings of booleans other tools write (`True`, `1`, ...).
    pub fn parse_text(&self, s: &str) -> Result<Value, String> {
        let refuse = || format!("expected {}, got {}", self.name(), quote(s));
        match self {
            FeatureType::Int => s.parse::<i64>().map(Value::Int).map_err(|_| refuse()),
            FeatureType::Float => parse_float(s).map(Value::Float).ok_or_else(refuse),
            FeatureType::Bool => match s {
                "true" | "True" | "TRUE" | "1" => Ok(Value::Bool(true)),
                "false" | "False" | "FALSE" | "0" => Ok(Value::Bool(false)),
                _ => Err(refuse()),
            },
            FeatureType::String => Ok(Value::String(s.to_owned())),
            FeatureType::Category(values) => {
                if values.iter().any(|v| v == s) {
                    Ok(Value::String(s.to_owned()))
                } else {
                    Err(format!(
                        "expected one of {}, got {}",
                        list(values),
                        quote(s)
                    ))
                }
            }
            FeatureType::FloatVector(len) => parse_vector(s, *len)
                .map(Value::FloatVector)
                .map_err(|why| format!("expected {}, got {}: {why}", self.name(), quote(s))),
        }
    }

    /// A JSON value (a push request) as this type. Strict: numbers must be
    /// JSON numbers, an int must be integral, bools JSON booleans.
    pub fn parse_json(&self, v: &serde_json::Value) -> Result<Value, String> {
        use serde_json::Value as J;
        let refuse = || format!("expected {}, got {}", self.name(), describe(v));
        match (self, v) {
            (FeatureType::Int, J::Number(n)) => n.as_i64().map(Value::Int).ok_or_else(refuse),
            (FeatureType::Float, J::Number(n)) => n
                .as_f64()
                .filter(|x| x.is_finite())
                .map(Value::Float)
                .ok_or_else(refuse),
            (FeatureType::Bool, J::Bool(b)) => Ok(Value::Bool(*b)),
            (FeatureType::String, J::String(s)) => Ok(Value::String(s.clone())),
            (FeatureType::Category(_), J::String(s)) => self.parse_text(s),
            (FeatureType::FloatVector(len), J::Array(items)) => {
                if items.len() != *len {
                    return Err(format!(
                        "expected {}, got an array of {}",
                        self.name(),
                        items.len()
                    ));
                }
                items
                    .iter()
                    .map(|item| item.as_f64().filter(|x| x.is_finite()))
                    .collect::<Option<Vec<f64>>>()
                    .map(Value::FloatVector)
                    .ok_or_else(|| {
                        format!("expected {}, got an array with a non-number", self.name())
                    })
            }
            _ => Err(refuse()),
        }
    }
}

impl Value {
    /// The text stored in Redis.
    pub fn encode(&self) -> String {
        match self {
            Value::Int(i) => i.to_string(),
            Value::Float(x) => FeatureValue::Float(*x).encode(),
            Value::Bool(b) => FeatureValue::Bool(*b).encode(),
            Value::String(s) => s.clone(),
            Value::FloatVector(xs) => {
                let items: Vec<String> = xs
                    .iter()
                    .map(|x| FeatureValue::Float(*x).encode())
                    .collect();
                format!("[{}]", items.join(","))
            }
        }
    }

    /// JSON-typed: numbers as numbers, bools as bools, vectors as arrays.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Int(i) => (*i).into(),
            Value::Float(x) => float_json(*x),
            Value::Bool(b) => (*b).into(),
            Value::String(s) => s.clone().into(),
            Value::FloatVector(xs) => xs.iter().map(|x| float_json(*x)).collect(),
        }
    }

    /// The same value in the store's write type.
    pub fn to_feature_value(&self) -> FeatureValue {
        match self {
            Value::Int(i) => FeatureValue::Int(*i),
            Value::Float(x) => FeatureValue::Float(*x),
            Value::Bool(b) => FeatureValue::Bool(*b),
            Value::String(s) => FeatureValue::Str(s.clone()),
            Value::FloatVector(_) => FeatureValue::Str(self.encode()),
        }
    }
}

/// A `Value`'s floats are finite by construction; `null` is unreachable.
fn float_json(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

/// Rust's float parser is correctly rounded (unlike a JSON parser's fast
/// path), so the shortest text always comes back bit-exact. It also accepts
/// `inf` and `NaN`, which no feature holds.
fn parse_float(s: &str) -> Option<f64> {
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

/// `[a,b,...]` with optional spaces, exactly `len` finite numbers.
fn parse_vector(s: &str, len: usize) -> Result<Vec<f64>, String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .ok_or("not a [..] array")?;
    if inner.trim().is_empty() {
        return Err("an empty array".into());
    }
    let mut out = Vec::with_capacity(len);
    for item in inner.split(',') {
        if out.len() == len {
            return Err(format!("more than {len} numbers"));
        }
        let x = parse_float(item.trim()).ok_or("an item that is not a finite number")?;
        out.push(x);
    }
    if out.len() != len {
        return Err(format!("{} numbers", out.len()));
    }
    Ok(out)
}

/// A refused text, quoted and cut short.
fn quote(s: &str) -> String {
    if s.chars().count() <= QUOTE_MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(QUOTE_MAX).collect();
        format!("{head:?}...")
    }
}

fn list(values: &[String]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("[{}]", quoted.join(", "))
}

/// What a refused JSON value was, briefly.
fn describe(v: &serde_json::Value) -> String {
    use serde_json::Value as J;
    match v {
        J::Null => "null".into(),
        J::Bool(b) => format!("the bool {b}"),
        J::Number(n) => format!("the number {n}"),
        J::String(s) => format!("the string {}", quote(s)),
        J::Array(a) => format!("an array of {}", a.len()),
        J::Object(_) => "an object".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn cat() -> FeatureType {
        FeatureType::Category(vec!["low".into(), "medium".into(), "high".into()])
    }

    #[test]
    fn type_names_are_the_file_spelling() {
        assert_eq!(FeatureType::Int.name(), "int");
        assert_eq!(cat().name(), "category");
        assert_eq!(FeatureType::FloatVector(8).name(), "float_vector[8]");
    }

    #[test]
    fn encodes_readable_text() {
        assert_eq!(Value::Int(-14).encode(), "-14");
        assert_eq!(Value::Float(92.4).encode(), "92.4");
        assert_eq!(Value::Float(1e308).encode(), "1e308");
        assert_eq!(Value::Bool(true).encode(), "true");
        assert_eq!(Value::String("US".into()).encode(), "US");
        assert_eq!(
            Value::FloatVector(vec![0.1, 0.25, -3.0]).encode(),
            "[0.1,0.25,-3]"
        );
    }

    #[test]
    fn stored_text_that_is_not_the_type_is_refused_with_the_type() {
        let cases: Vec<(FeatureType, &[u8])> = vec![
            (FeatureType::Int, b"12.5"),
            (FeatureType::Int, b"abc"),
            (FeatureType::Int, b"99999999999999999999"),
            (FeatureType::Float, b"NaN"),
            (FeatureType::Float, b"inf"),
            (FeatureType::Float, b""),
            (FeatureType::Bool, b"yes"),
            (FeatureType::String, b"\xff\xfe"),
            (cat(), b"LOW"),
            (FeatureType::FloatVector(2), b"[1]"),
            (FeatureType::FloatVector(2), b"[1,2,3]"),
            (FeatureType::FloatVector(2), b"1,2"),
            (FeatureType::FloatVector(2), b"[1,NaN]"),
            (FeatureType::FloatVector(2), b"[]"),
        ];
        for (ty, raw) in cases {
            let err = ty.parse_stored(raw).expect_err(&format!("{ty:?} {raw:?}"));
            assert!(err.starts_with("expected "), "{err}");
        }
        assert_eq!(
            FeatureType::Int.parse_stored(b"x").unwrap_err(),
            "expected int, got \"x\""
        );
    }

    #[test]
    fn stored_text_of_each_type_parses() {
        assert_eq!(FeatureType::Int.parse_stored(b"-7"), Ok(Value::Int(-7)));
        assert_eq!(FeatureType::Float.parse_stored(b"3"), Ok(Value::Float(3.0)));
        assert_eq!(
            FeatureType::Bool.parse_stored(b"false"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            cat().parse_stored(b"high"),
            Ok(Value::String("high".into()))
        );
        assert_eq!(
            FeatureType::FloatVector(3).parse_stored(b"[0.5, -1, 2e3]"),
            Ok(Value::FloatVector(vec![0.5, -1.0, 2000.0]))
        );
        assert_eq!(FeatureType::Bool.parse_text("True"), Ok(Value::Bool(true)));
    }

    #[test]
    fn json_input_must_have_the_declared_type() {
        assert_eq!(FeatureType::Int.parse_json(&json!(5)), Ok(Value::Int(5)));
        assert_eq!(
            FeatureType::Float.parse_json(&json!(5)),
            Ok(Value::Float(5.0))
        );
        assert_eq!(
            FeatureType::FloatVector(2).parse_json(&json!([1, 0.5])),
            Ok(Value::FloatVector(vec![1.0, 0.5]))
        );
        for (ty, v) in [
            (FeatureType::Int, json!(1.5)),
            (FeatureType::Int, json!("5")),
            (FeatureType::Float, json!("5")),
            (FeatureType::Bool, json!(1)),
            (FeatureType::String, json!(1)),
            (cat(), json!("LOW")),
            (FeatureType::FloatVector(2), json!([1, 2, 3])),
            (FeatureType::FloatVector(2), json!([1, "2"])),
            (FeatureType::FloatVector(2), json!(null)),
        ] {
            assert!(ty.parse_json(&v).is_err(), "{ty:?} {v}");
        }
        assert_eq!(
            FeatureType::FloatVector(2)
                .parse_json(&json!([1, 2, 3]))
                .unwrap_err(),
            "expected float_vector[2], got an array of 3"
        );
    }

    #[test]
    fn json_output_is_typed() {
        assert_eq!(Value::Int(3).to_json(), json!(3));
        assert_eq!(Value::Float(0.5).to_json(), json!(0.5));
        assert_eq!(Value::Bool(true).to_json(), json!(true));
        assert_eq!(Value::String("US".into()).to_json(), json!("US"));
        assert_eq!(
            Value::FloatVector(vec![1.5, -2.0]).to_json(),
            json!([1.5, -2.0])
        );
    }

    fn finite() -> impl Strategy<Value = f64> {
        prop::num::f64::NORMAL | prop::num::f64::SUBNORMAL | prop::num::f64::ZERO
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_value_survives_its_stored_text(
            i in any::<i64>(),
            x in finite(),
            b in any::<bool>(),
            s in ".{0,40}",
            v in prop::collection::vec(finite(), 1..12),
            c in 0usize..3,
        ) {
            let values = ["low", "medium", "high"];
            let cases = [
                (FeatureType::Int, Value::Int(i)),
                (FeatureType::Float, Value::Float(x)),
                (FeatureType::Bool, Value::Bool(b)),
                (FeatureType::String, Value::String(s)),
                (cat(), Value::String(values[c].into())),
                (FeatureType::FloatVector(v.len()), Value::FloatVector(v)),
            ];
            for (ty, value) in cases {
                let back = ty.parse_stored(value.encode().as_bytes());
                prop_assert_eq!(back.as_ref(), Ok(&value));
                // Bit-exact, so -0.0 stays -0.0.
                if let (Ok(Value::Float(a)), Value::Float(b)) = (&back, &value) {
                    prop_assert_eq!(a.to_bits(), b.to_bits());
                }
                let from_json = ty.parse_json(&value.to_json());
                prop_assert_eq!(from_json.as_ref(), Ok(&value));
            }
        }

        #[test]
        fn arbitrary_stored_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..64)) {
            for ty in [FeatureType::Int, FeatureType::Float, FeatureType::Bool,
                       FeatureType::String, cat(), FeatureType::FloatVector(3)] {
                let _ = ty.parse_stored(&raw);
            }
        }
    }
}
