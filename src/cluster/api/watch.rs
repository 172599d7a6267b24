//! Watches: a stream of `{"type": …, "object": …}` lines from a store watch, with selectors
//! applied (an object that stops matching is DELETED for the watcher, one that starts
//! matching is ADDED), BOOKMARKs, `timeoutSeconds`, and an ERROR event carrying a 410
//! Expired Status when the requested revision was compacted.
//!
//! Memory is bounded per watcher: the initial list is read a page at a time as the client
//! takes it, events go through a byte-bounded buffer ([`super::watch_buffer`]), and a watcher
//! whose buffer stays full for [`SLOW_WATCHER`] is cut off with a 410 so it relists; if it
//! does not even take that within [`SLOW_WATCHER`] its connection is closed. Open watches
//! are capped per identity.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::body::Params;
use super::connections::Connection;
use super::list::{Selectors, encode_continue, stored_page};
use super::resources::Resource;
use super::status::ApiError;
use super::storage::{StoredObject, set_resource_version};
use super::watch_buffer::{self, SendError};
use super::{SharedState, Target, table};
use crate::cluster::store::{Event, EventKind, StoreError};

/// How long a watcher's buffer may stay full before the watcher is cut off.
pub const SLOW_WATCHER: Duration = Duration::from_secs(10);
/// Objects per store read of a watch's initial list: the first read is small, and each page
/// the client takes whole doubles the next, up to the most.
const INITIAL_PAGE: usize = 4;
const MOST_PAGE: usize = 128;

/// Open watches per identity (over the network; the in-process controllers are not counted).
#[derive(Debug, Default)]
pub struct WatchCounts {
    open: Mutex<HashMap<&'static str, usize>>,
}

/// One open watch of an identity; dropping it frees its place.
pub struct WatchSlot {
    state: SharedState,
    user: &'static str,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .state
            .watch_counts
            .open
            .lock()
            .expect("watch counts lock");
        if let Some(n) = open.get_mut(self.user) {
            *n -= 1;
        }
    }
}

fn claim_watch(state: &SharedState, user: &'static str) -> Result<WatchSlot, ApiError> {
    let limit = state.config.max_watches_per_identity;
    let mut open = state.watch_counts.open.lock().expect("watch counts lock");
    let n = open.entry(user).or_default();
    if *n >= limit {
        drop(open);
        return Err(ApiError::TooManyRequests {
            kind: "watch",
            limit,
            retry_after: 1,
        });
    }
    *n += 1;
    Ok(WatchSlot {
        state: state.clone(),
        user,
    })
}

/// How long a watch without `timeoutSeconds` lasts (Kubernetes picks 30–60 minutes).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

