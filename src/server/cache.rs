//! The entity count and id list, refreshed off the request path, at a
//! bounded cost to Redis whatever the size of the keyspace.
//!
//! A full SCAN per refresh costs Redis time in proportion to the keyspace
//! (2M keys: 8 s a pass, 41% of a core when repeated every second). So:
//! - the count is `DBSIZE` (O(1)) while every key in the database is under
//!   the prefix: checked each tick by a few `RANDOMKEY` samples, and by
//!   every full pass, which scans without MATCH and so sees foreign keys;
//! - otherwise it is the last full pass's count, or before the first pass
//!   ends a running lower bound (`/state` says which: `entity_count_source`);
//! - the pass itself is incremental: each tick runs SCAN pages while a token
//!   bucket filled at `BUDGET_FRACTION` of wall time (1% of one core; a
//!   quarter of that while the count is `DBSIZE`) has
//!   credit, charged with each SCAN page's measured round trip (an upper bound
//!   on the Redis time it took), and the cursor carries over to the next
//!   tick. A completed pass publishes its ids and unlisted count.
//!
//! Nothing runs before the server listens; `/bulk-load` and `/reset` run
//! one early tick that starts a new pass (at least one page, one per node on
//! a cluster), never a whole big pass.
//!
//! A reset `clear`s the snapshot after its delete: the worker picks its ids
//! here, so a list from before the reset must never come back, whether the
//! refresh after the reset fails or a pass that started before the delete
//! finishes after it. Each tick notes how many resets there had been when it
//! started, and a pass begun before another reset is thrown away.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::StoreError;
use crate::store::{Census, FeatureStore};

/// How many ids the snapshot keeps (what the worker and `/batch-read` pick
/// from, and `/state` shows the first 500 of).
pub const ID_LIMIT: usize = 10_000;
/// The share of wall time the background scan may hold Redis for.
pub const BUDGET_FRACTION: f64 = 0.01;
/// The share while every key seen is under the prefix: the count is then
/// `DBSIZE`, exact and free, and the pass only keeps the id list fresh and
/// watches for other tools' keys (which the samples watch for too). At
/// 10,000,000 keys Redis's own expiry already takes about 1.4% of a core,
/// so the full 1% would put an idle server's total over 2%.
pub const DBSIZE_BUDGET_FRACTION: f64 = 0.0025;
/// The most credit the budget keeps across idle time (what the first tick
/// after start may spend at once).
const BUDGET_BURST: Duration = Duration::from_millis(20);
/// Keys one SCAN page asks for: about 0.4 ms of Redis time (measured
/// 0.8 ms for 1000), so no page holds Redis long.
const PAGE: usize = 500;
/// `RANDOMKEY` samples per tick to check every key is under the prefix.
const SAMPLES: usize = 3;

/// How `Snapshot::count` was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountSource {
    /// `DBSIZE`: every key in the database is under the prefix.
    Dbsize,
    /// The last full pass: other keys share the database.
    Scan,
    /// No full pass yet: a lower bound that grows as the first pass runs.
    Counting,
}

impl CountSource {
    pub fn as_str(self) -> &'static str {
        match self {
            CountSource::Dbsize => "dbsize",
            CountSource::Scan => "scan",
            CountSource::Counting => "counting",
        }
    }

    /// False while the count is a lower bound.
    pub fn is_exact(self) -> bool {
        self != CountSource::Counting
    }
}

#[derive(Debug)]
pub struct Snapshot {
    /// Every key under the prefix.
    pub count: u64,
    pub count_source: CountSource,
    /// Sorted, at most `ID_LIMIT`; only ids the store accepts.
    pub ids: Arc<Vec<String>>,
    /// Keys under the prefix whose id the store would refuse (written by
    /// another tool): in `count`, never in `ids`.
    pub unlisted: u64,
    /// When the pass that produced `ids` started (before the first pass
    /// ends: the running one, whose ids so far are listed).
    pub taken_at: Instant,
    /// Set when the last refresh failed (Redis down); the data is then the
    /// last good one.
    pub error: Option<String>,
    /// False until one scan succeeded.
    pub valid: bool,
}

impl Snapshot {
    /// No ids, not valid, `why` as the error.
    fn empty(why: &str) -> Snapshot {
        Snapshot {
            count: 0,
            count_source: CountSource::Counting,
            ids: Arc::new(Vec::new()),
            unlisted: 0,
            taken_at: Instant::now(),
            error: Some(why.into()),
            valid: false,
        }
    }
}

