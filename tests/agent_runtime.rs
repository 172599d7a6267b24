//! The agent's pod worker and container runtime against the real Docker engine: pods of
//! several containers in one sandbox, init order, the container spec as Docker sees it,
//! graceful stop, labels for adoption, pull policy, volumes and engine events. Pods start
//! through the worker's passes, as the agent starts them.

pub mod support;

use std::time::{Duration, Instant};

use berth::daemons::agent::DockerRuntime;
use berth::daemons::agent::runtime::labels;
use berth::daemons::agent::runtime::{ContainerRuntime, ContainerState, PullPolicy};
use berth::daemons::agent::worker::teardown::{pod_containers, remove_pod, stop_pod};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::poll;
use support::worker::{PodAgent, container_id, waiting_reason};

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Starts `pod` through the agent's pod worker; returns its status and the ids of the
/// containers named in `names`, in that order.
async fn start(
    rt: &DockerRuntime,
    scope: &TestScope,
    pod: &Pod,
    names: &[&str],
) -> (PodStatus, Vec<String>) {
    let status = PodAgent::new(rt, &scope.context(), pod).start().await;
    let ids = names
        .iter()
        .map(|n| container_id(&status, n).unwrap_or_else(|| panic!("{n} started: {status:?}")))
        .collect();
    (status, ids)
}

#[tokio::test]
async fn app_and_helper_share_localhost_and_an_empty_dir() {
    let rt = runtime().await;
    let scope = TestScope::new("share");
    let pod = scope.pod(
        "web",
        serde_json::json!({
            "volumes": [{"name": "shared", "emptyDir": {}}],
            "containers": [
                {"name": "helper", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["httpd", "-f", "-p", "8080", "-h", "/shared"],
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("echo hello-from-app > /shared/index.html; exec sleep 3600"),
                 "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
            ]
        }),
    );
    let plan = scope.plan(&pod);
    let (status, ids) = start(&rt, &scope, &pod, &["app"]).await;
    assert!(status.pod_ip.is_some(), "the sandbox has the pod IP");
    let app = &ids[0];

    // The app reaches the helper over localhost and reads the file it wrote itself.
    let fetch = args(&["wget", "-qO-", "http://localhost:8080/index.html"]);
    let body = poll(Duration::from_secs(10), || async {
        let out = rt.exec(app, &fetch).await.ok()?;
        (out.exit_code == 0).then_some(out.output)
    })
    .await
    .ok();
    assert_eq!(body.as_deref().map(str::trim), Some("hello-from-app"));

    // Both containers see the pod's hostname from the sandbox.
    let hostname = rt.exec(app, &args(&["hostname"])).await.unwrap();
    assert_eq!(hostname.output.trim(), "web");

    remove_pod(&rt, &plan.identity, Duration::ZERO)
        .await
        .unwrap();
    assert!(
        pod_containers(&rt, &plan.identity.uid)
            .await
            .unwrap()
            .is_empty()
    );
    let volumes = rt
        .list_volumes(&[(labels::POD_UID, plan.identity.uid.as_str())])
        .await
        .unwrap();
    assert!(volumes.is_empty(), "pod-scoped volumes go with the pod");
}

#[tokio::test]
async fn init_containers_run_in_order_before_app_containers() {
    let rt = runtime().await;
    let scope = TestScope::new("init");
    let mount = serde_json::json!([{"name": "work", "mountPath": "/work"}]);
    let pod = scope.pod(
        "ordered",
        serde_json::json!({
            "volumes": [{"name": "work", "emptyDir": {}}],
            "initContainers": [
                {"name": "first", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("sleep 1; echo first >> /work/log"), "volumeMounts": mount},
                {"name": "second", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("echo second >> /work/log"), "volumeMounts": mount}
            ],
            "containers": [
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("echo app >> /work/log; exec sleep 3600"), "volumeMounts": mount}
            ]
        }),
    );
    let (_, ids) = start(&rt, &scope, &pod, &["app", "first", "second"]).await;
    let app = &ids[0];
    let log = poll(Duration::from_secs(10), || async {
        let out = rt.exec(app, &args(&["cat", "/work/log"])).await.ok()?;
        out.output.contains("app").then_some(out.output)
    })
    .await
    .ok();
    assert_eq!(log.as_deref(), Some("first\nsecond\napp\n"));
    for id in &ids[1..] {
        let info = rt.inspect_container(id).await.unwrap().unwrap();
        assert!(matches!(
            info.state,
            ContainerState::Exited { exit_code: 0, .. }
        ));
    }
}

