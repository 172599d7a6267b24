//! `GET /exec/{namespace}/{pod}/{container}?command=…`: runs a command in a container over
//! Kubernetes' WebSocket channel protocol (`v5.channel.k8s.io`, or `v4` without the close
//! signal), the protocol kubectl 1.30+ and kube-rs speak. The API server forwards the
//! upgraded connection unchanged, so this is where the protocol lives.
//!
//! Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the
//! final `Status`, 4 terminal resize (`{"Width":…,"Height":…}`), 255 close (v5: `[255, 0]`
//! closes stdin).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::select::{self, ContainerRef};
use crate::cluster::api::status::ApiError;
use crate::daemons::agent::runtime::streams::{
    ExecOptions, ExecSession, OutputChunk, StreamingRuntime,
};

/// The subprotocols served, preferred first.
pub const PROTOCOLS: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// The exec request's query, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecQuery {
    pub options: ExecOptions,
    pub pod_uid: Option<String>,
}

fn flag(name: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "" | "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "query parameter {name}={value:?} is not a boolean (use true or false)"
        ))),
    }
}

/// Parses `command` (repeated, one per argument), `stdin`, `stdout`, `stderr`, `tty` and
/// `podUID`.
pub fn parse_query(query: Option<&str>) -> Result<ExecQuery, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("malformed query string: {e}")))?;
    let mut options = ExecOptions {
        command: Vec::new(),
        stdin: false,
        stdout: false,
        stderr: false,
        tty: false,
    };
    let mut pod_uid = None;
    for (name, value) in &pairs {
        match name.as_str() {
            "command" => options.command.push(value.clone()),
            "stdin" => options.stdin = flag(name, value)?,
            "stdout" => options.stdout = flag(name, value)?,
            "stderr" => options.stderr = flag(name, value)?,
            "tty" => options.tty = flag(name, value)?,
            "podUID" if !value.is_empty() => pod_uid = Some(value.clone()),
            _ => {}
        }
    }
    if options.command.is_empty() {
        return Err(ApiError::BadRequest(
            "you must specify at least one command for the container".into(),
        ));
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::BadRequest(
            "you must specify at least one of stdin, stdout, stderr".into(),
        ));
    }
    Ok(ExecQuery { options, pod_uid })
}

/// The first protocol the client offers that is served.
pub fn choose_protocol(headers: &HeaderMap) -> Option<&'static str> {
    let offered: Vec<String> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .collect();
    offered
        .iter()
        .find_map(|o| PROTOCOLS.iter().copied().find(|p| p == o))
}

/// The `Status` sent on channel 3 when the command ends, as the kubelet writes it.
pub fn exit_status(command: &[String], exit_code: i64) -> Value {
    if exit_code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {command:?}, exit code {exit_code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": exit_code.to_string()}]}
    })
}

fn failure_status(message: String) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// Serves one exec request: checks it, starts the command, answers `101 Switching
/// Protocols`, and pumps the channels in a task of its own until the command exits or the
/// endpoint closes.
pub async fn handle<R: StreamingRuntime>(
    runtime: Arc<R>,
    mut closing: tokio::sync::watch::Receiver<bool>,
    namespace: String,
    pod: String,
    container: String,
    mut request: Request,
) -> Result<Response, ApiError> {
    let q = parse_query(request.uri().query())?;
    let headers = request.headers();
    let is_websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let key = headers.get(header::SEC_WEBSOCKET_KEY).cloned();
    let (Some(key), true) = (key, is_websocket) else {
        return Err(ApiError::BadRequest(
            "exec needs a WebSocket upgrade with the v5.channel.k8s.io or v4.channel.k8s.io \
             protocol (SPDY is not supported)"
                .into(),
        ));
    };
    let Some(protocol) = choose_protocol(headers) else {
        return Err(ApiError::BadRequest(format!(
            "none of the offered WebSocket protocols is served; berth serves {}",
            PROTOCOLS.join(", ")
        )));
    };
    let on_upgrade = request
        .extensions_mut()
        .remove::<hyper::upgrade::OnUpgrade>()
        .ok_or_else(|| ApiError::BadRequest("this connection cannot be upgraded".into()))?;

    let target = ContainerRef {
        namespace,
        pod,
        container,
        pod_uid: q.pod_uid.clone(),
    };
    let found = runtime
        .list_containers(&target.label_filter())
        .await
        .map_err(|e| ApiError::Internal(format!("listing containers: {e}")))?;
    let chosen =
        select::for_exec(&target, &found).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let session = runtime
        .exec_start(&chosen.id, &q.options)
        .await
        .map_err(|e| ApiError::Internal(format!("starting the command: {e}")))?;

    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let command = q.options.command.clone();
    let v5 = protocol == PROTOCOLS[0];
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                tokio::select! {
                    () = pump(runtime, ws, session, command, v5) => {}
                    _ = closing.wait_for(|closed| *closed) => {}
                }
            }
            Err(e) => tracing::debug!(error = %e, "exec: the upgrade did not complete"),
        }
    });
    let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
    let h = response.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    Ok(response)
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut frame = Vec::with_capacity(data.len() + 1);
    frame.push(channel);
    frame.extend_from_slice(data);
    Message::binary(frame)
}

