//! The apply planner: from a batch request and a snapshot of what the cluster holds, what
//! applying the batch does to each object (created, configured, unchanged, pruned), the
//! parent's new labels and annotations, and every refusal that aborts the whole batch
//! (objects the server would not take, field-manager conflicts, a parent that belongs to
//! someone else, the mass-delete guard).
//!
//! Pure, a planner apart from its executor (as Oxide's reconfigurator plans and an executor
//! carries out): no I/O and no clock, the time of the writes is passed in. Each object's merge
//! is server-side apply ([`super::ssa`]). What the planner needs of the API server it plans
//! for comes through [`Admission`], which it owns: the kinds the server serves, and how the
//! server admits one write (server-set fields, defaults, validation, allocated addresses).
//! Admission stays the server's because it is not pure (uids and addresses are random) and
//! because it is the same code every single-object write runs.
//!
//! The executor is the API server's batch endpoint (`crate::cluster::api::batch`): it reads
//! the [`Snapshot`], calls [`desired`] and [`plan`], and commits the [`Plan`] in one store
//! transaction. `berth apply`, `berth diff -f` and `berth up` reach it over HTTP; git sync
//! calls it in process. There is no other apply path.

mod parent;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::Value;

use super::applyset::{self, MassDelete, ParentRef};
use super::batch::{BatchRequest, FIELD_MANAGER, ObjectResult, Outcome};
use super::cause::Cause;
use super::ssa::{Writer, server_side_apply};

/// A kind the server serves, as far as the planner needs to know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// `v1` or `apps/v1`.
    pub api_version: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
}

/// The kind of every ApplySet parent berth writes.
const SECRET: Kind = Kind {
    api_version: "v1",
    kind: "Secret",
    namespaced: true,
};

/// What the planner needs of the API server it plans for: the kinds it serves, and how it
/// admits one write. The API server implements it over its resource table, its write
/// preparation and a snapshot of the addresses already allocated.
pub trait Admission {
    /// Why the server refuses a write.
    type Error;

    /// The served kind of an `apiVersion` and `kind`, if the server serves it.
    fn kind(&self, api_version: &str, kind: &str) -> Option<Kind>;

    /// The `apiVersion` the server serves a kind of this `apiVersion`'s group as, when it
    /// does not serve this one (for the refusal's help).
    fn served_as(&self, _api_version: &str, _kind: &str) -> Option<String> {
        None
    }

    /// How the snapshot names an object (the API server: its store key). The snapshot's
    /// objects are ordered by it, and so are the pruned steps.
    fn key(&self, kind: Kind, namespace: Option<&str>, name: &str) -> String;

    /// Checks an object's `apiVersion`, `kind` and namespace as a write of `kind` to
    /// `namespace` would, filling in what is missing.
    fn check_identity(
        &self,
        kind: Kind,
        namespace: &str,
        object: &mut Value,
    ) -> Result<(), Self::Error>;

    /// The object a create stores: server-set fields, defaults, validation, addresses.
    /// `record_update` records the write as `writer`'s `Update` in `managedFields` (an apply's
    /// result already carries its own entry).
    fn create(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        object: Value,
        writer: &Writer<'_>,
        record_update: bool,
    ) -> Result<Value, Self::Error>;

    /// The object an update of `live` to `object` stores, `None` when nothing would change.
    /// `writer` records the write as its `Update` in `managedFields`.
    fn update(
        &mut self,
        kind: Kind,
        live: &Value,
        object: Value,
        writer: Option<&Writer<'_>>,
    ) -> Result<Option<Value>, Self::Error>;

    /// The field-level causes of a refusal (one cause carrying the whole message when it has
    /// none), for the one refusal that lists every cause of the batch.
    fn causes(error: Self::Error) -> Vec<Cause>;
}

/// Why a batch is not applied. Nothing of it is.
#[derive(Debug, thiserror::Error)]
pub enum PlanError<E> {
    /// Objects the server would not take (unknown kinds, missing names, duplicates, missing
    /// or terminating namespaces, invalid objects), with any field-manager conflicts.
    #[error("ApplySet {set:?} is invalid: {}", messages(causes))]
    Invalid { set: String, causes: Vec<Cause> },
    /// Other field managers own fields the batch sets to other values (and `force` is off).
    #[error(
        "ApplySet {set:?} conflicts with other field managers: {}",
        messages(causes)
    )]
    Conflicts { set: String, causes: Vec<Cause> },
    /// A Secret named like the parent exists and is not the parent of a berth ApplySet.
    #[error(
        "the Secret {namespace}/{name} exists and is not the parent of a berth ApplySet \
         (tooling {tooling:?}); choose another --applyset name"
    )]
    ForeignParent {
        namespace: String,
        name: String,
        tooling: String,
    },
    /// The prune guard held the batch; `would_go` names each object the prune would delete.
    #[error("{refusal}")]
    MassDelete {
        refusal: MassDelete,
        would_go: Vec<String>,
    },
    /// The prune would delete a Namespace, and with it everything in it.
    #[error(
        "the prune would delete Namespace {name}, and everything in it; berth apply does not \
         prune namespaces: delete it explicitly (berth delete namespace {name}), or keep its manifest"
    )]
    PrunesNamespace { name: String },
    /// The server refused the parent object itself.
    #[error(transparent)]
    Parent(E),
}

