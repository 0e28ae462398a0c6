//! Request parameters from a query string, a form body or a JSON body, in
//! one shape the routes read from.
//!
//! Both encodings are accepted, each under its own content type (see
//! `origin::body_kind`): the form
//! `user=u0001&field=a&field=b&count=100&ttl=60&entity=user&values=true`
//! and the JSON `{"user": "u0001", "fields": ["a", "b"], "count": 100,
//! "ttl": 60, "ids": [...], "entity": "user", "values": true}`. Later
//! sources override earlier ones (body over query).

use serde_json::Value;

use super::errors::ApiError;

#[derive(Debug, Default)]
pub struct Params {
    pub user: Option<String>,
    pub fields: Vec<String>,
    pub ids: Option<Vec<String>>,
    /// The registry entity a read is about (`None`: the first one).
    pub entity: Option<String>,
    count: Option<String>,
    /// `/batch-read`'s `values`, as sent (see `values`).
    values: Option<String>,
    ttl: Option<String>,
    max_age_ms: Option<String>,
    /// The JSON body's object as sent, for the `/v1` endpoints, whose body
    /// is more than these parameters (`/v1/features`, `/v1/push`'s rows).
    pub json: Option<serde_json::Map<String, Value>>,
}

impl Params {
    /// Adds `a=b&c=d` pairs (URL-encoded).
    pub fn add_form(&mut self, text: &str) -> Result<(), ApiError> {
        let mut fields_seen = false;
        let mut ids: Option<Vec<String>> = None;
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let key = percent_decode(k)?;
            let value = percent_decode(v)?;
            match key.as_str() {
                "user" | "id" => self.user = Some(value),
                "field" | "fields" | "field[]" | "fields[]" => {
                    if !fields_seen {
                        self.fields.clear();
                        fields_seen = true;
                    }
                    // `fields=a,b` as well as repeated `field=a&field=b`.
                    self.fields.extend(split_list(&value));
                }
                "ids" | "ids[]" => ids.get_or_insert_with(Vec::new).extend(split_list(&value)),
                "count" => self.count = Some(value),
                "ttl" | "ttl_seconds" => self.ttl = Some(value),
                "max_age_ms" => self.max_age_ms = Some(value),
                "entity" => self.entity = Some(value),
                "values" => self.values = Some(value),
                _ => {} // unknown keys are ignored, as browsers add their own
            }
        }
        if ids.is_some() {
            self.ids = ids;
        }
        Ok(())
    }

    /// Adds the keys of a JSON object.
    pub fn add_json(&mut self, body: &[u8]) -> Result<(), ApiError> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad(format!("body is not valid JSON: {e}")))?;
        let Value::Object(map) = value else {
            return Err(ApiError::bad("JSON body must be an object"));
        };
        for (key, v) in &map {
            match key.as_str() {
                "user" | "id" => self.user = Some(json_string(key, v)?),
                "field" | "fields" => self.fields = json_list(key, v)?,
                "ids" => self.ids = Some(json_list(key, v)?),
                "count" => self.count = Some(json_scalar(key, v)?),
                "ttl" | "ttl_seconds" => self.ttl = Some(json_scalar(key, v)?),
                "max_age_ms" => self.max_age_ms = json_max_age(v)?.map(|ms| ms.to_string()),
                // `null` is "not given", as `/v1/features` reads it.
                "entity" if v.is_null() => self.entity = None,
                "entity" => self.entity = Some(json_string(key, v)?),
                "values" => self.values = Some(json_flag(key, v)?),
                _ => {}
            }
        }
        self.json = Some(map);
        Ok(())
    }

    /// `count`, or `default` when absent; 400 outside `min..=max`.
    pub fn count(&self, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        int_in_range("count", self.count.as_deref(), default, min, max)
    }

    /// `ttl` in seconds, or `default` when absent; 400 outside `min..=max`.
    pub fn ttl(&self, default: u64, min: u64, max: u64) -> Result<u64, ApiError> {
        int_in_range("ttl", self.ttl.as_deref(), default, min, max)
    }

    /// `max_age_ms`: serve only values at most this old on Redis's clock;
    /// `None` when absent (no bound). 400 outside 0 to ten years.
    pub fn max_age_ms(&self) -> Result<Option<u64>, ApiError> {
        match self.max_age_ms.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(raw) => int_in_range("max_age_ms", Some(raw), 0, 0, MAX_AGE_MS).map(Some),
        }
    }

    /// `values`: false when absent; `true`/`false` (or `1`/`0`) otherwise,
    /// anything else 400 (a typo must not silently drop the values).
    pub fn values(&self) -> Result<bool, ApiError> {
        match self.values.as_deref().map(str::trim) {
            None | Some("") | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") => Ok(true),
            Some(other) => Err(ApiError::bad(format!(
                "values must be true or false, got {other:?}"
            ))),
        }
    }

    /// `entity`, trimmed; `None` when absent or empty (the first entity).
    pub fn entity(&self) -> Option<&str> {
        self.entity
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    /// The user, required and non-empty.
    pub fn user(&self) -> Result<&str, ApiError> {
        match self.user.as_deref().map(str::trim) {
            Some(u) if !u.is_empty() => Ok(u),
            _ => Err(ApiError::bad(
                "missing parameter: user (an entity id such as u0001)",
            )),
        }
    }
}

