//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log as a byte stream,
//! with the query parameters of the Kubernetes `pods/log` subresource.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

use super::select::{self, ContainerRef};
use crate::cluster::api::status::ApiError;
use crate::daemons::agent::runtime::RuntimeError;
use crate::daemons::agent::runtime::streams::{LogOptions, LogStream, StreamingRuntime};

/// The log request's query, parsed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogQuery {
    pub options: LogOptions,
    /// Read the previous (terminated) instance of the container.
    pub previous: bool,
    /// Stop after this many bytes.
    pub limit_bytes: Option<u64>,
    pub pod_uid: Option<String>,
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "query parameter {name}={value:?} is not a boolean (use true or false)"
        ))),
    }
}

fn number(name: &str, value: &str) -> Result<u64, ApiError> {
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "query parameter {name}={value:?} is not a non-negative integer"
        ))
    })
}

/// Parses `follow`, `tailLines`, `timestamps`, `previous`, `sinceSeconds`, `limitBytes` and
/// `podUID`; other parameters (`container`, `pretty`) are ignored.
pub fn parse_query(query: Option<&str>) -> Result<LogQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
    let mut q = LogQuery::default();
    for (name, value) in &pairs {
        match name.as_str() {
            "follow" => q.options.follow = flag(name, value)?,
            "timestamps" => q.options.timestamps = flag(name, value)?,
            "previous" => q.previous = flag(name, value)?,
            "tailLines" => q.options.tail = Some(number(name, value)?),
            "sinceSeconds" => q.options.since_seconds = Some(number(name, value)?),
            "limitBytes" => q.limit_bytes = Some(number(name, value)?),
            "podUID" if !value.is_empty() => q.pod_uid = Some(value.clone()),
            _ => {}
        }
    }
    Ok(q)
}

/// Joins the lines the engine has already delivered into one chunk, so a large log is not
/// one HTTP frame per line at every hop (agent, server, client); a followed log still gets
/// each new line as soon as it arrives.
fn coalesce(stream: LogStream) -> impl Stream<Item = Result<Bytes, RuntimeError>> + Send {
    stream.ready_chunks(1024).flat_map(|batch| {
        let mut joined = BytesMut::new();
        let mut out = Vec::with_capacity(1);
        for item in batch {
            match item {
                Ok(bytes) => joined.extend_from_slice(&bytes),
                Err(e) => {
                    if !joined.is_empty() {
                        out.push(Ok(joined.split().freeze()));
                    }
                    out.push(Err(e));
                }
            }
        }
        if !joined.is_empty() {
            out.push(Ok(joined.freeze()));
        }
        futures_util::stream::iter(out)
    })
}

/// Serves one log request.
pub async fn handle<R: StreamingRuntime>(
    runtime: Arc<R>,
    namespace: String,
    pod: String,
    container: String,
    query: Option<&str>,
) -> Result<Response, ApiError> {
    let q = parse_query(query)?;
    let target = ContainerRef {
        namespace,
        pod,
        container,
        pod_uid: q.pod_uid.clone(),
    };
    let found = runtime
        .list_containers(&target.label_filter())
        .await
        .map_err(|e| ApiError::Internal(format!("listing containers: {e}")))?;
    let chosen = select::for_logs(&target, &found, q.previous)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let stream = coalesce(runtime.log_stream(&chosen.id, &q.options));
    let body = match q.limit_bytes {
        None => Body::from_stream(stream),
        Some(limit) => Body::from_stream(stream.scan(limit, |left, chunk| {
            let next = (*left > 0).then(|| {
                chunk.map(|mut bytes| {
                    let keep = usize::try_from(*left)
                        .unwrap_or(usize::MAX)
                        .min(bytes.len());
                    bytes.truncate(keep);
                    *left -= keep as u64;
                    bytes
                })
            });
            std::future::ready(next)
        })),
    };
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_log_parameters_parse() {
        let q = parse_query(Some(
            "container=app&follow=true&tailLines=5&timestamps=true&previous=false&sinceSeconds=60&podUID=u",
        ))
        .unwrap();
        assert!(q.options.follow && q.options.timestamps && !q.previous);
        assert_eq!(q.options.tail, Some(5));
        assert_eq!(q.options.since_seconds, Some(60));
        assert_eq!(q.pod_uid.as_deref(), Some("u"));
        assert_eq!(parse_query(None).unwrap(), LogQuery::default());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = parse_query(Some("tailLines=ten")).unwrap_err();
        assert_eq!(err.code(), StatusCode::BAD_REQUEST);
        assert!(err.to_string().contains("tailLines=\"ten\""), "{err}");
        assert!(parse_query(Some("follow=maybe")).is_err());
    }
}