/// A full pass that ended.
struct Done {
    census: Census,
    ids: Arc<Vec<String>>,
    foreign: u64,
    started: Instant,
}

/// The incremental pass and its budget, owned by whichever tick runs.
struct Pass {
    /// The reset generation this pass belongs to.
    generation: u64,
    /// None between passes.
    cursor: Option<u64>,
    running: Census,
    foreign: u64,
    started: Instant,
    done: Option<Done>,
    /// A sample outside the prefix seen at this time; cleared by a pass
    /// that started after it and found no foreign key.
    sampled_foreign_at: Option<Instant>,
    /// Seconds of Redis time the scan may still spend (negative: owed).
    credit: f64,
    refilled_at: Instant,
}

impl Pass {
    fn new(generation: u64) -> Pass {
        Pass {
            generation,
            cursor: None,
            running: Census::default(),
            foreign: 0,
            started: Instant::now(),
            done: None,
            sampled_foreign_at: None,
            credit: BUDGET_BURST.as_secs_f64(),
            refilled_at: Instant::now(),
        }
    }

    /// Whether a key outside the prefix has been seen (by a sample, the
    /// running pass or the last full one): then `DBSIZE` overcounts.
    fn sees_foreign(&self) -> bool {
        self.sampled_foreign_at.is_some()
            || self.foreign > 0
            || self.done.as_ref().is_some_and(|d| d.foreign > 0)
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let fraction = if self.sees_foreign() {
            BUDGET_FRACTION
        } else {
            DBSIZE_BUDGET_FRACTION
        };
        let earned = now.duration_since(self.refilled_at).as_secs_f64() * fraction;
        self.credit = (self.credit + earned).min(BUDGET_BURST.as_secs_f64());
        self.refilled_at = now;
    }

    fn charge(&mut self, since: Instant) {
        self.credit -= since.elapsed().as_secs_f64();
    }
}

pub struct EntityCache {
    current: Mutex<Arc<Snapshot>>,
    /// Bumped by `clear`, under the `current` lock.
    generation: AtomicU64,
    /// Held across a tick's Redis calls; readers only take `current`.
    pass: Mutex<Pass>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Whether the last tick reached Redis: the refresher runs every
    /// `--refresh-ms` whatever the traffic, so it is where Redis going away
    /// and coming back is seen, and logged once per transition.
    redis_up: AtomicBool,
}

impl EntityCache {
    pub fn new() -> Arc<EntityCache> {
        Arc::new(EntityCache {
            current: Mutex::new(Arc::new(Snapshot::empty("not scanned yet"))),
            generation: AtomicU64::new(0),
            pass: Mutex::new(Pass::new(0)),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
            redis_up: AtomicBool::new(true),
        })
    }

    /// False from a tick that could not reach Redis until one that did.
    pub fn redis_up(&self) -> bool {
        self.redis_up.load(Relaxed)
    }

    /// Logs Redis going away (an outage, not a refusal) and coming back.
    fn note_reachability(&self, result: &Result<u64, StoreError>) {
        use crate::logging::value;
        match result {
            Err(e) if e.is_unavailable() => {
                if self.redis_up.swap(false, Relaxed) {
                    log::error!("event=redis_down cause={}", value(e));
                }
            }
            _ => {
                if !self.redis_up.swap(true, Relaxed) {
                    log::info!("event=redis_up");
                }
            }
        }
    }

    pub fn get(&self) -> Arc<Snapshot> {
        lock(&self.current).clone()
    }

    pub fn ids(&self) -> Arc<Vec<String>> {
        self.get().ids.clone()
    }

    /// An early tick (after a bulk load or a reset): at least one page of
    /// the pass (one per node on a cluster), whatever the budget says, so a
    /// small keyspace is counted and listed before this returns; never a
    /// whole big pass.
    pub fn refresh(&self, store: &FeatureStore) {
        self.tick(store, true);
    }

