//! `GET /metrics`: requests by route and status, latency by route, and at
//! scrape time the store's, the pools', the worker's and the id cache's
//! numbers. The table of what each means is in docs/operating.md.
//!
//! The request path pays two relaxed atomic adds and a bucket add per
//! request: fixed arrays indexed by route and status, never a map or a
//! lock. Route labels are the fixed paths of the route table (an unknown
//! path is `unmatched`), so the series count is bounded whatever clients
//! send.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::routes::{Endpoint, ENDPOINTS};
use super::App;
use crate::metrics::{Series, Writer};
use crate::store::{ErrorClass, RedisStats, Stats};

/// The statuses the server answers with; anything else is counted as
/// `other`.
const STATUSES: [u16; 14] = [
    200, 400, 401, 403, 404, 405, 408, 409, 413, 415, 429, 500, 503, 0,
];
/// Upper bounds of the latency buckets, in seconds: a `/read` is about
/// 0.1-1 ms, a `/bulk-load` of 100,000 rows seconds.
const BUCKETS: [f64; 14] = [
    0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];
/// Every endpoint, then unknown paths.
const ROUTES: usize = ENDPOINTS.len() + 1;

/// The route label of a request: its endpoint's path, or `unmatched`.
pub fn route_label(endpoint: Option<Endpoint>) -> &'static str {
    endpoint.map_or("unmatched", Endpoint::path)
}

/// The per-request counters.
pub struct HttpMetrics {
    requests: [[AtomicU64; STATUSES.len()]; ROUTES],
    latency: [Latency; ROUTES],
}

#[derive(Default)]
struct Latency {
    /// Not cumulative: each request adds to the first bucket it fits
    /// (the last slot is +Inf); the encoder sums them up.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: std::array::from_fn(|_| Default::default()),
            latency: std::array::from_fn(|_| Latency::default()),
        }
    }
}