/// The largest `max_age_ms` a request may give: the registry's largest.
const MAX_AGE_MS: u64 = crate::registry::MAX_AGE_MS as u64;

/// `max_age_ms` in a JSON body: absent or `null` for none, else an integer
/// from 0 (only values dated now or later) to [`MAX_AGE_MS`]. A number in a
/// string, a fraction or a negative is refused: a typo must not silently
/// serve older values than asked.
fn json_max_age(v: &Value) -> Result<Option<u64>, ApiError> {
    match v {
        Value::Null => Ok(None),
        Value::Number(n) => match n.as_u64() {
            Some(ms) if ms <= MAX_AGE_MS => Ok(Some(ms)),
            _ => Err(ApiError::bad(format!(
                "max_age_ms must be an integer from 0 to {MAX_AGE_MS}, got {n}"
            ))),
        },
        // The kind, not the value: an array or object may be long.
        other => Err(ApiError::bad(format!(
            "max_age_ms must be an integer from 0 to {MAX_AGE_MS}, got {}",
            match other {
                Value::String(_) => "a string",
                Value::Bool(_) => "a boolean",
                Value::Array(_) => "an array",
                _ => "an object",
            }
        ))),
    }
}

fn int_in_range(
    name: &str,
    raw: Option<&str>,
    default: u64,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
        return Ok(default);
    };
    match raw.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(format!(
            "{name} must be an integer from {min} to {max}, got {raw:?}"
        ))),
    }
}

fn split_list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

fn json_string(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        _ => Err(ApiError::bad(format!("{key} must be a string"))),
    }
}

/// A boolean (or its text), kept as text for `Params::values`.
fn json_flag(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Bool(b) => Ok(b.to_string()),
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::bad(format!("{key} must be true or false"))),
    }
}

/// A number or a numeric string, kept as text for `int_in_range`.
fn json_scalar(key: &str, v: &Value) -> Result<String, ApiError> {
    match v {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(ApiError::bad(format!("{key} must be a number"))),
    }
}

