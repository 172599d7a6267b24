//! Lists: label and field selectors, `limit`/`continue` pages read at one store revision, and
//! all-namespace lists. A continue token names the revision and the last key returned, so
//! later pages are consistent with the first; once compacted they get 410 Expired.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};

use super::body::Params;
use super::resources::Resource;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::{SharedState, Target, json_response, table};

/// The selectors of a request.
pub(crate) struct Selectors {
    pub label: LabelSelector,
    pub field: FieldSelector,
}

impl Selectors {
    pub fn parse(params: &Params) -> Result<Selectors, ApiError> {
        let bad = |e: super::selectors::SelectorError| ApiError::BadRequest(e.to_string());
        Ok(Selectors {
            label: LabelSelector::parse(params.label_selector.as_deref().unwrap_or(""))
                .map_err(bad)?,
            field: FieldSelector::parse(params.field_selector.as_deref().unwrap_or(""))
                .map_err(bad)?,
        })
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.label.matches(object) && self.field.matches(object)
    }
}

pub(crate) fn revision_of(object: &Value) -> i64 {
    object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn store_key(r: &Resource, object: &Value) -> String {
    let ns = object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str);
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    r.key(ns, name)
}

fn encode_continue(revision: i64, key: &str) -> String {
    B64.encode(json!({"rv": revision, "start": key}).to_string())
}

fn decode_continue(token: &str) -> Result<(i64, String), ApiError> {
    let bad = || ApiError::BadRequest("continue key is not valid".into());
    let bytes = B64.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match (v["rv"].as_i64(), v["start"].as_str()) {
        (Some(rv), Some(start)) => Ok((rv, start.to_string())),
        _ => Err(bad()),
    }
}

/// One page of matching objects: the items, the revision read at and the continue token.
pub(crate) async fn page(
    state: &SharedState,
    t: &Target,
    params: &Params,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let r = t.resource;
    let selectors = Selectors::parse(params)?;
    let (mut at, mut after) = match &params.continue_token {
        Some(tok) => {
            let (rv, key) = decode_continue(tok)?;
            (Some(rv), Some(key))
        }
        None => (None, None),
    };
    let limit = params.limit;
    let mut items = Vec::new();
    loop {
        let page = state
            .storage
            .list(r, t.namespace.as_deref(), limit, after.clone(), at)
            .await
            .map_err(|e| match e {
                ApiError::Store(crate::cluster::store::StoreError::Compacted {
                    requested,
                    compacted,
                }) => ApiError::Expired {
                    requested,
                    compacted,
                },
                other => other,
            })?;
        at = Some(page.revision);
        for object in page.items {
            if limit > 0 && items.len() == limit {
                // The page is full: continue from the last item returned.
                let last = items.last().map(|o| store_key(r, o)).unwrap_or_default();
                return Ok((
                    items,
                    page.revision,
                    Some(encode_continue(page.revision, &last)),
                ));
            }
            if selectors.matches(&object) {
                items.push(object);
            }
        }
        match page.continue_after {
            Some(key) if limit > 0 && items.len() == limit => {
                return Ok((
                    items,
                    page.revision,
                    Some(encode_continue(page.revision, &key)),
                ));
            }
            Some(key) => after = Some(key),
            None => return Ok((items, page.revision, None)),
        }
    }
}

/// Every matching object (no paging), for delete-collection.
pub(crate) async fn matching(
    state: &SharedState,
    t: &Target,
    params: &Params,
) -> Result<Vec<Value>, ApiError> {
    let mut p = params.clone();
    p.limit = 0;
    p.continue_token = None;
    Ok(page(state, t, &p).await?.0)
}

pub(crate) async fn list(
    state: SharedState,
    t: Target,
    params: Params,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let (items, revision, cont) = page(&state, &t, &params).await?;
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    if table::wants_table(headers) {
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.resource, &items, &metadata),
        ));
    }
    let list = json!({
        "kind": t.resource.list_kind(),
        "apiVersion": t.resource.api_version,
        "metadata": metadata,
        "items": items,
    });
    Ok(json_response(StatusCode::OK, &list))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_garbage_is_refused() {
        let tok = encode_continue(42, "/registry/pods/a/b");
        assert_eq!(
            decode_continue(&tok).unwrap(),
            (42, "/registry/pods/a/b".into())
        );
        assert!(decode_continue("!!").is_err());
    }
}
