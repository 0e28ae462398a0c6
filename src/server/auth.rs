//! Bearer tokens: who may read and who may write.
//!
//! Two roles. `read` may load the page's data and call every read route;
//! `admin` may also write and control (bulk load, worker, reset, push).
//! The page itself and `/healthz` stay open: a load balancer probes
//! `/healthz`, and the page must load to ask for a token. A server given
//! no token is open, as before tokens existed.
//!
//! Tokens come from `--read-token` / `--admin-token` (fixed for the life of
//! the process) and from `--api-token-file`, which may hold several per
//! role so a token can be rotated without a restart: add the new one, move
//! the clients, remove the old one. A small thread stats the file once a
//! second and reads it again when it changed; a file that becomes
//! unreadable or invalid keeps the last good set (`event=tokens_kept`).
//!
//! Only SHA-256 digests of the tokens are kept, and a presented token is
//! hashed and compared with every known digest in constant time
//! (`subtle`): equal lengths, no early exit, so the time of a refusal says
//! nothing about how much of a token was right. No message, log line or
//! `Debug` output ever holds a token.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::errors::ApiError;
use super::routes::Endpoint;

/// Shorter tokens are refused at start: guessable.
pub const MIN_TOKEN_LEN: usize = 16;
/// How often the token file is looked at.
pub const FILE_CHECK_EVERY: Duration = Duration::from_secs(1);

/// A token as given on the command line or in the environment: its
/// `Debug` never shows it, so printing the parsed flags leaks nothing.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Secret, Self::Err> {
        Ok(Secret(s.to_owned()))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Read,
    Admin,
}

/// What a route asks of the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Open,
    Read,
    Admin,
}

impl Need {
    /// The role `endpoint` (accepting `method`) needs. The POSTs that only
    /// read are listed; any other POST, including one added later, needs
    /// admin, and any other GET (such as `/metrics`) needs read.
    pub fn of(endpoint: Endpoint, method: &str) -> Need {
        match endpoint {
            Endpoint::Page | Endpoint::Healthz | Endpoint::FeastHealth => Need::Open,
            Endpoint::Read
            | Endpoint::BatchRead
            | Endpoint::Features
            | Endpoint::FeastOnlineFeatures => Need::Read,
            _ if method == "GET" => Need::Read,
            _ => Need::Admin,
        }
    }
}

/// A set of tokens, each kept as its SHA-256 digest.
#[derive(Default, Clone)]
pub struct TokenSet {
    entries: Vec<(Role, [u8; 32])>,
}

impl TokenSet {
    /// Adds `token` for `role`; `what` names where it came from in the
    /// error (never the token itself).
    pub fn add(&mut self, role: Role, token: &str, what: &str) -> Result<(), String> {
        check_token(token).map_err(|why| format!("{what}: {why}"))?;
        let digest = sha256(token);
        let other = self
            .entries
            .iter()
            .find(|(_, d)| bool::from(d.ct_eq(&digest)));
        match other {
            Some((r, _)) if *r != role => Err(format!(
                "{what}: the same token is also given for the other role"
            )),
            Some(_) => Ok(()),
            None => {
                self.entries.push((role, digest));
                Ok(())
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// (read tokens, admin tokens)
    pub fn counts(&self) -> (usize, usize) {
        let admin = self
            .entries
            .iter()
            .filter(|(r, _)| *r == Role::Admin)
            .count();
        (self.entries.len() - admin, admin)
    }

    /// Parses a token file: one `read <token>` or `admin <token>` a line;
    /// blank lines and lines starting with `#` are skipped.
    pub fn parse_file(text: &str) -> Result<TokenSet, String> {
        let mut set = TokenSet::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let n = i + 1;
            let fields: Vec<&str> = line.split_whitespace().collect();
            let role = match fields.first().copied() {
                Some("read") => Role::Read,
                Some("admin") => Role::Admin,
                _ => {
                    return Err(format!(
                        "line {n}: expected `read <token>` or `admin <token>`"
                    ))
                }
            };
            match fields.len() {
                2 => set.add(role, fields[1], &format!("line {n}"))?,
                1 => return Err(format!("line {n}: no token after the role")),
                _ => {
                    return Err(format!(
                        "line {n}: more than one token (a token may not contain whitespace)"
                    ))
                }
            }
        }
        if set.is_empty() {
            return Err("no tokens in the file".into());
        }
        Ok(set)
    }

    /// The role of `digest`: every entry compared, in constant time.
    fn role_of(&self, digest: &[u8; 32]) -> Option<Role> {
        let (mut read, mut admin) = (Choice::from(0), Choice::from(0));
        for (role, known) in &self.entries {
            let hit = known.ct_eq(digest);
            match role {
                Role::Read => read |= hit,
                Role::Admin => admin |= hit,
            }
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(read) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// A token long enough, of visible ASCII only (it travels in a header).
fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".into());
    }
    if token.chars().any(char::is_whitespace) {
        return Err("the token contains whitespace".into());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token must be visible ASCII only".into());
    }
    if token.len() < MIN_TOKEN_LEN {
        return Err(format!(
            "the token is {} characters long; at least {MIN_TOKEN_LEN} are required",
            token.len()
        ));
    }
    Ok(())
}

fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// What identifies a version of the token file without reading it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = fs::metadata(path)?;
    #[cfg(unix)]
    let inode = std::os::unix::fs::MetadataExt::ino(&meta);
    #[cfg(not(unix))]
    let inode = 0;
    Ok(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode,
    })
}

/// The token file and the last good set read from it.
struct TokenFile {
    path: PathBuf,
    current: RwLock<Arc<TokenSet>>,
}

/// Who may call what: the server's tokens (none: open).
pub struct Auth {
    fixed: TokenSet,
    file: Option<TokenFile>,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("fixed", &self.fixed.counts())
            .field("file", &self.file.as_ref().map(|t| t.path.display()))
            .finish()
    }
}

