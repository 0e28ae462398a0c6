//! Latency recording and the figures a row reports.

use std::time::{Duration, Instant};

/// Every sample of one measured operation, kept whole (a few hundred
/// thousand `Duration`s at most), so percentiles are exact.
#[derive(Default, Clone)]
pub struct Recorder {
    samples: Vec<Duration>,
    /// Items done across all samples (1 per sample for single operations,
    /// the chunk size for pipelined writes).
    items: u64,
    /// Wall time the recorded operations took, summed.
    busy: Duration,
}

impl Recorder {
    pub fn with_capacity(n: usize) -> Self {
        Recorder {
            samples: Vec::with_capacity(n),
            ..Default::default()
        }
    }

    pub fn record(&mut self, took: Duration, items: u64) {
        self.samples.push(took);
        self.items += items;
        self.busy += took;
    }

    /// Times `op` once and records it as `items` items.
    pub fn time<T, E>(&mut self, items: u64, op: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
        let start = Instant::now();
        let out = op()?;
        self.record(start.elapsed(), items);
        Ok(out)
    }

    /// Adds another recorder's samples (one per load-generator thread).
    pub fn merge(&mut self, other: &Recorder) {
        self.samples.extend_from_slice(&other.samples);
        self.items += other.items;
        self.busy += other.busy;
    }

    /// Like `summary`, with the rate taken over `wall` time instead of the
    /// summed busy time (for concurrent clients).
    pub fn summary_over(&self, wall: Duration) -> Summary {
        let mut s = self.summary();
        let secs = wall.as_secs_f64();
        s.per_sec = if secs > 0.0 {
            self.items as f64 / secs
        } else {
            0.0
        };
        s
    }

    pub fn summary(&self) -> Summary {
        let mut sorted = self.samples.clone();
        sorted.sort_unstable();
        let pick = |q: f64| -> Duration {
            if sorted.is_empty() {
                return Duration::ZERO;
            }
            // Nearest-rank percentile.
            let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
            sorted[rank - 1]
        };
        let secs = self.busy.as_secs_f64();
        Summary {
            p50: pick(0.50),
            p99: pick(0.99),
            per_sec: if secs > 0.0 {
                self.items as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// What a row shows for one side (ours or the baseline).
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub p50: Duration,
    pub p99: Duration,
    /// Items per second of busy time.
    pub per_sec: f64,
}

/// Runs `ours` and `base` in alternating rounds (ours first on even rounds,
/// the baseline first on odd ones) so a burst of noise from the other
/// engineers' builds lands on both sides alike. `warmup` calls of each are
/// made first and not recorded. Each closure gets the global call index so
/// both sides walk the same sequence of inputs.
pub fn paired<E>(
    warmup: usize,
    iterations: usize,
    rounds: usize,
    mut ours: impl FnMut(usize) -> Result<(), E>,
    mut base: impl FnMut(usize) -> Result<(), E>,
) -> Result<(Summary, Summary), E> {
    for i in 0..warmup {
        ours(i)?;
        base(i)?;
    }
    let rounds = rounds.max(1);
    let per_round = iterations.div_ceil(rounds);
    let mut a = Recorder::with_capacity(iterations);
    let mut b = Recorder::with_capacity(iterations);
    for r in 0..rounds {
        let range = (r * per_round)..((r + 1) * per_round).min(iterations);
        let mut run_ours = |a: &mut Recorder| -> Result<(), E> {
            for i in range.clone() {
                a.time(1, || ours(i))?;
            }
            Ok(())
        };
        if r % 2 == 0 {
            run_ours(&mut a)?;
            for i in range.clone() {
                b.time(1, || base(i))?;
            }
        } else {
            for i in range.clone() {
                b.time(1, || base(i))?;
            }
            run_ours(&mut a)?;
        }
    }
    Ok((a.summary(), b.summary()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut r = Recorder::default();
        for ms in 1..=100 {
            r.record(Duration::from_millis(ms), 1);
        }
        let s = r.summary();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p99, Duration::from_millis(99));
        // 100 items in 5.05 s.
        assert!((s.per_sec - 100.0 / 5.05).abs() < 1e-9);
    }
}
