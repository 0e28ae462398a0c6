//! The real `fs-loader` with `--registry`: rows checked against a view of
//! the two-entity registry (unknown columns and mistyped values rejected
//! per row, with the reason in --failures), values stored in canonical
//! form under the view's entity's prefix with the view's TTL, the view
//! inferred from the columns, stream views, and what is refused up front.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use feature_store::registry::Registry;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use redis::Commands;

use crate::common::{self, raw, wait_until};
use crate::loader::{
    assert_accounted, count, failure_rows, hash, loader_cmd, run, run_with_stdin, show, summary,
    write_file,
};
use crate::registry::TWO_ENTITIES;

/// `TWO_ENTITIES` in a file of `dir`.
fn registry_file(dir: &Path) -> PathBuf {
    write_file(dir, "features.toml", TWO_ENTITIES)
}

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn dbsize(conn: &mut impl redis::ConnectionLike) -> u64 {
    redis::cmd("DBSIZE").query(conn).expect("DBSIZE")
}

fn map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// (id, reason) of each failures row, in file order.
fn reasons(path: &Path) -> Vec<(String, String)> {
    failure_rows(path)
        .into_iter()
        .map(|r| (r[2].clone(), r[4].clone()))
        .collect()
}

#[test]
fn registry_csv_rows_are_typed_canonical_and_bad_ones_rejected_with_the_column() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_file(dir.path());
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,country_iso,age_days,avg_amount,verified,nickname,embedding\n\
         u1,GB,120,1.50,True,ann,\"[1, 2.50, -3, 4e0]\"\n\
         u2,FR,5,1,true,bob,\"[1,2,3,4]\"\n\
         u3,US,abc,1,true,cy,\"[1,2,3,4]\"\n\
         u4,US,7,2,yes,dd,\"[1,2,3,4]\"\n\
         u5,US,7,2,false,ee,\"[1,2,3]\"\n\
         u6,DE,,0.25,0,,\"[0,0,0,0]\"\n",
    );
    let failures = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--view",
            "user_profile",
            "--from",
            p(&csv),
            "--failures",
            p(&failures),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (
            count(&s, "read"),
            count(&s, "written"),
            count(&s, "rejected")
        ),
        (6, 2, 4),
        "{s:?}"
    );

    let mut conn = raw(&redis);
    // Canonical text: 1.50 -> 1.5, True -> true, the vector without spaces.
    assert_eq!(
        hash(&mut conn, "fs:user:u1"),
        map(&[
            ("country_iso", "GB"),
            ("age_days", "120"),
            ("avg_amount", "1.5"),
            ("verified", "true"),
            ("nickname", "ann"),
            ("embedding", "[1,2.5,-3,4]"),
        ])
    );
    // Empty cells keep their meaning: nothing is stored for them.
    assert_eq!(
        hash(&mut conn, "fs:user:u6"),
        map(&[
            ("country_iso", "DE"),
            ("avg_amount", "0.25"),
            ("verified", "false"),
            ("embedding", "[0,0,0,0]"),
        ])
    );
    assert_eq!(dbsize(&mut conn), 2, "only the good rows are written");
    let ttl: i64 = conn.ttl("fs:user:u1").expect("TTL");
    assert!(
        (86_390..=86_400).contains(&ttl),
        "the view's TTL, got {ttl}"
    );

    let got = reasons(&failures);
    let ids: Vec<&str> = got.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, ["u2", "u3", "u4", "u5"], "{got:?}");
    let expect = [
        "column \"country_iso\": expected one of",
        "column \"age_days\": expected int, got \"abc\"",
        "column \"verified\": expected bool, got \"yes\"",
        "column \"embedding\": expected float_vector[4]",
    ];
    for ((_, reason), want) in got.iter().zip(expect) {
        assert!(reason.contains(want), "{reason:?} lacks {want:?}");
    }
}

