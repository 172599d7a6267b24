//! The pure parts of a GitSource's status: conditions that keep their transition time while
//! unchanged, the merge patch that moves the old status to the new one (none when equal, so
//! a reconcile that changes nothing writes nothing), drift read off a dry run, and the fields
//! an autoscaler owns, which git neither reverts nor calls drift.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::apply::batch::{BatchResponse, ObjectResult, Outcome};

/// The conditions of a source, built on the ones it has.
pub struct Conditions {
    old: Vec<Value>,
    new: Vec<Value>,
    generation: Option<i64>,
}

impl Conditions {
    pub fn new(source: &Value, generation: Option<i64>) -> Conditions {
        let old = source
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        // Start from the old ones: a condition this reconcile does not look at stays.
        Conditions {
            new: old.clone(),
            old,
            generation,
        }
    }

    pub fn set(&mut self, kind: &str, status: bool, reason: &str, message: &str) {
        let status = if status { "True" } else { "False" };
        let previous = self.old.iter().find(|c| c["type"] == kind);
        let time = match previous {
            Some(p) if p["status"] == status => p["lastTransitionTime"].clone(),
            _ => json!(crate::cluster::api::write_now()),
        };
        let condition = json!({
            "type": kind, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": time, "observedGeneration": self.generation,
        });
        match self.new.iter_mut().find(|c| c["type"] == kind) {
            Some(c) => *c = condition,
            None => self.new.push(condition),
        }
    }

    pub fn into_value(self) -> Value {
        let order = ["Ready", "Synced", "Stalled"];
        let mut new = self.new;
        new.sort_by_key(|c| {
            order
                .iter()
                .position(|o| c["type"] == *o)
                .unwrap_or(order.len())
        });
        Value::Array(new)
    }
}

/// Drops nulls and empty arrays, as the typed status leaves them out.
fn compact(v: &Value) -> Map<String, Value> {
    v.as_object()
        .into_iter()
        .flatten()
        .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The merge patch from `old` to `new` status; `None` when they already agree.
pub fn status_patch(old: &Value, new: Value) -> Option<Value> {
    let (old, new) = (compact(old), compact(&new));
    if old == new {
        return None;
    }
    let mut patch = new.clone();
    for key in old.keys() {
        if !new.contains_key(key) {
            patch.insert(key.clone(), Value::Null);
        }
    }
    Some(Value::Object(patch))
}

/// On a Deployment, ReplicaSet or StatefulSet: who scales it (an HPA, KEDA, a script). Its
/// `spec.replicas` then belongs to that autoscaler: git sync leaves the live count alone and
/// a different count is not drift.
pub const REPLICAS_MANAGED_BY_ANNOTATION: &str = "berth.dev/replicas-managed-by";

/// The kinds whose `spec.replicas` an autoscaler may own.
const SCALABLE_KINDS: [&str; 3] = ["Deployment", "ReplicaSet", "StatefulSet"];

/// Whether an autoscaler owns the object's `spec.replicas` (the annotation, non-empty).
pub fn replicas_autoscaled(object: &Value) -> bool {
    object["kind"]
        .as_str()
        .is_some_and(|k| SCALABLE_KINDS.contains(&k))
        && object
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(REPLICAS_MANAGED_BY_ANNOTATION))
            .and_then(Value::as_str)
            .is_some_and(|by| !by.trim().is_empty())
}

/// `(kind, namespace, name)` of a manifest, its namespace defaulted as the batch does.
fn identity<'a>(object: &'a Value, namespace: &'a str) -> (&'a str, &'a str, &'a str) {
    (
        object["kind"].as_str().unwrap_or(""),
        object["metadata"]["namespace"]
            .as_str()
            .unwrap_or(namespace),
        object["metadata"]["name"].as_str().unwrap_or(""),
    )
}

/// Gives each git object whose live twin (from a dry run) is autoscaled the live replica
/// count, so applying git, a new commit or a self-heal alike, keeps what the autoscaler set.
/// The annotation counts on either side: in git, or added to the live object by hand.
/// Returns whether any object changed (the dry run must then be done again).
pub fn keep_autoscaled_replicas(
    objects: &mut [Value],
    dry: &BatchResponse,
    namespace: &str,
) -> bool {
    // Each result's live object by kind, namespace and name: one lookup an object, not a scan
    // of the whole dry run.
    let by_identity: HashMap<(String, Option<String>, String), &Value> = dry
        .results
        .iter()
        .filter_map(|r| {
            let key = (r.kind.clone(), r.namespace.clone(), r.name.clone());
            Some((key, r.live.as_ref()?))
        })
        .collect();
    let mut changed = false;
    for object in objects.iter_mut() {
        let (kind, ns, name) = identity(object, namespace);
        let key = |ns: Option<&str>| (kind.to_string(), ns.map(str::to_string), name.to_string());
        let live = by_identity
            .get(&key(Some(ns)))
            .or_else(|| by_identity.get(&key(None)))
            .copied();
        let Some(live) = live else { continue };
        if !(replicas_autoscaled(live) || replicas_autoscaled(object)) {
            continue;
        }
        let Some(count) = live.pointer("/spec/replicas").cloned() else {
            continue;
        };
        if object.pointer("/spec/replicas") == Some(&count) {
            continue;
        }
        if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("replicas".into(), count);
            changed = true;
        }
    }
    changed
}

