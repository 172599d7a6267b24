//! `berth exec POD -- CMD…`: runs a command in a pod's container through the API server's
//! `pods/exec` subresource (WebSocket channel protocol) and exits with the command's code.

use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Status;
use kube::api::{Api, AttachParams, TerminalSize};
use std::io::{Read, Write};
use tokio::signal::unix::SignalKind;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::EXIT_ERROR;
use super::logs::describe;
use super::terminal;
use crate::client::ClientOptions;

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The pod's name
    pod: String,
    /// The container (needed when the pod has several)
    #[arg(short = 'c', long, value_name = "NAME")]
    container: Option<String>,
    /// Pass this terminal's stdin to the command
    #[arg(short = 'i', long)]
    stdin: bool,
    /// Allocate a terminal for the command (with -i and a terminal on stdin; its stderr then
    /// arrives on stdout)
    #[arg(short = 't', long)]
    tty: bool,
    /// The pod's namespace (default: the kubeconfig context's, else `default`)
    #[arg(short = 'n', long, value_name = "NAMESPACE")]
    namespace: Option<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true, value_name = "COMMAND")]
    command: Vec<String>,
    #[command(flatten)]
    client: ClientOptions,
}

/// The process exit code a final exec `Status` means, as kubectl reads it.
pub fn exit_code(status: Option<Status>) -> Result<u8, String> {
    let Some(status) = status else {
        return Err("the connection closed before the command's exit status arrived".into());
    };
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode") {
        let code = status
            .details
            .and_then(|d| d.causes)
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.reason.as_deref() == Some("ExitCode"))
            .and_then(|c| c.message?.parse::<i64>().ok());
        if let Some(code) = code {
            // Exit codes are one byte; a code that wraps to 0 still reports failure.
            return Ok(u8::try_from(code.rem_euclid(256)).unwrap_or(1).max(1));
        }
    }
    Err(status
        .message
        .unwrap_or_else(|| "the command failed without a message".into()))
}

/// Copies one of the command's outputs to ours as it arrives.
async fn copy_out<R, W>(remote: Option<R>, mut local: W)
where
    R: tokio::io::AsyncRead + Unpin,
    W: Write,
{
    let Some(mut remote) = remote else { return };
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(n @ 1..) = remote.read(&mut buffer).await {
        if local
            .write_all(&buffer[..n])
            .and_then(|()| local.flush())
            .is_err()
        {
            return;
        }
    }
}

async fn execute(args: ExecArgs) -> Result<u8, String> {
    let connection = args.client.connect().await.map_err(|e| {
        let chain = anyhow::Error::from(e);
        format!("{chain:#}")
    })?;
    let namespace = args
        .namespace
        .unwrap_or_else(|| connection.default_namespace.clone());
    let pods: Api<Pod> = Api::namespaced(connection.client, &namespace);
    let tty = args.tty && args.stdin && terminal::stdin_is_terminal();
    if args.tty && !tty {
        eprintln!("Unable to use a TTY - input is not a terminal or -i is missing");
    }
    let params = AttachParams {
        container: args.container,
        stdin: args.stdin,
        stdout: true,
        stderr: !tty,
        tty,
        ..AttachParams::default()
    };
    let mut attached = pods
        .exec(&args.pod, args.command, &params)
        .await
        .map_err(|e| describe(&e))?;
    let status = attached.take_status();
    // Restored when this function returns, on every path.
    let _raw = if tty {
        terminal::RawTerminal::enter()
    } else {
        None
    };
    if let (true, Some(mut resize)) = (tty, attached.terminal_size()) {
        tokio::spawn(async move {
            use futures::SinkExt;
            let Ok(mut changed) = tokio::signal::unix::signal(SignalKind::window_change()) else {
                return;
            };
            loop {
                if let Some((width, height)) = terminal::size() {
                    let size = TerminalSize { width, height };
                    if resize.send(size).await.is_err() {
                        return;
                    }
                }
                if changed.recv().await.is_none() {
                    return;
                }
            }
        });
    }
    let stdin = attached.stdin();
    let stdout = attached.stdout();
    let stderr = attached.stderr();
    if let Some(mut remote) = stdin {
        // tokio's stdin needs a feature the rest of berth does not; a thread does the same.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            let mut local = std::io::stdin().lock();
            let mut buffer = vec![0u8; 16 * 1024];
            while let Ok(n @ 1..) = local.read(&mut buffer) {
                if tx.blocking_send(buffer[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                if remote.write_all(&chunk).await.is_err() {
                    return;
                }
            }
            // End of our stdin closes the command's.
            let _ = remote.shutdown().await;
        });
    }
    let out = copy_out(stdout, std::io::stdout());
    let err = copy_out(stderr, std::io::stderr());
    tokio::join!(out, err);
    let status = match status {
        Some(s) => s.await,
        None => None,
    };
    exit_code(status)
}

pub fn run(args: ExecArgs) -> u8 {
    let Some(runtime) = super::single_thread_runtime() else {
        return EXIT_ERROR;
    };
    let result = runtime.block_on(execute(args));
    // A read of our stdin may still be blocked; do not wait for it.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(v: serde_json::Value) -> Option<Status> {
        Some(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn the_exit_status_becomes_the_exit_code() {
        assert_eq!(
            exit_code(status(serde_json::json!({"status": "Success"}))),
            Ok(0)
        );
        let failed = serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "42"}]}});
        assert_eq!(exit_code(status(failed)), Ok(42));
        let wraps = serde_json::json!({"status": "Failure", "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "256"}]}});
        assert_eq!(exit_code(status(wraps)), Ok(1));
        let other = serde_json::json!({"status": "Failure", "message": "boom"});
        assert_eq!(exit_code(status(other)), Err("boom".into()));
        assert!(exit_code(None).is_err());
    }
}
