//! Request bodies and query parameters: a size limit enforced while reading (413), JSON with
//! serde's nesting limit, YAML through the one manifest loader with its limits, and the
//! query parameters of every verb.

use axum::body::Body;
use axum::http::{HeaderMap, header};
use http_body_util::BodyExt;
use serde_json::Value;

use super::status::ApiError;
use crate::manifest::{LoadOptions, load_text};

/// Query parameters of resource requests.
#[derive(Debug, Clone, Default)]
pub struct Params {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub watch: bool,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub timeout_seconds: Option<u64>,
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
    pub propagation_policy: Option<String>,
    /// `gracePeriodSeconds` of a delete.
    pub grace_period_seconds: Option<i64>,
    /// `Ignore` turns off strict validation of unknown fields.
    pub field_validation: Option<String>,
}

fn truthy(v: &str) -> bool {
    matches!(v, "1" | "true" | "True")
}

impl Params {
    pub fn parse(query: Option<&str>) -> Result<Params, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::BadRequest(format!("bad query string: {e}")))?;
        let mut p = Params::default();
        for (k, v) in pairs {
            match k.as_str() {
                "labelSelector" => p.label_selector = Some(v),
                "fieldSelector" => p.field_selector = Some(v),
                "limit" => {
                    p.limit = v
                        .parse()
                        .map_err(|_| ApiError::BadRequest(format!("limit: not a number: {v}")))?
                }
                "continue" if !v.is_empty() => p.continue_token = Some(v),
                "watch" => p.watch = truthy(&v),
                "resourceVersion" if !v.is_empty() => p.resource_version = Some(v),
                "allowWatchBookmarks" => p.allow_bookmarks = truthy(&v),
                "timeoutSeconds" => p.timeout_seconds = v.parse().ok(),
                "dryRun" => {
                    if v != "All" {
                        return Err(ApiError::BadRequest(format!(
                            "dryRun: unsupported value {v:?}; only \"All\" is supported"
                        )));
                    }
                    p.dry_run = true;
                }
                "fieldManager" => p.field_manager = Some(v),
                "force" => p.force = truthy(&v),
                "propagationPolicy" => p.propagation_policy = Some(v),
                "gracePeriodSeconds" => p.grace_period_seconds = v.parse().ok(),
                "fieldValidation" => p.field_validation = Some(v),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Reads the body, refusing more than `limit` bytes without buffering them.
pub async fn read_limited(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(ApiError::TooLarge { limit })
        }
        Err(e) => Err(ApiError::BadRequest(format!(
            "cannot read the request body: {e}"
        ))),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
}

/// Parses JSON (the default) or YAML (`application/yaml`, `application/apply-patch+yaml`).
pub fn decode(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    if ct.starts_with(super::protobuf::CONTENT_TYPE) {
        return super::protobuf::decode(bytes);
    }
    if ct.contains("yaml") {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| ApiError::BadRequest("the body is not UTF-8".into()))?;
        return decode_yaml(text);
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid JSON: {e}")))
}

fn decode_yaml(text: &str) -> Result<Value, ApiError> {
    let (_, objects, problems) =
        load_text("request".into(), text.to_string(), LoadOptions::default());
    if let Some(p) = problems.first() {
        return Err(ApiError::BadRequest(format!(
            "the body is not valid YAML: {}",
            p.reason
        )));
    }
    match objects.as_slice() {
        [one] => Ok(one.value.clone()),
        [] => Err(ApiError::BadRequest("the body is empty".into())),
        _ => Err(ApiError::BadRequest(
            "the body holds more than one object".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_parse_what_kubectl_sends() {
        let p = Params::parse(Some(
            "labelSelector=app%3Dweb&limit=500&watch=1&allowWatchBookmarks=true&dryRun=All&fieldManager=kubectl-client-side-apply&force=true",
        ))
        .unwrap();
        assert_eq!(p.label_selector.as_deref(), Some("app=web"));
        assert_eq!(p.limit, 500);
        assert!(p.watch && p.allow_bookmarks && p.dry_run && p.force);
        assert!(Params::parse(Some("dryRun=Some")).is_err());
    }

    #[test]
    fn deep_json_and_yaml_alias_bombs_are_refused() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(decode(&HeaderMap::new(), deep.as_bytes()).is_err());
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(decode_yaml(bomb).is_err());
    }
}
