//! Service traffic in the kernel: the agent turns the Services and Endpoints it watches into
//! one nftables table (DNAT from `ClusterIP:port`, node ports and load-balancer addresses to
//! ready endpoints, round robin), replaced atomically with `nft -f` after each change.
//! Rendering is pure ([`service_rules`], [`render`]); [`run`] is the watch-and-apply loop.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use kube::runtime::reflector::Store;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

use super::podnet::{Cidr, PodNetwork};

/// The packet mark that asks for masquerading (hairpin and node-port traffic).
const MASQUERADE_MARK: u32 = 0x4000;

/// One Service port as the kernel sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServicePortRule {
    /// `namespace/name:port`, for comments and logs.
    pub key: String,
    /// The virtual address, if the Service has one.
    pub cluster_ip: Option<Ipv4Addr>,
    /// The Service port.
    pub port: u16,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: &'static str,
    /// The node port, for NodePort and LoadBalancer Services.
    pub node_port: Option<u16>,
    /// Load-balancer ingress addresses (reached on `port`).
    pub ingress: Vec<Ipv4Addr>,
    /// Ready endpoints, sorted.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

fn protocol(p: Option<&str>) -> Option<&'static str> {
    match p.unwrap_or("TCP") {
        "TCP" => Some("tcp"),
        "UDP" => Some("udp"),
        "SCTP" => Some("sctp"),
        _ => None,
    }
}

/// The rules for every Service port, from Services and their Endpoints (pure).
pub fn service_rules(services: &[Service], endpoints: &[Endpoints]) -> Vec<ServicePortRule> {
    let by_name: BTreeMap<(&str, &str), &Endpoints> = endpoints
        .iter()
        .filter_map(|e| {
            Some((
                (
                    e.metadata.namespace.as_deref()?,
                    e.metadata.name.as_deref()?,
                ),
                e,
            ))
        })
        .collect();
    let mut rules = Vec::new();
    for svc in services {
        let (Some(ns), Some(name), Some(spec)) = (
            svc.metadata.namespace.as_deref(),
            svc.metadata.name.as_deref(),
            svc.spec.as_ref(),
        ) else {
            continue;
        };
        if spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let cluster_ip = spec
            .cluster_ip
            .as_deref()
            .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        let node_ports = matches!(spec.type_.as_deref(), Some("NodePort" | "LoadBalancer"));
        let ingress: Vec<Ipv4Addr> = if spec.type_.as_deref() == Some("LoadBalancer") {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let ep = by_name.get(&(ns, name));
        for port in spec.ports.iter().flatten() {
            let Some(proto) = protocol(port.protocol.as_deref()) else {
                continue;
            };
            let Ok(number) = u16::try_from(port.port) else {
                continue;
            };
            let node_port = port
                .node_port
                .filter(|_| node_ports)
                .and_then(|p| u16::try_from(p).ok());
            if cluster_ip.is_none() && node_port.is_none() {
                continue;
            }
            let mut targets = BTreeSet::new();
            for subset in ep.and_then(|e| e.subsets.as_ref()).into_iter().flatten() {
                let Some(target) = subset.ports.iter().flatten().find(|p| {
                    p.name.as_deref().unwrap_or("") == port.name.as_deref().unwrap_or("")
                        && protocol(p.protocol.as_deref()) == Some(proto)
                }) else {
                    continue;
                };
                let Ok(target_port) = u16::try_from(target.port) else {
                    continue;
                };
                for address in subset.addresses.iter().flatten() {
                    if let Ok(ip) = address.ip.parse::<Ipv4Addr>() {
                        targets.insert((ip, target_port));
                    }
                }
            }
            rules.push(ServicePortRule {
                key: format!(
                    "{ns}/{name}:{}",
                    port.name.clone().unwrap_or_else(|| number.to_string())
                ),
                cluster_ip,
                port: number,
                protocol: proto,
                node_port,
                ingress: ingress.clone(),
                endpoints: targets.into_iter().collect(),
            });
        }
    }
    rules.sort_by(|a, b| a.key.cmp(&b.key));
    rules
}

/// Everything one agent's table is made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSet {
    /// The nftables table's name (`ip` family).
    pub table: String,
    /// The table's comment: whose it is (tests find their tables by it).
    pub comment: String,
    /// This node's pod network.
    pub network: PodNetwork,
    /// Every node's pod CIDR, this one's included: traffic between them is not masqueraded.
    pub pod_cidrs: Vec<Cidr>,
    /// The Service ports.
    pub services: Vec<ServicePortRule>,
}

