//! The controllers' and the scheduler's way to write: requests to the API router in the same
//! process, with no socket, TLS or HTTP parsing in between.
//!
//! Controllers write through the API layer rather than straight to the store so every write
//! gets the same validation, defaults, managedFields, finalizer and resourceVersion checks as
//! a kubectl write, and watchers see exactly what a client would have written. Calling the
//! router in-process keeps that at the cost of one JSON round trip (microseconds), instead of
//! an HTTPS request (a TLS record, a connection from a pool, hyper on both sides).

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::cluster::api::binding::{Binding, bind_pods};
use crate::cluster::api::resources::{Resource, by_kind};
use crate::cluster::api::{SharedState, router};
use crate::cluster::events::{self, Correlator, EventSink};

/// A request the API refused, or could not answer.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{method} {path}: {code} {reason}: {message}")]
pub struct CallError {
    pub method: &'static str,
    pub path: String,
    pub code: u16,
    pub reason: String,
    pub message: String,
}

impl CallError {
    pub fn is_not_found(&self) -> bool {
        self.code == 404
    }
    pub fn is_conflict(&self) -> bool {
        self.code == 409
    }
}

/// The URL path of a resource collection (`name` None) or one object, or its subresource.
pub fn path(
    r: &Resource,
    namespace: Option<&str>,
    name: Option<&str>,
    sub: Option<&str>,
) -> String {
    let mut p = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    if let (true, Some(ns)) = (r.namespaced, namespace) {
        p.push_str("/namespaces/");
        p.push_str(ns);
    }
    p.push('/');
    p.push_str(r.plural);
    if let Some(n) = name {
        p.push('/');
        p.push_str(n);
    }
    if let Some(s) = sub {
        p.push('/');
        p.push_str(s);
    }
    p
}

/// The served resource of a built-in kind the control plane manages.
pub fn resource(api_version: &str, kind: &str) -> &'static Resource {
    by_kind(api_version, kind).unwrap_or_else(|| panic!("{api_version} {kind} is served"))
}

/// An in-process API client with the admin's rights.
#[derive(Clone)]
pub struct LocalApi {
    state: SharedState,
    /// Built once: a router is cheap to clone and costly to build per request.
    router: axum::Router,
    authorization: String,
    manager: &'static str,
    /// Repeated events become one Event with a count (shared by the clones of this client).
    events: Arc<Mutex<Correlator>>,
    /// Writes pass the leadership fence (`ApiState::leadership`): the controllers' and the
    /// scheduler's client; the elector's own client is not fenced.
    fenced: bool,
}

impl LocalApi {
    /// A client whose writes are recorded under the field manager `manager`.
    pub fn new(state: SharedState, manager: &'static str) -> LocalApi {
        let authorization = format!("Bearer {}", state.config.tokens.admin);
        LocalApi {
            router: router(state.clone()),
            state,
            authorization,
            manager,
            events: Arc::default(),
            fenced: true,
        }
    }

    /// A client whose writes do not wait for leadership: the elector's, and one-off writes
    /// any master makes at start.
    pub fn unfenced(state: SharedState, manager: &'static str) -> LocalApi {
        LocalApi {
            fenced: false,
            ..LocalApi::new(state, manager)
        }
    }

    /// The refusal of a write while this master does not lead (503).
    fn not_leader(&self, method: &'static str, path: String) -> Option<CallError> {
        (self.fenced && !self.state.leadership.holds()).then(|| CallError {
            method,
            path,
            code: 503,
            reason: "NotLeader".into(),
            message: "this master does not hold the controllers' lease; it writes nothing".into(),
        })
    }

    pub fn state(&self) -> &SharedState {
        &self.state
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> Result<Value, CallError> {
        let method_name: &'static str = match method {
            Method::GET => "GET",
            Method::POST => "POST",
            Method::PUT => "PUT",
            Method::PATCH => "PATCH",
            Method::DELETE => "DELETE",
            _ => "OTHER",
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let uri = if method == Method::GET || method == Method::DELETE {
            path.to_string()
        } else {
            format!("{path}{sep}fieldManager={}", self.manager)
        };
        if method != Method::GET
            && let Some(refused) = self.not_leader(method_name, path.to_string())
        {
            return Err(refused);
        }
        let failed = |code: u16, reason: &str, message: String| CallError {
            method: method_name,
            path: path.to_string(),
            code,
            reason: reason.to_string(),
            message,
        };
        let request = Request::builder()
            .method(method.clone())
            .uri(&uri)
            .header("authorization", &self.authorization)
            .header("content-type", content_type)
            .header("user-agent", self.manager)
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
            .map_err(|e| failed(0, "BadRequest", e.to_string()))?;
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .map_err(|e| failed(0, "InternalError", e.to_string()))?;
        let code = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| failed(code, "InternalError", e.to_string()))?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if (200..300).contains(&code) {
            return Ok(value);
        }
        Err(failed(
            code,
            value["reason"].as_str().unwrap_or("Unknown"),
            value["message"].as_str().unwrap_or("").to_string(),
        ))
    }

    pub async fn get(&self, path: &str) -> Result<Value, CallError> {
        self.call(Method::GET, path, "application/json", None).await
    }

    pub async fn create(&self, path: &str, object: &Value) -> Result<Value, CallError> {
        self.call(Method::POST, path, "application/json", Some(object))
            .await
    }

