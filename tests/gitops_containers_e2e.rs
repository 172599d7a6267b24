//! GitOps with real containers: a `berth server` and one `berth agent` on Docker follow a local
//! bare repository holding a Deployment of busybox `httpd` pods (serving an env value) and a
//! Service. What a user of Argo CD or Flux would check by hand: the pods really run and serve,
//! a commit rolls them, a `kubectl scale` behind git's back is drift that `berth diff --source`
//! shows and selfHeal reverts, an autoscaler's count is left alone, and a broken commit leaves
//! the pods running while the source says which `file:line` is wrong. Containers carry the
//! test's label and are removed on drop, also when the test fails.

pub mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;
use support::api::{Server, stderr, stdout};
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime};
use support::git::Repo;
use support::services::{HTTP_PORT, pod_ip};
use support::{accept, eventually};

/// The Deployment and Service the repository holds; `replicas` is text so a commit can break it.
fn app(greeting: &str, replicas: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: httpd
        image: {TEST_IMAGE}
        imagePullPolicy: Never
        env:
        - {{name: GREETING, value: {greeting}}}
        command: [sh, -c, 'mkdir -p /www && echo \"$GREETING\" > /www/index.html && touch /tmp/ready && exec httpd -f -p {HTTP_PORT} -h /www']
        ports:
        - {{name: http, containerPort: {HTTP_PORT}}}
        readinessProbe:
          exec: {{command: [cat, /tmp/ready]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{port: 80, targetPort: http}}
"
    )
}

/// The line of `replicas:` in [`app`].
const REPLICAS_LINE: usize = 6;

fn sources(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1", "GitSource");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "gitsources");
    Api::namespaced_with(client.clone(), "default", &resource)
}

async fn source_status(client: &kube::Client) -> Value {
    let source = sources(client).get("app").await.expect("get the GitSource");
    source.data["status"].clone()
}

fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .unwrap_or(&Value::Null)
}

/// Pods of the app that are not terminating.
async fn web_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels("app=web"))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

fn uid(p: &Pod) -> String {
    p.metadata.uid.clone().unwrap_or_default()
}

fn greeting_of(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.env.as_ref())
        .and_then(|e| e.iter().find(|v| v.name == "GREETING"))
        .and_then(|v| v.value.clone())
        .unwrap_or_default()
}

/// Waits until exactly `count` pods of the app run, all ready and all serving `greeting`,
/// each with its container in Docker; returns their uids.
async fn serving(pods: &Api<Pod>, count: usize, greeting: &str) -> BTreeSet<String> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("http client");
    eventually(
        &format!("{count} pods serving {greeting:?}"),
        Duration::from_secs(90),
        || async {
            let list = web_pods(pods).await;
            let seen: Vec<String> = list
                .iter()
                .map(|p| {
                    format!(
                        "{} {} ready={} {}",
                        uid(p),
                        phase(p),
                        all_ready(p),
                        greeting_of(p)
                    )
                })
                .collect();
            if list.len() != count
                || !list
                    .iter()
                    .all(|p| all_ready(p) && greeting_of(p) == greeting)
            {
                return Err(format!("{seen:?}"));
            }
            for p in &list {
                if pod_container_ids(&uid(p), Some("httpd")).is_empty() {
                    return Err(format!("no Docker container for pod {}", uid(p)));
                }
                let url = format!("http://{}:{HTTP_PORT}/", pod_ip(p));
                let body = match http.get(&url).send().await {
                    Ok(r) => r.text().await.unwrap_or_default(),
                    Err(e) => return Err(format!("{url}: {e}")),
                };
                if body.trim() != greeting {
                    return Err(format!("{url} served {body:?}"));
                }
            }
            Ok(list.iter().map(uid).collect())
        },
    )
    .await
}

/// `berth diff --source app` against the server.
fn diff_source(server: &Server) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["diff", "--source", "app", "--color", "never"])
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("run berth diff --source")
}