/// Fields the server or controllers own: never drift.
fn ignored(path: &str) -> bool {
    matches!(
        path,
        "status"
            | "metadata.managedFields"
            | "metadata.resourceVersion"
            | "metadata.generation"
            | "metadata.creationTimestamp"
            | "metadata.uid"
    )
}

fn diff_paths(prefix: &str, a: &Value, b: &Value, out: &mut Vec<String>) {
    if ignored(prefix) || a == b {
        return;
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                diff_paths(
                    &p,
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

/// The drifted field paths of one dry-run result (`spec.replicas`, `data.key`, …).
pub fn drifted_fields(r: &ObjectResult) -> Vec<String> {
    let mut fields = Vec::new();
    if let (Some(want), Some(live)) = (&r.object, &r.live) {
        diff_paths("", live, want, &mut fields);
        if replicas_autoscaled(live) || replicas_autoscaled(want) {
            fields.retain(|f| f != "spec.replicas");
        }
    }
    fields
}

/// Whether a `fieldsV1` set owns the dotted `path` or a field inside it. Keys may hold dots
/// themselves (`metadata.annotations.example.com/x`), so each level tries the longer keys too.
fn owns(fields_v1: &Value, path: &str) -> bool {
    fn walk(at: &Value, segments: &[&str]) -> bool {
        if segments.is_empty() {
            return true;
        }
        (1..=segments.len()).rev().any(|n| {
            at.get(format!("f:{}", segments[..n].join(".")))
                .is_some_and(|next| walk(next, &segments[n..]))
        })
    }
    walk(fields_v1, &path.split('.').collect::<Vec<_>>())
}

/// The field managers, other than `except`, that own one of the drifted `fields` of `live`
/// (per its `managedFields`, status writes left out): who a self-heal overrules.
pub fn writers_of(live: &Value, fields: &[String], except: &str) -> Vec<String> {
    let mut out: Vec<String> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|m| m["subresource"].as_str() != Some("status"))
        .filter(|m| fields.iter().any(|f| owns(&m["fieldsV1"], f)))
        .filter_map(|m| m["manager"].as_str())
        .filter(|m| *m != except)
        .map(str::to_string)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What differs between git and the cluster, from a dry run of the commit already applied:
/// `Deployment default/web: spec.replicas`. Field paths only, never values, so Secret data
/// stays out of the status.
pub fn drift_of(dry: &BatchResponse) -> Vec<String> {
    let mut out = Vec::new();
    for r in &dry.results {
        let what = match &r.namespace {
            Some(ns) => format!("{} {ns}/{}", r.kind, r.name),
            None => format!("{} {}", r.kind, r.name),
        };
        match r.outcome {
            Outcome::Created => out.push(format!("{what}: deleted from the cluster")),
            Outcome::Configured => {
                let fields = drifted_fields(r);
                if !fields.is_empty() {
                    out.push(format!("{what}: {}", fields.join(", ")));
                }
            }
            Outcome::Pruned => out.push(format!("{what}: not in git")),
            Outcome::Unchanged => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_self_heal_overrules_only_the_managers_of_the_drifted_fields() {
        let live = json!({"metadata": {"managedFields": [
            {"manager": "berth-git-sync", "operation": "Apply",
             "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {}}}},
            {"manager": "kubectl", "operation": "Update",
             "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "deployment-controller", "operation": "Update",
             "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
            {"manager": "deployment-controller", "operation": "Update", "subresource": "status",
             "fieldsV1": {"f:status": {"f:replicas": {}}}},
        ]}});
        let fields = vec!["spec.replicas".to_string()];
        assert_eq!(
            writers_of(&live, &fields, "berth-git-sync"),
            vec!["kubectl"]
        );
        // A field nobody else wrote (the manager changed it through a parent it owns).
        let fields = vec!["spec.template.spec.containers".to_string()];
        assert!(writers_of(&live, &fields, "berth-git-sync").is_empty());
        // Keys with dots in them.
        let fields = vec!["metadata.annotations.deployment.kubernetes.io/revision".to_string()];
        assert_eq!(
            writers_of(&live, &fields, "berth-git-sync"),
            vec!["deployment-controller"]
        );
    }
    use crate::apply::batch::ObjectResult;

    #[test]
    fn an_unchanged_status_is_not_written_again() {
        let old = json!({"health": "Healthy", "inventory": [], "drift": null});
        assert_eq!(
            status_patch(&old, json!({"health": "Healthy", "drift": []})),
            None
        );
        let patch = status_patch(&old, json!({"health": "Degraded"})).unwrap();
        assert_eq!(patch, json!({"health": "Degraded"}));
        let patch = status_patch(&json!({"drift": ["x"]}), json!({})).unwrap();
        assert_eq!(patch, json!({"drift": null}));
    }

    #[test]
    fn a_scaled_deployment_drifts_on_replicas_only_and_secrets_show_no_values() {
        let live = json!({"kind": "Deployment", "metadata": {"name": "web", "resourceVersion": "9",
            "managedFields": [1]}, "spec": {"replicas": 5}, "status": {"replicas": 5}});
        let want = json!({"kind": "Deployment", "metadata": {"name": "web", "resourceVersion": "10",
            "managedFields": [2]}, "spec": {"replicas": 2}, "status": {"replicas": 5}});
        let secret_live = json!({"kind": "Secret", "data": {"password": "aHVudGVyMg=="}});
        let secret_want = json!({"kind": "Secret", "data": {"password": "czNjcmV0"}});
        let result = |kind: &str, object: Value, live: Value| ObjectResult {
            api_version: "v1".into(),
            kind: kind.into(),
            namespace: Some("default".into()),
            name: "web".into(),
            outcome: Outcome::Configured,
            object: Some(object),
            live: Some(live),
        };
        let dry = BatchResponse {
            applyset_id: String::new(),
            dry_run: true,
            revision: 0,
            parent: Outcome::Unchanged,
            results: vec![
                result("Deployment", want, live),
                result("Secret", secret_want, secret_live),
            ],
        };
        let drift = drift_of(&dry);
        assert_eq!(
            drift,
            [
                "Deployment default/web: spec.replicas",
                "Secret default/web: data.password"
            ]
        );
        assert!(!drift.join(" ").contains("aHVudGVyMg"));
    }

    fn configured(kind: &str, want: Value, live: Value) -> ObjectResult {
        ObjectResult {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            namespace: Some("shop".into()),
            name: "web".into(),
            outcome: Outcome::Configured,
            object: Some(want),
            live: Some(live),
        }
    }

    fn dry_run(results: Vec<ObjectResult>) -> BatchResponse {
        BatchResponse {
            applyset_id: String::new(),
            dry_run: true,
            revision: 0,
            parent: Outcome::Unchanged,
            results,
        }
    }

    fn deployment(replicas: i64, image: &str, managed_by: Option<&str>) -> Value {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "annotations": {}},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "web", "image": image}]}}}});
        if let Some(by) = managed_by {
            d["metadata"]["annotations"][REPLICAS_MANAGED_BY_ANNOTATION] = json!(by);
        }
        d
    }

    #[test]
    fn replicas_an_autoscaler_set_are_not_drift_but_other_fields_still_are() {
        let drift = |want: Value, live: Value| {
            drift_of(&dry_run(vec![configured("Deployment", want, live)]))
        };
        // As a dry run merges it: git's fields over the live object, the annotation kept.
        let want = deployment(2, "web:1", Some("hpa"));
        assert!(drift(want.clone(), deployment(6, "web:1", Some("hpa"))).is_empty());
        assert_eq!(
            drift(want, deployment(6, "web:2", Some("hpa"))),
            ["Deployment shop/web: spec.template.spec.containers"]
        );
        // Without the annotation a scale by hand is drift, as before.
        assert_eq!(
            drift(deployment(2, "web:1", None), deployment(6, "web:1", None)),
            ["Deployment shop/web: spec.replicas"]
        );
    }

    #[test]
    fn applying_git_keeps_the_replica_count_of_an_autoscaled_object_only() {
        let live = deployment(6, "web:1", Some("keda"));
        let dry = dry_run(vec![configured("Deployment", json!({}), live)]);
        // A new commit changes the image; the object has no namespace: the source's applies.
        let mut objects = vec![deployment(2, "web:2", None)];
        objects[0]["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("namespace");
        assert!(keep_autoscaled_replicas(&mut objects, &dry, "shop"));
        assert_eq!(objects[0]["spec"]["replicas"], 6);
        assert_eq!(
            objects[0]["spec"]["template"]["spec"]["containers"][0]["image"],
            "web:2"
        );
        assert!(
            !keep_autoscaled_replicas(&mut objects, &dry, "shop"),
            "already kept"
        );

        // Not annotated anywhere: git's count wins.
        let dry = dry_run(vec![configured(
            "Deployment",
            json!({}),
            deployment(6, "web:1", None),
        )]);
        let mut objects = vec![deployment(2, "web:1", None)];
        assert!(!keep_autoscaled_replicas(&mut objects, &dry, "shop"));
        assert_eq!(objects[0]["spec"]["replicas"], 2);
        // Annotated in git: the live count is kept too.
        let mut objects = vec![deployment(2, "web:1", Some("hpa"))];
        assert!(keep_autoscaled_replicas(&mut objects, &dry, "shop"));
        assert_eq!(objects[0]["spec"]["replicas"], 6);
        // A ConfigMap is never autoscaled, whatever it says.
        let mut cm = json!({"kind": "ConfigMap", "metadata": {"name": "web",
            "annotations": {REPLICAS_MANAGED_BY_ANNOTATION: "hpa"}}, "spec": {"replicas": 1}});
        assert!(!replicas_autoscaled(&cm));
        cm["kind"] = json!("StatefulSet");
        assert!(replicas_autoscaled(&cm));
    }
}
