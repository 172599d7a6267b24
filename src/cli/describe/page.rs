//! What `berth describe` says about one object: the common metadata, what matters for its
//! kind (containers of pods, replicas of deployments, ports of services, the keys and byte
//! counts of Secrets — never their values), its conditions and its events. Pure: the object,
//! its events and the current time in, text out.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::config;
use super::doc::Doc;
use crate::cluster::api::table::human_age;

/// Annotations that hold a copy of the object, and so of a Secret's values.
const COPY_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

fn or_none(v: Option<&str>) -> String {
    v.filter(|s| !s.is_empty()).unwrap_or("<none>").to_string()
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        other => other.to_string(),
    }
}

fn items<'a>(v: &'a Value, pointer: &str) -> &'a [Value] {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// `Sun, 22 Nov 2026 02:36:56 +0000`, as kubectl prints times.
fn time(text: Option<&str>) -> String {
    text.and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.format("%a, %d %b %Y %H:%M:%S %z").to_string())
        .unwrap_or_else(|| "<unset>".into())
}

fn age_since(text: Option<&str>, now: DateTime<Utc>) -> Option<String> {
    let t = DateTime::parse_from_rfc3339(text?).ok()?;
    Some(human_age((now - t.with_timezone(&Utc)).num_seconds()))
}

/// The whole page for one object.
pub fn describe(object: &Value, events: &[Value], now: DateTime<Utc>) -> String {
    let kind = object["kind"].as_str().unwrap_or("");
    let mut doc = Doc::default();
    doc.field(0, "Name", or_none(s(object, "/metadata/name")));
    if let Some(ns) = s(object, "/metadata/namespace") {
        doc.field(0, "Namespace", ns);
    }
    doc.map(0, "Labels", object.pointer("/metadata/labels"));
    let mut annotations = object
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(map) = annotations.as_object_mut().filter(|_| kind == "Secret") {
        map.retain(|k, _| !COPY_ANNOTATIONS.contains(&k.as_str()));
    }
    doc.pairs(0, "Annotations", Some(&annotations), ": ");
    doc.field(
        0,
        "CreationTimestamp",
        time(s(object, "/metadata/creationTimestamp")),
    );
    if let Some(deleted) = s(object, "/metadata/deletionTimestamp") {
        doc.field(0, "Terminating Since", time(Some(deleted)));
    }
    let owner = items(object, "/metadata/ownerReferences")
        .iter()
        .find(|o| o["controller"] == true);
    if let Some(owner) = owner {
        let (k, n) = (owner["kind"].as_str(), owner["name"].as_str());
        doc.field(
            0,
            "Controlled By",
            format!("{}/{}", k.unwrap_or(""), n.unwrap_or("")),
        );
    }
    match kind {
        "Pod" => pod(&mut doc, object),
        "Deployment" => deployment(&mut doc, object),
        "ReplicaSet" => replica_set(&mut doc, object),
        "Service" => service(&mut doc, object),
        "ConfigMap" => config::config_map(&mut doc, object),
        "Secret" => config::secret(&mut doc, object),
        "Namespace" => doc.field(0, "Status", or_none(s(object, "/status/phase"))),
        "Node" => node(&mut doc, object),
        _ => {
            for (key, value) in object.as_object().into_iter().flatten() {
                if !matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                    nested(&mut doc, 0, key, value);
                }
            }
        }
    }
    if matches!(kind, "Pod" | "Deployment" | "ReplicaSet" | "Node") {
        conditions(&mut doc, object);
    }
    events_section(&mut doc, events, now);
    doc.render()
}

/// `Spec:` and below, for kinds without a page of their own, keys capitalised as kubectl's
/// generic describer does.
fn nested(doc: &mut Doc, indent: usize, key: &str, value: &Value) {
    let mut title: Vec<char> = key.chars().collect();
    if let Some(first) = title.first_mut() {
        *first = first.to_ascii_uppercase();
    }
    let title: String = title.into_iter().collect();
    match value {
        Value::Object(map) if !map.is_empty() => {
            doc.heading(indent, &title);
            for (k, v) in map {
                nested(doc, indent + 2, k, v);
            }
        }
        Value::Array(list) if !list.is_empty() => {
            if list.iter().all(|v| !v.is_object() && !v.is_array()) {
                doc.fields(indent, &title, list.iter().map(scalar).collect());
            } else {
                doc.heading(indent, &title);
                for v in list {
                    match v.as_object() {
                        Some(map) => {
                            for (k, v) in map {
                                nested(doc, indent + 2, k, v);
                            }
                        }
                        None => doc.text(indent + 2, &scalar(v)),
                    }
                }
            }
        }
        Value::Object(_) | Value::Array(_) => doc.field(indent, &title, "<none>"),
        other => doc.field(indent, &title, scalar(other)),
    }
}

