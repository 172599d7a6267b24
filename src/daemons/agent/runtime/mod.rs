//! The `ContainerRuntime` trait and the engine-neutral description of containers and volumes.
//!
//! Pod logic speaks only these types, so it runs unchanged against Docker ([`docker`], with
//! [`streams`] for logs and exec and [`docker_network`] for the pod network) and against the
//! recording fake (`fake`, built for unit tests only). Errors come out as [`RuntimeError`]
//! cases; the engine's own error is only ever their opaque cause.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use serde::Serialize;

pub mod docker;
pub(crate) mod docker_model;
pub mod docker_network;
#[cfg(test)]
pub mod fake;
pub mod labels;
pub mod sandbox;
pub mod streams;

pub use docker::DockerRuntime;

/// Kubernetes' `imagePullPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum PullPolicy {
    /// Pull every time a container is created.
    Always,
    /// Pull only when the image is not present locally.
    IfNotPresent,
    /// Never pull; fail with `ErrImageNeverPull` when the image is missing.
    Never,
}

impl PullPolicy {
    /// Kubernetes' default: `Always` for `:latest` or untagged images, else `IfNotPresent`.
    pub fn from_pod(policy: Option<&str>, image: &str) -> PullPolicy {
        match policy {
            Some("Always") => PullPolicy::Always,
            Some("Never") => PullPolicy::Never,
            Some("IfNotPresent") => PullPolicy::IfNotPresent,
            _ => {
                let last = image.rsplit('/').next().unwrap_or(image);
                let tag = last.split('@').next().unwrap_or(last).split_once(':');
                if image.contains('@') {
                    PullPolicy::IfNotPresent
                } else if matches!(tag, None | Some((_, "latest"))) {
                    PullPolicy::Always
                } else {
                    PullPolicy::IfNotPresent
                }
            }
        }
    }
}

/// Which network namespace a container lives in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NetworkMode {
    /// Docker's default bridge network: the sandbox's mode.
    Bridge,
    /// Join another container's namespace (by name or id): every pod container joins its sandbox.
    Container(String),
    /// No network at all.
    None,
    /// A network namespace of its own that the engine leaves entirely alone (Docker's
    /// `NetworkDisabled`: no network sandbox of its own, no `resolv.conf` or `hosts` files);
    /// the agent plugs it into the pod network and writes those files itself.
    Unmanaged,
    /// A user-defined engine network by name: the node's pod network.
    Network(String),
    /// The node's own network namespace (`hostNetwork: true`).
    Host,
}

/// A pod's resolver configuration (Docker's `Dns`, `DnsSearch` and `DnsOptions`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DnsSettings {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub search: Vec<String>,
    /// Options such as `ndots:5`.
    pub options: Vec<String>,
}

/// One `hostAliases` entry: names the pod resolves to `ip` through its `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostAlias {
    /// The address (checked to be one).
    pub ip: String,
    /// The names (checked to be DNS subdomains, so one line of the hosts file each).
    pub hostnames: Vec<String>,
}

/// A port the container listens on, optionally published on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PortSpec {
    /// The port inside the pod.
    pub container_port: u16,
    /// `tcp`, `udp` or `sctp`, lower case as Docker writes it.
    pub protocol: String,
    /// The host port it is published on, if any.
    pub host_port: Option<u16>,
    /// The host address it is published on (empty: all).
    pub host_ip: Option<String>,
}

/// Where a mount's data comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum MountSource {
    /// A named engine volume (see [`VolumeSpec`]).
    Volume(String),
    /// A host directory or file.
    Bind(PathBuf),
    /// A private tmpfs for this container only.
    Tmpfs { size_bytes: Option<i64> },
}

/// One mount into a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MountSpec {
    /// Where it comes from.
    pub source: MountSource,
    /// The absolute path inside the container.
    pub target: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A named volume the agent creates before the containers that mount it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeSpec {
    /// The engine's volume name.
    pub name: String,
    /// Backed by memory (tmpfs) instead of disk, still shared by the pod's containers.
    pub memory: bool,
    /// The tmpfs size limit, from `emptyDir.sizeLimit`.
    pub size_bytes: Option<i64>,
    /// Labels; pod-scoped volumes carry the pod uid and are removed with the pod.
    pub labels: BTreeMap<String, String>,
}

