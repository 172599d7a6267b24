//! YAML with a source position on every node: the one parser every manifest goes through.
//!
//! Built on `saphyr-parser`'s event stream. Scalars are resolved the way Kubernetes' own
//! YAML decoder (go-yaml, YAML 1.1 flavour) resolves them, so `on`/`yes` are booleans and
//! `0755` is octal. The builder is iterative and bounded: alias expansion, nesting depth and
//! document size all have limits, so hostile input fails fast with a clear error instead of
//! exhausting memory or the stack.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

/// Where a node starts in its file. `index` counts characters (not bytes) from the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    pub index: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
}

/// A node's extent in its file, in characters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub start: Pos,
    pub end: Pos,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own node so an error about a key can point at it.
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub span: Span,
    pub value: NodeValue,
}

impl Node {
    /// The value of `key` in a mapping node, with the key node.
    pub fn entry(&self, key: &str) -> Option<(&Node, &Node)> {
        match &self.value {
            NodeValue::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, NodeValue::Str(s) if s == key))
                .map(|(k, v)| (k, v)),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.entry(key).map(|(_, v)| v)
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            NodeValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Converts to JSON. Map keys that are not strings are rendered as YAML would print them,
    /// as Kubernetes' decoder does.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.value {
            NodeValue::Null => Value::Null,
            NodeValue::Bool(b) => Value::Bool(*b),
            NodeValue::Int(i) => Value::from(*i),
            // JSON has no NaN or infinity; the loader reports them, and the value stays
            // visible as text instead of turning into an absent field.
            NodeValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or_else(|| Value::String(non_finite_text(*f).to_string())),
            NodeValue::Str(s) => Value::String(s.clone()),
            NodeValue::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeValue::Map(entries) => {
                let mut map = serde_json::Map::with_capacity(entries.len());
                for (k, v) in entries {
                    map.insert(k.key_text(), v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// The first float in this subtree that JSON cannot represent (NaN or infinity).
    pub fn find_non_finite(&self) -> Option<&Node> {
        match &self.value {
            NodeValue::Float(f) if !f.is_finite() => Some(self),
            NodeValue::Seq(items) => items.iter().find_map(Node::find_non_finite),
            NodeValue::Map(entries) => entries.iter().find_map(|(_, v)| v.find_non_finite()),
            _ => None,
        }
    }

    /// The text of a node used as a mapping key.
    pub fn key_text(&self) -> String {
        match &self.value {
            NodeValue::Str(s) => s.clone(),
            NodeValue::Null => "null".to_string(),
            NodeValue::Bool(b) => b.to_string(),
            NodeValue::Int(i) => i.to_string(),
            NodeValue::Float(f) => f.to_string(),
            NodeValue::Seq(_) | NodeValue::Map(_) => "<complex key>".to_string(),
        }
    }

    /// Number of nodes in this subtree (keys included).
    fn weight(&self) -> usize {
        match &self.value {
            NodeValue::Seq(items) => 1 + items.iter().map(Node::weight).sum::<usize>(),
            NodeValue::Map(entries) => {
                1 + entries
                    .iter()
                    .map(|(k, v)| k.weight() + v.weight())
                    .sum::<usize>()
            }
            _ => 1,
        }
    }
}

/// How YAML writes a float that JSON cannot hold.
pub fn non_finite_text(f: f64) -> &'static str {
    if f.is_nan() {
        ".nan"
    } else if f > 0.0 {
        ".inf"
    } else {
        "-.inf"
    }
}

/// Limits that keep hostile input cheap.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest document, in bytes of source text.
    pub max_document_bytes: usize,
    /// Deepest nesting of sequences and mappings.
    pub max_depth: usize,
    /// Most nodes that aliases may add to one document, beyond the nodes written out.
    pub max_alias_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_document_bytes: 3 * 1024 * 1024,
            max_depth: 1000,
            max_alias_nodes: 100_000,
        }
    }
}

