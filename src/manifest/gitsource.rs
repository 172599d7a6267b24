//! `GitSource` (`berth.dev/v1`): a git repository whose manifests berth keeps applied.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The annotation that asks git sync to sync a source now, set to the time of the request by
/// `berth gitsource sync` and by a forge's verified webhook call.
pub const SYNC_REQUESTED_ANNOTATION: &str = "berth.dev/sync-requested-at";

/// How many objects a GitSource's status (or one of its messages) names at most, so the
/// object stays small (well under 64 KiB) whatever the size of the repository.
pub const MAX_LISTED: usize = 50;

/// A watched git repository: the manifests under `path` at `ref` are the desired state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "dev.berth.v1.GitSource")]
pub struct GitSource {
    #[schemars(extend("const" = "berth.dev/v1"))]
    pub api_version: String,
    #[schemars(extend("const" = "GitSource"))]
    pub kind: String,
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: GitSourceSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<GitSourceStatus>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceSpec {
    /// The repository: an https, ssh or file URL, or a local path.
    #[schemars(length(min = 1))]
    pub url: String,
    /// Branch, tag or commit to follow. Default: the remote's HEAD (usually `main`).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    /// Folder inside the repository that holds the manifests. Default: the repository root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// How often to poll the repository, as a duration such as `30s`, `5m` or `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub interval: Option<String>,
    /// Delete objects that were applied from this source and have left it. Default: true.
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Let a commit prune every object of the source, or more than half of them.
    #[serde(default)]
    pub allow_mass_delete: bool,
    /// Revert changes made to applied objects outside git. Default: false.
    #[serde(default)]
    pub self_heal: bool,
    /// Secret in the same namespace holding credentials: `token`, `username`/`password`,
    /// or `identity` (an ssh private key) with `known_hosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectReference>,
    /// Stop syncing until set back to false.
    #[serde(default)]
    pub suspend: bool,
    /// Secret in the same namespace whose key `webhook-secret` authenticates calls to
    /// `POST /hooks/git/{namespace}/{name}` (GitHub's signature or GitLab's token).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret_ref: Option<LocalObjectReference>,
    /// Namespace given to every namespaced object of the source, overriding the one written
    /// (as Flux's `targetNamespace`). Default: objects keep theirs, and those without one go
    /// to the source's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub target_namespace: Option<String>,
    /// Sources that must be `Ready` before this one applies anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<DependencyReference>,
    /// What is done to the manifests after they are rendered and before they are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub post_build: Option<PostBuild>,
    /// Be `Ready` only once every applied object is healthy (Deployments rolled out).
    #[serde(default)]
    pub wait: bool,
    /// Objects that must be healthy before the source is `Ready` (a Deployment rolled out,
    /// any other object present and, if it has one, its `Ready` condition true).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub health_checks: Vec<HealthCheckReference>,
    /// How long `Ready` waits for health (with `wait` or `healthChecks`) before it turns
    /// `HealthCheckFailed`, as a duration such as `2m`. Default: the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"))]
    pub timeout: Option<String>,
}

/// Another GitSource, in this source's namespace unless `namespace` says otherwise.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DependencyReference {
    #[schemars(length(min = 1))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// Variable substitution in the rendered manifests, as Flux's `postBuild`: `${VAR}`,
/// `${VAR:=default}`, and `$${VAR}` for a literal `${VAR}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostBuild {
    /// Variables by name; they override those of `substituteFrom`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub substitute: std::collections::BTreeMap<String, String>,
    /// ConfigMaps and Secrets in the source's namespace whose keys are variables; a later
    /// one overrides an earlier one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub substitute_from: Vec<SubstituteReference>,
}

/// A ConfigMap or Secret of variables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubstituteReference {
    /// `ConfigMap` or `Secret`.
    #[schemars(extend("enum" = ["ConfigMap", "Secret"]))]
    pub kind: String,
    #[schemars(length(min = 1))]
    pub name: String,
    /// A missing object is then no error: it gives no variables.
    #[serde(default)]
    pub optional: bool,
}

/// An object whose health the source's `Ready` waits for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheckReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Default: the source's namespace (for a namespaced kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

fn default_true() -> bool {
    true
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalObjectReference {
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What the sync controller last did, and the health of what it applied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GitSourceStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// No longer written: the objects applied from a source are its ApplySet's members
    /// (`berth gitsource inventory NAME` lists them by label). An old status's list is read
    /// and dropped on the next status write.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// How many objects the last applied commit holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<i64>,
    /// How many objects differ from git; `drift` lists at most [`MAX_LISTED`] of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_count: Option<i64>,
    /// Healthy, Progressing, Degraded or Unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    /// The `berth.dev/sync-requested-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_sync_request: Option<String>,
    /// Fields of applied objects that differ from git (`Deployment default/web: spec.replicas`),
    /// at most [`MAX_LISTED`] objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryEntry {
    pub api_version: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let g: GitSource = serde_json::from_value(serde_json::json!({
            "apiVersion": "berth.dev/v1",
            "kind": "GitSource",
            "metadata": {"name": "app"},
            "spec": {"url": "https://example.invalid/repo.git"}
        }))
        .unwrap();
        assert!(g.spec.prune);
        assert!(!g.spec.self_heal);
        assert!(!g.spec.suspend);
    }
}
