//! How far a running `/reset` got. Deleting millions of keys takes seconds
//! (one SCAN page and one UNLINK at a time); `/state` shows this meanwhile,
//! so the page can say "deleting..." instead of looking hung.

use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

/// What `/state` shows under `reset` while one runs (`null` otherwise).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResetStatus {
    /// Keys deleted so far by the running reset.
    pub deleted: u64,
    pub elapsed_ms: u64,
}

#[derive(Default)]
pub struct ResetProgress {
    running: Mutex<Option<(Instant, u64)>>,
}

impl ResetProgress {
    /// Marks a reset as running until the returned guard drops (also when
    /// the reset fails or panics).
    pub fn start(&self) -> ResetGuard<'_> {
        *self.lock() = Some((Instant::now(), 0));
        ResetGuard { progress: self }
    }

    pub fn status(&self) -> Option<ResetStatus> {
        self.lock().map(|(started, deleted)| ResetStatus {
            deleted,
            elapsed_ms: started.elapsed().as_millis() as u64,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(Instant, u64)>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub struct ResetGuard<'a> {
    progress: &'a ResetProgress,
}

impl ResetGuard<'_> {
    pub fn deleted_so_far(&self, deleted: u64) {
        if let Some((_, d)) = self.progress.lock().as_mut() {
            *d = deleted;
        }
    }
}

impl Drop for ResetGuard<'_> {
    fn drop(&mut self) {
        *self.progress.lock() = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_follows_the_guard() {
        let p = ResetProgress::default();
        assert_eq!(p.status(), None);
        {
            let g = p.start();
            assert_eq!(p.status().map(|s| s.deleted), Some(0));
            g.deleted_so_far(1500);
            assert_eq!(p.status().map(|s| s.deleted), Some(1500));
        }
        assert_eq!(p.status(), None);
    }
}
