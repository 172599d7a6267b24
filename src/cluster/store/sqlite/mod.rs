//! The embedded store: one SQLite file holding a log where each row is one revision of one key.
//!
//! # Layout
//! The `log` table has one row per (key, revision): puts carry the value, deletes leave a
//! tombstone row. A key's current value is its newest row; its value at revision `R` is its
//! newest row at or before `R`; the changes after `R` are the rows after `R`. That is the model
//! of k3s's kine, and it is what lets a watch resume from any retained revision by reading the
//! log. The `meta` table holds the current and the compacted revision.
//!
//! # Durability
//! The database runs in WAL mode with `synchronous=FULL`: SQLite fsyncs the WAL at every
//! commit, and a txn is acknowledged only after its commit returned. So every acknowledged txn
//! survives a process crash *and* a power loss or kernel crash (given a disk that honours
//! fsync). `synchronous=NORMAL` would fsync only at checkpoints and could lose the last
//! acknowledged txns on power loss, which etcd would not; we keep etcd's guarantee. The sync
//! call is `fdatasync` (set for the bundled SQLite in `.cargo/config.toml`, as distribution
//! builds do), which flushes the data and whatever metadata reading it back needs.
//!
//! # Writes
//! All writes go through one writer thread that owns the only writing connection. It takes
//! every txn queued while the previous commit was being fsynced and applies them in one SQLite
//! transaction (group commit): each txn still gets its own revision and its own compares, but
//! the batch shares one fsync, and no txn is acknowledged before the fsync that covers it.
//! After the commit the writer broadcasts the batch's events to live watchers in-process.
//!
//! A background thread checkpoints the WAL into the database file (passive checkpoints,
//! which never block the writer), so the fsyncs of checkpoints stay off the commit path.
//! The WAL stays bounded after a burst: `journal_size_limit` cuts it back to 64 MiB when the
//! log restarts, and when the writes pause a `TRUNCATE` checkpoint empties a larger one.
//!
//! # Reads and watches
//! Reads use a small pool of read connections on the blocking thread pool; WAL gives each read
//! transaction a consistent snapshot while the writer goes on. A watch subscribes to the
//! broadcast first, replays the log after its start revision, then follows the broadcast,
//! dropping what it already delivered; a watcher that falls behind the broadcast goes back to
//! the log, so it never skips or repeats a revision.
//!
//! # Compaction
//! [`SqliteOptions::compaction`] keeps at least the last 10,000 revisions and at least five
//! minutes of history by default; older rows that a newer row of the same key supersedes are
//! deleted in small chunks by a background task.

mod compact;
mod read;
mod snapshot;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{broadcast, oneshot};

pub use compact::CompactionPolicy;
pub use snapshot::{restore_snapshot, save_snapshot};

use super::{
    Event, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, Txn, TxnResult,
    WatchStream, check_duplicate_keys,
};

/// The store file's name inside a data directory.
pub const DB_FILE_NAME: &str = "store.db";

/// Bumped when the table layout changes.
const SCHEMA_VERSION: i64 = 1;

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// Background compaction; `None` turns it off.
    pub compaction: Option<CompactionPolicy>,
    /// Most txns committed together in one group commit.
    pub max_batch: usize,
}

impl SqliteOptions {
    /// The store in `data_dir/store.db`, with default compaction.
    pub fn in_data_dir(data_dir: impl AsRef<Path>) -> Self {
        Self::at_path(data_dir.as_ref().join(DB_FILE_NAME))
    }

    /// The store in the file `path`, with default compaction.
    pub fn at_path(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            compaction: Some(CompactionPolicy::default()),
            max_batch: 1024,
        }
    }
}

/// The embedded SQLite [`Store`]. Dropping it stops the writer and ends every watch.
pub struct SqliteStore {
    shared: Arc<Shared>,
    requests: std::sync::mpsc::Sender<writer::Request>,
    compactor: Option<tokio::task::JoinHandle<()>>,
}

/// What readers, watchers and the compactor share with the writer.
pub(crate) struct Shared {
    path: PathBuf,
    /// The latest committed revision, published by the writer after each commit.
    revision: AtomicI64,
    readers: Mutex<Vec<Connection>>,
    /// Live events; the writer empties this when it stops, which ends every watch.
    events: Mutex<Option<broadcast::Sender<Arc<Vec<Event>>>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store; must be called within a tokio runtime.
    pub async fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let path = options.path.clone();
        let (conn, revision) = tokio::task::spawn_blocking(move || {
            let conn = open_connection(&path, false)?;
            let revision = init_schema(&conn, &path)?;
            Ok::<_, StoreError>((conn, revision))
        })
        .await
        .expect("opening the store panicked")?;

