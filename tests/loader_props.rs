//! Property tests of the manifest loader and validator, bounded to run in CI in seconds:
//! no input makes them panic, YAML that a JSON value is written as reads back as that value,
//! and every node's span lies in the text with a line and column that agree with its index.

use berth::manifest::kinds::KINDS;
use berth::manifest::load::load_bytes;
use berth::manifest::yaml::{Limits, Node, NodeValue, Pos, parse_stream};
use berth::manifest::{LoadOptions, ValidateOptions, load_text, validate};
use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use serde_json::{Map, Value};

/// Cases per property: enough to find the usual suspects, few enough that the file runs in
/// seconds in a debug build. The seed is fixed so CI runs are repeatable; set
/// `PROPTEST_RNG_SEED` (another seed) and `PROPTEST_CASES` (more cases) to explore further.
fn config(cases: u32) -> ProptestConfig {
    let defaults = ProptestConfig::default(); // reads the PROPTEST_* variables
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            defaults.cases
        } else {
            cases
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            defaults.rng_seed
        } else {
            RngSeed::Fixed(0x6265_7274_6800_0001)
        },
        failure_persistence: None,
        ..defaults
    }
}

// ---------------------------------------------------------------------------------------------
// Nothing panics.

/// Characters that mean something to YAML, plus some that break encodings and line counting.
fn yamlish_text() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "b",
        "key",
        "kind",
        "apiVersion",
        "v1",
        "Pod",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "-",
        "- ",
        ": ",
        ":",
        ",",
        "[",
        "]",
        "{",
        "}",
        "&a ",
        "*a",
        "&b ",
        "*b",
        "!",
        "!!str ",
        "!!int ",
        "|",
        ">",
        "|-",
        "'",
        "\"",
        "\\",
        "#",
        "%YAML 1.2\n",
        "---\n",
        "...\n",
        "? ",
        "<<: ",
        "~",
        "0x1F",
        "0o17",
        "1e9",
        "-.inf",
        ".nan",
        "99999999999999999999",
        "é",
        "日本",
        "\u{85}",
        "\u{2028}",
        "\u{7f}",
        "\u{0}",
        "@",
        "`",
    ]);
    // A byte-order mark only where editors put one: at the start of the file.
    (any::<bool>(), prop::collection::vec(pieces, 0..60)).prop_map(|(bom, v)| {
        let text = v.concat();
        if bom { format!("\u{feff}{text}") } else { text }
    })
}

fn load_and_validate(text: String) {
    let (file, objects, problems) = load_text("p.yaml".into(), text, LoadOptions::default());
    let lines = position_of(&file.text, file.text.chars().count()).0;
    for p in &problems {
        if let Some(span) = p.span {
            // A parse error may point just past the last line (the end of input), not beyond.
            assert!(
                span.start.line >= 1 && span.start.line <= lines + 1 && span.start.col >= 1,
                "problem outside the text: {p:?}"
            );
        }
    }
    let validated = validate(&objects, ValidateOptions::default());
    assert_eq!(validated.verdicts.len(), objects.len());
    let chars = file.text.chars().count();
    for p in validated.problems.iter().flatten() {
        let span = p.span.expect("validation problems point at a node");
        assert!(span.start.index <= chars, "problem outside the text: {p:?}");
        assert!(span.start.line >= 1 && span.start.col >= 1, "{p:?}");
    }
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn any_string_loads_and_validates_without_panic(text in any::<String>()) {
        load_and_validate(text);
    }

    #[test]
    fn yaml_like_text_loads_and_validates_without_panic(text in yamlish_text()) {
        load_and_validate(text);
    }

    #[test]
    fn any_bytes_load_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_, objects, _) = load_bytes("b.yaml".into(), bytes, LoadOptions::default());
        let _ = validate(&objects, ValidateOptions::default());
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest-shaped objects of every known kind: the validator copes with any shape.

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "metadata", "name", "namespace", "labels", "annotations", "spec", "template",
            "containers", "initContainers", "image", "ports", "containerPort", "port",
            "targetPort", "protocol", "selector", "matchLabels", "matchExpressions", "replicas",
            "resources", "limits", "requests", "cpu", "memory", "env", "value", "valueFrom",
            "volumes", "volumeMounts", "mountPath", "data", "stringData", "binaryData", "rules",
            "host", "http", "paths", "backend", "service", "schedule", "jobTemplate", "items",
            "kind", "apiVersion", "status", "type", "key", "operator", "values",
            "app.kubernetes.io/name", "imagePullPolicy", "hostPort", "generateName",
        ])
        .prop_map(str::to_string),
        1 => "[a-zA-Z./_-]{0,12}",
    ]
}

