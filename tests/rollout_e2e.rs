//! A rolling update on real agents while traffic flows: three agents, a 6-replica Deployment of
//! `httpd` pods with `maxUnavailable: 0` behind a NodePort Service, and a prober that, ten times
//! a second, reads the Service's ready endpoints and sends six requests through its ClusterIP
//! and six through its NodePort, as clients reach it. The image changes, then `berth rollout
//! undo` brings the previous template back; at no moment are fewer than 6 endpoints ready and
//! no request fails.

pub mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;
use support::api::Server;
use support::cluster::*;
use support::docker::{TEST_IMAGE, TestScope, runtime};
use support::eventually;
use support::services::httpd_spec;

/// A second name for the test image, so the template's image really changes; removed on drop.
struct ImageTag(String);

impl ImageTag {
    fn new(name: &str) -> ImageTag {
        let ok = Command::new("docker")
            .args(["tag", TEST_IMAGE, name])
            .status()
            .expect("docker CLI")
            .success();
        assert!(ok, "docker tag {TEST_IMAGE} {name}");
        ImageTag(name.to_string())
    }
}

impl Drop for ImageTag {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rmi", "--no-prune", &self.0])
            .output();
    }
}

/// What the prober saw.
#[derive(Debug, Default)]
struct Probed {
    rounds: usize,
    requests: usize,
    failures: Vec<String>,
    fewest_ready: usize,
    /// The Endpoints when fewer than 6 were ready, if that happened.
    dip: Option<String>,
}

