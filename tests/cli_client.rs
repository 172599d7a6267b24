//! The everyday client verbs (`get`, `describe`, `delete`, `cluster-info`, `version`,
//! `completion`) as a user runs them: the real `berth` binary against a live `berth server`,
//! with objects created by the real kubectl. Golden files under `tests/golden/cli/`.

pub mod support;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::api::{Server, stderr, stdout};
use support::cli::{assert_golden, normalise_describe, normalise_table};
use support::process::Process;

/// A recognisable Secret value: it must never appear in any output.
const CANARY: &str = "berth-canary-s3cr3t-4242";

fn berth(server: &Server, args: &[&str]) -> Output {
    support::cli::berth(&server.kubeconfig, server.dir.path(), args)
}

fn ok(server: &Server, args: &[&str]) -> String {
    let out = berth(server, args);
    assert!(
        out.status.success(),
        "berth {args:?} failed ({:?}):\nstdout: {}\nstderr: {}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

const OBJECTS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: web-config, namespace: default, labels: {app: web}}
data: {greeting: hello, colour: blue}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: db-config, namespace: default, labels: {app: db}}
data: {port: '5432'}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: cart-config, namespace: shop, labels: {app: cart}}
data: {}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: default, labels: {app: web}}
spec:
  # Bound already (no node runs it), so the scheduler leaves it alone and describe is stable.
  nodeName: node-1
  containers:
  - name: web
    image: berth-test/busybox:1.36
    command: [httpd, -f, -p, '8080']
    ports: [{containerPort: 8080}]
    env:
    - {name: MODE, value: production}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  # Chosen, so the golden table's CLUSTER-IP is stable (the server picks one otherwise).
  clusterIP: 10.96.0.10
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

fn seeded() -> Server {
    let server = Server::start();
    server.kubectl_ok_stdin(&["create", "-f", "-"], OBJECTS);
    server
}

#[test]
fn get_lists_with_short_names_selectors_and_every_namespace() {
    let server = seeded();
    let cms = ok(&server, &["get", "cm"]);
    assert_golden("get-configmaps.txt", &normalise_table(&cms));
    let pods = ok(&server, &["get", "po"]);
    assert_golden("get-pods.txt", &normalise_table(&pods));
    let svc = ok(&server, &["get", "svc", "web"]);
    assert_golden("get-service.txt", &normalise_table(&svc));

    let web_only = ok(&server, &["get", "configmaps", "-l", "app=web"]);
    assert!(
        web_only.contains("web-config") && !web_only.contains("db-config"),
        "{web_only}"
    );
    let by_field = ok(
        &server,
        &["get", "cm", "--field-selector", "metadata.name=db-config"],
    );
    assert!(
        by_field.contains("db-config") && !by_field.contains("web-config"),
        "{by_field}"
    );

    let everywhere = ok(&server, &["get", "cm", "-A", "--no-headers"]);
    let cart = everywhere
        .lines()
        .find(|l| l.contains("cart-config"))
        .unwrap_or_else(|| panic!("{everywhere}"));
    assert!(cart.starts_with("shop "), "NAMESPACE comes first: {cart}");
    let header = ok(&server, &["get", "cm", "-A"]);
    assert!(header.starts_with("NAMESPACE   NAME"), "{header}");

    let shop = ok(&server, &["get", "configmap", "-n", "shop"]);
    assert!(
        shop.contains("cart-config") && !shop.contains("web-config"),
        "{shop}"
    );

    let several = ok(&server, &["get", "po,svc"]);
    assert!(several.contains("pod/web"), "{several}");
    assert!(several.contains("service/web"), "{several}");
    assert!(
        several.contains("\n\nNAME"),
        "one table per kind: {several}"
    );

    let namespaces = ok(&server, &["get", "ns"]);
    for ns in ["default", "shop", "kube-system"] {
        assert!(namespaces.contains(ns), "{namespaces}");
    }
    let slash = ok(
        &server,
        &["get", "cm/web-config", "cm/db-config", "-o", "name"],
    );
    assert_eq!(slash, "configmap/web-config\nconfigmap/db-config\n");
}