#[tokio::test]
async fn a_failing_init_container_keeps_app_containers_from_starting() {
    let rt = runtime().await;
    let scope = TestScope::new("initfail");
    let pod = scope.pod(
        "broken",
        serde_json::json!({
            "restartPolicy": "Never",
            "initContainers": [{"name": "migrate", "image": TEST_IMAGE,
                                "imagePullPolicy": "Never", "command": sh("exit 3")}],
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }),
    );
    let plan = scope.plan(&pod);
    let status = PodAgent::new(&rt, &scope.context(), &pod).start().await;
    assert_eq!(status.phase.as_deref(), Some("Failed"), "{status:?}");
    let init = &status.init_container_statuses.as_ref().unwrap()[0];
    let state = init.state.as_ref().unwrap().terminated.as_ref();
    assert_eq!(state.map(|t| t.exit_code), Some(3), "{init:?}");
    let containers = pod_containers(&rt, &plan.identity.uid).await.unwrap();
    assert!(
        !containers
            .iter()
            .any(|c| c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some("app"))
    );
}

#[tokio::test]
async fn env_command_args_and_working_dir_reach_the_container() {
    let rt = runtime().await;
    let scope = TestScope::new("spec");
    let pod = scope.pod(
        "envy",
        serde_json::json!({
            "containers": [{
                "name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c"],
                "args": ["echo \"$GREETING $POD_NAME $(pwd) $0\" > /tmp/out; exec sleep 3600", "$(GREETING)"],
                "workingDir": "/tmp",
                "env": [
                    {"name": "GREETING", "value": "hello"},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}
                ]
            }]
        }),
    );
    let (_, ids) = start(&rt, &scope, &pod, &["app"]).await;
    let app = &ids[0];
    let out = poll(Duration::from_secs(10), || async {
        let out = rt.exec(app, &args(&["cat", "/tmp/out"])).await.ok()?;
        (out.exit_code == 0).then_some(out.output)
    })
    .await
    .ok();
    assert_eq!(out.as_deref(), Some("hello envy /tmp hello\n"));

    let inspect = rt.client().inspect_container(app, None).await.unwrap();
    let config = inspect.config.unwrap();
    assert_eq!(config.entrypoint, Some(args(&["sh", "-c"])));
    assert_eq!(config.working_dir.as_deref(), Some("/tmp"));
    assert!(config.env.unwrap().contains(&"GREETING=hello".to_string()));
}

#[tokio::test]
async fn limits_and_security_context_show_in_docker_inspect() {
    let rt = runtime().await;
    let scope = TestScope::new("limits");
    let pod = scope.pod(
        "limited",
        serde_json::json!({
            "containers": [{
                "name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"],
                "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
                "securityContext": {"runAsUser": 1234, "runAsGroup": 5678,
                                    "readOnlyRootFilesystem": true}
            }]
        }),
    );
    let (_, ids) = start(&rt, &scope, &pod, &["app"]).await;
    let app = &ids[0];
    let inspect = rt.client().inspect_container(app, None).await.unwrap();
    let host = inspect.host_config.unwrap();
    assert_eq!(host.memory, Some(64 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(250_000_000));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(
        host.network_mode
            .as_deref()
            .map(|m| m.starts_with("container:")),
        Some(true)
    );
    let id = rt.exec(app, &args(&["id"])).await.unwrap();
    assert!(
        id.output.contains("uid=1234") && id.output.contains("gid=5678"),
        "{id:?}"
    );
    let write = rt.exec(app, &args(&["touch", "/x"])).await.unwrap();
    assert_ne!(write.exit_code, 0, "the root filesystem is read-only");
}

