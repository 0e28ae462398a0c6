//! The load itself: the main thread reads rows, checks them and routes each
//! to a writer by its id (so one id's rows stay in input order); writer
//! threads send each chunk as one pipeline (so Redis runs one while the next
//! is built), retry the rows Redis was unavailable for, and keep the account.
//!
//! Memory is bounded by the chunks in flight (per writer: one being filled,
//! one queued, one being written), reused rather than reallocated.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

use super::chunk::{Chunk, Origin};
use super::error::LoaderError;
use super::input::{RowSource, Step};
use super::limits::Limits;
use super::progress::Progress;
use super::summary::{Counts, FailureSink, Kind, Tally};
use crate::error::StoreError;
use crate::event_clock;
use crate::pacing::Pacer;
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
    pub limits: Limits,
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
    /// Pipelines sent again after Redis was unavailable (each waited out
    /// its backoff first).
    pub retries: u64,
}

/// State the reader and the writers share.
struct Shared<'a> {
    store: &'a FeatureStore,
    /// Held to before each pipeline (see `pacing`); none: full speed.
    pacer: Option<&'a Pacer>,
    names: Vec<String>,
    tally: Tally,
    failures: Mutex<&'a mut FailureSink>,
    /// Set when Redis stayed unavailable: writers stop sending and list what
    /// is left as failed; the reader stops reading.
    halted: AtomicBool,
    halt_reason: Mutex<Option<String>>,
    sink_error: Mutex<Option<LoaderError>>,
    retries: AtomicU64,
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

/// The load, unpaced (see `run_paced`).
pub fn run(
    store: &FeatureStore,
    inputs: Vec<Input>,
    settings: Settings,
    failures: &mut FailureSink,
    progress: &mut Progress,
) -> Outcome {
    run_paced(store, None, inputs, settings, failures, progress)
}