#[test]
fn every_output_format_prints_what_kubectl_would() {
    let server = seeded();
    let yaml = ok(&server, &["get", "cm", "web-config", "-o", "yaml"]);
    assert!(yaml.contains("kind: ConfigMap\n"), "{yaml}");
    assert!(yaml.contains("greeting: hello\n"), "{yaml}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&server, &["get", "cm", "-o", "json"])).expect("JSON");
    assert_eq!(json["kind"], "List");
    let names: Vec<&str> = json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"web-config") && names.contains(&"db-config"),
        "{names:?}"
    );
    assert!(
        json["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["kind"] == "ConfigMap")
    );

    let one: serde_json::Value =
        serde_json::from_str(&ok(&server, &["get", "svc", "web", "-o", "json"])).expect("JSON");
    assert_eq!(one["kind"], "Service");

    // Every cluster has the `kubernetes` Service in `default`, as Kubernetes does.
    let names = ok(&server, &["get", "deploy,po,svc", "-o", "name"]);
    assert_eq!(names, "pod/web\nservice/kubernetes\nservice/web\n");
    // `all` is the server's `all` category: config maps are not in it.
    let all = ok(&server, &["get", "all", "-o", "name"]);
    assert_eq!(all, "pod/web\nservice/kubernetes\nservice/web\n");

    let wide = ok(&server, &["get", "pods", "-o", "wide"]);
    let header = wide.lines().next().unwrap_or("");
    for column in ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"] {
        assert!(header.contains(column), "{wide}");
    }
    let narrow = ok(&server, &["get", "pods"]);
    assert!(!narrow.contains(" IP "), "{narrow}");
    let svc_wide = ok(&server, &["get", "svc", "-o", "wide"]);
    assert!(
        svc_wide.contains("SELECTOR") && svc_wide.contains("app=web"),
        "{svc_wide}"
    );
}

#[test]
fn missing_objects_and_types_are_reported_as_kubectl_reports_them() {
    let server = seeded();
    let out = berth(&server, &["get", "po", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): pods \"nope\" not found\n"
    );

    // Found and missing together: the found one prints, the exit code still says failure.
    let out = berth(&server, &["get", "cm", "web-config", "nope", "-o", "name"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "configmap/web-config\n");
    assert!(
        stderr(&out).contains("configmaps \"nope\" not found"),
        "{}",
        stderr(&out)
    );

    let out = berth(&server, &["get", "pods", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "No resources found in shop namespace.\n");

    let out = berth(&server, &["get", "gadgets"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: the server doesn't have a resource type \"gadgets\"\n"
    );

    let out = berth(&server, &["describe", "po", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("pods \"nope\" not found"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn watch_prints_a_row_when_an_object_appears() {
    let server = seeded();
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.dir.path())
        .args(["get", "cm", "-w"])
        .stderr(Stdio::inherit());
    let mut watch = Process::spawn("berth get -w", &mut command);
    let header = watch.wait_line("the header", Duration::from_secs(20), |l| {
        Some(l.to_string())
    });
    assert!(header.starts_with("NAME"), "{header}");
    watch.wait_line("web-config listed", Duration::from_secs(20), |l| {
        l.contains("web-config").then_some(())
    });
    server.kubectl_ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: appeared-later}\n",
    );
    watch.wait_line("appeared-later watched", Duration::from_secs(20), |l| {
        l.contains("appeared-later").then_some(())
    });
}

#[test]
fn describe_shows_containers_and_events_and_never_a_secret_value() {
    let server = seeded();
    server.kubectl_ok_stdin(
        &["create", "-f", "-"],
        "apiVersion: v1\nkind: Event\nmetadata: {name: web.1, namespace: default}\n\
         involvedObject: {apiVersion: v1, kind: Pod, name: web, namespace: default}\n\
         reason: Scheduled\nmessage: Successfully assigned default/web to node-1\ntype: Normal\n\
         source: {component: berth-scheduler}\n---\n\
         apiVersion: v1\nkind: Event\nmetadata: {name: other.1, namespace: default}\n\
         involvedObject: {apiVersion: v1, kind: Pod, name: other, namespace: default}\n\
         reason: Unrelated\nmessage: about another pod\ntype: Warning\n",
    );
    let pod = ok(&server, &["describe", "pod", "web"]);
    assert!(!pod.contains("about another pod"), "{pod}");
    assert_golden("describe-pod.txt", &normalise_describe(&pod));
    let cm = ok(&server, &["describe", "cm/web-config"]);
    assert_golden("describe-configmap.txt", &normalise_describe(&cm));

    // Client-side apply copies the whole Secret, values included, into an annotation.
    server.kubectl_ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: db, namespace: default, \
             labels: {{app: db}}}}\nstringData: {{password: {CANARY}}}\n"
        ),
    );
    let secret = ok(&server, &["describe", "secret", "db"]);
    use base64::Engine as _;
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    assert!(!secret.contains(CANARY), "{secret}");
    assert!(!secret.contains(&encoded), "{secret}");
    assert!(
        secret.contains(&format!("password:  {} bytes", CANARY.len())),
        "{secret}"
    );
    let all = ok(&server, &["describe", "secrets", "-l", "app=db"]);
    assert!(all.contains("Name:") && !all.contains(CANARY), "{all}");
}

