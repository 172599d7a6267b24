//! Routes a resource request to its verb (get, list, watch, create, update, patch, delete,
//! deletecollection, pods/binding and pods/eviction) after authorizing it.

use axum::extract::Request;
use axum::http::Method;

use super::auth::{self, Identity};
use super::body::{self, Params};
use super::handlers::{self, Outcome};
use super::resources::Subresource;
use super::status::ApiError;
use super::{SharedState, Target, binding, delete, eviction, list, watch};

/// Routes a resource request to its verb. Returns the verb for metrics.
pub(crate) async fn dispatch(
    state: SharedState,
    t: Target,
    identity: Identity,
    request: Request,
) -> (&'static str, Outcome) {
    let params = match Params::parse(request.uri().query()) {
        Ok(p) => p,
        Err(e) => return ("unknown", Err(e)),
    };
    let method = request.method().clone();
    let verb: &'static str = match (&method, t.name.is_some(), t.sub) {
        (&Method::GET, false, _) if params.watch => "watch",
        (&Method::GET, false, _) => "list",
        (&Method::GET, true, _) => "get",
        (&Method::POST, false, _)
        | (&Method::POST, true, Some(Subresource::Binding | Subresource::Eviction)) => "create",
        (&Method::PUT, true, _) => "update",
        (&Method::PATCH, true, _) => "patch",
        (&Method::DELETE, true, None) => "delete",
        (&Method::DELETE, false, None) => "deletecollection",
        _ => return ("unknown", Err(ApiError::MethodNotAllowed)),
    };
    if let Err(e) = auth::authorize(identity, verb, t.resource, t.sub, t.namespace.as_deref()) {
        return (verb, Err(e));
    }
    let crd_write = t.resource.group == "apiextensions.k8s.io"
        && t.resource.kind == crate::manifest::crd::KIND
        && !matches!(verb, "watch" | "list" | "get");
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let state_after = state.clone();
    let outcome = match verb {
        "watch" => {
            let caller = parts
                .extensions
                .get::<std::sync::Arc<super::connections::Connection>>()
                .map(|c| (identity.user(), c.clone()));
            let table = super::table::wants_table(&headers);
            watch::watch(state, t, params, table, caller).await
        }
        "list" => list::list(state, t, params, &headers).await,
        "get" => handlers::get(state, t, &headers).await,
        _ => {
            // Event writers over the network are rate-limited (the controllers are not).
            if matches!(verb, "create" | "update" | "patch")
                && let Some(c) = parts
                    .extensions
                    .get::<std::sync::Arc<super::connections::Connection>>()
                && let Err(e) = state
                    .event_rate
                    .admit(t.resource, identity.user(), c.peer())
            {
                return (verb, Err(e));
            }
            let bytes = match body::read_limited(body, state.config.max_body_bytes).await {
                Ok(b) => b,
                Err(e) => return (verb, Err(e)),
            };
            match verb {
                "create" if t.sub == Some(Subresource::Binding) => {
                    binding::bind(state, t, params, &headers, &bytes).await
                }
                "create" if t.sub == Some(Subresource::Eviction) => {
                    eviction::evict(state, t, params, &headers, &bytes).await
                }
                "create" => handlers::create(state, t, params, &headers, &bytes).await,
                "update" => handlers::update(state, t, params, &headers, &bytes).await,
                "patch" => handlers::patch_object(state, t, params, &headers, &bytes).await,
                "delete" => delete::delete(state, t, params, &headers, &bytes).await,
                _ => delete::delete_collection(state, t, params).await,
            }
        }
    };
    // A CRD written here is served (or gone) when the answer leaves, not only once the
    // store watch of `crds::follow` sees it.
    if crd_write
        && outcome.is_ok()
        && let Err(e) = super::crds::sync(&state_after).await
    {
        tracing::warn!(error = %e, "cannot read the CustomResourceDefinitions after a write");
    }
    (verb, outcome)
}
