//! Turning a request body into the object to store: identity checks against the URL,
//! `generateName`, the server-set fields (uid, creationTimestamp, generation,
//! managedFields), defaults, and validation with the same validator as `berth validate`.

use serde_json::{Map, Value, json};

use super::resources::Resource;
use super::status::{ApiError, Cause};
use crate::apply::ssa::{self, Writer};
use crate::manifest::Severity;
use crate::manifest::defaults::apply_server_defaults;
use crate::manifest::validate::{ValidateOptions, Verdict, validate_value};

/// Now, as Kubernetes writes timestamps (RFC 3339, seconds, `Z`).
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub fn meta(v: &mut Value) -> &mut Map<String, Value> {
    if !v.get("metadata").is_some_and(Value::is_object) {
        v["metadata"] = json!({});
    }
    v["metadata"]
        .as_object_mut()
        .expect("metadata is an object")
}

pub fn name_of(v: &Value) -> Option<&str> {
    v.pointer("/metadata/name").and_then(Value::as_str)
}

const GENERATE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

fn generated_name(prefix: &str) -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5)
        .map(|_| GENERATE_ALPHABET[rng.gen_range(0..GENERATE_ALPHABET.len())] as char)
        .collect();
    format!("{prefix}{suffix}")
}

/// Checks `apiVersion`/`kind` and the namespace against the URL, filling them if absent.
pub fn check_identity(r: &Resource, ns: Option<&str>, v: &mut Value) -> Result<(), ApiError> {
    if !v.is_object() {
        return Err(ApiError::BadRequest(
            "the body must be a JSON object".into(),
        ));
    }
    for (key, want) in [("apiVersion", r.api_version), ("kind", r.kind)] {
        match v.get(key).and_then(Value::as_str) {
            None | Some("") => v[key] = json!(want),
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::BadRequest(format!(
                    "the {key} of the object ({got}) does not match the resource ({want})"
                )));
            }
        }
    }
    let m = meta(v);
    if r.namespaced {
        let url_ns = ns.unwrap_or("default");
        match m.get("namespace").and_then(Value::as_str) {
            Some(body_ns) if !body_ns.is_empty() && body_ns != url_ns => {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            _ => {
                m.insert("namespace".into(), json!(url_ns));
            }
        }
    } else {
        m.remove("namespace");
    }
    Ok(())
}

/// Fills in the server's defaults: Kubernetes' for built-in kinds; for a custom resource,
/// its schema's, after pruning the fields the schema does not specify.
fn fill_defaults(
    r: &Resource,
    v: &mut Value,
    field_validation: Option<&str>,
) -> Result<(), ApiError> {
    match super::crds::definition(r) {
        Some(d) => super::crds::prepare(&d, r, v, field_validation),
        None => {
            apply_server_defaults(v);
            Ok(())
        }
    }
}

/// Validates the object as `berth validate` would (a custom resource against its CRD's
/// schema). All errors become causes of one 422.
pub fn validate(r: &Resource, v: &Value, strict: bool) -> Result<(), ApiError> {
    if let Some(d) = super::crds::definition(r) {
        return super::crds::validate(&d, r, v);
    }
    let options = ValidateOptions {
        strict,
        ignore_unknown_kinds: false,
    };
    let (verdict, problems) = validate_value(v, options);
    if verdict == Verdict::Valid {
        return Ok(());
    }
    let causes = problems
        .iter()
        .filter(|p| p.severity == Severity::Error)
        .map(|p| Cause {
            reason: match p.rule {
                "required" | "missing-name" => "FieldValueRequired",
                "unknown-field" => "FieldValueNotSupported",
                _ => "FieldValueInvalid",
            }
            .into(),
            message: match &p.help {
                Some(h) => format!("{} ({h})", p.reason),
                None => p.reason.clone(),
            },
            field: p.field.clone().unwrap_or_default(),
        })
        .collect();
    Err(ApiError::Invalid {
        kind: r.kind.into(),
        group: r.group.into(),
        name: name_of(v).unwrap_or("").into(),
        causes,
    })
}

