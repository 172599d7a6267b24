//! Event aggregation, as client-go's event correlator does it, so a pod that crash-loops for
//! an hour or a pod that cannot be scheduled leaves one Event with a growing `count`, not
//! thousands of objects.
//!
//! Two rules, both Kubernetes':
//! - **Same event again** (same source, object, type, reason and message): the existing Event
//!   is patched — `count` + 1 and a new `lastTimestamp` — instead of a new one created.
//! - **Many similar events** (same source, object, type and reason, but more than
//!   [`SIMILAR_LIMIT`] different messages within [`SIMILAR_WINDOW`]): they are folded into one
//!   Event whose message starts with `(combined from similar events): `.
//!
//! The correlator is pure bookkeeping: the caller creates or patches, and tells it the name the
//! server gave a created Event. Its memory is bounded: it forgets the least recently seen keys
//! beyond [`CAPACITY`], after which a repeat simply starts a new Event.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Keys remembered (client-go keeps 4,096 too).
pub const CAPACITY: usize = 4096;
/// Different messages of one reason about one object before they are combined.
pub const SIMILAR_LIMIT: usize = 10;
/// The window in which similar messages are counted.
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// The prefix of a combined message.
pub const COMBINED: &str = "(combined from similar events): ";

/// What to send for an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A new Event object: create it, then report its name with [`Correlator::created`].
    Create { key: String, event: Value },
    /// An existing Event seen again: merge-patch `patch` into the Event `name`. If it is gone
    /// (expired, deleted), call [`Correlator::forget`] and create `event` instead.
    Patch {
        key: String,
        name: String,
        patch: Value,
        event: Value,
    },
}

struct Seen {
    /// The Event's name once created; None while its create is in flight.
    name: Option<String>,
    count: i64,
    used: u64,
}

struct Similar {
    since: Instant,
    messages: Vec<String>,
    used: u64,
}

/// Remembers recent events and decides, per event, between a create and a patch.
#[derive(Default)]
pub struct Correlator {
    seen: HashMap<String, Seen>,
    similar: HashMap<String, Similar>,
    clock: u64,
}

