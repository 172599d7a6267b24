//! Wiring of the node's Service data plane: the pod network for the node's pod CIDR, the
//! watch caches of Services, Endpoints and Nodes, the nftables rules ([`proxy`]) and
//! the cluster DNS server ([`dns`]). Without a pod CIDR (none on the Node and no
//! `--pod-cidr`) pods stay on Docker's default bridge and Services are not served.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Endpoints, Node, Service};
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub mod attach;
pub mod dns;
pub mod podnet;
pub mod proxy;

use super::runtime::DockerRuntime;
use super::watch::forward;
use dns::{DnsServer, ServiceDirectory};
use podnet::{Cidr, PodNetwork};
use proxy::ServiceCaches;

/// How long a burst of Service and Endpoints changes may settle before the rules are rebuilt.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Where this node's pods live on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodNetworkSettings {
    /// The engine network sandboxes that publish host ports attach to.
    pub docker_network: String,
    /// The node's pod CIDR.
    pub cidr: Cidr,
    /// The bridge the agent plugs the other sandboxes into (see [`attach`]).
    pub bridge: String,
    /// Where the agent writes its plugged-in pods' `hosts` and `resolv.conf`.
    pub files_dir: PathBuf,
    /// The cluster DNS server pods with `dnsPolicy: ClusterFirst` use.
    pub dns_server: String,
    /// The cluster's DNS domain (`cluster.local`).
    pub cluster_domain: String,
}

/// The data plane, once running.
pub struct ServicePlane {
    /// What sandboxes are created with.
    pub settings: PodNetworkSettings,
    /// The pod addresses the applied rules send to.
    pub targets: watch::Receiver<BTreeSet<Ipv4Addr>>,
}

/// The Node's `spec.podCIDR`, if it has one.
async fn node_pod_cidr(client: &kube::Client, node: &str) -> Option<Cidr> {
    let nodes: Api<Node> = Api::all(client.clone());
    let text = nodes.get_opt(node).await.ok()??.spec?.pod_cidr?;
    match Cidr::parse(&text) {
        Ok(cidr) => Some(cidr),
        Err(e) => {
            tracing::error!(error = %e, "the Node's spec.podCIDR is unusable");
            None
        }
    }
}

/// Sets up the pod network, rules and DNS; `None` (after logging why) when there is no pod
/// CIDR or its network cannot be made, in which case pods use Docker's default bridge.
pub async fn start(
    client: &kube::Client,
    runtime: &DockerRuntime,
    node: &str,
    pod_cidr: Option<Cidr>,
    extra_labels: &BTreeMap<String, String>,
    tasks: &mut JoinSet<()>,
) -> Option<ServicePlane> {
    let cidr = match pod_cidr {
        Some(c) => c,
        None => match node_pod_cidr(client, node).await {
            Some(c) => c,
            None => {
                tracing::warn!(
                    "node {node} has no spec.podCIDR and no --pod-cidr was given: pods use Docker's default bridge and Services are not served on this node"
                );
                return None;
            }
        },
    };
    let network = PodNetwork::plan(node, cidr);
    if let Err(e) = podnet::ensure(runtime, &network, extra_labels, node).await {
        tracing::error!(error = %anyhow::Error::from(e),
            "cannot create the pod network: pods use Docker's default bridge and Services are not served on this node");
        return None;
    }
    let comment = podnet::rule_comment(node, extra_labels);
    if let Err(e) = podnet::allow_forwarding(&network, &comment).await {
        tracing::error!(error = %e, "cannot allow forwarding to the pod network; pods on other nodes will not reach this node's pods");
    }
    proxy::allow_localhost_node_ports();

    let (svc_reader, svc_writer) = reflector::store::<Service>();
    let (ep_reader, ep_writer) = reflector::store::<Endpoints>();
    let (node_reader, node_writer) = reflector::store::<Node>();
    let (changes_tx, changes_rx) = mpsc::unbounded_channel();
    let config = watcher::Config::default();
    let svcs = watcher(Api::<Service>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(svc_writer);
    forward(tasks, "Service", svcs, changes_tx.clone());
    let eps = watcher(Api::<Endpoints>::all(client.clone()), config.clone())
        .default_backoff()
        .reflect(ep_writer);
    forward(tasks, "Endpoints", eps, changes_tx.clone());
    let nodes = watcher(Api::<Node>::all(client.clone()), config)
        .default_backoff()
        .reflect(node_writer);
    forward(tasks, "Node", nodes, changes_tx);
    let _ = svc_reader.wait_until_ready().await;
    let _ = ep_reader.wait_until_ready().await;
    let _ = node_reader.wait_until_ready().await;

    let upstreams =
        dns::upstreams(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default());
    let directory = ServiceDirectory {
        services: svc_reader.clone(),
        endpoints: ep_reader.clone(),
    };
    let dns_addr = SocketAddr::from((network.gateway, 53));
    match dns::serve(DnsServer::new(directory, upstreams), dns_addr).await {
        Ok(serving) => {
            tasks.spawn(serving);
        }
        Err(e) => tracing::error!(error = %anyhow::Error::from(e),
            "pods on this node will not resolve Service names"),
    }

    let (targets_tx, targets_rx) = watch::channel(BTreeSet::new());
    let caches = ServiceCaches {
        services: svc_reader,
        endpoints: ep_reader,
        nodes: node_reader,
    };
    tasks.spawn(proxy::run(
        caches,
        network.clone(),
        node.to_string(),
        comment,
        changes_rx,
        targets_tx,
        DEBOUNCE,
    ));
    println!(
        "pod network {} on {} (DNS {})",
        network.cidr, network.bridge, network.gateway
    );
    Some(ServicePlane {
        settings: PodNetworkSettings {
            docker_network: network.docker_name,
            cidr: network.cidr,
            files_dir: std::path::Path::new(attach::PODS_FILES).join(&network.bridge),
            bridge: network.bridge,
            dns_server: network.gateway.to_string(),
            cluster_domain: dns::CLUSTER_DOMAIN.to_string(),
        },
        targets: targets_rx,
    })
}
