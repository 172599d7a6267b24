//! `pods/log` and `pods/exec`: the server finds the pod's node and the agent endpoint that
//! node publishes, checks the container name, connects with the pinned certificate and the
//! agent token ([`super::agent_client`]), and streams through. Exec is a WebSocket upgrade
//! that is forwarded byte for byte once both sides have switched protocols, so the channel
//! protocol lives only in the agent (`crate::daemons::agent::serve::exec`).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Node;
use serde_json::{Value, json};

use super::agent_client::{self, AgentConnection};
use super::auth::Identity;
use super::resources::{self, Subresource};
use super::status::ApiError;
use super::{SharedState, Target};
use crate::cluster::agent_endpoint::{AgentEndpoint, CERT_SHA256_ANNOTATION, ENDPOINT_ANNOTATION};

/// What can go wrong between the server and the agent: each is a 503 whose message says
/// which node and what to check.
#[derive(Debug, thiserror::Error)]
enum Unavailable {
    #[error(
        "node \"{node}\" publishes no agent endpoint (annotations {ENDPOINT_ANNOTATION} and \
         {CERT_SHA256_ANNOTATION}); is a berth agent running on it?"
    )]
    NoEndpoint { node: String },
    #[error("cannot reach the agent of node \"{node}\": {source}")]
    Unreachable {
        node: String,
        #[source]
        source: agent_client::AgentConnectError,
    },
    #[error(
        "the agent of node \"{node}\" refused the server's credentials (was it started with \
         this server's agent join token?)"
    )]
    Refused { node: String },
}

impl IntoResponse for Unavailable {
    fn into_response(self) -> Response {
        let message = self.to_string();
        tracing::warn!(reason = %message, "pods/log or pods/exec: the agent is unavailable");
        let status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": "ServiceUnavailable",
            "code": 503,
        });
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::to_vec(&status).unwrap_or_default(),
        )
            .into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod["spec"][field]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|c| c["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container a request means: the one named, which must exist in the pod, or the only
/// one. Messages are Kubernetes' own.
fn choose_container(
    pod_name: &str,
    pod: &Value,
    requested: Option<&str>,
) -> Result<String, ApiError> {
    let containers = names(pod, "containers");
    let init = names(pod, "initContainers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::BadRequest(format!(
            "container {c} is not valid for pod {pod_name}"
        ))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut message = format!(
                "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                containers.join(" ")
            );
            if !init.is_empty() {
                message.push_str(&format!(
                    " or one of the init containers: [{}]",
                    init.join(" ")
                ));
            }
            Err(ApiError::BadRequest(message))
        }
    }
}

/// The query forwarded to the agent: the caller's, without `container` (it is in the
/// path), with the pod's uid so an older pod's containers are never picked.
fn agent_query(query: Option<&str>, uid: &str) -> String {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    let mut kept: Vec<(String, String)> = pairs
        .into_iter()
        .filter(|(k, _)| k != "container" && k != "podUID")
        .collect();
    if !uid.is_empty() {
        kept.push(("podUID".into(), uid.into()));
    }
    serde_urlencoded::to_string(kept).unwrap_or_default()
}

fn requested_container(query: Option<&str>) -> Option<String> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.unwrap_or("")).unwrap_or_default();
    pairs
        .into_iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v)
}

/// Serves `pods/log` and `pods/exec`; returns the verb for metrics.
pub(crate) async fn dispatch(
    state: SharedState,
    t: Target,
    identity: Identity,
    request: Request,
) -> (&'static str, Result<Response, ApiError>) {
    let exec = t.sub == Some(Subresource::Exec);
    let verb = if exec { "create" } else { "get" };
    let method_ok = match exec {
        true => matches!(*request.method(), Method::GET | Method::POST),
        false => *request.method() == Method::GET,
    };
    if !method_ok {
        return (verb, Err(ApiError::MethodNotAllowed));
    }
    // Logs and a shell reach into every container; only the admin may, never an agent.
    if identity != Identity::Admin {
        let sub = if exec { "exec" } else { "log" };
        return (
            verb,
            Err(ApiError::Forbidden {
                user: identity.user().into(),
                verb: verb.into(),
                resource: format!("pods/{sub}"),
                group: String::new(),
                namespace: t.namespace.clone(),
            }),
        );
    }
    (verb, proxy(state, t, exec, request).await)
}

