//! Starting and stopping a whole pod through any [`ContainerRuntime`]: volumes, then the
//! sandbox, then init containers one at a time to completion, then the app containers;
//! stopping in reverse with the pod's grace period.

use std::time::Duration;

use futures_util::future::join_all;

use crate::daemons::agent::pod::podspec::{PodIdentity, PodPlan};
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerState, RuntimeError,
};

/// Why a pod could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PodError {
    /// A runtime call failed while working on one of the pod's containers.
    #[error("pod {namespace}/{pod}: container {container:?}")]
    Runtime {
        namespace: String,
        pod: String,
        container: String,
        #[source]
        source: RuntimeError,
    },
    /// An init container exited non-zero; the app containers were not started.
    #[error("pod {namespace}/{pod}: init container {container:?} exited with code {exit_code}")]
    InitFailed {
        namespace: String,
        pod: String,
        container: String,
        exit_code: i64,
    },
}

/// The ids of a started pod's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartedPod {
    /// The sandbox's id.
    pub sandbox_id: String,
    /// The pod IP, from the sandbox.
    pub pod_ip: Option<String>,
    /// `(name, id)` of each init container, in order.
    pub init_containers: Vec<(String, String)>,
    /// `(name, id)` of each app container.
    pub containers: Vec<(String, String)>,
}

/// Creates and starts everything in `plan`. On error, what was created stays for the caller
/// to inspect or remove with [`remove_pod`].
pub async fn start_pod<R: ContainerRuntime>(
    runtime: &R,
    plan: &PodPlan,
) -> Result<StartedPod, PodError> {
    let id = &plan.identity;
    let fail = |container: &str| {
        let container = container.to_string();
        move |source| PodError::Runtime {
            namespace: id.namespace.clone(),
            pod: id.name.clone(),
            container,
            source,
        }
    };
    for volume in &plan.volumes {
        runtime
            .ensure_volume(volume)
            .await
            .map_err(fail(&volume.name))?;
    }
    let sandbox = labels::SANDBOX_CONTAINER;
    runtime
        .ensure_sandbox_image()
        .await
        .map_err(fail(sandbox))?;
    let sandbox_id = runtime
        .create_container(&plan.sandbox)
        .await
        .map_err(fail(sandbox))?;
    runtime
        .start_container(&sandbox_id)
        .await
        .map_err(fail(sandbox))?;
    let pod_ip = runtime
        .inspect_container(&sandbox_id)
        .await
        .map_err(fail(sandbox))?
        .and_then(|info| info.ip_address);

    let mut init_containers = Vec::new();
    for init in &plan.init_containers {
        runtime
            .ensure_image(&init.spec.image, init.pull_policy)
            .await
            .map_err(fail(&init.name))?;
        let cid = runtime
            .create_container(&init.spec)
            .await
            .map_err(fail(&init.name))?;
        runtime
            .start_container(&cid)
            .await
            .map_err(fail(&init.name))?;
        let exit_code = runtime
            .wait_container(&cid)
            .await
            .map_err(fail(&init.name))?;
        init_containers.push((init.name.clone(), cid));
        if exit_code != 0 {
            return Err(PodError::InitFailed {
                namespace: id.namespace.clone(),
                pod: id.name.clone(),
                container: init.name.clone(),
                exit_code,
            });
        }
    }

    let mut containers = Vec::new();
    for app in &plan.containers {
        runtime
            .ensure_image(&app.spec.image, app.pull_policy)
            .await
            .map_err(fail(&app.name))?;
        let cid = runtime
            .create_container(&app.spec)
            .await
            .map_err(fail(&app.name))?;
        runtime
            .start_container(&cid)
            .await
            .map_err(fail(&app.name))?;
        containers.push((app.name.clone(), cid));
    }
    Ok(StartedPod {
        sandbox_id,
        pod_ip,
        init_containers,
        containers,
    })
}

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
