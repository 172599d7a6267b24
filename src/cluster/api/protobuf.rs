//! Just enough of the Kubernetes protobuf encoding to accept what kubectl's typed clients
//! send as `application/vnd.kubernetes.protobuf` (`kubectl create configmap|secret|namespace`):
//! the `k8s\0` envelope, `runtime.Unknown`, ObjectMeta's user-set fields, and the bodies of
//! ConfigMap, Secret and Namespace, and the DeleteOptions `kubectl drain` sends. Other kinds
//! get 415, and clients use JSON for them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Map, Value, json};

use super::status::ApiError;

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// Fields of one message: (field number, wire value).
enum Wire<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn bad() -> ApiError {
    ApiError::BadRequest("the protobuf body is malformed".into())
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, ApiError> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or_else(bad)?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err(bad())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ApiError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let tag = varint(buf, &mut pos)?;
        let (field, wire) = (tag >> 3, tag & 7);
        match wire {
            0 => out.push((field, Wire::Varint(varint(buf, &mut pos)?))),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|_| bad())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or_else(bad)?;
                out.push((field, Wire::Bytes(&buf[pos..end])));
                pos = end;
            }
            1 => pos += 8,
            5 => pos += 4,
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, ApiError> {
    String::from_utf8(b.to_vec()).map_err(|_| bad())
}

/// A `map<string, string>` (or bytes, base64-encoded) entry.
fn entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), ApiError> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (f, w) in fields(b)? {
        if let Wire::Bytes(x) = w {
            match f {
                1 => key = string(x)?,
                2 if bytes_value => value = json!(B64.encode(x)),
                2 => value = json!(string(x)?),
                _ => {}
            }
        }
    }
    Ok((key, value))
}

fn insert_entry(
    m: &mut Map<String, Value>,
    field: &str,
    b: &[u8],
    bytes_value: bool,
) -> Result<(), ApiError> {
    let (k, v) = entry(b, bytes_value)?;
    m.entry(field)
        .or_insert_with(|| json!({}))
        .as_object_mut()
        .expect("map field")
        .insert(k, v);
    Ok(())
}

fn object_meta(b: &[u8]) -> Result<Value, ApiError> {
    let mut m = Map::new();
    for (f, w) in fields(b)? {
        let Wire::Bytes(x) = w else { continue };
        match f {
            1 => {
                m.insert("name".into(), json!(string(x)?));
            }
            2 => {
                m.insert("generateName".into(), json!(string(x)?));
            }
            3 => {
                m.insert("namespace".into(), json!(string(x)?));
            }
            11 => insert_entry(&mut m, "labels", x, false)?,
            12 => insert_entry(&mut m, "annotations", x, false)?,
            14 => {
                m.entry("finalizers")
                    .or_insert_with(|| json!([]))
                    .as_array_mut()
                    .expect("list")
                    .push(json!(string(x)?));
            }
            _ => {}
        }
    }
    Ok(Value::Object(m))
}

/// Decodes a protobuf request body into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    let unsupported = || ApiError::UnsupportedMediaType {
        accepted: "application/json, application/yaml".into(),
    };
    let inner = body.strip_prefix(b"k8s\0").ok_or_else(bad)?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (f, w) in fields(inner)? {
        match (f, w) {
            (1, Wire::Bytes(tm)) => {
                for (g, v) in fields(tm)? {
                    match (g, v) {
                        (1, Wire::Bytes(s)) => api_version = string(s)?,
                        (2, Wire::Bytes(s)) => kind = string(s)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut o = Map::new();
    o.insert("apiVersion".into(), json!(api_version));
    o.insert("kind".into(), json!(kind));
    if kind == "DeleteOptions" {
        return delete_options(raw, o);
    }
    let (data_is_bytes, string_data_field, type_field, immutable_field) = match kind.as_str() {
        "ConfigMap" => (false, None, None, Some(4)),
        "Secret" => (true, Some(4), Some(3), Some(5)),
        "Namespace" => (false, None, None, None),
        _ => return Err(unsupported()),
    };
    for (f, w) in fields(raw)? {
        match (f, w) {
            (1, Wire::Bytes(x)) => {
                o.insert("metadata".into(), object_meta(x)?);
            }
            (2, Wire::Bytes(x)) if kind != "Namespace" => {
                insert_entry(&mut o, "data", x, data_is_bytes)?
            }
            (3, Wire::Bytes(x)) if kind == "ConfigMap" => {
                insert_entry(&mut o, "binaryData", x, true)?
            }
            (f, Wire::Bytes(x)) if Some(f) == type_field => {
                o.insert("type".into(), json!(string(x)?));
            }
            (f, Wire::Bytes(x)) if Some(f) == string_data_field => {
                insert_entry(&mut o, "stringData", x, false)?
            }
            (f, Wire::Varint(v)) if Some(f) == immutable_field => {
                o.insert("immutable".into(), json!(v != 0));
            }
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

/// `metav1.DeleteOptions`: grace period, preconditions, orphanDependents, propagation, dryRun.
fn delete_options(raw: &[u8], mut o: Map<String, Value>) -> Result<Value, ApiError> {
    for (f, w) in fields(raw)? {
        match (f, w) {
            (1, Wire::Varint(v)) => {
                o.insert("gracePeriodSeconds".into(), json!(v as i64));
            }
            (2, Wire::Bytes(x)) => {
                let mut pre = Map::new();
                for (g, v) in fields(x)? {
                    match (g, v) {
                        (1, Wire::Bytes(u)) => pre.insert("uid".into(), json!(string(u)?)),
                        (2, Wire::Bytes(r)) => {
                            pre.insert("resourceVersion".into(), json!(string(r)?))
                        }
                        _ => None,
                    };
                }
                o.insert("preconditions".into(), Value::Object(pre));
            }
            (3, Wire::Varint(v)) => {
                o.insert("orphanDependents".into(), json!(v != 0));
            }
            (4, Wire::Bytes(x)) => {
                o.insert("propagationPolicy".into(), json!(string(x)?));
            }
            (5, Wire::Bytes(x)) => o
                .entry("dryRun")
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .expect("list")
                .push(json!(string(x)?)),
            _ => {}
        }
    }
    Ok(Value::Object(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u64, bytes: &[u8]) -> Vec<u8> {
        let mut v = vec![((n << 3) | 2) as u8, bytes.len() as u8];
        v.extend_from_slice(bytes);
        v
    }

    #[test]
    fn a_config_map_as_kubectl_create_sends_it_decodes() {
        let meta = field(1, b"demo");
        let entry = [field(1, b"a"), field(2, b"b")].concat();
        let raw = [field(1, &meta), field(2, &entry)].concat();
        let type_meta = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [b"k8s\0".to_vec(), field(1, &type_meta), field(2, &raw)].concat();
        let v = decode(&body).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "demo"}, "data": {"a": "b"}})
        );
    }
}