#[test]
fn registry_json_lines_must_hold_the_declared_json_types() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_file(dir.path());
    // The merchant view is inferred from the first row's features.
    let merchants = write_file(
        dir.path(),
        "merchants.jsonl",
        r#"{"id": "m_1", "features": {"mcc": "5411", "chargeback_rate": 0.0100}}
{"id": "m_2", "features": {"mcc": 5411}}
{"id": "m.3", "features": {"mcc": "5812"}}
{"id": "m_4", "features": {"mcc": "7995", "chargeback_rate": null}}
{"id": "m_5", "features": {"mcc": "5812", "zip": "x"}}
"#,
    );
    let failures = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--from",
            p(&merchants),
            "--failures",
            p(&failures),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (count(&s, "written"), count(&s, "rejected")),
        (2, 3),
        "{s:?}"
    );
    let mut conn = raw(&redis);
    assert_eq!(
        hash(&mut conn, "fs:merchant:m_1"),
        map(&[("mcc", "5411"), ("chargeback_rate", "0.01")])
    );
    assert_eq!(hash(&mut conn, "fs:merchant:m_4"), map(&[("mcc", "7995")]));
    let ttl: i64 = conn.ttl("fs:merchant:m_1").expect("TTL");
    assert!(
        (604_790..=604_800).contains(&ttl),
        "the view's TTL, got {ttl}"
    );
    let got = reasons(&failures);
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0]
            .1
            .contains("column \"mcc\": expected category, got the number 5411"),
        "{got:?}"
    );
    assert!(
        got[1].1.contains("merchant id \"m.3\" contains '.'"),
        "{got:?}"
    );
    assert!(
        got[2]
            .1
            .contains("unknown feature \"zip\" in view \"merchant_profile\""),
        "{got:?}"
    );

    // Users through standard input, so the view is named.
    let out = run_with_stdin(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--view",
            "user_profile",
            "--from",
            "-",
        ],
        r#"{"id": "u1", "features": {"age_days": "5"}}
{"id": "u2", "features": {"age_days": 7, "avg_amount": 2, "verified": true, "embedding": [0.5, 1, 2, 3]}}
{"id": "u3", "features": {"embedding": [1, 2, 3, 4, 5]}}
"#,
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(
        (count(&s, "written"), count(&s, "rejected")),
        (1, 2),
        "{s:?}"
    );
    assert_eq!(
        hash(&mut conn, "fs:user:u2"),
        map(&[
            ("age_days", "7"),
            ("avg_amount", "2"),
            ("verified", "true"),
            ("embedding", "[0.5,1,2,3]"),
        ])
    );
    let err = stderr(&out);
    assert!(
        err.contains("column \"age_days\": expected int, got the string \"5\""),
        "{err}"
    );
    assert!(
        err.contains("column \"embedding\": expected float_vector[4], got an array of 5"),
        "{err}"
    );
    assert!(!conn.exists::<_, bool>("fs:user:u1").expect("EXISTS"));
}

/// `TWO_ENTITIES` plus a merchant view sharing the user view's `nickname`,
/// so a `nickname`-only input fits two views.
fn ambiguous_registry(dir: &Path) -> PathBuf {
    let text = format!(
        "{TWO_ENTITIES}\n[[view]]\nname = \"merchant_notes\"\nentity = \"merchant\"\n\
         kind = \"batch\"\nttl_seconds = 60\n\n[[view.feature]]\nname = \"nickname\"\n\
         type = \"string\"\n"
    );
    write_file(dir, "ambiguous.toml", &text)
}

#[test]
fn the_view_is_inferred_from_the_columns_and_none_or_several_are_refused_by_name() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = ambiguous_registry(dir.path());
    let mut conn = raw(&redis);
    let load = |name: &str, text: &str| {
        let path = write_file(dir.path(), name, text);
        run(&redis, &["--registry", p(&registry), "--from", p(&path)])
    };

    // One view fits: written under its entity's prefix.
    let out = load("one.csv", "id,nickname,age_days\nu1,ann,3\n");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        hash(&mut conn, "fs:user:u1"),
        map(&[("nickname", "ann"), ("age_days", "3")])
    );

    // None fits: each view's missing columns are named; nothing written.
    let out = load("none.csv", "id,mcc,age_days\nm_1,5411,3\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("no view of the registry has every column of the input (age_days, mcc)"),
        "{err}"
    );
    assert!(err.contains("user_profile lacks mcc"), "{err}");
    assert!(err.contains("merchant_profile lacks age_days"), "{err}");

    // Several fit: the candidates are listed.
    let out = load("several.csv", "id,nickname\nm_1,shop\n");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("fit several views: user_profile, merchant_notes; choose one with --view"),
        "{err}"
    );

    // ... and --view settles it.
    let several = dir.path().join("several.csv");
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--view",
            "merchant_notes",
            "--from",
            p(&several),
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(
        hash(&mut conn, "fs:merchant:m_1"),
        map(&[("nickname", "shop")])
    );

    // Standard input cannot be looked at ahead: --view is required (and
    // the refusal comes before anything is read from it).
    let out = run(&redis, &["--registry", p(&registry), "--from", "-"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr(&out).contains("give --view NAME"), "{}", show(&out));
    assert_eq!(dbsize(&mut conn), 2);

    // Nor can a named pipe: refused at once, not blocked on its writer.
    let fifo = dir.path().join("feed.csv");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let mut child = loader_cmd(&redis)
        .args(["--registry", p(&registry), "--from", p(&fifo)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");
    let mut status = None;
    let waited = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_until(
            "the loader refuses the pipe",
            Duration::from_secs(10),
            || {
                status = child.try_wait().expect("try_wait");
                status.is_some()
            },
        )
    }));
    if waited.is_err() {
        let _ = child.kill();
        panic!("fs-loader blocked on the pipe");
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(stderr(&out).contains("give --view NAME"), "{}", show(&out));
}

