//! What the built-in kinds beyond the first served ones print in a Table (jobs, stateful and
//! daemon sets, ingresses, volumes and claims, RBAC, autoscalers, disruption budgets,
//! classes, quotas), with the columns Kubernetes' own printers give them. `None` for a kind
//! this file does not know: `cells.rs` has the rest, NAME and AGE for what neither knows.

use serde_json::{Value, json};

use super::{age, human_age};

fn text<'a>(o: &'a Value, pointer: &str, default: &'a str) -> &'a str {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or(default)
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn array<'a>(o: &'a Value, pointer: &str) -> &'a [Value] {
    o.pointer(pointer)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// `a,b,c` or `<none>`.
fn joined(items: Vec<String>, separator: &str) -> Value {
    if items.is_empty() {
        json!("<none>")
    } else {
        json!(items.join(separator))
    }
}

/// The containers' names or images of a pod template, comma-separated.
fn containers(o: &Value, field: &str) -> Value {
    let list: Vec<&str> = array(o, "/spec/template/spec/containers")
        .iter()
        .filter_map(|c| c[field].as_str())
        .collect();
    json!(list.join(","))
}

/// `k=v,k2=v2` of a label map, or `<none>`.
fn labels(map: Option<&Value>) -> Value {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    joined(pairs, ",")
}

/// A label selector as kubectl prints it: `app=web,tier in (a,b)`, or `<none>`.
fn selector(sel: Option<&Value>) -> Value {
    let Some(sel) = sel else {
        return json!("<none>");
    };
    let mut terms: Vec<String> = sel
        .get("matchLabels")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
        .collect();
    for e in sel["matchExpressions"].as_array().into_iter().flatten() {
        let key = e["key"].as_str().unwrap_or_default();
        let values: Vec<&str> = e["values"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        terms.push(match e["operator"].as_str().unwrap_or_default() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "DoesNotExist" => format!("!{key}"),
            _ => key.to_string(),
        });
    }
    joined(terms, ",")
}

fn time(o: &Value, pointer: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    o.pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&chrono::Utc))
}

/// `RWO,RWX` from access modes.
fn access_modes(modes: &[Value]) -> Value {
    let short: Vec<&str> = modes
        .iter()
        .filter_map(Value::as_str)
        .map(|m| match m {
            "ReadWriteOnce" => "RWO",
            "ReadOnlyMany" => "ROX",
            "ReadWriteMany" => "RWX",
            "ReadWriteOncePod" => "RWOP",
            other => other,
        })
        .collect();
    json!(short.join(","))
}

/// What a Job's STATUS column says.
fn job_status(o: &Value) -> &'static str {
    let condition = |t: &str| {
        array(o, "/status/conditions")
            .iter()
            .any(|c| c["type"] == t && c["status"] == "True")
    };
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if condition("Complete") {
        "Complete"
    } else if condition("Failed") {
        "Failed"
    } else if condition("FailureTarget") {
        "FailureTarget"
    } else if condition("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if condition("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

/// `1/1`, or `0/1 of 3` for a Job without completions that runs pods in parallel.
fn job_completions(o: &Value) -> String {
    let succeeded = int(o, "/status/succeeded");
    match o.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => match o.pointer("/spec/parallelism").and_then(Value::as_i64) {
            Some(p) if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    }
}

fn job_duration(o: &Value) -> String {
    let Some(start) = time(o, "/status/startTime") else {
        return String::new();
    };
    let end = time(o, "/status/completionTime").unwrap_or_else(chrono::Utc::now);
    human_age((end - start).num_seconds())
}

/// `cpu: <unknown>/80%` for each metric of an `autoscaling/v2` HorizontalPodAutoscaler.
fn hpa_targets(o: &Value) -> Value {
    let current = array(o, "/status/currentMetrics");
    let targets: Vec<String> = array(o, "/spec/metrics")
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let kind = m["type"].as_str().unwrap_or_default();
            let source = match kind {
                "Resource" => &m["resource"],
                "ContainerResource" => &m["containerResource"],
                "Pods" => &m["pods"],
                "Object" => &m["object"],
                _ => &m["external"],
            };
            let name = source["name"]
                .as_str()
                .or(source.pointer("/metric/name").and_then(Value::as_str))
                .unwrap_or("<unknown>");
            let target = &source["target"];
            let (want, now) = match target["averageUtilization"].as_i64() {
                Some(u) => {
                    let now = current
                        .get(i)
                        .and_then(|c| c.pointer("/resource/current/averageUtilization"))
                        .and_then(Value::as_i64)
                        .map_or("<unknown>".to_string(), |c| format!("{c}%"));
                    (format!("{u}%"), now)
                }
                None => {
                    let want = target["averageValue"]
                        .as_str()
                        .or(target["value"].as_str())
                        .unwrap_or("<unknown>");
                    (want.to_string(), "<unknown>".to_string())
                }
            };
            format!("{name}: {now}/{want}")
        })
        .collect();
    joined(targets, ", ")
}

