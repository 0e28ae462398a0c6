//! What the store reads from a Redis URL besides what the `redis` crate
//! parses: which backend and whether TLS (by scheme), and the one way a URL
//! is shown to people, without its password.

/// A cluster: the nodes named after it are seeds (plain connections).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";
/// A cluster over TLS: every node is reached with `rediss://`.
pub const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// `redis+cluster://` or `rediss+cluster://`.
pub fn is_cluster(url: &str) -> bool {
    url.starts_with(CLUSTER_SCHEME) || url.starts_with(TLS_CLUSTER_SCHEME)
}

/// `rediss://` or `rediss+cluster://`: connections are TLS.
pub fn is_tls(url: &str) -> bool {
    url.starts_with("rediss://") || url.starts_with(TLS_CLUSTER_SCHEME)
}

/// The URL with its password replaced by `***` (the user stays: it says
/// which ACL user the store runs as). Every message, log line and status
/// page that shows a Redis URL shows it through this.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_password_is_hidden_and_the_user_kept() {
        assert_eq!(
            redact("redis://fsuser:s3cret@10.0.0.1:6380/"),
            "redis://fsuser:***@10.0.0.1:6380/"
        );
        assert_eq!(
            redact("rediss+cluster://app:pw@h1:7000,h2:7001/"),
            "rediss+cluster://app:***@h1:7000,h2:7001/"
        );
        assert_eq!(redact("redis://:pw@h:1/"), "redis://:***@h:1/");
        assert_eq!(redact("redis://h:6380/"), "redis://h:6380/");
        assert!(is_cluster("rediss+cluster://h:1/") && is_tls("rediss+cluster://h:1/"));
        assert!(!is_tls("redis+cluster://h:1/") && !is_cluster("rediss://h:1/"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// Whatever the password holds (':' and '@' included), it never
        /// shows in the redacted URL.
        #[test]
        fn no_password_survives_redaction(
            scheme in "(redis|rediss|redis\\+cluster|rediss\\+cluster)",
            user in "[a-z]{0,8}",
            password in "[!-~]{6,24}",
        ) {
            let url = format!("{scheme}://{user}:{password}@127.0.0.1:6380/");
            prop_assert_eq!(redact(&url), format!("{scheme}://{user}:***@127.0.0.1:6380/"));
        }
    }
}
