//! Planning one batch from a snapshot of the live objects, with no I/O: each object's
//! server-side-apply result, the prune set and its guard, the parent's new annotations, and
//! the refusals (invalid objects, conflicts, mass deletes) that abort the whole batch.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::super::allocate::{self, Network, Taken};
use super::super::json_response;
use super::super::resources::{RESOURCES, Resource, by_kind};
use super::super::status::{ApiError, Cause};
use super::super::write::{self, now};
use crate::apply::applyset::{self, ParentRef};
use crate::apply::batch::{BatchRequest, FIELD_MANAGER, ObjectResult, Outcome};
use crate::apply::ssa::{Writer, server_side_apply};

/// Why a batch was not applied.
#[derive(Debug)]
pub(super) enum BatchError {
    Api(ApiError),
    /// The prune guard refused; the objects that would have gone.
    MassDelete {
        refusal: applyset::MassDelete,
        would_go: Vec<String>,
    },
}

impl From<ApiError> for BatchError {
    fn from(e: ApiError) -> Self {
        BatchError::Api(e)
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

/// One object the request names, ready for server-side apply.
pub(super) struct Desired {
    pub(super) r: &'static Resource,
    pub(super) namespace: Option<String>,
    pub(super) name: String,
    pub(super) applied: Value,
}

impl Desired {
    pub(super) fn key(&self) -> String {
        self.r.key(self.namespace.as_deref(), &self.name)
    }
}

/// A live object and the revision it was read at.
pub(super) type Live = (Value, i64);

/// One write (or non-write) of the batch.
pub(super) struct Step {
    pub(super) r: &'static Resource,
    pub(super) namespace: Option<String>,
    pub(super) name: String,
    pub(super) outcome: Outcome,
    pub(super) live: Option<Live>,
    /// What to store; `None` for unchanged and pruned objects.
    pub(super) new: Option<Value>,
}

impl Step {
    pub(super) fn key(&self) -> String {
        self.r.key(self.namespace.as_deref(), &self.name)
    }

    pub(super) fn result(&self, dry_run: bool) -> ObjectResult {
        // Only dry runs carry the objects; a real apply answers with outcomes alone.
        let (object, live) = if dry_run {
            let live = self.live.as_ref().map(|(v, _)| v.clone());
            let object = match self.outcome {
                Outcome::Pruned => None,
                Outcome::Unchanged => live.clone(),
                _ => self.new.clone(),
            };
            (object, live)
        } else {
            (None, None)
        };
        ObjectResult {
            api_version: self.r.api_version.into(),
            kind: self.r.kind.into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            outcome: self.outcome,
            object,
            live,
        }
    }
}

/// What the parent's annotations need of a member: its apiVersion, kind and namespace.
fn member_identity(object: &Value) -> Value {
    json!({
        "apiVersion": object.get("apiVersion"),
        "kind": object.get("kind"),
        "metadata": {"namespace": object.pointer("/metadata/namespace")},
    })
}

/// `Deployment shop/web`, for causes.
fn describe(r: &Resource, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", r.kind),
        None => format!("{} {name}", r.kind),
    }
}

/// Prefixes an error's causes with the object they are about.
fn causes_of(e: ApiError, object: &str) -> Vec<Cause> {
    let prefix = |mut c: Cause| {
        c.message = format!("{object}: {}", c.message);
        c
    };
    match e {
        ApiError::Invalid { causes, .. } | ApiError::ApplyConflict { causes, .. } => {
            causes.into_iter().map(prefix).collect()
        }
        other => vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("{object}: {other}"),
            field: String::new(),
        }],
    }
}

