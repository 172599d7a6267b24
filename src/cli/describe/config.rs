//! The data of ConfigMaps and Secrets on a describe page: ConfigMap values in full, Secret
//! keys with their sizes only.

use base64::Engine;
use serde_json::Value;

use super::doc::Doc;

fn s<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

pub fn config_map(doc: &mut Doc, o: &Value) {
    doc.text(0, "");
    doc.text(0, "Data");
    doc.text(0, "====");
    for (k, v) in o["data"].as_object().into_iter().flatten() {
        doc.text(0, &format!("{k}:"));
        doc.text(0, "----");
        doc.text(0, v.as_str().unwrap_or(""));
        doc.text(0, "");
    }
    doc.text(0, "");
    doc.text(0, "BinaryData");
    doc.text(0, "====");
    for (k, v) in o["binaryData"].as_object().into_iter().flatten() {
        let n = decoded_len(v);
        doc.text(0, &format!("{k}: {n} bytes"));
    }
    doc.text(0, "");
}

fn decoded_len(v: &Value) -> usize {
    let text = v.as_str().unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(|b| b.len())
        .unwrap_or(text.len())
}

/// Keys and sizes only: a Secret's values never reach the terminal.
pub fn secret(doc: &mut Doc, o: &Value) {
    doc.text(0, "");
    doc.field(0, "Type", s(o, "/type").unwrap_or("Opaque"));
    doc.text(0, "");
    doc.text(0, "Data");
    doc.text(0, "====");
    let mut rows: Vec<(String, usize)> = o["data"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.clone(), decoded_len(v)))
        .collect();
    rows.extend(
        o["stringData"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().map_or(0, str::len))),
    );
    for (k, n) in rows {
        doc.field(0, &k, format!("{n} bytes"));
    }
    doc.text(0, "");
}
