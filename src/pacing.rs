//! Pacing: how fast a bulk writer (the loader, the server's `/bulk-load`,
//! the streaming worker) may write while other clients share the Redis.
//!
//! Redis runs one command at a time: a client that sends a PING while a
//! write script runs waits for it, so a load at full speed makes every
//! other client wait behind its calls. A [`Pacer`] keeps that wait under a
//! budget: writers call [`Pacer::admit`] before each pipeline (it blocks
//! until the current rate limit allows that many rows) and
//! [`Pacer::done`] after it.
//!
//! In [`PaceMode::Budget`] a probe thread with its own connection (never
//! one of the writers', so it waits in Redis like any other client would)
//! sends a PING every [`PROBE_EVERY`] to an AIMD [`Controller`]: every
//! [`DECIDE_EVERY`] PINGs, when the median of the last [`WINDOW_SAMPLES`]
//! is over the budget the limit is multiplied by [`DECREASE`], otherwise it
//! grows by [`STEP_ROWS_PER_S`]. The other modes probe too (the progress
//! line and `/state` show what the load costs others) but never act on it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::error::StoreError;
use crate::tls::TlsConfig;

/// How often the probe PINGs (while writes are being admitted).
pub const PROBE_EVERY: Duration = Duration::from_millis(20);
/// PINGs the median is taken over (about half a second of probing):
/// enough for a median that a short burst of noise does not move, short
/// enough to react within a second.
pub const WINDOW_SAMPLES: usize = 25;
/// PINGs per decision (about 200 ms).
pub const DECIDE_EVERY: usize = 10;
/// The budget's rate a load starts at: modest (about a fifth of one Redis
/// at the batch script's measured cost per row), then ramped.
pub const INITIAL_ROWS_PER_S: f64 = 20_000.0;
/// The budget's lowest limit: a load always progresses, even while others
/// stall Redis for reasons of their own.
pub const FLOOR_ROWS_PER_S: f64 = 5_000.0;
/// The budget's highest limit (in practice the writers never reach it).
pub const CAP_ROWS_PER_S: f64 = 1_000_000.0;
/// Additive increase per decision under budget: about +25,000 rows/s per
/// second, so a load reaches the rate Redis affords within seconds.
pub const STEP_ROWS_PER_S: f64 = 5_000.0;
/// Multiplicative decrease per decision over budget.
pub const DECREASE: f64 = 0.7;
/// The probe pauses when nothing was admitted for this long: an idle
/// server sends no PINGs.
const IDLE_AFTER: Duration = Duration::from_secs(2);
/// How far back the idle baseline (the lowest PING) looks.
const BASELINE_SPAN: Duration = Duration::from_secs(5);
/// The measured rate is over this trailing window.
const MEASURE_SPAN: Duration = Duration::from_secs(2);
/// The probe's connect and I/O timeout: a PING slower than this is a
/// stalled or gone Redis, and the limit is held.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The name the probe's connection carries in `CLIENT LIST`.
pub const PROBE_CLIENT_NAME: &str = "fs-pacer-probe";

/// The largest latency budget a flag takes, in ms (a minute).
pub const MAX_BUDGET_MS: f64 = 60_000.0;
/// The smallest non-zero budget, in ms: 10 us, about the time Redis takes
/// for one small command.
pub const MIN_BUDGET_MS: f64 = 0.01;

/// Parses a `--latency-budget-ms` value: milliseconds, fractions allowed
/// (`0.2` is 200 us: on a machine where reads take a fraction of a
/// millisecond, a whole millisecond of added wait is more than doubling
/// them), 0 for no pacing, at most [`MAX_BUDGET_MS`].
pub fn parse_budget_ms(text: &str) -> Result<f64, String> {
    let ms: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("`{text}` is not a number of milliseconds (e.g. 1 or 0.25)"))?;
    if !ms.is_finite() || !(0.0..=MAX_BUDGET_MS).contains(&ms) {
        return Err(format!(
            "`{text}`: the budget must be from 0 to {MAX_BUDGET_MS} ms"
        ));
    }
    if ms > 0.0 && ms < MIN_BUDGET_MS {
        return Err(format!(
            "`{text}`: a budget under {MIN_BUDGET_MS} ms (10 us) cannot be measured; 0 means no pacing"
        ));
    }
    Ok(ms)
}

/// How a writer is paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PaceMode {
    /// Keep the latency the writes add to other clients' commands under
    /// this (the default: 1 ms).
    Budget(Duration),
    /// A fixed cap, in rows per second.
    MaxRate(u64),
    /// No waiting: for an empty Redis where nothing else runs.
    FullSpeed,
}

