//! How the API server reaches an agent for pod logs and exec: the agent serves HTTPS with a
//! self-signed certificate and publishes its URL and the certificate's SHA-256 fingerprint as
//! annotations on its Node. The server pins that fingerprint when it connects and
//! authenticates itself with a bearer token, so neither side needs a second CA.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;

/// The Node annotation holding the agent endpoint's base URL, e.g. `https://10.0.0.5:10250`.
pub const ENDPOINT_ANNOTATION: &str = "berth.dev/agent-endpoint";
/// The Node annotation holding the hex SHA-256 of the endpoint certificate (DER).
pub const CERT_SHA256_ANNOTATION: &str = "berth.dev/agent-cert-sha256";

/// An agent's published endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEndpoint {
    pub url: String,
    pub cert_sha256: String,
}

impl AgentEndpoint {
    /// The annotations that publish this endpoint on the agent's Node.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (ENDPOINT_ANNOTATION.to_string(), self.url.clone()),
            (CERT_SHA256_ANNOTATION.to_string(), self.cert_sha256.clone()),
        ])
    }

    /// The endpoint a Node publishes, if it publishes one.
    pub fn from_node(node: &Node) -> Option<AgentEndpoint> {
        let annotations = node.metadata.annotations.as_ref()?;
        Some(AgentEndpoint {
            url: annotations.get(ENDPOINT_ANNOTATION)?.clone(),
            cert_sha256: annotations.get(CERT_SHA256_ANNOTATION)?.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_round_trips_its_endpoint() {
        let endpoint = AgentEndpoint {
            url: "https://127.0.0.1:10250".into(),
            cert_sha256: "ab".repeat(32),
        };
        let mut node = Node::default();
        node.metadata.annotations = Some(endpoint.annotations());
        assert_eq!(AgentEndpoint::from_node(&node), Some(endpoint));
        assert_eq!(AgentEndpoint::from_node(&Node::default()), None);
    }
}
