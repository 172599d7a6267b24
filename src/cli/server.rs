//! `berth server`: flags, logging setup and the Tokio runtime around
//! [`crate::daemons::server`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::ops::RangeInclusive;

use clap::{Args, ValueEnum};

use crate::cluster::api::allocate::{Ipv4Cidr, Network, parse_port_range};

use super::EXIT_ERROR;

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServerArgs {
    /// Where the store, certificates, tokens, encryption keys and kubeconfig live
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "/var/lib/berth")]
    data_dir: PathBuf,
    /// Address to serve the API on (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Serve plain HTTP instead of TLS; only allowed on a loopback address
    #[arg(long)]
    insecure_http: bool,
    /// Rotate the Secret encryption key, re-encrypt every Secret with it, and exit
    #[arg(long)]
    rotate_encryption_key: bool,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Seconds between watch BOOKMARK events for clients that allow them
    #[arg(long, default_value_t = 30, hide = true)]
    bookmark_interval_seconds: u64,
    /// Seconds without a Lease renewal after which a node is unreachable and tainted
    #[arg(long, default_value_t = 10)]
    node_grace_seconds: u64,
    /// Seconds pods without their own toleration stay on an unreachable node before eviction
    #[arg(long, default_value_t = 10)]
    default_toleration_seconds: u64,
    /// Share of nodes unreachable at once above which no node is tainted or evicted (the
    /// master, not every node, is then the likely fault)
    #[arg(long, default_value_t = 0.55, value_parser = parse_share)]
    unhealthy_zone_threshold: f64,
    /// Pod addresses of the cluster; each node gets one block of it as spec.podCIDR
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: Ipv4Cidr,
    /// Prefix length of each node's pod CIDR block
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Virtual IPs of Services; the first address is the `kubernetes` Service's
    #[arg(long, default_value = "10.96.0.0/16")]
    service_cidr: Ipv4Cidr,
    /// Ports NodePort and LoadBalancer Services get on every node
    #[arg(long, default_value = "30000-32767", value_parser = parse_port_range)]
    service_node_port_range: RangeInclusive<u16>,
    /// Keep the manifests of this git repository (URL or local path) applied: creates or
    /// updates the GitSource default/default
    #[arg(long, value_name = "URL_OR_PATH")]
    git: Option<String>,
    /// Branch, tag or commit for --git (default: the repository's HEAD)
    #[arg(long, value_name = "REF", requires = "git")]
    git_ref: Option<String>,
    /// Folder of the repository holding the manifests, for --git (default: the root)
    #[arg(long, value_name = "DIR", requires = "git")]
    git_path: Option<String>,
    #[command(flatten)]
    etcd: super::etcd::EtcdFlags,
    /// The etcd key prefix every key of this cluster lives under
    #[arg(
        long,
        value_name = "PREFIX",
        default_value = "/berth",
        requires = "etcd_endpoints"
    )]
    etcd_prefix: String,
    /// The cluster's admin token: a master joining a cluster on etcd reads the cluster's CA,
    /// tokens and keys with it (the first master's DATA_DIR/tokens/admin)
    #[arg(
        long,
        env = "BERTH_TOKEN",
        hide_env_values = true,
        requires = "etcd_endpoints"
    )]
    token: Option<String>,
    /// Seconds a follower waits after the leader's last renewal before taking the controllers'
    /// Lease (several masters on etcd)
    #[arg(long, default_value_t = 15)]
    leader_elect_lease_duration: u64,
    /// Seconds the leader keeps acting without renewing its Lease; must be below the lease
    /// duration
    #[arg(long, default_value_t = 10)]
    leader_elect_renew_deadline: u64,
    /// Seconds between the leader's renewals and the followers' tries
    #[arg(long, default_value_t = 2)]
    leader_elect_retry_period: u64,
    /// How long Events are kept after they last happened (e.g. 1h, 30m, 90s)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    event_ttl: Duration,
    /// Another name or IP address for the serving certificate (repeatable); the certificate
    /// is re-issued, under the same CA, when the names change
    #[arg(long = "tls-san", value_name = "NAME_OR_IP")]
    tls_sans: Vec<String>,
    /// Concurrent client connections in total; a tenth is kept for authenticated clients
    /// (default: the open-file limit less 512, at most 20000)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(2..))]
    max_connections: Option<u64>,
    /// Concurrent connections from one client address that have not authenticated
    /// (default: 1000, at most half of --max-connections)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_address: Option<u64>,
    /// Seconds a client has to finish its TLS handshake
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    tls_handshake_timeout_seconds: u64,
    /// Seconds a connection without an open request stays open
    #[arg(long, default_value_t = 90, value_parser = clap::value_parser!(u64).range(1..))]
    idle_connection_timeout_seconds: u64,
    /// Concurrent read-only requests (watches, logs and exec not counted); a quarter is
    /// kept for agents; more get 429 with Retry-After
    #[arg(long, default_value_t = 400, value_parser = clap::value_parser!(u64).range(2..))]
    max_requests_inflight: u64,
    /// Concurrent mutating requests; a quarter is kept for agents; more get 429
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(2..))]
    max_mutating_requests_inflight: u64,
    /// Open watches per identity (the admin; all agents together); more get 429
    #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..))]
    max_watches_per_identity: u64,
}

