//! Event times for writes that carry none of their own.
//!
//! A write without an explicit event time (the worker, `/bulk-load`, a
//! loader input without `--event-time-column`) is dated "now", in
//! milliseconds since the epoch. Two such writes of one entity from one
//! process within the same millisecond would carry equal times, and the
//! write scripts treat an equal time as a replay (a no-op): the later write
//! would be lost. So the times handed out here strictly increase within a
//! process: a call in a millisecond already used gets the next one. A
//! process that asks more than a thousand times a second runs ahead of the
//! wall clock by the excess, and falls back onto it as soon as it slows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

static LAST: AtomicU64 = AtomicU64::new(0);

/// The wall clock in epoch ms, or one more than the last time returned.
pub fn now_ms() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = wall.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

/// Makes every later `now_ms` return more than `t`: a caller that dated
/// writes up to `t` itself (several rows of one id in one call).
pub fn not_before(t: u64) {
    LAST.fetch_max(t, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::now_ms;

    #[test]
    fn times_strictly_increase_even_within_one_millisecond_and_across_threads() {
        let threads: Vec<_> = (0..4)
            .map(|_| std::thread::spawn(|| (0..2000).map(|_| now_ms()).collect::<Vec<_>>()))
            .collect();
        let mut all = Vec::new();
        for t in threads {
            let times = t.join().expect("thread");
            assert!(
                times.windows(2).all(|w| w[0] < w[1]),
                "not increasing within a thread"
            );
            all.extend(times);
        }
        let n = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), n, "two calls got the same time");
    }
}
