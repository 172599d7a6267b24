//! The production `ContainerRuntime`: the Docker Engine API through `bollard`.
//!
//! Connects over the local socket (or `DOCKER_HOST`) and negotiates the API version, since
//! engines as old as 20.10 (API 1.41) reject requests for a newer version.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, Mount, MountTmpfsOptions, MountType, PortBinding,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    EventsOptionsBuilder, ListContainersOptionsBuilder, ListVolumesOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::{StreamExt, TryStreamExt};

use super::runtime::{
    ContainerInfo, ContainerRuntime, ContainerSpec, ContainerState, EventStream, ExecOutput,
    MountSource, NetworkMode, PullPolicy, RuntimeError, RuntimeEvent, VolumeSpec,
};
use super::sandbox;

/// Docker through bollard.
#[derive(Clone, Debug)]
pub struct DockerRuntime {
    docker: Docker,
}

fn engine(
    operation: &'static str,
    target: impl Into<String>,
) -> impl FnOnce(BollardError) -> RuntimeError {
    let target = target.into();
    move |source| RuntimeError::Engine {
        operation,
        target,
        source,
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
        let docker =
            Docker::connect_with_defaults().map_err(|source| RuntimeError::Connect { source })?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|source| RuntimeError::Connect { source })?;
        Ok(DockerRuntime { docker })
    }

    /// The underlying client, for calls the trait does not cover.
    pub fn client(&self) -> &Docker {
        &self.docker
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

/// Splits `repo[:tag]` (a `host:port/` prefix is not a tag); digests stay in the name.
fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    let mut exposed = Vec::new();
    for port in &spec.ports {
        let key = format!("{}/{}", port.container_port, port.protocol);
        exposed.push(key.clone());
        if let Some(host_port) = port.host_port {
            port_bindings
                .entry(key)
                .or_default()
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: port.host_ip.clone(),
                    host_port: Some(host_port.to_string()),
                });
        }
    }
    let mounts = spec
        .mounts
        .iter()
        .map(|m| {
            let (typ, source, tmpfs_options) = match &m.source {
                MountSource::Volume(name) => (MountType::VOLUME, Some(name.clone()), None),
                MountSource::Bind(path) => (
                    MountType::BIND,
                    Some(path.to_string_lossy().into_owned()),
                    None,
                ),
                MountSource::Tmpfs { size_bytes } => (
                    MountType::TMPFS,
                    None,
                    Some(MountTmpfsOptions {
                        size_bytes: *size_bytes,
                        ..Default::default()
                    }),
                ),
            };
            Mount {
                target: Some(m.target.clone()),
                source,
                typ: Some(typ),
                read_only: Some(m.read_only),
                tmpfs_options,
                ..Default::default()
            }
        })
        .collect();
    let network_mode = match &spec.network {
        NetworkMode::Bridge => "bridge".to_string(),
        NetworkMode::Container(target) => format!("container:{target}"),
        NetworkMode::None => "none".to_string(),
    };
    let host_config = HostConfig {
        memory: spec.memory_bytes,
        nano_cpus: spec.nano_cpus,
        init: Some(spec.init),
        network_mode: Some(network_mode),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: Some(mounts),
        privileged: Some(spec.privileged),
        readonly_rootfs: Some(spec.read_only_root),
        ..Default::default()
    };
    // A container that joins another's network namespace may not set ports or a hostname.
    let owns_network = !matches!(spec.network, NetworkMode::Container(_));
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: spec.entrypoint.clone(),
        cmd: spec.cmd.clone(),
        working_dir: spec.working_dir.clone(),
        env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        user: spec.user.clone(),
        hostname: spec.hostname.clone().filter(|_| owns_network),
        exposed_ports: (owns_network && !exposed.is_empty()).then_some(exposed),
        labels: Some(spec.labels.clone().into_iter().collect()),
        host_config: Some(host_config),
        ..Default::default()
    }
}

