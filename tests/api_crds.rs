//! CustomResourceDefinitions served by a live `berth server`, as kubectl, the official Python
//! client and `berth apply` meet them: a CRD's resource served when its create returns, with
//! printer columns, `kubectl explain`, schema defaults, pruning and validation, the status and
//! scale subresources, watches, other served versions, a restart, and deleting the CRD.

pub mod support;

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Http, Server, stderr, stdout};
use support::apply::{Manifests, berth_code};
use support::eventually;
use support::git::Repo;
use support::python::venv_python;

const CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wdg]
  versions:
    - name: v1
      served: true
      storage: true
      subresources:
        status: {}
        scale:
          specReplicasPath: .spec.size
          statusReplicasPath: .status.size
      additionalPrinterColumns:
        - name: Colour
          type: string
          jsonPath: .spec.colour
        - name: Size
          type: integer
          jsonPath: .spec.size
      schema:
        openAPIV3Schema:
          type: object
          description: A widget of the test shop.
          properties:
            spec:
              type: object
              properties:
                colour:
                  type: string
                  description: The paint of the widget, seen from afar.
                size:
                  type: integer
                  minimum: 1
                  default: 2
            status:
              type: object
              properties:
                size:
                  type: integer
    - name: v1beta1
      served: true
      storage: false
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"#;

fn widget(name: &str, colour: &str) -> String {
    format!(
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n  colour: {colour}\n"
    )
}

const WIDGETS: &str = "/apis/example.com/v1/namespaces/default/widgets";

/// kubectl that must fail; returns stderr.
fn kubectl_fails(server: &Server, args: &[&str], input: &str) -> String {
    let out = server.kubectl_stdin(args, Some(input));
    assert!(
        !out.status.success(),
        "kubectl {args:?} succeeded: {}",
        stdout(&out)
    );
    stderr(&out)
}