async fn proxy(
    state: SharedState,
    t: Target,
    exec: bool,
    request: Request,
) -> Result<Response, ApiError> {
    let namespace = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let (pod, _) = state
        .storage
        .get(t.resource, Some(&namespace), &name)
        .await?
        .ok_or_else(|| ApiError::not_found(t.resource, &name))?;
    let query = request.uri().query().map(str::to_string);
    let container = choose_container(
        &name,
        &pod,
        requested_container(query.as_deref()).as_deref(),
    )?;
    let node_name = pod["spec"]["nodeName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if node_name.is_empty() {
        return Err(ApiError::BadRequest(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    let nodes = resources::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::Internal("nodes are not served".into()))?;
    let (node, _) = state
        .storage
        .get(nodes, None, &node_name)
        .await?
        .ok_or_else(|| ApiError::not_found(nodes, &node_name))?;
    let node: Node = serde_json::from_value(node)
        .map_err(|e| ApiError::Internal(format!("stored node {node_name} is not a Node: {e}")))?;
    let Some(endpoint) = AgentEndpoint::from_node(&node) else {
        return Ok(Unavailable::NoEndpoint { node: node_name }.into_response());
    };
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    let path = format!(
        "/{}/{namespace}/{name}/{container}?{}",
        if exec { "exec" } else { "containerLogs" },
        agent_query(query.as_deref(), uid)
    );
    let connection = match agent_client::connect(&endpoint).await {
        Ok(c) => c,
        Err(source) => {
            return Ok(Unavailable::Unreachable {
                node: node_name,
                source,
            }
            .into_response());
        }
    };
    let token = &state.config.tokens.agent;
    let result = if exec {
        forward_exec(connection, &path, token, request).await
    } else {
        forward_logs(connection, &path, token).await
    };
    Ok(match result {
        Ok(response) if response.status() == StatusCode::UNAUTHORIZED => {
            Unavailable::Refused { node: node_name }.into_response()
        }
        Ok(response) => response,
        Err(source) => Unavailable::Unreachable {
            node: node_name,
            source,
        }
        .into_response(),
    })
}

fn agent_request(
    connection: &AgentConnection,
    path: &str,
    token: &str,
) -> axum::http::request::Builder {
    axum::http::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, &connection.authority)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
}

fn http_error(
    connection: &AgentConnection,
    e: impl std::fmt::Display,
) -> agent_client::AgentConnectError {
    agent_client::AgentConnectError::Http {
        url: connection.authority.clone(),
        reason: e.to_string(),
    }
}

async fn forward_logs(
    mut connection: AgentConnection,
    path: &str,
    token: &str,
) -> Result<Response, agent_client::AgentConnectError> {
    let request = agent_request(&connection, path, token)
        .body(Body::empty())
        .map_err(|e| http_error(&connection, e))?;
    let response = connection
        .sender
        .send_request(request)
        .await
        .map_err(|e| http_error(&connection, e))?;
    Ok(pass_through(response))
}

/// The agent's answer as ours: status, content type and the (possibly endless) body, as
/// they come.
fn pass_through(response: hyper::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = response.into_parts();
    let mut out = Response::new(Body::new(body));
    *out.status_mut() = parts.status;
    if let Some(ct) = parts.headers.get(header::CONTENT_TYPE) {
        out.headers_mut().insert(header::CONTENT_TYPE, ct.clone());
    }
    out
}

/// The WebSocket handshake headers the agent needs to answer the caller directly.
const HANDSHAKE_HEADERS: &[header::HeaderName] = &[
    header::UPGRADE,
    header::CONNECTION,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
];

fn is_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn forward_exec(
    mut connection: AgentConnection,
    path: &str,
    token: &str,
    mut request: Request,
) -> Result<Response, agent_client::AgentConnectError> {
    // Anything but a WebSocket upgrade (SPDY from an old client) still goes to the agent,
    // whose answer names the real problem first: a refused token, a missing container,
    // then the unsupported protocol.
    let websocket = is_websocket(request.headers());
    let client_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>();
    let mut builder = agent_request(&connection, path, token);
    if websocket {
        for name in HANDSHAKE_HEADERS {
            for value in request.headers().get_all(name) {
                builder = builder.header(name, value);
            }
        }
    }
    let agent_request = builder
        .body(Body::empty())
        .map_err(|e| http_error(&connection, e))?;
    let response = connection
        .sender
        .send_request(agent_request)
        .await
        .map_err(|e| http_error(&connection, e))?;
    let client_upgrade = match client_upgrade {
        Some(upgrade) if response.status() == StatusCode::SWITCHING_PROTOCOLS => upgrade,
        _ if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            return Ok(ApiError::BadRequest(
                "exec needs an HTTP/1.1 connection that can be upgraded".into(),
            )
            .into_response());
        }
        _ => {
            return Ok(pass_through(response));
        }
    };
    let mut out = StatusCode::SWITCHING_PROTOCOLS.into_response();
    for name in [
        header::UPGRADE,
        header::CONNECTION,
        header::SEC_WEBSOCKET_ACCEPT,
        header::SEC_WEBSOCKET_PROTOCOL,
    ] {
        if let Some(value) = response.headers().get(&name) {
            out.headers_mut().insert(name, value.clone());
        }
    }
    tokio::spawn(async move {
        let (agent, client) = tokio::join!(hyper::upgrade::on(response), client_upgrade);
        match (agent, client) {
            (Ok(agent), Ok(client)) => {
                let mut agent = TokioIo::new(agent);
                let mut client = TokioIo::new(client);
                if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut agent).await {
                    tracing::debug!(error = %e, "exec stream ended with an error");
                }
            }
            (agent, client) => tracing::debug!(
                agent_ok = agent.is_ok(),
                client_ok = client.is_ok(),
                "exec: an upgrade did not complete"
            ),
        }
    });
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"spec": {"containers": [{"name": "app"}, {"name": "helper"}],
                        "initContainers": [{"name": "setup"}]}})
    }

    #[test]
    fn a_pod_with_several_containers_needs_a_name_and_lists_them() {
        let err = choose_container("web", &pod(), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a container name must be specified for pod web, choose one of: [app helper] \
             or one of the init containers: [setup]"
        );
        assert_eq!(
            choose_container("web", &pod(), Some("setup")).unwrap(),
            "setup"
        );
        let err = choose_container("web", &pod(), Some("db")).unwrap_err();
        assert_eq!(err.to_string(), "container db is not valid for pod web");
        let single = json!({"spec": {"containers": [{"name": "only"}]}});
        assert_eq!(choose_container("p", &single, None).unwrap(), "only");
    }

    #[test]
    fn the_agent_gets_the_query_without_container_and_with_the_uid() {
        let q = agent_query(Some("container=app&follow=true&command=a&command=b"), "u-1");
        assert_eq!(q, "follow=true&command=a&command=b&podUID=u-1");
        assert_eq!(
            requested_container(Some("container=app")).as_deref(),
            Some("app")
        );
    }
}
