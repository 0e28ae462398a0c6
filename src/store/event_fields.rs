//! Where event times live in an entity's hash, and how a read judges a
//! value's age. The layout, for redis-cli users (docs/event-time.md has the
//! whole story):
//!
//! - `@<view>`: the event time (epoch ms) of the newest write that covered
//!   every feature of that view (a whole batch row, a whole streaming
//!   update). One field per view dates all its features.
//! - `<feature>@t`: a feature's own event time, only where a write covered
//!   part of its view, or the feature belongs to no registered view.
//! - `@<view>+`: the newest `<feature>@t` written in that view, present only
//!   while such own times may exist; a whole write newer than it needs no
//!   per-feature look.
//!
//! A feature's event time is the newest of its view's time and its own
//! (`dating` reads them).
//! Feature names cannot hold `@` (`validate::feature_name`), so none of
//! these fields can be a feature.

use serde::Serialize;

/// The field dating a whole view's write.
pub fn view_time_field(view: &str) -> String {
    format!("@{view}")
}

/// The field holding the newest per-feature time of a view.
pub fn view_marker_field(view: &str) -> String {
    format!("@{view}+")
}

/// The field holding one feature's own event time.
pub fn feature_time_field(feature: &str) -> String {
    format!("{feature}@t")
}

/// True for the fields above: a reader listing an entity's features skips
/// them.
pub fn is_time_field(field: &str) -> bool {
    field.starts_with('@') || field.ends_with("@t")
}

/// Parses a stored event time; anything that is not a plain decimal
/// integer (another tool's bytes) counts as no time.
pub fn parse_time(raw: &[u8]) -> Option<u64> {
    if raw.is_empty() || raw.len() > 15 || !raw.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(raw).ok()?.parse().ok()
}

/// How a read judged one value against a maximum age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Freshness {
    /// Present, and within the bound (or no bound was asked for).
    Fresh,
    /// Present but older than the bound: left out of the answer.
    Stale,
    /// Present, with no event time (written before event times, or by
    /// another tool): served when no bound is asked for, left out under
    /// one, since its age cannot be shown to be within it.
    Undated,
    /// Not stored (never written, expired, retracted).
    Missing,
}

impl Freshness {
    /// Whether a value judged so is served to the caller.
    pub fn is_served(self, bounded: bool) -> bool {
        match self {
            Freshness::Fresh => true,
            Freshness::Undated => !bounded,
            Freshness::Stale | Freshness::Missing => false,
        }
    }
}

/// A value's age and verdict. `now_ms` is Redis's clock (`TIME`), so a
/// client's clock skew plays no part; an event time ahead of it gives a
/// negative age, which is fresh. A value is stale exactly when its age
/// exceeds `max_age_ms`.
pub fn judge(
    now_ms: u64,
    present: bool,
    event_time_ms: Option<u64>,
    max_age_ms: Option<u64>,
) -> (Option<i64>, Freshness) {
    if !present {
        return (None, Freshness::Missing);
    }
    let Some(t) = event_time_ms else {
        return (None, Freshness::Undated);
    };
    let age = now_ms as i64 - t as i64;
    let stale = max_age_ms.is_some_and(|bound| age > bound as i64);
    (
        Some(age),
        if stale {
            Freshness::Stale
        } else {
            Freshness::Fresh
        },
    )
}

/// Redis's `TIME` reply (seconds, microseconds) as epoch milliseconds.
pub fn time_reply_ms(reply: &redis::Value) -> Option<u64> {
    let redis::Value::Array(parts) = reply else {
        return None;
    };
    let num = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse::<u64>().ok(),
        redis::Value::Int(i) => u64::try_from(*i).ok(),
        _ => None,
    };
    match parts.as_slice() {
        [s, us] => Some(num(s)? * 1000 + num(us)? / 1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_turns_stale_only_past_its_bound() {
        let now = 1_000_000;
        assert_eq!(
            judge(now, true, Some(now - 500), Some(500)),
            (Some(500), Freshness::Fresh)
        );
        assert_eq!(
            judge(now, true, Some(now - 501), Some(500)),
            (Some(501), Freshness::Stale)
        );
        assert_eq!(
            judge(now, true, Some(now + 20), Some(0)),
            (Some(-20), Freshness::Fresh)
        );
        assert_eq!(judge(now, true, None, Some(10)).1, Freshness::Undated);
        assert_eq!(judge(now, false, Some(now), None).1, Freshness::Missing);
        assert!(!Freshness::Undated.is_served(true));
        assert!(Freshness::Undated.is_served(false));
    }

    #[test]
    fn stored_times_are_plain_decimals_or_nothing() {
        assert_eq!(parse_time(b"1796133600000"), Some(1_796_133_600_000));
        for bad in [&b""[..], b"-1", b"1e3", b" 1", b"1234567890123456", b"\xff"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn time_fields_never_look_like_features() {
        for f in [
            view_time_field("v"),
            view_marker_field("v"),
            feature_time_field("f"),
        ] {
            assert!(is_time_field(&f));
            assert!(crate::validate::feature_name(&f).is_err(), "{f}");
        }
        assert!(!is_time_field("country_iso"));
    }
}
