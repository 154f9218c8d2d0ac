//! A `metrics` recorder that keeps every metric in memory and renders the Prometheus text
//! exposition format (version 0.0.4).
//!
//! Hand-written rather than `metrics-exporter-prometheus`: that crate's HTTP listener needs
//! tokio and hyper, while this is ~200 lines on std (atomics for the values, one mutex taken
//! only when a handle is registered or the page is rendered). Counters and gauges are the
//! `metrics` crate's own atomic implementations; a histogram counts into fixed buckets
//! ([`BUCKETS`], seconds: every histogram of this crate is a latency).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};
use parking_lot::Mutex;

/// The upper bounds (seconds) of every histogram's buckets, `+Inf` implied.
pub const BUCKETS: &[f64] = &[
    0.000_001,
    0.000_002_5,
    0.000_005,
    0.000_01,
    0.000_025,
    0.000_05,
    0.000_1,
    0.000_25,
    0.000_5,
    0.001,
    0.002_5,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
];

/// One histogram's buckets (non-cumulative counts; rendering accumulates), sum and count.
#[derive(Debug)]
pub struct Buckets {
    counts: Vec<AtomicU64>,
    /// f64 bits.
    sum: AtomicU64,
    count: AtomicU64,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            counts: (0..=BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
            count: AtomicU64::new(0),
        }
    }
}

impl Buckets {
    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of the observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }
}

impl HistogramFn for Buckets {
    fn record(&self, value: f64) {
        let i = BUCKETS.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + value).to_bits())
            });
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
enum Value {
    Counter(Arc<AtomicU64>),
    /// f64 bits (the `metrics` crate's `GaugeFn` for `AtomicU64`).
    Gauge(Arc<AtomicU64>),
    Histogram(Arc<Buckets>),
}

/// The recorder. Install it with `metrics::set_global_recorder` (the binaries do) or for one
/// thread with `metrics::with_local_recorder`; clones share the same metrics.
#[derive(Debug, Clone, Default)]
pub struct PrometheusRecorder {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Debug, Default)]
struct Registry {
    metrics: BTreeMap<Key, Value>,
    help: BTreeMap<String, String>,
}

impl PrometheusRecorder {
    /// An empty recorder with the help text of every metric in [`super::ALL`].
    pub fn new() -> PrometheusRecorder {
        let r = PrometheusRecorder::default();
        {
            let mut g = r.inner.lock();
            for (name, _, help) in super::ALL {
                g.help.insert((*name).to_string(), (*help).to_string());
            }
        }
        r
    }

    fn entry(&self, key: &Key, make: impl FnOnce() -> Value) -> Value {
        self.inner
            .lock()
            .metrics
            .entry(key.clone())
            .or_insert_with(make)
            .clone()
    }

