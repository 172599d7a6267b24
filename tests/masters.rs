//! Several masters on one etcd (feature `etcd`): a clear error when etcd is unreachable,
//! one identity shared by every master, one leader for the controllers that hands over
//! when killed and acts no more when paused, etcd quorum loss answered with 5xx while
//! reads go on, with nothing acknowledged lost, addresses unique across masters, every master
//! in the `kubernetes` Endpoints, and an agent that moves to a live master without touching its
//! pods. Each test starts 3 etcd members and its masters on loopback ports
//! (tests/support/masters.rs) and kills them when it ends.

pub mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::api::{Http, Server, stderr};
use support::masters::{Masters, PREFIX, leadership};
use support::{eventually, poll_every};

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";

async fn start(n: usize) -> Masters {
    tokio::task::spawn_blocking(move || Masters::start(n))
        .await
        .expect("start the masters")
}

/// Runs `berth server` with `args` to its end (it must end within 30 s): exit code, stderr.
fn server_run(args: &[&str]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn berth server");
    let ended = support::poll_blocking(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if ended.is_err() {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("berth server's output");
    assert!(
        ended.is_ok(),
        "berth server {args:?} did not end within 30 s"
    );
    (output.status.code(), stderr(&output))
}

/// The one `error:` line of a failed start.
fn error_line(text: &str) -> String {
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "one error line expected in:\n{text}");
    errors[0].to_string()
}

fn deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
            },
        },
    })
}

/// The pods and ReplicaSets of the `web` Deployment (pods being deleted not counted).
async fn web(http: &Http) -> (usize, usize) {
    let count = |list: Value| {
        list["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|o| o["metadata"]["deletionTimestamp"].is_null())
                    .count()
            })
            .unwrap_or(0)
    };
    let pods = http
        .get("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")
        .await;
    let sets = http
        .get("/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dweb")
        .await;
    (count(pods), count(sets))
}

async fn scale(http: &Http, replicas: u32) {
    http.patch(
        &format!("{DEPLOYMENTS}/web"),
        json!({"spec": {"replicas": replicas}}),
    )
    .await;
}

async fn converged(http: &Http, pods: usize) {
    eventually(
        &format!("the Deployment has {pods} pods of one ReplicaSet"),
        Duration::from_secs(40),
        || async move {
            let seen = web(http).await;
            if seen == (pods, 1) { Ok(()) } else { Err(seen) }
        },
    )
    .await;
}

fn holder(server: &Server) -> String {
    server.kubectl_ok(&[
        "get",
        "lease",
        "-n",
        "kube-system",
        "berth-controllers",
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ])
}

