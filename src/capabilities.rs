//! What the scripts need from Redis, checked once at connect time so that a
//! server or loader given an unsuitable Redis refuses to start instead of
//! failing (or, before the scripts guarded against it, leaving keys without
//! a TTL) row by row.
//!
//! The scripts need `HEXPIRE` and `HTTL` (Redis >= 7.4, Valkey >= 9.0) and
//! `EXPIRE ... NX` (Redis >= 7.0). `HSETEX` (Redis >= 8.0, Valkey >= 9.0)
//! is not needed: `write_streaming` uses it where it runs and falls back to
//! `HSET` + `HEXPIRE` by itself, so it is not probed. Each is *probed* on a key no entity id can
//! name, rather than looked up with `COMMAND INFO` or a version string: a
//! probe also sees a command renamed away or forbidden to this user by an
//! ACL, needs no right to run `COMMAND`, and Valkey reports a Redis version
//! number of its own. On a missing key every probe is a no-op.

use crate::error::StoreError;

/// One thing the scripts need that this Redis refused.
#[derive(Debug, Clone, PartialEq)]
pub struct Missing {
    /// The command as the scripts use it, e.g. `HEXPIRE`.
    pub command: &'static str,
    /// Redis's own words, e.g. `ERR unknown command 'HEXPIRE' ...`.
    pub reason: String,
}

/// The probe key: under the prefix (so an ACL key pattern for the prefix
/// covers it), with a space no entity id may contain.
fn probe_key(key_prefix: &str) -> String {
    format!("{key_prefix}capability probe")
}

/// Probes every command the scripts need, each sent with `send`. `Ok(list)`
/// names what is missing (empty: all there); `Err` only when Redis could
/// not be reached.
pub fn missing(
    key_prefix: &str,
    mut send: impl FnMut(&redis::Cmd) -> Result<(), StoreError>,
) -> Result<Vec<Missing>, StoreError> {
    let key = probe_key(key_prefix);
    // The field name has a space too: no feature can be called that.
    let field = "capability probe";
    let probes: [(&'static str, redis::Cmd); 3] = [
        ("HEXPIRE", {
            let mut c = redis::cmd("HEXPIRE");
            c.arg(&key).arg(1).arg("FIELDS").arg(1).arg(field);
            c
        }),
        ("HTTL", {
            let mut c = redis::cmd("HTTL");
            c.arg(&key).arg("FIELDS").arg(1).arg(field);
            c
        }),
        ("EXPIRE NX", {
            let mut c = redis::cmd("EXPIRE");
            c.arg(&key).arg(1).arg("NX");
            c
        }),
    ];
    let mut missing = Vec::new();
    for (command, cmd) in probes {
        match send(&cmd) {
            Ok(_) => {}
            Err(StoreError::Redis(reason)) => missing.push(Missing { command, reason }),
            Err(e) => return Err(e),
        }
    }
    Ok(missing)
}

/// The message a server or loader refuses to start with.
pub fn describe(missing: &[Missing]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|m| format!("{} ({})", m.command, m.reason))
        .collect();
    format!(
        "this Redis lacks what the feature store's scripts need: {}. Use Redis >= 7.4 or \
         Valkey >= 9.0, with these commands neither renamed nor denied to this user",
        list.join("; ")
    )
}