/// The load, each pipeline admitted by `pacer` first.
pub fn run_paced(
    store: &FeatureStore,
    pacer: Option<&Pacer>,
    inputs: Vec<Input>,
    settings: Settings,
    failures: &mut FailureSink,
    progress: &mut Progress,
) -> Outcome {
    let shared = Shared {
        store,
        pacer,
        names: inputs.iter().map(|i| i.name.clone()).collect(),
        tally: Tally::default(),
        failures: Mutex::new(failures),
        halted: AtomicBool::new(false),
        halt_reason: Mutex::new(None),
        sink_error: Mutex::new(None),
        retries: AtomicU64::new(0),
    };
    let writers = settings.writers.max(1);
    let (free_tx, free_rx) = mpsc::channel::<Chunk>();

    let read = std::thread::scope(|scope| {
        let mut queues = Vec::with_capacity(writers);
        for _ in 0..writers {
            // One chunk queued per writer while it writes another: the
            // reader fills the next meanwhile.
            let (tx, rx) = mpsc::sync_channel::<Chunk>(1);
            queues.push(tx);
            let free_tx = free_tx.clone();
            let shared = &shared;
            scope.spawn(move || writer_loop(shared, rx, free_tx, settings));
        }
        // Each writer sees its queue close when the reader drops `queues`.
        let router = Router {
            filling: (0..writers)
                .map(|_| Chunk::new(settings.chunk_size.max(1)))
                .collect(),
            queues,
            free_rx,
            cap: settings.chunk_size.max(1),
            hasher: RandomState::new(),
        };
        read_all(&shared, inputs, settings, router, progress)
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
        retries: shared.retries.load(Relaxed),
    }
}

struct ReadEnd {
    stopped: Option<String>,
    last_read: Option<String>,
    error: Option<LoaderError>,
}

/// Hands rows to the writers so that every row of an id goes to the same
/// writer (by a hash of the id), in input order. A writer writes its
/// chunks one after the other and finishes one (retries included) before
/// the next, and a chunk holds each id once: so for each id the last row
/// read is the last one written, whatever the number of writers, the chunk
/// size or the retries.
struct Router {
    /// Per writer: the chunk being filled.
    filling: Vec<Chunk>,
    queues: Vec<SyncSender<Chunk>>,
    /// Chunks the writers are done with, for reuse.
    free_rx: Receiver<Chunk>,
    cap: usize,
    hasher: RandomState,
}

impl Router {
    /// Moves the staged row into its writer's chunk; sends the chunk when
    /// it is full (or when the row cannot be merged into it).
    ///
    /// The store checks every row it is given (id, names, counts) and
    /// refuses a bad one alone; only a row about to be merged with another
    /// is checked here first (both of them), so that a bad row never takes
    /// a good one of the same id down with it. Most rows are checked once,
    /// by a writer thread, off the reader's path.
    fn route(&mut self, shared: &Shared, staging: &mut Chunk, settings: &Settings) {
        let Some(row) = staging.rows().first() else {
            return;
        };
        let hash = self.hasher.hash_one(row.id.as_str());
        let w = (hash % self.filling.len() as u64) as usize;
        let check = |row: &BatchRow| {
            let checked = match settings.mode {
                WriteMode::Batch { .. } => shared.store.check_batch_row(row),
                WriteMode::Stream { .. } => shared.store.check_streaming_row(row),
            };
            checked.map(drop).map_err(|e| e.to_string())
        };
        let chunk = &mut self.filling[w];
        match chunk.find(hash, &row.id) {
            None => chunk.absorb_new(staging, hash, false),
            // Dated rows are never merged (see `chunk`): this chunk goes,
            // the row starts the next; the scripts order them by time.
            Some(_) if row.event_time_ms.is_some() => {
                self.send(shared, w);
                self.filling[w].absorb_new(staging, hash, false);
            }
            Some(i) => {
                if let Err(reason) = check(row) {
                    reject_staged(shared, staging, &reason);
                    return;
                }
                if !chunk.is_checked(i) {
                    if let Err(reason) = check(&chunk.rows()[i]) {
                        // The earlier row (alone: unchecked rows are never
                        // merged) is refused; the later one takes its place.
                        fail_row(shared, chunk, i, Kind::Rejected, &reason);
                        chunk.replace(i, staging);
                        return;
                    }
                    chunk.mark_checked(i);
                }
                if !chunk.merge(i, staging, settings.limits.max_row_bytes) {
                    self.send(shared, w);
                    self.filling[w].absorb_new(staging, hash, true);
                }
            }
        }
        // Counted in input rows, not writes: a run of rows of one id (all
        // merged into one write) still goes out every `cap` rows.
        if self.filling[w].inputs() >= self.cap {
            self.send(shared, w);
        }
    }

    fn send(&mut self, shared: &Shared, w: usize) {
        if self.filling[w].is_empty() {
            return;
        }
        let next = self
            .free_rx
            .try_recv()
            .unwrap_or_else(|_| Chunk::new(self.cap));
        let mut full = std::mem::replace(&mut self.filling[w], next);
        // Dated now, once: its retries replay these times, and a later chunk
        // of the same writer (so every later row of its ids) is newer.
        if full.needs_stamp() {
            full.stamp(event_clock::now_ms());
        }
        // A send fails only when the writer is gone (writers never exit
        // early); the rows are then counted failed here.
        if let Err(mpsc::SendError(lost)) = self.queues[w].send(full) {
            fail_all(shared, &lost, "not sent: no writer left");
        }
    }

    fn send_all(&mut self, shared: &Shared) {
        for w in 0..self.filling.len() {
            self.send(shared, w);
        }
    }
}

/// The reader: reads each input in turn into a one-row staging chunk,
/// checks the row, and routes it to its writer. Stops early on --strict's
/// first malformed line, on an input error, or when the writers halted.
fn read_all(
    shared: &Shared,
    inputs: Vec<Input>,
    settings: Settings,
    mut router: Router,
    progress: &mut Progress,
) -> ReadEnd {
    let mut staging = Chunk::new(1);
    // The last row or line read; named only at the end (not per row).
    let mut last: Option<Origin> = None;
    let mut end = ReadEnd {
        stopped: None,
        last_read: None,
        error: None,
    };
    let mut rows_since_update = 0u32;

    'inputs: for (index, input) in inputs.into_iter().enumerate() {
        let source_no = index as u32;
        let name = input.name;
        if index > 0 {
            // Opening may wait for the first bytes of a pipe: what the
            // earlier inputs left in the chunks goes out first.
            router.send_all(shared);
        }
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
            staging.clear();
            let step = match source.next(&mut staging, source_no) {
                Ok(step) => step,
                Err(e) => {
                    end.error = Some(e);
                    break 'inputs;
                }
            };
            match step {
                Step::Row => {
                    shared.tally.read.fetch_add(1, Relaxed);
                    let (Some(row), Some(origin)) = (
                        staging.rows().first(),
                        staging.origins().first().and_then(|o| o.first()).copied(),
                    ) else {
                        continue;
                    };
                    last = Some(origin);
                    if let Err(reason) = settings.limits.check_sizes(row) {
                        shared.not_written(origin, &row.id, Kind::Rejected, &reason);
                        continue;
                    }
                    router.route(shared, &mut staging, &settings);
                    rows_since_update += 1;
                    if rows_since_update >= 1024 {
                        rows_since_update = 0;
                        progress.update(&shared.tally.counts());
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
                Step::BadTime { line, id, reason } => {
                    shared.tally.read.fetch_add(1, Relaxed);
                    let origin = Origin {
                        source: source_no,
                        line,
                    };
                    last = Some(origin);
                    shared.not_written(origin, &id, Kind::Rejected, &reason);
                    if settings.strict {
                        end.stopped = Some(format!(
                            "--strict: {name} line {line} has no valid event time"
                        ));
                        break 'inputs;
                    }
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
                    router.send_all(shared);
                    progress.update(&shared.tally.counts());
                }
                Step::End => break,
            }
        }
    }
    // Rows read before a stop are still written (or, after a halt, listed
    // as not sent by the writers).
    router.send_all(shared);
    progress.update(&shared.tally.counts());
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
    queue: Receiver<Chunk>,
    free_tx: Sender<Chunk>,
    settings: Settings,
) {
    // Ends when the reader is done and the queue drained.
    while let Ok(mut chunk) = queue.recv() {
        match shared.halt_reason() {
            Some(reason) => fail_all(
                shared,
                &chunk,
                &format!("not sent: the load stopped ({reason})"),
            ),
            None => {
                // Paced by the writes it costs Redis (rows merged per id
                // are one write); retries are paced by their backoff.
                let writes = chunk.len() as u64;
                if let Some(p) = shared.pacer {
                    p.admit(writes);
                }
                write_chunk(shared, &mut chunk, settings);
                if let Some(p) = shared.pacer {
                    p.done(writes);
                }
            }
        }
        chunk.clear();
        // The reader may be done and gone: then the chunk is just dropped.
        let _ = free_tx.send(chunk);
    }
}

/// Lists the staged row as rejected and drops it.
fn reject_staged(shared: &Shared, staging: &mut Chunk, reason: &str) {
    if !staging.is_empty() {
        fail_row(shared, staging, 0, Kind::Rejected, reason);
    }
    staging.clear();
}

/// Lists every input row of the chunk as failed.
fn fail_all(shared: &Shared, chunk: &Chunk, reason: &str) {
    for i in 0..chunk.len() {
        fail_row(shared, chunk, i, Kind::Failed, reason);
    }
}

/// Lists every input row merged into chunk row `i` as not written.
fn fail_row(shared: &Shared, chunk: &Chunk, i: usize, kind: Kind, reason: &str) {
    let id = &chunk.rows()[i].id;
    for origin in &chunk.origins()[i] {
        shared.not_written(*origin, id, kind, reason);
    }
}

/// What became of the rows of one write call.
struct Settled {
    /// Chunk rows whose write was not confirmed (Redis unavailable), in
    /// chunk order.
    unconfirmed: Vec<usize>,
    last_error: Option<StoreError>,
}

/// Sends `rows[range]` of the chunk and accounts for every input row in it
/// that ended written, rejected or failed. `Err` when the whole call was
/// refused (a bad TTL): nothing was sent.
fn send_rows(
    shared: &Shared,
    chunk: &Chunk,
    range: std::ops::Range<usize>,
    settings: Settings,
) -> Result<Settled, StoreError> {
    let report = write_rows(shared.store, &chunk.rows()[range.clone()], settings.mode)?;
    let origins = &chunk.origins()[range.clone()];
    let mut written: usize = origins.iter().map(Vec::len).sum();
    let mut settled = Settled {
        unconfirmed: Vec::new(),
        last_error: None,
    };
    for failure in report.failed {
        let index = range.start + failure.index;
        let row_origins = &chunk.origins()[index];
        written -= row_origins.len();
        // A protocol error is one argument's fault, not its whole call's:
        // sent again row by row (`isolate`), only that row fails.
        let protocol_error = range.len() > 1 && is_protocol_error(&failure.error);
        if failure.error.is_unavailable() || protocol_error {
            settled.unconfirmed.push(index);
            settled.last_error = Some(failure.error);
        } else {
            let kind = kind_of(&failure.error);
            fail_row(shared, chunk, index, kind, &explain(&failure.error));
        }
    }
    shared.tally.written.fetch_add(written as u64, Relaxed);
    shared
        .tally
        .skipped_stale
        .fetch_add(report.skipped_stale as u64, Relaxed);
    settled.unconfirmed.sort_unstable();
    Ok(settled)
}

/// Writes one chunk (one pipeline); rows Redis was unavailable for are
/// retried, with backoff, up to `settings.retries` times, before the writer
/// takes its next chunk.
///
/// A connection Redis closes is not always an outage: Redis answers a
/// request it cannot parse (an argument over its `proto-max-bulk-len`) with
/// a protocol error and closes the connection. So when a write breaks its
/// connection (twice: the store retries once on a fresh one) while Redis
/// still answers PING, the unconfirmed rows are sent one at a time, once per
/// chunk; a row that breaks the connection alone, again and again while
/// PING is answered, is that row's fault: it fails by itself and the load
/// goes on.
fn write_chunk(shared: &Shared, chunk: &mut Chunk, settings: Settings) {
    let mut attempt = 0u32;
    let mut isolated = false;
    loop {
        let settled = match send_rows(shared, chunk, 0..chunk.len(), settings) {
            Ok(settled) => settled,
            Err(e) => {
                let kind = kind_of(&e);
                fail_all(shared, chunk, &e.to_string());
                if kind == Kind::Failed {
                    shared.halt(e.to_string());
                }
                return;
            }
        };
        let Some(mut error) = settled.last_error else {
            return;
        };
        chunk.keep_only(&settled.unconfirmed);
        if !isolated && !looks_like_timeout(&error) && shared.store.ping().is_ok() {
            isolated = true;
            match isolate(shared, chunk, settings) {
                None => return,
                Some(e) => error = e,
            }
        }
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
            chunk.inputs(),
            delay.as_millis(),
            attempt + 1,
            settings.retries
        );
        std::thread::sleep(delay);
        shared.retries.fetch_add(1, Relaxed);
        attempt += 1;
    }
}

