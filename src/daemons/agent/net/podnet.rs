//! The node's pod network: one Docker bridge network per node for its `podCIDR`, so pod
//! addresses are routable from the host; forwarding between pod networks (Docker isolates
//! its bridges from each other); and host routes to other nodes' pod CIDRs via their
//! InternalIP (flannel host-gw style). See docs/design/services.md.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};

use k8s_openapi::api::core::v1::Node;

use crate::daemons::agent::RuntimeError;
use crate::daemons::agent::runtime::DockerRuntime;
use crate::daemons::agent::runtime::docker_network::BridgeNetwork;

/// The label that marks a Docker network as a berth agent's pod network; its value is the node.
pub const NETWORK_LABEL: &str = "berth.dev/pod-network";

/// An IPv4 network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub addr: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n` (host bits must be zero).
    pub fn parse(text: &str) -> Result<Cidr, PodNetError> {
        let bad = || PodNetError::Cidr {
            cidr: text.to_string(),
        };
        let (addr, prefix) = text.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| bad())?;
        let prefix: u8 = prefix.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let cidr = Cidr { addr, prefix };
        if cidr.network() != u32::from(addr) {
            return Err(bad());
        }
        Ok(cidr)
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    fn network(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }

    /// Whether `ip` lies in this network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }

    /// The first usable address: the bridge's (gateway) address.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }

    /// The first and last addresses pods may hold: after the gateway, before broadcast.
    pub fn pod_range(&self) -> (Ipv4Addr, Ipv4Addr) {
        let broadcast = self.network() | !self.mask();
        (
            Ipv4Addr::from(self.network() + 2),
            Ipv4Addr::from(broadcast - 1),
        )
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// This node's pod network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetwork {
    /// The node's pod CIDR.
    pub cidr: Cidr,
    /// The Docker network's name.
    pub docker_name: String,
    /// The Linux bridge interface (at most 15 characters).
    pub bridge: String,
    /// The bridge's address: pods' default gateway and their DNS server.
    pub gateway: Ipv4Addr,
}

impl PodNetwork {
    /// The network for `node` and its pod CIDR (pure).
    pub fn plan(node: &str, cidr: Cidr) -> PodNetwork {
        let digest = crate::daemons::agent::runtime::labels::spec_hash(&node);
        PodNetwork {
            cidr,
            docker_name: format!("berth-{node}"),
            // Interface names are limited to 15 bytes; node names are not.
            bridge: format!("berth{}", &digest[..8.min(digest.len())]),
            gateway: cidr.gateway(),
        }
    }
}

/// What went wrong setting up the pod network.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    #[error(
        "{cidr:?} is not an IPv4 pod CIDR such as 10.244.1.0/24 (prefix 8 to 30, host bits zero)"
    )]
    Cidr { cidr: String },
    #[error(
        "Docker network {name:?} exists with subnet {found}, not {wanted}; remove it (docker network rm {name}) or use its CIDR"
    )]
    Mismatch {
        name: String,
        found: String,
        wanted: String,
    },
    #[error("cannot create Docker network {name:?} for pod CIDR {cidr}")]
    Create {
        name: String,
        cidr: String,
        #[source]
        source: RuntimeError,
    },
    #[error("`{command}` failed: {message}")]
    Command { command: String, message: String },
}

/// Makes the Docker network exist with the planned subnet, gateway and bridge name.
pub async fn ensure(
    runtime: &DockerRuntime,
    net: &PodNetwork,
    labels: &BTreeMap<String, String>,
    node: &str,
) -> Result<(), PodNetError> {
    let wanted = net.cidr.to_string();
    if let Ok(Some(found)) = runtime.inspect_network(&net.docker_name).await {
        if found.subnet == wanted {
            return Ok(());
        }
        if found.in_use {
            return Err(PodNetError::Mismatch {
                name: net.docker_name.clone(),
                found: found.subnet,
                wanted,
            });
        }
        let _ = runtime.remove_network(&net.docker_name).await;
    }
    let mut all_labels: HashMap<String, String> = labels.clone().into_iter().collect();
    all_labels.insert(NETWORK_LABEL.into(), node.to_string());
    all_labels.insert(
        crate::daemons::agent::runtime::labels::MANAGED.into(),
        "true".into(),
    );
    let request = BridgeNetwork {
        name: net.docker_name.clone(),
        subnet: wanted.clone(),
        gateway: net.gateway.to_string(),
        bridge: net.bridge.clone(),
        // Pod-to-pod traffic keeps its source address; berth masquerades only what
        // leaves the cluster's pod networks (see the agent's nftables table).
        masquerade: false,
        labels: all_labels,
    };
    runtime
        .create_bridge_network(&request)
        .await
        .map_err(|source| PodNetError::Create {
            name: net.docker_name.clone(),
            cidr: wanted,
            source,
        })?;
    Ok(())
}