/// Everything needed to create one container, independent of the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContainerSpec {
    /// The engine's container name (unique on the node).
    pub name: String,
    /// The image reference.
    pub image: String,
    /// Replaces the image's ENTRYPOINT (Kubernetes `command`).
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's CMD (Kubernetes `args`).
    pub cmd: Option<Vec<String>>,
    /// The working directory.
    pub working_dir: Option<String>,
    /// Environment, in declaration order (later entries win, as in Kubernetes).
    pub env: Vec<(String, String)>,
    /// `uid[:gid]`.
    pub user: Option<String>,
    /// The hostname (only meaningful for the network namespace owner).
    pub hostname: Option<String>,
    /// The network namespace.
    pub network: NetworkMode,
    /// Resolver settings, for the network namespace owner; `None` keeps the engine's.
    /// Left out of the serialized form when unset, so spec hashes of containers made
    /// before the field existed stay the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsSettings>,
    /// Extra `/etc/hosts` entries (`hostAliases`), for the network namespace owner. Left out
    /// of the serialized form when empty, like `dns`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
    /// Ports: exposed, and published when `host_port` is set.
    pub ports: Vec<PortSpec>,
    /// A fixed address on the [`NetworkMode::Network`] it joins (the pod's, from the
    /// agent's pool); `None` lets the engine choose. Set after the spec hash is taken.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ipv4_address: Option<String>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// CPU limit in billionths of a CPU.
    pub nano_cpus: Option<i64>,
    /// Mount the root filesystem read-only.
    pub read_only_root: bool,
    /// Run privileged.
    pub privileged: bool,
    /// Run a tiny init as PID 1 that forwards signals and reaps zombies.
    pub init: bool,
    /// Mounts.
    pub mounts: Vec<MountSpec>,
    /// Labels (see [`crate::daemons::agent::runtime::labels`]).
    pub labels: BTreeMap<String, String>,
}

/// The engine's view of a container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerState {
    /// Created, never started.
    Created,
    /// Running (or paused).
    Running,
    /// Restarting (berth never asks for it; someone else did).
    Restarting,
    /// Exited, with its exit code.
    Exited { exit_code: i64, oom_killed: bool },
    /// Anything else the engine reports (removing, dead).
    Other(String),
}

/// The state as messages name it: `exited with code 1`, `OOM-killed, exit code 137`.
impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ContainerState::Exited {
                exit_code,
                oom_killed: true,
            } => write!(f, "OOM-killed, exit code {exit_code}"),
            ContainerState::Exited { exit_code, .. } => write!(f, "exited with code {exit_code}"),
            ContainerState::Created => f.write_str("created, not started"),
            ContainerState::Running => f.write_str("running"),
            ContainerState::Restarting => f.write_str("restarting"),
            ContainerState::Other(s) => f.write_str(s),
        }
    }
}

/// What the runtime knows about one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The engine's id.
    pub id: String,
    /// The engine's name, without Docker's leading `/`.
    pub name: String,
    /// The image reference it was created from.
    pub image: String,
    /// The image's id (digest), when known.
    pub image_id: Option<String>,
    /// Its labels.
    pub labels: BTreeMap<String, String>,
    /// Its state.
    pub state: ContainerState,
    /// RFC 3339 start time, when it ever started (only from inspect).
    pub started_at: Option<String>,
    /// RFC 3339 finish time, when it ever finished (only from inspect).
    pub finished_at: Option<String>,
    /// The pod's address, for a sandbox: its `berth.dev/pod-ip` label, else its address on
    /// the engine network (only from inspect).
    pub ip_address: Option<String>,
    /// The host process id of its main process while it runs (only from inspect).
    pub pid: Option<u32>,
}

/// A container lifecycle change the engine reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeEvent {
    /// The container's id.
    pub container_id: String,
    /// The engine's action: `create`, `start`, `die`, `kill`, `stop`, `destroy`, `oom`…
    pub action: String,
    /// The container's labels at the time of the event.
    pub labels: BTreeMap<String, String>,
}

/// The result of running a command inside a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The command's exit code.
    pub exit_code: i64,
    /// stdout and stderr, interleaved as they arrived.
    pub output: String,
}

/// A stream of runtime events.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<RuntimeEvent, RuntimeError>> + Send>>;

/// The engine's own error, kept as the cause of a [`RuntimeError`]: its words reach events
/// and waiting messages through [`RuntimeError::detail`], and nothing above the runtime
/// reads them to decide anything. Only an implementation (Docker's) makes one.
pub type EngineError = Box<dyn std::error::Error + Send + Sync>;

/// Everything that can go wrong talking to the engine, by what the agent does about it.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Connecting to, or negotiating with, the engine failed.
    #[error("cannot connect to the container engine")]
    Connect {
        #[source]
        source: EngineError,
    },
    /// Pulling an image failed (Kubernetes reason `ErrImagePull`).
    #[error("pulling image {image:?} failed: {message}")]
    ImagePull { image: String, message: String },
    /// The image is missing and the policy forbids pulling (`ErrImageNeverPull`).
    #[error("image {image:?} is not present and imagePullPolicy is Never")]
    ImageNeverPull { image: String },
    /// The sandbox image could not be built.
    #[error("building the sandbox image {image:?} failed: {message}")]
    SandboxImage { image: String, message: String },
    /// No such container.
    #[error("container {id:?} not found")]
    NotFound { id: String },
    /// A container of that name exists already (a leftover of an earlier attempt).
    #[error("a container named {name:?} exists already")]
    NameConflict { name: String },
    /// The engine refused to create the container (`CreateContainerError`).
    #[error("create container {name:?} failed")]
    Create {
        name: String,
        #[source]
        source: EngineError,
    },
    /// The engine could not start the container, say its command is missing
    /// (`RunContainerError`).
    #[error("start container {id:?} failed")]
    Start {
        id: String,
        #[source]
        source: EngineError,
    },
    /// Any other engine call failed.
    #[error("{operation} {target:?} failed")]
    Engine {
        operation: &'static str,
        target: String,
        #[source]
        source: EngineError,
    },
}

