//! The loader binary, run for real against a throwaway Redis: synthetic,
//! CSV and JSON-lines loads, stream mode, the failures list, exit statuses,
//! Redis going away mid-load, and the README's redis-cli lines.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use feature_store::demo::synth;
use feature_store::ManagedRedis;
use redis::Commands;

use crate::common::{self, raw, wait_until};

const LOADER: &str = env!("CARGO_BIN_EXE_fs-loader");

/// The loader with no environment that could point it elsewhere.
pub(crate) fn loader_cmd(redis: &impl common::Backend) -> Command {
    let mut cmd = Command::new(LOADER);
    cmd.env_remove("FS_REDIS_URL")
        .env_remove("FS_KEY_PREFIX")
        .env_remove("FS_CHUNK_SIZE")
        .env_remove("FS_REGISTRY")
        .env_remove("FS_EVENT_TIME_COLUMN")
        .env_remove("FS_CPU_PRIORITY")
        .args(["--redis-url", &redis.url(), "--quiet"])
        .stdin(Stdio::null());
    cmd
}

pub(crate) fn run(redis: &impl common::Backend, args: &[&str]) -> Output {
    loader_cmd(redis)
        .args(args)
        .output()
        .expect("running fs-loader")
}

pub(crate) fn run_with_stdin(redis: &impl common::Backend, args: &[&str], input: &str) -> Output {
    let mut child = loader_cmd(redis)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(input.as_bytes()).expect("writing stdin");
    drop(stdin);
    child.wait_with_output().expect("waiting for fs-loader")
}

/// The summary's `name: value` lines.
pub fn summary(out: &Output) -> HashMap<String, String> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

pub(crate) fn count(s: &HashMap<String, String>, name: &str) -> u64 {
    s.get(name)
        .unwrap_or_else(|| panic!("no {name:?} in the summary {s:?}"))
        .parse()
        .unwrap_or_else(|_| panic!("{name:?} is not a number in {s:?}"))
}

/// read = written + rejected + failed, whatever happened.
pub(crate) fn assert_accounted(s: &HashMap<String, String>) {
    assert_eq!(
        count(s, "read"),
        count(s, "written") + count(s, "rejected") + count(s, "failed"),
        "{s:?}"
    );
}

pub(crate) fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

pub(crate) fn write_file(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writing an input file");
    path
}

/// No client other than `conn` has a reply waiting in Redis's output
/// buffers (`CLIENT LIST`'s `obl` and `oll` are both 0).
fn every_reply_sent(conn: &mut redis::Connection) -> bool {
    let me: i64 = redis::cmd("CLIENT")
        .arg("ID")
        .query(conn)
        .expect("CLIENT ID");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("CLIENT LIST");
    list.lines().all(|line| {
        let field = |name: &str| {
            line.split(' ')
                .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                .unwrap_or("")
        };
        field("id") == me.to_string() || (field("obl") == "0" && field("oll") == "0")
    })
}

fn dbsize(conn: &mut impl redis::ConnectionLike) -> u64 {
    redis::cmd("DBSIZE").query(conn).expect("DBSIZE")
}

pub(crate) fn hash(conn: &mut impl redis::ConnectionLike, key: &str) -> HashMap<String, String> {
    crate::common::features(conn, key)
}

/// CSV rows of the failures file, without its header.
pub(crate) fn failure_rows(path: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(path).expect("reading the failures file");
    assert_eq!(
        reader.headers().expect("header").iter().collect::<Vec<_>>(),
        ["source", "line", "id", "kind", "reason"]
    );
    reader
        .records()
        .map(|r| {
            r.expect("a failures row")
                .iter()
                .map(str::to_owned)
                .collect()
        })
        .collect()
}

#[test]
fn loader_synthetic_load_writes_every_user_with_its_key_ttl() {
    let redis = common::redis();
    let out = run(
        &redis,
        &[
            "--count",
            "2500",
            "--seed",
            "7",
            "--ttl-seconds",
            "3600",
            "--chunk-size",
            "300",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(count(&s, "read"), 2500);
    assert_eq!(count(&s, "written"), 2500);
    assert_eq!(s["status"], "complete");

    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), 2500);
    // The same rows as the library's generator for that seed.
    let (id, features) = synth::users(2500, 7).last().expect("users");
    let key = format!("fs:user:{id}");
    let expected: HashMap<String, String> = features
        .iter()
        .map(|(k, v)| (k.clone(), v.encode()))
        .collect();
    assert_eq!(hash(&mut conn, &key), expected);
    let ttl: i64 = conn.ttl(&key).expect("TTL");
    assert!((3590..=3600).contains(&ttl), "ttl {ttl}");

    // A re-run is safe and idempotent.
    let again = run(
        &redis,
        &["--count", "2500", "--seed", "7", "--ttl-seconds", "3600"],
    );
    assert_eq!(again.status.code(), Some(0), "{}", show(&again));
    assert_eq!(dbsize(&mut conn), 2500);
    assert_eq!(hash(&mut conn, &key), expected);
}

