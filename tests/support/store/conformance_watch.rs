//! The watch and compaction half of the store conformance suite (see `conformance`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use berth::cluster::store::{
    Event, EventKind, KeyValue, ListOptions, Op, Revision, Store, StoreError, Txn,
};
use futures::StreamExt;

use super::conformance::{TIMEOUT, assert_quiet, put, take};

fn value(kv: &Option<KeyValue>) -> Option<&[u8]> {
    kv.as_ref().map(|kv| kv.value.as_slice())
}

/// 8 writers × `per_writer` single-key txns; a watcher started before them and one started
/// from revision 0 afterwards both see exactly the committed sequence.
pub async fn watch_order_under_concurrent_writers(store: Arc<dyn Store>, per_writer: usize) {
    const WRITERS: usize = 8;
    let start = store.current_revision().await.unwrap();
    let mut live = store.watch("/w/", start).await.unwrap();
    let live_reader = tokio::spawn(async move { take(&mut live, WRITERS * per_writer).await });

    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = Arc::clone(&store);
        writers.push(tokio::spawn(async move {
            let mut committed = Vec::with_capacity(per_writer);
            for j in 0..per_writer {
                let key = format!("/w/{w}/{}", j % 10);
                let value = format!("{w}:{j}");
                let result = store
                    .txn(Txn::new().then([Op::put(&key, value.clone())]))
                    .await
                    .unwrap();
                committed.push((result.revision, key, value));
            }
            committed
        }));
    }
    let mut committed = Vec::new();
    for writer in writers {
        committed.extend(writer.await.unwrap());
    }
    committed.sort();
    let revisions: Vec<_> = committed.iter().map(|c| c.0).collect();
    assert_eq!(
        revisions,
        ((start + 1)..=(start + committed.len() as i64)).collect::<Vec<_>>(),
        "each txn gets its own revision, no holes"
    );

    let check = |events: &[Event], who: &str| {
        let got: Vec<_> = events
            .iter()
            .map(|e| {
                (
                    e.revision(),
                    e.kv.key.clone(),
                    String::from_utf8(e.kv.value.clone()).unwrap(),
                )
            })
            .collect();
        assert_eq!(got.len(), committed.len(), "{who}: event count");
        for (i, (g, c)) in got.iter().zip(&committed).enumerate() {
            assert_eq!(g, c, "{who}: event {i} differs from the committed sequence");
        }
        // Each event carries the previous value of its key.
        let mut last: HashMap<&str, &str> = HashMap::new();
        for (e, c) in events.iter().zip(&committed) {
            assert_eq!(e.kind, EventKind::Put);
            let prev = e
                .prev
                .as_ref()
                .map(|p| std::str::from_utf8(&p.value).unwrap());
            assert_eq!(
                prev,
                last.get(c.1.as_str()).copied(),
                "{who}: prev value of {}",
                c.1
            );
            last.insert(&c.1, &c.2);
        }
    };
    let live_events = live_reader.await.unwrap();
    check(&live_events, "live watcher");

    let mut replay = store.watch("/w/", 0).await.unwrap();
    let replayed = take(&mut replay, committed.len()).await;
    check(&replayed, "watcher from revision 0");
    assert_quiet(&mut replay).await;
}

