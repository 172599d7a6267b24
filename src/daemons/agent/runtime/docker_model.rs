//! Pure conversions between berth's engine-neutral container types and Docker's API models.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, EndpointIpamConfig, EndpointSettings, HostConfig, Mount,
    MountTmpfsOptions, MountType, NetworkingConfig, PortBinding,
};

use super::labels;
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerSpec, ContainerState, MountSource, NetworkMode,
};

/// Splits `repo[:tag]` (a `host:port/` prefix is not a tag); digests stay in the name.
pub(super) fn split_reference(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((name, tag)) if !tag.contains('/') => (name, tag),
        _ => (image, "latest"),
    }
}

pub(crate) fn create_body(spec: &ContainerSpec) -> ContainerCreateBody {
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
        NetworkMode::None | NetworkMode::Unmanaged => "none".to_string(),
        NetworkMode::Network(name) => name.clone(),
        NetworkMode::Host => "host".to_string(),
    };
    // In the node's namespace ports are the node's already; the engine would only warn.
    if spec.network == NetworkMode::Host {
        port_bindings.clear();
    }
    let host_config = HostConfig {
        memory: spec.memory_bytes,
        nano_cpus: spec.nano_cpus,
        init: Some(spec.init),
        network_mode: Some(network_mode),
        port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
        mounts: Some(mounts),
        privileged: Some(spec.privileged),
        readonly_rootfs: Some(spec.read_only_root),
        dns: spec.dns.as_ref().map(|d| d.servers.clone()),
        dns_search: spec.dns.as_ref().map(|d| d.search.clone()),
        dns_options: spec.dns.as_ref().map(|d| d.options.clone()),
        // Docker writes these into the `/etc/hosts` it makes (a plugged-in sandbox's
        // containers mount the agent's instead, which holds them too).
        extra_hosts: Some(
            spec.host_aliases
                .iter()
                .flat_map(|a| a.hostnames.iter().map(move |h| format!("{h}:{}", a.ip)))
                .collect(),
        )
        .filter(|hosts: &Vec<String>| !hosts.is_empty()),
        ..Default::default()
    };
    // A fixed address on a user-defined network (the pod's, from the agent's pool).
    let networking_config = match (&spec.network, &spec.ipv4_address) {
        (NetworkMode::Network(name), Some(ip)) => Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                name.clone(),
                EndpointSettings {
                    ipam_config: Some(EndpointIpamConfig {
                        ipv4_address: Some(ip.clone()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )])),
        }),
        _ => None,
    };
    // A container that joins another's network namespace may not set ports or a hostname;
    // one in the node's has the node's hostname.
    let owns_network = !matches!(spec.network, NetworkMode::Container(_) | NetworkMode::Host);
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
        networking_config,
        network_disabled: (spec.network == NetworkMode::Unmanaged).then_some(true),
        ..Default::default()
    }
}

pub(super) fn from_summary(summary: ContainerSummary) -> ContainerInfo {
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
    let labels: std::collections::BTreeMap<String, String> =
        summary.labels.unwrap_or_default().into_iter().collect();
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
        ip_address: labels.get(labels::POD_IP).cloned(),
        labels,
        state,
        started_at: None,
        finished_at: None,
        pid: None,
    }
}

/// Docker's list status reads `Exited (137) 3 seconds ago`.
pub(super) fn parse_exit_code(status: &str) -> i64 {
    status
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .and_then(|(code, _)| code.parse().ok())
        .unwrap_or(0)
}

pub(super) fn from_inspect(inspect: ContainerInspectResponse) -> ContainerInfo {
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
    let labels: std::collections::BTreeMap<String, String> =
        config.labels.unwrap_or_default().into_iter().collect();
    // A sandbox the agent plugged in itself has no engine network; its label has the address.
    let ip_address = labels.get(labels::POD_IP).cloned().or_else(|| {
        inspect
            .network_settings
            .and_then(|n| n.networks)
            .and_then(|nets| nets.into_values().find_map(|e| e.ip_address))
            .filter(|ip| !ip.is_empty())
    });
    let pid = state
        .pid
        .filter(|p| *p > 0)
        .and_then(|p| u32::try_from(p).ok());
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
        labels,
        state: status,
        started_at: real_time(state.started_at),
        finished_at: real_time(state.finished_at),
        ip_address,
        pid,
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
