//! The agent's HTTPS endpoint for pod logs and exec, which the API server proxies
//! `pods/log` and `pods/exec` to (the kubelet's port 10250 role).
//!
//! [`serve`] makes a fresh self-signed certificate, returns the [`AgentEndpoint`] the agent
//! publishes on its Node (URL and certificate fingerprint, which the API server pins), and
//! a future that serves until shutdown. Every request must carry
//! `Authorization: Bearer <agent join token>`; the token is compared in constant time.
//!
//! Routes:
//! - `GET /containerLogs/{namespace}/{pod}/{container}` ([`logs`]);
//! - `GET /exec/{namespace}/{pod}/{container}` with a WebSocket upgrade ([`exec`]).
//!
//! Containers are found by berth's labels through the [`StreamingRuntime`].

pub mod exec;
pub mod logs;
pub mod select;

use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::cluster::agent_endpoint::AgentEndpoint;
use crate::cluster::api::status::ApiError;

use crate::daemons::agent::runtime::streams::StreamingRuntime;

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The listener has no local address.
    #[error("cannot read the listening address")]
    LocalAddr(#[source] std::io::Error),
    /// The advertised host is empty.
    #[error("the advertised host is empty; pass the address the API server reaches this node at")]
    EmptyHost,
    /// The self-signed certificate could not be made.
    #[error("cannot make the endpoint's self-signed certificate for {host:?}")]
    Certificate {
        host: String,
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the certificate or the protocol versions.
    #[error("cannot set up TLS for the endpoint")]
    Tls(#[from] rustls::Error),
    /// The token is empty: every caller would be refused, or worse.
    #[error("the agent token is empty")]
    EmptyToken,
}

struct EndpointState<R> {
    runtime: Arc<R>,
    token: String,
    /// Becomes true when the endpoint stops: running execs end.
    closing: tokio::sync::watch::Receiver<bool>,
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authenticate<R: StreamingRuntime>(
    State(state): State<Arc<EndpointState<R>>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), state.token.as_bytes()) => {
            next.run(request).await
        }
        _ => ApiError::Unauthorized.into_response(),
    }
}

async fn container_logs<R: StreamingRuntime>(
    State(state): State<Arc<EndpointState<R>>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let query = request.uri().query();
    logs::handle(state.runtime.clone(), namespace, pod, container, query)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn container_exec<R: StreamingRuntime>(
    State(state): State<Arc<EndpointState<R>>>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    request: Request,
) -> Response {
    let closing = state.closing.clone();
    exec::handle(
        state.runtime.clone(),
        closing,
        namespace,
        pod,
        container,
        request,
    )
    .await
    .unwrap_or_else(IntoResponse::into_response)
}

async fn no_route() -> Response {
    ApiError::NoRoute.into_response()
}

/// The endpoint's routes, testable without a socket; execs end when `closing` turns true.
pub fn router<R: StreamingRuntime>(
    runtime: Arc<R>,
    token: String,
    closing: tokio::sync::watch::Receiver<bool>,
) -> Router {
    let state = Arc::new(EndpointState {
        runtime,
        token,
        closing,
    });
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs::<R>),
        )
        .route(
            "/exec/{namespace}/{pod}/{container}",
            get(container_exec::<R>),
        )
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate::<R>,
        ))
        .with_state(state)
}

/// A fresh self-signed certificate for `host`, its key, and the hex SHA-256 of its DER.
fn self_signed(host: &str) -> Result<(Vec<u8>, Vec<u8>, String), ServeError> {
    let certified =
        rcgen::generate_simple_self_signed(vec![host.to_string()]).map_err(|source| {
            ServeError::Certificate {
                host: host.to_string(),
                source,
            }
        })?;
    let der = certified.cert.der().to_vec();
    let fingerprint = hex::encode(Sha256::digest(&der));
    Ok((der, certified.key_pair.serialize_der(), fingerprint))
}

fn tls_config(cert: Vec<u8>, key: Vec<u8>) -> Result<Arc<rustls::ServerConfig>, ServeError> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(cert)],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        )?;
    // HTTP/1.1 only: exec is an HTTP/1.1 upgrade.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// `https://host:port`, with brackets around an IPv6 address.
fn endpoint_url(host: &str, port: u16) -> String {
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("https://[{v6}]:{port}"),
        _ => format!("https://{host}:{port}"),
    }
}

/// Starts the log and exec endpoint on `listener`.
///
/// - `advertise_host`: the name or address the API server reaches this node at; it goes
///   into the certificate and the URL (the port is the listener's).
/// - `token`: the agent join token; requests without it get 401.
/// - `runtime`: where containers are found and streamed from (Docker in production).
/// - `shutdown`: when it resolves, the endpoint stops accepting and open streams end.
///
/// Returns the endpoint to publish on the Node (see [`AgentEndpoint::annotations`]) and the
/// future that serves; spawn or await it. Nothing is served until it is polled.
pub async fn serve<R: StreamingRuntime>(
    listener: TcpListener,
    advertise_host: &str,
    token: String,
    runtime: Arc<R>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(AgentEndpoint, impl Future<Output = ()> + Send + 'static), ServeError> {
    if advertise_host.trim().is_empty() {
        return Err(ServeError::EmptyHost);
    }
    if token.is_empty() {
        return Err(ServeError::EmptyToken);
    }
    let port = listener.local_addr().map_err(ServeError::LocalAddr)?.port();
    let (cert, key, cert_sha256) = self_signed(advertise_host)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config(cert, key)?);
    let endpoint = AgentEndpoint {
        url: endpoint_url(advertise_host, port),
        cert_sha256,
    };
    let (closing, closing_rx) = tokio::sync::watch::channel(false);
    let app = router(runtime, token, closing_rx);
    let serving = async move {
        // Connections live in this set: when serving ends, dropping it ends them all.
        let mut connections = tokio::task::JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "agent endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                () = &mut shutdown => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let service = TowerToHyperService::new(app.clone());
            connections.spawn(async move {
                let stream = match acceptor.accept(tcp).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "agent endpoint: TLS handshake failed");
                        return;
                    }
                };
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "agent endpoint: connection ended with an error");
                }
            });
        }
        closing.send_replace(true);
        tracing::info!("agent endpoint: stopped");
    };
    Ok((endpoint, serving))
}