#[test]
fn stream_mode_writes_a_stream_view_with_its_ttl_on_every_field() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_file(dir.path());
    let events = write_file(
        dir.path(),
        "events.jsonl",
        r#"{"id": "u1", "features": {"tx_count_5m": 3, "last_device": "ios"}}
{"id": "u2", "features": {"tx_count_5m": 1.5}}
"#,
    );
    let failures = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "stream",
            "--registry",
            p(&registry),
            "--from",
            p(&events),
            "--failures",
            p(&failures),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (count(&s, "written"), count(&s, "rejected")),
        (1, 1),
        "{s:?}"
    );
    let mut conn = raw(&redis);
    assert_eq!(
        hash(&mut conn, "fs:user:u1"),
        map(&[("tx_count_5m", "3"), ("last_device", "ios")])
    );
    let ttls: Vec<i64> = redis::cmd("HTTL")
        .arg("fs:user:u1")
        .arg("FIELDS")
        .arg(2)
        .arg("tx_count_5m")
        .arg("last_device")
        .query(&mut conn)
        .expect("HTTL");
    assert!(
        ttls.iter().all(|t| (290..=300).contains(t)),
        "user_activity's 300 s on every field, got {ttls:?}"
    );
    assert!(
        reasons(&failures)[0]
            .1
            .contains("column \"tx_count_5m\": expected int, got the number 1.5"),
        "{:?}",
        reasons(&failures)
    );

    // A batch view is not written as streaming updates, nor the reverse.
    let out = run(
        &redis,
        &[
            "stream",
            "--registry",
            p(&registry),
            "--view",
            "user_profile",
            "--from",
            p(&events),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("view \"user_profile\" is a batch view"),
        "{}",
        show(&out)
    );
    let out = run(&redis, &["--registry", p(&registry), "--from", p(&events)]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out)
            .contains("view \"user_activity\" is a stream view: load it with `fs-loader stream`"),
        "{}",
        show(&out)
    );
    assert_eq!(dbsize(&mut conn), 1);
}

#[test]
fn a_key_prefix_that_disagrees_with_the_registry_is_refused_before_writing() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_file(dir.path());
    let csv = write_file(dir.path(), "m.csv", "id,mcc\nm_1,5411\n");
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--key-prefix",
            "fs:user:",
            "--from",
            p(&csv),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let err = stderr(&out);
    assert!(
        err.contains("--key-prefix \"fs:user:\" disagrees with the registry")
            && err.contains("\"fs:merchant:\""),
        "{err}"
    );
    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), 0);
    // The same prefix the registry gives is fine (and so is the env's).
    let out = loader_cmd(&redis)
        .env("FS_KEY_PREFIX", "fs:merchant:")
        .args(["--registry", p(&registry), "--from", p(&csv)])
        .output()
        .expect("running fs-loader");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(hash(&mut conn, "fs:merchant:m_1"), map(&[("mcc", "5411")]));
}

