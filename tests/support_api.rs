//! Shared harness for the API tests: an in-process router over a real SQLite store (for
//! `oneshot` tests), and a live `berth server` process on a loopback port (for kubectl and
//! the Python client) that is stopped and whose data dir is removed even when a test fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth::cluster::api::encryption::KeyRing;
use berth::cluster::api::storage::Storage;
use berth::cluster::api::tls::Tokens;
use berth::cluster::api::{ApiConfig, ApiState, SharedState, router};
use berth::cluster::store::sqlite::{SqliteOptions, SqliteStore};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

pub const ADMIN: &str = "berth-admin.test-admin-token-0001";
pub const AGENT: &str = "berth-agent.test-agent-token-0001";

/// An in-process API over a real store in a temp dir.
pub struct Api {
    pub state: SharedState,
    pub dir: tempfile::TempDir,
}

impl Api {
    pub async fn new() -> Api {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(SqliteOptions::in_data_dir(dir.path()))
            .await
            .expect("open store");
        let storage = Storage::new(Arc::new(store), Some(KeyRing::generate()));
        let mut config = ApiConfig::new(Tokens {
            admin: ADMIN.into(),
            agent: AGENT.into(),
        });
        config.bookmark_interval = Duration::from_millis(200);
        let state = ApiState::new(storage, config);
        let api = Api { state, dir };
        for ns in ["default", "kube-system"] {
            let (code, body) = api
                .call(
                    "POST",
                    "/api/v1/namespaces",
                    Some(&serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})),
                )
                .await;
            assert_eq!(code, StatusCode::CREATED, "{body}");
        }
        api
    }

    /// A request as the admin with a JSON body.
    pub async fn call(&self, method: &str, uri: &str, body: Option<&Value>) -> (StatusCode, Value) {
        self.send(
            method,
            uri,
            Some(ADMIN),
            "application/json",
            body.map(|b| b.to_string()),
        )
        .await
    }

    pub async fn send(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        content_type: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .expect("request");
        let resp = router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        let code = resp.status();
        let bytes = resp.into_body().collect().await.expect("body").to_bytes();
        let v = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
        (code, v)
    }

    /// Starts a watch and returns its body to read events from.
    pub async fn watch(&self, uri: &str) -> Body {
        let req = Request::builder()
            .uri(uri)
            .header("authorization", format!("Bearer {ADMIN}"))
            .body(Body::empty())
            .expect("request");
        let resp = router(self.state.clone())
            .oneshot(req)
            .await
            .expect("infallible");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.into_body()
    }
}

/// Reads watch events (one JSON object per line) until `n` arrived or `timeout` passed.
pub async fn events(body: &mut Body, n: usize, timeout: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            _ => break,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                out.push(serde_json::from_slice(&line).expect("event JSON"));
            }
        }
    }
    out
}

/// A live `berth server` on a loopback port, stopped on drop.
pub struct Server {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub kubeconfig: PathBuf,
    pub admin_token: String,
    pub agent_token: String,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("berth-api-test")
            .tempdir()
            .expect("temp dir");
        Server::start_in(dir, extra)
    }

    pub fn start_in(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::start_configured(dir, extra, |server| {
            server.stderr(Stdio::inherit());
        })
    }

    /// As `start_in`, with the command adjusted by `configure` (its stderr, its environment).
    pub fn start_configured(
        dir: tempfile::TempDir,
        extra: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Server {
        // Servers of tests running side by side hand out pod CIDRs from ranges of their own,
        // so their agents' pod networks do not overlap; a restart in the same dir keeps it.
        let cidr_file = dir.path().join("test-cluster-cidr");
        let cluster_cidr = std::fs::read_to_string(&cidr_file).unwrap_or_else(|_| {
            static SERVERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let octet = 100 + (std::process::id() + n) % 100;
            let cidr = format!("10.{octet}.0.0/16");
            std::fs::write(&cidr_file, &cidr).expect("write the test's cluster CIDR");
            cidr
        });
        let own_cidr = !extra.contains(&"--cluster-cidr");
        let mut command = Command::new(env!("CARGO_BIN_EXE_berth"));
        command
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--bookmark-interval-seconds",
                "1",
                "--data-dir",
            ])
            .arg(dir.path())
            .args(if own_cidr {
                vec!["--cluster-cidr", cluster_cidr.as_str()]
            } else {
                vec![]
            })
            .args(extra)
            .stdout(Stdio::piped());
        configure(&mut command);
        let mut child = command.spawn().expect("spawn berth server");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = Server {
            child: Some(child),
            url: String::new(),
            kubeconfig: dir.path().join("kubeconfig.yaml"),
            admin_token: String::new(),
            agent_token: String::new(),
            dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while server.url.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("listening on ") {
                        server.url = url.to_string();
                    }
                }
                Err(_) => panic!("berth server did not start within 60 s"),
            }
        }
        server.admin_token = read_trimmed(&server.dir.path().join("tokens/admin"));
        server.agent_token = read_trimmed(&server.dir.path().join("tokens/agent-join"));
        server
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_stdin(args, None)
    }

    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new("kubectl");
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .expect("kubectl must be installed (the kubectl tests fail without it)");
        if let Some(input) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        } else {
            drop(child.stdin.take());
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// An HTTPS client that trusts the server's CA (and only it).
    pub fn client(&self) -> reqwest::Client {
        let ca = std::fs::read(self.dir.path().join("tls/ca.crt")).expect("CA file");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .build()
            .expect("client")
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the process; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the server and hands back its data dir (for a restart or raw reads).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.dir, dir)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn read_trimmed(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
