//! Atomic apply of a whole ApplySet: `POST /apis/berth.dev/v1/namespaces/{ns}/applysets/{name}`
//! with a [`BatchRequest`] (wire format in [`crate::apply::batch`]).
//!
//! `{ns}/{name}` names the set's parent Secret (KEP-3659). The server reads the live objects,
//! computes each object's server-side-apply result with the same code as a single
//! `PATCH application/apply-patch+yaml` ([`crate::apply::ssa::server_side_apply`], then
//! [`super::write`]'s create/update preparation: server-set fields, defaults, validation),
//! marks every object a member of the set, works out the prune set (members of the set, found
//! through the parent's `contains-group-kinds`, that the request no longer holds), runs the
//! mass-delete guard, and writes every create, update, delete and the parent **in one store
//! transaction**. Each object read gets a compare in that transaction (unchanged since read,
//! or still absent), so a concurrent writer makes the transaction fail; the batch is then
//! recomputed, a few times at most, and never half applied. Any invalid object, conflict or
//! refusal aborts the whole batch with a `Status` that lists every cause. Watches see the
//! transaction's puts and deletes as ordinary events at one revision.
//!
//! With `dryRun` nothing is written and each result carries the would-be and the live object,
//! which is what `berth diff -f` renders. Pruning a Namespace is refused (deleting one empties
//! it; do that with an explicit delete). With the etcd backend, a set is limited by etcd's
//! `--max-txn-ops` (128 by default): raise it for large sets.

mod plan;

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use self::plan::{
    BatchError, Desired, Plan, Snapshot, annotation, comma_list, desired, plan,
    resource_of_group_kind,
};
use super::auth::{Identity, admin_only};
use super::resources::by_kind;
use super::status::ApiError;
use super::write;
use super::{SharedState, json_response};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::{BatchRequest, BatchResponse, Outcome};
use crate::cluster::store::{Compare, Op, Txn};

/// A batch body may be this many times larger than a single object's limit.
const BODY_LIMIT_FACTOR: usize = 32;
/// How often a batch is recomputed when objects changed while it was being computed.
const ATTEMPTS: usize = 4;

/// The route handler.
pub(super) async fn apply_set(
    State(state): State<SharedState>,
    Path((namespace, name)): Path<(String, String)>,
    request: Request,
) -> Response {
    let caller = request.extensions().get::<Identity>();
    if let Err(e) = admin_only(
        caller,
        "create",
        "applysets",
        "berth.dev",
        Some(namespace.clone()),
    ) {
        return e.into_response();
    }
    let limit = state
        .config
        .max_body_bytes
        .saturating_mul(BODY_LIMIT_FACTOR);
    let bytes = match super::body::read_limited(request.into_body(), limit).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let batch: BatchRequest = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return ApiError::BadRequest(format!("the body is not a batch request: {e}"))
                .into_response();
        }
    };
    match run(&state, &namespace, &name, batch).await {
        Ok(response) => json_response(
            StatusCode::OK,
            &serde_json::to_value(&response).unwrap_or_default(),
        ),
        Err(e) => e.into_response(),
    }
}

async fn read_snapshot(
    state: &SharedState,
    desired: &[Desired],
    parent: &ParentRef,
) -> Result<Snapshot, ApiError> {
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let parent_live = state
        .storage
        .get(secrets, Some(&parent.namespace), &parent.name)
        .await?;
    let mut group_kinds: BTreeSet<String> = desired
        .iter()
        .map(|d| applyset::group_kind(d.r.api_version, d.r.kind))
        .collect();
    let mut namespaces: BTreeSet<String> =
        desired.iter().filter_map(|d| d.namespace.clone()).collect();
    namespaces.insert(parent.namespace.clone());
    if let Some((p, _)) = &parent_live {
        group_kinds.extend(comma_list(annotation(p, applyset::GROUP_KINDS_ANNOTATION)));
        namespaces.extend(comma_list(annotation(p, applyset::NAMESPACES_ANNOTATION)));
    }
    let mut lists: BTreeSet<(&'static str, &'static str, Option<String>)> = BTreeSet::new();
    let ns_resource = by_kind("v1", "Namespace").expect("namespaces are served");
    for gk in &group_kinds {
        let Some(r) = resource_of_group_kind(gk) else {
            continue;
        };
        if r.namespaced {
            for ns in &namespaces {
                lists.insert((r.api_version, r.kind, Some(ns.clone())));
            }
        } else {
            lists.insert((r.api_version, r.kind, None));
        }
    }
    let mut objects = BTreeMap::new();
    for (api_version, kind, ns) in lists {
        let r = by_kind(api_version, kind).expect("listed from the served resources");
        let page = state.storage.list(r, ns.as_deref(), 0, None, None).await?;
        for stored in page.items {
            let object = stored.decode()?;
            objects.insert(stored.key, (object, stored.mod_revision));
        }
    }
    let page = state.storage.list(ns_resource, None, 0, None, None).await?;
    let mut namespaces = BTreeMap::new();
    for stored in page.items {
        let object = stored.decode()?;
        if let Some(name) = write::name_of(&object).map(str::to_string) {
            namespaces.insert(name, (object, stored.mod_revision));
        }
    }
    let taken = if desired.iter().any(|d| super::allocate::allocates(d.r)) {
        let kinds = ["Service", "Node"];
        Some(super::allocate::read_taken(&state.storage, &state.config.network, &kinds).await?)
    } else {
        None
    };
    Ok(Snapshot {
        objects,
        parent: parent_live,
        namespaces,
        taken,
    })
}

