//! Benchmark, not a timed test (run with `--ignored --nocapture`, release build): create
//! 10,000 ConfigMaps (throughput), list 10,000 pods (p50/p99), 100 watchers receiving 1,000
//! changes (p99 delivery latency), and the server's RSS with 10,000+ objects — against a live
//! `berth server` over TLS, as clients see it.

pub mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::json;
use support::api::Server;

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: cargo test --release --test api_bench -- --ignored --nocapture"]
async fn api_benchmark() {
    let server = Server::start();
    let http = server.client();
    let token = server.admin_token.clone();
    let base = server.url.clone();
    let n = 10_000;

    // 1. Create 10,000 ConfigMaps, 32 at a time.
    let start = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            async move {
                let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}});
                let r = http.post(format!("{base}/api/v1/namespaces/default/configmaps")).bearer_auth(&token).json(&cm).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "create {n} configmaps: {secs:.1} s, {:.0} creates/s",
        n as f64 / secs
    );

    let rss = rss_mib(server.pid());
    println!("server RSS with 10,000 objects: {rss:.0} MiB");
    // No reference runs here (no other API server to time against): figures and targets.
    println!("RESULT api-create {:.0}creates/s - - -", n as f64 / secs);
    println!("RESULT api-rss-10000-objects {rss:.0}MiB - - <150MiB");

    // 2. 10,000 pods, then list them all 30 times.
    futures::stream::iter(0..n)
        .map(|i| {
            let (http, token, base) = (http.clone(), token.clone(), base.clone());
            async move {
                let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{i}"), "labels": {"app": "bench"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}});
                let r = http.post(format!("{base}/api/v1/namespaces/default/pods")).bearer_auth(&token).json(&pod).send().await.unwrap();
                assert_eq!(r.status(), 201);
            }
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    println!(
        "server RSS with 20,000 objects, before any list: {:.0} MiB",
        rss_mib(server.pid())
    );
    let mut lat = Vec::new();
    for _ in 0..30 {
        let t = Instant::now();
        let body = http
            .get(format!("{base}/api/v1/pods"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(body.len() > 1_000_000);
    }
    lat.sort_by(f64::total_cmp);
    println!(
        "list 10,000 pods: p50 {:.0} ms, p99 {:.0} ms",
        pct(&lat, 0.5),
        pct(&lat, 0.99)
    );
    println!(
        "RESULT api-list-10000-pods-p99 {:.0}ms - - <300ms",
        pct(&lat, 0.99)
    );
    println!(
        "server RSS with 20,000 objects, after the lists: {:.0} MiB",
        rss_mib(server.pid())
    );

    // 3. 100 watchers, 1,000 changes; delivery latency from the write's reply to each event.
    let rv: String = http
        .get(format!(
            "{base}/api/v1/namespaces/default/configmaps?limit=1"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json::<serde_json::Value>()
        .await
        .unwrap()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let sent: Arc<std::sync::Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let changes = 1000;
    let mut watchers = Vec::new();
    for _ in 0..100 {
        let resp = http
            .get(format!("{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&fieldSelector=metadata.name%3Dwatched"))
            .bearer_auth(&token).send().await.unwrap();
        let sent = sent.clone();
        watchers.push(tokio::spawn(async move {
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut got = Vec::new();
            let mut values = Vec::new();
            while got.len() < changes {
                // Every watcher must see every change: a stream that ends or stalls fails the
                // benchmark instead of shrinking the sample the percentiles are taken over.
                let chunk = match tokio::time::timeout(Duration::from_secs(60), stream.next()).await
                {
                    Ok(Some(Ok(chunk))) => chunk,
                    other => panic!(
                        "a watcher got {} of {changes} events, then {}",
                        got.len(),
                        match other {
                            Err(_) => "nothing for 60 s".to_string(),
                            Ok(None) => "the stream ended".to_string(),
                            Ok(Some(Err(e))) => format!("an error: {e}"),
                            Ok(Some(Ok(_))) => unreachable!(),
                        }
                    ),
                };
                buf.extend_from_slice(&chunk);
                while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=p).collect();
                    let now = Instant::now();
                    let ev: serde_json::Value = serde_json::from_slice(&line).unwrap();
                    let v = ev["object"]["data"]["v"].as_str().unwrap_or("").to_string();
                    values.push(v.parse::<usize>().unwrap_or(usize::MAX));
                    let at = loop {
                        if let Some(at) = sent.lock().unwrap().get(&v).copied() {
                            break at;
                        }
                        tokio::task::yield_now().await;
                    };
                    got.push(now.saturating_duration_since(at).as_secs_f64() * 1000.0);
                }
            }
            assert_eq!(
                values,
                (0..changes).collect::<Vec<_>>(),
                "a watcher must see every change once, in order"
            );
            got
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let url = format!("{base}/api/v1/namespaces/default/configmaps");
    let write_start = Instant::now();
    for i in 0..changes {
        let v = i.to_string();
        sent.lock().unwrap().insert(v.clone(), Instant::now());
        let r = if i == 0 {
            http.post(&url).bearer_auth(&token).json(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"v": v}})).send().await.unwrap()
        } else {
            http.patch(format!("{url}/watched"))
                .bearer_auth(&token)
                .header("content-type", "application/merge-patch+json")
                .body(json!({"data": {"v": v}}).to_string())
                .send()
                .await
                .unwrap()
        };
        assert!(r.status().is_success());
    }
    let mut all = Vec::new();
    for w in watchers {
        all.extend(w.await.unwrap());
    }
    assert_eq!(all.len(), 100 * changes, "every watcher saw every change");
    all.sort_by(f64::total_cmp);
    println!(
        "100 watchers x {changes} changes ({:.1} s of writes): {} events delivered, p50 {:.1} ms, p99 {:.1} ms",
        write_start.elapsed().as_secs_f64(),
        all.len(),
        pct(&all, 0.5),
        pct(&all, 0.99)
    );
    println!("RESULT api-watch-p99 {:.1}ms - - <50ms", pct(&all, 0.99));
    println!(
        "server RSS after the watch run: {:.0} MiB",
        rss_mib(server.pid())
    );
}
