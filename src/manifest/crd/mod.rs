//! CustomResourceDefinitions (`apiextensions.k8s.io/v1`), pure: a CRD read and checked as the
//! API server checks it ([`Definition::parse`]), and a custom resource checked against it
//! ([`Definition::prepare`] prunes unknown fields and applies defaults, [`Definition::validate`]
//! checks the result against the version's structural schema). `berth validate` uses these on
//! CRDs found in the same input set; the API server on the CRDs it stores.

mod error;
mod schema;
#[cfg(test)]
mod tests;
mod value;

use std::sync::Arc;

use serde_json::Value;

pub use error::{ErrorKind, FieldError};
pub use schema::{Additional, Schema, Type};
pub(crate) use value::is_base64;

use crate::manifest::names;
use crate::manifest::report::FieldPath;

/// The `apiVersion` of a CustomResourceDefinition.
pub const API_VERSION: &str = "apiextensions.k8s.io/v1";
pub const KIND: &str = "CustomResourceDefinition";

/// Whether `object` is a CustomResourceDefinition.
pub fn is_definition(object: &Value) -> bool {
    object.get("apiVersion").and_then(Value::as_str) == Some(API_VERSION)
        && object.get("kind").and_then(Value::as_str) == Some(KIND)
}

/// `spec.names`, with Kubernetes' defaults filled in (`singular` is the lower-case kind,
/// `listKind` the kind with `List`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
}

/// `subresources.scale`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// `.spec.replicas`.
    pub spec_replicas_path: String,
    /// `.status.replicas`.
    pub status_replicas_path: String,
    pub label_selector_path: Option<String>,
}

/// One of `additionalPrinterColumns`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: String,
    /// `integer`, `number`, `string`, `boolean` or `date`.
    pub column_type: String,
    pub format: Option<String>,
    pub description: Option<String>,
    pub priority: i64,
    /// A simple JSONPath such as `.spec.replicas`.
    pub json_path: String,
}

/// One of `spec.versions`.
#[derive(Debug, Clone)]
pub struct Version {
    pub name: String,
    pub served: bool,
    pub storage: bool,
    pub deprecated: bool,
    pub deprecation_warning: Option<String>,
    pub schema: Arc<Schema>,
    /// The schema as written, for OpenAPI documents.
    pub schema_json: Value,
    pub status: bool,
    pub scale: Option<Scale>,
    pub printer_columns: Vec<PrinterColumn>,
}

/// A CustomResourceDefinition that passed [`Definition::parse`].
#[derive(Debug, Clone)]
pub struct Definition {
    /// `widgets.example.com`.
    pub name: String,
    pub group: String,
    pub names: Names,
    pub namespaced: bool,
    pub versions: Vec<Version>,
}

fn text<'v>(value: &'v Value, key: &str) -> Option<&'v str> {
    value.get(key).and_then(Value::as_str)
}

fn string_list(
    value: &Value,
    key: &str,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Vec<String> {
    match value.get(key) {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| match item.as_str() {
                Some(s) => Some(s.to_string()),
                None => {
                    errors.push(FieldError::invalid(
                        &at.child(key).index(i),
                        item,
                        "must be a string".into(),
                    ));
                    None
                }
            })
            .collect(),
        Some(other) => {
            errors.push(FieldError::invalid(
                &at.child(key),
                other,
                "must be a list of strings".into(),
            ));
            Vec::new()
        }
    }
}

/// A name that must be an RFC 1035 label (plural, singular, short names, categories, versions).
fn check_label(value: &str, at: &FieldPath, errors: &mut Vec<FieldError>) {
    if let Err(why) = names::dns1035_label(value) {
        errors.push(FieldError::invalid(
            at,
            &Value::String(value.into()),
            format!("a DNS-1035 label {why} (e.g. 'my-name', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
        ));
    }
}

fn required_text<'v>(
    value: &'v Value,
    key: &str,
    at: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Option<&'v str> {
    match value.get(key) {
        None | Some(Value::Null) => {
            errors.push(FieldError::required(&at.child(key), ""));
            None
        }
        Some(Value::String(s)) if s.is_empty() => {
            errors.push(FieldError::required(&at.child(key), ""));
            None
        }
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            errors.push(FieldError::invalid(
                &at.child(key),
                other,
                "must be a string".into(),
            ));
            None
        }
    }
}