#[test]
fn loader_csv_retracts_empty_cells_and_lists_bad_rows_in_the_failures_file() {
    let redis = common::redis();
    let mut conn = raw(&redis);
    let _: () = conn
        .hset_multiple(
            "fs:user:u1",
            &[("tx_count_7d", "9"), ("risk_segment", "high")],
        )
        .expect("seeding u1");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(
        dir.path(),
        "users.csv",
        "user_id,country_iso,tx_count_7d,avg_amount_30d\n\
         u1,US,,92.40\n\
         u2,GB,3,10\n\
         bad id,DE,1,2\n\
         u4,FR\n\
         u5,\"Paris, FR\",2,0.5\n\
         u6,SE,1,2,extra\n",
    );
    let failures = dir.path().join("failed.csv");
    let out = run(
        &redis,
        &[
            "--from",
            csv.to_str().expect("utf-8 path"),
            "--failures",
            failures.to_str().expect("utf-8 path"),
            "--chunk-size",
            "2",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(count(&s, "read"), 4, "{s:?}");
    assert_eq!(count(&s, "written"), 3);
    assert_eq!(count(&s, "rejected"), 1);
    assert_eq!(count(&s, "failed"), 0);
    assert_eq!(count(&s, "malformed"), 2);

    // The empty cell deleted tx_count_7d in the same write; other fields
    // of the hash stay; values keep their text ("92.40").
    let u1 = hash(&mut conn, "fs:user:u1");
    assert_eq!(u1.get("tx_count_7d"), None);
    assert_eq!(u1["country_iso"], "US");
    assert_eq!(u1["avg_amount_30d"], "92.40");
    assert_eq!(u1["risk_segment"], "high");
    assert_eq!(hash(&mut conn, "fs:user:u5")["country_iso"], "Paris, FR");
    let ttl: i64 = conn.ttl("fs:user:u1").expect("TTL");
    assert!(
        ttl > 86000,
        "the key TTL is set on every batch write: {ttl}"
    );

    let rows = failure_rows(&failures);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let by_line: HashMap<&str, &Vec<String>> = rows.iter().map(|r| (r[1].as_str(), r)).collect();
    assert_eq!(by_line["4"][2], "bad id");
    assert_eq!(by_line["4"][3], "rejected");
    assert!(by_line["4"][4].contains("entity id"), "{rows:?}");
    assert_eq!(by_line["5"][3], "malformed");
    assert_eq!(by_line["7"][3], "malformed");
    assert!(rows.iter().all(|r| r[0].ends_with("users.csv")));
}

#[test]
fn loader_jsonl_from_stdin_takes_both_shapes_and_retracts_nulls() {
    let redis = common::redis();
    let mut conn = raw(&redis);
    let _: () = conn
        .hset_multiple(
            "fs:user:u1",
            &[("risk_segment", "high"), ("tx_count_7d", "4")],
        )
        .expect("seeding u1");
    let input = concat!(
        "{\"id\": \"u1\", \"features\": {\"country_iso\": \"US\", \"risk_segment\": null, \"avg_amount_30d\": 92.40, \"vip\": true}}\n",
        "\n",
        "{\"user_id\": \"u2\", \"tx_count_7d\": 14, \"country_iso\": \"GB\"}\n",
        "{\"id\": \"u3\", \"features\": {\"country_iso\": \n",
        "{\"id\": \"u*\", \"features\": {\"country_iso\": \"DE\"}}\n",
        "[1, 2]\n",
        "{\"id\": \"u6\", \"features\": {\"bad name\": \"x\"}}\n",
    );
    let out = run_with_stdin(&redis, &["--from", "-"], input);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(count(&s, "read"), 4, "{s:?}");
    assert_eq!(count(&s, "written"), 2);
    assert_eq!(count(&s, "rejected"), 2);
    assert_eq!(count(&s, "malformed"), 2);

    let u1 = hash(&mut conn, "fs:user:u1");
    assert_eq!(u1.get("risk_segment"), None, "null retracts");
    assert_eq!(u1["tx_count_7d"], "4");
    assert_eq!(u1["country_iso"], "US");
    assert_eq!(u1["avg_amount_30d"], "92.4");
    assert_eq!(u1["vip"], "true");
    assert_eq!(hash(&mut conn, "fs:user:u2")["tx_count_7d"], "14");
    // Without --failures the list goes to stderr, with line numbers.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "stdin line 4: malformed",
        "stdin line 5: rejected",
        "stdin line 6: malformed",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in {stderr}");
    }
    assert!(
        stderr.contains("stdin line 7: rejected id \"u6\""),
        "{stderr}"
    );
}

#[test]
fn loader_strict_stops_at_the_first_malformed_line() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write_file(
        dir.path(),
        "u.csv",
        "id,country_iso\nu1,US\nu2,GB,extra\nu3,DE\n",
    );
    let path = csv.to_str().expect("utf-8 path");

    let out = run(&redis, &["--from", path, "--strict"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!((count(&s, "read"), count(&s, "written")), (1, 1), "{s:?}");
    assert_eq!(count(&s, "malformed"), 1);
    assert!(s["status"].contains("--strict"), "{s:?}");
    let mut conn = raw(&redis);
    assert_eq!(common::all_keys(&mut conn), ["fs:user:u1"]);

    // Without --strict the line is skipped and counted; the rest loads.
    let out = run(&redis, &["--from", path]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!((count(&s, "read"), count(&s, "written")), (2, 2), "{s:?}");
    assert_eq!(common::all_keys(&mut conn), ["fs:user:u1", "fs:user:u3"]);
}

#[test]
fn loader_exit_statuses_and_usage_errors() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");

    let help = run(&redis, &["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--count",
        "--from",
        "--id-column",
        "--failures",
        "--strict",
        "stream",
        "scripts",
    ] {
        assert!(text.contains(flag), "{flag} in --help:\n{text}");
    }

    let nothing = run(&redis, &[]);
    assert_eq!(nothing.status.code(), Some(2), "{}", show(&nothing));
    let missing = run(&redis, &["--from", "/nonexistent/users.csv"]);
    assert_eq!(missing.status.code(), Some(2), "{}", show(&missing));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/users.csv"));

    let no_id = write_file(dir.path(), "no_id.csv", "name,country_iso\nx,US\n");
    let out = run(&redis, &["--from", no_id.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no id column"),
        "{}",
        show(&out)
    );

    // --id-column picks another column; everything written: status 0.
    let other = write_file(
        dir.path(),
        "other.csv",
        "customer,country_iso\nc1,US\nc2,GB\n",
    );
    let out = run(
        &redis,
        &[
            "--from",
            other.to_str().expect("path"),
            "--id-column",
            "customer",
            "--key-prefix",
            "fs:cust:",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut conn = raw(&redis);
    assert_eq!(common::all_keys(&mut conn), ["fs:cust:c1", "fs:cust:c2"]);

    let bad_prefix = run(&redis, &["--count", "1", "--key-prefix", "fs:*"]);
    assert_eq!(bad_prefix.status.code(), Some(2), "{}", show(&bad_prefix));
    let bad_chunk = run(&redis, &["--count", "1", "--chunk-size", "0"]);
    assert_eq!(bad_chunk.status.code(), Some(2), "{}", show(&bad_chunk));
}

#[test]
fn loader_stream_mode_sets_field_ttls_and_pins_a_key_ttl() {
    let redis = common::redis();
    let mut conn = raw(&redis);
    let dir = tempfile::tempdir().expect("tempdir");
    // u1 has its batch row (key TTL 1000); u2 is new.
    let out = run_with_stdin(
        &redis,
        &["--from", "-", "--format", "csv", "--ttl-seconds", "1000"],
        "id,country_iso\nu1,US\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let events = write_file(
        dir.path(),
        "events.jsonl",
        "{\"id\": \"u1\", \"features\": {\"tx_count_5m\": 3, \"last_device_id\": \"ios-9f02\"}}\n\
         {\"id\": \"u2\", \"features\": {\"tx_count_5m\": 1}}\n\
         {\"id\": \"u3\", \"features\": {\"tx_count_5m\": null}}\n",
    );
    let out = run(
        &redis,
        &[
            "stream",
            "--from",
            events.to_str().expect("path"),
            "--ttl-seconds",
            "120",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (count(&s, "written"), count(&s, "rejected")),
        (2, 1),
        "{s:?}"
    );

    let ttls: Vec<i64> = redis::cmd("HTTL")
        .arg("fs:user:u1")
        .arg("FIELDS")
        .arg(3)
        .arg("tx_count_5m")
        .arg("last_device_id")
        .arg("country_iso")
        .query(&mut conn)
        .expect("HTTL");
    assert!(
        (115..=120).contains(&ttls[0]) && (115..=120).contains(&ttls[1]),
        "{ttls:?}"
    );
    assert_eq!(ttls[2], -1, "the batch field keeps no field TTL");
    let u1_ttl: i64 = conn.ttl("fs:user:u1").expect("TTL");
    assert!(
        (990..=1000).contains(&u1_ttl),
        "the batch key TTL is kept: {u1_ttl}"
    );
    let u2_ttl: i64 = conn.ttl("fs:user:u2").expect("TTL");
    assert!(
        (86000..=86400).contains(&u2_ttl),
        "a new entity gets the batch TTL pinned: {u2_ttl}"
    );
    let exists: bool = conn.exists("fs:user:u3").expect("EXISTS");
    assert!(!exists);
}

/// Feeds `rows` JSON lines to a running loader's stdin.
fn feed(child: &mut Child, from: usize, to: usize) {
    let stdin = child.stdin.as_mut().expect("stdin");
    for n in from..=to {
        writeln!(
            stdin,
            "{{\"id\": \"u{n:04}\", \"features\": {{\"tx_count_7d\": {n}}}}}"
        )
        .expect("feeding");
    }
    stdin.flush().expect("flush");
}

#[test]
fn loader_redis_lost_mid_load_is_accounted_exactly_and_a_rerun_completes() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let failures = dir.path().join("failed.csv");
    let mut child = loader_cmd(&redis)
        .args(["--from", "-", "--chunk-size", "10", "--failures"])
        .arg(&failures)
        .args([
            "--retries",
            "2",
            "--retry-backoff-ms",
            "20",
            "--connect-timeout-ms",
            "200",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");

    // The first 50 rows land (the loader sends what it has whenever the
    // pipe runs dry), then Redis goes away while the loader waits for more.
    feed(&mut child, 1, 50);
    let mut conn = raw(&redis);
    wait_until(
        "the first 50 rows in Redis",
        Duration::from_secs(20),
        || dbsize(&mut conn) == 50,
    );
    // The rows are in Redis, but their replies may still sit in Redis's
    // output buffers (replies are flushed at the end of an event-loop turn):
    // a kill now would leave the loader rightly counting them unconfirmed.
    // Stop only once every reply has reached the loader's socket.
    wait_until(
        "Redis to have sent every reply",
        Duration::from_secs(20),
        || every_reply_sent(&mut conn),
    );
    redis.stop();
    feed(&mut child, 51, 80);
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for fs-loader");

    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(count(&s, "written"), 50, "{s:?}");
    // How many of rows 51..80 were read before the loader gave up depends on
    // how the pipe's writes and reads interleave (it sends what it has when
    // the pipe runs dry); at least one was, and none of them was written.
    assert!(count(&s, "failed") >= 1, "{s:?}");
    assert!(count(&s, "read") <= 80, "{s:?}");
    assert_eq!(count(&s, "rejected"), 0);
    assert!(s["status"].starts_with("stopped: "), "{s:?}");
    // Every row read and not written is listed, by line and id.
    let rows = failure_rows(&failures);
    assert_eq!(rows.len() as u64, count(&s, "failed"), "{rows:?}");
    for row in &rows {
        let line: usize = row[1].parse().expect("line number");
        assert!(line > 50 && line <= 80, "{row:?}");
        assert_eq!(row[2], format!("u{line:04}"));
        assert_eq!(row[3], "failed");
    }

    // Redis is back (empty: nothing persisted): a re-run of the whole
    // input completes.
    redis.restart().expect("restarting redis");
    let input: String = (1..=80)
        .map(|n| format!("{{\"id\": \"u{n:04}\", \"features\": {{\"tx_count_7d\": {n}}}}}\n"))
        .collect();
    let out = run_with_stdin(&redis, &["--from", "-"], &input);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(count(&summary(&out), "written"), 80);
    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), 80);
}

#[test]
fn loader_redis_down_from_the_start_reads_nothing_and_exits_3() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    redis.stop();
    let out = run(
        &redis,
        &[
            "--count",
            "25",
            "--chunk-size",
            "10",
            "--retries",
            "1",
            "--retry-backoff-ms",
            "10",
            "--connect-timeout-ms",
            "200",
        ],
    );
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    let s = summary(&out);
    // Nothing is read (so nothing is taken from a pipe) until Redis answers.
    assert_eq!(count(&s, "read"), 0, "{s:?}");
    assert_eq!(count(&s, "written"), 0, "{s:?}");
    assert!(
        s["status"].contains("redis unavailable before the load started"),
        "{s:?}"
    );
}

#[test]
fn loader_scripts_prints_names_shas_and_contracts() {
    let redis = common::redis();
    let out = run(&redis, &["scripts"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for script in feature_store::scripts::all() {
        assert!(
            text.contains(&format!("{}  sha1 {}", script.name, script.sha())),
            "{text}"
        );
    }
    assert!(text.contains("KEYS[1]") && text.contains("Reply"), "{text}");
}

/// The README's `redis-cli EVALSHA` lines, each with the reply printed
/// under it, from the "Debugging with redis-cli" section.
fn readme_examples() -> Vec<(String, Vec<String>)> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("reading README.md");
    let start = readme
        .find("## Debugging with redis-cli")
        .expect("README has a Debugging with redis-cli section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut examples: Vec<(String, Vec<String>)> = Vec::new();
    let mut current: Option<(String, Vec<String>)> = None;
    for line in section.lines() {
        let code = line.strip_prefix("    ");
        match code {
            Some(c) if c.starts_with("redis-cli EVALSHA") => {
                examples.extend(current.take());
                current = Some((c.to_owned(), Vec::new()));
            }
            Some(c) if !c.trim().is_empty() => {
                if let Some((_, reply)) = current.as_mut() {
                    reply.push(c.trim_end().to_owned());
                }
            }
            _ => examples.extend(current.take()),
        }
    }
    examples.extend(current);
    examples
}

/// Equal, except that a TTL (an integer of 60 or more) may have ticked down
/// a few seconds since the README's run.
fn reply_matches(expected: &str, actual: &str) -> bool {
    if expected == actual {
        return true;
    }
    let number = |s: &str| -> Option<(String, i64)> {
        let i = s.find("(integer) ")?;
        let n = s[i + 10..].trim().parse().ok()?;
        Some((s[..i].to_owned(), n))
    };
    // Redis's clock in ms (read_fresh's last element) is whenever it runs.
    const EPOCH_MS: i64 = 1_000_000_000_000;
    match (number(expected), number(actual)) {
        (Some((pe, e)), Some((pa, a))) if e >= EPOCH_MS => pe == pa && a >= EPOCH_MS,
        (Some((pe, e)), Some((pa, a))) => pe == pa && e >= 60 && a <= e && a >= e - 5,
        _ => false,
    }
}

#[test]
fn loader_readme_redis_cli_examples_run_verbatim() {
    // Standalone on both backends: the README's redis-cli lines call
    // multi-key scripts on one server, as a user pasting them would.
    let redis = common::standalone_redis();
    let examples = readme_examples();
    assert!(examples.len() >= 4, "{examples:?}");
    for script in feature_store::scripts::all() {
        assert!(
            examples.iter().any(|(cmd, _)| cmd.contains(script.sha())),
            "README calls {} by its current SHA1 {}",
            script.name,
            script.sha()
        );
    }
    let load = run(&redis, &["scripts", "--load"]);
    assert_eq!(load.status.code(), Some(0), "{}", show(&load));

    for (line, expected) in &examples {
        let mut words = line.split_whitespace();
        assert_eq!(words.next(), Some("redis-cli"));
        // Verbatim, with the test server's port, and the terminal's reply
        // format the README shows.
        let out = Command::new(redis.cli_path())
            .args(["-p", &redis.port().to_string(), "--no-raw"])
            .args(words)
            .output()
            .expect("running redis-cli");
        // An error reply is part of the output to compare, wherever
        // redis-cli prints it.
        let actual = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let actual: Vec<&str> = actual.lines().map(str::trim_end).collect();
        assert_eq!(
            actual.len(),
            expected.len(),
            "{line}\nexpected {expected:#?}\ngot {actual:#?}"
        );
        for (e, a) in expected.iter().zip(&actual) {
            assert!(
                reply_matches(e, a),
                "{line}\nexpected {expected:#?}\ngot {actual:#?}"
            );
        }
    }
}

#[test]
fn loader_reads_several_inputs_in_turn_with_lines_per_source() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_file(dir.path(), "a.csv", "id,country_iso\na1,US\na 2,GB\n");
    // No telling extension: --format says JSON lines; the flat form's id
    // column is chosen by --id-column.
    let b = write_file(
        dir.path(),
        "b.data",
        "{\"customer\": \"b1\", \"country_iso\": \"DE\"}\n{\"customer\": \"b2\", \"country_iso\": \"FR\"}\n",
    );
    let failures = dir.path().join("failed.csv");
    let out = run(
        &redis,
        &[
            "--from",
            a.to_str().expect("path"),
            "--from",
            b.to_str().expect("path"),
            "--format",
            "jsonl",
            "--failures",
            failures.to_str().expect("path"),
        ],
    );
    // --format applies to every input: a.csv read as JSON lines is
    // malformed line by line (header and rows), and counted so.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(count(&s, "malformed"), 3, "{s:?}");
    assert_eq!(count(&s, "rejected"), 2, "no \"id\" key in b.data: {s:?}");

    let out = run(
        &redis,
        &[
            "--from",
            a.to_str().expect("path"),
            "--from",
            b.to_str().expect("path"),
            "--failures",
            failures.to_str().expect("path"),
        ],
    );
    // b.data has no known extension: its first byte says JSON lines; its
    // id key is not "id": rejected, listed with b.data's own line numbers.
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (
            count(&s, "read"),
            count(&s, "written"),
            count(&s, "rejected")
        ),
        (4, 1, 3),
        "{s:?}"
    );
    let rows = failure_rows(&failures);
    let listed: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                Path::new(&r[0])
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                r[1].clone(),
            )
        })
        .collect();
    for expected in [("a.csv", "3"), ("b.data", "1"), ("b.data", "2")] {
        assert!(
            listed.contains(&(expected.0.to_owned(), expected.1.to_owned())),
            "{expected:?} in {listed:?}"
        );
    }

    let out = run(
        &redis,
        &[
            "--from",
            b.to_str().expect("path"),
            "--id-column",
            "customer",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let mut conn = raw(&redis);
    assert_eq!(
        common::all_keys(&mut conn),
        ["fs:user:a1", "fs:user:b1", "fs:user:b2"]
    );
}

#[test]
fn loader_retries_only_the_unconfirmed_rows_until_redis_is_back() {
    // Standalone on both backends: the subject is one redis-server stopped
    // and restarted (a cluster primary going down is a cluster fault case).
    let mut redis = common::standalone_redis();
    let mut child = loader_cmd(&redis)
        .args(["--from", "-", "--chunk-size", "10"])
        .args([
            "--retries",
            "100",
            "--retry-backoff-ms",
            "50",
            "--connect-timeout-ms",
            "200",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");
    // The loader says when it starts waiting on Redis; watch for that.
    let stderr = child.stderr.take().expect("stderr");
    let (retrying_tx, retrying_rx) = std::sync::mpsc::channel();
    let watcher = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
            if line.contains("retrying") {
                let _ = retrying_tx.send(());
            }
            seen.push(line);
        }
        seen
    });

    feed(&mut child, 1, 50);
    let mut conn = raw(&redis);
    wait_until(
        "the first 50 rows in Redis",
        Duration::from_secs(20),
        || dbsize(&mut conn) == 50,
    );
    // The rows are in Redis, but their replies may still sit in Redis's
    // output buffers (replies are flushed at the end of an event-loop turn):
    // a kill now would leave the loader rightly counting them unconfirmed.
    // Stop only once every reply has reached the loader's socket.
    wait_until(
        "Redis to have sent every reply",
        Duration::from_secs(20),
        || every_reply_sent(&mut conn),
    );
    redis.stop();
    feed(&mut child, 51, 80);
    retrying_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the loader reports that it is retrying");
    redis.restart().expect("restarting redis");
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("waiting for fs-loader");
    let stderr = watcher.join().expect("stderr watcher").join("\n");

    assert_eq!(out.status.code(), Some(0), "{}\n{stderr}", show(&out));
    let s = summary(&out);
    assert_eq!(
        (count(&s, "read"), count(&s, "written"), count(&s, "failed")),
        (80, 80, 0),
        "{s:?}"
    );
    // The restarted Redis is empty: what is in it now is exactly the rows
    // sent after the outage, each once.
    let mut conn = raw(&redis);
    let keys = common::all_keys(&mut conn);
    let expected: Vec<String> = (51..=80).map(|n| format!("fs:user:u{n:04}")).collect();
    assert_eq!(keys, expected);
}

// ---- the last row of an id wins ----------------------------------------

/// The base file: `n` rows of about 3 KB with `x = old`.
fn base_rows(dir: &Path, n: usize) -> PathBuf {
    let pad = "p".repeat(3000);
    let text: String = (0..n)
        .map(|i| format!("{{\"id\": \"b{i:04}\", \"x\": \"old\", \"pad\": \"{pad}\"}}\n"))
        .collect();
    write_file(dir, "base.jsonl", &text)
}

fn hget(conn: &mut impl redis::ConnectionLike, key: &str, field: &str) -> Option<String> {
    conn.hget(key, field).expect("HGET")
}

#[test]
fn loader_late_correction_file_wins_over_the_base_file_with_default_writers() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = base_rows(dir.path(), 1000);
    let late = write_file(
        dir.path(),
        "late.jsonl",
        "{\"id\":\"b0999\",\"x\":\"new\"}\n",
    );
    let mut conn = raw(&redis);
    // The old code lost the correction in 5 of 5 runs; a few rounds here.
    for _ in 0..3 {
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let out = run(
            &redis,
            &[
                "--from",
                base.to_str().expect("path"),
                "--from",
                late.to_str().expect("path"),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let s = summary(&out);
        assert_eq!((count(&s, "read"), count(&s, "written")), (1001, 1001));
        assert_eq!(
            hget(&mut conn, "fs:user:b0999", "x").as_deref(),
            Some("new")
        );
        assert_eq!(
            hget(&mut conn, "fs:user:b0998", "x").as_deref(),
            Some("old")
        );
        assert!(hget(&mut conn, "fs:user:b0999", "pad").is_some());
    }
}

#[test]
fn loader_stream_mode_keeps_the_last_event_of_an_id_with_chunk_size_1() {
    let redis = common::redis();
    let dir = tempfile::tempdir().expect("tempdir");
    let base = base_rows(dir.path(), 1000);
    let late = write_file(
        dir.path(),
        "late.jsonl",
        "{\"id\":\"b0999\",\"x\":\"new\"}\n",
    );
    let mut conn = raw(&redis);
    // Twenty hot ids, each updated 100 times in pairs: a large event then a
    // small one right after it (the small one used to overtake it). Each id
    // ends with its last event.
    let pad = "p".repeat(3000);
    let hot_id = |i: usize| (i / 2) % 20;
    let events: String = (0..2000)
        .map(|i| {
            let pad = if i % 2 == 0 { pad.as_str() } else { "" };
            format!(
                "{{\"id\": \"h{}\", \"seq\": {i}, \"pad\": \"{pad}-\"}}\n",
                hot_id(i)
            )
        })
        .collect();
    let hot = write_file(dir.path(), "hot.jsonl", &events);
    let out = run(
        &redis,
        &[
            "stream",
            "--from",
            hot.to_str().expect("path"),
            "--chunk-size",
            "1",
            "--writers",
            "4",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    for id in 0..20 {
        let last = (0..2000).filter(|i| hot_id(*i) == id).max();
        let seq = hget(&mut conn, &format!("fs:user:h{id}"), "seq");
        assert_eq!(seq, last.map(|i| i.to_string()), "h{id}");
    }

    for _ in 0..3 {
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let out = run(
            &redis,
            &[
                "stream",
                "--from",
                base.to_str().expect("path"),
                "--from",
                late.to_str().expect("path"),
                "--chunk-size",
                "1",
                "--writers",
                "4",
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        assert_eq!(count(&summary(&out), "written"), 1001);
        assert_eq!(
            hget(&mut conn, "fs:user:b0999", "x").as_deref(),
            Some("new")
        );
    }
}

/// One generated input row: features to set (`Some`) or retract (`None`),
/// names unique within the row; `bad` rows carry a name the store refuses.
#[derive(Debug, Clone)]
struct GenRow {
    id: String,
    features: Vec<(String, Option<String>)>,
    bad: bool,
}

impl GenRow {
    fn json(&self) -> String {
        let mut features = serde_json::Map::new();
        for (name, value) in &self.features {
            let v = value.as_ref().map_or(serde_json::Value::Null, |v| {
                serde_json::Value::String(v.clone())
            });
            features.insert(name.clone(), v);
        }
        if self.bad {
            features.insert("bad name".into(), serde_json::Value::String("x".into()));
        }
        serde_json::json!({"id": self.id, "features": features}).to_string()
    }
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    None,
    /// `SCRIPT FLUSH`: the next calls answer NOSCRIPT.
    ScriptFlush,
    /// `CLIENT KILL TYPE normal`: the loader's connections drop mid-pipeline.
    ClientKill,
}

fn gen_rows(stream: bool) -> impl proptest::strategy::Strategy<Value = Vec<GenRow>> {
    use proptest::prelude::*;
    // A stream cannot retract: its rows only set.
    let value: BoxedStrategy<Option<String>> = if stream {
        "[a-z0-9]{0,4}".prop_map(Some).boxed()
    } else {
        prop::option::weighted(0.75, "[a-z0-9]{0,4}").boxed()
    };
    let feature = (prop::sample::select(vec!["a", "b", "c", "d"]), value);
    let row = (
        0..8u8,
        prop::collection::vec(feature, 1..4),
        prop::bool::weighted(0.08),
    )
        .prop_map(|(id, features, bad)| {
            let mut seen = std::collections::BTreeMap::new();
            for (name, value) in features {
                seen.insert(name.to_owned(), value);
            }
            GenRow {
                id: format!("k{id}"),
                features: seen.into_iter().collect(),
                bad,
            }
        });
    prop::collection::vec(row, 1..300)
}

/// The state the rows leave, applied in input order: per id, the features
/// still set (an id whose features were all retracted has no key).
fn expected_state(rows: &[GenRow]) -> HashMap<String, HashMap<String, String>> {
    let mut state: HashMap<String, HashMap<String, String>> = HashMap::new();
    for row in rows.iter().filter(|r| !r.bad) {
        let entity = state.entry(row.id.clone()).or_default();
        for (name, value) in &row.features {
            match value {
                Some(v) => entity.insert(name.clone(), v.clone()),
                None => entity.remove(name),
            };
        }
    }
    state
}

impl Fault {
    /// Often enough that most loads meet several faults; connections killed
    /// a little less often than scripts flushed, so that a row sent alone
    /// is not killed again and again by chance.
    fn every(self) -> Duration {
        match self {
            Fault::ClientKill => Duration::from_millis(5),
            _ => Duration::from_millis(2),
        }
    }
}

/// Runs `fault` against `redis` every `every` until the returned guard drops.
struct FaultLoop {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultLoop {
    fn start(redis: &impl common::Backend, fault: Fault, every: Duration) -> FaultLoop {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let thread = match fault {
            Fault::None => None,
            _ => {
                let mut conn = raw(redis);
                let stop = stop.clone();
                Some(std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let _: redis::RedisResult<redis::Value> = match fault {
                            Fault::ScriptFlush => {
                                redis::cmd("SCRIPT").arg("FLUSH").query(&mut conn)
                            }
                            _ => redis::cmd("CLIENT")
                                .arg("KILL")
                                .arg("TYPE")
                                .arg("normal")
                                .query(&mut conn),
                        };
                        std::thread::sleep(every);
                    }
                }))
            }
        };
        FaultLoop { stop, thread }
    }
}

impl Drop for FaultLoop {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn assert_state(conn: &mut impl redis::ConnectionLike, rows: &[GenRow], prefix: &str) {
    let expected = expected_state(rows);
    for (id, features) in &expected {
        let actual = hash(conn, &format!("{prefix}{id}"));
        assert_eq!(&actual, features, "entity {id}");
    }
    // A key whose every feature was retracted may remain, holding only
    // the event times that keep an older write from bringing a value back
    // (with the key TTL): it holds no feature.
    let keys: Vec<String> = common::all_keys(conn)
        .into_iter()
        .filter(|k| !hash(conn, k).is_empty())
        .collect();
    let mut wanted: Vec<String> = expected
        .iter()
        .filter(|(_, f)| !f.is_empty())
        .map(|(id, _)| format!("{prefix}{id}"))
        .collect();
    wanted.sort();
    assert_eq!(keys, wanted);
}

/// Splits the rows over up to three files, in order: the last row of an id
/// may be in a later file than the one it overrides.
fn write_inputs(dir: &Path, rows: &[GenRow], files: usize) -> Vec<PathBuf> {
    let per = rows.len().div_ceil(files.max(1)).max(1);
    rows.chunks(per)
        .enumerate()
        .map(|(i, part)| {
            let text: String = part.iter().map(|r| r.json() + "\n").collect();
            write_file(dir, &format!("in{i}.jsonl"), &text)
        })
        .collect()
}

mod last_row_wins {
    use super::*;
    use feature_store::loader::input::{self, ReadOptions};
    use feature_store::loader::limits::Limits;
    use feature_store::loader::pipeline::{self, Input, Settings, WriteMode};
    use feature_store::loader::progress::Progress;
    use feature_store::loader::summary::FailureSink;
    use feature_store::pool::PoolConfig;
    use feature_store::{FeatureStore, StoreConfig};
    use proptest::prelude::*;

    fn fault() -> impl Strategy<Value = Fault> {
        prop_oneof![
            Just(Fault::None),
            Just(Fault::ScriptFlush),
            Just(Fault::ClientKill)
        ]
    }

    fn case() -> impl Strategy<Value = (bool, Vec<GenRow>, usize, usize, Fault, usize)> {
        any::<bool>().prop_flat_map(|stream| {
            (
                Just(stream),
                gen_rows(stream),
                1..=8usize,
                1..=50usize,
                fault(),
                1..=3usize,
            )
        })
    }

    fn library_run(
        redis: &impl common::Backend,
        dir: &Path,
        (stream, rows, writers, chunk, fault, files): &(
            bool,
            Vec<GenRow>,
            usize,
            usize,
            Fault,
            usize,
        ),
    ) {
        let mut conn = raw(redis);
        let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
        let paths = write_inputs(dir, rows, *files);
        let store = FeatureStore::open(
            &redis.url(),
            StoreConfig {
                chunk_size: *chunk,
                pool: PoolConfig {
                    max_size: *writers as u32 + 1,
                    connect_timeout: Duration::from_millis(500),
                    io_timeout: Duration::from_secs(5),
                    checkout_timeout: Duration::from_secs(2),
                    ..PoolConfig::default()
                },
                ..StoreConfig::default()
            },
        )
        .expect("store");
        let options = ReadOptions {
            id_column: None,
            allow_retract: !stream,
            schema: None,
            event_time_column: None,
        };
        let inputs = paths
            .into_iter()
            .map(|path| {
                let options = options.clone();
                Input {
                    name: path.display().to_string(),
                    open: Box::new(move || input::open(&path)?.into_source(None, &options)),
                }
            })
            .collect();
        let mode = if *stream {
            WriteMode::Stream {
                field_ttl_seconds: 300,
            }
        } else {
            WriteMode::Batch { ttl_seconds: 3600 }
        };
        let settings = Settings {
            mode,
            chunk_size: *chunk,
            writers: *writers,
            retries: 50,
            backoff: Duration::from_millis(2),
            strict: false,
            limits: Limits::default(),
        };
        let mut failures = FailureSink::create(Some(&dir.join("failed.csv"))).expect("sink");
        let mut progress = Progress::new(true, None);
        let outcome = {
            let _faults = FaultLoop::start(redis, *fault, fault.every());
            pipeline::run(&store, inputs, settings, &mut failures, &mut progress)
        };
        let c = outcome.counts;
        let bad = rows.iter().filter(|r| r.bad).count() as u64;
        assert_eq!(c.read, rows.len() as u64, "{c:?}");
        assert_eq!(c.read, c.written + c.rejected + c.failed, "{c:?}");
        assert_eq!(
            (c.rejected, c.failed),
            (bad, 0),
            "{c:?} {:?}",
            outcome.stopped
        );
        // The fault loop may have killed the earlier connection.
        assert_state(&mut raw(redis), rows, "fs:user:");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 40, failure_persistence: None, ..ProptestConfig::default() })]

        /// Random files with repeated ids, writers, chunk sizes and faults
        /// (NOSCRIPT, dropped connections), through the loader's pipeline:
        /// the final state is the last row per id; the account is exact.
        #[test]
        fn loader_pipeline_last_row_per_id_wins_under_faults(case in case()) {
            let redis = shared_redis();
            let dir = tempfile::tempdir().expect("tempdir");
            library_run(&redis.lock().unwrap_or_else(|p| p.into_inner()), dir.path(), &case);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4, failure_persistence: None, ..ProptestConfig::default() })]

        /// The same through the real binary, a few cases.
        #[test]
        fn loader_binary_last_row_per_id_wins_under_faults(case in case()) {
            let (stream, rows, writers, chunk, fault, files) = &case;
            let redis = shared_redis();
            let redis = redis.lock().unwrap_or_else(|p| p.into_inner());
            let mut conn = raw(&redis);
            let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut args: Vec<String> = Vec::new();
            if *stream {
                args.push("stream".into());
            }
            for path in write_inputs(dir.path(), rows, *files) {
                args.push("--from".into());
                args.push(path.display().to_string());
            }
            for (flag, value) in [
                ("--writers", writers.to_string()),
                ("--chunk-size", chunk.to_string()),
                ("--retries", "50".into()),
                ("--retry-backoff-ms", "2".into()),
            ] {
                args.push(flag.into());
                args.push(value);
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let out = {
                let _faults = FaultLoop::start(&redis, *fault, fault.every());
                run(&redis, &args)
            };
            let bad = rows.iter().filter(|r| r.bad).count() as u64;
            let s = summary(&out);
            prop_assert_eq!(out.status.code(), Some(if bad > 0 { 1 } else { 0 }), "{}", show(&out));
            assert_accounted(&s);
            prop_assert_eq!(count(&s, "rejected"), bad);
            prop_assert_eq!(count(&s, "failed"), 0);
            assert_state(&mut raw(&redis), rows, "fs:user:");
        }
    }

    /// One Redis for every case of these properties (each case flushes it).
    fn shared_redis() -> &'static std::sync::Mutex<common::TestRedis> {
        static REDIS: std::sync::OnceLock<std::sync::Mutex<common::TestRedis>> =
            std::sync::OnceLock::new();
        REDIS.get_or_init(|| std::sync::Mutex::new(common::redis()))
    }
}

// ---- one oversized value costs its own row ------------------------------

/// The CSV: 300 rows, row `u0150`'s blob cell 2 MB.
fn csv_with_one_huge_cell(dir: &Path) -> PathBuf {
    let mut text = String::from("user_id,country_iso,blob\n");
    for i in 0..300 {
        let blob = if i == 150 {
            "x".repeat(2 << 20)
        } else {
            "small".into()
        };
        text.push_str(&format!("u{i:04},US,{blob}\n"));
    }
    write_file(dir, "huge.csv", &text)
}

fn assert_one_huge_row_refused(out: &Output, failures: &Path, kind: &str, limit: &str) {
    assert_eq!(out.status.code(), Some(1), "{}", show(out));
    let s = summary(out);
    assert_accounted(&s);
    assert_eq!(
        (count(&s, "read"), count(&s, "written")),
        (300, 299),
        "{s:?}"
    );
    let rows = failure_rows(failures);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0][2].as_str(), rows[0][3].as_str()), ("u0150", kind));
    assert!(rows[0][4].contains(limit), "{limit:?} in {:?}", rows[0][4]);
}

