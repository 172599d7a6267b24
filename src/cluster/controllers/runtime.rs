//! The controller runtime in kube-runtime's shape: a de-duplicating work queue, workers that
//! call `reconcile(key)`, the [`Action`] it returns (done, or look again after a while), and
//! an error policy that requeues failed keys with a bounded exponential back-off.
//!
//! A key is in the queue at most once, and is never reconciled by two workers at once: a key
//! added while it is being reconciled runs again right after.
//!
//! The queue remembers when the last finished reconcile of each key began: a reconcile that
//! began after a change reached the caches has seen it, so "it ran, and did nothing" can be
//! told from "it has not run yet" ([`WorkQueue::handled_since`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::client::CallError;

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub requeue_after: Option<Duration>,
}

impl Action {
    /// Nothing to do until something changes.
    pub fn await_change() -> Action {
        Action {
            requeue_after: None,
        }
    }
    /// Look again after `after` even if nothing changes (timers: minReadySeconds, deadlines).
    pub fn requeue(after: Duration) -> Action {
        Action {
            requeue_after: Some(after),
        }
    }
    /// The sooner of two actions.
    pub fn min(self, other: Action) -> Action {
        match (self.requeue_after, other.requeue_after) {
            (Some(a), Some(b)) => Action::requeue(a.min(b)),
            (a, b) => Action {
                requeue_after: a.or(b),
            },
        }
    }
}

/// Why a reconcile failed; the key is retried with back-off.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Api(#[from] CallError),
    #[error("{0}")]
    Invalid(String),
}

/// One controller's logic.
#[async_trait::async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// A name for logs.
    fn name(&self) -> &'static str;
    /// Makes the world match the object at `key`; never asks why it was woken.
    async fn reconcile(&self, key: &str) -> Result<Action, ReconcileError>;
}

#[derive(Default)]
struct Inner {
    order: VecDeque<String>,
    queued: HashSet<String>,
    running: HashSet<String>,
    /// Keys added while running: queued again when their reconcile ends.
    again: HashSet<String>,
    failures: HashMap<String, u32>,
    /// When the last finished reconcile of each key began.
    handled: HashMap<String, Instant>,
}

/// A de-duplicating queue of keys.
#[derive(Default)]
pub struct WorkQueue {
    inner: Mutex<Inner>,
    ready: Notify,
}

const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The delay before the `failures`-th retry: 100 ms doubling up to 30 s.
pub fn retry_delay(failures: u32) -> Duration {
    RETRY_BASE
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(RETRY_MAX)
}

impl WorkQueue {
    pub fn new() -> Arc<WorkQueue> {
        Arc::new(WorkQueue::default())
    }

    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        let mut inner = self.inner.lock().expect("queue lock");
        if inner.running.contains(&key) {
            inner.again.insert(key);
            return;
        }
        if inner.queued.insert(key.clone()) {
            inner.order.push_back(key);
            drop(inner);
            self.ready.notify_one();
        }
    }

    /// Adds `key` after `delay`.
    pub fn add_after(self: &Arc<Self>, key: String, delay: Duration) {
        let queue = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(q) = queue.upgrade() {
                q.add(key);
            }
        });
    }

    pub fn len(&self) -> usize {
        self.inner.lock().expect("queue lock").order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes the next key, waiting for one.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            {
                let mut inner = self.inner.lock().expect("queue lock");
                if let Some(key) = inner.order.pop_front() {
                    inner.queued.remove(&key);
                    inner.running.insert(key.clone());
                    if !inner.order.is_empty() {
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Whether a reconcile of `key` that began at or after `since` has finished (whatever
    /// its outcome).
    pub fn handled_since(&self, key: &str, since: Instant) -> bool {
        let inner = self.inner.lock().expect("queue lock");
        inner.handled.get(key).is_some_and(|began| *began >= since)
    }

    /// Ends a reconcile of `key` that began at `began`; `failed` counts towards its back-off.
    /// Returns the number of consecutive failures.
    fn done(&self, key: &str, began: Instant, failed: bool) -> u32 {
        let mut inner = self.inner.lock().expect("queue lock");
        inner.running.remove(key);
        inner.handled.insert(key.to_string(), began);
        let failures = if failed {
            let n = inner.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        } else {
            inner.failures.remove(key);
            0
        };
        if inner.again.remove(key) && inner.queued.insert(key.to_string()) {
            inner.order.push_back(key.to_string());
            drop(inner);
            self.ready.notify_one();
        }
        failures
    }
}

/// Runs `workers` reconcile loops over `queue` until the task is dropped.
pub async fn run<R: Reconciler>(reconciler: Arc<R>, queue: Arc<WorkQueue>, workers: usize) {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let (reconciler, queue) = (reconciler.clone(), queue.clone());
        tasks.spawn(async move {
            loop {
                let key = queue.next().await;
                let began = Instant::now();
                let result = reconciler.reconcile(&key).await;
                let failures = queue.done(&key, began, result.is_err());
                match result {
                    Ok(Action {
                        requeue_after: Some(after),
                    }) => queue.add_after(key, after),
                    Ok(_) => {}
                    Err(e) => {
                        // The error policy: log, and retry later with back-off.
                        let delay = retry_delay(failures);
                        if failures > 3 {
                            tracing::warn!(controller = reconciler.name(), key = %key, error = %e, ?delay, "reconcile failed");
                        } else {
                            tracing::debug!(controller = reconciler.name(), key = %key, error = %e, ?delay, "reconcile failed");
                        }
                        queue.add_after(key, delay);
                    }
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keys_are_deduplicated_and_rerun_when_added_while_running() {
        let q = WorkQueue::new();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, "a");
        q.add("a");
        assert_eq!(q.len(), 1, "a running key is not queued twice");
        q.done("a", Instant::now(), false);
        assert_eq!(q.next().await, "b");
        assert_eq!(q.next().await, "a");
    }

    #[tokio::test]
    async fn a_reconcile_counts_as_handled_from_when_it_began() {
        let q = WorkQueue::new();
        let before = Instant::now();
        q.add("a");
        let key = q.next().await;
        assert!(!q.handled_since("a", before), "running is not handled");
        let began = Instant::now();
        q.done(&key, began, true);
        assert!(
            q.handled_since("a", before),
            "a failed reconcile is handled too"
        );
        assert!(q.handled_since("a", began));
        assert!(
            !q.handled_since("a", Instant::now()),
            "it began before that"
        );
        assert!(!q.handled_since("b", before));
    }

    #[test]
    fn retries_back_off_exponentially_up_to_a_cap() {
        assert_eq!(retry_delay(1), Duration::from_millis(100));
        assert_eq!(retry_delay(2), Duration::from_millis(200));
        assert_eq!(retry_delay(5), Duration::from_millis(1600));
        assert_eq!(retry_delay(40), RETRY_MAX);
    }
}
