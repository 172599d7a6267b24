//! Filters (can this pod run on this node?) and the Kubernetes-style message that explains
//! why a pod fits nowhere. Pure functions over [`PodInfo`] and [`NodeInfo`].

use std::collections::BTreeMap;

use super::info::{NodeInfo, PodInfo};
use crate::cluster::controllers::taints::{Taint, Toleration};

pub const NOT_READY: &str = "node(s) were not ready";
pub const UNSCHEDULABLE: &str = "node(s) were unschedulable";
pub const AFFINITY: &str = "node(s) didn't match Pod's node affinity/selector";
pub const PORTS: &str = "node(s) didn't have free ports for the requested pod ports";
pub const CPU: &str = "Insufficient cpu";
pub const MEMORY: &str = "Insufficient memory";
pub const PODS: &str = "Too many pods";

/// The taint cordoned nodes carry in Kubernetes; a pod tolerating it may land on them.
const UNSCHEDULABLE_TAINT: &str = "node.kubernetes.io/unschedulable";

/// Why one node cannot take the pod (one or more reasons, e.g. cpu and memory).
pub fn reasons(pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
    if !node.ready {
        return vec![NOT_READY.into()];
    }
    if node.unschedulable {
        let cordon = Taint {
            key: UNSCHEDULABLE_TAINT.into(),
            value: String::new(),
            effect: "NoSchedule".into(),
        };
        if !pod.tolerations.iter().any(|t| t.tolerates(&cordon)) {
            return vec![UNSCHEDULABLE.into()];
        }
    }
    if !matches_node(pod, node) {
        return vec![AFFINITY.into()];
    }
    if let Some(taint) = untolerated(&node.taints, &pod.tolerations) {
        return vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            taint.key, taint.value
        )];
    }
    if pod.host_ports.iter().any(|p| node.used_ports.contains(p)) {
        return vec![PORTS.into()];
    }
    let mut out = Vec::new();
    if node.pod_count + 1 > node.max_pods {
        out.push(PODS.into());
    }
    let free_cpu = node.allocatable.milli_cpu - node.requested.milli_cpu;
    if pod.requests.milli_cpu > 0 && pod.requests.milli_cpu > free_cpu {
        out.push(CPU.into());
    }
    let free_memory = node.allocatable.memory - node.requested.memory;
    if pod.requests.memory > 0 && pod.requests.memory > free_memory {
        out.push(MEMORY.into());
    }
    out
}

/// `nodeSelector` and required node affinity.
pub fn matches_node(pod: &PodInfo, node: &NodeInfo) -> bool {
    let selector = pod
        .node_selector
        .iter()
        .all(|(k, v)| node.labels.get(k) == Some(v));
    let get = |k: &str| node.labels.get(k).cloned();
    let affinity = pod.affinity_terms.is_empty()
        || pod
            .affinity_terms
            .iter()
            .any(|term| !term.is_empty() && term.iter().all(|r| r.matches(&get)));
    selector && affinity
}

/// The first NoSchedule or NoExecute taint no toleration covers.
pub fn untolerated<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|t| !tolerations.iter().any(|tol| tol.tolerates(t)))
}

/// Counts of the reasons nodes were filtered out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FitError {
    pub nodes: usize,
    pub reasons: BTreeMap<String, usize>,
}

impl FitError {
    pub fn add(&mut self, reasons: Vec<String>) {
        for r in reasons {
            *self.reasons.entry(r).or_insert(0) += 1;
        }
    }

