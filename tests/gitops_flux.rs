//! GitSource's Flux parity end to end: a real `berth server` (no agents, no Docker) following
//! local bare repositories. `spec.targetNamespace`, `spec.postBuild` substitution from inline
//! values, a ConfigMap and a Secret (whose values never reach the source's status, Events or
//! the server's log), `spec.dependsOn` ordering, and `spec.wait` with `spec.timeout` failing
//! with the reason an object is not healthy. Needs `git`.

pub mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Http, Server};
use support::eventually;
use support::git::Repo;

const SOURCES: &str = "/apis/berth.dev/v1/namespaces/default/gitsources";

/// The test server over plain HTTP, its debug log in a file.
struct Flux {
    server: Server,
    http: Http,
}

impl Flux {
    fn start() -> Flux {
        let dir = tempfile::Builder::new()
            .prefix("berth-gitops-flux")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let server = Server::start_configured(dir, &["--insecure-http"], |command| {
            command.env("RUST_LOG", "debug").stderr(log);
        });
        let http = server.http();
        Flux { server, http }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.http.get_opt(path).await
    }

    async fn source(&self, name: &str) -> Value {
        self.get(&format!("{SOURCES}/{name}"))
            .await
            .unwrap_or(Value::Null)
    }

    async fn create_source(&self, name: &str, spec: Value) {
        self.http
            .create(
                SOURCES,
                json!({"apiVersion": "berth.dev/v1", "kind": "GitSource",
                    "metadata": {"name": name}, "spec": spec}),
            )
            .await;
    }

    /// Waits until the source's `Ready` condition has `reason`; returns the source.
    async fn wait_reason(&self, name: &str, reason: &str, timeout: Duration) -> Value {
        eventually(
            &format!("GitSource {name} Ready reason {reason}"),
            timeout,
            || async {
                let s = self.source(name).await;
                if condition(&s, "Ready")["reason"] == reason {
                    Ok(s)
                } else {
                    Err(s.to_string())
                }
            },
        )
        .await
    }
}

