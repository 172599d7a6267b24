//! GitOps over ssh end to end: a real OpenSSH `sshd` on a loopback port (a host key of its
//! own, an `authorized_keys` holding one generated client key, root only, no passwords)
//! serves a bare repository, and a `berth server` follows it through GitSources whose Secrets
//! carry the client key and `known_hosts`. The right `known_hosts` syncs; a wrong one is
//! refused as a host key mismatch, a missing one with the way to fix it; the private key shows
//! in no log, status or event. Needs `sshd` (Debian's openssh-server), `ssh-keygen` and
//! `ssh-keyscan` (openssh-client) and `git`: fails, naming the package, without them. sshd and
//! the server are killed and their directories removed on drop, also when the test fails.

pub mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::Api;
use kube::api::{ListParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};
use support::api::Server;
use support::cluster::admin;
use support::{accept, eventually, eventually_blocking, poll, poll_blocking};

/// The program `name` from the PATH or the sbin folders; fails the test naming the Debian
/// package that brings it.
fn tool(name: &str, package: &str) -> PathBuf {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/usr/local/sbin".into(), "/sbin".into()])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is missing: install Debian's {package} (the ssh GitOps test needs it)")
        })
}

fn run(program: &Path, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A new ed25519 key pair in `dir`, encrypted with `passphrase` when it is not empty: the
/// private key's text and the public key's line.
fn key_pair(dir: &Path, name: &str, passphrase: &str) -> (String, String) {
    let path = dir.join(name);
    run(
        &tool("ssh-keygen", "openssh-client"),
        &[
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "berth-test",
            "-f",
            path.to_str().unwrap(),
        ],
    );
    let private = std::fs::read_to_string(&path).unwrap();
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (private, public.trim().to_string())
}

/// A bare repository at `path` whose `main` holds one file; returns the commit id.
fn bare_repository(path: &Path, file: &str, text: &str) -> String {
    let repo = git2::Repository::init_bare(path).expect("bare repository");
    let blob = repo.blob(text.as_bytes()).unwrap();
    let mut tree = repo.treebuilder(None).unwrap();
    tree.insert(file, blob, 0o100644).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let who = git2::Signature::now("Test", "t@example.invalid").unwrap();
    let commit = repo
        .commit(Some("refs/heads/main"), &who, &who, "first", &tree, &[])
        .unwrap();
    repo.set_head("refs/heads/main").unwrap();
    commit.to_string()
}

/// An OpenSSH server on a loopback port that lets in root with one key only.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sshd {
    fn start(client_public_key: &str) -> Sshd {
        let sshd = tool("sshd", "openssh-server");
        let dir = tempfile::Builder::new()
            .prefix("berth-sshd-test")
            .tempdir()
            .expect("temp dir");
        key_pair(dir.path(), "host_key", "");
        std::fs::write(dir.path().join("authorized_keys"), client_public_key).unwrap();
        // sshd's privilege separation wants this folder; Debian's service makes it at boot.
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let d = dir.path().display();
        let config = format!(
            "ListenAddress 127.0.0.1:{port}\n\
             HostKey {d}/host_key\n\
             PidFile none\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             StrictModes no\n\
             AllowUsers root\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             LogLevel VERBOSE\n"
        );
        std::fs::write(dir.path().join("sshd_config"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("sshd.log")).unwrap();
        let child = Command::new(&sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.path().join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn sshd");
        let mut server = Sshd { child, dir, port };
        eventually_blocking("sshd listening", Duration::from_secs(10), || {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("sshd exited ({status}): {}", server.log());
            }
            std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| (e, server.log()))
        });
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// What `ssh-keyscan` prints for this server, names hashed: the `known_hosts` a user
    /// puts in the Secret.
    fn keyscan(&self) -> String {
        let port = self.port.to_string();
        let lines = run(
            &tool("ssh-keyscan", "openssh-client"),
            &["-H", "-t", "ed25519", "-p", &port, "127.0.0.1"],
        );
        assert!(lines.contains("ssh-ed25519"), "ssh-keyscan: {lines:?}");
        lines
    }

    /// The processes that still serve this server's repository: an ssh session outlives the
    /// listener for a moment, and its `git-upload-pack` names the repository's path.
    fn sessions(&self) -> Vec<String> {
        let marker = self.dir.path().to_string_lossy().into_owned();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&marker))
            })
            .map(|pid| pid.to_string())
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Best effort: a session left behind holds nothing the next test needs.
        let _ = poll_blocking(Duration::from_secs(5), || {
            let left = self.sessions();
            let _ = Command::new("kill").arg("-KILL").args(&left).output();
            left.is_empty()
        });
    }
}

fn git_sources(client: &kube::Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("berth.dev", "v1", "GitSource");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "gitsources");
    Api::namespaced_with(client.clone(), "default", &resource)
}

/// A Secret `name` with `data` as its stringData and a GitSource `name` that uses it.
async fn source_with_secret(client: &kube::Client, name: &str, url: &str, data: Value) {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let source: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "berth.dev/v1", "kind": "GitSource", "metadata": {"name": name},
        "spec": {"url": url, "interval": "1s", "secretRef": {"name": name}}
    }))
    .unwrap();
    git_sources(client)
        .create(&PostParams::default(), &source)
        .await
        .expect("create the GitSource");
}

