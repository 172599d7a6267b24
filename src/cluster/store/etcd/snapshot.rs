//! etcd snapshots: the whole of etcd (every berth cluster's keys and anything else it holds)
//! saved to one file through the maintenance API, and a new member's data directory made from
//! such a file by etcd's own restore tool.
//!
//! The file is exactly what etcd streams: its bbolt database followed by the SHA-256 of it,
//! the format `etcdctl snapshot save` writes and `etcdutl`/`etcdctl snapshot restore` check.
//! Rewriting a database's membership for a new cluster is etcd's business, so restore runs
//! etcd's tool rather than a copy of its logic.

use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use etcd_client::Client;
use sha2::{Digest, Sha256};

use super::{EtcdConfig, REQUEST_TIMEOUT, connect_options, etcd_err, one_line, unreachable};
use crate::cluster::store::{Revision, StoreError, io_err};

/// The length of the checksum etcd appends to the database it streams.
const CHECKSUM_LEN: usize = 32;

/// What [`save_snapshot`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedSnapshot {
    /// The file's size: the database and its checksum.
    pub bytes: u64,
    /// The member's revision just before it began the snapshot; the snapshot holds at least
    /// every write up to it.
    pub revision: Revision,
    /// The client URL of the member that sent it.
    pub endpoint: String,
    pub source: SnapshotSource,
}

/// Which member a snapshot came from, and so how current it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SnapshotSource {
    /// A member of a cluster without a leader (quorum lost): its own copy.
    NoLeader,
    /// A follower (no endpoint given was the leader's): it may lag the leader by a few writes.
    Follower,
    /// The leader: every write acknowledged before the snapshot began is in it.
    Leader,
}

/// Streams a snapshot of the whole etcd cluster `config` names into the new file `dest`,
/// from the leader when one of the endpoints is its, or else from the member with the
/// highest revision (a cluster that lost quorum is when a snapshot is wanted most).
///
/// The stream goes to `dest` with `.partial` appended, is checked against etcd's checksum,
/// synced and renamed, so `dest` is either the whole snapshot or absent. Writes the file with
/// blocking calls: meant for the command line.
pub async fn save_snapshot(config: &EtcdConfig, dest: &Path) -> Result<SavedSnapshot, StoreError> {
    if std::fs::symlink_metadata(dest).is_ok() {
        return Err(io_err("writing a snapshot", dest)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the snapshot file already exists",
        )));
    }
    let (mut client, member) = pick_member(config).await?;
    let mut partial = Partial::create(dest)?;
    let mut stream = client
        .snapshot()
        .await
        .map_err(etcd_err("starting the snapshot"))?;
    let mut checksum = Checksum::default();
    while let Some(message) = stream
        .message()
        .await
        .map_err(etcd_err("streaming the snapshot"))?
    {
        partial.write(message.blob())?;
        checksum.update(message.blob());
    }
    let bytes = checksum.len();
    if !checksum.matches() {
        return Err(StoreError::EtcdProtocol {
            during: "streaming the snapshot",
            message: format!(
                "the {bytes} bytes received do not end with the SHA-256 of the rest (the stream \
                 was cut or damaged); nothing was saved"
            ),
        });
    }
    partial.finish()?;
    Ok(SavedSnapshot {
        bytes,
        revision: member.revision,
        endpoint: member.endpoint,
        source: member.source,
    })
}

/// One member's answer to a status request.
struct MemberStatus {
    endpoint: String,
    revision: Revision,
    source: SnapshotSource,
}

/// A client of the one member a snapshot should come from (see [`save_snapshot`]): etcd
/// streams a snapshot from the member a request reaches, so the member is chosen here, not
/// by the client's balancing.
async fn pick_member(config: &EtcdConfig) -> Result<(Client, MemberStatus), StoreError> {
    if config.endpoints.is_empty() {
        return Err(unreachable(config, "no endpoint given".into()));
    }
    let options = connect_options(config)?;
    let ask = |endpoint: String| {
        let options = options.clone();
        async move {
            let answer = async {
                let mut client = Client::connect([&endpoint], Some(options)).await?;
                let status = client.status().await?;
                Ok::<_, etcd_client::Error>((client, status))
            };
            match tokio::time::timeout(REQUEST_TIMEOUT, answer).await {
                Ok(Ok((client, status))) => {
                    let header = status.header();
                    let source = match status.leader() {
                        0 => SnapshotSource::NoLeader,
                        leader if header.is_some_and(|h| h.member_id() == leader) => {
                            SnapshotSource::Leader
                        }
                        _ => SnapshotSource::Follower,
                    };
                    let member = MemberStatus {
                        revision: header.map_or(0, |h| h.revision()),
                        source,
                        endpoint,
                    };
                    Ok((client, member))
                }
                Ok(Err(e)) => Err((endpoint, one_line(&e))),
                Err(_) => Err((endpoint, format!("no answer within {REQUEST_TIMEOUT:?}"))),
            }
        }
    };
    let mut members = Vec::new();
    let mut failures = Vec::new();
    for answer in futures::future::join_all(config.endpoints.iter().cloned().map(ask)).await {
        match answer {
            Ok(member) => members.push(member),
            Err(failure) => failures.push(failure),
        }
    }
    let best = members
        .iter()
        .enumerate()
        .max_by_key(|(_, (_, m))| (m.source, m.revision))
        .map(|(i, _)| i);
    match best {
        Some(i) => Ok(members.swap_remove(i)),
        None if failures.len() == 1 => Err(unreachable(config, failures.remove(0).1)),
        None => {
            let reasons: Vec<String> = failures
                .into_iter()
                .map(|(endpoint, reason)| format!("{endpoint}: {reason}"))
                .collect();
            Err(unreachable(config, reasons.join("; ")))
        }
    }
}