#[test]
fn synthetic_users_load_only_into_the_demos_view() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = registry_file(dir.path());
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--view",
            "user_profile",
            "--count",
            "5",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("--count writes the demo's synthetic users"),
        "{}",
        show(&out)
    );
    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), 0);

    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/demo.toml");
    let out = run(&redis, &["--registry", demo, "--count", "20"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(dbsize(&mut conn), 20);
    // Every value the generator wrote is of its declared type.
    let registry = Registry::load(Path::new(demo)).expect("the demo registry");
    let view = registry
        .view("user_profile")
        .expect("the demo's batch view");
    for (field, value) in hash(&mut conn, "fs:user:u0001") {
        let def = view.feature(&field).expect("a declared feature");
        assert!(
            def.ty.parse_stored(value.as_bytes()).is_ok(),
            "{field}={value}"
        );
    }

    let out = run(&redis, &["--view", "user_profile", "--count", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        stderr(&out).contains("--view needs --registry"),
        "{}",
        show(&out)
    );
}

/// A cell: often of a type's shape (so rows do get written), often junk.
fn cell() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "-?[0-9]{1,20}",
        "-?[0-9]{0,4}\\.[0-9]{0,4}(e-?[0-9]{1,3})?",
        "(true|false|True|FALSE|yes|1|0|no)",
        "(US|GB|DE|FR|us| US)",
        "\\[[-0-9., e]{0,24}\\]",
        "(NaN|inf|-inf|1e999)",
        ".{0,12}",
    ]
}

/// One cell per column of `user_profile`: mostly of the column's type (so
/// whole rows do pass), else any cell.
fn typed_cells() -> impl Strategy<Value = Vec<String>> {
    let float = prop::num::f64::NORMAL | prop::num::f64::ZERO;
    let valid: [BoxedStrategy<String>; 6] = [
        "(US|GB|DE)".boxed(),
        any::<i64>().prop_map(|i| i.to_string()).boxed(),
        float.prop_map(|x| format!("{x:.3}")).boxed(),
        "(true|false|True|FALSE|0|1)".boxed(),
        ".{0,12}".boxed(),
        prop::collection::vec(float, 4)
            .prop_map(|v| format!("[{}, {}, {}, {}]", v[0], v[1], v[2], v[3]))
            .boxed(),
    ];
    valid
        .into_iter()
        .map(|v| prop_oneof![8 => v, 2 => cell()].boxed())
        .collect::<Vec<_>>()
}

#[test]
fn random_cells_never_crash_the_loader_nor_store_a_value_not_of_its_type() {
    const COLUMNS: [&str; 6] = [
        "country_iso",
        "age_days",
        "avg_amount",
        "verified",
        "nickname",
        "embedding",
    ];
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry_path = registry_file(dir.path());
    let registry = Registry::parse(TWO_ENTITIES, "two").expect("parses");
    let view = registry.view("user_profile").expect("view").clone();
    let rows = prop::collection::vec(typed_cells(), 1..12);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    // Over all cases, rows were both written and rejected: the oracle was
    // put to work on both sides.
    let (written, rejected) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    let result = runner.run(&rows, |rows| {
        let mut conn = raw(&redis);
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let path = dir.path().join("random.csv");
        let mut w = csv::Writer::from_path(&path).expect("csv writer");
        let mut header = vec!["id"];
        header.extend(COLUMNS);
        w.write_record(&header).expect("header");
        // The oracle: a row is written iff every cell is empty or of its
        // type; what is stored is the value's canonical text.
        let mut expected: BTreeMap<String, Option<HashMap<String, String>>> = BTreeMap::new();
        for (i, cells) in rows.iter().enumerate() {
            let id = format!("u{i}");
            let mut record = vec![id.clone()];
            record.extend(cells.iter().cloned());
            w.write_record(&record).expect("row");
            let mut stored = HashMap::new();
            let mut ok = true;
            for (name, text) in COLUMNS.iter().zip(cells) {
                if text.is_empty() {
                    continue;
                }
                let ty = &view.feature(name).expect("declared").ty;
                match ty.parse_text(text) {
                    Ok(v) => {
                        stored.insert((*name).to_owned(), v.encode());
                    }
                    Err(_) => ok = false,
                }
            }
            expected.insert(id, ok.then_some(stored));
        }
        w.flush().expect("flush");
        drop(w);
        let out = run(
            &redis,
            &[
                "--registry",
                p(&registry_path),
                "--view",
                "user_profile",
                "--from",
                p(&path),
            ],
        );
        let code = out.status.code();
        prop_assert!(code == Some(0) || code == Some(1), "{}", show(&out));
        let s = summary(&out);
        let good = expected.values().filter(|e| e.is_some()).count() as u64;
        prop_assert_eq!(count(&s, "read"), rows.len() as u64, "{}", show(&out));
        prop_assert_eq!(count(&s, "written"), good, "{}", show(&out));
        prop_assert_eq!(count(&s, "rejected"), rows.len() as u64 - good);
        written.set(written.get() + good);
        rejected.set(rejected.get() + rows.len() as u64 - good);
        for (id, want) in &expected {
            let got = hash(&mut conn, &format!("fs:user:{id}"));
            for (field, value) in &got {
                let def = view.feature(field).expect("only declared features");
                prop_assert!(
                    def.ty.parse_stored(value.as_bytes()).is_ok(),
                    "{id}.{field} = {value:?} is not a {}",
                    def.ty.name()
                );
            }
            let want = want.clone().unwrap_or_default();
            prop_assert_eq!(&got, &want, "{}", id);
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        written.get() > 0 && rejected.get() > 0,
        "written {}, rejected {}",
        written.get(),
        rejected.get()
    );
}

/// The indented block after the line of `section` containing `marker`,
/// dedented.
fn block_after<'a>(section: &'a str, marker: &str) -> Vec<&'a str> {
    let mut lines = section.lines().skip_while(|l| !l.contains(marker)).skip(1);
    let mut block = Vec::new();
    for line in lines.by_ref() {
        if let Some(code) = line.strip_prefix("    ") {
            block.push(code);
        } else if !block.is_empty() && !line.trim().is_empty() {
            break;
        }
    }
    assert!(!block.is_empty(), "no block after {marker:?}");
    block
}

