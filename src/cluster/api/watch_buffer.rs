//! The buffer between a watch's task and its response body, bounded by bytes: the task
//! waits while it is full, and a watcher whose buffer stays full too long is cut off — its
//! queued events dropped, one ERROR event (410 Expired) in their place, so the client
//! relists — instead of the server holding every event for a client that does not read.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;

#[derive(Default)]
struct Lines {
    lines: VecDeque<Bytes>,
    bytes: usize,
    /// No more lines will come (the task ended, or cut the watcher off).
    finished: bool,
}

struct Shared {
    limit: usize,
    lines: Mutex<Lines>,
    /// Wakes the body when a line or the end arrives.
    filled: Notify,
    /// Wakes the task when the body took a line.
    drained: Notify,
}

/// The task's end of a watch buffer; dropping it ends the body once drained.
pub struct Sender {
    shared: Arc<Shared>,
    /// Closed when the body is dropped (the client went away).
    gone: tokio::sync::watch::Sender<()>,
}

/// Why a line was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum SendError {
    /// The client went away.
    Gone,
    /// The buffer stayed full for the whole wait.
    TooSlow,
}

/// A buffer of at most `limit` bytes (a single larger line still goes through alone).
pub fn channel(limit: usize) -> (Sender, axum::body::Body) {
    let shared = Arc::new(Shared {
        limit,
        lines: Mutex::default(),
        filled: Notify::new(),
        drained: Notify::new(),
    });
    let (gone, alive) = tokio::sync::watch::channel(());
    let body_shared = shared.clone();
    let stream = futures::stream::unfold((body_shared, alive), |(shared, alive)| async move {
        loop {
            let next = {
                let mut lines = shared.lines.lock().expect("watch buffer lock");
                match lines.lines.pop_front() {
                    Some(line) => {
                        lines.bytes -= line.len();
                        Some(Some(line))
                    }
                    None if lines.finished => Some(None),
                    None => None,
                }
            };
            match next {
                Some(Some(line)) => {
                    shared.drained.notify_one();
                    return Some((Ok::<_, Infallible>(line), (shared, alive)));
                }
                Some(None) => return None,
                None => shared.filled.notified().await,
            }
        }
    });
    (
        Sender { shared, gone },
        axum::body::Body::from_stream(stream),
    )
}

impl Sender {
    /// Queues `line`, waiting up to `patience` for room.
    pub async fn send(&self, line: Bytes, patience: Duration) -> Result<(), SendError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            if self.gone.is_closed() {
                return Err(SendError::Gone);
            }
            // Register for a wake-up before looking, so a drain in between is not missed.
            let drained = self.shared.drained.notified();
            {
                let mut lines = self.shared.lines.lock().expect("watch buffer lock");
                if lines.bytes == 0 || lines.bytes + line.len() <= self.shared.limit {
                    lines.bytes += line.len();
                    lines.lines.push_back(line);
                    drop(lines);
                    self.shared.filled.notify_one();
                    return Ok(());
                }
            }
            tokio::select! {
                () = drained => {}
                () = self.gone.closed() => return Err(SendError::Gone),
                () = tokio::time::sleep_until(deadline) => return Err(SendError::TooSlow),
            }
        }
    }

    /// Queues `line` if there is room now; hands it back otherwise.
    pub fn try_send(&self, line: Bytes) -> Result<(), Bytes> {
        let mut lines = self.shared.lines.lock().expect("watch buffer lock");
        if lines.bytes == 0 || lines.bytes + line.len() <= self.shared.limit {
            lines.bytes += line.len();
            lines.lines.push_back(line);
            drop(lines);
            self.shared.filled.notify_one();
            Ok(())
        } else {
            Err(line)
        }
    }

    /// Waits up to `patience` until at most half the buffer is in use.
    pub async fn wait_room(&self, patience: Duration) -> Result<(), SendError> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let drained = self.shared.drained.notified();
            if self.queued() * 2 <= self.shared.limit {
                return Ok(());
            }
            tokio::select! {
                () = drained => {}
                () = self.gone.closed() => return Err(SendError::Gone),
                () = tokio::time::sleep_until(deadline) => return Err(SendError::TooSlow),
            }
        }
    }

    /// Resolves when the client went away.
    pub async fn closed(&self) {
        self.gone.closed().await;
    }

    /// Drops what is queued and ends the body with `last` (the ERROR event).
    pub fn cut_off(&self, last: Bytes) {
        let mut lines = self.shared.lines.lock().expect("watch buffer lock");
        lines.lines.clear();
        lines.bytes = last.len();
        lines.lines.push_back(last);
        lines.finished = true;
        drop(lines);
        self.shared.filled.notify_one();
    }

    /// Bytes queued now.
    pub fn queued(&self) -> usize {
        self.shared.lines.lock().expect("watch buffer lock").bytes
    }

    /// Resolves once the body has taken everything queued, or the client went away.
    pub async fn drained(&self) {
        loop {
            let drained = self.shared.drained.notified();
            if self.queued() == 0 {
                return;
            }
            tokio::select! {
                () = drained => {}
                () = self.gone.closed() => return,
            }
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        if let Ok(mut lines) = self.shared.lines.lock() {
            lines.finished = true;
        }
        self.shared.filled.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn line(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[tokio::test]
    async fn a_reader_gets_every_line_in_order_through_a_small_buffer() {
        let (tx, body) = channel(10);
        let writer = tokio::spawn(async move {
            for n in 1..=8 {
                tx.send(line(n), Duration::from_secs(5)).await.unwrap();
            }
        });
        let all = body.collect().await.unwrap().to_bytes();
        writer.await.unwrap();
        assert_eq!(all.len(), (1..=8).sum::<usize>());
    }

    #[tokio::test]
    async fn a_watcher_that_does_not_read_is_cut_off_with_bounded_memory() {
        let (tx, body) = channel(100);
        tx.send(line(60), Duration::ZERO).await.unwrap();
        tx.send(line(500), Duration::ZERO)
            .await
            .expect_err("over the limit");
        tx.send(line(30), Duration::ZERO).await.unwrap();
        assert_eq!(
            tx.send(line(30), Duration::from_millis(50)).await,
            Err(SendError::TooSlow)
        );
        assert_eq!(tx.queued(), 90);
        tx.cut_off(Bytes::from_static(b"ERROR\n"));
        assert_eq!(tx.queued(), 6, "the queued events are dropped");
        drop(tx);
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"ERROR\n");
    }

    #[tokio::test]
    async fn a_line_larger_than_the_buffer_goes_alone_and_a_gone_client_is_noticed() {
        let (tx, body) = channel(10);
        tx.send(line(50), Duration::ZERO).await.unwrap();
        drop(body);
        assert_eq!(
            tx.send(line(1), Duration::from_secs(5)).await,
            Err(SendError::Gone)
        );
        tx.closed().await;
    }
}