#[test]
fn delete_by_file_by_name_and_by_label() {
    let server = seeded();
    let file = server.dir.path().join("doomed.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-file}\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata: {name: also-from-file, namespace: shop}\n",
    )
    .unwrap();
    ok(&server, &["get", "cm"]); // the server is up before kubectl writes
    server.kubectl_ok(&["create", "-f", file.to_str().unwrap()]);
    let out = ok(&server, &["delete", "-f", file.to_str().unwrap()]);
    assert_eq!(
        out,
        "configmap \"from-file\" deleted\nconfigmap \"also-from-file\" deleted\n"
    );

    let out = ok(&server, &["delete", "svc", "web", "--wait"]);
    assert_eq!(out, "service \"web\" deleted\n");
    let gone = berth(&server, &["get", "svc", "web"]);
    assert_eq!(gone.status.code(), Some(1));

    let out = ok(&server, &["delete", "cm", "-l", "app=db"]);
    assert_eq!(out, "configmap \"db-config\" deleted\n");
    let left = ok(&server, &["get", "cm", "-o", "name"]);
    assert_eq!(left, "configmap/web-config\n");

    let out = berth(&server, &["delete", "cm", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "Error from server (NotFound): configmaps \"nope\" not found\n"
    );
    let out = berth(&server, &["delete", "cm", "nope", "--ignore-not-found"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let out = berth(&server, &["delete", "cm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("-l SELECTOR or --all"),
        "{}",
        stderr(&out)
    );
    let out = ok(&server, &["delete", "cm", "--all", "-n", "shop"]);
    assert_eq!(out, "configmap \"cart-config\" deleted\n");

    // A file that does not parse deletes nothing.
    let bad = server.dir.path().join("bad.yaml");
    std::fs::write(&bad, "apiVersion: v1\nkind: ConfigMap\nmetadata: [\n").unwrap();
    let out = berth(&server, &["delete", "-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.yaml"), "{}", stderr(&out));
}

#[test]
fn version_cluster_info_and_completion() {
    let server = Server::start();
    let text = ok(&server, &["version"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("Client Version: v{}", env!("CARGO_PKG_VERSION"))
    );
    assert!(lines[1].starts_with("Server Version: v1."), "{text}");
    assert!(lines[1].contains("berth"), "{text}");

    let json: serde_json::Value =
        serde_json::from_str(&ok(&server, &["version", "-o", "json"])).expect("JSON");
    assert!(json["clientVersion"]["gitVersion"].is_string(), "{json}");
    assert!(json["serverVersion"]["gitVersion"].is_string(), "{json}");
    let yaml = ok(&server, &["version", "-o", "yaml"]);
    assert!(yaml.contains("serverVersion:"), "{yaml}");

    // --client needs no server and no kubeconfig.
    let client_only = support::cli::berth(
        &server.dir.path().join("absent"),
        server.dir.path(),
        &["version", "--client"],
    );
    assert_eq!(client_only.status.code(), Some(0));
    assert_eq!(stdout(&client_only).lines().count(), 1);

    let info = ok(&server, &["cluster-info"]);
    let url = server.url.trim_end_matches('/');
    assert!(info.contains(&format!("running at {url}")), "{info}\n{url}");
    assert!(info.contains("Health: ok"), "{info}");

    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&server, &["completion", shell]);
        assert!(
            script.contains("berth") && script.contains("describe"),
            "{shell}"
        );
        if shell == "bash" {
            let path = dir.path().join("berth.bash");
            std::fs::write(&path, &script).unwrap();
            let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
            assert!(check.status.success(), "bash -n: {}", stderr(&check));
        }
    }
}

#[test]
fn a_missing_kubeconfig_is_a_clear_error() {
    let home = tempfile::tempdir().unwrap();
    let absent = home.path().join("no-such-config");
    let out = support::cli::berth(&absent, home.path(), &["get", "pods"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("kubeconfig"), "{err}");

    let out = support::cli::berth(
        &absent,
        home.path(),
        &["get", "pods", "--kubeconfig", absent.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no-such-config"), "{}", stderr(&out));

    // A server that is not there: named, exit 1.
    let out = support::cli::berth(
        &absent,
        home.path(),
        &[
            "get",
            "pods",
            "--server",
            "http://127.0.0.1:9",
            "--token",
            "t",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot reach the API server at http://127.0.0.1:9"),
        "{}",
        stderr(&out)
    );
}
