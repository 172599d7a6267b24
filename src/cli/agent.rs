//! `berth agent`: flags, their checks, logging and the Tokio runtime around
//! [`crate::daemons::agent::daemon`].

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::EXIT_ERROR;
use super::server::{LogFormat, init_logging};
use crate::client::ClientOptions;
use crate::daemons::agent::daemon::{self, AgentOptions};
use crate::daemons::agent::node::Reserved;
use crate::daemons::agent::pod::backoff::BackoffConfig;
use crate::daemons::agent::pod::podspec::AgentPolicy;
use crate::daemons::agent::worker::sync::SyncTiming;

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    client: ClientOptions,
    /// This node's name (default: the host name)
    #[arg(long)]
    node_name: Option<String>,
    /// The address pods and the server reach this node on (default: the one routing to --server)
    #[arg(long)]
    node_ip: Option<IpAddr>,
    /// Pods this node accepts (its `pods` capacity)
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Resources kept for the system, not offered to pods, e.g. `cpu=500m,memory=1Gi`
    #[arg(long, value_name = "cpu=Q,memory=Q", value_parser = Reserved::parse, default_value = "")]
    system_reserved: Reserved,
    /// Seconds between renewals of the node's Lease
    #[arg(long, default_value = "10", value_parser = seconds)]
    lease_interval: Duration,
    /// Seconds between Node status heartbeats
    #[arg(long, default_value = "10", value_parser = seconds)]
    node_status_interval: Duration,
    /// Seconds between full listings of this node's containers (drift detection)
    #[arg(long, default_value = "2", value_parser = seconds)]
    relist_interval: Duration,
    /// Seconds Docker may be unreachable before the node turns NotReady
    #[arg(long, default_value = "30", value_parser = seconds)]
    docker_unhealthy_after: Duration,
    /// Seconds before the first restart of a crashed container, or the next try of a
    /// container that could not start, such as a failed pull (doubling each time)
    #[arg(long, default_value = "10", value_parser = seconds)]
    restart_backoff_initial: Duration,
    /// The longest restart back-off, in seconds
    #[arg(long, default_value = "300", value_parser = seconds)]
    restart_backoff_max: Duration,
    /// Allow containers with securityContext.privileged: true
    #[arg(long)]
    allow_privileged: bool,
    /// A host directory hostPath volumes may use (repeatable); none are allowed by default
    #[arg(long = "allow-host-path", value_name = "PREFIX")]
    allow_host_paths: Vec<PathBuf>,
    /// Where to serve /metrics (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_listen: SocketAddr,
    /// Where to serve pod logs and exec to the API server over HTTPS (port 0 picks a free port)
    #[arg(long, default_value = "0.0.0.0:10250")]
    listen: SocketAddr,
    /// An extra label KEY=VALUE on every container and volume the agent creates (repeatable)
    #[arg(long = "container-label", value_name = "KEY=VALUE", value_parser = key_value)]
    container_labels: Vec<(String, String)>,
    /// Log format
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// This node's pod network, e.g. 10.244.1.0/24 (default: the Node's spec.podCIDR)
    #[arg(long, value_name = "CIDR")]
    pod_cidr: Option<String>,
}

