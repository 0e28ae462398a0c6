//! Structured logs: one line per event on stderr, logfmt-like, e.g.
//!
//! ```text
//! ts=2026-12-01T17:44:11.120Z level=info event=start mode=embedded redis=127.0.0.1:6380
//! ```
//!
//! The level comes from `FS_LOG`, then `RUST_LOG` (`error`, `warn`, `info`,
//! `debug`, `trace`, or env_logger's `target=level` list), default `info`.
//! Callers write `event=<name>` first, then `key=value` pairs, each value
//! through [`value`] (quoted when it holds a space, a quote or `=`). What
//! no event may carry: a URL password (see `redis_url::redact`), a request's
//! `Authorization` header or query string, a feature value.

use std::fmt::Display;
use std::io::Write;

/// The log targets of this project's events: the library's module paths
/// and the binaries' (`fs_server`, `fs_loader`).
const OUR_TARGETS: [&str; 2] = ["feature_store", "fs_"];

/// Installs the logger once; later calls (tests, a second binary entry)
/// do nothing.
pub fn init() {
    let filter = std::env::var("FS_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".to_owned());
    let _ = env_logger::Builder::new()
        .parse_filters(&filter)
        .format(|out, record| {
            let ts = out.timestamp_millis();
            let level = record.level().as_str().to_ascii_lowercase();
            if OUR_TARGETS.iter().any(|t| record.target().starts_with(t)) {
                writeln!(out, "ts={ts} level={level} {}", record.args())
            } else {
                // A library's own words (tiny_http at debug): quoted, so
                // the line still parses as logfmt.
                writeln!(
                    out,
                    "ts={ts} level={level} event=library target={} msg={}",
                    value(record.target()),
                    value(record.args())
                )
            }
        })
        .target(env_logger::Target::Stderr)
        .try_init();
}

/// `v` as a logfmt value: bare when it is one plain word, otherwise in
/// double quotes with `"`, `\` and control characters escaped, so a value
/// never splits a line or forges another `key=`.
pub fn value(v: impl Display) -> String {
    let s = v.to_string();
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '=' && c != '\\');
    if plain {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever a value holds, it stays one token of one line.
        #[test]
        fn a_value_never_breaks_the_line_or_adds_a_key(s in "\\PC*|[ =\"\\\\\n\r]{0,8}") {
            let v = value(&s);
            prop_assert!(!v.contains('\n') && !v.contains('\r'));
            if v.starts_with('"') {
                prop_assert!(v.ends_with('"') && v.len() >= 2);
                let inner = &v[1..v.len() - 1];
                // Every quote inside is escaped.
                let unescaped = inner.replace("\\\\", "").replace("\\\"", "");
                prop_assert!(!unescaped.contains('"'));
            } else {
                prop_assert!(!v.contains(' ') && !v.contains('='));
            }
        }
    }
}
