//! Kustomize, built in: a folder holding a `kustomization.yaml` (or `.yml`, or
//! `Kustomization`) is rendered into the objects `kubectl kustomize` prints, with no external
//! binary. Pure: files in (from disk or a git tree, through [`Files`]), objects out, each
//! remembering the file and line it came from so validation points at the source, not at
//! rendered output.
//!
//! The pipeline follows kustomize v5's: resources (files, folders holding kustomizations),
//! generators, components, then the transformers in kustomize's order (strategic merge
//! patches, `patches`, namespace, prefix, suffix, labels, annotations, JSON 6902 patches,
//! replicas, images, replacements); at the top the content-hash suffixes, the name references
//! and the sort. Helm charts, exec/KRM plugins and remote resources are refused with an error.

// An error ends a render and carries its file, span and help: its size costs nothing.
#![allow(clippy::result_large_err)]

mod build;
mod fields;
mod generate;
mod kustomization;
mod replace;
mod res;
mod select;

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::diagnostic::Problem;
use super::yaml::{Node, NodeValue, Pos, Span};
use super::{Object, SourceFile};

pub use generate::content_hash;

/// The names kustomize looks for in a folder, in its order.
pub const KUSTOMIZATION_FILES: [&str; 3] =
    ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// Where a kustomization's files are read from: the disk, or a git tree.
///
/// Paths use `/`, are joined and cleaned lexically, and are relative to the same place
/// (the working directory, or the repository root).
pub trait Files {
    /// A file's bytes; `Ok(None)` when no file is there.
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>>;
    /// Whether a folder is there.
    fn is_dir(&self, path: &str) -> bool;
}

/// The files of the disk.
#[derive(Debug, Default, Clone, Copy)]
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        let path = if path.is_empty() { "." } else { path };
        if Path::new(path).is_dir() {
            return Ok(None);
        }
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn is_dir(&self, path: &str) -> bool {
        Path::new(if path.is_empty() { "." } else { path }).is_dir()
    }
}

/// The files of the disk below a root folder, named relative to it (as git names them).
#[derive(Debug, Clone)]
pub struct Rooted(pub std::path::PathBuf);

impl Files for Rooted {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        if path.starts_with("..") || path.starts_with('/') {
            return Ok(None);
        }
        Disk.read(&self.0.join(path).to_string_lossy())
    }

    fn is_dir(&self, path: &str) -> bool {
        !path.starts_with("..") && !path.starts_with('/') && self.0.join(path).is_dir()
    }
}

/// The kustomization file of a folder, if it holds one.
pub fn kustomization_in(files: &dyn Files, dir: &str) -> Option<String> {
    KUSTOMIZATION_FILES
        .iter()
        .map(|name| join(dir, name))
        .find(|path| !files.is_dir(path) && matches!(files.read(path), Ok(Some(_))))
}

/// One rendered object and where it came from.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub value: Value,
    /// The file it was read from (for a generated ConfigMap or Secret: the kustomization).
    pub file: Arc<SourceFile>,
    /// The object's YAML as written in that file, for pointing at fields that kept their value.
    pub node: Option<Node>,
    /// The line of `file` where it starts.
    pub line: usize,
}

impl Rendered {
    /// The object for validation: its YAML's spans point into the file it came from. A field
    /// kept from the source points at its line there; one a patch, generator or transformer
    /// added points at its nearest ancestor that the source has (at worst the object's start).
    pub fn object(&self) -> Object {
        let fallback = self
            .node
            .as_ref()
            .map_or_else(|| line_span(&self.file.text, self.line), |n| n.span);
        Object {
            file: self.file.clone(),
            document: 0,
            list_item: None,
            node: synthesize(&self.value, self.node.as_ref(), fallback),
            value: self.value.clone(),
            duplicate_keys: Vec::new(),
        }
    }
}

/// The span of the start of a (1-based) line of `text`.
fn line_span(text: &str, line: usize) -> Span {
    let index = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count())
        .sum();
    let pos = Pos {
        index,
        line: line.max(1),
        col: 1,
    };
    Span {
        start: pos,
        end: pos,
    }
}

/// YAML for `value`, taking each node's span from the matching node of `source` (list items
/// matched by `name`, else by position) or, where the source has none, from the parent.
fn synthesize(value: &Value, source: Option<&Node>, fallback: Span) -> Node {
    let span = source.map_or(fallback, |n| n.span);
    let node_value = match value {
        Value::Null => NodeValue::Null,
        Value::Bool(b) => NodeValue::Bool(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => NodeValue::Int(i),
            None => NodeValue::Float(n.as_f64().unwrap_or_default()),
        },
        Value::String(s) => NodeValue::Str(s.clone()),
        Value::Array(items) => {
            let originals = match source.map(|n| &n.value) {
                Some(NodeValue::Seq(items)) => Some(items),
                _ => None,
            };
            NodeValue::Seq(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let original = originals.and_then(|o| match item.get("name") {
                            Some(name) => o
                                .iter()
                                .find(|n| n.get("name").is_some_and(|x| x.to_json() == *name)),
                            None => o.get(i),
                        });
                        synthesize(item, original, span)
                    })
                    .collect(),
            )
        }
        Value::Object(map) => NodeValue::Map(
            map.iter()
                .map(|(k, v)| {
                    let entry = source.and_then(|n| n.entry(k));
                    let key = Node {
                        span: entry.map_or(span, |(key, _)| key.span),
                        value: NodeValue::Str(k.clone()),
                    };
                    (key, synthesize(v, entry.map(|(_, v)| v), span))
                })
                .collect(),
        ),
    };
    Node {
        span,
        value: node_value,
    }
}