#[test]
fn loader_one_oversized_cell_is_rejected_alone_naming_the_limit() {
    let redis = ManagedRedis::start_with_args(&["--proto-max-bulk-len", "1mb"])
        .expect("starting redis with a 1 MB bulk limit");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = csv_with_one_huge_cell(dir.path());
    let failures = dir.path().join("failed.csv");
    let path = csv.to_str().expect("path");
    let failures_path = failures.to_str().expect("path");

    // Our own limit (1 MiB by default) refuses it before sending.
    let out = run(&redis, &["--from", path, "--failures", failures_path]);
    assert_one_huge_row_refused(&out, &failures, "rejected", "--max-value-bytes (1048576)");
    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), 299);

    // Our limit raised above Redis's: Redis's own, read at the start.
    let _: () = redis::cmd("FLUSHALL").query(&mut conn).expect("FLUSHALL");
    let out = run(
        &redis,
        &[
            "--from",
            path,
            "--failures",
            failures_path,
            "--max-value-bytes",
            "4000000",
        ],
    );
    assert_one_huge_row_refused(&out, &failures, "rejected", "proto-max-bulk-len (1048576)");
    assert_eq!(dbsize(&mut conn), 299);
    let exists: bool = conn.exists("fs:user:u0150").expect("EXISTS");
    assert!(!exists);
}

