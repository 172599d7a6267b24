//! JSON Schemas for every kind, generated from the Rust types with schemars.
//!
//! The generated schemas are committed under `schemas/` and embedded in the binary; `berth
//! schema generate` rewrites them and a test fails when the committed files drift from the
//! types. The raw schemars output is adjusted to say what the Kubernetes API server enforces:
//! unknown fields are refused (`additionalProperties: false`, relaxed by `--no-strict`),
//! int-or-string and quantity fields accept exactly those, and `apiVersion`/`kind` are fixed.

use std::path::Path;
use std::sync::OnceLock;

use include_dir::{Dir, include_dir};
use serde_json::{Map, Value, json};

use super::kinds::{KINDS, KindInfo};

static COMMITTED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/schemas");

/// The file under `schemas/` that lists every schema.
pub const INDEX_FILE: &str = "index.json";

/// Generates the schema of one kind, in the form committed under `schemas/`.
pub fn generate(kind: &KindInfo) -> Value {
    let mut schema = serde_json::to_value((kind.schema)()).expect("schemas serialize");
    tighten(&mut schema, None);
    if let Some(obj) = schema.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String(format!("https://berth.dev/schemas/{}", kind.schema_file())),
        );
        obj.insert(
            "x-berth-kind".into(),
            json!({"apiVersion": kind.api_version, "kind": kind.kind, "namespaced": kind.namespaced}),
        );
        let props = obj
            .entry("properties")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(props) = props.as_object_mut() {
            props.insert(
                "apiVersion".into(),
                json!({"type": "string", "const": kind.api_version}),
            );
            props.insert("kind".into(), json!({"type": "string", "const": kind.kind}));
        }
        let required = obj
            .entry("required")
            .or_insert_with(|| Value::Array(vec![]));
        if let Some(required) = required.as_array_mut() {
            for key in ["apiVersion", "kind"] {
                if !required.iter().any(|r| r == key) {
                    required.push(Value::String(key.into()));
                }
            }
        }
    }
    schema
}

/// The index of all schemas: which file holds which kind.
pub fn generate_index() -> Value {
    let kinds: Vec<Value> = KINDS
        .iter()
        .map(|k| {
            json!({
                "apiVersion": k.api_version,
                "kind": k.kind,
                "namespaced": k.namespaced,
                "plural": k.plural,
                "schema": k.schema_file(),
            })
        })
        .collect();
    json!({
        "kubernetesVersion": super::kinds::KUBERNETES_VERSION,
        "generator": "berth schema generate",
        "kinds": kinds,
    })
}

/// Serializes a schema the way it is committed: pretty JSON with a trailing newline.
pub fn to_file_text(schema: &Value) -> String {
    let mut text = serde_json::to_string_pretty(schema).expect("schemas serialize");
    text.push('\n');
    text
}

/// Every file `berth schema generate` writes, as (file name, contents).
pub fn generate_all() -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = KINDS
        .iter()
        .map(|k| (k.schema_file(), to_file_text(&generate(k))))
        .collect();
    files.push((INDEX_FILE.to_string(), to_file_text(&generate_index())));
    files
}

/// Writes every schema into `dir`, removing stale `.json` files. Returns the files written.
pub fn write_all(dir: &Path) -> std::io::Result<Vec<String>> {
    std::fs::create_dir_all(dir)?;
    let files = generate_all();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".json") && !files.iter().any(|(f, _)| *f == name) {
            std::fs::remove_file(&path)?;
        }
    }
    for (name, text) in &files {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(files.into_iter().map(|(n, _)| n).collect())
}

/// The committed schema of a kind, parsed once. `None` if `schemas/` lacks the file, which
/// only a stale checkout can cause (the drift test catches it).
pub fn committed(kind_index: usize) -> Option<&'static Value> {
    static PARSED: OnceLock<Vec<OnceLock<Option<Value>>>> = OnceLock::new();
    let cells = PARSED.get_or_init(|| KINDS.iter().map(|_| OnceLock::new()).collect());
    cells[kind_index]
        .get_or_init(|| {
            let file = COMMITTED.get_file(KINDS[kind_index].schema_file())?;
            serde_json::from_slice(file.contents()).ok()
        })
        .as_ref()
}

/// The committed file text of `name`, for the drift test.
pub fn committed_text(name: &str) -> Option<&'static str> {
    COMMITTED.get_file(name).and_then(|f| f.contents_utf8())
}

/// Adjusts schemars output to what the API server enforces. Walks schema objects only: the
/// keys of a `properties` map are field names and are never treated as keywords.
fn tighten(schema: &mut Value, def_name: Option<&str>) {
    if def_name.is_some_and(|n| n.ends_with("apiextensions.v1.JSON")) {
        // A CRD schema's `default`, `enum` member or `example`: any JSON value, where the
        // Rust type (a wrapper of `serde_json::Value`) makes schemars say "object".
        *schema = json!({});
        return;
    }
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    obj.remove("description");
    obj.remove("default");
    if obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true)) {
        let is_quantity = def_name
            .or_else(|| obj.get("title").and_then(Value::as_str))
            .is_some_and(|t| t.ends_with("resource.Quantity"));
        let string = if is_quantity {
            json!({"type": "string", "format": "quantity"})
        } else {
            json!({"type": "string"})
        };
        let number = if is_quantity {
            json!({"type": "number"})
        } else {
            json!({"type": "integer"})
        };
        obj.insert("anyOf".into(), json!([number, string]));
    }
    let preserve_unknown =
        obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if obj.contains_key("properties")
        && !obj.contains_key("additionalProperties")
        && !preserve_unknown
    {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, value) in obj.iter_mut() {
        match key.as_str() {
            "$defs" | "definitions" => {
                if let Some(map) = value.as_object_mut() {
                    for (name, sub) in map.iter_mut() {
                        tighten(sub, Some(name));
                    }
                }
            }
            "properties" | "patternProperties" => {
                if let Some(map) = value.as_object_mut() {
                    for sub in map.values_mut() {
                        tighten(sub, None);
                    }
                }
            }
            "items"
            | "additionalProperties"
            | "not"
            | "if"
            | "then"
            | "else"
            | "contains"
            | "propertyNames" => tighten(value, None),
            "allOf" | "anyOf" | "oneOf" | "prefixItems" => {
                if let Some(list) = value.as_array_mut() {
                    for sub in list {
                        tighten(sub, None);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_schemas_match_the_types() {
        let mut stale = Vec::new();
        for (name, text) in generate_all() {
            if committed_text(&name) != Some(text.as_str()) {
                stale.push(name);
            }
        }
        assert!(
            stale.is_empty(),
            "schemas/ is out of date for {stale:?}: run `cargo run -- schema generate` and commit"
        );
    }

    #[test]
    fn unknown_fields_are_refused_but_maps_stay_open() {
        let pod = generate(super::super::kinds::find("v1", "Pod").unwrap());
        let meta = &pod["$defs"]["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"];
        assert_eq!(meta["additionalProperties"], Value::Bool(false));
        assert_eq!(
            meta["properties"]["labels"]["additionalProperties"]["type"],
            "string"
        );
    }
}