impl PaceMode {
    /// `--latency-budget-ms`-style (see [`parse_budget_ms`]): 0 means full
    /// speed.
    pub fn budget_ms(ms: f64) -> PaceMode {
        if ms <= 0.0 || !ms.is_finite() {
            PaceMode::FullSpeed
        } else {
            PaceMode::Budget(Duration::from_secs_f64(ms / 1e3))
        }
    }

    /// Rows per pipeline that suit this mode, when no flag says otherwise.
    ///
    /// Redis serves a client's pipeline as it reads it, about 16 KiB (some
    /// 80 synthetic rows, 0.7 ms of script time) per turn of its event
    /// loop, and every other client waits for that turn: the hold is set by
    /// how much of a pipeline has arrived, not by the rate. Small pipelines
    /// keep each turn short. Measured on 2 cores beside a `/read` client
    /// (`fs-bench --only sharing`, 400,000 users, paced): 1,000-row
    /// pipelines left `/read` at p50 0.32 ms / p99 4.3 ms (idle 0.10 / 0.36)
    /// and PING p99 at 4 ms; 10-row pipelines at 0.28 / 0.83 ms (idle 0.24 /
    /// 0.49) and PING p99 0.4 ms, at 65,000 rows/s. Unpaced, on an empty
    /// Redis, large pipelines amortize the round trip (which matters most
    /// across a network).
    pub fn rows_per_pipeline(&self) -> usize {
        match self {
            PaceMode::FullSpeed => 1000,
            PaceMode::Budget(_) | PaceMode::MaxRate(_) => 10,
        }
    }

    /// Pipelines in flight that suit this mode, when no flag says otherwise.
    ///
    /// A writer sends one pipeline and waits for its reply, so with short
    /// paced pipelines each writer is bound by the round trip (on a VM that
    /// halts idle vCPUs, waking the peer adds tens of microseconds to
    /// each), not by Redis: a third writer keeps the rate the pacer allows
    /// while each call stays 10 rows long. Measured (`fs-bench --only
    /// sharing`, 1,000,000 users, 2 cores, CPUs left to idle as the machine
    /// is configured): 2 writers loaded at 41,700 to 49,300 rows/s (three
    /// runs of five under 45,000), 3 writers at 51,000 to 67,500, `/read`
    /// p99 within 1.1x to 1.7x of idle either way; a fourth writer raised
    /// `/read` p99 to 2.2x. At full speed two writers already keep Redis
    /// busy (1,000-row pipelines).
    pub fn writers_in_flight(&self) -> u32 {
        match self {
            PaceMode::FullSpeed => 2,
            PaceMode::Budget(_) | PaceMode::MaxRate(_) => 3,
        }
    }

    /// As the summary and `/state` say it.
    pub fn describe(&self) -> String {
        match self {
            PaceMode::Budget(b) => format!("latency budget {} ms", fmt_ms(*b)),
            PaceMode::MaxRate(r) => format!("max rate {r} rows/s"),
            PaceMode::FullSpeed => "full speed".into(),
        }
    }
}

/// The AIMD controller, pure logic: fed one probe latency at a time, it
/// moves the limit. No clock, no Redis (see the tests).
#[derive(Debug, Clone)]
pub struct Controller {
    budget: Duration,
    limit: f64,
    /// The last `WINDOW_SAMPLES` PINGs.
    window: VecDeque<Duration>,
    /// Samples since the last decision, and since the last cut: a decision
    /// every `DECIDE_EVERY`, and none on samples from before a cut (they
    /// show the old rate's latency, and would cut it twice).
    since_decision: usize,
    since_cut: usize,
    /// Per `DECIDE_EVERY` samples, their minimum; the lowest over the last
    /// few seconds is the round trip with nothing queued ahead of the PING
    /// (the idle baseline).
    minimums: VecDeque<Duration>,
    block_min: Option<Duration>,
    backoffs: u64,
}

/// What one decision saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reading {
    /// Median PING of the window.
    pub p50: Duration,
    /// `p50` minus the idle baseline: what the writes (and anyone else)
    /// add to a command's wait.
    pub added: Duration,
}

impl Controller {
    pub fn new(budget: Duration) -> Controller {
        Controller {
            budget,
            limit: INITIAL_ROWS_PER_S,
            window: VecDeque::with_capacity(WINDOW_SAMPLES),
            since_decision: 0,
            since_cut: WINDOW_SAMPLES,
            minimums: VecDeque::new(),
            block_min: None,
            backoffs: 0,
        }
    }

