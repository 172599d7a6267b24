//! The layout `kubectl describe` uses: `Key:` fields whose values line up within each run of
//! fields at one indent (two blanks after the longest key), multi-line values continued
//! under the first, and small tables with two blanks between columns.

use serde_json::Value;

#[derive(Debug, Clone)]
enum Line {
    /// `key:` then values, the first on the same line.
    Field {
        indent: usize,
        key: String,
        values: Vec<String>,
    },
    Text {
        indent: usize,
        text: String,
    },
    Table {
        indent: usize,
        rows: Vec<Vec<String>>,
    },
}

/// A describe page being written.
#[derive(Debug, Clone, Default)]
pub struct Doc {
    lines: Vec<Line>,
}

impl Doc {
    /// `Key:  value`.
    pub fn field(&mut self, indent: usize, key: &str, value: impl Into<String>) {
        self.fields(indent, key, vec![value.into()]);
    }

    /// `Key:  first` with the others below it; `<none>` when there are none.
    pub fn fields(&mut self, indent: usize, key: &str, values: Vec<String>) {
        let values = if values.is_empty() {
            vec!["<none>".to_string()]
        } else {
            values
        };
        self.lines.push(Line::Field {
            indent,
            key: format!("{key}:"),
            values,
        });
    }

    /// A heading such as `Containers:` whose content follows, indented.
    pub fn heading(&mut self, indent: usize, key: &str) {
        self.text(indent, &format!("{key}:"));
    }

    pub fn text(&mut self, indent: usize, text: &str) {
        self.lines.push(Line::Text {
            indent,
            text: text.to_string(),
        });
    }

    /// A table: the header, a dashed rule (at least four dashes, as kubectl draws it),
    /// then the rows.
    pub fn table(&mut self, indent: usize, header: &[&str], rows: Vec<Vec<String>>) {
        let mut all = vec![header.iter().map(|h| h.to_string()).collect::<Vec<_>>()];
        all.push(header.iter().map(|h| "-".repeat(h.len().max(4))).collect());
        all.extend(rows);
        self.lines.push(Line::Table { indent, rows: all });
    }

    /// Labels: one `key=value` per line, sorted.
    pub fn map(&mut self, indent: usize, key: &str, map: Option<&Value>) {
        self.pairs(indent, key, map, "=");
    }

    /// A string map, one `key<separator>value` per line, sorted; values trimmed, as a
    /// multi-line annotation would otherwise break the page.
    pub fn pairs(&mut self, indent: usize, key: &str, map: Option<&Value>, separator: &str) {
        let mut pairs: Vec<String> = map
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| {
                        format!("{k}{separator}{}", v.as_str().unwrap_or_default().trim())
                    })
                    .collect()
            })
            .unwrap_or_default();
        pairs.sort();
        self.fields(indent, key, pairs);
    }

    fn indent(&self, i: usize) -> usize {
        match &self.lines[i] {
            Line::Field { indent, .. } | Line::Text { indent, .. } | Line::Table { indent, .. } => {
                *indent
            }
        }
    }

    /// The value column of the field at `i`: two blanks after the longest key among the
    /// fields at its indent that no shallower line, table or blank line separates from it.
    fn value_column(&self, i: usize, indent: usize) -> usize {
        let in_run = |j: &usize| match &self.lines[*j] {
            Line::Table { indent: k, .. } => *k > indent,
            Line::Text { text, .. } if text.is_empty() => false,
            other => {
                self.indent(*j) > indent
                    || matches!(other, Line::Field { indent: k, .. } | Line::Text { indent: k, .. } if *k == indent)
            }
        };
        let start = (0..i).rev().take_while(in_run).last().unwrap_or(i);
        let end = (i..self.lines.len()).take_while(in_run).last().unwrap_or(i);
        let longest = self.lines[start..=end]
            .iter()
            .filter_map(|l| match l {
                Line::Field { indent: k, key, .. } if *k == indent => Some(key.chars().count()),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        longest + 2
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            match l {
                Line::Field {
                    indent,
                    key,
                    values,
                } => {
                    let width = self.value_column(i, *indent);
                    let pad = " ".repeat(*indent);
                    let gap = " ".repeat(width - key.chars().count());
                    out.push_str(&format!("{pad}{key}{gap}{}\n", values[0]));
                    for more in &values[1..] {
                        let blank = " ".repeat(indent + width);
                        out.push_str(&format!("{blank}{more}\n"));
                    }
                }
                Line::Text { indent, text } => {
                    out.push_str(&format!("{}{text}\n", " ".repeat(*indent)));
                }
                Line::Table { indent, rows } => {
                    let mut widths: Vec<usize> = Vec::new();
                    for row in rows {
                        for (c, cell) in row.iter().enumerate() {
                            let w = cell.chars().count() + 2;
                            match widths.get_mut(c) {
                                Some(old) => *old = (*old).max(w),
                                None => widths.push(w),
                            }
                        }
                    }
                    for row in rows {
                        let mut text = " ".repeat(*indent);
                        for (c, cell) in row.iter().enumerate() {
                            text.push_str(cell);
                            if c + 1 < row.len() {
                                let pad = widths[c] - cell.chars().count();
                                text.push_str(&" ".repeat(pad));
                            }
                        }
                        out.push_str(text.trim_end());
                        out.push('\n');
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_line_up_per_run_and_continue_under_the_first() {
        let mut doc = Doc::default();
        doc.field(0, "Name", "web");
        doc.map(0, "Labels", Some(&json!({"tier": "front", "app": "web"})));
        doc.map(0, "Annotations", None);
        doc.heading(0, "Containers");
        doc.text(2, "web:");
        doc.field(4, "Image", "nginx");
        doc.heading(4, "Environment");
        doc.field(6, "MODE", "production");
        doc.field(4, "Restart Count", "0");
        doc.table(
            2,
            &["Type", "Status"],
            vec![vec!["Ready".into(), "True".into()]],
        );
        assert_eq!(
            doc.render(),
            "Name:         web\n\
             Labels:       app=web\n\
             \x20             tier=front\n\
             Annotations:  <none>\n\
             Containers:\n\
             \x20 web:\n\
             \x20   Image:          nginx\n\
             \x20   Environment:\n\
             \x20     MODE:  production\n\
             \x20   Restart Count:  0\n\
             \x20 Type   Status\n\
             \x20 ----   ------\n\
             \x20 Ready  True\n"
        );
    }
}
