//! Forge webhooks: `POST /hooks/git/{namespace}/{name}` asks the GitSource `namespace/name` to
//! sync now. No bearer token: a forge cannot send one. Instead the call must prove it knows the
//! secret held under the key [`WEBHOOK_SECRET_KEY`] of the Secret named by the source's
//! `spec.webhookSecretRef`: GitHub signs the body (`X-Hub-Signature-256: sha256=<hmac>`), GitLab
//! sends the secret itself (`X-Gitlab-Token`). Anything else gets 401 and changes nothing.
//!
//! A verified call only stamps the source's `berth.dev/sync-requested-at` annotation, written
//! through storage as a merge patch would be; the sync controller notices and fetches, as
//! `berth gitsource sync` would make it do.
//!
//! Hygiene: a delivery id seen in the last [`REPLAY_WINDOW`] (`X-GitHub-Delivery`,
//! `X-Gitlab-Event-UUID`) is answered 200 without a second sync request; an unknown source
//! or a source without a secret costs the same reads and the same HMAC as a known one, so
//! timing does not tell which sources exist; refusals are logged at most every 10 s.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::patch::json_merge;
use super::resources::{Resource, by_kind};
use super::status::ApiError;
use super::storage::Written;
use super::write;
use super::{SharedState, json_response};
use crate::apply::ssa::Writer;
use crate::manifest::gitsource::SYNC_REQUESTED_ANNOTATION;

/// The key of the webhook Secret that holds the shared secret.
pub const WEBHOOK_SECRET_KEY: &str = "webhook-secret";
/// The field manager of the webhook's writes.
const FIELD_MANAGER: &str = "berth-webhook";
/// How often a sync request is tried again when the source changes under it.
const ATTEMPTS: usize = 8;
/// Larger push payloads are refused (GitHub caps them at 25 MB; pushes are far smaller).
const BODY_LIMIT: usize = 8 * 1024 * 1024;
/// How long a delivery id is remembered.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many delivery ids are remembered (the oldest are forgotten first).
const REMEMBERED: usize = 10_000;
/// The Secret name read when a source has none, so the work is the same.
const NO_SECRET: &str = "berth-webhook-secret-absent";

/// Delivery ids of verified webhook calls, per source, for [`REPLAY_WINDOW`].
#[derive(Debug, Default)]
pub struct Deliveries {
    seen: Mutex<(HashMap<String, Instant>, VecDeque<String>)>,
}

impl Deliveries {
    /// Records `id` of `source`; false if it was seen within the window (a replay).
    pub fn first_time(&self, source: &str, id: &str) -> bool {
        let key = format!("{source}\n{id}");
        let mut guard = self.seen.lock().expect("deliveries lock");
        let (seen, order) = &mut *guard;
        while let Some(oldest) = order.front() {
            let expired = seen.get(oldest).is_none_or(|t| t.elapsed() > REPLAY_WINDOW);
            if !expired && order.len() < REMEMBERED {
                break;
            }
            let oldest = order.pop_front().expect("a front");
            seen.remove(&oldest);
        }
        if seen.get(&key).is_some_and(|t| t.elapsed() <= REPLAY_WINDOW) {
            return false;
        }
        seen.insert(key.clone(), Instant::now());
        order.push_back(key);
        true
    }

    /// Forgets `id` of `source` (its sync request failed: a redelivery must be served).
    pub fn forget(&self, source: &str, id: &str) {
        let mut guard = self.seen.lock().expect("deliveries lock");
        guard.0.remove(&format!("{source}\n{id}"));
    }
}

/// The delivery id a forge sends with each call, if any.
fn delivery_id(headers: &HeaderMap) -> Option<&str> {
    ["x-github-delivery", "x-gitlab-event-uuid"]
        .iter()
        .find_map(|h| headers.get(*h).and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|id| !id.is_empty())
}

/// Logs refused calls at most every 10 s, with how many were refused since the last line.
static REFUSALS: Mutex<(Option<Instant>, u64)> = Mutex::new((None, 0));

fn log_refusal(namespace: &str, name: &str) {
    let Ok(mut guard) = REFUSALS.lock() else {
        return;
    };
    let (last, since) = &mut *guard;
    *since += 1;
    if last.is_some_and(|t| t.elapsed() < Duration::from_secs(10)) {
        return;
    }
    tracing::info!(
        namespace,
        name,
        refused = *since,
        "webhook calls refused (bad or missing signature, or no such source); logged at most every 10 s"
    );
    *last = Some(Instant::now());
    *since = 0;
}

/// Whether a path is a webhook's, which authenticates by signature instead of a token.
pub fn is_hook_path(path: &str) -> bool {
    path.starts_with("/hooks/git/")
}

/// Whether the headers prove knowledge of `secret` for this body.
pub fn verify(headers: &HeaderMap, body: &[u8], secret: &[u8]) -> bool {
    if secret.is_empty() {
        return false;
    }
    if let Some(signature) = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
    {
        let Some(hex_digest) = signature.trim().strip_prefix("sha256=") else {
            return false;
        };
        let Ok(expected) = hex::decode(hex_digest) else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
            return false;
        };
        mac.update(body);
        // Constant time, so the signature cannot be guessed byte by byte.
        return mac.verify_slice(&expected).is_ok();
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        // Comparing digests keeps the comparison's time independent of where they differ.
        return Sha256::digest(token.as_bytes()) == Sha256::digest(secret);
    }
    false
}

fn unauthorized() -> Response {
    ApiError::Unauthorized.into_response()
}

