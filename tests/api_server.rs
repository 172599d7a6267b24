//! `berth server` as a process: secure by default (TLS with its own CA, 401 without a token,
//! 403 for agents outside their rights), loopback-only plain HTTP, tokens kept out of logs,
//! graceful shutdown on SIGTERM, and Secrets encrypted at rest with key rotation.

pub mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use berth::cluster::store::Store;
use berth::cluster::store::sqlite::{SqliteOptions, SqliteStore};
use serde_json::json;
use support::api::{Server, stderr};
use support::process::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_tokens_and_agent_rights() {
    let server = Server::start();
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let kubeconfig = std::fs::read_to_string(&server.kubeconfig).unwrap();
    assert!(kubeconfig.contains(&server.url) && kubeconfig.contains("certificate-authority-data"));
    let http = server.client();
    let url = |p: &str| format!("{}{p}", server.url);

    for public in ["/healthz", "/readyz", "/livez", "/version"] {
        let r = http.get(url(public)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{public}");
    }
    let r = http.get(url("/api/v1/namespaces")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["kind"], "Status");
    let r = http
        .get(url("/api/v1/namespaces"))
        .bearer_auth("berth-admin.guess")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(url("/api/v1/namespaces"))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let agent = &server.agent_token;
    let r = http
        .get(url("/api/v1/pods"))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "agents read pods");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}});
    let r = http
        .post(url("/api/v1/nodes"))
        .bearer_auth(agent)
        .json(&node)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "agents register nodes");
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let r = http
        .post(url("/api/v1/namespaces/default/configmaps"))
        .bearer_auth(agent)
        .json(&cm)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(url("/apis/apps/v1/deployments"))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(url("/metrics"))
        .bearer_auth(agent)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);

    // A client that does not trust berth's CA refuses the connection.
    let untrusting = reqwest::Client::builder().build().unwrap();
    assert!(untrusting.get(url("/healthz")).send().await.is_err());
    // Plain HTTP to the TLS port does not get an API answer.
    let plain = url("/healthz").replace("https://", "http://");
    let r = reqwest::get(plain).await;
    assert!(r.is_err() || r.unwrap().status() != 200);
}

#[test]
fn insecure_http_is_refused_off_loopback_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "server",
            "--insecure-http",
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("loopback"), "{err}");
    assert!(
        !dir.path().join("tokens").exists(),
        "nothing is created before the flags are checked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_never_show_tokens_and_sigterm_drains_open_watches() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
    command
        .args([
            "server",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "debug")
        .stderr(Stdio::piped());
    let mut server = Process::spawn("berth server", &mut command);
    let url = server.wait_line("its URL", Duration::from_secs(60), |line| {
        line.strip_prefix("listening on ").map(str::to_string)
    });
    assert!(url.starts_with("http://127.0.0.1:"));
    let token = support::api::read_trimmed(&dir.path().join("tokens/admin"));
    let http = reqwest::Client::new();
    for _ in 0..3 {
        http.get(format!("{url}/api/v1/namespaces"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
    }
    http.get(format!("{url}/api/v1/namespaces"))
        .bearer_auth("berth-admin.not-the-token")
        .send()
        .await
        .unwrap();
    let watch = http
        .get(format!(
            "{url}/api/v1/namespaces/default/configmaps?watch=1"
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let started = std::time::Instant::now();
    server.signal("TERM");
    let body = tokio::time::timeout(Duration::from_secs(15), watch.text()).await;
    assert!(body.is_ok(), "the open watch ended on shutdown");
    let status = server
        .wait_exit(Duration::from_secs(15).saturating_sub(started.elapsed()))
        .expect("the server exits within 15 s of SIGTERM");
    assert!(status.success(), "{status:?}");
    let logs = server.stderr_lines().join("\n");
    assert!(!logs.is_empty());
    for line in logs.lines() {
        assert!(
            serde_json::from_str::<serde_json::Value>(line).is_ok(),
            "not JSON: {line}"
        );
    }
    assert!(
        !logs.contains(&token),
        "the admin token appears in the logs"
    );
    assert!(!logs.contains("not-the-token"));
    let agent = support::api::read_trimmed(&dir.path().join("tokens/agent-join"));
    assert!(!logs.contains(&agent));
}

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            if bytes.windows(needle.len()).any(|w| w == needle) {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_encrypted_at_rest_and_survive_key_rotation() {
    let server = Server::start();
    let http = server.client();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": "plaintext-hunter2"}});
    let r = http
        .post(format!("{}/api/v1/namespaces/default/secrets", server.url))
        .bearer_auth(&server.admin_token)
        .json(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let admin = server.admin_token.clone();
    let dir = server.into_dir();

    // Raw bytes of every file of the store: no plaintext, not even base64 of it.
    for needle in [&b"plaintext-hunter2"[..], b"cGxhaW50ZXh0LWh1bnRlcjI"] {
        let hits = files_contain(dir.path(), needle);
        assert!(hits.is_empty(), "plaintext found in {hits:?}");
    }
    let store = SqliteStore::open(SqliteOptions::in_data_dir(dir.path()))
        .await
        .unwrap();
    let raw = store
        .get("/registry/secrets/default/db")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.value.starts_with(b"berth:enc:aes256gcm:v2:key1:"));
    drop(store);

    let out = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["server", "--rotate-encryption-key", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-encrypted 1 secrets"));
    let store = SqliteStore::open(SqliteOptions::in_data_dir(dir.path()))
        .await
        .unwrap();
    let raw = store
        .get("/registry/secrets/default/db")
        .await
        .unwrap()
        .unwrap();
    assert!(raw.value.starts_with(b"berth:enc:aes256gcm:v2:key2:"));
    drop(store);

    let server = Server::start_in(dir, &[]);
    assert_eq!(server.admin_token, admin, "tokens survive a restart");
    let got: serde_json::Value = server
        .client()
        .get(format!(
            "{}/api/v1/namespaces/default/secrets/db",
            server.url
        ))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["password"], "cGxhaW50ZXh0LWh1bnRlcjI=");
}