/// The table's name for a node (nftables identifiers cannot hold every node-name character).
pub fn table_name(network: &PodNetwork) -> String {
    format!("berth_{}", network.bridge.trim_start_matches("berth"))
}

fn quote(text: &str) -> String {
    text.chars()
        .filter(|c| *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// The whole `nft -f` script: drops and recreates the table in one transaction (pure).
pub fn render(set: &RuleSet) -> String {
    let t = &set.table;
    let bridge = quote(&set.network.bridge);
    let mut s = String::new();
    // `add` first so the `delete` succeeds on the first run; the whole file is one transaction.
    let _ = writeln!(s, "add table ip {t}\ndelete table ip {t}\ntable ip {t} {{");
    let _ = writeln!(s, "\tcomment \"{}\"", quote(&set.comment));
    let mut services = String::new();
    let mut nodeports = String::new();
    let mut chains = String::new();
    let mut rejects = String::new();
    let mut reject_nodeports = String::new();
    for (i, rule) in set.services.iter().enumerate() {
        let proto = rule.protocol;
        let comment = quote(&rule.key);
        let reject = if proto == "tcp" {
            "reject with tcp reset"
        } else {
            "reject"
        };
        if rule.endpoints.is_empty() {
            if let Some(ip) = rule.cluster_ip {
                let _ = writeln!(
                    rejects,
                    "\t\tip daddr {ip} {proto} dport {} {reject} comment \"{comment}\"",
                    rule.port
                );
            }
            if let Some(np) = rule.node_port {
                let _ = writeln!(
                    reject_nodeports,
                    "\t\t{proto} dport {np} {reject} comment \"{comment}\""
                );
            }
            for ip in &rule.ingress {
                let _ = writeln!(
                    reject_nodeports,
                    "\t\tip daddr {ip} {proto} dport {} {reject} comment \"{comment}\"",
                    rule.port
                );
            }
            continue;
        }
        if let Some(ip) = rule.cluster_ip {
            let _ = writeln!(
                services,
                "\t\tip daddr {ip} {proto} dport {} goto svc_{i} comment \"{comment}\"",
                rule.port
            );
        }
        // From outside, replies must come back through this node: masquerade.
        let mark = format!("meta mark set meta mark | {MASQUERADE_MARK:#x}");
        if let Some(np) = rule.node_port {
            let _ = writeln!(
                nodeports,
                "\t\t{proto} dport {np} {mark} goto svc_{i} comment \"{comment}\""
            );
        }
        for ip in &rule.ingress {
            let _ = writeln!(
                nodeports,
                "\t\tip daddr {ip} {proto} dport {} {mark} goto svc_{i} comment \"{comment}\"",
                rule.port
            );
        }
        let _ = writeln!(chains, "\tchain svc_{i} {{");
        if rule.endpoints.len() == 1 {
            let _ = writeln!(chains, "\t\tgoto ep_{i}_0");
        } else {
            let arms: Vec<String> = (0..rule.endpoints.len())
                .map(|j| format!("{j} : goto ep_{i}_{j}"))
                .collect();
            let _ = writeln!(
                chains,
                "\t\tnumgen inc mod {} vmap {{ {} }}",
                rule.endpoints.len(),
                arms.join(", ")
            );
        }
        let _ = writeln!(chains, "\t}}");
        for (j, (ip, port)) in rule.endpoints.iter().enumerate() {
            let _ = writeln!(
                chains,
                "\tchain ep_{i}_{j} {{\n\t\tip saddr {ip} meta mark set meta mark | {MASQUERADE_MARK:#x}\n\t\tmeta l4proto {proto} dnat to {ip}:{port}\n\t}}"
            );
        }
    }
    let _ = writeln!(s, "\tchain services {{\n{services}\t}}");
    let _ = writeln!(s, "\tchain nodeports {{\n{nodeports}\t}}");
    s.push_str(&chains);
    let _ = writeln!(
        s,
        "\tchain prerouting {{\n\t\ttype nat hook prerouting priority -105; policy accept;\n\
         \t\tiifname \"{bridge}\" jump services\n\
         \t\tfib daddr type local jump nodeports\n\t}}"
    );
    let _ = writeln!(
        s,
        "\tchain output {{\n\t\ttype nat hook output priority -105; policy accept;\n\
         \t\tjump services\n\
         \t\tfib daddr type local jump nodeports\n\t}}"
    );
    let own = set.network.cidr;
    let mut cidrs: Vec<String> = set.pod_cidrs.iter().map(Cidr::to_string).collect();
    if !set.pod_cidrs.contains(&own) {
        cidrs.push(own.to_string());
    }
    let _ = writeln!(
        s,
        "\tchain postrouting {{\n\t\ttype nat hook postrouting priority 95; policy accept;\n\
         \t\tmeta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade\n\
         \t\tct status dnat ip saddr 127.0.0.0/8 masquerade\n\
         \t\tip saddr {own} ip daddr != {{ {} }} oifname != \"{bridge}\" masquerade\n\t}}",
        cidrs.join(", ")
    );
    // The filter chains see every packet, not only a connection's first: only when some
    // Service has no endpoint are they there at all.
    if !rejects.is_empty() {
        let _ = writeln!(
            s,
            "\tchain no_endpoints {{\n{rejects}\t}}\n\
             \tchain filter_forward {{\n\t\ttype filter hook forward priority -5; policy accept;\n\
             \t\tjump no_endpoints\n\t}}\n\
             \tchain filter_output {{\n\t\ttype filter hook output priority -5; policy accept;\n\
             \t\tjump no_endpoints\n\t}}"
        );
    }
    if !reject_nodeports.is_empty() {
        let _ = writeln!(
            s,
            "\tchain no_endpoint_nodeports {{\n{reject_nodeports}\t}}\n\
             \tchain filter_local_output {{\n\t\ttype filter hook output priority -5; policy accept;\n\
             \t\tfib daddr type local jump no_endpoint_nodeports\n\t}}\n\
             \tchain filter_input {{\n\t\ttype filter hook input priority -5; policy accept;\n\
             \t\tjump no_endpoint_nodeports\n\t}}"
        );
    }
    s.push_str("}\n");
    s
}

/// Applying the table failed.
#[derive(Debug, thiserror::Error)]
#[error("`nft -f -` failed: {message}")]
pub struct ApplyError {
    pub message: String,
}

/// Runs `nft -f -` with `script`.
pub async fn apply(script: &str) -> Result<(), ApplyError> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ApplyError {
            message: format!("{e} (install nftables)"),
        })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(|e| ApplyError {
            message: e.to_string(),
        })?;
    drop(stdin);
    let out = child.wait_with_output().await.map_err(|e| ApplyError {
        message: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ApplyError {
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Lets the kernel route DNAT-ed `127.0.0.1:nodePort` traffic out of the loopback device,
/// as kube-proxy does.
pub fn allow_localhost_node_ports() {
    if let Err(e) = std::fs::write("/proc/sys/net/ipv4/conf/all/route_localnet", "1") {
        tracing::warn!(error = %e, "cannot set route_localnet; 127.0.0.1:nodePort will not answer");
    }
}

/// How often peer routes are put in again while the nodes keep reporting.
const ROUTES_REFRESH: Duration = Duration::from_secs(30);

/// The caches the proxy and the DNS server read.
#[derive(Clone)]
pub struct ServiceCaches {
    pub services: Store<Service>,
    pub endpoints: Store<Endpoints>,
    pub nodes: Store<Node>,
}

fn cloned<K: Clone + kube::Resource<DynamicType = ()>>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|k| (**k).clone()).collect()
}

/// Keeps the table equal to what the caches say: waits for a change, lets a burst of
/// changes settle (`debounce`), renders, and applies when the script differs from the last
/// one applied. Publishes the endpoint addresses the applied rules send to, so a pod being
/// deleted can wait until no rule sends to it. Failures retry with bounded back-off.
pub async fn run(
    caches: ServiceCaches,
    network: PodNetwork,
    node: String,
    comment: String,
    mut changes: mpsc::UnboundedReceiver<()>,
    applied_tx: watch::Sender<BTreeSet<Ipv4Addr>>,
    debounce: Duration,
) {
    let table = table_name(&network);
    let mut last = String::new();
    let mut last_routes = Vec::new();
    let mut routes_installed: Option<std::time::Instant> = None;
    let mut retry = Duration::from_millis(200);
    loop {
        tokio::time::sleep(debounce).await;
        while changes.try_recv().is_ok() {}
        let nodes = cloned(&caches.nodes);
        let mut pod_cidrs: Vec<Cidr> = nodes
            .iter()
            .filter_map(|n| Cidr::parse(n.spec.as_ref()?.pod_cidr.as_deref()?).ok())
            .collect();
        pod_cidrs.sort();
        pod_cidrs.dedup();
        // Routes to the other nodes' pod CIDRs: again when the nodes change them, when the
        // last try left one out, and at least every ROUTES_REFRESH while nodes report (the
        // kernel drops routes with their interface).
        let routes = super::podnet::peer_routes(&nodes, &node);
        let stale = routes_installed.is_none_or(|at| at.elapsed() >= ROUTES_REFRESH);
        if (routes != last_routes || stale) && super::podnet::install_routes(&routes).await {
            last_routes = routes;
            routes_installed = Some(std::time::Instant::now());
        }
        let set = RuleSet {
            table: table.clone(),
            comment: comment.clone(),
            network: network.clone(),
            pod_cidrs,
            services: service_rules(&cloned(&caches.services), &cloned(&caches.endpoints)),
        };
        let script = render(&set);
        if script != last {
            match apply(&script).await {
                Ok(()) => {
                    retry = Duration::from_millis(200);
                    last = script;
                    let targets = set
                        .services
                        .iter()
                        .flat_map(|r| r.endpoints.iter().map(|(ip, _)| *ip))
                        .collect();
                    applied_tx.send_replace(targets);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot apply the Service rules");
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
        }
        if changes.recv().await.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(value: serde_json::Value) -> Service {
        serde_json::from_value(value).unwrap()
    }

    fn web() -> (Service, Endpoints) {
        let s = svc(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [
                {"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}
        }));
        let e: Endpoints = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "subsets": [{"addresses": [{"ip": "10.244.0.3"}, {"ip": "10.244.1.2"}],
                         "notReadyAddresses": [{"ip": "10.244.0.9"}],
                         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}]
        }))
        .unwrap();
        (s, e)
    }

    #[test]
    fn ready_addresses_become_endpoints_and_not_ready_ones_do_not() {
        let (s, e) = web();
        let rules = service_rules(&[s], &[e]);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].key, "default/web:http");
        assert_eq!(rules[0].node_port, Some(30080));
        assert_eq!(
            rules[0].endpoints,
            vec![
                (Ipv4Addr::new(10, 244, 0, 3), 8080),
                (Ipv4Addr::new(10, 244, 1, 2), 8080)
            ]
        );
    }

    #[test]
    fn headless_and_external_name_services_get_no_rules() {
        let headless = svc(serde_json::json!({
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 5432}]}
        }));
        let external = svc(serde_json::json!({
            "metadata": {"name": "ext", "namespace": "default"},
            "spec": {"type": "ExternalName", "externalName": "example.com"}
        }));
        assert!(service_rules(&[headless, external], &[]).is_empty());
    }

    fn set(services: Vec<ServicePortRule>) -> RuleSet {
        let network = PodNetwork::plan("n1", Cidr::parse("10.244.0.0/24").unwrap());
        RuleSet {
            table: table_name(&network),
            comment: "berth-agent node=n1".into(),
            network,
            pod_cidrs: vec![Cidr::parse("10.244.1.0/24").unwrap()],
            services,
        }
    }

    #[test]
    fn the_table_balances_round_robin_and_masquerades_hairpin_traffic() {
        let (s, e) = web();
        let script = render(&set(service_rules(&[s], &[e])));
        assert!(script.starts_with("add table ip berth_"), "{script}");
        assert!(
            script.contains("ip daddr 10.96.0.10 tcp dport 80 goto svc_0"),
            "{script}"
        );
        assert!(
            script.contains("numgen inc mod 2 vmap { 0 : goto ep_0_0, 1 : goto ep_0_1 }"),
            "{script}"
        );
        assert!(
            script.contains("meta l4proto tcp dnat to 10.244.1.2:8080"),
            "{script}"
        );
        assert!(script.contains("tcp dport 30080 meta mark set"), "{script}");
        assert!(
            script.contains("ip daddr != { 10.244.1.0/24, 10.244.0.0/24 }"),
            "{script}"
        );
    }

    #[test]
    fn a_service_without_endpoints_rejects() {
        let (s, _) = web();
        let script = render(&set(service_rules(&[s], &[])));
        assert!(
            script.contains("ip daddr 10.96.0.10 tcp dport 80 reject with tcp reset"),
            "{script}"
        );
        assert!(
            script.contains("tcp dport 30080 reject with tcp reset"),
            "{script}"
        );
        assert!(!script.contains("dnat to"), "{script}");
    }
}
