//! The exact account of a run: counters shared by the reader and the
//! writers, the failures list (a file or stderr), and the closing summary.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use super::error::LoaderError;

/// The run's account in the Prometheus text format, written to `path`
/// atomically: a temporary file in the same directory, renamed over it, so
/// node_exporter's textfile collector never reads half a file. The
/// counters are the last run's (each run starts them over, as a restarted
/// process does).
pub fn write_metrics_file(
    path: &Path,
    counts: &Counts,
    elapsed: Duration,
    retries: u64,
    exit_code: u8,
) -> Result<(), LoaderError> {
    let error = |source| LoaderError::MetricsFile {
        path: path.to_owned(),
        source,
    };
    let finished = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let text = crate::metrics::render(RunMetrics {
        counts: *counts,
        elapsed,
        retries,
        exit_code,
        finished,
    })
    .map_err(|e| error(io::Error::other(e.to_string())))?;
    let name = path.file_name().ok_or_else(|| {
        error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    // Not `*.prom`: the collector skips it until the rename.
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let written = (|| {
        let mut f = File::create(&tmp)?;
        io::Write::write_all(&mut f, text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(error)
}

/// What `write_metrics_file` shows.
#[derive(Debug)]
struct RunMetrics {
    counts: Counts,
    elapsed: Duration,
    retries: u64,
    exit_code: u8,
    finished: Duration,
}

impl prometheus_client::collector::Collector for RunMetrics {
    fn encode(
        &self,
        encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> Result<(), std::fmt::Error> {
        let mut w = crate::metrics::Writer(encoder);
        let c = &self.counts;
        w.counter("fs_loader_rows_read", "Rows read from the input.", c.read)?;
        w.counter(
            "fs_loader_rows_written",
            "Rows written to Redis.",
            c.written,
        )?;
        w.counter(
            "fs_loader_rows_rejected",
            "Rows refused before Redis saw them (bad id, feature or value).",
            c.rejected,
        )?;
        w.counter(
            "fs_loader_rows_failed",
            "Rows Redis failed (an error reply, or unavailable after the retries).",
            c.failed,
        )?;
        w.counter(
            "fs_loader_lines_malformed",
            "Input lines that are not rows.",
            c.malformed,
        )?;
        w.counter(
            "fs_loader_skipped_stale",
            "Features of written rows left alone: the stored event time was as new or newer.",
            c.skipped_stale,
        )?;
        w.counter(
            "fs_loader_retries",
            "Pipelines sent again after Redis was unavailable.",
            self.retries,
        )?;
        w.gauge(
            "fs_loader_elapsed_seconds",
            "How long the run took.",
            self.elapsed.as_secs_f64(),
        )?;
        w.gauge(
            "fs_loader_exit_code",
            "The run's exit status (0: every row written; see fs-loader --help).",
            f64::from(self.exit_code),
        )?;
        w.gauge(
            "fs_loader_finished_timestamp_seconds",
            "When the run ended (Unix time): alert when it gets old.",
            self.finished.as_secs_f64(),
        )
    }
}

/// Every row read ends in exactly one of written, rejected, failed:
/// `read == written + rejected + failed` once the writers are done.
/// Malformed lines are not rows and are counted apart. `skipped_stale`
/// counts features, not rows: those of written rows that Redis left as
/// they were because the stored event time is as new or newer.
#[derive(Default)]
pub struct Tally {
    pub read: AtomicU64,
    pub written: AtomicU64,
    pub rejected: AtomicU64,
    pub failed: AtomicU64,
    pub malformed: AtomicU64,
    pub skipped_stale: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub read: u64,
    pub written: u64,
    pub rejected: u64,
    pub failed: u64,
    pub malformed: u64,
    /// Features (not rows) the written rows did not change: stale.
    pub skipped_stale: u64,
}

impl Tally {
    pub fn counts(&self) -> Counts {
        Counts {
            read: self.read.load(Relaxed),
            written: self.written.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            failed: self.failed.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            skipped_stale: self.skipped_stale.load(Relaxed),
        }
    }
}

impl Counts {
    /// Rows whose fate is known.
    pub fn done(&self) -> u64 {
        self.written + self.rejected + self.failed
    }
    pub fn complete(&self) -> bool {
        self.written == self.read && self.malformed == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bad id, feature name or value: refused before Redis saw it.
    Rejected,
    /// Redis failed the write (an error reply, or unavailable after retries).
    Failed,
    /// A line that is not a row.
    Malformed,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Rejected => "rejected",
            Kind::Failed => "failed",
            Kind::Malformed => "malformed",
        }
    }
}

/// Where rows that were not written are listed: a CSV file (`source, line,
/// id, kind, reason`) that a re-run can be built from, or stderr.
pub struct FailureSink {
    out: Target,
    path: Option<PathBuf>,
    listed: u64,
}

enum Target {
    File(Box<csv::Writer<BufWriter<File>>>),
    Stderr,
}

impl FailureSink {
    pub fn create(path: Option<&Path>) -> Result<Self, LoaderError> {
        let out = match path {
            None => Target::Stderr,
            Some(p) => {
                let file = File::create(p).map_err(|source| LoaderError::FailuresFile {
                    path: p.to_owned(),
                    source,
                })?;
                let mut w = csv::Writer::from_writer(BufWriter::new(file));
                w.write_record(["source", "line", "id", "kind", "reason"])
                    .map_err(|e| failures_error(p, e))?;
                Target::File(Box::new(w))
            }
        };
        Ok(FailureSink {
            out,
            path: path.map(Path::to_owned),
            listed: 0,
        })
    }

    pub fn record(
        &mut self,
        source: &str,
        line: u64,
        id: &str,
        kind: Kind,
        reason: &str,
    ) -> Result<(), LoaderError> {
        self.listed += 1;
        match &mut self.out {
            Target::File(w) => {
                let line = line.to_string();
                w.write_record([source, &line, id, kind.as_str(), reason])
                    .map_err(|e| failures_error(self.path.as_deref().unwrap_or(Path::new("")), e))
            }
            Target::Stderr => {
                let id = if id.is_empty() {
                    String::new()
                } else {
                    format!(" id {id:?}")
                };
                eprintln!(
                    "fs-loader: {source} line {line}: {}{id}: {reason}",
                    kind.as_str()
                );
                Ok(())
            }
        }
    }

    pub fn finish(&mut self) -> Result<(), LoaderError> {
        if let Target::File(w) = &mut self.out {
            w.flush().map_err(|e| LoaderError::FailuresFile {
                path: self.path.clone().unwrap_or_default(),
                source: e,
            })?;
        }
        Ok(())
    }

    pub fn listed(&self) -> u64 {
        self.listed
    }

    pub fn describe(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "stderr".into(),
        }
    }
}

fn failures_error(path: &Path, e: csv::Error) -> LoaderError {
    LoaderError::FailuresFile {
        path: path.to_owned(),
        source: io::Error::other(e.to_string()),
    }
}

/// How the run ended, beyond the counts.
pub struct Ending {
    /// Why the load stopped before the end of its input, if it did.
    pub stopped: Option<String>,
    /// The last row or line read: `<source> line <n>`.
    pub last_read: Option<String>,
    pub failures_listed: u64,
    pub failures_to: String,
    /// How the load was paced (`PaceSnapshot::summary_text`); `rate` above
    /// is the mean rate it reached.
    pub pace: Option<String>,
}

/// The closing summary, one `name: value` per line so scripts can read it.
pub fn render(what: &str, counts: &Counts, elapsed: Duration, ending: &Ending) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        counts.written as f64 / secs
    } else {
        0.0
    };
    let mut s = String::new();
    s.push_str(&format!("fs-loader {what}\n"));
    s.push_str(&format!("read: {}\n", counts.read));
    s.push_str(&format!("written: {}\n", counts.written));
    s.push_str(&format!("rejected: {}\n", counts.rejected));
    s.push_str(&format!("failed: {}\n", counts.failed));
    s.push_str(&format!("malformed: {}\n", counts.malformed));
    s.push_str(&format!("skipped_stale: {}\n", counts.skipped_stale));
    s.push_str(&format!("elapsed: {secs:.3} s\n"));
    s.push_str(&format!("rate: {rate:.0} rows/s\n"));
    if let Some(pace) = &ending.pace {
        s.push_str(&format!("pace: {pace}\n"));
    }
    let not_written = counts.read - counts.written.min(counts.read);
    let status = match (&ending.stopped, counts.complete()) {
        (Some(why), _) => match &ending.last_read {
            Some(last) => format!("stopped: {why}; input read up to {last}, nothing after it"),
            None => format!("stopped: {why}; no input was read"),
        },
        (None, true) => "complete".into(),
        (None, false) => format!(
            "incomplete: {not_written} rows and {} malformed lines not written",
            counts.malformed
        ),
    };
    s.push_str(&format!("status: {status}\n"));
    if ending.failures_listed > 0 {
        s.push_str(&format!(
            "failures: {} listed in {}\n",
            ending.failures_listed, ending.failures_to
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_count() {
        let counts = Counts {
            read: 10,
            written: 7,
            rejected: 2,
            failed: 1,
            malformed: 3,
            skipped_stale: 4,
        };
        let ending = Ending {
            stopped: None,
            last_read: None,
            failures_listed: 6,
            failures_to: "f.csv".into(),
            pace: Some("max rate 5 rows/s".into()),
        };
        let text = render("batch load", &counts, Duration::from_secs(2), &ending);
        for line in [
            "read: 10",
            "written: 7",
            "rejected: 2",
            "failed: 1",
            "malformed: 3",
            "skipped_stale: 4",
            "rate: 4 rows/s",
            "failures: 6 listed in f.csv",
            "pace: max rate 5 rows/s",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(text.contains("status: incomplete"));
    }
}
