//! The load itself: the main thread reads rows into chunks; writer threads
//! send each chunk as one pipeline (so Redis runs one while the next is
//! built), retry the rows Redis was unavailable for, and keep the account.
//!
//! Memory is bounded by the chunks in flight (`writers` queued plus
//! `writers` being written), reused rather than reallocated.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use super::chunk::{Chunk, Origin};
use super::error::LoaderError;
use super::input::{RowSource, Step};
use super::progress::Progress;
use super::summary::{Counts, FailureSink, Kind, Tally};
use crate::error::StoreError;
use crate::store::{BatchRow, FeatureStore, WriteReport};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
pub enum WriteMode {
    /// `write_batch_rows` with this key TTL.
    Batch { ttl_seconds: u64 },
    /// `write_streaming` with this per-field TTL.
    Stream { field_ttl_seconds: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub mode: WriteMode,
    pub chunk_size: usize,
    pub writers: usize,
    pub retries: u32,
    pub backoff: Duration,
    pub strict: bool,
}

/// Set by the Ctrl-C handler: the reader stops at the next row, the chunks
/// already read are still written, and the summary is printed.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// One input of the run, opened when the load reaches it.
pub struct Input {
    pub name: String,
    pub open: Box<dyn FnOnce() -> Result<Box<dyn RowSource + Send>, LoaderError> + Send>,
}

/// What `run` hands back for the summary.
pub struct Outcome {
    pub counts: Counts,
    /// Why the load stopped before the end of its input.
    pub stopped: Option<String>,
    /// Redis was unavailable (after the retries).
    pub unavailable: bool,
    /// Ctrl-C stopped the reading.
    pub interrupted: bool,
    pub last_read: Option<String>,
    /// An error that ended the run (an unreadable input, the failures file).
    pub error: Option<LoaderError>,
}

/// State the reader and the writers share.
struct Shared<'a> {
    store: &'a FeatureStore,
    names: Vec<String>,
    tally: Tally,
    failures: Mutex<&'a mut FailureSink>,
    /// Set when Redis stayed unavailable: writers stop sending and list what
    /// is left as failed; the reader stops reading.
    halted: AtomicBool,
    halt_reason: Mutex<Option<String>>,
    sink_error: Mutex<Option<LoaderError>>,
}

impl Shared<'_> {
    fn halt(&self, reason: String) {
        let mut slot = self.halt_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason);
        }
        self.halted.store(true, Relaxed);
    }

    fn halt_reason(&self) -> Option<String> {
        self.halt_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a row (or line) that was not written and lists it.
    fn not_written(&self, origin: Origin, id: &str, kind: Kind, reason: &str) {
        let counter = match kind {
            Kind::Rejected => &self.tally.rejected,
            Kind::Failed => &self.tally.failed,
            Kind::Malformed => &self.tally.malformed,
        };
        counter.fetch_add(1, Relaxed);
        let name = self
            .names
            .get(origin.source as usize)
            .map_or("?", String::as_str);
        let mut sink = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = sink.record(name, origin.line, id, kind, reason) {
            let mut first = self.sink_error.lock().unwrap_or_else(|p| p.into_inner());
            if first.is_none() {
                *first = Some(e);
            }
            self.halt("the failures list could not be written".into());
        }
    }
}

pub fn run(
    store: &FeatureStore,
    inputs: Vec<Input>,
    settings: Settings,
    failures: &mut FailureSink,
    progress: &mut Progress,
) -> Outcome {
    let shared = Shared {
        store,
        names: inputs.iter().map(|i| i.name.clone()).collect(),
        tally: Tally::default(),
        failures: Mutex::new(failures),
        halted: AtomicBool::new(false),
        halt_reason: Mutex::new(None),
        sink_error: Mutex::new(None),
    };
    let writers = settings.writers.max(1);
    let (work_tx, work_rx) = mpsc::sync_channel::<Chunk>(writers);
    let work_rx = Mutex::new(work_rx);
    let (free_tx, free_rx) = mpsc::channel::<Chunk>();

    let read = std::thread::scope(|scope| {
        for _ in 0..writers {
            let free_tx = free_tx.clone();
            let (shared, work_rx) = (&shared, &work_rx);
            scope.spawn(move || writer_loop(shared, work_rx, free_tx, settings));
        }
        // The writers see the channel close when the reader drops work_tx.
        read_all(&shared, inputs, settings, work_tx, free_rx, progress)
    });

    let counts = shared.tally.counts();
    progress.finish(&counts);
    let unavailable = shared.halted.load(Relaxed);
    let sink_error = shared
        .sink_error
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    let halt = shared
        .halt_reason
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Outcome {
        counts,
        stopped: halt.or(read.stopped),
        unavailable: unavailable && sink_error.is_none(),
        interrupted: INTERRUPTED.load(Relaxed),
        last_read: read.last_read,
        error: read.error.or(sink_error),
    }
}

