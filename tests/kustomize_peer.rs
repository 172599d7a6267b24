//! berth's built-in kustomize against the reference, `kubectl kustomize` (kustomize v5): every
//! case under `tests/kustomize/` (one per feature, overlays of overlays, generators merged
//! across layers) renders to the same objects, compared order-insensitively as YAML values.
//! kubectl must be installed: the test fails, not skips, without it.

use std::path::{Path, PathBuf};
use std::process::Command;

use berth::manifest::kustomize::{Disk, render};
use berth::manifest::{LoadOptions, load_text};
use serde_json::Value;

fn cases() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kustomize")
}

/// The objects `kubectl kustomize DIR` prints.
fn reference(dir: &Path) -> Result<Vec<Value>, String> {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl must be installed to compare with kustomize");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let text = String::from_utf8(out.stdout).unwrap();
    let (_, objects, problems) = load_text("kubectl".into(), text, LoadOptions::default());
    assert!(problems.is_empty(), "{problems:?}");
    Ok(objects.into_iter().map(|o| o.value).collect())
}

fn berth(dir: &Path) -> Result<Vec<Value>, String> {
    render(&Disk, dir.to_str().unwrap())
        .map(|objects| objects.into_iter().map(|o| o.value).collect())
        .map_err(|e| e.to_string())
}

/// The objects as canonical JSON texts (keys sorted), sorted: equal when the sets are.
fn canonical(objects: &[Value]) -> Vec<String> {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut entries: Vec<_> = m.iter().collect();
                entries.sort_by(|a, b| a.0.cmp(b.0));
                Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.clone(), sorted(v)))
                        .collect(),
                )
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    let mut out: Vec<String> = objects
        .iter()
        .map(|o| serde_json::to_string_pretty(&sorted(o)).unwrap())
        .collect();
    out.sort();
    out
}

/// Every case folder (one holding a kustomization at its top).
fn case_dirs() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(cases())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("kustomization.yaml").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// Every folder below `root` holding a kustomization (not a Component), sorted.
fn all_kustomizations(root: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    let k = ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| root.join(n))
        .find(|p| p.is_file());
    if let Some(k) = k
        && !std::fs::read_to_string(&k)
            .unwrap_or_default()
            .contains("kind: Component")
    {
        out.push(root.to_path_buf());
    }
    for e in entries {
        if e.is_dir() {
            all_kustomizations(&e, out);
        }
    }
}

/// Compares berth with kubectl on each folder; both refusing a folder is agreement.
fn compare(dirs: &[PathBuf]) -> Vec<String> {
    let mut failures = Vec::new();
    for dir in dirs {
        match (reference(dir), berth(dir)) {
            (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) => failures.push(format!(
                "{}: kubectl refuses it, berth renders it: {e}",
                dir.display()
            )),
            (Ok(_), Err(e)) => failures.push(format!("{}: berth failed: {e}", dir.display())),
            (Ok(want), Ok(got)) => {
                let (want, got) = (canonical(&want), canonical(&got));
                if want != got {
                    let missing: Vec<_> = want.iter().filter(|w| !got.contains(w)).collect();
                    let extra: Vec<_> = got.iter().filter(|g| !want.contains(g)).collect();
                    failures.push(format!(
                        "{}: differs from kubectl kustomize\n--- kubectl has, berth lacks:\n{}\n+++ berth has, kubectl lacks:\n{}",
                        dir.display(),
                        missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
                        extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n"),
                    ));
                }
            }
        }
    }
    failures
}