fn pod(doc: &mut Doc, o: &Value) {
    let node = match (s(o, "/spec/nodeName"), s(o, "/status/hostIP")) {
        (Some(n), Some(ip)) => format!("{n}/{ip}"),
        (Some(n), None) => n.to_string(),
        _ => "<none>".into(),
    };
    doc.field(
        0,
        "Service Account",
        or_none(s(o, "/spec/serviceAccountName")),
    );
    doc.field(0, "Node", node);
    if let Some(start) = s(o, "/status/startTime") {
        doc.field(0, "Start Time", time(Some(start)));
    }
    doc.field(0, "Status", or_none(s(o, "/status/phase")));
    if let Some(reason) = s(o, "/status/reason") {
        doc.field(0, "Reason", reason);
    }
    if let Some(message) = s(o, "/status/message") {
        doc.field(0, "Message", message);
    }
    doc.field(0, "IP", or_none(s(o, "/status/podIP")));
    let statuses = items(o, "/status/containerStatuses");
    containers(doc, o.pointer("/spec").unwrap_or(&Value::Null), statuses);
    volumes(doc, o.pointer("/spec").unwrap_or(&Value::Null));
}

fn containers(doc: &mut Doc, spec: &Value, statuses: &[Value]) {
    let list = items(spec, "/containers");
    if list.is_empty() {
        doc.field(0, "Containers", "<none>");
        return;
    }
    doc.heading(0, "Containers");
    for c in list {
        let name = c["name"].as_str().unwrap_or("");
        doc.text(2, &format!("{name}:"));
        let status = statuses.iter().find(|st| st["name"] == name);
        if let Some(id) = status.and_then(|st| st["containerID"].as_str()) {
            doc.field(4, "Container ID", id);
        }
        doc.field(4, "Image", or_none(c["image"].as_str()));
        let ports: Vec<String> = items(c, "/ports")
            .iter()
            .map(|p| {
                format!(
                    "{}/{}",
                    scalar(&p["containerPort"]),
                    p["protocol"].as_str().unwrap_or("TCP")
                )
            })
            .collect();
        doc.field(4, "Port", or_none(Some(&ports.join(", "))));
        for (key, pointer) in [("Command", "/command"), ("Args", "/args")] {
            let words = items(c, pointer);
            if !words.is_empty() {
                doc.heading(4, key);
                for word in words {
                    doc.text(6, &scalar(word));
                }
            }
        }
        if let Some(st) = status {
            let state = st["state"].as_object().and_then(|m| m.iter().next());
            let (state_name, detail) = match state {
                Some((k, v)) => {
                    let mut name: Vec<char> = k.chars().collect();
                    name[0] = name[0].to_ascii_uppercase();
                    (name.into_iter().collect::<String>(), v.clone())
                }
                None => ("Waiting".to_string(), Value::Null),
            };
            doc.field(4, "State", state_name);
            if let Some(reason) = detail["reason"].as_str() {
                doc.field(6, "Reason", reason);
            }
            if let Some(started) = detail["startedAt"].as_str() {
                doc.field(6, "Started", time(Some(started)));
            }
            if let Some(code) = detail.get("exitCode") {
                doc.field(6, "Exit Code", scalar(code));
            }
            doc.field(
                4,
                "Ready",
                if st["ready"] == true { "True" } else { "False" },
            );
            doc.field(4, "Restart Count", scalar(&st["restartCount"]));
        }
        // Values of variables are shown as the spec holds them; references to Secrets and
        // ConfigMaps are named, never resolved.
        let env = items(c, "/env");
        if env.is_empty() {
            doc.field(4, "Environment", "<none>");
        } else {
            doc.heading(4, "Environment");
        }
        for e in env {
            let name = e["name"].as_str().unwrap_or("");
            let key_of = |r: &Value| r["key"].as_str().unwrap_or("").to_string();
            let name_of = |r: &Value| r["name"].as_str().unwrap_or("").to_string();
            let value = if let Some(r) = e.pointer("/valueFrom/secretKeyRef") {
                format!(
                    "<set to the key '{}' in secret '{}'>",
                    key_of(r),
                    name_of(r)
                )
            } else if let Some(r) = e.pointer("/valueFrom/configMapKeyRef") {
                format!(
                    "<set to the key '{}' of config map '{}'>",
                    key_of(r),
                    name_of(r)
                )
            } else if let Some(r) = e.pointer("/valueFrom/fieldRef") {
                format!("({})", r["fieldPath"].as_str().unwrap_or(""))
            } else if e.get("valueFrom").is_some() {
                "<set from a reference>".to_string()
            } else {
                e["value"].as_str().unwrap_or("").to_string()
            };
            doc.field(6, name, value);
        }
        let mounts: Vec<String> = items(c, "/volumeMounts")
            .iter()
            .map(|m| {
                let ro = if m["readOnly"] == true { "ro" } else { "rw" };
                format!(
                    "{} from {} ({ro})",
                    m["mountPath"].as_str().unwrap_or(""),
                    m["name"].as_str().unwrap_or("")
                )
            })
            .collect();
        doc.fields(4, "Mounts", mounts);
    }
}