        let (events, _) = broadcast::channel(4096);
        let shared = Arc::new(Shared {
            path: options.path.clone(),
            revision: AtomicI64::new(revision),
            readers: Mutex::new(Vec::new()),
            events: Mutex::new(Some(events)),
        });
        // The writer never checkpoints itself: a checkpoint copies the WAL into the database
        // and fsyncs it, which would stall every txn queued behind that commit.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sqlite_err("configuring the writer"))?;
        let requests = writer::spawn(conn, Arc::clone(&shared), options.max_batch.max(1))?;
        compact::spawn_checkpointer(Arc::downgrade(&shared))?;
        let compactor = options
            .compaction
            .map(|policy| tokio::spawn(compact::run_background(Arc::downgrade(&shared), policy)));
        Ok(Self {
            shared,
            requests,
            compactor,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Writes a consistent copy of the store to `dest` (SQLite online backup) while writes go
    /// on, and returns the revision the copy holds.
    pub async fn snapshot(&self, dest: impl Into<PathBuf>) -> Result<Revision, StoreError> {
        let (src, dest) = (self.shared.path.clone(), dest.into());
        tokio::task::spawn_blocking(move || save_snapshot(&src, &dest))
            .await
            .expect("snapshot panicked")
    }

    async fn send(&self, request: writer::Request) -> Result<(), StoreError> {
        self.requests.send(request).map_err(|_| StoreError::Closed)
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        if let Some(task) = self.compactor.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.shared.read(move |conn| read::latest(conn, &key)).await
    }

    /// One blocking read and one read transaction for all the keys, instead of a trip to the
    /// blocking pool (and, when many run at once, a fresh connection) per key.
    async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<KeyValue>>, StoreError> {
        let keys = keys.to_vec();
        self.shared
            .read(move |conn| {
                let tx = conn.transaction().map_err(sqlite_err("starting a read"))?;
                keys.iter().map(|key| read::latest(&tx, key)).collect()
            })
            .await
    }

    async fn list(&self, prefix: &str, options: ListOptions) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_owned();
        self.shared
            .read(move |conn| read::list(conn, &prefix, &options))
            .await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResult, StoreError> {
        check_duplicate_keys(&txn.success)?;
        check_duplicate_keys(&txn.failure)?;
        let (reply, result) = oneshot::channel();
        self.send(writer::Request::Txn { txn, reply }).await?;
        result.await.map_err(|_| StoreError::Closed)?
    }

    async fn watch(
        &self,
        prefix: &str,
        after_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        watch::start(Arc::clone(&self.shared), prefix.to_owned(), after_revision).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        compact::compact(&self.shared, revision).await
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.shared.revision.load(Ordering::Acquire))
    }
}

impl Shared {
    /// A receiver of live events, or `Closed` once the writer has stopped.
    pub(crate) fn subscribe(&self) -> Result<broadcast::Receiver<Arc<Vec<Event>>>, StoreError> {
        let events = self.events.lock().expect("event sender poisoned");
        events
            .as_ref()
            .map(broadcast::Sender::subscribe)
            .ok_or(StoreError::Closed)
    }

    /// The latest committed revision.
    pub(crate) fn current(&self) -> Revision {
        self.revision.load(Ordering::Acquire)
    }

    /// Runs `f` on a pooled read connection on the blocking pool.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let pooled = shared.readers.lock().expect("reader pool poisoned").pop();
            let mut conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&shared.path, true)?,
            };
            let result = f(&mut conn);
            let mut pool = shared.readers.lock().expect("reader pool poisoned");
            if pool.len() < 8 {
                pool.push(conn);
            }
            result
        })
        .await
        .expect("store read panicked")
    }
}

fn sqlite_err(during: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { during, source }
}

/// Opens a connection with the store's pragmas; `read_only` for the reader pool.
pub(crate) fn open_connection(path: &Path, read_only: bool) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_owned(),
        source,
    };
    // Readers open read-write but `query_only`: a read-only connection to a WAL database
    // cannot recover the shared-memory index if it needs rebuilding.
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if !read_only {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(10))
        .map_err(open_err)?;
    if read_only {
        conn.pragma_update(None, "query_only", true)
            .map_err(open_err)?;
    } else {
        // WAL survives in the file; FULL is per connection, so only the writers set it.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        // When the log restarts, the WAL file is cut back to this size.
        conn.pragma_update(None, "journal_size_limit", compact::WAL_LIMIT_BYTES as i64)
            .map_err(open_err)?;
    }
    Ok(conn)
}

/// Creates the tables if missing, checks the version, returns the current revision.
fn init_schema(conn: &Connection, path: &Path) -> Result<Revision, StoreError> {
    conn.execute_batch(
        "BEGIN IMMEDIATE;
         CREATE TABLE IF NOT EXISTS log (
             key BLOB NOT NULL,
             revision INTEGER NOT NULL,
             deleted INTEGER NOT NULL,
             create_revision INTEGER NOT NULL,
             prev_revision INTEGER NOT NULL,
             value BLOB NOT NULL,
             PRIMARY KEY (key, revision)
         ) WITHOUT ROWID;
         CREATE INDEX IF NOT EXISTS log_by_revision ON log (revision);
         CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
         INSERT OR IGNORE INTO meta VALUES ('schema', 1), ('revision', 0), ('compacted', 0);
         COMMIT;",
    )
    .map_err(sqlite_err("creating the schema"))?;
    check_schema(conn, path)
}

/// Checks that the file is a store of this schema version, without writing; returns the
/// current revision.
pub(crate) fn check_schema(conn: &Connection, path: &Path) -> Result<Revision, StoreError> {
    let version = read::meta(conn, "schema").ok();
    if version != Some(SCHEMA_VERSION) {
        return Err(StoreError::Schema {
            path: path.to_owned(),
            found: version,
        });
    }
    read::meta(conn, "revision")
}