/// Moves bytes between the WebSocket and the command until the command's output ends, then
/// sends its exit status and closes.
async fn pump<R, S>(
    runtime: Arc<R>,
    ws: WebSocketStream<S>,
    session: ExecSession,
    command: Vec<String>,
    v5: bool,
) where
    R: StreamingRuntime,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ExecSession {
        exec_id,
        mut output,
        mut input,
    } = session;
    let (mut sink, mut source) = ws.split();

    // Input: stdin, resize and close messages from the caller.
    let resizer = runtime.clone();
    let resize_id = exec_id.clone();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = source.next().await {
            let data = match message {
                Message::Binary(data) => data,
                Message::Close(_) => break,
                _ => continue,
            };
            match data.first() {
                Some(&STDIN)
                    if input.write_all(&data[1..]).await.is_err()
                        || input.flush().await.is_err() =>
                {
                    break;
                }
                Some(&RESIZE) => {
                    let size: Value = serde_json::from_slice(&data[1..]).unwrap_or(Value::Null);
                    let dim = |k: &str| size[k].as_u64().and_then(|n| u16::try_from(n).ok());
                    if let (Some(w), Some(h)) = (dim("Width"), dim("Height")) {
                        // Resizing before the terminal exists fails harmlessly.
                        let _ = resizer.exec_resize(&resize_id, w, h).await;
                    }
                }
                Some(&CLOSE) if v5 && data.get(1) == Some(&STDIN) => {
                    let _ = input.shutdown().await;
                }
                _ => {}
            }
        }
        let _ = input.shutdown().await;
    });

    // Output: until the command exits.
    let mut failure = None;
    while let Some(chunk) = output.next().await {
        let message = match chunk {
            Ok(OutputChunk::Stdout(b)) => framed(STDOUT, &b),
            Ok(OutputChunk::Stderr(b)) => framed(STDERR, &b),
            Err(e) => {
                failure = Some(e.to_string());
                break;
            }
        };
        if sink.send(message).await.is_err() {
            // The caller went away; the command keeps its own fate, as with kubectl.
            reader.abort();
            return;
        }
    }
    reader.abort();
    let status = match failure {
        Some(message) => failure_status(message),
        None => match exit_code(runtime.as_ref(), &exec_id).await {
            Some(code) => exit_status(&command, code),
            None => failure_status("the command's exit code is unknown".into()),
        },
    };
    let _ = sink
        .send(framed(
            STATUS,
            &serde_json::to_vec(&status).unwrap_or_default(),
        ))
        .await;
    // A normal closure: kubectl treats any other close code as an error.
    let normal = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    let _ = sink.send(Message::Close(Some(normal))).await;
    let _ = sink.close().await;
}

/// The exit code once the engine has recorded it (the output can end a moment before).
async fn exit_code<R: StreamingRuntime>(runtime: &R, exec_id: &str) -> Option<i64> {
    for _ in 0..50 {
        match runtime.exec_exit_code(exec_id).await {
            Ok(Some(code)) => return Some(code),
            Ok(None) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(_) => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_exec_parameters_parse() {
        let q = parse_query(Some(
            "command=sh&command=-c&command=echo+a%26b&container=app&stdin=true&stdout=true&tty=false",
        ))
        .unwrap();
        assert_eq!(q.options.command, vec!["sh", "-c", "echo a&b"]);
        assert!(q.options.stdin && q.options.stdout && !q.options.stderr && !q.options.tty);
        assert!(parse_query(Some("stdout=true")).is_err());
        assert!(parse_query(Some("command=ls")).is_err());
    }

    #[test]
    fn the_preferred_offered_protocol_wins() {
        let mut h = HeaderMap::new();
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("v4.channel.k8s.io, v5.channel.k8s.io"),
        );
        assert_eq!(choose_protocol(&h), Some("v4.channel.k8s.io"));
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("channel.k8s.io"),
        );
        assert_eq!(choose_protocol(&h), None);
    }

    #[test]
    fn a_non_zero_exit_carries_the_code_as_kubectl_reads_it() {
        let s = exit_status(&["false".into()], 3);
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(s["details"]["causes"][0]["message"], "3");
        assert_eq!(exit_status(&[], 0)["status"], "Success");
    }
}
