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
//!
//! The same addresses are mirrored into `discovery.k8s.io/v1` EndpointSlices (labelled
//! `kubernetes.io/service-name`, one per set of ports), which `kubectl describe service`
//! reads since kubectl 1.31; there terminating pods stay, with `terminating: true`.

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::Arc;

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

/// Starts the controller; its work queue tells which Services it has reconciled, and when.
pub fn start(tasks: &mut JoinSet<()>, api: LocalApi, caches: &Caches) -> Arc<WorkQueue> {
    let queue = WorkQueue::new();
    super::feed(
        tasks,
        &queue,
        &caches.services,
        vec![
            (caches.services.clone(), super::same_key as super::Mapper),
            (caches.pods.clone(), services_of_pod as super::Mapper),
            (caches.endpoints.clone(), endpoints_removed as super::Mapper),
            (
                caches.endpointslices.clone(),
                slice_removed as super::Mapper,
            ),
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
    queue
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

/// A deleted slice of this controller's is written again if its Service still selects pods.
fn slice_removed(change: &Change, _: &Caches) -> Vec<String> {
    match (&change.old, &change.new) {
        (Some(old), None) if managed_slice_of(old).is_some() => {
            let ns = old["metadata"]["namespace"].as_str().unwrap_or("");
            vec![format!("{ns}/{}", managed_slice_of(old).unwrap_or(""))]
        }
        _ => Vec::new(),
    }
}

/// The Service a slice this controller manages belongs to.
fn managed_slice_of(slice: &Value) -> Option<&str> {
    let labels = slice.pointer("/metadata/labels")?;
    if labels["endpointslice.kubernetes.io/managed-by"] != SLICE_MANAGER {
        return None;
    }
    labels[SERVICE_NAME_LABEL].as_str()
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

/// Whether a pod can be an endpoint at all: it has an IP and has not finished (Kubernetes'
/// `ShouldPodBeInEndpoints`; terminating pods are decided by the caller).
fn has_address(pod: &Value) -> bool {
    let ip = pod.pointer("/status/podIP").and_then(Value::as_str);
    if ip.is_none_or(str::is_empty) {
        return false;
    }
    let phase = pod.pointer("/status/phase").and_then(Value::as_str);
    let restarts = pod.pointer("/spec/restartPolicy").and_then(Value::as_str) == Some("Always");
    restarts || !matches!(phase, Some("Succeeded" | "Failed"))
}

fn publishes_not_ready(service: &Value) -> bool {
    service
        .pointer("/spec/publishNotReadyAddresses")
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// One selected pod as an endpoint of a Service.
struct PodEndpoint<'a> {
    pod: &'a Value,
    ip: String,
    /// The Service's ports as this pod serves them, sorted; `name` always set (`""` when
    /// the Service port has none), as EndpointSlice readers expect.
    ports: Vec<Value>,
    /// Ready, or published anyway.
    ready: bool,
    serving: bool,
    terminating: bool,
}

impl PodEndpoint<'_> {
    /// The Endpoints address: ip, hostname (if the pod's subdomain is the Service),
    /// nodeName and targetRef.
    fn address(&self, service_name: &str) -> Value {
        let pod = self.pod;
        let mut address = json!({"ip": self.ip});
        if let (Some(host), Some(sub)) = (
            pod.pointer("/spec/hostname").and_then(Value::as_str),
            pod.pointer("/spec/subdomain").and_then(Value::as_str),
        ) && sub == service_name
        {
            address["hostname"] = json!(host);
        }
        if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
            address["nodeName"] = json!(node);
        }
        address["targetRef"] = json!({
            "kind": "Pod",
            "namespace": pod["metadata"]["namespace"],
            "name": name_of(pod),
            "uid": pod["metadata"]["uid"],
        });
        address
    }

    fn sort_key(&self) -> (String, String) {
        (self.ip.clone(), name_of(self.pod).to_string())
    }
}

/// The pods a Service selects that have an address and serve at least one of its ports
/// (all of them when it has none), terminating ones included.
fn pod_endpoints<'a>(service: &Value, pods: &'a [impl Borrow<Value>]) -> Vec<PodEndpoint<'a>> {
    let Some(sel) = selector(service) else {
        return Vec::new();
    };
    let publish = publishes_not_ready(service);
    let service_ports: Vec<&Value> = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for pod in pods.iter().map(Borrow::borrow) {
        if !selects(sel, pod) || !has_address(pod) {
            continue;
        }
        let mut ports: Vec<Value> = Vec::new();
        for sp in &service_ports {
            let Some(port) = resolve_port(pod, sp) else {
                continue;
            };
            let mut p = json!({
                "name": sp["name"].as_str().unwrap_or(""),
                "port": port,
                "protocol": sp["protocol"].as_str().unwrap_or("TCP"),
            });
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
        let terminating = is_deleting(pod);
        let serving = pod_ready_since(pod).is_some();
        out.push(PodEndpoint {
            pod,
            ip: pod["status"]["podIP"].as_str().unwrap_or("").to_string(),
            ports,
            ready: publish || (serving && !terminating),
            serving: publish || serving,
            terminating,
        });
    }
    out.sort_by_key(PodEndpoint::sort_key);
    out
}

/// Endpoints ports name only named Service ports.
fn endpoints_port(p: &Value) -> Value {
    let mut p = p.clone();
    if p["name"] == ""
        && let Some(m) = p.as_object_mut()
    {
        m.remove("name");
    }
    p
}

/// The `subsets` of a Service's Endpoints over the pods of its namespace: addresses grouped
/// by the set of ports they serve, everything sorted. Terminating pods are left out unless
/// the Service publishes not-ready addresses.
pub fn subsets(service: &Value, pods: &[impl Borrow<Value>]) -> Value {
    let publish = publishes_not_ready(service);
    let service_name = name_of(service);
    // By serialized ports: the ports, then the ready and the not-ready addresses.
    type Group = (Vec<Value>, Vec<Value>, Vec<Value>);
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for e in pod_endpoints(service, pods) {
        if e.terminating && !publish {
            continue;
        }
        let ports: Vec<Value> = e.ports.iter().map(endpoints_port).collect();
        let key = serde_json::to_string(&ports).unwrap_or_default();
        let group = groups
            .entry(key)
            .or_insert_with(|| (ports, Vec::new(), Vec::new()));
        let side = if e.ready { &mut group.1 } else { &mut group.2 };
        side.push(e.address(service_name));
    }
    let list: Vec<Value> = groups
        .into_values()
        .map(|(ports, ready, not_ready)| {
            let mut subset = json!({});
            if !ready.is_empty() {
                subset["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                subset["notReadyAddresses"] = json!(not_ready);
            }
            if !ports.is_empty() {
                subset["ports"] = json!(ports);
            }
            subset
        })
        .collect();
    Value::Array(list)
}

/// Who manages the slices this controller writes (Kubernetes' own value, so tools that
/// look for controller-managed slices find them).
pub const SLICE_MANAGER: &str = "endpointslice-controller.k8s.io";
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The `discovery.k8s.io/v1` EndpointSlices of a Service: one per set of ports, named after
/// the Service and a hash of the ports (so a set keeps its name), with every selected pod
/// including terminating ones, whose conditions say so. A Service selecting nothing gets
/// one empty slice, as in Kubernetes.
pub fn slices(service: &Value, pods: &[impl Borrow<Value>]) -> Vec<Value> {
    use sha2::{Digest, Sha256};
    let service_name = name_of(service);
    let mut groups: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for e in pod_endpoints(service, pods) {
        let key = serde_json::to_string(&e.ports).unwrap_or_default();
        let address = e.address(service_name);
        let mut endpoint = json!({
            "addresses": [e.ip],
            "conditions": {"ready": e.ready, "serving": e.serving, "terminating": e.terminating},
            "targetRef": address["targetRef"],
        });
        for field in ["nodeName", "hostname"] {
            if let Some(v) = address.get(field) {
                endpoint[field] = v.clone();
            }
        }
        groups
            .entry(key)
            .or_insert_with(|| (e.ports.clone(), Vec::new()))
            .1
            .push(endpoint);
    }
    if groups.is_empty() {
        groups.insert("[]".into(), (Vec::new(), Vec::new()));
    }
    let mut labels = labels_for(service);
    labels[SERVICE_NAME_LABEL] = json!(service_name);
    labels["endpointslice.kubernetes.io/managed-by"] = json!(SLICE_MANAGER);
    groups
        .into_iter()
        .map(|(key, (ports, endpoints))| {
            let hash = hex::encode(&Sha256::digest(key.as_bytes())[..4]);
            json!({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": format!("{service_name}-{hash}"),
                    "namespace": service["metadata"]["namespace"],
                    "labels": labels,
                    "ownerReferences": [super::owner_ref(service)],
                },
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            })
        })
        .collect()
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
            self.sync_slices(ns, name, Vec::new()).await?;
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
        self.sync_slices(ns, name, slices(&service, &pods)).await
    }
}

