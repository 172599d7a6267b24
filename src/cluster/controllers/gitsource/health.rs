//! Health rolled up from what a source applied: its Deployments available with every pod
//! ready → Healthy; a rollout under way → Progressing; a pod crash-looping or that cannot be
//! scheduled → Degraded, naming the Deployment and the pod. A rollout that waits names its
//! first pod that is not ready and why (`web-7d4b…: ImagePullBackOff: …`), not only the count.
//! Other kinds count as healthy once they exist and, if they have a `Ready` condition, once it
//! is true ([`object_trouble`], for `spec.healthChecks`).

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

/// Why a pod is not ready yet: a container's waiting reason and message, else why it is not
/// scheduled, else its phase. `None` when it is ready.
fn pod_not_ready(pod: &Value) -> Option<String> {
    let conditions = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if conditions
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
    {
        return None;
    }
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let with_message = |reason: &str, message: Option<&str>| match message {
        Some(m) if !m.is_empty() => format!("{name}: {reason}: {m}"),
        _ => format!("{name}: {reason}"),
    };
    let waiting = ["/status/initContainerStatuses", "/status/containerStatuses"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find_map(|c| c.pointer("/state/waiting"));
    if let Some(w) = waiting
        && let Some(reason) = w["reason"].as_str()
    {
        return Some(with_message(reason, w["message"].as_str()));
    }
    if let Some(c) = conditions
        .iter()
        .find(|c| c["type"] == "PodScheduled" && c["status"] == "False")
    {
        let reason = c["reason"].as_str().unwrap_or("NotScheduled");
        return Some(with_message(reason, c["message"].as_str()));
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    Some(with_message(phase.unwrap_or("Pending"), None))
}

/// Why an object a source waits for is not healthy: missing, or its `Ready` condition not
/// true. `None` when it is healthy.
pub fn object_trouble(what: &str, live: Option<&Value>) -> Option<String> {
    let Some(live) = live else {
        return Some(format!("{what} does not exist"));
    };
    let ready = live
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Ready")?;
    if ready["status"] == "True" {
        return None;
    }
    let text = |k: &str| ready[k].as_str().unwrap_or("").to_string();
    Some(format!(
        "{what} is not Ready: {}: {}",
        text("reason"),
        text("message")
    ))
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
        let mut waiting_pod = None;
        for pod in caches.pods.list(Some(ns)) {
            if !selected(&pod, match_labels) {
                continue;
            }
            if let Some(trouble) = pod_trouble(&pod) {
                return ("Degraded", format!("{what}: {trouble}"));
            }
            if waiting_pod.is_none() {
                waiting_pod = pod_not_ready(&pod);
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
            let why = waiting_pod.map(|w| format!(": {w}")).unwrap_or_default();
            progressing.push(format!(
                "{what}: {} of {wanted} pods available{why}",
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_that_cannot_pull_its_image_says_so() {
        let pod = json!({"metadata": {"name": "guestbook-ui-5d8f"}, "status": {
            "phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False", "reason": "ContainersNotReady"}],
            "containerStatuses": [{"name": "ui", "ready": false, "state": {"waiting": {
                "reason": "ImagePullBackOff",
                "message": "Back-off pulling image \"nope:1\""}}}]}});
        assert_eq!(
            pod_not_ready(&pod).as_deref(),
            Some("guestbook-ui-5d8f: ImagePullBackOff: Back-off pulling image \"nope:1\"")
        );
        let unscheduled = json!({"metadata": {"name": "p"}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/0 nodes are available"}]}});
        assert_eq!(
            pod_not_ready(&unscheduled).as_deref(),
            Some("p: Unschedulable: 0/0 nodes are available")
        );
        let fresh = json!({"metadata": {"name": "q"}});
        assert_eq!(pod_not_ready(&fresh).as_deref(), Some("q: Pending"));
        let ready = json!({"metadata": {"name": "r"}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}]}});
        assert_eq!(pod_not_ready(&ready), None);
    }

    #[test]
    fn a_checked_object_is_healthy_when_present_and_ready() {
        assert_eq!(
            object_trouble("ConfigMap default/a", None).as_deref(),
            Some("ConfigMap default/a does not exist")
        );
        assert_eq!(
            object_trouble("ConfigMap default/a", Some(&json!({}))),
            None
        );
        let not_ready = json!({"status": {"conditions": [
            {"type": "Ready", "status": "False", "reason": "Degraded", "message": "pod x"}]}});
        assert_eq!(
            object_trouble("GitSource default/a", Some(&not_ready)).as_deref(),
            Some("GitSource default/a is not Ready: Degraded: pod x")
        );
    }
}
