//! The production `ContainerRuntime`: the Docker Engine API through `bollard`.
//!
//! Connects over the local socket (or `DOCKER_HOST`) and negotiates the API version, since
//! engines as old as 20.10 (API 1.41) reject requests for a newer version.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::VolumeCreateRequest;
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder, UploadToContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};

use super::docker_model::{create_body, from_inspect, from_summary, split_reference};
use super::sandbox;
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, EventStream, ExecOutput, PullPolicy,
    RuntimeError, RuntimeEvent, VolumeSpec,
};

/// Docker through bollard.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
    /// The same connection without bollard's 120 s request timeout, for calls that last as
    /// long as a container does: wait, stop with a long grace period, events, exec, logs.
    patient: Docker,
}

/// Effectively no timeout, while staying far from `Instant` overflow.
const PATIENT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// How a failed engine call becomes a [`RuntimeError`]; with the matches below, the only
/// place that reads bollard's errors.
pub(super) fn engine(
    operation: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(BollardError) -> RuntimeError {
    let target = target.into();
    move |source| RuntimeError::Engine {
        operation,
        target,
        source: Box::new(source),
    }
}

fn connect_failed(source: BollardError) -> RuntimeError {
    RuntimeError::Connect {
        source: Box::new(source),
    }
}

fn is_not_found(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Docker's 409, as it answers a create with a name in use.
fn is_conflict(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 409,
            ..
        }
    )
}

fn is_not_modified(error: &BollardError) -> bool {
    matches!(
        error,
        BollardError::DockerResponseServerError {
            status_code: 304,
            ..
        }
    )
}

/// Docker's label filter: `key=value` for each pair.
fn label_filters(labels: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
    let values = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    HashMap::from([("label".to_string(), values)])
}

impl DockerRuntime {
    /// Connects to the engine named by `DOCKER_HOST`, or the local socket, and negotiates
    /// the API version.
    pub async fn connect() -> Result<Self, RuntimeError> {
        let docker = Docker::connect_with_defaults().map_err(connect_failed)?;
        let docker = docker.negotiate_version().await.map_err(connect_failed)?;
        let patient = docker.clone().with_timeout(PATIENT_TIMEOUT);
        Ok(DockerRuntime { docker, patient })
    }

    /// The underlying client, for the Docker-only calls of this module and tests that
    /// inspect what Docker made.
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// The engine's version, for the Node's `containerRuntimeVersion`; empty when unknown.
    pub async fn engine_version(&self) -> String {
        let version = self.docker.version().await.ok();
        version.and_then(|v| v.version).unwrap_or_default()
    }

    /// Whether an image is present locally; returns its id.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, RuntimeError> {
        match self.docker.inspect_image(image).await {
            Ok(found) => Ok(Some(found.id.unwrap_or_default())),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine("inspect image", image)(e)),
        }
    }

    /// Builds `tag` from a tar build context (with the classic builder, which needs no
    /// registry and no BuildKit).
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let options = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .labels(&labels.clone().into_iter().collect())
            .build();
        let mut stream =
            self.docker
                .build_image(options, None, Some(bollard::body_full(context_tar.into())));
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| e.to_string())?;
            if let Some(detail) = info.error_detail {
                return Err(detail.message.unwrap_or_default());
            }
        }
        Ok(())
    }

    async fn pull(&self, image: &str) -> Result<(), RuntimeError> {
        let (name, tag) = split_reference(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(name)
            .tag(tag)
            .build();
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(item) = stream.next().await {
            let info = item.map_err(|e| RuntimeError::ImagePull {
                image: image.to_string(),
                message: e.to_string(),
            })?;
            if let Some(detail) = info.error_detail {
                return Err(RuntimeError::ImagePull {
                    image: image.to_string(),
                    message: detail.message.unwrap_or_default(),
                });
            }
        }
        Ok(())
    }
}