fn field_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        prop::sample::select(vec![0i64, 1, -1, 80, 65535, 65536, 2147483648]).prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "",
            "web",
            "nginx:1.27",
            "250m",
            "64Mi",
            "1e3",
            "1.5Gi",
            "-1",
            "0.5",
            "TCP",
            "UDP",
            "Always",
            "IfNotPresent",
            "In",
            "Exists",
            "*/5 * * * *",
            "a/b",
            "UPPER",
            "x.y-z",
            "ünïcödé",
            "-leading",
            "trailing-",
            "1000000000000000000000Ki",
        ])
        .prop_map(|s| Value::String(s.to_string())),
        "\\PC{0,16}".prop_map(Value::String),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

fn manifest() -> impl Strategy<Value = Value> {
    (
        0..KINDS.len(),
        prop::collection::vec((field_name(), field_value()), 0..6),
        field_value(),
    )
        .prop_map(|(kind, fields, metadata)| {
            let info = &KINDS[kind];
            let mut object: Map<String, Value> = fields.into_iter().collect();
            object.insert("apiVersion".into(), Value::from(info.api_version));
            object.insert("kind".into(), Value::from(info.kind));
            object.insert("metadata".into(), metadata);
            Value::Object(object)
        })
}

proptest! {
    #![proptest_config(config(300))]

    #[test]
    fn manifests_of_any_shape_validate_without_panic(
        objects in prop::collection::vec(manifest(), 1..4),
        as_yaml in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let text = objects
            .iter()
            .map(|o| if as_yaml { emit_document(o, seed) } else { serde_json::to_string(o).unwrap() })
            .collect::<Vec<_>>()
            .join("\n---\n");
        load_and_validate(text);
    }
}

// ---------------------------------------------------------------------------------------------
// A small YAML emitter, with its style choices driven by a seed, to write JSON values as the
// many shapes of YAML that mean the same thing.

struct Styles(u64);

impl Styles {
    /// A pseudo-random choice among `n` (xorshift; the seed comes from proptest).
    fn pick(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Characters YAML lets stand unescaped in a scalar and never treats as a line break.
fn printable(c: char) -> bool {
    matches!(c, '\t' | ' '..='~' | '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..)
        && c != '\u{feff}'
        && c != '\u{2028}'
        && c != '\u{2029}'
}

/// Strings safe to write plain: they cannot be mistaken for another type or for syntax.
fn plain_safe(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && !matches!(
            lower.as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null"
        )
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if printable(c) => out.push(c),
            c if (c as u32) <= 0xff => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if (c as u32) <= 0xffff => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push_str(&format!("\\U{:08x}", c as u32)),
        }
    }
    out.push('"');
    out
}

fn scalar_string(s: &str, styles: &mut Styles) -> String {
    let single_ok = s.chars().all(printable) && !s.contains('\t');
    match styles.pick(3) {
        0 if plain_safe(s) => s.to_string(),
        1 if single_ok => format!("'{}'", s.replace('\'', "''")),
        _ => double_quoted(s),
    }
}

fn scalar(value: &Value, styles: &mut Styles) -> String {
    match value {
        Value::Null => ["null", "~", "Null"][styles.pick(3) as usize].to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if !(n.is_i64() || n.is_u64()) => format!("{f:?}"),
            _ => n.to_string(),
        },
        Value::String(s) => scalar_string(s, styles),
        Value::Array(_) | Value::Object(_) => unreachable!("not a scalar"),
    }
}

