//! Kubernetes' protobuf media type (`application/vnd.kubernetes.protobuf`) for every built-in
//! kind: request bodies decoded to the JSON the store keeps, and responses encoded from it
//! when a client asks for protobuf first in `Accept` (typed client-go clients, kubectl's
//! `create` generators), including watch streams in their length-prefixed framing.
//!
//! How: one descriptor-driven transcoder, not per-kind code. `proto/kubernetes.binpb` is a
//! descriptor set of the API's own `.proto` files (made by `proto/generate.py`), read with
//! `prost-reflect` into messages whose fields are walked generically; that gives every kind's
//! field numbers and types from the one authoritative source, with no generated Rust and no
//! `protoc` at build time. Kubernetes' JSON differs from the `.proto` where Go's struct tags
//! say so (zeros `omitempty` leaves out, embedded structs JSON inlines, JSON names unlike the
//! proto names); `proto/go-fields.txt`, made from those tags, carries that. A handful of
//! types have JSON of their own (`Time`, `MicroTime`, `Duration`, `Quantity`, `IntOrString`,
//! `RawExtension`, `FieldsV1`, apiextensions' `JSON` and `JSONSchemaPropsOr…`, `Verbs`,
//! `ExtraValue`) and are converted by [`transcode`]. The prost types of `k8s-pb` were the
//! other candidate: they hold the same numbers but no JSON, so serving ~100 kinds through them
//! would have needed a converter per type; the tests use them to cross-check ours instead.
//!
//! JSON stays the internal form: the store keeps JSON and handlers answer JSON; protobuf is
//! produced at the edge by [`negotiate`], so a JSON client pays nothing. Kinds without a
//! message (berth's own `GitSource`, Tables) are answered in JSON, as Kubernetes answers for
//! custom resources.

mod transcode;
mod wellknown;

#[cfg(test)]
mod tests;

use std::sync::LazyLock;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use prost_reflect::{DynamicMessage, Value as Proto};
use serde_json::{Map, Value};

use self::transcode::{TranscodeError, Transcoder};
use super::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const WATCH_CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf;stream=watch";
/// What starts every enveloped object.
const MAGIC: &[u8] = b"k8s\0";

/// Loaded on the first protobuf request: a server only JSON clients talk to never holds it.
static TRANSCODER: LazyLock<Transcoder> = LazyLock::new(Transcoder::load);

/// Decodes a protobuf request body into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    decode_envelope(&TRANSCODER, body).map_err(|e| match e {
        TranscodeError::UnknownKind { .. } => ApiError::UnsupportedMediaType {
            accepted: "application/json, application/yaml".into(),
        },
        other => ApiError::BadRequest(other.to_string()),
    })
}

/// `k8s\0` + `runtime.Unknown{typeMeta, raw}` → the object's JSON, `apiVersion` and `kind` first.
fn decode_envelope(t: &Transcoder, body: &[u8]) -> Result<Value, TranscodeError> {
    let inner = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| malformed("the body does not start with k8s\\0"))?;
    let unknown = DynamicMessage::decode(t.runtime_message("Unknown"), inner)?;
    let text = |m: &DynamicMessage, n: u32| match m.get_field_by_number(n).as_deref() {
        Some(Proto::String(s)) => s.clone(),
        _ => String::new(),
    };
    let type_meta = match unknown.get_field_by_number(1).as_deref() {
        Some(Proto::Message(m)) => m.clone(),
        _ => DynamicMessage::new(t.runtime_message("TypeMeta")),
    };
    let (api_version, kind) = (text(&type_meta, 1), text(&type_meta, 2));
    let raw = match unknown.get_field_by_number(2).as_deref() {
        Some(Proto::Bytes(b)) => b.clone(),
        _ => Bytes::new(),
    };
    let desc = t
        .message(&api_version, &kind)
        .ok_or_else(|| TranscodeError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let message = DynamicMessage::decode(desc, raw)?;
    let mut object = Map::new();
    object.insert("apiVersion".into(), Value::String(api_version));
    object.insert("kind".into(), Value::String(kind));
    if let Some(Value::Object(fields)) = t.to_json(&message) {
        object.extend(fields);
    }
    Ok(Value::Object(object))
}

fn malformed(why: &str) -> TranscodeError {
    TranscodeError::Field {
        message: "runtime.Unknown".into(),
        field: String::new(),
        reason: why.into(),
    }
}

/// The object's JSON (with `apiVersion` and `kind`) → `k8s\0` + `runtime.Unknown`.
pub fn encode(object: &Value) -> Result<Vec<u8>, TranscodeError> {
    encode_with(&TRANSCODER, object)
}

