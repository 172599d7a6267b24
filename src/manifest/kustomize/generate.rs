//! `configMapGenerator` and `secretGenerator`: ConfigMaps and Secrets from literals, files and
//! env files, and the content-hash suffix of their names, computed as kustomize computes it
//! (so a rendered name is the name `kubectl kustomize` prints).

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::kustomization::{Generator, GeneratorOptions, Loaded};
use super::{Error, Files, join, within};

/// What a generator made, before it joins the resources.
pub struct Generated {
    pub value: Value,
    /// Whether its name gets the content-hash suffix.
    pub hash: bool,
    /// `create`, `merge` or `replace`.
    pub behavior: String,
}

/// kustomize's content hash of a ConfigMap or Secret (10 characters, vowels and ambiguous
/// digits mapped away), computed from its kind, data (and a Secret's type).
pub fn content_hash(object: &Value) -> String {
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
    let field = |k: &str| match object.get(k) {
        Some(v @ Value::Object(_)) => v.clone(),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Null) | None => Value::String(String::new()),
        Some(other) => Value::String(other.to_string()),
    };
    // kustomize looks the name up as one field named `metadata/name`, which no object has:
    // the name it hashes is always empty, so the suffix depends on the content alone.
    let name = Value::String(String::new());
    let mut m = Map::new();
    match kind {
        "ConfigMap" => {
            m.insert("kind".into(), json!("ConfigMap"));
            m.insert("name".into(), name);
            m.insert("data".into(), field("data"));
            if let Some(b @ Value::Object(_)) = object.get("binaryData") {
                m.insert("binaryData".into(), b.clone());
            }
        }
        "Secret" => {
            m.insert("kind".into(), json!("Secret"));
            m.insert("type".into(), field("type"));
            m.insert("name".into(), name);
            m.insert("data".into(), field("data"));
            if let Some(s @ Value::Object(_)) = object.get("stringData") {
                m.insert("stringData".into(), s.clone());
            }
        }
        _ => return encode(&hex::encode(Sha256::digest(go_json(object).as_bytes()))),
    }
    let text = go_json(&Value::Object(m));
    encode(&hex::encode(Sha256::digest(text.as_bytes())))
}

/// JSON as Go's `encoding/json` writes a map: keys sorted, `<`, `>`, `&` and the line
/// separators escaped.
fn go_json(value: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value))
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn encode(hex: &str) -> String {
    hex.chars()
        .take(10)
        .map(|c| match c {
            '0' => 'g',
            '1' => 'h',
            '3' => 'k',
            'a' => 'm',
            'e' => 't',
            c => c,
        })
        .collect()
}

fn remove_quotes(s: &str) -> &str {
    let b = s.as_bytes();
    if b.len() >= 2 && b[0] == b[b.len() - 1] && (b[0] == b'"' || b[0] == b'\'') {
        &s[1..s.len() - 1]
    } else {
        s
    }
}

/// The (key, bytes) pairs of a generator, in order.
fn pairs(
    files: &dyn Files,
    l: &Loaded,
    dir: &str,
    g: &Generator,
    field: &str,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    let mut out = Vec::new();
    let read = |rel: &str| -> Result<Vec<u8>, Error> {
        let path = join(dir, rel);
        if !within(dir, &path) {
            return Err(l.error_at(
                field,
                format!("`{rel}` is outside the kustomization's folder `{dir}`; kustomize refuses files outside it"),
            ));
        }
        match files.read(&path) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(l.error_at(field, format!("`{rel}`: no such file ({path})"))),
            Err(e) => Err(l.error_at(field, format!("cannot read `{path}`: {e}"))),
        }
    };
    let envs = g.envs.iter().chain(g.env.iter());
    for env in envs {
        let bytes = read(env)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| l.error_at(field, format!("env file `{env}` is not UTF-8 text")))?;
        for (i, line) in text.lines().enumerate() {
            let line = if i == 0 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once('=').unwrap_or((line, ""));
            out.push((key.to_string(), value.as_bytes().to_vec()));
        }
    }
    for literal in &g.literals {
        let Some((key, value)) = literal.split_once('=') else {
            return Err(l.error_at(field, format!("literal `{literal}` is not KEY=VALUE")));
        };
        out.push((key.to_string(), remove_quotes(value).as_bytes().to_vec()));
    }
    for file in &g.files {
        let (key, rel) = match file.split_once('=') {
            Some((k, p)) => (k.to_string(), p),
            None => (
                file.rsplit('/').next().unwrap_or(file).to_string(),
                file.as_str(),
            ),
        };
        out.push((key, read(rel)?));
    }
    Ok(out)
}

