//! Drift, object by object: `GET /apis/berth.dev/v1/namespaces/{ns}/gitsources/{name}/drift`,
//! what `berth diff --source NAME` renders (wire format: [`crate::apply::drift`]).
//!
//! Git sync keeps the objects of each source's last applied commit in memory
//! ([`DeclaredCommits`], the [`Index`] it compares the next commit with); the endpoint dry-runs them exactly as the controller does when it
//! looks for drift (same batch, same autoscaler rule) and answers with each object as it is
//! live and as git would make it. The GitSource status only names the drifted fields; the
//! values travel here, to an admin, and the client's renderer masks Secret data as
//! `berth diff -f` does. The route is git sync's: [`routes`] hands it to the server, which
//! mounts it in the API router (`crate::cluster::api::router_with`) behind the same
//! authentication as every other path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::Value;

use super::index::Index;
use super::{FIELD_MANAGER, source_dry_run};
use crate::apply::batch::BatchRefusal;
use crate::apply::drift::SourceDrift;
use crate::cluster::api::SharedState;
use crate::cluster::api::auth::{Identity, admin_only};
use crate::cluster::api::status::ApiError;
use crate::cluster::controllers::client::{LocalApi, path, resource};
use crate::manifest::gitsource::GitSource;

/// What a source's last applied commit declares, as git sync loaded it.
#[derive(Debug, Clone)]
pub struct Declared {
    pub index: Arc<Index>,
    /// The source's `metadata.generation` it was applied with: another spec, another basis.
    pub generation: Option<i64>,
    /// [`PostBuild::fingerprint`](super::postbuild::PostBuild::fingerprint) of the variables
    /// and target namespace it was loaded with.
    pub fingerprint: String,
    /// When the whole set was last compared with the cluster (applied or dry-run).
    pub checked: Instant,
}

/// What each source's last applied commit declares, by `namespace/name`: kept by git sync,
/// read by the drift endpoint. Clones share one map.
#[derive(Debug, Clone, Default)]
pub struct DeclaredCommits(Arc<Mutex<HashMap<String, Declared>>>);

impl DeclaredCommits {
    /// Records what the source `key` (`namespace/name`) applied.
    pub(super) fn remember(&self, key: &str, declared: Declared) {
        self.0
            .lock()
            .expect("declared lock")
            .insert(key.to_string(), declared);
    }

    /// Drops what a deleted source declared.
    pub(super) fn forget(&self, key: &str) {
        self.0.lock().expect("declared lock").remove(key);
    }

    pub(super) fn get(&self, key: &str) -> Option<Declared> {
        self.0.lock().expect("declared lock").get(key).cloned()
    }
}

/// The drift endpoint over what git sync remembers, for the API router.
pub fn routes(declared: DeclaredCommits) -> Router<SharedState> {
    Router::new().route(
        "/apis/berth.dev/v1/namespaces/{namespace}/gitsources/{name}/drift",
        get(
            move |state: State<SharedState>, names: Path<(String, String)>, request: Request| {
                drift(state, declared.clone(), names, request)
            },
        ),
    )
}

/// The route handler.
async fn drift(
    State(state): State<SharedState>,
    declared: DeclaredCommits,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    // It carries live objects, Secrets included, as a dry-run apply does: admins only.
    let caller = request.extensions().get::<Identity>();
    if let Err(e) = admin_only(
        caller,
        "get",
        "gitsources/drift",
        "berth.dev",
        Some(namespace.clone()),
    ) {
        return e.into_response();
    }
    match source_drift(&state, &declared, &namespace, &name).await {
        Ok(drift) => (
            StatusCode::OK,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&drift).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

fn not_ready(name: &str, detail: String) -> ApiError {
    ApiError::Conflict {
        resource: "gitsources.berth.dev".into(),
        name: name.to_string(),
        detail,
    }
}

async fn source_drift(
    state: &SharedState,
    declared: &DeclaredCommits,
    namespace: &str,
    name: &str,
) -> Result<SourceDrift, ApiError> {
    let api = LocalApi::new(state.clone(), FIELD_MANAGER);
    let sources = resource("berth.dev/v1", "GitSource");
    let object = match api
        .get(&path(sources, Some(namespace), Some(name), None))
        .await
    {
        Ok(o) => o,
        Err(e) if e.is_not_found() => return Err(ApiError::not_found(sources, name)),
        Err(e) => return Err(ApiError::Internal(e.to_string())),
    };
    let source: GitSource = serde_json::from_value(object)
        .map_err(|e| ApiError::Internal(format!("GitSource {namespace}/{name}: {e}")))?;
    let status = source.status.clone().unwrap_or_default();
    let Some(applied) = status.last_applied_commit.clone() else {
        let why = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.status != "True")
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default();
        return Err(not_ready(
            name,
            format!("it has not synced yet, no commit is applied{why}"),
        ));
    };
    let key = format!("{namespace}/{name}");
    let declared = match declared.get(&key) {
        Some(d) if d.index.commit == applied => d,
        _ => {
            // Held in memory only: after a restart, until git sync applies or re-reads the
            // commit. A newer commit that is invalid keeps it from doing so.
            let stalled = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True");
            let why = if stalled {
                "; the newest commit is not applied (see the Stalled condition), so until a \
                 valid commit is pushed there is nothing to compare with"
            } else {
                "; try again in a moment"
            };
            return Err(not_ready(
                name,
                format!(
                    "git sync has not read commit {} since the server started{why}",
                    super::short(&applied)
                ),
            ));
        }
    };
    let mut objects: Vec<Value> = declared.index.objects().cloned().collect();
    let dry = source_dry_run(state, namespace, name, &source, &mut objects, None)
        .await
        .map_err(|refusal| {
            let message = match refusal {
                BatchRefusal::MassDelete { message, .. } => message,
                BatchRefusal::Refused { message, .. } => message,
            };
            not_ready(
                name,
                format!("the dry run of commit {applied} failed: {message}"),
            )
        })?;
    Ok(SourceDrift {
        commit: applied,
        results: dry.results,
    })
}
