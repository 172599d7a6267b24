//! Housekeeping: compaction (dropping log rows no retained revision needs, by request and in
//! the background) and WAL checkpoints.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rusqlite::TransactionBehavior;

use super::{Shared, open_connection, read::meta, sqlite_err};
use crate::cluster::store::{Revision, StoreError};

/// Revisions deleted per SQLite transaction, so the writer is never held up for long.
const CHUNK_REVISIONS: i64 = 1000;

/// What background compaction keeps: at least `keep_revisions` revisions *and* at least
/// `keep_for` of history, checked every `interval`.
#[derive(Debug, Clone)]
pub struct CompactionPolicy {
    pub keep_revisions: i64,
    pub keep_for: Duration,
    pub interval: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        Self {
            keep_revisions: 10_000,
            keep_for: Duration::from_secs(5 * 60),
            interval: Duration::from_secs(30),
        }
    }
}

/// Compacts to `revision`: the compacted revision is recorded first (so readers see
/// `Compacted` from then on), then superseded rows are deleted chunk by chunk.
pub(crate) async fn compact(shared: &Arc<Shared>, revision: Revision) -> Result<(), StoreError> {
    let path = shared.path.clone();
    tokio::task::spawn_blocking(move || {
        let mut conn = open_connection(&path, false)?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(sqlite_err("starting a compaction"))?;
        let current = meta(&tx, "revision")?;
        let compacted = meta(&tx, "compacted")?;
        if revision > current {
            return Err(StoreError::FutureRevision {
                requested: revision,
                current,
            });
        }
        if revision <= compacted {
            return Err(StoreError::Compacted {
                requested: revision,
                compacted,
            });
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE name = 'compacted'",
            [revision],
        )
        .map_err(sqlite_err("recording the compacted revision"))?;
        tx.commit()
            .map_err(sqlite_err("recording the compacted revision"))?;

        let mut from = compacted.max(0);
        while from < revision {
            let to = (from + CHUNK_REVISIONS).min(revision);
            // A row before the compacted revision goes if it is a tombstone or a newer row of
            // its key at or before the compacted revision supersedes it: what is left is
            // each key's value at `revision`, and everything after.
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(sqlite_err("compacting"))?;
            tx.execute(
                "DELETE FROM log WHERE revision >= ?1 AND revision < ?2 AND (deleted = 1 OR
                   EXISTS (SELECT 1 FROM log n WHERE n.key = log.key
                           AND n.revision > log.revision AND n.revision <= ?3))",
                [from, to, revision],
            )
            .map_err(sqlite_err("compacting"))?;
            tx.commit().map_err(sqlite_err("compacting"))?;
            from = to;
        }
        Ok(())
    })
    .await
    .expect("compaction panicked")
}

/// Every `policy.interval`, compacts away what the policy no longer needs to keep. Ends
/// when the store is dropped.
pub(crate) async fn run_background(shared: Weak<Shared>, policy: CompactionPolicy) {
    // (when, revision) samples: the revision that was current at that time.
    let mut samples: VecDeque<(Instant, Revision)> = VecDeque::new();
    let mut compacted_to = 0;
    let mut ticks = tokio::time::interval(policy.interval);
    loop {
        ticks.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let now = Instant::now();
        let current = shared.current();
        samples.push_back((now, current));
        // The newest revision that is already older than `keep_for`.
        let mut old_enough = None;
        while let Some(&(at, revision)) = samples.front() {
            if now.duration_since(at) < policy.keep_for {
                break;
            }
            old_enough = Some((at, revision));
            samples.pop_front();
        }
        if let Some((at, revision)) = old_enough {
            // Keep the sample: it stays the bound until a newer one ages.
            samples.push_front((at, revision));
            let target = revision.min(current - policy.keep_revisions);
            if target > compacted_to {
                match compact(&shared, target).await {
                    Ok(()) | Err(StoreError::Compacted { .. }) => compacted_to = target,
                    Err(_) => {} // retried at the next tick
                }
            }
        }
    }
}

/// How often the checkpointer folds the WAL back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// The WAL size SQLite truncates the file back to when it restarts the log
/// (`journal_size_limit`), and above which a pause in the writes truncates it to nothing.
pub(crate) const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// Starts the thread that checkpoints the WAL; it ends when the store is dropped.
///
/// Passive checkpoints every tick copy what they can without waiting for readers or the writer.
/// Under a steady stream of writes they cannot restart the log, so the file only grows; when
/// the writes pause (no new revision for a tick) and the WAL is over [`WAL_LIMIT_BYTES`], a
/// `TRUNCATE` checkpoint copies the rest, waits for readers to move on, and truncates the file.
pub(crate) fn spawn_checkpointer(shared: Weak<Shared>) -> Result<(), StoreError> {
    let path = shared.upgrade().map(|s| s.path.clone()).unwrap_or_default();
    let conn = open_connection(&path, false)?;
    let mut wal = path.clone().into_os_string();
    wal.push("-wal");
    let wal = std::path::PathBuf::from(wal);
    std::thread::Builder::new()
        .name("berth-store-checkpoint".into())
        .spawn(move || {
            let mut seen = -1;
            loop {
                std::thread::sleep(CHECKPOINT_EVERY);
                let Some(store) = shared.upgrade() else {
                    return;
                };
                let revision = store.revision.load(std::sync::atomic::Ordering::Acquire);
                drop(store);
                let idle = revision == seen;
                seen = revision;
                let large = std::fs::metadata(&wal).is_ok_and(|m| m.len() > WAL_LIMIT_BYTES);
                let mode = if idle && large { "TRUNCATE" } else { "PASSIVE" };
                // A failure (busy) is retried at the next tick.
                let _ = conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(()));
            }
        })
        .map_err(|source| StoreError::Io {
            during: "starting the checkpointer",
            path,
            source,
        })?;
    Ok(())
}