/// Checks a stream that ends with the SHA-256 of everything before it, without holding more
/// than the last [`CHECKSUM_LEN`] bytes: the checksum may arrive in a message of its own or
/// split across messages.
#[derive(Default)]
struct Checksum {
    digest: Sha256,
    /// The last bytes seen, the checksum once the stream has ended.
    tail: Vec<u8>,
    len: u64,
}

impl Checksum {
    fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        self.tail.extend_from_slice(chunk);
        if self.tail.len() > CHECKSUM_LEN {
            let body = self.tail.len() - CHECKSUM_LEN;
            self.digest.update(&self.tail[..body]);
            self.tail.drain(..body);
        }
    }

    fn len(&self) -> u64 {
        self.len
    }

    /// Whether the stream so far is a body followed by its SHA-256.
    fn matches(&self) -> bool {
        self.tail.len() == CHECKSUM_LEN && self.digest.clone().finalize()[..] == self.tail[..]
    }
}

/// A file being written beside its final path, removed unless [`Partial::finish`] renames it
/// into place.
struct Partial {
    path: PathBuf,
    dest: PathBuf,
    file: std::fs::File,
    renamed: bool,
}

impl Partial {
    fn create(dest: &Path) -> Result<Self, StoreError> {
        let Some(name) = dest.file_name() else {
            return Err(io_err("writing a snapshot", dest)(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a file name",
            )));
        };
        let mut partial_name = name.to_os_string();
        partial_name.push(".partial");
        let path = dest.with_file_name(partial_name);
        // A file left by a run that was killed midway.
        let _ = std::fs::remove_file(&path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating the snapshot file", &path))?;
        Ok(Self {
            path,
            dest: dest.to_owned(),
            file,
            renamed: false,
        })
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        self.file
            .write_all(bytes)
            .map_err(io_err("writing the snapshot file", &self.path))
    }

    /// Syncs the file, renames it to its final path and syncs the directory, so the name
    /// survives a crash too.
    fn finish(mut self) -> Result<(), StoreError> {
        self.file
            .sync_all()
            .map_err(io_err("syncing the snapshot file", &self.path))?;
        if std::fs::symlink_metadata(&self.dest).is_ok() {
            return Err(io_err("writing a snapshot", &self.dest)(
                std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "the snapshot file appeared while the snapshot was taken",
                ),
            ));
        }
        std::fs::rename(&self.path, &self.dest)
            .map_err(io_err("writing a snapshot", &self.dest))?;
        self.renamed = true;
        let dir = match self.dest.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing the snapshot's directory", dir))
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.renamed {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Where and as which member a restored etcd starts: the flags of etcd's own
/// `snapshot restore`, which `etcd` must then be started with too. A flag left out takes
/// etcd's default (a member `default` on `http://localhost:2380`).
#[derive(Debug, Clone, Default)]
pub struct RestoreMember {
    pub data_dir: PathBuf,
    pub name: Option<String>,
    pub initial_cluster: Option<String>,
    pub initial_advertise_peer_urls: Option<String>,
    pub initial_cluster_token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{}: no such snapshot file", path.display())]
    NoSnapshot { path: PathBuf },
    #[error(
        "{} already exists; etcd restores into a new data directory only (move it away or \
         give another)",
        path.display()
    )]
    DataDirExists { path: PathBuf },
    #[error(
        "restoring an etcd snapshot needs etcd's own tool: neither etcdutl (etcd 3.5 and later) \
         nor etcdctl (etcd 3.4; Debian: apt-get install etcd-client) is on PATH"
    )]
    NoTool,
    #[error("cannot run {}", tool.display())]
    Spawn {
        tool: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} snapshot restore failed ({status}): {message}", tool.display())]
    Failed {
        tool: PathBuf,
        status: ExitStatus,
        message: String,
    },
}