/// Sends the chunk's rows one at a time, in order (see `write_chunk`).
/// `None` when every row is settled; else the chunk keeps the rows still
/// unconfirmed (Redis stopped answering) and the last error.
fn isolate(shared: &Shared, chunk: &mut Chunk, settings: Settings) -> Option<StoreError> {
    for i in 0..chunk.len() {
        let mut tries = 0;
        loop {
            let settled = match send_rows(shared, chunk, i..i + 1, settings) {
                Ok(settled) => settled,
                Err(e) => {
                    fail_row(shared, chunk, i, kind_of(&e), &e.to_string());
                    break;
                }
            };
            let Some(error) = settled.last_error else {
                break;
            };
            // A timeout is Redis being slow or paused (CLIENT PAUSE), never a
            // request it refused: like an outage, the rest waits for the
            // retries.
            if looks_like_timeout(&error) || shared.store.ping().is_err() {
                let rest: Vec<usize> = (i..chunk.len()).collect();
                chunk.keep_only(&rest);
                return Some(error);
            }
            tries += 1;
            if tries >= ROW_FAULT_TRIES {
                let reason = format!(
                    "redis closed the connection on this row alone {} times while answering \
                     others: it refuses the request (a value over its proto-max-bulk-len?): {error}",
                    2 * ROW_FAULT_TRIES
                );
                fail_row(shared, chunk, i, Kind::Failed, &reason);
                break;
            }
        }
    }
    None
}

