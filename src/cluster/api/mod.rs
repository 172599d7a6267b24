//! The Kubernetes-compatible REST API over the store (axum): discovery, CRUD with the
//! server-set fields and defaults, list and watch with selectors, patches and server-side
//! apply (whose merge is [`crate::apply::ssa`]), `metav1.Status` errors, bearer-token auth,
//! health and metrics.
//!
//! [`router`] is the whole server as a function of its state, testable with
//! `tower::ServiceExt::oneshot`; `crate::daemons::server` binds it to a TLS port.

pub mod agent_client;
pub mod allocate;
pub mod auth;
mod batch;
pub mod binding;
mod body;
pub mod connections;
pub mod crds;
mod delete;
pub mod discovery;
mod dispatch;
pub mod encryption;
pub mod event_limits;
pub mod eviction;
mod handlers;
pub mod hooks;
pub mod identity;
pub mod inflight;
pub mod leadership;
mod list;
pub mod metrics;
pub mod openapi;
pub mod patch;
mod protobuf;
mod proxy;
pub mod resources;
pub mod selectors;
pub mod status;
pub mod storage;
pub mod table;
pub mod tls;
mod watch;
pub mod watch_buffer;
mod write;

pub use batch::apply_in_process;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use serde_json::Value;

use self::auth::Identity;
use self::connections::{ConnectionLimits, Connections};
use self::inflight::{Inflight, InflightLimits};
use self::metrics::Metrics;
use self::resources::{Resource, Subresource};
use self::status::ApiError;
use self::storage::Storage;
use self::tls::Tokens;

/// Settings of the API that tests may change.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub tokens: Tokens,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Largest request body; larger ones get 413.
    pub max_body_bytes: usize,
    /// Pod, Service and NodePort ranges the API allocates from.
    pub network: allocate::Network,
    /// Caps and timeouts of client connections.
    pub connections: ConnectionLimits,
    /// Concurrent read-only and mutating requests.
    pub inflight: InflightLimits,
    /// Bytes of events buffered per watcher before it must wait for the client.
    pub watch_buffer_bytes: usize,
    /// Open watches per identity (admin, agent) over the network.
    pub max_watches_per_identity: usize,
}

/// The largest object the API stores, and the largest body of a request that writes one
/// (Kubernetes' limit, from etcd's request size): 1.5 MiB.
pub const MAX_OBJECT_BYTES: usize = 3 * 512 * 1024;

impl ApiConfig {
    pub fn new(tokens: Tokens) -> ApiConfig {
        ApiConfig {
            tokens,
            bookmark_interval: Duration::from_secs(30),
            max_body_bytes: MAX_OBJECT_BYTES,
            network: allocate::Network::default(),
            connections: ConnectionLimits::default(),
            inflight: InflightLimits::default(),
            watch_buffer_bytes: 128 * 1024,
            max_watches_per_identity: 2_000,
        }
    }
}

/// Everything a request handler needs.
pub struct ApiState {
    pub storage: Storage,
    pub config: ApiConfig,
    pub metrics: Metrics,
    /// False while starting and once draining: `/readyz` fails.
    pub ready: AtomicBool,
    /// Set to true when the server drains; open watches end.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Serializes ClusterIP, NodePort and pod CIDR allocations.
    pub allocations: allocate::Allocations,
    /// Whether this master's controllers may write (several masters elect one).
    pub leadership: leadership::Leadership,
    /// Open client connections (the server's accept loop admits them).
    pub connections: Arc<Connections>,
    /// Concurrent requests, and when the server last refused one.
    pub inflight: Inflight,
    /// Open watches per identity.
    pub watch_counts: watch::WatchCounts,
    /// Webhook delivery ids already handled.
    pub hook_deliveries: hooks::Deliveries,
    /// Event writes per writer.
    pub event_rate: event_limits::EventRate,
    /// The CustomResourceDefinitions this server serves.
    pub crds: crds::Served,
}

impl ApiState {
    pub fn new(storage: Storage, config: ApiConfig) -> Arc<ApiState> {
        Arc::new(ApiState {
            storage,
            connections: Connections::new(config.connections.clone()),
            inflight: Inflight::new(config.inflight),
            watch_counts: watch::WatchCounts::default(),
            hook_deliveries: hooks::Deliveries::default(),
            event_rate: event_limits::EventRate::default(),
            crds: crds::Served::default(),
            config,
            metrics: Metrics::default(),
            ready: AtomicBool::new(true),
            closing: tokio::sync::watch::Sender::new(false),
            allocations: allocate::Allocations::default(),
            leadership: leadership::Leadership::default(),
        })
    }
}