#[test]
fn the_readme_registry_example_loads_as_documented() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("### Loading against a registry")
        .expect("the README's registry section");
    let section = &readme[start..];
    let section = &section[..section.find("\n### Sharing").unwrap_or(section.len())];
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = block_after(section, "with this `features.toml`").join("\n");
    write_file(dir.path(), "features.toml", &toml);
    write_file(
        dir.path(),
        "users.csv",
        &(block_after(section, "and this `users.csv`").join("\n") + "\n"),
    );
    let transcript = block_after(section, "two rows are written");

    let redis = common::redis();
    let command = transcript[0]
        .strip_prefix("$ target/release/fs-loader ")
        .expect("the loader command first");
    let out = loader_cmd(&redis)
        .current_dir(dir.path())
        .args(command.split_whitespace())
        .output()
        .expect("running fs-loader");
    assert_eq!(out.status.code(), Some(1), "exit status 1: {}", show(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut i = 1;
    while transcript[i] != "..." {
        assert!(
            stdout.lines().any(|l| l == transcript[i]),
            "{:?} in {stdout}",
            transcript[i]
        );
        i += 1;
    }
    let mut conn = raw(&redis);
    for (n, line) in transcript.iter().enumerate().skip(i + 1) {
        let Some(cmd) = line.strip_prefix("$ ") else {
            continue;
        };
        let answer: Vec<&str> = transcript[n + 1..]
            .iter()
            .take_while(|l| !l.starts_with("$ "))
            .copied()
            .collect();
        let words: Vec<&str> = cmd
            .split('#')
            .next()
            .unwrap_or("")
            .split_whitespace()
            .collect();
        match words.as_slice() {
            ["cat", "failed.csv"] => {
                let got =
                    std::fs::read_to_string(dir.path().join("failed.csv")).expect("failed.csv");
                assert_eq!(got.lines().collect::<Vec<_>>(), answer);
            }
            ["redis-cli", "HMGET", key, fields @ ..] => {
                let got: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(*key)
                    .arg(fields)
                    .query(&mut conn)
                    .expect("HMGET");
                let shown: Vec<String> = got
                    .iter()
                    .enumerate()
                    .map(|(k, v)| match v {
                        Some(v) => format!("{}) {v:?}", k + 1),
                        None => format!("{}) (nil)", k + 1),
                    })
                    .collect();
                assert_eq!(shown, answer, "{cmd}");
            }
            ["redis-cli", "TTL", key] => {
                let ttl: i64 = conn.ttl(*key).expect("TTL");
                let said: i64 = answer[0]
                    .strip_prefix("(integer) ")
                    .and_then(|t| t.parse().ok())
                    .expect("a TTL answer");
                assert!((said - 10..=said).contains(&ttl), "{cmd}: {ttl}");
            }
            other => panic!("the README runs {other:?}: teach this test to check it"),
        }
    }
}
