//! LoadBalancer Services in the k3s ServiceLB style: with no cloud to ask, every Ready node
//! is the load balancer (the agent's NodePort rules answer on each), so
//! `status.loadBalancer.ingress` lists the InternalIP of every Ready node, and follows nodes
//! as they come, go, or stop being Ready. A Service that is no longer a LoadBalancer loses
//! the ingress list.

use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::Caches;
use super::cache::{Change, split_key};
use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};

pub struct LoadBalancerController {
    api: LocalApi,
    caches: Caches,
}

pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.services,
        vec![
            (caches.services.clone(), super::same_key as super::Mapper),
            (
                caches.nodes.clone(),
                load_balancers_on_node_change as super::Mapper,
            ),
        ],
        caches,
    );
    super::spawn_workers(
        tasks,
        LoadBalancerController {
            api,
            caches: caches.clone(),
        },
        &queue,
        1,
    );
}

/// The InternalIP of a Ready node.
fn ready_address(node: &Value) -> Option<&str> {
    let ready = node
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .any(|c| c["type"] == "Ready" && c["status"] == "True");
    if !ready {
        return None;
    }
    node.pointer("/status/addresses")
        .and_then(Value::as_array)?
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
}

/// A node change that alters the set of Ready addresses touches every LoadBalancer.
fn load_balancers_on_node_change(change: &Change, caches: &Caches) -> Vec<String> {
    let before = change.old.as_deref().and_then(ready_address);
    let after = change.new.as_deref().and_then(ready_address);
    if before == after {
        return Vec::new();
    }
    caches
        .services
        .list(None)
        .iter()
        .filter(|s| is_load_balancer(s))
        .map(|s| super::cache::key_of(s))
        .collect()
}

fn is_load_balancer(service: &Value) -> bool {
    service.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
}

/// The ingress list of a LoadBalancer over these nodes: their Ready addresses, sorted.
pub fn ingress<'a>(nodes: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
    let mut ips: Vec<&str> = nodes.into_iter().filter_map(ready_address).collect();
    ips.sort_unstable();
    ips.dedup();
    ips.into_iter().map(|ip| json!({"ip": ip})).collect()
}

#[async_trait::async_trait]
impl Reconciler for LoadBalancerController {
    fn name(&self) -> &'static str {
        "service-lb"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let Some(service) = self.caches.services.get(key) else {
            return Ok(Action::await_change());
        };
        let nodes = self.caches.nodes.list(None);
        let wanted: Vec<Value> = if is_load_balancer(&service) {
            ingress(nodes.iter().map(|n| n.as_ref()))
        } else {
            Vec::new()
        };
        let live: Vec<Value> = service
            .pointer("/status/loadBalancer/ingress")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if live == wanted {
            return Ok(Action::await_change());
        }
        let (ns, name) = split_key(key);
        let patch = if wanted.is_empty() {
            json!({"status": {"loadBalancer": {"ingress": null}}})
        } else {
            json!({"status": {"loadBalancer": {"ingress": wanted}}})
        };
        self.api
            .merge_patch(
                &path(resource("v1", "Service"), ns, Some(name), Some("status")),
                &patch,
            )
            .await?;
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(ip: &str, ready: &str) -> Value {
        json!({"status": {"conditions": [{"type": "Ready", "status": ready}],
            "addresses": [{"type": "Hostname", "address": "h"}, {"type": "InternalIP", "address": ip}]}})
    }

    #[test]
    fn ingress_lists_ready_nodes_only_sorted() {
        let nodes = [
            node("10.0.0.3", "True"),
            node("10.0.0.1", "True"),
            node("10.0.0.2", "Unknown"),
        ];
        assert_eq!(
            ingress(nodes.iter()),
            vec![json!({"ip": "10.0.0.1"}), json!({"ip": "10.0.0.3"})]
        );
    }
}