#[test]
fn loader_a_row_redis_drops_the_connection_on_fails_alone_and_the_load_goes_on() {
    // CONFIG hidden: the loader cannot learn Redis's limit, sends the row,
    // and Redis answers with a protocol error and closes the connection.
    let redis = ManagedRedis::start_with_args(&[
        "--proto-max-bulk-len",
        "1mb",
        "--rename-command",
        "CONFIG",
        "",
    ])
    .expect("starting redis without CONFIG");
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = csv_with_one_huge_cell(dir.path());
    let failures = dir.path().join("failed.csv");
    let out = run(
        &redis,
        &[
            "--from",
            csv.to_str().expect("path"),
            "--failures",
            failures.to_str().expect("path"),
            "--max-value-bytes",
            "4000000",
        ],
    );
    assert_one_huge_row_refused(&out, &failures, "failed", "proto-max-bulk-len");
    assert_eq!(dbsize(&mut raw(&redis)), 299);
}

// ---- NOSCRIPT storms ---------------------------------------------------

#[test]
fn loader_writes_every_row_while_scripts_are_flushed_every_10_ms() {
    let redis = common::redis();
    let out = {
        let _flush = FaultLoop::start(&redis, Fault::ScriptFlush, Duration::from_millis(10));
        run(&redis, &["--count", "20000", "--chunk-size", "200"])
    };
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(
        (count(&s, "written"), count(&s, "failed")),
        (20000, 0),
        "{s:?}"
    );
    let mut conn = raw(&redis);
    let keys = common::all_keys(&mut conn);
    assert_eq!(keys.len(), 20000);
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("TTL").arg(key);
    }
    let ttls: Vec<i64> = pipe.query(&mut conn).expect("TTLs");
    assert!(ttls.iter().all(|t| *t > 0), "a key without a TTL");
}

