//! The single writer thread: group commit of queued txns, then broadcast to watchers.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, TryRecvError};

use rusqlite::{Connection, params};
use tokio::sync::{broadcast, oneshot};

use super::read::{meta, newest_row};
use super::{Shared, sqlite_err};
use crate::cluster::store::{
    Check, Event, EventKind, KeyValue, Op, OpResult, Revision, StoreError, Txn, TxnResult,
};

pub(crate) enum Request {
    Txn {
        txn: Txn,
        reply: oneshot::Sender<Result<TxnResult, StoreError>>,
    },
}

/// Starts the writer thread; it ends when every sender is dropped.
pub(crate) fn spawn(
    conn: Connection,
    shared: Arc<Shared>,
    max_batch: usize,
) -> Result<Sender<Request>, StoreError> {
    let (tx, rx) = std::sync::mpsc::channel();
    let shared_path = shared.path.clone();
    std::thread::Builder::new()
        .name("berth-store-writer".into())
        .spawn(move || run(conn, rx, shared, max_batch))
        .map_err(|source| StoreError::Io {
            during: "starting the writer thread",
            path: shared_path,
            source,
        })?;
    Ok(tx)
}

fn run(mut conn: Connection, requests: Receiver<Request>, shared: Arc<Shared>, max_batch: usize) {
    let Some(events) = shared.events.lock().expect("event sender poisoned").clone() else {
        return;
    };
    let mut batch = Vec::with_capacity(max_batch);
    // Block for the first request, then take whatever queued up while we were busy: the
    // batch grows by itself when commits are slow and stays at one txn when load is light.
    while let Ok(first) = requests.recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        commit_batch(&mut conn, &shared, &events, &mut batch);
    }
    // The store was dropped: close the broadcast so live watches end with `Closed`.
    shared.events.lock().expect("event sender poisoned").take();
}

fn commit_batch(
    conn: &mut Connection,
    shared: &Shared,
    events_out: &broadcast::Sender<Arc<Vec<Event>>>,
    batch: &mut Vec<Request>,
) {
    let outcome = apply_batch(conn, batch);
    match outcome {
        Ok((results, events, revision)) => {
            shared.revision.store(revision, Ordering::Release);
            if !events.is_empty() {
                // No receivers is fine: nobody is watching.
                let _ = events_out.send(Arc::new(events));
            }
            for (Request::Txn { reply, .. }, result) in batch.drain(..).zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(error) => {
            // The whole batch rolled back; each caller learns its txn did not commit.
            let error = Arc::new(error);
            for Request::Txn { reply, .. } in batch.drain(..) {
                let _ = reply.send(Err(StoreError::BatchFailed {
                    source: Arc::clone(&error),
                }));
            }
            if let Ok(revision) = meta(conn, "revision") {
                shared.revision.store(revision, Ordering::Release);
            }
        }
    }
}

type Applied = (Vec<TxnResult>, Vec<Event>, Revision);

/// Applies every txn of the batch in one SQLite transaction, each at its own revision.
fn apply_batch(conn: &mut Connection, batch: &[Request]) -> Result<Applied, StoreError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sqlite_err("starting a write"))?;
    let mut revision = meta(&tx, "revision")?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    for Request::Txn { txn, .. } in batch {
        let result = apply_txn(&tx, txn, revision + 1, &mut events)?;
        revision = result.revision;
        results.push(result);
    }
    tx.execute(
        "UPDATE meta SET value = ?1 WHERE name = 'revision'",
        [revision],
    )
    .map_err(sqlite_err("recording the revision"))?;
    tx.commit()
        .map_err(sqlite_err("committing a batch of txns"))?;
    Ok((results, events, revision))
}

/// Applies one txn at revision `next` if it writes anything; appends its events.
fn apply_txn(
    conn: &Connection,
    txn: &Txn,
    next: Revision,
    events: &mut Vec<Event>,
) -> Result<TxnResult, StoreError> {
    let mut succeeded = true;
    for compare in &txn.compares {
        let current = newest_row(conn, &compare.key)?.filter(|(_, deleted)| !deleted);
        let holds = match (&compare.check, current) {
            (Check::Exists, found) => found.is_some(),
            (Check::Absent, found) => found.is_none(),
            (Check::ModRevision(rev), Some((kv, _))) => kv.mod_revision == *rev,
            (Check::CreateRevision(rev), Some((kv, _))) => kv.create_revision == *rev,
            // As in etcd, an absent key has mod and create revision 0.
            (Check::ModRevision(rev) | Check::CreateRevision(rev), None) => *rev == 0,
        };
        if !holds {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded {
        &txn.success
    } else {
        &txn.failure
    };
    let mut insert = conn
        .prepare_cached(
            "INSERT INTO log (key, revision, deleted, create_revision, prev_revision, value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sqlite_err("writing a key"))?;
    let mut wrote = false;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let prev = newest_row(conn, op.key())?.and_then(|(kv, deleted)| (!deleted).then_some(kv));
        match op {
            Op::Get { .. } => results.push(OpResult::Get { kv: prev }),
            Op::Put { key, value } => {
                let create_revision = prev.as_ref().map_or(next, |p| p.create_revision);
                let prev_revision = prev.as_ref().map_or(0, |p| p.mod_revision);
                insert
                    .execute(params![
                        key.as_bytes(),
                        next,
                        false,
                        create_revision,
                        prev_revision,
                        value
                    ])
                    .map_err(sqlite_err("writing a key"))?;
                wrote = true;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision,
                    mod_revision: next,
                };
                events.push(Event {
                    kind: EventKind::Put,
                    kv,
                    prev: prev.clone(),
                });
                results.push(OpResult::Put { prev });
            }
            Op::Delete { key } => {
                if let Some(p) = &prev {
                    let empty: &[u8] = &[];
                    insert
                        .execute(params![
                            key.as_bytes(),
                            next,
                            true,
                            p.create_revision,
                            p.mod_revision,
                            empty
                        ])
                        .map_err(sqlite_err("deleting a key"))?;
                    wrote = true;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: Vec::new(),
                        create_revision: 0,
                        mod_revision: next,
                    };
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv,
                        prev: prev.clone(),
                    });
                }
                results.push(OpResult::Delete { prev });
            }
        }
    }
    Ok(TxnResult {
        succeeded,
        revision: if wrote { next } else { next - 1 },
        results,
    })
}