impl HttpMetrics {
    /// One answered request.
    pub fn record(&self, endpoint: Option<Endpoint>, status: u16, took: Duration) {
        let route = endpoint.map_or(ENDPOINTS.len(), |e| e as usize);
        let slot = STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests[route][slot].fetch_add(1, Relaxed);
        let latency = &self.latency[route];
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        latency.buckets[bucket].fetch_add(1, Relaxed);
        latency.count.fetch_add(1, Relaxed);
        latency
            .sum_nanos
            .fetch_add(took.as_nanos().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn requests(&self) -> Vec<([(&'static str, String); 2], Series)> {
        let mut rows = Vec::new();
        for (route, statuses) in self.requests.iter().enumerate() {
            for (slot, n) in statuses.iter().enumerate() {
                let n = n.load(Relaxed);
                if n == 0 {
                    continue;
                }
                let status = match STATUSES[slot] {
                    0 => "other".to_owned(),
                    s => s.to_string(),
                };
                let label = route_label(ENDPOINTS.get(route).copied());
                rows.push((
                    [("route", label.to_owned()), ("status", status)],
                    Series::Counter(n),
                ));
            }
        }
        rows
    }

    fn latencies(&self) -> Vec<([(&'static str, String); 1], Series)> {
        let mut rows = Vec::new();
        for (route, l) in self.latency.iter().enumerate() {
            let count = l.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            // Per bucket: the encoder writes them cumulative.
            let buckets: Vec<(f64, u64)> = l
                .buckets
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    let bound = BUCKETS.get(i).copied().unwrap_or(f64::INFINITY);
                    (bound, n.load(Relaxed))
                })
                .collect();
            let label = route_label(ENDPOINTS.get(route).copied());
            rows.push((
                [("route", label.to_owned())],
                Series::Histogram {
                    sum: l.sum_nanos.load(Relaxed) as f64 / 1e9,
                    count,
                    buckets,
                },
            ));
        }
        rows
    }
}

/// Everything one scrape shows, read at once.
#[derive(Debug)]
struct Scrape {
    requests: Vec<([(&'static str, String); 2], Series)>,
    latencies: Vec<([(&'static str, String); 1], Series)>,
    stats: Stats,
    redis: RedisStats,
    redis_up: bool,
    worker: crate::demo::worker::WorkerStatus,
    entities: u64,
    entities_exact: bool,
    ids_age: Duration,
    cache_error: bool,
}

/// The `/metrics` page.
pub fn render(app: &App, http: &HttpMetrics) -> Result<String, fmt::Error> {
    let snap = app.cache.get();
    crate::metrics::render(Scrape {
        requests: http.requests(),
        latencies: http.latencies(),
        stats: app.store.stats(),
        redis: app.store.redis_stats(),
        redis_up: app.cache.redis_up(),
        worker: app.worker.status(),
        entities: snap.count,
        entities_exact: snap.count_source.is_exact(),
        ids_age: snap.taken_at.elapsed(),
        cache_error: snap.error.is_some(),
    })
}

impl Collector for Scrape {
    fn encode(&self, encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let mut w = Writer(encoder);
        w.family(
            "fs_http_requests",
            "HTTP requests answered, by route and status.",
            MetricType::Counter,
            self.requests.iter().cloned(),
        )?;
        w.family(
            "fs_http_request_duration_seconds",
            "Time from a request's routing to its answer handed to the socket, by route.",
            MetricType::Histogram,
            self.latencies.iter().cloned(),
        )?;
        let r = &self.redis;
        w.gauge(
            "fs_redis_up",
            "1 while the background refresher reaches Redis, 0 after it failed to.",
            f64::from(u8::from(self.redis_up)),
        )?;
        w.family(
            "fs_redis_errors",
            "Store operations that failed at Redis (after the store's one retry), by kind.",
            MetricType::Counter,
            ErrorClass::ALL.iter().map(|c| {
                (
                    [("kind", c.as_str())],
                    Series::Counter(r.errors_total[*c as usize]),
                )
            }),
        )?;
        w.counter(
            "fs_redis_round_trips",
            "Pipelines or commands sent to Redis (one per node on a cluster).",
            r.round_trips_total,
        )?;
        w.counter(
            "fs_redis_script_calls",
            "Lua script calls sent (EVALSHA), re-sends after NOSCRIPT included.",
            r.script_calls_total,
        )?;
        w.counter(
            "fs_redis_noscript_reloads",
            "Rounds that re-loaded a script Redis had lost (restart, failover, SCRIPT FLUSH).",
            r.noscript_reloads_total,
        )?;
        w.family(
            "fs_redis_pool_connections",
            "Connections to Redis open now, in use or idle.",
            MetricType::Gauge,
            [
                (
                    [("state", "in_use")],
                    Series::Gauge(r.pool_connections.saturating_sub(r.pool_idle) as f64),
                ),
                ([("state", "idle")], Series::Gauge(r.pool_idle as f64)),
            ],
        )?;
        w.gauge(
            "fs_redis_pool_max_connections",
            "The most connections the pools may open.",
            r.pool_max as f64,
        )?;
        w.counter_f64(
            "fs_redis_pool_checkout_wait_seconds",
            "Time request and background threads spent waiting for a pooled connection.",
            r.pool_checkout_wait_micros_total as f64 / 1e6,
        )?;
        w.counter(
            "fs_redis_pool_checkout_timeouts",
            "Checkouts that got no connection within --redis-timeout-ms.",
            r.pool_checkout_timeouts_total,
        )?;
        let s = &self.stats;
        w.counter(
            "fs_store_reads",
            "Entity reads (one per entity of a batch read).",
            s.reads_total,
        )?;
        w.counter(
            "fs_store_read_fields",
            "Feature values returned by reads.",
            s.read_fields_total,
        )?;
        w.counter(
            "fs_store_batch_writes",
            "Batch rows written.",
            s.batch_writes_total,
        )?;
        w.counter(
            "fs_store_streaming_writes",
            "Streaming writes (one per entity update).",
            s.streaming_writes_total,
        )?;
        w.counter(
            "fs_store_skipped_stale",
            "Features a write left alone: the stored event time was as new or newer.",
            s.skipped_stale_total,
        )?;
        w.counter(
            "fs_store_invalid_values",
            "Stored values a typed read found not of their declared type (served as missing).",
            s.invalid_values_total,
        )?;
        let wk = &self.worker;
        w.gauge(
            "fs_worker_running",
            "1 while the streaming worker runs (not paused).",
            f64::from(u8::from(wk.running && !wk.paused)),
        )?;
        w.counter("fs_worker_ticks", "Worker ticks run.", wk.tick_count)?;
        w.counter(
            "fs_worker_writes",
            "Entity updates the worker wrote.",
            wk.writes_count,
        )?;
        w.counter(
            "fs_worker_failed_writes",
            "Entity updates the worker could not write.",
            wk.failed_writes_count,
        )?;
        w.gauge(
            "fs_entities",
            "Entities under the first entity's prefix (a lower bound while fs_entities_exact is 0).",
            self.entities as f64,
        )?;
        w.gauge(
            "fs_entities_exact",
            "1 when fs_entities is exact, 0 while the first count is still running.",
            f64::from(u8::from(self.entities_exact)),
        )?;
        w.gauge(
            "fs_entity_ids_age_seconds",
            "Age of the id list /batch-read and the worker pick from.",
            self.ids_age.as_secs_f64(),
        )?;
        w.gauge(
            "fs_entity_refresh_failing",
            "1 when the last refresh of the entity count failed (see /state for why).",
            f64::from(u8::from(self.cache_error)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::routes::lookup;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Whatever paths and statuses clients cause, every request is
        /// counted once, under a route label of the fixed set.
        #[test]
        fn any_traffic_is_counted_once_under_a_bounded_label(
            reqs in prop::collection::vec(
                ("/[a-z/.-]{0,12}|/read|/batch-read|/metrics", 0u16..1000, 0u64..20_000_000),
                1..64,
            )
        ) {
            let m = HttpMetrics::default();
            for (path, status, micros) in &reqs {
                let endpoint = lookup(path).map(|(e, _)| e);
                m.record(endpoint, *status, Duration::from_micros(*micros));
            }
            let allowed: Vec<&str> = ENDPOINTS
                .iter()
                .map(|e| e.path())
                .chain(["unmatched"])
                .collect();
            let mut total = 0;
            for ([(_, route), (_, _status)], series) in m.requests() {
                prop_assert!(allowed.contains(&route.as_str()), "{route}");
                let Series::Counter(n) = series else { unreachable!() };
                total += n;
            }
            prop_assert_eq!(total, reqs.len() as u64);
            let mut observed = 0;
            for (_, series) in m.latencies() {
                let Series::Histogram { count, buckets, .. } = series else { unreachable!() };
                prop_assert_eq!(buckets.iter().map(|(_, n)| n).sum::<u64>(), count);
                observed += count;
            }
            prop_assert_eq!(observed, reqs.len() as u64);
        }
    }
}