async fn run(program: &str, args: &[&str]) -> Result<String, PodNetError> {
    let command = format!("{program} {}", args.join(" "));
    let out = tokio::process::Command::new(program)
        .args(args)
        .output()
        .await
        .map_err(|e| PodNetError::Command {
            command: command.clone(),
            message: format!("{e} (is {program} installed?)"),
        })?;
    if !out.status.success() {
        return Err(PodNetError::Command {
            command,
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The comment on this agent's iptables rules, so they can be found (and removed by tests).
pub fn rule_comment(node: &str, labels: &BTreeMap<String, String>) -> String {
    let mut comment = format!("berth-agent node={node}");
    for (k, v) in labels {
        comment.push_str(&format!(" {k}={v}"));
    }
    comment.chars().take(250).collect()
}

/// Lets traffic to and from the pod network through Docker's FORWARD chain, which drops
/// traffic between Docker bridges and new connections into them (`DOCKER-USER` runs first).
/// Idempotent.
pub async fn allow_forwarding(net: &PodNetwork, comment: &str) -> Result<(), PodNetError> {
    let cidr = net.cidr.to_string();
    for direction in ["-d", "-s"] {
        let rule = [
            direction,
            cidr.as_str(),
            "-m",
            "comment",
            "--comment",
            comment,
            "-j",
            "ACCEPT",
        ];
        let mut check = vec!["-w", "-C", "DOCKER-USER"];
        check.extend_from_slice(&rule);
        if run("iptables", &check).await.is_ok() {
            continue;
        }
        let mut insert = vec!["-w", "-I", "DOCKER-USER"];
        insert.extend_from_slice(&rule);
        run("iptables", &insert).await?;
    }
    Ok(())
}

/// Whether `ip` is an address of this host.
pub fn is_local(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || UdpSocket::bind((IpAddr::V4(ip), 0)).is_ok()
}

/// Other nodes' pod CIDRs and the InternalIP that reaches them.
pub fn peer_routes(nodes: &[Node], own: &str) -> Vec<(Cidr, Ipv4Addr)> {
    let mut routes = Vec::new();
    for node in nodes {
        if node.metadata.name.as_deref() == Some(own) {
            continue;
        }
        let Some(cidr) = node
            .spec
            .as_ref()
            .and_then(|s| s.pod_cidr.as_deref())
            .and_then(|c| Cidr::parse(c).ok())
        else {
            continue;
        };
        let internal = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
            .and_then(|a| a.address.parse::<Ipv4Addr>().ok());
        if let Some(ip) = internal {
            routes.push((cidr, ip));
        }
    }
    routes.sort();
    routes
}

/// Installs `ip route replace CIDR via IP` for peers on other hosts. A peer on this host
/// needs no route: its bridge is directly connected. Returns whether every route is in.
pub async fn install_routes(routes: &[(Cidr, Ipv4Addr)]) -> bool {
    let mut all = true;
    for (cidr, via) in routes {
        if is_local(*via) {
            continue;
        }
        let cidr = cidr.to_string();
        let via = via.to_string();
        if let Err(e) = run("ip", &["route", "replace", &cidr, "via", &via]).await {
            tracing::warn!(error = %e, "cannot route a peer node's pod CIDR");
            all = false;
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_name_their_gateway() {
        let c = Cidr::parse("10.244.3.0/24").unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        assert!(c.contains(Ipv4Addr::new(10, 244, 3, 200)));
        assert!(!c.contains(Ipv4Addr::new(10, 244, 4, 1)));
        assert!(Cidr::parse("10.244.3.5/24").is_err());
        assert!(Cidr::parse("10.244.3.0").is_err());
        let err = Cidr::parse("fd00::/64").unwrap_err().to_string();
        assert!(err.contains("10.244.1.0/24"), "{err}");
    }

    #[test]
    fn bridge_names_fit_the_kernel_limit() {
        let n = PodNetwork::plan(
            "a-very-long-node-name.example.com",
            Cidr::parse("10.244.0.0/24").unwrap(),
        );
        assert!(n.bridge.len() <= 15, "{}", n.bridge);
        assert_eq!(n.docker_name, "berth-a-very-long-node-name.example.com");
        assert_eq!(n.gateway, Ipv4Addr::new(10, 244, 0, 1));
    }

    #[test]
    fn loopback_and_unassigned_addresses() {
        assert!(is_local(Ipv4Addr::LOCALHOST));
        assert!(!is_local(Ipv4Addr::new(192, 0, 2, 77)));
    }
}