/// An array of strings, or one string (comma-separated allowed).
fn json_list(key: &str, v: &Value) -> Result<Vec<String>, ApiError> {
    match v {
        Value::String(s) => Ok(split_list(s).collect()),
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::bad(format!("{key} must be an array of strings"))),
            })
            .collect(),
        _ => Err(ApiError::bad(format!("{key} must be an array of strings"))),
    }
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte.
pub fn percent_decode(s: &str) -> Result<String, ApiError> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Ok(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Two hex digits exactly: `from_str_radix` alone would take
                // `%+1` as the number +1.
                let hex = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| ApiError::bad("malformed percent-encoding in parameters"))?;
                out.push(hex);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| ApiError::bad("parameters are not valid UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn form_and_json_agree() {
        let mut f = Params::default();
        f.add_form("user=u0001&field=a&field=b&count=5&ttl=60")
            .expect("valid in this test");
        let mut j = Params::default();
        j.add_json(br#"{"user":"u0001","fields":["a","b"],"count":5,"ttl":"60"}"#)
            .expect("valid in this test");
        for p in [&f, &j] {
            assert_eq!(p.user().expect("valid in this test"), "u0001");
            assert_eq!(p.fields, ["a", "b"]);
            assert_eq!(p.count(1, 1, 10).expect("valid in this test"), 5);
            assert_eq!(p.ttl(1, 1, 100).expect("valid in this test"), 60);
        }
    }

    #[test]
    fn entity_and_values_read_alike_from_form_and_json() {
        let mut f = Params::default();
        f.add_form("entity=merchant&values=true")
            .expect("valid in this test");
        let mut j = Params::default();
        j.add_json(br#"{"entity":"merchant","values":true}"#)
            .expect("valid in this test");
        for p in [&f, &j] {
            assert_eq!(p.entity(), Some("merchant"));
            assert!(p.values().expect("valid in this test"));
        }
        let none = Params::default();
        assert_eq!(none.entity(), None);
        assert!(!none.values().expect("absent is false"));
        let mut typo = Params::default();
        typo.add_form("values=yes").expect("valid in this test");
        assert!(typo.values().is_err());
        let mut wrong = Params::default();
        assert!(wrong.add_json(br#"{"values":[1]}"#).is_err());
        assert!(wrong.add_json(br#"{"entity":3}"#).is_err());
        let mut null = Params::default();
        null.add_json(br#"{"entity":null,"values":null}"#)
            .expect("null is not given");
        assert_eq!(null.entity(), None);
        assert!(!null.values().expect("null is false"));
    }

    #[test]
    fn ranges_are_reported() {
        let mut p = Params::default();
        p.add_form("count=0").expect("valid in this test");
        let e = p.count(1, 1, 10).unwrap_err().to_string();
        assert!(e.contains("1 to 10"), "{e}");
        p.add_form("count=abc").expect("valid in this test");
        assert!(p.count(1, 1, 10).is_err());
    }

    #[test]
    fn decoding() {
        assert_eq!(
            percent_decode("a+b%3Cc%3E").expect("valid in this test"),
            "a b<c>"
        );
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%").is_err());
    }

    #[test]
    fn a_percent_escape_is_two_hex_digits_never_a_signed_number() {
        for bad in ["%+1", "%-1", "%+f", "a%+1b", "%1", "% 1"] {
            assert!(percent_decode(bad).is_err(), "{bad} was accepted");
        }
        assert_eq!(percent_decode("%2B1").expect("valid"), "+1");
        assert_eq!(percent_decode("%C3%a9").expect("valid"), "\u{e9}");
    }

    /// `max_age_ms` sent as `v` in a JSON body, read as every endpoint
    /// reads it.
    fn age(v: Value) -> Result<Option<u64>, String> {
        let mut p = Params::default();
        let body = serde_json::to_vec(&json!({ "max_age_ms": v })).expect("serializes");
        p.add_json(&body).map_err(|e| e.to_string())?;
        p.max_age_ms().map_err(|e| e.to_string())
    }

    #[test]
    fn max_age_ms_is_an_integer_from_0_to_ten_years_or_refused() {
        assert_eq!(Params::default().max_age_ms().ok(), Some(None));
        assert_eq!(age(Value::Null), Ok(None));
        assert_eq!(age(json!(0)), Ok(Some(0)));
        assert_eq!(age(json!(60000)), Ok(Some(60_000)));
        assert_eq!(age(json!(315_360_000_000u64)), Ok(Some(315_360_000_000)));
        for bad in [
            json!(-1),
            json!(1.5),
            json!(1000.0),
            json!(315_360_000_001u64),
            json!(u64::MAX),
            json!("1000"),
            json!(true),
            json!([1000]),
            json!({"ms": 1}),
        ] {
            let e = age(bad.clone()).expect_err(&bad.to_string());
            assert!(
                e.contains("max_age_ms must be an integer from 0 to 315360000000"),
                "{bad}: {e}"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        #[test]
        fn any_number_is_served_as_itself_in_range_and_refused_outside(
            n in proptest::prelude::any::<i64>(),
            x in proptest::prelude::any::<f64>(),
            text in ".{0,12}",
        ) {
            let want = (0..=MAX_AGE_MS as i64).contains(&n).then_some(n as u64);
            proptest::prop_assert_eq!(age(json!(n)).ok().flatten(), want);
            // A fraction is never an age, even a whole-valued one.
            if let Some(number) = serde_json::Number::from_f64(x) {
                proptest::prop_assert!(age(Value::Number(number)).is_err());
            }
            proptest::prop_assert!(age(Value::String(text)).is_err());
        }
    }
}
