//! Lists: label and field selectors, `limit`/`continue` pages read at one store revision, and
//! all-namespace lists. A continue token names the revision and the last key returned, so
//! later pages are consistent with the first; once compacted they get 410 Expired.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::body::Params;
use super::selectors::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::storage::StoredObject;
use super::{SharedState, Target, json_response, raw_json_response, table};

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

pub(crate) fn encode_continue(revision: i64, key: &str) -> String {
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

/// One page of matching objects, still as stored bytes: the items, the revision read at and
/// the continue token. Objects are decoded only when a selector must look inside them.
pub(crate) async fn stored_page(
    state: &SharedState,
    t: &Target,
    params: &Params,
) -> Result<(Vec<StoredObject>, i64, Option<String>), ApiError> {
    let r = t.resource;
    let selectors = Selectors::parse(params)?;
    let select_all = selectors.label.is_empty() && selectors.field.is_empty();
    let (mut at, mut after) = match &params.continue_token {
        Some(tok) => {
            let (rv, key) = decode_continue(tok)?;
            (Some(rv), Some(key))
        }
        None => (None, None),
    };
    let limit = params.limit;
    let mut items: Vec<StoredObject> = Vec::new();
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
                let last = items.last().map(|o| o.key.clone()).unwrap_or_default();
                return Ok((
                    items,
                    page.revision,
                    Some(encode_continue(page.revision, &last)),
                ));
            }
            if select_all || selectors.matches(&object.decode()?) {
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

/// One page of matching objects, decoded.
pub(crate) async fn page(
    state: &SharedState,
    t: &Target,
    params: &Params,
) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
    let (stored, revision, cont) = stored_page(state, t, params).await?;
    let items = stored
        .iter()
        .map(StoredObject::decode)
        .collect::<Result<Vec<_>, _>>()?;
    Ok((items, revision, cont))
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
    if table::wants_table(headers) {
        let (items, revision, cont) = page(&state, &t, &params).await?;
        let metadata = list_metadata(revision, cont);
        return Ok(json_response(
            StatusCode::OK,
            &table::table(t.resource, &items, &metadata),
        ));
    }
    if params.limit == 0 && params.continue_token.is_none() {
        return streamed(state, t, params).await;
    }
    let (items, revision, cont) = stored_page(&state, &t, &params).await?;
    let mut body = list_head(&t, revision, cont)?;
    body.reserve(items.iter().map(|o| o.json.len() + 40).sum::<usize>() + 16);
    write_items(&mut body, &items, true)?;
    body.extend_from_slice(b"]}");
    Ok(raw_json_response(StatusCode::OK, body))
}

/// Objects read from the store per step of a streamed list.
const STREAM_CHUNK: usize = 500;

/// A whole list (no `limit`), sent as it is read: [`STREAM_CHUNK`] objects at a time, every
/// chunk read at the revision of the first, as the pages of a `limit`/`continue` list are. The
/// server never holds more than a chunk, where building the body whole held every object
/// twice (10,000 pods: ~40 MiB per concurrent list, kept by the allocator afterwards). An
/// error before the first byte is a Status; a later one (the revision compacted mid-list,
/// minutes into it) cuts the body short, which clients report as a broken response.
async fn streamed(state: SharedState, t: Target, params: Params) -> Result<Response, ApiError> {
    let mut params = params;
    params.limit = STREAM_CHUNK;
    let (items, revision, next) = stored_page(&state, &t, &params).await?;
    let mut first = list_head(&t, revision, None)?;
    write_items(&mut first, &items, true)?;
    drop(items);
    let rest = futures::stream::unfold(
        (state, t, params, Some(next)),
        |(state, t, mut params, next)| async move {
            let Some(token) = next? else {
                // Every chunk sent: close the list, then end.
                return Some((Ok(Bytes::from_static(b"]}")), (state, t, params, None)));
            };
            params.continue_token = Some(token);
            let chunk = stored_page(&state, &t, &params)
                .await
                .and_then(|(items, _, cont)| {
                    let mut chunk = Vec::new();
                    write_items(&mut chunk, &items, false)?;
                    Ok((chunk, cont))
                });
            match chunk {
                Ok((chunk, cont)) => Some((Ok(Bytes::from(chunk)), (state, t, params, Some(cont)))),
                Err(e) => {
                    let plural = t.resource.plural;
                    tracing::warn!(resource = plural, error = %e, "a streamed list failed part way");
                    let cut = Err(std::io::Error::other(e.to_string()));
                    Some((cut, (state, t, params, None)))
                }
            }
        },
    );
    let body = futures::stream::once(async move { Ok(Bytes::from(first)) }).chain(rest);
    Ok(raw_json_response(StatusCode::OK, Body::from_stream(body)))
}

/// `{"kind":…,"apiVersion":…,"metadata":{…},"items":[` — a list up to its first item.
fn list_head(t: &Target, revision: i64, cont: Option<String>) -> Result<Vec<u8>, ApiError> {
    let head = json!({
        "kind": t.resource.list_kind(),
        "apiVersion": t.resource.api_version,
        "metadata": list_metadata(revision, cont),
    });
    let mut body = serde_json::to_vec(&head).map_err(|e| ApiError::Internal(e.to_string()))?;
    body.pop(); // the closing brace; items follow
    body.extend_from_slice(b",\"items\":[");
    Ok(body)
}

/// Appends `items` around their stored bytes, never decoding an object: for large lists that
/// round trip is most of the time. `first`: no comma before the first item.
fn write_items(body: &mut Vec<u8>, items: &[StoredObject], first: bool) -> Result<(), ApiError> {
    for (i, object) in items.iter().enumerate() {
        if i > 0 || !first {
            body.push(b',');
        }
        object.write_json(body)?;
    }
    Ok(())
}

fn list_metadata(revision: i64, cont: Option<String>) -> Value {
    let mut metadata = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = cont {
        metadata["continue"] = json!(c);
    }
    metadata
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