/// Reads `n` watch events from a live watch, or what came before `timeout`.
async fn watch_events(http: &Http, path: &str, n: usize, timeout: Duration) -> Vec<Value> {
    let mut resp = http
        .client
        .get(format!("{}{path}", http.url))
        .bearer_auth(&http.token)
        .send()
        .await
        .expect("start a watch");
    assert_eq!(resp.status().as_u16(), 200, "watch {path}");
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout_at(deadline, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => buf.extend_from_slice(&chunk),
            _ => break,
        }
        while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).expect("event JSON"));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_is_served_to_kubectl_with_its_columns_schema_and_subresources() {
    let server = Server::start();
    let http = server.http();
    assert!(
        !server.kubectl(&["get", "widgets"]).status.success(),
        "no widgets before the CRD"
    );
    let created = server.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    assert!(created.contains("widgets.example.com created"), "{created}");
    // Served when the create returns (well within a second): the first try must work.
    let empty = server.kubectl(&["get", "widgets"]);
    assert!(
        empty.status.success(),
        "kubectl get widgets right after the CRD: {}",
        stderr(&empty)
    );
    let established = server.kubectl_ok(&[
        "get",
        "crd",
        "widgets.example.com",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Established\")].status} {.status.acceptedNames.kind}",
    ]);
    assert_eq!(established, "True Widget");
    let discovery = http.get("/apis/example.com/v1").await;
    let names: Vec<&str> = discovery["resources"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["widgets", "widgets/status", "widgets/scale"]);
    let group = http.get("/apis/example.com").await;
    assert_eq!(group["preferredVersion"]["version"], "v1", "{group}");

    // Defaults from the schema; an unknown field refused as kubectl asks (strict), pruned when
    // it does not.
    let strict = kubectl_fails(
        &server,
        &["apply", "-f", "-"],
        &format!("{}  bogus: 1\n", widget("red", "red")),
    );
    assert!(strict.contains("unknown field \"spec.bogus\""), "{strict}");
    server.kubectl_ok_stdin(
        &["apply", "--validate=false", "-f", "-"],
        &format!("{}  bogus: 1\n", widget("red", "red")),
    );
    let red = http.get(&format!("{WIDGETS}/red")).await;
    assert_eq!(red["spec"], json!({"colour": "red", "size": 2}), "{red}");

    // Printer columns in kubectl get, and kubectl explain from the schema.
    let table = server.kubectl_ok(&["get", "wdg"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "COLOUR", "SIZE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row, ["red", "red", "2"], "{table}");
    let explained = server.kubectl_ok(&["explain", "widget.spec"]);
    assert!(
        explained.contains("colour") && explained.contains("The paint of the widget"),
        "{explained}"
    );

    // Server-side apply and a JSON patch go through the same admission.
    server.kubectl_ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        &widget("applied", "green"),
    );
    server.kubectl_ok(&[
        "patch",
        "widget",
        "applied",
        "--type=json",
        "-p",
        r#"[{"op": "replace", "path": "/spec/size", "value": 5}]"#,
    ]);
    let applied = http.get(&format!("{WIDGETS}/applied")).await;
    assert_eq!(
        applied["spec"],
        json!({"colour": "green", "size": 5}),
        "{applied}"
    );
    server.kubectl_ok(&["delete", "widget", "applied"]);

    // Schema validation: a 422 naming the field.
    let invalid = json!({"apiVersion": "example.com/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": "two"}});
    let (code, status) = http
        .send(
            reqwest::Method::POST,
            WIDGETS,
            "application/json",
            Some(&invalid),
        )
        .await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(
        status["details"]["causes"][0]["field"], "spec.size",
        "{status}"
    );
    let too_small = kubectl_fails(
        &server,
        &["apply", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: tiny\nspec:\n  size: 0\n",
    );
    assert!(too_small.contains("spec.size"), "{too_small}");

    // Status: the main resource ignores it, /status takes only it.
    http.patch(
        &format!("{WIDGETS}/red"),
        json!({"spec": {"colour": "blue"}, "status": {"size": 9}}),
    )
    .await;
    let red = http.get(&format!("{WIDGETS}/red")).await;
    assert_eq!(red["spec"]["colour"], "blue");
    assert!(red.get("status").is_none(), "{red}");
    http.patch(
        &format!("{WIDGETS}/red/status"),
        json!({"spec": {"colour": "green"}, "status": {"size": 2}}),
    )
    .await;
    let red = http.get(&format!("{WIDGETS}/red")).await;
    assert_eq!(
        (&red["spec"]["colour"], &red["status"]["size"]),
        (&json!("blue"), &json!(2))
    );

    // Scale through specReplicasPath; a strategic merge patch refused as Kubernetes does.
    server.kubectl_ok(&["scale", "widget/red", "--replicas=4"]);
    let red = http.get(&format!("{WIDGETS}/red")).await;
    assert_eq!(red["spec"]["size"], 4, "{red}");
    let scale = http.get(&format!("{WIDGETS}/red/scale")).await;
    assert_eq!(
        (&scale["spec"]["replicas"], &scale["status"]["replicas"]),
        (&json!(4), &json!(2))
    );
    let (code, _) = http
        .send(
            reqwest::Method::PATCH,
            &format!("{WIDGETS}/red"),
            "application/strategic-merge-patch+json",
            Some(&json!({"spec": {"size": 3}})),
        )
        .await;
    assert_eq!(code, 415);

    // Another served version reads the same object with its own apiVersion.
    let beta = http
        .get("/apis/example.com/v1beta1/namespaces/default/widgets/red")
        .await;
    assert_eq!(beta["apiVersion"], "example.com/v1beta1");
    assert_eq!(beta["spec"]["size"], 4);

    // A restarted server serves the stored CRD from its first request.
    let dir = server.into_dir();
    let server = Server::start_in(dir, &[]);
    let http = server.http();
    let listed = server.kubectl_ok(&["get", "widgets", "-o", "name"]);
    assert_eq!(listed.trim(), "widget.example.com/red");

    // Deleting the CRD deletes its custom resources and stops serving them.
    server.kubectl_ok(&["delete", "crd", "widgets.example.com"]);
    let (code, _) = http
        .send(reqwest::Method::GET, WIDGETS, "application/json", None)
        .await;
    assert_eq!(code, 404);
    server.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    let listed = http.get(WIDGETS).await;
    assert_eq!(
        listed["items"],
        json!([]),
        "the old widgets went with their CRD"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_custom_resources_sees_them_added_modified_and_deleted() {
    let server = Server::start();
    let http = server.http();
    server.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    let list = http.get(WIDGETS).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let watcher = {
        let http = http.clone();
        let path = format!("{WIDGETS}?watch=true&resourceVersion={rv}");
        tokio::spawn(async move { watch_events(&http, &path, 3, Duration::from_secs(20)).await })
    };
    server.kubectl_ok_stdin(&["apply", "-f", "-"], &widget("w", "red"));
    server.kubectl_ok_stdin(&["apply", "-f", "-"], &widget("w", "blue"));
    server.kubectl_ok(&["delete", "widget", "w"]);
    let events = watcher.await.unwrap();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or(""),
                e["object"]["spec"]["colour"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("ADDED", "red"), ("MODIFIED", "blue"), ("DELETED", "blue")]
    );
}

#[test]
fn the_python_dynamic_client_lists_a_custom_resource() {
    let python = venv_python();
    let server = Server::start();
    server.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    server.kubectl_ok_stdin(&["apply", "-f", "-"], &widget("listed", "red"));
    let script = r#"
from kubernetes import config, dynamic
from kubernetes.client import api_client
client = dynamic.DynamicClient(api_client.ApiClient(configuration=config.load_kube_config()))
widgets = client.resources.get(api_version="example.com/v1", kind="Widget")
items = widgets.get(namespace="default").items
print("widgets:", ",".join(f"{i.metadata.name}={i.spec.colour}" for i in items))
"#;
    let out = Command::new(python)
        .args(["-c", script])
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.dir.path())
        .output()
        .expect("run the Python client");
    assert!(
        out.status.success(),
        "the dynamic client failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out).trim(), "widgets: listed=red");
}

#[test]
fn berth_apply_of_a_folder_with_a_crd_and_its_custom_resources_applies_in_one_go() {
    let server = Server::start();
    let manifests = Manifests::new(&[
        ("crd.yaml", CRD),
        (
            "widgets.yaml",
            &format!("{}---\n{}", widget("one", "red"), widget("two", "blue")),
        ),
    ]);
    let dir = manifests.dir.path().to_str().unwrap();
    berth_code(&server, &["apply", "-f", dir], 0);
    let listed = server.kubectl_ok(&[
        "get",
        "widgets",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}={.spec.size} {end}",
    ]);
    assert_eq!(
        listed.trim(),
        "one=2 two=2",
        "defaults applied in the batch"
    );
    let crd = server.kubectl_ok(&["get", "crd", "widgets.example.com", "-o", "name"]);
    assert_eq!(
        crd.trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com"
    );
    let rv = server.kubectl_ok(&[
        "get",
        "widget",
        "one",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    berth_code(&server, &["apply", "-f", dir], 0);
    let again = server.kubectl_ok(&[
        "get",
        "widget",
        "one",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(rv, again, "a second apply changes nothing");

    // Custom resources alone: checked against the CRD the server serves, before and after
    // they are sent.
    let bad = Manifests::new(&[(
        "bad.yaml",
        &format!("{}  size: zero\n", widget("bad", "red")),
    )]);
    let refused =
        support::apply::berth(&server, &["apply", "-f", bad.dir.path().to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("spec.size"),
        "{}",
        stderr(&refused)
    );
    let alone = Manifests::new(&[("three.yaml", &widget("three", "green"))]);
    let alone = alone.dir.path().to_str().unwrap().to_string();
    berth_code(&server, &["apply", "-f", &alone], 0);
    let three = server.kubectl_ok(&["get", "widget", "three", "-o", "jsonpath={.spec.size}"]);
    assert_eq!(three, "2");
}

/// Masters on one etcd: a CRD written through one is served by the other (which watches the
/// CRDs in etcd), and deleting it through the other stops it on the first.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crd_written_through_one_master_is_served_by_another() {
    let masters = tokio::task::spawn_blocking(|| support::masters::Masters::start(2))
        .await
        .expect("start the masters");
    let (first, second) = (&masters.servers[0], &masters.servers[1]);
    let (one, two) = (first.http(), second.http());
    assert!(two.get_opt(WIDGETS).await.is_none(), "no widgets yet");
    first.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    eventually(
        "the other master serves widgets",
        Duration::from_secs(2),
        || two.get_opt(WIDGETS),
    )
    .await;
    two.create(
        WIDGETS,
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "shared"},
            "spec": {}}),
    )
    .await;
    let shared = one.get(&format!("{WIDGETS}/shared")).await;
    assert_eq!(
        shared["spec"]["size"], 2,
        "defaulted by the second master: {shared}"
    );
    second.kubectl_ok(&["delete", "crd", "widgets.example.com"]);
    eventually(
        "the first master stops serving widgets",
        Duration::from_secs(2),
        || async { one.get_opt(WIDGETS).await.is_none() },
    )
    .await;
}

/// A GitSource of custom resources whose CRD the server already serves (applied apart, as
/// Helm's `crds/` often are), and one of a folder holding a CRD and its custom resources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_sync_applies_custom_resources_with_or_without_their_crd_in_the_folder() {
    let gadget_crd = CRD
        .replace("widgets", "gadgets")
        .replace("widget", "gadget")
        .replace("Widget", "Gadget")
        .replace("wdg", "gdg");
    let repo = Repo::init();
    repo.write(
        "widgets/widgets.yaml",
        &format!("{}---\n{}", widget("one", "red"), widget("two", "blue")),
    );
    repo.write("both/crd.yaml", &gadget_crd);
    repo.write(
        "both/gadget.yaml",
        &widget("gizmo", "green").replace("Widget", "Gadget"),
    );
    repo.commit_and_push("custom resources");
    let server = Server::start();
    let http = server.http();
    server.kubectl_ok_stdin(&["apply", "-f", "-"], CRD);
    let url = format!("file://{}", repo.origin().display());
    for (name, path) in [("widgets", "widgets/"), ("both", "both/")] {
        http.create(
            "/apis/berth.dev/v1/namespaces/default/gitsources",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": name},
                "spec": {"url": url, "path": path, "interval": "1s"}}),
        )
        .await;
    }
    let two_path = format!("{WIDGETS}/two");
    let two = eventually(
        "git sync applies the widgets",
        Duration::from_secs(20),
        || http.get_opt(&two_path),
    )
    .await;
    assert_eq!(two["spec"], json!({"colour": "blue", "size": 2}), "{two}");
    let gizmo = eventually(
        "git sync applies the gadget CRD and its gadget",
        Duration::from_secs(20),
        || http.get_opt("/apis/example.com/v1/namespaces/default/gadgets/gizmo"),
    )
    .await;
    assert_eq!(gizmo["spec"]["size"], 2, "{gizmo}");
}
