//! A row's event time (`--event-time-column`), parsed strictly into epoch
//! milliseconds. A time the loader guessed at would date a value wrongly,
//! and a wrongly dated value either wins over a newer one or loses to an
//! older one for good; so anything not in one of these forms rejects its
//! row:
//!
//! - an RFC 3339 date-time WITH an offset: `2026-12-01T14:40:09Z`,
//!   `2026-12-01T14:40:09.123+02:00`; `T`, `t` or one space between date and
//!   time, `Z` or `z`; 1 to 9 fractional digits, truncated to the
//!   millisecond. No offset is refused: the same text names different
//!   instants on machines in different zones. A leap second (`:60`) is
//!   refused too (no epoch millisecond names it).
//! - epoch digits: below 100,000,000,000 they are seconds (that is year
//!   5138 in seconds, but 1973 in milliseconds: no real event time is
//!   ambiguous), else milliseconds. In JSON a number or a string of digits.
//!
//! Refused besides: empty, a sign, a fraction or exponent in an epoch
//! number, any whitespace around the value, an instant before 1970-01-01,
//! and anything above `MAX_MS` (15 digits: the most the write scripts take).

use serde_json::Value;

/// The largest event time accepted (15 digits of milliseconds).
pub const MAX_MS: u64 = 999_999_999_999_999;
/// Epoch values below this are seconds, from it on milliseconds.
pub const SECONDS_BELOW: u64 = 100_000_000_000;

const FORMS: &str = "expected an RFC 3339 date-time with an offset (2026-12-01T14:40:09Z, \
                     ...09.123+02:00) or epoch digits (seconds below 100000000000, else ms)";

/// A CSV cell or JSON string: its event time in epoch ms, or why not.
pub fn parse_text(text: &str) -> Result<u64, String> {
    let b = text.as_bytes();
    if b.is_empty() {
        return Err("empty".into());
    }
    if b.iter().all(u8::is_ascii_digit) {
        // More digits than u64 holds is past MAX_MS anyway.
        let n = text.parse::<u64>().unwrap_or(u64::MAX);
        return epoch(n).map_err(|why| format!("{}: {why}", quoted(text)));
    }
    date_time(b).map_err(|why| format!("{}: {why}", quoted(text)))
}

/// A JSON value: a non-negative integer (epoch) or a string (`parse_text`).
pub fn parse_json(value: &Value) -> Result<u64, String> {
    match value {
        Value::String(s) => parse_text(s),
        Value::Number(n) => match n.as_u64() {
            Some(n) => epoch(n).map_err(|why| format!("{n}: {why}")),
            None => Err(format!("{n}: not a non-negative integer; {FORMS}")),
        },
        other => Err(format!(
            "{}: not a string or an integer; {FORMS}",
            quoted(&other.to_string())
        )),
    }
}

