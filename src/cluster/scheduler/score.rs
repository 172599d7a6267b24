//! Scores (where should a pod that fits several nodes go?) and the choice of a node. Pure.
//!
//! Two scores, 0–100 each, as in Kubernetes' default profile: least allocated (prefer the
//! node with the most CPU and memory left) and spreading (prefer the node with the fewest
//! pods of the same controller), the second weighted twice.

use super::filter::{self, FitError};
use super::info::{NodeInfo, PodInfo};

const SPREAD_WEIGHT: i64 = 2;

/// 0–100: the share of allocatable CPU and memory left after placing the pod.
pub fn least_allocated(pod: &PodInfo, node: &NodeInfo) -> i64 {
    let part = |alloc: i64, used: i64| {
        if alloc <= 0 {
            0
        } else {
            ((alloc - used).max(0) * 100) / alloc
        }
    };
    let cpu = part(
        node.allocatable.milli_cpu,
        node.score_requested.milli_cpu + pod.score_requests.milli_cpu,
    );
    let memory = part(
        node.allocatable.memory,
        node.score_requested.memory + pod.score_requests.memory,
    );
    (cpu + memory) / 2
}

/// 0–100: 100 on the nodes with the fewest pods of the pod's controller.
pub fn spread(pod: &PodInfo, node: &NodeInfo, max_count: u32) -> i64 {
    let Some(owner) = &pod.owner else {
        return 100;
    };
    if max_count == 0 {
        return 100;
    }
    let count = node.owner_counts.get(owner).copied().unwrap_or(0);
    i64::from(max_count - count.min(max_count)) * 100 / i64::from(max_count)
}

/// How many feasible nodes to find before scoring (Kubernetes' adaptive
/// `percentageOfNodesToScore`): all up to 100 nodes, then a share shrinking from 50% to 5%.
pub fn nodes_to_find(total: usize) -> usize {
    if total <= 100 {
        return total;
    }
    let percent = (50 - (total / 125) as i64).max(5) as usize;
    (total * percent / 100).max(100)
}

/// Picks a node for `pod` among `nodes`, starting at `start` (rotated between pods so that
/// equally good nodes take turns). Returns the index of the chosen node, or why none fits.
pub fn pick(pod: &PodInfo, nodes: &[NodeInfo], start: usize) -> Result<usize, FitError> {
    let total = nodes.len();
    let want = nodes_to_find(total);
    let mut feasible: Vec<usize> = Vec::with_capacity(want.min(total));
    let mut error = FitError {
        nodes: total,
        ..FitError::default()
    };
    for i in 0..total {
        let idx = (start + i) % total;
        let reasons = filter::reasons(pod, &nodes[idx]);
        if reasons.is_empty() {
            feasible.push(idx);
            if feasible.len() >= want {
                break;
            }
        } else {
            error.add(reasons);
        }
    }
    if feasible.is_empty() {
        return Err(error);
    }
    let max_count = match &pod.owner {
        Some(owner) => feasible
            .iter()
            .map(|&i| nodes[i].owner_counts.get(owner).copied().unwrap_or(0))
            .max()
            .unwrap_or(0),
        None => 0,
    };
    let mut best = feasible[0];
    let mut best_score = i64::MIN;
    for &i in &feasible {
        let score =
            least_allocated(pod, &nodes[i]) + SPREAD_WEIGHT * spread(pod, &nodes[i], max_count);
        if score > best_score {
            best = i;
            best_score = score;
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::scheduler::info::Resources;

    fn node(name: &str, cpu: i64, memory: i64) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            ready: true,
            allocatable: Resources {
                milli_cpu: cpu,
                memory,
            },
            max_pods: 110,
            ..NodeInfo::default()
        }
    }

    fn replica(owner: &str) -> PodInfo {
        PodInfo {
            owner: Some(owner.into()),
            requests: Resources {
                milli_cpu: 100,
                memory: 64 << 20,
            },
            score_requests: Resources {
                milli_cpu: 100,
                memory: 64 << 20,
            },
            ..PodInfo::default()
        }
    }

    #[test]
    fn least_allocated_prefers_the_emptier_node() {
        let big = node("big", 4000, 8 << 30);
        let small = node("small", 1000, 1 << 30);
        let p = replica("rs");
        assert!(least_allocated(&p, &big) > least_allocated(&p, &small));
        assert_eq!(pick(&p, &[small.clone(), big.clone()], 0), Ok(1));
    }

    #[test]
    fn replicas_of_one_owner_spread_two_two_two() {
        let mut nodes = vec![
            node("a", 4000, 8 << 30),
            node("b", 4000, 8 << 30),
            node("c", 4000, 8 << 30),
        ];
        for i in 0..6 {
            let p = replica("rs-1");
            let chosen = pick(&p, &nodes, i).expect("fits");
            nodes[chosen].account(&p, 1);
        }
        let counts: Vec<u32> = nodes.iter().map(|n| n.owner_counts["rs-1"]).collect();
        assert_eq!(counts, vec![2, 2, 2]);
    }

    #[test]
    fn spreading_beats_a_slightly_emptier_node() {
        let mut a = node("a", 4000, 8 << 30);
        let b = node("b", 3000, 6 << 30);
        a.account(&replica("rs"), 1);
        assert_eq!(pick(&replica("rs"), &[a, b], 0), Ok(1));
    }

    #[test]
    fn only_a_share_of_large_clusters_is_scored() {
        assert_eq!(nodes_to_find(3), 3);
        assert_eq!(nodes_to_find(100), 100);
        assert_eq!(nodes_to_find(1000), 420);
        assert_eq!(nodes_to_find(5000), 500);
        assert_eq!(nodes_to_find(20_000), 1000);
    }

    #[test]
    fn no_feasible_node_explains_itself() {
        let a = node("a", 1000, 1 << 30);
        let mut p = replica("rs");
        p.requests.memory = 4 << 30;
        let e = pick(&p, &[a], 0).unwrap_err();
        assert_eq!(
            e.message(),
            "0/1 nodes are available: 1 Insufficient memory."
        );
    }
}
