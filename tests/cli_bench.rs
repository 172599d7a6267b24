//! Benchmark, not a timed test (run with `--ignored --nocapture`, release build): `berth get
//! pods` and `kubectl get pods` of the same 1,000 pods on the same live `berth server`, run
//! alternately, each process timed from spawn to exit; medians and their ratio.

pub mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::api::Server;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(program: &str, args: &[&str], server: &Server) -> (Duration, usize) {
    let start = Instant::now();
    let out = Command::new(program)
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.dir.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the client");
    let elapsed = start.elapsed();
    assert!(out.status.success(), "{program} {args:?} failed");
    (
        elapsed,
        String::from_utf8_lossy(&out.stdout).lines().count(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: cargo test --release --test cli_bench -- --ignored --nocapture"]
async fn get_pods_berth_vs_kubectl() {
    let server = Server::start();
    let http = server.client();
    let (token, base) = (server.admin_token.clone(), server.url.clone());
    let n = 1_000;
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            async move {
                let pod = json!({"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("pod-{i:04}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "berth-test/busybox:1.36"}]}});
                let r = http
                    .post(format!("{base}/api/v1/namespaces/default/pods"))
                    .bearer_auth(&token)
                    .json(&pod)
                    .send()
                    .await
                    .expect("create pod");
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    let berth = env!("CARGO_BIN_EXE_berth");
    let runs = 15;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    // One warm-up each (kubectl writes its discovery cache on the first run).
    time(berth, &["get", "pods"], &server);
    time("kubectl", &["get", "pods"], &server);
    for _ in 0..runs {
        let (d, lines) = time(berth, &["get", "pods"], &server);
        assert_eq!(lines, n + 1, "berth prints a header and one row per pod");
        ours.push(d);
        let (d, lines) = time("kubectl", &["get", "pods"], &server);
        assert_eq!(lines, n + 1);
        theirs.push(d);
    }
    let (ours, theirs) = (median(ours), median(theirs));
    println!(
        "get pods ({n} pods, median of {runs}): berth {:.0} ms, kubectl {:.0} ms, ratio {:.2}x",
        ours.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() * 1000.0,
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}
