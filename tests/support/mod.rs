//! The one harness of the integration tests: every test binary says `pub mod support;` and
//! nothing else, and gets the whole of it.
//!
//! - [`api`]: an in-process router over a real store, and a live `berth server` process.
//! - [`cluster`]: `berth agent` processes on real Docker, waits on pods and events.
//! - [`control`]: fake nodes (a Lease renewed, a fake kubelet) for control-plane tests.
//! - [`docker`]: the offline test image and a label scope that cleans up what a test made.
//! - [`services`]: `httpd` pods and fetching through them, for Service tests.
//! - [`git`]: a bare repository and a clone that pushes to it, for GitOps tests.
//! - [`up`]: the scope and the example images of the `berth up` tests.
//! - [`apply`], [`cli`], [`workspace`]: running the real `berth` binary.
//! - [`store`]: the store conformance suite and real etcd members.
//! - `masters` (feature `etcd`): several `berth server` masters on a 3-member etcd.
//! - [`process`]: a child process with its output lines, stopped with a signal.
//! - [`python`]: the venv with the official Kubernetes Python client.
//! - [`linearizable`]: the linearizability check of a recorded register history.
//! - [`golden`]: the one golden-file assertion; [`eventually`] here is the one wait.
//!
//! Why `pub mod support;` and no `allow(dead_code)`: each file in `tests/` is a crate of its
//! own and uses a different part of the harness, and rustc's dead-code lint sees one crate at
//! a time, so a private `mod support;` would flag in every binary whatever the others use.
//! Declared `pub`, the harness is the crate's public interface, judged as a library's is:
//! private items nobody calls are still flagged, per binary. That a public helper is used by
//! at least one binary is checked by `harness.rs`, which fails on one that nothing calls.
//! Nothing here is built as a test target of its own.

pub mod api;
pub mod apply;
pub mod cli;
pub mod cluster;
pub mod control;
pub mod docker;
pub mod git;
pub mod golden;
pub mod linearizable;
#[cfg(feature = "etcd")]
pub mod masters;
pub mod process;
pub mod python;
pub mod services;
pub mod store;
pub mod up;
pub mod worker;
pub mod workspace;

use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// What a probe of [`eventually`] answers: `Ok(value)` or `Err(what it saw)`; `Some` or
/// `None`; `true` or `false`. Prefer `Result`: its `Err` is the failure message's last state.
pub trait Outcome {
    type Value;
    type Last: Debug;
    fn settle(self) -> Result<Self::Value, Self::Last>;
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Value = T;
    type Last = E;
    fn settle(self) -> Result<T, E> {
        self
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    type Last = &'static str;
    fn settle(self) -> Result<T, &'static str> {
        self.ok_or("None")
    }
}

impl Outcome for bool {
    type Value = ();
    type Last = &'static str;
    fn settle(self) -> Result<(), &'static str> {
        if self { Ok(()) } else { Err("false") }
    }
}

/// Asks `probe` every 100 ms until it answers yes, for at most `timeout`; then the last
/// answer, which should say what was seen (for a failure message a reader can act on).
pub async fn poll<O, F, Fut>(timeout: Duration, probe: F) -> Result<O::Value, O::Last>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    poll_every(POLL_INTERVAL, timeout, probe).await
}

/// [`poll`], asking every `interval`: for a probe that also checks an invariant at each
/// sample (never two versions at once), where a denser sampling catches more.
pub async fn poll_every<O, F, Fut>(
    interval: Duration,
    timeout: Duration,
    mut probe: F,
) -> Result<O::Value, O::Last>
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await.settle() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => tokio::time::sleep(interval).await,
        }
    }
}

/// Waits until `probe` answers yes and returns its value; fails the test after `timeout`,
/// naming `what` was awaited and the last state `probe` reported.
pub async fn eventually<O, F, Fut>(what: &str, timeout: Duration, probe: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> Fut,
    Fut: Future<Output = O>,
{
    match poll(timeout, probe).await {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {timeout:?}; last seen: {last:?}"),
    }
}

/// [`poll`] for tests with no async runtime.
pub fn poll_blocking<O, F>(timeout: Duration, mut probe: F) -> Result<O::Value, O::Last>
where
    O: Outcome,
    F: FnMut() -> O,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().settle() {
            Ok(value) => return Ok(value),
            Err(last) if Instant::now() >= deadline => return Err(last),
            Err(_) => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// [`eventually`] for tests with no async runtime.
pub fn eventually_blocking<O, F>(what: &str, timeout: Duration, probe: F) -> O::Value
where
    O: Outcome,
    F: FnMut() -> O,
{
    match poll_blocking(timeout, probe) {
        Ok(value) => value,
        Err(last) => panic!("{what}: not within {timeout:?}; last seen: {last:?}"),
    }
}

/// `Ok(value)` when `check` accepts it, else `Err(value)`: turns a read and a predicate into
/// a probe for [`eventually`] that reports what it last read.
pub fn accept<T>(value: T, check: impl FnOnce(&T) -> bool) -> Result<T, T> {
    if check(&value) { Ok(value) } else { Err(value) }
}
