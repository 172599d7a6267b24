//! What each kind prints in a Table: its columns after NAME (as kubectl users know them,
//! `-o wide` ones at priority 1) and an object's cells in them.

use serde_json::{Value, json};

use super::age;
use crate::cluster::api::resources::Resource;

fn count(v: Option<&Value>) -> usize {
    match v {
        Some(Value::Object(m)) => m.len(),
        Some(Value::Array(a)) => a.len(),
        _ => 0,
    }
}

fn int(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(object: &'a Value, pointer: &str, default: &'a str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or(default)
}

/// Column names (after NAME) and their priority: 0 always shown, 1 only with `-o wide`.
pub(super) fn columns(r: &Resource) -> &'static [(&'static str, u8)] {
    match r.kind {
        "Pod" => &[
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1),
        ],
        "Deployment" => &[
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "ReplicaSet" => &[
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "Service" => &[
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1),
        ],
        "Endpoints" => &[("Endpoints", 0), ("Age", 0)],
        "EndpointSlice" => &[
            ("AddressType", 0),
            ("Ports", 0),
            ("Endpoints", 0),
            ("Age", 0),
        ],
        "ConfigMap" => &[("Data", 0), ("Age", 0)],
        "Secret" => &[("Type", 0), ("Data", 0), ("Age", 0)],
        "Namespace" => &[("Status", 0), ("Age", 0)],
        "Node" => &[
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1),
        ],
        "Event" => &[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Message", 0),
        ],
        "GitSource" => &[
            ("URL", 0),
            ("Commit", 0),
            ("Sync", 0),
            ("Health", 0),
            ("Age", 0),
            ("Message", 1),
        ],
        _ => &[("Age", 0)],
    }
}

/// A GitSource's SYNC cell: Synced, OutOfSync, Suspended, or why it is stalled.
fn gitsource_sync(o: &Value) -> String {
    let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
    let find = |t: &str| conditions.and_then(|c| c.iter().find(|c| c["type"] == t));
    if o.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return "Suspended".into();
    }
    if let Some(c) = find("Stalled").filter(|c| c["status"] == "True") {
        return c["reason"].as_str().unwrap_or("Stalled").to_string();
    }
    match find("Synced") {
        Some(c) if c["status"] == "True" => "Synced".into(),
        Some(c) => c["reason"].as_str().unwrap_or("OutOfSync").to_string(),
        None => "Unknown".into(),
    }
}

/// `web`, `nginx:1.27`: the containers' names or images, comma-separated.
fn containers(o: &Value, template: &str, field: &str) -> Value {
    let list: Vec<&str> = o
        .pointer(&format!("{template}/containers"))
        .and_then(Value::as_array)
        .map(|cs| cs.iter().filter_map(|c| c[field].as_str()).collect())
        .unwrap_or_default();
    json!(list.join(","))
}

/// `app=web,tier=front`, or `<none>`.
fn selector(labels: Option<&Value>) -> Value {
    let pairs: Vec<String> = labels
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    json!(if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    })
}

/// The STATUS kubectl shows for a pod: a container's waiting or terminated reason
/// (`ContainerCreating`, `CrashLoopBackOff`, `Completed`) when there is one, else the phase.
fn pod_status(o: &Value) -> String {
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        return "Terminating".into();
    }
    let mut status = text(o, "/status/reason", text(o, "/status/phase", "Pending")).to_string();
    let statuses = o
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array);
    for s in statuses.into_iter().flatten() {
        if let Some(reason) = s.pointer("/state/waiting/reason").and_then(Value::as_str) {
            status = reason.to_string();
        } else if let Some(t) = s.pointer("/state/terminated") {
            status = match t["reason"].as_str() {
                Some(reason) => reason.to_string(),
                None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
            };
        }
    }
    status
}