#[test]
fn an_unreachable_etcd_fails_the_start_with_one_line() {
    let started = Instant::now();
    let (code, text) = server_run(&["--etcd-endpoints", "http://127.0.0.1:9"]);
    assert_ne!(code, Some(0), "the server must not start: {text}");
    let line = error_line(&text);
    assert!(
        line.starts_with("error: cannot open the store: cannot reach etcd at http://127.0.0.1:9: "),
        "{line}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the failure took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masters_share_one_identity_and_one_of_them_leads() {
    let masters = start(3).await;
    // The first master's kubeconfig (its CA, its admin token) works against every master.
    for other in &masters.servers[1..] {
        let out = masters.servers[0].kubectl_ok(&[
            "--server",
            &other.url,
            "get",
            "namespace",
            "kube-system",
            "-o",
            "name",
        ]);
        assert_eq!(out.trim(), "namespace/kube-system");
    }
    eventually("exactly one master leads", Duration::from_secs(30), || {
        masters.leader(&[])
    })
    .await;
    assert!(!holder(&masters.servers[2]).is_empty());

    // A master with a wrong token does not join (nor start a cluster of its own).
    let endpoints = masters.etcd.endpoints().join(",");
    let (code, text) = server_run(&[
        "--etcd-endpoints",
        &endpoints,
        "--etcd-prefix",
        PREFIX,
        "--token",
        "berth-admin.not-the-token-of-this-cluster",
    ]);
    assert_ne!(code, Some(0), "{text}");
    assert!(
        error_line(&text).contains("the token does not open the cluster identity"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_hands_over_within_17_seconds_and_a_scaled_deployment_converges() {
    let mut masters = start(3).await;
    let leader = eventually("one master leads", Duration::from_secs(30), || {
        masters.leader(&[])
    })
    .await;
    let survivor = (leader + 1) % 3;
    let http = masters.servers[survivor].http();
    http.create(DEPLOYMENTS, deployment(2)).await;
    converged(&http, 2).await;
    let before = holder(&masters.servers[survivor]);

    let killed = Instant::now();
    masters.servers[leader].kill();
    let skip = [leader];
    let next = eventually(
        "another master takes the lease",
        Duration::from_secs(30),
        || masters.leader(&skip),
    )
    .await;
    let took = killed.elapsed();
    eprintln!("failover: master {next} leads {took:?} after the leader was killed");
    assert!(
        took <= Duration::from_secs(17),
        "the lease passed after {took:?}"
    );
    assert_ne!(holder(&masters.servers[survivor]), before);

    scale(&http, 4).await;
    converged(&http, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_writes_nothing_when_it_resumes_and_follows() {
    let masters = start(3).await;
    let leader = eventually("one master leads", Duration::from_secs(30), || {
        masters.leader(&[])
    })
    .await;
    let other = (leader + 1) % 3;
    let http = masters.servers[other].http();
    http.create(DEPLOYMENTS, deployment(3)).await;
    converged(&http, 3).await;

    masters.servers[leader].signal("STOP");
    let paused = Instant::now();
    let skip = [leader];
    eventually(
        "another master takes the lease",
        Duration::from_secs(30),
        || masters.leader(&skip),
    )
    .await;
    // The paused leader's caches still hold 3 replicas: were it to act on them when it
    // resumes, it would recreate the pods scaled away meanwhile.
    scale(&http, 1).await;
    converged(&http, 1).await;
    tokio::time::sleep_until((paused + Duration::from_secs(30)).into()).await;
    masters.servers[leader].signal("CONT");

    eventually(
        "the resumed master follows",
        Duration::from_secs(20),
        || async { leadership(&masters.servers[leader]).await == Some(0) },
    )
    .await;
    // For a while after it resumed, nothing is ever doubled.
    let doubled = poll_every(
        Duration::from_millis(200),
        Duration::from_secs(10),
        || async {
            let seen = web(&http).await;
            if seen != (1, 1) { Some(seen) } else { None }
        },
    )
    .await;
    assert!(
        doubled.is_err(),
        "after the resume: {doubled:?} (pods, ReplicaSets)"
    );
    eventually("exactly one master leads", Duration::from_secs(20), || {
        masters.leader(&[])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_etcd_quorum_refuses_writes_with_5xx_keeps_reads_and_loses_nothing() {
    let mut masters = start(1).await;
    let http = masters.servers[0].http();
    let path = "/api/v1/namespaces/default/configmaps";
    let mut acked = Vec::new();
    let create = |n: usize| {
        let http = http.clone();
        async move {
            let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": format!("cm-{n}")}, "data": {"n": n.to_string()}});
            let started = Instant::now();
            let send = http.send(reqwest::Method::POST, path, "application/json", Some(&body));
            let (code, status) = tokio::time::timeout(Duration::from_secs(20), send)
                .await
                .unwrap_or_else(|_| panic!("creating cm-{n} hung for 20 s"));
            (code, status, started.elapsed())
        }
    };
    for n in 0..5 {
        let (code, status, _) = create(n).await;
        assert_eq!(code, 201, "{status}");
        acked.push(n);
    }

    // One member of three gone: writes go on.
    masters.etcd.kill(0);
    for n in 5..10 {
        let (code, status, _) = eventually(
            "a write with one etcd member down",
            Duration::from_secs(15),
            || async { accept_created(create(n).await) },
        )
        .await;
        assert_eq!(code, 201, "{status}");
        acked.push(n);
    }

    // Two gone: no quorum. Writes fail with a Status 503 or 504, in bounded time; reads answer.
    masters.etcd.kill(1);
    let mut n = 10;
    let refused = eventually(
        "a write refused with 503 or 504",
        Duration::from_secs(30),
        || {
            n += 1;
            let attempt = create(n);
            async move {
                let (code, status, took) = attempt.await;
                match code {
                    503 | 504 => Ok((code, status, took)),
                    _ => Err((code, status)),
                }
            }
        },
    )
    .await;
    let (code, status, took) = refused;
    assert_eq!(status["kind"], "Status", "{status}");
    assert_eq!(
        status["reason"],
        if code == 503 {
            "ServiceUnavailable"
        } else {
            "Timeout"
        }
    );
    assert!(took < Duration::from_secs(15), "the refusal took {took:?}");
    let one = http.get(&format!("{path}/cm-0")).await;
    assert_eq!(one["data"]["n"], "0");
    http.get(path).await;

    // Members back: writes resume, and every acknowledged create is there.
    let masters = tokio::task::spawn_blocking(move || {
        masters.etcd.restart(0);
        masters.etcd.restart(1);
        masters
    })
    .await
    .expect("restart the members");
    let after = n + 1;
    eventually(
        "a write after quorum returned",
        Duration::from_secs(30),
        || async { accept_created(create(after).await) },
    )
    .await;
    acked.push(after);
    let list = http.get(path).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .collect();
    for n in acked {
        assert!(
            names.contains(&format!("cm-{n}").as_str()),
            "acknowledged cm-{n} is lost: {names:?}"
        );
    }
    drop(masters);
}

/// A create's answer as an `eventually` outcome: `Ok` when created.
fn accept_created(
    (code, status, took): (u16, Value, Duration),
) -> Result<(u16, Value, Duration), (u16, Value)> {
    if code == 201 {
        Ok((code, status, took))
    } else {
        Err((code, status))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_created_through_three_masters_never_share_an_address() {
    use futures::StreamExt;
    let masters = start(3).await;
    let https: Vec<Http> = masters.servers.iter().map(Server::http).collect();
    let n = 1_000;
    let path = "/api/v1/namespaces/default/services";
    futures::stream::iter(0..n)
        .map(|i| {
            let http = https[i % 3].clone();
            async move {
                let kind = if i % 2 == 0 { "NodePort" } else { "ClusterIP" };
                let body = json!({"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": format!("svc-{i}")},
                    "spec": {"type": kind, "selector": {"app": "x"}, "ports": [{"port": 80}]}});
                http.create(path, body).await;
            }
        })
        .buffer_unordered(24)
        .collect::<Vec<_>>()
        .await;
    let list = https[1].get(path).await;
    let items = list["items"].as_array().expect("items");
    assert_eq!(items.len(), n + 1, "every Service and `kubernetes`");
    let mut ips = std::collections::HashSet::new();
    let mut ports = std::collections::HashSet::new();
    let mut node_ports = 0;
    for service in items {
        let ip = service["spec"]["clusterIP"].as_str().expect("a ClusterIP");
        assert!(ips.insert(ip.to_string()), "ClusterIP {ip} given twice");
        for port in service["spec"]["ports"].as_array().expect("ports") {
            if let Some(p) = port["nodePort"].as_u64() {
                node_ports += 1;
                assert!(ports.insert(p), "NodePort {p} given twice");
            }
        }
    }
    assert_eq!(node_ports, n / 2);
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Creates `n` ConfigMaps 32 at a time, then lists them 30 times: creates/s, list p50, p99 (ms).
async fn create_and_list(server: &Server, n: usize) -> (f64, f64, f64) {
    use futures::StreamExt;
    let http = server.http();
    let path = "/api/v1/namespaces/default/configmaps";
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let http = http.clone();
            async move {
                let body = json!({"apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": format!("bench-{i}")}, "data": {"k": "v"}});
                http.create(path, body).await;
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let mut lists = Vec::new();
    for _ in 0..30 {
        let started = Instant::now();
        let list = http.get(path).await;
        lists.push(started.elapsed().as_secs_f64() * 1000.0);
        assert!(list["items"].as_array().expect("items").len() >= n);
    }
    lists.sort_by(f64::total_cmp);
    (rate, percentile(&lists, 0.5), percentile(&lists, 0.99))
}

/// Benchmark, not a timed test: one master on a 3-member etcd against one on SQLite (create
/// rate, list latency), and the leader failover time over 5 kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: cargo test --all-features --test masters -- --ignored --nocapture masters_benchmark"]
async fn masters_benchmark() {
    let n = 5_000;
    let sqlite = tokio::task::spawn_blocking(Server::start).await.unwrap();
    let (s_rate, s_p50, s_p99) = create_and_list(&sqlite, n).await;
    drop(sqlite);
    let on_etcd = start(1).await;
    let (e_rate, e_p50, e_p99) = create_and_list(&on_etcd.servers[0], n).await;
    drop(on_etcd);
    println!(
        "create {n} ConfigMaps: SQLite {s_rate:.0}/s, etcd {e_rate:.0}/s (etcd/SQLite {:.2})",
        e_rate / s_rate
    );
    println!(
        "list {n} ConfigMaps (30 runs): SQLite p50 {s_p50:.0} ms p99 {s_p99:.0} ms, etcd p50 {e_p50:.0} ms p99 {e_p99:.0} ms (p99 etcd/SQLite {:.2})",
        e_p99 / s_p99
    );

    let mut masters = start(3).await;
    let mut took = Vec::new();
    let mut gone = Vec::new();
    for _ in 0..5 {
        let leader = eventually("one master leads", Duration::from_secs(40), || {
            masters.leader(&gone)
        })
        .await;
        let killed = Instant::now();
        masters.servers[leader].kill();
        gone.push(leader);
        eventually("another master leads", Duration::from_secs(40), || {
            masters.leader(&gone)
        })
        .await;
        took.push(killed.elapsed().as_secs_f64());
        tokio::task::block_in_place(|| {
            masters.add(&[]);
        });
    }
    took.sort_by(f64::total_cmp);
    println!(
        "failover over 5 kills: {took:.1?} s, median {:.1} s",
        took[2]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotated_on_one_master_is_taken_by_every_running_master_without_a_restart() {
    use base64::Engine;
    let masters = start(2).await;
    let (a, b) = (masters.servers[0].http(), masters.servers[1].http());
    const SECRETS: &str = "/api/v1/namespaces/default/secrets";
    let secret = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
            "stringData": {"password": format!("{name}-s3cr3t")}})
    };
    let password = |object: &Value| {
        let encoded = object["data"]["password"].as_str().unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    };
    a.create(SECRETS, secret("before")).await;
    let written = b.get(&format!("{SECRETS}/before")).await;
    let version = written["metadata"]["resourceVersion"].clone();

    let mut args: Vec<String> = vec!["--rotate-encryption-key".into()];
    args.extend(masters.etcd_args());
    args.extend(["--token".into(), masters.servers[0].admin_token.clone()]);
    let output = tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().expect("temp dir");
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["server", "--data-dir"])
            .arg(dir.path())
            .args(&args)
            .output()
            .expect("run the rotation")
    })
    .await
    .expect("the rotation ran");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(output.status.success(), "{stdout}{}", stderr(&output));
    assert!(
        stdout.contains("rotated the encryption key to key2; re-encrypted"),
        "{stdout}"
    );

    // Both running masters seal with the new key, as their Leases say.
    let leases = a
        .get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases?labelSelector=apiserver.kubernetes.io%2Fidentity%3Dkube-apiserver")
        .await;
    let current: Vec<&str> = leases["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            l["metadata"]["annotations"]["berth.dev/encryption-key-current"]
                .as_str()
                .unwrap_or("")
        })
        .collect();
    assert_eq!(current, ["key2", "key2"]);
    // The re-encrypted Secret is a new revision, which each master opened with the new key.
    for http in [&a, &b] {
        let read = http.get(&format!("{SECRETS}/before")).await;
        assert_ne!(
            read["metadata"]["resourceVersion"], version,
            "not re-encrypted"
        );
        assert_eq!(password(&read), "before-s3cr3t");
    }
    // A Secret written through one master after the rotation is read through the other.
    b.create(SECRETS, secret("after")).await;
    assert_eq!(
        password(&a.get(&format!("{SECRETS}/after")).await),
        "after-s3cr3t"
    );
}

/// The `IP:port` of every master in the `default/kubernetes` Endpoints, sorted.
async fn in_endpoints(http: &Http) -> Vec<String> {
    let endpoints = http
        .get("/api/v1/namespaces/default/endpoints/kubernetes")
        .await;
    let mut addresses = Vec::new();
    for subset in endpoints["subsets"].as_array().into_iter().flatten() {
        let port = &subset["ports"][0]["port"];
        for address in subset["addresses"].as_array().into_iter().flatten() {
            addresses.push(format!("{}:{port}", address["ip"].as_str().unwrap_or("?")));
        }
    }
    addresses.sort();
    addresses
}

/// The `IP:port` of the masters in `servers`, but `skip`, sorted.
fn addresses(masters: &Masters, skip: &[usize]) -> Vec<String> {
    let mut addresses: Vec<String> = masters
        .servers
        .iter()
        .enumerate()
        .filter(|(i, _)| !skip.contains(i))
        .map(|(_, s)| {
            s.url
                .trim_start_matches("https://")
                .trim_end_matches('/')
                .to_string()
        })
        .collect();
    addresses.sort();
    addresses
}

/// Waits until the `default/kubernetes` Endpoints name exactly `want`.
async fn endpoints_become(http: &Http, want: &[String], what: &str, timeout: Duration) {
    eventually(what, timeout, || async {
        let seen = in_endpoints(http).await;
        if seen == want { Ok(()) } else { Err(seen) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_master_is_in_the_kubernetes_endpoints_and_a_lost_one_leaves_within_the_lease_time() {
    let mut masters = start(3).await;
    let http = masters.servers[0].http();
    let all = addresses(&masters, &[]);
    let name_all = "the kubernetes Endpoints name all three masters";
    endpoints_become(&http, &all, name_all, Duration::from_secs(20)).await;

    // A master that shuts down leaves at once.
    masters.servers[2].stop();
    let two = addresses(&masters, &[2]);
    let stopped = "a stopped master leaves the Endpoints";
    endpoints_become(&http, &two, stopped, Duration::from_secs(3)).await;

    // A killed one stays until its lease (15 s) runs out, then leaves.
    let killed = Instant::now();
    masters.servers[1].kill();
    let one = addresses(&masters, &[1, 2]);
    let left = "a killed master leaves the Endpoints";
    endpoints_become(&http, &one, left, Duration::from_secs(30)).await;
    let took = killed.elapsed();
    eprintln!("a killed master left the kubernetes Endpoints after {took:?}");
    assert!(
        (Duration::from_secs(12)..=Duration::from_secs(18)).contains(&took),
        "a killed master left after {took:?}, not after its 15 s lease"
    );
}

/// A gauge or counter of an agent's `/metrics`, with its labels (`name{…}`) if any.
fn metric(text: &str, name: &str) -> Option<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.parse().ok()?))
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_moves_to_a_live_master_when_the_leader_it_uses_is_killed_and_keeps_its_pods() {
    use support::cluster::{Agent, admin, container_id, create_pod, phase, wait_pod};
    use support::docker::{TEST_IMAGE, TestScope, runtime, sh};

    runtime().await;
    let scope = TestScope::new("masters-agent");
    let mut masters = start(3).await;
    let leader = eventually("one master leads", Duration::from_secs(30), || {
        masters.leader(&[])
    })
    .await;
    // The agent is told of one master only, the leader, and learns the others; a second
    // agent uses another master.
    let agent = Agent::start(&masters.servers[leader], "masters-node", &scope, &[]);
    let other = Agent::start(
        &masters.servers[(leader + 1) % 3],
        "masters-node-b",
        &scope,
        &[],
    );
    eventually(
        "the agent knows all three masters",
        Duration::from_secs(30),
        || async {
            let text = agent.metrics().await;
            match metric(&text, "berth_agent_api_servers") {
                Some((_, 3.0)) => Ok(()),
                seen => Err(seen),
            }
        },
    )
    .await;
    let in_use = metric(&agent.metrics().await, "berth_agent_api_server_in_use")
        .expect("the master in use")
        .0;
    let url = |key: &str| {
        key.split('"')
            .nth(1)
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string()
    };
    let lost = masters
        .servers
        .iter()
        .position(|s| s.url.trim_end_matches('/') == url(&in_use))
        .unwrap_or_else(|| panic!("{in_use} names none of the masters"));
    assert_eq!(lost, leader, "the agent uses the master it was told of");
    let survivor = (lost + 1) % 3;

    let client = admin(&masters.servers[survivor]).await;
    let sleeper = |name: &str| {
        json!({"metadata": {"name": name, "namespace": "default"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{"name": "app",
                "image": TEST_IMAGE, "imagePullPolicy": "Never", "command": sh("sleep 3600")}]}})
    };
    create_pod(&client, "masters-node", sleeper("steady")).await;
    let running = |p: &k8s_openapi::api::core::v1::Pod| phase(p) == "Running";
    let before = wait_pod(
        &client,
        "steady",
        Duration::from_secs(60),
        "Running",
        running,
    )
    .await;
    let container = container_id(&before, "app");

    masters.servers[lost].kill();
    let killed = Instant::now();
    // The node stays Ready and its lease keeps being renewed, through another master.
    let http = masters.servers[survivor].http();
    let lease_path = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/masters-node";
    let renewed_at = |lease: &Value| {
        lease["spec"]["renewTime"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let mut renewals = 0;
    let mut last = renewed_at(&http.get(lease_path).await);
    while killed.elapsed() < Duration::from_secs(20) {
        for name in ["masters-node", "masters-node-b"] {
            let node = http.get(&format!("/api/v1/nodes/{name}")).await;
            let ready = node["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].clone());
            assert_eq!(
                ready,
                Some(json!("True")),
                "node {name} after {:?}",
                killed.elapsed()
            );
        }
        let now = renewed_at(&http.get(lease_path).await);
        if now != last {
            renewals += 1;
            last = now;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        renewals >= 5,
        "the node lease was renewed {renewals} times in the 20 s after its master was killed"
    );
    let text = agent.metrics().await;
    let (now_in_use, _) = metric(&text, "berth_agent_api_server_in_use").expect("in use");
    assert_ne!(
        url(&now_in_use),
        url(&in_use),
        "the agent still uses the killed master"
    );
    assert!(
        metric(&text, "berth_agent_api_server_switches_total").is_some_and(|(_, n)| n >= 1.0),
        "{text}"
    );

    // The pod kept running, untouched, and the agent still takes on new pods.
    let after = wait_pod(
        &client,
        "steady",
        Duration::from_secs(5),
        "Running",
        running,
    )
    .await;
    assert_eq!(container_id(&after, "app"), container);
    assert_eq!(after.metadata.uid, before.metadata.uid);
    let restarts = after
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|c| c[0].restart_count);
    assert_eq!(restarts, Some(0));
    create_pod(&client, "masters-node", sleeper("after")).await;
    wait_pod(
        &client,
        "after",
        Duration::from_secs(60),
        "Running",
        running,
    )
    .await;
    // Another master leads now.
    let gone = [lost];
    eventually("another master leads", Duration::from_secs(20), || {
        masters.leader(&gone)
    })
    .await;
    // The agents, then the masters, then the pods' containers (by the scope's label) go.
    drop(agent);
    drop(other);
}

#[test]
fn the_linearizability_check_rejects_a_stale_read_and_accepts_a_lost_answer() {
    use support::linearizable::{Entry, Op, linearizable};
    let base = Instant::now();
    let at = |ms: u64| base + Duration::from_millis(ms);
    let cas = |client, call, ret: Option<u64>, from: &str, to: &str, applied| Entry {
        client,
        call: at(call),
        ret: ret.map(at),
        op: Op::Cas {
            from: from.into(),
            to: to.into(),
            applied,
        },
    };
    let read = |client, call, ret, value: &str| Entry {
        client,
        call: at(call),
        ret: Some(at(ret)),
        op: Op::Read(Some(value.into())),
    };
    // Two overlapping swaps from 0: one wins, the other conflicts; reads after see the winner.
    let raced = vec![
        cas(0, 0, Some(10), "0", "a", Some(true)),
        cas(1, 1, Some(9), "0", "b", Some(false)),
        read(2, 11, 12, "a"),
    ];
    assert!(linearizable("0", &raced));
    // A read after the swap returned that still sees the old value.
    let mut stale = raced.clone();
    stale.push(read(1, 13, 14, "0"));
    assert!(!linearizable("0", &stale));
    // The conflicting swap cannot have been the one applied.
    let mut wrong = raced[..2].to_vec();
    wrong.push(read(2, 11, 12, "b"));
    assert!(!linearizable("0", &wrong));
    // A swap whose answer was lost may have happened (a later read sees it) or not.
    let lost = vec![cas(0, 0, None, "0", "c", None), read(1, 5, 6, "c")];
    assert!(linearizable("0", &lost));
    let not_applied = vec![cas(0, 0, None, "0", "c", None), read(1, 5, 6, "0")];
    assert!(linearizable("0", &not_applied));
    // But not both, in that order.
    let flip = vec![
        cas(0, 0, None, "0", "c", None),
        read(1, 5, 6, "c"),
        read(1, 7, 8, "0"),
    ];
    assert!(!linearizable("0", &flip));
}

/// One client of the register: reads, then swaps from what it read, for `run` long, sending
/// to `masters[client]` and moving to the next master when one does not answer.
async fn register_client(
    client: usize,
    masters: Vec<Http>,
    run: Duration,
    started: Instant,
) -> Vec<support::linearizable::Entry> {
    use support::linearizable::{Entry, Op};
    const REGISTER: &str = "/api/v1/namespaces/default/configmaps/register";
    let mut history = Vec::new();
    let mut m = client % masters.len();
    let mut n = 0;
    while started.elapsed() < run {
        let http = &masters[m];
        let call = Instant::now();
        let answer = http
            .client
            .get(format!("{}{REGISTER}", http.url))
            .bearer_auth(&http.token)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let object: Value = match answer {
            Ok(r) if r.status() == 200 => r.json().await.expect("a ConfigMap"),
            // No answer, or a 5xx: a read that tells nothing; try the next master.
            _ => {
                m = (m + 1) % masters.len();
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let value = object["data"]["value"]
            .as_str()
            .expect("a value")
            .to_string();
        history.push(Entry {
            client,
            call,
            ret: Some(Instant::now()),
            op: Op::Read(Some(value.clone())),
        });
        n += 1;
        let to = format!("c{client}-{n}");
        let mut swapped = object.clone();
        swapped["data"]["value"] = json!(to);
        let call = Instant::now();
        let answer = http
            .client
            .put(format!("{}{REGISTER}", http.url))
            .bearer_auth(&http.token)
            .json(&swapped)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let (ret, applied) = match answer.as_ref().map(|r| r.status().as_u16()) {
            Ok(200) => (Some(Instant::now()), Some(true)),
            Ok(409) => (Some(Instant::now()), Some(false)),
            // A 5xx or no answer: the swap may or may not have happened.
            Ok(code) if code >= 500 => (None, None),
            Err(_) => (None, None),
            Ok(code) => panic!("PUT {REGISTER}: {code}"),
        };
        if applied.is_none() {
            m = (m + 1) % masters.len();
        }
        history.push(Entry {
            client,
            call,
            ret,
            op: Op::Cas {
                from: value,
                to,
                applied,
            },
        });
        // A pause keeps the history a size the check reads in seconds.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    history
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_through_three_masters_is_linearizable_while_leaders_are_killed() {
    let mut masters = start(3).await;
    masters.servers[0]
        .http()
        .create(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "register"}, "data": {"value": "0"}}),
        )
        .await;
    let https: Vec<Http> = masters.servers.iter().map(Server::http).collect();
    // Long enough for two kills: the second waits for the first one's successor (≤ 17 s).
    let run = Duration::from_secs(26);
    let started = Instant::now();
    let clients: Vec<_> = (0..3)
        .map(|c| tokio::spawn(register_client(c, https.clone(), run, started)))
        .collect();
    // Two leaders killed while the clients run.
    let mut killed = Vec::new();
    for at in [Duration::from_secs(4), Duration::from_secs(10)] {
        tokio::time::sleep(at.saturating_sub(started.elapsed())).await;
        let leader = eventually("one master leads", Duration::from_secs(20), || {
            masters.leader(&killed)
        })
        .await;
        masters.servers[leader].kill();
        killed.push(leader);
        eprintln!(
            "killed the leader, master {leader}, at {:?}",
            started.elapsed()
        );
    }
    assert!(
        started.elapsed() < run,
        "the second leader was killed after the clients stopped"
    );
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await.expect("a client"));
    }
    let swaps = |applied: Option<bool>| {
        history
            .iter()
            .filter(|e| matches!(&e.op, support::linearizable::Op::Cas { applied: a, .. } if *a == applied))
            .count()
    };
    let (won, lost, unknown) = (swaps(Some(true)), swaps(Some(false)), swaps(None));
    eprintln!(
        "{} operations: {won} swaps applied, {lost} conflicts, {unknown} unknown",
        history.len()
    );
    assert!(
        won >= 30 && lost >= 5,
        "too little contention to judge: {won} applied, {lost} conflicts"
    );
    let checked = Instant::now();
    assert!(
        support::linearizable::linearizable("0", &history),
        "not linearizable:\n{history:#?}"
    );
    eprintln!("checked in {:?}", checked.elapsed());
}
