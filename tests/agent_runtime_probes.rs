//! Probes (exec, httpGet, tcpSocket) against a real container on the real Docker engine.

pub mod support;

use std::time::Duration;

use berth::daemons::agent::pod::probe::{ProbeOutcome, run_probe};
use k8s_openapi::api::core::v1::Probe;
use support::docker::{TEST_IMAGE, TestScope, runtime, sh};
use support::poll;
use support::worker::{PodAgent, container_id};

fn probe(json: serde_json::Value) -> Probe {
    serde_json::from_value(json).expect("a valid probe")
}

#[tokio::test]
async fn exec_http_and_tcp_probes_pass_and_fail_like_the_kubelet() {
    let rt = runtime().await;
    let scope = TestScope::new("probes");
    let pod = scope.pod(
        "probed",
        serde_json::json!({
            "containers": [{"name": "web", "image": TEST_IMAGE, "imagePullPolicy": "Never",
                "command": sh("mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"),
                "ports": [{"name": "http", "containerPort": 8080}]}]
        }),
    );
    let status = PodAgent::new(&rt, &scope.context(), &pod).start().await;
    let web = container_id(&status, "web").expect("the container runs");
    let ip = status.pod_ip.clone().expect("the sandbox has an IP");
    let ports = vec![("http".to_string(), 8080u16)];
    let check = |p: Probe| {
        let (rt, web, ip, ports) = (&rt, &web, &ip, &ports);
        async move { run_probe(rt, web, Some(ip), ports, &p).await }
    };

    let http_ok = probe(serde_json::json!({"httpGet": {"path": "/index.html", "port": "http"}}));
    let up = poll(Duration::from_secs(10), || async {
        (check(http_ok.clone()).await == ProbeOutcome::Success).then_some(())
    })
    .await
    .ok();
    assert!(up.is_some(), "httpGet on a served path passes");

    let missing = check(probe(
        serde_json::json!({"httpGet": {"path": "/missing", "port": 8080}}),
    ))
    .await;
    assert!(
        matches!(missing, ProbeOutcome::Failure(ref m) if m.contains("404")),
        "{missing:?}"
    );

    assert_eq!(
        check(probe(serde_json::json!({"tcpSocket": {"port": 8080}}))).await,
        ProbeOutcome::Success
    );
    let closed = check(probe(serde_json::json!({"tcpSocket": {"port": 9}}))).await;
    assert!(matches!(closed, ProbeOutcome::Failure(_)), "{closed:?}");

    assert_eq!(
        check(probe(
            serde_json::json!({"exec": {"command": ["test", "-f", "/www/index.html"]}})
        ))
        .await,
        ProbeOutcome::Success
    );
    let failed = check(probe(
        serde_json::json!({"exec": {"command": ["sh", "-c", "echo sick; exit 2"]}}),
    ))
    .await;
    assert_eq!(
        failed,
        ProbeOutcome::Failure("exec probe exited with 2: sick".into())
    );
}
