//! The store conformance suite: generic checks every [`Store`] backend must pass.
//!
//! Revisions are compared relative to what the store reports, never as absolute numbers:
//! an empty SQLite store is at revision 0, an empty etcd at 1.

use std::sync::Arc;
use std::time::Duration;

use berth::cluster::store::{
    Compare, Event, KeyValue, ListOptions, Op, OpResult, Revision, Store, StoreError, Txn,
    WatchStream,
};
use futures::StreamExt;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Reads exactly `n` events, failing on an error or a stall.
pub async fn take(stream: &mut WatchStream, n: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(n);
    while events.len() < n {
        let next = tokio::time::timeout(TIMEOUT, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watch stalled after {} of {n} events", events.len()));
        events.push(next.expect("watch ended").expect("watch failed"));
    }
    events
}

/// Asserts nothing more arrives within a short while.
pub async fn assert_quiet(stream: &mut WatchStream) {
    if let Ok(Some(item)) = tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
        panic!("unexpected extra watch item: {item:?}");
    }
}

pub async fn put(store: &dyn Store, key: &str, value: &str) -> Revision {
    let result = store
        .txn(Txn::new().then([Op::put(key, value)]))
        .await
        .expect("put");
    assert!(result.succeeded);
    result.revision
}

pub async fn crud(store: &dyn Store) {
    let start = store.current_revision().await.unwrap();
    assert_eq!(store.get("/t/a").await.unwrap(), None);

    // Create only if absent.
    let create = || {
        Txn::new()
            .when([Compare::absent("/t/a")])
            .then([Op::put("/t/a", "1")])
    };
    let created = store
        .txn(create().otherwise([Op::get("/t/a")]))
        .await
        .unwrap();
    assert!(created.succeeded);
    assert_eq!(created.revision, start + 1, "one write, one new revision");
    assert_eq!(created.results, vec![OpResult::Put { prev: None }]);
    let a = store
        .get("/t/a")
        .await
        .unwrap()
        .expect("created key is readable");
    assert_eq!(
        (a.value.as_slice(), a.create_revision, a.mod_revision),
        (&b"1"[..], start + 1, start + 1)
    );

    // A second create fails and the failure branch returns what is there.
    let again = store
        .txn(create().otherwise([Op::get("/t/a")]))
        .await
        .unwrap();
    assert!(!again.succeeded);
    assert_eq!(
        again.revision,
        start + 1,
        "a txn that writes nothing keeps the revision"
    );
    assert_eq!(
        again.results,
        vec![OpResult::Get {
            kv: Some(a.clone())
        }]
    );

    // Update at the current revision; the create revision stays, prev is returned.
    let update = Txn::new()
        .when([Compare::mod_revision("/t/a", a.mod_revision)])
        .then([Op::put("/t/a", "2")]);
    let updated = store.txn(update).await.unwrap();
    assert!(updated.succeeded);
    assert_eq!(
        updated.results,
        vec![OpResult::Put {
            prev: Some(a.clone())
        }]
    );
    let a2 = store.get("/t/a").await.unwrap().unwrap();
    assert_eq!(
        (a2.value.as_slice(), a2.create_revision, a2.mod_revision),
        (&b"2"[..], start + 1, start + 2)
    );

    // Delete; then the key is gone and deleting again writes nothing.
    let deleted = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision("/t/a", a2.mod_revision)])
                .then([Op::delete("/t/a")]),
        )
        .await
        .unwrap();
    assert!(deleted.succeeded);
    assert_eq!(deleted.revision, start + 3);
    assert_eq!(
        deleted.results,
        vec![OpResult::Delete {
            prev: Some(a2.clone())
        }]
    );
    assert_eq!(store.get("/t/a").await.unwrap(), None);
    let noop = store
        .txn(Txn::new().then([Op::delete("/t/a")]))
        .await
        .unwrap();
    assert_eq!(noop.revision, start + 3);
    assert_eq!(noop.results, vec![OpResult::Delete { prev: None }]);
    assert_eq!(store.current_revision().await.unwrap(), start + 3);

    // Re-created keys start a new incarnation.
    let r = put(store, "/t/a", "3").await;
    assert_eq!(store.get("/t/a").await.unwrap().unwrap().create_revision, r);

    // Lists are in key order, bounded by the prefix, and page with limit + continue.
    for key in ["/t/c", "/t/b", "/t/d", "/u/x", "/t"] {
        put(store, key, key).await;
    }
    let all = store.list("/t/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/t/a", "/t/b", "/t/c", "/t/d"]);
    assert!(!all.more);
    assert_eq!(all.revision, store.current_revision().await.unwrap());
    let mut paged = Vec::new();
    let mut options = ListOptions {
        limit: 3,
        ..Default::default()
    };
    loop {
        let page = store.list("/t/", options.clone()).await.unwrap();
        assert!(page.items.len() <= 3);
        paged.extend(page.items.iter().map(|kv| kv.key.clone()));
        if !page.more {
            break;
        }
        options.continue_after = page.items.last().map(|kv| kv.key.clone());
        options.at_revision = Some(page.revision);
    }
    assert_eq!(paged, keys);
    let everything = store.list("", ListOptions::default()).await.unwrap();
    assert_eq!(everything.items.len(), 6);

    // A branch that writes a key twice is refused.
    let twice = store
        .txn(Txn::new().then([Op::put("/t/z", "1"), Op::delete("/t/z")]))
        .await;
    assert!(
        matches!(twice, Err(StoreError::DuplicateKey { ref key }) if key == "/t/z"),
        "{twice:?}"
    );
}

