//! The verbs on one object: get, create, update, patch (all four kinds), and the scale
//! subresource, with the helpers the other verbs share ([`load`], [`commit`]). Deletes are in
//! [`super::delete`], bindings in [`super::binding`], lists and watches in [`super::list`] and
//! [`super::watch`]; [`super::dispatch`] routes a request to one of them.

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::{self, Params};
use super::patch::{self, PatchType};
use super::resources::{Resource, Subresource};
use super::status::{self, ApiError};
use super::storage::Written;
use super::write::{self, now};
use super::{SharedState, Target, json_response};
use crate::apply::ssa::{self, Writer};

pub(super) type Outcome = Result<Response, ApiError>;

/// The `fieldManager` of a write: the parameter, else the user agent's program name.
pub(super) fn manager(params: &Params, headers: &HeaderMap) -> String {
    if let Some(m) = &params.field_manager {
        return m.clone();
    }
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|ua| ua.split('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("unknown")
        .to_string()
}

pub(super) fn name(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

pub(super) async fn load(state: &SharedState, t: &Target) -> Result<(Value, i64), ApiError> {
    state
        .storage
        .get(t.resource, t.namespace.as_deref(), name(t))
        .await?
        .ok_or_else(|| ApiError::not_found(t.resource, name(t)))
}

/// Where a Scale reads and writes replicas: `.spec.replicas` and `.status.replicas`, or a
/// custom resource's `specReplicasPath` and `statusReplicasPath`.
fn replicas_paths(r: &Resource) -> (String, String) {
    match super::crds::scale_paths(r) {
        Some(p) => (p.spec_replicas, p.status_replicas),
        None => ("/spec/replicas".into(), "/status/replicas".into()),
    }
}

/// `autoscaling/v1` Scale view of a Deployment, ReplicaSet, StatefulSet or
/// ReplicationController (whose selector is a plain map of labels), or of a custom resource
/// with a scale subresource (its selector from `labelSelectorPath`, already a string).
fn scale_of(r: &Resource, object: &Value) -> Value {
    let m = &object["metadata"];
    let custom = super::crds::scale_paths(r);
    let (spec_path, status_path) = replicas_paths(r);
    let custom_selector = custom
        .and_then(|p| p.selector)
        .and_then(|s| object.pointer(&s).and_then(Value::as_str).map(String::from));
    let selector = object
        .pointer("/spec/selector/matchLabels")
        .or_else(|| {
            object
                .pointer("/spec/selector")
                .filter(|s| s.get("matchLabels").is_none() && s.get("matchExpressions").is_none())
        })
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let selector = custom_selector.unwrap_or(selector);
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
            "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"],
        },
        "spec": {"replicas": object.pointer(&spec_path).cloned().unwrap_or(json!(1))},
        "status": {
            "replicas": object.pointer(&status_path).cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

fn render(t: &Target, object: &Value) -> Value {
    if t.sub == Some(Subresource::Scale) {
        scale_of(t.resource, object)
    } else {
        object.clone()
    }
}

pub(super) async fn get(state: SharedState, t: Target, headers: &HeaderMap) -> Outcome {
    let (object, _) = load(&state, &t).await?;
    if t.sub.is_none() && super::table::wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &super::table::table(t.resource, &[object], &json!({})),
        ));
    }
    Ok(json_response(StatusCode::OK, &render(&t, &object)))
}

async fn namespace_exists(
    state: &SharedState,
    r: &Resource,
    ns: Option<&str>,
) -> Result<(), ApiError> {
    let (true, Some(ns)) = (r.namespaced, ns) else {
        return Ok(());
    };
    let namespaces = super::resources::by_kind("v1", "Namespace").expect("namespaces are served");
    match state.storage.get(namespaces, None, ns).await? {
        Some((n, _)) if n.pointer("/metadata/deletionTimestamp").is_some() => {
            Err(ApiError::Forbidden {
                user: String::new(),
                verb: "create".into(),
                resource: r.plural.into(),
                group: r.group.into(),
                namespace: Some(format!("{ns} (it is being terminated)")),
            })
        }
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(namespaces, ns)),
    }
}

