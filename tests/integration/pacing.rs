//! Pacing: the loader (the real binary) slows down while another client
//! stalls Redis and speeds up again after, without losing or repeating a
//! row; `--max-rate` caps it; `--full-speed` and a zero budget turn pacing
//! off; conflicting flags are refused; the pacer's probe goes away with it;
//! a paced load gives way on the CPU (its threads at nice 19).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use feature_store::pacing::{PaceMode, Pacer, PROBE_CLIENT_NAME};
use feature_store::ManagedRedis;
use serde_json::Value;

use crate::common::{self, raw, wait_until};
use crate::loader::summary;

const LOADER: &str = env!("CARGO_BIN_EXE_fs-loader");

/// The loader with no environment that could point it elsewhere or pace it
/// differently.
fn loader_cmd(redis: &impl common::Backend) -> Command {
    let mut cmd = Command::new(LOADER);
    for var in [
        "FS_REDIS_URL",
        "FS_KEY_PREFIX",
        "FS_CHUNK_SIZE",
        "FS_LATENCY_BUDGET_MS",
        "FS_MAX_RATE",
        "FS_FULL_SPEED",
        "FS_EVENT_TIME_COLUMN",
        "FS_CPU_PRIORITY",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(["--redis-url", &redis.url()]).stdin(Stdio::null());
    cmd
}

fn run(redis: &impl common::Backend, args: &[&str]) -> Output {
    loader_cmd(redis)
        .arg("--quiet")
        .args(args)
        .output()
        .expect("running fs-loader")
}

fn count(s: &HashMap<String, String>, name: &str) -> u64 {
    s.get(name)
        .unwrap_or_else(|| panic!("no {name:?} in the summary {s:?}"))
        .trim_end_matches(" rows/s")
        .trim_end_matches(" s")
        .parse::<f64>()
        .unwrap_or_else(|_| panic!("{name:?} is not a number in {s:?}")) as u64
}

fn show(out: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn dbsize(conn: &mut impl redis::ConnectionLike) -> u64 {
    redis::cmd("DBSIZE").query(conn).expect("DBSIZE")
}

/// `limit 52000 rows/s` in a progress line.
fn limit_in(line: &str) -> Option<u64> {
    let rest = line.split("; limit ").nth(1)?;
    rest.split(' ').next()?.parse().ok()
}

#[test]
fn paced_load_backs_off_while_another_client_stalls_redis_and_recovers_after() {
    let redis = ManagedRedis::start_with_args(&["--enable-debug-command", "local"])
        .expect("starting redis with DEBUG enabled");
    // Rows come from a pipe the test writes until it has seen all three
    // phases, so the load lasts exactly as long as needed.
    let mut child = loader_cmd(&redis)
        .args([
            "--from",
            "-",
            "--format",
            "csv",
            "--chunk-size",
            "100",
            "--latency-budget-ms",
            "3",
            "--progress-ms",
            "100",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");

    let feeding = Arc::new(AtomicBool::new(true));
    let mut stdin = child.stdin.take().expect("stdin");
    let feeder = {
        let feeding = feeding.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            let _ = stdin.write_all(b"user_id,score\n");
            while feeding.load(Relaxed) {
                let mut block = String::new();
                for _ in 0..100 {
                    n += 1;
                    block.push_str(&format!("p{n},{n}\n"));
                }
                stdin
                    .write_all(block.as_bytes())
                    .expect("feeding the loader");
            }
            n // stdin closes here: the loader drains and ends
        })
    };
    let (limits_tx, limits) = mpsc::channel::<u64>();
    let stderr = child.stderr.take().expect("stderr");
    let lines = std::thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(l) = limit_in(&line) {
                let _ = limits_tx.send(l);
            }
            all.push(line);
        }
        all
    });
    // The latest limit the progress lines showed, waiting for a condition.
    let mut latest = 0u64;
    let mut wait_for = |what: &str, cond: &dyn Fn(u64) -> bool| -> u64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match limits.recv_timeout(left) {
                Ok(l) => {
                    latest = l;
                    if cond(l) {
                        return l;
                    }
                }
                Err(_) => panic!("timed out waiting for {what}; last limit {latest}"),
            }
        }
    };

    // Quiet Redis: the limit ramps above where it starts (20,000 rows/s).
    let before = wait_for("the limit to ramp up", &|l| l > 20_000);

    // Another client stalls Redis in 20 ms steps: the pacer backs off.
    let stalling = Arc::new(AtomicBool::new(true));
    let staller = {
        let stalling = stalling.clone();
        let mut conn = raw(&redis);
        std::thread::spawn(move || {
            while stalling.load(Relaxed) {
                redis::cmd("DEBUG")
                    .arg("SLEEP")
                    .arg("0.02")
                    .query::<()>(&mut conn)
                    .expect("DEBUG SLEEP");
            }
        })
    };
    let low = wait_for("the limit to fall while Redis is stalled", &|l| {
        l <= before / 2
    });
    stalling.store(false, Relaxed);
    staller.join().expect("staller");

    // Quiet again: it speeds up.
    let recovered = wait_for("the limit to recover after the stall", &|l| l >= low * 2);
    feeding.store(false, Relaxed);
    let fed = feeder.join().expect("feeder");
    let out = child.wait_with_output().expect("fs-loader ends");
    let stderr = lines.join().expect("stderr reader");
    let out_text = format!("{}\n{}", show(&out), stderr.join("\n"));
    assert_eq!(out.status.code(), Some(0), "{out_text}");

    // Every row written exactly once, none lost, none extra.
    let s = summary(&out);
    assert_eq!(count(&s, "read"), fed, "{out_text}");
    assert_eq!(count(&s, "written"), fed, "{out_text}");
    assert_eq!(count(&s, "failed") + count(&s, "rejected"), 0, "{out_text}");
    let mut conn = raw(&redis);
    assert_eq!(dbsize(&mut conn), fed, "{out_text}");
    let last: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("fs:user:p{fed}"))
        .query(&mut conn)
        .expect("HGETALL");
    assert_eq!(last.get("score"), Some(&fed.to_string()));
    let pace = &s["pace"];
    assert!(pace.starts_with("latency budget 3 ms"), "{pace}");
    assert!(!pace.contains("cut 0 times"), "{pace}");
    eprintln!("limit: {before} before the stall, {low} during, {recovered} after; {fed} rows");
}

