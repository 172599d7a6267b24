//! Several `berth server` masters on one 3-member etcd cluster, all on loopback ports with
//! temporary data dirs: the first master publishes the cluster's identity, the others join
//! with its admin token. Masters are killed, paused and resumed by index; every etcd member
//! and master is killed when the harness is dropped, also when a test fails.

use std::time::Duration;

use super::api::Server;
use super::store::etcd::EtcdCluster;

/// The etcd key prefix of the harness's cluster.
pub const PREFIX: &str = "/berth-masters";

/// A cluster of masters on etcd.
pub struct Masters {
    /// Dropped after the masters (fields drop in order).
    pub servers: Vec<Server>,
    pub etcd: EtcdCluster,
}

impl Masters {
    /// Three etcd members and `n` masters, each serving.
    pub fn start(n: usize) -> Masters {
        let etcd = EtcdCluster::start(3);
        let mut masters = Masters {
            servers: Vec::new(),
            etcd,
        };
        for _ in 0..n {
            masters.add(&[]);
        }
        masters
    }

    /// The flags that put a master on this etcd.
    pub fn etcd_args(&self) -> Vec<String> {
        vec![
            "--etcd-endpoints".into(),
            self.etcd.endpoints().join(","),
            "--etcd-prefix".into(),
            PREFIX.into(),
        ]
    }

    /// Starts one more master (joining with the first one's admin token), with `extra` flags.
    pub fn add(&mut self, extra: &[&str]) -> &Server {
        let mut args = self.etcd_args();
        if let Some(first) = self.servers.first() {
            args.push("--token".into());
            args.push(first.admin_token.clone());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let dir = tempfile::Builder::new()
            .prefix("berth-master")
            .tempdir()
            .expect("temp dir");
        // One pod CIDR for every master: they serve one cluster.
        if let Some(first) = self.servers.first() {
            let cidr = std::fs::read_to_string(first.dir.path().join("test-cluster-cidr"))
                .expect("the first master's cluster CIDR");
            std::fs::write(dir.path().join("test-cluster-cidr"), cidr).expect("write the CIDR");
        }
        self.servers.push(Server::start_in(dir, &args));
        self.servers.last().expect("just pushed")
    }

    /// Which master holds the controllers' lease, by their `/metrics`; `Err` lists what each
    /// answered when not exactly one does. `skip` masters are not asked (killed or paused).
    pub async fn leader(&self, skip: &[usize]) -> Result<usize, String> {
        let mut leaders = Vec::new();
        let mut seen = Vec::new();
        for (i, server) in self.servers.iter().enumerate() {
            if skip.contains(&i) {
                continue;
            }
            let status = leadership(server).await;
            if status == Some(1) {
                leaders.push(i);
            }
            seen.push(format!("master {i}: {status:?}"));
        }
        match leaders.as_slice() {
            [one] => Ok(*one),
            _ => Err(seen.join(", ")),
        }
    }
}

/// A master's `leader_election_master_status` gauge, or `None` when it does not answer.
pub async fn leadership(server: &Server) -> Option<u8> {
    let response = server
        .client()
        .get(format!("{}/metrics", server.url))
        .bearer_auth(&server.admin_token)
        .timeout(Duration::from_secs(3))
        .send()
        .await
        .ok()?;
    let text = response.text().await.ok()?;
    text.lines()
        .find(|l| l.starts_with("leader_election_master_status{"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