fn messages(causes: &[Cause]) -> String {
    causes
        .iter()
        .map(|c| c.message.as_str())
        .collect::<Vec<_>>()
        .join("; ")
}

/// One object the request names, ready for server-side apply.
#[derive(Debug, Clone)]
pub struct Desired {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    /// [`Admission::key`].
    pub key: String,
    /// The object as the request has it, its identity checked and its membership labelled.
    pub applied: Value,
}

/// A live object and the revision it was read at.
pub type Live = (Value, i64);

/// What the live side holds, read before planning.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The objects of every kind and namespace the set may hold, by [`Admission::key`].
    pub objects: BTreeMap<String, Live>,
    /// The parent Secret, if it exists.
    pub parent: Option<Live>,
    /// Every Namespace, by name.
    pub namespaces: BTreeMap<String, Live>,
}

/// One write (or non-write) of the batch.
#[derive(Debug, Clone)]
pub struct Step {
    pub kind: Kind,
    pub namespace: Option<String>,
    pub name: String,
    /// [`Admission::key`].
    pub key: String,
    pub outcome: Outcome,
    /// The object as read, which the write must still find.
    pub live: Option<Live>,
    /// What to store; `None` for unchanged and pruned objects.
    pub new: Option<Value>,
}

impl Step {
    /// The step as the batch's response reports it; only dry runs carry the objects.
    pub fn result(&self, dry_run: bool) -> ObjectResult {
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
            api_version: self.kind.api_version.into(),
            kind: self.kind.kind.into(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            outcome: self.outcome,
            object,
            live,
        }
    }
}

/// Everything the batch does, computed from one snapshot.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The requested objects in request order, then the pruned ones in snapshot order.
    pub steps: Vec<Step>,
    pub parent: Step,
    /// Existing namespaces the created objects need (the write must still find them), not
    /// counting those the batch creates itself.
    pub needed_namespaces: BTreeSet<String>,
}

impl Plan {
    /// Whether committing the plan writes anything.
    pub fn writes(&self) -> bool {
        self.parent.new.is_some()
            || self
                .steps
                .iter()
                .any(|s| s.new.is_some() || s.outcome == Outcome::Pruned)
    }
}

/// `Deployment shop/web`, for causes.
fn describe(kind: Kind, namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(ns) => format!("{} {ns}/{name}", kind.kind),
        None => format!("{} {name}", kind.kind),
    }
}

/// Prefixes each cause with the object it is about.
fn about(object: &str, causes: Vec<Cause>) -> impl Iterator<Item = Cause> + '_ {
    causes.into_iter().map(move |mut c| {
        c.message = format!("{object}: {}", c.message);
        c
    })
}

