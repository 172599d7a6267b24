//! Unit tests of the pod translation.

use super::*;
use crate::daemons::agent::net::PodNetworkSettings;
use crate::daemons::agent::pod::env::StaticObjects;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web", "namespace": "shop", "uid": "u-1"},
        "spec": spec
    }))
    .unwrap()
}

fn plan(p: &Pod, policy: &AgentPolicy) -> Result<PodPlan, PodSpecError> {
    let ctx = PodContext {
        fields: PodFields {
            node_name: "n1".into(),
            ..Default::default()
        },
        ..Default::default()
    };
    plan_pod(p, &ctx, &StaticObjects::default(), policy)
}

#[test]
fn command_replaces_entrypoint_and_args_replace_cmd() {
    let p = pod(serde_json::json!({"containers": [{
        "name": "app", "image": "busybox:1.36",
        "command": ["sh", "-c"], "args": ["echo $(GREETING)"], "workingDir": "/tmp",
        "env": [{"name": "GREETING", "value": "hi"}],
        "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
        "securityContext": {"runAsUser": 1000, "runAsGroup": 2000, "readOnlyRootFilesystem": true},
        "ports": [{"containerPort": 80, "hostPort": 8080}]
    }]}));
    let plan = plan(&p, &AgentPolicy::default()).unwrap();
    let app = &plan.containers[0].spec;
    assert_eq!(app.entrypoint, Some(vec!["sh".into(), "-c".into()]));
    assert_eq!(app.cmd, Some(vec!["echo hi".into()]));
    assert_eq!(app.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(app.memory_bytes, Some(64 << 20));
    assert_eq!(app.nano_cpus, Some(500_000_000));
    assert_eq!(app.user.as_deref(), Some("1000:2000"));
    assert!(app.read_only_root);
    assert_eq!(
        app.network,
        NetworkMode::Container(plan.sandbox.name.clone())
    );
    assert_eq!(plan.sandbox.ports[0].host_port, Some(8080));
    assert_eq!(plan.containers[0].pull_policy, PullPolicy::IfNotPresent);
    assert_eq!(app.name, "berth_app_web_shop_u-1_0");
    assert_eq!(app.labels[labels::SPEC_HASH], plan.containers[0].spec_hash);
    assert_eq!(app.labels[labels::NODE], "n1");
}

#[test]
fn spec_hash_changes_with_the_spec_only() {
    let a = pod(serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.36"}]}));
    let b = pod(serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.37"}]}));
    let policy = AgentPolicy::default();
    let hash = |p: &Pod| plan(p, &policy).unwrap().containers[0].spec_hash.clone();
    assert_eq!(hash(&a), hash(&a.clone()));
    assert_ne!(hash(&a), hash(&b));
}

#[test]
fn privileged_is_refused_unless_allowed() {
    let p = pod(serde_json::json!({"containers": [{
        "name": "app", "image": "busybox:1.36", "securityContext": {"privileged": true}}]}));
    assert!(matches!(
        plan(&p, &AgentPolicy::default()),
        Err(PodSpecError::Privileged { .. })
    ));
    let allowed = AgentPolicy {
        allow_privileged: true,
        ..Default::default()
    };
    assert!(plan(&p, &allowed).unwrap().containers[0].spec.privileged);
}

#[test]
fn host_paths_only_under_allowed_prefixes() {
    let prefixes = vec![PathBuf::from("/srv/data")];
    assert!(host_path_allowed(Path::new("/srv/data/a"), &prefixes));
    assert!(!host_path_allowed(
        Path::new("/srv/data/../../etc"),
        &prefixes
    ));
    assert!(!host_path_allowed(Path::new("/srv/database"), &prefixes));
    assert!(!host_path_allowed(Path::new("srv/data"), &prefixes));
    let p = pod(serde_json::json!({
        "volumes": [{"name": "etc", "hostPath": {"path": "/etc"}}],
        "containers": [{"name": "app", "image": "busybox:1.36"}]}));
    assert!(matches!(
        plan(&p, &AgentPolicy::default()),
        Err(PodSpecError::HostPathNotAllowed { .. })
    ));
}

#[test]
fn volumes_map_to_engine_volumes() {
    let p = pod(serde_json::json!({
    "volumes": [
        {"name": "scratch", "emptyDir": {}},
        {"name": "fast", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        {"name": "data", "persistentVolumeClaim": {"claimName": "db"}}
    ],
    "containers": [{"name": "app", "image": "busybox:1.36", "volumeMounts": [
        {"name": "scratch", "mountPath": "/scratch"},
        {"name": "fast", "mountPath": "/fast"},
        {"name": "data", "mountPath": "/data", "readOnly": true}
    ]}]}));
    let plan = plan(&p, &AgentPolicy::default()).unwrap();
    let names: Vec<_> = plan.volumes.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(
        names,
        ["berth-u-1-scratch", "berth-u-1-fast", "berth-pvc-shop-db"]
    );
    assert!(plan.volumes[1].memory);
    assert_eq!(plan.volumes[1].size_bytes, Some(16 << 20));
    assert_eq!(plan.volumes[2].labels[labels::VOLUME_SCOPE], "claim");
    assert!(!plan.volumes[2].labels.contains_key(labels::POD_UID));
    assert!(plan.containers[0].spec.mounts[2].read_only);
}

#[test]
fn missing_secret_volumes_are_refused_clearly() {
    let p = pod(serde_json::json!({
        "volumes": [{"name": "s", "secret": {"secretName": "x"}}],
        "containers": [{"name": "app", "image": "busybox:1.36"}]}));
    let err = plan(&p, &AgentPolicy::default()).unwrap_err();
    assert!(err.to_string().contains("Secret \"x\" not found"), "{err}");
}

#[test]
fn secret_volumes_are_tmpfs_mounted_read_only_and_kept_by_the_sandbox() {
    let p = pod(serde_json::json!({
        "volumes": [{"name": "s", "secret": {"secretName": "x", "optional": true}}],
        "containers": [{"name": "app", "image": "busybox:1.36",
                        "volumeMounts": [{"name": "s", "mountPath": "/etc/s"}]}]}));
    let plan = plan(&p, &AgentPolicy::default()).unwrap();
    assert!(plan.volumes[0].memory, "secret files never touch disk");
    assert_eq!(plan.volumes[0].labels[labels::VOLUME_SCOPE], "pod");
    assert!(plan.containers[0].spec.mounts[0].read_only);
    assert_eq!(plan.sandbox.mounts[0].target, "/berth/volumes/s");
    assert_eq!(plan.files[0].volume, "s");
}

#[test]
fn resolved_environment_values_do_not_change_the_spec_hash() {
    let p = pod(
        serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.36",
        "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]}]}),
    );
    let ctx = PodContext::default();
    let with = |value: &str| {
        let mut objects = StaticObjects::default();
        objects.secrets.insert(
            ("shop".into(), "db".into()),
            std::collections::BTreeMap::from([("pw".into(), value.into())]),
        );
        plan_pod(&p, &ctx, &objects, &AgentPolicy::default())
            .unwrap()
            .containers[0]
            .spec_hash
            .clone()
    };
    assert_eq!(with("one"), with("two"));
}

/// An agent with the node's pod network 10.244.1.0/24.
fn on_pod_network() -> AgentPolicy {
    AgentPolicy {
        pod_network: Some(PodNetworkSettings {
            docker_network: "berth-n1".into(),
            cidr: crate::daemons::agent::net::podnet::Cidr::parse("10.244.1.0/24").unwrap(),
            bridge: "berth0123abcd".into(),
            files_dir: "/run/berth/berth0123abcd".into(),
            dns_server: "10.244.1.1".into(),
            cluster_domain: "cluster.local".into(),
        }),
        ..AgentPolicy::default()
    }
}

#[test]
fn on_a_pod_network_the_agent_plugs_sandboxes_in_unless_they_publish_host_ports() {
    let policy = on_pod_network();
    let plain = pod(serde_json::json!({"containers": [{
        "name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 80}]
    }]}));
    let plugged = plan(&plain, &policy).unwrap();
    assert!(plugged.plugged);
    assert_eq!(plugged.sandbox.network, NetworkMode::Unmanaged);

    let published = pod(serde_json::json!({"containers": [{
        "name": "app", "image": "busybox:1.36", "ports": [{"containerPort": 80, "hostPort": 8080}]
    }]}));
    let engine = plan(&published, &policy).unwrap();
    assert!(
        !engine.plugged,
        "Docker publishes host ports, so it attaches the sandbox"
    );
    assert_eq!(
        engine.sandbox.network,
        NetworkMode::Network("berth-n1".into())
    );

    let without = plan(&plain, &AgentPolicy::default()).unwrap();
    assert!(!without.plugged, "no pod network: Docker's default bridge");
    assert_eq!(without.sandbox.network, NetworkMode::Bridge);
}

#[test]
fn host_aliases_go_to_the_sandbox_and_bad_ones_are_refused_clearly() {
    let with = |aliases: serde_json::Value| {
        pod(serde_json::json!({"hostAliases": aliases,
            "containers": [{"name": "app", "image": "busybox:1.36"}]}))
    };
    let policy = AgentPolicy::default();
    let ok = plan(
        &with(serde_json::json!([{"ip": "192.0.2.10", "hostnames": ["db.local", "cache"]}])),
        &policy,
    )
    .unwrap();
    assert_eq!(
        ok.sandbox.host_aliases,
        vec![HostAlias {
            ip: "192.0.2.10".into(),
            hostnames: vec!["db.local".into(), "cache".into()],
        }]
    );
    assert!(ok.containers[0].spec.host_aliases.is_empty());
    // Docker writes them into the hosts file of a sandbox it attaches to a network.
    let body = crate::daemons::agent::runtime::docker_model::create_body(&ok.sandbox);
    assert_eq!(
        body.host_config.unwrap().extra_hosts,
        Some(vec![
            "db.local:192.0.2.10".into(),
            "cache:192.0.2.10".into()
        ])
    );

    // A hostname with a newline would add a line of its own to the pod's hosts file.
    for (aliases, shown) in [
        (
            serde_json::json!([{"ip": "192.0.2.10", "hostnames": ["db"]}, {"ip": "db.local"}]),
            "hostAliases[1]: ip \"db.local\"",
        ),
        (
            serde_json::json!([{"ip": "192.0.2.10", "hostnames": ["db\n6.6.6.6 bank"]}]),
            "hostAliases[0]: hostname \"db\\n6.6.6.6 bank\"",
        ),
    ] {
        let err = plan(&with(aliases), &policy).unwrap_err().to_string();
        assert!(err.starts_with(shown), "{err}");
    }
}

#[test]
fn a_pod_without_host_aliases_keeps_its_sandbox_hash() {
    // Sandboxes made before hostAliases existed are not remade by an upgraded agent.
    let p = pod(serde_json::json!({"containers": [{"name": "app", "image": "busybox:1.36"}]}));
    let sandbox = plan(&p, &AgentPolicy::default()).unwrap().sandbox;
    let serialized = serde_json::to_value(&sandbox).unwrap();
    assert!(serialized.get("host_aliases").is_none(), "{serialized}");
}

#[test]
fn host_network_pods_run_in_the_nodes_namespace_with_its_name_and_resolver() {
    let policy = on_pod_network();
    let host = |dns_policy: &str| {
        pod(
            serde_json::json!({"hostNetwork": true, "dnsPolicy": dns_policy,
            "containers": [{"name": "app", "image": "busybox:1.36",
                            "ports": [{"containerPort": 9100, "hostPort": 9100}]}]}),
        )
    };
    let p = plan(&host("ClusterFirst"), &policy).unwrap();
    assert!(p.host_network && !p.plugged);
    assert_eq!(p.sandbox.network, NetworkMode::Host);
    assert_eq!(p.sandbox.hostname, None, "the node's hostname");
    assert_eq!(p.sandbox.dns, None, "ClusterFirst acts as Default");
    let body = crate::daemons::agent::runtime::docker_model::create_body(&p.sandbox);
    let host_config = body.host_config.unwrap();
    assert_eq!(host_config.network_mode.as_deref(), Some("host"));
    assert_eq!(host_config.port_bindings, None, "its ports are the node's");
    assert_eq!(body.hostname, None);

    let with_cluster_dns = plan(&host("ClusterFirstWithHostNet"), &policy).unwrap();
    let dns = with_cluster_dns.sandbox.dns.unwrap();
    assert_eq!(dns.servers, vec!["10.244.1.1".to_string()]);
    assert_eq!(dns.search[0], "shop.svc.cluster.local");
}
