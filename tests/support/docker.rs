//! Shared helpers for tests against the real Docker engine: the offline busybox test image,
//! a per-test label scope whose Drop removes every container and volume the test made
//! (also when it fails), and pod builders.

use std::collections::BTreeMap;
use std::process::Command;

use berth::daemons::agent::DockerRuntime;
use berth::daemons::agent::pod::env::{PodFields, StaticObjects};
use berth::daemons::agent::pod::podspec::{AgentPolicy, PodContext, PodPlan, plan_pod};
use berth::daemons::agent::runtime::sandbox;
use k8s_openapi::api::core::v1::Pod;

/// The busybox image tests run, built from Debian's static busybox with no registry.
pub const TEST_IMAGE: &str = "berth-test/busybox:1.36";

/// The label every object made by a test carries.
pub const TEST_LABEL: &str = "berth.dev/test";

const TEST_DOCKERFILE: &str = "FROM scratch\n\
    COPY busybox /bin/busybox\n\
    RUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n\
    RUN [\"/bin/busybox\", \"mkdir\", \"-m\", \"1777\", \"/tmp\"]\n\
    CMD [\"/bin/sh\"]\n";

/// A loopback TCP port free when asked (for host ports the test publishes).
pub fn free_port() -> u16 {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    free.local_addr().unwrap().port()
}

/// Connects to the engine and builds the test image when it is missing.
pub async fn runtime() -> DockerRuntime {
    let runtime = DockerRuntime::connect()
        .await
        .expect("a Docker engine must be reachable (DOCKER_HOST or the local socket)");
    static BUILD: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _building = BUILD.lock().await;
    if runtime.image_id(TEST_IMAGE).await.unwrap().is_none() {
        let context = sandbox::busybox_context(TEST_DOCKERFILE, &sandbox::busybox_path())
            .expect("apt-get install busybox-static");
        runtime
            .build_image(TEST_IMAGE, context, &BTreeMap::new())
            .await
            .expect("build the busybox test image");
    }
    runtime
}

/// A test's label scope. Dropping it removes the test's containers and volumes.
pub struct TestScope {
    /// The unique value of [`TEST_LABEL`].
    pub id: String,
}

impl TestScope {
    /// A fresh scope named after the test.
    pub fn new(test: &str) -> TestScope {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        TestScope {
            id: format!("{test}-{}-{}", std::process::id(), nanos % 1_000_000_000),
        }
    }

    /// The pod context that labels everything with this scope.
    pub fn context(&self) -> PodContext {
        PodContext {
            fields: PodFields {
                node_name: "test-node".into(),
                ..Default::default()
            },
            extra_labels: BTreeMap::from([(TEST_LABEL.to_string(), self.id.clone())]),
        }
    }

    /// A pod named `name` with a uid unique to this scope.
    pub fn pod(&self, name: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{}-{name}", self.id)},
            "spec": spec
        }))
        .expect("a valid pod")
    }

    /// Plans `pod` with this scope's context and no ConfigMaps or Secrets.
    pub fn plan(&self, pod: &Pod) -> PodPlan {
        plan_pod(
            pod,
            &self.context(),
            &StaticObjects::default(),
            &AgentPolicy::default(),
        )
        .expect("a pod berth can run")
    }
}

fn docker_ids(args: &[&str]) -> Vec<String> {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Drop for TestScope {
    fn drop(&mut self) {
        // The docker CLI, not bollard: Drop may run while a panicking test's runtime unwinds.
        let filter = format!("label={TEST_LABEL}={}", self.id);
        let containers = docker_ids(&["ps", "-aq", "--filter", &filter]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f", "-v"])
                .args(&containers)
                .output();
        }
        let volumes = docker_ids(&["volume", "ls", "-q", "--filter", &filter]);
        if !volumes.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&volumes)
                .output();
        }
        remove_pod_networks(&self.id, &filter);
    }
}

/// Removes what agents labelled with the scope made for their pod networks: the Docker
/// networks, their pods' files under `/run/berth/`, the nftables tables (their comment holds the label) and the `DOCKER-USER`
/// rules (likewise).
fn remove_pod_networks(scope: &str, filter: &str) {
    for network in docker_ids(&["network", "ls", "-q", "--filter", filter]) {
        // The agent keeps its pods' hosts and resolv.conf in a directory named after the bridge.
        let bridge = Command::new("docker")
            .args([
                "network",
                "inspect",
                "-f",
                "{{index .Options \"com.docker.network.bridge.name\"}}",
                &network,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if !bridge.is_empty() && !bridge.contains('/') {
            let _ = std::fs::remove_dir_all(std::path::Path::new("/run/berth").join(&bridge));
        }
        let _ = Command::new("docker")
            .args(["network", "rm", &network])
            .output();
    }
    let mark = format!("{TEST_LABEL}={scope}");
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for name in tables
        .lines()
        .filter_map(|l| l.strip_prefix("table ip "))
        .filter(|n| n.starts_with("berth_"))
    {
        let listed = Command::new("nft")
            .args(["list", "table", "ip", name])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        if listed.contains(&mark) {
            let _ = Command::new("nft")
                .args(["delete", "table", "ip", name])
                .output();
        }
    }
    let rules = Command::new("iptables")
        .args(["-w", "-S", "DOCKER-USER"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    for rule in rules.lines().filter(|r| r.contains(&mark)) {
        let Some(spec) = rule.strip_prefix("-A DOCKER-USER ") else {
            continue;
        };
        // The comment is quoted by `iptables -S`; split it back into one argument.
        let mut args = vec!["-w".to_string(), "-D".into(), "DOCKER-USER".into()];
        let mut quoted: Option<String> = None;
        for word in spec.split(' ') {
            match &mut quoted {
                Some(q) => {
                    q.push(' ');
                    q.push_str(word.trim_end_matches('"'));
                    if word.ends_with('"') {
                        args.push(quoted.take().unwrap_or_default());
                    }
                }
                None if word.starts_with('"') && !(word.len() > 1 && word.ends_with('"')) => {
                    quoted = Some(word.trim_start_matches('"').to_string());
                }
                None => args.push(word.trim_matches('"').to_string()),
            }
        }
        let _ = Command::new("iptables").args(&args).output();
    }
}

/// `sh -c SCRIPT` as a container's command.
pub fn sh(script: &str) -> serde_json::Value {
    serde_json::json!(["sh", "-c", script])
}
