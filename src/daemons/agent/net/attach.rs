//! Plugging a pod sandbox into the node's pod network, as a CNI bridge plugin does: the
//! sandbox is created with a network namespace of its own and no engine networking, and the
//! agent adds a veth pair (one end `eth0` in the pod, the other on the node's bridge), the
//! pod's address and its default route.
//!
//! The engine leaves such a sandbox's namespace entirely alone (Docker's `NetworkDisabled`),
//! which saves it the network sandbox it would otherwise make for every pod, the larger part
//! of a pod's start (see BENCHMARKS.md). So the agent also writes the pod's `/etc/hosts` and
//! `/etc/resolv.conf`, as the kubelet writes `/etc/hosts`, and every container of the pod
//! mounts them. Pods that publish a `hostPort` still attach through Docker, which publishes
//! the port, with a static address from the same pool so the two kinds never collide.

use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::podnet::Cidr;
use crate::daemons::agent::runtime::labels;
use crate::daemons::agent::runtime::{
    ContainerInfo, ContainerState, DnsSettings, HostAlias, MountSource, MountSpec,
};

/// The pool of pod addresses of this node's pod CIDR: one per pod, kept for the pod's
/// life (a recreated sandbox gets its pod's address again), handed out round-robin so a
/// freed address is the last to be reused.
#[derive(Debug)]
pub struct PodAddresses {
    cidr: Cidr,
    state: Mutex<Pool>,
}

#[derive(Debug, Default)]
struct Pool {
    by_pod: HashMap<String, Ipv4Addr>,
    used: BTreeSet<Ipv4Addr>,
    /// The last address handed out.
    last: Option<Ipv4Addr>,
}

/// Every address of the pod CIDR is taken.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free pod address is left in {cidr} ({used} pods hold one); give the node a larger podCIDR"
)]
pub struct Exhausted {
    cidr: Cidr,
    used: usize,
}

impl PodAddresses {
    /// An empty pool for `cidr`; its first address is the bridge's and never handed out.
    pub fn new(cidr: Cidr) -> PodAddresses {
        PodAddresses {
            cidr,
            state: Mutex::default(),
        }
    }

    /// The pod's address: the one it holds, or the next free one.
    pub fn assign(&self, pod_uid: &str) -> Result<Ipv4Addr, Exhausted> {
        let mut pool = self.state.lock().expect("address pool");
        if let Some(ip) = pool.by_pod.get(pod_uid) {
            return Ok(*ip);
        }
        let (first, last) = self.cidr.pod_range();
        let size = u32::from(last) - u32::from(first) + 1;
        let start = pool
            .last
            .map_or(u32::from(first), |l| u32::from(l).wrapping_add(1));
        let free = (0..size)
            .map(|i| {
                let offset = (start.wrapping_sub(u32::from(first)).wrapping_add(i)) % size;
                Ipv4Addr::from(u32::from(first) + offset)
            })
            .find(|ip| !pool.used.contains(ip));
        let Some(ip) = free else {
            return Err(Exhausted {
                cidr: self.cidr,
                used: pool.used.len(),
            });
        };
        pool.used.insert(ip);
        pool.by_pod.insert(pod_uid.to_string(), ip);
        pool.last = Some(ip);
        Ok(ip)
    }

    /// Records an address a running sandbox already holds (after the agent restarts).
    pub fn claim(&self, pod_uid: &str, ip: Ipv4Addr) {
        if !self.cidr.contains(ip) {
            return;
        }
        let mut pool = self.state.lock().expect("address pool");
        let old = pool.by_pod.insert(pod_uid.to_string(), ip);
        if let Some(old) = old.filter(|old| *old != ip) {
            pool.used.remove(&old);
        }
        pool.used.insert(ip);
    }

    /// Records the address a sandbox holds (its `berth.dev/pod-ip`), under its pod's uid;
    /// returns it.
    pub fn claim_sandbox(&self, sandbox: &ContainerInfo) -> Option<Ipv4Addr> {
        let uid = sandbox.labels.get(labels::POD_UID)?;
        let ip = sandbox.ip_address.as_deref()?.parse().ok()?;
        self.claim(uid, ip);
        Some(ip)
    }