    /// A counter's value, if registered (`labels`: name, value pairs, in registration order).
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        match self.find(name, labels)? {
            Value::Counter(c) => Some(c.load(Ordering::Relaxed)),
            _ => None,
        }
    }

    /// A gauge's value, if registered.
    pub fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        match self.find(name, labels)? {
            Value::Gauge(g) => Some(f64::from_bits(g.load(Ordering::Relaxed))),
            _ => None,
        }
    }

    /// A histogram's buckets, if registered.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Arc<Buckets>> {
        match self.find(name, labels)? {
            Value::Histogram(h) => Some(h),
            _ => None,
        }
    }

    fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        let g = self.inner.lock();
        g.metrics
            .iter()
            .find(|(k, _)| {
                k.name() == name
                    && k.labels().count() == labels.len()
                    && k.labels()
                        .zip(labels)
                        .all(|(l, (n, v))| l.key() == *n && l.value() == *v)
            })
            .map(|(_, v)| v.clone())
    }

    /// Every registered metric in the Prometheus text format, grouped by name.
    pub fn render(&self) -> String {
        let g = self.inner.lock();
        let mut out = String::new();
        let mut last_name: Option<&str> = None;
        for (key, value) in &g.metrics {
            let name = key.name();
            if last_name != Some(name) {
                if let Some(help) = g.help.get(name) {
                    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
                }
                let kind = match value {
                    Value::Counter(_) => "counter",
                    Value::Gauge(_) => "gauge",
                    Value::Histogram(_) => "histogram",
                };
                let _ = writeln!(out, "# TYPE {name} {kind}");
                last_name = Some(name);
            }
            let labels: Vec<(String, String)> = key
                .labels()
                .map(|l| (l.key().to_string(), l.value().to_string()))
                .collect();
            match value {
                Value::Counter(c) => {
                    let _ = writeln!(
                        out,
                        "{name}{} {}",
                        label_set(&labels, None),
                        c.load(Ordering::Relaxed)
                    );
                }
                Value::Gauge(v) => {
                    let v = f64::from_bits(v.load(Ordering::Relaxed));
                    let _ = writeln!(out, "{name}{} {}", label_set(&labels, None), number(v));
                }
                Value::Histogram(h) => {
                    let mut cumulative = 0u64;
                    for (i, c) in h.counts.iter().enumerate() {
                        cumulative += c.load(Ordering::Relaxed);
                        let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| number(*b));
                        let _ = writeln!(
                            out,
                            "{name}_bucket{} {cumulative}",
                            label_set(&labels, Some(&le))
                        );
                    }
                    let set = label_set(&labels, None);
                    let _ = writeln!(out, "{name}_sum{set} {}", number(h.sum()));
                    let _ = writeln!(out, "{name}_count{set} {}", h.count());
                }
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{v}")
    }
}

fn escape_help(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `{a="1",le="0.5"}`, or nothing for no labels.
fn label_set(labels: &[(String, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_value(v)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Recorder for PrometheusRecorder {
    fn describe_counter(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_gauge(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn describe_histogram(&self, key: KeyName, _unit: Option<Unit>, description: SharedString) {
        self.describe(key, description);
    }

    fn register_counter(&self, key: &Key, _metadata: &Metadata<'_>) -> Counter {
        match self.entry(key, || Value::Counter(Arc::default())) {
            Value::Counter(c) => Counter::from_arc(c),
            _ => Counter::noop(),
        }
    }

    fn register_gauge(&self, key: &Key, _metadata: &Metadata<'_>) -> Gauge {
        match self.entry(key, || {
            Value::Gauge(Arc::new(AtomicU64::new(0f64.to_bits())))
        }) {
            Value::Gauge(g) => Gauge::from_arc(g),
            _ => Gauge::noop(),
        }
    }

    fn register_histogram(&self, key: &Key, _metadata: &Metadata<'_>) -> Histogram {
        match self.entry(key, || Value::Histogram(Arc::default())) {
            Value::Histogram(h) => Histogram::from_arc(h),
            _ => Histogram::noop(),
        }
    }
}

impl PrometheusRecorder {
    fn describe(&self, key: KeyName, description: SharedString) {
        self.inner
            .lock()
            .help
            .insert(key.as_str().to_string(), description.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let r = PrometheusRecorder::new();
        metrics::with_local_recorder(&r, || {
            metrics::counter!(crate::observe::APPENDED_BYTES).increment(7);
            metrics::gauge!(crate::observe::FOLLOWER_LAG_RECORDS, "replica" => "2").set(3.0);
            let h = metrics::histogram!(crate::observe::APPEND_SECONDS);
            h.record(0.000_003);
            h.record(0.2);
        });
        let text = r.render();
        assert!(
            text.contains(
                "# TYPE oncelog_appended_bytes_total counter\noncelog_appended_bytes_total 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("oncelog_follower_lag_records{replica=\"2\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("oncelog_append_seconds_bucket{le=\"0.000005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("oncelog_append_seconds_bucket{le=\"0.25\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("oncelog_append_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("oncelog_append_seconds_count 2\n"), "{text}");
        assert!(text.contains("# HELP oncelog_append_seconds "), "{text}");
        assert_eq!(r.counter(crate::observe::APPENDED_BYTES, &[]), Some(7));
        assert_eq!(
            r.gauge(crate::observe::FOLLOWER_LAG_RECORDS, &[("replica", "2")]),
            Some(3.0)
        );
    }
}
