//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
//! strategic merge patch, which merges the lists users patch (containers, ports, env,
//! volumes, …) by their merge keys instead of replacing them. Server-side apply is in
//! [`crate::apply::ssa`]; both take the merge keys from [`crate::apply::ssa::lists`].

use serde_json::{Map, Value};

use super::status::ApiError;
use crate::apply::ssa::lists::{is_set_list, merge_key};

/// The patch types the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    pub const ACCEPTED: &'static str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
}

pub fn json_merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &ops).map_err(|e| ApiError::Invalid {
        kind: String::new(),
        group: String::new(),
        name: String::new(),
        causes: vec![super::status::Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("the JSON patch cannot be applied: {e}"),
            field: String::new(),
        }],
    })
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p),
        _ => {
            *target = patch.clone();
            Ok(())
        }
    }
}

fn merge_map(target: &mut Map<String, Value>, patch: &Map<String, Value>) -> Result<(), ApiError> {
    if patch.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut clean = patch.clone();
        clean.remove("$patch");
        *target = clean;
        return Ok(());
    }
    let retain: Option<Vec<String>> = patch.get("$retainKeys").and_then(Value::as_array).map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    });
    for (key, pv) in patch {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" || key == "$patch" {
            continue;
        }
        if let Some(field) = key.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(gone)) = (
                target.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|v| !gone.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            target.remove(key);
            continue;
        }
        match (target.get_mut(key), pv) {
            (Some(tv @ Value::Object(_)), Value::Object(pm)) => {
                if pm.get("$patch").and_then(Value::as_str) == Some("delete") {
                    target.remove(key);
                } else if let Value::Object(tm) = tv {
                    merge_map(tm, pm)?;
                }
            }
            (Some(Value::Array(tl)), Value::Array(pl)) => merge_list(key, tl, pl)?,
            (None, Value::Object(pm)) => {
                // A new map: merged into an empty one, so `null` (delete) entries vanish.
                let mut fresh = Map::new();
                merge_map(&mut fresh, pm)?;
                target.insert(key.clone(), Value::Object(fresh));
            }
            _ => {
                let mut v = pv.clone();
                strip_directives(&mut v);
                target.insert(key.clone(), v);
            }
        }
    }
    if let Some(keep) = retain {
        target.retain(|k, _| keep.contains(k));
    }
    Ok(())
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => {
            a.retain(|item| item.get("$patch").is_none());
            a.iter_mut().for_each(strip_directives);
        }
        _ => {}
    }
}

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<(), ApiError> {
    if is_set_list(field) {
        for v in patch {
            if !target.contains(v) {
                target.push(v.clone());
            }
        }
        return Ok(());
    }
    let sample = patch.iter().find(|v| v.get("$patch").is_none());
    let Some(mk) = merge_key(field, sample.or(patch.first())) else {
        // Atomic list: replaced whole, as Kubernetes does for lists without a merge key.
        let mut v = Value::Array(patch.to_vec());
        strip_directives(&mut v);
        if let Value::Array(a) = v {
            *target = a;
        }
        return Ok(());
    };
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        *target = patch
            .iter()
            .filter(|p| p.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(());
    }
    for item in patch {
        let Some(key_value) = item.get(mk) else {
            return Err(ApiError::BadRequest(format!(
                "strategic merge patch: an item of `{field}` has no merge key `{mk}`"
            )));
        };
        let pos = target.iter().position(|t| t.get(mk) == Some(key_value));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                target.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                if let (Some(t), Some(p)) = (target[i].as_object_mut(), item.as_object()) {
                    merge_map(t, p)?;
                }
            }
            (None, false) => {
                let mut v = item.clone();
                strip_directives(&mut v);
                target.push(v);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy() -> Value {
        json!({"spec": {"replicas": 1, "template": {"spec": {"containers": [
            {"name": "web", "image": "nginx:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
            {"name": "side", "image": "busybox"}
        ]}}}})
    }

    #[test]
    fn strategic_patch_merges_containers_by_name_and_env_by_name() {
        let mut d = deploy();
        strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"name": "web", "image": "nginx:2", "env": [{"name": "B", "value": "2"}]}]}}}}),
        )
        .unwrap();
        let cs = &d["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2, "the sidecar stays");
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["ports"][0]["containerPort"], 80);
    }

    #[test]
    fn strategic_patch_deletes_items_and_fields() {
        let mut d = deploy();
        strategic_merge(
            &mut d,
            &json!({"spec": {"replicas": null, "template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}),
        )
        .unwrap();
        assert!(d["spec"].get("replicas").is_none());
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn merge_patch_replaces_lists_and_json_patch_applies_ops() {
        let mut d = deploy();
        json_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [{"name": "only", "image": "x"}]}}}}),
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"]
                .as_array()
                .unwrap()
                .len(),
            1
        );
        json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 5);
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