/// EXTERNAL-IP of a Service as kubectl prints it: the load balancer's addresses (or
/// `<pending>`), the external name, or the `externalIPs`.
fn external_ips(o: &Value) -> String {
    let listed = |pointer: &str, field: Option<&str>| -> Vec<String> {
        o.pointer(pointer)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| match field {
                Some(f) => v[f].as_str().or(v["hostname"].as_str()),
                None => v.as_str(),
            })
            .map(str::to_string)
            .collect()
    };
    let mut ips = listed("/spec/externalIPs", None);
    match text(o, "/spec/type", "ClusterIP") {
        "ExternalName" => return text(o, "/spec/externalName", "<none>").to_string(),
        "LoadBalancer" => {
            ips.extend(listed("/status/loadBalancer/ingress", Some("ip")));
            if ips.is_empty() {
                return "<pending>".into();
            }
        }
        _ => {}
    }
    if ips.is_empty() {
        "<none>".into()
    } else {
        ips.join(",")
    }
}

/// ENDPOINTS of an Endpoints object as kubectl prints it: the first three `ip:port`, then
/// how many more.
fn endpoints(o: &Value) -> String {
    let mut all = Vec::new();
    for subset in o["subsets"].as_array().into_iter().flatten() {
        let ips: Vec<&str> = subset["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a["ip"].as_str())
            .collect();
        let ports: Vec<i64> = subset["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["port"].as_i64())
            .collect();
        if ports.is_empty() {
            all.extend(ips.iter().map(|ip| ip.to_string()));
        }
        for port in ports {
            all.extend(ips.iter().map(|ip| format!("{ip}:{port}")));
        }
    }
    match all.len() {
        0 => "<none>".into(),
        n if n <= 3 => all.join(","),
        n => format!("{} + {} more...", all[..3].join(","), n - 3),
    }
}

fn node_address(o: &Value, kind: &str) -> Value {
    let found = o
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|a| a["type"] == kind))
        .and_then(|a| a["address"].as_str());
    json!(found.unwrap_or("<none>"))
}

