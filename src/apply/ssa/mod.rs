//! Server-side apply and `managedFields`: who owns which fields, conflicts between managers
//! (reported as Kubernetes reports them, overridable with `force`), and removal of fields a
//! manager stopped applying. Updates by other verbs move the fields they change to their
//! manager, so a later apply that disagrees with them conflicts, as in Kubernetes.
//!
//! Pure: two JSON values and a [`Writer`] in, the merged object out. The API server uses it
//! for `PATCH application/apply-patch+yaml` and for every write's `managedFields`; the apply
//! planner ([`super::plan`]) for each object of a batch.

pub mod fields;

use serde_json::{Map, Value, json};

use self::fields::FieldSet;
use super::cause::Cause;
use crate::manifest::lists::{is_set_list, list_map_keys, list_map_value};

/// One `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedEntry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: FieldSet,
}

impl ManagedEntry {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn from_json(v: &Value) -> Option<ManagedEntry> {
        Some(ManagedEntry {
            manager: v.get("manager")?.as_str()?.to_string(),
            operation: v.get("operation")?.as_str()?.to_string(),
            api_version: v
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            time: v
                .get("time")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            subresource: v
                .get("subresource")
                .and_then(Value::as_str)
                .map(str::to_string),
            fields: FieldSet::from_fields_v1(v.get("fieldsV1").unwrap_or(&Value::Null)),
        })
    }
}

/// Reads an object's `managedFields`.
pub fn entries(object: &Value) -> Vec<ManagedEntry> {
    object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(ManagedEntry::from_json).collect())
        .unwrap_or_default()
}

/// Writes `managedFields` into an object, dropping managers that own nothing.
pub fn set_entries(object: &mut Value, mut list: Vec<ManagedEntry>) {
    list.retain(|e| !e.fields.is_empty());
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if list.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert(
                "managedFields".into(),
                Value::Array(list.iter().map(ManagedEntry::to_json).collect()),
            );
        }
    }
}

/// Who is writing: the `fieldManager` and the time of the write.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    pub subresource: Option<&'a str>,
}

/// Records a non-apply write: the fields that changed between `old` and `new` now belong to
/// the writer's `Update` entry and to no one else.
pub fn record_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>) {
    let mut list = old.map(entries).unwrap_or_default();
    let new_fields = FieldSet::of(new);
    let changed = match old {
        None => new_fields.clone(),
        Some(old) => FieldSet(
            new_fields
                .0
                .iter()
                .filter(|p| fields::get(old, p) != fields::get(new, p))
                .cloned()
                .collect(),
        ),
    };
    for e in &mut list {
        // Fields gone from the object are owned by no one.
        e.fields = e.fields.intersection(&new_fields).difference(&changed);
    }
    if !changed.is_empty() {
        let pos = list.iter().position(|e| {
            e.manager == writer.manager
                && e.operation == "Update"
                && e.subresource.as_deref() == writer.subresource
        });
        let entry = match pos {
            Some(i) => &mut list[i],
            None => {
                list.push(ManagedEntry {
                    manager: writer.manager.into(),
                    operation: "Update".into(),
                    api_version: writer.api_version.into(),
                    time: String::new(),
                    subresource: writer.subresource.map(str::to_string),
                    fields: FieldSet::default(),
                });
                list.last_mut().expect("just pushed")
            }
        };
        entry.fields = entry.fields.union(&changed);
        entry.time = writer.time.into();
    }
    set_entries(new, list);
}