/// The `-`/`+` lines of a unified diff, headers left out.
fn changed_lines(diff: &str) -> Vec<String> {
    diff.lines()
        .filter(|l| (l.starts_with('-') || l.starts_with('+')) && !l.starts_with("---"))
        .filter(|l| !l.starts_with("+++"))
        .map(str::to_string)
        .collect()
}

async fn replicas(deployments: &Api<Deployment>) -> i32 {
    deployments
        .get("web")
        .await
        .expect("get the Deployment")
        .spec
        .replicas
        .unwrap_or(0)
}

#[tokio::test]
async fn a_watched_repository_runs_rolls_heals_and_survives_a_broken_commit_on_real_containers() {
    runtime().await;
    let scope = TestScope::new("e2e-gitops");
    let repo = Repo::init();
    repo.write("manifests/app.yaml", &app("hello", "2"));
    repo.write("README.md", "the app\n");
    let first = repo.commit_and_push("web: two httpd pods");
    let server = Server::start();
    let _agent = Agent::start(&server, "node-a", &scope, &[]);
    let client = admin(&server).await;
    let source = format!(
        "apiVersion: berth.dev/v1
kind: GitSource
metadata: {{name: app, namespace: default}}
spec: {{url: 'file://{}', path: manifests, interval: 1s}}
",
        repo.origin().display()
    );
    let applied = server.kubectl_stdin(&["apply", "-f", "-"], Some(&source));
    assert!(applied.status.success(), "{}", stderr(&applied));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");

    // The commit runs: two pods serving its env value, and the source says Healthy.
    let v1_pods = serving(&pods, 2, "hello").await;
    eventually(
        "Healthy at the first commit",
        Duration::from_secs(30),
        || async {
            let s = source_status(&client).await;
            if s["lastAppliedCommit"] == first.as_str()
                && s["health"] == "Healthy"
                && condition(&s, "Ready")["status"] == "True"
            {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    let in_sync = diff_source(&server);
    assert_eq!(in_sync.status.code(), Some(0), "{}", stderr(&in_sync));

    // A commit that changes the env value rolls the pods: new ones serve the new value.
    repo.write("manifests/app.yaml", &app("bonjour", "2"));
    let second = repo.commit_and_push("web: greet in French");
    let v2_pods = serving(&pods, 2, "bonjour").await;
    assert!(v1_pods.is_disjoint(&v2_pods), "pods were replaced");
    for old in &v1_pods {
        eventually(
            "old containers removed",
            Duration::from_secs(30),
            || async {
                let left = pod_container_ids(old, Some("httpd"));
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{left:?}"))
                }
            },
        )
        .await;
    }
    eventually(
        "Healthy at the second commit",
        Duration::from_secs(30),
        || async {
            let s = source_status(&client).await;
            if s["lastAppliedCommit"] == second.as_str() && s["health"] == "Healthy" {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;

    // `kubectl scale` behind git's back: OutOfSync naming the field, and `berth diff --source`
    // shows just that change, git's count against the live one.
    server.kubectl_ok(&["scale", "deployment/web", "--replicas=4"]);
    let drifted = eventually("OutOfSync", Duration::from_secs(10), || async {
        let s = source_status(&client).await;
        if condition(&s, "Synced")["reason"] == "OutOfSync" {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert!(
        drifted["drift"]
            .to_string()
            .contains("Deployment default/web: spec.replicas"),
        "{drifted}"
    );
    let diff = diff_source(&server);
    assert_eq!(diff.status.code(), Some(1), "{}", stderr(&diff));
    let text = stdout(&diff);
    println!("berth diff --source app:\n{text}{}", stderr(&diff));
    assert!(
        text.contains(&format!("+++ git-{}/", &second[..12])),
        "{text}"
    );
    assert_eq!(
        changed_lines(&text),
        ["-  replicas: 4", "+  replicas: 2"],
        "{text}"
    );
    assert_eq!(
        replicas(&deployments).await,
        4,
        "not healed without selfHeal"
    );
    serving(&pods, 4, "bonjour").await;

    // selfHeal reverts the count, and the extra pods go.
    server.kubectl_ok(&[
        "patch",
        "gitsource",
        "app",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"selfHeal":true}}"#,
    ]);
    serving(&pods, 2, "bonjour").await;
    assert_eq!(replicas(&deployments).await, 2);
    let healed = diff_source(&server);
    assert_eq!(healed.status.code(), Some(0), "{}", stdout(&healed));

    // An autoscaler owns the count once the Deployment says so: selfHeal leaves it, no drift.
    server.kubectl_ok(&[
        "annotate",
        "deployment/web",
        "berth.dev/replicas-managed-by=test-autoscaler",
    ]);
    server.kubectl_ok(&["scale", "deployment/web", "--replicas=3"]);
    let scaled = serving(&pods, 3, "bonjour").await;
    // A sync asked for after the scale, and handled: its pass saw the count and left it.
    let asked = format!("after-autoscale-{}", std::process::id());
    server.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "gitsource/app",
        &format!("berth.dev/sync-requested-at={asked}"),
    ]);
    eventually(
        "the sync asked after the scale handled",
        Duration::from_secs(30),
        || async {
            let s = source_status(&client).await;
            accept(s, |s| s["lastHandledSyncRequest"] == asked.as_str())
        },
    )
    .await;
    assert_eq!(
        replicas(&deployments).await,
        3,
        "the autoscaler's count was reverted"
    );
    let s = source_status(&client).await;
    assert_eq!(condition(&s, "Synced")["status"], "True", "{s}");
    let autoscaled = diff_source(&server);
    assert_eq!(autoscaled.status.code(), Some(0), "{}", stdout(&autoscaled));

    // A commit that breaks the manifest: nothing applied, Stalled names file:line, and the
    // pods keep running untouched.
    let generation = |d: Deployment| d.metadata.generation.unwrap_or(0);
    let before = generation(deployments.get("web").await.expect("get the Deployment"));
    repo.write("manifests/app.yaml", &app("salut", "two"));
    let broken = repo.commit_and_push("web: a typo");
    let stalled = eventually("Stalled", Duration::from_secs(10), || async {
        let s = source_status(&client).await;
        if s["lastAttemptedCommit"] == broken.as_str()
            && condition(&s, "Stalled")["status"] == "True"
        {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    let message = condition(&stalled, "Stalled")["message"].to_string();
    assert!(
        message.contains(&format!("manifests/app.yaml:{REPLICAS_LINE}")),
        "{message}"
    );
    assert_eq!(stalled["lastAppliedCommit"], second.as_str());
    // A sync asked for after the stall is handled too, and refused again: a second pass over
    // the broken commit has run to its end (the marker is set on refusal as on success).
    let asked_again = format!("after-broken-{}", std::process::id());
    server.kubectl_ok(&[
        "annotate",
        "--overwrite",
        "gitsource/app",
        &format!("berth.dev/sync-requested-at={asked_again}"),
    ]);
    let handled = eventually(
        "the sync asked after the broken commit handled",
        Duration::from_secs(30),
        || async {
            let s = source_status(&client).await;
            accept(s, |s| s["lastHandledSyncRequest"] == asked_again.as_str())
        },
    )
    .await;
    assert_eq!(
        condition(&handled, "Stalled")["status"],
        "True",
        "{handled}"
    );
    assert_eq!(handled["lastAppliedCommit"], second.as_str());
    // The refused attempts wrote nothing: the Deployment's generation is what it was before
    // the commit (a spec change would have raised it), and its controller has seen all of it.
    let d = eventually(
        "the Deployment controller caught up",
        Duration::from_secs(30),
        || async {
            let d = deployments.get("web").await.expect("get the Deployment");
            let observed = d.status.as_ref().and_then(|s| s.observed_generation);
            accept(d, |d| observed >= d.metadata.generation)
        },
    )
    .await;
    assert_eq!(
        d.metadata.generation,
        Some(before),
        "the broken commit changed the Deployment"
    );
    assert_eq!(
        serving(&pods, 3, "bonjour").await,
        scaled,
        "the pods were touched"
    );
}
