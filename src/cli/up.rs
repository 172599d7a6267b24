//! `berth up [PATH]`: flags, their checks, logging and the Tokio runtime around
//! [`crate::daemons::up`].

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::manifests::load_valid;
use super::{EXIT_ERROR, EXIT_INVALID};
use crate::daemons::up::{self, UpError, UpOptions, UpOutcome};
use crate::manifest::ValidateOptions;

/// The data dir when `--data-dir` is not given: beside the manifests' project, as `.git` is.
pub const DEFAULT_DATA_DIR: &str = ".berth";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Folder of manifests to apply and watch (default: ./manifests, else examples/manifests)
    #[arg(value_name = "PATH", conflicts_with = "git")]
    path: Option<PathBuf>,
    /// Sync manifests from a git repository instead of a folder
    #[arg(long, value_name = "URL")]
    git: Option<String>,
    /// Branch, tag or commit for --git (default: the repository's HEAD)
    #[arg(long, value_name = "REF", requires = "git")]
    git_ref: Option<String>,
    /// Folder of the repository holding the manifests, for --git (default: the root)
    #[arg(long, value_name = "DIR", requires = "git")]
    git_path: Option<String>,
    /// Where the store, certificates, tokens and kubeconfig live; a second `berth up` on the
    /// same dir resumes without restarting any container
    #[arg(long, default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
    /// Address to serve the API on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Exit 0 once every applied object is Ready (pods running and ready, Deployments rolled
    /// out, Services with endpoints)
    #[arg(long)]
    exit_when_ready: bool,
    /// With --exit-when-ready: seconds to wait before exiting 1 with what is not Ready
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 300,
        requires = "exit_when_ready"
    )]
    timeout: u64,
    /// On the way out (Ctrl-C, or once Ready with --exit-when-ready), remove every container
    /// and volume berth up created, and its state in the data dir
    #[arg(long)]
    down: bool,
    /// This node's name (default: the host name)
    #[arg(long)]
    node_name: Option<String>,
    /// An extra label KEY=VALUE on every container and volume (repeatable)
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = key_value)]
    container_labels: Vec<(String, String)>,
    /// Milliseconds the folder must be quiet before a change is applied
    #[arg(long, default_value_t = 300, hide = true)]
    debounce_ms: u64,
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// The folder to apply: PATH, else `./manifests`, else `examples/manifests`.
fn manifests_folder(path: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = path {
        if !path.is_dir() {
            return Err(format!(
                "{}: not a folder (berth up applies and watches a folder of manifests)",
                path.display()
            ));
        }
        return Ok(path);
    }
    ["manifests", "examples/manifests"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            "no PATH given, and neither ./manifests nor examples/manifests exists; \
             pass the folder of manifests: berth up PATH"
                .to_string()
        })
}

fn node_name(flag: Option<String>) -> Result<String, String> {
    let name = flag.unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_lowercase())
            .unwrap_or_else(|_| "localhost".into())
    });
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if !valid {
        return Err(format!(
            "node name {name:?}: must be a DNS subdomain (lower-case letters, digits, '-' and '.'); pass --node-name"
        ));
    }
    Ok(name)
}

/// Turns the flags into options, or one line saying what is wrong.
fn options(args: UpArgs) -> Result<UpOptions, String> {
    let git = args
        .git
        .as_deref()
        .map(|url| crate::daemons::server::GitShortcut {
            url: super::server::git_url(url),
            git_ref: args.git_ref.clone(),
            path: args.git_path.clone(),
        });
    let manifests = match &git {
        Some(_) => PathBuf::new(),
        None => manifests_folder(args.path)?,
    };
    Ok(UpOptions {
        data_dir: args.data_dir,
        manifests,
        git,
        listen: args.listen,
        node_name: node_name(args.node_name)?,
        exit_when_ready: args.exit_when_ready,
        timeout: args
            .exit_when_ready
            .then(|| Duration::from_secs(args.timeout)),
        down: args.down,
        extra_labels: args
            .container_labels
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        debounce: Duration::from_millis(args.debounce_ms),
        live: std::io::stdout().is_terminal(),
    })
}

fn init_logging() {
    // Only what needs attention: the live view is the normal output.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Loads a folder with the loader and validator `berth apply` uses; problems go to stderr.
fn load(path: &Path) -> Option<Vec<serde_json::Value>> {
    let options = ValidateOptions {
        strict: true,
        ignore_unknown_kinds: false,
    };
    load_valid(&[path.to_string_lossy().into_owned()], options).ok()
}

/// Resolves on SIGINT, SIGTERM or SIGHUP (the terminal closed): each stops berth up the same
/// way, so `--down` still cleans up.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        return crate::daemons::server::shutdown_signal().await;
    };
    tokio::select! {
        () = crate::daemons::server::shutdown_signal() => {}
        _ = hangup.recv() => {}
    }
}

pub fn run(args: UpArgs) -> u8 {
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    init_logging();
    let Some(runtime) = super::multi_thread_runtime(Some(2)) else {
        return EXIT_ERROR;
    };
    let loader: up::Loader = Arc::new(load);
    let shutdown = shutdown_signal();
    match runtime.block_on(up::run(options, loader, shutdown)) {
        Ok(UpOutcome::Stopped | UpOutcome::Ready) => 0,
        Ok(UpOutcome::NotReady(reasons)) => {
            eprintln!("error: not everything became Ready within the timeout:");
            for reason in reasons {
                eprintln!("  - {reason}");
            }
            EXIT_INVALID
        }
        Ok(UpOutcome::ApplyFailed) => {
            eprintln!("error: the manifests could not be applied (see above)");
            EXIT_INVALID
        }
        Err(e @ UpError::Invalid { .. }) => {
            eprintln!("error: {e}");
            EXIT_INVALID
        }
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: UpArgs,
    }

    fn parse(args: &[&str]) -> Result<UpOptions, String> {
        let mut argv = vec!["berth-up"];
        argv.extend_from_slice(args);
        let w = Wrapper::try_parse_from(argv).map_err(|e| e.to_string())?;
        options(w.args)
    }

    #[test]
    fn a_missing_folder_is_one_clear_line_and_git_replaces_the_folder() {
        let missing = parse(&["/nonexistent/manifests"]).unwrap_err();
        assert!(missing.contains("not a folder"), "{missing}");
        let git = parse(&["--git", "https://example.com/r.git", "--git-path", "deploy"]).unwrap();
        let shortcut = git.git.expect("a git source");
        assert_eq!(shortcut.url, "https://example.com/r.git");
        assert_eq!(shortcut.path.as_deref(), Some("deploy"));
        let both = parse(&["--git", "https://example.com/r.git", "."]).unwrap_err();
        assert!(both.contains("cannot be used with"), "{both}");
        let timeout = parse(&["--timeout", "5", "."]).unwrap_err();
        assert!(timeout.contains("--exit-when-ready"), "{timeout}");
    }

    #[test]
    fn the_timeout_applies_only_when_exiting_when_ready() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap();
        let o = parse(&[
            path,
            "--exit-when-ready",
            "--timeout",
            "7",
            "--node-name",
            "n1",
        ])
        .unwrap();
        assert_eq!(o.timeout, Some(Duration::from_secs(7)));
        assert_eq!(o.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
        let o = parse(&[path, "--node-name", "n1"]).unwrap();
        assert_eq!(o.timeout, None);
    }
}
