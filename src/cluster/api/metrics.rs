//! Prometheus metrics in the text exposition format: request counts and latency histograms
//! by verb, resource and code, open watches, and the store revision.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; 12],
    sum: f64,
    count: u64,
}

/// What the API server counts.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<(String, String), Histogram>>,
    watches: AtomicI64,
    watch_events: AtomicI64,
    /// 1 while the node lifecycle holds back evictions (too many nodes unreachable at once,
    /// or the master overloaded).
    pub eviction_paused: AtomicI64,
}

/// Decrements the open-watch gauge when the watch ends, however it ends.
pub struct WatchGuard<'a>(&'a Metrics);

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        self.0.watches.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    pub fn observe(&self, verb: &str, resource: &str, code: u16, elapsed: Duration) {
        *self
            .requests
            .lock()
            .expect("metrics lock")
            .entry((verb.to_string(), resource.to_string(), code))
            .or_default() += 1;
        if verb == "watch" {
            return;
        }
        let secs = elapsed.as_secs_f64();
        let mut lat = self.latency.lock().expect("metrics lock");
        let h = lat
            .entry((verb.to_string(), resource.to_string()))
            .or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn watch_started(&self) -> WatchGuard<'_> {
        self.watches.fetch_add(1, Ordering::Relaxed);
        WatchGuard(self)
    }

    pub fn watch_event_sent(&self) {
        self.watch_events.fetch_add(1, Ordering::Relaxed);
    }

    /// The exposition text, with the store's current revision.
    pub fn render(&self, store_revision: i64) -> String {
        let mut out = String::new();
        out.push_str("# HELP apiserver_request_total Requests by verb, resource and HTTP code.\n# TYPE apiserver_request_total counter\n");
        for ((verb, resource, code), n) in self.requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str("# HELP apiserver_request_duration_seconds Request latency by verb and resource (watches excluded).\n# TYPE apiserver_request_duration_seconds histogram\n");
        for ((verb, resource), h) in self.latency.lock().expect("metrics lock").iter() {
            let labels = format!("verb=\"{verb}\",resource=\"{resource}\"");
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "apiserver_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_sum{{{labels}}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "apiserver_request_duration_seconds_count{{{labels}}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP apiserver_registered_watchers Open watches.\n# TYPE apiserver_registered_watchers gauge\napiserver_registered_watchers {}",
            self.watches.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP apiserver_watch_events_total Watch events sent.\n# TYPE apiserver_watch_events_total counter\napiserver_watch_events_total {}",
            self.watch_events.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_node_eviction_paused 1 while no node is tainted for eviction because too many are unreachable at once or the master was overloaded.\n# TYPE berth_node_eviction_paused gauge\nberth_node_eviction_paused {}",
            self.eviction_paused.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP berth_store_revision The store's latest revision.\n# TYPE berth_store_revision gauge\nberth_store_revision {store_revision}"
        );
        out
    }
}

/// Kubernetes' leader-election gauge for the controllers' lease.
pub fn leader_gauge(leading: u8) -> String {
    format!(
        "# HELP leader_election_master_status Whether this master holds the controllers' lease (1) or not (0).\n# TYPE leader_election_master_status gauge\nleader_election_master_status{{name=\"{}\"}} {leading}\n",
        crate::cluster::api::leadership::LEASE_NAME
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_counts_histograms_and_gauges() {
        let m = Metrics::default();
        m.observe("list", "pods", 200, Duration::from_millis(3));
        m.observe("list", "pods", 200, Duration::from_millis(30));
        let g = m.watch_started();
        let text = m.render(42);
        assert!(
            text.contains(
                "apiserver_request_total{verb=\"list\",resource=\"pods\",code=\"200\"} 2"
            )
        );
        assert!(text.contains("le=\"0.005\"} 1"));
        assert!(text.contains("le=\"+Inf\"} 2"));
        assert!(text.contains("apiserver_registered_watchers 1"));
        assert!(text.contains("berth_store_revision 42"));
        drop(g);
        assert!(m.render(0).contains("apiserver_registered_watchers 0"));
    }
}