/// One YAML document of a stream.
#[derive(Debug, Clone)]
pub struct Document {
    /// 0-based position of the document in its stream.
    pub index: usize,
    /// Where the document's content starts.
    pub start: Pos,
    /// `None` for an empty or comment-only document.
    pub root: Option<Node>,
    /// Keys given twice in the same mapping: (first occurrence, repeated key node, key path).
    pub duplicate_keys: Vec<DuplicateKey>,
}

#[derive(Debug, Clone)]
pub struct DuplicateKey {
    pub key: String,
    /// JSON-style path of the mapping that holds the key, e.g. `spec.template`.
    pub path: String,
    pub first: Span,
    pub again: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YamlError {
    #[error("{message}")]
    Syntax { message: String, at: Pos },
    #[error("nesting deeper than {limit} levels")]
    TooDeep { limit: usize, at: Pos },
    #[error("document larger than the limit of {limit} bytes")]
    TooLarge { limit: usize, at: Pos },
    #[error("aliases expand to more than {limit} nodes (a \"billion laughs\" alias bomb?)")]
    AliasBomb { limit: usize, at: Pos },
    #[error("alias refers to an anchor that is not defined before it")]
    UnknownAnchor { at: Pos },
}

impl YamlError {
    pub fn pos(&self) -> Pos {
        match self {
            YamlError::Syntax { at, .. }
            | YamlError::TooDeep { at, .. }
            | YamlError::TooLarge { at, .. }
            | YamlError::AliasBomb { at, .. }
            | YamlError::UnknownAnchor { at } => *at,
        }
    }

    pub fn help(&self) -> &'static str {
        match self {
            YamlError::Syntax { .. } => "fix the YAML syntax at this position",
            YamlError::TooDeep { .. } => {
                "manifests never nest this deep; is the file generated wrongly?"
            }
            YamlError::TooLarge { .. } => {
                "split the document, or raise the limit with --max-document-bytes"
            }
            YamlError::AliasBomb { .. } => "expand the anchors by hand, or use fewer aliases",
            YamlError::UnknownAnchor { .. } => "define the anchor (&name) before using it (*name)",
        }
    }
}

fn pos_of(m: &saphyr_parser::Marker) -> Pos {
    Pos {
        index: m.index(),
        line: m.line(),
        col: m.col() + 1,
    }
}

fn syntax_error(e: ScanError) -> YamlError {
    YamlError::Syntax {
        message: e.info().to_string(),
        at: pos_of(e.marker()),
    }
}

enum Frame {
    Seq {
        start: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        start: Pos,
        anchor: usize,
        entries: Vec<(Node, Node)>,
        pending_key: Option<Node>,
        /// Whether the pending key is a plain, untagged `<<`: only that is a merge key.
        pending_is_merge: bool,
        /// Key text → entry index, built once a mapping grows large, so duplicate checks
        /// stay linear in the number of keys.
        seen: Option<HashMap<String, usize>>,
        /// Keys merged in from `<<`, which explicit keys may override.
        merged: Vec<(Node, Node)>,
    },
}

/// Parses a YAML stream into documents. The first error ends the stream; documents parsed
/// before it are returned with it.
pub fn parse_stream(text: &str, limits: Limits) -> (Vec<Document>, Option<YamlError>) {
    let mut builder = Builder::new(limits);
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    while let Some(next) = parser.next_event() {
        let (event, span) = match next {
            Ok(ev) => ev,
            Err(e) => return (docs, Some(syntax_error(e))),
        };
        match builder.event(event, pos_of(&span.start), pos_of(&span.end)) {
            Ok(Some(doc)) => docs.push(doc),
            Ok(None) => {}
            Err(e) => return (docs, Some(e)),
        }
        if builder.finished {
            break;
        }
    }
    (docs, None)
}

struct Builder {
    limits: Limits,
    stack: Vec<Frame>,
    anchors: Vec<Option<(Node, usize)>>,
    doc: Option<Document>,
    doc_count: usize,
    alias_nodes: usize,
    finished: bool,
}

