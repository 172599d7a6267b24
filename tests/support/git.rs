//! For GitOps tests: a git repository (a local bare one, what a GitSource follows, and a
//! working clone that commits and pushes to it, both removed on drop). Needs `git` (the
//! tests fail without it).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A bare repository and a working clone that pushes to it.
pub struct Repo {
    pub dir: tempfile::TempDir,
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "user.name=Test",
            "-c",
            "user.email=t@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git must be installed (the GitOps tests fail without it)");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

impl Repo {
    pub fn init() -> Repo {
        let dir = tempfile::Builder::new()
            .prefix("berth-gitops-repo")
            .tempdir()
            .expect("temp dir");
        git(dir.path(), &["init", "--bare", "origin.git"]);
        git(dir.path(), &["clone", "origin.git", "work"]);
        Repo { dir }
    }

    pub fn origin(&self) -> PathBuf {
        self.dir.path().join("origin.git")
    }

    pub fn work(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    pub fn write(&self, file: &str, text: &str) {
        let path = self.work().join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn remove(&self, file: &str) {
        git(&self.work(), &["rm", "-q", file]);
    }

    /// Commits everything and pushes; returns the commit id.
    pub fn commit_and_push(&self, message: &str) -> String {
        git(&self.work(), &["add", "-A"]);
        git(
            &self.work(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        git(&self.work(), &["push", "-q", "origin", "HEAD:main"]);
        git(&self.work(), &["rev-parse", "HEAD"])
    }
}
