//! Pure translation of a Kubernetes `Pod` into the sandbox, volume and container specs the
//! runtime creates. No I/O: everything the translation needs comes in as arguments.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec, Volume};

pub use super::env::PodFields;
use super::env::{EnvError, ObjectResolver, container_env, expand};
use super::projected::{self, ProjectionError, VolumeFiles};
use crate::daemons::agent::net::PodNetworkSettings;
use crate::daemons::agent::runtime::labels::{self, Role};
use crate::daemons::agent::runtime::sandbox::SANDBOX_IMAGE;
use crate::daemons::agent::runtime::{
    ContainerSpec, DnsSettings, HostAlias, MountSource, MountSpec, NetworkMode, PortSpec,
    PullPolicy, VolumeSpec,
};
use crate::manifest::quantity;

/// What the node's operator allows pods to do.
#[derive(Debug, Clone, Default)]
pub struct AgentPolicy {
    /// Whether `securityContext.privileged: true` is honoured (refused otherwise).
    pub allow_privileged: bool,
    /// The host directories `hostPath` volumes may point into.
    pub host_path_prefixes: Vec<PathBuf>,
    /// The node's pod network and cluster DNS; `None`: Docker's default bridge and resolvers.
    pub pod_network: Option<PodNetworkSettings>,
}

/// The pod's resolver settings from `dnsPolicy` and `dnsConfig`, as the kubelet builds them:
/// `ClusterFirst` (the default) puts the cluster DNS first with the namespace's search path
/// and `ndots:5`; `Default` keeps the node's; `None` uses only `dnsConfig`. `dnsConfig` adds
/// to the first two. A `hostNetwork` pod uses the cluster DNS only with
/// `ClusterFirstWithHostNet`; its `ClusterFirst` acts as `Default`.
pub fn pod_dns(
    spec: &PodSpec,
    namespace: &str,
    network: Option<&PodNetworkSettings>,
) -> Option<DnsSettings> {
    let policy = match spec.dns_policy.as_deref().unwrap_or("ClusterFirst") {
        "ClusterFirst" if spec.host_network == Some(true) => "Default",
        policy => policy,
    };
    let mut dns = match (policy, network) {
        ("None", _) => DnsSettings::default(),
        ("ClusterFirst" | "ClusterFirstWithHostNet", Some(net)) => {
            let domain = &net.cluster_domain;
            DnsSettings {
                servers: vec![net.dns_server.clone()],
                search: vec![
                    format!("{namespace}.svc.{domain}"),
                    format!("svc.{domain}"),
                    domain.clone(),
                ],
                options: vec!["ndots:5".into()],
            }
        }
        _ if spec.dns_config.is_none() => return None,
        _ => DnsSettings::default(),
    };
    if let Some(config) = &spec.dns_config {
        dns.servers
            .extend(config.nameservers.iter().flatten().cloned());
        dns.search.extend(config.searches.iter().flatten().cloned());
        for option in config.options.iter().flatten() {
            let Some(name) = option.name.as_deref() else {
                continue;
            };
            let rendered = match &option.value {
                Some(v) => format!("{name}:{v}"),
                None => name.to_string(),
            };
            // A later option of the same name wins, as in the kubelet.
            dns.options.retain(|o| o.split(':').next() != Some(name));
            dns.options.push(rendered);
        }
    }
    Some(dns)
}

/// Facts about the node and the pod that the spec does not hold.
#[derive(Debug, Clone, Default)]
pub struct PodContext {
    /// Values for `fieldRef`.
    pub fields: PodFields,
    /// Extra labels put on everything created for the pod (tests mark their objects so).
    pub extra_labels: BTreeMap<String, String>,
}

