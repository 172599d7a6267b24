//! Watches: a stream of `{"type": …, "object": …}` lines from a store watch, with selectors
//! applied (an object that stops matching is DELETED for the watcher, one that starts
//! matching is ADDED), BOOKMARKs, `timeoutSeconds`, and an ERROR event carrying a 410
//! Expired Status when the requested revision was compacted.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::body::Params;
use super::list::{Selectors, page};
use super::resources::Resource;
use super::status::ApiError;
use super::storage::set_resource_version;
use super::{SharedState, Target, table};
use crate::cluster::store::{Event, EventKind, StoreError};

/// How long a watch without `timeoutSeconds` lasts (Kubernetes picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn expired(requested: i64, compacted: i64) -> Bytes {
    line(
        "ERROR",
        &ApiError::Expired {
            requested,
            compacted,
        }
        .to_status(),
    )
}

/// The minimal object a DELETED event carries when compaction took the previous value.
fn tombstone(r: &Resource, key: &str, revision: i64) -> Value {
    let rest = key.strip_prefix(&r.prefix(None)).unwrap_or(key);
    let (ns, name) = match rest.split_once('/') {
        Some((ns, name)) if r.namespaced => (Some(ns), name),
        _ => (None, rest),
    };
    let mut meta = json!({"name": name, "resourceVersion": revision.to_string()});
    if let Some(ns) = ns {
        meta["namespace"] = json!(ns);
    }
    json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": meta})
}

/// What a store event means to a watcher with these selectors.
fn translate(
    state: &SharedState,
    r: &Resource,
    selectors: &Selectors,
    event: &Event,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let revision = event.revision();
    let old = match &event.prev {
        Some(prev) => Some(state.storage.decode(r, prev)?),
        None => None,
    };
    let old_matches = old.as_ref().is_some_and(|o| selectors.matches(o));
    match event.kind {
        EventKind::Delete => {
            if old.is_some() && !old_matches {
                return Ok(None);
            }
            let mut gone = old.unwrap_or_else(|| tombstone(r, &event.kv.key, revision));
            set_resource_version(&mut gone, revision);
            Ok(Some(("DELETED", gone)))
        }
        EventKind::Put => {
            let new = state.storage.decode(r, &event.kv)?;
            let new_matches = selectors.matches(&new);
            Ok(match (old.is_some(), old_matches, new_matches) {
                (false, _, true) | (true, false, true) => Some(("ADDED", new)),
                (true, true, true) => Some(("MODIFIED", new)),
                (true, true, false) => Some(("DELETED", new)),
                _ => None,
            })
        }
    }
}

pub(crate) async fn watch(
    state: SharedState,
    t: Target,
    params: Params,
    as_table: bool,
) -> Result<Response, ApiError> {
    let r = t.resource;
    let selectors = Selectors::parse(&params)?;
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let render = move |object: &Value| -> Value {
        if as_table {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .cloned()
                .unwrap_or(json!(""));
            table::table(
                r,
                std::slice::from_ref(object),
                &json!({"resourceVersion": rv}),
            )
        } else {
            object.clone()
        }
    };
    // Where the watch starts: after the given revision, or a list of what exists now.
    let mut initial = Vec::new();
    let start = match params.resource_version.as_deref() {
        None | Some("0") => {
            let mut p = params.clone();
            p.limit = 0;
            p.continue_token = None;
            let (items, revision, _) = page(&state, &t, &p).await?;
            initial = items;
            revision
        }
        Some(v) => v
            .parse::<i64>()
            .map_err(|_| ApiError::BadRequest(format!("resourceVersion: not a number: {v}")))?,
    };
    let prefix = r.prefix(t.namespace.as_deref());
    let timeout = params
        .timeout_seconds
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let bookmarks = params.allow_bookmarks;
    let task_state = state.clone();
    tokio::spawn(async move {
        let state = task_state;
        let _open = state.metrics.watch_started();
        for object in &initial {
            if tx.send(Ok(line("ADDED", &render(object)))).await.is_err() {
                return;
            }
            state.metrics.watch_event_sent();
        }
        let mut stream = match state.storage.store.watch(&prefix, start).await {
            Ok(s) => s,
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                let _ = tx.send(Ok(expired(requested, compacted))).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a store watch");
                let _ = tx
                    .send(Ok(line("ERROR", &ApiError::Store(e).to_status())))
                    .await;
                return;
            }
        };
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(state.config.bookmark_interval);
        tick.tick().await;
        let mut last = start;
        let mut closing = state.closing.subscribe();
        loop {
            tokio::select! {
                () = tx.closed() => return,
                _ = closing.changed() => return,
                () = &mut deadline => return,
                _ = tick.tick(), if bookmarks => {
                    let mark = json!({"kind": r.kind, "apiVersion": r.api_version,
                        "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                        return;
                    }
                }
                next = stream.next() => {
                    let event = match next {
                        None => return,
                        Some(Ok(e)) => e,
                        Some(Err(StoreError::Compacted { requested, compacted })) => {
                            let _ = tx.send(Ok(expired(requested, compacted))).await;
                            return;
                        }
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "store watch failed");
                            return;
                        }
                    };
                    last = event.revision();
                    match translate(&state, r, &selectors, &event) {
                        Ok(Some((kind, object))) => {
                            if tx.send(Ok(line(kind, &render(&object)))).await.is_err() {
                                return;
                            }
                            state.metrics.watch_event_sent();
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "cannot decode a watched object"),
                    }
                }
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