fn strict(field_validation: Option<&str>) -> bool {
    !matches!(field_validation, Some("Ignore") | Some("Warn"))
}

/// A new object from a create (or an apply that creates): returns it ready to store.
pub fn prepare_create(
    r: &Resource,
    ns: Option<&str>,
    mut v: Value,
    writer: &Writer<'_>,
    field_validation: Option<&str>,
    record_manager: bool,
) -> Result<Value, ApiError> {
    check_identity(r, ns, &mut v)?;
    let m = meta(&mut v);
    let has_name = m
        .get("name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    if !has_name && let Some(prefix) = m.get("generateName").and_then(Value::as_str) {
        let name = generated_name(prefix);
        m.insert("name".into(), json!(name));
    }
    for server_set in [
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "selfLink",
    ] {
        m.remove(server_set);
    }
    if r.has(super::resources::Subresource::Status) && r.kind != "Namespace" {
        // Status is written through the status subresource only.
        if let Some(o) = v.as_object_mut() {
            o.remove("status");
        }
    }
    if record_manager {
        if let Some(o) = v.pointer_mut("/metadata").and_then(Value::as_object_mut) {
            o.remove("managedFields");
        }
        ssa::record_update(None, &mut v, writer);
    }
    let m = meta(&mut v);
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(writer.time));
    if r.has_spec {
        m.insert("generation".into(), json!(1));
    }
    fill_defaults(r, &mut v, field_validation)?;
    validate(r, &v, strict(field_validation))?;
    super::event_limits::check(r, &v)?;
    super::crds::accept(r, &mut v, None)?;
    Ok(v)
}

/// The object an update of `old` to `new` stores; `None` when nothing would change.
/// `sub` is `Some("status")` for status writes: only `.status` is taken from `new`.
pub fn prepare_update(
    r: &Resource,
    old: &Value,
    mut new: Value,
    status_write: bool,
    writer: Option<&Writer<'_>>,
    field_validation: Option<&str>,
) -> Result<Option<Value>, ApiError> {
    let ns = old.pointer("/metadata/namespace").and_then(Value::as_str);
    check_identity(r, ns, &mut new)?;
    let name = name_of(old).unwrap_or("");
    match name_of(&new) {
        Some(n) if n == name => {}
        None | Some("") => {
            meta(&mut new).insert("name".into(), json!(name));
        }
        Some(_) => {
            return Err(ApiError::BadRequest(
                "the name of the object does not match the name on the URL".into(),
            ));
        }
    }
    if status_write {
        let status = new.get("status").cloned();
        new = old.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    } else if r.has(super::resources::Subresource::Status) && r.kind != "Namespace" {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    // Fields only the server sets.
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let m = meta(&mut new);
    for key in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "resourceVersion",
    ] {
        match old_meta.get(key) {
            Some(v) => {
                m.insert(key.into(), v.clone());
            }
            None => {
                m.remove(key);
            }
        }
    }
    if !m.contains_key("managedFields")
        && let Some(mf) = old_meta.get("managedFields")
    {
        m.insert("managedFields".into(), mf.clone());
    }
    fill_defaults(r, &mut new, field_validation)?;
    if !status_write && super::allocate::allocates(r) {
        super::allocate::keep_allocated(r.kind, old, &mut new);
    }
    if r.has_spec && old.get("spec") != new.get("spec") {
        let generation = old_meta
            .get("generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta(&mut new).insert("generation".into(), json!(generation + 1));
    }
    if let Some(w) = writer {
        ssa::record_update(Some(old), &mut new, w);
    }
    if same_ignoring_times(old, &new) {
        return Ok(None);
    }
    validate(r, &new, strict(field_validation))?;
    super::event_limits::check(r, &new)?;
    check_immutable(r, old, &new)?;
    super::crds::accept(r, &mut new, Some(old))?;
    Ok(Some(new))
}

/// Fields an update may not change: a Secret's `type` (Kubernetes refuses it too; a type
/// change would let a Secret skip the checks of its new type's required keys).
fn check_immutable(r: &Resource, old: &Value, new: &Value) -> Result<(), ApiError> {
    if r.kind != "Secret" || !r.group.is_empty() {
        return Ok(());
    }
    let type_of = |v: &Value| {
        v.get("type")
            .and_then(Value::as_str)
            .unwrap_or("Opaque")
            .to_string()
    };
    let (before, after) = (type_of(old), type_of(new));
    if before == after {
        return Ok(());
    }
    Err(ApiError::Invalid {
        kind: r.kind.into(),
        group: r.group.into(),
        name: name_of(old).unwrap_or("").into(),
        causes: vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {after:?}: field is immutable (it is {before:?}); delete the Secret and create it again to change its type"
            ),
            field: "type".into(),
        }],
    })
}