// ---- hostile input -----------------------------------------------------

mod hostile_input {
    use super::*;
    use feature_store::loader::input::{self, ReadOptions};
    use feature_store::loader::limits::Limits;
    use feature_store::loader::pipeline::{self, Input, Settings, WriteMode};
    use feature_store::loader::progress::Progress;
    use feature_store::loader::summary::{Counts, FailureSink};
    use feature_store::FeatureStore;
    use proptest::prelude::*;

    /// What a generated line must end as.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Class {
        Good,
        Rejected,
        Malformed,
        /// Blank: skipped, not a row.
        Blank,
    }

    /// The value limit the generated inputs run under (small, so an
    /// oversized cell stays cheap to generate).
    const MAX_VALUE: usize = 4096;

    fn good_id() -> impl Strategy<Value = String> {
        "[A-Za-z0-9_.:@{}-]{1,24}"
    }

    fn bad_id() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            // Braces are not here: they are valid (a cluster hash tag).
            "[a-z]{0,3}[*?\\[\\] \t\r\n\u{0}\u{1b}\u{7f}é\\\\/,\"][a-z]{0,3}",
            "[a-z]{129,140}",
        ]
    }

    fn good_name() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9_.:-]{0,12}"
    }

    fn bad_name() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z]{0,3}[*?\\[ \t\u{1}\n/{}é][a-z]{0,3}",
            "[a-z]{129,135}",
        ]
    }

    fn json_str(s: &str) -> String {
        serde_json::Value::String(s.to_owned()).to_string()
    }

    /// A scalar JSON value, as text: every one of them is written.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            "\\PC{0,16}".prop_map(|s| json_str(&s)),
            "[\u{0}-\u{1f}\"\\\\]{0,8}".prop_map(|s| json_str(&s)),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<bool>().prop_map(|b| b.to_string()),
            prop::num::f64::NORMAL.prop_map(|f| f.to_string()),
            Just("123456789012345678901234567890123".to_owned()),
            Just("1e308".to_owned()),
            Just("-0".to_owned()),
            Just("null".to_owned()),
        ]
    }

    fn object(id: &str, features: &[(String, String)]) -> String {
        let body: Vec<String> = features
            .iter()
            .map(|(k, v)| format!("{}: {v}", json_str(k)))
            .collect();
        format!(
            "{{\"id\": {}, \"features\": {{{}}}}}",
            json_str(id),
            body.join(", ")
        )
    }

    fn good_features() -> impl Strategy<Value = Vec<(String, String)>> {
        prop::collection::btree_map(good_name(), scalar(), 1..5)
            .prop_map(|m| m.into_iter().collect())
    }

    fn jsonl_line() -> impl Strategy<Value = (Vec<u8>, Class)> {
        let good = (good_id(), good_features())
            .prop_map(|(id, f)| (object(&id, &f).into_bytes(), Class::Good));
        let rejected = prop_oneof![
            (bad_id(), good_features()).prop_map(|(id, f)| object(&id, &f)),
            (good_id(), bad_name(), scalar()).prop_map(|(id, name, v)| object(&id, &[(name, v)])),
            (
                good_id(),
                good_name(),
                prop_oneof![Just("[1, 2]"), Just("{\"a\": 1}"), Just("[]")]
            )
                .prop_map(|(id, name, v)| object(&id, &[(name, v.to_owned())])),
            (good_id(), good_name()).prop_map(|(id, name)| object(
                &id,
                &[(name, json_str(&"v".repeat(MAX_VALUE + 1)))]
            )),
            good_features().prop_map(|f| {
                let o = object("x", &f);
                o.replacen("\"id\": \"x\", ", "", 1)
            }),
            good_id().prop_map(|id| format!("{{\"id\": {}}}", json_str(&id))),
            prop_oneof![
                Just("1.5"),
                Just("true"),
                Just("[\"u1\"]"),
                Just("{}"),
                Just("null")
            ]
            .prop_map(|id| format!("{{\"id\": {id}, \"features\": {{\"a\": 1}}}}")),
        ]
        .prop_map(|s| (s.into_bytes(), Class::Rejected));
        let malformed = prop_oneof![
            (good_id(), good_features()).prop_map(|(id, f)| {
                let mut s = object(&id, &f);
                s.pop();
                s.into_bytes()
            }),
            (good_id(), good_name()).prop_map(|(id, name)| {
                let mut s = object(&id, &[(name, "\"ab\"".into())]).into_bytes();
                let at = s.len() - 4;
                s.insert(at, 0xFF);
                s
            }),
            prop_oneof![
                Just("[1, 2]"),
                Just("42"),
                Just("\"u1\""),
                Just("null"),
                Just("{\"id\": \"u1\", \"x\": 1e400}"),
                Just("{\"id\": \"u1\", \"x\": 1,}"),
                Just("{{{{{{{{"),
                // A BOM inside a line is not whitespace (one at the start of the
                // file is skipped).
                Just("{\u{feff}\"id\": \"u1\", \"x\": 1}"),
            ]
            .prop_map(|s| s.as_bytes().to_vec()),
        ]
        .prop_map(|b| (b, Class::Malformed));
        let blank = prop_oneof![Just(""), Just("  "), Just("\t")]
            .prop_map(|s| (s.as_bytes().to_vec(), Class::Blank));
        prop_oneof![4 => good, 3 => rejected, 3 => malformed, 1 => blank]
    }

    /// A CSV cell, always quoted (so commas, quotes and newlines are data).
    fn quoted(cell: &[u8]) -> Vec<u8> {
        let mut out = vec![b'"'];
        for &b in cell {
            if b == b'"' {
                out.push(b'"');
            }
            out.push(b);
        }
        out.push(b'"');
        out
    }

    fn csv_cell() -> impl Strategy<Value = String> {
        prop_oneof![Just(String::new()), "\\PC{0,12}", "[,\"\r\n a-z]{0,8}"]
    }

    /// A CSV body line for a header of `columns` feature columns.
    fn csv_line(columns: usize) -> impl Strategy<Value = (Vec<u8>, Class)> {
        let row = move |id: Vec<u8>, cells: Vec<Vec<u8>>| {
            let mut line = quoted(&id);
            for c in cells {
                line.push(b',');
                line.extend(quoted(&c));
            }
            line
        };
        let cells = move || prop::collection::vec(csv_cell().prop_map(String::into_bytes), columns);
        let good =
            (good_id(), cells()).prop_map(move |(id, c)| (row(id.into_bytes(), c), Class::Good));
        let bad_id_row =
            (bad_id(), cells()).prop_map(move |(id, c)| (row(id.into_bytes(), c), Class::Rejected));
        let huge = (good_id(), cells()).prop_map(move |(id, mut c)| {
            c[0] = vec![b'h'; MAX_VALUE + 1];
            (row(id.into_bytes(), c), Class::Rejected)
        });
        let ragged = (good_id(), cells(), any::<bool>()).prop_map(move |(id, mut c, more)| {
            if more {
                c.push(b"extra".to_vec());
            } else {
                c.pop();
            }
            (row(id.into_bytes(), c), Class::Malformed)
        });
        let bad_utf8 = (good_id(), cells(), any::<bool>()).prop_map(move |(id, mut c, in_id)| {
            let mut id = id.into_bytes();
            if in_id {
                id.push(0xFE);
            } else {
                c[columns - 1].extend([0xC3, 0x28]);
            }
            (row(id, c), Class::Malformed)
        });
        prop_oneof![4 => good, 2 => bad_id_row, 1 => huge, 2 => ragged, 2 => bad_utf8]
    }

    /// A whole input: its bytes, its format, and the class of each line.
    fn input_file() -> impl Strategy<Value = (Vec<u8>, bool, Vec<Class>)> {
        let jsonl = (
            any::<bool>(),
            any::<bool>(),
            prop::collection::vec(jsonl_line(), 0..40),
        )
            .prop_map(|(bom, crlf, lines)| assemble(bom, crlf, Vec::new(), lines));
        // Sometimes one header name is one the store refuses (glob or
        // control characters, empty, 1 MB long): then every row that
        // would have been written is rejected instead.
        let header_name = prop_oneof![
            4 => Just(None),
            1 => bad_name().prop_map(Some),
            1 => Just(Some("n".repeat(1 << 20))),
        ];
        let csv = (1..4usize, header_name).prop_flat_map(|(good_columns, bad)| {
            let columns = good_columns + usize::from(bad.is_some());
            (
                any::<bool>(),
                any::<bool>(),
                prop::collection::btree_set(good_name(), good_columns),
                prop::collection::vec(csv_line(columns), 0..40),
                Just(bad),
            )
                .prop_map(|(bom, crlf, names, lines, bad)| {
                    let mut header = b"user_id".to_vec();
                    for n in names.into_iter().chain(bad.clone()) {
                        header.push(b',');
                        header.extend(quoted(n.as_bytes()));
                    }
                    let lines = lines
                        .into_iter()
                        .map(|(line, class)| match class {
                            Class::Good if bad.is_some() => (line, Class::Rejected),
                            other => (line, other),
                        })
                        .collect();
                    assemble(bom, crlf, header, lines)
                })
        });
        prop_oneof![
            jsonl.prop_map(|(b, c)| (b, false, c)),
            csv.prop_map(|(b, c)| (b, true, c)),
        ]
    }

    fn assemble(
        bom: bool,
        crlf: bool,
        header: Vec<u8>,
        lines: Vec<(Vec<u8>, Class)>,
    ) -> (Vec<u8>, Vec<Class>) {
        let end: &[u8] = if crlf { b"\r\n" } else { b"\n" };
        let mut bytes = Vec::new();
        if bom {
            bytes.extend_from_slice(b"\xEF\xBB\xBF");
        }
        if !header.is_empty() {
            bytes.extend(header);
            bytes.extend_from_slice(end);
        }
        let mut classes = Vec::new();
        for (line, class) in lines {
            bytes.extend(line);
            bytes.extend_from_slice(end);
            classes.push(class);
        }
        (bytes, classes)
    }

    fn expected(classes: &[Class]) -> Counts {
        let n = |c: Class| classes.iter().filter(|x| **x == c).count() as u64;
        Counts {
            read: n(Class::Good) + n(Class::Rejected),
            written: n(Class::Good),
            rejected: n(Class::Rejected),
            failed: 0,
            malformed: n(Class::Malformed),
            skipped_stale: 0,
        }
    }

    fn limits() -> Limits {
        Limits {
            max_value_bytes: MAX_VALUE,
            ..Limits::default()
        }
    }

    /// Every key in Redis is under the prefix and has a TTL.
    fn assert_keys_contained(redis: &impl common::Backend, prefix: &str) {
        let mut conn = raw(redis);
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
        for key in keys {
            assert!(
                key.starts_with(prefix.as_bytes()),
                "key outside the prefix: {key:?}"
            );
            let ttl: i64 = redis::cmd("TTL").arg(&key).query(&mut conn).expect("TTL");
            assert!(ttl > 0, "{key:?} has TTL {ttl}");
        }
    }

    fn shared_redis() -> &'static std::sync::Mutex<common::TestRedis> {
        static REDIS: std::sync::OnceLock<std::sync::Mutex<common::TestRedis>> =
            std::sync::OnceLock::new();
        REDIS.get_or_init(|| std::sync::Mutex::new(common::redis()))
    }

    fn load(redis: &impl common::Backend, path: &Path, csv: bool) -> Counts {
        let store = FeatureStore::open(&redis.url(), common::store_config()).expect("store");
        let options = ReadOptions {
            id_column: None,
            allow_retract: true,
            schema: None,
            event_time_column: None,
        };
        let path = path.to_owned();
        let format = Some(if csv { Format::Csv } else { Format::Jsonl });
        let inputs = vec![Input {
            name: "hostile".into(),
            open: Box::new(move || input::open(&path)?.into_source(format, &options)),
        }];
        let settings = Settings {
            mode: WriteMode::Batch { ttl_seconds: 3600 },
            chunk_size: 7,
            writers: 2,
            retries: 3,
            backoff: Duration::from_millis(5),
            strict: false,
            limits: limits(),
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let mut failures = FailureSink::create(Some(&dir.path().join("f.csv"))).expect("sink");
        let outcome = pipeline::run(
            &store,
            inputs,
            settings,
            &mut failures,
            &mut Progress::new(true, None),
        );
        assert!(
            outcome.error.is_none(),
            "{:?}",
            outcome.error.map(|e| e.to_string())
        );
        outcome.counts
    }

    use feature_store::loader::args::Format;

    /// Empties the shared Redis and writes `bytes` as a temporary input file.
    fn fresh_input(redis: &impl common::Backend, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let _: () = redis::cmd("FLUSHALL")
            .query(&mut raw(redis))
            .expect("FLUSHALL");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("input");
        std::fs::write(&path, bytes).expect("write input");
        (dir, path)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        /// Generated CSV and JSON lines full of malformed and hostile lines,
        /// through the loader's readers and pipeline: no panic, every line
        /// counted as what it is, nothing outside the prefix, every key with
        /// a TTL.
        #[test]
        fn loader_hostile_lines_are_each_counted_and_never_escape_the_prefix(
            (bytes, csv, classes) in input_file()
        ) {
            let redis = shared_redis().lock().unwrap_or_else(|p| p.into_inner());
            let (_dir, path) = fresh_input(&redis, &bytes);
            let counts = load(&redis, &path, csv);
            prop_assert_eq!(counts, expected(&classes));
            assert_keys_contained(&redis, "fs:user:");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, failure_persistence: None, ..ProptestConfig::default() })]

        /// The same through the real binary: exit 0 or 1, never a crash.
        #[test]
        fn loader_binary_hostile_input_exits_0_or_1_with_an_exact_account(
            (bytes, csv, classes) in input_file()
        ) {
            let redis = shared_redis().lock().unwrap_or_else(|p| p.into_inner());
            let (dir, path) = fresh_input(&redis, &bytes);
            let max = MAX_VALUE.to_string();
            let out = run(&redis, &[
                "--from", path.to_str().expect("path"),
                "--format", if csv { "csv" } else { "jsonl" },
                "--max-value-bytes", &max,
                "--failures", dir.path().join("f.csv").to_str().expect("path"),
            ]);
            let want = expected(&classes);
            let clean = want.rejected == 0 && want.malformed == 0;
            prop_assert_eq!(out.status.code(), Some(if clean { 0 } else { 1 }), "{}", show(&out));
            let s = summary(&out);
            assert_accounted(&s);
            prop_assert_eq!(
                (count(&s, "read"), count(&s, "written"), count(&s, "rejected"), count(&s, "malformed")),
                (want.read, want.written, want.rejected, want.malformed)
            );
            assert_keys_contained(&redis, "fs:user:");
        }
    }
}

