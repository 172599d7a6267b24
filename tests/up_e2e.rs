//! `berth up` end to end on the real Docker engine: the example reaches Ready, a second run
//! on the same data dir adopts every container without restarting one, a changed file is
//! re-applied, a bad file changes nothing and is reported, Ctrl-C leaves the containers
//! running, and `--down` removes everything. Every container carries the test's label, so
//! the scope removes them even when the test fails.

pub mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::cluster::{counter, wait_agent_looked};
use support::git::git;
use support::process::Process;
use support::up::{UpScope, copy_dir, docker_lines, example_images, repo_root};

/// The example's containers: three web pods (sandbox + web) and the report pod (sandbox,
/// app, helper).
const EXAMPLE_CONTAINERS: usize = 9;
/// The example's pods.
const EXAMPLE_PODS: u64 = 4;

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

/// `berth up` with the test's data dir, a free port and the scope's label.
fn up_command(scope: &UpScope, folder: &Path, extra: &[&str]) -> Command {
    let mut cmd = berth();
    cmd.arg("up")
        .arg(folder)
        .arg("--data-dir")
        .arg(&scope.data_dir)
        .args(["--listen", "127.0.0.1:0", "--node-name", "up-e2e"])
        .arg("--container-label")
        .arg(scope.label_arg())
        .args(["--debounce-ms", "200"])
        .args(extra)
        .env("RUST_LOG", "warn");
    cmd
}

fn run_to_end(mut cmd: Command) -> Output {
    cmd.output().expect("run berth up")
}

