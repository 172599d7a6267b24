//! What the scheduler knows about a pod and a node, read once from their JSON so that
//! filtering and scoring thousands of nodes touches only plain fields.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::Value;

use crate::cluster::controllers::labels::Requirement;
use crate::cluster::controllers::taints::{Taint, Toleration, taints_of, tolerations_of};
use crate::manifest::quantity::parse_scaled;

/// CPU in millicores and memory in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resources {
    pub milli_cpu: i64,
    pub memory: i64,
}

/// What scoring assumes a container without requests uses (Kubernetes' non-zero defaults).
const DEFAULT_MILLI_CPU: i64 = 100;
const DEFAULT_MEMORY: i64 = 200 * 1024 * 1024;

/// A host port a pod asks for.
pub type HostPort = (i64, String);

/// The scheduling-relevant parts of a pod.
#[derive(Debug, Clone, Default)]
pub struct PodInfo {
    pub key: String,
    pub uid: String,
    pub requests: Resources,
    /// Requests with Kubernetes' defaults for containers that set none (for scoring).
    pub score_requests: Resources,
    pub node_selector: Vec<(String, String)>,
    /// Required node affinity: terms are ORed, the requirements of a term ANDed.
    pub affinity_terms: Vec<Vec<Requirement>>,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<HostPort>,
    /// The uid of the pod's controller (its ReplicaSet), for spreading.
    pub owner: Option<String>,
}

fn quantity(v: &Value, scale: f64) -> Option<i64> {
    v.as_str()
        .and_then(|s| parse_scaled(s, scale))
        .or_else(|| v.as_f64().map(|f| (f * scale).ceil() as i64))
}

fn container_requests(c: &Value) -> (Option<i64>, Option<i64>) {
    let pick = |name: &str, scale: f64| {
        quantity(&c["resources"]["requests"][name], scale)
            .or_else(|| quantity(&c["resources"]["limits"][name], scale))
    };
    (pick("cpu", 1000.0), pick("memory", 1.0))
}

impl PodInfo {
    pub fn from_json(key: String, pod: &Value) -> PodInfo {
        let spec = &pod["spec"];
        let mut requests = Resources::default();
        let mut score = Resources::default();
        for c in spec["containers"].as_array().into_iter().flatten() {
            let (cpu, mem) = container_requests(c);
            requests.milli_cpu += cpu.unwrap_or(0);
            requests.memory += mem.unwrap_or(0);
            score.milli_cpu += cpu.unwrap_or(DEFAULT_MILLI_CPU);
            score.memory += mem.unwrap_or(DEFAULT_MEMORY);
        }
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            let (cpu, mem) = container_requests(c);
            requests.milli_cpu = requests.milli_cpu.max(cpu.unwrap_or(0));
            requests.memory = requests.memory.max(mem.unwrap_or(0));
        }
        let node_selector = spec["nodeSelector"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect()
            })
            .unwrap_or_default();
        let affinity_terms = spec
            .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
            .and_then(Value::as_array)
            .map(|terms| {
                terms
                    .iter()
                    .map(|t| {
                        t["matchExpressions"]
                            .as_array()
                            .map(|e| e.iter().map(Requirement::from_json).collect())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default();
        // A hostNetwork pod's container ports are the node's (Kubernetes defaults its
        // hostPort to the containerPort).
        let host_network = spec["hostNetwork"].as_bool() == Some(true);
        let mut host_ports = Vec::new();
        for c in spec["containers"].as_array().into_iter().flatten() {
            for p in c["ports"].as_array().into_iter().flatten() {
                // A hostPort of 0 is "not set".
                let host_port = p["hostPort"].as_i64().filter(|hp| *hp != 0);
                let declared = match host_network {
                    true => host_port.or(p["containerPort"].as_i64()),
                    false => host_port,
                };
                if let Some(hp) = declared.filter(|p| *p > 0) {
                    let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
                    host_ports.push((hp, proto));
                }
            }
        }
        PodInfo {
            key,
            uid: pod["metadata"]["uid"].as_str().unwrap_or("").to_string(),
            requests,
            score_requests: score,
            node_selector,
            affinity_terms,
            tolerations: tolerations_of(pod),
            host_ports,
            owner: controller_uid(pod),
        }
    }
}

/// The uid in the `controller: true` ownerReference.
pub fn controller_uid(object: &Value) -> Option<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)?
        .iter()
        .find(|o| o["controller"].as_bool() == Some(true))
        .and_then(|o| o["uid"].as_str())
        .map(str::to_string)
}

/// The scheduling-relevant parts of a node, plus what the pods bound to it use.
#[derive(Debug, Clone, Default)]
pub struct NodeInfo {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<Taint>,
    pub ready: bool,
    pub unschedulable: bool,
    pub allocatable: Resources,
    pub max_pods: i64,
    pub requested: Resources,
    pub score_requested: Resources,
    pub pod_count: i64,
    pub used_ports: HashSet<HostPort>,
    pub owner_counts: HashMap<String, u32>,
}

impl NodeInfo {
    /// A node with nothing bound to it yet.
    pub fn from_json(node: &Value) -> NodeInfo {
        let status = &node["status"];
        let alloc = |k: &str, scale: f64| {
            quantity(&status["allocatable"][k], scale)
                .or_else(|| quantity(&status["capacity"][k], scale))
        };
        NodeInfo {
            name: node["metadata"]["name"].as_str().unwrap_or("").to_string(),
            labels: node["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            taints: taints_of(node),
            ready: is_ready(node),
            unschedulable: node["spec"]["unschedulable"].as_bool() == Some(true),
            allocatable: Resources {
                milli_cpu: alloc("cpu", 1000.0).unwrap_or(0),
                memory: alloc("memory", 1.0).unwrap_or(0),
            },
            max_pods: alloc("pods", 1.0).unwrap_or(110),
            ..NodeInfo::default()
        }
    }

    /// Keeps what is bound (requests, ports, owners) from `old` after the node object changed.
    pub fn carry_usage(&mut self, old: &NodeInfo) {
        self.requested = old.requested;
        self.score_requested = old.score_requested;
        self.pod_count = old.pod_count;
        self.used_ports = old.used_ports.clone();
        self.owner_counts = old.owner_counts.clone();
    }

    /// Counts a pod bound to this node (`sign` 1) or no longer bound (`sign` -1).
    pub fn account(&mut self, pod: &PodInfo, sign: i64) {
        self.requested.milli_cpu += sign * pod.requests.milli_cpu;
        self.requested.memory += sign * pod.requests.memory;
        self.score_requested.milli_cpu += sign * pod.score_requests.milli_cpu;
        self.score_requested.memory += sign * pod.score_requests.memory;
        self.pod_count += sign;
        for p in &pod.host_ports {
            if sign > 0 {
                self.used_ports.insert(p.clone());
            } else {
                self.used_ports.remove(p);
            }
        }
        if let Some(owner) = &pod.owner {
            let n = self.owner_counts.entry(owner.clone()).or_insert(0);
            if sign > 0 {
                *n += 1;
            } else {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.owner_counts.remove(owner);
                }
            }
        }
    }
}

/// Whether the node's Ready condition is True.
pub fn is_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}
