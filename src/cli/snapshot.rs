//! `berth snapshot save|restore`: copy the store to one file and back: the embedded SQLite
//! store with `--data-dir`, etcd with `--etcd-endpoints` (save) and `--etcd-data-dir`
//! (restore, through etcd's own tool).

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};

use super::etcd::EtcdFlags;
use crate::cluster::store::sqlite::{DB_FILE_NAME, restore_snapshot, save_snapshot};

/// Where `berth server` keeps its state unless told otherwise.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Write a consistent copy of the store to FILE, while the masters keep writing: the data
    /// dir's SQLite file, or with --etcd-endpoints all of etcd (as `etcdctl snapshot save`)
    Save(SaveArgs),
    /// Create a data directory holding the store from a snapshot FILE: a berth data dir
    /// (--data-dir), or an etcd member's (--etcd-data-dir, with etcdutl or etcdctl)
    Restore(RestoreArgs),
}

#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The snapshot file to create (must not exist)
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The server's data directory (unused with --etcd-endpoints)
    #[arg(long, env = "BERTH_DATA_DIR", default_value = DEFAULT_DATA_DIR, value_name = "DIR")]
    data_dir: PathBuf,
    #[command(flatten)]
    etcd: EtcdFlags,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["data_dir", "etcd_data_dir"])))]
pub struct RestoreArgs {
    /// The snapshot file to restore
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The data directory to create the store in (must not hold a store yet)
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Restore an etcd snapshot into this new etcd data directory, then start `etcd
    /// --data-dir DIR` with the same --name, --initial-cluster and
    /// --initial-advertise-peer-urls (needs etcdutl or etcdctl on PATH)
    #[arg(long, value_name = "DIR")]
    etcd_data_dir: Option<PathBuf>,
    /// The restored etcd member's name (etcd's default: `default`)
    #[arg(long, value_name = "NAME", requires = "etcd_data_dir")]
    name: Option<String>,
    /// The members of the restored etcd cluster, NAME=PEER_URL,... (etcd's default:
    /// default=http://localhost:2380)
    #[arg(long, value_name = "NAME=URL,...", requires = "etcd_data_dir")]
    initial_cluster: Option<String>,
    /// The restored member's peer URLs (etcd's default: http://localhost:2380)
    #[arg(long, value_name = "URL,...", requires = "etcd_data_dir")]
    initial_advertise_peer_urls: Option<String>,
    /// The restored cluster's token (etcd's default: etcd-cluster)
    #[arg(long, value_name = "TOKEN", requires = "etcd_data_dir")]
    initial_cluster_token: Option<String>,
}

pub fn run(command: SnapshotCommand) -> u8 {
    let outcome = match command {
        // A snapshot of etcd holds every key, whatever prefix a cluster uses.
        SnapshotCommand::Save(args) => match args.etcd.config("") {
            Some(config) => save_etcd(&config, &args.file),
            None => save_snapshot(&args.data_dir.join(DB_FILE_NAME), &args.file)
                .map(|rev| format!("saved revision {rev} to {}", args.file.display()))
                .map_err(|e| one_line(&e)),
        },
        SnapshotCommand::Restore(args) => match &args.etcd_data_dir {
            Some(dir) => restore_etcd(&args, dir),
            None => {
                let data_dir = args.data_dir.as_deref().expect("clap requires one target");
                restore_snapshot(&args.file, data_dir)
                    .map(|rev| format!("restored revision {rev} into {}", data_dir.display()))
                    .map_err(|e| one_line(&e))
            }
        },
    };
    match outcome {
        Ok(message) => {
            println!("{message}");
            0
        }
        Err(line) => {
            eprintln!("error: {line}");
            super::EXIT_ERROR
        }
    }
}

/// An error and its causes on one line.
fn one_line(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    line
}

/// The error of an etcd flag given to a berth built without etcd.
#[cfg(not(feature = "etcd"))]
fn no_etcd(flag: &str) -> String {
    format!("{flag}: this berth was built without etcd support (cargo feature `etcd`)")
}

#[cfg(feature = "etcd")]
fn save_etcd(config: &crate::cluster::store::EtcdConfig, file: &Path) -> Result<String, String> {
    use crate::cluster::store::etcd::snapshot::{SnapshotSource, save_snapshot};
    let Some(runtime) = super::single_thread_runtime() else {
        return Err("cannot start the async runtime".into());
    };
    let saved = runtime
        .block_on(save_snapshot(config, file))
        .map_err(|e| one_line(&e))?;
    let member = match saved.source {
        SnapshotSource::Leader => format!("the leader, {}", saved.endpoint),
        SnapshotSource::Follower => format!(
            "a follower, {}: no endpoint given was the leader's; it may lag a few writes",
            saved.endpoint
        ),
        SnapshotSource::NoLeader => format!(
            "{}: etcd has no leader; this is that member's own copy",
            saved.endpoint
        ),
    };
    Ok(format!(
        "saved {} bytes of etcd at revision {} (from {member}) to {}",
        saved.bytes,
        saved.revision,
        file.display()
    ))
}

#[cfg(not(feature = "etcd"))]
fn save_etcd(_: &crate::cluster::store::EtcdConfig, _: &Path) -> Result<String, String> {
    Err(no_etcd("--etcd-endpoints"))
}

#[cfg(feature = "etcd")]
fn restore_etcd(args: &RestoreArgs, data_dir: &Path) -> Result<String, String> {
    use crate::cluster::store::etcd::snapshot::{RestoreMember, restore_snapshot};
    let member = RestoreMember {
        data_dir: data_dir.to_owned(),
        name: args.name.clone(),
        initial_cluster: args.initial_cluster.clone(),
        initial_advertise_peer_urls: args.initial_advertise_peer_urls.clone(),
        initial_cluster_token: args.initial_cluster_token.clone(),
    };
    let tool = restore_snapshot(&args.file, &member).map_err(|e| one_line(&e))?;
    Ok(format!(
        "restored {} into the etcd data directory {} (with {}); start etcd on it with the same \
         member flags",
        args.file.display(),
        data_dir.display(),
        tool.display()
    ))
}

#[cfg(not(feature = "etcd"))]
fn restore_etcd(_: &RestoreArgs, _: &Path) -> Result<String, String> {
    Err(no_etcd("--etcd-data-dir"))
}
