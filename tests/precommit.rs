//! berth's hooks driven by the real `pre-commit` framework (from PyPI, in a virtualenv this
//! test creates under `target/`), against throwaway git repositories: an invalid manifest is
//! refused with its `file:line` in the output, a valid one passes.
//!
//! `pre-commit try-repo` and hook installs read this repository's committed state (HEAD, plus
//! tracked files' uncommitted changes for try-repo), so `.pre-commit-hooks.yaml` must be
//! committed for these tests to see it. They fail, never skip, when python3, pip or
//! pre-commit cannot be had: a hook nobody tests is a hook that breaks unnoticed.

pub mod support;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use support::poll_blocking;

/// The pre-commit release the tests run; bump deliberately.
const PRE_COMMIT: &str = "pre-commit==4.7.0";

const VALID: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
data:
  mode: fast
";

/// Line 5 holds the mistake: `dat` is not a field of ConfigMap.
const INVALID: &str = "\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
dat:
  mode: fast
";

fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Output of a finished command; fails the test if it did not finish within `limit`.
struct Finished {
    code: Option<i32>,
    output: String,
}

fn run(command: &mut Command, limit: Duration) -> Finished {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut out = child.stdout.take().expect("piped");
    let mut err = child.stderr.take().expect("piped");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let finished = poll_blocking(limit, || child.try_wait().expect("wait"));
    let Ok(status) = finished else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{description} did not finish within {limit:?}");
    };
    Finished {
        code: status.code(),
        output: format!(
            "{}{}",
            out.join().expect("stdout"),
            err.join().expect("stderr")
        ),
    }
}

#[track_caller]
fn must_succeed(command: &mut Command, limit: Duration) -> String {
    let description = format!("{command:?}");
    let done = run(command, limit);
    assert_eq!(done.code, Some(0), "{description} failed:\n{}", done.output);
    done.output
}

/// The `pre-commit` executable in a virtualenv under `target/`, created on first use and
/// reused by later runs (a venv records its own path, so it is made where it stays).
fn pre_commit() -> &'static Path {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        let venv = repo_root().join("target").join("precommit-venv");
        let exe = venv.join("bin").join("pre-commit");
        let version = PRE_COMMIT.trim_start_matches("pre-commit==");
        let works = || {
            Command::new(&exe).arg("--version").output().is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains(version)
            })
        };
        if works() {
            return exe;
        }
        // Half made by an interrupted run, or another version: start again.
        let _ = std::fs::remove_dir_all(&venv);
        let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
        must_succeed(
            Command::new(&python).args(["-m", "venv"]).arg(&venv),
            Duration::from_secs(300),
        );
        must_succeed(
            Command::new(venv.join("bin").join("pip")).args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                PRE_COMMIT,
            ]),
            Duration::from_secs(600),
        );
        assert!(works(), "{} does not run after installing", exe.display());
        exe
    })
}

/// PATH with the freshly built `berth` first, as if the user had installed it.
fn path_with_berth() -> std::ffi::OsString {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_berth"))
        .parent()
        .expect("the binary has a folder")
        .to_path_buf();
    let mut paths = vec![bin_dir];
    paths.extend(std::env::split_paths(
        &std::env::var_os("PATH").unwrap_or_default(),
    ));
    std::env::join_paths(paths).expect("join PATH")
}

/// A throwaway git repository of manifests, with pre-commit's own state beside it; both are
/// removed when dropped.
struct ManifestRepo {
    dir: tempfile::TempDir,
}