    /// Counts (`DBSIZE` + samples) and runs the pass while the budget has
    /// credit, then publishes. The `current` lock is held only to swap the
    /// result in; a tick that started before the last `clear` is dropped.
    fn tick(&self, store: &FeatureStore, forced: bool) {
        let mut pass = lock(&self.pass);
        let generation = self.generation.load(Relaxed);
        if pass.generation != generation {
            let credit = pass.credit;
            *pass = Pass::new(generation);
            pass.credit = credit.min(pass.credit);
        }
        pass.refill();
        if forced {
            // A pass begun before the write that forced this tick (a bulk
            // load) would publish a count from before it, as exact: start
            // afresh, so a small keyspace is counted whole after it (on a
            // cluster a pass spans a page per node at least).
            pass.cursor = None;
        }
        let result = self.step(&mut pass, store, forced);
        self.note_reachability(&result);
        let mut cur = lock(&self.current);
        if self.generation.load(Relaxed) != generation {
            return;
        }
        *cur = Arc::new(match result {
            Ok(dbsize) => publish(&pass, dbsize),
            // Keep the last good data but say it is stale, and why.
            Err(e) => Snapshot {
                count: cur.count,
                count_source: cur.count_source,
                ids: cur.ids.clone(),
                unlisted: cur.unlisted,
                taken_at: cur.taken_at,
                error: Some(e.to_string()),
                valid: cur.valid,
            },
        });
    }

    /// One tick's Redis work; returns `DBSIZE`.
    fn step(&self, pass: &mut Pass, store: &FeatureStore, forced: bool) -> Result<u64, StoreError> {
        // Not charged to the scan's budget: four O(1) commands per tick, a
        // fixed cost, whose round trip (on a cluster, the slowest node's;
        // under load, a millisecond) would otherwise eat the budget at short
        // --refresh-ms and starve the pass that the budget is for.
        let (dbsize, all_under_prefix) = store.dbsize_sampled(SAMPLES)?;
        if !all_under_prefix {
            pass.sampled_foreign_at = Some(Instant::now());
        }
        if pass.cursor.is_none() {
            pass.cursor = Some(0);
            pass.running = Census::default();
            pass.foreign = 0;
            pass.started = Instant::now();
        }
        // A forced tick scans at least one page of each node it reaches
        // (one page standalone): a small keyspace is counted whole.
        let mut pages = 0;
        let mut node_done = false;
        while let Some(cursor) = pass.cursor {
            if !(pass.credit > 0.0 || (forced && (pages == 0 || node_done)))
                || self.generation.load(Relaxed) != pass.generation
            {
                break;
            }
            let t = Instant::now();
            let page = store.census_page(cursor, PAGE, &mut pass.running, ID_LIMIT);
            pass.charge(t);
            let page = page?;
            pages += 1;
            node_done = page.node_done;
            pass.foreign += page.foreign;
            pass.cursor = (page.next != 0).then_some(page.next);
            if pass.cursor.is_none() {
                let mut census = std::mem::take(&mut pass.running);
                census.ids.sort();
                let ids = Arc::new(std::mem::take(&mut census.ids));
                if pass.foreign == 0 && pass.sampled_foreign_at.is_some_and(|t| t < pass.started) {
                    pass.sampled_foreign_at = None;
                }
                pass.done = Some(Done {
                    census,
                    ids,
                    foreign: pass.foreign,
                    started: pass.started,
                });
                pass.foreign = 0;
            }
        }
        Ok(dbsize)
    }

    /// Forgets every id, after a reset deleted them: until a scan that
    /// starts after this call succeeds, the list is empty, so the worker
    /// has nothing to write to.
    pub fn clear(&self) {
        let mut cur = lock(&self.current);
        self.generation.fetch_add(1, Relaxed);
        *cur = Arc::new(Snapshot::empty("cleared by a reset; not rescanned yet"));
    }

    /// Refreshes every `every` on a background thread until `shutdown`.
    pub fn spawn_refresher(self: &Arc<Self>, store: Arc<FeatureStore>, every: Duration) {
        let me = self.clone();
        let handle = std::thread::spawn(move || {
            while !me.stop.load(Relaxed) {
                me.tick(&store, false);
                std::thread::park_timeout(every);
            }
        });
        *lock(&self.thread) = Some(handle);
    }

    pub fn shutdown(&self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = lock(&self.thread).take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// The snapshot a tick publishes: the count by the best source known, the
/// ids of the last full pass (before the first: those found so far).
fn publish(pass: &Pass, dbsize: u64) -> Snapshot {
    let (count, count_source) = match &pass.done {
        _ if !pass.sees_foreign() => (dbsize, CountSource::Dbsize),
        Some(d) => (d.census.count, CountSource::Scan),
        None => (pass.running.count, CountSource::Counting),
    };
    let (ids, unlisted, taken_at) = match &pass.done {
        Some(d) => (d.ids.clone(), d.census.unlisted, d.started),
        None => {
            let mut ids = pass.running.ids.clone();
            ids.sort();
            (Arc::new(ids), pass.running.unlisted, pass.started)
        }
    };
    Snapshot {
        count,
        count_source,
        ids,
        unlisted,
        taken_at,
        error: None,
        valid: true,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
