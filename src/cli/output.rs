//! Printing what the server returned, as kubectl prints it: server-side Tables as aligned
//! columns (kubectl's tabwriter spacing: three blanks between columns, the last one
//! unpadded), `-o name`, and objects or Lists as YAML or JSON. Pure: values in, text out.

use serde_json::{Value, json};

/// The `-o` formats `get` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// The server's columns plus its wide-only ones
    Wide,
    Yaml,
    Json,
    /// `kind/name`, one per line
    Name,
}

/// How to lay out one Table.
#[derive(Debug, Clone, Default)]
pub struct TableStyle {
    /// Include the columns the server marks as wide-only (priority above 0).
    pub wide: bool,
    /// Prepend a NAMESPACE column (`-A`).
    pub namespace_column: bool,
    /// Prefix names with `pod/`, as kubectl does when it prints several kinds.
    pub kind_prefix: Option<String>,
    /// Print the header line.
    pub headers: bool,
}

/// A Table reduced to the text of its cells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

/// One cell as kubectl shows it: strings as they are, numbers as digits, nothing as `<none>`.
fn cell_text(cell: &Value) -> String {
    match cell {
        Value::String(s) => s.clone(),
        Value::Null => "<none>".into(),
        Value::Array(items) => items.iter().map(cell_text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

/// The text of a `meta.k8s.io/v1` Table under a style.
pub fn text_table(table: &Value, style: &TableStyle) -> TextTable {
    let defs = table["columnDefinitions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let shown: Vec<usize> = defs
        .iter()
        .enumerate()
        .filter(|(_, d)| style.wide || d["priority"].as_i64().unwrap_or(0) == 0)
        .map(|(i, _)| i)
        .collect();
    let mut header: Vec<String> = Vec::new();
    if style.namespace_column {
        header.push("NAMESPACE".into());
    }
    header.extend(
        shown
            .iter()
            .map(|&i| defs[i]["name"].as_str().unwrap_or("").to_uppercase()),
    );
    let name_column = defs.iter().position(|d| d["format"] == "name");
    let rows = table["rows"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .map(|row| {
                    let cells = row["cells"].as_array().cloned().unwrap_or_default();
                    let mut out = Vec::new();
                    if style.namespace_column {
                        let ns = row.pointer("/object/metadata/namespace");
                        out.push(ns.and_then(Value::as_str).unwrap_or("").to_string());
                    }
                    for &i in &shown {
                        let mut text = cells.get(i).map(cell_text).unwrap_or_default();
                        if Some(i) == name_column
                            && let Some(prefix) = &style.kind_prefix
                        {
                            text = format!("{prefix}/{text}");
                        }
                        out.push(text);
                    }
                    out
                })
                .collect()
        })
        .unwrap_or_default();
    TextTable {
        header: if style.headers { header } else { Vec::new() },
        rows,
    }
}

/// Column widths (text plus the three-blank gap, at least six) for these lines.
pub fn widths<'a>(lines: impl IntoIterator<Item = &'a Vec<String>>) -> Vec<usize> {
    let mut widths: Vec<usize> = Vec::new();
    for line in lines {
        for (i, cell) in line.iter().enumerate() {
            let w = (cell.chars().count() + 3).max(6);
            match widths.get_mut(i) {
                Some(old) => *old = (*old).max(w),
                None => widths.push(w),
            }
        }
    }
    widths
}

/// One aligned line; the last cell is not padded.
pub fn line(cells: &[String], widths: &[usize]) -> String {
    let mut out = String::new();
    for (i, cell) in cells.iter().enumerate() {
        if i + 1 == cells.len() {
            out.push_str(cell);
        } else {
            let width = widths.get(i).copied().unwrap_or(0);
            out.push_str(cell);
            let pad = width.saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push('\n');
    out
}

/// A whole table as aligned text.
pub fn render_table(table: &TextTable) -> String {
    let all: Vec<&Vec<String>> = std::iter::once(&table.header)
        .filter(|h| !h.is_empty())
        .chain(table.rows.iter())
        .collect();
    let widths = widths(all.iter().copied());
    all.iter().map(|cells| line(cells, &widths)).collect()
}

/// `-o yaml` / `-o json` of one object or, for several, a `v1` `List`.
pub fn render_objects(objects: Vec<Value>, single: bool, format: OutputFormat) -> String {
    let value = if single && objects.len() == 1 {
        objects.into_iter().next().unwrap_or(Value::Null)
    } else {
        json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": objects,
            "metadata": {"resourceVersion": ""},
        })
    };
    match format {
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
            text.push('\n');
            text
        }
        _ => crate::diff::yaml::to_yaml(&value),
    }
}

/// The items of a list response, each with the `apiVersion` and `kind` a list leaves out.
pub fn list_items(list: &Value, api_version: &str, kind: &str) -> Vec<Value> {
    list["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut item| {
            if let Some(map) = item.as_object_mut() {
                map.entry("apiVersion")
                    .or_insert_with(|| json!(api_version));
                map.entry("kind").or_insert_with(|| json!(kind));
            }
            item
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pods_table() -> Value {
        json!({
            "kind": "Table",
            "columnDefinitions": [
                {"name": "Name", "format": "name", "priority": 0},
                {"name": "Ready", "format": "", "priority": 0},
                {"name": "Restarts", "format": "", "priority": 0},
                {"name": "IP", "format": "", "priority": 1},
            ],
            "rows": [
                {"cells": ["web-1", "1/1", 0, "10.0.0.5"],
                 "object": {"metadata": {"name": "web-1", "namespace": "shop"}}},
                {"cells": ["a", "0/1", 12, null],
                 "object": {"metadata": {"name": "a", "namespace": "default"}}},
            ],
        })
    }

    #[test]
    fn columns_are_aligned_with_three_blanks_and_wide_ones_only_on_request() {
        let style = TableStyle {
            headers: true,
            ..TableStyle::default()
        };
        let text = render_table(&text_table(&pods_table(), &style));
        assert_eq!(
            text,
            "NAME    READY   RESTARTS\nweb-1   1/1     0\na       0/1     12\n"
        );
        let wide = TableStyle {
            wide: true,
            namespace_column: true,
            kind_prefix: Some("pod".into()),
            headers: true,
        };
        let text = render_table(&text_table(&pods_table(), &wide));
        assert_eq!(
            text,
            "NAMESPACE   NAME        READY   RESTARTS   IP\n\
             shop        pod/web-1   1/1     0          10.0.0.5\n\
             default     pod/a       0/1     12         <none>\n"
        );
    }

    #[test]
    fn one_object_prints_alone_and_several_as_a_list() {
        let one = render_objects(vec![json!({"kind": "Pod"})], true, OutputFormat::Json);
        assert_eq!(one, "{\n  \"kind\": \"Pod\"\n}\n");
        let list = render_objects(vec![json!({"kind": "Pod"})], false, OutputFormat::Yaml);
        assert!(
            list.starts_with("apiVersion: v1\nkind: List\nitems:\n"),
            "{list}"
        );
    }
}
