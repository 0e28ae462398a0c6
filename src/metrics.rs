//! The Prometheus text format (version 0.0.4), written by the official
//! client (`prometheus-client`): what the server's `/metrics` and the
//! loader's `--metrics-file` share. Values are read at scrape time from
//! the atomics the code already keeps, so a metric costs the hot path
//! nothing beyond its counter.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Writes metrics as a `Collector` is asked to; a thin layer over the
/// client's encoder that keeps each call site to one line.
pub struct Writer<'a>(pub DescriptorEncoder<'a>);

impl Writer<'_> {
    /// A counter; `name` without `_total` (the encoder adds it).
    pub fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        let m = ConstCounter::new(v);
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    /// A counter of seconds (or any fraction).
    pub fn counter_f64(&mut self, name: &str, help: &str, v: f64) -> fmt::Result {
        let m = ConstCounter::new(v);
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    pub fn gauge(&mut self, name: &str, help: &str, v: f64) -> fmt::Result {
        let m = ConstGauge::new(v);
        m.encode(
            self.0
                .encode_descriptor(name, help, None, m.metric_type())?,
        )
    }

    /// A family: one series per label set in `rows`.
    pub fn family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        rows: impl IntoIterator<Item = (L, Series)>,
    ) -> fmt::Result {
        let mut family = self.0.encode_descriptor(name, help, None, kind)?;
        for (labels, series) in rows {
            series.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// One series of a family.
#[derive(Debug, Clone)]
pub enum Series {
    Counter(u64),
    Gauge(f64),
    /// Sum, count and `(upper bound, count in this bucket only)` buckets,
    /// the last one's bound `+Inf` (the encoder makes them cumulative).
    Histogram {
        sum: f64,
        count: u64,
        buckets: Vec<(f64, u64)>,
    },
}

impl Series {
    fn encode(&self, mut e: MetricEncoder<'_>) -> fmt::Result {
        match self {
            Series::Counter(v) => ConstCounter::new(*v).encode(e),
            Series::Gauge(v) => ConstGauge::new(*v).encode(e),
            Series::Histogram {
                sum,
                count,
                buckets,
            } => e.encode_histogram::<NoLabelSet>(*sum, *count, buckets, None),
        }
    }
}

/// Renders whatever `collect` writes, in the text format.
pub fn render<C: Collector>(collect: C) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collect));
    let mut out = String::with_capacity(8 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
    Ok(out)
}
