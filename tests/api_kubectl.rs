//! kubectl (the real client, installed on the machine) against a live `berth server` on a
//! loopback port, using the kubeconfig the server writes on first start. These tests fail,
//! not skip, when kubectl is missing.

pub mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::api::{Server, stderr, stdout};
use support::process::Process;

const APP: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/api-app");

/// `kubectl get KIND NAME -n shop -o jsonpath=PATH`, which must succeed.
fn jsonpath(server: &Server, kind: &str, name: &str, path: &str) -> String {
    server.kubectl_ok(&[
        "get",
        kind,
        name,
        "-n",
        "shop",
        "-o",
        &format!("jsonpath={path}"),
    ])
}

#[test]
fn kubectl_reads_creates_and_applies_server_side_idempotently() {
    let server = Server::start();
    let all = server.kubectl_ok(&["get", "ns,pods,deploy,rs,svc,cm,secrets", "-A"]);
    assert!(all.contains("default"), "{all}");
    assert!(all.contains("kube-system"), "{all}");

    let created = server.kubectl_ok(&["create", "configmap", "demo", "--from-literal=a=b"]);
    assert!(created.contains("configmap/demo created"), "{created}");
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "demo", "-o", "jsonpath={.data.a}"]),
        "b"
    );
    let table = server.kubectl_ok(&["get", "cm"]);
    assert!(
        table.contains("NAME") && table.contains("DATA") && table.contains("demo"),
        "{table}"
    );

    let first = server.kubectl_ok(&["apply", "--server-side", "-f", APP]);
    for what in [
        "namespace/shop",
        "configmap/web-config",
        "secret/web-secret",
        "deployment.apps/web",
        "service/web",
    ] {
        assert!(
            first.contains(&format!("{what} serverside-applied")),
            "{first}"
        );
    }
    // The Deployment controller writes the Deployment's status meanwhile, so for it the
    // generation and the apply manager's entry stand for "unchanged"; nothing else writes the
    // other objects, whose resourceVersions must not move.
    let rvs = |s: &Server| {
        let deploy = s.kubectl_ok(&[
                "get",
                "-n",
                "shop",
                "deploy",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.generation}/{.metadata.managedFields[?(@.operation==\"Apply\")].time} {end}",
            ],
        );
        let rest = s.kubectl_ok(&[
            "get",
            "-n",
            "shop",
            "svc,cm,secret",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
        ]);
        format!("{deploy}{rest}")
    };
    let before = rvs(&server);
    let second = server.kubectl_ok(&["apply", "--server-side", "-f", APP]);
    assert!(
        second.contains("deployment.apps/web serverside-applied"),
        "{second}"
    );
    assert_eq!(before, rvs(&server), "a second apply changes nothing");

    let yaml = server.kubectl_ok(&["get", "deploy", "web", "-n", "shop", "-o", "yaml"]);
    for default in [
        "imagePullPolicy: IfNotPresent",
        "restartPolicy: Always",
        "dnsPolicy: ClusterFirst",
        "terminationGracePeriodSeconds: 30",
        "revisionHistoryLimit: 10",
        "progressDeadlineSeconds: 600",
        "type: RollingUpdate",
        "uid:",
        "creationTimestamp:",
        "generation: 1",
    ] {
        assert!(yaml.contains(default), "{default} missing from:\n{yaml}");
    }
    let svc = jsonpath(&server, "svc", "web", "{.spec.ports[0].protocol}");
    assert_eq!(svc, "TCP");
    let secret = jsonpath(&server, "secret", "web-secret", "{.data.API_KEY}");
    assert_eq!(secret, "bm90LWEtcmVhbC1rZXk=");

    // kubectl diff: no changes → exit 0; an edited manifest → exit 1 with a readable diff.
    let same = server.kubectl(&["diff", "--server-side", "-f", APP]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "{}{}",
        stdout(&same),
        stderr(&same)
    );
    let edited = std::fs::read_to_string(format!("{APP}/20-web.yaml"))
        .unwrap()
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.27", "nginx:1.28");
    let path = server.dir.path().join("edited.yaml");
    std::fs::write(&path, edited).unwrap();
    for extra in [&[][..], &["--server-side"][..]] {
        let mut args = vec!["diff", "-f", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let diff = server.kubectl(&args);
        let text = stdout(&diff);
        assert_eq!(
            diff.status.code(),
            Some(1),
            "{args:?}: {text}{}",
            stderr(&diff)
        );
        assert!(
            text.contains("-  replicas: 2") && text.contains("+  replicas: 3"),
            "{text}"
        );
        assert!(text.contains("+        image: nginx:1.28"), "{text}");
    }
    assert_eq!(
        jsonpath(&server, "deploy", "web", "{.spec.replicas}"),
        "2",
        "diff changes nothing"
    );
}

#[test]
fn kubectl_patches_scales_watches_and_deletes() {
    let server = Server::start();
    server.kubectl_ok(&["apply", "--server-side", "-f", APP]);

    server.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    assert_eq!(
        jsonpath(&server, "deploy", "web", "{.metadata.labels.patched}"),
        "merge"
    );
    server.kubectl_ok(&[
        "patch",
        "deploy",
        "web",
        "-n",
        "shop",
        "-p",
        r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.28"}]}}}}"#,
    ]);
    let containers = jsonpath(
        &server,
        "deploy",
        "web",
        "{range .spec.template.spec.containers[*]}{.name}:{.image}:{.env[0].name} {end}",
    );
    assert_eq!(
        containers.trim(),
        "web:nginx:1.28:GREETING",
        "strategic merge keeps the env and merges by name"
    );

    let scaled = server.kubectl_ok(&["scale", "deploy", "web", "-n", "shop", "--replicas=5"]);
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    assert_eq!(jsonpath(&server, "deploy", "web", "{.spec.replicas}"), "5");

    // `kubectl get pods -w` sees a pod created after it started watching: its first line (a
    // pod that was there before) comes from the list it starts with, so the pod created after
    // that line can only come from the watch.
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n  containers:\n  - name: c\n    image: busybox:1.36\n"
        )
    };
    server.kubectl_ok_stdin(&["apply", "-f", "-"], &pod("listed"));
    let mut command = Command::new("kubectl");
    command
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.dir.path())
        .args(["get", "pods", "-n", "shop", "-w", "--output-watch-events"])
        .stderr(Stdio::piped());
    let mut watcher = Process::spawn("kubectl get pods -w", &mut command);
    watcher.wait_line("the listed pod", Duration::from_secs(30), |l| {
        (l.contains("ADDED") && l.contains("listed")).then_some(())
    });
    server.kubectl_ok_stdin(&["apply", "-f", "-"], &pod("watched"));
    watcher.wait_line("the watched pod", Duration::from_secs(30), |l| {
        (l.contains("ADDED") && l.contains("watched")).then_some(())
    });
    drop(watcher);

    // The namespace goes first (its file sorts first) and its controller removes what is in it
    // meanwhile, so an object kubectl reaches later may already be gone, as in Kubernetes.
    let deleted = server.kubectl_ok(&["delete", "-f", APP, "--ignore-not-found"]);
    assert!(deleted.contains("namespace \"shop\" deleted"), "{deleted}");
    let gone = server.kubectl(&["get", "deploy", "web", "-n", "shop"]);
    assert!(!gone.status.success());
    assert!(
        stderr(&gone).contains("NotFound") || stderr(&gone).contains("not found"),
        "{}",
        stderr(&gone)
    );

    let metrics = server.kubectl_ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("apiserver_request_total{verb=\"patch\",resource=\"deployments\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("apiserver_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("berth_store_revision"), "{metrics}");
}
