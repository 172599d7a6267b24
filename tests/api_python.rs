//! The official Kubernetes Python client (`kubernetes` from PyPI, in a venv this test creates
//! under `target/`) against a live `berth server`. Fails, not skips, when Python or the
//! package cannot be had.

pub mod support;

use std::path::PathBuf;
use std::process::Command;

use support::api::{Server, stderr, stdout};

/// The Python client release the test runs; bump deliberately (a new release may change what
/// it sends, and a failure should name the change that caused it).
const KUBERNETES: &str = "kubernetes==37.0.3";

/// `target/api-python-venv`, created with [`KUBERNETES`] installed on first use, and made
/// again when it holds another release.
fn venv_python() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target");
    let venv = target.join("api-python-venv");
    let python = venv.join("bin/python");
    let ready = venv.join(".kubernetes-installed");
    if std::fs::read_to_string(&ready).is_ok_and(|installed| installed == KUBERNETES) {
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

#[test]
fn the_official_python_client_creates_reads_lists_patches_replaces_deletes_and_watches() {
    let python = venv_python();
    let server = Server::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_test.py");
    let out = Command::new(python)
        .arg(script)
        .env("KUBECONFIG", &server.kubeconfig)
        .output()
        .expect("run the Python client test");
    assert!(
        out.status.success(),
        "the Python client test failed:\nstdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("all checks passed"));
}
