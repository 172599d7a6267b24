//! Snapshots of the embedded store with SQLite's online backup API, and restoring them.

use std::path::Path;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{DB_FILE_NAME, check_schema, read::meta, sqlite_err};
use crate::cluster::store::{Revision, StoreError, io_err};

/// Copies the store at `src` to a new file `dest` while other processes may go on writing,
/// and returns the revision the copy holds.
///
/// The whole copy is one backup step, so it reads one WAL snapshot: it holds exactly the txns
/// committed before it started, never part of one.
pub fn save_snapshot(src: &Path, dest: &Path) -> Result<Revision, StoreError> {
    if dest.exists() {
        return Err(io_err("writing a snapshot", dest)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the snapshot file already exists",
        )));
    }
    if !src.exists() {
        return Err(io_err("opening the store", src)(
            std::io::ErrorKind::NotFound.into(),
        ));
    }
    let open_err = |path: &Path| {
        let path = path.to_owned();
        move |source| StoreError::Open { path, source }
    };
    let source = Connection::open_with_flags(src, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(open_err(src))?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(open_err(src))?;
    // Refuses a file that is not a store. Only reads: a write lock would have to wait for a
    // gap between the live server's commits, and under a steady load it may not get one.
    check_schema(&source, src)?;
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut target = Connection::open(&partial).map_err(open_err(&partial))?;
    {
        let backup = Backup::new(&source, &mut target).map_err(sqlite_err("starting a backup"))?;
        loop {
            match backup.step(-1).map_err(sqlite_err("copying the store"))? {
                StepResult::Done => break,
                // Another connection holds a lock we need for a moment: try again.
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(20)),
            }
        }
    }
    // The copy keeps the source's WAL mode; fold everything into the main file so the
    // snapshot is one self-contained file.
    target
        .pragma_update(None, "journal_mode", "DELETE")
        .map_err(sqlite_err("finishing the snapshot"))?;
    let revision = meta(&target, "revision")?;
    drop(target);
    std::fs::rename(&partial, dest).map_err(io_err("writing a snapshot", dest))?;
    Ok(revision)
}

/// Makes `data_dir` hold the store from `snapshot`, and returns its revision. Refuses to
/// overwrite an existing store.
pub fn restore_snapshot(snapshot: &Path, data_dir: &Path) -> Result<Revision, StoreError> {
    let dest = data_dir.join(DB_FILE_NAME);
    if dest.exists() {
        return Err(io_err("restoring a snapshot", &dest)(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "a store already exists in the data directory; move it away first",
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(io_err("creating the data directory", data_dir))?;
    let source = Connection::open_with_flags(snapshot, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(
        |source| StoreError::Open {
            path: snapshot.to_owned(),
            source,
        },
    )?;
    let revision = {
        let check: String = source
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .map_err(sqlite_err("checking the snapshot"))?;
        if check != "ok" {
            return Err(StoreError::Schema {
                path: snapshot.to_owned(),
                found: None,
            });
        }
        meta(&source, "schema")
            .ok()
            .filter(|v| *v == super::SCHEMA_VERSION)
            .ok_or(StoreError::Schema {
                path: snapshot.to_owned(),
                found: None,
            })?;
        meta(&source, "revision")?
    };
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    source
        .backup(rusqlite::MAIN_DB, &partial, None)
        .map_err(sqlite_err("restoring the snapshot"))?;
    let restored = Connection::open(&partial).map_err(|source| StoreError::Open {
        path: partial.clone(),
        source,
    })?;
    restored
        .pragma_update(None, "journal_mode", "WAL")
        .map_err(sqlite_err("restoring"))?;
    drop(restored);
    std::fs::rename(&partial, &dest).map_err(io_err("restoring a snapshot", &dest))?;
    Ok(revision)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_store_is_refused_and_left_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE notes (text TEXT);")
            .unwrap();
        let dest = dir.path().join("snap.db");
        let err = save_snapshot(&other, &dest).unwrap_err();
        assert!(
            matches!(err, StoreError::Schema { found: None, .. }),
            "{err}"
        );
        assert!(!dest.exists());
        let tables: Vec<String> = Connection::open(&other)
            .unwrap()
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(tables, ["notes"], "save only reads the source");
    }
}