impl ContainerRuntime for DockerRuntime {
    async fn ensure_image(&self, image: &str, policy: PullPolicy) -> Result<String, RuntimeError> {
        let present = self.image_id(image).await?;
        match (policy, present) {
            (PullPolicy::Never, None) => Err(RuntimeError::ImageNeverPull {
                image: image.to_string(),
            }),
            (PullPolicy::Never | PullPolicy::IfNotPresent, Some(id)) => Ok(id),
            (PullPolicy::Always | PullPolicy::IfNotPresent, _) => {
                self.pull(image).await?;
                self.image_id(image)
                    .await?
                    .ok_or_else(|| RuntimeError::ImagePull {
                        image: image.to_string(),
                        message: "image absent after pull".to_string(),
                    })
            }
        }
    }

    async fn ensure_sandbox_image(&self) -> Result<String, RuntimeError> {
        // Pods starting together would otherwise build it concurrently, leaving dangling copies;
        // the lock is taken only when it is missing, so pods starting together do not queue
        // behind each other's image checks.
        static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let tag = sandbox::SANDBOX_IMAGE;
        if self.image_id(tag).await?.is_some() {
            return Ok(tag.to_string());
        }
        let _building = BUILD.lock().await;
        // Built by another pod while this one waited?
        if self.image_id(tag).await?.is_some() {
            return Ok(tag.to_string());
        }
        let fail = |message: String| RuntimeError::SandboxImage {
            image: tag.to_string(),
            message,
        };
        let context = sandbox::build_context().map_err(|e| fail(e.to_string()))?;
        self.build_image(tag, context, &sandbox::image_labels())
            .await
            .map_err(fail)?;
        Ok(tag.to_string())
    }