/// How many times a row is sent alone (each on a connection and, if that
/// breaks, once more on a fresh one), with Redis answering PING between,
/// before a broken connection is blamed on it: a connection killed by
/// chance (a failover, `CLIENT KILL`) six times in a row on the same small
/// request, while others go through, does not happen.
const ROW_FAULT_TRIES: u32 = 3;

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

/// The reason listed for a row Redis refused; a protocol error (Redis
/// then closes the connection) says which limit it most likely hit.
fn explain(e: &StoreError) -> String {
    match e {
        StoreError::Redis(_) if is_protocol_error(e) => format!(
            "{e} (Redis refused the request and closed the connection: an argument over \
             its proto-max-bulk-len?)"
        ),
        _ => e.to_string(),
    }
}

/// The error the store reports for a read or write timeout (the socket
/// timeouts surface as an I/O error: EAGAIN on Linux, "timed out" elsewhere).
fn looks_like_timeout(e: &StoreError) -> bool {
    match e {
        StoreError::Unavailable(m) => {
            let m = m.to_ascii_lowercase();
            [
                "timed out",
                "timeout",
                "os error 11",
                "temporarily unavailable",
                "would block",
            ]
            .iter()
            .any(|t| m.contains(t))
        }
        _ => false,
    }
}

fn is_protocol_error(e: &StoreError) -> bool {
    matches!(e, StoreError::Redis(m) if m.contains("Protocol error"))
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
    retry_while_unavailable(settings, || store.ping())
}

