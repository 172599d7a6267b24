//! The Endpoints controller: for every Service with a selector, an `Endpoints` object of the
//! same name listing the matching pods' addresses, ready ones in `addresses` and the others
//! in `notReadyAddresses`, with the ports each pod serves the Service's `targetPort` on.
//!
//! As in Kubernetes: a named `targetPort` resolves to the pod's `containerPort` of that name
//! (a pod without it is left out for that port); pods without an IP, finished pods and pods
//! being deleted are left out (a deleted pod goes at once, which the agent waits for before
//! stopping its containers), unless `publishNotReadyAddresses` keeps not-ready and
//! terminating pods in `addresses`. Services without a selector keep the Endpoints their
//! users write. The Endpoints of a deleted Service go. The result is sorted, so unchanged
//! input writes nothing.

use std::borrow::Borrow;
use std::collections::BTreeMap;

use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use super::cache::{Change, split_key};
use super::client::{LocalApi, path, resource};
use super::runtime::{Action, ReconcileError, Reconciler, WorkQueue};
use super::{Caches, is_deleting, name_of, pod_ready_since};

pub struct EndpointsController {
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
            (caches.pods.clone(), services_of_pod as super::Mapper),
            (caches.endpoints.clone(), endpoints_removed as super::Mapper),
        ],
        caches,
    );
    super::spawn_workers(
        tasks,
        EndpointsController {
            api,
            caches: caches.clone(),
        },
        &queue,
        2,
    );
}

/// The Services in the pod's namespace whose selector matches it, before or after.
fn services_of_pod(change: &Change, caches: &Caches) -> Vec<String> {
    let pods: Vec<&Value> = [&change.old, &change.new]
        .into_iter()
        .flatten()
        .map(|p| p.as_ref())
        .collect();
    let Some(ns) = pods
        .first()
        .and_then(|p| p.pointer("/metadata/namespace"))
        .and_then(Value::as_str)
    else {
        return Vec::new();
    };
    caches
        .services
        .list(Some(ns))
        .iter()
        .filter(|s| selector(s).is_some_and(|sel| pods.iter().any(|p| selects(sel, p))))
        .map(|s| super::cache::key_of(s))
        .collect()
}

/// A deleted Endpoints is written again if its Service still selects pods.
fn endpoints_removed(change: &Change, _: &Caches) -> Vec<String> {
    match change.new {
        None => vec![change.key.clone()],
        Some(_) => Vec::new(),
    }
}

/// The Service's selector, if it has a non-empty one.
fn selector(service: &Value) -> Option<&Map<String, Value>> {
    service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
}

