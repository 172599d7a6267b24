//! Store benchmark: SQLite backend vs berth's etcd backend vs raw `etcd-client`, one process.
//!
//! Workloads (256-byte values, single-key txns): write throughput with 1 and with 64
//! concurrent writers, and watch delivery latency with 100 watchers. Each workload runs
//! `--rounds` times (default 5), backends interleaved within a round so machine noise hits
//! them alike; the report gives every round, the medians and the ratios.
//!
//! Run: `cargo bench --features etcd --bench store` (needs the etcd binary, as the tests do).
//! Both stores fsync before acknowledging: SQLite with `synchronous=FULL`, etcd by default.

#[path = "../tests/support/mod.rs"]
pub mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth::cluster::store::etcd::EtcdStore;
use berth::cluster::store::sqlite::{SqliteOptions, SqliteStore};
use berth::cluster::store::{Op, Store, Txn};
use futures::StreamExt;

const VALUE_BYTES: usize = 256;
const WATCHERS: usize = 100;

/// One way of writing and watching: a berth `Store` or raw etcd-client calls.
#[derive(Clone)]
enum Target {
    Berth(Arc<dyn Store>),
    RawEtcd(Box<etcd_client::Client>),
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Target {
    /// Commits one single-key put txn.
    fn put<'a>(&'a self, key: String, value: Vec<u8>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            match self {
                Target::Berth(store) => {
                    store
                        .txn(Txn::new().then([Op::put(key, value)]))
                        .await
                        .expect("txn");
                }
                Target::RawEtcd(client) => {
                    let txn = etcd_client::Txn::new().and_then([etcd_client::TxnOp::put(
                        key,
                        value,
                        Some(prev_kv()),
                    )]);
                    client.kv_client().txn(txn).await.expect("raw txn");
                }
            }
        })
    }

    /// Opens a watch on `prefix` from now; yields the value of each delivered put.
    async fn watch(&self, prefix: &str) -> futures::stream::BoxStream<'static, Vec<u8>> {
        match self {
            Target::Berth(store) => {
                let from = store.current_revision().await.unwrap();
                let stream = store.watch(prefix, from).await.unwrap();
                stream.map(|event| event.expect("watch").kv.value).boxed()
            }
            Target::RawEtcd(client) => {
                let options = etcd_client::WatchOptions::new()
                    .with_prefix()
                    .with_prev_key();
                let stream = client
                    .watch_client()
                    .watch(prefix, Some(options))
                    .await
                    .unwrap();
                futures::stream::unfold(stream, |mut stream| async move {
                    let response = stream.message().await.expect("raw watch")?;
                    let values: Vec<Vec<u8>> = response
                        .events()
                        .iter()
                        .filter_map(|e| e.kv())
                        .map(|kv| kv.value().to_vec())
                        .collect();
                    Some((futures::stream::iter(values), stream))
                })
                .flatten()
                .boxed()
            }
        }
    }
}

/// The raw calls ask for what berth's backend asks for (previous values, as Kubernetes'
/// apiserver does), so the comparison measures the backend's overhead, not different work.
fn prev_kv() -> etcd_client::PutOptions {
    etcd_client::PutOptions::new().with_prev_key()
}

/// Txns per second with `writers` concurrent writers committing `total` txns in all.
async fn throughput(target: &Target, writers: usize, total: usize, round: usize) -> f64 {
    let per_writer = total / writers;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let key = format!("/bench/r{round}/w{w}/{}", i % 100);
                target.put(key, vec![b'v'; VALUE_BYTES]).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (per_writer * writers) as f64 / started.elapsed().as_secs_f64()
}

