//! Shared helpers for the `berth up` tests: a scope (the test's container label and a data
//! dir) whose Drop removes every container and volume the test's `berth up` made, even when
//! the test fails; the example images; and a lock that keeps clusters from running at once
//! (the example's NodePort is one per host).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard};

use super::docker::{TEST_LABEL, TestScope};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// One cluster at a time.
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// The test's label scope and its data dir.
pub struct UpScope {
    pub scope: TestScope,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
}

impl UpScope {
    pub fn new(test: &str) -> UpScope {
        let dir = tempfile::tempdir().expect("temp dir");
        UpScope {
            scope: TestScope::new(test),
            data_dir: dir.path().join("berth"),
            _dir: dir,
        }
    }

    /// `berth.dev/test=<id>`, for `--container-label`.
    pub fn label_arg(&self) -> String {
        format!("{TEST_LABEL}={}", self.scope.id)
    }

    /// `label=berth.dev/test=<id>`, for `docker ps --filter`.
    pub fn filter(&self) -> String {
        format!("label={}", self.label_arg())
    }
}

/// The whitespace-separated words of a docker CLI command's output (fails on docker errors).
pub fn docker_lines(args: &[&str]) -> Vec<String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .expect("the docker CLI must be installed");
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// Builds the example's images offline with examples/images.sh.
pub fn example_images() {
    let out = Command::new(repo_root().join("examples/images.sh"))
        .env("BERTH_OFFLINE", "1")
        .output()
        .expect("run examples/images.sh");
    assert!(
        out.status.success(),
        "examples/images.sh failed (needs docker and busybox-static): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Copies a folder of files (one level).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}