#[test]
fn loader_rows_merged_into_one_write_are_each_accounted_and_listed() {
    let redis = common::redis();
    let mut conn = raw(&redis);
    // k1's key is not a hash: its write fails, for each of its rows.
    let _: () = conn.set("fs:user:k1", "a string").expect("SET");
    let dir = tempfile::tempdir().expect("tempdir");
    let input = write_file(
        dir.path(),
        "rows.jsonl",
        "{\"id\": \"k1\", \"a\": 1}\n\
         {\"id\": \"k2\", \"a\": 1, \"b\": 1}\n\
         {\"id\": \"k1\", \"a\": 2}\n\
         {\"id\": \"k2\", \"b\": null, \"bad name\": 2}\n\
         {\"id\": \"k2\", \"a\": 3}\n\
         {\"id\": \"k1\", \"a\": 3}\n",
    );
    let failures = dir.path().join("failed.csv");
    let out = run(
        &redis,
        &[
            "--from",
            input.to_str().expect("path"),
            "--failures",
            failures.to_str().expect("path"),
            "--writers",
            "1",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let s = summary(&out);
    assert_accounted(&s);
    assert_eq!(
        (
            count(&s, "written"),
            count(&s, "rejected"),
            count(&s, "failed")
        ),
        (2, 1, 3),
        "{s:?}"
    );
    // k2: its two good rows, merged; the bad one in between is refused alone.
    let k2 = hash(&mut conn, "fs:user:k2");
    assert_eq!(k2.get("a").map(String::as_str), Some("3"));
    assert_eq!(k2.get("b").map(String::as_str), Some("1"));
    let rows = failure_rows(&failures);
    let mut listed: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| (r[1].clone(), r[2].clone(), r[3].clone()))
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [
            ("1".into(), "k1".into(), "failed".into()),
            ("3".into(), "k1".into(), "failed".into()),
            ("4".into(), "k2".into(), "rejected".into()),
            ("6".into(), "k1".into(), "failed".into()),
        ]
    );
}

