//! The benchmark's `--quick` mode, run once so it cannot rot. It checks the
//! report has every row with sane numbers; it never asserts speed (that is
//! what BENCHMARKS.md and its goals are for).

use std::process::Command;

/// Every row the issue asks for, by the id the report lists it under.
const ROWS: [&str; 33] = [
    "bulk_load",
    "update_streaming",
    "get_features",
    "get_features_vs_redis_benchmark",
    "read_fresh",
    "batch_get_features",
    "vectors",
    "read_max_age",
    "read_max_age_vectors",
    "memory",
    "event_time_batch",
    "event_time_streaming",
    "event_time_replay",
    "http_read",
    "http_read_metrics",
    "http_read_concurrent",
    "http_read_auth",
    "http_batch_read",
    "v1_features",
    "loader",
    "read_during_load",
    "ping_during_load",
    "paced_loader",
    "read_during_builder",
    "read_during_held_builder",
    "read_during_full_speed",
    "redis_cpu_per_row",
    "script_cost_batch",
    "script_cost_streaming",
    "idle_redis_cpu",
    "idle_state",
    "cluster_bulk_load",
    "cluster_batch_read",
];

#[test]
fn quick_bench_writes_every_row() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::new(env!("CARGO_BIN_EXE_fs-bench"))
        .arg("--quick")
        .arg("--out")
        .arg(&out)
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_fs-server"))
        .arg("--loader-bin")
        .arg(env!("CARGO_BIN_EXE_fs-loader"))
        .args(["--seconds", "1"])
        // The suite leaves the machine's CPU idle states alone.
        .arg("--let-cpus-idle")
        .output()
        .expect("running fs-bench");
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "fs-bench --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    let report = std::fs::read_to_string(&out).expect("the report was written");

    for heading in [
        "## Machine",
        "## Results",
        "## Goals",
        "Redis",
        "cores",
        "git commit",
    ] {
        assert!(
            report.contains(heading),
            "report lacks {heading:?}:\n{report}"
        );
    }
    for id in ROWS {
        assert!(
            report.contains(&format!("- `{id}`: ")),
            "report lacks row {id}:\n{report}"
        );
    }

    // The results table: one line per row, every figure a positive number.
    let table: Vec<&str> = report
        .lines()
        .skip_while(|l| !l.starts_with("| operation"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(table.len(), ROWS.len(), "table rows:\n{}", table.join("\n"));
    for line in &table {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 9, "{line}");
        // A single end-to-end run (the loader row) has a rate, no
        // latencies; a Redis-time row has one figure, no rate.
        let figures: Vec<&str> = cells[1..4].iter().copied().filter(|c| *c != "-").collect();
        assert!(!figures.is_empty(), "no figure in {line}");
        for cell in figures {
            let number = leading_number(cell);
            assert!(
                number > 0.0 && number.is_finite(),
                "figure {cell:?} in {line}"
            );
        }
        let ratio = leading_number(cells[6]);
        assert!(
            ratio > 0.0 && ratio.is_finite(),
            "ratio {:?} in {line}",
            cells[6]
        );
        assert!(
            ["**met**", "**missed**", "n/a"].contains(&cells[8]),
            "met? {:?} in {line}",
            cells[8]
        );
    }
    // The terminal gets the same table.
    assert!(stdout.contains("| operation | p50 | p99 |"), "{stdout}");
}

/// `1,234.5 ms` -> 1234.5; `0.93x (p50)` -> 0.93; NaN when none.
fn leading_number(cell: &str) -> f64 {
    let text: String = cell
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ',')
        .filter(|c| *c != ',')
        .collect();
    text.parse().unwrap_or(f64::NAN)
}

/// `--only vectors` runs the typed-vector rows alone, and with
/// `--vs-server-bin` adds the head-to-head row with each server's CPU per
/// request (here the same build on both sides).
#[test]
fn only_vectors_runs_the_vector_rows_and_the_head_to_head() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("BENCHMARKS.md");
    let run = Command::new(env!("CARGO_BIN_EXE_fs-bench"))
        .args(["--quick", "--only", "vectors", "--users", "2000"])
        .arg("--out")
        .arg(&out)
        .arg("--server-bin")
        .arg(env!("CARGO_BIN_EXE_fs-server"))
        .arg("--vs-server-bin")
        .arg(env!("CARGO_BIN_EXE_fs-server"))
        .arg("--loader-bin")
        .arg(env!("CARGO_BIN_EXE_fs-loader"))
        .arg("--let-cpus-idle")
        .output()
        .expect("running fs-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "fs-bench failed: {stderr}");
    let report = std::fs::read_to_string(&out).expect("the report was written");
    for id in ["vectors", "v1_features", "v1_features_vs"] {
        assert!(
            report.contains(&format!("- `{id}`: ")),
            "report lacks row {id}:\n{report}"
        );
    }
    assert!(
        report.contains("Server CPU (user + system, from /proc) per request"),
        "{report}"
    );
    // Nothing else was measured.
    assert!(!report.contains("- `bulk_load`: "), "{report}");
}
