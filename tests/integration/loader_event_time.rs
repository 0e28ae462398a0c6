//! The real `fs-loader` with `--event-time-column`: each row dated by its
//! own column (never a feature), a row without a valid time rejected alone
//! with the column named, `--strict` stopping at it, and the flag working
//! with `--registry`'s view inference.

use std::path::Path;

use crate::common::{self, raw};
use crate::loader::{
    assert_accounted, count, failure_rows, hash, loader_cmd, run, show, summary, write_file,
};
use crate::registry::TWO_ENTITIES;

fn p(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// (line, id, reason) of each failures row.
fn failures(path: &Path) -> Vec<(String, String, String)> {
    failure_rows(path)
        .into_iter()
        .map(|r| (r[1].clone(), r[2].clone(), r[4].clone()))
        .collect()
}

#[test]
fn bad_event_times_reject_their_rows_alone_and_the_column_is_never_a_field() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,ts,country_iso,tx_count_7d\n\
         c1,2026-12-01T14:40:09Z,US,1\n\
         c2,1796136009,GB,2\n\
         c3,2026-12-01T14:40:09,FR,3\n\
         c4,,DE,4\n\
         c5,1796136009123,IT,5\n\
         c6,-5,ES,6\n\
         c7,2026-12-01 14:40:09.5+02:00,PT,7\n",
    );
    let jsonl = write_file(
        dir.path(),
        "users.jsonl",
        concat!(
            "{\"id\": \"j1\", \"ts\": 1796136009000, \"country_iso\": \"US\"}\n",
            "{\"id\": \"j2\", \"country_iso\": \"GB\"}\n",
            "{\"id\": \"j3\", \"ts\": 1.5, \"country_iso\": \"FR\"}\n",
            "{\"id\": \"j4\", \"ts\": \"2026-12-01T14:40:09.123Z\", \"features\": {\"country_iso\": \"DE\"}}\n",
            "{\"id\": \"j5\", \"ts\": \"soon\", \"country_iso\": \"IT\"}\n",
        ),
    );
    let failures_file = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "--event-time-column",
            "ts",
            "--from",
            p(&csv),
            "--from",
            p(&jsonl),
            "--failures",
            p(&failures_file),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(count(&s, "read"), 12, "{s:?}");
    assert_eq!(count(&s, "written"), 6, "{s:?}");
    assert_eq!(count(&s, "rejected"), 6, "{s:?}");
    assert_eq!(count(&s, "skipped_stale"), 0, "{s:?}");

    let listed = failures(&failures_file);
    let ids: Vec<&str> = listed.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(ids, ["c3", "c4", "c6", "j2", "j3", "j5"], "{listed:?}");
    for (line, id, reason) in &listed {
        assert!(
            reason.contains("event time column \"ts\""),
            "{id} (line {line}): {reason}"
        );
    }
    let line_of = |id: &str| listed.iter().find(|r| r.1 == id).map(|r| r.0.as_str());
    assert_eq!(line_of("c3"), Some("4"));
    assert_eq!(line_of("j2"), Some("2"));
    assert!(listed[0].2.contains("no UTC offset"), "{listed:?}");

    let mut conn = raw(&redis);
    for (id, country) in [
        ("c1", "US"),
        ("c2", "GB"),
        ("c5", "IT"),
        ("c7", "PT"),
        ("j1", "US"),
        ("j4", "DE"),
    ] {
        let fields = hash(&mut conn, &format!("fs:user:{id}"));
        assert_eq!(
            fields.get("country_iso").map(String::as_str),
            Some(country),
            "{id}: {fields:?}"
        );
        assert!(
            !fields.contains_key("ts"),
            "{id}: the time column became a field: {fields:?}"
        );
    }
    for id in ["c3", "c4", "c6", "j2", "j3", "j5"] {
        assert!(
            hash(&mut conn, &format!("fs:user:{id}")).is_empty(),
            "{id} was written"
        );
    }
}

#[test]
fn strict_stops_at_the_first_row_without_a_valid_event_time() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,ts,country_iso\nu1,1796136009,US\nu2,yesterday,GB\nu3,1796136009,FR\n",
    );
    let out = run(
        &redis,
        &["--event-time-column", "ts", "--strict", "--from", p(&csv)],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!((count(&s, "read"), count(&s, "written")), (2, 1), "{s:?}");
    assert!(
        s["status"].contains("line 3 has no valid event time"),
        "{s:?}"
    );
    let mut conn = raw(&redis);
    assert!(
        hash(&mut conn, "fs:user:u3").is_empty(),
        "read past the stop"
    );
}

#[test]
fn the_event_time_column_does_not_count_against_the_registry_view() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = write_file(dir.path(), "features.toml", TWO_ENTITIES);
    // No --view: the view is inferred from the columns, `ts` left out.
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,ts,country_iso,age_days\nu1,2026-12-01T14:40:09Z,GB,120\nu2,never,FR,5\n",
    );
    let failures_file = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "--registry",
            p(&registry),
            "--event-time-column",
            "ts",
            "--from",
            p(&csv),
            "--failures",
            p(&failures_file),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(
        (count(&s, "written"), count(&s, "rejected")),
        (1, 1),
        "{s:?}"
    );
    let listed = failures(&failures_file);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(
        listed[0].2.contains("event time column \"ts\""),
        "{listed:?}"
    );
    let mut conn = raw(&redis);
    let u1 = hash(&mut conn, "fs:user:u1");
    assert_eq!(
        u1.get("age_days").map(String::as_str),
        Some("120"),
        "{u1:?}"
    );
    assert!(!u1.contains_key("ts"), "{u1:?}");
}

#[test]
fn the_event_time_column_is_refused_where_it_cannot_be_read() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(dir.path(), "users.csv", "user_id,country_iso\nu1,US\n");
    let out = run(&redis, &["--event-time-column", "ts", "--from", p(&csv)]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no event time column \"ts\""),
        "{}",
        show(&out)
    );
    let out = run(&redis, &["--event-time-column", "ts", "--count", "3"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    // The environment's default counts as given.
    let out = loader_cmd(&redis)
        .env("FS_EVENT_TIME_COLUMN", "user_id")
        .args(["--from", p(&csv), "--id-column", "user_id"])
        .output()
        .expect("running fs-loader");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let mut conn = raw(&redis);
    assert!(hash(&mut conn, "fs:user:u1").is_empty());
}
