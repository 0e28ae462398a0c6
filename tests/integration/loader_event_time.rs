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

/// One dated event of the two-loader test: `time` (seconds after a base)
/// sets `features` of `id` to values naming the time.
#[derive(Debug, Clone)]
struct Event {
    id: String,
    time: u64,
    features: Vec<usize>,
}

const BASE_MS: u64 = 1_796_136_009_000; // 2026-12-01T14:40:09Z
const FEATURES: [&str; 4] = ["f0", "f1", "f2", "f3"];

fn value(e: &Event, f: usize) -> String {
    format!("{}-t{}-{}", e.id, e.time, FEATURES[f])
}

/// As RFC 3339 (UTC, with milliseconds): `time` seconds after `BASE_MS`,
/// plus a few ms so that milliseconds count.
fn rfc3339(time: u64) -> String {
    let secs = 40 * 60 + 9 + time; // past 14:00:00 on the base day
    format!(
        "2026-12-01T{:02}:{:02}:{:02}.{:03}Z",
        14 + secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        time % 7
    )
}

fn ms(time: u64) -> u64 {
    BASE_MS + time * 1000 + time % 7
}

/// Loader A's file: CSV, every feature in every row, times in RFC 3339.
fn csv_of(events: &[Event]) -> String {
    let mut s = String::from("user_id,ts,f0,f1,f2,f3\n");
    for e in events {
        let cells: Vec<String> = (0..FEATURES.len()).map(|f| value(e, f)).collect();
        s.push_str(&format!(
            "{},{},{}\n",
            e.id,
            rfc3339(e.time),
            cells.join(",")
        ));
    }
    s
}

/// Loader B's file: JSON lines, some features per row, times in epoch ms.
fn jsonl_of(events: &[Event]) -> String {
    let mut s = String::new();
    for e in events {
        let mut object = serde_json::Map::new();
        object.insert("id".into(), e.id.clone().into());
        object.insert("ts".into(), ms(e.time).into());
        for &f in &e.features {
            object.insert(FEATURES[f].into(), value(e, f).into());
        }
        s.push_str(&serde_json::Value::Object(object).to_string());
        s.push('\n');
    }
    s
}

/// Feature writes that an earlier line of the same file makes stale for
/// sure: that line went to Redis first (one id's rows are written in file
/// order) and is newer.
fn surely_stale(events: &[Event]) -> u64 {
    let mut newest: std::collections::HashMap<(&str, usize), u64> = Default::default();
    let mut stale = 0;
    for e in events {
        for &f in &e.features {
            let seen = newest.entry((e.id.as_str(), f)).or_insert(0);
            if *seen > e.time {
                stale += 1;
            }
            *seen = (*seen).max(e.time);
        }
    }
    stale
}

