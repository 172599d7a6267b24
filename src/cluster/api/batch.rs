//! Atomic apply of a whole ApplySet: `POST /apis/berth.dev/v1/namespaces/{ns}/applysets/{name}`
//! with a [`BatchRequest`] (wire format in [`crate::apply::batch`]). This is the executor of
//! the apply planner ([`crate::apply::plan`]): decode, snapshot, plan, commit.
//!
//! `{ns}/{name}` names the set's parent Secret (KEP-3659). The server reads the live objects
//! the set may hold (members are found through the parent's `contains-group-kinds`), and the
//! planner works out each object's server-side-apply result, the prune set and its guard, and
//! the parent's annotations. The planner admits each write through [`ServerAdmission`], the
//! same create/update preparation as a single `PATCH application/apply-patch+yaml`
//! ([`super::write`]: server-set fields, defaults, validation; [`super::allocate`]: addresses).
//! Then every create, update, delete and the parent are written **in one store transaction**.
//! Each object read gets a compare in that transaction (unchanged since read, or still
//! absent), so a concurrent writer makes the transaction fail; the batch is then recomputed,
//! a few times at most, and never half applied. Any invalid object, conflict or refusal
//! aborts the whole batch with a `Status` that lists every cause. Watches see the
//! transaction's puts and deletes as ordinary events at one revision.
//!
//! With `dryRun` nothing is written and each result carries the would-be and the live object,
//! which is what `berth diff -f` renders. Pruning a Namespace is refused (deleting one empties
//! it; do that with an explicit delete). A [`Delta`] batch (git sync between commits, in process
//! only) names every object it touches, so only those are read. With the etcd backend, a set is limited by etcd's
//! `--max-txn-ops` (128 by default) and `--max-request-bytes` (1.5 MiB): etcd refuses a larger
//! transaction whole, so nothing of the set is written, and the answer (413) names the flag
//! to raise.

use std::collections::{BTreeMap, BTreeSet};

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::allocate::{self, Network, Taken};
use super::auth::{Identity, admin_only};
use super::resources::{Resource, by_group_kind, by_kind};
use super::status::{ApiError, Cause};
use super::write;
use super::{SharedState, json_response};
use crate::apply::applyset::{self, MassDelete, ParentRef};
use crate::apply::batch::{BatchRefusal, BatchRequest, BatchResponse, Delta, Outcome};
use crate::apply::plan::{self, Admission, Desired, Kind, Plan, PlanError, Snapshot};
use crate::apply::ssa::Writer;
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

/// The API server's side of the planner: its served resources, and each write admitted as
/// a single create or update is (server-set fields, defaults, validation), with addresses
/// assigned from `taken` when the batch holds Services or Nodes.
struct ServerAdmission<'a> {
    network: &'a Network,
    taken: Option<Taken>,
}

fn resource(kind: Kind) -> &'static Resource {
    by_kind(kind.api_version, kind.kind).expect("planned kinds are served")
}

impl ServerAdmission<'_> {
    fn assign(&mut self, kind: Kind, old: Option<&Value>, new: &mut Value) -> Result<(), ApiError> {
        match self.taken.as_mut() {
            Some(taken) => allocate::assign(self.network, taken, kind.kind, old, new),
            None => Ok(()),
        }
    }
}

impl Admission for ServerAdmission<'_> {
    type Error = ApiError;

    fn kind(&self, api_version: &str, kind: &str) -> Option<Kind> {
        by_kind(api_version, kind).map(|r| Kind {
            api_version: r.api_version,
            kind: r.kind,
            namespaced: r.namespaced,
        })
    }

    fn served_as(&self, api_version: &str, kind: &str) -> Option<String> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        by_group_kind(group, kind).map(|r| r.api_version.to_string())
    }

    fn key(&self, kind: Kind, namespace: Option<&str>, name: &str) -> String {
        resource(kind).key(namespace, name)
    }

    fn check_identity(
        &self,
        kind: Kind,
        namespace: &str,
        object: &mut Value,
    ) -> Result<(), ApiError> {
        write::check_identity(resource(kind), Some(namespace), object)
    }

    fn create(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        object: Value,
        writer: &Writer<'_>,
        record_update: bool,
    ) -> Result<Value, ApiError> {
        let mut new = write::prepare_create(
            resource(kind),
            namespace,
            object,
            writer,
            None,
            record_update,
        )?;
        self.assign(kind, None, &mut new)?;
        Ok(new)
    }

    fn update(
        &mut self,
        kind: Kind,
        live: &Value,
        object: Value,
        writer: Option<&Writer<'_>>,
    ) -> Result<Option<Value>, ApiError> {
        let mut new = write::prepare_update(resource(kind), live, object, false, writer, None)?;
        if let Some(new) = new.as_mut() {
            self.assign(kind, Some(live), new)?;
        }
        Ok(new)
    }

    fn causes(error: ApiError) -> Vec<Cause> {
        match error {
            ApiError::Invalid { causes, .. } | ApiError::ApplyConflict { causes, .. } => causes,
            other => vec![Cause {
                reason: "FieldValueInvalid".into(),
                message: other.to_string(),
                field: String::new(),
            }],
        }
    }
}