/// Merges an applied configuration into an object: maps recursively, keyed lists by key,
/// set lists by value, everything else replaced.
fn merge_applied(target: &mut Value, applied: &Value, field: Option<&str>) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, av) in a {
                match t.get_mut(k) {
                    Some(tv) => merge_applied(tv, av, Some(k)),
                    None => {
                        t.insert(k.clone(), av.clone());
                    }
                }
            }
        }
        (Value::Array(t), Value::Array(a)) => {
            let field = field.unwrap_or("");
            if is_set_list(field) {
                for v in a {
                    if !t.contains(v) {
                        t.push(v.clone());
                    }
                }
                return;
            }
            match list_map_keys(field, a.first()) {
                Some(keys)
                    if a.iter()
                        .all(|i| keys.iter().all(|k| list_map_value(i, k).is_some())) =>
                {
                    let same = |x: &Value, item: &Value| {
                        keys.iter()
                            .all(|k| list_map_value(x, k) == list_map_value(item, k))
                    };
                    for item in a {
                        match t.iter_mut().find(|x| same(x, item)) {
                            Some(existing) => merge_applied(existing, item, None),
                            None => t.push(item.clone()),
                        }
                    }
                }
                _ => *t = a.clone(),
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// Server-side apply of `applied` over `live` (absent for a create). Returns the new object
/// with its `managedFields`, or the conflicts when another manager owns a field the
/// configuration sets to a different value and `force` is off.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
) -> Result<Value, Vec<Cause>> {
    let applied_fields = FieldSet::of(applied);
    let mut list = live.map(entries).unwrap_or_default();
    let mine = |e: &ManagedEntry| e.manager == writer.manager && e.operation == "Apply";
    let mut conflicts = Vec::new();
    if let Some(live) = live {
        for e in list.iter_mut().filter(|e| !mine(e)) {
            let overlap = e.fields.intersection(&applied_fields);
            let differing: Vec<_> = overlap
                .0
                .into_iter()
                .filter(|p| !p.last().is_some_and(|s| s.starts_with("k:")))
                .filter(|p| fields::get(live, p) != fields::get(applied, p))
                .collect();
            if force {
                for p in &differing {
                    e.fields.0.remove(p);
                }
            } else {
                for p in differing {
                    conflicts.push(Cause {
                        reason: "FieldManagerConflict".into(),
                        message: format!(
                            "conflict with \"{}\"{}: {}",
                            e.manager,
                            if e.operation == "Apply" {
                                String::new()
                            } else {
                                format!(" using {}", e.api_version)
                            },
                            fields::display(&p)
                        ),
                        field: fields::display(&p),
                    });
                }
            }
        }
    }
    if !conflicts.is_empty() {
        return Err(conflicts);
    }
    let previously_mine = list
        .iter()
        .find(|e| mine(e))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let others = list
        .iter()
        .filter(|e| !mine(e))
        .fold(FieldSet::default(), |acc, e| acc.union(&e.fields));
    let mut result = live.cloned().unwrap_or_else(|| json!({}));
    let dropped = previously_mine
        .difference(&applied_fields)
        .difference(&others);
    // Remove the outermost dropped paths only: a list item goes whole, and its key fields
    // must still be there to find it.
    for p in &dropped.0 {
        let inside_dropped = (1..p.len()).any(|n| dropped.0.contains(&p[..n]));
        if !inside_dropped {
            fields::remove(&mut result, p);
        }
    }
    let mut applied_clean = applied.clone();
    if let Some(meta) = applied_clean
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
    {
        meta.remove("managedFields");
        meta.remove("resourceVersion");
    }
    merge_applied(&mut result, &applied_clean, None);
    let entry = ManagedEntry {
        manager: writer.manager.into(),
        operation: "Apply".into(),
        api_version: writer.api_version.into(),
        time: writer.time.into(),
        subresource: writer.subresource.map(str::to_string),
        fields: applied_fields,
    };
    // The entry keeps its place: a re-apply that changes nothing must store nothing.
    match list.iter().position(mine) {
        Some(i) => list[i] = entry,
        None => list.push(entry),
    }
    if result.get("metadata").is_none() {
        result["metadata"] = Value::Object(Map::new());
    }
    set_entries(&mut result, list);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(m: &str) -> Writer<'_> {
        Writer {
            manager: m,
            api_version: "apps/v1",
            time: "2026-01-01T00:00:00Z",
            subresource: None,
        }
    }

    fn cfg(replicas: i64, side: bool) -> Value {
        let mut cs = vec![json!({"name": "web", "image": "nginx"})];
        if side {
            cs.push(json!({"name": "side", "image": "busybox"}));
        }
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": replicas, "template": {"spec": {"containers": cs}}}})
    }

    #[test]
    fn ports_are_told_apart_by_number_and_protocol() {
        let svc = |ports: Value| {
            json!({"apiVersion": "v1", "kind": "Service",
                   "metadata": {"name": "dns", "namespace": "default"},
                   "spec": {"ports": ports}})
        };
        let both = svc(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]));
        let first = server_side_apply(None, &both, &writer("kubectl"), false).unwrap();
        assert_eq!(
            first["spec"]["ports"].as_array().unwrap().len(),
            2,
            "{first}"
        );
        let fields = first["metadata"]["managedFields"][0]["fieldsV1"].to_string();
        assert!(
            fields.contains(r#"k:{\"port\":53,\"protocol\":\"UDP\"}"#),
            "{fields}"
        );
        // Dropping the TCP port (protocol left to its default) removes only that one.
        let udp_only = svc(json!([{"name": "dns", "port": 53, "protocol": "UDP"}]));
        let second = server_side_apply(Some(&first), &udp_only, &writer("kubectl"), false).unwrap();
        assert_eq!(
            second["spec"]["ports"],
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}])
        );
        // A port without a protocol is the TCP one.
        let tcp_again = svc(json!([
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "dns-tcp", "port": 53}]));
        let third =
            server_side_apply(Some(&second), &tcp_again, &writer("kubectl"), false).unwrap();
        assert_eq!(
            third["spec"]["ports"].as_array().unwrap().len(),
            2,
            "{third}"
        );
    }

    #[test]
    fn reapplying_the_same_configuration_changes_nothing() {
        let first = server_side_apply(None, &cfg(2, true), &writer("kubectl"), false).unwrap();
        let second =
            server_side_apply(Some(&first), &cfg(2, true), &writer("kubectl"), false).unwrap();
        assert_eq!(first, second);
    }

    #[test]
    fn a_field_dropped_from_the_configuration_is_removed() {
        let first = server_side_apply(None, &cfg(2, true), &writer("kubectl"), false).unwrap();
        let second =
            server_side_apply(Some(&first), &cfg(2, false), &writer("kubectl"), false).unwrap();
        assert_eq!(
            second["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn another_managers_field_conflicts_unless_forced() {
        let first = server_side_apply(None, &cfg(2, false), &writer("kubectl"), false).unwrap();
        let mut scaled = first.clone();
        scaled["spec"]["replicas"] = json!(5);
        record_update(Some(&first), &mut scaled, &writer("kubectl-scale"));
        let err = server_side_apply(Some(&scaled), &cfg(2, false), &writer("kubectl"), false)
            .unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0].field, ".spec.replicas");
        assert!(
            err[0].message.contains("conflict with \"kubectl-scale\""),
            "{}",
            err[0].message
        );
        // Same value: no conflict.
        assert!(
            server_side_apply(Some(&scaled), &cfg(5, false), &writer("kubectl"), false).is_ok()
        );
        // Re-applying after another manager's update keeps the entries in their order, so
        // a re-apply that changes nothing stores nothing.
        let reapplied =
            server_side_apply(Some(&scaled), &cfg(5, false), &writer("kubectl"), false).unwrap();
        let again =
            server_side_apply(Some(&reapplied), &cfg(5, false), &writer("kubectl"), false).unwrap();
        assert_eq!(again, reapplied);
        let managers =
            |v: &Value| -> Vec<String> { entries(v).into_iter().map(|e| e.manager).collect() };
        assert_eq!(managers(&reapplied), managers(&scaled));
        let forced =
            server_side_apply(Some(&scaled), &cfg(2, false), &writer("kubectl"), true).unwrap();
        assert_eq!(forced["spec"]["replicas"], 2);
        assert!(
            entries(&forced)
                .iter()
                .all(|e| e.manager != "kubectl-scale")
        );
    }
}