impl Builder {
    fn new(limits: Limits) -> Self {
        Builder {
            limits,
            stack: Vec::new(),
            anchors: Vec::new(),
            doc: None,
            doc_count: 0,
            alias_nodes: 0,
            finished: false,
        }
    }

    fn check_size(&self, at: Pos) -> Result<(), YamlError> {
        if let Some(doc) = &self.doc {
            // Character counts bound byte counts from below; a 4-byte-per-char document is
            // caught at a quarter of the size, which is fine for a sanity limit.
            if at.index.saturating_sub(doc.start.index) > self.limits.max_document_bytes {
                return Err(YamlError::TooLarge {
                    limit: self.limits.max_document_bytes,
                    at,
                });
            }
        }
        Ok(())
    }

    fn event(
        &mut self,
        event: Event<'_>,
        start: Pos,
        end: Pos,
    ) -> Result<Option<Document>, YamlError> {
        self.check_size(start)?;
        match event {
            Event::StreamEnd => {
                self.finished = true;
                Ok(None)
            }
            Event::StreamStart | Event::Nothing => Ok(None),
            Event::DocumentStart(_) => {
                self.doc = Some(Document {
                    index: self.doc_count,
                    start,
                    root: None,
                    duplicate_keys: Vec::new(),
                });
                self.doc_count += 1;
                self.anchors.clear();
                self.alias_nodes = 0;
                Ok(None)
            }
            Event::DocumentEnd => Ok(self.doc.take()),
            Event::Alias(id) => {
                let Some(Some((node, weight))) = self.anchors.get(id) else {
                    return Err(YamlError::UnknownAnchor { at: start });
                };
                self.alias_nodes += weight;
                if self.alias_nodes > self.limits.max_alias_nodes {
                    return Err(YamlError::AliasBomb {
                        limit: self.limits.max_alias_nodes,
                        at: start,
                    });
                }
                let mut node = node.clone();
                // The alias's own position is where a reader looks for it.
                node.span = Span { start, end };
                self.push_node(node)?;
                Ok(None)
            }
            Event::Scalar(text, style, anchor, tag) => {
                let is_merge = style == ScalarStyle::Plain && tag.is_none() && text == "<<";
                let value = resolve_scalar(text, style, tag.as_deref());
                let node = Node {
                    span: Span { start, end },
                    value,
                };
                if anchor > 0 {
                    self.set_anchor(anchor, &node, start)?;
                }
                self.push_node_as(node, is_merge)?;
                Ok(None)
            }
            Event::SequenceStart(anchor, _) => {
                self.open(
                    Frame::Seq {
                        start,
                        anchor,
                        items: Vec::new(),
                    },
                    start,
                )?;
                Ok(None)
            }
            Event::MappingStart(anchor, _) => {
                self.open(
                    Frame::Map {
                        start,
                        anchor,
                        entries: Vec::new(),
                        pending_key: None,
                        pending_is_merge: false,
                        seen: None,
                        merged: Vec::new(),
                    },
                    start,
                )?;
                Ok(None)
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let frame = self
                    .stack
                    .pop()
                    .expect("parser balances start and end events");
                let (node, anchor) = match frame {
                    Frame::Seq {
                        start: s,
                        anchor,
                        items,
                    } => (
                        Node {
                            span: Span { start: s, end },
                            value: NodeValue::Seq(items),
                        },
                        anchor,
                    ),
                    Frame::Map {
                        start: s,
                        anchor,
                        mut entries,
                        merged,
                        ..
                    } => {
                        if !merged.is_empty() {
                            let explicit: HashSet<String> =
                                entries.iter().map(|(k, _)| k.key_text()).collect();
                            entries.extend(
                                merged
                                    .into_iter()
                                    .filter(|(k, _)| !explicit.contains(&k.key_text())),
                            );
                        }
                        (
                            Node {
                                span: Span { start: s, end },
                                value: NodeValue::Map(entries),
                            },
                            anchor,
                        )
                    }
                };
                if anchor > 0 {
                    self.set_anchor(anchor, &node, start)?;
                }
                self.push_node(node)?;
                Ok(None)
            }
        }
    }