#[test]
fn max_rate_caps_the_load_rate() {
    let redis = common::standalone_redis();
    let (rows, cap) = (6000u64, 2000u64);
    let started = Instant::now();
    let out = run(
        &redis,
        &[
            "--count",
            &rows.to_string(),
            "--chunk-size",
            "100",
            "--max-rate",
            &cap.to_string(),
        ],
    );
    let elapsed = started.elapsed();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let s = summary(&out);
    assert_eq!(count(&s, "written"), rows);
    assert!(
        elapsed.as_secs_f64() >= rows as f64 / cap as f64 * 0.8,
        "{rows} rows at most {cap}/s took only {elapsed:?}"
    );
    assert!(count(&s, "rate") <= cap * 5 / 4, "{}", show(&out));
    assert!(
        s["pace"].starts_with("max rate 2000 rows/s"),
        "{}",
        show(&out)
    );
    assert_eq!(dbsize(&mut raw(&redis)), rows);
}

#[test]
fn full_speed_and_a_zero_latency_budget_turn_pacing_off() {
    let redis = common::standalone_redis();
    for flags in [&["--full-speed"][..], &["--latency-budget-ms", "0"]] {
        let mut args = vec!["--count", "500"];
        args.extend_from_slice(flags);
        let out = run(&redis, &args);
        assert_eq!(out.status.code(), Some(0), "{flags:?}: {}", show(&out));
        let s = summary(&out);
        assert_eq!(count(&s, "written"), 500);
        assert!(s["pace"].starts_with("full speed"), "{flags:?}: {s:?}");
    }
    // The default is the 1 ms budget.
    let out = run(&redis, &["--count", "500"]);
    assert!(
        summary(&out)["pace"].starts_with("latency budget 1 ms"),
        "{}",
        show(&out)
    );
}

#[test]
fn conflicting_pacing_flags_are_refused_before_anything_is_written() {
    let redis = common::standalone_redis();
    for (flags, names) in [
        (
            &["--full-speed", "--max-rate", "100"][..],
            &["--full-speed", "--max-rate"][..],
        ),
        (
            &["--full-speed", "--latency-budget-ms", "2"],
            &["--full-speed", "--latency-budget-ms"],
        ),
        (
            &["--max-rate", "100", "--latency-budget-ms", "2"],
            &["--max-rate", "--latency-budget-ms"],
        ),
        (&["--max-rate", "0"], &["--max-rate"]),
    ] {
        let mut args = vec!["--count", "50"];
        args.extend_from_slice(flags);
        let out = run(&redis, &args);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {}", show(&out));
        let err = String::from_utf8_lossy(&out.stderr);
        for name in names {
            assert!(err.contains(name), "{flags:?}: {err}");
        }
    }
    assert_eq!(dbsize(&mut raw(&redis)), 0);
}

