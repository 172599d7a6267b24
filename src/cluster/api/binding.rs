//! `pods/binding`: assigns a pending pod to a node. The handler binds one pod per request;
//! [`bind_pods`] binds many at once for the scheduler in the same process, with the same
//! checks, result and managedFields per pod, but one store read for all of them, their writes
//! in one group commit, and no HTTP request or JSON body per pod.

use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::body::{self, Params};
use super::handlers::{Outcome, commit, load, manager, name};
use super::resources::{Resource, by_kind};
use super::status::ApiError;
use super::write::now;
use super::{SharedState, Target, json_response};
use crate::apply::ssa::{self, Writer};

/// One pod to place on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub namespace: String,
    pub pod: String,
    pub node: String,
}

/// `POST …/pods/NAME/binding`.
pub(super) async fn bind(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
    bytes: &[u8],
) -> Outcome {
    let body = body::decode(headers, bytes)?;
    let node = body
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::BadRequest("a Binding needs target.name".into()))?
        .to_string();
    let pod_target = Target {
        sub: None,
        ..t.clone()
    };
    let (old, rev) = load(&state, &pod_target).await?;
    let time = now();
    let manager = manager(&params, headers);
    let new = bound(t.resource, name(&t), &old, &node, &writer(&manager, &time))?;
    if commit(&state, &pod_target, new, rev, params.dry_run)
        .await?
        .is_none()
    {
        return Err(ApiError::stale(t.resource, name(&t)));
    }
    Ok(json_response(StatusCode::CREATED, &success()))
}

fn writer<'a>(manager: &'a str, time: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: "v1",
        time,
        subresource: Some("binding"),
    }
}

fn success() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})
}

/// The pod `old` with `spec.nodeName` set to `node` and the change recorded under the
/// writer's `binding` entry, or why it cannot be bound.
fn bound(
    r: &Resource,
    pod: &str,
    old: &Value,
    node: &str,
    writer: &Writer<'_>,
) -> Result<Value, ApiError> {
    match old.pointer("/spec/nodeName").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => {
            return Err(ApiError::Conflict {
                resource: r.qualified(),
                name: pod.into(),
                detail: format!("pod {pod} is already assigned to node \"{n}\""),
            });
        }
        _ => {}
    }
    crate::manifest::names::dns1123_subdomain(node)
        .map_err(|e| ApiError::BadRequest(format!("target.name {node:?}: {e}")))?;
    // A binding sets spec.nodeName and nothing else on a pod that was validated when it was
    // written, so it skips re-validating the whole pod (as Kubernetes' binding does): the
    // scheduler binds thousands of pods a second through here.
    let mut new = old.clone();
    new["spec"]["nodeName"] = json!(node);
    ssa::record_update(Some(old), &mut new, writer);
    Ok(new)
}

/// Binds each pod to its node as `POST …/pods/NAME/binding` by `manager` would, and returns
/// one result per binding, in order: a 404 for a pod that is gone, a 409 for one already bound
/// or changed between the read and the write. Each result is counted in the request metrics
/// as a binding request.
pub async fn bind_pods(
    state: &SharedState,
    manager: &str,
    bindings: &[Binding],
) -> Vec<Result<(), ApiError>> {
    let start = Instant::now();
    let r = by_kind("v1", "Pod").expect("pods are served");
    let targets: Vec<Target> = bindings
        .iter()
        .map(|b| Target {
            resource: r,
            namespace: Some(b.namespace.clone()),
            name: Some(b.pod.clone()),
            sub: None,
        })
        .collect();
    let keys: Vec<String> = bindings
        .iter()
        .map(|b| r.key(Some(&b.namespace), &b.pod))
        .collect();
    let results = match state.storage.store.get_many(&keys).await {
        Ok(stored) => {
            let time = now();
            let writer = writer(manager, &time);
            let writes = stored
                .into_iter()
                .zip(bindings)
                .zip(&targets)
                .map(|((kv, b), t)| {
                    let new = kv
                        .ok_or_else(|| ApiError::not_found(r, &b.pod))
                        .and_then(|kv| {
                            let rev = kv.mod_revision;
                            let old = state.storage.decode(r, &kv)?;
                            Ok((bound(r, &b.pod, &old, &b.node, &writer)?, rev))
                        });
                    async move {
                        let (new, rev) = new?;
                        match commit(state, t, new, rev, false).await? {
                            Some(_) => Ok(()),
                            None => Err(ApiError::stale(r, &b.pod)),
                        }
                    }
                });
            // Every write is queued before the first one is awaited, so they share a commit.
            futures::future::join_all(writes).await
        }
        Err(e) => bindings
            .iter()
            .map(|b| {
                Err(ApiError::Internal(format!(
                    "reading pod {}/{}: {e}",
                    b.namespace, b.pod
                )))
            })
            .collect(),
    };
    let elapsed = start.elapsed();
    for result in &results {
        let code = match result {
            Ok(()) => StatusCode::CREATED,
            Err(e) => e.code(),
        };
        state
            .metrics
            .observe("create", "pods/binding", code.as_u16(), elapsed);
    }
    results
}
