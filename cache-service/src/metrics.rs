//! A small Prometheus registry: labelled counters, gauges and latency histograms, rendered in the
//! text exposition format at `GET /metrics`. All names carry the contract prefix `tollgate_`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

type Labels = Vec<(&'static str, String)>;

/// Latency buckets in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

#[derive(Debug, Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), i64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    help: BTreeMap<&'static str, (&'static str, &'static str)>,
    /// Label sets seen per metric name (cardinality bound).
    series: BTreeMap<&'static str, usize>,
}

/// Distinct label sets kept per metric; further ones are folded into one series whose label
/// values are all `other` (tenants and models come from traffic: keep `/metrics` bounded).
pub const MAX_SERIES_PER_METRIC: usize = 500;

impl Inner {
    fn key(
        &mut self,
        name: &'static str,
        labels: &[(&'static str, &str)],
    ) -> (&'static str, Labels) {
        let key: (&'static str, Labels) = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        let known = self.counters.contains_key(&key)
            || self.gauges.contains_key(&key)
            || self.histograms.contains_key(&key);
        if known || labels.is_empty() {
            return key;
        }
        let n = self.series.entry(name).or_insert(0);
        if *n < MAX_SERIES_PER_METRIC {
            *n += 1;
            key
        } else {
            (
                name,
                labels
                    .iter()
                    .map(|(k, _)| (*k, "other".to_string()))
                    .collect(),
            )
        }
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn labels_text(labels: &Labels, extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Declares a metric's help text and type (`counter`, `gauge`, `histogram`).
    pub fn describe(&self, name: &'static str, kind: &'static str, help: &'static str) {
        self.lock().help.insert(name, (kind, help));
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)], by: u64) {
        let mut inner = self.lock();
        let key = inner.key(name, labels);
        *inner.counters.entry(key).or_insert(0) += by;
    }

    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], value: i64) {
        let mut inner = self.lock();
        let key = inner.key(name, labels);
        inner.gauges.insert(key, value);
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], d: Duration) {
        let secs = d.as_secs_f64();
        let mut inner = self.lock();
        let key = inner.key(name, labels);
        let h = inner.histograms.entry(key).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Current value of a counter (tests, dashboards).
    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> u64 {
        let key = (
            name,
            labels
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect::<Labels>(),
        );
        self.lock().counters.get(&key).copied().unwrap_or(0)
    }

    /// Sum of a counter over all label values.
    pub fn counter_sum(&self, name: &'static str) -> u64 {
        self.lock()
            .counters
            .iter()
            .filter(|((n, _), _)| *n == name)
            .map(|(_, v)| v)
            .sum()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let mut described = std::collections::BTreeSet::new();
        let mut header = |out: &mut String, name: &'static str, default_kind: &str| {
            if described.insert(name) {
                let (kind, help) = inner.help.get(name).copied().unwrap_or((default_kind, ""));
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
        };
        for ((name, labels), v) in &inner.counters {
            header(&mut out, name, "counter");
            let _ = writeln!(out, "{name}{} {v}", labels_text(labels, None));
        }
        for ((name, labels), v) in &inner.gauges {
            header(&mut out, name, "gauge");
            let _ = writeln!(out, "{name}{} {v}", labels_text(labels, None));
        }
        for ((name, labels), h) in &inner.histograms {
            header(&mut out, name, "histogram");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    labels_text(labels, Some(("le", b.to_string()))),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "{name}_bucket{} {}",
                labels_text(labels, Some(("le", "+Inf".into()))),
                h.count
            );
            let _ = writeln!(out, "{name}_sum{} {}", labels_text(labels, None), h.sum);
            let _ = writeln!(out, "{name}_count{} {}", labels_text(labels, None), h.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_sets_are_bounded_per_metric() {
        let m = Metrics::new();
        for i in 0..MAX_SERIES_PER_METRIC + 10 {
            m.inc("tollgate_x_total", &[("tenant", &format!("t{i}"))], 1);
        }
        m.inc("tollgate_x_total", &[("tenant", "t0")], 1);
        assert_eq!(m.counter("tollgate_x_total", &[("tenant", "t0")]), 2);
        assert_eq!(m.counter("tollgate_x_total", &[("tenant", "other")]), 10);
        assert_eq!(
            m.counter_sum("tollgate_x_total"),
            MAX_SERIES_PER_METRIC as u64 + 11
        );
        let text = m.render();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("tollgate_x_total"))
                .count(),
            MAX_SERIES_PER_METRIC + 1
        );
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.describe("tollgate_x_total", "counter", "Things.");
        m.inc("tollgate_x_total", &[("kind", "a\"b")], 2);
        m.inc("tollgate_x_total", &[("kind", "a\"b")], 1);
        m.set("tollgate_entries", &[], 5);
        m.observe(
            "tollgate_lat_seconds",
            &[("op", "admit")],
            Duration::from_micros(300),
        );
        let t = m.render();
        assert!(t.contains("# TYPE tollgate_x_total counter"));
        assert!(t.contains("tollgate_x_total{kind=\"a\\\"b\"} 3"), "{t}");
        assert!(t.contains("tollgate_entries 5"));
        assert!(
            t.contains("tollgate_lat_seconds_bucket{op=\"admit\",le=\"0.0005\"} 1"),
            "{t}"
        );
        assert!(t.contains("tollgate_lat_seconds_bucket{op=\"admit\",le=\"0.00025\"} 0"));
        assert!(t.contains("tollgate_lat_seconds_count{op=\"admit\"} 1"));
        assert_eq!(m.counter("tollgate_x_total", &[("kind", "a\"b")]), 3);
    }
}