pub(super) async fn create(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let r = t.resource;
    let body = body::decode(headers, bytes)?;
    let time = now();
    let manager = manager(&params, headers);
    let writer = Writer {
        manager: &manager,
        api_version: r.api_version,
        time: &time,
        subresource: None,
    };
    let ns = t.namespace.as_deref().or(r.namespaced.then_some("default"));
    let mut object = write::prepare_create(
        r,
        ns,
        body,
        &writer,
        params.field_validation.as_deref(),
        true,
    )?;
    let name = write::name_of(&object)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::Invalid {
            kind: r.kind.into(),
            group: r.group.into(),
            name: String::new(),
            causes: vec![status::Cause {
                reason: "FieldValueRequired".into(),
                message: "name or generateName is required".into(),
                field: "metadata.name".into(),
            }],
        })?
        .to_string();
    namespace_exists(&state, r, ns).await?;
    let _held = super::allocate::reserve(&state, r, None, &mut object, params.dry_run).await?;
    if params.dry_run {
        return Ok(json_response(StatusCode::CREATED, &object));
    }
    match state.storage.create(r, ns, &name, &object).await? {
        Written::Ok(stored) => Ok(json_response(StatusCode::CREATED, &stored)),
        Written::CompareFailed => Err(ApiError::AlreadyExists {
            resource: r.qualified(),
            group: r.group.into(),
            name,
        }),
    }
}

/// Stores `new` over `old` (read at `rev`), deleting instead when the last finalizer of an
/// object being deleted is gone.
pub(super) async fn commit(
    state: &SharedState,
    t: &Target,
    new: Value,
    rev: i64,
    dry_run: bool,
) -> Result<Option<Value>, ApiError> {
    let r = t.resource;
    let ns = t.namespace.as_deref();
    let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    if dry_run {
        return Ok(Some(new));
    }
    if finalized {
        return match state.storage.delete(r, ns, name(t), rev).await? {
            Some(_) => Ok(Some(new)),
            None => Ok(None),
        };
    }
    match state.storage.update(r, ns, name(t), &new, rev).await? {
        Written::Ok(stored) => Ok(Some(stored)),
        Written::CompareFailed => Ok(None),
    }
}

fn requested_version(v: &Value) -> Option<i64> {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap_or(-1))
}

pub(super) async fn update(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let r = t.resource;
    let body = body::decode(headers, bytes)?;
    let (old, rev) = load(&state, &t).await?;
    let wanted = requested_version(&body);
    if wanted.is_some_and(|w| w != rev) {
        return Err(ApiError::stale(r, name(&t)));
    }
    let new = if t.sub == Some(Subresource::Scale) {
        let replicas = body
            .pointer("/spec/replicas")
            .cloned()
            .ok_or_else(|| ApiError::BadRequest("a Scale needs spec.replicas".into()))?;
        let mut n = old.clone();
        super::crds::set_at(&mut n, &replicas_paths(r).0, replicas);
        n
    } else {
        body
    };
    write_over(&state, &t, &params, headers, old, rev, new, None).await
}

/// Runs an update of `old` to `new` through preparation and a guarded commit.
#[allow(clippy::too_many_arguments)]
async fn write_over(
    state: &SharedState,
    t: &Target,
    params: &Params,
    headers: &HeaderMap,
    old: Value,
    rev: i64,
    new: Value,
    applied_by: Option<&str>,
) -> Outcome {
    let r = t.resource;
    let time = now();
    let manager = manager(params, headers);
    let sub = t.sub.map(Subresource::name);
    let writer = Writer {
        manager: &manager,
        api_version: r.api_version,
        time: &time,
        subresource: sub,
    };
    let status_write = t.sub == Some(Subresource::Status);
    let prepared = write::prepare_update(
        r,
        &old,
        new,
        status_write,
        applied_by.is_none().then_some(&writer),
        params.field_validation.as_deref(),
    )?;
    let Some(mut new) = prepared else {
        return Ok(json_response(StatusCode::OK, &render(t, &old)));
    };
    let _held = match t.sub {
        None => super::allocate::reserve(state, r, Some(&old), &mut new, params.dry_run).await?,
        Some(_) => None,
    };
    let gone = new.pointer("/metadata/deletionTimestamp").is_some()
        && new
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
    match commit(state, t, new, rev, params.dry_run).await? {
        Some(stored) => {
            if !params.dry_run {
                let kept = (!gone).then_some(&stored);
                super::allocate::release(state, r, &old, kept).await;
            }
            Ok(json_response(StatusCode::OK, &render(t, &stored)))
        }
        None => Err(ApiError::stale(r, name(t))),
    }
}