fn flow(value: &Value, styles: &mut Styles) -> String {
    match value {
        Value::Array(items) => {
            let items: Vec<String> = items.iter().map(|v| flow(v, styles)).collect();
            format!("[{}]", items.join(", "))
        }
        Value::Object(map) => {
            let entries: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{}: {}", scalar_string(k, styles), flow(v, styles)))
                .collect();
            format!("{{{}}}", entries.join(", "))
        }
        scalar_value => scalar(scalar_value, styles),
    }
}

fn is_block_collection(value: &Value) -> bool {
    match value {
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
        _ => false,
    }
}

/// A mapping value or sequence item that is not written as a block collection.
fn inline_value(value: &Value, indent: usize, styles: &mut Styles) -> String {
    if let Value::String(s) = value
        && s.contains('\n')
        && !s.ends_with('\n')
        && s.chars().all(|c| c == '\n' || printable(c))
        && styles.pick(2) == 0
    {
        // A literal block scalar, its indentation given explicitly so leading spaces are kept.
        let pad = " ".repeat(indent + 2);
        let lines: Vec<String> = s
            .split('\n')
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!("{pad}{l}")
                }
            })
            .collect();
        return format!("|2-\n{}", lines.join("\n"));
    }
    flow(value, styles)
}

fn block(value: &Value, indent: usize, styles: &mut Styles, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", scalar_string(k, styles)));
                if is_block_collection(v) && styles.pick(4) != 0 {
                    out.push('\n');
                    // Sequences under a key may sit at the key's own indentation.
                    let child = if v.is_array() && styles.pick(2) == 0 {
                        indent
                    } else {
                        indent + 2
                    };
                    block(v, child, styles, out);
                } else {
                    out.push(' ');
                    out.push_str(&inline_value(v, indent, styles));
                    out.push('\n');
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                if is_block_collection(item) && styles.pick(4) != 0 {
                    out.push('\n');
                    block(item, indent + 2, styles, out);
                } else {
                    out.push(' ');
                    out.push_str(&flow(item, styles));
                    out.push('\n');
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&flow(other, styles));
            out.push('\n');
        }
    }
}

/// One YAML document meaning `value`, in block or flow style, with comments sprinkled in.
fn emit_document(value: &Value, seed: u64) -> String {
    let mut styles = Styles(seed | 1);
    let mut out = String::new();
    if styles.pick(3) == 0 {
        out.push_str("# a comment\n");
    }
    if styles.pick(3) == 0 {
        out.push_str(&flow(value, &mut styles));
        out.push('\n');
    } else {
        block(value, 0, &mut styles, &mut out);
    }
    out
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z][a-z0-9._/-]{0,10}".prop_map(Value::String),
        any::<String>().prop_map(Value::String),
        "[ a-z'\"\\\\\n\t#:,\\[\\]{}&*!|>%@`-]{0,20}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec(("\\PC{0,8}", inner), 0..6)
                .prop_map(|entries| Value::Object(entries.into_iter().collect())),
        ]
    })
}

// ---------------------------------------------------------------------------------------------
// Spans.

/// Where character `index` of `text` is, counting lines as YAML does (`\n`, `\r\n` and a lone
/// `\r` each end a line) and columns in characters as an editor shows them.
fn position_of(text: &str, index: usize) -> (usize, usize) {
    let chars: Vec<char> = text.chars().collect();
    let (mut line, mut col) = (1, 1);
    for (i, c) in chars.iter().take(index).enumerate() {
        match c {
            '\n' => (line, col) = (line + 1, 1),
            '\r' if chars.get(i + 1) != Some(&'\n') => (line, col) = (line + 1, 1),
            '\r' => {}
            // A byte-order mark opening the file is invisible in an editor: no column.
            '\u{feff}' if i == 0 => {}
            _ => col += 1,
        }
    }
    (line, col)
}

fn check_pos(text: &str, chars: usize, pos: Pos, what: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        pos.index <= chars,
        "{what} at {pos:?} is past the end ({chars} chars)"
    );
    let (line, col) = position_of(text, pos.index);
    prop_assert_eq!(
        (pos.line, pos.col),
        (line, col),
        "{} at index {} says line {} col {}, the text says line {} col {}",
        what,
        pos.index,
        pos.line,
        pos.col,
        line,
        col
    );
    Ok(())
}