fn flag(value: &Value, key: &str, at: &FieldPath, errors: &mut Vec<FieldError>) -> bool {
    match value.get(key) {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            errors.push(FieldError::invalid(
                &at.child(key),
                other,
                "must be a boolean".into(),
            ));
            false
        }
    }
}

impl Definition {
    /// Reads a CustomResourceDefinition and checks it as the API server would on create: names,
    /// scope, exactly one storage version, a structural schema for every version, printer
    /// columns and subresources. Every error found is returned, not only the first.
    pub fn parse(crd: &Value) -> Result<Definition, Vec<FieldError>> {
        let mut errors = Vec::new();
        let root = FieldPath::default();
        let spec_at = root.child("spec");
        let empty = Value::Object(Default::default());
        let spec = match crd.get("spec") {
            Some(spec @ Value::Object(_)) => spec,
            _ => {
                errors.push(FieldError::required(&spec_at, ""));
                &empty
            }
        };
        let group = required_text(spec, "group", &spec_at, &mut errors).unwrap_or_default();
        if !group.is_empty() {
            if let Err(why) = names::dns1123_subdomain(group) {
                errors.push(FieldError::invalid(
                    &spec_at.child("group"),
                    &Value::String(group.into()),
                    format!("a lowercase RFC 1123 subdomain {why}"),
                ));
            } else if !group.contains('.') {
                errors.push(FieldError::invalid(
                    &spec_at.child("group"),
                    &Value::String(group.into()),
                    "should be a domain with at least one dot".into(),
                ));
            }
        }
        let names_at = spec_at.child("names");
        let names_value = match spec.get("names") {
            Some(n @ Value::Object(_)) => n,
            _ => {
                errors.push(FieldError::required(&names_at, ""));
                &empty
            }
        };
        let names = read_names(names_value, &names_at, &mut errors);
        let name = crd
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let wanted = format!("{}.{}", names.plural, group);
        if !names.plural.is_empty() && !group.is_empty() && name != wanted {
            errors.push(FieldError::invalid(
                &root.child("metadata").child("name"),
                &Value::String(name.into()),
                format!("must be spec.names.plural+\".\"+spec.group (`{wanted}`)"),
            ));
        }
        let namespaced = match required_text(spec, "scope", &spec_at, &mut errors) {
            Some("Namespaced") => true,
            Some("Cluster") | None => false,
            Some(other) => {
                errors.push(FieldError::new(
                    ErrorKind::NotSupported,
                    &spec_at.child("scope"),
                    Some(&Value::String(other.into())),
                    "supported values: \"Cluster\", \"Namespaced\"".into(),
                ));
                false
            }
        };
        let versions = read_versions(spec, &spec_at, &mut errors);
        if let Some(conversion) = spec.get("conversion")
            && let Some(strategy) = text(conversion, "strategy")
            && strategy != "None"
            && strategy != "Webhook"
        {
            errors.push(FieldError::new(
                ErrorKind::NotSupported,
                &spec_at.child("conversion").child("strategy"),
                Some(&Value::String(strategy.into())),
                "supported values: \"None\", \"Webhook\"".into(),
            ));
        }
        if errors.is_empty() {
            Ok(Definition {
                name: name.to_string(),
                group: group.to_string(),
                names,
                namespaced,
                versions,
            })
        } else {
            Err(errors)
        }
    }

    /// `example.com/v1`.
    pub fn api_version(&self, version: &str) -> String {
        format!("{}/{}", self.group, version)
    }

