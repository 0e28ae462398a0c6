//! Feature values and their wire encoding, and values as read back.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::{self, Write as _};

use base64::prelude::{Engine as _, BASE64_STANDARD};
use serde::ser::{Serialize, SerializeMap, Serializer};

/// One feature's value. Redis stores strings; this is how each kind becomes
/// one: integers in decimal, floats in the shortest text that parses back to
/// the same number (`1e308`, not 309 digits), booleans as `true` / `false`.
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
    /// The string written to Redis.
    pub fn encode(&self) -> String {
        self.to_string()
    }

    /// Appends the wire form (what `encode` returns) to `out`: a row's
    /// value written into a reused buffer, with no String of its own.
    pub fn write_wire(&self, out: &mut String) {
        match self {
            FeatureValue::Str(s) => out.push_str(s),
            FeatureValue::Int(i) => push_int(out, *i),
            FeatureValue::Float(x) => push_float(out, *x),
            FeatureValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
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
            FeatureValue::Float(x) => f.write_str(&shortest_float(*x)),
            FeatureValue::Bool(b) => f.write_str(if *b { "true" } else { "false" }),
        }
    }
}

/// The shorter of `{}` and `{:e}`: both print the fewest digits that parse
/// back to `x` (Rust's float formatting is shortest round-trip), but `{}`
/// never uses an exponent, so 1e308 would be 309 digits. Ties keep the plain
/// form (`100`, not `1e2`). The std formatter suffices; no `ryu` needed.
fn shortest_float(x: f64) -> String {
    let mut text = String::new();
    push_float(&mut text, x);
    text
}

/// Appends `shortest_float(x)` to `out`. The exponent form is only made
/// when it can be the shorter: both forms carry the same digits, and the
/// plain one is longer only by the zeros it spells out, so `{:e}` can win
/// only when the plain form ends in two zeros (`1200000`) or starts with
/// `0.0` (`0.0015`); for any other number it is at least as long.
pub(crate) fn push_float(out: &mut String, x: f64) {
    let start = out.len();
    // Writing into a String cannot fail.
    let _ = write!(out, "{x}");
    let plain = &out[start..];
    let digits = plain.strip_prefix('-').unwrap_or(plain);
    if !(digits.ends_with("00") || digits.starts_with("0.0")) {
        return;
    }
    let mid = out.len();
    let _ = write!(out, "{x:e}");
    if out.len() - mid < mid - start {
        out.replace_range(start..mid, "");
    } else {
        out.truncate(mid);
    }
}

/// Appends `n` in decimal (as `{n}` prints it), without the formatter.
pub(crate) fn push_int(out: &mut String, n: i64) {
    if n < 0 {
        out.push('-');
    }
    push_digits(out, n.unsigned_abs(), 1);
}

/// Appends `n` in decimal, zero-padded to at least `width` digits (at most
/// 20, `u64::MAX`'s).
pub(crate) fn push_digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let at = at.min(buf.len().saturating_sub(width));
    for &d in &buf[at..] {
        out.push(char::from(d));
    }
}

/// A feature value as read back from Redis: the bytes it holds. What this
/// store writes is UTF-8 text, but another tool may have written anything,
/// so a read never fails on a value: text stays text, and other bytes are
/// kept as they are. In JSON, text is a string and other bytes are
/// `{"base64": "..."}` (standard alphabet, padded).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReadValue {
    Text(String),
    Bytes(Vec<u8>),
}

impl ReadValue {
    /// The text, when the value is UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            ReadValue::Text(s) => Some(s),
            ReadValue::Bytes(_) => None,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            ReadValue::Text(s) => s.as_bytes(),
            ReadValue::Bytes(b) => b,
        }
    }

    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            ReadValue::Text(s) => s.into_bytes(),
            ReadValue::Bytes(b) => b,
        }
    }
}

impl From<Vec<u8>> for ReadValue {
    fn from(bytes: Vec<u8>) -> Self {
        match String::from_utf8(bytes) {
            Ok(s) => ReadValue::Text(s),
            Err(e) => ReadValue::Bytes(e.into_bytes()),
        }
    }
}
impl From<String> for ReadValue {
    fn from(s: String) -> Self {
        ReadValue::Text(s)
    }
}
impl From<&str> for ReadValue {
    fn from(s: &str) -> Self {
        ReadValue::Text(s.to_owned())
    }
}
impl PartialEq<str> for ReadValue {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == Some(other)
    }
}
impl PartialEq<&str> for ReadValue {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == Some(*other)
    }
}

impl Serialize for ReadValue {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ReadValue::Text(text) => s.serialize_str(text),
            ReadValue::Bytes(bytes) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("base64", &base64(bytes))?;
                m.end()
            }
        }
    }
}

/// Standard base64 with padding, the form a `{"base64": ...}` value has.
pub fn base64(bytes: &[u8]) -> String {
    BASE64_STANDARD.encode(bytes)
}