pub(super) async fn patch_object(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let r = t.resource;
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchType::from_content_type(ct).ok_or_else(|| ApiError::UnsupportedMediaType {
        accepted: PatchType::ACCEPTED.into(),
    })?;
    if kind == PatchType::Strategic && super::crds::is_custom(r) {
        // Custom resources have no patch strategies to merge by, so Kubernetes refuses these.
        return Err(ApiError::UnsupportedMediaType {
            accepted: "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml".into(),
        });
    }
    let body = body::decode(headers, bytes)?;
    if kind == PatchType::Apply && params.field_manager.is_none() {
        return Err(ApiError::BadRequest(
            "PATCH, application/apply-patch+yaml requires fieldManager parameter".into(),
        ));
    }
    let explicit = if kind == PatchType::Json {
        None
    } else {
        requested_version(&body)
    };
    // A patch without a resourceVersion is retried on conflicts, as Kubernetes does.
    for _ in 0..8 {
        let loaded = state
            .storage
            .get(r, t.namespace.as_deref(), name(&t))
            .await?;
        let Some((old, rev)) = loaded else {
            if kind == PatchType::Apply && t.sub.is_none() {
                return apply_create(&state, &t, &params, body).await;
            }
            return Err(ApiError::not_found(r, name(&t)));
        };
        if explicit.is_some_and(|w| w != rev) {
            return Err(ApiError::stale(r, name(&t)));
        }
        let mut view = render(&t, &old);
        let applied_by = match kind {
            PatchType::Merge => {
                patch::json_merge(&mut view, &body);
                None
            }
            PatchType::Json => {
                patch::json_patch(&mut view, &body)?;
                None
            }
            PatchType::Strategic => {
                patch::strategic_merge(&mut view, &body)?;
                None
            }
            PatchType::Apply => {
                let time = now();
                let manager = params.field_manager.clone().unwrap_or_default();
                let writer = Writer {
                    manager: &manager,
                    api_version: r.api_version,
                    time: &time,
                    subresource: t.sub.map(Subresource::name),
                };
                view = ssa::server_side_apply(Some(&view), &body, &writer, params.force).map_err(
                    |causes| ApiError::ApplyConflict {
                        resource: r.qualified(),
                        name: name(&t).into(),
                        causes,
                    },
                )?;
                Some("apply")
            }
        };
        let new = if t.sub == Some(Subresource::Scale) {
            let mut n = old.clone();
            let replicas = view.pointer("/spec/replicas").cloned().unwrap_or(json!(1));
            super::crds::set_at(&mut n, &replicas_paths(r).0, replicas);
            n
        } else {
            view
        };
        match write_over(&state, &t, &params, headers, old, rev, new, applied_by).await {
            Err(ApiError::Conflict { .. }) if explicit.is_none() => continue,
            other => return other,
        }
    }
    Err(ApiError::stale(r, name(&t)))
}

/// Server-side apply of an object that does not exist yet.
async fn apply_create(state: &SharedState, t: &Target, params: &Params, body: Value) -> Outcome {
    let r = t.resource;
    let time = now();
    let manager = params.field_manager.clone().unwrap_or_default();
    let writer = Writer {
        manager: &manager,
        api_version: r.api_version,
        time: &time,
        subresource: None,
    };
    let mut applied = body;
    write::check_identity(r, t.namespace.as_deref(), &mut applied)?;
    if write::name_of(&applied) != Some(name(t)) {
        return Err(ApiError::BadRequest(
            "the name of the object does not match the name on the URL".into(),
        ));
    }
    let merged =
        ssa::server_side_apply(None, &applied, &writer, params.force).map_err(|causes| {
            ApiError::ApplyConflict {
                resource: r.qualified(),
                name: name(t).into(),
                causes,
            }
        })?;
    let mut object = write::prepare_create(
        r,
        t.namespace.as_deref(),
        merged,
        &writer,
        params.field_validation.as_deref(),
        false,
    )?;
    namespace_exists(state, r, t.namespace.as_deref()).await?;
    let _held = super::allocate::reserve(state, r, None, &mut object, params.dry_run).await?;
    if params.dry_run {
        return Ok(json_response(StatusCode::CREATED, &object));
    }
    match state
        .storage
        .create(r, t.namespace.as_deref(), name(t), &object)
        .await?
    {
        Written::Ok(stored) => Ok(json_response(StatusCode::CREATED, &stored)),
        Written::CompareFailed => Err(ApiError::stale(r, name(t))),
    }
}
