//! Which requests may change state, and which bodies we parse.
//!
//! A web page on any site can make the visitor's browser POST to this
//! server (an auto-submitted form, or a `fetch` in `no-cors` mode): the
//! browser sends it, and only hides the answer. So every POST is checked:
//!
//! * an `Origin` header must name this server (scheme-less `host:port`
//!   equal to the `Host` header, default ports folded) or an origin given
//!   with `--allowed-origin`; `Origin: null` (sandboxed frames, files) is
//!   refused;
//! * with no `Origin`, `Sec-Fetch-Site: cross-site` or `same-site` (a
//!   browser telling us another site sent it) is refused;
//! * a body is parsed by its declared type only: `application/json` as
//!   JSON, `application/x-www-form-urlencoded` as a form. Anything else
//!   (`text/plain`, `multipart/form-data`, none) is 415: guessing the type
//!   from the body let a cross-site `text/plain` form deliver JSON.
//!
//! Clients that are not browsers (curl, the loader, scripts) send no
//! `Origin` and are unaffected.

use tiny_http::Request;

use super::errors::ApiError;
use super::http::header;

/// How a POST body is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Json,
    Form,
}

/// Origins (`scheme://host[:port]`) allowed besides our own.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    allowed: Vec<String>,
}

impl OriginPolicy {
    pub fn new(allowed: &[String]) -> OriginPolicy {
        OriginPolicy {
            allowed: allowed
                .iter()
                .map(|o| normalize_origin(o))
                .filter(|o| !o.is_empty())
                .collect(),
        }
    }

    /// 403 unless a browser could only have sent this request from a page
    /// of ours (or of an allowed origin).
    pub fn check(&self, req: &Request) -> Result<(), ApiError> {
        match header(req, "Origin").map(str::trim) {
            Some(origin) => {
                let norm = normalize_origin(origin);
                if self.allowed.contains(&norm) {
                    return Ok(());
                }
                let host = header(req, "Host").map(str::trim).unwrap_or("");
                match same_origin(&norm, host) {
                    true => Ok(()),
                    false => Err(ApiError::Forbidden(format!(
                        "cross-origin request refused: Origin {origin:?} is not this server \
                         ({host:?}); allow it with --allowed-origin"
                    ))),
                }
            }
            None => match header(req, "Sec-Fetch-Site").map(str::trim) {
                Some(site)
                    if site.eq_ignore_ascii_case("cross-site")
                        || site.eq_ignore_ascii_case("same-site") =>
                {
                    Err(ApiError::Forbidden(format!(
                        "cross-site request refused (Sec-Fetch-Site: {site})"
                    )))
                }
                _ => Ok(()),
            },
        }
    }
}

/// How to parse a POST body of `content_type` that holds `body`; 415 for
/// a type we do not parse.
pub fn body_kind(content_type: Option<&str>, body: &[u8]) -> Result<BodyKind, ApiError> {
    let media = content_type
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase());
    match media.as_deref() {
        Some("application/json") => Ok(BodyKind::Json),
        Some("application/x-www-form-urlencoded") => {
            // `curl -d '{...}'` sends JSON with the form type; parsed as a
            // form it would silently mean nothing.
            if body.trim_ascii_start().first() == Some(&b'{') {
                Err(ApiError::UnsupportedMediaType(
                    "the body looks like JSON but is declared \
                     application/x-www-form-urlencoded; send Content-Type: application/json"
                        .into(),
                ))
            } else {
                Ok(BodyKind::Form)
            }
        }
        Some(other) => Err(ApiError::UnsupportedMediaType(format!(
            "unsupported Content-Type {other:?}: send application/json or \
             application/x-www-form-urlencoded"
        ))),
        None => Err(ApiError::UnsupportedMediaType(
            "a request body needs a Content-Type: application/json or \
             application/x-www-form-urlencoded"
                .into(),
        )),
    }
}

/// `HTTP://Host:80/` -> `http://host`: lower case, no trailing slash, no
/// default port.
fn normalize_origin(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if let Some(rest) = o.strip_prefix("http://") {
        format!("http://{}", rest.strip_suffix(":80").unwrap_or(rest))
    } else if let Some(rest) = o.strip_prefix("https://") {
        format!("https://{}", rest.strip_suffix(":443").unwrap_or(rest))
    } else {
        o
    }
}

/// A normalized origin names the server the `Host` header names.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else {
        return false; // "null" and anything else without a scheme
    };
    let host = host.to_ascii_lowercase();
    let host = match scheme {
        "http" => host.strip_suffix(":80").unwrap_or(&host),
        "https" => host.strip_suffix(":443").unwrap_or(&host),
        _ => return false,
    };
    !host.is_empty() && authority == host
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_without_scheme_case_or_default_port() {
        assert!(same_origin(
            &normalize_origin("http://127.0.0.1:8090"),
            "127.0.0.1:8090"
        ));
        assert!(same_origin(
            &normalize_origin("HTTP://LocalHost/"),
            "localhost:80"
        ));
        assert!(!same_origin(
            &normalize_origin("http://evil.example"),
            "127.0.0.1:8090"
        ));
        assert!(!same_origin(
            &normalize_origin("http://127.0.0.1:9999"),
            "127.0.0.1:8090"
        ));
        assert!(!same_origin(&normalize_origin("null"), "null"));
        assert!(!same_origin(&normalize_origin("http://x"), ""));
    }

    #[test]
    fn bodies_are_parsed_by_their_declared_type_only() {
        let json = br#"{"count": 1}"#;
        assert_eq!(
            body_kind(Some("application/json; charset=utf-8"), json).ok(),
            Some(BodyKind::Json)
        );
        assert_eq!(
            body_kind(Some("application/x-www-form-urlencoded"), b"count=1").ok(),
            Some(BodyKind::Form)
        );
        for ct in [
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            assert_eq!(
                body_kind(ct, json).map_err(|e| e.status()).err(),
                Some(415),
                "{ct:?}"
            );
        }
        assert_eq!(
            body_kind(Some("application/x-www-form-urlencoded"), json)
                .map_err(|e| e.status())
                .err(),
            Some(415)
        );
    }
}
