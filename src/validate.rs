//! What the store accepts as a key prefix, an entity id and a feature name.
//!
//! The rules keep every key the store builds under its prefix and every SCAN
//! pattern it builds from widening past it.

use crate::error::StoreError;

pub const MAX_ID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_PREFIX_LEN: usize = 64;

/// Entity ids: 1..=128 of `A-Z a-z 0-9 _ - . : @ { }`. No glob characters,
/// no whitespace. Braces make a cluster hash tag: ids `{tenant7}:u1` and
/// `{tenant7}:u2` share a slot (see docs/cluster.md).
pub fn entity_id(id: &str) -> Result<(), StoreError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(StoreError::invalid(format!(
            "entity id must be 1 to {MAX_ID_LEN} characters, got {}",
            id.len()
        )));
    }
    if let Some(c) = id.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '{' | '}'))
    }) {
        return Err(StoreError::invalid(format!(
            "entity id {id:?} contains {c:?}; allowed: letters, digits, _ - . : @ {{ }}"
        )));
    }
    Ok(())
}

/// Feature names: 1..=128 of `A-Z a-z 0-9 _ - . :`.
pub fn feature_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(StoreError::invalid(format!(
            "feature name must be 1 to {MAX_NAME_LEN} characters, got {}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
    {
        return Err(StoreError::invalid(format!(
            "feature name {name:?} contains {c:?}; allowed: letters, digits, _ - . :"
        )));
    }
    Ok(())
}

/// Key prefixes: 1..=64 of `A-Z a-z 0-9 _ - . : { } /`. Braces allow a
/// cluster hash tag; glob characters (`* ? [ ] \`) are refused outright, and
/// the SCAN pattern escapes anyway.
pub fn key_prefix(prefix: &str) -> Result<(), StoreError> {
    if prefix.is_empty() || prefix.len() > MAX_PREFIX_LEN {
        return Err(StoreError::invalid(format!(
            "key prefix must be 1 to {MAX_PREFIX_LEN} characters, got {}",
            prefix.len()
        )));
    }
    if let Some(c) = prefix.chars().find(|c| {
        !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '{' | '}' | '/'))
    }) {
        return Err(StoreError::invalid(format!(
            "key prefix {prefix:?} contains {c:?}; allowed: letters, digits, _ - . : {{ }} /"
        )));
    }
    Ok(())
}

/// A SCAN MATCH pattern that matches exactly the keys starting with `prefix`.
pub fn scan_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 2);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in [
            "u0001",
            "user-42",
            "a.b:c@d",
            "{tenant7}:u1",
            &"x".repeat(MAX_ID_LEN),
        ] {
            assert!(entity_id(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "u*",
            "u?",
            "a b",
            "u[1]",
            "é",
            &"x".repeat(MAX_ID_LEN + 1),
        ] {
            let err = entity_id(bad).expect_err(bad).to_string();
            assert!(err.contains("entity id"), "{err}");
        }
    }

    #[test]
    fn names() {
        assert!(feature_name("tx_count_5m").is_ok());
        for bad in ["", "a b", "x*", "a\nb"] {
            assert!(feature_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prefixes() {
        assert!(key_prefix("fs:user:").is_ok());
        assert!(key_prefix("fs:{shard1}:user:").is_ok());
        for bad in ["", "fs:*", "fs:?", "fs:[ab]", "fs\\", "fs user"] {
            assert!(key_prefix(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scan_pattern_escapes_globs() {
        assert_eq!(scan_pattern("fs:user:"), "fs:user:*");
        assert_eq!(scan_pattern("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\*");
    }
}