    /// The served version named `version`.
    pub fn served(&self, version: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.served && v.name == version)
    }

    /// The version objects are stored in.
    pub fn storage(&self) -> &Version {
        self.versions
            .iter()
            .find(|v| v.storage)
            .expect("a parsed definition has exactly one storage version")
    }

    /// The served versions' names, for messages.
    pub fn served_names(&self) -> Vec<&str> {
        self.versions
            .iter()
            .filter(|v| v.served)
            .map(|v| v.name.as_str())
            .collect()
    }

    /// Prunes the fields `version`'s schema does not specify (returning their paths) and fills
    /// in its defaults, as the API server does to a custom resource it is sent.
    pub fn prepare(&self, version: &Version, object: &mut Value) -> Vec<FieldPath> {
        let mut pruned = Vec::new();
        value::prune(
            &version.schema,
            object,
            &FieldPath::default(),
            true,
            &mut pruned,
        );
        value::apply_defaults(&version.schema, object);
        pruned
    }

    /// Checks a prepared custom resource of `version`: its `apiVersion`, `kind` and
    /// `metadata.name`, then the version's schema.
    pub fn validate(&self, version: &Version, object: &Value) -> Vec<FieldError> {
        let root = FieldPath::default();
        let mut errors = Vec::new();
        let api_version = self.api_version(&version.name);
        if text(object, "apiVersion") != Some(api_version.as_str()) {
            errors.push(FieldError::invalid(
                &root.child("apiVersion"),
                object.get("apiVersion").unwrap_or(&Value::Null),
                format!("must be {api_version}"),
            ));
        }
        if text(object, "kind") != Some(self.names.kind.as_str()) {
            errors.push(FieldError::invalid(
                &root.child("kind"),
                object.get("kind").unwrap_or(&Value::Null),
                format!("must be {}", self.names.kind),
            ));
        }
        let meta_at = root.child("metadata");
        match object.get("metadata") {
            Some(Value::Object(meta)) => match meta.get("name").and_then(Value::as_str) {
                Some(name) => {
                    if let Err(why) = names::dns1123_subdomain(name) {
                        errors.push(FieldError::invalid(
                            &meta_at.child("name"),
                            &Value::String(name.into()),
                            format!("a lowercase RFC 1123 subdomain {why}"),
                        ));
                    }
                }
                None if meta.get("generateName").and_then(Value::as_str).is_some() => {}
                None => errors.push(FieldError::required(
                    &meta_at.child("name"),
                    "name or generateName is required",
                )),
            },
            _ => errors.push(FieldError::required(&meta_at, "")),
        }
        errors.extend(value::validate(&version.schema, object, &root));
        errors
    }
}

fn read_names(value: &Value, at: &FieldPath, errors: &mut Vec<FieldError>) -> Names {
    let plural = required_text(value, "plural", at, errors)
        .unwrap_or_default()
        .to_string();
    if !plural.is_empty() {
        check_label(&plural, &at.child("plural"), errors);
    }
    let kind = required_text(value, "kind", at, errors)
        .unwrap_or_default()
        .to_string();
    if !kind.is_empty() {
        check_label(&kind.to_lowercase(), &at.child("kind"), errors);
    }
    let singular = match text(value, "singular").filter(|s| !s.is_empty()) {
        Some(s) => {
            check_label(s, &at.child("singular"), errors);
            s.to_string()
        }
        None => kind.to_lowercase(),
    };
    let list_kind = match text(value, "listKind").filter(|s| !s.is_empty()) {
        Some(s) => {
            check_label(&s.to_lowercase(), &at.child("listKind"), errors);
            if s == kind {
                errors.push(FieldError::invalid(
                    &at.child("listKind"),
                    &Value::String(s.into()),
                    "kind and listKind cannot be the same".into(),
                ));
            }
            s.to_string()
        }
        None => format!("{kind}List"),
    };
    let short_names = string_list(value, "shortNames", at, errors);
    for (i, short) in short_names.iter().enumerate() {
        check_label(short, &at.child("shortNames").index(i), errors);
    }
    let categories = string_list(value, "categories", at, errors);
    for (i, category) in categories.iter().enumerate() {
        check_label(category, &at.child("categories").index(i), errors);
    }
    Names {
        plural,
        singular,
        kind,
        list_kind,
        short_names,
        categories,
    }
}