fn condition<'a>(source: &'a Value, kind: &str) -> &'a Value {
    source["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

fn config_map(name: &str, data: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n{data}")
}

const SECRET_VALUE: &str = "tok-9c1e7f-never-in-status";

/// Plain files (substituted as text) and a kustomization (substituted once rendered).
const SETTINGS: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: written-here
data:
  greeting: ${GREETING}
  color: ${COLOR}
  region: ${REGION:=eu-west}
  token: ${TOKEN}
  unset: \"[${NOT_SET}]\"
  literal: $${GREETING}
";

const KUSTOMIZATION: &str = "resources: [web.yaml]
commonLabels: {tier: front}
";

const WEB: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {color: \"${COLOR}\"}
spec:
  replicas: ${REPLICAS}
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:latest
";

#[tokio::test]
async fn variables_from_a_config_map_a_secret_and_the_spec_are_substituted_in_the_target_namespace()
{
    let repo = Repo::init();
    repo.write("app/settings.yaml", SETTINGS);
    repo.write("app/web/kustomization.yaml", KUSTOMIZATION);
    repo.write("app/web/web.yaml", WEB);
    let commit = repo.commit_and_push("first");
    let server = Flux::start();
    let http = &server.http;
    http.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
    )
    .await;
    http.create(
        "/api/v1/namespaces/default/configmaps",
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "vars"},
            "data": {"GREETING": "from-config-map", "COLOR": "blue", "REPLICAS": "2"}}),
    )
    .await;
    http.create(
        "/api/v1/namespaces/default/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "vars-secret"},
            "stringData": {"TOKEN": SECRET_VALUE}}),
    )
    .await;
    server
        .create_source(
            "app",
            json!({"url": repo.origin(), "path": "app", "interval": "1s",
                "targetNamespace": "team",
                "postBuild": {"substitute": {"GREETING": "inline-wins"},
                    "substituteFrom": [{"kind": "ConfigMap", "name": "vars"},
                        {"kind": "Secret", "name": "vars-secret"},
                        {"kind": "ConfigMap", "name": "not-there", "optional": true}]}}),
        )
        .await;
    let settings_path = "/api/v1/namespaces/team/configmaps/settings";
    let settings = eventually(
        "settings applied in team",
        Duration::from_secs(15),
        || async {
            match server.get(settings_path).await {
                Some(settings) => Ok(settings),
                None => Err(server.source("app").await.to_string()),
            }
        },
    )
    .await;
    assert_eq!(
        settings["metadata"]["annotations"]["berth.dev/source-commit"],
        commit.as_str()
    );
    let data = &settings["data"];
    assert_eq!(
        data["greeting"], "inline-wins",
        "inline overrides substituteFrom"
    );
    assert_eq!(data["color"], "blue");
    assert_eq!(
        data["region"], "eu-west",
        "the default of an unset variable"
    );
    assert_eq!(data["token"], SECRET_VALUE, "from the Secret");
    assert_eq!(
        data["unset"], "[]",
        "an unset variable is empty, as in Flux"
    );
    assert_eq!(data["literal"], "${GREETING}", "$${{…}} is the escape");
    assert!(
        server
            .get("/api/v1/namespaces/written-here/configmaps/settings")
            .await
            .is_none(),
        "targetNamespace overrides the namespace written"
    );
    // The kustomization's Deployment: rendered, then substituted (replicas a number again).
    let web = server
        .get("/apis/apps/v1/namespaces/team/deployments/web")
        .await
        .expect("the Deployment is applied in team");
    assert_eq!(web["spec"]["replicas"], 2, "{web}");
    assert_eq!(web["metadata"]["labels"]["color"], "blue");
    assert_eq!(web["metadata"]["labels"]["tier"], "front");
    assert!(
        server
            .get("/apis/apps/v1/namespaces/default/deployments/web")
            .await
            .is_none()
    );

    // A variable's ConfigMap changes, with no new commit: the objects follow it.
    http.patch(
        "/api/v1/namespaces/default/configmaps/vars",
        json!({"data": {"COLOR": "green"}}),
    )
    .await;
    eventually("the new color applied", Duration::from_secs(15), || async {
        let s = server.get(settings_path).await.unwrap_or_default();
        let w = server
            .get("/apis/apps/v1/namespaces/team/deployments/web")
            .await
            .unwrap_or_default();
        if s["data"]["color"] == "green" && w["metadata"]["labels"]["color"] == "green" {
            Ok(())
        } else {
            Err(format!("{s} {w}"))
        }
    })
    .await;
    let source = server
        .wait_reason("app", "Degraded", Duration::from_secs(10))
        .await;
    assert_eq!(source["status"]["objects"], 2, "{source}");

    // Another target namespace: the objects move there, and those left behind are pruned
    // (all of the source's objects at once: past the mass-delete guard only when allowed).
    http.create(
        "/api/v1/namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team2"}}),
    )
    .await;
    http.patch(
        &format!("{SOURCES}/app"),
        json!({"spec": {"targetNamespace": "team2", "allowMassDelete": true}}),
    )
    .await;
    eventually("moved to team2", Duration::from_secs(15), || async {
        let new = server
            .get("/api/v1/namespaces/team2/configmaps/settings")
            .await;
        let old = server.get(settings_path).await;
        let old_web = server
            .get("/apis/apps/v1/namespaces/team/deployments/web")
            .await;
        match (new, old, old_web) {
            (Some(new), None, None) if new["data"]["color"] == "green" => Ok(()),
            other => Err(format!("{other:?} {}", server.source("app").await)),
        }
    })
    .await;

    // A Secret of substituteFrom that does not exist stalls the source, naming it.
    http.patch(
        &format!("{SOURCES}/app"),
        json!({"spec": {"postBuild": {"substitute": {"GREETING": "inline-wins"},
            "substituteFrom": [{"kind": "ConfigMap", "name": "vars"},
                {"kind": "Secret", "name": "vars-secret"}, {"kind": "Secret", "name": "nope"}]}}}),
    )
    .await;
    let stalled = server
        .wait_reason("app", "SubstitutionFailed", Duration::from_secs(10))
        .await;
    assert_eq!(
        condition(&stalled, "Stalled")["status"],
        "True",
        "{stalled}"
    );
    let message = condition(&stalled, "Ready")["message"]
        .as_str()
        .unwrap_or("");
    assert!(message.contains("Secret default/nope"), "{message}");

    let events = server
        .get("/api/v1/namespaces/default/events")
        .await
        .unwrap_or_default();
    for (what, text) in [
        ("the status", source.to_string()),
        ("the stalled status", stalled.to_string()),
        ("the events", events.to_string()),
        ("the server log", server.log()),
    ] {
        assert!(
            !text.contains(SECRET_VALUE),
            "{what} shows the Secret's value"
        );
    }
}

