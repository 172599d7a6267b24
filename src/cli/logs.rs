//! `berth logs POD`: a container's log through the API server's `pods/log` subresource,
//! with kubectl's flags (`-c`, `-f`, `--tail`, `--previous`, `--timestamps`, `-n`).

use std::io::Write;

use clap::Args;
use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams};

use super::EXIT_ERROR;
use crate::client::ClientOptions;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The pod's name
    pod: String,
    /// The container (needed when the pod has several)
    #[arg(short = 'c', long, value_name = "NAME")]
    container: Option<String>,
    /// Keep streaming new lines until interrupted
    #[arg(short = 'f', long)]
    follow: bool,
    /// Only the last N lines
    #[arg(long, value_name = "N")]
    tail: Option<i64>,
    /// The previous (terminated) instance of the container
    #[arg(short = 'p', long)]
    previous: bool,
    /// Prefix each line with its RFC 3339 timestamp
    #[arg(long)]
    timestamps: bool,
    /// Only lines newer than this many seconds
    #[arg(long, value_name = "SECONDS")]
    since_seconds: Option<i64>,
    /// The pod's namespace (default: the kubeconfig context's, else `default`)
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// The message of an API error (the server's `Status` message), or the error itself.
pub(super) fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

async fn stream(args: LogsArgs) -> Result<(), String> {
    if args.tail.is_some_and(|n| n < 0) {
        return Err("--tail must be 0 or more".into());
    }
    let connection = args.client.connect().await.map_err(|e| {
        let chain = anyhow::Error::from(e);
        format!("{chain:#}")
    })?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| connection.default_namespace.clone());
    let pods: Api<Pod> = Api::namespaced(connection.client, &namespace);
    let params = LogParams {
        container: args.container,
        follow: args.follow,
        previous: args.previous,
        tail_lines: args.tail,
        timestamps: args.timestamps,
        since_seconds: args.since_seconds,
        ..LogParams::default()
    };
    let mut reader = pods
        .log_stream(&args.pod, &params)
        .await
        .map_err(|e| describe(&e))?;
    let mut buffer = vec![0u8; 16 * 1024];
    let mut out = std::io::stdout().lock();
    loop {
        let n = reader
            .read(&mut buffer)
            .await
            .map_err(|e| format!("reading the log: {e}"))?;
        if n == 0 {
            return Ok(());
        }
        // A closed stdout (`| head`) ends the command quietly.
        if out
            .write_all(&buffer[..n])
            .and_then(|()| out.flush())
            .is_err()
        {
            return Ok(());
        }
    }
}

pub fn run(args: LogsArgs) -> u8 {
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    match runtime.block_on(stream(args)) {
        Ok(()) => 0,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}