/// Why a kustomization cannot be rendered: what, where, and how to fix it.
#[derive(Debug, Clone)]
pub struct Error {
    pub path: String,
    pub file: Option<Arc<SourceFile>>,
    pub span: Option<Span>,
    pub message: String,
    pub help: Option<String>,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.span {
            Some(s) => write!(f, "{}:{}:{}: ", self.path, s.start.line, s.start.col)?,
            None => write!(f, "{}: ", self.path)?,
        }
        f.write_str(&self.message)?;
        if let Some(help) = &self.help {
            write!(f, " ({help})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl Error {
    fn at(path: &str, message: impl Into<String>) -> Error {
        Error {
            path: path.to_string(),
            file: None,
            span: None,
            message: message.into(),
            help: None,
        }
    }

    fn help(mut self, help: impl Into<String>) -> Error {
        self.help = Some(help.into());
        self
    }

    /// The error as a problem of `berth validate`'s report.
    pub fn problem(&self) -> Problem {
        let mut problem = match &self.file {
            Some(file) => Problem::file_error(
                file,
                self.span,
                "kustomize",
                self.message.clone(),
                self.help.clone(),
            ),
            None => Problem::file_error(
                &Arc::new(SourceFile {
                    path: self.path.clone(),
                    text: Arc::from(""),
                }),
                None,
                "kustomize",
                self.message.clone(),
                self.help.clone(),
            ),
        };
        if self.file.is_none() {
            problem.source = None;
        }
        problem
    }
}

/// The objects of a YAML file (or inline text): each document's value, YAML and file.
pub(crate) fn parse_objects(
    path: &str,
    bytes: Vec<u8>,
) -> Result<Vec<(Value, Node, Arc<SourceFile>)>, Error> {
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::at(path, "not UTF-8 text").help("save the file as UTF-8"))?;
    let file = Arc::new(SourceFile {
        path: path.to_string(),
        text: Arc::from(text),
    });
    let (docs, error) = super::yaml::parse_stream(&file.text, Default::default());
    if let Some(e) = error {
        let at = e.pos();
        return Err(Error {
            path: path.to_string(),
            file: Some(file.clone()),
            span: Some(Span { start: at, end: at }),
            message: format!("YAML error: {e}"),
            help: Some(e.help().to_string()),
        });
    }
    let mut out = Vec::new();
    for doc in docs {
        let Some(root) = doc.root else { continue };
        if matches!(root.value, NodeValue::Null) {
            continue;
        }
        out.push((root.to_json(), root, file.clone()));
    }
    Ok(out)
}

/// Renders the kustomization in folder `dir`.
pub fn render(files: &dyn Files, dir: &str) -> Result<Vec<Rendered>, Error> {
    build::render(files, &clean(dir))
}

/// `a/./b/../c` → `a/c`; `..` beyond the start is kept; empty means the current folder.
pub(crate) fn clean(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if parts.last().is_some_and(|p| *p != "..") => {
                parts.pop();
            }
            ".." if absolute => {}
            other => parts.push(other),
        }
    }
    let joined = parts.join("/");
    if absolute {
        format!("/{joined}")
    } else {
        joined
    }
}

/// `dir` joined with `rel` (an absolute `rel` stands alone), cleaned.
pub(crate) fn join(dir: &str, rel: &str) -> String {
    if rel.starts_with('/') || dir.is_empty() {
        clean(rel)
    } else {
        clean(&format!("{dir}/{rel}"))
    }
}

/// Whether `path` is `root` or below it (both cleaned).
pub(crate) fn within(root: &str, path: &str) -> bool {
    if root.is_empty() {
        return !path.starts_with("..") && !path.starts_with('/');
    }
    path == root || path.starts_with(&format!("{root}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join_and_clean_lexically() {
        assert_eq!(join("overlays/prod", "../../base"), "base");
        assert_eq!(join("a", "./b/../c.yaml"), "a/c.yaml");
        assert_eq!(join("", "x"), "x");
        assert_eq!(join("a", "../../x"), "../x");
        assert_eq!(join("/r/a", "../b"), "/r/b");
        assert!(within("a", "a/b") && !within("a", "ab/c") && !within("a", "b"));
        assert!(within("", "b") && !within("", "../b"));
    }
}