fn volumes(doc: &mut Doc, spec: &Value) {
    let list = items(spec, "/volumes");
    if list.is_empty() {
        doc.field(0, "Volumes", "<none>");
        return;
    }
    doc.heading(0, "Volumes");
    for v in list {
        doc.text(2, &format!("{}:", v["name"].as_str().unwrap_or("")));
        let source = v
            .as_object()
            .and_then(|m| m.iter().find(|(k, _)| k.as_str() != "name"));
        if let Some((kind, detail)) = source {
            doc.field(4, "Type", kind.as_str());
            for key in ["name", "secretName", "path", "claimName"] {
                if let Some(value) = detail[key].as_str() {
                    doc.field(4, key, value);
                }
            }
        }
    }
}

fn pod_template(doc: &mut Doc, o: &Value) {
    doc.heading(0, "Pod Template");
    let mut inner = Doc::default();
    inner.map(0, "Labels", o.pointer("/spec/template/metadata/labels"));
    containers(
        &mut inner,
        o.pointer("/spec/template/spec").unwrap_or(&Value::Null),
        &[],
    );
    volumes(
        &mut inner,
        o.pointer("/spec/template/spec").unwrap_or(&Value::Null),
    );
    for text in inner.render().lines() {
        doc.text(2, text);
    }
}

fn selector_text(o: &Value) -> String {
    let mut pairs: Vec<String> = o
        .pointer("/spec/selector/matchLabels")
        .or_else(|| {
            o.pointer("/spec/selector")
                .filter(|_| o["kind"] == "Service")
        })
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    or_none(Some(&pairs.join(",")))
}

fn int(o: &Value, pointer: &str) -> i64 {
    o.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn deployment(doc: &mut Doc, o: &Value) {
    let desired = o
        .pointer("/spec/replicas")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    doc.field(0, "Selector", selector_text(o));
    doc.field(
        0,
        "Replicas",
        format!(
            "{desired} desired | {} updated | {} total | {} available | {} unavailable",
            int(o, "/status/updatedReplicas"),
            int(o, "/status/replicas"),
            int(o, "/status/availableReplicas"),
            int(o, "/status/unavailableReplicas"),
        ),
    );
    doc.field(
        0,
        "StrategyType",
        s(o, "/spec/strategy/type").unwrap_or("RollingUpdate"),
    );
    doc.field(
        0,
        "MinReadySeconds",
        int(o, "/spec/minReadySeconds").to_string(),
    );
    pod_template(doc, o);
}

fn replica_set(doc: &mut Doc, o: &Value) {
    doc.field(0, "Selector", selector_text(o));
    doc.field(
        0,
        "Replicas",
        format!(
            "{} current / {} desired",
            int(o, "/status/replicas"),
            int(o, "/spec/replicas")
        ),
    );
    pod_template(doc, o);
}

fn service(doc: &mut Doc, o: &Value) {
    doc.field(0, "Selector", selector_text(o));
    doc.field(0, "Type", s(o, "/spec/type").unwrap_or("ClusterIP"));
    doc.field(0, "IP", or_none(s(o, "/spec/clusterIP")));
    for p in items(o, "/spec/ports") {
        let name = p["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .unwrap_or("<unset>");
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        doc.field(
            0,
            "Port",
            format!("{name}  {}/{protocol}", scalar(&p["port"])),
        );
        let target = p.get("targetPort").unwrap_or(&p["port"]);
        doc.field(0, "TargetPort", format!("{}/{protocol}", scalar(target)));
        if let Some(node_port) = p.get("nodePort") {
            doc.field(
                0,
                "NodePort",
                format!("{name}  {}/{protocol}", scalar(node_port)),
            );
        }
    }
    doc.field(
        0,
        "Session Affinity",
        s(o, "/spec/sessionAffinity").unwrap_or("None"),
    );
}

fn node(doc: &mut Doc, o: &Value) {
    let addresses: Vec<String> = items(o, "/status/addresses")
        .iter()
        .map(|a| format!("{}:  {}", scalar(&a["type"]), scalar(&a["address"])))
        .collect();
    doc.fields(0, "Addresses", addresses);
    for (key, pointer) in [
        ("Capacity", "/status/capacity"),
        ("Allocatable", "/status/allocatable"),
    ] {
        let pairs: Vec<String> = o
            .pointer(pointer)
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k}:  {}", scalar(v)))
                    .collect()
            })
            .unwrap_or_default();
        doc.fields(0, key, pairs);
    }
    if let Some(info) = o.pointer("/status/nodeInfo").and_then(Value::as_object) {
        doc.heading(0, "System Info");
        for (k, v) in info {
            doc.field(2, k, scalar(v));
        }
    }
    doc.field(
        0,
        "Unschedulable",
        scalar(
            o.pointer("/spec/unschedulable")
                .unwrap_or(&Value::Bool(false)),
        ),
    );
}

