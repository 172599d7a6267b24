//! `berth schema`: regenerate the committed JSON Schemas, or print one.

use std::path::PathBuf;

use clap::Subcommand;

use crate::manifest::{kinds, schema};

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Regenerate schemas/ from the Rust types (one file per kind plus index.json)
    Generate {
        /// Folder to write into
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
    /// Print the schema of one kind, e.g. `berth schema show apps/v1 Deployment`
    Show { api_version: String, kind: String },
}

pub fn run(cmd: SchemaCommand) -> u8 {
    match cmd {
        SchemaCommand::Generate { out } => match schema::write_all(&out) {
            Ok(files) => {
                println!("wrote {} schemas to {}", files.len(), out.display());
                0
            }
            Err(e) => {
                eprintln!("error: cannot write schemas to {}: {e}", out.display());
                super::EXIT_ERROR
            }
        },
        SchemaCommand::Show { api_version, kind } => match kinds::find(&api_version, &kind) {
            Some(k) => {
                print!("{}", schema::to_file_text(&schema::generate(k)));
                0
            }
            None => {
                eprintln!("error: unknown kind {kind} in {api_version}");
                super::EXIT_ERROR
            }
        },
    }
}
