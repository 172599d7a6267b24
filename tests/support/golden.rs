//! Golden files for what users read: output is compared byte for byte with a file kept in
//! `tests/golden/`, and every difference in a run is reported at once. `UPDATE_GOLDEN=1`
//! writes the outputs instead (review the change like code); CI refuses to run with it set.

use std::path::{Path, PathBuf};

/// The folder of golden files under `tests/golden/`, e.g. `golden::dir("diff")`.
pub fn dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// The case folders under `tests/golden/NAME/`, sorted.
pub fn cases(name: &str) -> Vec<PathBuf> {
    let root = dir(name);
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

fn updating() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compares outputs with their golden files, collecting every difference.
#[derive(Default)]
pub struct Golden {
    differences: Vec<String>,
}

impl Golden {
    pub fn new() -> Golden {
        Golden::default()
    }

    /// Compares `actual` with the file at `path` (or writes it under `UPDATE_GOLDEN=1`).
    pub fn check(&mut self, path: &Path, actual: &str) {
        if updating() {
            std::fs::create_dir_all(path.parent().expect("a parent folder"))
                .expect("create the golden folder");
            std::fs::write(path, actual).expect("write the golden file");
            return;
        }
        match std::fs::read_to_string(path) {
            Ok(expected) if expected == actual => {}
            Ok(expected) => self.differences.push(format!(
                "{}:\n--- expected\n{expected}\n+++ actual\n{actual}",
                path.display()
            )),
            Err(e) => self.differences.push(format!(
                "{}: {e} (UPDATE_GOLDEN=1 creates it)\n+++ actual\n{actual}",
                path.display()
            )),
        }
    }

    /// Fails the test with every difference found.
    pub fn finish(self) {
        assert!(
            self.differences.is_empty(),
            "golden files differ (UPDATE_GOLDEN=1 rewrites them after review):\n{}",
            self.differences.join("\n")
        );
    }
}

/// One comparison, failing at once.
pub fn assert_golden(path: &Path, actual: &str) {
    let mut golden = Golden::new();
    golden.check(path, actual);
    golden.finish();
}
