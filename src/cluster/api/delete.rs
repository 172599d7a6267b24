//! Deletes: preconditions, finalizers and `propagationPolicy` (objects with finalizers get a
//! `deletionTimestamp` and go when the last finalizer is removed), namespaces that terminate
//! (emptied by the namespace controller), and delete-collection.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::{self, Params};
use super::handlers::{load, name};
use super::resources::RESOURCES;
use super::status::{self, ApiError};
use super::storage::Written;
use super::write::{self, meta, now};
use super::{SharedState, Target, json_response, list};

type Outcome = Result<Response, ApiError>;

pub(super) async fn delete(
    state: SharedState,
    t: Target,
    mut params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let r = t.resource;
    let options: Value = if bytes.is_empty() {
        json!({})
    } else {
        body::decode(headers, bytes)?
    };
    if let Some(p) = options.get("propagationPolicy").and_then(Value::as_str) {
        params.propagation_policy = Some(p.to_string());
    }
    if options
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty())
    {
        params.dry_run = true;
    }
    for _ in 0..8 {
        let (old, rev) = load(&state, &t).await?;
        if let Some(uid) = options
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
        {
            if old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Err(ApiError::Conflict {
                    resource: r.qualified(),
                    name: name(&t).into(),
                    detail: format!("Precondition failed: UID in precondition: {uid}"),
                });
            }
        }
        if let Some(want) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if want != rev.to_string() {
                return Err(ApiError::stale(r, name(&t)));
            }
        }
        let mut finalizers: Vec<Value> = old
            .pointer("/metadata/finalizers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let extra = match params.propagation_policy.as_deref() {
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            _ => None,
        };
        if let Some(f) = extra {
            if !finalizers.iter().any(|x| x == f) {
                finalizers.push(json!(f));
            }
        }
        if !finalizers.is_empty() {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok(json_response(StatusCode::OK, &old));
            }
            let mut new = old.clone();
            let m = meta(&mut new);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("finalizers".into(), Value::Array(finalizers));
            if params.dry_run {
                return Ok(json_response(StatusCode::OK, &new));
            }
            match state
                .storage
                .update(r, t.namespace.as_deref(), name(&t), &new, rev)
                .await?
            {
                Written::Ok(stored) => return Ok(json_response(StatusCode::OK, &stored)),
                Written::CompareFailed => continue,
            }
        }
        let uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        if params.dry_run {
            return Ok(json_response(
                StatusCode::OK,
                &status::success_status(r, name(&t), uid),
            ));
        }
        if r.kind == "Namespace" {
            return terminate_namespace(&state, &t, old, rev).await;
        }
        match state
            .storage
            .delete(r, t.namespace.as_deref(), name(&t), rev)
            .await?
        {
            Some(_) => {
                return Ok(json_response(
                    StatusCode::OK,
                    &status::success_status(r, name(&t), uid),
                ));
            }
            None => continue,
        }
    }
    Err(ApiError::stale(r, name(&t)))
}

/// Marks a namespace Terminating; the namespace controller
/// (`crate::cluster::controllers::namespace`) empties it and deletes it again, and that
/// second delete, of an empty Terminating namespace, removes it.
async fn terminate_namespace(state: &SharedState, t: &Target, old: Value, rev: i64) -> Outcome {
    let r = t.resource;
    if old.pointer("/metadata/deletionTimestamp").is_some() {
        if !is_empty(state, name(t)).await? {
            return Ok(json_response(StatusCode::OK, &old));
        }
        let uid = old
            .pointer("/metadata/uid")
            .and_then(Value::as_str)
            .unwrap_or("");
        return match state.storage.delete(r, None, name(t), rev).await? {
            Some(_) => Ok(json_response(
                StatusCode::OK,
                &status::success_status(r, name(t), uid),
            )),
            None => Err(ApiError::stale(r, name(t))),
        };
    }
    let mut new = old;
    meta(&mut new).insert("deletionTimestamp".into(), json!(now()));
    new["status"] = json!({"phase": "Terminating"});
    match state.storage.update(r, None, name(t), &new, rev).await? {
        Written::Ok(stored) => Ok(json_response(StatusCode::OK, &stored)),
        Written::CompareFailed => Err(ApiError::stale(r, name(t))),
    }
}

/// Whether a namespace holds no object any more.
async fn is_empty(state: &SharedState, ns: &str) -> Result<bool, ApiError> {
    for r in RESOURCES.iter().filter(|r| r.namespaced) {
        if !state
            .storage
            .list(r, Some(ns), 1, None, None)
            .await?
            .items
            .is_empty()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

pub(super) async fn delete_collection(state: SharedState, t: Target, params: Params) -> Outcome {
    let r = t.resource;
    let items = list::matching(&state, &t, &params).await?;
    for object in &items {
        let Some(n) = write::name_of(object) else {
            continue;
        };
        if !params.dry_run {
            state
                .storage
                .delete(r, t.namespace.as_deref(), n, list::revision_of(object))
                .await?;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}