#[test]
fn two_loaders_at_once_end_in_the_newest_value_per_feature() {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    let seed: u64 = rand::random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let ids: Vec<String> = (0..48).map(|i| format!("e{i:02}")).collect();
    // Times 1..=16 per id: loader A the even ones, B the odd ones.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for id in &ids {
        for time in 1..=16u64 {
            if time % 2 == 0 {
                let features = (0..FEATURES.len()).collect();
                a.push(Event {
                    id: id.clone(),
                    time,
                    features,
                });
            } else {
                let mut features: Vec<usize> =
                    (0..FEATURES.len()).filter(|_| rng.gen_bool(0.6)).collect();
                if features.is_empty() {
                    features.push(rng.gen_range(0..FEATURES.len()));
                }
                b.push(Event {
                    id: id.clone(),
                    time,
                    features,
                });
            }
        }
    }
    a.shuffle(&mut rng);
    b.shuffle(&mut rng);

    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let a_file = write_file(dir.path(), "a.csv", &csv_of(&a));
    let b_file = write_file(dir.path(), "b.jsonl", &jsonl_of(&b));
    let spawn = |file: &Path| {
        loader_cmd(&redis)
            .args(["--event-time-column", "ts", "--full-speed"])
            .args(["--chunk-size", "3", "--writers", "2", "--from", p(file)])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawning fs-loader")
    };
    let (loader_a, loader_b) = (spawn(&a_file), spawn(&b_file));
    let out_a = loader_a.wait_with_output().expect("loader A");
    let out_b = loader_b.wait_with_output().expect("loader B");
    let ctx = format!("seed {seed}");
    assert_eq!(out_a.status.code(), Some(0), "{ctx}: A {}", show(&out_a));
    assert_eq!(out_b.status.code(), Some(0), "{ctx}: B {}", show(&out_b));
    let (sa, sb) = (summary(&out_a), summary(&out_b));
    assert_eq!(count(&sa, "written"), a.len() as u64, "{ctx}: {sa:?}");
    assert_eq!(count(&sb, "written"), b.len() as u64, "{ctx}: {sb:?}");

    // Every feature holds its newest event's value, whoever sent it.
    let mut newest: std::collections::BTreeMap<(&str, usize), &Event> = Default::default();
    for e in a.iter().chain(&b) {
        for &f in &e.features {
            let slot = newest.entry((e.id.as_str(), f)).or_insert(e);
            if e.time > slot.time {
                *slot = e;
            }
        }
    }
    let mut conn = raw(&redis);
    for id in &ids {
        let fields = hash(&mut conn, &format!("fs:user:{id}"));
        for (f, name) in FEATURES.iter().enumerate() {
            let want = value(newest[&(id.as_str(), f)], f);
            assert_eq!(
                fields.get(*name),
                Some(&want),
                "{ctx}: {id}.{name} in {fields:?}"
            );
        }
    }

    // The skipped features: at least those an earlier line of the same
    // file made stale, at most all but the ones that are the newest.
    let writes = |events: &[Event]| events.iter().map(|e| e.features.len() as u64).sum::<u64>();
    let newest_in = |events: &[Event]| {
        newest
            .values()
            .filter(|e| events.iter().any(|x| std::ptr::eq(**e, x)))
            .count() as u64
    };
    for (name, events, s) in [("A", &a, &sa), ("B", &b, &sb)] {
        let skipped = count(s, "skipped_stale");
        assert!(
            skipped >= surely_stale(events) && skipped <= writes(events) - newest_in(events),
            "{ctx}: loader {name} skipped {skipped}, expected between {} and {}",
            surely_stale(events),
            writes(events) - newest_in(events)
        );
    }
    assert!(
        count(&sa, "skipped_stale") + count(&sb, "skipped_stale")
            >= surely_stale(&a) + surely_stale(&b)
    );

    // A replay of A changes nothing, and accounts for every one of its
    // feature writes as stale.
    let before: Vec<_> = ids
        .iter()
        .map(|id| hash(&mut conn, &format!("fs:user:{id}")))
        .collect();
    let replay = run(
        &redis,
        &[
            "--event-time-column",
            "ts",
            "--full-speed",
            "--from",
            p(&a_file),
        ],
    );
    assert_eq!(replay.status.code(), Some(0), "{ctx}: {}", show(&replay));
    let sr = summary(&replay);
    assert_eq!(count(&sr, "written"), a.len() as u64, "{ctx}: {sr:?}");
    assert_eq!(count(&sr, "skipped_stale"), writes(&a), "{ctx}: {sr:?}");
    let after: Vec<_> = ids
        .iter()
        .map(|id| hash(&mut conn, &format!("fs:user:{id}")))
        .collect();
    assert_eq!(before, after, "{ctx}: the replay changed something");
}

/// The README's event-time example, its CSV taken from the README as
/// written: the newer event wins over the later line.
#[test]
fn readme_event_time_example_keeps_the_newer_event_not_the_later_line() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once("For example, with `events.csv`\n\n")
        .expect("README has the event-time example");
    let csv: String = after
        .lines()
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim_start()))
        .collect();
    assert!(csv.starts_with("user_id,ts,country_iso\n"), "{csv}");
    assert!(
        after.contains(
            "`fs-loader --from events.csv --event-time-column ts` leaves `country_iso`\n`FR`"
        ),
        "the README's command changed: update this test"
    );
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write_file(dir.path(), "events.csv", &csv);
    let out = run(&redis, &["--from", p(&file), "--event-time-column", "ts"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(count(&s, "skipped_stale"), 1, "{s:?}");
    let mut conn = raw(&redis);
    let u1 = hash(&mut conn, "fs:user:u1");
    assert_eq!(
        u1.get("country_iso").map(String::as_str),
        Some("FR"),
        "{u1:?}"
    );
}

/// `stream` takes the flag too (after the subcommand, and with the view
/// inferred without the column): dated events, each feature with its TTL.
#[test]
fn stream_mode_dates_events_by_the_column_and_never_writes_it() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let registry = write_file(dir.path(), "features.toml", TWO_ENTITIES);
    let events = write_file(
        dir.path(),
        "events.jsonl",
        concat!(
            "{\"id\": \"u1\", \"at\": \"2026-12-01T14:40:09Z\", \"features\": {\"tx_count_5m\": 3}}\n",
            "{\"id\": \"u2\", \"features\": {\"tx_count_5m\": 1}}\n",
        ),
    );
    let failures_file = dir.path().join("failures.csv");
    let out = run(
        &redis,
        &[
            "stream",
            "--registry",
            p(&registry),
            "--from",
            p(&events),
            "--event-time-column",
            "at",
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
    assert_eq!(
        failures(&failures_file),
        [(
            "2".to_owned(),
            "u2".to_owned(),
            "no event time column \"at\"".to_owned()
        )]
    );
    let mut conn = raw(&redis);
    let u1 = hash(&mut conn, "fs:user:u1");
    assert_eq!(
        u1.get("tx_count_5m").map(String::as_str),
        Some("3"),
        "{u1:?}"
    );
    assert!(!u1.contains_key("at"), "{u1:?}");
    let ttl: Vec<i64> = redis::cmd("HTTL")
        .arg("fs:user:u1")
        .arg("FIELDS")
        .arg(1)
        .arg("tx_count_5m")
        .query(&mut conn)
        .expect("HTTL");
    assert!(ttl[0] > 0 && ttl[0] <= 300, "{ttl:?}");
}