/// Watch delivery latency with 100 watchers: one writer commits `count` txns, paced; each
/// value carries its sequence number. Returns (p50, p99) in ms of delivery after the ack.
async fn watch_latency(target: &Target, count: usize, round: usize) -> (f64, f64) {
    let prefix = format!("/lat/r{round}/");
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let mut stream = target.watch(&prefix).await;
        watchers.push(tokio::spawn(async move {
            let mut received = Vec::with_capacity(count);
            while received.len() < count {
                let value = tokio::time::timeout(Duration::from_secs(60), stream.next())
                    .await
                    .expect("watch stalled")
                    .expect("watch ended");
                let seq: usize = std::str::from_utf8(&value[..8])
                    .unwrap()
                    .trim()
                    .parse()
                    .unwrap();
                received.push((seq, Instant::now()));
            }
            received
        }));
    }
    let mut acked = HashMap::with_capacity(count);
    for seq in 0..count {
        let mut value = format!("{seq:>8}").into_bytes();
        value.resize(VALUE_BYTES, b'v');
        target.put(format!("{prefix}{}", seq % 10), value).await;
        acked.insert(seq, Instant::now());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut latencies = Vec::with_capacity(count * WATCHERS);
    for watcher in watchers {
        for (seq, at) in watcher.await.unwrap() {
            // Delivery may beat the ack back to the writer: that counts as zero.
            latencies.push(at.saturating_duration_since(acked[&seq]).as_secs_f64() * 1e3);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let pick = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    (pick(0.50), pick(0.99))
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

fn main() {
    let mut rounds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--rounds" => {
                rounds = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--rounds N")
            }
            "--bench" => {} // passed by `cargo bench`
            other => eprintln!("ignoring argument {other}"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run(rounds));
}

async fn run(rounds: usize) {
    let dir = tempfile::tempdir().unwrap();
    let sqlite: Arc<dyn Store> = Arc::new(
        SqliteStore::open(SqliteOptions::in_data_dir(dir.path()))
            .await
            .unwrap(),
    );
    let cluster = tokio::task::spawn_blocking(support::store::etcd::EtcdCluster::single)
        .await
        .unwrap();
    let client = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .unwrap();
    let berth_etcd: Arc<dyn Store> = Arc::new(EtcdStore::with_client(client.clone(), ""));
    let targets = [
        ("sqlite", Target::Berth(sqlite)),
        ("berth-etcd", Target::Berth(berth_etcd)),
        ("raw-etcd", Target::RawEtcd(Box::new(client))),
    ];

    // Warm-up, not recorded: etcd preallocates its WAL, SQLite's WAL grows until its first
    // checkpoint (appends then cost a metadata flush each); measure both in steady state.
    for (_, target) in &targets {
        throughput(target, 64, 6_400, usize::MAX).await;
    }

    // (workload, target) -> per-round figures
    let mut results: HashMap<(&str, &str), Vec<f64>> = HashMap::new();
    for round in 0..rounds {
        for (name, target) in &targets {
            let w1 = throughput(target, 1, 1_000, round).await;
            let w64 = throughput(target, 64, 12_800, round).await;
            let (p50, p99) = watch_latency(target, 300, round).await;
            eprintln!(
                "round {round} {name:>10}: 1 writer {w1:8.0}/s  64 writers {w64:8.0}/s  watch p50 {p50:.2} ms p99 {p99:.2} ms"
            );
            for (workload, value) in [("w1", w1), ("w64", w64), ("p50", p50), ("p99", p99)] {
                results.entry((workload, name)).or_default().push(value);
            }
        }
    }
    let m = |workload: &str, target: &str| median(&results[&(workload, target)]);
    println!("\nmedians of {rounds} rounds (256-byte values, single-key txns, fsync before ack)\n");
    println!(
        "| backend | 1 writer (txn/s) | 64 writers (txn/s) | watch p50 (ms) | watch p99 (ms) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, _) in &targets {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {:.2} |",
            m("w1", name),
            m("w64", name),
            m("p50", name),
            m("p99", name)
        );
    }
    println!("\n| ratio | 1 writer | 64 writers |");
    println!("|---|---:|---:|");
    for (label, a, b) in [
        ("sqlite / berth-etcd", "sqlite", "berth-etcd"),
        ("sqlite / raw-etcd", "sqlite", "raw-etcd"),
        ("berth-etcd / raw-etcd", "berth-etcd", "raw-etcd"),
    ] {
        println!(
            "| {label} | {:.2} | {:.2} |",
            m("w1", a) / m("w1", b),
            m("w64", a) / m("w64", b)
        );
    }
    drop(cluster);
}
