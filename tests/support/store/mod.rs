//! Shared helpers of the store tests: the conformance suite, the etcd harness and a way to
//! open each backend.

pub mod conformance;
mod conformance_watch;
pub mod etcd;

use std::sync::Arc;

use berth::cluster::store::Store;
use berth::cluster::store::sqlite::{SqliteOptions, SqliteStore};

/// Whatever keeps a backend alive (a temp dir, an etcd process); dropped after the store.
pub type Guard = Box<dyn std::any::Any + Send>;

/// A fresh SQLite store in a temp dir, background compaction off (tests compact explicitly).
pub async fn sqlite() -> (Arc<dyn Store>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        compaction: None,
        ..SqliteOptions::in_data_dir(dir.path())
    };
    let store = SqliteStore::open(options)
        .await
        .expect("open the SQLite store");
    (Arc::new(store), Box::new(dir))
}

/// A fresh single-member etcd and a berth store on it under the prefix `/berth`.
#[cfg(feature = "etcd")]
pub async fn etcd() -> (Arc<dyn Store>, Guard) {
    let cluster = tokio::task::spawn_blocking(etcd::EtcdCluster::single)
        .await
        .unwrap();
    let store = berth::cluster::store::etcd::EtcdStore::connect(&cluster.endpoints(), "/berth")
        .await
        .expect("connect to etcd");
    (Arc::new(store), Box::new(cluster))
}