/// Makes `member.data_dir` (which must not exist) hold the etcd snapshot `snapshot`, with
/// `etcdutl` or, failing that, `etcdctl` from `PATH` (etcd 3.5 moved restore to `etcdutl`;
/// 3.6's `etcdctl` no longer has it). Returns the tool it ran.
pub fn restore_snapshot(snapshot: &Path, member: &RestoreMember) -> Result<PathBuf, RestoreError> {
    if !snapshot.is_file() {
        return Err(RestoreError::NoSnapshot {
            path: snapshot.to_owned(),
        });
    }
    if std::fs::symlink_metadata(&member.data_dir).is_ok() {
        return Err(RestoreError::DataDirExists {
            path: member.data_dir.clone(),
        });
    }
    let tool = std::env::var_os("PATH")
        .and_then(|path| restore_tool(&path))
        .ok_or(RestoreError::NoTool)?;
    let output = Command::new(&tool)
        .args(restore_args(snapshot, member))
        // etcd 3.3's etcdctl speaks the v2 API unless told; v2 has no snapshots.
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .output()
        .map_err(|source| RestoreError::Spawn {
            tool: tool.clone(),
            source,
        })?;
    if output.status.success() {
        return Ok(tool);
    }
    // The tools log as they go; the last line says why they stopped.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let message = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .trim()
        .to_string();
    Err(RestoreError::Failed {
        tool,
        status: output.status,
        message,
    })
}

/// The first of `etcdutl` and `etcdctl` found in the directories of `search_path` (as
/// `PATH` lists them), `etcdutl` first.
fn restore_tool(search_path: &OsStr) -> Option<PathBuf> {
    ["etcdutl", "etcdctl"].into_iter().find_map(|name| {
        std::env::split_paths(search_path)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    })
}

/// `snapshot restore FILE --data-dir DIR` and the member flags that are set; both tools take
/// the same ones.
fn restore_args(snapshot: &Path, member: &RestoreMember) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        "snapshot".into(),
        "restore".into(),
        snapshot.into(),
        "--data-dir".into(),
        member.data_dir.clone().into(),
    ];
    let flags = [
        ("--name", &member.name),
        ("--initial-cluster", &member.initial_cluster),
        (
            "--initial-advertise-peer-urls",
            &member.initial_advertise_peer_urls,
        ),
        ("--initial-cluster-token", &member.initial_cluster_token),
    ];
    for (flag, value) in flags {
        if let Some(value) = value {
            args.push(flag.into());
            args.push(value.into());
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream_of(body: &[u8]) -> Vec<u8> {
        let mut stream = body.to_vec();
        stream.extend_from_slice(&Sha256::digest(body));
        stream
    }

    #[test]
    fn a_snapshot_checks_whatever_the_message_boundaries() {
        let body: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        let stream = stream_of(&body);
        // etcd sends the checksum as a message of its own; other servers or proxies may cut
        // the stream anywhere, the checksum included.
        for chunk in [1, 7, 31, 32, 33, 4096, stream.len()] {
            let mut checksum = Checksum::default();
            for piece in stream.chunks(chunk) {
                checksum.update(piece);
            }
            assert!(checksum.matches(), "chunks of {chunk} bytes");
            assert_eq!(checksum.len(), stream.len() as u64);
        }
    }

    #[test]
    fn a_cut_or_damaged_snapshot_is_refused() {
        let body = vec![7u8; 5000];
        let stream = stream_of(&body);
        let check = |bytes: &[u8]| {
            let mut checksum = Checksum::default();
            checksum.update(bytes);
            checksum.matches()
        };
        assert!(
            !check(&stream[..stream.len() - 1]),
            "the checksum cut short"
        );
        assert!(
            !check(&stream[..4096]),
            "the stream cut before the checksum"
        );
        assert!(!check(&[]), "nothing received");
        let mut damaged = stream.clone();
        damaged[100] ^= 1;
        assert!(!check(&damaged), "a flipped bit in the body");
    }

    #[test]
    fn a_failed_save_leaves_neither_the_file_nor_a_partial_one() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("etcd.snap");
        let mut partial = Partial::create(&dest).unwrap();
        partial.write(b"half a snapshot").unwrap();
        assert!(dir.path().join("etcd.snap.partial").exists());
        drop(partial);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

        let mut partial = Partial::create(&dest).unwrap();
        partial.write(b"a whole snapshot").unwrap();
        partial.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"a whole snapshot");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn restore_prefers_etcdutl_and_passes_only_the_flags_given() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (dir.path().join("old"), dir.path().join("new"));
        for d in [&old, &new] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(old.join("etcdctl"), "").unwrap();
        let path = std::env::join_paths([&old, &new]).unwrap();
        assert_eq!(restore_tool(&path), Some(old.join("etcdctl")));
        std::fs::write(new.join("etcdutl"), "").unwrap();
        assert_eq!(restore_tool(&path), Some(new.join("etcdutl")));
        assert_eq!(restore_tool(OsStr::new("")), None);

        let member = RestoreMember {
            data_dir: "/var/lib/etcd-restored".into(),
            name: Some("m1".into()),
            initial_cluster: Some("m1=http://10.0.0.1:2380".into()),
            ..RestoreMember::default()
        };
        let args = restore_args(Path::new("etcd.snap"), &member);
        assert_eq!(
            args,
            [
                "snapshot",
                "restore",
                "etcd.snap",
                "--data-dir",
                "/var/lib/etcd-restored",
                "--name",
                "m1",
                "--initial-cluster",
                "m1=http://10.0.0.1:2380",
            ]
        );
    }
}