/// `get_many` answers each key as `get` does, in the order asked, deleted and missing keys
/// included.
pub async fn get_many(store: &dyn Store) {
    put(store, "/m/a", "1").await;
    let b = put(store, "/m/b", "2").await;
    put(store, "/m/c", "3").await;
    store
        .txn(Txn::new().then([Op::delete("/m/c")]))
        .await
        .unwrap();
    let keys: Vec<String> = ["/m/b", "/m/missing", "/m/c", "/m/a", "/m/b"]
        .map(String::from)
        .to_vec();
    let got = store.get_many(&keys).await.unwrap();
    let mut one_by_one = Vec::new();
    for key in &keys {
        one_by_one.push(store.get(key).await.unwrap());
    }
    assert_eq!(got, one_by_one);
    let values: Vec<Option<&[u8]>> = got
        .iter()
        .map(|kv| kv.as_ref().map(|kv| kv.value.as_slice()))
        .collect();
    assert_eq!(
        values,
        [
            Some(&b"2"[..]),
            None,
            None,
            Some(&b"1"[..]),
            Some(&b"2"[..])
        ]
    );
    assert_eq!(got[0].as_ref().unwrap().mod_revision, b);
    assert!(store.get_many(&[]).await.unwrap().is_empty());

    // More keys than one etcd txn may hold (128 by default), each answered in its place.
    let many: Vec<String> = (0..300).map(|i| format!("/many/{i:03}")).collect();
    for chunk in many.chunks(50) {
        let puts = chunk.iter().map(|k| Op::put(k, k.as_bytes().to_vec()));
        store.txn(Txn::new().then(puts)).await.unwrap();
    }
    let mut asked = many.clone();
    asked.reverse();
    let got = store.get_many(&asked).await.unwrap();
    assert_eq!(got.len(), 300);
    for (key, kv) in asked.iter().zip(&got) {
        assert_eq!(
            kv.as_ref().map(|kv| kv.value.as_slice()),
            Some(key.as_bytes())
        );
    }
}

pub async fn stale_revision_rejected(store: &dyn Store) {
    let r1 = put(store, "/s/obj", "v1").await;
    let r2 = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision("/s/obj", r1)])
                .then([Op::put("/s/obj", "v2")]),
        )
        .await
        .unwrap()
        .revision;
    // A writer that read v1 tries to overwrite v2.
    let stale = store
        .txn(
            Txn::new()
                .when([Compare::mod_revision("/s/obj", r1)])
                .then([Op::put("/s/obj", "lost update")])
                .otherwise([Op::get("/s/obj")]),
        )
        .await
        .unwrap();
    assert!(
        !stale.succeeded,
        "an update from a stale revision must be rejected"
    );
    assert_eq!(stale.revision, r2);
    match &stale.results[..] {
        [OpResult::Get { kv: Some(kv) }] => {
            assert_eq!((kv.value.as_slice(), kv.mod_revision), (&b"v2"[..], r2))
        }
        other => panic!("failure branch result: {other:?}"),
    }
    assert_eq!(store.get("/s/obj").await.unwrap().unwrap().value, b"v2");

    // After delete + re-create, a compare on the old incarnation fails.
    store
        .txn(Txn::new().then([Op::delete("/s/obj")]))
        .await
        .unwrap();
    put(store, "/s/obj", "v3").await;
    let old_incarnation = store
        .txn(
            Txn::new()
                .when([Compare::create_revision("/s/obj", r1)])
                .then([Op::put("/s/obj", "x")]),
        )
        .await
        .unwrap();
    assert!(!old_incarnation.succeeded);
    let exists = store
        .txn(
            Txn::new()
                .when([Compare::exists("/s/obj"), Compare::absent("/s/other")])
                .then([Op::put("/s/obj", "v4")]),
        )
        .await
        .unwrap();
    assert!(exists.succeeded);
    let absent = store
        .txn(
            Txn::new()
                .when([Compare::exists("/s/other")])
                .then([Op::put("/s/obj", "x")]),
        )
        .await
        .unwrap();
    assert!(!absent.succeeded);
    assert_eq!(store.get("/s/obj").await.unwrap().unwrap().value, b"v4");
}

