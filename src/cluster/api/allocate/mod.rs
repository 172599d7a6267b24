//! Addresses the API server hands out when an object is written, as Kubernetes does: a pod
//! CIDR per Node (one block of `--cluster-cidr`), a ClusterIP per Service (from
//! `--service-cidr`) and NodePorts per NodePort/LoadBalancer Service (from
//! `--service-node-port-range`).
//!
//! What is taken is read from the stored objects and from the address claims ([`claims`]):
//! one store key per address, claimed with a create-if-absent txn before (or with) the write
//! of the object that holds it, so several API servers on one etcd never hand out one
//! address twice. Within one server, allocations are also serialized by one lock in
//! [`Allocations`] that a writer holds from reading what is taken until its write is stored,
//! so its own concurrent creates do not race for claims. A dry run assigns (to show the
//! result) but stores nothing, so it claims nothing.
//!
//! [`assign`] is the core (over a [`Taken`] snapshot; random picks are its only impurity);
//! [`reserve`] adds the lock and the reads around it for the single-object verbs. The ranges
//! and their address arithmetic are in `network.rs`.

pub mod claims;
mod network;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{Map, Value, json};

pub use self::network::{Ipv4Cidr, Network, parse_port_range};
use super::ApiState;
use super::resources::{Resource, by_kind};
use super::status::{ApiError, Cause};
use super::storage::Storage;

/// Addresses held by stored objects, each with the `namespace/name` holding it, so an
/// object's own addresses are not counted against it.
#[derive(Debug, Default, Clone)]
pub struct Taken {
    cluster_ips: HashMap<Ipv4Addr, String>,
    node_ports: HashMap<u16, String>,
    /// Offsets of the node blocks in the cluster CIDR.
    pod_cidrs: HashMap<u64, String>,
}

fn owner(object: &Value) -> String {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    format!("{}/{}", text("/metadata/namespace"), text("/metadata/name"))
}

fn spec_str<'a>(object: &'a Value, field: &str) -> Option<&'a str> {
    object
        .get("spec")
        .and_then(|s| s.get(field))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

impl Taken {
    /// Counts the addresses `object` (a Service or a Node) holds.
    pub fn record(&mut self, network: &Network, kind: &str, object: &Value) {
        let who = owner(object);
        match kind {
            "Service" => {
                if let Some(ip) = spec_str(object, "clusterIP").and_then(|s| s.parse().ok()) {
                    self.cluster_ips.insert(ip, who.clone());
                }
                for p in ports(object) {
                    if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                        self.node_ports.insert(n as u16, who.clone());
                    }
                }
            }
            "Node" => {
                if let Some(c) =
                    spec_str(object, "podCIDR").and_then(|s| s.parse::<Ipv4Cidr>().ok())
                {
                    let ip = c.nth(0);
                    if network.cluster_cidr.contains(ip) {
                        self.pod_cidrs
                            .insert(network.cluster_cidr.offset_of(ip), who);
                    }
                }
            }
            _ => {}
        }
    }

    fn held_by_other<K: std::hash::Hash + Eq>(map: &HashMap<K, String>, key: &K, me: &str) -> bool {
        map.get(key).is_some_and(|who| who != me)
    }
}

fn ports(object: &Value) -> impl Iterator<Item = &Map<String, Value>> {
    object
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// Whether writes of this resource get addresses.
pub fn allocates(r: &Resource) -> bool {
    r.api_version == "v1" && matches!(r.kind, "Service" | "Node")
}

fn invalid(kind: &str, object: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::Invalid {
        kind: kind.into(),
        group: String::new(),
        name: object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        causes,
    }
}

fn cause(field: &str, message: String) -> Cause {
    Cause {
        reason: "FieldValueInvalid".into(),
        message,
        field: field.into(),
    }
}

fn spec_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.get("spec").is_some_and(Value::is_object) {
        object["spec"] = json!({});
    }
    object["spec"].as_object_mut().expect("spec is an object")
}

