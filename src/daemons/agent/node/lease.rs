//! The node's heartbeat Lease in `kube-node-lease`, renewed every `--lease-interval`
//! (10 s by default) as the kubelet does; the node lifecycle controller reads its renewTime.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

/// The namespace node leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";

fn micro_now() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The Lease the agent of `node` holds.
pub fn node_lease(node: &str, duration: Duration) -> Lease {
    serde_json::from_value(json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NAMESPACE},
        "spec": {
            "holderIdentity": node,
            "leaseDurationSeconds": duration.as_secs().max(1),
            "renewTime": micro_now(),
        },
    }))
    .expect("a well-formed Lease")
}

/// Renews the lease once, creating it when missing.
pub async fn renew(
    client: &kube::Client,
    node: &str,
    duration: Duration,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let patch = json!({"spec": {"holderIdentity": node, "renewTime": micro_now(),
                                "leaseDurationSeconds": duration.as_secs().max(1)}});
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => api
            .create(&PostParams::default(), &node_lease(node, duration))
            .await
            .map(|_| ()),
        Err(e) => Err(e),
    }
}

/// Renews the lease every `interval` forever; failures are logged and retried next tick.
pub async fn keep_renewed(client: kube::Client, node: String, interval: Duration) {
    // Kubernetes' default lease duration is four renew intervals (40 s for 10 s).
    let duration = interval * 4;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = renew(&client, &node, duration).await {
            tracing::warn!(error = %e, "cannot renew the node lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_held_by_the_node() {
        let lease = node_lease("n1", Duration::from_secs(40));
        let spec = lease.spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        assert_eq!(spec.lease_duration_seconds, Some(40));
        assert!(spec.renew_time.is_some());
        assert_eq!(lease.metadata.namespace.as_deref(), Some(LEASE_NAMESPACE));
    }
}