fn seconds(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(v > 0.0 && v < 1e9) {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .unwrap_or_else(|_| "localhost".into())
}

/// Turns the flags into options, or one line saying what is wrong.
fn options(args: AgentArgs) -> Result<AgentOptions, String> {
    if args.client.server.is_none() && args.client.kubeconfig.is_none() {
        return Err(
            "berth agent needs --server URL and --token TOKEN (the server's agent join token)"
                .into(),
        );
    }
    if let Some(p) = args.allow_host_paths.iter().find(|p| !p.is_absolute()) {
        return Err(format!(
            "--allow-host-path {}: must be an absolute path",
            p.display()
        ));
    }
    if args.restart_backoff_max < args.restart_backoff_initial {
        return Err(
            "--restart-backoff-max must not be shorter than --restart-backoff-initial".into(),
        );
    }
    let pod_cidr = args
        .pod_cidr
        .as_deref()
        .map(crate::daemons::agent::net::podnet::Cidr::parse)
        .transpose()
        .map_err(|e| format!("--pod-cidr {e}"))?;
    let node_name = args.node_name.unwrap_or_else(hostname);
    if node_name.is_empty()
        || node_name.len() > 253
        || !node_name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        return Err(format!(
            "--node-name {node_name:?}: must be a DNS subdomain (lower-case letters, digits, '-' and '.')"
        ));
    }
    Ok(AgentOptions {
        client: args.client,
        node_name,
        node_ip: args.node_ip,
        max_pods: args.max_pods,
        reserved: args.system_reserved,
        lease_interval: args.lease_interval,
        node_status_interval: args.node_status_interval,
        timing: SyncTiming {
            relist: args.relist_interval,
            unhealthy_after: args.docker_unhealthy_after,
        },
        backoff: BackoffConfig {
            initial: args.restart_backoff_initial,
            max: args.restart_backoff_max,
            ..BackoffConfig::default()
        },
        policy: AgentPolicy {
            allow_privileged: args.allow_privileged,
            host_path_prefixes: args.allow_host_paths,
            pod_network: None,
        },
        pod_cidr,
        extra_labels: args
            .container_labels
            .into_iter()
            .collect::<BTreeMap<_, _>>(),
        metrics_listen: args.metrics_listen,
        listen: args.listen,
    })
}

pub fn run(args: AgentArgs) -> u8 {
    let log_format = args.log_format;
    let options = match options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_ERROR;
        }
    };
    init_logging(log_format);
    // One thread: the agent mostly waits on Docker and the API server (a 50-pod start costs it
    // well under a CPU second), and each extra thread adds a stack and its own allocator heap.
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    let shutdown = crate::daemons::server::shutdown_signal();
    match runtime.block_on(daemon::run(options, shutdown)) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {:#}", anyhow::Error::from(e));
            EXIT_ERROR
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: AgentArgs,
    }

    fn parse(args: &[&str]) -> Result<AgentOptions, String> {
        let mut argv = vec!["berth-agent"];
        argv.extend_from_slice(args);
        let w = Wrapper::try_parse_from(argv).map_err(|e| e.to_string())?;
        options(w.args)
    }

    #[test]
    fn flags_become_options() {
        let o = parse(&[
            "--server",
            "https://10.0.0.1:6443",
            "--token",
            "t",
            "--node-name",
            "n1",
            "--relist-interval",
            "0.5",
            "--allow-host-path",
            "/srv/data",
            "--container-label",
            "team=a",
        ])
        .unwrap();
        assert_eq!(o.node_name, "n1");
        assert_eq!(o.timing.relist, Duration::from_millis(500));
        assert_eq!(o.backoff.initial, Duration::from_secs(10));
        assert_eq!(o.policy.host_path_prefixes, [PathBuf::from("/srv/data")]);
        assert_eq!(o.extra_labels["team"], "a");
    }

    #[test]
    fn bad_flags_are_one_clear_line() {
        let no_server = parse(&["--node-name", "n1"]).unwrap_err();
        assert!(no_server.contains("--server URL"), "{no_server}");
        let bad_name = parse(&["--server", "https://x:1", "--node-name", "Node_1"]).unwrap_err();
        assert!(bad_name.contains("DNS subdomain"), "{bad_name}");
        let relative = parse(&[
            "--server",
            "https://x:1",
            "--node-name",
            "n",
            "--allow-host-path",
            "data",
        ])
        .unwrap_err();
        assert!(relative.contains("absolute"), "{relative}");
        let cidr = parse(&["--server", "https://x:1", "--pod-cidr", "10.244.1.7/24"]).unwrap_err();
        assert!(
            cidr.contains("--pod-cidr") && cidr.contains("host bits"),
            "{cidr}"
        );
        let zero = parse(&["--server", "https://x:1", "--relist-interval", "0"]).unwrap_err();
        assert!(zero.contains("positive"), "{zero}");
    }
}
