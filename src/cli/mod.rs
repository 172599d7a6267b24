//! The command line: clap definitions and dispatch to each command.

mod apply;
mod diff;
mod exec;
mod logs;
mod manifests;
mod schema;
mod server;
mod snapshot;
mod terminal;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for invalid input (as kubectl diff and kubeconform use it).
pub const EXIT_INVALID: u8 = 1;
/// Exit code for usage and I/O errors.
pub const EXIT_ERROR: u8 = 2;

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
    /// Work with the JSON Schemas berth validates against
    #[command(subcommand)]
    Schema(schema::SchemaCommand),
    /// Run the API server (store, TLS, auth) that kubectl and the agents talk to
    Server(server::ServerArgs),
    /// Save or restore a snapshot of the embedded store
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// Print a container's log (through the API server and the pod's agent)
    Logs(logs::LogsArgs),
    /// Run a command in a pod's container; exits with the command's code
    Exec(exec::ExecArgs),
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
        Command::Apply(args) => apply::run(args),
        Command::Logs(args) => logs::run(args),
        Command::Exec(args) => exec::run(args),
    };
    ExitCode::from(code)
}
