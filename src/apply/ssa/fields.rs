//! Field sets: which fields of an object a manager owns, in the `FieldsV1` form Kubernetes
//! stores in `metadata.managedFields` (`{"f:spec":{"f:replicas":{}}}`, list items by key as
//! `k:{"name":"web"}`, set items as `v:"x"`). Server-side apply and update tracking use them.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::manifest::lists::{is_set_list, list_map_keys, list_map_value};

/// A field path, each segment already encoded (`f:spec`, `k:{"name":"web"}`, `v:"x"`).
pub type FieldPath = Vec<String>;

/// A set of owned field paths: leaves (scalars, atomic lists, empty maps) and the list items
/// themselves (`k:`/`v:` paths).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<FieldPath>);

/// Top-level and metadata fields that identify an object or are set by the server; nobody
/// owns them.
fn unowned(path: &[String]) -> bool {
    match path {
        [one] => matches!(one.as_str(), "f:apiVersion" | "f:kind" | "f:status"),
        [m, f] if m == "f:metadata" => matches!(
            f.as_str(),
            "f:name"
                | "f:namespace"
                | "f:uid"
                | "f:resourceVersion"
                | "f:generation"
                | "f:creationTimestamp"
                | "f:managedFields"
                | "f:deletionTimestamp"
                | "f:deletionGracePeriodSeconds"
                | "f:selfLink"
        ),
        _ => false,
    }
}

fn key_segment(item: &Value, keys: &[&str]) -> Option<String> {
    let mut m = Map::new();
    for key in keys {
        m.insert(key.to_string(), list_map_value(item, key)?.clone());
    }
    Some(format!("k:{}", Value::Object(m)))
}

impl FieldSet {
    /// The fields an object (or an applied configuration) sets.
    pub fn of(value: &Value) -> FieldSet {
        let mut set = FieldSet::default();
        walk(value, &mut Vec::new(), None, &mut set.0);
        set.0.retain(|p| !unowned(p) && !p.is_empty());
        set
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, p: &FieldPath) -> bool {
        self.0.contains(p)
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.intersection(&other.0).cloned().collect())
    }

    /// As `FieldsV1` JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for seg in path {
                node = node
                    .entry(seg.clone())
                    .or_insert_with(|| Value::Object(Map::new()))
                    .as_object_mut()
                    .expect("field set nodes are maps");
            }
            if path.last().is_some_and(|s| s.starts_with("k:")) {
                node.insert(".".into(), Value::Object(Map::new()));
            }
        }
        Value::Object(root)
    }

    /// From `FieldsV1` JSON (as stored in `managedFields`).
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        fn go(v: &Value, path: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
            let Some(m) = v.as_object() else { return };
            if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
                out.insert(path.clone());
            }
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                path.push(k.clone());
                go(child, path, out);
                path.pop();
            }
        }
        let mut out = BTreeSet::new();
        go(v, &mut Vec::new(), &mut out);
        FieldSet(out)
    }
}

fn walk(v: &Value, path: &mut FieldPath, field: Option<&str>, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                path.push(format!("f:{k}"));
                walk(child, path, Some(k), out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let field = field.unwrap_or("");
            if is_set_list(field) {
                for item in items {
                    path.push(format!("v:{item}"));
                    out.insert(path.clone());
                    path.pop();
                }
                return;
            }
            let keys = list_map_keys(field, items.first());
            let keyed: Option<Vec<String>> =
                keys.and_then(|k| items.iter().map(|i| key_segment(i, k)).collect());
            match keyed {
                Some(segments) => {
                    for (item, seg) in items.iter().zip(segments) {
                        path.push(seg);
                        out.insert(path.clone());
                        walk(item, path, None, out);
                        path.pop();
                    }
                }
                None => {
                    out.insert(path.clone());
                }
            }
        }
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at a field path, if present.
pub fn get<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for seg in path {
        cur = step(cur, seg)?;
    }
    Some(cur)
}

fn step<'a>(v: &'a Value, seg: &str) -> Option<&'a Value> {
    if let Some(f) = seg.strip_prefix("f:") {
        return v.get(f);
    }
    let items = v.as_array()?;
    items.iter().find(|item| item_matches(item, seg))
}

fn item_matches(item: &Value, seg: &str) -> bool {
    if let Some(k) = seg.strip_prefix("k:") {
        let Ok(Value::Object(key)) = serde_json::from_str::<Value>(k) else {
            return false;
        };
        key.iter()
            .all(|(kk, kv)| list_map_value(item, kk) == Some(kv))
    } else if let Some(val) = seg.strip_prefix("v:") {
        serde_json::from_str::<Value>(val).is_ok_and(|want| *item == want)
    } else {
        false
    }
}

/// Removes the field (or list item) at `path`, if present.
pub fn remove(v: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = v;
    for seg in parent {
        let next = if let Some(f) = seg.strip_prefix("f:") {
            cur.get_mut(f)
        } else {
            cur.as_array_mut()
                .and_then(|items| items.iter_mut().find(|i| item_matches(i, seg)))
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(items) = cur.as_array_mut() {
        items.retain(|i| !item_matches(i, last));
    }
}

/// `.spec.template.spec.containers[name="web"].image`: how conflicts name a field.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(f) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(f);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let inner: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(a, b)| format!("{a}={b}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", inner.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn field_sets_round_trip_through_fields_v1_with_keyed_list_items() {
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "nginx", "args": ["-x"]}]}}}});
        let set = FieldSet::of(&obj);
        let v1 = set.to_fields_v1();
        assert!(
            v1["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"web\"}"]["."]
                .is_object()
        );
        assert!(v1["f:metadata"]["f:finalizers"]["v:\"a\""].is_object());
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
        let image: FieldPath = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"web\"}",
            "f:image",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert!(set.contains(&image));
        assert_eq!(get(&obj, &image), Some(&json!("nginx")));
        assert_eq!(
            display(&image),
            ".spec.template.spec.containers[name=\"web\"].image"
        );
        let mut copy = obj.clone();
        remove(&mut copy, &image[..5]);
        assert_eq!(copy["spec"]["template"]["spec"]["containers"], json!([]));
    }
}