    pub fn limit(&self) -> f64 {
        self.limit
    }

    /// How many times the limit was cut.
    pub fn backoffs(&self) -> u64 {
        self.backoffs
    }

    /// One probe result: a PING's latency, or `None` when the probe could
    /// not reach Redis (the limit is held and the window forgotten: an
    /// outage is the writers' retries' business, and it measures nothing).
    /// `measured`: the rows/s the writers actually did. Answers what the
    /// decision saw when this sample completed one.
    ///
    /// The statistic is the median of the last `WINDOW_SAMPLES` PINGs (about
    /// half a second), not their mean or a high percentile: a PING's wait
    /// is mostly "how much of Redis's current work was left when it
    /// arrived", and a short burst of outliers (the probe or Redis
    /// descheduled on a busy machine, a fork for a snapshot) must not cut
    /// the rate, while a load that keeps Redis busy more than about half
    /// the time moves the median at once. The median is also what other
    /// clients feel as their typical latency. The baseline (the lowest
    /// PING of the last few seconds) is taken off, so that a network round
    /// trip is not counted against the budget: only the wait added in
    /// Redis is.
    pub fn observe(&mut self, ping: Option<Duration>, measured: f64) -> Option<Reading> {
        let Some(ping) = ping else {
            self.window.clear();
            self.since_decision = 0;
            return None;
        };
        if self.window.len() == WINDOW_SAMPLES {
            self.window.pop_front();
        }
        self.window.push_back(ping);
        self.since_cut += 1;
        self.since_decision += 1;
        self.block_min = Some(self.block_min.map_or(ping, |m| m.min(ping)));
        if self.since_decision < DECIDE_EVERY {
            return None;
        }
        self.since_decision = 0;
        if let Some(m) = self.block_min.take() {
            self.minimums.push_back(m);
        }
        let keep = (BASELINE_SPAN.as_millis() / (PROBE_EVERY.as_millis() * DECIDE_EVERY as u128))
            .max(1) as usize;
        while self.minimums.len() > keep {
            self.minimums.pop_front();
        }
        let baseline = self.minimums.iter().min().copied().unwrap_or_default();
        let mut sorted: Vec<Duration> = self.window.iter().copied().collect();
        sorted.sort_unstable();
        let p50 = median(&sorted);
        let added = p50.saturating_sub(baseline);
        let reading = Reading { p50, added };
        if self.window.len() < WINDOW_SAMPLES || self.since_cut < WINDOW_SAMPLES {
            return Some(reading);
        }
        if added > self.budget {
            // Cut from the limit, unless the writers did far less (Redis
            // stalled them too): cutting an unused limit changes nothing.
            // Not from the measured rate itself: it trails a ramping limit
            // by a second or two, and would cut twice as deep.
            let base = if measured > 0.0 {
                self.limit.min(measured * 2.0)
            } else {
                self.limit
            };
            self.limit = (base * DECREASE).max(FLOOR_ROWS_PER_S);
            self.backoffs += 1;
            self.since_cut = 0;
        } else {
            // Not far above what the writers reach: a limit far over their
            // pace would allow a burst when they speed up.
            let ceiling = (measured * 2.0).clamp(INITIAL_ROWS_PER_S, CAP_ROWS_PER_S);
            if self.limit < ceiling {
                self.limit = (self.limit + STEP_ROWS_PER_S).min(ceiling);
            }
        }
        Some(reading)
    }
}

fn median(sorted: &[Duration]) -> Duration {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }
}

/// The token schedule, pure logic: each batch books `rows / rate` seconds
/// after the previous one's slot, so writers sharing it go at `rate`
/// together. Nothing accrues while writers are slower than the rate: no
/// burst after a pause.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    next: Option<Instant>,
}

impl Schedule {
    /// When a batch of `rows` may start (now, or later); books its slot.
    pub fn book(&mut self, now: Instant, rows: u64, rate: f64) -> Instant {
        if !rate.is_finite() || rate <= 0.0 {
            return now;
        }
        let start = match self.next {
            Some(next) if next > now => next,
            _ => now,
        };
        self.next = Some(start + Duration::from_secs_f64(rows as f64 / rate));
        start
    }
}

