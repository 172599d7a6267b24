//! Pod logs and exec end to end: a real `berth server`, pod containers on the real Docker
//! engine started by the agent's pod worker, and the agent's log/exec endpoint in this test
//! process; `kubectl logs`, `kubectl exec`, `berth logs` and `berth exec` go through the
//! server's proxy to that endpoint. `--previous` is read after a real crash under a real
//! `berth agent`. Also: the errors a user sees when something is missing, and that a wrong
//! certificate fingerprint or a wrong token is refused.

pub mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use berth::cluster::agent_endpoint::AgentEndpoint;
use berth::cluster::api::agent_client;
use berth::daemons::agent::DockerRuntime;
use berth::daemons::agent::runtime::ContainerRuntime;
use berth::daemons::agent::serve::serve;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use support::api::{Server, stderr, stdout};
use support::cluster::{Agent, admin, create_pod, wait_pod};
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::worker::{PodAgent, container_id};
use support::{accept, eventually};

/// Runs blocking work (kubectl, the berth CLI) without stalling the endpoint's tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A server, an agent endpoint serving the test's containers, and the scope that removes
/// them. Dropping it stops the endpoint, the server and the containers.
struct Cluster {
    server: Server,
    scope: TestScope,
    runtime: Arc<DockerRuntime>,
    endpoint: AgentEndpoint,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// Starts an endpoint on a loopback port with `token`.
async fn endpoint(
    runtime: Arc<DockerRuntime>,
    token: &str,
) -> (AgentEndpoint, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (endpoint, serving) = serve(listener, "127.0.0.1", token.to_string(), runtime, async {
        let _ = stopped.await;
    })
    .await
    .expect("the endpoint starts");
    tokio::spawn(serving);
    (endpoint, stop)
}

impl Cluster {
    async fn start(test: &str) -> Cluster {
        let server = blocking(Server::start);
        let runtime = Arc::new(runtime().await);
        let (endpoint, stop) = endpoint(runtime.clone(), &server.agent_token).await;
        let cluster = Cluster {
            server,
            scope: TestScope::new(test),
            runtime,
            endpoint,
            _stop: stop,
        };
        cluster.node("test-node", Some(&cluster.endpoint));
        cluster
    }

    fn kubectl(&self, args: &[&str]) -> Output {
        blocking(|| self.server.kubectl(args))
    }

    fn create(&self, object: &Value) -> Value {
        let out = blocking(|| {
            self.server.kubectl_stdin(
                &["create", "-o", "json", "-f", "-"],
                Some(&object.to_string()),
            )
        });
        assert!(out.status.success(), "create failed: {}", stderr(&out));
        serde_json::from_slice(&out.stdout).expect("created object JSON")
    }