fn probe_clients(conn: &mut impl redis::ConnectionLike) -> usize {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(conn)
        .expect("CLIENT LIST");
    list.lines()
        .filter(|l| l.contains(&format!("name={PROBE_CLIENT_NAME} ")))
        .count()
}

/// Threads of this process named like the probe (Linux).
fn probe_threads() -> Option<usize> {
    let tasks = std::fs::read_dir("/proc/self/task").ok()?;
    Some(
        tasks
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|name| name.trim() == PROBE_CLIENT_NAME)
            .count(),
    )
}

/// The only test in this process that makes a `Pacer` (the others run the
/// binaries), so the probe-thread count is its own.
#[test]
fn the_pacer_probe_measures_while_writes_run_and_stops_when_the_pacer_is_dropped() {
    let redis = common::standalone_redis();
    let mut conn = raw(&redis);
    let pacer =
        Pacer::new(PaceMode::Budget(Duration::from_millis(1)), &redis.url()).expect("a pacer");
    let clone = pacer.clone();
    // (The thread names itself once it runs.)
    wait_until("the probe thread to start", Duration::from_secs(5), || {
        probe_threads().unwrap_or(1) == 1
    });
    // Idle until the first admit: no connection, no PINGs.
    assert_eq!(probe_clients(&mut conn), 0);
    wait_until("the probe to measure", Duration::from_secs(5), || {
        clone.admit(100);
        clone.done(100);
        clone.snapshot().redis_latency_ms.is_some()
    });
    // At most 20,000 rows/s (where it starts; it grows only up to twice
    // what the writers did): ten admits of 1000 rows take 450 ms or more.
    let t = Instant::now();
    for _ in 0..10 {
        pacer.admit(1000);
        pacer.done(1000);
    }
    let snap = pacer.snapshot();
    assert!(
        t.elapsed() >= Duration::from_millis(400),
        "{snap:?} in {:?}",
        t.elapsed()
    );
    assert_eq!(probe_clients(&mut conn), 1);
    drop(clone);
    assert_eq!(
        probe_clients(&mut conn),
        1,
        "a clone's drop keeps the probe"
    );
    drop(pacer);
    assert_eq!(probe_threads().unwrap_or(0), 0, "the probe thread is gone");
    wait_until(
        "the probe's connection to close",
        Duration::from_secs(5),
        || probe_clients(&mut conn) == 0,
    );
}

#[test]
fn server_bulk_load_goes_through_the_pacer_and_state_shows_it() {
    use crate::server::Server;
    let redis = common::standalone_redis();
    let server = Server::start(&redis.url(), &[]);
    let (status, state) = server.get("/state");
    assert_eq!(status, 200, "{state}");
    assert_eq!(
        state["write_pacing"]["mode"], "latency budget 1 ms",
        "{state}"
    );
    assert_eq!(state["write_pacing"]["rows_total"], 0, "{state}");
    let (status, body) = server.post_form("/bulk-load", "count=3000");
    assert_eq!(status, 200, "{body}");
    let (_, state) = server.get("/state");
    let pacing = &state["write_pacing"];
    assert_eq!(pacing["rows_total"], 3000, "{state}");
    assert!(pacing["limit_rows_per_s"].as_u64().is_some(), "{state}");

    let unpaced = Server::start(&redis.url(), &["--write-latency-budget-ms", "0"]);
    let (status, body) = unpaced.post_form("/bulk-load", "count=3000");
    assert_eq!(status, 200, "{body}");
    let (_, state) = unpaced.get("/state");
    assert_eq!(state["write_pacing"]["mode"], "full speed", "{state}");
    assert_eq!(state["write_pacing"]["limit_rows_per_s"], Value::Null);
    assert_eq!(state["write_pacing"]["rows_total"], 3000, "{state}");
}

/// One thread of a running process, from `/proc/<pid>/task/<tid>/stat`.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct ThreadSched {
    name: String,
    nice: i64,
    /// 0 SCHED_OTHER, 3 SCHED_BATCH, 5 SCHED_IDLE.
    policy: i64,
}

/// Every thread of process `pid` (empty once it is gone).
#[cfg(target_os = "linux")]
fn threads_of(pid: u32) -> Vec<ThreadSched> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        .filter_map(|stat| {
            // `pid (comm) state ...`: the name may hold spaces and ')'.
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
            // Fields after the name start at field 3; nice is 19, policy 41.
            Some(ThreadSched {
                name: stat[open + 1..close].to_owned(),
                nice: fields.get(16)?.parse().ok()?,
                policy: fields.get(38)?.parse().ok()?,
            })
        })
        .collect()
}

