//! What the store accepts as a key prefix, an entity id and a feature name.
//!
//! The rules keep every key the store builds under its prefix and every SCAN
//! pattern it builds from widening past it.

use crate::error::StoreError;

pub const MAX_ID_LEN: usize = 128;
pub const MAX_NAME_LEN: usize = 128;
pub const MAX_PREFIX_LEN: usize = 64;

/// Which bytes each rule allows: letters and digits, and the rule's own
/// punctuation. Every allowed byte is ASCII, so a string made only of
/// allowed bytes is exactly one the rule accepts, char for char: checking
/// bytes against a table is the same rule as checking chars, without
/// decoding UTF-8 (the writers check every name of every row).
const fn allowed(punctuation: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 128 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let mut i = 0;
    while i < punctuation.len() {
        table[punctuation[i] as usize] = true;
        i += 1;
    }
    table
}

static ID_BYTES: [bool; 256] = allowed(b"_-.:@{}");
static NAME_BYTES: [bool; 256] = allowed(b"_-.:");
static PREFIX_BYTES: [bool; 256] = allowed(b"_-.:{}/");

/// The first char of `text` the rule `table` refuses, if any. Only a
/// refused string is scanned by char (to name the offending char, which
/// may be non-ASCII).
fn refused(text: &str, table: &[bool; 256]) -> Option<char> {
    if text.bytes().all(|b| table[b as usize]) {
        return None;
    }
    text.chars().find(|&c| !(c.is_ascii() && table[c as usize]))
}

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
    if let Some(c) = refused(id, &ID_BYTES) {
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
    if let Some(c) = refused(name, &NAME_BYTES) {
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
    if let Some(c) = refused(prefix, &PREFIX_BYTES) {
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
    use proptest::prelude::*;

    /// The rules as they were first written, char by char: the oracle the
    /// byte tables are checked against.
    fn id_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '{' | '}')
    }
    fn name_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
    }
    fn prefix_char(c: char) -> bool {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '{' | '}' | '/')
    }

    type Check = fn(&str) -> Result<(), StoreError>;
    type Says = fn(&str, char) -> String;
    /// A check, its oracle rule, its error's wording, its most bytes.
    type Rule = (Check, fn(char) -> bool, Says, usize);

    fn rules() -> [Rule; 3] {
        [
            (
                entity_id,
                id_char,
                |t, c| {
                    format!(
                        "entity id {t:?} contains {c:?}; allowed: letters, digits, _ - . : @ {{ }}"
                    )
                },
                MAX_ID_LEN,
            ),
            (
                feature_name,
                name_char,
                |t, c| {
                    format!("feature name {t:?} contains {c:?}; allowed: letters, digits, _ - . :")
                },
                MAX_NAME_LEN,
            ),
            (
                key_prefix,
                prefix_char,
                |t, c| {
                    format!("key prefix {t:?} contains {c:?}; allowed: letters, digits, _ - . : {{ }} /")
                },
                MAX_PREFIX_LEN,
            ),
        ]
    }

    /// What the char-by-char rule answers for `text` (length within bounds).
    fn oracle(text: &str, ok: fn(char) -> bool, says: Says) -> Option<String> {
        let c = text.chars().find(|&c| !ok(c))?;
        Some(says(text, c))
    }

    fn agree(text: &str) -> Result<(), TestCaseError> {
        for (check, ok, says, max) in rules() {
            if text.is_empty() || text.len() > max {
                prop_assert!(check(text).is_err());
                continue;
            }
            let got = check(text).err().map(|e| e.to_string());
            let want = oracle(text, ok, says).map(|m| StoreError::invalid(m).to_string());
            prop_assert_eq!(got, want, "{:?}", text);
        }
        Ok(())
    }

    #[test]
    fn the_byte_tables_are_the_char_rules_for_every_char_up_to_u_0800() {
        for code in 0u32..0x800 {
            let c = char::from_u32(code).expect("no surrogates below U+0800");
            for text in [c.to_string(), format!("ab{c}"), format!("{c}z9")] {
                if let Err(e) = agree(&text) {
                    panic!("{code:#x}: {e}");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any text, mostly from the allowed alphabet with now and then a
        /// refused ASCII char or a non-ASCII one.
        #[test]
        fn the_byte_checks_agree_with_the_char_rules(
            text in r"[A-Za-z0-9_.:@{}/ *?\\\[\]\n-]{0,12}(\PC{0,2}[a-z_]{0,3}){0,3}",
        ) {
            agree(&text)?;
        }

        #[test]
        fn the_byte_checks_agree_with_the_char_rules_on_any_string(text in any::<String>()) {
            agree(&text)?;
        }
    }

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