/// Bytes for display where only text fits (a key or field name written by
/// another tool): UTF-8 as is, every other byte as `\xNN`, as `redis-cli`
/// prints them. Backslashes are doubled so the form is unambiguous.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
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
    use super::{push_digits, push_float, push_int};
    use proptest::prelude::*;

    /// The shortest text as it was first written: both forms made, the
    /// shorter kept (the plain one on a tie).
    fn both_forms(x: f64) -> String {
        let plain = format!("{x}");
        let exp = format!("{x:e}");
        if exp.len() < plain.len() {
            exp
        } else {
            plain
        }
    }

    fn pushed(x: f64) -> String {
        // After other text: only the end of the buffer is the number's.
        let mut out = String::from("x=");
        push_float(&mut out, x);
        out.split_off(2)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]

        #[test]
        fn floats_of_any_bits_print_as_the_shorter_of_both_forms(bits in any::<u64>()) {
            let x = f64::from_bits(bits);
            prop_assert_eq!(pushed(x), both_forms(x));
        }

        /// Decimal-looking numbers, where the zeros are: `d * 10^k`.
        #[test]
        fn decimal_floats_print_as_the_shorter_of_both_forms(
            digits in -99_999_999i64..99_999_999,
            k in -30i32..30,
        ) {
            let x = digits as f64 * 10f64.powi(k);
            prop_assert_eq!(pushed(x), both_forms(x));
            let y = format!("{digits}e{k}").parse::<f64>().expect("parses");
            prop_assert_eq!(pushed(y), both_forms(y));
        }

        #[test]
        fn integers_print_as_the_formatter_does(n in any::<i64>(), width in 0usize..22) {
            let mut out = String::from("x");
            push_int(&mut out, n);
            prop_assert_eq!(&out[1..], n.to_string());
            let u = n.unsigned_abs();
            let mut out = String::new();
            push_digits(&mut out, u, width);
            prop_assert_eq!(out, format!("{u:0w$}", w = width.min(20)));
        }
    }

    #[test]
    fn the_edges_print_as_the_formatter_does() {
        for n in [0, 1, -1, 9, 10, -10, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_int(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let mut out = String::new();
        push_digits(&mut out, u64::MAX, 0);
        assert_eq!(out, u64::MAX.to_string());
        for x in [
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            100.0,
            1000.0,
            0.01,
            0.001,
            -0.001,
            12000.0,
            120000.0,
            1e21,
        ] {
            assert_eq!(pushed(x), both_forms(x), "{x}");
            assert_eq!(Float(x).encode(), both_forms(x), "{x}");
        }
    }

    #[test]
    fn wire_text_is_the_encoding() {
        for v in [
            Str("US".into()),
            Int(-14),
            Int(i64::MIN),
            Float(92.4),
            Float(1e308),
            Bool(true),
            Bool(false),
        ] {
            let mut out = String::from("a");
            v.write_wire(&mut out);
            assert_eq!(&out[1..], v.encode(), "{v:?}");
        }
    }

    #[test]
    fn encodes_each_type_as_its_text_form() {
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
    fn floats_are_the_shortest_text_that_round_trips() {
        for (x, want) in [
            (1e308, "1e308"),
            (5e-324, "5e-324"),
            (0.1, "0.1"),
            (-0.0, "-0"),
            (123456789.0, "123456789"),
            (100.0, "100"),
            (1e21, "1e21"),
            (1.5e-7, "1.5e-7"),
            (f64::MAX, "1.7976931348623157e308"),
        ] {
            let text = Float(x).encode();
            assert_eq!(text, want);
            let back: f64 = text.parse().expect("parses");
            assert_eq!(back.to_bits(), x.to_bits(), "{text}");
        }
    }

    #[test]
    fn read_values_keep_text_as_text_and_other_bytes_as_base64() {
        use super::{base64, escape_bytes, ReadValue};
        assert_eq!(
            ReadValue::from(b"US".to_vec()),
            ReadValue::Text("US".into())
        );
        let raw = ReadValue::from(vec![0xff, 0xfe, b'a']);
        assert_eq!(raw, ReadValue::Bytes(vec![0xff, 0xfe, b'a']));
        assert_eq!(
            serde_json::to_string(&raw).expect("json"),
            r#"{"base64":"//5h"}"#
        );
        assert_eq!(
            serde_json::to_string(&ReadValue::from("x")).expect("json"),
            r#""x""#
        );
        for (bytes, want) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"fooba", "Zm9vYmE="),
            (b"foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(bytes), want);
        }
        assert_eq!(escape_bytes(b"a b\\\xff\xfe"), "a b\\\\\\xff\\xfe");
    }

    #[test]
    fn non_finite_floats_are_refused() {
        assert!(!Float(f64::NAN).is_encodable());
        assert!(!Float(f64::INFINITY).is_encodable());
        assert!(Float(1.5).is_encodable());
        assert!(Str("x".into()).is_encodable());
    }
}