#[tokio::test]
async fn stop_sends_sigterm_and_kills_after_the_grace_period() {
    let rt = runtime().await;
    let scope = TestScope::new("grace");
    let pod = scope.pod(
        "stopping",
        serde_json::json!({
            "containers": [
                {"name": "polite", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": sh("trap 'exit 0' TERM; while true; do sleep 1; done")},
                {"name": "stubborn", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]}
            ]
        }),
    );
    let plan = scope.plan(&pod);
    let (_, ids) = start(&rt, &scope, &pod, &["polite", "stubborn"]).await;
    let (polite, stubborn) = (&ids[0], &ids[1]);

    let t0 = Instant::now();
    rt.stop_container(polite, Duration::from_secs(20))
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "SIGTERM ends a polite container at once"
    );
    let info = rt.inspect_container(polite).await.unwrap().unwrap();
    assert!(
        matches!(info.state, ContainerState::Exited { exit_code: 0, .. }),
        "{info:?}"
    );

    // `sleep` as PID 1 ignores SIGTERM: only SIGKILL after the grace period ends it.
    let t0 = Instant::now();
    rt.stop_container(stubborn, Duration::from_secs(2))
        .await
        .unwrap();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_secs(2) && waited < Duration::from_secs(15),
        "{waited:?}"
    );
    let info = rt.inspect_container(stubborn).await.unwrap().unwrap();
    assert!(
        matches!(info.state, ContainerState::Exited { exit_code: 137, .. }),
        "{info:?}"
    );

    stop_pod(&rt, &plan.identity.uid, Duration::ZERO)
        .await
        .unwrap();
    let found = pod_containers(&rt, &plan.identity.uid).await.unwrap();
    let sandbox = found
        .iter()
        .find(|c| c.labels.get(labels::ROLE).map(String::as_str) == Some("sandbox"))
        .expect("the sandbox stays until the pod is removed");
    assert!(matches!(sandbox.state, ContainerState::Exited { .. }));
}

#[tokio::test]
async fn labels_carry_the_spec_hash_and_listing_finds_the_pod_for_adoption() {
    let rt = runtime().await;
    let scope = TestScope::new("labels");
    let pod = scope.pod(
        "adopt",
        serde_json::json!({
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }),
    );
    let plan = scope.plan(&pod);
    let (_, ids) = start(&rt, &scope, &pod, &["app"]).await;

    let found = pod_containers(&rt, &plan.identity.uid).await.unwrap();
    assert_eq!(
        found.len(),
        2,
        "listing by pod uid finds the sandbox and the app"
    );
    let role = |c: &&berth::daemons::agent::runtime::ContainerInfo| {
        c.labels.get(labels::ROLE).cloned().unwrap_or_default()
    };
    let mut roles: Vec<String> = found.iter().map(|c| role(&c)).collect();
    roles.sort();
    assert_eq!(roles, ["app", "sandbox"]);

    let app = found.iter().find(|c| c.id == ids[0]).unwrap();
    assert!(matches!(app.state, ContainerState::Running));
    let label = |k: &str| app.labels.get(k).map(String::as_str);
    assert_eq!(
        label(labels::SPEC_HASH),
        Some(plan.containers[0].spec_hash.as_str())
    );
    assert_eq!(label(labels::POD_NAME), Some("adopt"));
    assert_eq!(label(labels::POD_NAMESPACE), Some("default"));
    assert_eq!(label(labels::CONTAINER_NAME), Some("app"));
    assert_eq!(label(labels::NODE), Some("test-node"));
    assert_eq!(label(labels::ROLE), Some("app"));

    // A second plan of the same pod (as after an agent restart) hashes the same.
    assert_eq!(
        scope.plan(&pod).containers[0].spec_hash,
        plan.containers[0].spec_hash
    );
}

