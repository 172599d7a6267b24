//! Reads against one SQLite snapshot: the latest value of a key, a list at a revision, and
//! the log replay that watches resume from.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::sqlite_err;
use crate::cluster::store::{
    Event, EventKind, KeyValue, ListOptions, ListResult, Revision, StoreError, prefix_end,
};

/// Reads one counter of the `meta` table.
pub(crate) fn meta(conn: &Connection, name: &str) -> Result<i64, StoreError> {
    conn.prepare_cached("SELECT value FROM meta WHERE name = ?1")
        .and_then(|mut stmt| stmt.query_row([name], |row| row.get(0)))
        .map_err(sqlite_err("reading the store's revision"))
}

pub(crate) fn key_string(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The newest row of `key`, live or not: (kv, deleted).
pub(crate) fn newest_row(
    conn: &Connection,
    key: &str,
) -> Result<Option<(KeyValue, bool)>, StoreError> {
    conn.prepare_cached(
        "SELECT value, create_revision, revision, deleted FROM log
         WHERE key = ?1 ORDER BY revision DESC LIMIT 1",
    )
    .and_then(|mut stmt| {
        stmt.query_row([key.as_bytes()], |row| {
            let kv = KeyValue {
                key: key.to_owned(),
                value: row.get(0)?,
                create_revision: row.get(1)?,
                mod_revision: row.get(2)?,
            };
            Ok((kv, row.get::<_, bool>(3)?))
        })
        .optional()
    })
    .map_err(sqlite_err("reading a key"))
}

/// The key's current value, if it exists.
pub(crate) fn latest(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    Ok(newest_row(conn, key)?.and_then(|(kv, deleted)| (!deleted).then_some(kv)))
}

/// Checks that `revision` is still readable: not compacted, not in the future.
fn check_readable(conn: &Connection, revision: Revision) -> Result<Revision, StoreError> {
    let current = meta(conn, "revision")?;
    let compacted = meta(conn, "compacted")?;
    if revision > current {
        return Err(StoreError::FutureRevision {
            requested: revision,
            current,
        });
    }
    if revision < compacted {
        return Err(StoreError::Compacted {
            requested: revision,
            compacted,
        });
    }
    Ok(current)
}

fn kv_from_row(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: key_string(row.get(0)?),
        value: row.get(1)?,
        create_revision: row.get(2)?,
        mod_revision: row.get(3)?,
    })
}

pub(crate) fn list(
    conn: &mut Connection,
    prefix: &str,
    options: &ListOptions,
) -> Result<ListResult, StoreError> {
    let tx = conn.transaction().map_err(sqlite_err("starting a read"))?;
    let current = meta(&tx, "revision")?;
    let revision = options.at_revision.unwrap_or(current);
    check_readable(&tx, revision)?;

    // The smallest key that may be returned: the prefix, or just after the continue key.
    let mut start = prefix.as_bytes().to_vec();
    if let Some(after) = &options.continue_after {
        let mut next = after.as_bytes().to_vec();
        next.push(0);
        start = start.max(next);
    }
    let end = prefix_end(prefix.as_bytes());
    // SQLite takes a bare column's value from the row holding the MAX (documented behaviour):
    // each key's newest row at or before the revision. Grouping, filtering and ordering in one
    // SELECT lets SQLite walk the primary key in order and stop at the LIMIT; the same query
    // over a subquery sorted every later key first, so each page of a long list cost a scan
    // of the rest (10,000 pods in pages of 500: 350 ms a page instead of 3 ms).
    let sql = format!(
        "SELECT key, value, create_revision, MAX(revision) AS revision, deleted AS gone FROM log
         WHERE key >= ?1 {} AND revision <= ?2 GROUP BY key HAVING gone = 0
         ORDER BY key LIMIT ?3",
        if end.is_some() { "AND key < ?4" } else { "" }
    );
    let fetch = if options.limit == 0 {
        -1
    } else {
        options.limit as i64 + 1
    };
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(sqlite_err("listing keys"))?;
    let rows = match &end {
        Some(end) => stmt.query_map(params![start, revision, fetch, end], kv_from_row),
        None => stmt.query_map(params![start, revision, fetch], kv_from_row),
    };
    let mut items = rows
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sqlite_err("listing keys"))?;
    drop(stmt);
    let more = options.limit != 0 && items.len() > options.limit;
    items.truncate(if more { options.limit } else { items.len() });
    Ok(ListResult {
        items,
        revision,
        more,
    })
}

/// One page of the log for a watch: the events of keys under `prefix` at revisions in
/// `(after, after + max_revisions]`, and the revision the page covers up to.
pub(crate) fn log_page(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    max_revisions: i64,
) -> Result<(Vec<Event>, Revision), StoreError> {
    let tx = conn.transaction().map_err(sqlite_err("starting a read"))?;
    let current = meta(&tx, "revision")?;
    let compacted = meta(&tx, "compacted")?;
    if after + 1 < compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted,
        });
    }
    let upto = current.min(after.saturating_add(max_revisions));
    let start = prefix.as_bytes();
    let end = prefix_end(start);
    let sql = format!(
        "SELECT l.key, l.value, l.create_revision, l.revision, l.deleted,
                p.value, p.create_revision, p.revision
         FROM log l LEFT JOIN log p ON p.key = l.key AND p.revision = l.prev_revision
         WHERE l.revision > ?1 AND l.revision <= ?2 AND l.key >= ?3 {}
         ORDER BY l.revision, l.key",
        if end.is_some() { "AND l.key < ?4" } else { "" }
    );
    let event = |row: &Row<'_>| -> rusqlite::Result<Event> {
        let key = key_string(row.get(0)?);
        let deleted: bool = row.get(4)?;
        let prev = match row.get::<_, Option<Revision>>(7)? {
            Some(mod_revision) => Some(KeyValue {
                key: key.clone(),
                value: row.get(5)?,
                create_revision: row.get(6)?,
                mod_revision,
            }),
            None => None,
        };
        Ok(Event {
            kind: if deleted {
                EventKind::Delete
            } else {
                EventKind::Put
            },
            kv: KeyValue {
                key,
                value: row.get(1)?,
                create_revision: if deleted { 0 } else { row.get(2)? },
                mod_revision: row.get(3)?,
            },
            prev,
        })
    };
    let mut stmt = tx
        .prepare_cached(&sql)
        .map_err(sqlite_err("reading the log"))?;
    let rows = match &end {
        Some(end) => stmt.query_map(params![after, upto, start, end], event),
        None => stmt.query_map(params![after, upto, start], event),
    };
    let events = rows
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(sqlite_err("reading the log"))?;
    Ok((events, upto))
}
