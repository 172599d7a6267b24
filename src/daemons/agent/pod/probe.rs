//! Running one liveness, readiness or startup probe (exec, httpGet, tcpSocket) against a
//! running container, and counting results against the probe's thresholds.
//!
//! httpGet and tcpSocket connect to the pod IP from the agent, as the kubelet does; exec
//! runs in the container through the runtime.

use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::daemons::agent::runtime::ContainerRuntime;

/// One probe attempt's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The probe passed.
    Success,
    /// The probe failed; the message goes into the `Unhealthy` event.
    Failure(String),
}

/// Runs `probe` once. `pod_ip` is needed for httpGet and tcpSocket; `ports` maps named
/// container ports to numbers.
pub async fn run_probe<R: ContainerRuntime>(
    runtime: &R,
    container_id: &str,
    pod_ip: Option<&str>,
    ports: &[(String, u16)],
    probe: &Probe,
) -> ProbeOutcome {
    let timeout = Duration::from_secs(probe.timeout_seconds.unwrap_or(1).max(1) as u64);
    let attempt = async {
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            return match runtime.exec(container_id, &command).await {
                Ok(out) if out.exit_code == 0 => ProbeOutcome::Success,
                Ok(out) => ProbeOutcome::Failure(format!(
                    "exec probe exited with {}: {}",
                    out.exit_code,
                    out.output.trim()
                )),
                Err(e) => ProbeOutcome::Failure(format!("exec probe failed: {e}")),
            };
        }
        let resolve = |port: &IntOrString| match port {
            IntOrString::Int(n) => u16::try_from(*n).ok(),
            IntOrString::String(name) => ports.iter().find(|(n, _)| n == name).map(|(_, p)| *p),
        };
        let (host, port, http_path) = if let Some(http) = &probe.http_get {
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            (http.host.clone(), resolve(&http.port), Some(path))
        } else if let Some(tcp) = &probe.tcp_socket {
            (tcp.host.clone(), resolve(&tcp.port), None)
        } else {
            return ProbeOutcome::Failure("probe has no supported handler".into());
        };
        let Some(port) = port else {
            return ProbeOutcome::Failure("probe port does not resolve".into());
        };
        let Some(host) = host.or(pod_ip.map(str::to_string)) else {
            return ProbeOutcome::Failure("the pod has no IP yet".into());
        };
        let mut stream = match TcpStream::connect((host.as_str(), port)).await {
            Ok(stream) => stream,
            Err(e) => return ProbeOutcome::Failure(format!("dial {host}:{port}: {e}")),
        };
        let Some(path) = http_path else {
            return ProbeOutcome::Success;
        };
        http_status(&mut stream, &host, port, &path).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(outcome) => outcome,
        Err(_) => ProbeOutcome::Failure(format!("probe timed out after {timeout:?}")),
    }
}

/// A minimal HTTP/1.0 GET: success for statuses 200–399, as the kubelet counts them.
async fn http_status(stream: &mut TcpStream, host: &str, port: u16, path: &str) -> ProbeOutcome {
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\nUser-Agent: berth-probe/1\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return ProbeOutcome::Failure(format!("send request: {e}"));
    }
    let mut head = [0u8; 64];
    let mut read = 0;
    while read < 12 {
        match stream.read(&mut head[read..]).await {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return ProbeOutcome::Failure(format!("read response: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head[..read]);
    match line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
    {
        Some(code) if (200..400).contains(&code) => ProbeOutcome::Success,
        Some(code) => ProbeOutcome::Failure(format!("HTTP probe failed with statuscode: {code}")),
        None => ProbeOutcome::Failure("malformed HTTP response".into()),
    }
}

/// Consecutive-result counting against `successThreshold` and `failureThreshold`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeTracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    /// The probe's current verdict (starts false, as a readiness probe does).
    pub passing: bool,
}

impl ProbeTracker {
    /// A tracker for `probe` (Kubernetes' defaults: 1 success, 3 failures).
    pub fn new(probe: &Probe) -> Self {
        ProbeTracker {
            success_threshold: probe.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
            successes: 0,
            failures: 0,
            passing: false,
        }
    }

    /// Whether the last `failureThreshold` attempts all failed (a startup probe gives up).
    pub fn exhausted(&self) -> bool {
        self.failures >= self.failure_threshold
    }

    /// Records one outcome; returns true when the verdict changed.
    pub fn record(&mut self, outcome: &ProbeOutcome) -> bool {
        let before = self.passing;
        match outcome {
            ProbeOutcome::Success => {
                self.failures = 0;
                self.successes += 1;
                if self.successes >= self.success_threshold {
                    self.passing = true;
                }
            }
            ProbeOutcome::Failure(_) => {
                self.successes = 0;
                self.failures += 1;
                if self.failures >= self.failure_threshold {
                    self.passing = false;
                }
            }
        }
        before != self.passing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_count_consecutive_results() {
        let probe: Probe = serde_json::from_value(
            serde_json::json!({"successThreshold": 2, "failureThreshold": 2}),
        )
        .unwrap();
        let mut t = ProbeTracker::new(&probe);
        let fail = ProbeOutcome::Failure("x".into());
        assert!(!t.record(&ProbeOutcome::Success));
        assert!(t.record(&ProbeOutcome::Success), "two successes pass");
        assert!(!t.record(&fail), "one failure is tolerated");
        assert!(!t.record(&ProbeOutcome::Success));
        assert!(!t.record(&fail));
        assert!(t.record(&fail), "two consecutive failures fail");
        assert!(!t.passing);
    }
}
