//! The command line: clap definitions and dispatch to each command.

mod diff;
mod node;
mod rollout;
mod schema;
mod server;
mod snapshot;
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
    /// Watch, list, undo, restart, pause or resume a Deployment's rollout
    #[command(subcommand)]
    Rollout(rollout::RolloutCommand),
    /// Mark a node unschedulable
    Cordon(node::NodeArgs),
    /// Mark a node schedulable again
    Uncordon(node::NodeArgs),
    /// Cordon a node and move every pod off it
    Drain(node::DrainArgs),
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
        Command::Rollout(cmd) => rollout::run(cmd),
        Command::Cordon(args) => node::cordon(args),
        Command::Uncordon(args) => node::uncordon(args),
        Command::Drain(args) => node::run_drain(args),
    };
    ExitCode::from(code)
}