impl EndpointsController {
    /// Makes the Service's managed slices exactly `wanted`.
    async fn sync_slices(
        &self,
        ns: Option<&str>,
        service: &str,
        wanted: Vec<Value>,
    ) -> Result<Action, ReconcileError> {
        let r = resource("discovery.k8s.io/v1", "EndpointSlice");
        let live: Vec<_> = self
            .caches
            .endpointslices
            .list(ns)
            .into_iter()
            .filter(|s| managed_slice_of(s) == Some(service))
            .collect();
        for w in &wanted {
            let same_name = live.iter().find(|l| name_of(l) == name_of(w));
            match same_name {
                Some(l)
                    if l["endpoints"] == w["endpoints"]
                        && l["ports"] == w["ports"]
                        && l.pointer("/metadata/labels") == w.pointer("/metadata/labels") => {}
                Some(l) => {
                    let mut new = (**l).clone();
                    for field in ["endpoints", "ports", "addressType"] {
                        new[field] = w[field].clone();
                    }
                    new["metadata"]["labels"] = w["metadata"]["labels"].clone();
                    self.api
                        .replace(&path(r, ns, Some(name_of(l)), None), &new)
                        .await?;
                }
                None => match self.api.create(&path(r, ns, None, None), w).await {
                    Ok(_) => {}
                    Err(e) if e.code == 409 => {
                        return Ok(Action::requeue(super::runtime::retry_delay(1)));
                    }
                    Err(e) => return Err(e.into()),
                },
            }
        }
        for l in &live {
            if !wanted.iter().any(|w| name_of(w) == name_of(l)) {
                self.api
                    .delete(&path(r, ns, Some(name_of(l)), None), "Background")
                    .await?;
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
    fn slices_group_by_ports_keep_terminating_pods_and_keep_their_names() {
        let svc = json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "u"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}});
        let mut gone = pod("a", Some("10.244.0.2"), true, json!({"app": "web"}));
        gone["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let up = pod("b", Some("10.244.0.3"), true, json!({"app": "web"}));
        let s = slices(&svc, &[gone, up.clone()]);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0]["metadata"]["labels"]["kubernetes.io/service-name"],
            "web"
        );
        assert_eq!(s[0]["metadata"]["ownerReferences"][0]["uid"], "u");
        assert_eq!(
            s[0]["ports"],
            json!([{"name": "", "port": 8080, "protocol": "TCP"}])
        );
        assert_eq!(s[0]["endpoints"][0]["conditions"]["terminating"], true);
        assert_eq!(s[0]["endpoints"][0]["conditions"]["ready"], false);
        assert_eq!(s[0]["endpoints"][1]["conditions"]["ready"], true);
        let again = slices(&svc, &[up]);
        assert_eq!(again[0]["metadata"]["name"], s[0]["metadata"]["name"]);
        let empty = slices(&svc, &[] as &[Value]);
        assert_eq!(empty.len(), 1);
        assert_eq!(empty[0]["endpoints"], json!([]));
    }

    #[test]
    fn services_without_selectors_have_no_computed_subsets() {
        let svc = service(json!({"ports": [{"port": 80}]}));
        let p = pod("a", Some("10.244.0.2"), true, json!({"app": "web"}));
        assert_eq!(subsets(&svc, &[p]), json!([]));
    }
}
