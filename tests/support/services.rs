//! Helpers for Service tests on real agents: busybox `httpd` pods that serve their own
//! hostname, a client pod, and fetching through it. busybox's `wget -T` crashes in the
//! static Debian build, so fetches are bounded with `timeout` instead.

use std::process::Command;

use k8s_openapi::api::core::v1::Pod;

use super::docker::{TEST_IMAGE, sh};

/// The port `httpd` pods listen on.
pub const HTTP_PORT: u16 = 8080;

/// A pod spec running `httpd` on [`HTTP_PORT`] serving the pod's hostname; it is ready
/// while `/tmp/ready` exists (checked every second, one failure is enough).
pub fn httpd_spec() -> serde_json::Value {
    serde_json::json!({
        "terminationGracePeriodSeconds": 2,
        "containers": [{
            "name": "httpd", "image": TEST_IMAGE, "imagePullPolicy": "Never",
            "command": sh(&format!(
                "mkdir -p /www && hostname > /www/index.html && touch /tmp/ready && exec httpd -f -p {HTTP_PORT} -h /www"
            )),
            "ports": [{"name": "http", "containerPort": HTTP_PORT}],
            "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]},
                               "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1}
        }]
    })
}

/// A pod spec that only sleeps: the client.
pub fn client_spec() -> serde_json::Value {
    serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "client", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                        "command": sh("sleep 3600")}]
    })
}

/// `docker exec` with a shell script; stdout, stderr and success.
pub fn exec_in(container: &str, script: &str) -> (String, String, bool) {
    let out = Command::new("docker")
        .args(["exec", container, "sh", "-c", script])
        .output()
        .expect("docker CLI");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

/// Fetches `url` `n` times from inside `container`; one body (or `FAIL`) per line.
pub fn fetch_many(container: &str, url: &str, n: usize) -> Vec<String> {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do i=$((i+1)); \
         out=$(timeout 3 wget -qO- {url} 2>/dev/null) && echo \"$out\" || echo FAIL; done"
    );
    let (stdout, stderr, ok) = exec_in(container, &script);
    assert!(ok, "fetch loop failed: {stderr}");
    stdout.lines().map(|l| l.trim().to_string()).collect()
}

/// The pod's IP from its status.
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("a pod IP in the status")
}

/// Fails the test when a tool it needs is missing.
pub fn require(tool: &str, arg: &str) {
    let ok = Command::new(tool)
        .arg(arg)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "this test needs `{tool}` (Debian: apt-get install nftables iproute2 iptables)"
    );
}

/// The first non-loopback IPv4 address of this host.
pub fn host_address() -> String {
    let out = Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|a| {
            a.parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| !ip.is_loopback())
        })
        .expect("a non-loopback IPv4 address on this host")
        .to_string()
}

/// The nftables table of the agent of `node` (its comment names the node).
pub fn table_of_node(node: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .expect("nft");
    let tables = String::from_utf8_lossy(&out.stdout).into_owned();
    tables
        .lines()
        .filter_map(|l| l.strip_prefix("table ip "))
        .find(|t| t.starts_with("berth_") && nft_table(t).contains(&format!("node={node} ")))
        .unwrap_or_else(|| panic!("no nftables table for node {node}"))
        .to_string()
}

/// `nft list table ip NAME`.
pub fn nft_table(name: &str) -> String {
    let out = Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The lines of chain `name` in a listed table.
fn chain<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    let head = format!("chain {name} {{");
    table
        .lines()
        .skip_while(|l| l.trim() != head)
        .skip(1)
        .take_while(|l| l.trim() != "}")
        .collect()
}

/// Where a listed table's rules send `daddr:port` (a ClusterIP, a load balancer's address):
/// the `ip:port` of every endpoint chain the address's rule leads to, sorted.
pub fn nft_backends(table: &str, daddr: &str, port: u16) -> Vec<String> {
    let rule = format!("ip daddr {daddr} tcp dport {port} ");
    let Some(service_chain) = table
        .lines()
        .find(|l| l.contains(&rule) && l.contains("goto svc_"))
        .and_then(|l| l.split_whitespace().skip_while(|w| *w != "goto").nth(1))
    else {
        return Vec::new();
    };
    let mut backends: Vec<String> = chain(table, service_chain)
        .iter()
        .flat_map(|l| l.split(|c: char| !(c.is_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("ep_"))
        .flat_map(|ep| chain(table, ep))
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "dnat")?;
            words[at..]
                .iter()
                .skip_while(|w| **w != "to")
                .nth(1)
                .map(|t| t.to_string())
        })
        .collect();
    backends.sort();
    backends.dedup();
    backends
}