fn text(event: &Value, pointer: &str) -> String {
    match event.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Source, object and type and reason: what similar events share.
fn similar_key(event: &Value) -> String {
    [
        "/source/component",
        "/source/host",
        "/involvedObject/kind",
        "/involvedObject/namespace",
        "/involvedObject/name",
        "/involvedObject/uid",
        "/involvedObject/apiVersion",
        "/involvedObject/fieldPath",
        "/type",
        "/reason",
    ]
    .iter()
    .map(|p| text(event, p))
    .collect::<Vec<_>>()
    .join("\u{1f}")
}

impl Correlator {
    pub fn new() -> Correlator {
        Correlator::default()
    }

    /// Decides how to send `event` (a core/v1 Event with `count` 1), seen at `now`.
    pub fn record(&mut self, mut event: Value, now: Instant) -> Record {
        self.clock += 1;
        let clock = self.clock;
        let group = similar_key(&event);
        let message = text(&event, "/message");
        let similar = self.similar.entry(group.clone()).or_insert(Similar {
            since: now,
            messages: Vec::new(),
            used: clock,
        });
        if now.duration_since(similar.since) > SIMILAR_WINDOW {
            similar.since = now;
            similar.messages.clear();
        }
        similar.used = clock;
        if !similar.messages.contains(&message) && similar.messages.len() <= SIMILAR_LIMIT {
            similar.messages.push(message.clone());
        }
        let key = if similar.messages.len() > SIMILAR_LIMIT {
            event["message"] = json!(format!("{COMBINED}{message}"));
            format!("{group}\u{1f}combined")
        } else {
            format!("{group}\u{1f}{message}")
        };
        let record = match self.seen.get_mut(&key) {
            Some(Seen {
                name: Some(name),
                count,
                used,
            }) => {
                *count += 1;
                *used = clock;
                Record::Patch {
                    key: key.clone(),
                    name: name.clone(),
                    patch: json!({
                        "count": *count,
                        "lastTimestamp": event["lastTimestamp"],
                        "message": event["message"],
                    }),
                    event,
                }
            }
            _ => {
                self.seen.insert(
                    key.clone(),
                    Seen {
                        name: None,
                        count: 1,
                        used: clock,
                    },
                );
                Record::Create { key, event }
            }
        };
        self.evict();
        record
    }

    /// The server named the Event created for `key` `name`.
    pub fn created(&mut self, key: &str, name: &str) {
        if let Some(seen) = self.seen.get_mut(key) {
            seen.name = Some(name.to_string());
        }
    }

    /// The Event for `key` is gone (or could not be written): the next one starts afresh.
    pub fn forget(&mut self, key: &str) {
        self.seen.remove(key);
    }

    /// Forgets every key about the object with `uid`, which is gone for good (a deleted
    /// pod): nothing will repeat its events, so remembering them only holds memory.
    pub fn forget_object(&mut self, uid: &str) {
        // The uid is the sixth field of every key (see `similar_key`).
        let about = |key: &String| key.split('\u{1f}').nth(5) == Some(uid);
        self.seen.retain(|k, _| !about(k));
        self.similar.retain(|k, _| !about(k));
    }

    /// Drops the least recently used keys beyond [`CAPACITY`].
    fn evict(&mut self) {
        fn oldest<T>(map: &HashMap<String, T>, used: impl Fn(&T) -> u64) -> Option<String> {
            map.iter()
                .min_by_key(|(_, v)| used(v))
                .map(|(k, _)| k.clone())
        }
        // Amortised: when over capacity, drop a tenth at once.
        if self.seen.len() > CAPACITY {
            for _ in 0..CAPACITY / 10 {
                if let Some(k) = oldest(&self.seen, |s| s.used) {
                    self.seen.remove(&k);
                }
            }
        }
        if self.similar.len() > CAPACITY {
            for _ in 0..CAPACITY / 10 {
                if let Some(k) = oldest(&self.similar, |s| s.used) {
                    self.similar.remove(&k);
                }
            }
        }
    }
}

/// Where events are written: the API server, through whichever client the caller has.
pub trait EventSink {
    type Error: Display;
    /// Creates the Event; its name as the server gave it.
    fn create(
        &self,
        event: Value,
    ) -> impl Future<Output = Result<Option<String>, Self::Error>> + Send;
    /// Merge-patches the Event `name`; `Ok(false)` when it is gone.
    fn patch(
        &self,
        name: &str,
        patch: &Value,
    ) -> impl Future<Output = Result<bool, Self::Error>> + Send;
}

/// Writes `event` (a core/v1 Event with `count` 1) through `sink`: a new Event, or the count
/// of the one it repeats. The lock is not held while writing.
pub async fn send<S: EventSink + Sync>(
    correlator: &Mutex<Correlator>,
    sink: &S,
    event: Value,
) -> Result<(), S::Error> {
    let lock = || correlator.lock().expect("the event correlator");
    let record = lock().record(event, Instant::now());
    let (key, result) = match record {
        Record::Create { key, event } => (key, sink.create(event).await),
        Record::Patch {
            key,
            name,
            patch,
            event,
        } => match sink.patch(&name, &patch).await {
            Ok(true) => (key, Ok(Some(name))),
            // Expired or deleted meanwhile: start a new one.
            Ok(false) => {
                lock().forget(&key);
                (key, sink.create(event).await)
            }
            Err(e) => (key, Err(e)),
        },
    };
    let mut correlator = lock();
    match result {
        Ok(name) => {
            if let Some(name) = name {
                correlator.created(&key, &name);
            }
            Ok(())
        }
        Err(e) => {
            correlator.forget(&key);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(reason: &str, message: &str, at: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": "web.", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "uid": "u1"},
            "reason": reason, "message": message, "type": "Warning",
            "source": {"component": "berth-agent", "host": "n1"},
            "firstTimestamp": at, "lastTimestamp": at, "count": 1,
        })
    }

    #[test]
    fn the_same_event_again_patches_the_first_with_a_growing_count() {
        let mut c = Correlator::new();
        let now = Instant::now();
        let Record::Create { key, .. } = c.record(event("BackOff", "back-off 10s", "t1"), now)
        else {
            panic!("the first is created");
        };
        c.created(&key, "web.abc");
        for (n, at) in [(2, "t2"), (3, "t3")] {
            match c.record(event("BackOff", "back-off 10s", at), now) {
                Record::Patch { name, patch, .. } => {
                    assert_eq!(name, "web.abc");
                    assert_eq!(patch["count"], n);
                    assert_eq!(patch["lastTimestamp"], at);
                }
                other => panic!("expected a patch, got {other:?}"),
            }
        }
        // Another message, another object or another reason is another Event.
        assert!(matches!(
            c.record(event("BackOff", "back-off 20s", "t4"), now),
            Record::Create { .. }
        ));
        assert!(matches!(
            c.record(event("Unhealthy", "back-off 10s", "t4"), now),
            Record::Create { .. }
        ));
    }

    #[test]
    fn a_gone_object_is_forgotten_and_others_are_kept() {
        let mut c = Correlator::new();
        let now = Instant::now();
        let mut other = event("Pulled", "m", "t1");
        other["involvedObject"]["uid"] = json!("u2");
        for e in [
            event("Pulled", "m", "t1"),
            event("Started", "s", "t1"),
            other.clone(),
        ] {
            if let Record::Create { key, .. } = c.record(e, now) {
                c.created(&key, "named");
            }
        }
        c.forget_object("u1");
        assert_eq!((c.seen.len(), c.similar.len()), (1, 1));
        assert!(matches!(c.record(other, now), Record::Patch { .. }));
        assert!(matches!(
            c.record(event("Pulled", "m", "t2"), now),
            Record::Create { .. }
        ));
    }

    #[test]
    fn an_event_whose_create_is_in_flight_or_gone_is_created_again() {
        let mut c = Correlator::new();
        let now = Instant::now();
        let first = c.record(event("Pulled", "m", "t1"), now);
        // The first create has not answered yet: no name to patch, so a second create.
        assert!(matches!(
            c.record(event("Pulled", "m", "t2"), now),
            Record::Create { .. }
        ));
        let Record::Create { key, .. } = first else {
            panic!("created");
        };
        c.created(&key, "web.1");
        assert!(matches!(
            c.record(event("Pulled", "m", "t3"), now),
            Record::Patch { .. }
        ));
        c.forget(&key);
        assert!(matches!(
            c.record(event("Pulled", "m", "t4"), now),
            Record::Create { .. }
        ));
    }

    #[test]
    fn more_than_ten_different_messages_are_combined_into_one_event() {
        let mut c = Correlator::new();
        let now = Instant::now();
        for i in 0..SIMILAR_LIMIT {
            let r = c.record(event("FailedScheduling", &format!("0/{i} nodes"), "t"), now);
            assert!(matches!(r, Record::Create { .. }), "message {i} is its own");
        }
        let Record::Create { key, event: e } =
            c.record(event("FailedScheduling", "0/99 nodes", "t"), now)
        else {
            panic!("the first combined event is created");
        };
        assert_eq!(e["message"], format!("{COMBINED}0/99 nodes"));
        c.created(&key, "web.combined");
        match c.record(event("FailedScheduling", "0/100 nodes", "t"), now) {
            Record::Patch { name, patch, .. } => {
                assert_eq!(name, "web.combined");
                assert_eq!(patch["count"], 2);
                assert_eq!(patch["message"], format!("{COMBINED}0/100 nodes"));
            }
            other => panic!("expected a patch, got {other:?}"),
        }
        // After the window, messages count afresh.
        let later = now + SIMILAR_WINDOW + Duration::from_secs(1);
        let Record::Create { event: e, .. } =
            c.record(event("FailedScheduling", "0/101 nodes", "t"), later)
        else {
            panic!("a new window starts with a new event");
        };
        assert_eq!(e["message"], "0/101 nodes");
    }

    #[test]
    fn memory_stays_bounded() {
        let mut c = Correlator::new();
        let now = Instant::now();
        for i in 0..CAPACITY + 100 {
            let mut e = event("Pulled", "m", "t");
            e["involvedObject"]["name"] = json!(format!("pod-{i}"));
            c.record(e, now);
        }
        assert!(c.seen.len() <= CAPACITY);
        assert!(c.similar.len() <= CAPACITY);
    }
}