    /// Frees the pod's address once its sandbox is gone.
    pub fn release(&self, pod_uid: &str) {
        let mut pool = self.state.lock().expect("address pool");
        if let Some(ip) = pool.by_pod.remove(pod_uid) {
            pool.used.remove(&ip);
        }
    }
}

/// Where a sandbox is plugged in: the node's bridge, its gateway and prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    /// The node's bridge interface.
    pub bridge: String,
    /// The pod CIDR.
    pub cidr: Cidr,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The node's end of the veth pair.
    pub host_interface: String,
}

/// The node's end of a sandbox's veth pair: unique per pod and sandbox attempt, within the
/// kernel's 15-byte limit.
pub fn host_interface(pod_uid: &str, attempt: u32) -> String {
    let digest = crate::daemons::agent::runtime::labels::spec_hash(&(pod_uid, attempt));
    format!("bp{}", &digest[..13])
}

/// Whether the node's end of a sandbox's veth pair exists: it goes with the sandbox's
/// network namespace, and someone may have deleted it.
pub fn interface_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The node's end of the veth pair of a running, plugged-in sandbox that has lost it.
pub fn lost_interface(c: &ContainerInfo) -> Option<&str> {
    let name = c.labels.get(labels::VETH)?;
    (c.state == ContainerState::Running && !interface_exists(name)).then_some(name.as_str())
}

/// Where agents keep their plugged-in pods' `hosts` and `resolv.conf`, one directory per
/// bridge (so per node) and pod; on tmpfs, gone after a reboot like the containers' state.
pub const PODS_FILES: &str = "/run/berth";

/// Removes the files of the pod with `pod_uid` whichever node's directory holds them (for
/// `berth up --down`, which removes containers without their agent).
pub fn remove_pod_files_of(pod_uid: &str) {
    // A uid is one path component; anything else would name another directory.
    if pod_uid.is_empty() || pod_uid.contains('/') || pod_uid.starts_with('.') {
        return;
    }
    let Ok(bridges) = std::fs::read_dir(PODS_FILES) else {
        return;
    };
    for bridge in bridges.flatten() {
        let dir = pod_files_dir(&bridge.path(), pod_uid);
        if dir.exists() {
            remove_pod_files(&dir);
            // The node's directory goes with its last pod (an error: pods are left).
            let _ = std::fs::remove_dir(bridge.path());
        }
    }
}

/// The directory of one pod's `hosts` and `resolv.conf` under the agent's `base`.
pub fn pod_files_dir(base: &Path, pod_uid: &str) -> PathBuf {
    base.join(pod_uid)
}

/// The pod's `/etc/hosts`, with the lines the kubelet writes: its own, then its
/// `hostAliases`.
pub fn hosts_file(hostname: &str, ip: Ipv4Addr, aliases: &[HostAlias]) -> String {
    let mut out = format!(
        "# Kubernetes-managed hosts file (written by the berth agent).\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         fe00::0\tip6-mcastprefix\n\
         fe00::1\tip6-allnodes\n\
         fe00::2\tip6-allrouters\n\
         {ip}\t{hostname}\n"
    );
    let aliases: Vec<_> = aliases.iter().filter(|a| !a.hostnames.is_empty()).collect();
    if !aliases.is_empty() {
        out.push_str("\n# Entries added by HostAliases.\n");
        for alias in aliases {
            out.push_str(&format!("{}\t{}\n", alias.ip, alias.hostnames.join("\t")));
        }
    }
    out
}

