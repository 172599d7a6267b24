//! Shared harness for the API tests: an in-process router over a real SQLite store (for
//! `oneshot` tests), and a live `berth server` process on a loopback port (for kubectl, the
//! Python client and plain JSON requests) that is stopped and whose data dir is removed
//! even when a test fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
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
use serde_json::{Value, json};
use tower::ServiceExt;

use super::process::Process;

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

/// A live `berth server` on a loopback port, killed on drop.
pub struct Server {
    process: Option<Process>,
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
        Server::start_configured(dir, extra, |_| {})
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
            .stderr(Stdio::inherit());
        configure(&mut command);
        let mut process = Process::spawn("berth server", &mut command);
        let url = process.wait_line("listening", Duration::from_secs(60), |line| {
            line.strip_prefix("listening on ").map(str::to_string)
        });
        Server {
            process: Some(process),
            url,
            kubeconfig: dir.path().join("kubeconfig.yaml"),
            admin_token: read_trimmed(&dir.path().join("tokens/admin")),
            agent_token: read_trimmed(&dir.path().join("tokens/agent-join")),
            dir,
        }
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

    /// kubectl that must succeed; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        succeeded(args, self.kubectl(args))
    }

    /// kubectl reading `input` on stdin, that must succeed; returns stdout.
    pub fn kubectl_ok_stdin(&self, args: &[&str], input: &str) -> String {
        succeeded(args, self.kubectl_stdin(args, Some(input)))
    }

    /// An HTTPS client that trusts the server's CA (and only it); plain HTTP when the server
    /// was started with `--insecure-http`.
    pub fn client(&self) -> reqwest::Client {
        if self.url.starts_with("http://") {
            return reqwest::Client::new();
        }
        let ca = std::fs::read(self.dir.path().join("tls/ca.crt")).expect("CA file");
        reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA PEM"))
            .build()
            .expect("client")
    }

    /// JSON requests as the admin.
    pub fn http(&self) -> Http {
        Http {
            client: self.client(),
            url: self.url.clone(),
            token: self.admin_token.clone(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.as_ref().map(Process::id).unwrap_or(0)
    }

    /// Sends `signal` (`STOP`, `CONT`, …) and returns at once.
    pub fn signal(&self, signal: &str) {
        if let Some(process) = &self.process {
            process.signal(signal);
        }
    }

    /// SIGKILLs the server (a crashed master), keeping its data dir.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Sends SIGTERM and waits up to 20 s (then kills); the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut process = self.process.take()?;
        match process.stop("TERM", Duration::from_secs(20)) {
            Ok(status) => Some(status),
            Err(status) => status,
        }
    }

    /// Stops the server and hands back its data dir (for a restart or raw reads).
    pub fn into_dir(mut self) -> tempfile::TempDir {
        self.stop();
        let dir = tempfile::tempdir().expect("placeholder");
        std::mem::replace(&mut self.dir, dir)
    }
}

/// JSON over HTTP to a [`Server`] as the admin: the plain requests tests make by hand.
#[derive(Clone)]
pub struct Http {
    pub client: reqwest::Client,
    pub url: String,
    pub token: String,
}

impl Http {
    /// One request; the status code and the body (`Null` when it is not JSON).
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("content-type", content_type);
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let code = resp.status().as_u16();
        (code, resp.json().await.unwrap_or(Value::Null))
    }

    /// GET that must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (code, v) = self
            .send(reqwest::Method::GET, path, "application/json", None)
            .await;
        assert_eq!(code, 200, "GET {path}: {v}");
        v
    }

    /// GET: the object, or `None` on 404; any other answer fails the test.
    pub async fn get_opt(&self, path: &str) -> Option<Value> {
        match self
            .send(reqwest::Method::GET, path, "application/json", None)
            .await
        {
            (200, v) => Some(v),
            (404, _) => None,
            (code, v) => panic!("GET {path}: {code} {v}"),
        }
    }

    /// POST that must answer 201 Created.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let (code, v) = self
            .send(reqwest::Method::POST, path, "application/json", Some(&body))
            .await;
        assert_eq!(code, 201, "POST {path}: {v}");
        v
    }

    /// A merge patch that must answer 200.
    pub async fn patch(&self, path: &str, body: Value) -> Value {
        let (code, v) = self.try_patch(path, &body).await;
        assert_eq!(code, 200, "PATCH {path}: {v}");
        v
    }

    /// A merge patch; the status code and body, whatever they are.
    pub async fn try_patch(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(
            reqwest::Method::PATCH,
            path,
            "application/merge-patch+json",
            Some(body),
        )
        .await
    }

    /// DELETE with a propagation policy, answered 200 or 202.
    pub async fn delete(&self, path: &str, propagation: &str) -> Value {
        let body =
            json!({"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation});
        let (code, v) = self
            .send(
                reqwest::Method::DELETE,
                path,
                "application/json",
                Some(&body),
            )
            .await;
        assert!(code == 200 || code == 202, "DELETE {path}: {code} {v}");
        v
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

/// The stdout of a kubectl run that must have succeeded (else its output, in the failure).
fn succeeded(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}