impl Default for Auth {
    /// No tokens: every route open.
    fn default() -> Auth {
        Auth::open()
    }
}

impl Auth {
    pub fn open() -> Auth {
        Auth {
            fixed: TokenSet::default(),
            file: None,
        }
    }

    /// From the flags: each token checked (length, whitespace), the file
    /// read and parsed. The error names the flag or the file's line.
    pub fn new(
        read: Option<&str>,
        admin: Option<&str>,
        file: Option<&Path>,
    ) -> Result<Auth, String> {
        let mut fixed = TokenSet::default();
        if let Some(t) = read {
            fixed.add(Role::Read, t, "--read-token (FS_READ_TOKEN)")?;
        }
        if let Some(t) = admin {
            fixed.add(Role::Admin, t, "--admin-token (FS_ADMIN_TOKEN)")?;
        }
        let file = match file {
            None => None,
            Some(path) => {
                let set = read_file(path)?;
                Some(TokenFile {
                    path: path.to_owned(),
                    current: RwLock::new(Arc::new(set)),
                })
            }
        };
        Ok(Auth { fixed, file })
    }

    /// Any token configured: requests must carry one.
    pub fn enabled(&self) -> bool {
        !self.fixed.is_empty() || self.file.is_some()
    }

    /// One line for the start-up banner (counts only).
    pub fn describe(&self) -> String {
        if !self.enabled() {
            return "none (every route open)".into();
        }
        let (mut read, mut admin) = self.fixed.counts();
        if let Some(f) = &self.file {
            let (r, a) = f.current().counts();
            read += r;
            admin += a;
        }
        let from_file = self
            .file
            .as_ref()
            .map(|f| format!(", file {} re-read when it changes", f.path.display()))
            .unwrap_or_default();
        format!("bearer tokens: {read} read, {admin} admin{from_file}")
    }

    /// Ok when a request with this `Authorization` header may call a route
    /// needing `need`: 401 without a known token, 403 for a read token on
    /// an admin route.
    pub fn check(&self, need: Need, authorization: Option<&str>) -> Result<(), ApiError> {
        if need == Need::Open || !self.enabled() {
            return Ok(());
        }
        let Some(token) = authorization.and_then(bearer) else {
            return Err(ApiError::Unauthorized(
                "a bearer token is required (Authorization: Bearer <token>)".into(),
            ));
        };
        let digest = sha256(token);
        let from_file = self
            .file
            .as_ref()
            .and_then(|f| f.current().role_of(&digest));
        let role = match (self.fixed.role_of(&digest), from_file) {
            (Some(Role::Admin), _) | (_, Some(Role::Admin)) => Role::Admin,
            (Some(Role::Read), _) | (_, Some(Role::Read)) => Role::Read,
            (None, None) => {
                return Err(ApiError::Unauthorized(
                    "a bearer token is required: the one sent is not accepted".into(),
                ))
            }
        };
        match (need, role) {
            (Need::Admin, Role::Read) => Err(ApiError::Forbidden(
                "this token may not write: an admin token is required".into(),
            )),
            _ => Ok(()),
        }
    }