/// Carries the addresses of `old` into an update that omits them, as Kubernetes does, so a
/// `kubectl replace` or a PUT of a manifest without `clusterIP` keeps the allocated one.
/// Pure; runs before the update is compared with the stored object.
pub fn keep_allocated(kind: &str, old: &Value, new: &mut Value) {
    match kind {
        "Service" => {
            let external_name = service_type(new) == "ExternalName";
            if let Some(ip) = spec_str(old, "clusterIP").filter(|_| !external_name) {
                let s = spec_mut(new);
                let absent = |k: &str| match s.get(k) {
                    None | Some(Value::Null) => true,
                    Some(Value::String(t)) => t.is_empty(),
                    Some(Value::Array(a)) => a.is_empty(),
                    Some(_) => false,
                };
                if absent("clusterIP") && absent("clusterIPs") {
                    s.insert("clusterIP".into(), json!(ip));
                    if let Some(ips) = old.pointer("/spec/clusterIPs") {
                        s.insert("clusterIPs".into(), ips.clone());
                    }
                }
            }
            if needs_node_ports(new) && needs_node_ports(old) {
                let old_ports: Vec<&Map<String, Value>> = ports(old).collect();
                if let Some(list) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
                    for p in list.iter_mut().filter_map(Value::as_object_mut) {
                        if p.get("nodePort").is_some_and(|n| !n.is_null()) {
                            continue;
                        }
                        if let Some(n) = same_port(&old_ports, p).and_then(|o| o.get("nodePort")) {
                            p.insert("nodePort".into(), n.clone());
                        }
                    }
                }
            }
        }
        "Node" => {
            if let Some(cidr) = spec_str(old, "podCIDR") {
                let s = spec_mut(new);
                if s.get("podCIDR").is_none_or(|v| v.is_null() || v == "") {
                    s.insert("podCIDR".into(), json!(cidr));
                    s.insert(
                        "podCIDRs".into(),
                        old.pointer("/spec/podCIDRs")
                            .cloned()
                            .unwrap_or_else(|| json!([cidr])),
                    );
                }
            }
        }
        _ => {}
    }
}

/// The port of `old` that `p` continues: the same port number and protocol.
fn same_port<'a>(
    old: &[&'a Map<String, Value>],
    p: &Map<String, Value>,
) -> Option<&'a Map<String, Value>> {
    let key = |m: &Map<String, Value>| {
        (
            m.get("port").and_then(Value::as_u64),
            m.get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("TCP")
                .to_string(),
        )
    };
    old.iter().find(|o| key(o) == key(p)).copied()
}

fn service_type(object: &Value) -> &str {
    spec_str(object, "type").unwrap_or("ClusterIP")
}

/// NodePort Services, and LoadBalancers unless `allocateLoadBalancerNodePorts: false`.
fn needs_node_ports(object: &Value) -> bool {
    match service_type(object) {
        "NodePort" => true,
        "LoadBalancer" => {
            object.pointer("/spec/allocateLoadBalancerNodePorts") != Some(&Value::Bool(false))
        }
        _ => false,
    }
}

/// Assigns the addresses `new` needs (a Service or a Node; other kinds are left alone),
/// honouring requested ones if they are in range and free, and counts them as taken.
/// `old` is the stored object of an update.
pub fn assign(
    network: &Network,
    taken: &mut Taken,
    kind: &str,
    old: Option<&Value>,
    new: &mut Value,
) -> Result<(), ApiError> {
    let causes = match kind {
        "Service" => assign_service(network, taken, old, new),
        "Node" => assign_pod_cidr(network, taken, old, new),
        _ => return Ok(()),
    };
    if !causes.is_empty() {
        return Err(invalid(kind, new, causes));
    }
    taken.record(network, kind, new);
    Ok(())
}

