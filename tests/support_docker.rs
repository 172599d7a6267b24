//! Temporary bridge, to be deleted at merge: `agent_runtime*.rs` (whose owner reorganises
//! the agent meanwhile) still say `mod support_docker;`. When they say `pub mod support;`
//! like every other test binary, this file goes, and with it its allowance and its
//! Option-returning wait, which keeps their calls compiling on the one `support::poll`.
#![allow(dead_code)]

#[path = "support/mod.rs"]
pub mod support;

use std::future::Future;
use std::time::Duration;

pub use support::docker::*;

/// The old signature of the wait, over [`support::poll`].
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    support::poll(timeout, &mut check).await.ok()
}
