//! Health rolled up from what a source applied: its Deployments available with every pod
//! ready → Healthy; a rollout under way → Progressing; a pod crash-looping or that cannot be
//! scheduled → Degraded, naming the Deployment and the pod. Other kinds count as healthy once
//! they exist.

use serde_json::Value;

use super::super::Caches;

fn int(v: &Value, pointer: &str) -> i64 {
    v.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

/// Why a pod is broken, if it is.
fn pod_trouble(pod: &Value) -> Option<String> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for c in statuses {
        if c.pointer("/state/waiting/reason").and_then(Value::as_str) == Some("CrashLoopBackOff") {
            return Some(format!(
                "pod {name} is crash-looping (container {})",
                c["name"].as_str().unwrap_or("")
            ));
        }
    }
    let unschedulable = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False");
    if let Some(c) = unschedulable
        && c["reason"] == "Unschedulable"
    {
        return Some(format!(
            "pod {name} cannot be scheduled: {}",
            c["message"].as_str().unwrap_or("")
        ));
    }
    None
}

fn selected(pod: &Value, match_labels: &serde_json::Map<String, Value>) -> bool {
    !match_labels.is_empty()
        && match_labels
            .iter()
            .all(|(k, v)| pod.pointer("/metadata/labels").and_then(|l| l.get(k)) == Some(v))
}

/// `(Healthy | Progressing | Degraded, why)` for an inventory.
pub fn roll_up(inventory: &[Value], caches: &Caches) -> (&'static str, String) {
    let mut progressing = Vec::new();
    for entry in inventory.iter().filter(|e| e["kind"] == "Deployment") {
        let ns = entry["namespace"].as_str().unwrap_or("default");
        let name = entry["name"].as_str().unwrap_or("");
        let what = format!("Deployment {ns}/{name}");
        let Some(d) = caches.deployments.get(&format!("{ns}/{name}")) else {
            progressing.push(format!("{what} is not created yet"));
            continue;
        };
        let empty = serde_json::Map::new();
        let match_labels = d
            .pointer("/spec/selector/matchLabels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for pod in caches.pods.list(Some(ns)) {
            if selected(&pod, match_labels)
                && let Some(trouble) = pod_trouble(&pod)
            {
                return ("Degraded", format!("{what}: {trouble}"));
            }
        }
        let wanted = d
            .pointer("/spec/replicas")
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let observed = int(&d, "/status/observedGeneration") >= int(&d, "/metadata/generation");
        let done = observed
            && int(&d, "/status/updatedReplicas") >= wanted
            && int(&d, "/status/availableReplicas") >= wanted
            && int(&d, "/status/replicas") <= wanted;
        if !done {
            progressing.push(format!(
                "{what}: {} of {wanted} pods available",
                int(&d, "/status/availableReplicas")
            ));
        }
    }
    if progressing.is_empty() {
        ("Healthy", String::new())
    } else {
        ("Progressing", progressing.join("; "))
    }
}
