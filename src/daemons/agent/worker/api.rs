//! What a pod worker's pass leaves for the API server: the pod's status, written when it
//! changed, and the pod object's deletion once its containers are gone.

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use serde_json::json;

use super::events::PodRef;
use super::{Next, Pass, PodInput, PodWorker, SyncError, pod_ref};
use crate::daemons::agent::runtime::ContainerRuntime;

impl<R: ContainerRuntime + 'static> PodWorker<R> {
    /// One pass, then its outcome on the API server.
    pub(super) async fn step(
        &mut self,
        client: &kube::Client,
        input: &PodInput,
    ) -> Result<Next, SyncError> {
        let pref = pod_ref(&input.pod);
        match self.pass(input).await? {
            Pass::Synced { status, wake } => {
                if let Some(status) = status {
                    self.write_status(client, &pref, *status).await?;
                }
                Ok(wake.map_or(Next::Idle, Next::After))
            }
            Pass::Removed if input.gone => Ok(Next::Done),
            Pass::Removed => {
                delete(client, &pref).await?;
                Ok(Next::Done)
            }
        }
    }

    async fn write_status(
        &mut self,
        client: &kube::Client,
        pref: &PodRef,
        new: PodStatus,
    ) -> Result<(), SyncError> {
        if self.last_status.as_ref() == Some(&new) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pref.namespace);
        let body = json!({"status": new});
        match api
            .patch_status(&pref.name, &PatchParams::default(), &Patch::Merge(&body))
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: the watch brings the news.
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(source) => {
                return Err(SyncError::Api {
                    pod: format!("{}/{}", pref.namespace, pref.name),
                    what: "status update",
                    source,
                });
            }
        }
        self.last_status = Some(new);
        Ok(())
    }
}

/// Lets the pod object go, now that its containers are gone (this very pod: its uid is a
/// precondition).
async fn delete(client: &kube::Client, pref: &PodRef) -> Result<(), SyncError> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &pref.namespace);
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(pref.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&pref.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(SyncError::Api {
            pod: format!("{}/{}", pref.namespace, pref.name),
            what: "deletion",
            source,
        }),
    }
}