/// The pod's `/etc/resolv.conf`: its DNS settings (from `dnsPolicy` and `dnsConfig`), else
/// the node's `resolv.conf` without loopback name servers, which the pod cannot reach.
pub fn resolv_conf(dns: Option<&DnsSettings>, node_resolv_conf: &str) -> String {
    let Some(dns) = dns else {
        return node_resolv_conf
            .lines()
            .filter(|l| {
                let server = l.strip_prefix("nameserver").map(str::trim);
                !server.is_some_and(|s| s.starts_with("127.") || s == "::1")
            })
            .map(|l| format!("{l}\n"))
            .collect();
    };
    let mut out = String::new();
    for server in &dns.servers {
        out.push_str(&format!("nameserver {server}\n"));
    }
    if !dns.search.is_empty() {
        out.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    if !dns.options.is_empty() {
        out.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    out
}

/// Writes a pod's `hosts` and `resolv.conf` into `dir` (in place, so containers that
/// already mount them see the same files).
pub fn write_pod_files(
    dir: &Path,
    hostname: &str,
    ip: Ipv4Addr,
    dns: Option<&DnsSettings>,
    aliases: &[HostAlias],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let node = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    std::fs::write(dir.join("hosts"), hosts_file(hostname, ip, aliases))?;
    std::fs::write(dir.join("resolv.conf"), resolv_conf(dns, &node))
}

/// Whether a pod's files are (still) there.
pub fn pod_files_exist(dir: &Path) -> bool {
    dir.join("hosts").exists() && dir.join("resolv.conf").exists()
}

/// The mounts of a pod's files, for every container of the pod.
pub fn pod_file_mounts(dir: &Path) -> Vec<MountSpec> {
    ["hosts", "resolv.conf"]
        .into_iter()
        .map(|name| MountSpec {
            source: MountSource::Bind(dir.join(name)),
            target: format!("/etc/{name}"),
            read_only: false,
        })
        .collect()
}

/// Removes a pod's files once its containers are gone; missing files are not an error.
pub fn remove_pod_files(dir: &Path) {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot remove a pod's hosts and resolv.conf");
        }
        _ => {}
    }
}

/// What went wrong plugging a sandbox in.
#[derive(Debug, thiserror::Error)]
#[error("cannot plug the pod sandbox into the pod network: `{command}` failed: {message}")]
pub struct PlugError {
    command: String,
    message: String,
}

/// Plugs the network namespace of process `pid` (the sandbox's) into the bridge.
pub async fn plug(pid: u32, at: &Attachment) -> Result<(), PlugError> {
    let gateway = at.cidr.gateway();
    let host = format!(
        "link add {veth} type veth peer name eth0 netns {pid}\n\
         link set {veth} master {bridge} up\n\
         link set {veth} type bridge_slave hairpin on\n",
        veth = at.host_interface,
        bridge = at.bridge,
    );
    batch(&["ip", "-batch", "-"], &host).await?;
    let pod = format!(
        "addr add {ip}/{prefix} dev eth0\nlink set eth0 up\nroute add default via {gateway}\n",
        ip = at.ip,
        prefix = at.cidr.prefix,
    );
    let target = pid.to_string();
    batch(&["nsenter", "-t", &target, "-n", "ip", "-batch", "-"], &pod).await
}

