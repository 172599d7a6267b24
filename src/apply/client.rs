//! Sending a [`BatchRequest`] to the API server's batch endpoint with the shared kube-rs
//! client, and reading back the response or the `Status` that says why nothing was applied.

use serde_json::Value;

use super::batch::{self, BatchRequest, BatchResponse};

/// Why a batch did not go through.
#[derive(Debug, thiserror::Error)]
pub enum BatchClientError {
    #[error("cannot reach the API server")]
    Transport(#[source] kube::Error),
    #[error("the API server sent a response that is not a batch result (HTTP {code})")]
    Decode {
        code: u16,
        #[source]
        source: serde_json::Error,
    },
    /// The server refused the batch; nothing was applied.
    #[error("{message}")]
    Rejected {
        code: u16,
        reason: String,
        message: String,
        /// One line per cause (object and field).
        causes: Vec<String>,
    },
}

/// Sends one batch for the ApplySet whose parent is `namespace/name`.
pub async fn send(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    request: &BatchRequest,
) -> Result<BatchResponse, BatchClientError> {
    let body = serde_json::to_vec(request).expect("a batch request serialises");
    let http_request = http::Request::post(batch::path(namespace, name))
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::ACCEPT, "application/json")
        .body(kube::client::Body::from(body))
        .expect("a valid request");
    let response = client
        .send(http_request)
        .await
        .map_err(BatchClientError::Transport)?;
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(BatchClientError::Transport)?;
    if (200..300).contains(&code) {
        return serde_json::from_slice(&bytes)
            .map_err(|source| BatchClientError::Decode { code, source });
    }
    Err(rejection(code, &bytes))
}

/// The refusal a non-2xx answer carries (a `metav1.Status`, or plain text from a proxy).
fn rejection(code: u16, bytes: &[u8]) -> BatchClientError {
    let status: Value = serde_json::from_slice(bytes).unwrap_or(Value::Null);
    let text = |key: &str| status.get(key).and_then(Value::as_str).map(str::to_string);
    let message = text("message").unwrap_or_else(|| {
        let body = String::from_utf8_lossy(bytes);
        match code {
            404 => "the API server has no batch apply endpoint (is it a berth server?)".into(),
            _ => format!("HTTP {code}: {}", body.trim()),
        }
    });
    let causes = status
        .pointer("/details/causes")
        .and_then(Value::as_array)
        .map(|causes| {
            causes
                .iter()
                .filter_map(|c| {
                    let message = c.get("message").and_then(Value::as_str)?;
                    let field = c.get("field").and_then(Value::as_str).unwrap_or("");
                    Some(if field.is_empty() || message.contains(field) {
                        message.to_string()
                    } else {
                        format!("{message} ({field})")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    BatchClientError::Rejected {
        code,
        reason: text("reason").unwrap_or_default(),
        message,
        causes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_becomes_a_message_and_one_line_per_cause() {
        let body = br#"{"kind":"Status","message":"refusing","reason":"Conflict","code":409,
            "details":{"causes":[{"message":"deployment.apps/web","field":""},
                                 {"message":"Deployment d/w: bad","field":"spec.replicas"}]}}"#;
        let BatchClientError::Rejected {
            message, causes, ..
        } = rejection(409, body)
        else {
            panic!("expected a rejection");
        };
        assert_eq!(message, "refusing");
        assert_eq!(
            causes,
            ["deployment.apps/web", "Deployment d/w: bad (spec.replicas)"]
        );
    }
}
