//! Whether an applied object is Ready, and one line saying its state, judged from the object
//! as the API server returns it. Pure functions: the live view and `--exit-when-ready` both
//! read them, and the unit tests below need no cluster.

use serde_json::Value;

/// The state of one object: whether it counts as Ready, and what to show.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    pub ready: bool,
    /// `Running, 1/1 ready, 0 restarts`, `rolled out 2/3`, `10.96.0.12 80:30080/TCP`.
    pub text: String,
    /// Work under way, as (done, of): a Deployment's ready replicas of those it wants while
    /// it rolls out. The live view draws it as a progress bar.
    pub progress: Option<(u64, u64)>,
}

impl ObjectState {
    pub(super) fn ready(text: impl Into<String>) -> ObjectState {
        ObjectState {
            ready: true,
            text: text.into(),
            progress: None,
        }
    }
    pub(super) fn waiting(text: impl Into<String>) -> ObjectState {
        ObjectState {
            ready: false,
            text: text.into(),
            progress: None,
        }
    }
}

fn int(v: &Value, pointer: &str) -> Option<i64> {
    v.pointer(pointer).and_then(Value::as_i64)
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The state of a live object of `kind`. `endpoints` is the Service's Endpoints object, when
/// the kind is a Service: `None` means there is none (no Endpoints controller wrote one).
pub fn object_state(kind: &str, object: &Value, endpoints: Option<&Value>) -> ObjectState {
    match kind {
        "Pod" => pod_state(object),
        "Deployment" => deployment_state(object),
        "Service" => service_state(object, endpoints),
        _ => ObjectState::ready("present"),
    }
}

/// Running with every container ready (or Succeeded) is Ready; otherwise the first reason a
/// container waits or the scheduler's message.
pub fn pod_state(pod: &Value) -> ObjectState {
    let phase = text(pod, "/status/phase").unwrap_or("Pending");
    let statuses = pod
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map_or(statuses.len(), Vec::len);
    let ready_count = statuses
        .iter()
        .filter(|s| s.get("ready").and_then(Value::as_bool) == Some(true))
        .count();
    let restarts: i64 = statuses
        .iter()
        .filter_map(|s| s.get("restartCount").and_then(Value::as_i64))
        .sum();
    let ready_condition = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| text(c, "/type") == Some("Ready") && text(c, "/status") == Some("True"));
    let waiting = statuses.iter().find_map(|s| {
        let reason = text(s, "/state/waiting/reason")?;
        let message = text(s, "/state/waiting/message").unwrap_or("");
        let name = s.get("name").and_then(Value::as_str).unwrap_or("?");
        Some(if message.is_empty() {
            format!("{name}: {reason}")
        } else {
            format!("{name}: {reason}: {message}")
        })
    });
    let unscheduled = pod
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| text(c, "/type") == Some("PodScheduled") && text(c, "/status") == Some("False"))
        .map(|c| {
            format!(
                "not scheduled: {}",
                text(c, "/message").or(text(c, "/reason")).unwrap_or("")
            )
        });
    let mut line = format!("{phase}, {ready_count}/{containers} ready, {restarts} restarts");
    if let Some(why) = waiting.or(unscheduled) {
        line.push_str(&format!(" ({why})"));
    }
    match phase {
        "Succeeded" => ObjectState::ready(line),
        "Running" if ready_condition => ObjectState::ready(line),
        _ => ObjectState::waiting(line),
    }
}

