//! Events within bounds: a message (`note` in `events.k8s.io`) of at most 1 KiB, as
//! Kubernetes caps it; an Event object of at most 16 KiB (an Event is a message and a few
//! references); a token bucket per writer (identity and address) so no client floods the
//! store; and a time to live (`--event-ttl`, default 1 h) after which an Event is deleted, so
//! the store's compaction reclaims it and the store stops growing under a flood.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::SharedState;
use super::resources::Resource;
use super::status::{ApiError, Cause};

/// Kubernetes' limit on an Event's message (`NoteLengthLimit`).
pub const MESSAGE_LIMIT: usize = 1024;
/// The largest Event object.
pub const OBJECT_LIMIT: usize = 16 * 1024;
/// Events a writer may create or change in a burst, then per second.
const BURST: f64 = 100.0;
const PER_SECOND: f64 = 20.0;
/// At most this many writers are remembered (the oldest forgotten first).
const WRITERS: usize = 10_000;

fn is_event(r: &Resource) -> bool {
    r.kind == "Event" && (r.group.is_empty() || r.group == "events.k8s.io")
}

/// Checks an Event about to be stored: its message and its size.
pub fn check(r: &Resource, event: &Value) -> Result<(), ApiError> {
    if !is_event(r) {
        return Ok(());
    }
    let invalid = |field: &str, message: String| ApiError::Invalid {
        kind: r.kind.into(),
        group: r.group.into(),
        name: event
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        causes: vec![Cause {
            reason: "FieldValueTooLong".into(),
            message,
            field: field.into(),
        }],
    };
    let field = if r.group.is_empty() {
        "message"
    } else {
        "note"
    };
    if let Some(text) = event.get(field).and_then(Value::as_str)
        && text.len() > MESSAGE_LIMIT
    {
        return Err(invalid(
            field,
            format!(
                "Too long: may not be more than {MESSAGE_LIMIT} bytes (it is {})",
                text.len()
            ),
        ));
    }
    let size = serde_json::to_vec(event).map(|v| v.len()).unwrap_or(0);
    if size > OBJECT_LIMIT {
        return Err(invalid(
            "",
            format!("an Event may be at most {OBJECT_LIMIT} bytes; this one is {size}"),
        ));
    }
    Ok(())
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Event writes per writer.
#[derive(Default)]
pub struct EventRate {
    writers: Mutex<HashMap<(&'static str, IpAddr), Bucket>>,
}

impl EventRate {
    /// Takes one token of `user` at `peer`, or refuses with 429.
    pub fn admit(&self, r: &Resource, user: &'static str, peer: IpAddr) -> Result<(), ApiError> {
        if !is_event(r) {
            return Ok(());
        }
        let now = Instant::now();
        let mut writers = self.writers.lock().expect("event rate lock");
        if writers.len() >= WRITERS && !writers.contains_key(&(user, peer)) {
            // Forget the writers whose buckets are full again: they cost nothing to recreate.
            writers.retain(|_, b| {
                b.tokens + now.duration_since(b.at).as_secs_f64() * PER_SECOND < BURST
            });
        }
        let bucket = writers.entry((user, peer)).or_insert(Bucket {
            tokens: BURST,
            at: now,
        });
        bucket.tokens =
            (bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * PER_SECOND).min(BURST);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            return Err(ApiError::TooManyRequests {
                kind: "event",
                limit: PER_SECOND as usize,
                retry_after: 1,
            });
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

/// When an Event last happened: the latest of its timestamps (RFC 3339), in seconds.
fn last_seen(event: &Value) -> Option<f64> {
    [
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
        "/deprecatedLastTimestamp",
        "/metadata/creationTimestamp",
    ]
    .iter()
    .filter_map(|p| event.pointer(p).and_then(Value::as_str))
    .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
    .map(|t| t.timestamp_millis() as f64 / 1000.0)
    .reduce(f64::max)
}

/// Deletes Events that last happened more than `ttl` ago, every `ttl / 10` (1 s to 60 s),
/// until the server drains. Returns when it does.
pub async fn expire(state: SharedState, ttl: Duration) {
    let r = super::resources::by_kind("v1", "Event").expect("events are served");
    let every = (ttl / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    let mut closing = state.closing.subscribe();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = closing.changed() => return,
        }
        match expire_once(&state, r, ttl).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(events = n, "expired events"),
            Err(e) => tracing::warn!(error = %e, "cannot expire events"),
        }
    }
}

/// One pass of [`expire`]; how many Events it deleted.
pub async fn expire_once(
    state: &SharedState,
    r: &'static Resource,
    ttl: Duration,
) -> Result<usize, ApiError> {
    let cutoff = chrono::Utc::now().timestamp_millis() as f64 / 1000.0 - ttl.as_secs_f64();
    let mut after = None;
    let mut deleted = 0;
    loop {
        let page = state.storage.list(r, None, 500, after.take(), None).await?;
        for stored in &page.items {
            let event = stored.decode()?;
            if last_seen(&event).is_some_and(|t| t < cutoff) {
                let ns = event.pointer("/metadata/namespace").and_then(Value::as_str);
                let name = event
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if state
                    .storage
                    .delete(r, ns, name, stored.mod_revision)
                    .await?
                    .is_some()
                {
                    deleted += 1;
                }
            }
        }
        match page.continue_after {
            Some(key) => after = Some(key),
            None => return Ok(deleted),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn events() -> &'static Resource {
        super::super::resources::by_kind("v1", "Event").unwrap()
    }

    #[test]
    fn long_messages_and_large_events_are_refused() {
        let ok = json!({"metadata": {"name": "e"}, "message": "x".repeat(MESSAGE_LIMIT)});
        assert!(check(events(), &ok).is_ok());
        let long = json!({"metadata": {"name": "e"}, "message": "x".repeat(MESSAGE_LIMIT + 1)});
        let e = check(events(), &long).unwrap_err();
        assert_eq!(e.code().as_u16(), 422);
        assert!(e.to_string().contains("1024 bytes"), "{e}");
        let big =
            json!({"metadata": {"name": "e", "annotations": {"a": "y".repeat(OBJECT_LIMIT)}}});
        assert!(
            check(events(), &big)
                .unwrap_err()
                .to_string()
                .contains("16384")
        );
        let cm = super::super::resources::by_kind("v1", "ConfigMap").unwrap();
        assert!(check(cm, &long).is_ok(), "only Events");
    }

    #[test]
    fn a_writer_gets_a_burst_then_429() {
        let rate = EventRate::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..BURST as usize {
            rate.admit(events(), "admin", a).unwrap();
        }
        let refused = rate.admit(events(), "admin", a).unwrap_err();
        assert_eq!(refused.code().as_u16(), 429);
        assert!(
            rate.admit(events(), "admin", "10.0.0.2".parse().unwrap())
                .is_ok()
        );
        assert!(rate.admit(events(), "agent", a).is_ok(), "per identity too");
    }

    #[test]
    fn an_event_is_as_old_as_its_latest_timestamp() {
        let e = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"},
            "lastTimestamp": "2026-01-01T01:00:00Z"});
        let first = json!({"metadata": {"creationTimestamp": "2026-01-01T00:00:00Z"}});
        assert_eq!(last_seen(&e).unwrap() - last_seen(&first).unwrap(), 3600.0);
    }
}