/// Whether two objects differ only in managedFields timestamps (a no-op write).
fn same_ignoring_times(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(mf) = v
            .pointer_mut("/metadata/managedFields")
            .and_then(Value::as_array_mut)
        {
            for e in mf.iter_mut().filter_map(Value::as_object_mut) {
                e.remove("time");
            }
        }
        v
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::api::resources::by_kind;

    fn w() -> Writer<'static> {
        Writer {
            manager: "test",
            api_version: "v1",
            time: "2026-01-01T00:00:00Z",
            subresource: None,
        }
    }

    #[test]
    fn create_sets_server_fields_and_generate_name() {
        let r = by_kind("v1", "ConfigMap").unwrap();
        let v = json!({"metadata": {"generateName": "cfg-", "uid": "mine"}, "data": {"a": "b"}});
        let out = prepare_create(r, Some("default"), v, &w(), None, true).unwrap();
        let name = name_of(&out).unwrap();
        assert!(name.starts_with("cfg-") && name.len() == 9, "{name}");
        assert_ne!(out["metadata"]["uid"], "mine");
        assert_eq!(out["metadata"]["namespace"], "default");
        assert_eq!(out["kind"], "ConfigMap");
        assert!(out["metadata"].get("generation").is_none());
        assert_eq!(out["metadata"]["managedFields"][0]["manager"], "test");
    }

    #[test]
    fn invalid_objects_get_every_cause() {
        let r = by_kind("v1", "ConfigMap").unwrap();
        let v = json!({"metadata": {"name": "Bad_Name"}, "data": {"a b": "x"}, "bogus": 1});
        let Err(ApiError::Invalid { causes, .. }) =
            prepare_create(r, Some("default"), v, &w(), None, true)
        else {
            panic!("expected 422");
        };
        assert!(causes.len() >= 3, "{causes:?}");
    }

    #[test]
    fn generation_bumps_on_spec_changes_only_and_noops_are_detected() {
        let r = by_kind("apps/v1", "Deployment").unwrap();
        let d = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchLabels": {"app": "w"}},
            "template": {"metadata": {"labels": {"app": "w"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
        let old = prepare_create(r, Some("default"), d.clone(), &w(), None, true).unwrap();
        assert!(
            prepare_update(r, &old, old.clone(), false, Some(&w()), None)
                .unwrap()
                .is_none()
        );
        let mut labelled = old.clone();
        labelled["metadata"]["labels"] = json!({"x": "y"});
        let out = prepare_update(r, &old, labelled, false, Some(&w()), None)
            .unwrap()
            .unwrap();
        assert_eq!(out["metadata"]["generation"], 1);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        let out = prepare_update(r, &old, scaled, false, Some(&w()), None)
            .unwrap()
            .unwrap();
        assert_eq!(out["metadata"]["generation"], 2);
    }
}