/// An object's row: its name, then one cell per column of [`columns`].
pub(super) fn cells(r: &Resource, o: &Value) -> Vec<Value> {
    let name = json!(text(o, "/metadata/name", ""));
    let rest: Vec<Value> = match r.kind {
        "Pod" => {
            let total = count(o.pointer("/spec/containers"));
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses.iter().filter(|s| s["ready"] == true).count();
            let restarts: i64 = statuses
                .iter()
                .map(|s| s["restartCount"].as_i64().unwrap_or(0))
                .sum();
            vec![
                json!(format!("{ready}/{total}")),
                json!(pod_status(o)),
                json!(restarts),
                json!(age(o)),
                json!(text(o, "/status/podIP", "<none>")),
                json!(text(o, "/spec/nodeName", "<none>")),
                json!(text(o, "/status/nominatedNodeName", "<none>")),
                json!("<none>"),
            ]
        }
        "Deployment" => vec![
            json!(format!(
                "{}/{}",
                int(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(int(o, "/status/updatedReplicas")),
            json!(int(o, "/status/availableReplicas")),
            json!(age(o)),
            containers(o, "/spec/template/spec", "name"),
            containers(o, "/spec/template/spec", "image"),
            selector(o.pointer("/spec/selector/matchLabels")),
        ],
        "ReplicaSet" => vec![
            json!(int(o, "/spec/replicas")),
            json!(int(o, "/status/replicas")),
            json!(int(o, "/status/readyReplicas")),
            json!(age(o)),
            containers(o, "/spec/template/spec", "name"),
            containers(o, "/spec/template/spec", "image"),
            selector(o.pointer("/spec/selector/matchLabels")),
        ],
        "Service" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let protocol = p["protocol"].as_str().unwrap_or("TCP");
                            match p["nodePort"].as_i64() {
                                Some(node_port) => format!("{}:{node_port}/{protocol}", p["port"]),
                                None => format!("{}/{protocol}", p["port"]),
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(text(o, "/spec/type", "ClusterIP")),
                json!(text(o, "/spec/clusterIP", "<none>")),
                json!(external_ips(o)),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(age(o)),
                selector(o.pointer("/spec/selector")),
            ]
        }
        "Event" => vec![
            json!(age(o)),
            json!(text(o, "/type", "")),
            json!(text(o, "/reason", "")),
            json!(format!(
                "{}/{}",
                text(o, "/involvedObject/kind", "").to_lowercase(),
                text(o, "/involvedObject/name", "")
            )),
            json!(text(o, "/message", "")),
        ],
        "Endpoints" => vec![json!(endpoints(o)), json!(age(o))],
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["port"].as_i64())
                .map(|p| p.to_string())
                .collect();
            let addresses: Vec<&str> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().into_iter().flatten())
                .filter_map(Value::as_str)
                .collect();
            vec![
                json!(text(o, "/addressType", "")),
                json!(if ports.is_empty() {
                    "<unset>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(match addresses.len() {
                    0 => "<unset>".to_string(),
                    n if n <= 3 => addresses.join(","),
                    n => format!("{} + {} more...", addresses[..3].join(","), n - 3),
                }),
                json!(age(o)),
            ]
        }
        "GitSource" => {
            let commit = text(o, "/status/lastAppliedCommit", "");
            // The message that matters most: why it is stalled, what drifted, else Ready's.
            let conditions = o.pointer("/status/conditions").and_then(Value::as_array);
            let find = |t: &str, bad: &str| {
                conditions.and_then(|c| c.iter().find(|c| c["type"] == t && c["status"] == bad))
            };
            let ready = find("Stalled", "True")
                .or_else(|| find("Synced", "False"))
                .or_else(|| find("Ready", "False"))
                .or_else(|| find("Ready", "True"));
            vec![
                json!(text(o, "/spec/url", "")),
                json!(&commit[..commit.len().min(7)]),
                json!(gitsource_sync(o)),
                json!(text(o, "/status/health", "Unknown")),
                json!(age(o)),
                json!(ready.and_then(|c| c["message"].as_str()).unwrap_or("")),
            ]
        }
        "ConfigMap" => vec![
            json!(count(o.get("data")) + count(o.get("binaryData"))),
            json!(age(o)),
        ],
        "Secret" => vec![
            json!(text(o, "/type", "Opaque")),
            json!(count(o.get("data")) + count(o.get("stringData"))),
            json!(age(o)),
        ],
        "Namespace" => vec![
            json!(if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                text(o, "/status/phase", "Active")
            }),
            json!(age(o)),
        ],
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map(|c| c["status"] == "True");
            vec![
                json!(match ready {
                    Some(true) => "Ready",
                    Some(false) => "NotReady",
                    None => "Unknown",
                }),
                json!(node_roles(o)),
                json!(age(o)),
                json!(text(o, "/status/nodeInfo/kubeletVersion", "")),
                node_address(o, "InternalIP"),
                node_address(o, "ExternalIP"),
                json!(text(o, "/status/nodeInfo/osImage", "<unknown>")),
                json!(text(o, "/status/nodeInfo/kernelVersion", "<unknown>")),
                json!(text(
                    o,
                    "/status/nodeInfo/containerRuntimeVersion",
                    "<unknown>"
                )),
            ]
        }
        _ => vec![json!(age(o))],
    };
    std::iter::once(name).chain(rest).collect()
}

/// `control-plane,worker` from `node-role.kubernetes.io/<role>` labels, or `<none>`.
fn node_roles(o: &Value) -> String {
    let roles: Vec<&str> = o
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter_map(|k| k.strip_prefix("node-role.kubernetes.io/"))
                .filter(|r| !r.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if roles.is_empty() {
        "<none>".into()
    } else {
        roles.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_container_shows_its_reason_as_the_pod_status() {
        let pod = json!({
            "status": {"phase": "Pending", "containerStatuses": [
                {"name": "web", "state": {"waiting": {"reason": "ContainerCreating"}}}
            ]}
        });
        assert_eq!(pod_status(&pod), "ContainerCreating");
        let done = json!({"status": {"phase": "Succeeded", "containerStatuses": [
            {"name": "job", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ]}});
        assert_eq!(pod_status(&done), "Completed");
    }
}
