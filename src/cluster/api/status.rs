//! API errors as Kubernetes `metav1.Status` objects: the code, reason, message and details
//! clients branch on (`kubectl` prints the message; client-go and the Python client read the
//! code and reason).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub use crate::apply::cause::Cause;
use crate::cluster::store::{StoreError, Unavailable};

/// Why a request failed. Each variant maps to one Kubernetes reason.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} \"{name}\" not found")]
    NotFound { resource: String, name: String },

    #[error("the server could not find the requested resource")]
    NoRoute,

    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        resource: String,
        group: String,
        name: String,
    },

    #[error("Operation cannot be fulfilled on {resource} \"{name}\": {detail}")]
    Conflict {
        resource: String,
        name: String,
        detail: String,
    },

    #[error("Apply failed with {} conflict{}: {}", causes.len(), if causes.len() == 1 { "" } else { "s" }, causes.iter().map(|c| c.message.as_str()).collect::<Vec<_>>().join("\n"))]
    ApplyConflict {
        resource: String,
        name: String,
        causes: Vec<Cause>,
    },

    #[error("{kind} \"{name}\" is invalid: {}", join_causes(causes))]
    Invalid {
        kind: String,
        group: String,
        name: String,
        causes: Vec<Cause>,
    },

    #[error("{0}")]
    BadRequest(String),

    #[error("the request body is larger than the limit of {limit} bytes ({})", mib(*limit))]
    TooLarge { limit: usize },

    #[error("the object would be {size} bytes, more than the limit of {limit} bytes ({}) an object may have", mib(*limit))]
    ObjectTooLarge { size: usize, limit: usize },

    #[error(
        "the body of the request was in an unknown format - accepted media types include: {accepted}"
    )]
    UnsupportedMediaType { accepted: String },

    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,

    #[error("Unauthorized")]
    Unauthorized,

    #[error(
        "{resource} is forbidden: User \"{user}\" cannot {verb} resource \"{resource}\" in API group \"{group}\"{}",
        namespace.as_ref().map(|ns| format!(" in the namespace \"{ns}\"")).unwrap_or_default()
    )]
    Forbidden {
        user: String,
        verb: String,
        resource: String,
        group: String,
        namespace: Option<String>,
    },

    /// The server is at its limit of concurrent requests of this kind; the client should
    /// retry after `retry_after` seconds (sent as `Retry-After`).
    #[error(
        "too many requests, please try again later: the server is at its limit of {limit} concurrent {kind} requests"
    )]
    TooManyRequests {
        kind: &'static str,
        limit: usize,
        retry_after: u32,
    },

    /// An eviction a PodDisruptionBudget forbids now (429): the client retries later, as
    /// `kubectl drain` does; the cause names the budget.
    #[error("{message}")]
    DisruptionBudget { message: String, cause: String },

    /// A list or watch asked for a revision the store no longer holds.
    #[error("too old resource version: {requested} ({compacted})")]
    Expired { requested: i64, compacted: i64 },

    #[error("the store failed")]
    Store(#[from] StoreError),

    #[error("internal error: {0}")]
    Internal(String),
}

