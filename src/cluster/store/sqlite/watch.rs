//! Watches on the SQLite store: replay the log, then follow the in-process broadcast.

use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;

use super::{Shared, read};
use crate::cluster::store::{Event, Revision, StoreError, WatchStream};

/// Revisions read from the log per blocking read while catching up.
const PAGE_REVISIONS: i64 = 512;
/// Events buffered between the watch task and a slow consumer.
const BUFFER: usize = 1024;

pub(crate) async fn start(
    shared: Arc<Shared>,
    prefix: String,
    after: Revision,
) -> Result<WatchStream, StoreError> {
    // Subscribe before reading the log, so nothing committed after the read is missed.
    let live = shared.subscribe()?;
    // Fail at once, not as a stream item, when the start is already compacted or too new.
    let (first_page, upto) = {
        let prefix = prefix.clone();
        shared
            .read(move |conn| read::log_page(conn, &prefix, after, PAGE_REVISIONS))
            .await?
    };
    let (sender, mut receiver) = mpsc::channel(BUFFER);
    let watcher = Watcher {
        shared,
        prefix,
        last: after,
        sender,
    };
    tokio::spawn(watcher.run(live, first_page, upto));
    Ok(Box::pin(futures::stream::poll_fn(move |cx| {
        receiver.poll_recv(cx)
    })))
}

struct Watcher {
    shared: Arc<Shared>,
    prefix: String,
    /// Every event at or before this revision has been delivered.
    last: Revision,
    sender: mpsc::Sender<Result<Event, StoreError>>,
}

impl Watcher {
    async fn run(
        mut self,
        mut live: tokio::sync::broadcast::Receiver<Arc<Vec<Event>>>,
        first_page: Vec<Event>,
        upto: Revision,
    ) {
        let mut page = Some((first_page, upto));
        loop {
            // Replay the log until it has nothing newer than what we delivered.
            loop {
                let (events, upto) = match page.take() {
                    Some(page) => page,
                    None => {
                        let (prefix, after) = (self.prefix.clone(), self.last);
                        let read = self
                            .shared
                            .read(move |conn| read::log_page(conn, &prefix, after, PAGE_REVISIONS))
                            .await;
                        match read {
                            Ok(page) => page,
                            Err(error) => {
                                let _ = self.sender.send(Err(error)).await;
                                return;
                            }
                        }
                    }
                };
                for event in events {
                    if self.sender.send(Ok(event)).await.is_err() {
                        return; // the stream was dropped
                    }
                }
                let caught_up = upto <= self.last || upto >= self.shared.current();
                self.last = self.last.max(upto);
                if caught_up {
                    break;
                }
            }
            // Follow the broadcast until we fall behind it.
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        for event in batch.iter() {
                            if event.revision() <= self.last
                                || !event.kv.key.starts_with(&self.prefix)
                            {
                                continue;
                            }
                            if self.sender.send(Ok(event.clone())).await.is_err() {
                                return;
                            }
                        }
                        if let Some(event) = batch.last() {
                            self.last = self.last.max(event.revision());
                        }
                    }
                    Err(RecvError::Lagged(_)) => break, // back to the log
                    Err(RecvError::Closed) => {
                        let _ = self.sender.send(Err(StoreError::Closed)).await;
                        return;
                    }
                }
            }
        }
    }
}