/// Runs one generator of `field` (`configMapGenerator` or `secretGenerator`).
pub fn generate(
    files: &dyn Files,
    l: &Loaded,
    dir: &str,
    g: &Generator,
    field: &str,
) -> Result<Generated, Error> {
    let secret = field == "secretGenerator";
    let Some(name) = g.name.clone().filter(|n| !n.is_empty()) else {
        return Err(l.error_at(field, format!("a {field} entry has no name")));
    };
    let behavior = g.behavior.clone().unwrap_or_else(|| "create".into());
    if !["create", "merge", "replace"].contains(&behavior.as_str()) {
        return Err(l.error_at(
            field,
            format!("{name}: behavior `{behavior}` is not one of create, merge, replace"),
        ));
    }
    let global = l.k.generator_options.clone().unwrap_or_default();
    let local = g.options.clone().unwrap_or_default();
    let options = GeneratorOptions {
        labels: global.labels.into_iter().chain(local.labels).collect(),
        annotations: global
            .annotations
            .into_iter()
            .chain(local.annotations)
            .collect(),
        disable_name_suffix_hash: local
            .disable_name_suffix_hash
            .or(global.disable_name_suffix_hash),
        immutable: local.immutable.or(global.immutable),
    };
    let mut metadata = Map::new();
    metadata.insert("name".into(), json!(name));
    if let Some(ns) = g.namespace.as_ref().filter(|n| !n.is_empty()) {
        metadata.insert("namespace".into(), json!(ns));
    }
    let to_map = |pairs: &super::kustomization::Pairs| -> Value {
        Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.0.clone())))
                .collect(),
        )
    };
    if !options.labels.is_empty() {
        metadata.insert("labels".into(), to_map(&options.labels));
    }
    if !options.annotations.is_empty() {
        metadata.insert("annotations".into(), to_map(&options.annotations));
    }
    let mut object = Map::new();
    object.insert("apiVersion".into(), json!("v1"));
    object.insert(
        "kind".into(),
        json!(if secret { "Secret" } else { "ConfigMap" }),
    );
    object.insert("metadata".into(), Value::Object(metadata));
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut data = Map::new();
    let mut binary = Map::new();
    for (key, bytes) in pairs(files, l, dir, g, field)? {
        if data.contains_key(&key) || binary.contains_key(&key) {
            return Err(l.error_at(
                field,
                format!("{name}: key `{key}` is given twice; each key of a generated object must be unique"),
            ));
        }
        if secret {
            data.insert(key, Value::String(b64.encode(&bytes)));
        } else {
            match String::from_utf8(bytes) {
                Ok(text) => {
                    data.insert(key, Value::String(text));
                }
                Err(e) => {
                    binary.insert(key, Value::String(b64.encode(e.as_bytes())));
                }
            }
        }
    }
    if secret {
        object.insert(
            "type".into(),
            json!(g.kind.clone().unwrap_or_else(|| "Opaque".into())),
        );
    }
    if !data.is_empty() {
        object.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        object.insert("binaryData".into(), Value::Object(binary));
    }
    if options.immutable == Some(true) {
        object.insert("immutable".into(), json!(true));
    }
    Ok(Generated {
        value: Value::Object(object),
        hash: options.disable_name_suffix_hash != Some(true),
        behavior,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_does_not_change_the_hash() {
        // `kubectl kustomize` names a generated `x` with literal A=1 `x-89g4tffbfk`.
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"A": "1"}});
        assert_eq!(content_hash(&cm), "89g4tffbfk");
    }

    #[test]
    fn hashes_match_kustomize() {
        // The cases of kustomize's own hasher tests.
        let cases = [
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap"}),
                "6ct58987ht",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"one": ""}}),
                "9g67k2htb6",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"two": 2, "one": "", "three": 3}}),
                "7757f9kkct",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "binaryData": {"two": 2, "one": "", "three": 3}}),
                "9th7kc28dg",
            ),
            (
                json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"one": ""}, "binaryData": {"two": ""}}),
                "698h7c7t9m",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Secret", "type": "my-type"}),
                "5gmgkf8578",
            ),
            (
                json!({"apiVersion": "v1", "kind": "Secret", "type": "my-type", "data": {"one": ""}}),
                "74bd68bm66",
            ),
        ];
        for (object, hash) in cases {
            assert_eq!(content_hash(&object), hash, "{object}");
        }
    }
}
