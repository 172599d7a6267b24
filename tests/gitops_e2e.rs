//! GitOps end to end: a real `berth server` following a local bare repository that a working
//! clone pushes to (and, for credentials, a repository served by `git http-backend` behind a
//! loopback HTTP server with basic auth). Object-level assertions, no agents: what a user sees
//! through the API. Needs `git` (fails without it). Every process and directory is removed on
//! drop, also when a test fails.

pub mod support;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::api::{Http, Server};
use support::apply::berth_code;
use support::eventually;
use support::git::Repo;

const MANIFESTS: &str = "manifests";

/// The test server over plain HTTP, its debug log captured in a file, and what these tests
/// read from it.
struct GitOps {
    server: Server,
    http: Http,
}

impl GitOps {
    fn start(extra: &[&str]) -> GitOps {
        let dir = tempfile::Builder::new()
            .prefix("berth-gitops-test")
            .tempdir()
            .expect("temp dir");
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let extra = [&["--insecure-http"], extra].concat();
        let server = Server::start_configured(dir, &extra, |command| {
            command.env("RUST_LOG", "debug").stderr(log);
        });
        let http = server.http();
        GitOps { server, http }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.server.dir.path().join("server.log")).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<Value> {
        self.http.get_opt(path).await
    }

    async fn create(&self, path: &str, body: Value) {
        self.http.create(path, body).await;
    }

    async fn patch(&self, path: &str, body: Value) {
        self.http.patch(path, body).await;
    }

    async fn source(&self, name: &str) -> Value {
        self.get(&format!(
            "/apis/berth.dev/v1/namespaces/default/gitsources/{name}"
        ))
        .await
        .unwrap_or(Value::Null)
    }
}

const APP: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:latest
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - port: 80
";

fn config_map(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  greeting: {value}\n"
    )
}

const DEPLOY: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const SERVICE: &str = "/api/v1/namespaces/default/services/web";
const CONFIG: &str = "/api/v1/namespaces/default/configmaps/settings";

fn annotation<'a>(o: &'a Value, key: &str) -> &'a str {
    o["metadata"]["annotations"][key].as_str().unwrap_or("")
}