/// Concurrent transfers between accounts: every txn moves one unit between two keys under
/// compares on both; the total never changes and each transfer is one revision, two events.
pub async fn multi_key_txn_atomicity(store: Arc<dyn Store>) {
    const ACCOUNTS: usize = 4;
    const TASKS: usize = 4;
    const TRANSFERS: usize = 50;
    let start = store.current_revision().await.unwrap();
    let mut init = Txn::new();
    for i in 0..ACCOUNTS {
        init = init.then([Op::put(format!("/bank/{i}"), "100")]);
    }
    let init = store.txn(init).await.unwrap();
    assert_eq!(init.revision, start + 1, "a multi-key txn is one revision");

    // A txn whose compare fails applies none of its success ops.
    let failed = store
        .txn(
            Txn::new()
                .when([
                    Compare::mod_revision("/bank/0", init.revision),
                    Compare::absent("/bank/1"),
                ])
                .then([Op::put("/bank/0", "0"), Op::put("/bank/9", "1000")]),
        )
        .await
        .unwrap();
    assert!(!failed.succeeded);
    assert_eq!(store.get("/bank/9").await.unwrap(), None);
    assert_eq!(store.get("/bank/0").await.unwrap().unwrap().value, b"100");

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            let mut attempt = 0usize;
            while done < TRANSFERS {
                attempt += 1;
                let from = format!("/bank/{}", (t + attempt) % ACCOUNTS);
                let to = format!("/bank/{}", (t + attempt + 1) % ACCOUNTS);
                let a = store.get(&from).await.unwrap().unwrap();
                let b = store.get(&to).await.unwrap().unwrap();
                let parse = |kv: &KeyValue| {
                    std::str::from_utf8(&kv.value)
                        .unwrap()
                        .parse::<i64>()
                        .unwrap()
                };
                let txn = Txn::new()
                    .when([
                        Compare::mod_revision(&from, a.mod_revision),
                        Compare::mod_revision(&to, b.mod_revision),
                    ])
                    .then([
                        Op::put(&from, (parse(&a) - 1).to_string()),
                        Op::put(&to, (parse(&b) + 1).to_string()),
                    ]);
                if store.txn(txn).await.unwrap().succeeded {
                    done += 1;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let end = store.list("/bank/", ListOptions::default()).await.unwrap();
    let total: i64 = end
        .items
        .iter()
        .map(|kv| {
            std::str::from_utf8(&kv.value)
                .unwrap()
                .parse::<i64>()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 100 * ACCOUNTS as i64, "a transfer was half-applied");
    assert_eq!(end.revision, init.revision + (TASKS * TRANSFERS) as i64);

    // Every transfer revision carries exactly its two events.
    let mut watch = store.watch("/bank/", init.revision).await.unwrap();
    let events = take(&mut watch, 2 * TASKS * TRANSFERS).await;
    for pair in events.chunks(2) {
        assert_eq!(
            pair[0].revision(),
            pair[1].revision(),
            "events of one txn share a revision"
        );
        assert_ne!(pair[0].kv.key, pair[1].kv.key);
    }
    // Every revision in the range holds a whole transfer.
    let revisions: Vec<_> = events.chunks(2).map(|p| p[0].revision()).collect();
    assert_eq!(
        revisions,
        ((init.revision + 1)..=end.revision).collect::<Vec<_>>()
    );
}

pub async fn list_at_revision(store: &dyn Store) {
    for key in ["a", "b", "c", "d", "e"] {
        put(store, &format!("/l/{key}"), "old").await;
    }
    let before = store.list("/l/", ListOptions::default()).await.unwrap();
    let at = before.revision;

    // Change everything a reader at `at` could notice.
    put(store, "/l/a", "new").await;
    store
        .txn(Txn::new().then([Op::delete("/l/b")]))
        .await
        .unwrap();
    put(store, "/l/f", "new").await;
    put(store, "/l/bb", "new").await;

    let again = store
        .list(
            "/l/",
            ListOptions {
                at_revision: Some(at),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        again, before,
        "a list at a past revision sees that revision"
    );

    // Paging at a fixed revision stays consistent while writes continue between pages.
    let mut seen = Vec::new();
    let mut options = ListOptions {
        limit: 2,
        at_revision: Some(at),
        continue_after: None,
    };
    loop {
        let page = store.list("/l/", options.clone()).await.unwrap();
        assert_eq!(page.revision, at);
        seen.extend(page.items.clone());
        put(store, "/l/c", "changed between pages").await;
        if !page.more {
            break;
        }
        options.continue_after = Some(page.items.last().unwrap().key.clone());
    }
    assert_eq!(seen, before.items);

    let now = store.list("/l/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = now.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/l/a", "/l/bb", "/l/c", "/l/d", "/l/e", "/l/f"]);

    let future = store
        .list(
            "/l/",
            ListOptions {
                at_revision: Some(now.revision + 100),
                ..Default::default()
            },
        )
        .await;
    assert!(
        matches!(future, Err(StoreError::FutureRevision { .. })),
        "{future:?}"
    );
}

#[allow(unused_imports)] // not every test crate runs the watch half
pub use super::conformance_watch::*;