    /// A Node publishing `endpoint` (or nothing).
    fn node(&self, name: &str, endpoint: Option<&AgentEndpoint>) {
        let annotations = endpoint.map(AgentEndpoint::annotations).unwrap_or_default();
        self.create(&json!({"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "annotations": annotations}}));
    }

    /// Creates the pod in the API (bound to `node`); returns it with the uid the server
    /// gave it.
    fn pod(&self, name: &str, node: Option<&str>, containers: Value) -> Pod {
        let mut spec = json!({"containers": containers, "terminationGracePeriodSeconds": 0});
        if let Some(node) = node {
            spec["nodeName"] = node.into();
        }
        let created = self.create(&json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}));
        serde_json::from_value(created).expect("a pod")
    }

    /// Creates the pod and starts its containers on Docker with the agent's pod worker;
    /// returns the app containers' ids.
    async fn run(&self, name: &str, containers: Value) -> Vec<String> {
        let pod = self.pod(name, Some("test-node"), containers);
        let status = PodAgent::new(&self.runtime, &self.scope.context(), &pod)
            .start()
            .await;
        let names = pod.spec.iter().flat_map(|s| &s.containers);
        names
            .map(|c| container_id(&status, &c.name).expect("the container started"))
            .collect()
    }

    fn berth(&self, args: &[&str], input: Option<&str>) -> Output {
        blocking(|| {
            let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
                .arg(args[0])
                .arg("--kubeconfig")
                .arg(&self.server.kubeconfig)
                .args(&args[1..])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run berth");
            let mut stdin = child.stdin.take().expect("stdin");
            if let Some(input) = input {
                use std::io::Write;
                stdin.write_all(input.as_bytes()).expect("write stdin");
            }
            drop(stdin);
            child.wait_with_output().expect("berth output")
        })
    }

    /// A raw GET as the admin or agent; returns the code and the Status message.
    async fn get(&self, path: &str, token: &str) -> (u16, String) {
        let response = self
            .server
            .client()
            .get(format!("{}{path}", self.server.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("request");
        let code = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        (
            code,
            body["message"].as_str().unwrap_or_default().to_string(),
        )
    }
}

async fn wait_for_log(runtime: &DockerRuntime, id: &str, text: &str) {
    let what = format!("container {id} logging {text:?}");
    eventually(&what, Duration::from_secs(10), || async {
        let log = runtime.logs(id, None).await.map_err(|e| e.to_string())?;
        if log.contains(text) { Ok(()) } else { Err(log) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_berth_read_logs_with_tail_timestamps_and_follow() {
    let cluster = Cluster::start("logs").await;
    let ids = cluster
        .run(
            "chatty",
            json!([{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": sh("echo line-1; echo line-2; sleep 0.3; echo err-3 >&2; \
                               while [ ! -f /tmp/go ]; do sleep 0.1; done; \
                               echo after-follow; exec sleep 3600")}]),
        )
        .await;
    wait_for_log(&cluster.runtime, &ids[0], "err-3").await;

    let all = cluster.kubectl(&["logs", "chatty"]);
    assert!(all.status.success(), "{}", stderr(&all));
    assert_eq!(stdout(&all), "line-1\nline-2\nerr-3\n");

    let tail = cluster.kubectl(&["logs", "chatty", "--tail=1"]);
    assert_eq!(stdout(&tail), "err-3\n", "{}", stderr(&tail));
    let limited = cluster.kubectl(&["logs", "chatty", "--limit-bytes=9"]);
    assert_eq!(stdout(&limited), "line-1\nli", "{}", stderr(&limited));

    let berth = cluster.berth(&["logs", "chatty", "--tail", "2", "--timestamps"], None);
    assert!(berth.status.success(), "{}", stderr(&berth));
    let lines: Vec<String> = stdout(&berth).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    for (line, text) in lines.iter().zip(["line-2", "err-3"]) {
        let (stamp, rest) = line.split_once(' ').expect("timestamp, space, line");
        assert!(
            chrono::DateTime::parse_from_rfc3339(stamp).is_ok(),
            "{line}"
        );
        assert_eq!(rest, text);
    }

    // -f sees a line written after it started.
    let mut follow = Command::new("kubectl")
        .env("KUBECONFIG", &cluster.server.kubeconfig)
        .env("HOME", cluster.server.dir.path())
        .args(["logs", "-f", "chatty"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl logs -f");
    let (tx, rx) = std::sync::mpsc::channel();
    let out = follow.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |rx: &std::sync::mpsc::Receiver<String>| {
        blocking(|| rx.recv_timeout(Duration::from_secs(15)).ok())
    };
    for expected in ["line-1", "line-2", "err-3"] {
        assert_eq!(next(&rx).as_deref(), Some(expected));
    }
    let touch = ["touch".to_string(), "/tmp/go".to_string()];
    cluster.runtime.exec(&ids[0], &touch).await.unwrap();
    assert_eq!(next(&rx).as_deref(), Some("after-follow"));
    let _ = follow.kill();
    let _ = follow.wait();

    // The agent identity may not read logs.
    let path = "/api/v1/namespaces/default/pods/chatty/log";
    let (code, message) = cluster.get(path, &cluster.server.agent_token).await;
    assert_eq!(code, 403, "{message}");
    assert!(message.contains("pods/log"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_and_berth_exec_with_output_stdin_and_exit_code() {
    let cluster = Cluster::start("exec").await;
    cluster
        .run(
            "shell",
            json!([{"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": ["sleep", "3600"]}]),
        )
        .await;
    let script = "echo out; echo err >&2; exit 3";
    let kubectl = cluster.kubectl(&["exec", "shell", "--", "sh", "-c", script]);
    assert_eq!(kubectl.status.code(), Some(3), "{}", stderr(&kubectl));
    assert_eq!(stdout(&kubectl), "out\n");
    assert!(stderr(&kubectl).contains("err"), "{}", stderr(&kubectl));

    let piped = blocking(|| {
        cluster
            .server
            .kubectl_stdin(&["exec", "-i", "shell", "--", "cat"], Some("piped-in\n"))
    });
    assert!(piped.status.success(), "{}", stderr(&piped));
    assert_eq!(stdout(&piped), "piped-in\n");

    let berth = cluster.berth(&["exec", "shell", "--", "sh", "-c", script], None);
    assert_eq!(berth.status.code(), Some(3), "{}", stderr(&berth));
    assert_eq!(stdout(&berth), "out\n");
    assert_eq!(stderr(&berth), "err\n");

    let berth = cluster.berth(&["exec", "-i", "shell", "--", "wc", "-l"], Some("a\nb\n"));
    assert!(berth.status.success(), "{}", stderr(&berth));
    assert_eq!(stdout(&berth).trim(), "2");

    let ok = cluster.berth(&["exec", "shell", "--", "true"], None);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));

    // Under a real terminal (`script` makes one), -it gives the command a terminal too.
    let berth_cmd = format!(
        "{} exec -it --kubeconfig {} shell -- sh -c 'tty; exit 5'",
        env!("CARGO_BIN_EXE_berth"),
        cluster.server.kubeconfig.display()
    );
    let tty = blocking(|| {
        Command::new("script")
            .args(["-qec", &berth_cmd, "/dev/null"])
            .stdin(Stdio::piped())
            .output()
            .expect("script (util-linux) runs")
    });
    assert_eq!(tty.status.code(), Some(5), "{}", stderr(&tty));
    assert!(stdout(&tty).contains("/dev/pts/"), "{}", stdout(&tty));
    let no_tty = cluster.berth(&["exec", "-it", "shell", "--", "tty"], None);
    assert!(
        stderr(&no_tty).contains("Unable to use a TTY"),
        "{}",
        stderr(&no_tty)
    );
    assert_eq!(stdout(&no_tty), "not a tty\n");

    // A client that only speaks SPDY is told what berth speaks instead.
    let spdy = blocking(|| {
        Command::new("kubectl")
            .env("KUBECONFIG", &cluster.server.kubeconfig)
            .env("HOME", cluster.server.dir.path())
            .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
            .args(["exec", "shell", "--", "true"])
            .output()
            .expect("kubectl")
    });
    assert!(!spdy.status.success());
    assert!(
        stderr(&spdy).contains("SPDY is not supported"),
        "{}",
        stderr(&spdy)
    );
}

/// `--previous` after a container that really crashed under the agent: its first run exits 3,
/// the agent starts it again after its back-off, and the dead run's log is the previous one.
/// A counter in an emptyDir tells the runs apart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn previous_reads_the_run_that_crashed_and_errors_name_what_is_missing() {
    runtime().await;
    let scope = TestScope::new("previous");
    let server = blocking(Server::start);
    let agent = blocking(|| Agent::start(&server, "node-previous", &scope, &[]));
    let client = admin(&server).await;
    let count_runs = "n=$(( $(cat /runs/n 2>/dev/null || echo 0) + 1 )); echo $n > /runs/n";
    create_pod(
        &client,
        &agent.node,
        json!({"metadata": {"name": "duo"}, "spec": {
            "terminationGracePeriodSeconds": 1,
            "volumes": [{"name": "runs", "emptyDir": {}}],
            "containers": [
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "volumeMounts": [{"name": "runs", "mountPath": "/runs"}],
                 "command": sh(&format!(
                     "{count_runs}; echo run-$n; if [ $n -ge 2 ]; then exec sleep 3600; fi; exit 3"
                 ))},
                {"name": "helper", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]}]}}),
    )
    .await;
    let app_status = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.name == "app"))
            .cloned()
    };
    let pod = wait_pod(
        &client,
        "duo",
        Duration::from_secs(60),
        "app crashed once and running again",
        |p| {
            app_status(p).is_some_and(|c| {
                c.restart_count == 1 && c.state.as_ref().is_some_and(|s| s.running.is_some())
            })
        },
    )
    .await;
    let last = app_status(&pod)
        .and_then(|c| c.last_state)
        .and_then(|s| s.terminated)
        .expect("the crashed run in lastState");
    assert_eq!(last.exit_code, 3, "{last:?}");

    let logs = |args: &[&str]| blocking(|| server.kubectl(args));
    let current = eventually("the second run's log", Duration::from_secs(30), || async {
        let out = logs(&["logs", "duo", "-c", "app"]);
        accept(stdout(&out), |s| s == "run-2\n")
    })
    .await;
    assert_eq!(current, "run-2\n");
    let previous = logs(&["logs", "duo", "-c", "app", "--previous"]);
    assert_eq!(stdout(&previous), "run-1\n", "{}", stderr(&previous));
    let berth = blocking(|| {
        Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["logs", "--kubeconfig"])
            .arg(&server.kubeconfig)
            .args(["duo", "-c", "app", "-p"])
            .output()
            .expect("run berth")
    });
    assert_eq!(stdout(&berth), "run-1\n", "{}", stderr(&berth));

    let none = logs(&["logs", "duo", "-c", "helper", "--previous"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("previous terminated container \"helper\" in pod \"duo\" not found"),
        "{}",
        stderr(&none)
    );
    drop(agent);
}

/// What a user is told when the container or the pod is not there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_container_or_pod_that_is_missing() {
    let cluster = Cluster::start("missing").await;
    cluster
        .run(
            "duo",
            json!([
                {"name": "app", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]},
                {"name": "helper", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                 "command": ["sleep", "3600"]}
            ]),
        )
        .await;
    let admin = cluster.server.admin_token.clone();
    let (code, message) = cluster
        .get("/api/v1/namespaces/default/pods/duo/log", &admin)
        .await;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "a container name must be specified for pod duo, choose one of: [app helper]"
    );
    let wrong = cluster.berth(&["logs", "duo", "-c", "nope"], None);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(
        stderr(&wrong).contains("container nope is not valid for pod duo"),
        "{}",
        stderr(&wrong)
    );
    let missing = cluster.berth(&["logs", "ghost"], None);
    assert!(
        stderr(&missing).contains("pods \"ghost\" not found"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbound_pods_silent_nodes_forged_certificates_and_wrong_tokens_are_refused() {
    let cluster = Cluster::start("refused").await;
    let app = json!([{"name": "app", "image": TEST_IMAGE, "command": ["true"]}]);
    let message = |pod: &str| {
        let out = cluster.kubectl(&["logs", pod]);
        assert!(!out.status.success(), "logs of {pod} should fail");
        stderr(&out)
    };

    cluster.pod("floating", None, app.clone());
    assert!(message("floating").contains("pod floating does not have a host assigned"));

    cluster.node("bare-node", None);
    cluster.pod("elsewhere", Some("bare-node"), app.clone());
    let m = message("elsewhere");
    assert!(
        m.contains("node \"bare-node\" publishes no agent endpoint"),
        "{m}"
    );

    let forged = AgentEndpoint {
        url: cluster.endpoint.url.clone(),
        cert_sha256: "00".repeat(32),
    };
    cluster.node("forged-node", Some(&forged));
    cluster.pod("forged", Some("forged-node"), app.clone());
    let m = message("forged");
    assert!(m.contains("does not match the fingerprint"), "{m}");

    let (stranger, _stop) =
        endpoint(cluster.runtime.clone(), "berth-agent.some-other-cluster").await;
    cluster.node("stranger-node", Some(&stranger));
    cluster.pod("stranger", Some("stranger-node"), app.clone());
    let m = message("stranger");
    assert!(m.contains("refused the server's credentials"), "{m}");
    let exec = cluster.kubectl(&["exec", "stranger", "--", "true"]);
    assert!(
        stderr(&exec).contains("refused the server's credentials"),
        "{}",
        stderr(&exec)
    );

    // Straight to the endpoint: no token, no service.
    let mut connection = agent_client::connect(&cluster.endpoint).await.unwrap();
    let request = http::Request::get("/containerLogs/default/chatty/app")
        .header("host", connection.authority.clone())
        .body(axum::body::Body::empty())
        .unwrap();
    let response = connection.sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 401);
}