struct ReadEnd {
    stopped: Option<String>,
    last_read: Option<String>,
    error: Option<LoaderError>,
}

/// The reader: fills chunks from each input in turn and hands them to the
/// writers. Stops early on --strict's first malformed line, on an input
/// error, or when the writers halted.
fn read_all(
    shared: &Shared,
    inputs: Vec<Input>,
    settings: Settings,
    work_tx: SyncSender<Chunk>,
    free_rx: Receiver<Chunk>,
    progress: &mut Progress,
) -> ReadEnd {
    let cap = settings.chunk_size.max(1);
    let mut chunk = Chunk::new(cap);
    // The last row or line read; named only at the end (not per row).
    let mut last: Option<Origin> = None;
    let mut end = ReadEnd {
        stopped: None,
        last_read: None,
        error: None,
    };
    let send = |chunk: &mut Chunk, progress: &mut Progress| {
        let next = free_rx.try_recv().unwrap_or_else(|_| Chunk::new(cap));
        let full = std::mem::replace(chunk, next);
        // A send fails only when every writer is gone (they never exit
        // early); the rows are then counted failed here.
        if let Err(mpsc::SendError(lost)) = work_tx.send(full) {
            for (row, origin) in lost.rows().iter().zip(lost.origins()) {
                shared.not_written(*origin, &row.id, Kind::Failed, "not sent: no writer left");
            }
        }
        progress.update(&shared.tally.counts());
    };

    'inputs: for (index, input) in inputs.into_iter().enumerate() {
        let source_no = index as u32;
        let name = input.name;
        let mut source = match (input.open)() {
            Ok(s) => s,
            Err(e) => {
                end.error = Some(e);
                break 'inputs;
            }
        };
        loop {
            if shared.halted.load(Relaxed) {
                break 'inputs;
            }
            if INTERRUPTED.load(Relaxed) {
                end.stopped = Some("interrupted (Ctrl-C)".into());
                break 'inputs;
            }
            let step = match source.next(&mut chunk, source_no) {
                Ok(step) => step,
                Err(e) => {
                    end.error = Some(e);
                    break 'inputs;
                }
            };
            match step {
                Step::Row => {
                    shared.tally.read.fetch_add(1, Relaxed);
                    last = chunk.origins().last().copied();
                    if chunk.len() >= cap {
                        send(&mut chunk, progress);
                    }
                }
                Step::Rejected { line, id, reason } => {
                    shared.tally.read.fetch_add(1, Relaxed);
                    let origin = Origin {
                        source: source_no,
                        line,
                    };
                    last = Some(origin);
                    shared.not_written(origin, &id, Kind::Rejected, &reason);
                }
                Step::Malformed { line, reason } => {
                    let origin = Origin {
                        source: source_no,
                        line,
                    };
                    last = Some(origin);
                    shared.not_written(origin, "", Kind::Malformed, &reason);
                    if settings.strict {
                        end.stopped = Some(format!("--strict: {name} line {line} is malformed"));
                        break 'inputs;
                    }
                }
                Step::Idle => {
                    if !chunk.is_empty() {
                        send(&mut chunk, progress);
                    }
                }
                Step::End => break,
            }
        }
    }
    // Rows read before a stop are still written (or, after a halt, listed
    // as not sent by the writers).
    if !chunk.is_empty() {
        send(&mut chunk, progress);
    }
    end.last_read = last.map(|o| {
        let name = shared
            .names
            .get(o.source as usize)
            .map_or("?", String::as_str);
        format!("{name} line {}", o.line)
    });
    end
}