#[tokio::test]
async fn a_source_waits_until_the_source_it_depends_on_is_ready() {
    let repo = Repo::init();
    repo.write("a/a.yaml", &config_map("from-a", "  k: a\n"));
    repo.write("b/b.yaml", &config_map("from-b", "  k: b\n"));
    repo.commit_and_push("two folders");
    let server = Flux::start();
    let origin = repo.origin();
    // B first: A does not exist yet.
    server
        .create_source(
            "b",
            json!({"url": origin, "path": "b", "interval": "1s", "dependsOn": [{"name": "a"}]}),
        )
        .await;
    let waiting = server
        .wait_reason("b", "DependencyNotReady", Duration::from_secs(10))
        .await;
    let message = condition(&waiting, "Ready")["message"]
        .as_str()
        .unwrap_or("");
    assert!(
        message.contains("GitSource default/a does not exist"),
        "{message}"
    );
    // A exists but is not Ready: it waits for a ConfigMap nobody has made yet.
    server
        .create_source(
            "a",
            json!({"url": origin, "path": "a", "interval": "1s", "timeout": "1m",
                "healthChecks": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gate"}]}),
        )
        .await;
    let a = server
        .wait_reason("a", "Progressing", Duration::from_secs(10))
        .await;
    let message = condition(&a, "Ready")["message"].as_str().unwrap_or("");
    assert!(
        message.contains("ConfigMap default/gate does not exist"),
        "{message}"
    );
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/from-a")
            .await
            .is_some(),
        "A applies its objects while it waits for health"
    );
    // B sees A's state and says why it waits (it looks again every second).
    eventually(
        "B waits for A to be Ready",
        Duration::from_secs(10),
        || async {
            let s = server.source("b").await;
            let ready = condition(&s, "Ready");
            let message = ready["message"].as_str().unwrap_or("");
            if ready["reason"] == "DependencyNotReady"
                && message.contains("GitSource default/a is not Ready (Progressing: ")
            {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/from-b")
            .await
            .is_none(),
        "B applies nothing while A is not Ready"
    );
    server
        .http
        .create(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gate"}}),
        )
        .await;
    server
        .wait_reason("a", "Applied", Duration::from_secs(10))
        .await;
    server
        .wait_reason("b", "Applied", Duration::from_secs(15))
        .await;
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/from-b")
            .await
            .is_some(),
        "B applied once A is Ready"
    );
}

#[tokio::test]
async fn wait_turns_health_check_failed_after_the_timeout_naming_the_pod_and_why() {
    let repo = Repo::init();
    let web = WEB
        .replace("${REPLICAS}", "1")
        .replace("\"${COLOR}\"", "blue");
    repo.write("app/web.yaml", &web);
    repo.commit_and_push("a Deployment no node can run");
    let server = Flux::start();
    server
        .create_source(
            "web",
            json!({"url": repo.origin(), "path": "app", "interval": "1s", "wait": true,
                "timeout": "6s"}),
        )
        .await;
    // Within the timeout: waiting, not failed.
    let before = eventually("the source waits", Duration::from_secs(10), || async {
        let s = server.source("web").await;
        match condition(&s, "Ready")["reason"].as_str() {
            Some(r @ ("Progressing" | "Degraded" | "HealthCheckFailed")) => Ok(r.to_string()),
            _ => Err(s.to_string()),
        }
    })
    .await;
    assert_ne!(before, "HealthCheckFailed", "it waits {before} first");
    // No node is registered: the pod cannot be scheduled, so health never comes.
    let message = eventually("HealthCheckFailed", Duration::from_secs(20), || async {
        let s = server.source("web").await;
        let ready = condition(&s, "Ready");
        let message = ready["message"].as_str().unwrap_or("").to_string();
        if ready["reason"] == "HealthCheckFailed" && message.contains("cannot be scheduled") {
            Ok(message)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert!(
        message.starts_with("health check failed after 6s: Deployment default/web: pod web-"),
        "{message}"
    );
}
