//! Deletes: preconditions, finalizers and `propagationPolicy` (objects with finalizers get a
//! `deletionTimestamp` and go when the last finalizer is removed), graceful deletion of pods
//! bound to a node (their agent stops them, then deletes them with `gracePeriodSeconds=0`),
//! namespaces that terminate (emptied by the namespace controller), and delete-collection.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::body::{self, Params};
use super::handlers::{load, name};
use super::resources;
use super::status::{self, ApiError};
use super::storage::Written;
use super::write::{self, meta, now};
use super::{SharedState, Target, json_response, list};

type Outcome = Result<Response, ApiError>;

pub(super) async fn delete(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let options: Value = if bytes.is_empty() {
        json!({})
    } else {
        body::decode(headers, bytes)?
    };
    delete_with(state, t, params, &options).await
}

/// Deletes the object `t` names with these `DeleteOptions` (already decoded): the delete
/// itself, and the last step of an eviction (`super::eviction`).
pub(super) async fn delete_with(
    state: SharedState,
    t: Target,
    mut params: Params,
    options: &Value,
) -> Outcome {
    let r = t.resource;
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
            && old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid)
        {
            return Err(ApiError::Conflict {
                resource: r.qualified(),
                name: name(&t).into(),
                detail: format!("Precondition failed: UID in precondition: {uid}"),
            });
        }
        if let Some(want) = options
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            && want != rev.to_string()
        {
            return Err(ApiError::stale(r, name(&t)));
        }
        if let Some(grace) = graceful_pod_grace(r.kind, &old, options, &params) {
            if let Some(marked) = mark_graceful(&old, grace) {
                if params.dry_run {
                    return Ok(json_response(StatusCode::OK, &marked));
                }
                match state
                    .storage
                    .update(r, t.namespace.as_deref(), name(&t), &marked, rev)
                    .await?
                {
                    Written::Ok(stored) => return Ok(json_response(StatusCode::OK, &stored)),
                    Written::CompareFailed => continue,
                }
            }
            return Ok(json_response(StatusCode::OK, &old));
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
        if let Some(f) = extra
            && !finalizers.iter().any(|x| x == f)
        {
            finalizers.push(json!(f));
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
                super::allocate::release(&state, r, &old, None).await;
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

/// The grace period of a graceful pod deletion, or `None` when the pod goes at once:
/// as in Kubernetes, a pod no node runs (unbound, or in a terminal phase) and a delete with
/// `gracePeriodSeconds=0` remove it immediately; any other pod is marked and its agent
/// stops it first. The period comes from the request, else `terminationGracePeriodSeconds`
/// (default 30).
fn graceful_pod_grace(kind: &str, pod: &Value, options: &Value, params: &Params) -> Option<i64> {
    if kind != "Pod" {
        return None;
    }
    let bound = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let terminal = matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || terminal {
        return None;
    }
    let grace = options
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or(params.grace_period_seconds)
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    (grace > 0).then_some(grace)
}

/// The pod with `deletionTimestamp` (now + grace) and `deletionGracePeriodSeconds` set, or
/// `None` when it is already terminating with a period no longer than `grace` (a second
/// delete may only shorten it).
fn mark_graceful(pod: &Value, grace: i64) -> Option<Value> {
    let current = pod
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64);
    let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
    if terminating && current.is_some_and(|c| c <= grace) {
        return None;
    }
    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
    let mut new = pod.clone();
    let m = meta(&mut new);
    m.insert(
        "deletionTimestamp".into(),
        json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string()),
    );
    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    Some(new)
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
    for r in resources::all().iter().filter(|r| r.namespaced) {
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
        if !params.dry_run
            && state
                .storage
                .delete(r, t.namespace.as_deref(), n, list::revision_of(object))
                .await?
                .is_some()
        {
            super::allocate::release(&state, r, object, None).await;
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: Option<&str>, grace: Option<i64>) -> Value {
        json!({"metadata": {"name": "web"},
               "spec": {"nodeName": node, "terminationGracePeriodSeconds": grace}})
    }

    #[test]
    fn bound_pods_terminate_gracefully_and_unbound_pods_go_at_once() {
        let none = Params::default();
        let empty = json!({});
        assert_eq!(
            graceful_pod_grace("Pod", &pod(None, None), &empty, &none),
            None
        );
        assert_eq!(
            graceful_pod_grace("Pod", &pod(Some("n1"), None), &empty, &none),
            Some(30)
        );
        assert_eq!(
            graceful_pod_grace("Pod", &pod(Some("n1"), Some(5)), &empty, &none),
            Some(5)
        );
        let forced = json!({"gracePeriodSeconds": 0});
        assert_eq!(
            graceful_pod_grace("Pod", &pod(Some("n1"), Some(5)), &forced, &none),
            None
        );
        let query = Params {
            grace_period_seconds: Some(2),
            ..Params::default()
        };
        assert_eq!(
            graceful_pod_grace("Pod", &pod(Some("n1"), None), &empty, &query),
            Some(2)
        );
        assert_eq!(
            graceful_pod_grace("ConfigMap", &pod(Some("n1"), None), &empty, &none),
            None
        );
        let mut done = pod(Some("n1"), None);
        done["status"] = json!({"phase": "Succeeded"});
        assert_eq!(graceful_pod_grace("Pod", &done, &empty, &none), None);
    }

    #[test]
    fn a_second_delete_only_shortens_the_grace_period() {
        let marked = mark_graceful(&pod(Some("n1"), None), 30).unwrap();
        assert_eq!(marked["metadata"]["deletionGracePeriodSeconds"], 30);
        assert!(marked["metadata"]["deletionTimestamp"].is_string());
        assert!(mark_graceful(&marked, 30).is_none());
        assert!(mark_graceful(&marked, 60).is_none());
        let shorter = mark_graceful(&marked, 3).unwrap();
        assert_eq!(shorter["metadata"]["deletionGracePeriodSeconds"], 3);
    }
}
