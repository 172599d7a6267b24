//! The official Kubernetes Python client (`kubernetes` from PyPI) in one venv under
//! `target/`, shared by the tests that drive a server with it.

use std::path::PathBuf;
use std::process::Command;

use super::api::{stderr, stdout};

/// The Python client release the test runs; bump deliberately (a new release may change what
/// it sends, and a failure should name the change that caused it).
const KUBERNETES: &str = "kubernetes==37.0.3";

/// `target/api-python-venv`, created with [`KUBERNETES`] installed on first use, and made
/// again when it holds another release.
pub fn venv_python() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("api-python-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".kubernetes-installed");
    let installed = || std::fs::read_to_string(&ready).is_ok_and(|i| i == KUBERNETES);
    if installed() {
        return python;
    }
    // Test binaries run side by side: one makes the venv, the others wait for it.
    std::fs::create_dir_all(&target).expect("make target/");
    let _lock = VenvLock::take(target.join("api-python-venv.lock"));
    if installed() {
        return python;
    }
    // Half made by an interrupted run, or another release: start again.
    let _ = std::fs::remove_dir_all(&venv);
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .output()
        .expect("python3 must be installed (the Python client test fails without it)");
    assert!(
        made.status.success(),
        "python3 -m venv failed: {}",
        stderr(&made)
    );
    let pip = Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(KUBERNETES)
        .output()
        .expect("run pip");
    assert!(
        pip.status.success(),
        "pip install kubernetes failed: {}{}",
        stdout(&pip),
        stderr(&pip)
    );
    std::fs::write(&ready, KUBERNETES).expect("mark the venv ready");
    python
}

/// A lock file held while the venv is made; removed on drop (a stale one, left by a killed
/// run, is taken over after ten minutes).
struct VenvLock(PathBuf);

impl VenvLock {
    fn take(path: PathBuf) -> VenvLock {
        let stale = std::time::Duration::from_secs(600);
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return VenvLock(path),
                Err(_) => {
                    let age = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > stale) {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
            }
        }
    }
}

impl Drop for VenvLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