/// A position at the very end of the text may be reported on the line after it (the parser
/// sees an implicit line break at the end of input); anywhere else it must be exact.
fn check_pos_or_end(text: &str, chars: usize, pos: Pos, what: &str) -> Result<(), TestCaseError> {
    if pos.index < chars {
        return check_pos(text, chars, pos, what);
    }
    let (line, _) = position_of(text, chars);
    prop_assert!(
        pos.line <= line + 1,
        "{what} at the end of the text ({pos:?}) is on line {}, past line {}",
        pos.line,
        line + 1
    );
    Ok(())
}

fn check_spans(text: &str, chars: usize, node: &Node) -> Result<(), TestCaseError> {
    prop_assert!(
        node.span.start.index <= node.span.end.index,
        "{:?}",
        node.span
    );
    check_pos_or_end(text, chars, node.span.start, "start")?;
    check_pos_or_end(text, chars, node.span.end, "end")?;
    match &node.value {
        NodeValue::Seq(items) => {
            for item in items {
                check_spans(text, chars, item)?;
            }
        }
        NodeValue::Map(entries) => {
            for (k, v) in entries {
                check_spans(text, chars, k)?;
                check_spans(text, chars, v)?;
            }
        }
        NodeValue::Str(s) if plain_safe(s) => {
            // A string node starts at its text, or at what comes before it: a quote, a block
            // indicator, a tag or an anchor.
            let at: String = text
                .chars()
                .skip(node.span.start.index)
                .take(s.chars().count())
                .collect();
            prop_assert!(
                at == *s || at.starts_with(['"', '\'', '|', '>', '!', '&']),
                "the span of {:?} starts at {:?}",
                s,
                at
            );
        }
        _ => {}
    }
    Ok(())
}

fn parse_one(text: &str) -> Result<Node, TestCaseError> {
    let (docs, error) = parse_stream(text, Limits::default());
    prop_assert!(error.is_none(), "{error:?} in:\n{text}");
    let roots: Vec<Node> = docs.into_iter().filter_map(|d| d.root).collect();
    prop_assert_eq!(roots.len(), 1, "documents in:\n{}", text);
    Ok(roots.into_iter().next().unwrap())
}

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn yaml_written_from_a_value_reads_back_as_that_value(value in json_value(), seed in any::<u64>()) {
        let text = emit_document(&value, seed);
        let node = parse_one(&text)?;
        prop_assert_eq!(node.to_json(), value, "read back from:\n{}", text);
    }

    #[test]
    fn json_text_reads_back_as_its_value(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            serde_json::to_string(&value).unwrap()
        };
        let node = parse_one(&text)?;
        prop_assert_eq!(node.to_json(), value, "read back from:\n{}", text);
    }

    #[test]
    fn spans_of_generated_yaml_agree_with_the_text(value in json_value(), seed in any::<u64>(), crlf in any::<bool>()) {
        let mut text = emit_document(&value, seed);
        if crlf {
            text = text.replace('\n', "\r\n");
        }
        let node = parse_one(&text)?;
        check_spans(&text, text.chars().count(), &node)?;
    }

    #[test]
    fn spans_of_any_parsed_text_agree_with_the_text(text in yamlish_text()) {
        let (docs, error) = parse_stream(&text, Limits::default());
        let chars = text.chars().count();
        for doc in &docs {
            if let Some(root) = &doc.root {
                check_spans(&text, chars, root)?;
            }
        }
        if let Some(e) = error {
            check_pos_or_end(&text, chars, e.pos(), "error")?;
        }
    }
}

#[test]
fn a_quoted_merge_key_is_an_ordinary_key() {
    // Only a plain `<<` merges (YAML 1.1, as Kubernetes' decoder reads it); a quoted one is
    // just a key, as in JSON.
    let node = parse_one_plain("{\"<<\": {a: 1}, b: 2}\n");
    assert_eq!(node.to_json(), serde_json::json!({"<<": {"a": 1}, "b": 2}));
}

fn parse_one_plain(text: &str) -> Node {
    let (docs, error) = parse_stream(text, Limits::default());
    assert!(error.is_none(), "{error:?}");
    docs.into_iter().find_map(|d| d.root).expect("a document")
}
