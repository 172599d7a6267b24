//! What every pod worker of one agent shares: the runtime, the event recorder, the
//! `/metrics` counters, the ConfigMap/Secret cache, the pod address pool, and which container
//! stops were the agent's own (so a `docker stop` by someone else is recognised as drift).
//! The API client is not here: a pod worker's pass talks only to the runtime.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::events::EventRecorder;
use super::metrics::AgentMetrics;
use crate::daemons::agent::net::attach::PodAddresses;
use crate::daemons::agent::pod::backoff::BackoffConfig;
use crate::daemons::agent::pod::env::ObjectResolver;
use crate::daemons::agent::pod::podspec::AgentPolicy;

/// Shared by the sync loop and every pod worker.
pub struct AgentContext<R> {
    /// The container engine.
    pub runtime: R,
    /// This node's name.
    pub node: String,
    /// This node's address (`status.hostIP`).
    pub host_ip: String,
    /// What pods may do on this node.
    pub policy: AgentPolicy,
    /// Labels put on every container and volume (tests mark their objects so).
    pub extra_labels: BTreeMap<String, String>,
    /// Restart back-off settings.
    pub backoff: BackoffConfig,
    /// Where events go.
    pub events: EventRecorder,
    /// The counters of `/metrics` (drift, relists, pod passes).
    pub metrics: Arc<AgentMetrics>,
    /// ConfigMaps and Secrets, from the agent's watch cache.
    pub objects: Arc<dyn ObjectResolver>,
    /// The pod addresses this node's Service rules send traffic to, when it runs them:
    /// a pod being deleted waits until its address leaves this set.
    pub service_targets: Option<tokio::sync::watch::Receiver<BTreeSet<std::net::Ipv4Addr>>>,
    /// The pod network's address pool, when this node has a pod network.
    pub addresses: Option<PodAddresses>,
    own_stops: Mutex<HashSet<String>>,
    external_stops: Mutex<HashMap<String, String>>,
}

impl<R> AgentContext<R> {
    /// A context with no stops recorded yet, the default back-off, fresh counters, no
    /// Service rules and no pod network.
    pub fn new(
        runtime: R,
        node: String,
        host_ip: String,
        policy: AgentPolicy,
        extra_labels: BTreeMap<String, String>,
        events: EventRecorder,
        objects: Arc<dyn ObjectResolver>,
    ) -> Self {
        AgentContext {
            runtime,
            node,
            host_ip,
            policy,
            extra_labels,
            backoff: BackoffConfig::default(),
            events,
            metrics: Arc::default(),
            objects,
            service_targets: None,
            addresses: None,
            own_stops: Mutex::default(),
            external_stops: Mutex::default(),
        }
    }

    /// Notes that the agent is about to stop or remove container `id`.
    pub fn stopping(&self, id: &str) {
        self.own_stops
            .lock()
            .expect("stop set")
            .insert(id.to_string());
    }

    /// Records an engine event: a kill or stop the agent did not ask for is remembered as
    /// external; a destroyed container is forgotten.
    pub fn observe_engine_event(&self, id: &str, action: &str) {
        let mut own = self.own_stops.lock().expect("stop set");
        match action {
            "kill" | "stop" if !own.contains(id) => {
                self.external_stops
                    .lock()
                    .expect("external set")
                    .entry(id.to_string())
                    .or_insert_with(|| action.to_string());
            }
            "destroy" => {
                own.remove(id);
                self.external_stops.lock().expect("external set").remove(id);
            }
            _ => {}
        }
    }

    /// The directory of a pod's `hosts` and `resolv.conf`, when this node has a pod network.
    pub fn pod_files_dir(&self, pod_uid: &str) -> Option<std::path::PathBuf> {
        let net = self.policy.pod_network.as_ref()?;
        Some(crate::daemons::agent::net::attach::pod_files_dir(
            &net.files_dir,
            pod_uid,
        ))
    }

    /// Lets go of what a pod held besides its containers, once they are gone: its address,
    /// its `hosts` and `resolv.conf`, and the events remembered for it.
    pub fn pod_removed(&self, pod_uid: &str) {
        if let Some(pool) = &self.addresses {
            pool.release(pod_uid);
        }
        if let Some(dir) = self.pod_files_dir(pod_uid) {
            crate::daemons::agent::net::attach::remove_pod_files(&dir);
        }
        self.events.forget_pod(pod_uid);
    }

    /// Whether container `id` was stopped by someone else; the engine's action if so.
    pub fn stopped_externally(&self, id: &str) -> Option<String> {
        self.external_stops
            .lock()
            .expect("external set")
            .get(id)
            .cloned()
    }
}
