//! OpenAPI documents of the served kinds, for `kubectl explain` and kubectl's validation and
//! strategic merge patches: `/openapi/v2` (Swagger 2.0, every served kind) and `/openapi/v3`
//! (an index) with one OpenAPI 3.0 document per group/version.
//!
//! Schemas come from the same Rust types `berth validate` uses (k8s-openapi's `schemars`
//! impls, via [`crate::manifest::kinds`]), named as Kubernetes names them
//! (`io.k8s.api.apps.v1.Deployment`), each kind's with `x-kubernetes-group-version-kind`.
//! The patch extensions kubectl reads (`x-kubernetes-patch-strategy`, `-patch-merge-key`,
//! `-list-type`, `-list-map-keys`) are not in k8s-openapi's schemas; they come from the Go
//! struct tags through `proto/go-fields.txt`, the table the protobuf transcoder also reads.
//!
//! Documents are built on first request and cached as bytes (the server's idle memory does
//! not hold them); the cache is keyed by what is served, so it follows the resource registry.
//! Custom resources join through [`set_custom_kinds`] (the CustomResourceDefinition
//! controller calls it with each CRD version's `openAPIV3Schema`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use serde_json::{Map, Value, json};

use super::resources::{self, Resource};
use crate::manifest::kinds;

const GO_FIELDS: &str = include_str!("../../../proto/go-fields.txt");

/// A kind served from a CustomResourceDefinition version.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomKind {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
    /// The version's `schema.openAPIV3Schema`.
    pub schema: Value,
}

static CUSTOM: RwLock<Vec<CustomKind>> = RwLock::new(Vec::new());
/// Serialized documents by path (`v2`, `v3`, `v3/apis/apps/v1`), built at the resource
/// registry's generation they are kept with.
static CACHE: LazyLock<Mutex<Documents>> = LazyLock::new(Default::default);

/// The registry generation and the documents built at it.
type Documents = (u64, HashMap<String, Arc<Vec<u8>>>);

/// Replaces the custom kinds the documents describe (all of them, each time CRDs change).
pub fn set_custom_kinds(custom: Vec<CustomKind>) {
    let mut current = CUSTOM.write().unwrap_or_else(|e| e.into_inner());
    if *current != custom {
        *current = custom;
        CACHE.lock().unwrap_or_else(|e| e.into_inner()).1.clear();
    }
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// One kind a document describes.
struct Described {
    group: String,
    version: String,
    kind: String,
    plural: String,
    namespaced: bool,
    definition: String,
}

fn served() -> Vec<Described> {
    let mut out: Vec<Described> = resources::all()
        .iter()
        .map(|r: &&Resource| Described {
            group: r.group.into(),
            version: r.version.into(),
            kind: r.kind.into(),
            plural: r.plural.into(),
            namespaced: r.namespaced,
            definition: String::new(),
        })
        .collect();
    for c in CUSTOM.read().unwrap_or_else(|e| e.into_inner()).iter() {
        out.push(Described {
            group: c.group.clone(),
            version: c.version.clone(),
            kind: c.kind.clone(),
            plural: c.plural.clone(),
            namespaced: c.namespaced,
            definition: String::new(),
        });
    }
    out
}

/// `io.k8s.api.apps.v1.Deployment`; `dev.berth.v1.GitSource` for a group of ours or a CRD's
/// (the group's labels reversed, as Kubernetes names CRD schemas).
fn custom_definition_name(group: &str, version: &str, kind: &str) -> String {
    let reversed: Vec<&str> = group.split('.').rev().collect();
    format!("{}.{version}.{kind}", reversed.join("."))
}

/// The definitions of these kinds and every type they use, with `$ref`s under `prefix`.
fn definitions(kinds: &mut [Described], prefix: &str) -> Map<String, Value> {
    let mut defs = Map::new();
    let custom = CUSTOM.read().unwrap_or_else(|e| e.into_inner()).clone();
    for d in kinds.iter_mut() {
        let api_version = if d.group.is_empty() {
            d.version.clone()
        } else {
            format!("{}/{}", d.group, d.version)
        };
        let (mut root, name) = match kinds::find(&api_version, &d.kind) {
            Some(info) => {
                let mut root = serde_json::to_value((info.schema)()).unwrap_or_default();
                let title = root
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let name = if title.starts_with("io.k8s.") {
                    title
                } else {
                    custom_definition_name(&d.group, &d.version, &d.kind)
                };
                if let Some(Value::Object(more)) =
                    root.as_object_mut().and_then(|o| o.remove("$defs"))
                {
                    for (k, v) in more {
                        defs.entry(k).or_insert(v);
                    }
                }
                (root, name)
            }
            None => match custom
                .iter()
                .find(|c| c.group == d.group && c.version == d.version && c.kind == d.kind)
            {
                Some(c) => (
                    c.schema.clone(),
                    custom_definition_name(&d.group, &d.version, &d.kind),
                ),
                None => continue,
            },
        };
        if let Some(o) = root.as_object_mut() {
            o.remove("$schema");
            o.remove("title");
            o.insert(
                "x-kubernetes-group-version-kind".into(),
                json!([{"group": d.group, "version": d.version, "kind": d.kind}]),
            );
        }
        d.definition = name.clone();
        defs.insert(name, root);
    }
    add_patch_extensions(&mut defs);
    for v in defs.values_mut() {
        rewrite_refs(v, prefix);
    }
    defs
}

/// Points `#/$defs/X` at `prefix` + X; in OpenAPI 3 a `$ref` with siblings (a description)
/// becomes `allOf: [{$ref}]`, as Kubernetes writes it, since 3.0 ignores a `$ref`'s siblings.
fn rewrite_refs(v: &mut Value, prefix: &str) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(r)) = o.get_mut("$ref")
                && let Some(name) = r.strip_prefix("#/$defs/")
            {
                *r = format!("{prefix}{name}");
                if prefix.starts_with("#/components/") && o.len() > 1 {
                    let r = o.remove("$ref").unwrap_or_default();
                    o.insert("allOf".into(), json!([{"$ref": r}]));
                }
            }
            o.values_mut().for_each(|x| rewrite_refs(x, prefix));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| rewrite_refs(x, prefix)),
        _ => {}
    }
}

