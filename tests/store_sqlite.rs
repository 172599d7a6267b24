//! Behaviour specific to the embedded SQLite store: background compaction, reopening, and
//! what a watch sees when the store goes away.

pub mod support;

use std::time::Duration;

use berth::cluster::store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use berth::cluster::store::{ListOptions, Op, Store, StoreError, Txn};
use futures::StreamExt;
use support::store::conformance::{put, take};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_keeps_the_configured_window() {
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy {
        keep_revisions: 50,
        keep_for: Duration::from_secs(2),
        interval: Duration::from_millis(50),
    };
    let options = SqliteOptions {
        compaction: Some(policy),
        ..SqliteOptions::in_data_dir(dir.path())
    };
    let store = SqliteStore::open(options).await.unwrap();
    let first_write = std::time::Instant::now();
    for i in 0..300 {
        put(&store, &format!("/bg/{}", i % 5), &i.to_string()).await;
    }
    // Within `keep_for` nothing may go, however many revisions pile up.
    if first_write.elapsed() < Duration::from_millis(1800) {
        assert!(
            store.watch("/bg/", 0).await.is_ok(),
            "history compacted before keep_for passed"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match store.watch("/bg/", 0).await {
            Err(StoreError::Compacted { compacted, .. }) => {
                assert!(
                    compacted <= 300 - 50,
                    "compacted into the last 50 revisions: {compacted}"
                );
                break;
            }
            Ok(_) => assert!(
                tokio::time::Instant::now() < deadline,
                "background compaction never ran"
            ),
            Err(other) => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The last 50 revisions are all still there, and the current state is intact.
    let mut recent = store.watch("/bg/", 300 - 50).await.unwrap();
    let events = take(&mut recent, 50).await;
    assert_eq!(events.last().unwrap().revision(), 300);
    let all = store.list("/bg/", ListOptions::default()).await.unwrap();
    let values: Vec<_> = all
        .items
        .iter()
        .map(|kv| String::from_utf8(kv.value.clone()).unwrap())
        .collect();
    assert_eq!(values, ["295", "296", "297", "298", "299"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_revisions_and_dropping_ends_watches() {
    let dir = tempfile::tempdir().unwrap();
    let options = || SqliteOptions {
        compaction: None,
        ..SqliteOptions::in_data_dir(dir.path())
    };
    let store = SqliteStore::open(options()).await.unwrap();
    let r = store
        .txn(Txn::new().then([Op::put("/a", "1"), Op::put("/b", "2")]))
        .await
        .unwrap()
        .revision;
    let mut watch = store.watch("/", r).await.unwrap();
    drop(store);
    let end = tokio::time::timeout(Duration::from_secs(10), watch.next())
        .await
        .expect("watch hung after drop");
    assert!(matches!(end, Some(Err(StoreError::Closed))), "{end:?}");

    let store = SqliteStore::open(options()).await.unwrap();
    assert_eq!(store.current_revision().await.unwrap(), r);
    assert_eq!(store.get("/b").await.unwrap().unwrap().mod_revision, r);
    assert_eq!(put(&store, "/a", "3").await, r + 1);
}
