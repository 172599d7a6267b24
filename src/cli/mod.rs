//! The command line: clap definitions and dispatch to each command.

mod agent;
mod apply;
mod cluster_info;
mod completion;
pub mod delete;
pub mod describe;
mod diff;
mod etcd;
mod exec;
pub mod get;
mod gitsource;
mod kustomize;
mod logs;
mod manifests;
mod node;
pub mod output;
pub mod request;
mod rollout;
mod schema;
mod server;
mod snapshot;
mod terminal;
mod up;
mod validate;
mod version;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for invalid input (as kubectl diff and kubeconform use it).
pub const EXIT_INVALID: u8 = 1;
/// Exit code for usage and I/O errors.
pub const EXIT_ERROR: u8 = 2;

/// The single-threaded async runtime the client commands and the agent run on; None (the
/// reason printed) if it cannot start.
fn single_thread_runtime() -> Option<tokio::runtime::Runtime> {
    start_runtime(tokio::runtime::Builder::new_current_thread())
}

/// A multi-threaded async runtime for the server and `berth up` (`workers` threads, or one
/// per core); None (the reason printed) if it cannot start.
fn multi_thread_runtime(workers: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = workers {
        builder.worker_threads(n);
    }
    start_runtime(builder)
}

fn start_runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder.enable_all().build() {
        Ok(runtime) => Some(runtime),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version,
    about = "A declarative, GitOps-style container orchestrator that speaks the Kubernetes API",
    propagate_version = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check manifests against the Kubernetes schemas and the API server's rules
    Validate(validate::ValidateArgs),
    /// Apply manifests to the cluster in one transaction, with an optional safe prune
    Apply(apply::ApplyArgs),
    /// Show what would change: between two git revisions (--git-base), or against a cluster
    Diff(diff::DiffArgs),
    /// Print the objects a kustomization renders to, as `kubectl kustomize` does
    Kustomize(kustomize::KustomizeArgs),
    /// Work with the JSON Schemas berth validates against
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Run the API server (store, TLS, auth) that kubectl and the agents talk to
    Server(server::ServerArgs),
    /// Run the node agent: register this node and run the pods bound to it on Docker
    Agent(Box<agent::AgentArgs>),
    /// Save or restore a snapshot of the store (the embedded SQLite file or etcd)
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// List objects, with the server's columns (or -o wide|yaml|json|name); -w follows changes
    Get(get::GetArgs),
    /// Show one object in detail: fields, conditions, owner, events
    Describe(describe::DescribeArgs),
    /// Delete objects by file, by type and name, by label selector or --all
    Delete(delete::DeleteArgs),
    /// Where the control plane runs and whether it is healthy
    ClusterInfo(cluster_info::ClusterInfoArgs),
    /// This client's version and the server's
    Version(version::VersionArgs),
    /// Print a shell completion script (bash, zsh or fish)
    Completion(completion::CompletionArgs),
    /// Print a container's log (through the API server and the pod's agent)
    Logs(logs::LogsArgs),
    /// Run a command in a pod's container; exits with the command's code
    Exec(exec::ExecArgs),
    /// Watch, list, undo, restart, pause or resume a Deployment's rollout
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Mark a node unschedulable
    Cordon(node::NodeArgs),
    /// Mark a node schedulable again
    Uncordon(node::NodeArgs),
    /// Cordon a node and move every pod off it
    Drain(node::DrainArgs),
    /// Run the whole cluster on this machine (server, store, one agent) and apply a folder
    Up(Box<up::UpArgs>),
    /// Suspend, resume or sync a GitSource
    #[command(subcommand)]
    Gitsource(gitsource::GitSourceCommand),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate(args) => validate::run(args),
        Command::Schema(cmd) => schema::run(cmd),
        Command::Server(args) => server::run(args),
        Command::Snapshot(cmd) => snapshot::run(cmd),
        Command::Diff(args) => diff::run(args),
        Command::Kustomize(args) => kustomize::run(args),
        Command::Agent(args) => agent::run(*args),
        Command::Get(args) => get::run(args),
        Command::Describe(args) => describe::run(args),
        Command::Delete(args) => delete::run(args),
        Command::ClusterInfo(args) => cluster_info::run(args),
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args),
        Command::Apply(args) => apply::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Exec(args) => exec::run(args),
        Command::Rollout(cmd) => rollout::run(cmd),
        Command::Cordon(args) => node::cordon(args),
        Command::Uncordon(args) => node::uncordon(args),
        Command::Drain(args) => node::run_drain(args),
        Command::Up(args) => up::run(*args),
        Command::Gitsource(cmd) => gitsource::run(cmd),
    };
    ExitCode::from(code)
}
