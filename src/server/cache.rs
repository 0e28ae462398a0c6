//! The entity count and id list, refreshed off the request path.
//!
//! Counting entities is a full SCAN of the keyspace: far too slow for a
//! request at 100k entities. A background thread rescans every interval, and
//! writes that change the keyspace (bulk load, reset) refresh right away.
//! `/state` reports how old the snapshot is.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::FeatureStore;

/// How many ids the snapshot keeps (what the worker and `/batch-read` pick
/// from, and `/state` shows the first 500 of).
pub const ID_LIMIT: usize = 10_000;

#[derive(Debug)]
pub struct Snapshot {
    pub count: u64,
    /// Sorted, at most `ID_LIMIT`.
    pub ids: Arc<Vec<String>>,
    /// When the scan that produced this snapshot started.
    pub taken_at: Instant,
    /// Set when the last refresh failed (Redis down); the data is then the
    /// last good one.
    pub error: Option<String>,
    /// False until one scan succeeded.
    pub valid: bool,
}

pub struct EntityCache {
    current: Mutex<Arc<Snapshot>>,
    stop: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl EntityCache {
    pub fn new() -> Arc<EntityCache> {
        Arc::new(EntityCache {
            current: Mutex::new(Arc::new(Snapshot {
                count: 0,
                ids: Arc::new(Vec::new()),
                taken_at: Instant::now(),
                error: Some("not scanned yet".into()),
                valid: false,
            })),
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
    /// across Redis calls; an older scan never replaces a newer one.
    pub fn refresh(&self, store: &FeatureStore) {
        let started = Instant::now();
        let result = store.count_and_list_entities(ID_LIMIT);
        let mut cur = lock(&self.current);
        if cur.taken_at > started {
            return;
        }
        *cur = Arc::new(match result {
            Ok((count, ids)) => Snapshot {
                count,
                ids: Arc::new(ids),
                taken_at: started,
                error: None,
                valid: true,
            },
            // Keep the last good data but say it is stale, and why.
            Err(e) => Snapshot {
                count: cur.count,
                ids: cur.ids.clone(),
                taken_at: cur.taken_at,
                error: Some(e.to_string()),
                valid: cur.valid,
            },
        });
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