/// Epoch digits by the seconds/milliseconds rule.
fn epoch(n: u64) -> Result<u64, String> {
    let ms = if n < SECONDS_BELOW { n * 1000 } else { n };
    if ms > MAX_MS {
        return Err(format!(
            "after the latest event time accepted ({MAX_MS} ms)"
        ));
    }
    Ok(ms)
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.f{1,9}](Z|z|+HH:MM|-HH:MM)`.
fn date_time(b: &[u8]) -> Result<u64, String> {
    let bad = || FORMS.to_owned();
    let num = |from: usize, len: usize| -> Result<i64, String> {
        let digits = b.get(from..from + len).ok_or_else(bad)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        Ok(digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0')))
    };
    let lit = |at: usize, allowed: &[u8]| -> Result<(), String> {
        match b.get(at) {
            Some(c) if allowed.contains(c) => Ok(()),
            _ => Err(bad()),
        }
    };
    let year = num(0, 4)?;
    lit(4, b"-")?;
    let month = num(5, 2)?;
    lit(7, b"-")?;
    let day = num(8, 2)?;
    lit(10, b"Tt ")?;
    let hour = num(11, 2)?;
    lit(13, b":")?;
    let minute = num(14, 2)?;
    lit(16, b":")?;
    let second = num(17, 2)?;
    let mut at = 19;
    let mut millis = 0i64;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let digits = b[at..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return Err("1 to 9 fractional digits".into());
        }
        // Truncated to the millisecond: the first three digits, padded.
        let ms_digits = &b[at..at + digits.min(3)];
        millis = ms_digits
            .iter()
            .fold(0i64, |acc, d| acc * 10 + i64::from(d - b'0'));
        for _ in ms_digits.len()..3 {
            millis *= 10;
        }
        at += digits;
    }
    let offset_minutes = match b.get(at) {
        None => return Err("no UTC offset (add Z or +HH:MM): the instant is ambiguous".into()),
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            let h = num(at + 1, 2)?;
            lit(at + 3, b":")?;
            let m = num(at + 4, 2)?;
            if h > 23 || m > 59 {
                return Err("offset out of range".into());
            }
            at += 6;
            if sign == b'-' {
                -(h * 60 + m)
            } else {
                h * 60 + m
            }
        }
        Some(_) => return Err(bad()),
    };
    if at != b.len() {
        return Err(bad());
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such date".into());
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("no such time of day (a leap second has no epoch time)".into());
    }
    let seconds = crate::calendar::days_from_civil(year, month, day) * 86_400
        + hour * 3600
        + minute * 60
        + second
        - offset_minutes * 60;
    let ms = seconds * 1000 + millis;
    if ms < 0 {
        return Err("before 1970-01-01T00:00:00Z".into());
    }
    // Years have 4 digits: at most 253402300799999 ms, far below MAX_MS.
    Ok(ms as u64)
}

fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The offending text, cut short: a failures file names it, not a novel.
fn quoted(text: &str) -> String {
    const MAX: usize = 40;
    if text.chars().count() <= MAX {
        format!("{text:?}")
    } else {
        let head: String = text.chars().take(MAX).collect();
        format!("{head:?}...")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;
    use time::{OffsetDateTime, UtcOffset};

    #[test]
    fn the_documented_forms_are_accepted() {
        let t = 1_796_136_009_000; // 2026-12-01T14:40:09Z
        for (text, ms) in [
            ("2026-12-01T14:40:09Z", t),
            ("2026-12-01t14:40:09z", t),
            ("2026-12-01 14:40:09Z", t),
            ("2026-12-01T14:40:09.123Z", t + 123),
            ("2026-12-01T14:40:09.1Z", t + 100),
            ("2026-12-01T14:40:09.123456789Z", t + 123),
            ("2026-12-01T16:40:09+02:00", t),
            ("2026-12-01T12:10:09-02:30", t),
            ("2026-12-01T14:40:09-00:00", t),
            ("1970-01-01T00:00:00Z", 0),
            ("1796136009", t),
            ("1796136009000", t),
            ("0", 0),
            ("99999999999", 99_999_999_999_000),
            ("100000000000", 100_000_000_000),
            ("999999999999999", MAX_MS),
            ("2024-02-29T00:00:00Z", 1_709_164_800_000),
        ] {
            assert_eq!(parse_text(text), Ok(ms), "{text}");
        }
        assert_eq!(parse_json(&json!(1_796_136_009)), Ok(t));
        assert_eq!(parse_json(&json!("1796136009000")), Ok(t));
        assert_eq!(parse_json(&json!("2026-12-01T14:40:09Z")), Ok(t));
    }

    #[test]
    fn everything_else_is_refused_with_a_reason() {
        for text in [
            "",
            " 1796136009",
            "1796136009 ",
            "+1796136009",
            "-1796136009",
            "1.5",
            "1e9",
            "1000000000000000",
            "99999999999999999999999",
            "2026-12-01T14:40:09",
            "2026-12-01T14:40:09.Z",
            "2026-12-01T14:40:09.1234567891Z",
            "2026-12-01T14:40:60Z",
            "2026-12-01T24:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-12-00T00:00:00Z",
            "2026-12-01T14:40:09+24:00",
            "2026-12-01T14:40:09+02:60",
            "2026-12-01T14:40:09+0200",
            "2026-12-01T14:40:09Z ",
            "2026-12-01X14:40:09Z",
            "2026-12-01  14:40:09Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "26-12-01T14:40:09Z",
            "2026-12-01",
            "now",
        ] {
            assert!(parse_text(text).is_err(), "{text:?} accepted");
        }
        assert!(parse_text("2026-12-01T14:40:09")
            .unwrap_err()
            .contains("no UTC offset"));
        for value in [
            json!(-1),
            json!(1.5),
            json!(1.0),
            json!(1e3),
            json!(1_000_000_000_000_000u64),
            json!(true),
            json!(null),
            json!([1]),
        ] {
            assert!(parse_json(&value).is_err(), "{value} accepted");
        }
    }

    /// The expected milliseconds of an instant given `fraction_digits` of
    /// its nanoseconds.
    fn truncated_ms(dt: OffsetDateTime, fraction_digits: u32) -> i128 {
        let nanos = i128::from(dt.nanosecond());
        let unit = 10i128.pow(9 - fraction_digits);
        dt.unix_timestamp() as i128 * 1000 + (nanos / unit * unit) / 1_000_000
    }

    /// An instant as a string the parser must accept: the civil fields
    /// come from the `time` crate, so a mistake in `days_from_civil` or the
    /// offset's sign shows.
    fn render(dt: OffsetDateTime, sep: char, fraction_digits: u32, z: &str) -> String {
        let mut s = format!(
            "{:04}-{:02}-{:02}{sep}{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        if fraction_digits > 0 {
            let digits = format!("{:09}", dt.nanosecond());
            s.push('.');
            s.push_str(&digits[..fraction_digits as usize]);
        }
        let off = dt.offset().whole_minutes();
        if off == 0 && !z.is_empty() {
            s.push_str(z);
        } else {
            let sign = if off < 0 { '-' } else { '+' };
            let a = off.unsigned_abs();
            s.push_str(&format!("{sign}{:02}:{:02}", a / 60, a % 60));
        }
        s
    }

    /// 1970 to 9999, to the nanosecond.
    const LAST_NANOS: i128 = 253_402_300_799_999_999_999;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn date_times_round_trip_to_the_same_millisecond(
            nanos in 0i128..=LAST_NANOS,
            offset in -(23 * 60 + 59)..=(23 * 60 + 59i32),
            sep in prop::sample::select(vec!['T', 't', ' ']),
            fraction_digits in 0u32..=9,
            z in prop::sample::select(vec!["Z", "z", ""]),
        ) {
            let utc = OffsetDateTime::from_unix_timestamp_nanos(nanos).expect("in range");
            let offset = UtcOffset::from_whole_seconds(offset * 60).expect("in range");
            let dt = utc.to_offset(offset);
            prop_assume!((0..=9999).contains(&dt.year()));
            let text = render(dt, sep, fraction_digits, z);
            let want = truncated_ms(dt, fraction_digits);
            prop_assert_eq!(parse_text(&text).map(i128::from), Ok(want), "{}", text);
            prop_assert_eq!(parse_json(&Value::String(text.clone())).map(i128::from), Ok(want));
        }

        #[test]
        fn epoch_digits_follow_the_seconds_or_milliseconds_rule(n in 0u64..=MAX_MS) {
            let want = if n < SECONDS_BELOW { n * 1000 } else { n };
            prop_assert_eq!(parse_text(&n.to_string()), Ok(want));
            prop_assert_eq!(parse_json(&json!(n)), Ok(want));
            for variant in [format!("-{n}"), format!("+{n}"), format!("{n}.0"), format!(" {n}")] {
                prop_assert!(parse_text(&variant).is_err(), "{} accepted", variant);
            }
        }

        /// Near misses of the date-time form: accepted exactly when the
        /// `time` crate's RFC 3339 parser accepts them, within our tighter
        /// rules (separator, 9 digits, no leap second, 1970 on).
        #[test]
        fn near_date_times_are_accepted_only_as_rfc3339_says(
            text in "[0-9]{4}-[01][0-9]-[0-3][0-9][Tt x][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?([Zzx]|[+-][0-2][0-9]:[0-6][0-9])?"
        ) {
            let ours = parse_text(&text);
            let theirs = OffsetDateTime::parse(&text, &Rfc3339);
            let fraction = text.split_once('.').map_or(0, |(_, rest)| {
                rest.bytes().take_while(u8::is_ascii_digit).count()
            });
            let ok_by_rules = matches!(text.as_bytes()[10], b'T' | b't' | b' ')
                && (fraction <= 9)
                && &text[17..19] != "60";
            match (&ours, theirs) {
                (Ok(ms), Ok(dt)) => {
                    prop_assert!(ok_by_rules, "{}", text);
                    prop_assert_eq!(i128::from(*ms), dt.unix_timestamp_nanos() / 1_000_000);
                }
                (Ok(_), Err(e)) => prop_assert!(false, "{} accepted, time says {}", text, e),
                (Err(_), Ok(dt)) => prop_assert!(
                    !ok_by_rules || dt.unix_timestamp() < 0,
                    "{} refused: {:?}", text, ours
                ),
                (Err(_), Err(_)) => {}
            }
        }

        /// Any text: never a panic, and what is accepted is one of the
        /// forms (digits, or a date-time `time` reads the same).
        #[test]
        fn random_text_never_panics_and_is_accepted_only_in_a_form(
            text in prop_oneof![
                "\\PC{0,40}",
                "[0-9 .eE+\\-:TZz]{0,30}",
            ]
        ) {
            if let Ok(ms) = parse_text(&text) {
                prop_assert!(ms <= MAX_MS);
                if !text.bytes().all(|b| b.is_ascii_digit()) {
                    let dt = OffsetDateTime::parse(&text, &Rfc3339);
                    prop_assert!(dt.is_ok(), "{} accepted", text);
                    prop_assert_eq!(
                        dt.map(|d| d.unix_timestamp_nanos() / 1_000_000).ok(),
                        Some(i128::from(ms))
                    );
                }
            }
        }
    }
}
