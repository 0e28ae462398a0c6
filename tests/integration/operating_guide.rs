//! docs/operating.md stays true: its flags table lists every flag the
//! binaries' `--help` shows, with the environment variable `--help` names.

use std::collections::BTreeSet;
use std::process::Command;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// `(flag, env)` for every long flag a `--help` lists (but help/version).
fn help_flags(bin: &str, args: &[&str]) -> BTreeSet<(String, Option<String>)> {
    let out = Command::new(bin)
        .args(args)
        .arg("--help")
        .output()
        .expect("running --help");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut flags = BTreeSet::new();
    let mut current: Option<(String, Option<String>)> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let flag_line = trimmed.starts_with("--")
            || trimmed.starts_with('-') && trimmed[2..].starts_with(", --");
        if flag_line {
            if let Some(f) = current.take() {
                flags.insert(f);
            }
            let name = trimmed
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .expect("a long flag")
                .trim_end_matches(',')
                .to_owned();
            current = Some((name, None));
        } else if let (Some((_, env)), Some(at)) = (current.as_mut(), trimmed.find("[env: ")) {
            let rest = &trimmed[at + 6..];
            let end = rest.find(['=', ']']).unwrap_or(rest.len());
            *env = Some(rest[..end].to_owned());
        }
    }
    flags.extend(current);
    flags.retain(|(f, _)| f != "--help" && f != "--version");
    flags
}

#[test]
fn the_operating_guide_lists_every_flag_with_its_variable() {
    let guide = std::fs::read_to_string(format!("{MANIFEST}/docs/operating.md")).expect("guide");
    let rows: Vec<&str> = guide.lines().filter(|l| l.starts_with("| `--")).collect();
    let mut all = help_flags(env!("CARGO_BIN_EXE_fs-server"), &[]);
    all.extend(help_flags(env!("CARGO_BIN_EXE_fs-loader"), &[]));
    all.extend(help_flags(env!("CARGO_BIN_EXE_fs-loader"), &["stream"]));
    assert!(all.len() > 40, "too few flags parsed: {all:?}");
    let mut missing = Vec::new();
    for (flag, env) in &all {
        let row = rows.iter().find(|r| {
            r.strip_prefix("| `")
                .and_then(|r| r.split(['`', ' ']).next())
                .is_some_and(|f| f == flag)
        });
        match (row, env) {
            (None, _) => missing.push(format!("{flag}: no row")),
            (Some(r), Some(env)) if !r.contains(&format!("`{env}`")) => {
                missing.push(format!("{flag}: the row does not name {env}"))
            }
            _ => {}
        }
    }
    assert!(
        missing.is_empty(),
        "docs/operating.md's flags table: {missing:#?}"
    );
}
