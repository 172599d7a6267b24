//! Real etcd members for tests and the benchmark: a single member or a cluster on loopback
//! ports with temporary data directories; stop, kill and restart members; every process is
//! killed when the harness is dropped, including when a test panics.
//!
//! The binary is `$ETCD_BIN` or `etcd` on `PATH` (Debian's `etcd-server`). A missing binary
//! is a test failure, not a skip: CI installs it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::super::{eventually_blocking, poll_blocking};

/// One member's fixed addresses and data directory; the process comes and goes.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    process: Option<Child>,
}

/// A running etcd cluster owned by a test.
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    _root: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .unwrap()
        .port()
}

fn etcd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("ETCD_BIN") {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("etcd"))
            .find(|path| path.is_file())
    });
    found.expect(
        "the etcd binary is needed for this test: install Debian's etcd-server \
         (apt-get install etcd-server) or set ETCD_BIN",
    )
}

impl EtcdCluster {
    /// Starts a one-member cluster and waits until it serves.
    pub fn single() -> Self {
        Self::start(1)
    }

    /// Starts `size` members and waits until every one serves.
    pub fn start(size: usize) -> Self {
        let mut cluster = Self::planned(size);
        cluster.run();
        cluster
    }

    /// A cluster of `size` members with their names, ports and data directories chosen but
    /// none started, so a test can fill the data directories first (a restored snapshot:
    /// see [`Self::member_flags`]); [`Self::run`] starts them.
    pub fn planned(size: usize) -> Self {
        let root = tempfile::tempdir().expect("temp dir for etcd");
        let token = format!(
            "berth-test-{}",
            root.path().file_name().unwrap().to_string_lossy()
        );
        let members: Vec<Member> = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                data_dir: root.path().join(format!("m{i}")),
                process: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            members,
            initial_cluster,
            token,
            _root: root,
        }
    }

    /// Starts every member and waits until every one serves.
    pub fn run(&mut self) {
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        for i in 0..self.members.len() {
            self.wait_ready(i);
        }
    }

    /// Member `i`'s data directory (absent until it first starts, unless a test made it).
    pub fn data_dir(&self, i: usize) -> &std::path::Path {
        &self.members[i].data_dir
    }

    /// The flags that make member `i` who it is in this cluster: `--name`,
    /// `--initial-cluster`, `--initial-advertise-peer-urls`, `--initial-cluster-token`, as
    /// `etcd` and `snapshot restore` take them.
    pub fn member_flags(&self, i: usize) -> Vec<String> {
        let member = &self.members[i];
        vec![
            "--name".into(),
            member.name.clone(),
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{}", member.peer_port),
            "--initial-cluster-token".into(),
            self.token.clone(),
        ]
    }

    fn spawn(&mut self, i: usize) {
        let member = &self.members[i];
        let client = format!("http://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let log = std::fs::File::create(self._root.path().join(format!("{}.log", member.name)))
            .expect("etcd log file");
        let child = Command::new(etcd_binary())
            .arg("--data-dir")
            .arg(&member.data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", &peer])
            .args(self.member_flags(i))
            .args(["--initial-cluster-state", "new"])
            // Quick elections keep failover tests short; the defaults are for WANs.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", etcd_binary()));
        self.members[i].process = Some(child);
    }

    /// Waits until member `i` answers a linearizable read (so it has a leader).
    pub fn wait_ready(&mut self, i: usize) {
        let endpoint = self.endpoint(i);
        let what = format!("etcd member {i} ready");
        eventually_blocking(&what, Duration::from_secs(30), || {
            if let Some(child) = self.members[i].process.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "etcd member {i} exited early ({status}); log: {}",
                    self.log(i)
                );
            }
            if Self::probe(&endpoint) {
                Ok(())
            } else {
                Err(self.log(i))
            }
        });
    }

    /// One linearizable GET through etcd's HTTP gateway-free gRPC is too heavy here; the
    /// /health endpoint answers `"health":"true"` only once the member has a leader.
    fn probe(endpoint: &str) -> bool {
        use std::io::{Read, Write};
        let addr = endpoint.trim_start_matches("http://");
        let Ok(mut stream) = std::net::TcpStream::connect(addr) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let request = format!("GET /health HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        if stream.write_all(request.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = stream.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }

    fn log(&self, i: usize) -> String {
        let path = self
            ._root
            .path()
            .join(format!("{}.log", self.members[i].name));
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// Every member's client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// SIGKILLs member `i` (no chance to flush or say goodbye).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops member `i` with SIGTERM, waiting for it to exit.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].process.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(child.id().to_string())
                .status();
            let exited = poll_blocking(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if exited.is_err() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts member `i` again on its old data directory and waits until it serves.
    pub fn restart(&mut self, i: usize) {
        assert!(
            self.members[i].process.is_none(),
            "member {i} is still running"
        );
        self.spawn(i);
        self.wait_ready(i);
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