fn from_summary(summary: ContainerSummary) -> ContainerInfo {
    let state = match summary.state {
        Some(ContainerSummaryStateEnum::CREATED) => ContainerState::Created,
        Some(ContainerSummaryStateEnum::RUNNING | ContainerSummaryStateEnum::PAUSED) => {
            ContainerState::Running
        }
        Some(ContainerSummaryStateEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerSummaryStateEnum::EXITED) => ContainerState::Exited {
            exit_code: parse_exit_code(summary.status.as_deref().unwrap_or("")),
            oom_killed: false,
        },
        other => ContainerState::Other(format!("{other:?}").to_lowercase()),
    };
    ContainerInfo {
        id: summary.id.unwrap_or_default(),
        name: summary
            .names
            .and_then(|n| n.into_iter().next())
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: summary.image.unwrap_or_default(),
        image_id: summary.image_id,
        labels: summary.labels.unwrap_or_default().into_iter().collect(),
        state,
        started_at: None,
        finished_at: None,
        ip_address: None,
    }
}

/// Docker's list status reads `Exited (137) 3 seconds ago`.
fn parse_exit_code(status: &str) -> i64 {
    status
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.parse().ok())
        .unwrap_or(0)
}

fn from_inspect(inspect: ContainerInspectResponse) -> ContainerInfo {
    let state = inspect.state.unwrap_or_default();
    let status = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => ContainerState::Created,
        Some(ContainerStateStatusEnum::RUNNING | ContainerStateStatusEnum::PAUSED) => {
            ContainerState::Running
        }
        Some(ContainerStateStatusEnum::RESTARTING) => ContainerState::Restarting,
        Some(ContainerStateStatusEnum::EXITED) => ContainerState::Exited {
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
        },
        other => ContainerState::Other(format!("{other:?}").to_lowercase()),
    };
    let config = inspect.config.unwrap_or_default();
    let ip_address = inspect
        .network_settings
        .and_then(|n| n.networks)
        .and_then(|nets| nets.into_values().find_map(|e| e.ip_address))
        .filter(|ip| !ip.is_empty());
    let real_time = |t: Option<String>| t.filter(|t| !t.starts_with("0001-"));
    ContainerInfo {
        id: inspect.id.unwrap_or_default(),
        name: inspect
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        image: config.image.unwrap_or_default(),
        image_id: inspect.image,
        labels: config.labels.unwrap_or_default().into_iter().collect(),
        state: status,
        started_at: real_time(state.started_at),
        finished_at: real_time(state.finished_at),
        ip_address,
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
        // Pods starting together would otherwise build it concurrently, leaving dangling copies.
        static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let _building = BUILD.lock().await;
        let tag = sandbox::SANDBOX_IMAGE;
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
        let created = self
            .docker
            .create_container(Some(options), create_body(spec))
            .await
            .map_err(engine("create container", &spec.name))?;
        Ok(created.id)
    }

    async fn start_container(&self, id: &str) -> Result<(), RuntimeError> {
        match self.docker.start_container(id, None).await {
            Err(e) if is_not_found(&e) => Err(RuntimeError::NotFound { id: id.to_string() }),
            Err(e) if !is_not_modified(&e) => Err(engine("start container", id)(e)),
            _ => Ok(()),
        }
    }

    async fn stop_container(&self, id: &str, grace: Duration) -> Result<(), RuntimeError> {
        let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        match self.docker.stop_container(id, Some(options)).await {
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
        let mut stream = self.docker.wait_container(id, None);
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
            .docker
            .events(Some(options))
            .map_err(|source| RuntimeError::Engine {
                operation: "watch events",
                target: String::new(),
                source,
            })
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
            .docker
            .create_exec(id, options)
            .await
            .map_err(engine("exec in container", id))?;
        let mut output = String::new();
        if let StartExecResults::Attached {
            output: mut out, ..
        } = self
            .docker
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

    async fn logs(&self, id: &str, tail: Option<usize>) -> Result<String, RuntimeError> {
        let tail = tail.map_or("all".to_string(), |n| n.to_string());
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let chunks: Vec<_> = self
            .docker
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_name_and_tag() {
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(split_reference("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_reference("localhost:5000/app"),
            ("localhost:5000/app", "latest")
        );
        assert_eq!(
            split_reference("localhost:5000/app:v2"),
            ("localhost:5000/app", "v2")
        );
    }

    #[test]
    fn exit_codes_come_out_of_list_status() {
        assert_eq!(parse_exit_code("Exited (137) 3 seconds ago"), 137);
        assert_eq!(parse_exit_code("Up 2 minutes"), 0);
    }
}
