//! `berth snapshot save` under a live write load, then `berth snapshot restore`: the restored
//! store is exactly the source store at the snapshot's revision.

pub mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use berth::cluster::store::sqlite::{SqliteOptions, SqliteStore};
use berth::cluster::store::{ListOptions, Op, Store, Txn};
use futures::StreamExt;
use support::store::conformance::take;

fn berth(args: &[&std::ffi::OsStr]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "berth {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn snapshot_under_load_restores_the_exact_state() {
    let source_dir = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        compaction: None,
        ..SqliteOptions::in_data_dir(source_dir.path())
    };
    let store = Arc::new(SqliteStore::open(options).await.unwrap());

    // 4 writers of 2-key txns (both keys always hold the same value), plus deletes.
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        writers.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let value = format!("{w}:{i}");
                let key = i % 20;
                let mut ops = vec![
                    Op::put(format!("/snap/{w}/{key}/x"), value.clone()),
                    Op::put(format!("/snap/{w}/{key}/y"), value),
                ];
                if i.is_multiple_of(7) {
                    ops.push(Op::delete(format!("/snap/{w}/{}/z", (i + 3) % 20)));
                } else {
                    ops.push(Op::put(format!("/snap/{w}/{key}/z"), vec![b'z'; 256]));
                }
                store.txn(Txn::new().then(ops)).await.unwrap();
                i += 1;
            }
            i
        }));
    }
    while store.current_revision().await.unwrap() < 500 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // Snapshot from another process while the writers go on.
    let file = work.path().join("snap.db");
    let data_dir = source_dir.path().as_os_str();
    let saved = tokio::task::spawn_blocking({
        let file = file.clone();
        let data_dir = data_dir.to_owned();
        move || {
            berth(&[
                "snapshot".as_ref(),
                "save".as_ref(),
                file.as_os_str(),
                "--data-dir".as_ref(),
                &data_dir,
            ])
        }
    })
    .await
    .unwrap();
    let revision: i64 = saved.split_whitespace().nth(2).unwrap().parse().unwrap();
    while store.current_revision().await.unwrap() < revision + 300 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        assert!(writer.await.unwrap() > 0);
    }
    assert!(
        store.current_revision().await.unwrap() > revision,
        "writes went on past the snapshot"
    );

    let restored_dir = work.path().join("restored");
    let out = berth(&[
        "snapshot".as_ref(),
        "restore".as_ref(),
        file.as_os_str(),
        "--data-dir".as_ref(),
        restored_dir.as_os_str(),
    ]);
    assert!(out.contains(&format!("revision {revision}")), "{out}");
    // Restoring over an existing store is refused.
    let again = Command::new(env!("CARGO_BIN_EXE_berth"))
        .args([
            "snapshot".as_ref(),
            "restore".as_ref(),
            file.as_os_str(),
            "--data-dir".as_ref(),
            restored_dir.as_os_str(),
        ])
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(2));

    let options = SqliteOptions {
        compaction: None,
        ..SqliteOptions::in_data_dir(&restored_dir)
    };
    let restored = SqliteStore::open(options).await.unwrap();
    assert_eq!(restored.current_revision().await.unwrap(), revision);
    let expected = store
        .list(
            "",
            ListOptions {
                at_revision: Some(revision),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let got = restored.list("", ListOptions::default()).await.unwrap();
    assert!(!got.items.is_empty());
    assert_eq!(
        got, expected,
        "the restored state differs from the source at the snapshot revision"
    );
    for kv in got.items.iter().filter(|kv| kv.key.ends_with("/x")) {
        let y = got
            .items
            .iter()
            .find(|o| o.key == kv.key.replace("/x", "/y"))
            .unwrap();
        assert_eq!(kv.value, y.value, "a txn was cut in half by the snapshot");
    }
    // The history up to the snapshot came along too: watches replay it identically.
    let mut from_restored = restored.watch("/snap/", 0).await.unwrap();
    let mut restored_events = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), from_restored.next()).await
    {
        restored_events.push(event.unwrap());
    }
    assert_eq!(restored_events.last().unwrap().revision(), revision);
    let mut from_source = store.watch("/snap/", 0).await.unwrap();
    let source_events = take(&mut from_source, restored_events.len()).await;
    assert_eq!(source_events, restored_events);
    let next_in_source = take(&mut from_source, 1).await;
    assert!(next_in_source[0].revision() > revision);

    // The restored store takes writes at the next revision.
    let next = restored
        .txn(Txn::new().then([Op::put("/after", "restore")]))
        .await
        .unwrap();
    assert_eq!(next.revision, revision + 1);
}