/// A duration as `90s`, `30m`, `1h` or `1h30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration like 90s, 30m, 1h or 1h30m");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total += n * match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// A share between 0 and 1.
fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "{text:?} is not a share between 0 and 1 (e.g. 0.55)"
        )),
    }
}

/// A local `--git` path made absolute, so the server follows it whatever its directory.
pub(super) fn git_url(arg: &str) -> String {
    if arg.contains("://") || arg.contains('@') {
        return arg.to_string();
    }
    let path = std::path::Path::new(arg);
    path.canonicalize()
        .or_else(|_| std::env::current_dir().map(|d| d.join(path)))
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

pub(super) fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

pub fn run(args: ServerArgs) -> u8 {
    use crate::daemons::server::{self, ServerOptions};
    let options = ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        insecure_http: args.insecure_http,
        rotate_encryption_key: args.rotate_encryption_key,
        bookmark_interval: Duration::from_secs(args.bookmark_interval_seconds.max(1)),
        control: crate::cluster::controllers::ControlOptions {
            node_grace: Duration::from_secs(args.node_grace_seconds.max(1)),
            default_toleration: Duration::from_secs(args.default_toleration_seconds),
            unhealthy_threshold: args.unhealthy_zone_threshold,
        },
        network: Network {
            cluster_cidr: args.cluster_cidr,
            node_mask: args.node_cidr_mask_size,
            service_cidr: args.service_cidr,
            node_ports: args.service_node_port_range,
        },
        git: args.git.as_deref().map(|url| server::GitShortcut {
            url: git_url(url),
            git_ref: args.git_ref.clone(),
            path: args.git_path.clone(),
        }),
        etcd: args.etcd.config(&args.etcd_prefix),
        token: args.token.clone(),
        election: crate::cluster::controllers::leader::ElectionOptions {
            lease_duration: Duration::from_secs(args.leader_elect_lease_duration),
            renew_deadline: Duration::from_secs(args.leader_elect_renew_deadline),
            retry_period: Duration::from_secs(args.leader_elect_retry_period),
        },
        limits: server::Limits {
            max_connections: args.max_connections.map(|n| n as usize),
            max_connections_per_address: args.max_connections_per_address.map(|n| n as usize),
            handshake_timeout: Some(Duration::from_secs(args.tls_handshake_timeout_seconds)),
            idle_timeout: Some(Duration::from_secs(args.idle_connection_timeout_seconds)),
            inflight: crate::cluster::api::inflight::InflightLimits {
                read_only: args.max_requests_inflight as usize,
                mutating: args.max_mutating_requests_inflight as usize,
            },
            max_watches_per_identity: Some(args.max_watches_per_identity as usize),
        },
        tls_sans: args.tls_sans,
        event_ttl: args.event_ttl,
    };
    if let Err(e) = server::check(&options) {
        eprintln!("error: {e}");
        return EXIT_ERROR;
    }
    init_logging(args.log_format);
    let Some(runtime) = super::multi_thread_runtime(None) else {
        return EXIT_ERROR;
    };
    match runtime.block_on(server::run(options, server::shutdown_signal())) {
        Ok(()) => 0,
        Err(e) => {
            let chain = anyhow::Error::from(e);
            eprintln!("error: {chain:#}");
            EXIT_ERROR
        }
    }
}