/// `k8s.io.api.apps.v1.X` → `io.k8s.api.apps.v1.X` (and the two staging repositories).
fn definition_of_message(message: &str) -> String {
    let name = message.strip_prefix("k8s.").unwrap_or(message);
    let name = name
        .replacen("apiextensions_apiserver", "apiextensions-apiserver", 1)
        .replacen("kube_aggregator", "kube-aggregator", 1);
    format!("io.k8s.{}", name.strip_prefix("io.").unwrap_or(&name))
}

/// The patch extensions of one property: its JSON name and the `x-kubernetes-…` keys.
type PropertyExtensions = (String, Map<String, Value>);

/// Patch extensions by definition, then property: what `go-fields.txt` has after `;`.
static PATCH: LazyLock<HashMap<String, Vec<PropertyExtensions>>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    for line in GO_FIELDS.lines().filter(|l| !l.starts_with('#')) {
        let mut words = line.split_whitespace();
        let Some(message) = words.next() else {
            continue;
        };
        let mut fields = Vec::new();
        for word in words.filter(|w| w.contains(';')) {
            let mut name = String::new();
            let mut ext = Map::new();
            for part in word.split(';').skip(1) {
                let Some((k, v)) = part.split_once('=') else {
                    continue;
                };
                match k {
                    "n" => name = v.to_string(),
                    "ps" => {
                        ext.insert("x-kubernetes-patch-strategy".into(), json!(v));
                    }
                    "pk" => {
                        ext.insert("x-kubernetes-patch-merge-key".into(), json!(v));
                    }
                    "lt" => {
                        ext.insert("x-kubernetes-list-type".into(), json!(v));
                    }
                    "lk" => {
                        let keys: Vec<&str> = v.split('|').collect();
                        ext.insert("x-kubernetes-list-map-keys".into(), json!(keys));
                    }
                    _ => {}
                }
            }
            fields.push((name, ext));
        }
        if !fields.is_empty() {
            out.insert(definition_of_message(message), fields);
        }
    }
    out
});