fn selects(selector: &Map<String, Value>, pod: &Value) -> bool {
    let labels = pod.pointer("/metadata/labels").and_then(Value::as_object);
    selector
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The port a pod serves a Service port on: a number, or the pod's container port of that
/// name (with the Service port's protocol).
fn resolve_port(pod: &Value, service_port: &Value) -> Option<i64> {
    let target = service_port
        .get("targetPort")
        .or_else(|| service_port.get("port"))?;
    if let Some(n) = target.as_i64() {
        return Some(n);
    }
    let name = target.as_str()?;
    if let Ok(n) = name.parse::<i64>() {
        return Some(n);
    }
    let protocol = service_port["protocol"].as_str().unwrap_or("TCP");
    pod.pointer("/spec/containers")
        .and_then(Value::as_array)?
        .iter()
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .find(|p| p["name"] == name && p["protocol"].as_str().unwrap_or("TCP") == protocol)
        .and_then(|p| p["containerPort"].as_i64())
}

/// Whether a pod belongs in the Endpoints at all (Kubernetes' `ShouldPodBeInEndpoints`).
fn listed(pod: &Value, publish_not_ready: bool) -> bool {
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str);
    if ip.is_none_or(str::is_empty) {
        return false;
    }
    if is_deleting(pod) && !publish_not_ready {
        return false;
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let restarts = pod.pointer("/spec/restartPolicy").and_then(Value::as_str) == Some("Always");
    restarts || !matches!(phase, Some("Succeeded" | "Failed"))
}

/// The `subsets` of a Service's Endpoints over the pods of its namespace: addresses grouped
/// by the set of ports they serve, everything sorted.
pub fn subsets(service: &Value, pods: &[impl Borrow<Value>]) -> Value {
    let Some(sel) = selector(service) else {
        return json!([]);
    };
    let publish = service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let service_ports: Vec<&Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let service_name = name_of(service);
    // Key: the serialized ports; value: (ready, not ready) addresses by (ip, pod name).
    type Addresses = BTreeMap<(String, String), Value>;
    let mut groups: BTreeMap<String, (Vec<Value>, Addresses, Addresses)> = BTreeMap::new();
    for pod in pods.iter().map(Borrow::borrow) {
        if !selects(sel, pod) || !listed(pod, publish) {
            continue;
        }
        let mut ports: Vec<Value> = Vec::new();
        for sp in &service_ports {
            let Some(port) = resolve_port(pod, sp) else {
                continue;
            };
            let mut p = json!({"port": port, "protocol": sp["protocol"].as_str().unwrap_or("TCP")});
            if let Some(name) = sp["name"].as_str().filter(|n| !n.is_empty()) {
                p["name"] = json!(name);
            }
            if let Some(app) = sp.get("appProtocol") {
                p["appProtocol"] = app.clone();
            }
            ports.push(p);
        }
        if ports.is_empty() && !service_ports.is_empty() {
            continue;
        }
        ports.sort_by_key(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["port"].as_i64(),
            )
        });
        let ip = pod["status"]["podIP"].as_str().unwrap_or("").to_string();
        let pod_name = name_of(pod).to_string();
        let mut address = json!({"ip": ip});
        if let (Some(host), Some(sub)) = (
            pod.pointer("/spec/hostname").and_then(Value::as_str),
            pod.pointer("/spec/subdomain").and_then(Value::as_str),
        ) {
            if sub == service_name {
                address["hostname"] = json!(host);
            }
        }
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            address["nodeName"] = json!(node);
        }
        address["targetRef"] = json!({
            "kind": "Pod",
            "namespace": pod["metadata"]["namespace"],
            "name": pod_name,
            "uid": pod["metadata"]["uid"],
        });
        let ready = publish || (pod_ready_since(pod).is_some() && !is_deleting(pod));
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let group = groups
            .entry(key)
            .or_insert_with(|| (ports, BTreeMap::new(), BTreeMap::new()));
        let side = if ready { &mut group.1 } else { &mut group.2 };
        side.insert((ip, pod_name), address);
    }
    let list: Vec<Value> = groups
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready.into_values().collect::<Vec<_>>());
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready.into_values().collect::<Vec<_>>());
            }
            if !ports.is_empty() {
                subset["ports"] = json!(ports);
            }
            subset
        })
        .collect();
    Value::Array(list)
}

/// The labels an Endpoints carries: the Service's, plus the headless marker.
fn labels_for(service: &Value) -> Value {
    let mut labels = service
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if service.pointer("/spec/clusterIP").and_then(Value::as_str) == Some("None") {
        labels["service.kubernetes.io/headless"] = json!("");
    }
    labels
}

fn same_labels(a: Option<&Value>, b: &Value) -> bool {
    let empty = json!({});
    a.unwrap_or(&empty) == b
}

