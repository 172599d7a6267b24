//! The README's quick start cannot rot: this test reads the commands from README.md (the
//! fenced blocks after `<!-- quickstart -->` and `<!-- quickstart-kubectl -->`) and runs
//! them. `cargo run --release --` becomes this build's berth binary, and `berth up` gets the
//! test's data dir, a free port and the test's container label; nothing else is changed.

pub mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::process::Process;
use support::up::{UpScope, docker_lines, repo_root};

/// The command lines of the first fenced block after `marker`, without comments.
fn block_after(readme: &str, marker: &str) -> Vec<String> {
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README.md has no {marker} marker"));
    let rest = &readme[at..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let body = &rest[open..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    let close = body.find("```").expect("the block is closed");
    body[..close]
        .lines()
        .map(|l| match l.find(" #") {
            Some(i) => l[..i].trim(),
            None => l.trim(),
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn readme_quickstart_brings_the_example_up_and_kubectl_sees_it() {
    let _serial = support::up::serial();
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let commands = block_after(&readme, "<!-- quickstart -->");
    let kubectl = block_after(&readme, "<!-- quickstart-kubectl -->");
    assert!(
        commands.iter().any(|c| c.contains(" up ")),
        "the quick start runs berth up: {commands:?}"
    );
    let scope = UpScope::new("readme");
    let berth = env!("CARGO_BIN_EXE_berth");
    let mut up = None;
    for command in &commands {
        let Some(args) = command.strip_prefix("cargo run --release -- ") else {
            // Anything else (the image script) runs as written, offline.
            let out = Command::new("sh")
                .args(["-c", command])
                .current_dir(repo_root())
                .env("BERTH_OFFLINE", "1")
                .output()
                .expect("run the command");
            assert!(
                out.status.success(),
                "README command {command:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        assert_eq!(args.first(), Some(&"up"), "{command}");
        let mut command = Command::new(berth);
        command
            .args(&args)
            .arg("--data-dir")
            .arg(&scope.data_dir)
            .args(["--listen", "127.0.0.1:0"])
            .arg("--container-label")
            .arg(scope.label_arg())
            .current_dir(repo_root())
            .env("RUST_LOG", "warn")
            .stderr(Stdio::inherit());
        up = Some(Process::spawn("berth up", &mut command));
    }
    let mut up = up.expect("the quick start starts berth up");
    up.wait_line("Ready", Duration::from_secs(240), |line| {
        line.starts_with("ready: all").then_some(())
    });

    // The kubectl line, pointed at this test's data dir instead of ./.berth.
    for command in &kubectl {
        let command = command.replace(
            ".berth/kubeconfig.yaml",
            &scope.data_dir.join("kubeconfig.yaml").to_string_lossy(),
        );
        let out = Command::new("sh")
            .args(["-c", &command])
            .current_dir(repo_root())
            .output()
            .expect("kubectl must be installed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{command}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let running = stdout.lines().filter(|l| l.contains("Running")).count();
        assert_eq!(running, 4, "three web pods and the report pod: {stdout}");
        assert!(stdout.contains("report"), "{stdout}");
    }

    let status = up
        .stop("INT", Duration::from_secs(60))
        .expect("berth up stops after Ctrl-C");
    assert!(status.success(), "Ctrl-C exits 0: {status}");
    let left = docker_lines(&["ps", "-q", "--filter", &scope.filter()]);
    assert_eq!(left.len(), 9, "the containers keep running after Ctrl-C");
    // The scope removes them.
}
