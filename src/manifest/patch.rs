//! The two patch formats every part of berth applies the same way: Kubernetes' strategic
//! merge patch, which merges the lists users patch (containers, ports, env, volumes, …) by
//! their merge keys instead of replacing them, and JSON patch (RFC 6902). Pure: the API
//! server's PATCH and kustomize's `patches` both call these.

use serde_json::{Map, Value};

use super::lists::{is_set_list, merge_key};

/// Why a patch cannot be applied; the message says what and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatchError(pub String);

/// Applies a JSON patch (RFC 6902), given as its JSON array of operations.
pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|e| JsonPatchError::Invalid(e.to_string()))?;
    json_patch::patch(target, &ops).map_err(|e| JsonPatchError::Failed(e.to_string()))
}

/// Why a JSON patch failed: not a list of operations, or an operation that does not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonPatchError {
    #[error("invalid JSON patch: {0}")]
    Invalid(String),
    #[error("the JSON patch cannot be applied: {0}")]
    Failed(String),
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => merge_map(t, p),
        _ => {
            *target = patch.clone();
            Ok(())
        }
    }
}

fn merge_map(
    target: &mut Map<String, Value>,
    patch: &Map<String, Value>,
) -> Result<(), PatchError> {
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

fn merge_list(field: &str, target: &mut Vec<Value>, patch: &[Value]) -> Result<(), PatchError> {
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
            return Err(PatchError(format!(
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
        let err = strategic_merge(
            &mut d,
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
        )
        .unwrap_err();
        assert!(err.0.contains("no merge key `name`"), "{err}");
    }

    #[test]
    fn json_patch_applies_ops_and_says_why_it_cannot() {
        let mut d = deploy();
        json_patch(
            &mut d,
            &json!([{"op": "replace", "path": "/spec/replicas", "value": 5}]),
        )
        .unwrap();
        assert_eq!(d["spec"]["replicas"], 5);
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])),
            Err(JsonPatchError::Failed(_))
        ));
        assert!(matches!(
            json_patch(&mut d, &json!({"op": "remove"})),
            Err(JsonPatchError::Invalid(_))
        ));
    }
}