/// Starts the loader on an open, empty stdin (so it waits with all its
/// threads up) until `own` of them are its own (see
/// [`probes_and_own_threads`]), and hands them all back with the summary it
/// prints once stdin closes.
#[cfg(target_os = "linux")]
fn threads_of_a_waiting_load(args: &[&str], own: usize) -> (Vec<ThreadSched>, Output) {
    let redis = ManagedRedis::start().expect("starting redis");
    let mut child = loader_cmd(&redis)
        .args(["--quiet", "--from", "-", "--format", "csv"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning fs-loader");
    let pid = child.id();
    let mut seen = Vec::new();
    wait_until(
        &format!("fs-loader {args:?} to start {own} threads of its own"),
        Duration::from_secs(10),
        || {
            seen = threads_of(pid);
            probes_and_own_threads(&seen).1.len() >= own
        },
    );
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("fs-loader ends");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    (seen, out)
}

/// The threads that carry the loader's own name: its main thread and its
/// writers (the others are named for what they do).
#[cfg(target_os = "linux")]
fn main_and_writers(threads: &[ThreadSched]) -> usize {
    threads.iter().filter(|t| t.name == "fs-loader").count()
}

/// The pacer's probe threads among `threads`, and the loader's own
/// threads: neither the probe (it measures what the other clients wait, at
/// their priority) nor the pool's workers (started before the priority is
/// set).
#[cfg(target_os = "linux")]
fn probes_and_own_threads(threads: &[ThreadSched]) -> (Vec<&ThreadSched>, Vec<&ThreadSched>) {
    let (probes, rest): (Vec<_>, Vec<_>) =
        threads.iter().partition(|t| t.name == PROBE_CLIENT_NAME);
    let own = rest
        .into_iter()
        .filter(|t| !t.name.starts_with("r2d2"))
        .collect();
    (probes, own)
}

/// Threads of its own a waiting loader has besides its writers: main and
/// its Ctrl-C handler.
#[cfg(target_os = "linux")]
const OWN_BESIDES_WRITERS: usize = 2;

#[cfg(target_os = "linux")]
#[test]
fn a_paced_load_gives_way_on_the_cpu_but_its_probe_and_a_full_speed_load_do_not() {
    let caller = threads_of(std::process::id());
    let caller = caller.first().expect("this test's own threads");
    let as_caller = |t: &ThreadSched| t.policy == caller.policy && t.nice == caller.nice;
    // 3 writers: a paced load's default.
    let (paced, out) = threads_of_a_waiting_load(&[], OWN_BESIDES_WRITERS + 3);
    let (probes, ours) = probes_and_own_threads(&paced);
    assert_eq!(probes.len(), 1, "{paced:?}");
    assert_eq!(main_and_writers(&paced), 4, "main and 3 writers: {paced:?}");
    assert!(
        ours.iter().all(|t| t.nice == 19),
        "all at nice 19: {paced:?}"
    );
    assert!(
        probes.into_iter().all(as_caller),
        "the probe at the caller's priority {caller:?}: {paced:?}"
    );
    let said = summary(&out);
    assert!(
        said["pace"].ends_with("cpu priority low (nice 19)"),
        "{said:?}"
    );

    let (idle, out) =
        threads_of_a_waiting_load(&["--cpu-priority", "idle"], OWN_BESIDES_WRITERS + 3);
    let (_, ours) = probes_and_own_threads(&idle);
    assert!(
        ours.len() >= 3 && ours.iter().all(|t| t.policy == 5),
        "all SCHED_IDLE: {idle:?}"
    );
    assert!(summary(&out)["pace"].ends_with("cpu priority idle (SCHED_IDLE)"));

    // Two writers at full speed (1,000-row pipelines keep Redis busy), 3
    // paced.
    for (args, writers) in [
        (&["--full-speed"][..], 2),
        (&["--cpu-priority", "normal"], 3),
    ] {
        let (kept, out) = threads_of_a_waiting_load(args, OWN_BESIDES_WRITERS + writers);
        assert_eq!(
            main_and_writers(&kept),
            1 + writers,
            "{args:?}: main and {writers} writers: {kept:?}"
        );
        assert!(
            kept.iter().all(as_caller),
            "{args:?}: {kept:?}, the caller at {caller:?}"
        );
        assert!(
            summary(&out)["pace"].ends_with("cpu priority normal"),
            "{args:?}"
        );
    }
}