/// The GitSource's status once its `Ready` condition has `reason`.
async fn status_when_ready_reason(client: &kube::Client, name: &str, reason: &str) -> Value {
    let sources = git_sources(client);
    let what = format!("GitSource {name}: Ready with reason {reason}");
    eventually(&what, Duration::from_secs(20), || async {
        let source = sources.get_opt(name).await.ok().flatten();
        let status = serde_json::to_value(&source).unwrap()["status"].clone();
        accept(status, |status| {
            status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["reason"] == reason)
        })
    })
    .await
}

fn ready_message(status: &Value) -> String {
    status["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["message"].as_str())
        .unwrap_or("")
        .to_string()
}

const PASSPHRASE: &str = "passphrase-5c1e-never-shown";

const CONFIG_MAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  greeting: over-ssh
";

#[tokio::test]
async fn an_ssh_source_syncs_with_its_key_and_a_wrong_host_key_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (client_key, client_public) = key_pair(keys.path(), "client", "");
    let (locked_key, locked_public) = key_pair(keys.path(), "locked", PASSPHRASE);
    let (_, stranger_public) = key_pair(keys.path(), "stranger", "");
    let sshd = Sshd::start(&format!("{client_public}\n{locked_public}\n"));
    let repo = sshd.dir.path().join("repo.git");
    let commit = bare_repository(&repo, "settings.yaml", CONFIG_MAP);
    let url = format!("ssh://root@127.0.0.1:{}{}", sshd.port, repo.display());

    let data = tempfile::Builder::new()
        .prefix("berth-gitops-ssh")
        .tempdir()
        .unwrap();
    let log_path = data.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let server = Server::start_configured(data, &[], |server| {
        server.env("RUST_LOG", "debug").stderr(log);
    });
    let client = admin(&server).await;

    // The right known_hosts (as ssh-keyscan prints it) and the key: the commit is applied.
    source_with_secret(
        &client,
        "over-ssh",
        &url,
        json!({"identity": client_key, "known_hosts": sshd.keyscan()}),
    )
    .await;
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "default");
    let applied = poll(Duration::from_secs(20), || async {
        let c = config_maps.get_opt("settings").await.ok().flatten()?;
        let annotations = c.metadata.annotations.clone().unwrap_or_default();
        (annotations.get("berth.dev/source-commit") == Some(&commit)).then_some(c)
    })
    .await;
    let applied = applied.unwrap_or_else(|_| {
        panic!(
            "commit {commit} not applied over ssh; sshd log:\n{}\nserver log:\n{}",
            sshd.log(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        )
    });
    assert_eq!(
        applied.data.unwrap_or_default().get("greeting"),
        Some(&"over-ssh".to_string())
    );
    let synced = status_when_ready_reason(&client, "over-ssh", "Applied").await;
    assert_eq!(synced["lastAppliedCommit"], json!(commit));

    // A passphrase-protected key with its passphrase in `password` (Flux's convention).
    source_with_secret(
        &client,
        "locked-key",
        &url,
        json!({"identity": locked_key, "password": PASSPHRASE, "known_hosts": sshd.keyscan()}),
    )
    .await;
    let unlocked = status_when_ready_reason(&client, "locked-key", "NotOwned").await;
    assert_eq!(unlocked["lastAttemptedCommit"], json!(commit), "{unlocked}");

    // Another server's key listed for this host and port: a mismatch, nothing fetched.
    let stranger = stranger_public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>();
    source_with_secret(
        &client,
        "wrong-host-key",
        &url,
        json!({"identity": client_key,
            "known_hosts": format!("[127.0.0.1]:{} {}", sshd.port, stranger.join(" "))}),
    )
    .await;
    let refused = status_when_ready_reason(&client, "wrong-host-key", "HostKeyNotVerified").await;
    let message = ready_message(&refused);
    assert!(message.contains("host key mismatch"), "{message}");
    assert!(
        message.contains(&format!("[127.0.0.1]:{}", sshd.port)),
        "{message}"
    );
    assert!(refused["lastAttemptedCommit"].is_null(), "{refused}");

    // No known_hosts at all: refused, saying how to get one.
    source_with_secret(
        &client,
        "no-known-hosts",
        &url,
        json!({"identity": client_key}),
    )
    .await;
    let unverified =
        status_when_ready_reason(&client, "no-known-hosts", "HostKeyNotVerified").await;
    let message = ready_message(&unverified);
    assert!(
        message.contains(&format!("ssh-keyscan -p {} 127.0.0.1", sshd.port)),
        "{message}"
    );

    // The private key is in no log, status or event: not one line of its body.
    let events = Api::<Event>::namespaced(client.clone(), "default")
        .list(&ListParams::default())
        .await
        .expect("events");
    let key_lines: Vec<&str> = [client_key.as_str(), locked_key.as_str()]
        .iter()
        .flat_map(|k| k.lines())
        .filter(|l| !l.starts_with("-----") && l.len() > 16)
        .collect();
    assert!(!key_lines.is_empty());
    for (what, text) in [
        (
            "the server log",
            std::fs::read_to_string(&log_path).unwrap(),
        ),
        ("the synced status", synced.to_string()),
        ("the unlocked status", unlocked.to_string()),
        ("the refused status", refused.to_string()),
        ("the unverified status", unverified.to_string()),
        ("the events", serde_json::to_string(&events).unwrap()),
    ] {
        assert!(
            !text.contains("PRIVATE KEY"),
            "{what} shows the private key"
        );
        assert!(!text.contains(PASSPHRASE), "{what} shows the passphrase");
        for line in &key_lines {
            assert!(!text.contains(line), "{what} shows the private key");
        }
    }
}