/// Why a pod cannot be run as written.
#[derive(Debug, thiserror::Error)]
pub enum PodSpecError {
    /// The pod lacks a name, namespace, uid or spec.
    #[error("pod {pod:?} lacks {field}")]
    Incomplete { pod: String, field: &'static str },
    /// A container asks to be privileged and the agent does not allow it.
    #[error("container {container:?} asks to run privileged, which this agent does not allow")]
    Privileged { container: String },
    /// A hostPath outside the allowed prefixes.
    #[error("volume {volume:?}: hostPath {path:?} is outside the prefixes this agent allows")]
    HostPathNotAllowed { volume: String, path: PathBuf },
    /// A volume kind berth does not run yet.
    #[error("volume {volume:?}: {kind} volumes are not supported by this agent yet")]
    UnsupportedVolume { volume: String, kind: &'static str },
    /// A volumeMount naming no volume of the pod.
    #[error("container {container:?} mounts {volume:?}, which the pod does not declare")]
    UnknownVolume { container: String, volume: String },
    /// A `subPath` on a volume kind where berth cannot honour it.
    #[error("container {container:?}: subPath on volume {volume:?} is only supported for hostPath")]
    SubPath { container: String, volume: String },
    /// A resource limit that is not a valid quantity.
    #[error("container {container:?}: limits.{resource} {value:?} is not a valid quantity")]
    Quantity {
        container: String,
        resource: &'static str,
        value: String,
    },
    /// A `hostAliases` entry the hosts file cannot hold.
    #[error("hostAliases[{index}]: {problem}; give an IP address and DNS names such as foo.local")]
    HostAlias { index: usize, problem: String },
    /// A port outside 1..=65535.
    #[error("container {container:?}: port {port} is out of range")]
    Port { container: String, port: i32 },
    /// An environment variable could not be resolved.
    #[error(transparent)]
    Env(#[from] EnvError),
    /// A configMap or secret volume could not be filled.
    #[error(transparent)]
    Projection(#[from] ProjectionError),
}

/// The identity that ties containers and volumes to their pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// One container of the pod, ready to create.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerPlan {
    /// The name in the pod spec.
    pub name: String,
    /// The engine-level spec (its labels include the spec hash).
    pub spec: ContainerSpec,
    /// The image pull policy.
    pub pull_policy: PullPolicy,
    /// The spec hash, also in `spec.labels`.
    pub spec_hash: String,
}

/// Everything to create for a pod, in order: volumes, sandbox, init containers, containers.
#[derive(Debug, Clone, PartialEq)]
pub struct PodPlan {
    /// Who the pod is.
    pub identity: PodIdentity,
    /// Named volumes to create first.
    pub volumes: Vec<VolumeSpec>,
    /// The files of configMap and secret volumes, written through the sandbox.
    pub files: Vec<VolumeFiles>,
    /// The sandbox container.
    pub sandbox: ContainerSpec,
    /// Whether the agent plugs the sandbox into the pod network itself (its namespace has
    /// no engine networking): every sandbox on a pod network except those that publish
    /// host ports, which Docker attaches so it can publish them.
    pub plugged: bool,
    /// Whether the pod runs in the node's network namespace (`hostNetwork`): it has the
    /// node's address and no address of the pod network.
    pub host_network: bool,
    /// Init containers, run to completion in order.
    pub init_containers: Vec<ContainerPlan>,
    /// App containers.
    pub containers: Vec<ContainerPlan>,
    /// `terminationGracePeriodSeconds` (default 30 s).
    pub grace: Duration,
}

impl PodPlan {
    /// Points the pod's containers at the sandbox that runs (a recreated sandbox is a new
    /// attempt under a new name, and the plan names the first), with `files` mounted: the
    /// pod's `hosts` and `resolv.conf` when the agent writes them.
    pub fn join_sandbox(&mut self, sandbox_id: &str, files: &[MountSpec]) {
        for c in self.init_containers.iter_mut().chain(&mut self.containers) {
            c.spec.network = NetworkMode::Container(sandbox_id.to_string());
            c.spec.mounts.extend_from_slice(files);
        }
    }
}

/// The engine name of a pod's container: `berth_<container>_<pod>_<namespace>_<uid>_<attempt>`,
/// the kubelet's `k8s_…` scheme.
pub fn container_name(id: &PodIdentity, container: &str, attempt: u32) -> String {
    format!(
        "berth_{container}_{}_{}_{}_{attempt}",
        id.name, id.namespace, id.uid
    )
}

/// The labels shared by everything created for the pod.
fn pod_labels(id: &PodIdentity, ctx: &PodContext) -> BTreeMap<String, String> {
    let mut map = ctx.extra_labels.clone();
    for (k, v) in [
        (labels::MANAGED, "true"),
        (labels::POD_UID, id.uid.as_str()),
        (labels::POD_NAMESPACE, id.namespace.as_str()),
        (labels::POD_NAME, id.name.as_str()),
        (labels::NODE, ctx.fields.node_name.as_str()),
    ] {
        map.insert(k.to_string(), v.to_string());
    }
    map
}

/// The pod's `hostAliases`, checked as the API server checks them: each line of the hosts
/// file they become holds an address and names, nothing else.
fn host_aliases(spec: &PodSpec) -> Result<Vec<HostAlias>, PodSpecError> {
    let aliases = spec.host_aliases.iter().flatten().enumerate();
    aliases
        .map(|(index, alias)| {
            let bad = |problem: String| PodSpecError::HostAlias { index, problem };
            if alias.ip.parse::<std::net::IpAddr>().is_err() {
                return Err(bad(format!("ip {:?} is not an IP address", alias.ip)));
            }
            let hostnames = alias.hostnames.clone().unwrap_or_default();
            let invalid = |h: &&String| crate::manifest::names::dns1123_subdomain(h).is_err();
            if let Some(name) = hostnames.iter().find(invalid) {
                return Err(bad(format!("hostname {name:?} is not a DNS subdomain")));
            }
            Ok(HostAlias {
                ip: alias.ip.clone(),
                hostnames,
            })
        })
        .collect()
}

fn identity(pod: &Pod) -> Result<(PodIdentity, &PodSpec), PodSpecError> {
    let meta = &pod.metadata;
    let shown = meta.name.clone().unwrap_or_default();
    let missing = |field| PodSpecError::Incomplete {
        pod: shown.clone(),
        field,
    };
    let id = PodIdentity {
        uid: meta.uid.clone().ok_or_else(|| missing("metadata.uid"))?,
        namespace: meta.namespace.clone().unwrap_or_else(|| "default".into()),
        name: meta.name.clone().ok_or_else(|| missing("metadata.name"))?,
    };
    let spec = pod.spec.as_ref().ok_or_else(|| missing("spec"))?;
    Ok((id, spec))
}

/// Translates a pod. The pod IP in `ctx` is only needed for `fieldRef: status.podIP`.
pub fn plan_pod(
    pod: &Pod,
    ctx: &PodContext,
    objects: &dyn ObjectResolver,
    policy: &AgentPolicy,
) -> Result<PodPlan, PodSpecError> {
    let (id, spec) = identity(pod)?;
    let base_labels = pod_labels(&id, ctx);
    let mut volumes = Vec::new();
    let mut sources = BTreeMap::new();
    let mut files = Vec::new();
    let mut sandbox_mounts = Vec::new();
    for volume in spec.volumes.iter().flatten() {
        if let Some(projection) = projected::volume_files(&id.namespace, volume, objects) {
            let projection = projection?;
            let name = format!("berth-{}-{}", id.uid, volume.name);
            let mut labels = base_labels.clone();
            labels.insert(labels::VOLUME_SCOPE.into(), "pod".into());
            // Secret files live in memory only (tmpfs), as the kubelet keeps them.
            volumes.push(VolumeSpec {
                name: name.clone(),
                memory: volume.secret.is_some(),
                size_bytes: None,
                labels,
            });
            sandbox_mounts.push(MountSpec {
                source: MountSource::Volume(name.clone()),
                target: projection.sandbox_path.clone(),
                read_only: false,
            });
            sources.insert(volume.name.clone(), (MountSource::Volume(name), true));
            files.push(projection);
            continue;
        }
        let (source, created) = volume_source(&id, volume, policy, &base_labels)?;
        sources.insert(volume.name.clone(), (source, false));
        volumes.extend(created);
    }
    let sandbox_name = container_name(&id, labels::SANDBOX_CONTAINER, 0);
    let mut ports = Vec::new();
    let mut plan_containers = |list: &[Container], role: Role| {
        list.iter()
            .map(|c| {
                let plan = container_plan(pod, &id, c, role, ctx, objects, policy, &sources)?;
                let plan = ContainerPlan {
                    spec: ContainerSpec {
                        network: NetworkMode::Container(sandbox_name.clone()),
                        ..plan.spec
                    },
                    ..plan
                };
                if role == Role::App {
                    ports.extend(container_ports(c)?);
                }
                Ok(plan)
            })
            .collect::<Result<Vec<_>, PodSpecError>>()
    };
    let init_containers =
        plan_containers(spec.init_containers.as_deref().unwrap_or(&[]), Role::Init)?;
    let containers = plan_containers(&spec.containers, Role::App)?;

    let host_network = spec.host_network == Some(true);
    let plugged = policy.pod_network.is_some()
        && !host_network
        && ports.iter().all(|p: &PortSpec| p.host_port.is_none());
    let mut sandbox_labels = base_labels.clone();
    sandbox_labels.insert(
        labels::CONTAINER_NAME.into(),
        labels::SANDBOX_CONTAINER.into(),
    );
    sandbox_labels.insert(labels::ROLE.into(), Role::Sandbox.as_str().into());
    sandbox_labels.insert(labels::ATTEMPT.into(), "0".into());
    let mut sandbox = ContainerSpec {
        name: sandbox_name,
        image: SANDBOX_IMAGE.to_string(),
        entrypoint: None,
        cmd: None,
        working_dir: None,
        env: Vec::new(),
        user: None,
        // A pod in the node's namespace has the node's hostname, as in Kubernetes.
        hostname: (!host_network).then(|| spec.hostname.clone().unwrap_or_else(|| id.name.clone())),
        network: match &policy.pod_network {
            _ if host_network => NetworkMode::Host,
            Some(_) if plugged => NetworkMode::Unmanaged,
            Some(net) => NetworkMode::Network(net.docker_network.clone()),
            None => NetworkMode::Bridge,
        },
        dns: pod_dns(spec, &id.namespace, policy.pod_network.as_ref()),
        host_aliases: host_aliases(spec)?,
        ports,
        memory_bytes: None,
        nano_cpus: None,
        ipv4_address: None,
        read_only_root: true,
        privileged: false,
        init: true,
        mounts: sandbox_mounts,
        labels: BTreeMap::new(),
    };
    let hash = labels::spec_hash(&sandbox);
    sandbox_labels.insert(labels::SPEC_HASH.into(), hash);
    sandbox.labels = sandbox_labels;

    let grace = spec.termination_grace_period_seconds.unwrap_or(30).max(0);
    Ok(PodPlan {
        identity: id,
        volumes,
        files,
        sandbox,
        plugged,
        host_network,
        init_containers,
        containers,
        grace: Duration::from_secs(grace as u64),
    })
}

fn container_ports(c: &Container) -> Result<Vec<PortSpec>, PodSpecError> {
    let check = |port: i32| {
        u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or(PodSpecError::Port {
                container: c.name.clone(),
                port,
            })
    };
    c.ports
        .iter()
        .flatten()
        .map(|p| {
            Ok(PortSpec {
                container_port: check(p.container_port)?,
                protocol: p.protocol.as_deref().unwrap_or("TCP").to_lowercase(),
                host_port: p.host_port.map(check).transpose()?,
                host_ip: p.host_ip.clone(),
            })
        })
        .collect()
}

/// Where a pod volume's data lives, plus the engine volume to create for it, if any.
fn volume_source(
    id: &PodIdentity,
    volume: &Volume,
    policy: &AgentPolicy,
    base_labels: &BTreeMap<String, String>,
) -> Result<(MountSource, Option<VolumeSpec>), PodSpecError> {
    let unsupported = |kind| PodSpecError::UnsupportedVolume {
        volume: volume.name.clone(),
        kind,
    };
    if let Some(empty) = &volume.empty_dir {
        let name = format!("berth-{}-{}", id.uid, volume.name);
        let mut labels = base_labels.clone();
        labels.insert(labels::VOLUME_SCOPE.into(), "pod".into());
        let size_bytes = empty
            .size_limit
            .as_ref()
            .and_then(|q| quantity::memory_bytes(&q.0));
        let spec = VolumeSpec {
            name: name.clone(),
            memory: empty.medium.as_deref() == Some("Memory"),
            size_bytes,
            labels,
        };
        return Ok((MountSource::Volume(name), Some(spec)));
    }
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        if !host_path_allowed(&path, &policy.host_path_prefixes) {
            return Err(PodSpecError::HostPathNotAllowed {
                volume: volume.name.clone(),
                path,
            });
        }
        return Ok((MountSource::Bind(path), None));
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        // Keyed by namespace and claim, with no pod uid: it outlives the pod.
        let name = format!("berth-pvc-{}-{}", id.namespace, claim.claim_name);
        let mut labels: BTreeMap<String, String> = base_labels
            .iter()
            .filter(|(k, _)| !k.starts_with("berth.dev/pod-"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.insert(labels::VOLUME_SCOPE.into(), "claim".into());
        labels.insert(labels::POD_NAMESPACE.into(), id.namespace.clone());
        let spec = VolumeSpec {
            name: name.clone(),
            memory: false,
            size_bytes: None,
            labels,
        };
        return Ok((MountSource::Volume(name), Some(spec)));
    }
    Err(if volume.projected.is_some() {
        unsupported("projected")
    } else if volume.downward_api.is_some() {
        unsupported("downwardAPI")
    } else {
        unsupported("this kind of")
    })
}

/// Only absolute, `..`-free paths under an allowed prefix.
pub fn host_path_allowed(path: &Path, prefixes: &[PathBuf]) -> bool {
    path.is_absolute()
        && !path.components().any(|c| matches!(c, Component::ParentDir))
        && prefixes.iter().any(|p| path.starts_with(p))
}

#[allow(clippy::too_many_arguments)]
fn container_plan(
    pod: &Pod,
    id: &PodIdentity,
    c: &Container,
    role: Role,
    ctx: &PodContext,
    objects: &dyn ObjectResolver,
    policy: &AgentPolicy,
    sources: &BTreeMap<String, (MountSource, bool)>,
) -> Result<ContainerPlan, PodSpecError> {
    let spec = pod.spec.as_ref().expect("checked by identity()");
    let env = container_env(pod, c, &ctx.fields, objects)?;
    let env_map: BTreeMap<String, String> = env.iter().cloned().collect();
    let expand_all = |list: &Option<Vec<String>>| {
        list.as_ref()
            .map(|l| l.iter().map(|s| expand(s, &env_map)).collect::<Vec<_>>())
    };

    let limit = |resource: &'static str, parse: fn(&str) -> Option<i64>| {
        let value = c
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .and_then(|l| l.get(resource));
        value
            .map(|q| {
                parse(&q.0).ok_or_else(|| PodSpecError::Quantity {
                    container: c.name.clone(),
                    resource,
                    value: q.0.clone(),
                })
            })
            .transpose()
    };

    let pod_sc = spec.security_context.as_ref();
    let sc = c.security_context.as_ref();
    if sc.and_then(|s| s.privileged) == Some(true) && !policy.allow_privileged {
        return Err(PodSpecError::Privileged {
            container: c.name.clone(),
        });
    }
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod_sc.and_then(|s| s.run_as_group));
    // Docker cannot set a group without a user; the image's user then keeps its own group.
    let user = run_as_user.map(|uid| match run_as_group {
        Some(gid) => format!("{uid}:{gid}"),
        None => uid.to_string(),
    });

    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let (source, always_read_only) =
            sources
                .get(&m.name)
                .ok_or_else(|| PodSpecError::UnknownVolume {
                    container: c.name.clone(),
                    volume: m.name.clone(),
                })?;
        let source = match (source, m.sub_path.as_deref().filter(|s| !s.is_empty())) {
            (source, None) => source.clone(),
            (MountSource::Bind(base), Some(sub)) if !sub.contains("..") => {
                MountSource::Bind(base.join(sub))
            }
            _ => {
                return Err(PodSpecError::SubPath {
                    container: c.name.clone(),
                    volume: m.name.clone(),
                });
            }
        };
        mounts.push(MountSpec {
            source,
            target: m.mount_path.clone(),
            // ConfigMap and Secret volumes are read-only in Kubernetes.
            read_only: *always_read_only || m.read_only.unwrap_or(false),
        });
    }

    let image = c.image.clone().unwrap_or_default();
    let pull_policy = PullPolicy::from_pod(c.image_pull_policy.as_deref(), &image);
    let mut container = ContainerSpec {
        name: String::new(),
        image,
        entrypoint: expand_all(&c.command),
        cmd: expand_all(&c.args),
        working_dir: c.working_dir.clone().filter(|w| !w.is_empty()),
        env,
        user,
        hostname: None,
        network: NetworkMode::None,
        dns: None,
        host_aliases: Vec::new(),
        ports: container_ports(c)?,
        memory_bytes: limit("memory", quantity::memory_bytes)?,
        nano_cpus: limit("cpu", quantity::nano_cpus)?,
        ipv4_address: None,
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        privileged: sc.and_then(|s| s.privileged) == Some(true),
        init: false,
        mounts,
        labels: BTreeMap::new(),
    };
    // The hash covers the effective config plus the pull policy, not names or labels. The
    // environment counts as declared, not resolved: as in Kubernetes, a changed ConfigMap or
    // Secret reaches a container's environment at its next start, never by a restart, and
    // no Secret value goes into a label.
    let declared = ContainerSpec {
        env: Vec::new(),
        ..container.clone()
    };
    let env_decl = (
        serde_json::to_value(&c.env).unwrap_or_default(),
        serde_json::to_value(&c.env_from).unwrap_or_default(),
    );
    let spec_hash = labels::spec_hash(&(&declared, pull_policy, env_decl));
    let mut container_labels = pod_labels(id, ctx);
    container_labels.insert(labels::CONTAINER_NAME.into(), c.name.clone());
    container_labels.insert(labels::ROLE.into(), role.as_str().into());
    container_labels.insert(labels::SPEC_HASH.into(), spec_hash.clone());
    container_labels.insert(labels::ATTEMPT.into(), "0".into());
    container.labels = container_labels;
    container.name = container_name(id, &c.name, 0);
    // Ports are published on the sandbox; the container itself joins its namespace.
    container.ports.retain(|_| false);
    Ok(ContainerPlan {
        name: c.name.clone(),
        spec: container,
        pull_policy,
        spec_hash,
    })
}

#[cfg(test)]
#[path = "podspec_tests.rs"]
mod tests;
