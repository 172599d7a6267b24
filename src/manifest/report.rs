//! Where a problem is: field paths (`spec.template.spec.containers[0].image`), the YAML node
//! they lead to, and [`ObjectReport`], which collects the problems of one object for the
//! schema check and the semantic checks alike (both import this module, not each other).

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

use super::diagnostic::{Problem, Severity};
use super::yaml::{Node, NodeValue, Span};
use super::{Object, SourceFile};

/// A field path: `spec.template.spec.containers[0].image`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Segment>);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Key(String),
    Index(usize),
}

impl FieldPath {
    pub fn child(&self, key: &str) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Key(key.to_string()));
        p
    }

    pub fn index(&self, i: usize) -> FieldPath {
        let mut p = self.clone();
        p.0.push(Segment::Index(i));
        p
    }

    pub fn parse_keys(path: &[&str]) -> FieldPath {
        FieldPath(
            path.iter()
                .map(|k| Segment::Key((*k).to_string()))
                .collect(),
        )
    }

    /// The value at this path in `value`.
    pub fn lookup<'v>(&self, value: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(value, |v, seg| match seg {
            Segment::Key(k) => v.get(k),
            Segment::Index(i) => v.get(*i),
        })
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for seg in &self.0 {
            match seg {
                Segment::Key(k)
                    if !k.is_empty()
                        && k.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
                {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                // Keys such as `app.kubernetes.io/name` would be ambiguous after a dot.
                Segment::Key(k) => write!(f, "[{k:?}]")?,
                Segment::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// The node at `path`, or the deepest node on the way to it.
pub fn node_at<'a>(root: &'a Node, path: &FieldPath) -> &'a Node {
    let mut node = root;
    for seg in &path.0 {
        let next = match (seg, &node.value) {
            (Segment::Key(k), NodeValue::Map(_)) => node.get(k),
            (Segment::Index(i), NodeValue::Seq(items)) => items.get(*i),
            _ => None,
        };
        match next {
            Some(n) => node = n,
            None => break,
        }
    }
    node
}

/// The key node of the last segment of `path`, where a problem about the key itself points.
pub fn key_node_at<'a>(root: &'a Node, path: &FieldPath) -> &'a Node {
    let Some((Segment::Key(last), parent)) = path.0.split_last() else {
        return node_at(root, path);
    };
    let parent_node = node_at(root, &FieldPath(parent.to_vec()));
    parent_node.entry(last).map_or(parent_node, |(k, _)| k)
}

/// Builds the problems of one object: one read from a file points each problem at its YAML
/// node; one decoded from an API request has no file, and its problems only name the field.
pub(crate) struct ObjectReport<'a> {
    /// The file and the object's node in it.
    located: Option<(&'a Arc<SourceFile>, &'a Node)>,
    /// `Deployment shop/web`.
    describe: String,
    pub problems: Vec<Problem>,
}

impl<'a> ObjectReport<'a> {
    pub fn for_object(object: &'a Object) -> Self {
        ObjectReport {
            located: Some((&object.file, &object.node)),
            describe: object.describe(),
            problems: Vec::new(),
        }
    }

    pub fn for_value(value: &Value) -> Self {
        ObjectReport {
            located: None,
            describe: super::describe(value),
            problems: Vec::new(),
        }
    }

    /// Where the value at `field` is written.
    pub fn span(&self, field: &FieldPath) -> Option<Span> {
        self.located.map(|(_, node)| node_at(node, field).span)
    }

    /// Where the key of `field` is written.
    pub fn key_span(&self, field: &FieldPath) -> Option<Span> {
        self.located.map(|(_, node)| key_node_at(node, field).span)
    }

    pub fn push(
        &mut self,
        severity: Severity,
        rule: &'static str,
        field: &FieldPath,
        span: Option<Span>,
        reason: String,
        help: Option<String>,
    ) {
        let (path, source) = match self.located {
            Some((file, _)) => (file.path.clone(), Some(file.clone())),
            None => (String::new(), None),
        };
        self.problems.push(Problem {
            severity,
            path,
            source,
            span,
            object: Some(self.describe.clone()),
            field: Some(field.to_string()),
            reason,
            help,
            rule,
        });
    }

    /// An error about the value at `field`.
    pub fn error(
        &mut self,
        rule: &'static str,
        field: &FieldPath,
        reason: String,
        help: Option<String>,
    ) {
        let span = self.span(field);
        self.push(Severity::Error, rule, field, span, reason, help);
    }

    pub fn warning(
        &mut self,
        rule: &'static str,
        field: &FieldPath,
        reason: String,
        help: Option<String>,
    ) {
        let span = self.span(field);
        self.push(Severity::Warning, rule, field, span, reason, help);
    }
}
