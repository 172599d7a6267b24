//! The labels berth puts on every container and volume it creates, and the spec hash.
//!
//! Labels are how the agent finds its own containers again after it restarts (adoption)
//! and how it notices that a container no longer matches its pod's spec (drift).

use sha2::{Digest, Sha256};

/// Marks an object as created by berth; the value is always `"true"`.
pub const MANAGED: &str = "berth.dev/managed";
/// The pod's `metadata.uid`.
pub const POD_UID: &str = "berth.dev/pod-uid";
/// The pod's namespace.
pub const POD_NAMESPACE: &str = "berth.dev/pod-namespace";
/// The pod's name.
pub const POD_NAME: &str = "berth.dev/pod-name";
/// The container's name in the pod spec; the sandbox carries [`SANDBOX_CONTAINER`].
pub const CONTAINER_NAME: &str = "berth.dev/container";
/// `sandbox`, `init` or `app`.
pub const ROLE: &str = "berth.dev/role";
/// The node the agent runs on.
pub const NODE: &str = "berth.dev/node";
/// A stable hash of the container's effective configuration, see [`spec_hash`].
pub const SPEC_HASH: &str = "berth.dev/spec-hash";
/// How many times the agent has (re)created this container.
pub const ATTEMPT: &str = "berth.dev/attempt";
/// On a sandbox: the pod's address in the node's pod network.
pub const POD_IP: &str = "berth.dev/pod-ip";
/// On a sandbox the agent plugged into the pod network: the node's end of its veth pair.
pub const VETH: &str = "berth.dev/veth";
/// On volumes: `pod` when the volume dies with the pod, `claim` when it outlives it.
pub const VOLUME_SCOPE: &str = "berth.dev/volume-scope";

/// The container name label value of a pod's sandbox.
pub const SANDBOX_CONTAINER: &str = "POD";

/// The role of a container within its pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The sandbox that owns the pod's network namespace.
    Sandbox,
    /// An init container, run to completion before the app containers.
    Init,
    /// An app container.
    App,
}

impl Role {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sandbox => "sandbox",
            Role::Init => "init",
            Role::App => "app",
        }
    }

    /// Parses a label value.
    pub fn parse(value: &str) -> Option<Role> {
        match value {
            "sandbox" => Some(Role::Sandbox),
            "init" => Some(Role::Init),
            "app" => Some(Role::App),
            _ => None,
        }
    }
}

/// A stable hash of any serialisable description: the first 16 hex digits of its JSON's
/// SHA-256. Struct fields serialise in declaration order and berth uses ordered maps, so
/// equal values always hash equally, across processes and agent versions that keep the type.
pub fn spec_hash<T: serde::Serialize>(value: &T) -> String {
    let json = serde_json::to_vec(value).unwrap_or_default();
    let digest = Sha256::digest(&json);
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_hash_is_stable_and_sensitive() {
        let a = serde_json::json!({"image": "busybox", "args": ["a"]});
        let b = serde_json::json!({"image": "busybox", "args": ["b"]});
        assert_eq!(spec_hash(&a), spec_hash(&a.clone()));
        assert_ne!(spec_hash(&a), spec_hash(&b));
        assert_eq!(spec_hash(&a).len(), 16);
    }

    #[test]
    fn roles_round_trip() {
        for role in [Role::Sandbox, Role::Init, Role::App] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
    }
}
