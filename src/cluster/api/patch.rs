//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
//! strategic merge patch. The last two are [`crate::manifest::patch`]'s, the one
//! implementation kustomize's `patches` use too; this file turns their errors into API
//! statuses. Server-side apply is in [`crate::apply::ssa`].

use serde_json::Value;

use super::status::ApiError;
use crate::manifest::patch::{self as pure, JsonPatchError};

/// The patch types the server accepts, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<PatchType> {
        let ct = ct.split(';').next().unwrap_or("").trim();
        match ct {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    pub const ACCEPTED: &'static str = "application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml";
}

pub fn json_merge(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

pub fn json_patch(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    pure::json_patch(target, patch).map_err(|e| match e {
        JsonPatchError::Invalid(_) => ApiError::BadRequest(e.to_string()),
        JsonPatchError::Failed(_) => ApiError::Invalid {
            kind: String::new(),
            group: String::new(),
            name: String::new(),
            causes: vec![super::status::Cause {
                reason: "FieldValueInvalid".into(),
                message: e.to_string(),
                field: String::new(),
            }],
        },
    })
}

/// Applies a strategic merge patch to `target`.
pub fn strategic_merge(target: &mut Value, patch: &Value) -> Result<(), ApiError> {
    pure::strategic_merge(target, patch).map_err(|e| ApiError::BadRequest(e.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_replaces_lists_and_errors_become_statuses() {
        let mut d = json!({"spec": {"replicas": 1, "containers": [{"name": "a"}, {"name": "b"}]}});
        json_merge(&mut d, &json!({"spec": {"containers": [{"name": "only"}]}}));
        assert_eq!(d["spec"]["containers"].as_array().unwrap().len(), 1);
        assert!(matches!(
            json_patch(&mut d, &json!([{"op": "remove", "path": "/nope"}])),
            Err(ApiError::Invalid { .. })
        ));
        assert!(matches!(
            json_patch(&mut d, &json!("nope")),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            strategic_merge(&mut d, &json!({"spec": {"containers": [{"image": "x"}]}})),
            Err(ApiError::BadRequest(_))
        ));
    }
}