    async fn ensure_volume(&self, volume: &VolumeSpec) -> Result<(), RuntimeError> {
        match self.docker.inspect_volume(&volume.name).await {
            Ok(_) => return Ok(()),
            Err(e) if is_not_found(&e) => {}
            Err(e) => return Err(engine("inspect volume", &volume.name)(e)),
        }
        let driver_opts = volume.memory.then(|| {
            let mut opts = HashMap::from([
                ("type".to_string(), "tmpfs".to_string()),
                ("device".to_string(), "tmpfs".to_string()),
            ]);
            if let Some(size) = volume.size_bytes {
                opts.insert("o".to_string(), format!("size={size}"));
            }
            opts
        });
        let request = VolumeCreateRequest {
            name: Some(volume.name.clone()),
            driver: Some("local".to_string()),
            driver_opts,
            labels: Some(volume.labels.clone().into_iter().collect()),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map(|_| ())
            .map_err(engine("create volume", &volume.name))
    }

    async fn remove_volume(&self, name: &str) -> Result<(), RuntimeError> {
        let options = RemoveVolumeOptionsBuilder::default().force(true).build();
        match self.docker.remove_volume(name, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(engine("remove volume", name)(e)),
            _ => Ok(()),
        }
    }

    async fn list_volumes(&self, labels: &[(&str, &str)]) -> Result<Vec<String>, RuntimeError> {
        let options = ListVolumesOptionsBuilder::default()
            .filters(&label_filters(labels))
            .build();
        let found = self
            .docker
            .list_volumes(Some(options))
            .await
            .map_err(engine("list volumes", ""))?;
        Ok(found
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect())
    }

    async fn create_container(&self, spec: &ContainerSpec) -> Result<String, RuntimeError> {
        let options = CreateContainerOptionsBuilder::default()
            .name(&spec.name)
            .build();
        match self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
        {
            Ok(created) => Ok(created.id),
            Err(e) if is_conflict(&e) => Err(RuntimeError::NameConflict {
                name: spec.name.clone(),
            }),
            Err(e) => Err(RuntimeError::Create {
                name: spec.name.clone(),
                source: Box::new(e),
            }),
        }
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Err(e) if is_not_found(&e) => Err(RuntimeError::NotFound { id: id.to_string() }),
            Err(e) if !is_not_modified(&e) => Err(RuntimeError::Start {
                id: id.to_string(),
                source: Box::new(e),
            }),
            _ => Ok(()),
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.patient.stop_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) && !is_not_modified(&e) => {
                Err(engine("stop container", id)(e))
            }
            _ => Ok(()),
        }
    }

    async fn remove_container(&self, id: &str) -> Result<(), RuntimeError> {
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(options)).await {
            Err(e) if !is_not_found(&e) => Err(engine("remove container", id)(e)),
            _ => Ok(()),
        }
    }

    async fn wait_container(&self, id: &str) -> Result<i64, RuntimeError> {
        let mut stream = self.patient.wait_container(id, None);
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) if is_not_found(&e) => Err(RuntimeError::NotFound { id: id.to_string() }),
            Some(Err(e)) => Err(engine("wait for container", id)(e)),
            None => Err(RuntimeError::NotFound { id: id.to_string() }),
        }
    }

    async fn inspect_container(&self, id: &str) -> Result<Option<ContainerInfo>, RuntimeError> {
        match self.docker.inspect_container(id, None).await {
            Ok(inspect) => Ok(Some(from_inspect(inspect))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine("inspect container", id)(e)),
        }
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<ContainerInfo>, RuntimeError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&label_filters(labels))
            .build();
        let found = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(engine("list containers", ""))?;
        Ok(found.into_iter().map(from_summary).collect())
    }

    fn events(&self, labels: &[(&str, &str)]) -> EventStream {
        let mut filters = label_filters(labels);
        filters.insert("type".to_string(), vec!["container".to_string()]);
        // The request is only sent when the stream is first polled; `since` makes the
        // stream start at this call instead, so nothing in between is missed.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .unwrap_or_default();
        let options = EventsOptionsBuilder::default()
            .filters(&filters)
            .since(&since)
            .build();
        let stream = self
            .patient
            .events(Some(options))
            .map_err(|e| engine("watch events", "")(e))
            .map_ok(|message| {
                let actor = message.actor.unwrap_or_default();
                RuntimeEvent {
                    container_id: actor.id.unwrap_or_default(),
                    action: message.action.unwrap_or_default(),
                    labels: actor.attributes.unwrap_or_default().into_iter().collect(),
                }
            });
        Box::pin(stream)
    }

    async fn exec(&self, id: &str, command: &[String]) -> Result<ExecOutput, RuntimeError> {
        let options = CreateExecOptions {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(command.to_vec()),
            ..Default::default()
        };
        let created = self
            .patient
            .create_exec(id, options)
            .await
            .map_err(engine("exec in container", id))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self
            .patient
            .start_exec(&created.id, None)
            .await
            .map_err(engine("exec in container", id))?
        {
            while let Some(chunk) = out.next().await {
                let chunk = chunk.map_err(engine("exec in container", id))?;
                output.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            }
        }
        let inspect = self
            .docker
            .inspect_exec(&created.id)
            .await
            .map_err(engine("exec in container", id))?;
        Ok(ExecOutput {
            exit_code: inspect.exit_code.unwrap_or(-1),
            output,
        })
    }

    async fn copy_into(&self, id: &str, path: &str, archive: Vec<u8>) -> Result<(), RuntimeError> {
        let options = UploadToContainerOptionsBuilder::default()
            .path(path)
            .build();
        self.docker
            .upload_to_container(id, Some(options), bollard::body_full(archive.into()))
            .await
            .map_err(engine("copy files into", id))
    }

    async fn logs(&self, id: &str, tail: Option<usize>) -> Result<String, RuntimeError> {
        let tail = tail.map_or("all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let chunks: Vec<_> = self
            .patient
            .logs(id, Some(options))
            .try_collect()
            .await
            .map_err(engine("read logs of", id))?;
        Ok(chunks
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.into_bytes()).into_owned())
            .collect())
    }
}
