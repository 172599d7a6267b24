//! Streaming logs and interactive exec: what the log and exec endpoint needs from a container
//! engine beyond [`ContainerRuntime`]'s collect-everything `logs` and `exec`, with its Docker
//! implementation.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::LogsOptionsBuilder;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::AsyncWrite;

use super::docker::engine;
use crate::daemons::agent::DockerRuntime;
use crate::daemons::agent::runtime::{ContainerRuntime, RuntimeError};

/// What a log request asks for, in the engine's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep the stream open and send new lines as they are written.
    pub follow: bool,
    /// Only the last N lines (all when `None`).
    pub tail: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp, as Kubernetes does.
    pub timestamps: bool,
    /// Only lines written in the last N seconds.
    pub since_seconds: Option<u64>,
}

/// What an exec request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOptions {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Attach the caller's input.
    pub stdin: bool,
    /// Send the command's stdout.
    pub stdout: bool,
    /// Send the command's stderr (ignored with a TTY, which merges both).
    pub stderr: bool,
    /// Allocate a pseudo-terminal.
    pub tty: bool,
}

/// Which of the command's outputs a chunk came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputChunk {
    /// stdout, or the terminal with a TTY.
    Stdout(Bytes),
    /// stderr.
    Stderr(Bytes),
}

/// A byte stream of a container's log, stdout and stderr interleaved as written.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<Bytes, RuntimeError>> + Send>>;

/// The output of a running exec, until the command exits.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<OutputChunk, RuntimeError>> + Send>>;

/// A started exec: its id (for resize and the exit code), its output and its input.
pub struct ExecSession {
    /// The engine's exec id.
    pub exec_id: String,
    /// stdout and stderr until the command exits.
    pub output: OutputStream,
    /// The command's stdin; shutting it down closes the command's stdin.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

/// Streaming access to logs and exec, on top of the runtime the agent already uses.
pub trait StreamingRuntime: ContainerRuntime + 'static {
    /// The container's log from the options' starting point; with `follow`, until it stops.
    fn log_stream(&self, id: &str, options: &LogOptions) -> LogStream;

    /// Starts `options.command` in a running container with the requested streams attached.
    fn exec_start(
        &self,
        id: &str,
        options: &ExecOptions,
    ) -> impl Future<Output = Result<ExecSession, RuntimeError>> + Send;

    /// Resizes an exec's terminal; only meaningful with a TTY.
    fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> impl Future<Output = Result<(), RuntimeError>> + Send;

    /// The exit code of a finished exec (`None` while it runs).
    fn exec_exit_code(
        &self,
        exec_id: &str,
    ) -> impl Future<Output = Result<Option<i64>, RuntimeError>> + Send;
}

/// Effectively no timeout: a followed log or a shell lasts as long as the user wants.
const PATIENT_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

fn chunk(output: LogOutput) -> Option<OutputChunk> {
    match output {
        LogOutput::StdOut { message } | LogOutput::Console { message } => {
            Some(OutputChunk::Stdout(message))
        }
        LogOutput::StdErr { message } => Some(OutputChunk::Stderr(message)),
        LogOutput::StdIn { .. } => None,
    }
}

impl StreamingRuntime for DockerRuntime {
    fn log_stream(&self, id: &str, options: &LogOptions) -> LogStream {
        let tail = options.tail.map_or("all".to_string(), |n| n.to_string());
        let mut builder = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(options.follow)
            .timestamps(options.timestamps)
            .tail(&tail);
        if let Some(seconds) = options.since_seconds {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            let since = now.saturating_sub(seconds);
            builder = builder.since(i32::try_from(since).unwrap_or(i32::MAX));
        }
        let docker = self.client().clone().with_timeout(PATIENT_TIMEOUT);
        let target = id.to_string();
        let stream = docker
            .logs(id, Some(builder.build()))
            .filter_map(move |item| {
                let out = match item {
                    Ok(output) => chunk(output).map(|c| match c {
                        OutputChunk::Stdout(b) | OutputChunk::Stderr(b) => Ok(b),
                    }),
                    Err(e) => Some(Err(engine("read logs of", &target)(e))),
                };
                std::future::ready(out)
            });
        Box::pin(stream)
    }

    async fn exec_start(
        &self,
        id: &str,
        options: &ExecOptions,
    ) -> Result<ExecSession, RuntimeError> {
        let docker = self.client().clone().with_timeout(PATIENT_TIMEOUT);
        let create = CreateExecOptions {
            attach_stdin: Some(options.stdin),
            attach_stdout: Some(options.stdout),
            attach_stderr: Some(options.stderr && !options.tty),
            tty: Some(options.tty),
            cmd: Some(options.command.clone()),
            ..Default::default()
        };
        let created = docker
            .create_exec(id, create)
            .await
            .map_err(engine("exec in container", id))?;
        let start = StartExecOptions {
            detach: false,
            tty: options.tty,
            output_capacity: None,
        };
        match docker
            .start_exec(&created.id, Some(start))
            .await
            .map_err(engine("exec in container", id))?
        {
            StartExecResults::Attached { output, input } => {
                let target = id.to_string();
                let output = output.filter_map(move |item| {
                    std::future::ready(match item {
                        Ok(o) => chunk(o).map(Ok),
                        Err(e) => Some(Err(engine("exec in container", &target)(e))),
                    })
                });
                Ok(ExecSession {
                    exec_id: created.id,
                    output: Box::pin(output),
                    input,
                })
            }
            StartExecResults::Detached => Err(RuntimeError::NotFound {
                id: format!("{id} (the engine detached the exec)"),
            }),
        }
    }

    async fn exec_resize(
        &self,
        exec_id: &str,
        width: u16,
        height: u16,
    ) -> Result<(), RuntimeError> {
        self.client()
            .resize_exec(exec_id, ResizeExecOptions { height, width })
            .await
            .map_err(engine("resize exec", exec_id))
    }

    async fn exec_exit_code(&self, exec_id: &str) -> Result<Option<i64>, RuntimeError> {
        let inspect = self
            .client()
            .inspect_exec(exec_id)
            .await
            .map_err(engine("inspect exec", exec_id))?;
        if inspect.running == Some(true) {
            return Ok(None);
        }
        Ok(inspect.exit_code)
    }
}
