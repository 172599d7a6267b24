//! Watch streams as wake-ups: the agent's loops (the pod sync loop, the Service rules) read
//! the watch caches themselves and only need to learn that something changed.

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Forwards one `()` per item of a watch stream, so the loop that reads `tx` only learns
/// "changed" (the caches already hold the news).
pub fn forward<S: futures_util::Stream + Send + 'static>(
    tasks: &mut JoinSet<()>,
    what: &'static str,
    stream: S,
    tx: mpsc::UnboundedSender<()>,
) where
    S::Item: Send,
{
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {
            if tx.send(()).is_err() {
                return;
            }
        }
        tracing::warn!("the {what} watch ended");
    });
}
