//! The agent's Node: facts about the host (cpu, memory, addresses, OS, architecture), the
//! Node object and its status (capacity, allocatable, the `Ready` condition), registration,
//! and the heartbeat that keeps the status current.

use std::collections::BTreeMap;
use std::net::{IpAddr, UdpSocket};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, NodeStatus};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::cluster::agent_endpoint::AgentEndpoint;

pub mod lease;

/// What the Node says about the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    pub host_ip: String,
    pub hostname: String,
    pub cpus: usize,
    pub memory_kib: u64,
    pub max_pods: u32,
    pub os: &'static str,
    pub arch: &'static str,
    pub kernel: String,
    pub docker_version: String,
    /// Held back from pods (`--system-reserved`): allocatable is capacity minus this.
    pub reserved: Reserved,
}

/// Resources the node keeps for the system, as the kubelet's `--system-reserved`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reserved {
    pub millicpu: u64,
    pub memory_kib: u64,
}

impl Reserved {
    /// Parses `cpu=500m,memory=1Gi` (either key may be left out).
    pub fn parse(text: &str) -> Result<Reserved, String> {
        let mut reserved = Reserved::default();
        for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(|| {
                format!("{pair:?} is not KEY=QUANTITY (e.g. cpu=500m,memory=1Gi)")
            })?;
            let bad = || format!("{value:?} is not a {key} quantity (e.g. cpu=500m, memory=1Gi)");
            match key.trim() {
                "cpu" => {
                    let nano = crate::manifest::quantity::nano_cpus(value).ok_or_else(bad)?;
                    reserved.millicpu = (nano as u64).div_ceil(1_000_000);
                }
                "memory" => {
                    let bytes = crate::manifest::quantity::memory_bytes(value).ok_or_else(bad)?;
                    reserved.memory_kib = (bytes as u64).div_ceil(1024);
                }
                other => {
                    return Err(format!(
                        "{other:?} cannot be reserved: use cpu and memory (e.g. cpu=500m,memory=1Gi)"
                    ));
                }
            }
        }
        Ok(reserved)
    }
}

/// Whether the node can run pods, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Readiness {
    /// The agent and the engine are healthy.
    pub fn ready() -> Readiness {
        Readiness {
            ready: true,
            reason: "KubeletReady",
            message: "berth agent is posting ready status".into(),
        }
    }

    /// The engine has not answered for longer than the agent's threshold.
    pub fn docker_down(for_secs: u64) -> Readiness {
        Readiness {
            ready: false,
            reason: "ContainerRuntimeUnhealthy",
            message: format!("the Docker engine has not answered for {for_secs} s"),
        }
    }
}

/// Kubernetes' architecture names for Rust's.
fn k8s_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Total memory from `/proc/meminfo`, in KiB.
fn memory_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// The local address that routes to the API server: the address pods and the server see.
pub fn route_ip(server: &str) -> Option<IpAddr> {
    let url: http::Uri = server.parse().ok()?;
    let host = url.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(443);
    let socket = UdpSocket::bind(("0.0.0.0", 0)).ok()?;
    socket.connect((host, port)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Reads the host's facts.
pub fn host_facts(name: &str, host_ip: IpAddr, max_pods: u32, docker_version: &str) -> NodeFacts {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| name.to_string());
    NodeFacts {
        name: name.to_string(),
        host_ip: host_ip.to_string(),
        hostname,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_kib: memory_kib(),
        max_pods,
        os: std::env::consts::OS,
        arch: k8s_arch(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_string())
            .unwrap_or_default(),
        docker_version: docker_version.to_string(),
        reserved: Reserved::default(),
    }
}

/// The Node object (metadata and spec) the agent registers.
pub fn node_object(facts: &NodeFacts, annotations: BTreeMap<String, String>) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": facts.name,
            "labels": node_labels(facts),
            "annotations": annotations,
        },
        "spec": {},
    }))
    .expect("a well-formed Node")
}

fn node_labels(facts: &NodeFacts) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".into(), facts.name.clone()),
        ("kubernetes.io/os".into(), facts.os.into()),
        ("kubernetes.io/arch".into(), facts.arch.into()),
        ("beta.kubernetes.io/os".into(), facts.os.into()),
        ("beta.kubernetes.io/arch".into(), facts.arch.into()),
    ])
}

