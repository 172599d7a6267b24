//! The keys each built-in Secret type requires, as the Kubernetes API server checks them, and
//! a little more: `kubernetes.io/tls` values must be PEM (a certificate and a private key),
//! `.dockerconfigjson` and `.dockercfg` must be JSON objects. Values are read from `data`
//! (base64) or `stringData` (plain). No value is ever quoted in a message.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value;

use super::report::{FieldPath, ObjectReport};

/// A key's value, decoded: from `stringData` as it is, from `data` out of base64. `None`:
/// absent; `Some(Err(()))`: present but not base64 (the schema check reports that).
fn value_of(secret: &Value, key: &str) -> Option<Result<Vec<u8>, ()>> {
    if let Some(s) = secret.pointer("/stringData").and_then(|d| d.get(key)) {
        return Some(s.as_str().map(|s| s.as_bytes().to_vec()).ok_or(()));
    }
    let encoded = secret.pointer("/data").and_then(|d| d.get(key))?;
    Some(encoded.as_str().and_then(|s| B64.decode(s).ok()).ok_or(()))
}

fn pem_blocks(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .filter_map(|l| {
            l.trim()
                .strip_prefix("-----BEGIN ")
                .and_then(|r| r.strip_suffix("-----"))
                .map(str::to_string)
        })
        .collect()
}

fn field(secret: &Value, key: &str) -> FieldPath {
    let in_string_data = secret
        .pointer("/stringData")
        .is_some_and(|d| d.get(key).is_some());
    FieldPath::parse_keys(&[if in_string_data { "stringData" } else { "data" }, key])
}

/// Checks the keys `secret`'s `type` requires.
pub fn check(report: &mut ObjectReport<'_>, secret: &Value) {
    let kind = secret
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("Opaque");
    let data = FieldPath::parse_keys(&["data"]);
    let require = |report: &mut ObjectReport<'_>, key: &str| -> Option<Vec<u8>> {
        match value_of(secret, key) {
            None => {
                report.error(
                    "required",
                    &data.child(key),
                    format!("a Secret of type {kind} must have the key {key:?}"),
                    Some(format!("add {key} under data (base64) or stringData")),
                );
                None
            }
            Some(Err(())) => None,
            Some(Ok(bytes)) => Some(bytes),
        }
    };
    match kind {
        "kubernetes.io/tls" => {
            let cert = require(report, "tls.crt");
            let key = require(report, "tls.key");
            if let Some(cert) = cert
                && !pem_blocks(&cert).iter().any(|b| b == "CERTIFICATE")
            {
                report.error(
                    "value",
                    &field(secret, "tls.crt"),
                    "tls.crt is not a PEM certificate (no -----BEGIN CERTIFICATE----- block)"
                        .into(),
                    None,
                );
            }
            if let Some(key) = key
                && !pem_blocks(&key).iter().any(|b| b.ends_with("PRIVATE KEY"))
            {
                report.error(
                    "value",
                    &field(secret, "tls.key"),
                    "tls.key is not a PEM private key (no -----BEGIN ... PRIVATE KEY----- block)"
                        .into(),
                    None,
                );
            }
        }
        "kubernetes.io/dockerconfigjson" | "kubernetes.io/dockercfg" => {
            let key = if kind == "kubernetes.io/dockercfg" {
                ".dockercfg"
            } else {
                ".dockerconfigjson"
            };
            if let Some(bytes) = require(report, key)
                && !serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v.is_object())
            {
                report.error(
                    "value",
                    &field(secret, key),
                    format!("{key} is not a JSON object"),
                    Some("it is what `docker login` writes to ~/.docker/config.json".into()),
                );
            }
        }
        "kubernetes.io/basic-auth"
            if value_of(secret, "username").is_none() && value_of(secret, "password").is_none() =>
        {
            report.error(
                "required",
                &data,
                "a Secret of type kubernetes.io/basic-auth must have the key \"username\" or \"password\"".into(),
                None,
            );
        }
        "kubernetes.io/ssh-auth" => {
            require(report, "ssh-privatekey");
        }
        "kubernetes.io/service-account-token" => {
            let named = secret
                .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty());
            if !named {
                report.error(
                    "required",
                    &FieldPath::parse_keys(&["metadata", "annotations"]),
                    "a Secret of type kubernetes.io/service-account-token must have the annotation kubernetes.io/service-account.name".into(),
                    None,
                );
            }
        }
        _ => {}
    }
}
