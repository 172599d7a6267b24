//! The agent's `/metrics` (Prometheus text format): drift found and repaired, by kind, and
//! how far the sync loop has got (relists done, pod passes done, pods taken on), served on a
//! small local HTTP port (`--metrics-listen`, default 127.0.0.1:10249).
//!
//! The progress counters tell a user (and a test) that the agent is working, not only that
//! it has nothing to do: "no container was restarted" means something once the relists and
//! pod passes have moved on since.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;

use crate::daemons::agent::pod::drift::DriftKind;

/// The agent's counters.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    detected: [AtomicU64; 4],
    repaired: [AtomicU64; 4],
    relists: AtomicU64,
    pod_syncs: AtomicU64,
    pods_taken_on: AtomicU64,
    /// The masters the agent's client moves between.
    masters: Option<crate::client::failover::Masters>,
}

impl AgentMetrics {
    /// Counters that also report the masters `masters` knows and uses.
    pub fn with_masters(masters: crate::client::failover::Masters) -> AgentMetrics {
        AgentMetrics {
            masters: Some(masters),
            ..AgentMetrics::default()
        }
    }

    /// Counts one drift found.
    pub fn detected(&self, kind: DriftKind) {
        self.detected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one drift repaired.
    pub fn repaired(&self, kind: DriftKind) {
        self.repaired[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one relist done: every container of the node listed and compared with the
    /// node's pods.
    pub fn relisted(&self) {
        self.relists.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one pod pass done (the pod compared with its containers, acted on, and its
    /// status written); `first` when it was the first pass of the pod's worker.
    pub fn pod_synced(&self, first: bool) {
        self.pod_syncs.fetch_add(1, Ordering::Relaxed);
        if first {
            self.pods_taken_on.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, counters) in [
            (
                "berth_agent_drift_detected_total",
                "Containers found to differ from their pod spec, by kind.",
                &self.detected,
            ),
            (
                "berth_agent_drift_repaired_total",
                "Drifted containers put back as their pod spec says, by kind.",
                &self.repaired,
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n"));
            for kind in DriftKind::ALL {
                let value = counters[kind as usize].load(Ordering::Relaxed);
                out.push_str(&format!("{name}{{kind=\"{}\"}} {value}\n", kind.as_str()));
            }
        }
        for (name, help, counter) in [
            (
                "berth_agent_relists_total",
                "Relists done: every container of the node listed and compared with its pods.",
                &self.relists,
            ),
            (
                "berth_agent_pod_syncs_total",
                "Pod passes done: a pod compared with its containers, acted on, its status written.",
                &self.pod_syncs,
            ),
            (
                "berth_agent_pods_taken_on_total",
                "Pods whose worker finished its first pass (a new pod set up or a running one adopted).",
                &self.pods_taken_on,
            ),
        ] {
            let value = counter.load(Ordering::Relaxed);
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"
            ));
        }
        if let Some(masters) = &self.masters {
            let urls = masters.urls();
            out.push_str(&format!(
                "# HELP berth_agent_api_servers Masters the agent knows (--server and the kubernetes Endpoints).\n\
                 # TYPE berth_agent_api_servers gauge\nberth_agent_api_servers {}\n\
                 # HELP berth_agent_api_server_in_use The master the agent's requests go to.\n\
                 # TYPE berth_agent_api_server_in_use gauge\nberth_agent_api_server_in_use{{url=\"{}\"}} 1\n\
                 # HELP berth_agent_api_server_switches_total Times the agent's requests moved to another master.\n\
                 # TYPE berth_agent_api_server_switches_total counter\nberth_agent_api_server_switches_total {}\n",
                urls.len(),
                urls.first().map(String::as_str).unwrap_or_default(),
                masters.switches()
            ));
        }
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<AgentMetrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [("content-type", "text/plain; version=0.0.4")],
                    metrics.render(),
                )
            }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the metrics port (before anything else starts, so a taken port fails early).
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render_by_kind() {
        let m = AgentMetrics::default();
        m.detected(DriftKind::Stopped);
        m.detected(DriftKind::Stopped);
        m.repaired(DriftKind::Orphan);
        let text = m.render();
        assert!(text.contains("berth_agent_drift_detected_total{kind=\"stopped\"} 2\n"));
        assert!(text.contains("berth_agent_drift_repaired_total{kind=\"orphan\"} 1\n"));
        assert!(text.contains("# TYPE berth_agent_drift_detected_total counter"));
    }

    #[test]
    fn progress_counters_count_relists_passes_and_pods_taken_on() {
        let m = AgentMetrics::default();
        m.relisted();
        m.pod_synced(true);
        m.pod_synced(false);
        m.pod_synced(false);
        let text = m.render();
        assert!(text.contains("berth_agent_relists_total 1\n"), "{text}");
        assert!(text.contains("berth_agent_pod_syncs_total 3\n"), "{text}");
        assert!(
            text.contains("berth_agent_pods_taken_on_total 1\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE berth_agent_relists_total counter"));
    }
}