/// `pods: 1/10, requests.cpu: 0/4`: the quota's used and hard values whose key starts (or
/// not, with `limits = false`) with `limits.`.
fn quota_usage(o: &Value, limits: bool) -> Value {
    let hard = o.pointer("/spec/hard").and_then(Value::as_object);
    let used = o.pointer("/status/used");
    let items: Vec<String> = hard
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("limits.") == limits)
        .map(|(k, v)| {
            let u = used
                .and_then(|u| u.get(k))
                .and_then(Value::as_str)
                .unwrap_or("0");
            format!("{k}: {u}/{}", v.as_str().unwrap_or_default())
        })
        .collect();
    json!(items.join(", "))
}

/// Subjects of a binding of one kind: `alice, bob`, service accounts as `ns/name`.
fn subjects(o: &Value, kind: &str) -> Value {
    let names: Vec<String> = array(o, "/subjects")
        .iter()
        .filter(|s| s["kind"] == kind)
        .map(|s| {
            let name = s["name"].as_str().unwrap_or_default();
            match (kind, s["namespace"].as_str()) {
                ("ServiceAccount", Some(ns)) => format!("{ns}/{name}"),
                _ => name.to_string(),
            }
        })
        .collect();
    json!(names.join(", "))
}

/// Column names (after NAME) and priorities (1: only with `-o wide`) of the kinds this file
/// prints.
pub(super) fn columns(kind: &str) -> Option<&'static [(&'static str, u8)]> {
    Some(match kind {
        "Job" => &[
            ("Status", 0),
            ("Completions", 0),
            ("Duration", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "CronJob" => &[
            ("Schedule", 0),
            ("Timezone", 0),
            ("Suspend", 0),
            ("Active", 0),
            ("Last Schedule", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "StatefulSet" => &[("Ready", 0), ("Age", 0), ("Containers", 1), ("Images", 1)],
        "DaemonSet" => &[
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Node Selector", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "ReplicationController" => &[
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1),
        ],
        "Ingress" => &[
            ("Class", 0),
            ("Hosts", 0),
            ("Address", 0),
            ("Ports", 0),
            ("Age", 0),
        ],
        "IngressClass" => &[("Controller", 0), ("Parameters", 0), ("Age", 0)],
        "NetworkPolicy" => &[("Pod-Selector", 0), ("Age", 0)],
        "ServiceAccount" => &[("Secrets", 0), ("Age", 0)],
        "PersistentVolumeClaim" => &[
            ("Status", 0),
            ("Volume", 0),
            ("Capacity", 0),
            ("Access Modes", 0),
            ("StorageClass", 0),
            ("VolumeAttributesClass", 0),
            ("Age", 0),
            ("VolumeMode", 1),
        ],
        "PersistentVolume" => &[
            ("Capacity", 0),
            ("Access Modes", 0),
            ("Reclaim Policy", 0),
            ("Status", 0),
            ("Claim", 0),
            ("StorageClass", 0),
            ("VolumeAttributesClass", 0),
            ("Reason", 0),
            ("Age", 0),
            ("VolumeMode", 1),
        ],
        "StorageClass" => &[
            ("Provisioner", 0),
            ("ReclaimPolicy", 0),
            ("VolumeBindingMode", 0),
            ("AllowVolumeExpansion", 0),
            ("Age", 0),
        ],
        "Role" | "ClusterRole" | "LimitRange" => &[("Created At", 0)],
        "RoleBinding" | "ClusterRoleBinding" => &[
            ("Role", 0),
            ("Age", 0),
            ("Users", 1),
            ("Groups", 1),
            ("ServiceAccounts", 1),
        ],
        "HorizontalPodAutoscaler" => &[
            ("Reference", 0),
            ("Targets", 0),
            ("MinPods", 0),
            ("MaxPods", 0),
            ("Replicas", 0),
            ("Age", 0),
        ],
        "PodDisruptionBudget" => &[
            ("Min Available", 0),
            ("Max Unavailable", 0),
            ("Allowed Disruptions", 0),
            ("Age", 0),
        ],
        "PriorityClass" => &[
            ("Value", 0),
            ("Global-Default", 0),
            ("Age", 0),
            ("PreemptionPolicy", 0),
        ],
        "ResourceQuota" => &[("Age", 0), ("Request", 0), ("Limit", 0)],
        "Lease" => &[("Holder", 0), ("Age", 0)],
        "ControllerRevision" => &[("Controller", 0), ("Revision", 0), ("Age", 0)],
        _ => return None,
    })
}

/// An object's cells after NAME, one per column of [`columns`].
pub(super) fn cells(kind: &str, o: &Value) -> Option<Vec<Value>> {
    let created_at = || json!(text(o, "/metadata/creationTimestamp", ""));
    Some(match kind {
        "Job" => vec![
            json!(job_status(o)),
            json!(job_completions(o)),
            json!(job_duration(o)),
            json!(age(o)),
            containers(o, "name"),
            containers(o, "image"),
            selector(o.pointer("/spec/selector")),
        ],
        "CronJob" => {
            let last = time(o, "/status/lastScheduleTime").map_or("<none>".to_string(), |t| {
                human_age((chrono::Utc::now() - t).num_seconds())
            });
            let jobs = "/spec/jobTemplate";
            let list = |field: &str| {
                let names: Vec<&str> = array(o, &format!("{jobs}/spec/template/spec/containers"))
                    .iter()
                    .filter_map(|c| c[field].as_str())
                    .collect();
                json!(names.join(","))
            };
            vec![
                json!(text(o, "/spec/schedule", "")),
                json!(text(o, "/spec/timeZone", "<none>")),
                json!(if o.pointer("/spec/suspend") == Some(&json!(true)) {
                    "True"
                } else {
                    "False"
                }),
                json!(array(o, "/status/active").len()),
                json!(last),
                json!(age(o)),
                list("name"),
                list("image"),
                selector(o.pointer(&format!("{jobs}/spec/selector"))),
            ]
        }
        "StatefulSet" => vec![
            json!(format!(
                "{}/{}",
                int(o, "/status/readyReplicas"),
                o.pointer("/spec/replicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            )),
            json!(age(o)),
            containers(o, "name"),
            containers(o, "image"),
        ],
        "DaemonSet" => vec![
            json!(int(o, "/status/desiredNumberScheduled")),
            json!(int(o, "/status/currentNumberScheduled")),
            json!(int(o, "/status/numberReady")),
            json!(int(o, "/status/updatedNumberScheduled")),
            json!(int(o, "/status/numberAvailable")),
            labels(o.pointer("/spec/template/spec/nodeSelector")),
            json!(age(o)),
            containers(o, "name"),
            containers(o, "image"),
            selector(o.pointer("/spec/selector")),
        ],
        "ReplicationController" => vec![
            json!(int(o, "/spec/replicas")),
            json!(int(o, "/status/replicas")),
            json!(int(o, "/status/readyReplicas")),
            json!(age(o)),
            containers(o, "name"),
            containers(o, "image"),
            labels(o.pointer("/spec/selector")),
        ],
        "Ingress" => {
            let hosts: Vec<String> = array(o, "/spec/rules")
                .iter()
                .filter_map(|r| r["host"].as_str())
                .map(str::to_string)
                .collect();
            let hosts = match hosts.len() {
                0 => "*".to_string(),
                n if n <= 4 => hosts.join(","),
                n => format!("{} + {} more...", hosts[..4].join(","), n - 4),
            };
            let address: Vec<String> = array(o, "/status/loadBalancer/ingress")
                .iter()
                .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                .map(str::to_string)
                .collect();
            let ports = if array(o, "/spec/tls").is_empty() {
                "80"
            } else {
                "80, 443"
            };
            vec![
                json!(text(o, "/spec/ingressClassName", "<none>")),
                json!(hosts),
                json!(address.join(",")),
                json!(ports),
                json!(age(o)),
            ]
        }
        "IngressClass" => {
            let parameters = o.pointer("/spec/parameters").map_or("<none>".into(), |p| {
                format!(
                    "{}/{}",
                    p["kind"].as_str().unwrap_or_default(),
                    p["name"].as_str().unwrap_or_default()
                )
            });
            vec![
                json!(text(o, "/spec/controller", "")),
                json!(parameters),
                json!(age(o)),
            ]
        }
        "NetworkPolicy" => vec![selector(o.pointer("/spec/podSelector")), json!(age(o))],
        "ServiceAccount" => vec![json!(array(o, "/secrets").len()), json!(age(o))],
        "PersistentVolumeClaim" => {
            let bound = o.pointer("/spec/volumeName").is_some();
            let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                text(o, "/status/phase", "Pending")
            };
            vec![
                json!(phase),
                json!(text(o, "/spec/volumeName", "")),
                json!(if bound {
                    text(o, "/status/capacity/storage", "")
                } else {
                    ""
                }),
                if bound {
                    access_modes(array(o, "/status/accessModes"))
                } else {
                    json!("")
                },
                json!(text(o, "/spec/storageClassName", "<unset>")),
                json!(text(o, "/spec/volumeAttributesClassName", "<unset>")),
                json!(age(o)),
                json!(text(o, "/spec/volumeMode", "Filesystem")),
            ]
        }
        "PersistentVolume" => {
            let claim = o.pointer("/spec/claimRef").map_or(String::new(), |c| {
                format!(
                    "{}/{}",
                    c["namespace"].as_str().unwrap_or_default(),
                    c["name"].as_str().unwrap_or_default()
                )
            });
            vec![
                json!(text(o, "/spec/capacity/storage", "")),
                access_modes(array(o, "/spec/accessModes")),
                json!(text(o, "/spec/persistentVolumeReclaimPolicy", "Retain")),
                json!(if o.pointer("/metadata/deletionTimestamp").is_some() {
                    "Terminating"
                } else {
                    text(o, "/status/phase", "Pending")
                }),
                json!(claim),
                json!(text(o, "/spec/storageClassName", "")),
                json!(text(o, "/spec/volumeAttributesClassName", "<unset>")),
                json!(text(o, "/status/reason", "")),
                json!(age(o)),
                json!(text(o, "/spec/volumeMode", "Filesystem")),
            ]
        }
        "StorageClass" => vec![
            json!(text(o, "/provisioner", "")),
            json!(text(o, "/reclaimPolicy", "Delete")),
            json!(text(o, "/volumeBindingMode", "Immediate")),
            json!(
                o.pointer("/allowVolumeExpansion")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(age(o)),
        ],
        "Role" | "ClusterRole" | "LimitRange" => vec![created_at()],
        "RoleBinding" | "ClusterRoleBinding" => vec![
            json!(format!(
                "{}/{}",
                text(o, "/roleRef/kind", ""),
                text(o, "/roleRef/name", "")
            )),
            json!(age(o)),
            subjects(o, "User"),
            subjects(o, "Group"),
            subjects(o, "ServiceAccount"),
        ],
        "HorizontalPodAutoscaler" => vec![
            json!(format!(
                "{}/{}",
                text(o, "/spec/scaleTargetRef/kind", ""),
                text(o, "/spec/scaleTargetRef/name", "")
            )),
            hpa_targets(o),
            json!(
                o.pointer("/spec/minReplicas")
                    .and_then(Value::as_i64)
                    .unwrap_or(1)
            ),
            json!(int(o, "/spec/maxReplicas")),
            json!(int(o, "/status/currentReplicas")),
            json!(age(o)),
        ],
        "PodDisruptionBudget" => {
            let value = |p: &str| match o.pointer(p) {
                Some(Value::String(s)) => json!(s),
                Some(Value::Number(n)) => json!(n.to_string()),
                _ => json!("N/A"),
            };
            vec![
                value("/spec/minAvailable"),
                value("/spec/maxUnavailable"),
                json!(int(o, "/status/disruptionsAllowed")),
                json!(age(o)),
            ]
        }
        "PriorityClass" => vec![
            json!(int(o, "/value")),
            json!(
                o.pointer("/globalDefault")
                    .and_then(Value::as_bool)
                    .unwrap_or(false)
            ),
            json!(age(o)),
            json!(text(o, "/preemptionPolicy", "PreemptLowerPriority")),
        ],
        "ResourceQuota" => vec![json!(age(o)), quota_usage(o, false), quota_usage(o, true)],
        "Lease" => vec![json!(text(o, "/spec/holderIdentity", "")), json!(age(o))],
        "ControllerRevision" => {
            let owner = array(o, "/metadata/ownerReferences")
                .iter()
                .find(|r| r["controller"] == true)
                .map_or("<none>".to_string(), |r| {
                    let group = r["apiVersion"]
                        .as_str()
                        .and_then(|a| a.split_once('/'))
                        .map_or("", |(g, _)| g);
                    let kind = r["kind"].as_str().unwrap_or_default().to_lowercase();
                    let kind = if group.is_empty() {
                        kind
                    } else {
                        format!("{kind}.{group}")
                    };
                    format!("{kind}/{}", r["name"].as_str().unwrap_or_default())
                });
            vec![json!(owner), json!(int(o, "/revision")), json!(age(o))]
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_cell_per_column() {
        let empty = json!({"metadata": {"name": "x"}});
        for kind in [
            "Job",
            "CronJob",
            "StatefulSet",
            "DaemonSet",
            "ReplicationController",
            "Ingress",
            "IngressClass",
            "NetworkPolicy",
            "ServiceAccount",
            "PersistentVolumeClaim",
            "PersistentVolume",
            "StorageClass",
            "Role",
            "ClusterRole",
            "LimitRange",
            "RoleBinding",
            "ClusterRoleBinding",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "PriorityClass",
            "ResourceQuota",
            "Lease",
            "ControllerRevision",
        ] {
            assert_eq!(
                columns(kind).unwrap().len(),
                cells(kind, &empty).unwrap().len(),
                "{kind}"
            );
        }
        assert!(columns("CSIDriver").is_none() && cells("CSIDriver", &empty).is_none());
    }

    #[test]
    fn jobs_bindings_and_claims_print_as_kubectl_shows_them() {
        let job = json!({"spec": {"completions": 3, "selector": {"matchLabels": {"a": "b"}}},
            "status": {"succeeded": 1, "startTime": "2026-01-01T00:00:00Z",
                "completionTime": "2026-01-01T00:00:42Z",
                "conditions": [{"type": "Complete", "status": "True"}]}});
        let row = cells("Job", &job).unwrap();
        assert_eq!(row[0], "Complete");
        assert_eq!(row[1], "1/3");
        assert_eq!(row[2], "42s");
        assert_eq!(row[6], "a=b");
        let binding = json!({"roleRef": {"kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"},
                {"kind": "ServiceAccount", "name": "bot", "namespace": "ci"}]});
        let row = cells("RoleBinding", &binding).unwrap();
        assert_eq!(row[0], "ClusterRole/view");
        assert_eq!(row[2], "alice");
        assert_eq!(row[4], "ci/bot");
        let claim = json!({"spec": {"volumeName": "pv1", "storageClassName": "fast"},
            "status": {"phase": "Bound", "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteOnce"]}});
        let row = cells("PersistentVolumeClaim", &claim).unwrap();
        assert_eq!(&row[..5], &["Bound", "pv1", "1Gi", "RWO", "fast"]);
        let hpa = json!({"spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5, "metrics": [{"type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}});
        let row = cells("HorizontalPodAutoscaler", &hpa).unwrap();
        assert_eq!(row[0], "Deployment/web");
        assert_eq!(row[1], "cpu: <unknown>/80%");
        assert_eq!(row[2], 1);
    }
}
