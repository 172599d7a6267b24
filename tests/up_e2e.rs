//! `berth up` end to end on the real Docker engine: the example reaches Ready, a second run
//! on the same data dir adopts every container without restarting one, a changed file is
//! re-applied, a bad file changes nothing and is reported, Ctrl-C leaves the containers
//! running, and `--down` removes everything. Every container carries the test's label, so
//! the scope removes them even when the test fails.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

#[path = "support_git.rs"]
mod support_git;
#[path = "support_up.rs"]
mod support_up;

use support_git::git;
use support_up::{UpScope, copy_dir, docker_lines, example_images, repo_root};

/// The example's containers: three web pods (sandbox + web) and the report pod (sandbox,
/// app, helper).
const EXAMPLE_CONTAINERS: usize = 9;

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

/// A `berth up` in the background, with its stdout and stderr lines on channels.
struct Background {
    child: Option<Child>,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    seen: Vec<String>,
}

impl Background {
    fn start(mut cmd: Command) -> Background {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth up");
        let lines = |stream: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    eprintln!("berth up: {line}");
                    let _ = tx.send(line);
                }
            });
            rx
        };
        let stdout = lines(Box::new(child.stdout.take().unwrap()));
        let stderr = lines(Box::new(child.stderr.take().unwrap()));
        Background {
            child: Some(child),
            stdout,
            stderr,
            seen: Vec::new(),
        }
    }

    /// Waits for a stdout line that `check` accepts; panics with everything seen otherwise.
    fn wait_for(&mut self, timeout: Duration, what: &str, check: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self
                .stdout
                .recv_timeout(left.min(Duration::from_millis(200)))
            {
                Ok(line) => {
                    let hit = check(&line);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) if Instant::now() < deadline => {}
                Err(_) => panic!(
                    "berth up: {what} did not happen within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Stdout lines that arrive within `wait`.
    fn lines_within(&mut self, wait: Duration) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Ok(line) = self
            .stdout
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            self.seen.push(line.clone());
            out.push(line);
        }
        out
    }

    fn stderr_text(&self) -> String {
        self.stderr.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// SIGINT (Ctrl-C), then the exit status.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status()
            .expect("kill -INT");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("berth up did not stop within 30 s of Ctrl-C");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn set_replicas(folder: &Path, from: &str, to: &str) {
    let file = folder.join("20-web.yaml");
    let yaml = std::fs::read_to_string(&file).unwrap();
    assert!(yaml.contains(from), "the example has {from}");
    std::fs::write(&file, yaml.replace(from, to)).unwrap();
}

#[test]
fn up_runs_the_example_resumes_without_restarts_reapplies_changes_and_downs() {
    let _serial = support_up::serial();
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
    let mut second = Background::start(up_command(&scope, &folder, &[]));
    second.wait_for(Duration::from_secs(120), "Ready", |l| {
        l.starts_with("ready: all 6 objects")
    });
    let _ = second.lines_within(Duration::from_secs(6));
    assert_eq!(
        containers(&scope),
        before,
        "the resumed agent replaced or restarted containers"
    );

    // 3. Editing a file re-applies it: the web Deployment goes from 3 to 2 replicas.
    set_replicas(&folder, "replicas: 3", "replicas: 2");
    second.wait_for(Duration::from_secs(60), "the change applied", |l| {
        l.contains("deployment.apps/web configured")
    });
    second.wait_for(Duration::from_secs(90), "the rollout to 2", |l| {
        l.contains("shop/deployment.apps/web: rolled out 2/2")
    });

    // 4. A bad file changes nothing and is reported as `berth validate` reports it.
    std::fs::write(
        folder.join("40-bad.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: shop\ndata:\n  key: [1, 2]\n",
    )
    .unwrap();
    set_replicas(&folder, "replicas: 2", "replicas: 1");
    second.wait_for(Duration::from_secs(30), "the refusal", |l| {
        l.contains("nothing changed")
    });
    let after_bad = second.lines_within(Duration::from_secs(4));
    assert!(
        !after_bad.iter().any(|l| l.starts_with("applied:")
            || l.contains("rolled out 1/1")
            || l.contains("configmap/bad")),
        "the bad folder changed something: {after_bad:#?}"
    );
    let stderr = second.stderr_text();
    assert!(
        stderr.contains("40-bad.yaml"),
        "the problem is reported with its file: {stderr}"
    );

    // 5. Ctrl-C stops berth and leaves the containers running.
    let status = second.interrupt();
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
    let _serial = support_up::serial();
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
    let _serial = support_up::serial();
    support_up::example_images();
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
