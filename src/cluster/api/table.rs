//! Server-side printing: `meta.k8s.io/v1` Tables for `kubectl get`, with the columns kubectl
//! users know for pods, deployments, replica sets, services, config maps, secrets,
//! namespaces, nodes and events (NAME and AGE for the rest).

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use super::resources::Resource;

/// Whether the client asked for a Table (`Accept: application/json;as=Table;…`).
pub fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

/// `5m`, `3h`, `2d`: age as kubectl shows it.
fn age(object: &Value) -> String {
    let Some(ts) = object
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - ts.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

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

/// Column names (after NAME) and the cells of one object.
fn columns(r: &Resource) -> &'static [&'static str] {
    match r.kind {
        "Pod" => &["Ready", "Status", "Restarts", "Age", "IP", "Node"],
        "Deployment" => &["Ready", "Up-to-date", "Available", "Age"],
        "ReplicaSet" => &["Desired", "Current", "Ready", "Age"],
        "Service" => &["Type", "Cluster-IP", "External-IP", "Port(s)", "Age"],
        "ConfigMap" => &["Data", "Age"],
        "Secret" => &["Type", "Data", "Age"],
        "Namespace" => &["Status", "Age"],
        "Node" => &["Status", "Age"],
        "Event" => &["Last Seen", "Type", "Reason", "Object", "Message"],
        _ => &["Age"],
    }
}

fn cells(r: &Resource, o: &Value) -> Vec<Value> {
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
            let phase = if o.pointer("/metadata/deletionTimestamp").is_some() {
                "Terminating"
            } else {
                text(o, "/status/phase", "Pending")
            };
            vec![
                json!(format!("{ready}/{total}")),
                json!(phase),
                json!(restarts),
                json!(age(o)),
                json!(text(o, "/status/podIP", "<none>")),
                json!(text(o, "/spec/nodeName", "<none>")),
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
        ],
        "ReplicaSet" => vec![
            json!(int(o, "/spec/replicas")),
            json!(int(o, "/status/replicas")),
            json!(int(o, "/status/readyReplicas")),
            json!(age(o)),
        ],
        "Service" => {
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            format!("{}/{}", p["port"], p["protocol"].as_str().unwrap_or("TCP"))
                        })
                        .collect()
                })
                .unwrap_or_default();
            vec![
                json!(text(o, "/spec/type", "ClusterIP")),
                json!(text(o, "/spec/clusterIP", "<none>")),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(age(o)),
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
                json!(age(o)),
            ]
        }
        _ => vec![json!(age(o))],
    };
    std::iter::once(name).chain(rest).collect()
}

/// A Table of `items`.
pub fn table(r: &Resource, items: &[Value], metadata: &Value) -> Value {
    let mut defs = vec![
        json!({"name": "Name", "type": "string", "format": "name", "description": "Name of the object", "priority": 0}),
    ];
    for c in columns(r) {
        let priority = i32::from(matches!(*c, "IP" | "Node"));
        defs.push(json!({"name": c, "type": "string", "format": "", "description": "", "priority": priority}));
    }
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            json!({
                "cells": cells(r, o),
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": defs,
        "rows": rows,
    })
}
