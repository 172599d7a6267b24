//! Snapshots of a cluster on etcd (feature `etcd`): `berth snapshot save --etcd-endpoints`
//! streams a live 3-member etcd to a file, from its leader, and from the one member left
//! when two are lost; `berth snapshot restore --etcd-data-dir` makes a new member's data
//! directory from the latter with etcd's own tool (`etcdctl` here, Debian's
//! `etcd-client`; a test failure when missing), and a new master with a fresh data dir on
//! that one-member etcd, joining with the first master's admin token, serves the same
//! objects (the Secret's data decrypted) to the first master's kubeconfig. Every etcd
//! member and master is killed when the test ends, also when it fails.

pub mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};
use support::api::{Http, Server, stderr, stdout};
use support::eventually;
use support::masters::{Masters, PREFIX};
use support::store::etcd::EtcdCluster;

const CONFIG_MAP: &str = "/api/v1/namespaces/default/configmaps/app-config";
const SECRET: &str = "/api/v1/namespaces/default/secrets/app-db";
const DEPLOYMENT: &str = "/apis/apps/v1/namespaces/default/deployments/web";
const REPLICA_SETS: &str = "/apis/apps/v1/namespaces/default/replicasets?labelSelector=app%3Dweb";

/// base64 of the Secret's test value, `not-a-real-password`.
const PASSWORD_B64: &str = "bm90LWEtcmVhbC1wYXNzd29yZA==";

fn berth(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

fn berth_ok(args: &[&str]) -> String {
    let output = berth(args);
    assert!(
        output.status.success(),
        "berth {args:?}: {}",
        stderr(&output)
    );
    stdout(&output)
}

/// A command that must fail with exit code 2 and one `error:` line containing `expected`.
fn berth_fails(args: &[&str], expected: &str) {
    let output = berth(args);
    let text = stderr(&output);
    assert_eq!(output.status.code(), Some(2), "berth {args:?}: {text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines.len() == 1 && lines[0].starts_with("error: ") && lines[0].contains(expected),
        "berth {args:?}: one error line with {expected:?} expected, got:\n{text}"
    );
}

/// What `berth snapshot save` said it saved.
#[derive(Debug)]
struct Saved {
    text: String,
    revision: i64,
}

/// `berth snapshot save FILE --etcd-endpoints ENDPOINTS`, which must succeed and say how
/// many bytes (FILE's size) at which revision.
fn save(file: &Path, endpoints: &str) -> Saved {
    let text = berth_ok(&[
        "snapshot",
        "save",
        path(file),
        "--etcd-endpoints",
        endpoints,
    ]);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(
        words.len() > 8
            && words[0] == "saved"
            && words[2..7] == ["bytes", "of", "etcd", "at", "revision"],
        "{text}"
    );
    let bytes: u64 = words[1].parse().expect("the size");
    assert_eq!(bytes, std::fs::metadata(file).unwrap().len(), "{text}");
    let revision = words[7].parse().expect("the revision");
    Saved { text, revision }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// The fields of an object a restore must bring back unchanged (its status and so its
/// resourceVersion may move on: the new master's controllers act on it).
fn kept(object: &Value) -> Value {
    json!({
        "uid": object["metadata"]["uid"],
        "data": object["data"],
        "spec": object["spec"],
    })
}

fn resource_version(object: &Value) -> i64 {
    let text = object["metadata"]["resourceVersion"].as_str();
    text.and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {object}"))
}

async fn create_objects(http: &Http) -> Vec<Value> {
    let config_map = http
        .create(
            "/api/v1/namespaces/default/configmaps",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "app-config"},
                "data": {"greeting": "hello from before the snapshot"},
            }),
        )
        .await;
    let secret = http
        .create(
            "/api/v1/namespaces/default/secrets",
            json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "app-db"},
                "data": {"password": PASSWORD_B64},
            }),
        )
        .await;
    let deployment = http
        .create(
            "/apis/apps/v1/namespaces/default/deployments",
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "busybox:1.36"}]},
                    },
                },
            }),
        )
        .await;
    vec![config_map, secret, deployment]
}