fn writer_loop(
    shared: &Shared,
    work_rx: &Mutex<Receiver<Chunk>>,
    free_tx: Sender<Chunk>,
    settings: Settings,
) {
    loop {
        let next = work_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(mut chunk) = next else {
            return;
        };
        match shared.halt_reason() {
            Some(reason) => fail_all(
                shared,
                &chunk,
                &format!("not sent: the load stopped ({reason})"),
            ),
            None => write_chunk(shared, &mut chunk, settings),
        }
        chunk.clear();
        // The reader may be done and gone: then the chunk is just dropped.
        let _ = free_tx.send(chunk);
    }
}

fn fail_all(shared: &Shared, chunk: &Chunk, reason: &str) {
    for (row, origin) in chunk.rows().iter().zip(chunk.origins()) {
        shared.not_written(*origin, &row.id, Kind::Failed, reason);
    }
}

/// Writes one chunk (one pipeline); rows Redis was unavailable for are
/// retried alone, with backoff, up to `settings.retries` times.
fn write_chunk(shared: &Shared, chunk: &mut Chunk, settings: Settings) {
    let mut attempt = 0u32;
    loop {
        let report = match write_rows(shared.store, chunk.rows(), settings.mode) {
            Ok(report) => report,
            Err(e) => {
                // The whole call was refused (a bad TTL): no row was sent.
                let kind = kind_of(&e);
                fail_all(shared, chunk, &e.to_string());
                if kind == Kind::Failed {
                    shared.halt(e.to_string());
                }
                return;
            }
        };
        shared
            .tally
            .written
            .fetch_add(report.written as u64, Relaxed);
        let mut retry = Vec::new();
        let mut last_unavailable = None;
        for failure in report.failed {
            let origin = chunk.origins()[failure.index];
            if failure.error.is_unavailable() {
                retry.push(failure.index);
                last_unavailable = Some(failure.error);
            } else {
                let kind = kind_of(&failure.error);
                shared.not_written(origin, &failure.id, kind, &failure.error.to_string());
            }
        }
        let Some(error) = last_unavailable else {
            return;
        };
        retry.sort_unstable();
        chunk.keep_only(&retry);
        if attempt >= settings.retries || shared.halted.load(Relaxed) {
            let reason = format!(
                "not confirmed written: {error} (after {} attempts)",
                attempt + 1
            );
            fail_all(shared, chunk, &reason);
            shared.halt(error.to_string());
            return;
        }
        let delay = backoff(settings.backoff, attempt);
        // Said even with --quiet: an operator watching a stalled load needs
        // to know it is waiting on Redis, not hung.
        eprintln!(
            "fs-loader: {error}; retrying {} rows in {} ms (retry {} of {})",
            chunk.len(),
            delay.as_millis(),
            attempt + 1,
            settings.retries
        );
        std::thread::sleep(delay);
        attempt += 1;
    }
}

fn write_rows(
    store: &FeatureStore,
    rows: &[BatchRow],
    mode: WriteMode,
) -> Result<WriteReport, StoreError> {
    match mode {
        WriteMode::Batch { ttl_seconds } => store.write_batch_rows(rows, ttl_seconds),
        WriteMode::Stream { field_ttl_seconds } => {
            store.update_streaming_rows(rows, field_ttl_seconds)
        }
    }
}

fn kind_of(e: &StoreError) -> Kind {
    match e {
        StoreError::InvalidInput(_) => Kind::Rejected,
        StoreError::Unavailable(_) | StoreError::Redis(_) | StoreError::WrongType { .. } => {
            Kind::Failed
        }
    }
}

/// PINGs Redis with the load's retry policy; the last error if it never
/// answers.
pub fn wait_for_redis(store: &FeatureStore, settings: &Settings) -> Result<(), StoreError> {
    let mut attempt = 0u32;
    loop {
        match store.ping() {
            Ok(()) => return Ok(()),
            Err(e) if e.is_unavailable() && attempt < settings.retries => {
                std::thread::sleep(backoff(settings.backoff, attempt));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn backoff(base: Duration, attempt: u32) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16))
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3), Duration::from_millis(800));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }
}