/// The route handler.
pub(super) async fn git_push(
    State(state): State<SharedState>,
    Path((namespace, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if body.len() > BODY_LIMIT {
        return ApiError::TooLarge { limit: BODY_LIMIT }.into_response();
    }
    let sources = by_kind("berth.dev/v1", "GitSource").expect("gitsources are served");
    let secrets = by_kind("v1", "Secret").expect("secrets are served");
    // Every refusal is the same 401 after the same work (a source read, a Secret read, an
    // HMAC), so neither the answer nor its timing tells strangers which sources exist.
    let source = match state.storage.get(sources, Some(&namespace), &name).await {
        Ok(found) => found.map(|(source, _)| source),
        Err(e) => return e.into_response(),
    };
    let secret_name = source
        .as_ref()
        .and_then(|s| s.pointer("/spec/webhookSecretRef/name"))
        .and_then(Value::as_str)
        .unwrap_or(NO_SECRET);
    let secret = match state
        .storage
        .get(secrets, Some(&namespace), secret_name)
        .await
    {
        Ok(found) => found.map(|(secret, _)| secret),
        Err(e) => return e.into_response(),
    };
    let shared = secret
        .as_ref()
        .and_then(|s| s.pointer(&format!("/data/{WEBHOOK_SECRET_KEY}")))
        .and_then(Value::as_str)
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok());
    let known = source.is_some() && shared.is_some();
    // Without a secret, check against a throwaway one: the same HMAC, always refused.
    let verified = verify(
        &headers,
        &body,
        shared.as_deref().unwrap_or(b"berth: no webhook secret"),
    ) && known;
    if !verified {
        log_refusal(&namespace, &name);
        return unauthorized();
    }
    if let Some(id) = delivery_id(&headers)
        && !state
            .hook_deliveries
            .first_time(&format!("{namespace}/{name}"), id)
    {
        tracing::debug!(
            namespace,
            name,
            id,
            "webhook delivery replayed: already handled"
        );
        return json_response(
            StatusCode::OK,
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Success", "code": 200,
                "message": format!("delivery {id} was already handled; no new sync requested")}),
        );
    }
    // Nanoseconds: two pushes within one second must still be two different requests, or
    // the second one would look handled already and wait for the next poll.
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    match request_sync(&state, sources, &namespace, &name, &now).await {
        Ok(()) => {
            tracing::info!(namespace, name, "webhook call: sync requested");
            json_response(
                StatusCode::ACCEPTED,
                &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Success", "code": 202,
                    "message": format!("sync of GitSource {namespace}/{name} requested")}),
            )
        }
        Err(e) => {
            if let Some(id) = delivery_id(&headers) {
                state
                    .hook_deliveries
                    .forget(&format!("{namespace}/{name}"), id);
            }
            e.into_response()
        }
    }
}

/// Stamps the sync request on the source, written through storage as a merge patch by
/// [`FIELD_MANAGER`] would be (server-set fields, `managedFields`, validation), and tried
/// again if the source changes in between.
async fn request_sync(
    state: &SharedState,
    sources: &Resource,
    namespace: &str,
    name: &str,
    now: &str,
) -> Result<(), ApiError> {
    let patch = json!({"metadata": {"annotations": {SYNC_REQUESTED_ANNOTATION: now}}});
    for _ in 0..ATTEMPTS {
        let (old, rev) = state
            .storage
            .get(sources, Some(namespace), name)
            .await?
            .ok_or_else(|| ApiError::not_found(sources, name))?;
        let mut new = old.clone();
        json_merge(&mut new, &patch);
        let time = write::now();
        let writer = Writer {
            manager: FIELD_MANAGER,
            api_version: sources.api_version,
            time: &time,
            subresource: None,
        };
        let Some(new) = write::prepare_update(sources, &old, new, false, Some(&writer), None)?
        else {
            return Ok(());
        };
        match state
            .storage
            .update(sources, Some(namespace), name, &new, rev)
            .await?
        {
            Written::Ok(_) => return Ok(()),
            Written::CompareFailed => continue,
        }
    }
    Err(ApiError::stale(sources, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_signatures_are_checked_against_the_body() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let mut headers = HeaderMap::new();
        // The example from GitHub's documentation on validating webhook deliveries.
        headers.insert(
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
                .parse()
                .unwrap(),
        );
        assert!(verify(&headers, body, secret));
        assert!(!verify(&headers, b"Hello, World?", secret));
        assert!(!verify(&headers, body, b"another secret"));
    }

    #[test]
    fn a_delivery_id_counts_once_per_source() {
        let d = Deliveries::default();
        assert!(d.first_time("default/app", "72d3162e"));
        assert!(!d.first_time("default/app", "72d3162e"));
        assert!(d.first_time("default/other", "72d3162e"));
        assert!(d.first_time("default/app", "another"));
        let mut headers = HeaderMap::new();
        assert_eq!(delivery_id(&headers), None);
        headers.insert("x-gitlab-event-uuid", "u-1".parse().unwrap());
        assert_eq!(delivery_id(&headers), Some("u-1"));
    }

    #[test]
    fn gitlab_tokens_must_match_and_nothing_is_not_enough() {
        let mut headers = HeaderMap::new();
        assert!(!verify(&headers, b"{}", b"s3cret"));
        headers.insert("x-gitlab-token", "s3cret".parse().unwrap());
        assert!(verify(&headers, b"{}", b"s3cret"));
        assert!(!verify(&headers, b"{}", b"other"));
        assert!(!verify(&headers, b"{}", b""));
    }
}