/// The Node's status. `since` is when `Ready` last changed.
pub fn node_status(facts: &NodeFacts, readiness: &Readiness, since: &str) -> NodeStatus {
    let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let resources = json!({
        "cpu": facts.cpus.to_string(),
        "memory": format!("{}Ki", facts.memory_kib),
        "pods": facts.max_pods.to_string(),
    });
    let millicpu = (facts.cpus as u64 * 1000).saturating_sub(facts.reserved.millicpu);
    let allocatable = json!({
        "cpu": format!("{millicpu}m"),
        "memory": format!("{}Ki", facts.memory_kib.saturating_sub(facts.reserved.memory_kib)),
        "pods": facts.max_pods.to_string(),
    });
    let ok = |kind: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": "False", "reason": reason, "message": message,
               "lastHeartbeatTime": now, "lastTransitionTime": since})
    };
    serde_json::from_value(json!({
        "capacity": resources,
        "allocatable": allocatable,
        "addresses": [
            {"type": "InternalIP", "address": facts.host_ip},
            {"type": "Hostname", "address": facts.hostname},
        ],
        "conditions": [
            ok("MemoryPressure", "KubeletHasSufficientMemory", "berth agent has sufficient memory available"),
            ok("DiskPressure", "KubeletHasNoDiskPressure", "berth agent has no disk pressure"),
            ok("PIDPressure", "KubeletHasSufficientPID", "berth agent has sufficient PID available"),
            {"type": "Ready", "status": if readiness.ready { "True" } else { "False" },
             "reason": readiness.reason, "message": readiness.message,
             "lastHeartbeatTime": now, "lastTransitionTime": since},
        ],
        "nodeInfo": {
            "machineID": "", "systemUUID": "", "bootID": "",
            "kernelVersion": facts.kernel,
            "osImage": format!("{} ({})", facts.os, facts.kernel),
            "containerRuntimeVersion": format!("docker://{}", facts.docker_version),
            "kubeletVersion": concat!("v1.37.0-berth.", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": facts.os,
            "architecture": facts.arch,
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
    }))
    .expect("a well-formed NodeStatus")
}

/// Creates the Node, or updates the labels and annotations of an existing one.
pub async fn register(
    client: &kube::Client,
    facts: &NodeFacts,
    endpoint: Option<&AgentEndpoint>,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let annotations = endpoint.map(AgentEndpoint::annotations).unwrap_or_default();
    let node = node_object(facts, annotations.clone());
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => {
            let patch =
                json!({"metadata": {"labels": node_labels(facts), "annotations": annotations}});
            api.patch(&facts.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Writes the Node's status.
pub async fn write_status(
    client: &kube::Client,
    facts: &NodeFacts,
    readiness: &Readiness,
    since: &str,
) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let status: Value =
        serde_json::to_value(node_status(facts, readiness, since)).expect("NodeStatus serialises");
    api.patch_status(
        &facts.name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": status})),
    )
    .await
    .map(|_| ())
}

/// Posts the Node's status every `interval`, and at once when readiness changes.
pub async fn heartbeat(
    client: kube::Client,
    facts: NodeFacts,
    mut readiness: watch::Receiver<Readiness>,
    interval: Duration,
) {
    let mut since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let mut last_ready = None;
    loop {
        let current = readiness.borrow_and_update().clone();
        if last_ready != Some(current.ready) {
            since = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
            last_ready = Some(current.ready);
            tracing::info!(
                ready = current.ready,
                reason = current.reason,
                "node readiness"
            );
        }
        if let Err(e) = write_status(&client, &facts, &current, &since).await {
            tracing::warn!(error = %e, "cannot write the node status");
        }
        tokio::select! {
            changed = readiness.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> NodeFacts {
        host_facts("n1", "10.0.0.7".parse().unwrap(), 110, "28.0.1")
    }

    #[test]
    fn the_node_carries_the_well_known_labels_and_the_endpoint() {
        let endpoint = AgentEndpoint {
            url: "https://10.0.0.7:10250".into(),
            cert_sha256: "ab".into(),
        };
        let node = node_object(&facts(), endpoint.annotations());
        let labels = node.metadata.labels.as_ref().unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "n1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert!(!labels["kubernetes.io/arch"].is_empty());
        assert_eq!(AgentEndpoint::from_node(&node), Some(endpoint));
    }

    #[test]
    fn reserved_resources_leave_allocatable_below_capacity() {
        let mut f = facts();
        f.reserved = Reserved::parse("cpu=500m,memory=1Gi").unwrap();
        let s = node_status(&f, &Readiness::docker_down(40), "2026-11-22T03:00:00Z");
        let allocatable = s.allocatable.as_ref().unwrap();
        assert_eq!(allocatable["cpu"].0, format!("{}m", f.cpus * 1000 - 500));
        assert_eq!(
            allocatable["memory"].0,
            format!("{}Ki", f.memory_kib.saturating_sub(1024 * 1024))
        );
        assert_eq!(s.capacity.as_ref().unwrap()["cpu"].0, f.cpus.to_string());
        for bad in ["gpu=1", "memory=lots", "cpu"] {
            let e = Reserved::parse(bad).unwrap_err();
            assert!(e.contains("cpu=500m"), "{bad}: {e}");
        }
        assert_eq!(Reserved::parse("").unwrap(), Reserved::default());
    }

    #[test]
    fn status_reports_capacity_addresses_and_readiness() {
        let f = facts();
        let s = node_status(&f, &Readiness::docker_down(40), "2026-11-22T03:00:00Z");
        let cap = s.capacity.as_ref().unwrap();
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["cpu"].0, f.cpus.to_string());
        assert!(cap["memory"].0.ends_with("Ki"));
        let addresses = s.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].address, "10.0.0.7");
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert!(ready.message.as_deref().unwrap().contains("Docker"));
        assert_eq!(
            s.node_info.as_ref().unwrap().container_runtime_version,
            "docker://28.0.1"
        );
    }

    #[test]
    fn the_route_to_a_loopback_server_is_loopback() {
        let ip = route_ip("https://127.0.0.1:6443").unwrap();
        assert!(ip.is_loopback());
    }
}
