//! The wire format of the atomic batch apply, shared by the API server (which plans it with
//! [`super::plan`] and commits it, `crate::cluster::api::batch`), `berth apply` /
//! `berth diff -f` / `berth up` (which send it) and git sync (which runs it in process and
//! gets a [`BatchRefusal`] back when nothing was applied).
//!
//! `POST /apis/berth.dev/v1/namespaces/{namespace}/applysets/{name}` with a [`BatchRequest`]
//! applies every object of the set named by its parent Secret `{namespace}/{name}` in one
//! store transaction and answers with a [`BatchResponse`].

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The field manager `berth apply` writes as.
pub const FIELD_MANAGER: &str = "berth";

/// The URL path of the batch endpoint for the ApplySet whose parent is `namespace/name`.
pub fn path(namespace: &str, name: &str) -> String {
    format!("/apis/berth.dev/v1/namespaces/{namespace}/applysets/{name}")
}

/// One batch: the whole desired set and how to apply it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchRequest {
    /// Every object of the set, as manifests write them. Namespaced objects that name no
    /// namespace go to the parent's.
    pub objects: Vec<Value>,
    /// Delete the members of the set that are no longer in `objects`.
    #[serde(default)]
    pub prune: bool,
    /// Let the prune delete every member, or more than half of them.
    #[serde(default)]
    pub allow_mass_delete: bool,
    /// Compute everything, store nothing; the response carries the objects.
    #[serde(default)]
    pub dry_run: bool,
    /// Take over fields other managers own instead of failing with a conflict.
    #[serde(default)]
    pub force: bool,
    /// The server-side apply field manager (default [`FIELD_MANAGER`]).
    #[serde(default)]
    pub field_manager: Option<String>,
    /// In process only (git sync): `objects` are not the whole set but the members that
    /// changed; see [`Delta`]. Never on the wire.
    #[serde(skip)]
    pub delta: Option<Delta>,
}

/// A batch that changes part of a set whose other members stay as they are (git sync between
/// two commits: only the objects whose manifests changed). The caller, which keeps an index
/// of the whole set, says what the planner cannot see without reading every member.
#[derive(Debug, Clone, Default)]
pub struct Delta {
    /// Members that left the set (`apiVersion`, `kind`, `metadata.name` and
    /// `metadata.namespace` are enough): pruned when `prune` is on.
    pub removed: Vec<Value>,
    /// How many members the set had before this batch: the mass-delete guard's whole.
    pub members_before: usize,
    /// `apiVersion`, `kind` and `metadata.namespace` of the members after the batch (one of
    /// each is enough): the parent's group-kinds and namespaces annotations.
    pub member_kinds: Vec<Value>,
}

/// What the batch did (or, in a dry run, would do) to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
    Pruned,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
            Outcome::Pruned => "pruned",
        }
    }
}

/// One object of the response.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectResult {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub outcome: Outcome,
    /// Dry runs only: the object as it would be stored (absent for a prune).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// Dry runs only: the object as it is now (absent for a create).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Value>,
}

impl ObjectResult {
    /// `deployment.apps/web`, as kubectl names objects in its output.
    pub fn display_name(&self) -> String {
        let kind = self.kind.to_lowercase();
        match self.api_version.rsplit_once('/') {
            Some((group, _)) => format!("{kind}.{group}/{}", self.name),
            None => format!("{kind}/{}", self.name),
        }
    }
}

/// The answer to a [`BatchRequest`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse {
    /// The ApplySet id (KEP-3659), as in the members' `applyset.kubernetes.io/part-of`.
    pub applyset_id: String,
    pub dry_run: bool,
    /// The store revision of the transaction (the current one when nothing was written).
    pub revision: i64,
    /// What happened to the parent object itself.
    pub parent: Outcome,
    /// The requested objects in request order, then the pruned ones.
    pub results: Vec<ObjectResult>,
}

/// Why a batch run in process (by git sync) was not applied.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BatchRefusal {
    /// The prune guard held the batch: `message` says why, `would_go` names each object.
    #[error("{message}")]
    MassDelete {
        message: String,
        would_go: Vec<String>,
    },
    /// Invalid objects, conflicts or a store failure: `message` with every cause in it, and
    /// the HTTP code the endpoint would have answered with.
    #[error("{message}")]
    Refused { code: u16, message: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_as_kubectl_prints_them() {
        let r = ObjectResult {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            namespace: Some("shop".into()),
            name: "web".into(),
            outcome: Outcome::Created,
            object: None,
            live: None,
        };
        assert_eq!(r.display_name(), "deployment.apps/web");
        let r = ObjectResult {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            ..r
        };
        assert_eq!(r.display_name(), "configmap/web");
    }

    #[test]
    fn options_default_to_off() {
        let r: BatchRequest = serde_json::from_str(r#"{"objects": []}"#).unwrap();
        assert!(!r.prune && !r.dry_run && !r.force && !r.allow_mass_delete);
    }
}