/// `op`, again after the loader's backoff while Redis is unavailable, up to
/// `settings.retries` times: the start-up calls (the capability check, the
/// value limit) ride out a dropped connection as the rows do.
pub fn retry_while_unavailable<T>(
    settings: &Settings,
    mut op: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let mut attempt = 0u32;
    loop {
        match op() {
            Err(e) if e.is_unavailable() && attempt < settings.retries => {
                std::thread::sleep(backoff(settings.backoff, attempt));
                attempt += 1;
            }
            other => return other,
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

    fn settings(retries: u32) -> Settings {
        Settings {
            mode: WriteMode::Batch { ttl_seconds: 60 },
            chunk_size: 1,
            writers: 1,
            retries,
            backoff: Duration::from_millis(1),
            strict: false,
            limits: Limits::default(),
        }
    }

    #[test]
    fn start_up_calls_ride_out_outages_but_not_refusals() {
        let mut calls = 0;
        let got = retry_while_unavailable(&settings(5), || {
            calls += 1;
            if calls < 3 {
                Err(StoreError::Unavailable("unexpected end of file".into()))
            } else {
                Ok(calls)
            }
        });
        assert_eq!(got.ok(), Some(3));

        let mut calls = 0;
        let got: Result<(), _> = retry_while_unavailable(&settings(5), || {
            calls += 1;
            Err(StoreError::Redis("NOPERM".into()))
        });
        assert!(matches!(got, Err(StoreError::Redis(_))));
        assert_eq!(calls, 1, "a refusal is not retried");

        let mut calls = 0;
        let got: Result<(), _> = retry_while_unavailable(&settings(2), || {
            calls += 1;
            Err(StoreError::Unavailable("down".into()))
        });
        assert!(got.is_err_and(|e| e.is_unavailable()));
        assert_eq!(calls, 3, "the first call and two retries");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let base = Duration::from_millis(100);
        assert_eq!(backoff(base, 0), Duration::from_millis(100));
        assert_eq!(backoff(base, 3), Duration::from_millis(800));
        assert_eq!(backoff(base, 40), MAX_BACKOFF);
    }
}