fn condition<'a>(source: &'a Value, kind: &str) -> &'a Value {
    source["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// Waits until the ConfigMap carries `commit`.
async fn wait_applied(server: &GitOps, commit: &str, timeout: Duration) -> Duration {
    let start = Instant::now();
    eventually(&format!("commit {commit} applied"), timeout, || async {
        match server.get(CONFIG).await {
            Some(c) if annotation(&c, "berth.dev/source-commit") == commit => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    start.elapsed()
}

#[tokio::test]
async fn commits_are_applied_bad_ones_refused_and_deletions_pruned_or_held() {
    let repo = Repo::init();
    repo.write(&format!("{MANIFESTS}/app.yaml"), APP);
    repo.write(&format!("{MANIFESTS}/settings.yaml"), &config_map("hello"));
    repo.write("README.md", "not a manifest\n");
    let first = repo.commit_and_push("first");
    let origin = repo.origin();
    let server = GitOps::start(&[
        "--git",
        origin.to_str().unwrap(),
        "--git-path",
        &format!("{MANIFESTS}/"),
    ]);
    // A ConfigMap applied by hand: git sync must never touch it.
    server
        .create(
            "/api/v1/namespaces/default/configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "by-hand"}, "data": {"k": "v"}}),
        )
        .await;

    wait_applied(&server, &first, Duration::from_secs(10)).await;
    let d = server.get(DEPLOY).await.expect("the Deployment is applied");
    assert_eq!(annotation(&d, "berth.dev/source-commit"), first);
    assert_eq!(
        annotation(&d, "berth.dev/source-path"),
        "manifests/app.yaml"
    );
    assert_eq!(annotation(&d, "berth.dev/source-line"), "1");
    let s = server.get(SERVICE).await.expect("the Service is applied");
    assert_eq!(annotation(&s, "berth.dev/source-line"), "17");
    let source = eventually(
        "status after the first sync",
        Duration::from_secs(5),
        || async {
            let s = server.source("default").await;
            if s["status"]["lastAppliedCommit"] == first.as_str() && s["status"]["objects"] == 3 {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    // The members, by their ApplySet label: the status only counts them.
    let listed = berth_code(&server.server, &["gitsource", "inventory", "default"], 0);
    let rows: Vec<Vec<&str>> = listed
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["KIND", "NAMESPACE", "NAME"],
            vec!["ConfigMap", "default", "settings"],
            vec!["Deployment", "default", "web"],
            vec!["Service", "default", "web"],
        ],
        "{listed}"
    );
    assert_eq!(condition(&source, "Synced")["status"], "True", "{source}");
    assert_eq!(condition(&source, "Stalled")["status"], "False", "{source}");
    // No node is registered: the Deployment's pods cannot be scheduled, and health says so.
    let source = eventually("health Degraded", Duration::from_secs(10), || async {
        let s = server.source("default").await;
        if s["status"]["health"] == "Degraded" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let ready = condition(&source, "Ready");
    assert_eq!(ready["reason"], "Degraded", "{source}");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.starts_with("Deployment default/web: pod web-")
            && message.contains("cannot be scheduled"),
        "{message}"
    );

    // `kubectl get gitsources` columns, from the server's Table.
    let table = server
        .http
        .client
        .get(format!(
            "{}/apis/berth.dev/v1/namespaces/default/gitsources",
            server.server.url
        ))
        .bearer_auth(&server.server.admin_token)
        .header("accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let names: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names[..6],
        ["Name", "URL", "Commit", "Sync", "Health", "Age"]
    );
    let cells = &table["rows"][0]["cells"];
    assert_eq!(cells[2], json!(&first[..7]), "{table}");
    assert_eq!(cells[3], "Synced", "{table}");

    // A new commit is applied through the file-system watch (the poll is 30 s).
    repo.write(&format!("{MANIFESTS}/settings.yaml"), &config_map("again"));
    let second = repo.commit_and_push("second");
    let took = wait_applied(&server, &second, Duration::from_secs(5)).await;
    println!(
        "commit applied {:.0} ms after the push",
        took.as_secs_f64() * 1000.0
    );
    let c = server.get(CONFIG).await.unwrap();
    assert_eq!(c["data"]["greeting"], "again");

    // An invalid manifest: nothing of the commit is applied, the status names file:line.
    repo.write(&format!("{MANIFESTS}/settings.yaml"), &config_map("never"));
    repo.write(
        &format!("{MANIFESTS}/zz-bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\ndata:\n  n: [x]\n",
    );
    let bad = repo.commit_and_push("bad");
    let source = eventually("the bad commit refused", Duration::from_secs(5), || async {
        let s = server.source("default").await;
        if s["status"]["lastAttemptedCommit"] == bad.as_str()
            && condition(&s, "Stalled")["status"] == "True"
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let message = condition(&source, "Stalled")["message"].as_str().unwrap();
    assert!(message.contains("manifests/zz-bad.yaml:6:"), "{message}");
    assert_eq!(condition(&source, "Stalled")["reason"], "InvalidManifests");
    assert_eq!(source["status"]["lastAppliedCommit"], second.as_str());
    let c = server.get(CONFIG).await.unwrap();
    assert_eq!(
        c["data"]["greeting"], "again",
        "nothing of the bad commit is applied"
    );
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/bad")
            .await
            .is_none()
    );

    // Deleting a file prunes its objects (and fixing the bad file lets the commit through).
    repo.remove(&format!("{MANIFESTS}/zz-bad.yaml"));
    repo.remove(&format!("{MANIFESTS}/settings.yaml"));
    let pruned = repo.commit_and_push("drop the settings");
    eventually("the ConfigMap pruned", Duration::from_secs(5), || async {
        match server.get(CONFIG).await {
            None => Ok(()),
            Some(c) => Err(c.to_string()),
        }
    })
    .await;
    eventually("the prune recorded", Duration::from_secs(5), || async {
        let s = server.source("default").await;
        if s["status"]["lastAppliedCommit"] == pruned.as_str() && s["status"]["objects"] == 2 {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    // Only what a commit changes is applied: the Deployment, untouched since the first
    // commit, still names it.
    assert_eq!(
        server
            .get(DEPLOY)
            .await
            .map(|d| annotation(&d, "berth.dev/source-commit").to_string()),
        Some(first.clone())
    );

    // Deleting everything is held by the guard, with a condition that says so.
    repo.remove(&format!("{MANIFESTS}/app.yaml"));
    repo.write(&format!("{MANIFESTS}/.keep"), "");
    let empty = repo.commit_and_push("delete everything");
    let source = eventually("the mass delete held", Duration::from_secs(5), || async {
        let s = server.source("default").await;
        if s["status"]["lastAttemptedCommit"] == empty.as_str()
            && condition(&s, "Stalled")["reason"] == "MassDeleteHeld"
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let message = condition(&source, "Stalled")["message"].as_str().unwrap();
    assert!(message.contains("allowMassDelete"), "{message}");
    assert!(server.get(DEPLOY).await.is_some(), "the Deployment stays");
    assert!(server.get(SERVICE).await.is_some(), "the Service stays");

    // With consent, the commit goes through.
    server
        .patch(
            "/apis/berth.dev/v1/namespaces/default/gitsources/default",
            json!({"spec": {"allowMassDelete": true}}),
        )
        .await;
    eventually("everything pruned", Duration::from_secs(5), || async {
        match (server.get(DEPLOY).await, server.get(SERVICE).await) {
            (None, None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let by_hand = server
        .get("/api/v1/namespaces/default/configmaps/by-hand")
        .await;
    assert!(
        by_hand.is_some(),
        "an object applied by hand is never touched"
    );
}

#[tokio::test]
async fn drift_is_reported_then_healed_and_webhooks_need_a_valid_signature() {
    let repo = Repo::init();
    repo.write("app.yaml", APP);
    repo.write("settings.yaml", &config_map("hello"));
    let first = repo.commit_and_push("first");
    let server = GitOps::start(&[]);
    server
        .create(
            "/api/v1/namespaces/default/secrets",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "hook"},
                "stringData": {"webhook-secret": "hook-shared-secret"}}),
        )
        .await;
    server
        .create(
            "/apis/berth.dev/v1/namespaces/default/gitsources",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource",
                "metadata": {"name": "app"},
                "spec": {"url": format!("file://{}", repo.origin().display()),
                    "interval": "1s", "webhookSecretRef": {"name": "hook"}}}),
        )
        .await;
    wait_applied(&server, &first, Duration::from_secs(10)).await;

    // A hand edit of a field git sets: OutOfSync, naming the field, within the interval.
    server.patch(DEPLOY, json!({"spec": {"replicas": 5}})).await;
    let source = eventually("OutOfSync", Duration::from_secs(5), || async {
        let s = server.source("app").await;
        if condition(&s, "Synced")["reason"] == "OutOfSync" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let drift = source["status"]["drift"].to_string();
    assert!(
        drift.contains("Deployment default/web: spec.replicas"),
        "{source}"
    );
    assert_eq!(
        server.get(DEPLOY).await.unwrap()["spec"]["replicas"],
        5,
        "not healed without selfHeal"
    );

    // selfHeal reverts it and records who lost.
    server
        .patch(
            "/apis/berth.dev/v1/namespaces/default/gitsources/app",
            json!({"spec": {"selfHeal": true}}),
        )
        .await;
    eventually("replicas healed", Duration::from_secs(5), || async {
        let d = server.get(DEPLOY).await.unwrap();
        if d["spec"]["replicas"] == 2 {
            Ok(())
        } else {
            Err(d["spec"].to_string())
        }
    })
    .await;
    let healed = eventually("a SelfHealed event", Duration::from_secs(5), || async {
        let events = server
            .get("/api/v1/namespaces/default/events")
            .await
            .unwrap();
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["reason"] == "SelfHealed")
            .cloned()
            .ok_or_else(|| "no SelfHealed event".to_string())
    })
    .await;
    assert!(
        healed["message"]
            .as_str()
            .unwrap()
            .contains("spec.replicas"),
        "{healed}"
    );
    eventually("Synced again", Duration::from_secs(5), || async {
        let s = server.source("app").await;
        if condition(&s, "Synced")["status"] == "True" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;

    // Webhooks: refused without proof of the secret, nothing done; accepted with it.
    let hook = format!("{}/hooks/git/default/app", server.server.url);
    let body = r#"{"ref":"refs/heads/main"}"#;
    let sign = |secret: &str| {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let post = |headers: Vec<(&'static str, String)>| {
        let mut r = server.http.client.post(&hook).body(body);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        r.send()
    };
    let before = server.source("app").await;
    for headers in [
        vec![],
        vec![("x-hub-signature-256", sign("wrong-secret"))],
        vec![("x-gitlab-token", "wrong-secret".to_string())],
    ] {
        let r = post(headers).await.unwrap();
        assert_eq!(r.status().as_u16(), 401);
    }
    let after = server.source("app").await;
    assert_eq!(
        before["metadata"]["annotations"], after["metadata"]["annotations"],
        "a refused call changes nothing"
    );
    let r = post(vec![("x-hub-signature-256", sign("hook-shared-secret"))])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    let source = eventually(
        "the sync request handled",
        Duration::from_secs(5),
        || async {
            let s = server.source("app").await;
            let asked = &s["metadata"]["annotations"]["berth.dev/sync-requested-at"];
            if asked.is_string() && s["status"]["lastHandledSyncRequest"] == *asked {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    assert_eq!(source["status"]["lastAppliedCommit"], first.as_str());
    // A second push within the same second is a new request, handled at once too (not at
    // the next poll).
    let first_request = source["metadata"]["annotations"]["berth.dev/sync-requested-at"].clone();
    let r = post(vec![("x-gitlab-token", "hook-shared-secret".to_string())])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    eventually(
        "the second sync request handled",
        Duration::from_secs(5),
        || async {
            let s = server.source("app").await;
            let asked = &s["metadata"]["annotations"]["berth.dev/sync-requested-at"];
            if *asked != first_request && s["status"]["lastHandledSyncRequest"] == *asked {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    // A delivery sent again (GitHub's redelivery, or a replay by someone who saw it) is
    // answered 200 and asks for no second sync: one delivery, one fetch.
    let delivery = || {
        post(vec![
            ("x-hub-signature-256", sign("hook-shared-secret")),
            (
                "x-github-delivery",
                "72d3162e-cc78-11e3-81ab-4c9367dc0958".to_string(),
            ),
        ])
    };
    assert_eq!(delivery().await.unwrap().status().as_u16(), 202);
    let handled = eventually(
        "the delivery's sync request handled",
        Duration::from_secs(5),
        || async {
            let s = server.source("app").await;
            let asked = s["metadata"]["annotations"]["berth.dev/sync-requested-at"].clone();
            if asked.is_string() && s["status"]["lastHandledSyncRequest"] == asked {
                Ok(asked)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    let replay = delivery().await.unwrap();
    assert_eq!(
        replay.status().as_u16(),
        200,
        "a replayed delivery is not a new request"
    );
    let s = server.source("app").await;
    assert_eq!(
        s["metadata"]["annotations"]["berth.dev/sync-requested-at"], handled,
        "a replayed delivery requests no sync"
    );
    assert!(!server.log().contains("hook-shared-secret"));
}

/// `berth diff --source NAME` against the test server; `(exit code, stdout, stderr)`.
fn diff_source(server: &GitOps, name: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["diff", "--source", name, "--color", "never"])
        .args([
            "--server",
            &server.server.url,
            "--token",
            &server.server.admin_token,
        ])
        .output()
        .expect("run berth diff --source");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SECRET: &str = "apiVersion: v1
kind: Secret
metadata:
  name: db
stringData:
  password: git-password-1
";

#[tokio::test]
async fn diff_source_shows_drift_with_secrets_masked_and_says_why_it_cannot() {
    let repo = Repo::init();
    repo.write("app.yaml", APP);
    repo.write("settings.yaml", &config_map("hello"));
    repo.write("secret.yaml", SECRET);
    let first = repo.commit_and_push("first");
    let server = GitOps::start(&[]);
    let url = format!("file://{}", repo.origin().display());

    let (code, _, err) = diff_source(&server, "nope");
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("gitsource default/nope does not exist"),
        "{err}"
    );

    // A source that never synced (its folder is not in the repository).
    server
        .create(
            "/apis/berth.dev/v1/namespaces/default/gitsources",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource",
                "metadata": {"name": "elsewhere"},
                "spec": {"url": url, "path": "missing/", "interval": "1s"}}),
        )
        .await;
    eventually("NotFound", Duration::from_secs(10), || async {
        let s = server.source("elsewhere").await;
        if condition(&s, "Ready")["reason"] == "NotFound" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let (code, _, err) = diff_source(&server, "elsewhere");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("has not synced yet"), "{err}");
    assert!(err.contains("missing"), "says why: {err}");

    server
        .create(
            "/apis/berth.dev/v1/namespaces/default/gitsources",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource",
                "metadata": {"name": "app"}, "spec": {"url": url, "interval": "1s"}}),
        )
        .await;
    wait_applied(&server, &first, Duration::from_secs(10)).await;
    eventually("Synced", Duration::from_secs(5), || async {
        let s = server.source("app").await;
        if condition(&s, "Synced")["status"] == "True" {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let (code, out, err) = diff_source(&server, "app");
    assert_eq!(code, 0, "no drift yet: {out}{err}");

    // Hand edits of the Secret's value and the replicas: both shown, no value of the Secret.
    use base64::Engine;
    let hand = base64::engine::general_purpose::STANDARD.encode("hand-password-2");
    server
        .patch(
            "/api/v1/namespaces/default/secrets/db",
            json!({"data": {"password": hand}}),
        )
        .await;
    server.patch(DEPLOY, json!({"spec": {"replicas": 5}})).await;
    eventually("OutOfSync on both", Duration::from_secs(5), || async {
        let s = server.source("app").await;
        let drift = s["status"]["drift"].to_string();
        if drift.contains("Secret default/db") && drift.contains("spec.replicas") {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let (code, out, err) = diff_source(&server, "app");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("-  replicas: 5") && out.contains("+  replicas: 2"),
        "{out}"
    );
    assert!(
        out.contains("+++ git-") && out.contains("v1.Secret.default.db"),
        "{out}"
    );
    let git_b64 = base64::engine::general_purpose::STANDARD.encode("git-password-1");
    for value in [
        "hand-password-2",
        "git-password-1",
        hand.as_str(),
        git_b64.as_str(),
    ] {
        assert!(
            !out.contains(value) && !err.contains(value),
            "{value} shown: {out}"
        );
    }
    assert!(err.contains("to change"), "{err}");
}

/// A loopback HTTP server in front of `git http-backend` that wants basic auth.
async fn serve_git_over_http(
    root: PathBuf,
    user: &'static str,
    password: &'static str,
) -> (String, tokio::task::JoinHandle<()>) {
    use axum::body::{Body, Bytes};
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::Response;
    use base64::Engine;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    );
    let handler = move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (root, expected) = (root.clone(), expected.clone());
        async move {
            if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str())
            {
                return Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .header("www-authenticate", "Basic realm=\"git\"")
                    .body(Body::empty())
                    .unwrap();
            }
            let mut child = tokio::process::Command::new("git")
                .arg("http-backend")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", method.as_str())
                .env("PATH_INFO", uri.path())
                .env("QUERY_STRING", uri.query().unwrap_or(""))
                .env(
                    "CONTENT_TYPE",
                    headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or(""),
                )
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("REMOTE_USER", user)
                .env("REMOTE_ADDR", "127.0.0.1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("git http-backend");
            {
                use tokio::io::AsyncWriteExt;
                let mut stdin = child.stdin.take().unwrap();
                stdin.write_all(&body).await.unwrap();
            }
            let out = child.wait_with_output().await.unwrap();
            let split = out
                .stdout
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| {
                    out.stdout
                        .windows(2)
                        .position(|w| w == b"\n\n")
                        .map(|i| (i, 2))
                })
                .expect("CGI headers");
            let head = String::from_utf8_lossy(&out.stdout[..split.0]).to_string();
            let mut response = Response::builder();
            for line in head.lines() {
                let Some((k, v)) = line.split_once(':') else {
                    continue;
                };
                if k.eq_ignore_ascii_case("status") {
                    let code: u16 = v.trim()[..3].parse().unwrap();
                    response = response.status(code);
                } else {
                    response = response.header(k.trim(), v.trim());
                }
            }
            response
                .body(Body::from(out.stdout[split.0 + split.1..].to_vec()))
                .unwrap()
        }
    };
    let app = axum::Router::new().fallback(handler);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, task)
}

#[tokio::test]
async fn a_source_behind_basic_auth_authenticates_and_the_password_is_never_shown() {
    const PASSWORD: &str = "pw-7f3a9c-never-in-logs";
    let repo = Repo::init();
    repo.write("settings.yaml", &config_map("over-http"));
    let first = repo.commit_and_push("first");
    let (url, http_task) =
        serve_git_over_http(repo.dir.path().to_path_buf(), "bob", PASSWORD).await;
    let server = GitOps::start(&[]);
    let repo_url = format!("{url}/origin.git");
    // Wrong password first: refused, and the attempt shows no secret either.
    for (name, password) in [("wrong", "pw-wrong-also-secret"), ("right", PASSWORD)] {
        server
            .create(
                "/api/v1/namespaces/default/secrets",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("creds-{name}")},
                    "stringData": {"username": "bob", "password": password}}),
            )
            .await;
    }
    server
        .create(
            "/apis/berth.dev/v1/namespaces/default/gitsources",
            json!({"apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": "remote"},
                "spec": {"url": repo_url, "interval": "1s", "secretRef": {"name": "creds-wrong"}}}),
        )
        .await;
    let refused = eventually(
        "the wrong password refused",
        Duration::from_secs(10),
        || async {
            let s = server.source("remote").await;
            if condition(&s, "Ready")["reason"] == "FetchFailed" {
                Ok(s)
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    assert!(server.get(CONFIG).await.is_none());
    server
        .patch(
            "/apis/berth.dev/v1/namespaces/default/gitsources/remote",
            json!({"spec": {"secretRef": {"name": "creds-right"}}}),
        )
        .await;
    wait_applied(&server, &first, Duration::from_secs(10)).await;
    let source = server.source("remote").await;
    let events = server
        .get("/api/v1/namespaces/default/events")
        .await
        .unwrap();
    for (what, text) in [
        ("the server log", server.log()),
        ("the refused status", refused.to_string()),
        ("the status", source.to_string()),
        ("the events", events.to_string()),
    ] {
        assert!(!text.contains(PASSWORD), "{what} shows the password");
        assert!(
            !text.contains("pw-wrong-also-secret"),
            "{what} shows the wrong password"
        );
    }
    http_task.abort();
}

/// `n` ConfigMaps named `big-{index}` from `first`, one YAML stream.
fn config_maps(first: usize, n: usize, value: &str) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: big-{i:05}\n\
                 data:\n  value: \"{value}-{i}-0123456789012345678901234567890123456789\"\n"
            )
        })
        .collect()
}

fn resource_version(object: &Value) -> &str {
    object["metadata"]["resourceVersion"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_20000_object_repository_keeps_a_small_source_and_applies_only_what_changed() {
    const FILES: usize = 40;
    const PER_FILE: usize = 500;
    let repo = Repo::init();
    for f in 0..FILES {
        repo.write(
            &format!("big/part-{f:02}.yaml"),
            &config_maps(f * PER_FILE, PER_FILE, "v0"),
        );
    }
    let first = repo.commit_and_push("20,000 ConfigMaps");
    let origin = repo.origin();
    let server = GitOps::start(&["--git", origin.to_str().unwrap()]);
    let synced = |commit: String, objects: usize| {
        let server = &server;
        async move {
            eventually(
                &format!("commit {commit} applied"),
                Duration::from_secs(300),
                || async {
                    let s = server.source("default").await;
                    if s["status"]["lastAppliedCommit"] == commit.as_str()
                        && s["status"]["objects"] == objects
                    {
                        Ok(s)
                    } else {
                        Err(format!("{:.2000}", s.to_string()))
                    }
                },
            )
            .await
        }
    };
    synced(first.clone(), FILES * PER_FILE).await;
    let size = serde_json::to_vec(&server.source("default").await)
        .unwrap()
        .len();
    println!("GitSource of 20,000 objects: {size} bytes");
    assert!(size < 64 * 1024, "the GitSource is {size} bytes");
    let path = |i: usize| format!("/api/v1/namespaces/default/configmaps/big-{i:05}");
    let untouched = server.get(&path(0)).await.expect("applied");
    let last = server
        .get(&path(FILES * PER_FILE - 1))
        .await
        .expect("applied");

    // One line changed: that object is written, no other.
    let mut part = config_maps(7 * PER_FILE, PER_FILE, "v0");
    part = part.replace("\"v0-3512-", "\"v1-3512-");
    repo.write("big/part-07.yaml", &part);
    let second = repo.commit_and_push("one line");
    synced(second.clone(), FILES * PER_FILE).await;
    let changed = server.get(&path(3512)).await.unwrap();
    assert!(
        changed["data"]["value"]
            .as_str()
            .unwrap()
            .starts_with("v1-"),
        "{changed}"
    );
    assert_eq!(annotation(&changed, "berth.dev/source-commit"), second);
    for (before, i) in [(&untouched, 0), (&last, FILES * PER_FILE - 1)] {
        let now = server.get(&path(i)).await.unwrap();
        assert_eq!(
            resource_version(&now),
            resource_version(before),
            "big-{i:05} was written again"
        );
    }
    let neighbour = server.get(&path(3513)).await.unwrap();
    assert_eq!(
        annotation(&neighbour, "berth.dev/source-commit"),
        first,
        "an unchanged object of the changed file is not applied again"
    );

    // A file removed: its 500 objects are pruned, the others stay as they were.
    repo.remove("big/part-39.yaml");
    let third = repo.commit_and_push("drop a file");
    synced(third, (FILES - 1) * PER_FILE).await;
    assert!(server.get(&path(FILES * PER_FILE - 1)).await.is_none());
    let now = server.get(&path(0)).await.unwrap();
    assert_eq!(resource_version(&now), resource_version(&untouched));
}

/// A source whose folder is a kustomize overlay: the overlay is rendered from the commit,
/// and a commit that changes only a file of its base (outside the source's folder) is
/// rendered again and applied; the overlay's other objects are not written again. A render
/// error stalls the source naming the file, and the objects keep what was applied.
#[tokio::test]
async fn a_kustomize_overlay_is_rendered_and_a_change_to_its_base_is_applied() {
    let repo = Repo::init();
    repo.write(
        "base/kustomization.yaml",
        "resources:\n- settings.yaml\n- other.yaml\n",
    );
    let other = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\ndata:\n  x: \"1\"\n";
    repo.write("base/settings.yaml", &config_map("v0"));
    repo.write("base/other.yaml", other);
    repo.write(
        "overlays/prod/kustomization.yaml",
        "resources:\n- ../../base\nnamePrefix: prod-\nlabels:\n- pairs:\n    env: prod\n",
    );
    let first = repo.commit_and_push("base and overlay");
    let origin = repo.origin();
    let server = GitOps::start(&[
        "--git",
        origin.to_str().unwrap(),
        "--git-path",
        "overlays/prod",
    ]);
    let settings = "/api/v1/namespaces/default/configmaps/prod-settings";
    let applied = |commit: String| {
        let server = &server;
        async move {
            eventually(
                &format!("commit {commit} applied"),
                Duration::from_secs(60),
                || async {
                    let s = server.source("default").await;
                    if s["status"]["lastAppliedCommit"] == commit.as_str() {
                        Ok(s)
                    } else {
                        Err(format!("{:.2000}", s.to_string()))
                    }
                },
            )
            .await
        }
    };
    applied(first.clone()).await;
    let cm = server.get(settings).await.expect("prod-settings applied");
    assert_eq!(cm["data"]["greeting"], "v0", "{cm}");
    assert_eq!(cm["metadata"]["labels"]["env"], "prod", "{cm}");
    assert!(
        server
            .get("/api/v1/namespaces/default/configmaps/settings")
            .await
            .is_none(),
        "the base alone is not applied: the source's folder is the overlay"
    );
    let other_before = server
        .get("/api/v1/namespaces/default/configmaps/prod-other")
        .await
        .expect("prod-other applied");

    // Only a base file changes: the overlay is rendered again.
    repo.write("base/settings.yaml", &config_map("v1"));
    let second = repo.commit_and_push("base changes");
    applied(second.clone()).await;
    let cm = server.get(settings).await.unwrap();
    assert_eq!(cm["data"]["greeting"], "v1", "{cm}");
    assert_eq!(annotation(&cm, "berth.dev/source-commit"), second);
    let other_now = server
        .get("/api/v1/namespaces/default/configmaps/prod-other")
        .await
        .unwrap();
    assert_eq!(
        resource_version(&other_now),
        resource_version(&other_before),
        "an object whose rendering did not change is not written again"
    );

    // A broken base: the source stalls naming the file; nothing applied changes.
    repo.write(
        "base/kustomization.yaml",
        "resources:\n- settings.yaml\n- missing.yaml\n",
    );
    let third = repo.commit_and_push("broken base");
    let stalled = eventually(
        "the broken render stalls the source",
        Duration::from_secs(60),
        || async {
            let s = server.source("default").await;
            if s["status"]["lastAttemptedCommit"] == third.as_str()
                && condition(&s, "Stalled")["status"] == "True"
            {
                Ok(s)
            } else {
                Err(format!("{:.2000}", s.to_string()))
            }
        },
    )
    .await;
    let message = condition(&stalled, "Stalled")["message"].as_str().unwrap();
    assert!(
        message.contains("base/kustomization.yaml") && message.contains("missing.yaml"),
        "{message}"
    );
    assert_eq!(
        stalled["status"]["lastAppliedCommit"],
        second.as_str(),
        "{stalled}"
    );
    let cm = server.get(settings).await.unwrap();
    assert_eq!(cm["data"]["greeting"], "v1");
}
