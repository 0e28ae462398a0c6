//! The streaming worker: a thread that, every tick, writes fresh streaming
//! features for a few entities picked from a list it is handed (the
//! server's entity-id cache), one pipelined round trip per tick.
//!
//! Control is a small state machine under one mutex: `running` (a thread
//! exists), `paused` (ticks are skipped), `in_tick` (a write is in flight).
//! A tick starts only after checking `paused` under that lock, so after
//! `pause()` returns no new tick starts, and `wait_for_idle()` waits out the
//! one that may be in flight: what reset needs before it deletes anything.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::SeedableRng;
use serde::Serialize;

use crate::demo::Source;
use crate::pacing::Pacer;
use crate::store::FeatureStore;

/// Where the worker gets the ids it may update.
pub type IdSource = Box<dyn Fn() -> Arc<Vec<String>> + Send + Sync>;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub users_per_tick: usize,
    pub tick: Duration,
    pub streaming_ttl_seconds: u64,
    pub seed: u64,
}

/// What `/state` shows of the worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerStatus {
    pub running: bool,
    pub paused: bool,
    pub tick_count: u64,
    pub writes_count: u64,
    pub failed_writes_count: u64,
    pub last_error: Option<String>,
    pub users_per_tick: usize,
    pub tick_ms: u64,
}

#[derive(Default)]
struct Control {
    running: bool,
    paused: bool,
    in_tick: bool,
    stop: bool,
}

struct Shared {
    control: Mutex<Control>,
    changed: Condvar,
    ticks: AtomicU64,
    writes: AtomicU64,
    failed: AtomicU64,
    last_error: Mutex<Option<String>>,
}

pub struct Worker {
    shared: Arc<Shared>,
    store: Arc<FeatureStore>,
    ids: Arc<IdSource>,
    config: WorkerConfig,
    pacer: Option<Pacer>,
    source: Source,
    handle: Mutex<Option<JoinHandle<()>>>,
}

impl Worker {
    /// A stopped worker; `start` runs it.
    pub fn new(store: Arc<FeatureStore>, ids: IdSource, config: WorkerConfig) -> Worker {
        Worker {
            shared: Arc::new(Shared {
                control: Mutex::new(Control::default()),
                changed: Condvar::new(),
                ticks: AtomicU64::new(0),
                writes: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                last_error: Mutex::new(None),
            }),
            store,
            ids: Arc::new(ids),
            config,
            pacer: None,
            source: Source::Demo,
            handle: Mutex::new(None),
        }
    }

    /// Each tick's writes are admitted by `pacer` first (the server shares
    /// one with `/bulk-load`, so both together stay under its budget).
    pub fn paced(mut self, pacer: Pacer) -> Worker {
        self.pacer = Some(pacer);
        self
    }

    /// What each tick writes (default: the demo's own events).
    pub fn writing(mut self, source: Source) -> Worker {
        self.source = source;
        self
    }

    /// Starts the thread (unpaused) unless it is already running.
    pub fn start(&self) {
        let mut handle = lock(&self.handle);
        {
            let mut c = lock(&self.shared.control);
            if c.running {
                c.paused = false;
                self.shared.changed.notify_all();
                return;
            }
            c.running = true;
            c.paused = false;
            c.stop = false;
        }
        let shared = self.shared.clone();
        let store = self.store.clone();
        let ids = self.ids.clone();
        let config = self.config.clone();
        let pacer = self.pacer.clone();
        let source = self.source.clone();
        *handle = Some(std::thread::spawn(move || {
            run(shared, store, ids, config, pacer.as_ref(), &source)
        }));
    }

    /// Stops the thread and waits for it (an in-flight tick completes).
    pub fn stop(&self) {
        let mut handle = lock(&self.handle);
        {
            let mut c = lock(&self.shared.control);
            c.stop = true;
            self.shared.changed.notify_all();
        }
        if let Some(h) = handle.take() {
            let _ = h.join();
        }
        let mut c = lock(&self.shared.control);
        c.running = false;
        c.in_tick = false;
    }