/// What the progress line and `/state` show of a pacer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PaceSnapshot {
    /// "latency budget 1 ms", "max rate 50000 rows/s" or "full speed".
    pub mode: String,
    /// The rate writers are held to now; `None`: not limited.
    pub limit_rows_per_s: Option<u64>,
    /// Rows/s the writers did over the last 2 s.
    pub measured_rows_per_s: u64,
    /// Median PING of the probe's latest window, in ms (`None`: nothing
    /// measured yet, or Redis unreachable).
    pub redis_latency_ms: Option<f64>,
    /// That median minus the idle baseline (the lowest PING of the last
    /// 5 s): the wait Redis adds to a command now, in ms.
    pub added_latency_ms: Option<f64>,
    /// Why the probe's latest PING failed, while it does.
    pub probe_error: Option<String>,
    /// Times the limit was cut for being over budget.
    pub backoffs: u64,
    /// Lowest and highest limit so far (budget mode).
    pub limit_min_rows_per_s: Option<u64>,
    pub limit_max_rows_per_s: Option<u64>,
    /// Rows admitted since the pacer was made.
    pub rows_total: u64,
}

/// A writer's pacer; clones share one limit, one schedule and one probe.
/// The probe thread stops (and is joined) when the last clone is dropped.
#[derive(Clone)]
pub struct Pacer {
    shared: Arc<Shared>,
    _probe: Arc<ProbeGuard>,
}

struct Shared {
    mode: PaceMode,
    state: Mutex<State>,
    /// Wakes the probe: from idle on the next admit, and to stop.
    wake: Condvar,
    stop: AtomicBool,
}

struct State {
    schedule: Schedule,
    /// In the measure-only modes its budget is infinite and its limit
    /// unused: it still keeps the baseline for the added latency.
    controller: Controller,
    last_admit: Option<Instant>,
    probe_idle: bool,
    /// Recent completed batches, for the measured rate.
    recent: Recent,
    first_admit: Option<Instant>,
    rows_total: u64,
    reading: Option<Reading>,
    probe_error: Option<String>,
    limit_min: f64,
    limit_max: f64,
}

impl State {
    fn limit(&self, mode: PaceMode) -> f64 {
        match mode {
            PaceMode::Budget(_) => self.controller.limit(),
            PaceMode::MaxRate(r) => r as f64,
            PaceMode::FullSpeed => f64::INFINITY,
        }
    }

    fn measured(&mut self, now: Instant) -> f64 {
        self.recent.expire(now);
        let Some(first) = self.first_admit else {
            return 0.0;
        };
        let span = now.duration_since(first).min(MEASURE_SPAN);
        if span < Duration::from_millis(50) {
            return 0.0;
        }
        self.recent.rows() as f64 / span.as_secs_f64()
    }
}

/// The batches completed over the last `MEASURE_SPAN`, and their rows
/// summed as they come and go: `Pacer::done` runs after every pipeline
/// (thousands in the window when they are small), so the sum is kept, not
/// recomputed.
#[derive(Debug, Default)]
struct Recent {
    /// (when, rows), oldest first.
    batches: VecDeque<(Instant, u64)>,
    rows: u64,
}

impl Recent {
    fn push(&mut self, at: Instant, rows: u64) {
        self.batches.push_back((at, rows));
        self.rows += rows;
    }

    /// Forgets the batches older than `MEASURE_SPAN` at `now`.
    fn expire(&mut self, now: Instant) {
        while let Some(&(t, n)) = self.batches.front() {
            if now.duration_since(t) <= MEASURE_SPAN {
                break;
            }
            self.batches.pop_front();
            self.rows -= n;
        }
    }

    fn rows(&self) -> u64 {
        self.rows
    }
}

struct ProbeGuard {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.shared.stop.store(true, Relaxed);
        {
            // Under the lock, so a probe about to wait sees `stop` first.
            let _state = lock(&self.shared.state);
            self.shared.wake.notify_all();
        }
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
    }
}

impl Pacer {
    /// A pacer for writes to the Redis at `redis_url` (on a cluster, the
    /// probe measures the first node the URL names). The probe thread
    /// starts now but connects (and PINGs) only while writes are admitted.
    pub fn new(mode: PaceMode, redis_url: &str) -> Result<Pacer, StoreError> {
        Pacer::with_tls(mode, redis_url, &TlsConfig::default())
    }