fn assign_service(
    network: &Network,
    taken: &Taken,
    old: Option<&Value>,
    new: &mut Value,
) -> Vec<Cause> {
    let me = owner(new);
    let mut causes = Vec::new();
    let range = network.service_cidr;
    let external_name = service_type(new) == "ExternalName";
    let old_ip = old
        .filter(|o| service_type(o) != "ExternalName")
        .and_then(|o| spec_str(o, "clusterIP"))
        .map(str::to_string);
    let s = spec_mut(new);
    let requested = match s.get("clusterIP").and_then(Value::as_str) {
        Some(ip) if !ip.is_empty() => Some(ip.to_string()),
        _ => s
            .get("clusterIPs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .filter(|ip| !ip.is_empty())
            .map(str::to_string),
    };
    if let Some(list) = s.get("clusterIPs").and_then(Value::as_array) {
        let first = list.first().and_then(Value::as_str);
        if list.len() > 1 {
            causes.push(cause(
                "spec.clusterIPs",
                format!(
                    "Invalid value: {}: this cluster is single-stack IPv4: give one address",
                    Value::Array(list.clone())
                ),
            ));
        } else if requested.is_some() && first.is_some() && first != requested.as_deref() {
            causes.push(cause(
                "spec.clusterIPs",
                format!(
                    "Invalid value: {}: must hold the same address as spec.clusterIP ({})",
                    Value::Array(list.clone()),
                    requested.as_deref().unwrap_or("")
                ),
            ));
        }
    }
    if external_name {
        // An ExternalName Service is a DNS alias: it holds no address (switching to it
        // releases the one it had).
        s.remove("clusterIP");
        s.remove("clusterIPs");
    }
    let chosen: Option<String> = match (&old_ip, requested) {
        _ if external_name => None,
        (Some(old_ip), Some(req)) if *old_ip != req => {
            causes.push(cause(
                "spec.clusterIPs[0]",
                format!("Invalid value: {req:?}: may not change once set (it is {old_ip}); delete and re-create the Service to change it"),
            ));
            None
        }
        (Some(old_ip), _) => Some(old_ip.clone()),
        (None, Some(req)) if req == "None" => Some(req),
        (None, Some(req)) => match req.parse::<Ipv4Addr>() {
            Err(_) => {
                causes.push(cause(
                    "spec.clusterIPs[0]",
                    format!("Invalid value: {req:?}: must be a valid IPv4 address, \"None\" for a headless Service, or omitted to get one"),
                ));
                None
            }
            Ok(ip)
                if !range.contains(ip)
                    || ip == range.nth(0)
                    || ip == range.nth(range.size() - 1) =>
            {
                causes.push(cause(
                    "spec.clusterIPs",
                    format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {range}"),
                ));
                None
            }
            Ok(ip) if Taken::held_by_other(&taken.cluster_ips, &ip, &me) => {
                causes.push(cause(
                    "spec.clusterIPs",
                    format!("Invalid value: [\"{ip}\"]: failed to allocate IP {ip}: provided IP is already allocated; omit spec.clusterIP to get a free one"),
                ));
                None
            }
            Ok(ip) => Some(ip.to_string()),
        },
        (None, None) => match free_cluster_ip(network, taken) {
            Some(ip) => Some(ip.to_string()),
            None => {
                causes.push(cause(
                    "spec.clusterIPs",
                    format!("failed to allocate a ClusterIP: the range {range} is full; delete unused Services or give berth server a larger --service-cidr"),
                ));
                None
            }
        },
    };
    if let Some(ip) = chosen {
        s.insert("clusterIP".into(), json!(ip));
        s.insert("clusterIPs".into(), json!([ip]));
    }

    let needs = needs_node_ports(new);
    let Some(list) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) else {
        return causes;
    };
    if !needs {
        // A ClusterIP (or ExternalName) Service holds no node ports: changing the type
        // releases them.
        for p in list.iter_mut().filter_map(Value::as_object_mut) {
            p.remove("nodePort");
        }
        return causes;
    }
    let mut mine: Vec<u16> = Vec::new();
    for (i, p) in list.iter_mut().enumerate() {
        let Some(p) = p.as_object_mut() else { continue };
        let field = format!("spec.ports[{i}].nodePort");
        match p.get("nodePort").filter(|v| !v.is_null()) {
            Some(v) => {
                let Some(n) = v.as_u64().filter(|n| *n <= u64::from(u16::MAX)) else {
                    causes.push(cause(
                        &field,
                        format!("Invalid value: {v}: must be a port number"),
                    ));
                    continue;
                };
                let n = n as u16;
                if !network.node_ports.contains(&n) {
                    causes.push(cause(&field, format!(
                        "Invalid value: {n}: provided port is not in the valid range. The range of valid ports is {}-{}",
                        network.node_ports.start(), network.node_ports.end()
                    )));
                } else if Taken::held_by_other(&taken.node_ports, &n, &me) {
                    causes.push(cause(&field, format!(
                        "Invalid value: {n}: provided port is already allocated; omit nodePort to get a free one"
                    )));
                } else {
                    mine.push(n);
                }
            }
            None => match free_node_port(network, taken, &mine) {
                Some(n) => {
                    mine.push(n);
                    p.insert("nodePort".into(), json!(n));
                }
                None => causes.push(cause(
                    &field,
                    format!(
                        "failed to allocate a node port: the range {}-{} is full",
                        network.node_ports.start(),
                        network.node_ports.end()
                    ),
                )),
            },
        }
    }
    causes
}