    pub fn pause(&self) {
        lock(&self.shared.control).paused = true;
    }

    pub fn resume(&self) {
        lock(&self.shared.control).paused = false;
        self.shared.changed.notify_all();
    }

    /// Pause a running worker, resume a paused one, start a stopped one.
    pub fn toggle(&self) -> WorkerStatus {
        let (running, paused) = {
            let c = lock(&self.shared.control);
            (c.running, c.paused)
        };
        if !running {
            self.start();
        } else if paused {
            self.resume();
        } else {
            self.pause();
        }
        self.status()
    }

    /// Waits until no tick is in flight; false if `timeout` passed first.
    pub fn wait_for_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut c = lock(&self.shared.control);
        while c.in_tick {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            c = match self.shared.changed.wait_timeout(c, deadline - now) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
        true
    }

    pub fn status(&self) -> WorkerStatus {
        let (running, paused) = {
            let c = lock(&self.shared.control);
            (c.running, c.paused)
        };
        WorkerStatus {
            running,
            paused,
            tick_count: self.shared.ticks.load(Relaxed),
            writes_count: self.shared.writes.load(Relaxed),
            failed_writes_count: self.shared.failed.load(Relaxed),
            last_error: lock(&self.shared.last_error).clone(),
            users_per_tick: self.config.users_per_tick,
            tick_ms: self.config.tick.as_millis() as u64,
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn run(
    shared: Arc<Shared>,
    store: Arc<FeatureStore>,
    ids: Arc<IdSource>,
    config: WorkerConfig,
    pacer: Option<&Pacer>,
    source: &Source,
) {
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut next = Instant::now() + config.tick;
    loop {
        {
            let mut c = lock(&shared.control);
            // Sleep until the next tick, waking early only to stop.
            loop {
                if c.stop {
                    return;
                }
                let now = Instant::now();
                if now >= next && !c.paused {
                    break;
                }
                let wait = if c.paused { config.tick } else { next - now };
                c = match shared.changed.wait_timeout(c, wait) {
                    Ok((g, _)) => g,
                    Err(poisoned) => poisoned.into_inner().0,
                };
                if c.paused {
                    next = Instant::now() + config.tick;
                }
            }
            c.in_tick = true;
        }
        tick(&shared, &store, &ids, &config, pacer, source, &mut rng);
        {
            let mut c = lock(&shared.control);
            c.in_tick = false;
            shared.changed.notify_all();
        }
        next += config.tick;
        let now = Instant::now();
        if next < now {
            // A slow tick (Redis stalled): skip the missed ones, no burst.
            next = now + config.tick;
        }
    }
}

fn tick(
    shared: &Shared,
    store: &FeatureStore,
    ids: &IdSource,
    config: &WorkerConfig,
    pacer: Option<&Pacer>,
    source: &Source,
    rng: &mut StdRng,
) {
    let ids = ids();
    shared.ticks.fetch_add(1, Relaxed);
    if ids.is_empty() || config.users_per_tick == 0 {
        return;
    }
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let n = config.users_per_tick.min(ids.len());
    let picked: Vec<String> = sample(rng, ids.len(), n)
        .into_iter()
        .map(|i| ids[i].clone())
        .collect();
    // One write per stream view (each has its own field TTL).
    for (ttl, events) in source.events(&picked, rng, now_ms, config.streaming_ttl_seconds) {
        if let Some(p) = pacer {
            p.admit(n as u64);
        }
        let result = store.update_streaming_many(&events, ttl);
        if let Some(p) = pacer {
            p.done(n as u64);
        }
        match result {
            Ok(report) => {
                shared.writes.fetch_add(report.written as u64, Relaxed);
                shared.failed.fetch_add(report.failed.len() as u64, Relaxed);
                *lock(&shared.last_error) = report.failed.first().map(|f| f.error.to_string());
            }
            Err(e) => {
                shared.failed.fetch_add(n as u64, Relaxed);
                *lock(&shared.last_error) = Some(e.to_string());
            }
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the
/// state it guards is plain flags, still meaningful.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
