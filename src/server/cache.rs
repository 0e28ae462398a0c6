//! The entity count and id list, refreshed off the request path.
//!
//! Counting entities is a full SCAN of the keyspace: far too slow for a
//! request at 100k entities. A background thread rescans every interval, and
//! writes that change the keyspace (bulk load, reset) refresh right away.
//! `/state` reports how old the snapshot is.
//!
//! A reset `clear`s the snapshot after its delete: the worker picks its ids
//! here, so a list from before the reset must never come back, whether the
//! refresh after the reset fails or a scan that started before the delete
//! finishes after it. Each scan notes how many resets there had been when it
//! started, and is thrown away if another came before it finished.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::FeatureStore;

/// How many ids the snapshot keeps (what the worker and `/batch-read` pick
/// from, and `/state` shows the first 500 of).
pub const ID_LIMIT: usize = 10_000;

#[derive(Debug)]
pub struct Snapshot {
    /// Every key under the prefix.
    pub count: u64,
    /// Sorted, at most `ID_LIMIT`; only ids the store accepts.
    pub ids: Arc<Vec<String>>,
    /// Keys under the prefix whose id the store would refuse (written by
    /// another tool): in `count`, never in `ids`.
    pub unlisted: u64,
    /// When the scan that produced this snapshot started.
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
            ids: Arc::new(Vec::new()),
            unlisted: 0,
            taken_at: Instant::now(),
            error: Some(why.into()),
            valid: false,
        }
    }
}

pub struct EntityCache {
    current: Mutex<Arc<Snapshot>>,
    /// Bumped by `clear`, under the `current` lock.
    generation: AtomicU64,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EntityCache {
    pub fn new() -> Arc<EntityCache> {
        Arc::new(EntityCache {
            current: Mutex::new(Arc::new(Snapshot::empty("not scanned yet"))),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            thread: Mutex::new(None),
        })
    }

    pub fn get(&self) -> Arc<Snapshot> {
        lock(&self.current).clone()
    }

    pub fn ids(&self) -> Arc<Vec<String>> {
        self.get().ids.clone()
    }

    /// Rescans now. The lock is held only to swap the result in, never
    /// across Redis calls; an older scan never replaces a newer one, and a
    /// scan that started before the last `clear` is dropped.
    pub fn refresh(&self, store: &FeatureStore) {
        let started = Instant::now();
        let generation = self.generation.load(Relaxed);
        let result = store.census(ID_LIMIT);
        let mut cur = lock(&self.current);
        if cur.taken_at > started || self.generation.load(Relaxed) != generation {
            return;
        }
        *cur = Arc::new(match result {
            Ok(census) => Snapshot {
                count: census.count,
                ids: Arc::new(census.ids),
                unlisted: census.unlisted,
                taken_at: started,
                error: None,
                valid: true,
            },
            // Keep the last good data but say it is stale, and why.
            Err(e) => Snapshot {
                count: cur.count,
                ids: cur.ids.clone(),
                unlisted: cur.unlisted,
                taken_at: cur.taken_at,
                error: Some(e.to_string()),
                valid: cur.valid,
            },
        });
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
                me.refresh(&store);
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