fn read_versions(spec: &Value, spec_at: &FieldPath, errors: &mut Vec<FieldError>) -> Vec<Version> {
    let at = spec_at.child("versions");
    let Some(list) = spec
        .get("versions")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
    else {
        errors.push(FieldError::required(
            &at,
            "must have exactly one version marked as storage version",
        ));
        return Vec::new();
    };
    let mut versions = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let v_at = at.index(i);
        let Some(name) = required_text(v, "name", &v_at, errors) else {
            continue;
        };
        check_label(name, &v_at.child("name"), errors);
        if versions.iter().any(|seen: &Version| seen.name == name) {
            errors.push(FieldError::new(
                ErrorKind::Duplicate,
                &v_at.child("name"),
                Some(&Value::String(name.into())),
                String::new(),
            ));
        }
        let schema_at = v_at.child("schema").child("openAPIV3Schema");
        let (schema, schema_json) = match v.pointer("/schema/openAPIV3Schema") {
            None | Some(Value::Null) => {
                errors.push(FieldError::required(&schema_at, "schemas are required"));
                (Schema::default(), Value::Null)
            }
            Some(json) => match Schema::parse(json, &schema_at) {
                Ok(schema) => (schema, json.clone()),
                Err(found) => {
                    errors.extend(found);
                    (Schema::default(), Value::Null)
                }
            },
        };
        let subresources = v.get("subresources").cloned().unwrap_or(Value::Null);
        let sub_at = v_at.child("subresources");
        let status = subresources.get("status").is_some_and(|s| !s.is_null());
        let scale = subresources
            .get("scale")
            .filter(|s| !s.is_null())
            .map(|s| read_scale(s, &sub_at.child("scale"), errors));
        let printer_columns = read_columns(v, &v_at, errors);
        versions.push(Version {
            name: name.to_string(),
            served: flag(v, "served", &v_at, errors),
            storage: flag(v, "storage", &v_at, errors),
            deprecated: flag(v, "deprecated", &v_at, errors),
            deprecation_warning: text(v, "deprecationWarning").map(String::from),
            schema: Arc::new(schema),
            schema_json,
            status,
            scale,
            printer_columns,
        });
    }
    let storage = versions.iter().filter(|v| v.storage).count();
    if storage != 1 {
        errors.push(FieldError::invalid(
            &at,
            &Value::from(storage),
            format!("must have exactly one version marked as storage version (found {storage})"),
        ));
    }
    if !versions.is_empty() && !versions.iter().any(|v| v.served) {
        errors.push(FieldError::invalid(
            &at,
            &Value::from(0),
            "must have at least one version marked as served".into(),
        ));
    }
    versions
}

/// A path a scale subresource reads, which must be a simple `.spec.…` or `.status.…` path.
fn check_scale_path(path: &str, prefixes: &[&str], at: &FieldPath, errors: &mut Vec<FieldError>) {
    let simple = path.strip_prefix('.').is_some_and(|rest| {
        rest.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
    });
    if !simple || !prefixes.iter().any(|p| path.starts_with(p)) {
        errors.push(FieldError::invalid(
            at,
            &Value::String(path.into()),
            format!("should be a json path under {}", prefixes.join(" or ")),
        ));
    }
}

fn read_scale(scale: &Value, at: &FieldPath, errors: &mut Vec<FieldError>) -> Scale {
    let spec = required_text(scale, "specReplicasPath", at, errors)
        .unwrap_or_default()
        .to_string();
    if !spec.is_empty() {
        check_scale_path(&spec, &[".spec."], &at.child("specReplicasPath"), errors);
    }
    let status = required_text(scale, "statusReplicasPath", at, errors)
        .unwrap_or_default()
        .to_string();
    if !status.is_empty() {
        check_scale_path(
            &status,
            &[".status."],
            &at.child("statusReplicasPath"),
            errors,
        );
    }
    let selector = text(scale, "labelSelectorPath").map(String::from);
    if let Some(path) = &selector {
        check_scale_path(
            path,
            &[".spec.", ".status."],
            &at.child("labelSelectorPath"),
            errors,
        );
    }
    Scale {
        spec_replicas_path: spec,
        status_replicas_path: status,
        label_selector_path: selector,
    }
}

