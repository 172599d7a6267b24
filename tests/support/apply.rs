//! Shared helpers for the `berth apply` / `berth diff -f` tests: run the real binary against a
//! live `berth server` (its kubeconfig), and write manifest folders.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use super::api::{Server, stderr, stdout};

/// Runs `berth ARGS` with the server's kubeconfig and no colour.
pub fn berth(server: &Server, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_berth"))
        .env("KUBECONFIG", &server.kubeconfig)
        .env("HOME", server.dir.path())
        .env("NO_COLOR", "1")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run berth")
}

/// Runs `berth ARGS` and insists on exit code `code`; returns stdout.
pub fn berth_code(server: &Server, args: &[&str], code: i32) -> String {
    let out = berth(server, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "berth {args:?}\nstdout:\n{}\nstderr:\n{}",
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

/// A folder of manifests, rewritten with [`Manifests::set`].
pub struct Manifests {
    pub dir: tempfile::TempDir,
}

impl Manifests {
    pub fn new(files: &[(&str, &str)]) -> Manifests {
        let m = Manifests {
            dir: tempfile::Builder::new()
                .prefix("berth-apply-test")
                .tempdir()
                .expect("temp dir"),
        };
        m.set(files);
        m
    }

    /// Replaces the folder's files with `files`.
    pub fn set(&self, files: &[(&str, &str)]) {
        for entry in std::fs::read_dir(self.dir.path()).expect("read dir") {
            std::fs::remove_file(entry.expect("entry").path()).expect("remove");
        }
        for (name, text) in files {
            std::fs::write(self.dir.path().join(name), text).expect("write manifest");
        }
    }

    pub fn path(&self) -> &str {
        self.dir.path().to_str().expect("UTF-8 temp path")
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// A ConfigMap manifest.
pub fn configmap(name: &str, value: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: {value:?}\n")
}

/// A Deployment manifest (no replicas unless given: they are left to `kubectl scale`).
pub fn deployment(name: &str, image: &str, replicas: Option<u32>) -> String {
    let replicas = replicas
        .map(|r| format!("  replicas: {r}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n{replicas}  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n      - name: main\n        image: {image}\n"
    )
}

/// Names of the ConfigMaps in a namespace, sorted.
pub fn configmaps(server: &Server, namespace: &str) -> Vec<String> {
    let out = server.kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        namespace,
        "-o",
        "jsonpath={range .items[*]}{.metadata.name}{\"\\n\"}{end}",
    ]);
    let mut names: Vec<String> = out.lines().map(str::to_string).collect();
    names.sort();
    names
}