/// A consumer drops its stream mid-way and resumes from the last revision it processed,
/// while a writer keeps going: it sees every change once.
pub async fn watch_resume_after_drop(store: Arc<dyn Store>) {
    const TOTAL: usize = 300;
    let start = store.current_revision().await.unwrap();
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..TOTAL {
                put(&*store, &format!("/r/{}", i % 7), &i.to_string()).await;
            }
        })
    };
    let mut seen: Vec<Event> = Vec::new();
    let mut after = start;
    // Three short-lived streams, each dropped after a few events, then one to the end.
    for chunk in [40, 1, 100] {
        let mut stream = store.watch("/r/", after).await.unwrap();
        let events = take(&mut stream, chunk).await;
        drop(stream);
        after = events.last().unwrap().revision();
        seen.extend(events);
    }
    let mut stream = store.watch("/r/", after).await.unwrap();
    seen.extend(take(&mut stream, TOTAL - seen.len()).await);
    writer.await.unwrap();
    assert_quiet(&mut stream).await;
    let values: Vec<_> = seen
        .iter()
        .map(|e| String::from_utf8(e.kv.value.clone()).unwrap())
        .collect();
    assert_eq!(
        values,
        (0..TOTAL).map(|i| i.to_string()).collect::<Vec<_>>()
    );
    let revisions: Vec<_> = seen.iter().map(Event::revision).collect();
    assert_eq!(
        revisions,
        ((start + 1)..=(start + TOTAL as i64)).collect::<Vec<_>>()
    );

    // Events outside the prefix never show up; a delete is an event with the previous value.
    let mut stream = store
        .watch("/r/0", store.current_revision().await.unwrap())
        .await
        .unwrap();
    put(&*store, "/x/unrelated", "1").await;
    store
        .txn(Txn::new().then([Op::delete("/r/0")]))
        .await
        .unwrap();
    let deleted = take(&mut stream, 1).await.remove(0);
    assert_eq!(
        (deleted.kind, deleted.kv.key.as_str()),
        (EventKind::Delete, "/r/0")
    );
    assert!(deleted.kv.value.is_empty());
    let expected_prev = ((0..TOTAL).filter(|i| i % 7 == 0).max().unwrap()).to_string();
    assert_eq!(value(&deleted.prev), Some(expected_prev.as_bytes()));
}

async fn expect_compacted(store: &dyn Store, after: Revision) {
    match store.watch("/c/", after).await {
        Err(StoreError::Compacted { .. }) => {}
        Err(other) => panic!("watch after {after}: expected Compacted, got {other:?}"),
        Ok(mut stream) => match tokio::time::timeout(TIMEOUT, stream.next()).await {
            Ok(Some(Err(StoreError::Compacted { .. }))) => {}
            other => panic!("watch after {after}: expected Compacted, got {other:?}"),
        },
    }
}

pub async fn compaction(store: &dyn Store) {
    let mut revisions = Vec::new();
    for i in 0..10 {
        revisions.push(put(store, "/c/key", &i.to_string()).await);
    }
    put(store, "/c/gone", "x").await;
    store
        .txn(Txn::new().then([Op::delete("/c/gone")]))
        .await
        .unwrap();
    let before: BTreeMap<_, _> = [(
        5,
        store
            .list(
                "/c/",
                ListOptions {
                    at_revision: Some(revisions[5]),
                    ..Default::default()
                },
            )
            .await
            .unwrap(),
    )]
    .into();
    let current = store.current_revision().await.unwrap();
    let keep = revisions[5];
    store.compact(keep).await.unwrap();

    // The current state and the state at the compacted revision are intact.
    assert_eq!(store.get("/c/key").await.unwrap().unwrap().value, b"9");
    assert_eq!(store.get("/c/gone").await.unwrap(), None);
    let at_keep = store
        .list(
            "/c/",
            ListOptions {
                at_revision: Some(keep),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(at_keep, before[&5]);
    assert_eq!(store.current_revision().await.unwrap(), current);

    // Older revisions are gone, for lists and for watches.
    let old = store
        .list(
            "/c/",
            ListOptions {
                at_revision: Some(keep - 1),
                ..Default::default()
            },
        )
        .await;
    assert!(matches!(old, Err(StoreError::Compacted { .. })), "{old:?}");
    expect_compacted(store, keep - 2).await;
    expect_compacted(store, 0).await;

    // A watch from the compacted revision on still replays everything after it.
    let mut stream = store.watch("/c/", keep - 1).await.unwrap();
    let events = take(&mut stream, (current - keep + 1) as usize).await;
    let got: Vec<_> = events.iter().map(Event::revision).collect();
    assert_eq!(got, (keep..=current).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().kind, EventKind::Delete);

    // Compacting again to the same revision, or to the future, is refused.
    let again = store.compact(keep).await;
    assert!(
        matches!(again, Err(StoreError::Compacted { .. })),
        "{again:?}"
    );
    let future = store.compact(current + 10).await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );

    // Writes go on after compaction.
    let next = put(store, "/c/key", "10").await;
    assert_eq!(next, current + 1);
    assert_eq!(take(&mut stream, 1).await[0].kv.value, b"10");
}
