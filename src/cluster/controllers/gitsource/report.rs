//! Drift, object by object: `GET /apis/berth.dev/v1/namespaces/{ns}/gitsources/{name}/drift`,
//! what `berth diff --source NAME` renders.
//!
//! Git sync keeps the objects of each source's last applied commit in memory ([`remember`]);
//! the endpoint dry-runs them exactly as the controller does when it looks for drift (same
//! batch, same autoscaler rule) and answers with each object as it is live and as git would
//! make it. The GitSource status only names the drifted fields; the values travel here, to an
//! admin, and the client's renderer masks Secret data as `berth diff -f` does.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{FIELD_MANAGER, source_dry_run};
use crate::apply::batch::BatchRefusal;
use crate::apply::batch::ObjectResult;
use crate::cluster::api::SharedState;
use crate::cluster::api::auth::{Identity, admin_only};
use crate::cluster::api::status::ApiError;
use crate::cluster::controllers::client::{LocalApi, path, resource};
use crate::manifest::gitsource::GitSource;

/// The objects a source's last applied commit declares, as git sync loaded them.
#[derive(Debug, Clone)]
pub struct Declared {
    pub commit: String,
    pub objects: Arc<Vec<Value>>,
}

/// The endpoint's answer: the dry run of the last applied commit against the live objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDrift {
    /// The last applied commit, the git side of the comparison.
    pub commit: String,
    /// Each object with `live` and `object` (as git would make it); a pruned one has no
    /// `object`, one deleted from the cluster no `live`.
    pub results: Vec<ObjectResult>,
}

/// The path of a source's drift.
pub fn drift_path(namespace: &str, name: &str) -> String {
    format!("/apis/berth.dev/v1/namespaces/{namespace}/gitsources/{name}/drift")
}

/// Records what the source `key` (`namespace/name`) applied at `commit`.
pub(super) fn remember(state: &SharedState, key: &str, commit: &str, objects: Vec<Value>) {
    let mut declared = state.git_declared.lock().expect("declared lock");
    if declared.get(key).is_some_and(|d| d.commit == commit) {
        return;
    }
    declared.insert(
        key.to_string(),
        Declared {
            commit: commit.to_string(),
            objects: Arc::new(objects),
        },
    );
}

/// Drops what a deleted source declared.
pub(super) fn forget(state: &SharedState, key: &str) {
    state
        .git_declared
        .lock()
        .expect("declared lock")
        .remove(key);
}

/// The route handler.
pub async fn drift(
    State(state): State<SharedState>,
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
    match source_drift(&state, &namespace, &name).await {
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
    let declared = state
        .git_declared
        .lock()
        .expect("declared lock")
        .get(&key)
        .cloned();
    let declared = match declared {
        Some(d) if d.commit == applied => d,
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
    let mut objects = declared.objects.as_ref().clone();
    let dry = source_dry_run(state, namespace, name, &source, &mut objects)
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