fn read_columns(
    version: &Value,
    v_at: &FieldPath,
    errors: &mut Vec<FieldError>,
) -> Vec<PrinterColumn> {
    let at = v_at.child("additionalPrinterColumns");
    let Some(list) = version
        .get("additionalPrinterColumns")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut columns = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let c_at = at.index(i);
        let name = required_text(c, "name", &c_at, errors)
            .unwrap_or_default()
            .to_string();
        let column_type = required_text(c, "type", &c_at, errors)
            .unwrap_or_default()
            .to_string();
        if !column_type.is_empty()
            && !["integer", "number", "string", "boolean", "date"].contains(&column_type.as_str())
        {
            errors.push(FieldError::new(
                ErrorKind::NotSupported,
                &c_at.child("type"),
                Some(&Value::String(column_type.clone())),
                "supported values: \"boolean\", \"date\", \"integer\", \"number\", \"string\""
                    .into(),
            ));
        }
        let format = text(c, "format")
            .filter(|f| !f.is_empty())
            .map(String::from);
        if let Some(f) = &format
            && ![
                "int32",
                "int64",
                "float",
                "double",
                "byte",
                "date",
                "date-time",
                "password",
            ]
            .contains(&f.as_str())
        {
            errors.push(FieldError::new(
                ErrorKind::NotSupported,
                &c_at.child("format"),
                Some(&Value::String(f.clone())),
                "supported values: \"byte\", \"date\", \"date-time\", \"double\", \"float\", \"int32\", \"int64\", \"password\"".into(),
            ));
        }
        let json_path = required_text(c, "jsonPath", &c_at, errors)
            .unwrap_or_default()
            .to_string();
        if !json_path.is_empty() && !json_path.starts_with('.') {
            errors.push(FieldError::invalid(
                &c_at.child("jsonPath"),
                &Value::String(json_path.clone()),
                "must be a simple json path starting with .".into(),
            ));
        }
        let priority = match c.get("priority") {
            None | Some(Value::Null) => 0,
            Some(p) => match p.as_i64() {
                Some(n) if n >= 0 => n,
                _ => {
                    errors.push(FieldError::invalid(
                        &c_at.child("priority"),
                        p,
                        "must be a non-negative integer".into(),
                    ));
                    0
                }
            },
        };
        if columns.iter().any(|seen: &PrinterColumn| seen.name == name) && !name.is_empty() {
            errors.push(FieldError::new(
                ErrorKind::Duplicate,
                &c_at.child("name"),
                Some(&Value::String(name.clone())),
                String::new(),
            ));
        }
        columns.push(PrinterColumn {
            name,
            column_type,
            format,
            description: text(c, "description").map(String::from),
            priority,
            json_path,
        });
    }
    columns
}

/// The CRDs known to one check: the ones of an input set and of a `--crds` folder, or those
/// a server stores. Finds the definition of a custom resource by `apiVersion` and `kind`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    definitions: Vec<Arc<Definition>>,
}

/// What a catalog says of an `apiVersion` and `kind`.
pub enum Lookup<'c> {
    /// Defined and served in that version.
    Found(&'c Definition, &'c Version),
    /// The group defines the kind, but does not serve this version.
    VersionNotServed(&'c Definition),
    /// No definition of this kind in this group.
    Unknown,
}

impl Catalog {
    /// Adds a definition. Refuses one whose kind or plural another definition of the same
    /// group already claims, naming it.
    pub fn add(&mut self, definition: Definition) -> Result<(), String> {
        if let Some(existing) = self.definitions.iter().find(|d| {
            d.group == definition.group
                && d.name != definition.name
                && (d.names.kind == definition.names.kind
                    || d.names.plural == definition.names.plural)
        }) {
            return Err(format!(
                "{} claims kind {} / plural {} in group {}, as {} already does",
                definition.name,
                definition.names.kind,
                definition.names.plural,
                definition.group,
                existing.name
            ));
        }
        self.definitions.retain(|d| d.name != definition.name);
        self.definitions.push(Arc::new(definition));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.definitions.is_empty()
    }

    pub fn definitions(&self) -> impl Iterator<Item = &Definition> {
        self.definitions.iter().map(Arc::as_ref)
    }

    pub fn lookup(&self, api_version: &str, kind: &str) -> Lookup<'_> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(definition) = self
            .definitions
            .iter()
            .find(|d| d.group == group && d.names.kind == kind)
        else {
            return Lookup::Unknown;
        };
        match definition.served(version) {
            Some(v) => Lookup::Found(definition, v),
            None => Lookup::VersionNotServed(definition),
        }
    }
}