#[tokio::test]
async fn pull_policy_never_reports_err_image_never_pull() {
    let rt = runtime().await;
    let scope = TestScope::new("never");
    let pod = scope.pod(
        "missing",
        serde_json::json!({
            "containers": [{"name": "app", "image": "berth-test/absent:0",
                            "imagePullPolicy": "Never"}]
        }),
    );
    let status = PodAgent::new(&rt, &scope.context(), &pod).start().await;
    assert_eq!(
        waiting_reason(&status, "app").as_deref(),
        Some("ErrImageNeverPull"),
        "{status:?}"
    );
    // Present images are used as they are.
    let id = rt
        .ensure_image(TEST_IMAGE, PullPolicy::IfNotPresent)
        .await
        .unwrap();
    assert!(id.starts_with("sha256:"));
}

#[tokio::test]
async fn claim_volumes_outlive_the_pod_and_memory_empty_dirs_are_tmpfs() {
    let rt = runtime().await;
    let scope = TestScope::new("claims");
    let spec = serde_json::json!({
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": format!("c-{}", scope.id)}},
            {"name": "fast", "emptyDir": {"medium": "Memory"}}
        ],
        "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                        "command": sh("echo kept >> /data/file; exec sleep 3600"),
                        "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                         {"name": "fast", "mountPath": "/fast"}]}]
    });
    let one = scope.pod("one", spec.clone());
    let first = scope.plan(&one);
    let (_, ids) = start(&rt, &scope, &one, &["app"]).await;
    let app = &ids[0];
    let mounts = rt.exec(app, &args(&["cat", "/proc/mounts"])).await.unwrap();
    assert!(
        mounts.output.lines().any(|l| l.starts_with("tmpfs /fast ")),
        "{}",
        mounts.output
    );
    remove_pod(&rt, &first.identity, Duration::ZERO)
        .await
        .unwrap();

    // A new pod on the same claim sees what the first one wrote.
    let two = scope.pod("two", spec);
    let (_, ids) = start(&rt, &scope, &two, &["app"]).await;
    let app = &ids[0];
    let data = poll(Duration::from_secs(10), || async {
        let out = rt.exec(app, &args(&["cat", "/data/file"])).await.ok()?;
        (out.output.lines().count() == 2).then_some(out.output)
    })
    .await
    .ok();
    assert_eq!(data.as_deref(), Some("kept\nkept\n"));
}

#[tokio::test]
async fn engine_events_report_a_container_killed_behind_our_back() {
    let rt = runtime().await;
    let scope = TestScope::new("events");
    let pod = scope.pod(
        "watched",
        serde_json::json!({
            "containers": [{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "3600"]}]
        }),
    );
    let plan = scope.plan(&pod);
    let (_, ids) = start(&rt, &scope, &pod, &["app"]).await;
    let app = ids[0].clone();
    let mut events = rt.events(&[(labels::POD_UID, plan.identity.uid.as_str())]);
    // No pause: the stream starts at the `events` call even though it is polled later.
    let status = std::process::Command::new("docker")
        .args(["kill", &app])
        .output()
        .unwrap();
    assert!(status.status.success());
    let die = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            if event.container_id == app && event.action == "die" {
                return Some(event);
            }
        }
        None
    })
    .await
    .expect("a die event within 10 s")
    .expect("the stream stays open");
    assert_eq!(
        die.labels.get(labels::CONTAINER_NAME).map(String::as_str),
        Some("app")
    );
}

#[tokio::test]
async fn host_ports_are_published_on_the_sandbox() {
    let rt = runtime().await;
    let scope = TestScope::new("hostport");
    let port = support::docker::free_port();
    let pod = scope.pod(
        "published",
        serde_json::json!({
            "containers": [{"name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": sh("mkdir -p /www && echo published > /www/index.html && exec httpd -f -p 8080 -h /www"),
                "ports": [{"containerPort": 8080, "hostPort": port}]}]
        }),
    );
    start(&rt, &scope, &pod, &["web"]).await;
    let body = poll(Duration::from_secs(10), || async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        stream
            .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .ok()?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await.ok()?;
        response.contains("published").then_some(response)
    })
    .await
    .ok();
    assert!(body.is_some(), "the host port reaches the pod's container");
}
