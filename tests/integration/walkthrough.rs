//! The README's "Your own features" walkthrough, run as written: its loader
//! command on its example files, its server flags, its two curl bodies,
//! and the values and statuses it shows.

use std::process::Command;

use serde_json::Value;

use crate::common;
use crate::server::Server;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");
/// The walkthrough's own Redis; the test swaps in its throwaway one.
const README_URL: &str = "redis://127.0.0.1:6390";

fn section() -> String {
    let readme = std::fs::read_to_string(format!("{MANIFEST}/README.md")).expect("README.md");
    let start = readme
        .find("## Your own features")
        .expect("the walkthrough section");
    let rest = &readme[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3);
    rest[..end].to_owned()
}

/// The arguments of the indented command line starting with `program `.
fn command_args(section: &str, program: &str) -> Vec<String> {
    let line = section
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(program))
        .unwrap_or_else(|| panic!("no `{program}` line in the walkthrough"));
    line[program.len()..]
        .split_whitespace()
        .filter(|a| *a != "&")
        .map(String::from)
        .collect()
}

/// `(path, body)` of each `curl ... localhost:8090<path> ... -d '<body>'`.
fn curls(section: &str) -> Vec<(String, Value)> {
    section
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("curl "))
        .map(|l| {
            let path = l
                .split_whitespace()
                .find_map(|w| w.strip_prefix("localhost:8090"))
                .expect("a localhost:8090 URL");
            let body = l.split("-d '").nth(1).and_then(|b| b.strip_suffix('\''));
            let body = serde_json::from_str(body.expect("a -d body")).expect("JSON body");
            (path.to_owned(), body)
        })
        .collect()
}

/// The JSON after `"<name>": ` on the section's line that shows it.
fn shown(section: &str, name: &str) -> Value {
    let prefix = format!("\"{name}\": ");
    let line = section
        .lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("the walkthrough shows no {name}"));
    serde_json::from_str(line).expect("the shown JSON")
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let section = section();
    let redis = common::standalone_redis();
    let url = redis.url();
    let swap = |args: Vec<String>| -> Vec<String> {
        args.into_iter()
            .map(|a| if a == README_URL { url.clone() } else { a })
            .collect()
    };

    let out = Command::new(env!("CARGO_BIN_EXE_fs-loader"))
        .current_dir(MANIFEST)
        .args(swap(command_args(&section, "target/release/fs-loader ")))
        .output()
        .expect("running fs-loader");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    for line in ["written: 2", "rejected: 1"] {
        assert!(stdout.lines().any(|l| l == line), "{line}: {stdout}");
    }
    assert!(
        stderr.contains(r#"column "country": expected one of ["US", "GB", "DE", "FR"], got "XX""#),
        "{stderr}"
    );

    // The server's flags as the walkthrough gives them, the registry path
    // made absolute (the test's server does not run in the repository).
    let mut flags = swap(command_args(&section, "target/release/fs-server "));
    for f in flags.iter_mut().filter(|f| f.starts_with("examples/")) {
        *f = format!("{MANIFEST}/{f}");
    }
    let start = flags.iter().position(|f| f == &url).map_or(0, |i| i + 1);
    let extra: Vec<&str> = flags[start..].iter().map(String::as_str).collect();
    let server = Server::start(&url, &extra);

    let calls = curls(&section);
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (status, push) = server.post_json(&calls[0].0, &calls[0].1);
    assert_eq!(status, 200, "{push}");
    assert_eq!(push["written"], 1, "{push}");
    let (status, vectors) = server.post_json(&calls[1].0, &calls[1].1);
    assert_eq!(status, 200, "{vectors}");
    assert_eq!(vectors["values"], shown(&section, "values"), "{vectors}");
    assert_eq!(vectors["status"], shown(&section, "status"), "{vectors}");
}