impl ManifestRepo {
    fn new() -> ManifestRepo {
        let dir = tempfile::Builder::new()
            .prefix("berth-precommit-")
            .tempdir()
            .expect("temporary folder");
        std::fs::create_dir(dir.path().join("work")).expect("create the work tree");
        let repo = ManifestRepo { dir };
        repo.git(&["init", "--quiet", "--initial-branch=main"]);
        repo.git(&["config", "user.name", "berth test"]);
        repo.git(&["config", "user.email", "test@berth.invalid"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    fn write(&self, relative: &str, contents: &str) {
        let path = self.path().join(relative);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("create folders");
        std::fs::write(path, contents).expect("write");
    }

    fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new(program);
        command
            .current_dir(self.path())
            .env("PATH", path_with_berth())
            .env("PRE_COMMIT_HOME", self.dir.path().join("pre-commit-home"))
            .env("NO_COLOR", "1")
            .env("PRE_COMMIT_COLOR", "never")
            .env_remove("GIT_DIR")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_WORK_TREE");
        command
    }

    #[track_caller]
    fn git(&self, args: &[&str]) -> String {
        must_succeed(self.command("git").args(args), Duration::from_secs(60))
    }

    fn try_repo(&self, hook: &str, files: &[&str], limit: Duration) -> Finished {
        let mut command = self.command(pre_commit());
        command
            .arg("try-repo")
            .arg(repo_root())
            .arg(hook)
            .arg("--verbose")
            .arg("--files")
            .args(files);
        run(&mut command, limit)
    }
}

fn assert_refused(done: &Finished, location: &str) {
    assert_eq!(
        done.code,
        Some(1),
        "the hook let an invalid manifest through:\n{}",
        done.output
    );
    assert!(
        done.output.contains(location),
        "the hook's output does not name {location}:\n{}",
        done.output
    );
    assert!(
        done.output.contains("Failed"),
        "pre-commit did not report the hook as failed:\n{}",
        done.output
    );
}

fn assert_passed(done: &Finished) {
    assert_eq!(
        done.code,
        Some(0),
        "the hook refused a valid manifest:\n{}",
        done.output
    );
    assert!(done.output.contains("Passed"), "{}", done.output);
}

#[test]
fn system_hook_refuses_an_invalid_manifest_and_passes_a_valid_one() {
    let repo = ManifestRepo::new();
    repo.write("deploy/settings.yaml", INVALID);
    repo.write(
        "deploy/other.yml",
        VALID.replace("settings", "other").as_str(),
    );
    repo.git(&["add", "."]);

    let done = repo.try_repo(
        "berth-validate-system",
        &["deploy/settings.yaml", "deploy/other.yml"],
        Duration::from_secs(300),
    );
    assert_refused(&done, "deploy/settings.yaml:5:1");

    repo.write("deploy/settings.yaml", VALID);
    let done = repo.try_repo(
        "berth-validate-system",
        &["deploy/settings.yaml", "deploy/other.yml"],
        Duration::from_secs(300),
    );
    assert_passed(&done);
}

#[test]
fn system_hook_ignores_files_that_are_not_manifests() {
    let repo = ManifestRepo::new();
    // Neither is a Kubernetes manifest; the hook must not even look at them.
    repo.write("README.md", "not: [yaml\n");
    repo.write(".github/workflows/ci.yml", "on: push\njobs: {}\n");
    repo.write("deploy/settings.yaml", VALID);
    repo.git(&["add", "."]);
    let done = repo.try_repo(
        "berth-validate-system",
        &[
            "README.md",
            ".github/workflows/ci.yml",
            "deploy/settings.yaml",
        ],
        Duration::from_secs(300),
    );
    assert_passed(&done);
    assert!(
        !done.output.contains("ci.yml"),
        "the hook read a hidden folder's YAML:\n{}",
        done.output
    );
}

#[test]
fn system_hook_sees_the_same_object_in_two_files() {
    // require_serial: all files reach one berth process, so duplicates across files are found.
    let repo = ManifestRepo::new();
    repo.write("a/settings.yaml", VALID);
    repo.write("b/settings.yaml", VALID);
    repo.git(&["add", "."]);
    let done = repo.try_repo(
        "berth-validate-system",
        &["a/settings.yaml", "b/settings.yaml"],
        Duration::from_secs(300),
    );
    assert_refused(&done, "b/settings.yaml:4:9");
    assert!(
        done.output.contains("a/settings.yaml:1:1"),
        "{}",
        done.output
    );
}

#[test]
fn an_installed_hook_refuses_the_commit() {
    let repo = ManifestRepo::new();
    let head = must_succeed(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo_root()),
        Duration::from_secs(60),
    );
    repo.write(
        ".pre-commit-config.yaml",
        &format!(
            "repos:\n- repo: {}\n  rev: {}\n  hooks:\n  - id: berth-validate-system\n",
            repo_root().display(),
            head.trim()
        ),
    );
    must_succeed(
        repo.command(pre_commit()).arg("install"),
        Duration::from_secs(120),
    );
    repo.write("deploy/settings.yaml", INVALID);
    repo.git(&["add", "."]);
    let done = run(
        repo.command("git")
            .args(["commit", "--quiet", "-m", "add settings"]),
        Duration::from_secs(300),
    );
    assert_ne!(
        done.code,
        Some(0),
        "the commit went through:\n{}",
        done.output
    );
    assert!(
        done.output.contains("deploy/settings.yaml:5:1"),
        "{}",
        done.output
    );
    let log = run(
        repo.command("git").args(["rev-parse", "--verify", "HEAD"]),
        Duration::from_secs(60),
    );
    assert_ne!(log.code, Some(0), "a commit was made: {}", log.output);

    repo.write("deploy/settings.yaml", VALID);
    repo.git(&["add", "."]);
    repo.git(&["commit", "--quiet", "-m", "add settings"]);
}

/// `berth-validate` (language: rust) builds berth from a clone of this repository with
/// `cargo install`. The build goes to a persistent folder under `target/` so later runs reuse
/// the dependencies, and with an unoptimised profile: this test is about the hook, not about
/// the speed of the binary it builds.
#[test]
fn rust_hook_builds_berth_and_refuses_an_invalid_manifest() {
    let repo = ManifestRepo::new();
    repo.write("deploy/settings.yaml", INVALID);
    repo.git(&["add", "."]);
    let cargo_target = repo_root().join("target").join("precommit-cargo");
    let mut command = repo.command(pre_commit());
    command
        .arg("try-repo")
        .arg(repo_root())
        .arg("berth-validate")
        .args(["--verbose", "--files", "deploy/settings.yaml"])
        .env("CARGO_TARGET_DIR", &cargo_target)
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "0")
        .env("CARGO_PROFILE_RELEASE_LTO", "false")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "256")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_INCREMENTAL", "true");
    // Not the freshly built binary: the hook must use the one it built.
    command.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let done = run(&mut command, Duration::from_secs(1500));
    assert_refused(&done, "deploy/settings.yaml:5:1");
}

