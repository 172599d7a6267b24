//! The wire format of a GitSource's drift, shared by git sync (which serves it) and
//! `berth diff --source` (which renders it): `GET` [`path`] answers with a [`SourceDrift`],
//! the dry-run batch of the source's last applied commit against the live objects.

use serde::{Deserialize, Serialize};

use super::batch::ObjectResult;

/// The path of a source's drift.
pub fn path(namespace: &str, name: &str) -> String {
    format!("/apis/berth.dev/v1/namespaces/{namespace}/gitsources/{name}/drift")
}

/// The answer: the dry run of the last applied commit against the live objects.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDrift {
    /// The last applied commit, the git side of the comparison.
    pub commit: String,
    /// Each object with `live` and `object` (as git would make it); a pruned one has no
    /// `object`, one deleted from the cluster no `live`.
    pub results: Vec<ObjectResult>,
}
