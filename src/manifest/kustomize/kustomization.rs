//! The kustomization file: its fields as kustomize v5 reads them. Unknown fields are refused,
//! as kustomize refuses them; fields berth does not implement are refused with a reason.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use super::super::SourceFile;
use super::super::yaml::Node;
use super::Error;

/// A scalar written where kustomize wants a string (`version: 1`): kept as its text.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match Value::deserialize(d)? {
            Value::String(s) => s,
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(serde::de::Error::custom(format!(
                    "expected a string, found {other}"
                )));
            }
        }))
    }
}

pub type Pairs = BTreeMap<String, Text>;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Kustomization {
    /// Read so that it is accepted; any version is taken as v1beta1.
    #[allow(dead_code)]
    pub api_version: Option<String>,
    pub kind: Option<String>,
    /// Read so that it is accepted; kustomize ignores it too.
    #[allow(dead_code)]
    pub metadata: Option<Value>,
    #[serde(default)]
    pub resources: Vec<String>,
    #[serde(default)]
    pub bases: Vec<String>,
    #[serde(default)]
    pub components: Vec<String>,
    pub namespace: Option<String>,
    pub name_prefix: Option<String>,
    pub name_suffix: Option<String>,
    #[serde(default)]
    pub common_labels: Pairs,
    #[serde(default)]
    pub labels: Vec<Label>,
    #[serde(default)]
    pub common_annotations: Pairs,
    #[serde(default)]
    pub images: Vec<Image>,
    #[serde(default)]
    pub replicas: Vec<Replica>,
    #[serde(default)]
    pub patches: Vec<Patch>,
    #[serde(default)]
    pub patches_strategic_merge: Vec<String>,
    #[serde(default)]
    pub patches_json6902: Vec<Patch>,
    #[serde(default)]
    pub config_map_generator: Vec<Generator>,
    #[serde(default)]
    pub secret_generator: Vec<Generator>,
    pub generator_options: Option<GeneratorOptions>,
    #[serde(default)]
    pub replacements: Vec<Replacement>,
    pub sort_options: Option<SortOptions>,
    // Refused with a reason: recognised so the error can say why.
    pub helm_charts: Option<Value>,
    pub helm_globals: Option<Value>,
    pub helm_chart_inflation_generator: Option<Value>,
    pub generators: Option<Value>,
    pub transformers: Option<Value>,
    pub validators: Option<Value>,
    #[serde(default)]
    pub vars: Vec<Var>,
    pub configurations: Option<Value>,
    pub crds: Option<Value>,
    pub openapi: Option<Value>,
    pub build_metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Label {
    #[serde(default)]
    pub pairs: Pairs,
    #[serde(default)]
    pub include_selectors: bool,
    #[serde(default)]
    pub include_templates: bool,
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldSpec {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    pub path: String,
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Image {
    pub name: String,
    #[serde(default)]
    pub new_name: String,
    #[serde(default)]
    pub new_tag: Text,
    #[serde(default)]
    pub digest: String,
    #[serde(default)]
    pub tag_suffix: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replica {
    pub name: String,
    pub count: i64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub label_selector: String,
    #[serde(default)]
    pub annotation_selector: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Patch {
    pub path: Option<String>,
    pub patch: Option<String>,
    pub target: Option<Selector>,
    pub options: Option<BTreeMap<String, bool>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Generator {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub behavior: Option<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub literals: Vec<String>,
    #[serde(default)]
    pub envs: Vec<String>,
    pub env: Option<String>,
    pub options: Option<GeneratorOptions>,
    /// A Secret's type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

/// A `vars` entry (deprecated in kustomize v5, still read): `$(NAME)` in some fields becomes
/// a field of another object.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Var {
    pub name: String,
    pub objref: ObjRef,
    pub fieldref: Option<FieldRef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjRef {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldRef {
    #[serde(default)]
    pub fieldpath: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GeneratorOptions {
    #[serde(default)]
    pub labels: Pairs,
    #[serde(default)]
    pub annotations: Pairs,
    pub disable_name_suffix_hash: Option<bool>,
    pub immutable: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replacement {
    pub path: Option<String>,
    pub source: Option<ReplacementSource>,
    #[serde(default)]
    pub targets: Vec<ReplacementTarget>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplacementSource {
    #[serde(default)]
    pub group: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: String,
    pub field_path: Option<String>,
    pub options: Option<FieldOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReplacementTarget {
    pub select: Option<Selector>,
    #[serde(default)]
    pub reject: Vec<Selector>,
    #[serde(default)]
    pub field_paths: Vec<String>,
    pub options: Option<FieldOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FieldOptions {
    pub delimiter: Option<String>,
    #[serde(default)]
    pub index: i64,
    #[serde(default)]
    pub create: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SortOptions {
    pub order: Option<String>,
    pub legacy_sort_options: Option<LegacySortOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LegacySortOptions {
    #[serde(default)]
    pub order_first: Vec<String>,
    #[serde(default)]
    pub order_last: Vec<String>,
}

/// A kustomization file read: its fields, its text and its YAML (for pointing at a line).
pub struct Loaded {
    pub k: Kustomization,
    pub file: Arc<SourceFile>,
    pub node: Node,
}

impl Loaded {
    /// An error at the value of top-level field `key` (or at the file's start).
    pub fn error_at(&self, key: &str, message: impl Into<String>) -> Error {
        let span = self.node.entry(key).map(|(k, _)| k.span);
        Error {
            path: self.file.path.clone(),
            file: Some(self.file.clone()),
            span,
            message: message.into(),
            help: None,
        }
    }
}

/// Parses a kustomization file.
pub fn parse(path: &str, bytes: Vec<u8>) -> Result<Loaded, Error> {
    let objects = super::parse_objects(path, bytes)?;
    let (file, node) = match objects.into_iter().next() {
        Some((_, node, file)) => (file, node),
        None => (
            Arc::new(SourceFile {
                path: path.to_string(),
                text: Arc::from(""),
            }),
            Node {
                span: Default::default(),
                value: super::super::yaml::NodeValue::Map(Vec::new()),
            },
        ),
    };
    let k: Kustomization = serde_json::from_value(node.to_json()).map_err(|e| Error {
        path: path.to_string(),
        file: Some(file.clone()),
        span: Some(node.span),
        message: format!("invalid kustomization: {e}"),
        help: Some("see the fields berth supports in the README's kustomize section".to_string()),
    })?;
    let loaded = Loaded { k, file, node };
    refuse_unsupported(&loaded)?;
    Ok(loaded)
}

fn refuse_unsupported(l: &Loaded) -> Result<(), Error> {
    let k = &l.k;
    let refused: [(&str, bool, &str); 10] = [
        (
            "helmCharts",
            k.helm_charts.is_some(),
            "Helm charts are not rendered by berth (as Flux refuses them in a Kustomization); render the chart with `helm template` and commit the output as a resource",
        ),
        (
            "helmGlobals",
            k.helm_globals.is_some(),
            "Helm charts are not rendered by berth; render with `helm template` and commit the output",
        ),
        (
            "helmChartInflationGenerator",
            k.helm_chart_inflation_generator.is_some(),
            "Helm charts are not rendered by berth; render with `helm template` and commit the output",
        ),
        (
            "generators",
            k.generators.is_some(),
            "generator plugins (exec and KRM functions) are not run by berth; commit what they generate as a resource",
        ),
        (
            "transformers",
            k.transformers.is_some(),
            "transformer plugins are not run by berth; use patches or replacements",
        ),
        (
            "validators",
            k.validators.is_some(),
            "validator plugins are not run by berth; `berth validate` checks the rendered objects",
        ),
        (
            "configurations",
            k.configurations.is_some(),
            "custom transformer configurations are not supported yet",
        ),
        (
            "crds",
            k.crds.is_some(),
            "`crds` (merge keys and name references of custom resources) is not supported yet",
        ),
        (
            "openapi",
            k.openapi.is_some(),
            "a custom OpenAPI schema for merge keys is not supported yet",
        ),
        (
            "buildMetadata",
            k.build_metadata.is_some(),
            "`buildMetadata` is not supported yet",
        ),
    ];
    for (key, present, why) in refused {
        if present {
            return Err(l.error_at(key, format!("`{key}` is not supported: {why}")));
        }
    }
    Ok(())
}