/// Turns the request's objects into [`Desired`] members of the set `id`.
pub(super) fn desired(
    objects: &[Value],
    parent_namespace: &str,
    parent_key: &str,
    id: &str,
) -> Result<Vec<Desired>, Vec<Cause>> {
    let mut out = Vec::with_capacity(objects.len());
    let mut causes = Vec::new();
    let mut seen = HashSet::new();
    for (index, object) in objects.iter().enumerate() {
        let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind, name) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let what = format!("object #{index} ({kind} {name})");
        let Some(r) = by_kind(api_version, kind) else {
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "{what}: this server does not serve {kind} of {api_version} (see `kubectl api-resources`)"
                ),
                field: "kind".into(),
            });
            continue;
        };
        if name.is_empty() {
            causes.push(Cause {
                reason: "FieldValueRequired".into(),
                message: format!("{what}: apply needs metadata.name (generateName is not enough)"),
                field: "metadata.name".into(),
            });
            continue;
        }
        let mut applied = object.clone();
        let own_ns = text("/metadata/namespace");
        let ns = if own_ns.is_empty() {
            parent_namespace
        } else {
            own_ns
        };
        if let Err(e) = write::check_identity(r, Some(ns), &mut applied) {
            causes.extend(causes_of(e, &what));
            continue;
        }
        applyset::mark_member(&mut applied, id);
        let d = Desired {
            r,
            namespace: r.namespaced.then(|| ns.to_string()),
            name: name.to_string(),
            applied,
        };
        let key = d.key();
        if key == parent_key {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!(
                    "{what}: this is the ApplySet's own parent object; use another --applyset name"
                ),
                field: "metadata.name".into(),
            });
        } else if !seen.insert(key) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("{what}: the batch names this object twice"),
                field: "metadata.name".into(),
            });
        } else {
            out.push(d);
        }
    }
    if causes.is_empty() {
        Ok(out)
    } else {
        Err(causes)
    }
}

pub(super) fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

pub(super) fn comma_list(text: Option<&str>) -> BTreeSet<String> {
    text.unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The served resource of a `Kind.group` (or `Kind`) as the group-kinds annotation lists it.
pub(super) fn resource_of_group_kind(group_kind: &str) -> Option<&'static Resource> {
    let (kind, group) = group_kind.split_once('.').unwrap_or((group_kind, ""));
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.group == group)
}

/// What the live side holds: objects by store key, with the revision each was read at.
pub(super) struct Snapshot {
    pub(super) objects: BTreeMap<String, Live>,
    pub(super) parent: Option<Live>,
    pub(super) namespaces: BTreeMap<String, Live>,
    /// Addresses held by the stored Services and Nodes, when the batch has any.
    pub(super) taken: Option<Taken>,
}

/// Everything the transaction will do, computed from one snapshot.
pub(super) struct Plan {
    pub(super) steps: Vec<Step>,
    pub(super) parent: Step,
    /// Namespaces the created objects need, and that the batch does not create itself.
    pub(super) needed_namespaces: BTreeSet<String>,
}

