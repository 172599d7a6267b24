//! The official Kubernetes Python client (`kubernetes` from PyPI, in a venv this test creates
//! under `target/`) against a live `berth server`. Fails, not skips, when Python or the
//! package cannot be had.

pub mod support;

use std::process::Command;

use support::api::{Server, stderr, stdout};
use support::python::venv_python;

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
