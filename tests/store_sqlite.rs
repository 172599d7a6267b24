//! Behaviour specific to the embedded SQLite store: background compaction, reopening, and
//! what a watch sees when the store goes away.

pub mod support;

use std::time::{Duration, Instant};

use berth::cluster::store::sqlite::{CompactionPolicy, SqliteOptions, SqliteStore};
use berth::cluster::store::{ListOptions, Op, Store, StoreError, Txn};
use futures::StreamExt;
use support::eventually;
use support::store::conformance::{put, take};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_compaction_keeps_the_configured_window() {
    const KEEP_REVISIONS: i64 = 10;
    const KEEP_FOR: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let policy = CompactionPolicy {
        keep_revisions: KEEP_REVISIONS,
        keep_for: KEEP_FOR,
        interval: Duration::from_millis(50),
    };
    let options = SqliteOptions {
        compaction: Some(policy),
        ..SqliteOptions::in_data_dir(dir.path())
    };
    let store = SqliteStore::open(options).await.unwrap();
    // When each write was sent: a revision sent less than `keep_for` ago is younger than that.
    let mut sent = Vec::new();
    for i in 0..300 {
        let at = Instant::now();
        let revision = put(&store, &format!("/bg/{}", i % 5), &i.to_string()).await;
        sent.push((revision, at));
    }
    // Within `keep_for` nothing may go, however many revisions pile up: the oldest revision
    // sent within `keep_for` of the check (less a margin for the check itself) is readable.
    let margin = Duration::from_secs(2);
    let checked = Instant::now();
    let (young, young_sent) = sent
        .iter()
        .copied()
        .find(|(_, at)| checked + margin < *at + KEEP_FOR)
        .expect("the last write was sent within keep_for");
    assert!(
        young < 300 - KEEP_REVISIONS,
        "fewer than {KEEP_REVISIONS} writes in the last {:?}: keep_for is not what keeps {young}",
        KEEP_FOR - margin
    );
    // Everything after `young - 1`: revision `young` on.
    let kept = store.watch("/bg/", young - 1).await;
    assert!(
        checked.elapsed() < margin,
        "the check took longer than its margin"
    );
    assert!(
        kept.is_ok(),
        "revision {young}, written {:?} before the check, compacted within keep_for: {:?}",
        checked - young_sent,
        kept.err()
    );
    // Once keep_for has passed, the background compaction runs.
    let compacted = eventually("the background compaction", KEEP_FOR * 6, || async {
        match store.watch("/bg/", 0).await {
            Err(StoreError::Compacted { compacted, .. }) => Ok(compacted),
            Ok(_) => Err("nothing compacted".to_string()),
            Err(other) => panic!("{other:?}"),
        }
    })
    .await;
    assert!(
        compacted <= 300 - KEEP_REVISIONS,
        "compacted into the last {KEEP_REVISIONS} revisions: {compacted}"
    );
    // The last revisions are all still there, and the current state is intact.
    let keep = KEEP_REVISIONS as usize;
    let mut recent = store.watch("/bg/", 300 - KEEP_REVISIONS).await.unwrap();
    let events = take(&mut recent, keep).await;
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

/// The WAL's size on disk.
fn wal_bytes(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("store.db-wal")).map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_is_cut_back_after_a_burst_of_writes() {
    const CLIENTS: usize = 16;
    const CREATES: usize = 50_000;
    const LIMIT: u64 = 64 * 1024 * 1024;
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        SqliteStore::open(SqliteOptions::in_data_dir(dir.path()))
            .await
            .unwrap(),
    );
    // A reader that keeps listing through the burst, as an API server's clients do: it keeps
    // passive checkpoints from restarting the log.
    let reading = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let (store, reading) = (store.clone(), reading.clone());
        tokio::spawn(async move {
            while reading.load(std::sync::atomic::Ordering::Relaxed) {
                let options = ListOptions {
                    limit: 500,
                    ..ListOptions::default()
                };
                store.list("/burst/", options).await.unwrap();
            }
        })
    };
    let value = "x".repeat(2048);
    let mut peak = 0;
    let mut clients = tokio::task::JoinSet::new();
    for client in 0..CLIENTS {
        let (store, value) = (store.clone(), value.clone());
        clients.spawn(async move {
            for i in (client..CREATES).step_by(CLIENTS) {
                let key = format!("/burst/{i:06}");
                let txn = Txn::new().then([Op::put(key, value.clone().into_bytes())]);
                store.txn(txn).await.unwrap();
            }
        });
    }
    let burst = tokio::spawn(async move { while clients.join_next().await.is_some() {} });
    while !burst.is_finished() {
        peak = peak.max(wal_bytes(dir.path()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    reading.store(false, std::sync::atomic::Ordering::Relaxed);
    reader.await.unwrap();
    let ended = Instant::now();
    println!("WAL peak during the burst: {} MiB", peak / (1024 * 1024));
    let settled = eventually("the WAL cut back", Duration::from_secs(10), || async {
        match wal_bytes(dir.path()) {
            bytes if bytes < LIMIT => Ok(bytes),
            bytes => Err(format!("{} MiB", bytes / (1024 * 1024))),
        }
    })
    .await;
    println!(
        "WAL {} MiB {:.1} s after the burst",
        settled / (1024 * 1024),
        ended.elapsed().as_secs_f64()
    );
    let all = store.list("/burst/", ListOptions::default()).await.unwrap();
    assert_eq!(all.items.len(), CREATES, "every create is kept");
}