pub type SharedState = Arc<ApiState>;

/// The verb and resource of a request, for metrics.
#[derive(Debug, Clone)]
struct Observed {
    verb: &'static str,
    resource: String,
}

/// What a resource URL names.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub resource: &'static Resource,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Subresource>,
}

/// Parses the part of a path after `/api` or `/apis`.
fn parse_target(api: &str, rest: &str) -> Result<Target, ApiError> {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, segs) = match (api, segs.as_slice()) {
        ("api", [v, tail @ ..]) => ("", *v, tail),
        ("apis", [g, v, tail @ ..]) => (*g, *v, tail),
        _ => return Err(ApiError::NoRoute),
    };
    let find = |plural: &str| resources::by_plural(group, version, plural).ok_or(ApiError::NoRoute);
    let sub = |s: &str, r: &Resource| {
        Subresource::parse(s)
            .filter(|sub| r.has(*sub))
            .ok_or(ApiError::NoRoute)
    };
    let namespaced_plural =
        |s: &str| resources::by_plural(group, version, s).filter(|r| r.namespaced);
    let t = |resource, namespace: Option<&str>, name: Option<&str>, sub| Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
        sub,
    };
    match segs {
        ["namespaces", ns, plural, tail @ ..] if namespaced_plural(plural).is_some() => {
            let r = find(plural)?;
            match tail {
                [] => Ok(t(r, Some(ns), None, None)),
                [name] => Ok(t(r, Some(ns), Some(name), None)),
                [name, s] => Ok(t(r, Some(ns), Some(name), Some(sub(s, r)?))),
                _ => Err(ApiError::NoRoute),
            }
        }
        [plural] => Ok(t(find(plural)?, None, None, None)),
        [plural, name] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(t(r, None, Some(name), None))
        }
        [plural, name, s] => {
            let r = find(plural)?;
            if r.namespaced {
                return Err(ApiError::NoRoute);
            }
            Ok(t(r, None, Some(name), Some(sub(s, r)?)))
        }
        _ => Err(ApiError::NoRoute),
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    raw_json_response(code, serde_json::to_vec(v).unwrap_or_default())
}

/// A response whose body is already JSON.
fn raw_json_response(code: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut resp = (code, body.into()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

async fn version() -> Response {
    json_response(StatusCode::OK, &discovery::version())
}

async fn core_versions() -> Response {
    json_response(StatusCode::OK, &discovery::core_versions())
}

async fn groups() -> Response {
    json_response(StatusCode::OK, &discovery::groups())
}

async fn healthz(State(state): State<SharedState>) -> Response {
    match state.storage.store.current_revision().await {
        Ok(_) => (StatusCode::OK, "ok").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: the store does not answer");
            (StatusCode::INTERNAL_SERVER_ERROR, "store: failed").into_response()
        }
    }
}

async fn readyz(State(state): State<SharedState>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response();
    }
    healthz(State(state)).await
}

async fn livez() -> Response {
    (StatusCode::OK, "ok").into_response()
}