/// The served resource of a `Kind.group` (or `Kind`) as the group-kinds annotation lists it.
fn resource_of_group_kind(group_kind: &str) -> Option<&'static Resource> {
    let (kind, group) = group_kind.split_once('.').unwrap_or((group_kind, ""));
    by_group_kind(group, kind)
}

/// Reads what the plan needs: the parent, every object of the kinds and namespaces the set
/// holds or held (its parent's annotations say which), the Namespaces, and — for Services
/// and Nodes — the addresses already taken.
/// The served resource, namespace and name of a member a delta removes (its namespace
/// defaulted to the parent's, as a batch's objects are); `None` for a kind no longer served.
fn removed_identity(
    object: &Value,
    parent: &ParentRef,
) -> Option<(&'static Resource, Option<String>, String)> {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str);
    let r = by_kind(text("/apiVersion")?, text("/kind")?)?;
    let ns = r.namespaced.then(|| {
        text("/metadata/namespace")
            .unwrap_or(&parent.namespace)
            .to_string()
    });
    Some((r, ns, text("/metadata/name")?.to_string()))
}

async fn read_snapshot(
    state: &SharedState,
    desired: &[Desired],
    parent: &ParentRef,
    delta: Option<&Delta>,
) -> Result<(Snapshot, Option<Taken>), ApiError> {
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let parent_live = state
        .storage
        .get(secrets, Some(&parent.namespace), &parent.name)
        .await?;
    let mut group_kinds: BTreeSet<String> = desired
        .iter()
        .map(|d| applyset::group_kind(d.kind.api_version, d.kind.kind))
        .collect();
    let mut namespaces: BTreeSet<String> =
        desired.iter().filter_map(|d| d.namespace.clone()).collect();
    namespaces.insert(parent.namespace.clone());
    if let Some((p, _)) = &parent_live {
        group_kinds.extend(applyset::listed_group_kinds(p));
        namespaces.extend(applyset::listed_namespaces(p));
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
    match delta {
        // A delta names every object it may touch: read those, not the whole set.
        Some(delta) => {
            let named = desired
                .iter()
                .map(|d| (resource(d.kind), d.namespace.clone(), d.name.clone()))
                .chain(
                    delta
                        .removed
                        .iter()
                        .filter_map(|o| removed_identity(o, parent)),
                );
            for (r, ns, name) in named {
                if let Some(live) = state.storage.get(r, ns.as_deref(), &name).await? {
                    objects.insert(r.key(ns.as_deref(), &name), live);
                }
            }
        }
        None => {
            for (api_version, kind, ns) in lists {
                let r = by_kind(api_version, kind).expect("listed from the served resources");
                let page = state.storage.list(r, ns.as_deref(), 0, None, None).await?;
                for stored in page.items {
                    let object = stored.decode()?;
                    objects.insert(stored.key, (object, stored.mod_revision));
                }
            }
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
    let allocating = desired
        .iter()
        .any(|d| allocate::allocates(resource(d.kind)));
    let taken = if allocating {
        let kinds = ["Service", "Node"];
        Some(allocate::read_taken(&state.storage, &state.config.network, &kinds).await?)
    } else {
        None
    };
    let snapshot = Snapshot {
        objects,
        parent: parent_live,
        namespaces,
    };
    Ok((snapshot, taken))
}

/// The one transaction of a plan: a compare for every object read, then every write.
fn transaction(state: &SharedState, plan: &Plan) -> Result<Txn, ApiError> {
    let ns_resource = by_kind("v1", "Namespace").expect("namespaces are served");
    let mut compares = Vec::new();
    let mut ops = Vec::new();
    for step in plan.steps.iter().chain(std::iter::once(&plan.parent)) {
        let key = step.key.clone();
        compares.push(match &step.live {
            Some((_, rev)) => Compare::mod_revision(key.clone(), *rev),
            None => Compare::absent(key.clone()),
        });
        match (&step.outcome, &step.new) {
            (Outcome::Pruned, _) => ops.push(Op::delete(key)),
            (_, Some(new)) => {
                let r = resource(step.kind);
                let value = state.storage.encode_write(r, &key, new)?;
                ops.push(Op::put(key, value));
                // The addresses it takes are claimed in the same txn (see `allocate::claims`).
                if allocate::allocates(r) {
                    let old = step.live.as_ref().map(|(v, _)| v);
                    let (who, keys) = allocate::new_claims(&state.config.network, r.kind, old, new);
                    for claim in keys {
                        compares.push(Compare::absent(claim.clone()));
                        ops.push(Op::put(claim, who.clone().into_bytes()));
                    }
                }
            }
            (_, None) => {}
        }
    }
    for ns in &plan.needed_namespaces {
        compares.push(Compare::exists(ns_resource.key(None, ns)));
    }
    Ok(Txn::new().when(compares).then(ops))
}

/// Why a batch was not applied.
#[derive(Debug)]
enum BatchError {
    Api(ApiError),
    /// The prune guard refused; the objects that would have gone.
    MassDelete {
        refusal: MassDelete,
        would_go: Vec<String>,
    },
}

impl From<ApiError> for BatchError {
    fn from(e: ApiError) -> Self {
        BatchError::Api(e)
    }
}

/// The planner's refusals as the API's errors: the `Status` codes and reasons clients see.
impl From<PlanError<ApiError>> for BatchError {
    fn from(e: PlanError<ApiError>) -> Self {
        let message = e.to_string();
        let api = match e {
            PlanError::MassDelete { refusal, would_go } => {
                return BatchError::MassDelete { refusal, would_go };
            }
            PlanError::Invalid { set, causes } => ApiError::Invalid {
                kind: "ApplySet".into(),
                group: "berth.dev".into(),
                name: set,
                causes,
            },
            PlanError::Conflicts { set, causes } => ApiError::ApplyConflict {
                resource: "applysets.berth.dev".into(),
                name: set,
                causes,
            },
            PlanError::ForeignParent { name, .. } => ApiError::Conflict {
                resource: "secrets".into(),
                name,
                detail: message,
            },
            PlanError::PrunesNamespace { .. } => ApiError::BadRequest(message),
            PlanError::Parent(e) => e,
        };
        BatchError::Api(api)
    }
}

impl IntoResponse for BatchError {
    fn into_response(self) -> Response {
        match self {
            BatchError::Api(e) => e.into_response(),
            BatchError::MassDelete { refusal, would_go } => {
                let causes: Vec<Value> = would_go
                    .iter()
                    .map(|o| json!({"reason": "WouldBePruned", "message": o, "field": ""}))
                    .collect();
                json_response(
                    StatusCode::CONFLICT,
                    &json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "reason": "Conflict", "code": 409,
                        "message": refusal.to_string(),
                        "details": {"group": "berth.dev", "kind": "applysets", "causes": causes},
                    }),
                )
            }
        }
    }
}

/// Runs a batch. CustomResourceDefinitions of the batch are served from the start, so its
/// custom resources are planned and admitted against them and go in the same transaction;
/// afterwards what is served follows the store again (the batch's CRDs stay if it was stored;
/// a CRD it pruned goes, with its custom resources).
async fn run(
    state: &SharedState,
    namespace: &str,
    name: &str,
    batch: BatchRequest,
) -> Result<BatchResponse, BatchError> {
    let establishing = super::crds::establish(state, &batch.objects).await;
    let result = run_planned(state, namespace, name, batch).await;
    establishing.settle().await;
    result
}

async fn run_planned(
    state: &SharedState,
    namespace: &str,
    name: &str,
    batch: BatchRequest,
) -> Result<BatchResponse, BatchError> {
    let parent = ParentRef::secret(name, namespace);
    let id = parent.id();
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
        let mut admission = ServerAdmission {
            network: &state.config.network,
            taken: None,
        };
        let desired = plan::desired(&batch.objects, &parent, &admission)?;
        let (snapshot, taken) =
            read_snapshot(state, &desired, &parent, batch.delta.as_ref()).await?;
        admission.taken = taken;
        let plan = plan::plan(
            &batch,
            desired,
            snapshot,
            &parent,
            &mut admission,
            &write::now(),
        )?;
        let respond = |revision: i64, plan: &Plan| BatchResponse {
            applyset_id: id.clone(),
            dry_run: batch.dry_run,
            revision,
            parent: plan.parent.outcome,
            results: plan.steps.iter().map(|s| s.result(batch.dry_run)).collect(),
        };
        if batch.dry_run || !plan.writes() {
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
            // Addresses the batch dropped (pruned Services and Nodes, ports given up) are
            // released, as a single delete or update does.
            for step in &plan.steps {
                let r = resource(step.kind);
                if let (true, Some((live, _))) = (allocate::allocates(r), &step.live) {
                    let kept = match step.outcome {
                        Outcome::Pruned => None,
                        _ => Some(step.new.as_ref().unwrap_or(live)),
                    };
                    allocate::release(state, r, live, kept).await;
                }
            }
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