    fn open(&mut self, frame: Frame, at: Pos) -> Result<(), YamlError> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(YamlError::TooDeep {
                limit: self.limits.max_depth,
                at,
            });
        }
        self.stack.push(frame);
        Ok(())
    }

    /// Keeps a copy of an anchored node for its aliases. Copies count against the alias
    /// budget too: anchors nested inside anchors would otherwise copy the document once per
    /// level without a single alias.
    fn set_anchor(&mut self, id: usize, node: &Node, at: Pos) -> Result<(), YamlError> {
        let weight = node.weight();
        self.alias_nodes += weight;
        if self.alias_nodes > self.limits.max_alias_nodes {
            return Err(YamlError::AliasBomb {
                limit: self.limits.max_alias_nodes,
                at,
            });
        }
        if self.anchors.len() <= id {
            self.anchors.resize(id + 1, None);
        }
        self.anchors[id] = Some((node.clone(), weight));
        Ok(())
    }

    fn path(&self) -> String {
        let mut path = String::new();
        for frame in &self.stack {
            match frame {
                Frame::Seq { items, .. } => {
                    path.push_str(&format!("[{}]", items.len()));
                }
                Frame::Map {
                    pending_key: Some(k),
                    ..
                } => {
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(&k.key_text());
                }
                Frame::Map { .. } => {}
            }
        }
        path
    }

    fn push_node(&mut self, node: Node) -> Result<(), YamlError> {
        self.push_node_as(node, false)
    }

    /// Adds a finished node to its parent. `is_merge_key` marks a plain `<<` scalar.
    fn push_node_as(&mut self, node: Node, is_merge_key: bool) -> Result<(), YamlError> {
        let mut duplicate: Option<(String, Span, Span)> = None;
        match self.stack.last_mut() {
            None => {
                if let Some(doc) = &mut self.doc {
                    doc.root = Some(node);
                }
            }
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries,
                pending_key,
                pending_is_merge,
                seen,
                merged,
                ..
            }) => match pending_key.take() {
                None => {
                    *pending_key = Some(node);
                    *pending_is_merge = is_merge_key;
                }
                Some(key) => {
                    if std::mem::take(pending_is_merge) {
                        merge_into(merged, node);
                        return Ok(());
                    }
                    // Small mappings are scanned; large ones get a key index, so both stay
                    // cheap and no key is copied in the common case.
                    if seen.is_none() && entries.len() >= 16 {
                        *seen = Some(
                            entries
                                .iter()
                                .enumerate()
                                .map(|(i, (k, _))| (k.key_text(), i))
                                .collect(),
                        );
                    }
                    let existing = match seen {
                        Some(index) => {
                            let text = key.key_text();
                            match index.get(&text) {
                                Some(&i) => Some(i),
                                None => {
                                    index.insert(text, entries.len());
                                    None
                                }
                            }
                        }
                        None => entries.iter().position(|(k, _)| k.value == key.value),
                    };
                    match existing {
                        Some(i) => {
                            duplicate = Some((key.key_text(), entries[i].0.span, key.span));
                            // Last one wins, as in Kubernetes' lenient decoding.
                            entries[i].1 = node;
                        }
                        None => entries.push((key, node)),
                    }
                }
            },
        }
        if let Some((key, first, again)) = duplicate {
            let path = self.path();
            if let Some(doc) = &mut self.doc {
                doc.duplicate_keys.push(DuplicateKey {
                    key,
                    path,
                    first,
                    again,
                });
            }
        }
        Ok(())
    }
}