/// Rolled out when the controller has seen the current generation and every replica is
/// updated, ready and available.
pub fn deployment_state(deployment: &Value) -> ObjectState {
    let want = int(deployment, "/spec/replicas").unwrap_or(1);
    let generation = int(deployment, "/metadata/generation").unwrap_or(0);
    let observed = int(deployment, "/status/observedGeneration").unwrap_or(0);
    let updated = int(deployment, "/status/updatedReplicas").unwrap_or(0);
    let ready = int(deployment, "/status/readyReplicas").unwrap_or(0);
    let available = int(deployment, "/status/availableReplicas").unwrap_or(0);
    let total = int(deployment, "/status/replicas").unwrap_or(0);
    let line = format!("rolled out {ready}/{want} (updated {updated}, available {available})");
    if observed >= generation
        && updated == want
        && ready == want
        && available == want
        && total == want
    {
        ObjectState::ready(line)
    } else {
        let line = if observed < generation {
            format!("{line}, waiting for the controller")
        } else {
            line
        };
        ObjectState {
            progress: Some((ready.clamp(0, want.max(0)) as u64, want.max(0) as u64)),
            ..ObjectState::waiting(line)
        }
    }
}

/// Where a pod's image stands on its node, as its container statuses tell.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum ImagePhase {
    /// The agent has not got it yet: it is being checked or pulled.
    Pending,
    /// Pulling failed (`ErrImagePull`, `ImagePullBackOff`, `ErrImageNeverPull`): the message.
    Failed(String),
    /// A container was made from it.
    Present,
}

/// Each image a pod's containers (init containers too) run, with its phase. The agent sets a
/// container status's `imageID` once it has the image; until then the container waits.
pub fn pod_images(pod: &Value) -> Vec<(String, ImagePhase)> {
    let mut out = Vec::new();
    for (specs, statuses) in [
        ("/spec/initContainers", "/status/initContainerStatuses"),
        ("/spec/containers", "/status/containerStatuses"),
    ] {
        let statuses = pod.pointer(statuses).and_then(Value::as_array);
        for container in pod
            .pointer(specs)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let Some(image) = text(container, "/image") else {
                continue;
            };
            let name = text(container, "/name");
            let status = statuses
                .into_iter()
                .flatten()
                .find(|s| text(s, "/name") == name);
            let pulled = status
                .and_then(|s| text(s, "/imageID"))
                .is_some_and(|id| !id.is_empty());
            let failed = status.and_then(|s| {
                let reason = text(s, "/state/waiting/reason")?;
                matches!(
                    reason,
                    "ErrImagePull" | "ImagePullBackOff" | "ErrImageNeverPull"
                )
                .then(|| {
                    text(s, "/state/waiting/message")
                        .unwrap_or(reason)
                        .to_string()
                })
            });
            let phase = match (pulled, failed) {
                (true, _) => ImagePhase::Present,
                (false, Some(why)) => ImagePhase::Failed(why),
                (false, None) => ImagePhase::Pending,
            };
            out.push((image.to_string(), phase));
        }
    }
    out
}

