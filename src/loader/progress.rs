//! Progress: a bar with rows/s when stderr is a terminal, a plain line every
//! few seconds when it is not (a log), nothing with --quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressState, ProgressStyle};

use super::summary::Counts;
use crate::pacing::Pacer;

const PLAIN_EVERY: Duration = Duration::from_secs(2);

pub enum Progress {
    Off,
    Bar(ProgressBar, Option<Pacer>),
    Plain {
        start: Instant,
        last: Instant,
        every: Duration,
        pacer: Option<Pacer>,
    },
}

impl Progress {
    /// `total` is known for synthetic loads only.
    pub fn new(quiet: bool, total: Option<u64>) -> Progress {
        if quiet {
            return Progress::Off;
        }
        if !std::io::stderr().is_terminal() {
            let now = Instant::now();
            return Progress::Plain {
                start: now,
                last: now,
                every: PLAIN_EVERY,
                pacer: None,
            };
        }
        let bar = match total {
            Some(n) => {
                let bar = ProgressBar::new(n);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{bar:40.cyan/blue} {human_pos}/{human_len} rows  {rate}  eta {eta}  {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key("rate", rate),
                );
                bar
            }
            None => {
                let bar = ProgressBar::new_spinner();
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} {human_pos} rows  {rate}  {elapsed}  {msg}",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar
            }
        };
        Progress::Bar(bar, None)
    }

    /// Shows the pacer's limit and the latency it measures; a plain line
    /// (stderr not a terminal) every `every`.
    pub fn with_pace(mut self, pacer: &Pacer, every: Duration) -> Progress {
        match &mut self {
            Progress::Off => {}
            Progress::Bar(_, p) => *p = Some(pacer.clone()),
            Progress::Plain {
                every: e, pacer: p, ..
            } => {
                *e = every;
                *p = Some(pacer.clone());
            }
        }
        self
    }

    /// Called once per chunk: cheap when nothing is due.
    pub fn update(&mut self, counts: &Counts) {
        match self {
            Progress::Off => {}
            Progress::Bar(bar, pacer) => {
                bar.set_position(counts.done());
                let pace = pacer
                    .as_ref()
                    .map(|p| p.snapshot().progress_text())
                    .unwrap_or_default();
                if counts.done() > counts.written || counts.malformed > 0 {
                    bar.set_message(format!(
                        "{} not written, {} malformed; {pace}",
                        counts.done() - counts.written,
                        counts.malformed
                    ));
                } else {
                    bar.set_message(pace);
                }
            }
            Progress::Plain {
                start,
                last,
                every,
                pacer,
            } => {
                let now = Instant::now();
                if now.duration_since(*last) >= *every {
                    *last = now;
                    let secs = now.duration_since(*start).as_secs_f64().max(1e-9);
                    let pace = pacer.as_ref().map_or(String::new(), |p| {
                        let s = p.snapshot();
                        format!(
                            " (now {} rows/s); {}",
                            s.measured_rows_per_s,
                            s.progress_text()
                        )
                    });
                    eprintln!(
                        "fs-loader: {} read, {} written, {} not written, {} malformed, {} skipped stale, {:.0} rows/s{pace}",
                        counts.read,
                        counts.written,
                        counts.done() - counts.written,
                        counts.malformed,
                        counts.skipped_stale,
                        counts.written as f64 / secs,
                    );
                }
            }
        }
    }

    pub fn finish(&mut self, counts: &Counts) {
        if let Progress::Bar(bar, _) = self {
            bar.set_position(counts.done());
            bar.finish_and_clear();
        }
    }
}

/// Whole rows per second (indicatif's `per_sec` prints four decimals).
fn rate(state: &ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.0} rows/s", state.per_sec());
}