fn merge_into(merged: &mut Vec<(Node, Node)>, source: Node) {
    let mut known: HashSet<String> = merged.iter().map(|(k, _)| k.key_text()).collect();
    let mut add = |k: Node, v: Node| {
        if known.insert(k.key_text()) {
            merged.push((k, v));
        }
    };
    match source.value {
        NodeValue::Map(entries) => entries.into_iter().for_each(|(k, v)| add(k, v)),
        // A list of mappings: earlier ones win, as the merge-key spec says.
        NodeValue::Seq(items) => {
            for item in items {
                if let NodeValue::Map(entries) = item.value {
                    entries.into_iter().for_each(|(k, v)| add(k, v));
                }
            }
        }
        _ => {}
    }
}

/// Resolves a plain scalar as go-yaml does for Kubernetes manifests.
fn resolve_scalar(
    text: Cow<'_, str>,
    style: ScalarStyle,
    tag: Option<&saphyr_parser::Tag>,
) -> NodeValue {
    let string = |t: Cow<'_, str>| NodeValue::Str(t.into_owned());
    if let Some(tag) = tag {
        if tag.handle == "tag:yaml.org,2002:" || tag.handle == "!!" {
            let parsed = match tag.suffix.as_str() {
                "null" => Some(NodeValue::Null),
                "bool" => parse_bool(&text).map(NodeValue::Bool),
                "int" => parse_int(&text).map(NodeValue::Int),
                "float" => parse_float(&text)
                    .or_else(|| parse_int(&text).map(|i| i as f64))
                    .map(NodeValue::Float),
                _ => None,
            };
            return parsed.unwrap_or_else(|| string(text));
        }
        return string(text);
    }
    if style != ScalarStyle::Plain {
        return string(text);
    }
    let t: &str = &text;
    if t.is_empty() || t == "~" || t == "null" || t == "Null" || t == "NULL" {
        return NodeValue::Null;
    }
    let first = t.as_bytes()[0];
    if !(first.is_ascii_alphanumeric() || matches!(first, b'-' | b'+' | b'.')) {
        return string(text);
    }
    if let Some(b) = parse_bool(t) {
        return NodeValue::Bool(b);
    }
    if let Some(i) = parse_int(t) {
        return NodeValue::Int(i);
    }
    if let Some(f) = parse_float(t) {
        return NodeValue::Float(f);
    }
    // Integers too wide for 64 bits are numbers all the same, as in Kubernetes' decoder.
    if t.bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_digit() || (i == 0 && (b == b'-' || b == b'+')))
        && let Ok(f) = t.parse::<f64>()
    {
        return NodeValue::Float(f);
    }
    string(text)
}