fn text(o: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `id started-at` of every container of the scope, sorted.
fn containers(scope: &UpScope) -> Vec<String> {
    let ids = docker_lines(&["ps", "-aq", "--filter", &scope.filter()]);
    if ids.is_empty() {
        return ids;
    }
    let mut args = vec![
        "inspect",
        "-f",
        "{{.Id}} {{.State.StartedAt}} {{.State.Running}}",
    ];
    args.extend(ids.iter().map(String::as_str));
    let mut lines = docker_lines(&args);
    lines.sort();
    lines
}

/// A `berth up` in the background, its stdout and stderr read line by line.
fn background(mut cmd: Command) -> Process {
    Process::spawn("berth up", cmd.stderr(Stdio::piped()))
}

/// kubectl against the scope's `berth up`; its stdout.
fn kubectl(scope: &UpScope, args: &[&str]) -> String {
    let out = Command::new("kubectl")
        .env("KUBECONFIG", scope.data_dir.join("kubeconfig.yaml"))
        .args(args)
        .output()
        .expect("kubectl must be installed");
    assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_replicas(folder: &Path, from: &str, to: &str) {
    let file = folder.join("20-web.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains(from), "the example has {from}");
    std::fs::write(&file, yaml.replace(from, to)).unwrap();
}

#[test]
fn up_runs_the_example_resumes_without_restarts_reapplies_changes_and_downs() {
    let _serial = support::up::serial();
    example_images();
    let scope = UpScope::new("up-e2e");

    // 1. The example, straight from examples/manifests, reaches Ready.
    let examples = repo_root().join("examples/manifests");
    let first = run_to_end(up_command(
        &scope,
        &examples,
        &["--exit-when-ready", "--timeout", "240"],
    ));
    assert!(first.status.success(), "{}", text(&first));
    let out = String::from_utf8_lossy(&first.stdout);
    assert!(
        out.contains("ready: all 6 objects are Ready"),
        "{}",
        text(&first)
    );
    assert!(
        out.contains("kubeconfig: ") && out.contains("kubectl get pods"),
        "{}",
        text(&first)
    );
    let before = containers(&scope);
    assert_eq!(before.len(), EXAMPLE_CONTAINERS, "{before:#?}");
    assert!(before.iter().all(|c| c.ends_with(" true")), "{before:#?}");

    // 2. A second run on the same data dir (from a copy of the folder, to edit it) resumes:
    //    Ready again, and after several sync rounds of the agent no container was replaced
    //    or restarted.
    let work = tempfile::tempdir().unwrap();
    let folder = work.path().join("manifests");
    copy_dir(&examples, &folder);
    let mut second = background(up_command(&scope, &folder, &[]));
    // Both lines, in whichever order they come (the store may say Ready before the agent
    // has registered).
    let (mut url, mut ready) = (None, false);
    let metrics = second.wait_line(
        "Ready and the agent's metrics",
        Duration::from_secs(120),
        |l| {
            if let Some(printed) = l.strip_prefix("metrics on ") {
                url = Some(printed.to_string());
            }
            ready |= l.starts_with("ready: all 6 objects");
            url.clone().filter(|_| ready)
        },
    );
    // The resumed agent's /metrics shows its workers took on every pod and two relists
    // compared every container since: only then is "nothing restarted" evidence.
    let looked = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(wait_agent_looked(&metrics, EXAMPLE_PODS));
    assert_eq!(
        counter(
            &looked,
            "berth_agent_drift_detected_total{kind=\"stopped\"}"
        ),
        0,
        "{looked}"
    );
    assert_eq!(
        containers(&scope),
        before,
        "the resumed agent replaced or restarted containers"
    );

    // 3. Editing a file re-applies it: the web Deployment goes from 3 to 2 replicas.
    set_replicas(&folder, "replicas: 3", "replicas: 2");
    second.wait_line("the change applied", Duration::from_secs(60), |l| {
        l.contains("deployment.apps/web configured").then_some(())
    });
    second.wait_line("the rollout to 2", Duration::from_secs(90), |l| {
        l.contains("shop/deployment.apps/web: rolled out 2/2")
            .then_some(())
    });

    // 4. A bad file changes nothing and is reported as `berth validate` reports it.
    let web = || {
        kubectl(
            &scope,
            &[
                "get",
                "deployment",
                "web",
                "-n",
                "shop",
                "-o",
                "jsonpath={.spec.replicas} {.metadata.generation}",
            ],
        )
    };
    let web_before = web();
    std::fs::write(
        folder.join("40-bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: shop\ndata:\n  key: [1, 2]\n",
    )
    .unwrap();
    set_replicas(&folder, "replicas: 2", "replicas: 1");
    second.wait_line("the refusal", Duration::from_secs(30), |l| {
        l.contains("nothing changed").then_some(())
    });
    // A second pass over the folder (a comment added to a valid file), refused again: the
    // loop ran after the first refusal and applied nothing in between; and the server holds
    // the Deployment as it was.
    let web_file = folder.join("20-web.yaml");
    let mut yaml = std::fs::read_to_string(&web_file).unwrap();
    yaml.push_str("# touched\n");
    std::fs::write(&web_file, yaml).unwrap();
    second.wait_line("a second refusal", Duration::from_secs(30), |l| {
        assert!(
            !(l.starts_with("applied:")
                || l.contains("rolled out 1/1")
                || l.contains("configmap/bad")),
            "the bad folder changed something: {l}"
        );
        l.contains("nothing changed").then_some(())
    });
    assert_eq!(web(), web_before, "the Deployment changed");
    let stderr = second.stderr_lines().join("\n");
    assert!(
        stderr.contains("40-bad.yaml"),
        "the problem is reported with its file: {stderr}"
    );

    // 5. Ctrl-C stops berth and leaves the containers running.
    let status = second
        .stop("INT", Duration::from_secs(30))
        .expect("berth up stops within 30 s of Ctrl-C");
    assert!(status.success(), "Ctrl-C exits 0, got {status}");
    let running = containers(&scope);
    assert_eq!(
        running.len(),
        7,
        "two web pods and the report pod: {running:#?}"
    );
    assert!(running.iter().all(|c| c.ends_with(" true")), "{running:#?}");

    // 6. --down removes every container and volume it created, the pods' hosts and
    // resolv.conf the agent wrote, and the data dir's state.
    let pod_uids = docker_lines(&[
        "ps",
        "-a",
        "--filter",
        &scope.filter(),
        "--filter",
        "label=berth.dev/role=sandbox",
        "--format",
        "{{.Label \"berth.dev/pod-uid\"}}",
    ]);
    let pod_files = |uid: &str| {
        std::fs::read_dir("/run/berth")
            .map(|bridges| {
                bridges
                    .flatten()
                    .any(|b| b.path().join(uid).join("hosts").exists())
            })
            .unwrap_or(false)
    };
    assert!(
        !pod_uids.is_empty() && pod_uids.iter().all(|u| pod_files(u)),
        "every running pod has its files: {pod_uids:?}"
    );
    std::fs::remove_file(folder.join("40-bad.yaml")).unwrap();
    let down = run_to_end(up_command(
        &scope,
        &folder,
        &["--exit-when-ready", "--timeout", "120", "--down"],
    ));
    assert!(down.status.success(), "{}", text(&down));
    assert_eq!(containers(&scope), Vec::<String>::new(), "{}", text(&down));
    let volumes = docker_lines(&["volume", "ls", "-q", "--filter", &scope.filter()]);
    assert!(volumes.is_empty(), "{volumes:?}");
    let left: Vec<&String> = pod_uids.iter().filter(|u| pod_files(u)).collect();
    assert!(left.is_empty(), "pod files left behind: {left:?}");
    assert!(
        !scope.data_dir.join("store.db").exists() && !scope.data_dir.join("tokens").exists(),
        "the data dir's state is gone"
    );
}

#[test]
fn invalid_manifests_start_nothing_and_name_the_file() {
    let scope = UpScope::new("up-invalid");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: nope\n",
    )
    .unwrap();
    let out = run_to_end(up_command(&scope, work.path(), &["--exit-when-ready"]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pod.yaml"), "{}", text(&out));
    assert!(stderr.contains("nothing was started"), "{}", text(&out));
    assert!(
        !scope.data_dir.exists(),
        "no data dir is made for a refused folder"
    );
}

#[test]
fn not_ready_within_the_timeout_exits_1_naming_the_object_and_why() {
    let _serial = support::up::serial();
    let scope = UpScope::new("up-timeout");
    let work = tempfile::tempdir().unwrap();
    std::fs::write(
        work.path().join("pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: never\nspec:\n  containers:\n  - name: c\n    image: berth-test/absent:1\n    imagePullPolicy: Never\n",
    )
    .unwrap();
    let out = run_to_end(up_command(
        &scope,
        work.path(),
        &["--exit-when-ready", "--timeout", "15", "--down"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("default/pod/never") && stderr.contains("Pending"),
        "{}",
        text(&out)
    );
    assert!(
        stderr.contains("c: "),
        "the waiting container's reason: {}",
        text(&out)
    );
    assert_eq!(
        containers(&scope),
        Vec::<String>::new(),
        "--down removed the sandbox"
    );
}

#[test]
fn up_syncs_a_git_repository_until_its_objects_are_ready() {
    let _serial = support::up::serial();
    support::up::example_images();
    let scope = UpScope::new("up-git");
    let repo = tempfile::tempdir().unwrap();
    std::fs::create_dir(repo.path().join("deploy")).unwrap();
    std::fs::write(
        repo.path().join("deploy/pod.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: from-git\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: busybox:1.36\n    imagePullPolicy: Never\n    command: [sleep, \"3600\"]\n",
    )
    .unwrap();
    git(repo.path(), &["init", "-q", "-b", "main"]);
    git(repo.path(), &["add", "."]);
    git(repo.path(), &["commit", "-q", "-m", "a pod"]);
    let mut cmd = berth();
    cmd.arg("up")
        .arg("--git")
        .arg(repo.path())
        .args(["--git-path", "deploy"])
        .arg("--data-dir")
        .arg(&scope.data_dir)
        .args(["--listen", "127.0.0.1:0", "--node-name", "up-git"])
        .arg("--container-label")
        .arg(scope.label_arg())
        .args(["--exit-when-ready", "--timeout", "60", "--down"])
        .env("RUST_LOG", "warn");
    let out = run_to_end(cmd);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("git: commit"), "{all}");
    assert!(all.contains("ready: all 1 objects are Ready"), "{all}");
    assert_eq!(
        containers(&scope),
        Vec::<String>::new(),
        "--down removed them"
    );
}