#[async_trait::async_trait]
impl Reconciler for EndpointsController {
    fn name(&self) -> &'static str {
        "endpoints"
    }

    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError> {
        let (ns, name) = split_key(key);
        let endpoints_r = resource("v1", "Endpoints");
        let live = self.caches.endpoints.get(key);
        let object_path = path(endpoints_r, ns, Some(name), None);
        let Some(service) = self.caches.services.get(key) else {
            // The Service is gone: so is its Endpoints (by name, as Kubernetes does).
            if live.is_some() {
                self.api.delete(&object_path, "Background").await?;
            }
            return Ok(Action::await_change());
        };
        if selector(&service).is_none()
            || service.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName")
        {
            // Users manage the Endpoints of a Service without a selector.
            return Ok(Action::await_change());
        }
        let pods = self.caches.pods.list(ns);
        let subsets = subsets(&service, &pods);
        let labels = labels_for(&service);
        match live {
            Some(live)
                if live.get("subsets").unwrap_or(&json!([])) == &subsets
                    && same_labels(live.pointer("/metadata/labels"), &labels) => {}
            Some(live) => {
                let mut new = (*live).clone();
                new["subsets"] = subsets;
                new["metadata"]["labels"] = labels;
                self.api.replace(&object_path, &new).await?;
            }
            None => {
                let object = json!({
                    "apiVersion": "v1", "kind": "Endpoints",
                    "metadata": {"name": name, "namespace": ns, "labels": labels},
                    "subsets": subsets,
                });
                match self
                    .api
                    .create(&path(endpoints_r, ns, None, None), &object)
                    .await
                {
                    Ok(_) => {}
                    // Already there (the cache had not shown it yet): the next round compares.
                    Err(e) if e.code == 409 => {
                        return Ok(Action::requeue(super::runtime::retry_delay(1)));
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(Action::await_change())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: Option<&str>, ready: bool, labels: Value) -> Value {
        let mut p = json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": labels},
            "spec": {"nodeName": "n1", "restartPolicy": "Always", "containers": [
                {"name": "c", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]}]},
            "status": {"phase": "Running", "conditions": [
                {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        });
        if let Some(ip) = ip {
            p["status"]["podIP"] = json!(ip);
        }
        p
    }

    fn service(spec: Value) -> Value {
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn ready_and_not_ready_pods_are_split_and_named_ports_resolve() {
        let svc = service(json!({"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}));
        let mut other = pod("other", Some("10.244.0.9"), true, json!({"app": "web"}));
        other["spec"]["containers"][0]["ports"][0]["name"] = json!("web");
        let pods = vec![
            pod("b", Some("10.244.0.3"), true, json!({"app": "web"})),
            pod("a", Some("10.244.0.2"), true, json!({"app": "web"})),
            pod("c", Some("10.244.0.4"), false, json!({"app": "web"})),
            pod("d", None, true, json!({"app": "web"})),
            pod("e", Some("10.244.0.5"), true, json!({"app": "db"})),
            other,
        ];
        let s = subsets(&svc, &pods);
        assert_eq!(s.as_array().unwrap().len(), 1, "{s}");
        let ips: Vec<&str> = s[0]["addresses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["ip"].as_str().unwrap())
            .collect();
        assert_eq!(ips, ["10.244.0.2", "10.244.0.3"]);
        assert_eq!(s[0]["notReadyAddresses"][0]["ip"], "10.244.0.4");
        assert_eq!(
            s[0]["ports"],
            json!([{"name": "http", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(s[0]["addresses"][0]["targetRef"]["name"], "a");
        assert_eq!(s[0]["addresses"][0]["nodeName"], "n1");
    }

    #[test]
    fn terminating_pods_go_at_once_unless_not_ready_addresses_are_published() {
        let mut p = pod("a", Some("10.244.0.2"), true, json!({"app": "web"}));
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let svc = service(
            json!({"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}),
        );
        assert_eq!(subsets(&svc, &[p.clone()]), json!([]));
        let published = service(
            json!({"selector": {"app": "web"}, "publishNotReadyAddresses": true,
            "ports": [{"port": 80, "targetPort": 8080}]}),
        );
        let q = pod("b", Some("10.244.0.3"), false, json!({"app": "web"}));
        let s = subsets(&published, &[p, q]);
        assert_eq!(s[0]["addresses"].as_array().unwrap().len(), 2, "{s}");
    }

    #[test]
    fn services_without_selectors_have_no_computed_subsets() {
        let svc = service(json!({"ports": [{"port": 80}]}));
        let p = pod("a", Some("10.244.0.2"), true, json!({"app": "web"}));
        assert_eq!(subsets(&svc, &[p]), json!([]));
    }
}
