//! One object while a kustomization is built: its value, where it came from, and the names
//! it had before each rename (name references follow them). Shared by the build and by
//! replacements and vars.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::super::SourceFile;
use super::super::kinds::KINDS;
use super::super::yaml::Node;
use super::fields::gvk;

/// One object being built.
#[derive(Debug, Clone)]
pub(super) struct Res {
    pub value: Value,
    pub file: Arc<SourceFile>,
    pub node: Option<Node>,
    pub line: usize,
    /// The (name, namespace) it had before each rename, oldest first.
    pub prev: Vec<(String, String)>,
    /// Gets the content-hash suffix at the end.
    pub hash: bool,
}

/// Whether objects of a kind live outside namespaces (unknown kinds are namespaced).
fn cluster_scoped(api_version: &str, kind: &str) -> bool {
    KINDS
        .iter()
        .find(|k| k.kind == kind && k.api_version == api_version)
        .or_else(|| KINDS.iter().find(|k| k.kind == kind))
        .is_some_and(|k| !k.namespaced)
}

impl Res {
    pub fn str_at(&self, pointer: &str) -> String {
        self.value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    }

    pub fn kind(&self) -> &str {
        gvk(&self.value).2
    }

    pub fn name(&self) -> String {
        self.str_at("/metadata/name")
    }

    pub fn cluster_scoped(&self) -> bool {
        let api_version = self
            .value
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        cluster_scoped(api_version, self.kind())
    }

    /// The namespace as kustomize compares it: `default` when unset, empty when cluster-scoped.
    pub fn effective_ns(&self, ns: &str) -> String {
        if self.cluster_scoped() {
            String::new()
        } else if ns.is_empty() {
            "default".into()
        } else {
            ns.to_string()
        }
    }

    /// The current and the original (name, effective namespace).
    pub fn names(&self) -> Vec<(String, String)> {
        let mut out = vec![(
            self.name(),
            self.effective_ns(&self.str_at("/metadata/namespace")),
        )];
        if let Some((n, ns)) = self.prev.first() {
            out.push((n.clone(), self.effective_ns(ns)));
        }
        out
    }

    /// Every name it had or has.
    pub fn all_names(&self) -> impl Iterator<Item = String> + '_ {
        self.prev
            .iter()
            .map(|(n, _)| n.clone())
            .chain([self.name()])
    }

    pub fn id(&self) -> String {
        let (group, _, kind) = gvk(&self.value);
        let ns = self.effective_ns(&self.str_at("/metadata/namespace"));
        format!("{kind}.{group} {ns}/{}", self.name())
    }

    pub fn remember(&mut self) {
        let entry = (self.name(), self.str_at("/metadata/namespace"));
        if self.prev.last() != Some(&entry) {
            self.prev.push(entry);
        }
    }

    pub fn rename(&mut self, name: String) {
        if name == self.name() {
            return;
        }
        self.remember();
        set_metadata(&mut self.value, "name", name);
    }

    pub fn set_namespace(&mut self, ns: &str) {
        if self.str_at("/metadata/namespace") == ns {
            return;
        }
        self.remember();
        set_metadata(&mut self.value, "namespace", ns.to_string());
    }
}

pub(super) fn set_metadata(object: &mut Value, key: &str, value: String) {
    if let Value::Object(map) = object {
        let meta = map
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Value::Object(meta) = meta {
            meta.insert(key.into(), Value::String(value));
        }
    }
}