fn conditions(doc: &mut Doc, o: &Value) {
    let list = items(o, "/status/conditions");
    if list.is_empty() {
        doc.field(0, "Conditions", "<none>");
        return;
    }
    doc.heading(0, "Conditions");
    let rows = list
        .iter()
        .map(|c| {
            vec![
                scalar(&c["type"]),
                scalar(&c["status"]),
                c["reason"].as_str().unwrap_or("").to_string(),
            ]
        })
        .collect();
    doc.table(2, &["Type", "Status", "Reason"], rows);
}

fn events_section(doc: &mut Doc, events: &[Value], now: DateTime<Utc>) {
    if events.is_empty() {
        doc.field(0, "Events", "<none>");
        return;
    }
    let when = |e: &Value| {
        s(e, "/lastTimestamp")
            .or_else(|| s(e, "/eventTime"))
            .or_else(|| s(e, "/firstTimestamp"))
            .or_else(|| s(e, "/metadata/creationTimestamp"))
            .map(str::to_string)
    };
    let mut sorted: Vec<&Value> = events.iter().collect();
    sorted.sort_by_key(|e| when(e));
    let rows = sorted
        .into_iter()
        .map(|e| {
            let age = age_since(when(e).as_deref(), now).unwrap_or_else(|| "<unknown>".into());
            let count = e["count"].as_i64().unwrap_or(1);
            let age = match age_since(s(e, "/firstTimestamp"), now) {
                Some(first) if count > 1 => format!("{age} (x{count} over {first})"),
                _ => age,
            };
            let from = s(e, "/source/component")
                .or_else(|| s(e, "/reportingComponent"))
                .unwrap_or("");
            vec![
                s(e, "/type").unwrap_or("Normal").to_string(),
                s(e, "/reason").unwrap_or("").to_string(),
                age,
                from.to_string(),
                s(e, "/message").unwrap_or("").trim().to_string(),
            ]
        })
        .collect();
    doc.heading(0, "Events");
    doc.table(2, &["Type", "Reason", "Age", "From", "Message"], rows);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_secret_shows_its_keys_and_sizes_but_never_its_values() {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "shop", "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"stringData\":{\"password\":\"hunter2-SECRET\"}}",
                "team": "payments",
            }},
            "type": "Opaque",
            "data": {"password": "aHVudGVyMi1TRUNSRVQ="},
        });
        let page = describe(&secret, &[], Utc::now());
        assert!(page.contains("password:  14 bytes"), "{page}");
        assert!(
            page.contains("Annotations:        team: payments\n"),
            "{page}"
        );
        assert!(!page.contains("hunter2"), "{page}");
        assert!(!page.contains("aHVudGVyMi1TRUNSRVQ="), "{page}");
    }

    #[test]
    fn events_are_listed_oldest_first_with_kubectl_ages() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:10:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "x", "namespace": "d"}});
        let events = vec![
            json!({"type": "Warning", "reason": "Late", "message": "second",
                   "lastTimestamp": "2026-01-01T00:09:30Z", "source": {"component": "b"}}),
            json!({"type": "Normal", "reason": "Early", "message": "first", "count": 3,
                   "firstTimestamp": "2026-01-01T00:00:00Z",
                   "lastTimestamp": "2026-01-01T00:05:00Z", "source": {"component": "a"}}),
        ];
        let page = describe(&cm, &events, now);
        let table = page.split("Events:\n").nth(1).unwrap();
        assert_eq!(
            table,
            "  Type     Reason  Age               From  Message\n  \
             ----     ------  ----              ----  -------\n  \
             Normal   Early   5m (x3 over 10m)  a     first\n  \
             Warning  Late    30s               b     second\n"
        );
    }
}