/// Runs `argv` with `script` on its standard input.
async fn batch(argv: &[&str], script: &str) -> Result<(), PlugError> {
    let command = argv.join(" ");
    let fail = |message: String| PlugError {
        command: command.clone(),
        message,
    };
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("{e} (are iproute2 and nsenter installed?)")))?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(script.as_bytes())
        .await
        .map_err(|e| fail(e.to_string()))?;
    drop(stdin);
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(cidr: &str) -> PodAddresses {
        PodAddresses::new(Cidr::parse(cidr).unwrap())
    }

    #[test]
    fn a_pod_keeps_its_address_and_the_bridge_address_is_never_handed_out() {
        let p = pool("10.244.1.0/24");
        let a = p.assign("a").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 244, 1, 2));
        assert_eq!(p.assign("a").unwrap(), a);
        assert_eq!(p.assign("b").unwrap(), Ipv4Addr::new(10, 244, 1, 3));
    }

    #[test]
    fn freed_addresses_are_reused_last() {
        let p = pool("10.244.1.0/24");
        let a = p.assign("a").unwrap();
        p.release("a");
        let b = p.assign("b").unwrap();
        assert_ne!(a, b, "a freed address is not handed out again at once");
    }

    #[test]
    fn claimed_addresses_are_skipped_and_a_full_pool_says_so() {
        // A /29 leaves .2 to .6 for pods: .0 is the network, .1 the bridge, .7 broadcast.
        let p = pool("10.9.0.0/29");
        p.claim("old", Ipv4Addr::new(10, 9, 0, 2));
        let mut got = BTreeSet::new();
        for pod in ["a", "b", "c", "d"] {
            got.insert(p.assign(pod).unwrap());
        }
        assert!(!got.contains(&Ipv4Addr::new(10, 9, 0, 2)), "{got:?}");
        assert!(!got.contains(&Ipv4Addr::new(10, 9, 0, 1)), "{got:?}");
        assert!(!got.contains(&Ipv4Addr::new(10, 9, 0, 7)), "{got:?}");
        let err = p.assign("e").unwrap_err().to_string();
        assert!(
            err.contains("10.9.0.0/29") && err.contains("larger podCIDR"),
            "{err}"
        );
        p.release("old");
        assert_eq!(p.assign("e").unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }

    #[test]
    fn pod_files_name_the_pod_and_its_resolvers() {
        let hosts = hosts_file("web-0", Ipv4Addr::new(10, 244, 1, 7), &[]);
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"), "{hosts}");
        assert!(hosts.ends_with("10.244.1.7\tweb-0\n"), "{hosts}");
        let aliases = [
            HostAlias {
                ip: "192.0.2.10".into(),
                hostnames: vec!["db.local".into(), "cache.local".into()],
            },
            HostAlias {
                ip: "192.0.2.11".into(),
                hostnames: Vec::new(),
            },
        ];
        let hosts = hosts_file("web-0", Ipv4Addr::new(10, 244, 1, 7), &aliases);
        assert!(
            hosts.ends_with(
                "10.244.1.7\tweb-0\n\n# Entries added by HostAliases.\n192.0.2.10\tdb.local\tcache.local\n"
            ),
            "{hosts}"
        );

        let dns = DnsSettings {
            servers: vec!["10.244.1.1".into()],
            search: vec!["shop.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into()],
        };
        assert_eq!(
            resolv_conf(Some(&dns), "nameserver 1.1.1.1\n"),
            "nameserver 10.244.1.1\nsearch shop.svc.cluster.local svc.cluster.local\noptions ndots:5\n"
        );
        let node = "# local\nnameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.com\n";
        assert_eq!(
            resolv_conf(None, node),
            "# local\nnameserver 192.0.2.53\nsearch example.com\n",
            "the node's loopback resolver is out of the pod's reach"
        );
    }

    #[test]
    fn pod_files_are_written_mounted_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let dir = pod_files_dir(base.path(), "u-1");
        write_pod_files(&dir, "web", Ipv4Addr::new(10, 0, 0, 9), None, &[]).unwrap();
        assert!(pod_files_exist(&dir));
        let mounts = pod_file_mounts(&dir);
        assert_eq!(mounts[0].target, "/etc/hosts");
        assert_eq!(mounts[1].source, MountSource::Bind(dir.join("resolv.conf")));
        remove_pod_files(&dir);
        assert!(!dir.exists());
        remove_pod_files(&dir);
    }

    #[test]
    fn host_interface_names_fit_the_kernel_limit_and_differ_per_attempt() {
        let a = host_interface("0b1e6c1a-5d2f-4c11-9a57-3d9c1c0e5e21", 0);
        let b = host_interface("0b1e6c1a-5d2f-4c11-9a57-3d9c1c0e5e21", 1);
        assert!(a.len() <= 15 && a.starts_with("bp"), "{a}");
        assert_ne!(a, b);
    }
}