#[test]
fn every_case_renders_as_kubectl_kustomize_does() {
    let dirs = case_dirs();
    assert!(dirs.len() >= 8, "the cases are missing: {dirs:?}");
    for dir in &dirs {
        reference(dir).unwrap_or_else(|e| panic!("kubectl kustomize {}: {e}", dir.display()));
    }
    let failures = compare(&dirs);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// CI's extra check (`.ci/run`): every kustomization below `BERTH_KUSTOMIZE_CORPUS`, less
/// the folders `BERTH_KUSTOMIZE_EXCEPTIONS` lists (relative paths, each with its reason).
/// Without the variable this test checks the repository's own cases instead.
#[test]
fn a_corpus_renders_as_kubectl_kustomize_does() {
    let root = std::env::var_os("BERTH_KUSTOMIZE_CORPUS").map_or_else(cases, PathBuf::from);
    let exceptions: Vec<String> = std::env::var_os("BERTH_KUSTOMIZE_EXCEPTIONS")
        .map(|p| std::fs::read_to_string(p).expect("the exceptions file"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect();
    let mut dirs = Vec::new();
    all_kustomizations(&root, &mut dirs);
    let dirs: Vec<PathBuf> = dirs
        .into_iter()
        .filter(|d| {
            let rel = d
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            !exceptions.contains(&rel)
        })
        .collect();
    assert!(
        !dirs.is_empty(),
        "no kustomization below {}",
        root.display()
    );
    let failures = compare(&dirs);
    assert!(
        failures.is_empty(),
        "{} of {} folders differ:\n\n{}",
        failures.len(),
        dirs.len(),
        failures.join("\n\n")
    );
}

/// The legacy order kubectl prints (kinds first by kustomize's list, then by id) is berth's.
#[test]
fn objects_come_out_in_kustomizes_order() {
    for name in ["names", "fifo", "labels"] {
        let dir = cases().join(name);
        let kind_and_name = |objects: Vec<Value>| -> Vec<String> {
            objects
                .iter()
                .map(|o| {
                    format!(
                        "{} {}",
                        o["kind"].as_str().unwrap(),
                        o["metadata"]["name"].as_str().unwrap()
                    )
                })
                .collect()
        };
        assert_eq!(
            kind_and_name(berth(&dir).unwrap()),
            kind_and_name(reference(&dir).unwrap()),
            "{name}"
        );
    }
}

/// What berth refuses, it refuses with the file, the line and a way out.
#[test]
fn refusals_name_the_file_the_line_and_the_fix() {
    let root = tempfile::tempdir().unwrap();
    let write = |path: &str, text: &str| {
        let full = root.path().join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    };
    write(
        "outside.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let cases: &[(&str, &str, &str)] = &[
        (
            "helm",
            "resources: []\nhelmCharts:\n- name: redis\n",
            "kustomization.yaml:2:1: `helmCharts` is not supported",
        ),
        (
            "remote",
            "resources:\n- https://github.com/kubernetes-sigs/kustomize//examples/helloWorld?ref=v5.0.0\n",
            "is a remote resource",
        ),
        (
            "restricted",
            "resources:\n- ../outside.yaml\n",
            "outside the kustomization's folder",
        ),
        (
            "unknown",
            "resources: []\nnamePrefixx: a-\n",
            "unknown field `namePrefixx`",
        ),
        (
            "plugins",
            "transformers:\n- t.yaml\n",
            "transformer plugins are not run by berth",
        ),
        (
            "missing",
            "resources:\n- nowhere.yaml\n",
            "`nowhere.yaml`: no such file or folder",
        ),
        (
            "nopatch",
            "resources: []\npatches:\n- path: p.yaml\n",
            "no such file",
        ),
    ];
    for (name, kustomization, want) in cases {
        write(&format!("{name}/kustomization.yaml"), kustomization);
        let dir = root.path().join(name);
        let err = render(&Disk, dir.to_str().unwrap())
            .map(|_| ())
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains(want), "{name}: {text}");
        assert!(
            text.contains(&format!("{name}/kustomization.yaml")),
            "{name}: {text}"
        );
    }
    // A folder without a kustomization, listed as a resource.
    write("bare/kustomization.yaml", "resources:\n- plain\n");
    write(
        "bare/plain/x.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    );
    let err = render(&Disk, root.path().join("bare").to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("no kustomization.yaml"), "{err}");
}