fn line(kind: &str, object: &Value) -> Bytes {
    let mut bytes =
        serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

/// The ERROR event that ends a watcher that fell behind: 410 Expired, so the client relists.
fn too_slow(revision: i64) -> Bytes {
    let mut status = ApiError::Expired {
        requested: revision,
        compacted: revision,
    }
    .to_status();
    status["message"] = json!(format!(
        "the watch fell behind: its buffer stayed full for {} s; list again and watch from the list's resourceVersion",
        SLOW_WATCHER.as_secs()
    ));
    line("ERROR", &status)
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

/// Sends `line`, or cuts the watcher off when it does not take it in time. False: stop.
async fn deliver(
    tx: &watch_buffer::Sender,
    line: Bytes,
    revision: i64,
    connection: &Option<Arc<Connection>>,
) -> bool {
    match tx.send(line, SLOW_WATCHER).await {
        Ok(()) => true,
        Err(SendError::Gone) => false,
        Err(SendError::TooSlow) => {
            cut_off(tx, revision, connection).await;
            false
        }
    }
}

/// Ends a watcher that fell behind with a 410; closes its connection if it does not even
/// take that within [`SLOW_WATCHER`] (freeing what hyper and TLS still buffer for it).
async fn cut_off(tx: &watch_buffer::Sender, revision: i64, connection: &Option<Arc<Connection>>) {
    tracing::info!(
        peer = ?connection.as_ref().map(|c| c.peer()),
        "closing a watch that fell behind (its buffer stayed full)"
    );
    tx.cut_off(too_slow(revision));
    if tokio::time::timeout(SLOW_WATCHER, tx.drained())
        .await
        .is_err()
        && let Some(c) = connection
    {
        c.close_now();
    }
}

/// Sends the initial list as ADDED events, a page at a time. When the buffer is full the
/// rest of the page is dropped and read again from the store once there is room, so a slow
/// client costs the buffer, not a page of objects. False: stop.
#[allow(clippy::too_many_arguments)]
async fn send_initial(
    state: &SharedState,
    t: &Target,
    mut params: Params,
    first: (Vec<StoredObject>, Option<String>),
    start: i64,
    tx: &watch_buffer::Sender,
    render: &(dyn Fn(&Value) -> Value + Send + Sync),
    connection: &Option<Arc<Connection>>,
) -> bool {
    let mut page = Some(first);
    // Where to read again after what was sent.
    let mut resume_at: Option<String> = None;
    while let Some((items, next)) = page.take() {
        let mut full = false;
        for object in items {
            let decoded = match object.decode() {
                Ok(o) => o,
                Err(e) => {
                    tracing::error!(error = %e, "cannot decode a listed object");
                    continue;
                }
            };
            if tx.try_send(line("ADDED", &render(&decoded))).is_err() {
                full = true;
                break;
            }
            state.metrics.watch_event_sent();
            resume_at = Some(encode_continue(start, &object.key));
        }
        if full {
            params.limit = INITIAL_PAGE;
            match tx.wait_room(SLOW_WATCHER).await {
                Ok(()) => {}
                Err(SendError::Gone) => return false,
                Err(SendError::TooSlow) => {
                    cut_off(tx, start, connection).await;
                    return false;
                }
            }
        } else {
            params.limit = (params.limit * 2).min(MOST_PAGE);
            match next {
                Some(token) => resume_at = Some(token),
                None => return true,
            }
        }
        params.continue_token = resume_at.clone();
        match stored_page(state, t, &params).await {
            Ok((items, _, cont)) => page = Some((items, cont)),
            Err(e) => {
                let _ = tx.send(line("ERROR", &e.to_status()), SLOW_WATCHER).await;
                return false;
            }
        }
    }
    true
}

pub(crate) async fn watch(
    state: SharedState,
    t: Target,
    params: Params,
    as_table: bool,
    caller: Option<(&'static str, Arc<Connection>)>,
) -> Result<Response, ApiError> {
    let r = t.resource;
    let selectors = Selectors::parse(&params)?;
    let slot = match &caller {
        Some((user, _)) => Some(claim_watch(&state, user)?),
        None => None,
    };
    let connection = caller.map(|(_, c)| c);
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
    // Where the watch starts: after the given revision, or a list of what exists now, read a
    // page at a time (the first here, so its errors are the response's).
    let mut first_page: Option<(Vec<StoredObject>, Option<String>)> = None;
    let mut list_params = params.clone();
    let start = match params.resource_version.as_deref() {
        None | Some("0") => {
            list_params.limit = INITIAL_PAGE;
            list_params.continue_token = None;
            let (items, revision, cont) = stored_page(&state, &t, &list_params).await?;
            first_page = Some((items, cont));
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
    let (tx, body) = watch_buffer::channel(state.config.watch_buffer_bytes);
    tokio::spawn(async move {
        let state = task_state;
        let _slot = slot;
        let _open = state.metrics.watch_started();
        if let Some(first) = first_page
            && !send_initial(
                &state,
                &t,
                list_params,
                first,
                start,
                &tx,
                &render,
                &connection,
            )
            .await
        {
            return;
        }
        let mut stream = match state.storage.store.watch(&prefix, start).await {
            Ok(s) => s,
            Err(StoreError::Compacted {
                requested,
                compacted,
            }) => {
                let _ = tx.send(expired(requested, compacted), SLOW_WATCHER).await;
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a store watch");
                let _ = tx
                    .send(line("ERROR", &ApiError::Store(e).to_status()), SLOW_WATCHER)
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
                    if !deliver(&tx, line("BOOKMARK", &mark), last, &connection).await {
                        return;
                    }
                }
                next = stream.next() => {
                    let event = match next {
                        None => return,
                        Some(Ok(e)) => e,
                        Some(Err(StoreError::Compacted { requested, compacted })) => {
                            let _ = tx.send(expired(requested, compacted), SLOW_WATCHER).await;
                            return;
                        }
                        Some(Err(e)) => {
                            tracing::error!(error = %e, "store watch failed");
                            return;
                        }
                    };
                    match translate(&state, r, &selectors, &event) {
                        Ok(Some((kind, object))) => {
                            if !deliver(&tx, line(kind, &render(&object)), last, &connection).await {
                                return;
                            }
                            state.metrics.watch_event_sent();
                        }
                        Ok(None) => {}
                        Err(e) => tracing::error!(error = %e, "cannot decode a watched object"),
                    }
                    last = event.revision();
                }
            }
        }
    });
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}