pub(super) fn plan(
    batch: &BatchRequest,
    desired: Vec<Desired>,
    mut snapshot: Snapshot,
    parent: &ParentRef,
    network: &Network,
) -> Result<Plan, BatchError> {
    let id = parent.id();
    let manager = batch.field_manager.as_deref().unwrap_or(FIELD_MANAGER);
    let time = now();
    if let Some((p, _)) = &snapshot.parent {
        let labelled = p
            .pointer("/metadata/labels")
            .and_then(|l| l.get(applyset::ID_LABEL))
            .and_then(Value::as_str);
        let tooling = annotation(p, applyset::TOOLING_ANNOTATION).unwrap_or("");
        if labelled != Some(id.as_str()) || !tooling.starts_with("berth/") {
            return Err(ApiError::Conflict {
                resource: "secrets".into(),
                name: parent.name.clone(),
                detail: format!(
                    "the Secret {}/{} exists and is not the parent of a berth ApplySet \
                     (tooling {tooling:?}); choose another --applyset name",
                    parent.namespace, parent.name
                ),
            }
            .into());
        }
    }
    let created_namespaces: BTreeSet<String> = desired
        .iter()
        .filter(|d| d.r.kind == "Namespace")
        .map(|d| d.name.clone())
        .collect();
    let mut needed_namespaces = BTreeSet::new();
    let mut steps = Vec::with_capacity(desired.len());
    let mut invalid = Vec::new();
    // The parent lives in the set's namespace, which must exist (or come with the batch).
    match snapshot.namespaces.get(&parent.namespace) {
        Some(_) => {
            needed_namespaces.insert(parent.namespace.clone());
        }
        None if created_namespaces.contains(&parent.namespace) => {}
        None => invalid.push(Cause {
            reason: "FieldValueNotFound".into(),
            message: format!(
                "namespace {} does not exist: create it, add its manifest, or choose another with -n",
                parent.namespace
            ),
            field: "metadata.namespace".into(),
        }),
    }
    let mut conflicts = Vec::new();
    let mut desired_keys = HashSet::new();
    for d in desired {
        let key = d.key();
        let what = describe(d.r, d.namespace.as_deref(), &d.name);
        let writer = Writer {
            manager,
            api_version: d.r.api_version,
            time: &time,
            subresource: None,
        };
        let live = snapshot.objects.get(&key).cloned();
        let merged = match server_side_apply(
            live.as_ref().map(|(v, _)| v),
            &d.applied,
            &writer,
            batch.force,
        ) {
            Ok(m) => m,
            Err(causes) => {
                conflicts.extend(causes_of(
                    ApiError::ApplyConflict {
                        resource: d.r.qualified(),
                        name: d.name.clone(),
                        causes,
                    },
                    &what,
                ));
                continue;
            }
        };
        let prepared = match &live {
            None => {
                if let Some(ns) = &d.namespace {
                    match snapshot.namespaces.get(ns) {
                        Some((n, _)) if n.pointer("/metadata/deletionTimestamp").is_some() => {
                            invalid.push(Cause {
                                reason: "FieldValueInvalid".into(),
                                message: format!("{what}: namespace {ns} is being terminated"),
                                field: "metadata.namespace".into(),
                            });
                            continue;
                        }
                        Some(_) => {
                            needed_namespaces.insert(ns.clone());
                        }
                        None if created_namespaces.contains(ns) => {}
                        None => {
                            invalid.push(Cause {
                                reason: "FieldValueNotFound".into(),
                                message: format!("{what}: namespace {ns} does not exist (add a Namespace manifest or create it first)"),
                                field: "metadata.namespace".into(),
                            });
                            continue;
                        }
                    }
                }
                write::prepare_create(d.r, d.namespace.as_deref(), merged, &writer, None, false)
                    .map(|v| (Outcome::Created, Some(v)))
            }
            Some((old, _)) => {
                write::prepare_update(d.r, old, merged, false, None, None).map(|v| match v {
                    Some(v) => (Outcome::Configured, Some(v)),
                    None => (Outcome::Unchanged, None),
                })
            }
        };
        let prepared = prepared.and_then(|(outcome, mut new)| {
            if let (Some(taken), Some(object)) = (snapshot.taken.as_mut(), new.as_mut()) {
                let old = live.as_ref().map(|(v, _)| v);
                allocate::assign(network, taken, d.r.kind, old, object)?;
            }
            Ok((outcome, new))
        });
        match prepared {
            Ok((outcome, new)) => {
                desired_keys.insert(key);
                steps.push(Step {
                    r: d.r,
                    namespace: d.namespace,
                    name: d.name,
                    outcome,
                    live,
                    new,
                });
            }
            Err(e) => invalid.extend(causes_of(e, &what)),
        }
    }
    if !invalid.is_empty() {
        invalid.extend(conflicts);
        return Err(ApiError::Invalid {
            kind: "ApplySet".into(),
            group: "berth.dev".into(),
            name: parent.name.clone(),
            causes: invalid,
        }
        .into());
    }
    if !conflicts.is_empty() {
        return Err(ApiError::ApplyConflict {
            resource: "applysets.berth.dev".into(),
            name: parent.name.clone(),
            causes: conflicts,
        }
        .into());
    }
    let members: Vec<(&String, &Live)> = snapshot
        .objects
        .iter()
        .filter(|(_, (v, _))| applyset::is_member(v, &id))
        .collect();
    let mut pruned = Vec::new();
    if batch.prune {
        for (key, (object, rev)) in &members {
            if desired_keys.contains(*key) {
                continue;
            }
            let text = |p: &str| object.pointer(p).and_then(Value::as_str);
            let Some(r) = text("/apiVersion")
                .zip(text("/kind"))
                .and_then(|(a, k)| by_kind(a, k))
            else {
                continue;
            };
            pruned.push(Step {
                r,
                namespace: text("/metadata/namespace")
                    .map(str::to_string)
                    .filter(|_| r.namespaced),
                name: text("/metadata/name").unwrap_or("").to_string(),
                outcome: Outcome::Pruned,
                live: Some((object.clone(), *rev)),
                new: None,
            });
        }
        if let Err(refusal) =
            applyset::check_prune(pruned.len(), members.len(), batch.allow_mass_delete)
        {
            let would_go = pruned
                .iter()
                .map(|s| s.result(false).display_name())
                .collect();
            return Err(BatchError::MassDelete { refusal, would_go });
        }
        if let Some(ns) = pruned.iter().find(|s| s.r.kind == "Namespace") {
            return Err(ApiError::BadRequest(format!(
                "the prune would delete Namespace {}, and everything in it; berth apply does not \
                 prune namespaces: delete it explicitly (berth delete namespace {}), or keep its manifest",
                ns.name, ns.name
            ))
            .into());
        }
    }
    // Members kept without --prune stay in the set: the parent keeps listing their kinds.
    let kept: Vec<Value> = if batch.prune {
        Vec::new()
    } else {
        members
            .iter()
            .filter(|(k, _)| !desired_keys.contains(*k))
            .map(|(_, (v, _))| member_identity(v))
            .collect()
    };
    let member_values: Vec<Value> = steps
        .iter()
        .filter_map(|s| s.new.as_ref().or(s.live.as_ref().map(|(v, _)| v)))
        .map(member_identity)
        .chain(kept)
        .collect();
    let parent_step = parent_step(parent, &member_values, snapshot.parent, manager, &time)?;
    steps.extend(pruned);
    Ok(Plan {
        steps,
        parent: parent_step,
        needed_namespaces,
    })
}