/// Turns the request's objects into [`Desired`] members of the set of `parent`: each must be
/// of a served kind, named, and named once; namespaced ones without a namespace go to the
/// parent's.
pub fn desired<A: Admission>(
    objects: &[Value],
    parent: &ParentRef,
    admission: &A,
) -> Result<Vec<Desired>, PlanError<A::Error>> {
    let id = parent.id();
    let parent_key = admission.key(SECRET, Some(&parent.namespace), &parent.name);
    let mut out = Vec::with_capacity(objects.len());
    let mut causes = Vec::new();
    let mut seen = HashSet::new();
    for (index, object) in objects.iter().enumerate() {
        let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
        let (api_version, kind, name) =
            (text("/apiVersion"), text("/kind"), text("/metadata/name"));
        let what = format!("object #{index} ({kind} {name})");
        let Some(served) = admission.kind(api_version, kind) else {
            let help = match admission.served_as(api_version, kind) {
                Some(other) => format!("it serves {kind} as {other}: write that apiVersion"),
                None => "see `kubectl api-resources`".to_string(),
            };
            causes.push(Cause {
                reason: "FieldValueNotSupported".into(),
                message: format!(
                    "{what}: this server does not serve {kind} of {api_version} ({help})"
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
            parent.namespace.as_str()
        } else {
            own_ns
        };
        if let Err(e) = admission.check_identity(served, ns, &mut applied) {
            causes.extend(about(&what, A::causes(e)));
            continue;
        }
        applyset::mark_member(&mut applied, &id);
        let namespace = served.namespaced.then(|| ns.to_string());
        let key = admission.key(served, namespace.as_deref(), name);
        if key == parent_key {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!(
                    "{what}: this is the ApplySet's own parent object; use another --applyset name"
                ),
                field: "metadata.name".into(),
            });
        } else if !seen.insert(key.clone()) {
            causes.push(Cause {
                reason: "FieldValueDuplicate".into(),
                message: format!("{what}: the batch names this object twice"),
                field: "metadata.name".into(),
            });
        } else {
            out.push(Desired {
                kind: served,
                namespace,
                name: name.to_string(),
                key,
                applied,
            });
        }
    }
    if causes.is_empty() {
        Ok(out)
    } else {
        Err(PlanError::Invalid {
            set: parent.name.clone(),
            causes,
        })
    }
}

/// Plans the batch: each desired object's server-side-apply result over its live object,
/// admitted as the server admits a write at `now` (RFC 3339, as the server writes
/// timestamps); the members to prune and the guard on them; the parent as the batch leaves it.
pub fn plan<A: Admission>(
    batch: &BatchRequest,
    desired: Vec<Desired>,
    snapshot: Snapshot,
    parent: &ParentRef,
    admission: &mut A,
    now: &str,
) -> Result<Plan, PlanError<A::Error>> {
    let id = parent.id();
    let manager = batch.field_manager.as_deref().unwrap_or(FIELD_MANAGER);
    if let Some((p, _)) = &snapshot.parent {
        parent::check_owned(p, parent)?;
    }
    let created_namespaces: BTreeSet<String> = desired
        .iter()
        .filter(|d| d.kind.kind == "Namespace")
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
        let what = describe(d.kind, d.namespace.as_deref(), &d.name);
        let writer = Writer {
            manager,
            api_version: d.kind.api_version,
            time: now,
            subresource: None,
        };
        let live = snapshot.objects.get(&d.key).cloned();
        let merged = match server_side_apply(
            live.as_ref().map(|(v, _)| v),
            &d.applied,
            &writer,
            batch.force,
        ) {
            Ok(m) => m,
            Err(causes) => {
                conflicts.extend(about(&what, causes));
                continue;
            }
        };
        let admitted = match &live {
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
                admission
                    .create(d.kind, d.namespace.as_deref(), merged, &writer, false)
                    .map(|v| (Outcome::Created, Some(v)))
            }
            Some((old, _)) => admission
                .update(d.kind, old, merged, None)
                .map(|v| match v {
                    Some(v) => (Outcome::Configured, Some(v)),
                    None => (Outcome::Unchanged, None),
                }),
        };
        match admitted {
            Ok((outcome, new)) => {
                desired_keys.insert(d.key.clone());
                steps.push(Step {
                    kind: d.kind,
                    namespace: d.namespace,
                    name: d.name,
                    key: d.key,
                    outcome,
                    live,
                    new,
                });
            }
            Err(e) => invalid.extend(about(&what, A::causes(e))),
        }
    }
    if !invalid.is_empty() {
        invalid.extend(conflicts);
        return Err(PlanError::Invalid {
            set: parent.name.clone(),
            causes: invalid,
        });
    }
    if !conflicts.is_empty() {
        return Err(PlanError::Conflicts {
            set: parent.name.clone(),
            causes: conflicts,
        });
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
            let Some(kind) = text("/apiVersion")
                .zip(text("/kind"))
                .and_then(|(a, k)| admission.kind(a, k))
            else {
                continue;
            };
            pruned.push(Step {
                kind,
                namespace: text("/metadata/namespace")
                    .map(str::to_string)
                    .filter(|_| kind.namespaced),
                name: text("/metadata/name").unwrap_or("").to_string(),
                key: (*key).clone(),
                outcome: Outcome::Pruned,
                live: Some((object.clone(), *rev)),
                new: None,
            });
        }
        // A delta's snapshot holds only the members it names: the whole is the caller's.
        let whole = batch
            .delta
            .as_ref()
            .map_or(members.len(), |d| d.members_before);
        if let Err(refusal) = applyset::check_prune(pruned.len(), whole, batch.allow_mass_delete) {
            let would_go = pruned
                .iter()
                .map(|s| s.result(false).display_name())
                .collect();
            return Err(PlanError::MassDelete { refusal, would_go });
        }
        if let Some(ns) = pruned.iter().find(|s| s.kind.kind == "Namespace") {
            return Err(PlanError::PrunesNamespace {
                name: ns.name.clone(),
            });
        }
    }
    // Members kept without --prune stay in the set: the parent keeps listing their kinds.
    let kept: Vec<Value> = if batch.prune {
        Vec::new()
    } else {
        members
            .iter()
            .filter(|(k, _)| !desired_keys.contains(*k))
            .map(|(_, (v, _))| parent::member_identity(v))
            .collect()
    };
    let member_values: Vec<Value> = match &batch.delta {
        Some(delta) => delta.member_kinds.clone(),
        None => steps
            .iter()
            .filter_map(|s| s.new.as_ref().or(s.live.as_ref().map(|(v, _)| v)))
            .map(parent::member_identity)
            .chain(kept)
            .collect(),
    };
    let writer = Writer {
        manager,
        api_version: SECRET.api_version,
        time: now,
        subresource: None,
    };
    let parent_step = parent::step(parent, &member_values, snapshot.parent, admission, &writer)
        .map_err(PlanError::Parent)?;
    steps.extend(pruned);
    Ok(Plan {
        steps,
        parent: parent_step,
        needed_namespaces,
    })
}