/// Address and ports; Ready when it selects nothing, when no Endpoints object exists (no
/// Endpoints controller runs), or when its Endpoints hold at least one ready address.
pub fn service_state(service: &Value, endpoints: Option<&Value>) -> ObjectState {
    let address = text(service, "/spec/clusterIP").unwrap_or("no cluster IP");
    let ports: Vec<String> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|p| {
            let port = int(p, "/port").unwrap_or(0);
            let protocol = text(p, "/protocol").unwrap_or("TCP");
            match int(p, "/nodePort") {
                Some(node) => format!("{port}:{node}/{protocol}"),
                None => format!("{port}/{protocol}"),
            }
        })
        .collect();
    let line = format!("{address} {}", ports.join(","));
    let selects = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .is_some_and(|s| !s.is_empty());
    let Some(endpoints) = endpoints.filter(|_| selects) else {
        return ObjectState::ready(line);
    };
    let addresses: usize = endpoints
        .get("subsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("addresses").and_then(Value::as_array))
        .map(Vec::len)
        .sum();
    if addresses > 0 {
        ObjectState::ready(format!("{line}, {addresses} endpoints"))
    } else {
        ObjectState::waiting(format!("{line}, no ready endpoints"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_running_pod_with_every_container_ready_is_ready() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "a", "ready": true, "restartCount": 1},
                                      {"name": "b", "ready": true, "restartCount": 0}]}
        });
        let s = pod_state(&pod);
        assert!(s.ready);
        assert_eq!(s.text, "Running, 2/2 ready, 1 restarts");
    }

    #[test]
    fn a_crash_looping_pod_says_why_it_is_not_ready() {
        let pod = json!({
            "spec": {"containers": [{"name": "a"}]},
            "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "False"}],
                "containerStatuses": [{"name": "a", "ready": false, "restartCount": 4,
                    "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}}]}
        });
        let s = pod_state(&pod);
        assert!(!s.ready);
        assert!(
            s.text.contains("a: CrashLoopBackOff: back-off 40s"),
            "{}",
            s.text
        );
    }

    #[test]
    fn an_unscheduled_pod_shows_the_schedulers_message() {
        let pod = json!({"spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Pending",
            "conditions": [{"type": "PodScheduled", "status": "False", "message": "0/1 nodes fit"}]}});
        let s = pod_state(&pod);
        assert!(!s.ready);
        assert!(
            s.text.contains("not scheduled: 0/1 nodes fit"),
            "{}",
            s.text
        );
    }

    #[test]
    fn a_deployment_is_ready_only_when_the_current_generation_is_rolled_out() {
        let mut d = json!({"metadata": {"generation": 2}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3,
                       "readyReplicas": 3, "availableReplicas": 3}});
        assert!(deployment_state(&d).ready);
        d["status"]["readyReplicas"] = json!(2);
        let s = deployment_state(&d);
        assert!(!s.ready);
        assert!(s.text.starts_with("rolled out 2/3"), "{}", s.text);
        d["status"]["readyReplicas"] = json!(3);
        d["metadata"]["generation"] = json!(3);
        assert!(
            !deployment_state(&d).ready,
            "a new generation is not rolled out yet"
        );
    }

    #[test]
    fn a_deployment_rolling_out_reports_its_ready_replicas_as_progress() {
        let d = json!({"metadata": {"generation": 1}, "spec": {"replicas": 3},
            "status": {"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3,
                       "readyReplicas": 1, "availableReplicas": 1}});
        assert_eq!(deployment_state(&d).progress, Some((1, 3)));
        let done = json!({"metadata": {"generation": 1}, "spec": {"replicas": 2},
            "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                       "readyReplicas": 2, "availableReplicas": 2}});
        assert_eq!(deployment_state(&done).progress, None, "rolled out: no bar");
    }

    #[test]
    fn an_image_is_present_once_a_container_status_names_its_id() {
        let pod = json!({
            "spec": {"initContainers": [{"name": "i", "image": "init:1"}],
                     "containers": [{"name": "a", "image": "app:1"}, {"name": "b", "image": "gone:1"},
                                    {"name": "c", "image": "new:1"}]},
            "status": {
                "initContainerStatuses": [{"name": "i", "imageID": "sha256:1"}],
                "containerStatuses": [
                    {"name": "a", "imageID": ""},
                    {"name": "b", "state": {"waiting": {"reason": "ErrImageNeverPull",
                        "message": "image \"gone:1\" is not present"}}}]}
        });
        assert_eq!(
            pod_images(&pod),
            [
                ("init:1".to_string(), ImagePhase::Present),
                ("app:1".to_string(), ImagePhase::Pending),
                (
                    "gone:1".to_string(),
                    ImagePhase::Failed("image \"gone:1\" is not present".into())
                ),
                ("new:1".to_string(), ImagePhase::Pending),
            ]
        );
    }

    #[test]
    fn a_service_waits_for_endpoints_only_when_an_endpoints_object_exists() {
        let svc = json!({"spec": {"clusterIP": "10.96.0.5", "selector": {"app": "web"},
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        let s = service_state(&svc, None);
        assert!(s.ready);
        assert_eq!(s.text, "10.96.0.5 80:30080/TCP");
        let empty = json!({"subsets": []});
        assert!(!service_state(&svc, Some(&empty)).ready);
        let one = json!({"subsets": [{"addresses": [{"ip": "172.17.0.2"}]}]});
        assert!(service_state(&svc, Some(&one)).ready);
    }
}
