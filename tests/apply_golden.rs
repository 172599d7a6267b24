//! Golden files for what users read from `berth apply` and `berth diff -f` against a live
//! `berth server`: every case under `tests/golden/apply/` (see its README), compared byte for
//! byte. `UPDATE_GOLDEN=1 cargo test --test apply_golden` rewrites them.

pub mod support;

use std::path::Path;

use base64::Engine as _;
use support::api::{Server, stdout};
use support::apply::berth;
use support::golden::{self, Golden};

/// Secret values used in the fixtures: none may appear in any output, plain or base64.
const CANARIES: [&str; 2] = ["berth-canary-golden-hunter1", "berth-canary-golden-hunter2"];

/// Runs `berth ARGS` and returns stdout, insisting on the exit code.
fn run(server: &Server, args: &[&str], code: i32) -> String {
    let out = berth(server, args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "berth {args:?}: {}",
        support::api::stderr(&out)
    );
    stdout(&out)
}

fn outputs(dir: &Path) -> Vec<(&'static str, String)> {
    let server = Server::start();
    let v1 = dir.join("v1");
    let v2 = dir.join("v2");
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());
    let ns = ["-n", "shop"];
    let mut out = vec![(
        "apply-v1.txt",
        run(&server, &[&["apply", "-f", v1][..], &ns].concat(), 0),
    )];
    for (file, format) in [
        ("diff-v2.txt", "text"),
        ("diff-v2.md", "markdown"),
        ("diff-v2.json", "json"),
    ] {
        let args = [
            &[
                "diff", "-f", v2, "--prune", "--color", "never", "--format", format,
            ][..],
            &ns,
        ]
        .concat();
        out.push((file, run(&server, &args, 1)));
    }
    out.push((
        "apply-v2.txt",
        run(
            &server,
            &[&["apply", "--prune", "-f", v2][..], &ns].concat(),
            0,
        ),
    ));
    out
}

#[test]
fn golden_outputs_match_and_show_no_secret_value() {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut golden = Golden::new();
    for dir in golden::cases("apply") {
        for (file, actual) in outputs(&dir) {
            for canary in CANARIES {
                assert!(
                    !actual.contains(canary) && !actual.contains(&b64.encode(canary)),
                    "{}/{file} shows a Secret value",
                    dir.display()
                );
            }
            golden.check(&dir.join(file), &actual);
        }
    }
    golden.finish();
}