fn ready_ips(endpoints: &Endpoints) -> Vec<String> {
    endpoints
        .subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

/// Every 100 ms until `stop`: the ready endpoints, and six requests to each of `urls`.
async fn probe(endpoints: Api<Endpoints>, urls: Vec<String>, stop: Arc<AtomicBool>) -> Probed {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .no_proxy()
        .build()
        .expect("http client");
    let mut seen = Probed {
        fewest_ready: usize::MAX,
        ..Probed::default()
    };
    while !stop.load(Ordering::Relaxed) {
        let ips = match endpoints.get("roll").await {
            Ok(e) => {
                let ips = ready_ips(&e);
                if ips.len() < 6 && seen.dip.is_none() {
                    seen.dip = Some(format!("{:?}", e.subsets));
                }
                ips
            }
            Err(e) => {
                seen.failures.push(format!("read the endpoints: {e}"));
                Vec::new()
            }
        };
        seen.rounds += 1;
        seen.fewest_ready = seen.fewest_ready.min(ips.len());
        let requests = urls.iter().flat_map(|url| [url; 6]).map(|url| {
            let http = http.clone();
            async move {
                match http.get(url).send().await {
                    Ok(r) if r.status().is_success() => match r.text().await {
                        Ok(body) if body.starts_with("roll-") => Ok(()),
                        Ok(body) => Err(format!("{url}: answered {body:?}")),
                        Err(e) => Err(format!("{url}: {e}")),
                    },
                    Ok(r) => Err(format!("{url}: {}", r.status())),
                    Err(e) => Err(format!("{url}: {e}")),
                }
            }
        });
        for result in futures::future::join_all(requests).await {
            seen.requests += 1;
            if let Err(e) = result {
                seen.failures.push(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    seen
}

/// Waits until the Deployment's status says every replica runs `image`, ready and available.
async fn rolled_out(deployments: &Api<Deployment>, pods: &Api<Pod>, image: &str) -> Duration {
    let started = Instant::now();
    let what = format!("the rollout to {image}");
    eventually(&what, Duration::from_secs(120), || async {
        let d = deployments.get("roll").await.expect("get the deployment");
        let s = d.status.clone().unwrap_or_default();
        let generation = d.metadata.generation.unwrap_or(0);
        let counts = (
            s.replicas.unwrap_or(0),
            s.updated_replicas.unwrap_or(0),
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        );
        let images: Vec<String> = pods
            .list(&ListParams::default().labels("app=roll"))
            .await
            .expect("list pods")
            .items
            .iter()
            .filter_map(|p| p.spec.as_ref()?.containers.first()?.image.clone())
            .collect();
        let done = s.observed_generation.unwrap_or(0) >= generation
            && counts == (6, 6, 6, 6)
            && images.len() == 6
            && images.iter().all(|i| i == image);
        if done {
            Ok(())
        } else {
            Err(format!("status {counts:?}, pod images {images:?}"))
        }
    })
    .await;
    started.elapsed()
}

#[tokio::test]
async fn a_rolling_update_and_its_undo_keep_six_ready_and_fail_no_request() {
    runtime().await;
    let scope = TestScope::new("e2e-rollout");
    let v2 = ImageTag::new(&format!("berth-test/roll:{}", scope.id));
    let server = Server::start();
    let agents: Vec<Agent> = ["node-a", "node-b", "node-c"]
        .into_iter()
        .map(|n| Agent::start(&server, n, &scope, &[]))
        .collect();
    let client = admin(&server).await;
    let service: Service = create(
        &client,
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "roll"},
               "spec": {"type": "NodePort", "selector": {"app": "roll"},
                        "ports": [{"port": 80, "targetPort": "http"}]}}),
    )
    .await;
    let spec = service.spec.expect("the Service's spec");
    let cluster_ip = spec.cluster_ip.expect("a ClusterIP");
    let node_port = spec.ports.expect("ports")[0]
        .node_port
        .expect("an allocated nodePort");
    let urls = vec![
        format!("http://{cluster_ip}/"),
        format!("http://127.0.0.1:{node_port}/"),
    ];
    let _: Deployment = create(
        &client,
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "roll"},
               "spec": {"replicas": 6,
                        "selector": {"matchLabels": {"app": "roll"}},
                        "strategy": {"type": "RollingUpdate",
                                     "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 2}},
                        "template": {"metadata": {"labels": {"app": "roll"}},
                                     "spec": httpd_spec()}}}),
    )
    .await;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let endpoints: Api<Endpoints> = Api::namespaced(client.clone(), "default");
    rolled_out(&deployments, &pods, TEST_IMAGE).await;
    let first = endpoints.get("roll").await.expect("endpoints");
    assert_eq!(ready_ips(&first).len(), 6, "{first:?}");
    // Every agent's rules reach the pods before the traffic is counted.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    for url in &urls {
        eventually(
            &format!("{url} answering"),
            Duration::from_secs(30),
            || async { http.get(url).send().await?.error_for_status()?.text().await },
        )
        .await;
    }

    let stop = Arc::new(AtomicBool::new(false));
    let prober = tokio::spawn(probe(endpoints.clone(), urls.clone(), stop.clone()));

    // A new image: the pods are replaced a surge at a time, each old one only once a new one
    // is ready.
    let patch = json!({"spec": {"template": {"spec": {"containers": [
        {"name": "httpd", "image": v2.0}]}}}});
    deployments
        .patch("roll", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch the image");
    let update = rolled_out(&deployments, &pods, &v2.0).await;

    // `berth rollout undo` brings the previous template back, rolled the same way.
    let undo = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["rollout", "undo", "deployment/roll"])
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("run berth rollout undo");
    assert!(
        undo.status.success(),
        "berth rollout undo: {}",
        String::from_utf8_lossy(&undo.stderr)
    );
    let back = rolled_out(&deployments, &pods, TEST_IMAGE).await;

    stop.store(true, Ordering::Relaxed);
    let seen = prober.await.expect("the prober");
    println!(
        "update {:.1} s, undo {:.1} s; {} probe rounds, {} requests, fewest ready endpoints {}",
        update.as_secs_f64(),
        back.as_secs_f64(),
        seen.rounds,
        seen.requests,
        seen.fewest_ready
    );
    assert!(
        seen.failures.is_empty(),
        "failed requests: {:?}",
        seen.failures
    );
    assert!(
        seen.fewest_ready >= 6,
        "only {} ready at one moment: {}",
        seen.fewest_ready,
        seen.dip.as_deref().unwrap_or_default()
    );
    assert!(seen.rounds >= 20, "the prober ran {} rounds", seen.rounds);
    drop(agents);
}
