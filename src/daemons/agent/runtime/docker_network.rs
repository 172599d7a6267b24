//! Docker networks, for the node's pod network (`net::podnet`): the engine calls behind it,
//! outside the [`super::ContainerRuntime`] trait because only Docker has them.

use std::collections::HashMap;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptionsBuilder;

use super::RuntimeError;
use super::docker::{DockerRuntime, engine};

/// A bridge network to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeNetwork {
    /// Docker's name for it.
    pub name: String,
    /// Its subnet in CIDR notation.
    pub subnet: String,
    /// The gateway address (the bridge's own).
    pub gateway: String,
    /// The Linux bridge's name.
    pub bridge: String,
    /// Whether Docker masquerades what leaves it.
    pub masquerade: bool,
    /// Its labels.
    pub labels: HashMap<String, String>,
}

/// What an existing network is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInfo {
    /// Its first subnet (empty when it has none).
    pub subnet: String,
    /// Whether containers are attached to it.
    pub in_use: bool,
}

impl DockerRuntime {
    /// The network named `name`, when it exists.
    pub async fn inspect_network(&self, name: &str) -> Result<Option<NetworkInfo>, RuntimeError> {
        let found = match self.client().inspect_network(name, None).await {
            Ok(found) => found,
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(engine("inspect network", name)(e)),
        };
        let subnet = found
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet))
            .unwrap_or_default();
        let in_use = found.containers.as_ref().is_some_and(|c| !c.is_empty());
        Ok(Some(NetworkInfo { subnet, in_use }))
    }

    /// Creates a bridge network.
    pub async fn create_bridge_network(&self, net: &BridgeNetwork) -> Result<(), RuntimeError> {
        let request = NetworkCreateRequest {
            name: net.name.clone(),
            driver: Some("bridge".into()),
            ipam: Some(Ipam {
                driver: Some("default".into()),
                config: Some(vec![IpamConfig {
                    subnet: Some(net.subnet.clone()),
                    gateway: Some(net.gateway.clone()),
                    ..Default::default()
                }]),
                options: None,
            }),
            options: Some(HashMap::from([
                (
                    "com.docker.network.bridge.name".to_string(),
                    net.bridge.clone(),
                ),
                (
                    "com.docker.network.bridge.enable_ip_masquerade".to_string(),
                    net.masquerade.to_string(),
                ),
            ])),
            labels: Some(net.labels.clone()),
            ..Default::default()
        };
        self.client()
            .create_network(request)
            .await
            .map(|_| ())
            .map_err(engine("create network", &net.name))
    }

    /// Removes a network.
    pub async fn remove_network(&self, name: &str) -> Result<(), RuntimeError> {
        self.client()
            .remove_network(name)
            .await
            .map_err(engine("remove network", name))
    }

    /// Removes the networks carrying the label `key=value`; their containers must be gone.
    pub async fn remove_networks(&self, key: &str, value: &str) -> Result<(), RuntimeError> {
        let filters = HashMap::from([("label", vec![format!("{key}={value}")])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .client()
            .list_networks(Some(options))
            .await
            .map_err(engine("list networks", value))?;
        for id in networks.into_iter().filter_map(|n| n.id) {
            self.remove_network(&id).await?;
        }
        Ok(())
    }
}