/// A random free address of the service range, as Kubernetes picks them, so a released
/// address is not handed out again at once. The network, broadcast and `kubernetes`
/// Service addresses are never picked.
fn free_cluster_ip(network: &Network, taken: &Taken) -> Option<Ipv4Addr> {
    let range = network.service_cidr;
    let usable = range.size().saturating_sub(3);
    if usable == 0 {
        return None;
    }
    let start = rand::thread_rng().gen_range(0..usable);
    (0..usable)
        .map(|i| range.nth(2 + (start + i) % usable))
        .find(|ip| !taken.cluster_ips.contains_key(ip))
}

fn free_node_port(network: &Network, taken: &Taken, mine: &[u16]) -> Option<u16> {
    let (lo, hi) = (*network.node_ports.start(), *network.node_ports.end());
    let count = u32::from(hi - lo) + 1;
    let start = rand::thread_rng().gen_range(0..count);
    (0..count)
        .map(|i| lo + ((start + i) % count) as u16)
        .find(|n| !taken.node_ports.contains_key(n) && !mine.contains(n))
}

fn assign_pod_cidr(
    network: &Network,
    taken: &Taken,
    old: Option<&Value>,
    new: &mut Value,
) -> Vec<Cause> {
    let me = owner(new);
    let cluster = network.cluster_cidr;
    let block = 1u64 << (32 - network.node_mask);
    let old_cidr = old.and_then(|o| spec_str(o, "podCIDR")).map(str::to_string);
    let s = spec_mut(new);
    let requested = s
        .get("podCIDR")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .or_else(|| {
            s.get("podCIDRs")
                .and_then(Value::as_array)
                .and_then(|a| a.first())
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let mut causes = Vec::new();
    let chosen = match (old_cidr, requested) {
        (Some(old), Some(req)) if old != req => {
            causes.push(cause("spec.podCIDR", format!(
                "Invalid value: {req:?}: node updates may not change podCIDR once set (it is {old})"
            )));
            None
        }
        (Some(old), _) => Some(old),
        (None, Some(req)) => match req.parse::<Ipv4Cidr>() {
            Err(e) => {
                causes.push(cause(
                    "spec.podCIDR",
                    format!("Invalid value: {req:?}: {e}"),
                ));
                None
            }
            Ok(c) if c.prefix() != network.node_mask || !cluster.contains(c.nth(0)) => {
                causes.push(cause("spec.podCIDR", format!(
                    "Invalid value: {req:?}: must be a /{} block inside the cluster CIDR {cluster}; omit it to get one",
                    network.node_mask
                )));
                None
            }
            Ok(c) if Taken::held_by_other(&taken.pod_cidrs, &cluster.offset_of(c.nth(0)), &me) => {
                causes.push(cause("spec.podCIDR", format!(
                    "Invalid value: {req:?}: already allocated to node {}; omit it to get a free one",
                    taken.pod_cidrs[&cluster.offset_of(c.nth(0))].trim_start_matches('/')
                )));
                None
            }
            Ok(c) => Some(c.to_string()),
        },
        (None, None) => {
            let blocks = cluster.size() / block;
            match (0..blocks).find(|b| !taken.pod_cidrs.contains_key(&(b * block))) {
                Some(b) => Some(
                    Ipv4Cidr::new(cluster.nth(b * block), network.node_mask)
                        .expect("mask checked")
                        .to_string(),
                ),
                None => {
                    // As Kubernetes' node IPAM: the node still registers, without a block
                    // (its agent keeps pods on Docker's default bridge and serves no Services).
                    tracing::warn!(
                        blocks,
                        %cluster,
                        "a node gets no pod CIDR: all /{} blocks are taken; give berth server a larger --cluster-cidr",
                        network.node_mask
                    );
                    None
                }
            }
        }
    };
    if let Some(c) = chosen {
        s.insert("podCIDR".into(), json!(c));
        s.insert("podCIDRs".into(), json!([c]));
    }
    causes
}

/// The lock that serializes allocations, held by a writer until its write is stored.
#[derive(Debug, Default)]
pub struct Allocations {
    lock: tokio::sync::Mutex<()>,
}

/// A held allocation: the write that follows is safe until this is dropped.
pub type Held<'a> = Option<tokio::sync::MutexGuard<'a, ()>>;

impl Allocations {
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }
}

/// Reads what the stored objects of `kinds` (Service, Node) hold, and what is claimed.
pub async fn read_taken(
    storage: &Storage,
    network: &Network,
    kinds: &[&str],
) -> Result<Taken, ApiError> {
    let mut taken = Taken::default();
    let claimed = storage
        .store
        .list(
            claims::PREFIX,
            crate::cluster::store::ListOptions::default(),
        )
        .await?;
    for kv in claimed.items {
        let holder = String::from_utf8_lossy(&kv.value);
        // `Kind/namespace/name`: counted as `namespace/name`, as objects are.
        let Some((kind, who)) = holder.split_once('/') else {
            continue;
        };
        if kinds.contains(&kind) {
            claims::mark(network, &mut taken, &kv.key, who);
        }
    }
    for &kind in kinds {
        let r = by_kind("v1", kind).expect("served");
        let page = storage.list(r, None, 0, None, None).await?;
        for stored in page.items {
            taken.record(network, kind, &stored.decode()?);
        }
    }
    Ok(taken)
}

/// The claims a write of `new` (over `old`) must make: the addresses `new` holds that `old`
/// did not, with the holder's name. For the batch's txn, which claims with the write itself.
pub fn new_claims(
    network: &Network,
    kind: &str,
    old: Option<&Value>,
    new: &Value,
) -> (String, Vec<String>) {
    let mut before = Taken::default();
    if let Some(old) = old {
        before.record(network, kind, old);
    }
    let had: std::collections::HashSet<String> =
        claims::keys(network, &before).into_iter().collect();
    let mut after = Taken::default();
    after.record(network, kind, new);
    let keys = claims::keys(network, &after)
        .into_iter()
        .filter(|k| !had.contains(k))
        .collect();
    (claims::holder(kind, new), keys)
}

/// Releases the claims of the addresses `old` held and `new` (`None`: deleted) does not,
/// after the write that dropped them was stored. Best effort: a claim left behind is
/// released by the repair pass.
pub async fn release(state: &ApiState, r: &Resource, old: &Value, new: Option<&Value>) {
    if !allocates(r) {
        return;
    }
    let network = &state.config.network;
    let mut before = Taken::default();
    before.record(network, r.kind, old);
    let mut after = Taken::default();
    if let Some(new) = new {
        after.record(network, r.kind, new);
    }
    let kept: std::collections::HashSet<String> =
        claims::keys(network, &after).into_iter().collect();
    let holder = claims::holder(r.kind, old);
    for key in claims::keys(network, &before) {
        if kept.contains(&key) {
            continue;
        }
        if let Err(e) = claims::release(&state.storage, &holder, &key).await {
            tracing::debug!(error = %e, key, "cannot release an address claim; repair will");
        }
    }
}

/// How often a write picks again after another server claimed what it picked.
const CLAIM_ATTEMPTS: usize = 8;

/// Assigns the addresses of a Service or Node write under the allocation lock and claims
/// them (unless `dry_run`); keep the returned guard until the write is stored. Other kinds
/// pass through untouched.
pub async fn reserve<'a>(
    state: &'a ApiState,
    r: &Resource,
    old: Option<&Value>,
    new: &mut Value,
    dry_run: bool,
) -> Result<Held<'a>, ApiError> {
    if !allocates(r) {
        return Ok(None);
    }
    let guard = state.allocations.lock().await;
    let network = &state.config.network;
    // Services and Nodes draw from separate ranges: only the written kind is read.
    let mut taken = read_taken(&state.storage, network, &[r.kind]).await?;
    for _ in 0..CLAIM_ATTEMPTS {
        let mut candidate = new.clone();
        assign(network, &mut taken.clone(), r.kind, old, &mut candidate)?;
        if dry_run {
            *new = candidate;
            return Ok(Some(guard));
        }
        let (who, keys) = new_claims(network, r.kind, old, &candidate);
        let others = claims::claim(&state.storage, &who, &keys).await?;
        if others.is_empty() {
            *new = candidate;
            return Ok(Some(guard));
        }
        // Another server claimed some of it meanwhile: pick again around those.
        for (key, holder) in others {
            let who = holder.split_once('/').map_or(holder.as_str(), |(_, w)| w);
            claims::mark(network, &mut taken, &key, who);
        }
    }
    Err(ApiError::Conflict {
        resource: r.qualified(),
        name: owner(new),
        detail: "the addresses picked were claimed by other API servers each time; try again"
            .into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
    }

    #[test]
    fn services_get_distinct_ips_requested_ones_are_checked_and_headless_stays() {
        let net = Network::default();
        let mut taken = Taken::default();
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let mut s = svc(&format!("s{i}"), json!({"ports": [{"port": 80}]}));
            assign(&net, &mut taken, "Service", None, &mut s).unwrap();
            let ip: Ipv4Addr = s["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
            assert!(net.service_cidr.contains(ip) && ip != net.kubernetes_service_ip());
            assert_eq!(s["spec"]["clusterIPs"], json!([ip.to_string()]));
            assert!(seen.insert(ip));
        }
        let held = seen.iter().next().unwrap().to_string();
        let mut s = svc("x", json!({"clusterIP": held}));
        let Err(ApiError::Invalid { causes, .. }) =
            assign(&net, &mut taken, "Service", None, &mut s)
        else {
            panic!("taken IP accepted")
        };
        assert_eq!(causes[0].field, "spec.clusterIPs");
        assert!(
            causes[0]
                .message
                .contains("provided IP is already allocated")
        );
        let mut s = svc("y", json!({"clusterIP": "10.0.0.1"}));
        let e = assign(&net, &mut taken, "Service", None, &mut s).unwrap_err();
        assert!(e.to_string().contains("not in the valid range"), "{e}");
        let mut s = svc("h", json!({"clusterIP": "None"}));
        assign(&net, &mut taken, "Service", None, &mut s).unwrap();
        assert_eq!(s["spec"]["clusterIPs"], json!(["None"]));
    }

    #[test]
    fn cluster_ip_is_kept_on_update_and_immutable() {
        let net = Network::default();
        let mut taken = Taken::default();
        let mut old = svc("a", json!({"ports": [{"port": 80}]}));
        assign(&net, &mut taken, "Service", None, &mut old).unwrap();
        let mut new = svc("a", json!({"ports": [{"port": 81}]}));
        keep_allocated("Service", &old, &mut new);
        assign(&net, &mut taken, "Service", Some(&old), &mut new).unwrap();
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        let mut changed = svc("a", json!({"clusterIP": "10.96.7.7"}));
        let e = assign(&net, &mut taken, "Service", Some(&old), &mut changed).unwrap_err();
        assert!(e.to_string().contains("may not change once set"), "{e}");
    }

    #[test]
    fn node_ports_are_allocated_honoured_refused_and_released() {
        let net = Network::default();
        let mut taken = Taken::default();
        let mut a = svc(
            "a",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}, {"port": 443}]}),
        );
        assign(&net, &mut taken, "Service", None, &mut a).unwrap();
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 30080);
        let other = a["spec"]["ports"][1]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&other) && other != 30080);
        let mut b = svc(
            "b",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        let Err(ApiError::Invalid { causes, .. }) =
            assign(&net, &mut taken, "Service", None, &mut b)
        else {
            panic!("taken port accepted")
        };
        assert_eq!(causes[0].field, "spec.ports[0].nodePort");
        let mut c = svc(
            "c",
            json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}),
        );
        assert!(assign(&net, &mut taken, "Service", None, &mut c).is_err());
        // Back to ClusterIP: the ports go.
        let mut a2 = svc(
            "a",
            json!({"type": "ClusterIP", "ports": [{"port": 80, "nodePort": 30080}]}),
        );
        keep_allocated("Service", &a, &mut a2);
        assign(&net, &mut taken, "Service", Some(&a), &mut a2).unwrap();
        assert!(a2["spec"]["ports"][0].get("nodePort").is_none());
        // An update without nodePort keeps it.
        let mut a3 = svc(
            "a",
            json!({"type": "NodePort", "ports": [{"port": 80}, {"port": 443}]}),
        );
        keep_allocated("Service", &a, &mut a3);
        assert_eq!(a3["spec"]["ports"][0]["nodePort"], 30080);
        assert_eq!(a3["spec"]["ports"][1]["nodePort"], other);
    }

    #[test]
    fn external_names_hold_no_address_and_load_balancers_may_skip_node_ports() {
        let net = Network::default();
        let mut taken = Taken::default();
        let mut old = svc("a", json!({"ports": [{"port": 80}]}));
        assign(&net, &mut taken, "Service", None, &mut old).unwrap();
        let mut alias = svc(
            "a",
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
        );
        keep_allocated("Service", &old, &mut alias);
        assign(&net, &mut taken, "Service", Some(&old), &mut alias).unwrap();
        assert!(alias["spec"].get("clusterIP").is_none(), "{alias}");
        let mut lb = svc(
            "lb",
            json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false,
            "ports": [{"port": 80}]}),
        );
        assign(&net, &mut taken, "Service", None, &mut lb).unwrap();
        assert!(lb["spec"]["ports"][0].get("nodePort").is_none(), "{lb}");
    }

    #[test]
    fn nodes_get_distinct_blocks_and_requested_ones_are_checked() {
        let net = Network::default();
        let mut taken = Taken::default();
        let node = |n: &str, spec: Value| json!({"metadata": {"name": n}, "spec": spec});
        let mut a = node("a", json!({}));
        assign(&net, &mut taken, "Node", None, &mut a).unwrap();
        assert_eq!(a["spec"]["podCIDR"], "10.244.0.0/24");
        assert_eq!(a["spec"]["podCIDRs"], json!(["10.244.0.0/24"]));
        let mut b = node("b", json!({"podCIDR": "10.244.7.0/24"}));
        assign(&net, &mut taken, "Node", None, &mut b).unwrap();
        let mut c = node("c", json!({}));
        assign(&net, &mut taken, "Node", None, &mut c).unwrap();
        assert_eq!(c["spec"]["podCIDR"], "10.244.1.0/24");
        let mut d = node("d", json!({"podCIDR": "10.244.7.0/24"}));
        let e = assign(&net, &mut taken, "Node", None, &mut d).unwrap_err();
        assert!(e.to_string().contains("already allocated to node b"), "{e}");
        let mut e = node("e", json!({"podCIDR": "10.9.0.0/24"}));
        assert!(assign(&net, &mut taken, "Node", None, &mut e).is_err());
        let mut a2 = node("a", json!({}));
        keep_allocated("Node", &a, &mut a2);
        assert_eq!(a2["spec"]["podCIDR"], "10.244.0.0/24");
    }

    #[test]
    fn a_node_beyond_the_last_block_registers_without_one() {
        let net = Network {
            cluster_cidr: "10.244.0.0/23".parse().unwrap(),
            ..Network::default()
        };
        let mut taken = Taken::default();
        let node = |n: &str| json!({"metadata": {"name": n}, "spec": {}});
        for n in ["a", "b"] {
            let mut o = node(n);
            assign(&net, &mut taken, "Node", None, &mut o).unwrap();
            assert!(o["spec"]["podCIDR"].is_string());
        }
        let mut c = node("c");
        assign(&net, &mut taken, "Node", None, &mut c).unwrap();
        assert!(c["spec"].get("podCIDR").is_none(), "{c}");
    }
}