/// The parent Secret as the batch leaves it.
fn parent_step(
    parent: &ParentRef,
    members: &[Value],
    live: Option<Live>,
    manager: &str,
    time: &str,
) -> Result<Step, ApiError> {
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    let writer = Writer {
        manager,
        api_version: "v1",
        time,
        subresource: None,
    };
    let wanted = applyset::parent_object(parent, members, env!("CARGO_PKG_VERSION"));
    let (outcome, new) = match &live {
        None => (
            Outcome::Created,
            Some(write::prepare_create(
                secrets,
                Some(&parent.namespace),
                wanted,
                &writer,
                None,
                true,
            )?),
        ),
        Some((old, _)) => {
            let mut new = old.clone();
            let meta = write::meta(&mut new);
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            labels[applyset::ID_LABEL] = wanted["metadata"]["labels"][applyset::ID_LABEL].clone();
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.remove(applyset::NAMESPACES_ANNOTATION);
                if let Some(w) = wanted["metadata"]["annotations"].as_object() {
                    a.extend(w.clone());
                }
            }
            match write::prepare_update(secrets, old, new, false, Some(&writer), None)? {
                Some(v) => (Outcome::Configured, Some(v)),
                None => (Outcome::Unchanged, None),
            }
        }
    };
    Ok(Step {
        r: secrets,
        namespace: Some(parent.namespace.clone()),
        name: parent.name.clone(),
        outcome,
        live,
        new,
    })
}
