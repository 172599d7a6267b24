//! The agent's `/metrics` (Prometheus text format): drift found and repaired, by kind,
//! served on a small local HTTP port (`--metrics-listen`, default 127.0.0.1:10249).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;

use crate::daemons::agent::pod::drift::DriftKind;

/// Drift counters.
#[derive(Debug, Default)]
pub struct DriftMetrics {
    detected: [AtomicU64; 4],
    repaired: [AtomicU64; 4],
}

impl DriftMetrics {
    /// Counts one drift found.
    pub fn detected(&self, kind: DriftKind) {
        self.detected[kind as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one drift repaired.
    pub fn repaired(&self, kind: DriftKind) {
        self.repaired[kind as usize].fetch_add(1, Ordering::Relaxed);
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
        out
    }
}

/// Serves `/metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<DriftMetrics>,
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
        let m = DriftMetrics::default();
        m.detected(DriftKind::Stopped);
        m.detected(DriftKind::Stopped);
        m.repaired(DriftKind::Orphan);
        let text = m.render();
        assert!(text.contains("berth_agent_drift_detected_total{kind=\"stopped\"} 2\n"));
        assert!(text.contains("berth_agent_drift_repaired_total{kind=\"orphan\"} 1\n"));
        assert!(text.contains("# TYPE berth_agent_drift_detected_total counter"));
    }
}