/// The `web` Deployment's one ReplicaSet, written by the controllers.
async fn replica_set(http: &Http) -> Value {
    eventually(
        "the Deployment's ReplicaSet",
        Duration::from_secs(40),
        || async move {
            let list = http.get(REPLICA_SETS).await;
            match list["items"].as_array().map(Vec::as_slice) {
                Some([one]) => Ok(one.clone()),
                _ => Err(list["items"].clone()),
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_cluster_comes_up_from_an_etcd_snapshot() {
    let mut masters = tokio::task::spawn_blocking(|| Masters::start(1))
        .await
        .expect("start etcd and a master");
    let http = masters.servers[0].http();
    let created = create_objects(&http).await;
    let replica_set_before = replica_set(&http).await;
    let newest: i64 = created
        .iter()
        .chain([&replica_set_before])
        .map(resource_version)
        .max()
        .unwrap();

    // Save, while the master goes on writing (its Lease renewals, at least).
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("etcd.snap");
    let endpoints = masters.etcd.endpoints().join(",");
    let saved = save(&file, &endpoints);
    assert!(
        saved.text.contains("(from the leader, http://127.0.0.1:"),
        "{}",
        saved.text
    );
    assert!(
        saved.revision >= newest,
        "{}: the objects are at {newest}",
        saved.text
    );
    let snapshot = std::fs::read(&file).unwrap();

    // The file is never overwritten, and a failed save leaves nothing behind.
    let args = [
        "snapshot",
        "save",
        path(&file),
        "--etcd-endpoints",
        &endpoints,
    ];
    berth_fails(&args, "the snapshot file already exists");
    assert_eq!(std::fs::read(&file).unwrap(), snapshot);
    let other = work.path().join("other.snap");
    let nobody = "http://127.0.0.1:9";
    let args = ["snapshot", "save", path(&other), "--etcd-endpoints", nobody];
    berth_fails(&args, "cannot reach etcd at http://127.0.0.1:9: ");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "only the snapshot: {left:?}");

    // Two members of three lost: the survivor's own copy is what is left to save (member 0's
    // once it knows it has no leader), and that is the snapshot restored below.
    masters.etcd.kill(1);
    masters.etcd.kill(2);
    let file = work.path().join("survivor.snap");
    let saved = support::eventually_blocking(
        "a snapshot of the member left without a leader",
        Duration::from_secs(20),
        || {
            let _ = std::fs::remove_file(&file);
            let saved = save(&file, &endpoints);
            if saved
                .text
                .contains("etcd has no leader; this is that member's own copy")
            {
                Ok(saved)
            } else {
                Err(saved.text)
            }
        },
    );
    assert!(
        saved.text.contains(&masters.etcd.endpoint(0)),
        "{}",
        saved.text
    );
    assert!(
        saved.revision >= newest,
        "{}: the objects are at {newest}",
        saved.text
    );
    let revision = saved.revision;

    // Stop everything; keep the first master's data dir for its kubeconfig and token.
    let old = masters.servers.remove(0).into_dir();
    drop(masters);
    let admin_token = support::api::read_trimmed(&old.path().join("tokens/admin"));
    let old_kubeconfig = old.path().join("kubeconfig.yaml");

    // A new one-member etcd from the snapshot.
    let mut etcd = EtcdCluster::planned(1);
    let data_dir = etcd.data_dir(0).to_owned();
    let mut restore = vec![
        "snapshot".to_string(),
        "restore".into(),
        path(&file).into(),
        "--etcd-data-dir".into(),
        path(&data_dir).into(),
    ];
    restore.extend(etcd.member_flags(0));
    let restore: Vec<&str> = restore.iter().map(String::as_str).collect();
    let restored = berth_ok(&restore);
    assert!(restored.contains("restored "), "{restored}");
    assert!(data_dir.join("member").is_dir(), "{restored}");
    berth_fails(&restore, "already exists");
    let etcd = tokio::task::spawn_blocking(move || {
        etcd.run();
        etcd
    })
    .await
    .expect("start the restored etcd");

    // A new master with a fresh data dir joins the restored cluster's identity.
    let dir = tempfile::Builder::new()
        .prefix("berth-master")
        .tempdir()
        .expect("temp dir");
    std::fs::copy(
        old.path().join("test-cluster-cidr"),
        dir.path().join("test-cluster-cidr"),
    )
    .expect("the first master's cluster CIDR");
    let endpoint = etcd.endpoint(0);
    let server = tokio::task::spawn_blocking(move || {
        let args = [
            "--etcd-endpoints",
            &endpoint,
            "--etcd-prefix",
            PREFIX,
            "--token",
            &admin_token,
        ];
        Server::start_in(dir, &args)
    })
    .await
    .expect("start the new master");

    // The same objects with their content; those nobody writes at their old revisions.
    let http = server.http();
    for (path, before) in [CONFIG_MAP, SECRET, DEPLOYMENT].into_iter().zip(&created) {
        let after = http.get(path).await;
        assert_eq!(kept(&after), kept(before), "{path}");
        if path != DEPLOYMENT {
            assert_eq!(resource_version(&after), resource_version(before), "{path}");
        }
    }
    assert_eq!(
        http.get(SECRET).await["data"]["password"],
        PASSWORD_B64,
        "the Secret's data is decrypted with the cluster's own keys"
    );
    assert_eq!(kept(&replica_set(&http).await), kept(&replica_set_before));

    // The first master's kubeconfig (its CA and admin token) works against the new master.
    let kubectl = Command::new("kubectl")
        .env("KUBECONFIG", &old_kubeconfig)
        .env("HOME", old.path())
        .args(["--server", &server.url, "get", "configmap", "app-config"])
        .args(["-o", "jsonpath={.data.greeting}"])
        .output()
        .expect("kubectl must be installed");
    assert!(kubectl.status.success(), "kubectl: {}", stderr(&kubectl));
    assert_eq!(stdout(&kubectl), "hello from before the snapshot");

    // The restored cluster takes writes, after the snapshot's revisions.
    let later = http
        .create(
            "/api/v1/namespaces/default/configmaps",
            json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "after-the-restore"},
            }),
        )
        .await;
    let later = resource_version(&later);
    assert!(later > revision, "{later} after a snapshot at {revision}");
    drop(server);
    drop(etcd);
}