/// The example configuration users copy works as it says: manifests under `deploy/` are
/// checked, other YAML is left alone, custom resources only warn.
#[test]
fn the_example_config_checks_only_the_manifest_folder() {
    let example =
        std::fs::read_to_string(repo_root().join("examples/pre-commit/.pre-commit-config.yaml"))
            .expect("read the example config");
    let head = must_succeed(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(repo_root()),
        Duration::from_secs(60),
    );
    // Point it at this checkout, and at the hook that uses the freshly built binary rather
    // than building berth again (the rust hook has its own test).
    let config: String = example
        .lines()
        .map(|line| match line.trim_start() {
            l if l.starts_with("- repo:") => format!("  - repo: {}", repo_root().display()),
            l if l.starts_with("rev:") => format!("    rev: {}", head.trim()),
            l if l.starts_with("- id: berth-validate") => {
                "      - id: berth-validate-system".to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_ne!(
        config, example,
        "the example's repo/rev/id lines were not found"
    );

    let repo = ManifestRepo::new();
    repo.write(".pre-commit-config.yaml", &config);
    repo.write(
        "docker-compose.yml",
        "services:\n  web:\n    image: nginx\n",
    );
    repo.write("deploy/settings.yaml", VALID);
    repo.write(
        "deploy/widget.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    );
    repo.git(&["add", "."]);
    let run_all = || {
        run(
            repo.command(pre_commit())
                .args(["run", "--all-files", "--verbose"]),
            Duration::from_secs(300),
        )
    };
    let done = run_all();
    assert_passed(&done);
    assert!(
        done.output.contains("Widget"),
        "no warning for the CRD:\n{}",
        done.output
    );

    repo.write("deploy/settings.yaml", INVALID);
    repo.git(&["add", "."]);
    assert_refused(&run_all(), "deploy/settings.yaml:5:1");
}
