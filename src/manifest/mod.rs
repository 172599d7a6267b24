//! Manifests: loading YAML and JSON with source spans, the object model, validation, and the
//! defaults a server fills in.
//!
//! This is the one way berth reads manifests: `berth validate`, `apply`, `diff`, `delete`,
//! `berth up` and git sync load a set of files, folders, stdin or git trees ([`git`]) with
//! [`load_set`]; the API server checks each decoded object with [`validate_value`] and fills
//! in [`defaults`].

pub mod crd;
pub mod defaults;
pub mod diagnostic;
pub mod git;
pub mod gitsource;
pub mod kinds;
pub mod kustomize;
pub mod lists;
pub mod load;
pub mod names;
pub mod patch;
pub mod quantity;
pub mod report;
pub mod schema;
mod secret_types;
mod semantic;
pub mod set;
pub mod substitute;
pub mod validate;
pub mod yaml;

use std::sync::Arc;

pub use diagnostic::{Problem, Severity};
pub use load::{Input, LoadOptions, load_text};
pub use set::{Loaded, SetOptions, SetReport, load_set};
pub use validate::{ValidateOptions, validate, validate_value};
pub use yaml::{Node, NodeValue, Span};

/// One file (or stdin, or a git blob) that manifests were read from.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it, relative where possible; `<stdin>` for stdin.
    pub path: String,
    pub text: Arc<str>,
}

/// One Kubernetes object read from a source, with where it came from.
#[derive(Debug, Clone)]
pub struct Object {
    pub file: Arc<SourceFile>,
    /// 0-based index of the YAML document in its file.
    pub document: usize,
    /// 0-based index within a `kind: List` document, if it came from one.
    pub list_item: Option<usize>,
    /// The object's YAML, with spans.
    pub node: Node,
    /// The object as JSON.
    pub value: serde_json::Value,
    /// Keys given twice in one mapping of this object's document.
    pub duplicate_keys: Vec<yaml::DuplicateKey>,
}

impl Object {
    fn str_at(&self, key: &str) -> Option<&str> {
        self.value.get(key).and_then(serde_json::Value::as_str)
    }

    pub fn api_version(&self) -> Option<&str> {
        self.str_at("apiVersion")
    }

    pub fn kind(&self) -> Option<&str> {
        self.str_at("kind")
    }

    pub fn name(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/name")
            .and_then(serde_json::Value::as_str)
    }

    pub fn namespace(&self) -> Option<&str> {
        self.value
            .pointer("/metadata/namespace")
            .and_then(serde_json::Value::as_str)
    }

    /// `Deployment shop/web`: how problems name the object.
    pub fn describe(&self) -> String {
        describe(&self.value)
    }

    /// Where the object starts, as `file:line:col`.
    pub fn location(&self) -> String {
        format!(
            "{}:{}:{}",
            self.file.path, self.node.span.start.line, self.node.span.start.col
        )
    }
}

/// `Deployment shop/web` (or `Namespace shop`): how problems and plans name an object;
/// `<no kind>` and `<no name>` stand in for what it lacks, a `generateName` for its name.
pub fn describe(object: &serde_json::Value) -> String {
    let text = |pointer: &str| object.pointer(pointer).and_then(serde_json::Value::as_str);
    let kind = text("/kind").unwrap_or("<no kind>");
    let name = text("/metadata/name")
        .or_else(|| text("/metadata/generateName"))
        .unwrap_or("<no name>");
    match text("/metadata/namespace") {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}
