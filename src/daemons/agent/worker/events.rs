//! Kubernetes Events about pods (Pulled, Created, Started, Killing, BackOff, DriftDetected…),
//! as the kubelet writes them: core/v1 `Event` objects in the pod's namespace, so
//! `kubectl get events` and `kubectl describe pod` show them.
//!
//! Recording never blocks pod work: events go through a channel to one task that posts
//! them, and a failed post is logged, not retried (events are best effort in Kubernetes too).
//! A repeated event (a back-off, a failing probe) patches the count of the first instead of
//! adding an object ([`crate::cluster::events`]).

use std::sync::Mutex;

use k8s_openapi::api::core::v1::Event;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::cluster::events::{self, Correlator, EventSink};

/// Events written through the agent's API client, in one namespace.
struct AgentEvents(Api<Event>);

impl EventSink for AgentEvents {
    type Error = kube::Error;

    async fn create(&self, event: Value) -> Result<Option<String>, kube::Error> {
        let event: Event = serde_json::from_value(event).expect("a well-formed Event");
        let written = self.0.create(&PostParams::default(), &event).await?;
        Ok(written.metadata.name)
    }

    async fn patch(&self, name: &str, patch: &Value) -> Result<bool, kube::Error> {
        match self
            .0
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The component name events carry in `source` and `reportingComponent`.
pub const COMPONENT: &str = "berth-agent";

/// The pod an event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// Sends events to the API server in the background.
#[derive(Debug, Clone)]
pub struct EventRecorder {
    tx: mpsc::UnboundedSender<Note>,
    node: String,
}

/// What the background poster is told.
#[derive(Debug)]
enum Note {
    /// Post this event.
    Event(Box<Event>),
    /// The pod with this uid is gone: forget its events.
    Gone(String),
}

/// The events recorded and not posted yet, in order.
#[derive(Debug)]
pub struct EventQueue {
    rx: mpsc::UnboundedReceiver<Note>,
}

impl EventQueue {
    /// Posts the events as they come, until every recorder is dropped.
    pub async fn post(mut self, client: kube::Client) {
        let correlator = Mutex::new(Correlator::new());
        while let Some(note) = self.rx.recv().await {
            let event = match note {
                Note::Event(event) => event,
                Note::Gone(uid) => {
                    correlator
                        .lock()
                        .expect("the event correlator")
                        .forget_object(&uid);
                    continue;
                }
            };
            let ns = event.metadata.namespace.clone().unwrap_or_default();
            let sink = AgentEvents(Api::namespaced(client.clone(), &ns));
            let value = serde_json::to_value(&event).expect("an Event serialises");
            if let Err(e) = events::send(&correlator, &sink, value).await {
                tracing::warn!(reason = ?event.reason, error = %e, "cannot record an event");
            }
        }
    }

    /// The events recorded since the last call, without posting them: what a test of the
    /// pod worker, which runs with no API server, looks at.
    pub fn take(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        while let Ok(note) = self.rx.try_recv() {
            if let Note::Event(event) = note {
                out.push(*event);
            }
        }
        out
    }
}

impl EventRecorder {
    /// A recorder writing as the agent of `node`, and the queue its events go to.
    pub fn new(node: &str) -> (EventRecorder, EventQueue) {
        let (tx, rx) = mpsc::unbounded_channel::<Note>();
        let recorder = EventRecorder {
            tx,
            node: node.to_string(),
        };
        (recorder, EventQueue { rx })
    }

    /// Records an event about `pod`; `container` fills `involvedObject.fieldPath`.
    pub fn pod(
        &self,
        pod: &PodRef,
        kind: EventType,
        reason: &str,
        container: Option<&str>,
        message: String,
    ) {
        tracing::info!(pod = %format!("{}/{}", pod.namespace, pod.name), reason, %message, "event");
        let event = pod_event(pod, &self.node, kind, reason, container, &message);
        let _ = self.tx.send(Note::Event(Box::new(event)));
    }

    /// The pod is gone from this node for good: its events will not repeat.
    pub fn forget_pod(&self, uid: &str) {
        let _ = self.tx.send(Note::Gone(uid.to_string()));
    }
}

/// The Event object, as the kubelet shapes it.
pub fn pod_event(
    pod: &PodRef,
    node: &str,
    kind: EventType,
    reason: &str,
    container: Option<&str>,
    message: &str,
) -> Event {
    let now = chrono::Utc::now();
    let suffix = format!(
        "{:x}{:04x}",
        now.timestamp_nanos_opt().unwrap_or_default(),
        rand::random::<u16>()
    );
    let value = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": format!("{}.{suffix}", pod.name), "namespace": pod.namespace},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": pod.name,
            "namespace": pod.namespace, "uid": pod.uid,
            "fieldPath": container.map(|c| format!("spec.containers{{{c}}}")),
        },
        "reason": reason,
        "message": message,
        "type": kind.as_str(),
        "source": {"component": COMPONENT, "host": node},
        "firstTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "lastTimestamp": now.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        "count": 1,
        "reportingComponent": COMPONENT,
        "reportingInstance": node,
    });
    serde_json::from_value(value).expect("a well-formed Event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_pod_container_and_node() {
        let pod = PodRef {
            namespace: "shop".into(),
            name: "web".into(),
            uid: "u1".into(),
        };
        let e = pod_event(
            &pod,
            "n1",
            EventType::Warning,
            "BackOff",
            Some("app"),
            "Back-off restarting failed container app",
        );
        assert!(e.metadata.name.as_deref().unwrap().starts_with("web."));
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(e.involved_object.uid.as_deref(), Some("u1"));
        assert_eq!(
            e.involved_object.field_path.as_deref(),
            Some("spec.containers{app}")
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.source.unwrap().host.as_deref(), Some("n1"));
        assert_ne!(
            pod_event(&pod, "n1", EventType::Normal, "X", None, "m")
                .metadata
                .name,
            pod_event(&pod, "n1", EventType::Normal, "X", None, "m")
                .metadata
                .name
        );
    }
}