/// A byte count in MiB, as limits are quoted: `1.5 MiB`.
fn mib(bytes: usize) -> String {
    format!(
        "{} MiB",
        (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0
    )
}

fn join_causes(causes: &[Cause]) -> String {
    let parts: Vec<String> = causes
        .iter()
        .map(|c| {
            if c.field.is_empty() {
                c.message.clone()
            } else {
                format!("{}: {}", c.field, c.message)
            }
        })
        .collect();
    if parts.len() == 1 {
        parts[0].clone()
    } else {
        format!("[{}]", parts.join(", "))
    }
}

impl ApiError {
    pub fn not_found(resource: &super::resources::Resource, name: &str) -> ApiError {
        ApiError::NotFound {
            resource: resource.qualified(),
            name: name.to_string(),
        }
    }

    pub fn stale(resource: &super::resources::Resource, name: &str) -> ApiError {
        ApiError::Conflict {
            resource: resource.qualified(),
            name: name.to_string(),
            detail: "the object has been modified; please apply your changes to the latest version and try again".into(),
        }
    }

    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict { .. } => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. }
            | ApiError::ObjectTooLarge { .. }
            | ApiError::Store(StoreError::TxnTooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Expired { .. } => StatusCode::GONE,
            ApiError::TooManyRequests { .. } | ApiError::DisruptionBudget { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Store(StoreError::Compacted { .. }) => StatusCode::GONE,
            ApiError::Store(e) => match e.unavailable() {
                Some(Unavailable::NoQuorum) => StatusCode::SERVICE_UNAVAILABLE,
                Some(Unavailable::TimedOut) => StatusCode::GATEWAY_TIMEOUT,
                None => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::TooLarge { .. }
            | ApiError::ObjectTooLarge { .. }
            | ApiError::Store(StoreError::TxnTooLarge { .. }) => "RequestEntityTooLarge",
            ApiError::UnsupportedMediaType { .. } => "UnsupportedMediaType",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
            ApiError::TooManyRequests { .. } | ApiError::DisruptionBudget { .. } => {
                "TooManyRequests"
            }
            ApiError::Expired { .. } | ApiError::Store(StoreError::Compacted { .. }) => "Expired",
            ApiError::Store(e) => match e.unavailable() {
                Some(Unavailable::NoQuorum) => "ServiceUnavailable",
                Some(Unavailable::TimedOut) => "Timeout",
                None => "InternalError",
            },
            ApiError::Internal(_) => "InternalError",
        }
    }

    fn details(&self) -> Option<Value> {
        let causes = |causes: &[Cause]| -> Value {
            causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect()
        };
        match self {
            ApiError::NotFound { resource, name } => {
                let (kind, group) = split_qualified(resource);
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::AlreadyExists {
                resource,
                group,
                name,
            } => Some(json!({"name": name, "group": group, "kind": split_qualified(resource).0})),
            ApiError::Conflict { resource, name, .. } => {
                let (kind, group) = split_qualified(resource);
                Some(json!({"name": name, "group": group, "kind": kind}))
            }
            ApiError::ApplyConflict {
                resource,
                name,
                causes: c,
            } => {
                let (kind, group) = split_qualified(resource);
                Some(json!({"name": name, "group": group, "kind": kind, "causes": causes(c)}))
            }
            ApiError::Invalid {
                kind,
                group,
                name,
                causes: c,
            } => Some(json!({"name": name, "group": group, "kind": kind, "causes": causes(c)})),
            ApiError::Forbidden {
                resource, group, ..
            } => Some(json!({"group": group, "kind": resource})),
            ApiError::TooManyRequests { retry_after, .. } => {
                Some(json!({"retryAfterSeconds": retry_after}))
            }
            ApiError::DisruptionBudget { cause, .. } => {
                Some(json!({"causes": [{"reason": "DisruptionBudget", "message": cause}]}))
            }
            _ => None,
        }
    }

    /// The `metav1.Status` body.
    pub fn to_status(&self) -> Value {
        let message = match self {
            // Never show store internals (paths, SQL) to clients; the log has them.
            ApiError::Store(StoreError::Compacted {
                requested,
                compacted,
            }) => format!("too old resource version: {requested} ({compacted})"),
            // The store's own words: the limit and how to raise it, nothing internal.
            ApiError::Store(StoreError::TxnTooLarge { message }) => message.clone(),
            ApiError::Store(e) => match e.unavailable() {
                Some(Unavailable::NoQuorum) => {
                    "the store (etcd) has no quorum or cannot be reached; retry later".to_string()
                }
                Some(Unavailable::TimedOut) => {
                    "the store (etcd) did not answer in time; the change may or may not have been made".to_string()
                }
                None => "the store failed; see the server log".to_string(),
            },
            other => other.to_string(),
        };
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": self.reason(),
            "code": self.code().as_u16(),
        });
        if let Some(details) = self.details() {
            status["details"] = details;
        }
        status
    }
}

fn split_qualified(resource: &str) -> (&str, &str) {
    resource.split_once('.').unwrap_or((resource, ""))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if matches!(self, ApiError::Store(_) | ApiError::Internal(_)) {
            tracing::error!(error = %self, source = ?std::error::Error::source(&self), "request failed");
        }
        let mut response = (self.code(), axum::Json(self.to_status())).into_response();
        if let ApiError::TooManyRequests { retry_after, .. } = self {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(retry_after),
            );
        }
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"berth\""),
            );
        }
        response
    }
}

/// The `Status` a successful delete of an object without finalizers returns when the client
/// did not ask for the object.
pub fn success_status(resource: &super::resources::Resource, name: &str, uid: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": {"name": name, "group": resource.group, "kind": resource.plural, "uid": uid},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_carry_kubernetes_codes_reasons_and_messages() {
        let e = ApiError::NotFound {
            resource: "deployments.apps".into(),
            name: "web".into(),
        };
        let s = e.to_status();
        assert_eq!(s["code"], 404);
        assert_eq!(s["reason"], "NotFound");
        assert_eq!(s["message"], "deployments.apps \"web\" not found");
        assert_eq!(s["details"]["kind"], "deployments");
        assert_eq!(s["details"]["group"], "apps");

        let e = ApiError::Invalid {
            kind: "ConfigMap".into(),
            group: String::new(),
            name: "x".into(),
            causes: vec![
                Cause {
                    reason: "FieldValueInvalid".into(),
                    message: "bad".into(),
                    field: "data[a b]".into(),
                },
                Cause {
                    reason: "FieldValueRequired".into(),
                    message: "Required value".into(),
                    field: "metadata.name".into(),
                },
            ],
        };
        let s = e.to_status();
        assert_eq!(s["code"], 422);
        assert_eq!(s["details"]["causes"].as_array().unwrap().len(), 2);
        assert!(
            s["message"]
                .as_str()
                .unwrap()
                .starts_with("ConfigMap \"x\" is invalid: [")
        );
        assert_eq!(
            ApiError::Expired {
                requested: 1,
                compacted: 5
            }
            .to_status()["reason"],
            "Expired"
        );
    }
}