    /// A PUT: fails with a conflict when `object`'s resourceVersion is stale.
    pub async fn replace(&self, path: &str, object: &Value) -> Result<Value, CallError> {
        self.call(Method::PUT, path, "application/json", Some(object))
            .await
    }

    pub async fn merge_patch(&self, path: &str, patch: &Value) -> Result<Value, CallError> {
        self.call(
            Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(patch),
        )
        .await
    }

    /// Deletes with a propagation policy; a missing object is not an error.
    pub async fn delete(&self, path: &str, propagation: &str) -> Result<(), CallError> {
        let options =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation});
        match self
            .call(Method::DELETE, path, "application/json", Some(&options))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes only the incarnation with this uid (a pod recreated under the same name stays).
    pub async fn delete_uid(&self, path: &str, uid: &str) -> Result<(), CallError> {
        self.delete_uid_with_grace(path, uid, None).await
    }

    /// Deletes the object only if it is still at `version` (nothing written to it since it was
    /// read); a missing or changed object is not an error.
    pub async fn delete_version(&self, path: &str, version: &str) -> Result<(), CallError> {
        let options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "preconditions": {"resourceVersion": version}});
        self.delete_if(path, &options).await
    }

    /// A DELETE with preconditions: an object already gone, or no longer the one the
    /// preconditions name, is not an error.
    async fn delete_if(&self, path: &str, options: &Value) -> Result<(), CallError> {
        match self
            .call(Method::DELETE, path, "application/json", Some(options))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_not_found() || e.is_conflict() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// As [`Self::delete_uid`], with a grace period; `Some(0)` removes a bound pod at once
    /// instead of waiting for its agent to stop it.
    pub async fn delete_uid_with_grace(
        &self,
        path: &str,
        uid: &str,
        grace: Option<i64>,
    ) -> Result<(), CallError> {
        let mut options = json!({"kind": "DeleteOptions", "apiVersion": "v1",
            "propagationPolicy": "Background", "preconditions": {"uid": uid}});
        if let Some(grace) = grace {
            options["gracePeriodSeconds"] = json!(grace);
        }
        self.delete_if(path, &options).await
    }

    /// Binds many pods at once with `pods/binding`'s checks and result per pod (see
    /// [`crate::cluster::api::binding::bind_pods`]): one result per binding, in order.
    pub async fn bind_many(&self, bindings: &[Binding]) -> Vec<Result<(), CallError>> {
        let pods = resource("v1", "Pod");
        if self.not_leader("POST", String::new()).is_some() {
            return bindings
                .iter()
                .map(|b| {
                    let path = path(pods, Some(&b.namespace), Some(&b.pod), Some("binding"));
                    Err(self.not_leader("POST", path).expect("still not leading"))
                })
                .collect();
        }
        bind_pods(&self.state, self.manager, bindings)
            .await
            .into_iter()
            .zip(bindings)
            .map(|(result, b)| {
                result.map_err(|e| CallError {
                    method: "POST",
                    path: path(pods, Some(&b.namespace), Some(&b.pod), Some("binding")),
                    code: e.code().as_u16(),
                    reason: e.reason().to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    /// Records a core/v1 Event about `object` (best effort: a failure is only logged).
    pub async fn event(&self, object: &Value, kind: &str, reason: &str, message: &str) {
        let meta = &object["metadata"];
        let name = meta["name"].as_str().unwrap_or("");
        let namespace = meta["namespace"].as_str().unwrap_or("default");
        let now = crate::cluster::api::write_now();
        let mut involved = json!({"apiVersion": object["apiVersion"], "kind": object["kind"],
            "name": name, "uid": meta["uid"]});
        if meta["namespace"].is_string() {
            involved["namespace"] = meta["namespace"].clone();
        }
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": format!("{name}."), "namespace": namespace},
            "involvedObject": involved,
            "reason": reason, "message": message, "type": kind,
            "source": {"component": self.manager},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
            "reportingComponent": self.manager,
        });
        let sink = LocalEvents {
            api: self,
            namespace,
        };
        if let Err(e) = events::send(&self.events, &sink, event).await {
            tracing::debug!(error = %e, reason, "cannot record an event");
        }
    }
}

/// Events written through the in-process API.
struct LocalEvents<'a> {
    api: &'a LocalApi,
    namespace: &'a str,
}

impl EventSink for LocalEvents<'_> {
    type Error = CallError;

    async fn create(&self, event: Value) -> Result<Option<String>, CallError> {
        let events = resource("v1", "Event");
        let written = self
            .api
            .create(&path(events, Some(self.namespace), None, None), &event)
            .await?;
        Ok(written
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(str::to_string))
    }

    async fn patch(&self, name: &str, patch: &Value) -> Result<bool, CallError> {
        let events = resource("v1", "Event");
        let at = path(events, Some(self.namespace), Some(name), None);
        match self.api.merge_patch(&at, patch).await {
            Ok(_) => Ok(true),
            Err(e) if e.is_not_found() => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_follow_the_kubernetes_layout() {
        let pods = resource("v1", "Pod");
        assert_eq!(
            path(pods, Some("shop"), Some("web"), Some("binding")),
            "/api/v1/namespaces/shop/pods/web/binding"
        );
        let nodes = resource("v1", "Node");
        assert_eq!(path(nodes, Some("x"), Some("n1"), None), "/api/v1/nodes/n1");
        let rs = resource("apps/v1", "ReplicaSet");
        assert_eq!(
            path(rs, Some("default"), None, None),
            "/apis/apps/v1/namespaces/default/replicasets"
        );
    }
}