#[test]
fn loader_refuses_a_redis_without_hexpire_before_reading_input() {
    let redis = ManagedRedis::start_with_args(&["--rename-command", "HEXPIRE", ""])
        .expect("starting redis without HEXPIRE");
    let mut conn = raw(&redis);
    let events = "{\"id\": \"new1\", \"features\": {\"tx_count_5m\": 3}}\n\
                  {\"id\": \"new2\", \"features\": {\"tx_count_5m\": 4}}\n";
    let out = run_with_stdin(&redis, &["stream", "--from", "-"], events);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HEXPIRE ("), "{stderr}");
    assert!(stderr.contains("Redis >= 7.4 or Valkey >= 9.0"), "{stderr}");
    assert_eq!(dbsize(&mut conn), 0, "nothing may be written");
    // The batch path refuses the same Redis: its reads need HTTL and its
    // streaming side HEXPIRE, so a store on it is only half a store.
    let out = run(&redis, &["--count", "5"]);
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    assert_eq!(dbsize(&mut conn), 0);
}

#[test]
fn loader_refuses_a_user_denied_expire() {
    // Standalone on both backends: the ACL user is set on one server.
    let redis = common::standalone_redis();
    let mut conn = raw(&redis);
    redis::cmd("ACL")
        .arg(&[
            "SETUSER", "writer", "on", ">pw", "~*", "&*", "+@all", "-expire",
        ])
        .query::<()>(&mut conn)
        .expect("ACL SETUSER");
    let out = Command::new(LOADER)
        .env_remove("FS_REDIS_URL")
        .args(["--quiet", "--count", "5", "--redis-url"])
        .arg(format!("redis://writer:pw@127.0.0.1:{}/", redis.port()))
        .stdin(Stdio::null())
        .output()
        .expect("running fs-loader");
    assert_eq!(out.status.code(), Some(2), "{}", show(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("EXPIRE NX ("), "{stderr}");
    assert!(stderr.contains("no permissions"), "{stderr}");
    assert_eq!(dbsize(&mut conn), 0);
}