async fn metrics_text(State(state): State<SharedState>) -> Response {
    let rev = state.storage.store.current_revision().await.unwrap_or(-1);
    let mut text = state.metrics.render(rev);
    if let Some(leading) = state.leadership.gauge() {
        text.push_str(&metrics::leader_gauge(leading));
    }
    let (anonymous, authenticated) = state.connections.open();
    use std::fmt::Write as _;
    let _ = writeln!(
        text,
        "# HELP berth_connections Open client connections by whether a request on them authenticated.\n# TYPE berth_connections gauge\nberth_connections{{authenticated=\"false\"}} {anonymous}\nberth_connections{{authenticated=\"true\"}} {authenticated}\n# HELP berth_connections_refused_total Connections closed at once at a connection cap.\n# TYPE berth_connections_refused_total counter\nberth_connections_refused_total {}\n# HELP berth_connections_evicted_total Connections without a request closed to make room for a new one at the cap.\n# TYPE berth_connections_evicted_total counter\nberth_connections_evicted_total {}\n# HELP apiserver_dropped_requests_total Requests refused with 429 at an inflight limit.\n# TYPE apiserver_dropped_requests_total counter\napiserver_dropped_requests_total {}",
        state.connections.refused(),
        state.connections.evicted(),
        state.inflight.rejected()
    );
    let (read_only, mutating) = state.inflight.current();
    let _ = writeln!(
        text,
        "# HELP apiserver_current_inflight_requests Requests holding a place at an inflight limit now.\n# TYPE apiserver_current_inflight_requests gauge\napiserver_current_inflight_requests{{request_kind=\"readOnly\"}} {read_only}\napiserver_current_inflight_requests{{request_kind=\"mutating\"}} {mutating}"
    );
    let mut resp = text.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

async fn openapi_index() -> Response {
    json_response(StatusCode::OK, &openapi::index())
}

async fn openapi_v2() -> Response {
    raw_json_response(StatusCode::OK, openapi::v2().to_vec())
}

async fn openapi_document(request: Request) -> Response {
    let path = request.uri().path().trim_start_matches("/openapi/v3/");
    match openapi::document(path) {
        Some(doc) => raw_json_response(StatusCode::OK, doc.to_vec()),
        None => ApiError::NoRoute.into_response(),
    }
}

async fn no_route() -> Response {
    ApiError::NoRoute.into_response()
}

async fn resource(
    State(state): State<SharedState>,
    api: &'static str,
    request: Request,
) -> Response {
    let path = request.uri().path().to_string();
    let rest = path
        .strip_prefix(if api == "api" { "/api" } else { "/apis" })
        .unwrap_or("");
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    // Group/version discovery documents.
    if request.method() == Method::GET {
        let gv = match (api, segs.as_slice()) {
            ("api", [v]) => Some(("", *v)),
            ("apis", [g, v]) => Some((*g, *v)),
            _ => None,
        };
        if let Some((g, v)) = gv {
            return match discovery::resource_list(g, v) {
                Some(list) => json_response(StatusCode::OK, &list),
                None => ApiError::NoRoute.into_response(),
            };
        }
        if let ("apis", [g]) = (api, segs.as_slice()) {
            let groups = discovery::groups();
            return match groups["groups"]
                .as_array()
                .and_then(|gs| gs.iter().find(|x| x["name"] == *g))
            {
                Some(group) => {
                    let mut group = group.clone();
                    group["kind"] = "APIGroup".into();
                    group["apiVersion"] = "v1".into();
                    json_response(StatusCode::OK, &group)
                }
                None => ApiError::NoRoute.into_response(),
            };
        }
    }
    let target = match parse_target(api, rest) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let identity = request
        .extensions()
        .get::<Identity>()
        .copied()
        .unwrap_or(Identity::Agent);
    let protobuf = protobuf::wants_protobuf(request.headers());
    let observed_resource = match target.sub {
        Some(s) => format!("{}/{}", target.resource.plural, s.name()),
        None => target.resource.plural.to_string(),
    };
    let (verb, result) = match target.sub {
        Some(Subresource::Log | Subresource::Exec) => {
            proxy::dispatch(state, target, identity, request).await
        }
        _ => dispatch::dispatch(state, target, identity, request).await,
    };
    let mut response = match result {
        Ok(r) if protobuf => protobuf::negotiate(r, verb == "watch").await,
        Ok(r) => r,
        Err(e) => e.into_response(),
    };
    response.extensions_mut().insert(Observed {
        verb,
        resource: observed_resource,
    });
    response
}

/// Authenticates (all but the public health and version paths), applies the inflight
/// limits and records metrics.
async fn authenticate_and_observe(
    State(state): State<SharedState>,
    mut request: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let public = matches!(
        request.uri().path(),
        "/version" | "/healthz" | "/livez" | "/readyz"
    ) || hooks::is_hook_path(request.uri().path());
    // Requests of the in-process controllers come without a connection.
    let connection = request
        .extensions()
        .get::<Arc<connections::Connection>>()
        .cloned();
    if !public {
        match auth::authenticate(&state.config.tokens, request.headers()) {
            Ok(identity) => {
                request.extensions_mut().insert(identity);
                if let Some(c) = &connection {
                    c.authenticated();
                }
            }
            Err(e) => {
                state
                    .metrics
                    .observe("unauthenticated", "", 401, start.elapsed());
                return e.into_response();
            }
        }
        if request.uri().path() == "/metrics"
            && let Err(e) = auth::admin_only(
                request.extensions().get::<Identity>(),
                "get",
                "/metrics",
                "",
                None,
            )
        {
            return e.into_response();
        }
    }
    let method = request.method().clone();
    let _permit = match &connection {
        None => None,
        Some(_) => {
            let class = inflight::Class::of(&method, request.uri().path(), request.uri().query());
            let reserved = request.extensions().get::<Identity>() == Some(&Identity::Agent);
            match state.inflight.admit(class, reserved) {
                Ok(permit) => permit,
                Err(e) => {
                    let code = e.code().as_u16();
                    state.metrics.observe("other", "", code, start.elapsed());
                    return e.into_response();
                }
            }
        }
    };
    let response = next.run(request).await;
    let code = response.status().as_u16();
    match response.extensions().get::<Observed>() {
        Some(o) => state
            .metrics
            .observe(o.verb, &o.resource, code, start.elapsed()),
        None => {
            let verb = if method == Method::GET {
                "get"
            } else {
                "other"
            };
            state.metrics.observe(verb, "", code, start.elapsed());
        }
    }
    tracing::debug!(%method, code, elapsed_ms = start.elapsed().as_millis() as u64, "request");
    response
}

/// The whole API as a router.
pub fn router(state: SharedState) -> Router {
    router_with(state, Router::new())
}

/// The API with `more` routes mounted beside its own, behind the same authentication,
/// metrics and fallback: how the server adds the routes of the parts it runs above the API
/// (git sync's drift, `crate::cluster::controllers::gitsource::report::routes`).
pub fn router_with(state: SharedState, more: Router<SharedState>) -> Router {
    Router::new()
        .route("/version", get(version))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/livez", get(livez))
        .route("/metrics", get(metrics_text))
        .route("/openapi/v2", get(openapi_v2))
        .route("/openapi/v3", get(openapi_index))
        .route("/openapi/v3/{*path}", get(openapi_document))
        .route("/api", get(core_versions))
        .route("/apis", get(groups))
        .route(
            "/apis/berth.dev/v1/namespaces/{namespace}/applysets/{name}",
            post(batch::apply_set),
        )
        .route("/hooks/git/{namespace}/{name}", post(hooks::git_push))
        .route(
            "/api/{*rest}",
            any(|s: State<SharedState>, r: Request| resource(s, "api", r)),
        )
        .route(
            "/apis/{*rest}",
            any(|s: State<SharedState>, r: Request| resource(s, "apis", r)),
        )
        .merge(more)
        .fallback(no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            authenticate_and_observe,
        ))
        .with_state(state)
}

