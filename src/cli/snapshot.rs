//! `berth snapshot save|restore`: copy the embedded store to one file and back.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cluster::store::sqlite::{DB_FILE_NAME, restore_snapshot, save_snapshot};

/// Where `berth server` keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent copy of the embedded store to FILE, while the server keeps writing
    Save(SaveArgs),
    /// Create a data directory holding the store from a snapshot FILE
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The snapshot file to create (must not exist)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The server's data directory
    #[arg(long, env = "BERTH_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    data_dir: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot file to restore
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory to create the store in (must not hold a store yet)
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
}

pub fn run(command: SnapshotCommand) -> u8 {
    let outcome = match &command {
        SnapshotCommand::Save(args) => save_snapshot(&args.data_dir.join(DB_FILE_NAME), &args.file)
            .map(|rev| format!("saved revision {rev} to {}", args.file.display())),
        SnapshotCommand::Restore(args) => restore_snapshot(&args.file, &args.data_dir)
            .map(|rev| format!("restored revision {rev} into {}", args.data_dir.display())),
    };
    match outcome {
        Ok(message) => {
            println!("{message}");
            0
        }
        Err(error) => {
            let mut line = format!("error: {error}");
            let mut source = std::error::Error::source(&error);
            while let Some(cause) = source {
                line.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            eprintln!("{line}");
            super::EXIT_ERROR
        }
    }
}