fn add_patch_extensions(defs: &mut Map<String, Value>) {
    for (name, schema) in defs.iter_mut() {
        let Some(fields) = PATCH.get(name) else {
            continue;
        };
        let Some(props) = schema.get_mut("properties").and_then(Value::as_object_mut) else {
            continue;
        };
        for (field, ext) in fields {
            if let Some(Value::Object(p)) = props.get_mut(field) {
                for (k, v) in ext {
                    p.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
}

/// What kubectl learns from the operations: the kind at each path, and that PATCH takes
/// `fieldValidation` (so `--validate=strict` asks the server to validate).
fn paths(kinds: &[Described], ref_prefix: &str, v3: bool) -> Map<String, Value> {
    let mut paths = Map::new();
    for d in kinds.iter().filter(|d| !d.definition.is_empty()) {
        let prefix = format!("/{}", gv_path(&d.group, &d.version));
        let item = if d.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", d.plural)
        } else {
            format!("{prefix}/{}/{{name}}", d.plural)
        };
        let gvk = json!({"group": d.group, "version": d.version, "kind": d.kind});
        let reference = json!({"$ref": format!("{ref_prefix}{}", d.definition)});
        let ok = if v3 {
            json!({"description": "OK", "content": {"application/json": {"schema": reference}}})
        } else {
            json!({"description": "OK", "schema": reference})
        };
        let query = |name: &str, ty: &str| {
            if v3 {
                json!({"name": name, "in": "query", "schema": {"type": ty}})
            } else {
                json!({"name": name, "in": "query", "type": ty})
            }
        };
        let params = json!([
            query("dryRun", "string"),
            query("fieldManager", "string"),
            query("fieldValidation", "string"),
            query("force", "boolean"),
        ]);
        let operation = |verb: &str, action: &str| {
            json!({
                "operationId": format!("{verb}{}", d.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": ok},
            })
        };
        let mut patch = operation("patch", "patch");
        patch["parameters"] = params;
        paths.insert(
            item,
            json!({"get": operation("read", "get"), "patch": patch}),
        );
    }
    paths
}

fn serialize(v: &Value) -> Arc<Vec<u8>> {
    Arc::new(serde_json::to_vec(v).unwrap_or_default())
}

fn cached(key: &str, build: impl FnOnce() -> Option<Value>) -> Option<Arc<Vec<u8>>> {
    let generation = resources::generation();
    {
        let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
        if cache.0 != generation {
            *cache = (generation, HashMap::new());
        }
        if let Some(hit) = cache.1.get(key) {
            return Some(hit.clone());
        }
    }
    let doc = serialize(&build()?);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.0 == generation {
        cache.1.insert(key.to_string(), doc.clone());
    }
    Some(doc)
}

fn info() -> Value {
    json!({"title": "berth", "version": env!("CARGO_PKG_VERSION")})
}

/// `/openapi/v2`: every served kind in one Swagger 2.0 document.
pub fn v2() -> Arc<Vec<u8>> {
    cached("v2", || {
        let mut kinds = served();
        let defs = definitions(&mut kinds, "#/definitions/");
        Some(json!({
            "swagger": "2.0",
            "info": info(),
            "paths": paths(&kinds, "#/definitions/", false),
            "definitions": defs,
        }))
    })
    .expect("the v2 document always builds")
}

/// `/openapi/v3`: where each group/version's document is.
pub fn index() -> Value {
    let mut gvs: Vec<(String, String)> = Vec::new();
    for d in served() {
        let gv = (d.group, d.version);
        if !gvs.contains(&gv) {
            gvs.push(gv);
        }
    }
    // kubectl caches each document under its hash: it changes with what is served.
    let hash = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        env!("CARGO_PKG_VERSION").hash(&mut h);
        for r in resources::all().iter() {
            (r.api_version, r.kind).hash(&mut h);
        }
        for c in CUSTOM.read().unwrap_or_else(|e| e.into_inner()).iter() {
            (&c.group, &c.version, &c.kind, c.schema.to_string()).hash(&mut h);
        }
        format!("{:016X}", h.finish())
    };
    let mut paths = Map::new();
    for (g, v) in gvs {
        let p = gv_path(&g, &v);
        paths.insert(
            p.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
        );
    }
    json!({"paths": paths})
}

/// `/openapi/v3/{api|apis/group}/{version}`.
pub fn document(path: &str) -> Option<Arc<Vec<u8>>> {
    let (group, version) = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["api", v] => (String::new(), v.to_string()),
        ["apis", g, v] => (g.to_string(), v.to_string()),
        _ => return None,
    };
    cached(&format!("v3/{path}"), || {
        let mut kinds: Vec<Described> = served()
            .into_iter()
            .filter(|d| d.group == group && d.version == version)
            .collect();
        if kinds.is_empty() {
            return None;
        }
        let schemas = definitions(&mut kinds, "#/components/schemas/");
        Some(json!({
            "openapi": "3.0.0",
            "info": info(),
            "paths": paths(&kinds, "#/components/schemas/", true),
            "components": {"schemas": schemas},
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> Value {
        serde_json::from_slice(bytes).unwrap()
    }

    #[test]
    fn every_served_kind_has_a_schema_named_as_kubernetes_names_it() {
        let v2 = parse(&v2());
        let defs = v2["definitions"].as_object().unwrap();
        // Resources a concurrent test adds to the registry at runtime have no built-in schema.
        for r in resources::all()
            .iter()
            .filter(|r| kinds::find(r.api_version, r.kind).is_some())
        {
            let found = defs.values().any(|d| {
                d["x-kubernetes-group-version-kind"][0]["kind"] == r.kind
                    && d["x-kubernetes-group-version-kind"][0]["group"] == r.group
            });
            assert!(found, "{} {}", r.api_version, r.kind);
        }
        let deployment = &defs["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deployment["properties"]["spec"]["$ref"],
            "#/definitions/io.k8s.api.apps.v1.DeploymentSpec"
        );
        assert!(defs.contains_key("dev.berth.v1.GitSource"));
        let strategy = &defs["io.k8s.api.apps.v1.DeploymentStrategy"];
        assert!(
            strategy["description"]
                .as_str()
                .unwrap()
                .contains("DeploymentStrategy")
        );
    }

    #[test]
    fn v3_documents_use_components_and_carry_the_patch_extensions() {
        let doc = parse(&document("api/v1").unwrap());
        let schemas = &doc["components"]["schemas"];
        let pod_spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        let containers = &pod_spec["properties"]["containers"];
        assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
        assert_eq!(containers["x-kubernetes-patch-strategy"], "merge");
        assert_eq!(containers["x-kubernetes-list-type"], "map");
        let ports = &schemas["io.k8s.api.core.v1.Container"]["properties"]["ports"];
        assert_eq!(
            ports["x-kubernetes-list-map-keys"],
            json!(["containerPort", "protocol"])
        );
        let meta = &schemas["io.k8s.api.core.v1.Pod"]["properties"]["metadata"];
        assert_eq!(
            meta["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
        );
        assert!(doc["paths"]["/api/v1/namespaces/{namespace}/pods/{name}"]["patch"].is_object());
        assert!(
            document("apis/batch/v1").is_none()
                || resources::all().iter().any(|r| r.group == "batch")
        );
        assert!(index()["paths"]["apis/apps/v1"]["serverRelativeURL"].is_string());
    }

    #[test]
    fn custom_kinds_join_the_documents_and_leave_them() {
        let widget = CustomKind {
            group: "example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            namespaced: true,
            schema: json!({"type": "object", "properties": {"spec": {"type": "object",
                "description": "What the widget should be."}}}),
        };
        set_custom_kinds(vec![widget]);
        let doc = parse(&document("apis/example.com/v1").unwrap());
        let schema = &doc["components"]["schemas"]["com.example.v1.Widget"];
        assert_eq!(
            schema["x-kubernetes-group-version-kind"][0]["kind"],
            "Widget"
        );
        assert!(index()["paths"]["apis/example.com/v1"].is_object());
        set_custom_kinds(Vec::new());
        assert!(document("apis/example.com/v1").is_none());
    }
}