    /// Starts the thread that re-reads the token file when it changes; it
    /// ends when the last handle to `auth` is dropped. No file: nothing.
    pub fn watch_file(auth: &Arc<Auth>) {
        let Some(file) = &auth.file else { return };
        let weak: Weak<Auth> = Arc::downgrade(auth);
        let mut seen = stamp(&file.path).ok();
        std::thread::spawn(move || loop {
            std::thread::sleep(FILE_CHECK_EVERY);
            let Some(auth) = weak.upgrade() else { return };
            if let Some(file) = &auth.file {
                file.check_for_change(&mut seen);
            }
        });
    }
}

impl TokenFile {
    fn current(&self) -> Arc<TokenSet> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Re-reads the file when its stamp moved since `seen`; a stat or parse
    /// failure is said once (until the file changes again).
    fn check_for_change(&self, seen: &mut Option<Stamp>) {
        let now = stamp(&self.path).ok();
        if now == *seen {
            return;
        }
        *seen = now;
        let path = self.path.display();
        match read_file(&self.path) {
            Ok(set) => {
                let (read, admin) = set.counts();
                match self.current.write() {
                    Ok(mut g) => *g = Arc::new(set),
                    Err(p) => *p.into_inner() = Arc::new(set),
                }
                log::info!(
                    "event=tokens_reloaded file={} read={read} admin={admin}",
                    crate::logging::value(path)
                );
            }
            Err(e) => {
                let (read, admin) = self.current().counts();
                log::warn!(
                    "event=tokens_kept cause={} read={read} admin={admin}",
                    crate::logging::value(format!("{e}; keeping the last good tokens"))
                );
            }
        }
    }
}