/// The one transaction of a plan: a compare for every object read, then every write.
fn transaction(state: &SharedState, plan: &Plan) -> Result<Txn, ApiError> {
    let ns_resource = by_kind("v1", "Namespace").expect("namespaces are served");
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    for step in plan.steps.iter().chain(std::iter::once(&plan.parent)) {
        let key = step.key();
        compares.push(match &step.live {
            Some((_, rev)) => Compare::mod_revision(key.clone(), *rev),
            None => Compare::absent(key.clone()),
        });
        match (&step.outcome, &step.new) {
            (Outcome::Pruned, _) => ops.push(Op::delete(key)),
            (_, Some(new)) => ops.push(Op::put(key, state.storage.encode(step.r, new)?)),
            (_, None) => {}
        }
    }
    for ns in &plan.needed_namespaces {
        compares.push(Compare::exists(ns_resource.key(None, ns)));
    }
    Ok(Txn::new().when(compares).then(ops))
}

async fn run(
    state: &SharedState,
    namespace: &str,
    name: &str,
    batch: BatchRequest,
) -> Result<BatchResponse, BatchError> {
    let parent = ParentRef::secret(name, namespace);
    let id = parent.id();
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let parent_key = secrets.key(Some(namespace), name);
    let mut last_error = None;
    // Services and Nodes get addresses: hold the allocation lock until the batch is stored.
    let allocating = batch.objects.iter().any(|o| {
        o.get("apiVersion").and_then(|v| v.as_str()) == Some("v1")
            && matches!(
                o.get("kind").and_then(|k| k.as_str()),
                Some("Service" | "Node")
            )
    });
    let _held = if allocating {
        Some(state.allocations.lock().await)
    } else {
        None
    };
    for _ in 0..ATTEMPTS {
        let desired = desired(&batch.objects, namespace, &parent_key, &id).map_err(|causes| {
            ApiError::Invalid {
                kind: "ApplySet".into(),
                group: "berth.dev".into(),
                name: name.into(),
                causes,
            }
        })?;
        let snapshot = read_snapshot(state, &desired, &parent).await?;
        let plan = plan(&batch, desired, snapshot, &parent, &state.config.network)?;
        let respond = |revision: i64, plan: &Plan| BatchResponse {
            applyset_id: id.clone(),
            dry_run: batch.dry_run,
            revision,
            parent: plan.parent.outcome,
            results: plan.steps.iter().map(|s| s.result(batch.dry_run)).collect(),
        };
        let writes = plan.parent.new.is_some()
            || plan
                .steps
                .iter()
                .any(|s| s.new.is_some() || s.outcome == Outcome::Pruned);
        if batch.dry_run || !writes {
            let revision = state
                .storage
                .store
                .current_revision()
                .await
                .map_err(ApiError::from)?;
            return Ok(respond(revision, &plan));
        }
        let result = state
            .storage
            .store
            .txn(transaction(state, &plan)?)
            .await
            .map_err(ApiError::from)?;
        if result.succeeded {
            tracing::info!(applyset = %id, revision = result.revision, objects = plan.steps.len(), "applied a batch");
            return Ok(respond(result.revision, &plan));
        }
        last_error = Some(ApiError::Conflict {
            resource: "applysets.berth.dev".into(),
            name: name.into(),
            detail: "objects of the set kept changing while the batch was computed; nothing was applied, try again".into(),
        });
    }
    Err(last_error.expect("at least one attempt").into())
}

/// Why an in-process batch ([`apply_in_process`]) was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchRefusal {
    /// The prune guard held the batch: `message` says why, `would_go` names each object.
    #[error("{message}")]
    MassDelete {
        message: String,
        would_go: Vec<String>,
    },
    /// Invalid objects, conflicts or a store failure: `message` with every cause in it.
    #[error("{message}")]
    Refused { code: u16, message: String },
}

/// Applies a batch as `POST .../applysets/{name}` does, from inside the server (git sync):
/// the same planning, guard and single transaction, with no HTTP round trip to itself.
pub async fn apply_in_process(
    state: &SharedState,
    namespace: &str,
    name: &str,
    batch: BatchRequest,
) -> Result<BatchResponse, BatchRefusal> {
    run(state, namespace, name, batch)
        .await
        .map_err(|e| match e {
            BatchError::MassDelete { refusal, would_go } => BatchRefusal::MassDelete {
                message: refusal.to_string(),
                would_go,
            },
            BatchError::Api(e) => {
                let message = e.to_string();
                BatchRefusal::Refused {
                    code: e.into_response().status().as_u16(),
                    message,
                }
            }
        })
}