/// Now, as the API writes timestamps.
pub fn write_now() -> String {
    write::now()
}

/// Prepares an object the server creates itself (built-in namespaces), with the same
/// server-set fields, defaults and validation as a create through the API.
pub fn prepare_builtin(
    r: &Resource,
    object: Value,
    writer: &crate::apply::ssa::Writer<'_>,
) -> Result<Value, ApiError> {
    write::prepare_create(r, None, object, writer, None, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources_namespaces_names_and_subresources() {
        let t = parse_target("api", "/v1/namespaces/shop/pods/web/status").unwrap();
        assert_eq!(t.resource.plural, "pods");
        assert_eq!(t.namespace.as_deref(), Some("shop"));
        assert_eq!(t.sub, Some(Subresource::Status));
        let t = parse_target("api", "/v1/namespaces/shop/status").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        assert_eq!(t.name.as_deref(), Some("shop"));
        let t = parse_target("api", "/v1/namespaces/shop").unwrap();
        assert_eq!(t.resource.plural, "namespaces");
        let t = parse_target("apis", "/apps/v1/deployments").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_target("api", "/v1/pods/web").is_err());
        assert!(parse_target("apis", "/apps/v1/namespaces/x/deployments/web/binding").is_err());
        assert!(parse_target("apis", "/batch/v1/widgets").is_err());
        let t = parse_target("apis", "/batch/v1/namespaces/shop/jobs/nightly/status").unwrap();
        assert_eq!((t.resource.kind, t.sub), ("Job", Some(Subresource::Status)));
    }
}