    /// As [`Pacer::new`], the probe connecting with the store's TLS files
    /// (a `rediss://` Redis with its own CA, or one asking for a client
    /// certificate).
    pub fn with_tls(mode: PaceMode, redis_url: &str, tls: &TlsConfig) -> Result<Pacer, StoreError> {
        if let PaceMode::MaxRate(0) = mode {
            return Err(StoreError::invalid("the max rate must be at least 1 row/s"));
        }
        let probed = crate::store::one_node_url(redis_url)?;
        let client = tls.client(&probed)?;
        let controller = Controller::new(match mode {
            PaceMode::Budget(b) => b,
            _ => Duration::MAX,
        });
        let start = controller.limit();
        let shared = Arc::new(Shared {
            mode,
            state: Mutex::new(State {
                schedule: Schedule::default(),
                controller,
                last_admit: None,
                probe_idle: true,
                recent: Recent::default(),
                first_admit: None,
                rows_total: 0,
                reading: None,
                probe_error: None,
                limit_min: start,
                limit_max: start,
            }),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(PROBE_CLIENT_NAME.into())
                .spawn(move || probe_loop(&shared, &client))
                .map_err(|e| StoreError::Unavailable(format!("starting the pacer's probe: {e}")))?
        };
        Ok(Pacer {
            _probe: Arc::new(ProbeGuard {
                shared: shared.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            shared,
        })
    }

    pub fn mode(&self) -> PaceMode {
        self.shared.mode
    }

    /// Blocks until `rows` more rows may be written at the current limit
    /// (at once at full speed, or while writers are slower than the limit).
    pub fn admit(&self, rows: u64) {
        let now = Instant::now();
        let start = {
            let mut s = lock(&self.shared.state);
            s.last_admit = Some(now);
            s.first_admit.get_or_insert(now);
            s.rows_total += rows;
            if s.probe_idle {
                s.probe_idle = false;
                self.shared.wake.notify_all();
            }
            let rate = s.limit(self.shared.mode);
            s.schedule.book(now, rows, rate)
        };
        let wait = start.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// Reports `rows` written (or settled otherwise): the measured rate.
    pub fn done(&self, rows: u64) {
        let now = Instant::now();
        let mut s = lock(&self.shared.state);
        s.recent.push(now, rows);
        s.recent.expire(now);
    }

    pub fn snapshot(&self) -> PaceSnapshot {
        let mode = self.shared.mode;
        let mut s = lock(&self.shared.state);
        let measured = s.measured(Instant::now());
        let limit = s.limit(mode);
        let (lo, hi) = match mode {
            PaceMode::Budget(_) => (Some(s.limit_min), Some(s.limit_max)),
            PaceMode::MaxRate(r) => (Some(r as f64), Some(r as f64)),
            PaceMode::FullSpeed => (None, None),
        };
        let ms = |d: Duration| (d.as_secs_f64() * 1e5).round() / 1e2;
        PaceSnapshot {
            mode: mode.describe(),
            limit_rows_per_s: limit.is_finite().then_some(limit.round() as u64),
            measured_rows_per_s: measured.round() as u64,
            redis_latency_ms: s.reading.map(|r| ms(r.p50)),
            added_latency_ms: s.reading.map(|r| ms(r.added)),
            probe_error: s.probe_error.clone(),
            backoffs: s.controller.backoffs(),
            limit_min_rows_per_s: lo.map(|v| v.round() as u64),
            limit_max_rows_per_s: hi.map(|v| v.round() as u64),
            rows_total: s.rows_total,
        }
    }
}

impl PaceSnapshot {
    /// The pacing part of a progress line: `limit 52000 rows/s, redis
    /// +0.31 ms (budget 1 ms)`.
    pub fn progress_text(&self) -> String {
        let limit = match self.limit_rows_per_s {
            Some(l) => format!("limit {l} rows/s"),
            None => "no limit".into(),
        };
        let latency = match (self.added_latency_ms, &self.probe_error) {
            (_, Some(_)) => "redis latency unknown (probe failing)".into(),
            (Some(a), None) => format!("redis +{a:.2} ms"),
            (None, None) => "redis latency not measured yet".into(),
        };
        format!("{limit}, {latency} ({})", self.mode)
    }
}

impl PaceSnapshot {
    /// The summary's `pace:` value: the mode, and in budget mode how the
    /// limit moved (`latency budget 1 ms; limit 20000 to 85000 rows/s,
    /// cut 3 times; redis +0.31 ms last`).
    pub fn summary_text(&self) -> String {
        let mut s = self.mode.clone();
        if let (true, Some(lo), Some(hi)) = (
            self.mode.starts_with("latency"),
            self.limit_min_rows_per_s,
            self.limit_max_rows_per_s,
        ) {
            s.push_str(&format!(
                "; limit {lo} to {hi} rows/s, cut {} times",
                self.backoffs
            ));
        }
        if let Some(a) = self.added_latency_ms {
            s.push_str(&format!("; redis +{a:.2} ms last"));
        }
        s
    }
}

/// PINGs while writes are admitted; pauses when they stop; ends on drop.
fn probe_loop(shared: &Shared, client: &redis::Client) {
    let mut conn: Option<redis::Connection> = None;
    let mut next_connect = Instant::now();
    loop {
        {
            let mut s = lock(&shared.state);
            loop {
                if shared.stop.load(Relaxed) {
                    return;
                }
                let busy = s.last_admit.is_some_and(|t| t.elapsed() < IDLE_AFTER);
                if busy {
                    break;
                }
                // Idle: forget the stale window, sleep until an admit.
                s.probe_idle = true;
                let measured = s.measured(Instant::now());
                s.controller.observe(None, measured);
                s = match shared.wake.wait(s) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        }
        let sample = if conn.is_none() && Instant::now() < next_connect {
            None
        } else {
            let c = match conn.take() {
                Some(c) => Ok(c),
                None => connect(client),
            };
            match c.and_then(|mut c| ping(&mut c).map(|d| (c, d))) {
                Ok((c, d)) => {
                    conn = Some(c);
                    Some(Ok(d))
                }
                Err(e) => {
                    next_connect = Instant::now() + PROBE_TIMEOUT;
                    Some(Err(e))
                }
            }
        };
        match sample {
            Some(Ok(d)) => {
                let mut s = lock(&shared.state);
                s.probe_error = None;
                let measured = s.measured(Instant::now());
                if let Some(reading) = s.controller.observe(Some(d), measured) {
                    s.reading = Some(reading);
                    let l = s.controller.limit();
                    s.limit_min = s.limit_min.min(l);
                    s.limit_max = s.limit_max.max(l);
                }
            }
            Some(Err(e)) => {
                // Not fatal: the limit holds until Redis answers again.
                let mut s = lock(&shared.state);
                let measured = s.measured(Instant::now());
                s.controller.observe(None, measured);
                s.probe_error = Some(e);
                s.reading = None;
            }
            None => {}
        }
        let s = lock(&shared.state);
        if !shared.stop.load(Relaxed) {
            let _ = shared.wake.wait_timeout(s, PROBE_EVERY);
        }
    }
}

fn connect(client: &redis::Client) -> Result<redis::Connection, String> {
    let mut c = client
        .get_connection_with_timeout(PROBE_TIMEOUT)
        .map_err(|e| e.to_string())?;
    c.set_read_timeout(Some(PROBE_TIMEOUT))
        .and_then(|()| c.set_write_timeout(Some(PROBE_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // Named so an operator sees what it is in CLIENT LIST (a refusal only
    // loses the name).
    let _ = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg(PROBE_CLIENT_NAME)
        .query::<()>(&mut c);
    Ok(c)
}

fn ping(c: &mut redis::Connection) -> Result<Duration, String> {
    let t = Instant::now();
    redis::cmd("PING")
        .query::<()>(c)
        .map(|()| t.elapsed())
        .map_err(|e| e.to_string())
}

/// `1`, `0.25`: to the microsecond, no trailing zeros.
fn fmt_ms(d: Duration) -> String {
    let text = format!("{:.3}", d.as_secs_f64() * 1e3);
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A poisoned lock only means a thread panicked holding it; the state is
/// plain numbers, still meaningful.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1e3)
    }

    /// Feeds `n` PINGs: every tenth near-idle (0.05 ms, the baseline),
    /// the rest at `p50_ms`; the writers doing `measured` rows/s (`None`:
    /// whatever the limit is). Answers the limit after each decision.
    fn feed(c: &mut Controller, p50_ms: f64, n: usize, measured: Option<f64>) -> Vec<f64> {
        let mut limits = Vec::new();
        for i in 0..n {
            let ping = if i % DECIDE_EVERY == 3 { 0.05 } else { p50_ms };
            let m = measured.unwrap_or(c.limit());
            if c.observe(Some(ms(ping)), m).is_some() {
                limits.push(c.limit());
            }
        }
        limits
    }

    /// Past the first full window, and the limit where it was.
    fn warmed(budget_ms: f64) -> Controller {
        let mut c = Controller::new(ms(budget_ms));
        for _ in 0..WINDOW_SAMPLES {
            c.observe(Some(ms(0.05)), 0.0);
        }
        c.limit = INITIAL_ROWS_PER_S;
        c.since_decision = 0;
        c
    }

    #[test]
    fn over_budget_cuts_the_limit_multiplicatively() {
        let mut c = warmed(1.0);
        // The first decision still has a quiet majority: one step up.
        let limits = feed(&mut c, 3.0, 2 * DECIDE_EVERY, Some(1e9));
        assert_eq!(limits[0], INITIAL_ROWS_PER_S + STEP_ROWS_PER_S);
        assert!(
            (limits[1] - limits[0] * DECREASE).abs() < 1e-6,
            "{limits:?}"
        );
        assert_eq!(c.backoffs(), 1);
    }

    #[test]
    fn a_cut_waits_for_a_window_of_new_samples_before_the_next() {
        let mut c = warmed(1.0);
        // Cut at the second decision; the next cut only once the whole
        // window is from after it (25 samples: the third decision after).
        let limits = feed(&mut c, 3.0, 5 * DECIDE_EVERY, Some(1e9));
        assert_eq!(c.backoffs(), 2, "{limits:?}");
        assert_eq!(limits[2], limits[1], "held: {limits:?}");
        assert_eq!(limits[3], limits[1], "held: {limits:?}");
        assert!(limits[4] < limits[3], "{limits:?}");
    }

    #[test]
    fn under_budget_adds_one_step_up_to_twice_the_measured_rate() {
        let mut c = warmed(1.0);
        let start = c.limit();
        feed(&mut c, 0.2, DECIDE_EVERY, None);
        assert_eq!(c.limit(), start + STEP_ROWS_PER_S);
        // Writers stuck at 15k rows/s: the limit stops at 30k, not the cap.
        feed(&mut c, 0.2, 1000, Some(15_000.0));
        assert_eq!(c.limit(), 30_000.0);
        feed(&mut c, 0.2, 10_000, Some(1e9));
        assert_eq!(c.limit(), CAP_ROWS_PER_S);
    }

    #[test]
    fn the_limit_never_falls_below_the_floor() {
        let mut c = warmed(1.0);
        feed(&mut c, 20.0, 2000, Some(1_000.0));
        assert_eq!(c.limit(), FLOOR_ROWS_PER_S);
    }

    #[test]
    fn an_unreachable_probe_holds_the_limit() {
        let mut c = warmed(1.0);
        let before = c.limit();
        for _ in 0..100 {
            assert_eq!(c.observe(None, before), None);
        }
        assert_eq!(c.limit(), before);
        assert_eq!(c.backoffs(), 0);
        // Back: no decision until a window of fresh samples.
        feed(&mut c, 0.2, WINDOW_SAMPLES - 1, Some(before));
        assert_eq!(c.limit(), before);
    }

    #[test]
    fn a_short_burst_of_slow_pings_does_not_cut_the_limit() {
        let mut c = warmed(1.0);
        let before = c.limit();
        // Eight slow PINGs in a row (160 ms of noise) inside quiet ones.
        feed(&mut c, 0.2, 10, None);
        feed(&mut c, 30.0, 8, None);
        feed(&mut c, 0.2, 40, None);
        assert_eq!(c.backoffs(), 0);
        assert!(c.limit() > before);
    }

    #[test]
    fn the_round_trip_is_not_counted_against_the_budget() {
        // A remote Redis: every PING takes 2 ms, idle or not; under a 1 ms
        // budget the limit still grows.
        let mut c = Controller::new(ms(1.0));
        for _ in 0..5 * DECIDE_EVERY + WINDOW_SAMPLES {
            c.observe(Some(ms(2.0)), 1e9);
        }
        assert!(c.limit() > INITIAL_ROWS_PER_S);
        assert_eq!(c.backoffs(), 0);
        // ... and 1.5 ms more than that is over it.
        for _ in 0..WINDOW_SAMPLES {
            c.observe(Some(ms(3.5)), 1e9);
        }
        assert_eq!(c.backoffs(), 1);
    }

    #[test]
    fn a_cut_starts_from_twice_the_measured_rate_when_writers_were_far_slower() {
        let mut c = warmed(1.0);
        feed(&mut c, 0.1, 20 * DECIDE_EVERY, Some(1e9));
        assert!(c.limit() > 60_000.0);
        let mut cut = Vec::new();
        for _ in 0..WINDOW_SAMPLES {
            c.observe(Some(ms(5.0)), 20_000.0);
            cut.push(c.limit());
        }
        assert_eq!(c.limit(), 40_000.0 * DECREASE, "{cut:?}");
    }

    #[test]
    fn a_stall_then_quiet_backs_off_and_recovers() {
        // 2 s ramp, 6 s of another client stalling Redis, 4 s quiet.
        let mut c = warmed(1.0);
        feed(&mut c, 0.2, 100, None);
        assert!(c.limit() > INITIAL_ROWS_PER_S);
        feed(&mut c, 5.0, 300, None);
        let stalled = c.limit();
        assert_eq!(stalled, FLOOR_ROWS_PER_S);
        let limits = feed(&mut c, 0.2, 200, None);
        assert!(c.limit() >= stalled + 10.0 * STEP_ROWS_PER_S, "{limits:?}");
    }

    #[test]
    fn the_schedule_spreads_batches_at_the_rate_across_writers() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        // Two writers asking at once, 1000 rows each, at 10k rows/s.
        let a = s.book(t0, 1000, 10_000.0);
        let b = s.book(t0, 1000, 10_000.0);
        let c = s.book(t0, 1000, 10_000.0);
        assert_eq!(a, t0);
        assert_eq!(b, t0 + ms(100.0));
        assert_eq!(c, t0 + ms(200.0));
    }

    #[test]
    fn the_schedule_gives_no_burst_after_a_pause_and_follows_a_new_rate() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.book(t0, 1000, 10_000.0);
        // Ten seconds later: one batch at once, the next a slot later.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(s.book(t1, 1000, 10_000.0), t1);
        assert_eq!(s.book(t1, 1000, 5_000.0), t1 + ms(100.0));
        // Booked at 5k rows/s: the slot after is 200 ms later.
        assert_eq!(s.book(t1, 10, 5_000.0), t1 + ms(300.0));
        // Unlimited: never waits.
        assert_eq!(s.book(t1, 1_000_000, f64::INFINITY), t1);
    }

    proptest::proptest! {
        /// The kept sum is the sum of the batches kept, whatever the
        /// pushes and expiries, and only batches within the span are kept.
        #[test]
        fn the_recent_rows_are_the_sum_of_the_recent_batches(
            steps in proptest::collection::vec((0u64..1500, 0u64..5000, proptest::bool::ANY), 0..400),
        ) {
            let t0 = Instant::now();
            let mut recent = Recent::default();
            // Every batch pushed, and the time of the last expiry.
            let mut pushed: Vec<(Instant, u64)> = Vec::new();
            let mut expired_at = t0;
            let mut clock = Duration::ZERO;
            for (advance_ms, rows, expire) in steps {
                clock += Duration::from_millis(advance_ms);
                let now = t0 + clock;
                if expire {
                    recent.expire(now);
                    expired_at = now;
                } else {
                    recent.push(now, rows);
                    pushed.push((now, rows));
                }
                // Kept: what was pushed, less what the last expiry found
                // older than the span.
                let kept: Vec<(Instant, u64)> = pushed
                    .iter()
                    .copied()
                    .filter(|(t, _)| *t > expired_at || expired_at.duration_since(*t) <= MEASURE_SPAN)
                    .collect();
                proptest::prop_assert_eq!(recent.batches.iter().copied().collect::<Vec<_>>(), kept.clone());
                proptest::prop_assert_eq!(recent.rows(), kept.iter().map(|(_, n)| n).sum::<u64>());
            }
        }
    }

    #[test]
    fn budget_zero_is_full_speed() {
        assert_eq!(PaceMode::budget_ms(0.0), PaceMode::FullSpeed);
        assert_eq!(
            PaceMode::budget_ms(1.0),
            PaceMode::Budget(Duration::from_millis(1))
        );
        assert_eq!(PaceMode::budget_ms(1.0).describe(), "latency budget 1 ms");
        assert_eq!(
            PaceMode::budget_ms(0.15).describe(),
            "latency budget 0.15 ms"
        );
    }

    #[test]
    fn budgets_parse_as_milliseconds_with_fractions() {
        assert_eq!(parse_budget_ms("1"), Ok(1.0));
        assert_eq!(parse_budget_ms("0.25"), Ok(0.25));
        assert_eq!(parse_budget_ms("0"), Ok(0.0));
        assert_eq!(parse_budget_ms("60000"), Ok(60_000.0));
        for bad in ["", "-1", "abc", "NaN", "inf", "60001", "0.001", "1ms"] {
            assert!(parse_budget_ms(bad).is_err(), "{bad:?} accepted");
        }
    }
}
