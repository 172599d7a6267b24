//! Normalisation before comparing: what the server sets or defaults is removed from both
//! sides, so an unchanged manifest compares equal to the object a Kubernetes server returns.

use serde_json::Value;

use crate::manifest::defaults::{
    Step, Stripped, apply_defaults, get, get_mut, group_kind, strip_defaults,
};

/// Metadata fields only the server writes.
pub const SERVER_SET_METADATA: &[&str] = &[
    "resourceVersion",
    "uid",
    "managedFields",
    "creationTimestamp",
    "generation",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// Annotations written by clients and controllers for their own bookkeeping.
pub const SERVER_SET_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    "deployment.kubernetes.io/revision",
];

/// Fields the server allocates when a manifest leaves them out (a Service's cluster IP, a
/// Pod's node): removed from the live side when the desired side does not set them.
const ALLOCATED: &[(&str, &str, &[&str])] = &[
    ("", "Service", &["spec", "clusterIP"]),
    ("", "Service", &["spec", "clusterIPs"]),
    ("", "Service", &["spec", "healthCheckNodePort"]),
    ("", "Service", &["spec", "ports", "*", "nodePort"]),
    ("", "Pod", &["spec", "nodeName"]),
    ("", "PersistentVolumeClaim", &["spec", "volumeName"]),
];

/// Kubernetes treats an explicit `null` as an absent field.
fn drop_nulls(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(drop_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

/// Sorts every mapping's keys, as kubectl's YAML does, so field order never shows as a change.
pub fn sort_keys(value: &mut Value) {
    match value {
        Value::Object(map) => {
            map.sort_keys();
            map.values_mut().for_each(sort_keys);
        }
        Value::Array(items) => items.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

fn drop_server_set(object: &mut Value) {
    let Value::Object(root) = object else { return };
    root.shift_remove("status");
    let Some(Value::Object(meta)) = root.get_mut("metadata") else {
        return;
    };
    for field in SERVER_SET_METADATA {
        meta.shift_remove(*field);
    }
    if let Some(Value::Object(annotations)) = meta.get_mut("annotations") {
        for key in SERVER_SET_ANNOTATIONS {
            annotations.shift_remove(*key);
        }
        if annotations.is_empty() {
            meta.shift_remove("annotations");
        }
    }
}

/// Removes `metadata.namespace` when it is the namespace the object would get anyway.
fn drop_default_namespace(object: &mut Value, default_namespace: &str) {
    if let Some(Value::Object(meta)) = object.get_mut("metadata")
        && meta.get("namespace").and_then(Value::as_str) == Some(default_namespace)
    {
        meta.shift_remove("namespace");
    }
}

/// One side, normalised: server-set fields and nulls gone, defaults filled in (then stripped
/// by [`normalize_pair`]), keys sorted.
fn prepare(object: &Value, default_namespace: &str) -> Value {
    let mut object = object.clone();
    drop_nulls(&mut object);
    drop_server_set(&mut object);
    drop_default_namespace(&mut object, default_namespace);
    apply_defaults(&mut object);
    object
}

/// Puts back on one side the defaults that were stripped where the other side still has a
/// (non-default) value, so a change from `replicas: 3` to `replicas: 1` shows both lines.
fn restore(side: &mut Value, stripped: &[Stripped], other: &Value) {
    // Parents were stripped after their children: restore in reverse, parents first.
    for Stripped { path, value } in stripped.iter().rev() {
        if get(other, path).is_none() {
            continue;
        }
        let Some((Step::Key(field), parent_path)) = path.split_last() else {
            continue;
        };
        if let Some(Value::Object(parent)) = get_mut(side, parent_path) {
            parent.insert(field.clone(), value.clone());
        }
    }
}

fn pattern_paths(root: &Value, pattern: &[&str]) -> Vec<Vec<Step>> {
    let mut found: Vec<Vec<Step>> = vec![Vec::new()];
    for part in pattern {
        let mut next = Vec::new();
        for path in found {
            match (*part, get(root, &path)) {
                ("*", Some(Value::Array(items))) => {
                    next.extend((0..items.len()).map(|i| {
                        let mut p = path.clone();
                        p.push(Step::Index(i));
                        p
                    }));
                }
                (key, Some(Value::Object(map))) if map.contains_key(key) => {
                    let mut p = path.clone();
                    p.push(Step::Key(key.to_string()));
                    next.push(p);
                }
                _ => {}
            }
        }
        found = next;
    }
    found
}

fn drop_allocated(live: &mut Value, desired: &Value) {
    let (group, kind) = group_kind(live);
    let (group, kind) = (group.to_string(), kind.to_string());
    for (g, k, pattern) in ALLOCATED {
        if *g != group || *k != kind {
            continue;
        }
        for path in pattern_paths(live, pattern).into_iter().rev() {
            if get(desired, &path).is_some() {
                continue;
            }
            let Some((Step::Key(field), parent_path)) = path.split_last() else {
                continue;
            };
            if let Some(Value::Object(parent)) = get_mut(live, parent_path) {
                parent.shift_remove(field);
            }
        }
    }
}

/// Normalises the live and desired sides of one object for comparison and display.
/// Either side may be absent (a create or a delete).
pub fn normalize_pair(
    live: Option<&Value>,
    desired: Option<&Value>,
    default_namespace: &str,
) -> (Option<Value>, Option<Value>) {
    let mut live = live.map(|v| prepare(v, default_namespace));
    let mut desired = desired.map(|v| prepare(v, default_namespace));
    let live_stripped = live.as_mut().map(strip_defaults);
    let desired_stripped = desired.as_mut().map(strip_defaults);
    if let (Some(l), Some(d)) = (live.as_mut(), desired.as_mut()) {
        let (l_before, d_before) = (l.clone(), d.clone());
        restore(l, live_stripped.as_deref().unwrap_or(&[]), &d_before);
        restore(d, desired_stripped.as_deref().unwrap_or(&[]), &l_before);
        drop_allocated(l, d);
    }
    for side in [live.as_mut(), desired.as_mut()].into_iter().flatten() {
        sort_keys(side);
    }
    (live, desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_live_object_with_server_fields_and_defaults_equals_its_manifest() {
        let manifest = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}});
        let live = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "1234",
                "resourceVersion": "42", "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {"app": "web"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "internalTrafficPolicy": "Cluster", "sessionAffinity": "None",
                "type": "ClusterIP", "selector": {"app": "web"},
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]},
            "status": {"loadBalancer": {}}});
        let (l, d) = normalize_pair(Some(&live), Some(&manifest), "default");
        assert_eq!(l, d);
    }

    #[test]
    fn a_change_to_a_default_value_shows_both_sides() {
        let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "w"}, "spec": {"replicas": 1}});
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "w"}, "spec": {"replicas": 3}});
        let (l, d) = normalize_pair(Some(&live), Some(&desired), "default");
        assert_eq!(l.unwrap()["spec"]["replicas"], json!(3));
        assert_eq!(d.unwrap()["spec"]["replicas"], json!(1));
    }

    #[test]
    fn string_data_is_compared_as_data() {
        let desired = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
            "stringData": {"k": "v"}});
        let live = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "s"}, "data": {"k": "dg=="}});
        let (l, d) = normalize_pair(Some(&live), Some(&desired), "default");
        assert_eq!(l, d);
    }
}
