//! The store conformance suite, run against every backend: SQLite always, etcd with the
//! `etcd` feature (which then needs the etcd binary; a missing one fails the tests).

pub mod support;

use support::store::conformance as suite;

macro_rules! conformance {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn crud() {
                let (store, _guard) = support::store::$backend().await;
                suite::crud(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn get_many() {
                let (store, _guard) = support::store::$backend().await;
                suite::get_many(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn stale_revision_rejected() {
                let (store, _guard) = support::store::$backend().await;
                suite::stale_revision_rejected(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn multi_key_txn_atomicity() {
                let (store, _guard) = support::store::$backend().await;
                suite::multi_key_txn_atomicity(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn list_at_revision() {
                let (store, _guard) = support::store::$backend().await;
                suite::list_at_revision(&*store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watch_order_8_writers_x_1000_txns() {
                let (store, _guard) = support::store::$backend().await;
                suite::watch_order_under_concurrent_writers(store, 1000).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn watch_resume_after_drop() {
                let (store, _guard) = support::store::$backend().await;
                suite::watch_resume_after_drop(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn compaction() {
                let (store, _guard) = support::store::$backend().await;
                suite::compaction(&*store).await;
            }
        }
    };
}

conformance!(sqlite);
#[cfg(feature = "etcd")]
conformance!(etcd);

/// etcd with its default limits takes at most 128 operations a transaction: a larger one
/// (an ApplySet of more than 127 objects and its parent) is refused whole, before anything is
/// written, with a message naming the etcd flag to raise.
#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_refuses_a_txn_over_its_default_limit_whole_naming_the_flag() {
    use berth::cluster::store::{ListOptions, Op, StoreError, Txn};
    let (store, _guard) = support::store::etcd().await;
    let puts = |n: usize| -> Vec<Op> {
        (0..n)
            .map(|i| Op::put(format!("/big/{i:03}"), b"v".to_vec()))
            .collect()
    };
    let refused = store.txn(Txn::new().then(puts(200))).await.unwrap_err();
    assert!(
        matches!(refused, StoreError::TxnTooLarge { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(
        message.contains("200 operations") && message.contains("--max-txn-ops"),
        "{message}"
    );
    let listed = store.list("/big/", ListOptions::default()).await.unwrap();
    assert!(listed.items.is_empty(), "nothing of it was written");
    // At the limit it goes through, all of it.
    store.txn(Txn::new().then(puts(128))).await.unwrap();
    let listed = store.list("/big/", ListOptions::default()).await.unwrap();
    assert_eq!(listed.items.len(), 128);
}