fn read_file(path: &Path) -> Result<TokenSet, String> {
    let shown = path.display();
    let text =
        fs::read_to_string(path).map_err(|e| format!("token file {shown}: cannot read it: {e}"))?;
    TokenSet::parse_file(&text).map_err(|e| format!("token file {shown}: {e}"))
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ')?;
    let token = rest.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Refuses to serve a non-loopback `host` without tokens unless the
/// operator said so with `--insecure-no-auth`: anyone who reaches the
/// port could otherwise reset the store.
pub fn check_bind(host: &str, auth: &Auth, insecure_no_auth: bool) -> Result<(), String> {
    if auth.enabled() || insecure_no_auth || is_loopback(host) {
        return Ok(());
    }
    Err(format!(
        "refusing to listen on {host} (not loopback) without tokens: anyone who reaches \
         the port could write and reset the store. Give tokens (--read-token, --admin-token \
         or --api-token-file), or pass --insecure-no-auth to serve it open anyway"
    ))
}

/// Every address `host` names is a loopback one. A name that does not
/// resolve counts as not loopback (the bind then reports it).
fn is_loopback(host: &str) -> bool {
    use std::net::ToSocketAddrs;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match (host, 0).to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: &str = "read-token-0123456789";
    const ADMIN: &str = "admin-token-0123456789";

    #[test]
    fn every_route_needs_the_role_its_kind_asks() {
        use Endpoint::*;
        for (e, m, need) in [
            (Page, "GET", Need::Open),
            (Healthz, "GET", Need::Open),
            (State, "GET", Need::Read),
            (Inspect, "GET", Need::Read),
            (Registry, "GET", Need::Read),
            (Read, "POST", Need::Read),
            (BatchRead, "POST", Need::Read),
            (Features, "POST", Need::Read),
            (BulkLoad, "POST", Need::Admin),
            (Toggle, "POST", Need::Admin),
            (Reset, "POST", Need::Admin),
            (Push, "POST", Need::Admin),
        ] {
            assert_eq!(Need::of(e, m), need, "{e:?}");
        }
    }

    #[test]
    fn a_token_file_is_parsed_line_by_line() {
        let set = TokenSet::parse_file(&format!(
            "# rotated 2026-12-01\n\nread {READ}\n  admin {ADMIN}  \nread {READ}x\n"
        ))
        .expect("a valid token file");
        assert_eq!(set.counts(), (2, 1));
        for (text, says) in [
            ("write abcdefghijklmnopq", "line 1: expected"),
            ("read", "line 1: no token"),
            ("read abcdefgh ijklmnopq", "more than one token"),
            ("read short", "at least 16"),
            ("# nothing\n", "no tokens"),
        ] {
            let Err(e) = TokenSet::parse_file(text) else {
                panic!("{text:?} is refused");
            };
            assert!(e.contains(says), "{text:?}: {e}");
            assert!(!e.contains("abcdefgh"), "the error echoes a token: {e}");
        }
    }

    #[test]
    fn the_role_decides_401_403_or_ok() {
        let auth = Auth::new(Some(READ), Some(ADMIN), None).expect("two valid tokens");
        let status = |need, h: Option<&str>| auth.check(need, h).map_err(|e| e.status()).err();
        let (read, admin) = (format!("Bearer {READ}"), format!("bearer {ADMIN}"));
        assert_eq!(status(Need::Read, None), Some(401));
        assert_eq!(status(Need::Read, Some("Basic abc")), Some(401));
        assert_eq!(status(Need::Read, Some(&read)), None);
        assert_eq!(status(Need::Admin, Some(&read)), Some(403));
        assert_eq!(status(Need::Admin, Some(&admin)), None);
        assert_eq!(status(Need::Open, None), None);
        assert_eq!(Auth::open().check(Need::Admin, None).ok(), Some(()));
    }

    #[test]
    fn the_same_token_for_both_roles_is_refused() {
        let Err(e) = Auth::new(Some(READ), Some(READ), None) else {
            panic!("one token in two roles is refused");
        };
        assert!(e.contains("other role") && !e.contains(READ), "{e}");
    }

    #[test]
    fn debug_output_never_shows_a_token() {
        let auth = Auth::new(Some(READ), Some(ADMIN), None).expect("two valid tokens");
        let shown = format!("{auth:?} {:?}", Secret(READ.into()));
        assert!(!shown.contains(READ) && !shown.contains(ADMIN), "{shown}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

        /// Whatever the header, only a known token gets through.
        #[test]
        fn no_header_but_a_known_token_passes(h in "(Bearer |bearer |Basic )?[ -~]{0,60}") {
            let auth = Auth::new(Some(READ), Some(ADMIN), None).expect("two valid tokens");
            let known = bearer(&h).is_some_and(|t| t == READ || t == ADMIN);
            proptest::prop_assert_eq!(auth.check(Need::Read, Some(&h)).is_ok(), known);
        }

        /// A token one byte off, anywhere, is refused.
        #[test]
        fn a_token_one_byte_off_is_refused(i in 0..ADMIN.len(), b in 0x21u8..0x7f) {
            let auth = Auth::new(Some(READ), Some(ADMIN), None).expect("two valid tokens");
            let mut t = ADMIN.as_bytes().to_vec();
            proptest::prop_assume!(t[i] != b);
            t[i] = b;
            let t = String::from_utf8(t).expect("generated as ASCII");
            let got = auth.check(Need::Read, Some(&format!("Bearer {t}")));
            proptest::prop_assert_eq!(got.map_err(|e| e.status()).err(), Some(401));
        }

        /// Any file text parses or is refused naming a line, never with a
        /// token in the message (the tokens here are upper case, which no
        /// message is).
        #[test]
        fn a_token_file_error_never_holds_a_token(lines in proptest::collection::vec(
            ("(read|admin|write|#|)", "[ \t]{0,2}", "[A-Z][A-Z0-9]{3,23}", "( [A-Z][A-Z0-9]{3,9})?"), 0..6)) {
            let text: Vec<String> = lines.iter().map(|(r, sp, t, more)| format!("{r}{sp}{t}{more}")).collect();
            if let Err(e) = TokenSet::parse_file(&text.join("\n")) {
                for (_, _, t, more) in &lines {
                    proptest::prop_assert!(!e.contains(t.as_str()), "{e} holds {t}");
                    proptest::prop_assert!(more.is_empty() || !e.contains(more.trim()), "{e} holds {more}");
                }
            }
        }
    }

    #[test]
    fn only_loopback_hosts_may_serve_without_tokens() {
        let open = Auth::open();
        for host in ["127.0.0.1", "localhost", "::1", "[::1]"] {
            assert!(check_bind(host, &open, false).is_ok(), "{host}");
        }
        let e = check_bind("0.0.0.0", &open, false).expect_err("an open server on all interfaces");
        assert!(e.contains("--insecure-no-auth") && e.contains("--api-token-file"));
        assert!(check_bind("0.0.0.0", &open, true).is_ok());
        let auth = Auth::new(Some(READ), None, None).expect("a valid token");
        assert!(check_bind("0.0.0.0", &auth, false).is_ok());
    }
}