impl RuntimeError {
    /// The error with its causes (`start container "x" failed: Docker responded with …`),
    /// for events and waiting messages, where the user needs the engine's own words.
    pub fn detail(&self) -> String {
        let mut out = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    /// The Kubernetes waiting reason this error maps to in container status, if any.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            RuntimeError::ImagePull { .. } => Some("ErrImagePull"),
            RuntimeError::ImageNeverPull { .. } => Some("ErrImageNeverPull"),
            RuntimeError::Create { .. } | RuntimeError::NameConflict { .. } => {
                Some("CreateContainerError")
            }
            RuntimeError::Start { .. } => Some("RunContainerError"),
            _ => None,
        }
    }
}

/// A container engine as the agent needs it. Futures are `Send` so pod work can be spawned.
pub trait ContainerRuntime: Send + Sync {
    /// Makes `image` present according to `policy`; returns the image id.
    fn ensure_image(
        &self,
        image: &str,
        policy: PullPolicy,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Makes the pod sandbox image present (building it locally when missing); returns its tag.
    fn ensure_sandbox_image(&self) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Creates a named volume if it does not exist yet.
    fn ensure_volume(
        &self,
        volume: &VolumeSpec,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a volume; a missing volume is not an error.
    fn remove_volume(&self, name: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Names of the volumes carrying all of `labels`.
    fn list_volumes(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<String>, RuntimeError>> + Send;

    /// Creates a container; returns its id.
    fn create_container(
        &self,
        spec: &ContainerSpec,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;

    /// Starts a created or exited container.
    fn start_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Sends SIGTERM (or the image's stop signal), waits up to `grace`, then SIGKILL.
    /// Stopping a container that is not running is not an error.
    fn stop_container(
        &self,
        id: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Removes a container (forcibly); a missing container is not an error.
    fn remove_container(&self, id: &str) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// Waits for a container to exit; returns its exit code.
    fn wait_container(&self, id: &str) -> impl Future<Output = Result<i64, RuntimeError>> + Send;

    /// Inspects a container; `None` when it does not exist.
    fn inspect_container(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<Option<ContainerInfo>, RuntimeError>> + Send;

    /// All containers (running or not) carrying all of `labels`.
    fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<ContainerInfo>, RuntimeError>> + Send;

    /// Container lifecycle events for containers carrying all of `labels`, from now on.
    fn events(&self, labels: &[(&str, &str)]) -> EventStream;

    /// Runs `command` in a running container and collects its output.
    fn exec(
        &self,
        id: &str,
        command: &[String],
    ) -> impl Future<Output = Result<ExecOutput, RuntimeError>> + Send;

    /// Extracts a tar archive at `path` inside the container (which may be stopped); how
    /// the agent fills configMap and secret volumes through the sandbox.
    fn copy_into(
        &self,
        id: &str,
        path: &str,
        archive: Vec<u8>,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The last `tail` lines (all when `None`) of the container's stdout and stderr.
    fn logs(
        &self,
        id: &str,
        tail: Option<usize>,
    ) -> impl Future<Output = Result<String, RuntimeError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_engine_error_in_detail_carries_the_engines_words() {
        let e = RuntimeError::Start {
            id: "berth_app_web".into(),
            source: "exec: \"/nope\": stat /nope: no such file or directory".into(),
        };
        assert_eq!(e.to_string(), "start container \"berth_app_web\" failed");
        let detail = e.detail();
        assert!(
            detail.starts_with("start container \"berth_app_web\" failed: ")
                && detail.ends_with("stat /nope: no such file or directory"),
            "{detail}"
        );
        assert_eq!(e.reason(), Some("RunContainerError"));
    }

    #[test]
    fn default_pull_policy_follows_the_tag() {
        assert_eq!(PullPolicy::from_pod(None, "nginx"), PullPolicy::Always);
        assert_eq!(
            PullPolicy::from_pod(None, "nginx:latest"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_pod(None, "localhost:5000/nginx"),
            PullPolicy::Always
        );
        assert_eq!(
            PullPolicy::from_pod(None, "localhost:5000/nginx:1.2"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_pod(None, "nginx@sha256:abc"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            PullPolicy::from_pod(Some("Never"), "nginx"),
            PullPolicy::Never
        );
    }
}
