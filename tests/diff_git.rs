//! `berth diff --git-base`: the offline pull-request preview, run as the real binary in a
//! temporary git repository built with git2.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

use base64::Engine as _;
use git2::{Repository, Signature};

const CANARY: &str = "berth-canary-hunter2";

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: nginx:1.27
";

fn secret(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\nstringData:\n  password: {value}\n"
    )
}

fn write(root: &Path, path: &str, text: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

/// Stages everything and commits it.
fn commit(repo: &Repository, message: &str) {
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.update_all(["*"], None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::new(
        "berth test",
        "test@berth.dev",
        &git2::Time::new(1_700_000_000, 0),
    )
    .unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)
        .unwrap();
}

/// A repository with two commits: the second scales the Deployment, changes its image and
/// the Secret's password, adds a ConfigMap and removes a Service.
fn two_commits() -> (tempfile::TempDir, Repository) {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path()).unwrap();
    let root = dir.path();
    write(root, "README.md", "not a manifest\n");
    write(root, "manifests/web.yaml", DEPLOYMENT);
    write(
        root,
        "manifests/secret.yaml",
        &secret("berth-canary-old-hunter1"),
    );
    write(
        root,
        "manifests/svc.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n",
    );
    commit(&repo, "first");
    let changed = DEPLOYMENT
        .replace("replicas: 2", "replicas: 3")
        .replace("nginx:1.27", "nginx:1.28");
    write(root, "manifests/web.yaml", &changed);
    write(root, "manifests/secret.yaml", &secret(CANARY));
    write(
        root,
        "manifests/app/settings.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {colour: green}\n",
    );
    fs::remove_file(root.join("manifests/svc.yaml")).unwrap();
    commit(&repo, "second");
    (dir, repo)
}

fn berth(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn two_revisions_show_every_change_and_exit_1() {
    let (dir, _repo) = two_commits();
    let out = berth(
        dir.path(),
        &[
            "diff",
            "--git-base",
            "HEAD~1",
            "--git-head",
            "HEAD",
            "manifests",
        ],
    );
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}{}", stderr(&out));
    assert!(text.contains(
        "diff -u -N HEAD~1/apps.v1.Deployment.shop.web HEAD/apps.v1.Deployment.shop.web"
    ));
    assert!(text.contains("-  replicas: 2\n"), "{text}");
    assert!(text.contains("+  replicas: 3\n"), "{text}");
    assert!(text.contains("+      - image: nginx:1.28\n"), "{text}");
    assert!(text.contains("+  colour: green\n"), "{text}");
    assert!(text.contains("-kind: Service\n"), "{text}");
    assert!(stderr(&out).contains("1 to create, 2 to change, 1 to delete, 0 unchanged"));
}

#[test]
fn secret_values_never_leave_in_any_format() {
    let (dir, _repo) = two_commits();
    let encoded = base64::engine::general_purpose::STANDARD.encode(CANARY);
    for format in ["text", "markdown", "json"] {
        let out = berth(
            dir.path(),
            &[
                "diff",
                "--git-base",
                "HEAD~1",
                "--git-head",
                "HEAD",
                "--format",
                format,
            ],
        );
        assert_eq!(out.status.code(), Some(1));
        let all = stdout(&out) + &stderr(&out);
        assert!(
            !all.contains(CANARY) && !all.contains(&encoded),
            "{format}: {all}"
        );
        assert!(!all.contains("hunter1"), "{format}: {all}");
        assert!(all.contains("*** (after)"), "{format}: {all}");
    }
}

#[test]
fn markdown_has_a_summary_table_and_a_section_per_object() {
    let (dir, _repo) = two_commits();
    let out = berth(
        dir.path(),
        &[
            "diff",
            "--git-base",
            "HEAD~1",
            "--git-head",
            "HEAD",
            "--format",
            "markdown",
        ],
    );
    let text = stdout(&out);
    assert!(text.contains("| Deployment | 0 | 1 | 0 | 0 |"), "{text}");
    assert!(text.contains("| Service | 0 | 0 | 1 | 0 |"), "{text}");
    assert_eq!(text.matches("<details>").count(), 4, "{text}");
    assert!(text.contains("```diff\n"), "{text}");
}

#[test]
fn the_working_tree_is_the_default_head_and_ignores_gitignored_files() {
    let (dir, _repo) = two_commits();
    let out = berth(dir.path(), &["diff", "--git-base", "HEAD"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");

    write(dir.path(), ".gitignore", "generated/\n");
    write(dir.path(), "generated/junk.yaml", "not: [valid");
    let out = berth(dir.path(), &["diff", "--git-base", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let edited = fs::read_to_string(dir.path().join("manifests/web.yaml"))
        .unwrap()
        .replace("replicas: 3", "replicas: 4");
    write(dir.path(), "manifests/web.yaml", &edited);
    let sub = dir.path().join("manifests");
    let out = berth(&sub, &["diff", "--git-base", "HEAD", "."]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("+  replicas: 4\n"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("working-tree/apps.v1.Deployment.shop.web"));
}

#[test]
fn an_invalid_manifest_at_either_revision_is_reported_as_validate_does_and_exits_2() {
    let (dir, repo) = two_commits();
    write(
        dir.path(),
        "manifests/web.yaml",
        &DEPLOYMENT.replace("replicas: 2", "replicas: two"),
    );
    commit(&repo, "broken");
    let out = berth(
        dir.path(),
        &["diff", "--git-base", "HEAD~1", "--git-head", "HEAD"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("the manifests at HEAD are invalid"), "{err}");
    assert!(err.contains("manifests/web.yaml"), "{err}");
    assert!(err.contains("spec.replicas"), "{err}");
    assert_eq!(stdout(&out), "");
}

#[test]
fn problems_in_an_invalid_secret_do_not_show_its_values() {
    let (dir, _repo) = two_commits();
    write(
        dir.path(),
        "manifests/secret.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: shop\ndata:\n  password: {CANARY}!\n  pin: 12345\n"
        ),
    );
    let out = berth(dir.path(), &["diff", "--git-base", "HEAD"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("manifests/secret.yaml:7:13"), "{err}");
    assert!(
        err.contains("data.password: invalid value (not shown: it is Secret data)"),
        "{err}"
    );
    assert!(!err.contains(CANARY) && !err.contains("12345"), "{err}");
}

#[test]
fn bad_revisions_and_the_cluster_mode_are_clear_errors() {
    let (dir, _repo) = two_commits();
    let out = berth(dir.path(), &["diff", "--git-base", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown revision \"no-such-branch\""),
        "{}",
        stderr(&out)
    );

    // The cluster mode needs a server: without one it says where it looked.
    let out = berth(
        dir.path(),
        &[
            "diff",
            "-f",
            "manifests",
            "--kubeconfig",
            "no-such-kubeconfig",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the kubeconfig no-such-kubeconfig"),
        "{}",
        stderr(&out)
    );

    let outside = tempfile::tempdir().unwrap();
    let out = berth(outside.path(), &["diff", "--git-base", "HEAD"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not inside a git repository"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_folder_added_since_the_base_is_all_creates() {
    let (dir, repo) = two_commits();
    write(
        dir.path(),
        "other/cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\ndata: {a: b}\n",
    );
    commit(&repo, "third");
    let out = berth(
        dir.path(),
        &[
            "diff",
            "--git-base",
            "HEAD~1",
            "--git-head",
            "HEAD",
            "other",
            "--format",
            "json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["summary"]["create"], 1);
    assert_eq!(doc["objects"][0]["action"], "create");
    assert_eq!(doc["objects"][0]["namespace"], "default");
}