    /// "0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't match Pod's node
    /// affinity/selector." — most common reason first.
    pub fn message(&self) -> String {
        if self.nodes == 0 {
            return "0/0 nodes are available: no nodes registered.".into();
        }
        let mut counts: Vec<(&String, &usize)> = self.reasons.iter().collect();
        counts.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!(
            "0/{} nodes are available: {}.",
            self.nodes,
            parts.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::controllers::labels::Requirement;
    use crate::cluster::scheduler::info::Resources;

    fn node(name: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            allocatable: Resources {
                milli_cpu: 2000,
                memory: 4 << 30,
            },
            max_pods: 110,
            ..NodeInfo::default()
        }
    }

    fn pod(cpu: i64, memory: i64) -> PodInfo {
        PodInfo {
            requests: Resources {
                milli_cpu: cpu,
                memory,
            },
            ..PodInfo::default()
        }
    }

    #[test]
    fn resources_must_fit_what_bound_pods_leave() {
        let mut n = node("a");
        assert!(reasons(&pod(1500, 1 << 30), &n).is_empty());
        n.account(&pod(1000, 3 << 30), 1);
        assert_eq!(reasons(&pod(1500, 2 << 30), &n), vec![CPU, MEMORY]);
        n.account(&pod(1000, 3 << 30), -1);
        assert!(reasons(&pod(1500, 2 << 30), &n).is_empty());
        n.max_pods = 0;
        assert_eq!(reasons(&pod(0, 0), &n), vec![PODS]);
    }

    #[test]
    fn not_ready_and_cordoned_nodes_take_nothing_unless_tolerated() {
        let mut n = node("a");
        n.ready = false;
        assert_eq!(reasons(&pod(0, 0), &n), vec![NOT_READY]);
        n.ready = true;
        n.unschedulable = true;
        assert_eq!(reasons(&pod(0, 0), &n), vec![UNSCHEDULABLE]);
        let mut p = pod(0, 0);
        p.tolerations.push(Toleration {
            key: UNSCHEDULABLE_TAINT.into(),
            operator: "Exists".into(),
            value: String::new(),
            effect: "NoSchedule".into(),
            seconds: None,
        });
        assert!(reasons(&p, &n).is_empty());
    }

    #[test]
    fn node_selector_and_required_affinity() {
        let mut n = node("a");
        n.labels.insert("disk".into(), "ssd".into());
        let mut p = pod(0, 0);
        p.node_selector.push(("disk".into(), "ssd".into()));
        assert!(matches_node(&p, &n));
        p.node_selector[0].1 = "hdd".into();
        assert_eq!(reasons(&p, &n), vec![AFFINITY]);
        let req = |op: &str, values: &[&str]| Requirement {
            key: "disk".into(),
            operator: op.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        };
        let mut p = pod(0, 0);
        for (op, values, want) in [
            ("In", &["ssd", "nvme"][..], true),
            ("In", &["hdd"][..], false),
            ("NotIn", &["hdd"][..], true),
            ("NotIn", &["ssd"][..], false),
            ("Exists", &[][..], true),
            ("DoesNotExist", &[][..], false),
        ] {
            p.affinity_terms = vec![vec![req(op, values)]];
            assert_eq!(matches_node(&p, &n), want, "{op} {values:?}");
        }
        // Terms are ORed.
        p.affinity_terms = vec![vec![req("In", &["hdd"])], vec![req("Exists", &[])]];
        assert!(matches_node(&p, &n));
    }

    #[test]
    fn taints_need_tolerations_for_noschedule_and_noexecute_only() {
        let mut n = node("a");
        n.taints.push(Taint {
            key: "gpu".into(),
            value: "yes".into(),
            effect: "NoSchedule".into(),
        });
        n.taints.push(Taint {
            key: "soft".into(),
            value: String::new(),
            effect: "PreferNoSchedule".into(),
        });
        assert_eq!(
            reasons(&pod(0, 0), &n),
            vec!["node(s) had untolerated taint {gpu: yes}"]
        );
        let mut p = pod(0, 0);
        p.tolerations.push(Toleration {
            key: "gpu".into(),
            operator: "Equal".into(),
            value: "yes".into(),
            effect: String::new(),
            seconds: None,
        });
        assert!(reasons(&p, &n).is_empty());
        p.tolerations[0].value = "no".into();
        assert!(!reasons(&p, &n).is_empty());
    }

    #[test]
    fn host_ports_conflict_per_protocol() {
        let mut n = node("a");
        let mut web = pod(0, 0);
        web.host_ports.push((8080, "TCP".into()));
        n.account(&web, 1);
        assert_eq!(reasons(&web, &n), vec![PORTS]);
        let mut udp = pod(0, 0);
        udp.host_ports.push((8080, "UDP".into()));
        assert!(reasons(&udp, &n).is_empty());
    }

    #[test]
    fn a_host_network_pods_container_ports_are_host_ports() {
        let exporter = |host_network: bool| {
            PodInfo::from_json(
                "monitoring/exporter".into(),
                &serde_json::json!({"metadata": {"uid": "u"}, "spec": {
                    "hostNetwork": host_network,
                    "containers": [{"name": "c", "ports": [
                        {"containerPort": 9100}, {"containerPort": 9101, "hostPort": 0}]}]}}),
            )
        };
        assert_eq!(
            exporter(true).host_ports,
            vec![(9100, "TCP".to_string()), (9101, "TCP".to_string())]
        );
        assert!(exporter(false).host_ports.is_empty());
        let mut n = node("a");
        n.account(&exporter(true), 1);
        assert_eq!(reasons(&exporter(true), &n), vec![PORTS]);
    }

    #[test]
    fn the_message_counts_reasons_most_common_first() {
        let mut e = FitError {
            nodes: 3,
            ..FitError::default()
        };
        e.add(vec![MEMORY.into()]);
        e.add(vec![AFFINITY.into()]);
        e.add(vec![MEMORY.into()]);
        assert_eq!(
            e.message(),
            "0/3 nodes are available: 2 Insufficient memory, 1 node(s) didn't match Pod's node affinity/selector."
        );
    }
}
