//! Taking a pod down: its containers stopped in reverse with its grace period (apps in
//! parallel, then the sandbox), then removed with its pod-scoped volumes. The pod worker
//! does it when its pod is deleted, the sync loop for orphans.

use std::time::Duration;

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Pod;

use super::events::{EventType, PodRef};
use super::{PodWorker, SyncError};
use crate::daemons::agent::pod::podspec::PodIdentity;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, RuntimeError,
};

/// All containers of the pod with uid `uid`, found by label (adoption after a restart).
pub async fn pod_containers<R: ContainerRuntime>(
    runtime: &R,
    uid: &str,
) -> Result<Vec<ContainerInfo>, RuntimeError> {
    runtime.list_containers(&[(labels::POD_UID, uid)]).await
}

/// Stops the pod: app containers in parallel with `grace` (SIGTERM, wait, SIGKILL), then
/// the sandbox. Containers stay for logs and status until [`remove_pod`].
pub async fn stop_pod<R: ContainerRuntime>(
    runtime: &R,
    uid: &str,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let found = pod_containers(runtime, uid).await?;
    let is_sandbox = |c: &ContainerInfo| {
        c.labels.get(labels::ROLE).map(String::as_str) == Some(Role::Sandbox.as_str())
    };
    let running = |c: &&ContainerInfo| matches!(c.state, ContainerState::Running);
    let apps = found.iter().filter(|c| !is_sandbox(c)).filter(running);
    for result in join_all(apps.map(|c| runtime.stop_container(&c.id, grace))).await {
        result?;
    }
    for sandbox in found.iter().filter(|c| is_sandbox(c)).filter(running) {
        runtime.stop_container(&sandbox.id, Duration::ZERO).await?;
    }
    Ok(())
}

/// Stops the pod and removes its containers and its pod-scoped volumes; claim volumes stay.
pub async fn remove_pod<R: ContainerRuntime>(
    runtime: &R,
    identity: &PodIdentity,
    grace: Duration,
) -> Result<(), RuntimeError> {
    stop_pod(runtime, &identity.uid, grace).await?;
    for container in pod_containers(runtime, &identity.uid).await? {
        runtime.remove_container(&container.id).await?;
    }
    let scoped = [
        (labels::POD_UID, identity.uid.as_str()),
        (labels::VOLUME_SCOPE, "pod"),
    ];
    for volume in runtime.list_volumes(&scoped).await? {
        runtime.remove_volume(&volume).await?;
    }
    Ok(())
}

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// Stops the pod with its grace period and removes its containers and pod-scoped
    /// volumes; the pod object may go then.
    pub(super) async fn terminate(
        &mut self,
        pod: &Pod,
        pref: &PodRef,
        gone: bool,
    ) -> Result<(), SyncError> {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or(pod
                .spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds))
            .unwrap_or(30)
            .max(0) as u64;
        if !gone {
            self.leave_services(pod, Duration::from_secs(grace)).await;
        }
        let observed = pod_containers(&self.ctx.runtime, &pref.uid).await?;
        for c in &observed {
            self.ctx.stopping(&c.id);
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .map_or("", String::as_str);
            if c.state == ContainerState::Running && name != labels::SANDBOX_CONTAINER {
                self.ctx.events.pod(
                    pref,
                    EventType::Normal,
                    "Killing",
                    Some(name),
                    format!("Stopping container {name}"),
                );
            }
        }
        let identity = PodIdentity {
            uid: pref.uid.clone(),
            namespace: pref.namespace.clone(),
            name: pref.name.clone(),
        };
        remove_pod(&self.ctx.runtime, &identity, Duration::from_secs(grace)).await?;
        self.ctx.pod_removed(&pref.uid);
        Ok(())
    }

    /// Before SIGTERM, waits until this node's Service rules no longer send to the pod (the
    /// Endpoints controller drops a pod being deleted at once), so no new connection reaches
    /// a stopping pod. Bounded by the grace period and [`LEAVE_SERVICES_MAX`].
    async fn leave_services(&self, pod: &Pod, grace: Duration) {
        let Some(mut targets) = self.ctx.service_targets.clone() else {
            return;
        };
        // A hostNetwork pod's address is the node's, which other pods' rules may keep
        // naming; there is nothing of its own to wait for.
        if pod.spec.as_ref().and_then(|s| s.host_network) == Some(true) {
            return;
        }
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse::<std::net::Ipv4Addr>().ok())
        else {
            return;
        };
        if !targets.borrow().contains(&ip) {
            return;
        }
        let bound = grace.min(LEAVE_SERVICES_MAX);
        let left = tokio::time::timeout(bound, async {
            targets.wait_for(|t| !t.contains(&ip)).await.is_ok()
        })
        .await;
        if left == Ok(true) {
            // Other nodes apply the same Endpoints change at about the same moment.
            tokio::time::sleep(PEER_SETTLE.min(grace)).await;
        }
    }
}

/// The longest a deleted pod waits to leave the Service rules before SIGTERM.
const LEAVE_SERVICES_MAX: Duration = Duration::from_secs(5);

/// Time given to other nodes to apply the Endpoints change this node has applied.
const PEER_SETTLE: Duration = Duration::from_millis(250);