fn parse_bool(t: &str) -> Option<bool> {
    match t {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => Some(true),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn parse_int(t: &str) -> Option<i64> {
    let (neg, digits) = match t.as_bytes().first()? {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() {
        return None;
    }
    let cleaned: Cow<'_, str> = if digits.contains('_') {
        Cow::Owned(digits.replace('_', ""))
    } else {
        Cow::Borrowed(digits)
    };
    let d: &str = &cleaned;
    let (radix, body) = if let Some(hex) = d.strip_prefix("0x") {
        (16, hex)
    } else if let Some(oct) = d.strip_prefix("0o") {
        (8, oct)
    } else if let Some(bin) = d.strip_prefix("0b") {
        (2, bin)
    } else if d.len() > 1 && d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()) {
        // YAML 1.1 octal, as go-yaml v2 reads it.
        (8, &d[1..])
    } else if d.bytes().all(|b| b.is_ascii_digit()) {
        (10, d)
    } else {
        return None;
    };
    // Parsed unsigned and wide, so that i64::MIN, whose magnitude exceeds i64::MAX, fits.
    let magnitude = u128::from_str_radix(body, radix).ok()?;
    let value = if neg {
        -i128::try_from(magnitude).ok()?
    } else {
        i128::try_from(magnitude).ok()?
    };
    i64::try_from(value).ok()
}

fn parse_float(t: &str) -> Option<f64> {
    match t {
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Some(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Some(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Some(f64::NAN),
        _ => {}
    }
    let b = t.as_bytes();
    let body = b
        .strip_prefix(b"-")
        .or_else(|| b.strip_prefix(b"+"))
        .unwrap_or(b);
    // YAML floats: digits with a dot and/or an exponent. Rejects Rust-only forms like "inf".
    let mut seen_digit = false;
    let mut seen_dot = false;
    let mut seen_exp = false;
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        match c {
            b'0'..=b'9' => seen_digit = true,
            b'_' => {}
            b'.' if !seen_dot && !seen_exp => seen_dot = true,
            b'e' | b'E' if seen_digit && !seen_exp => {
                seen_exp = true;
                if matches!(body.get(i + 1), Some(b'-') | Some(b'+')) {
                    i += 1;
                }
            }
            _ => return None,
        }
        i += 1;
    }
    if !seen_digit || !(seen_dot || seen_exp) {
        return None;
    }
    t.replace('_', "").parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Node {
        let (docs, err) = parse_stream(text, Limits::default());
        assert!(err.is_none(), "{err:?}");
        docs.into_iter().next().unwrap().root.unwrap()
    }

    #[test]
    fn scalars_resolve_like_kubernetes() {
        let n = one("a: yes\nb: '1'\nc: 0755\nd: 1.5\ne: ~\nf: 0x1F\ng: 1e3\nh: 12Mi\n");
        let j = n.to_json();
        assert_eq!(j["a"], serde_json::json!(true));
        assert_eq!(j["b"], serde_json::json!("1"));
        assert_eq!(j["c"], serde_json::json!(493));
        assert_eq!(j["d"], serde_json::json!(1.5));
        assert_eq!(j["e"], serde_json::Value::Null);
        assert_eq!(j["f"], serde_json::json!(31));
        assert_eq!(j["g"], serde_json::json!(1000.0));
        assert_eq!(j["h"], serde_json::json!("12Mi"));
        let j =
            one("min: -9223372036854775808\nwide: 123456789012345678901\nnan: .nan\n").to_json();
        assert_eq!(j["min"], serde_json::json!(i64::MIN));
        assert_eq!(j["wide"], serde_json::json!(123456789012345678901.0));
        assert_eq!(j["nan"], serde_json::json!(".nan"));
    }

    #[test]
    fn spans_point_at_nodes() {
        let n = one("kind: Pod\nspec:\n  containers:\n  - name: web\n");
        let name = n.get("spec").unwrap().get("containers").unwrap();
        let NodeValue::Seq(items) = &name.value else {
            panic!()
        };
        let (k, v) = items[0].entry("name").unwrap();
        assert_eq!((k.span.start.line, k.span.start.col), (4, 5));
        assert_eq!((v.span.start.line, v.span.start.col), (4, 11));
    }

    #[test]
    fn duplicate_keys_are_recorded_and_last_wins() {
        let (docs, _) = parse_stream("a: 1\nb: 2\na: 3\n", Limits::default());
        let d = &docs[0];
        assert_eq!(d.duplicate_keys.len(), 1);
        assert_eq!(d.duplicate_keys[0].key, "a");
        assert_eq!(d.duplicate_keys[0].again.start.line, 3);
        assert_eq!(d.root.as_ref().unwrap().to_json()["a"], 3);
    }

    #[test]
    fn merge_keys_and_aliases() {
        let n = one("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n");
        let j = n.to_json();
        assert_eq!(j["derived"], serde_json::json!({"y": 3, "x": 1}));
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        let (_, err) = parse_stream(&text, Limits::default());
        assert!(matches!(err, Some(YamlError::AliasBomb { .. })), "{err:?}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let text = "[".repeat(20_000);
        let (_, err) = parse_stream(&text, Limits::default());
        assert!(err.is_some());
    }

    #[test]
    fn documents_and_empty_documents() {
        let (docs, err) = parse_stream(
            "# only a comment\n---\na: 1\n---\n---\nb: 2\n",
            Limits::default(),
        );
        assert!(err.is_none());
        let with_content = docs
            .iter()
            .filter(|d| d.root.as_ref().is_some_and(|r| r.value != NodeValue::Null))
            .count();
        assert_eq!(with_content, 2);
    }
}