fn encode_with(t: &Transcoder, object: &Value) -> Result<Vec<u8>, TranscodeError> {
    let field = |k: &str| object.get(k).and_then(Value::as_str).unwrap_or("");
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let desc = t
        .message(api_version, kind)
        .ok_or_else(|| TranscodeError::UnknownKind {
            api_version: api_version.into(),
            kind: kind.into(),
        })?;
    let raw = t.message_from_json(&desc, object)?.encode_to_vec();
    let mut type_meta = DynamicMessage::new(t.runtime_message("TypeMeta"));
    type_meta.set_field_by_number(1, Proto::String(api_version.into()));
    type_meta.set_field_by_number(2, Proto::String(kind.into()));
    let mut unknown = DynamicMessage::new(t.runtime_message("Unknown"));
    unknown.set_field_by_number(1, Proto::Message(type_meta));
    unknown.set_field_by_number(2, Proto::Bytes(raw.into()));
    unknown.set_field_by_number(3, Proto::String(String::new()));
    unknown.set_field_by_number(4, Proto::String(String::new()));
    let mut out = MAGIC.to_vec();
    unknown.encode(&mut out).expect("a Vec grows as needed");
    Ok(out)
}

/// One line of a JSON watch (`{"type":…,"object":…}`) → one frame of a protobuf watch: a
/// 4-byte big-endian length, then `metav1.WatchEvent` whose object is an enveloped object.
fn watch_frame(t: &Transcoder, line: &[u8]) -> Result<Vec<u8>, TranscodeError> {
    let event: Value = serde_json::from_slice(line).map_err(|_| malformed("a watch line"))?;
    let object = encode_with(t, &event["object"])?;
    let desc = t
        .message("meta.k8s.io/v1", "WatchEvent")
        .expect("WatchEvent is in the descriptor set");
    let mut raw_extension = DynamicMessage::new(t.runtime_message("RawExtension"));
    raw_extension.set_field_by_number(1, Proto::Bytes(object.into()));
    let mut watch_event = DynamicMessage::new(desc);
    let kind = event["type"].as_str().unwrap_or("").to_string();
    watch_event.set_field_by_number(1, Proto::String(kind));
    watch_event.set_field_by_number(2, Proto::Message(raw_extension));
    let body = watch_event.encode_to_vec();
    let mut frame = u32::try_from(body.len())
        .unwrap_or(u32::MAX)
        .to_be_bytes()
        .to_vec();
    frame.extend(body);
    Ok(frame)
}

/// Whether the client prefers protobuf: the first type in `Accept` is it, not as a Table.
pub fn wants_protobuf(headers: &HeaderMap) -> bool {
    let Some(first) = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.split(',').next())
    else {
        return false;
    };
    let mut parts = first.split(';').map(str::trim);
    parts.next() == Some(CONTENT_TYPE) && parts.all(|p| !p.starts_with("as="))
}

/// Re-encodes a successful JSON response in protobuf (for a client that [`wants_protobuf`]).
/// A body with no protobuf message (a Table, a GitSource) stays JSON, as Kubernetes answers
/// for kinds it has no protobuf for; errors stay JSON `Status`es, which clients read either way.
pub async fn negotiate(response: Response, watch: bool) -> Response {
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if watch {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(WATCH_CONTENT_TYPE),
        );
        return Response::from_parts(parts, Body::from_stream(watch_frames(body)));
    }
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read a response to encode it in protobuf");
            return Response::from_parts(parts, Body::empty());
        }
    };
    let encoded = serde_json::from_slice::<Value>(&bytes)
        .map_err(|_| malformed("a JSON response"))
        .and_then(|v| encode(&v));
    match encoded {
        Ok(pb) => {
            parts
                .headers
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(pb))
        }
        Err(TranscodeError::UnknownKind { .. }) => Response::from_parts(parts, Body::from(bytes)),
        Err(e) => {
            tracing::warn!(error = %e, "a response could not be encoded in protobuf; sent as JSON");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// A JSON watch body, one event a line, as protobuf frames.
fn watch_frames(body: Body) -> impl futures::Stream<Item = Result<Bytes, axum::Error>> {
    let mut pending: Vec<u8> = Vec::new();
    body.into_data_stream().filter_map(move |chunk| {
        let out = chunk.map(|chunk| {
            pending.extend_from_slice(&chunk);
            let mut frames = Vec::new();
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                match watch_frame(&TRANSCODER, &line[..end]) {
                    Ok(frame) => frames.extend(frame),
                    Err(e) => tracing::warn!(error = %e, "a watch event has no protobuf form"),
                }
            }
            Bytes::from(frames)
        });
        std::future::ready(match out {
            Ok(b) if b.is_empty() => None,
            other => Some(other),
        })
    })
}
