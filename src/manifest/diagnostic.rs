//! Problems found in manifests, and how they are shown: human (miette snippets), JSON, JUnit
//! XML and GitHub Actions annotations.

use std::fmt::Write as _;
use std::sync::Arc;

use serde_json::json;

use super::SourceFile;
use super::yaml::Span;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

/// One thing wrong with the input.
#[derive(Debug, Clone)]
pub struct Problem {
    pub severity: Severity,
    /// The file as the user named it.
    pub path: String,
    /// The file's text, for snippets. `None` when the file could not be read.
    pub source: Option<Arc<SourceFile>>,
    pub span: Option<Span>,
    /// `Deployment shop/web`.
    pub object: Option<String>,
    /// `spec.template.spec.containers[0].image`.
    pub field: Option<String>,
    pub reason: String,
    pub help: Option<String>,
    /// A short stable name for the kind of problem (`unknown-field`, `io`, `parse`, …).
    pub rule: &'static str,
}

impl Problem {
    pub fn io(path: &str, error: &std::io::Error) -> Problem {
        Problem {
            severity: Severity::Error,
            path: path.to_string(),
            source: None,
            span: None,
            object: None,
            field: None,
            reason: format!("cannot read: {error}"),
            help: Some("check that the path exists and is readable".into()),
            rule: "io",
        }
    }

    pub fn file_error(
        file: &Arc<SourceFile>,
        span: Option<Span>,
        rule: &'static str,
        reason: String,
        help: Option<String>,
    ) -> Problem {
        Problem {
            severity: Severity::Error,
            path: file.path.clone(),
            source: Some(file.clone()),
            span,
            object: None,
            field: None,
            reason,
            help,
            rule,
        }
    }

    pub fn line(&self) -> Option<usize> {
        self.span.map(|s| s.start.line)
    }

    pub fn column(&self) -> Option<usize> {
        self.span.map(|s| s.start.col)
    }

    /// `file:line:col` (or just the file).
    pub fn location(&self) -> String {
        match self.span {
            Some(s) => format!("{}:{}:{}", self.path, s.start.line, s.start.col),
            None => self.path.clone(),
        }
    }

    /// One line: `Deployment shop/web: spec.replicas: expected integer, found string "x"`.
    pub fn message(&self) -> String {
        let mut out = String::new();
        if let Some(object) = &self.object {
            out.push_str(object);
            out.push_str(": ");
        }
        if let Some(field) = &self.field
            && !field.is_empty()
        {
            out.push_str(field);
            out.push_str(": ");
        }
        out.push_str(&self.reason);
        out
    }
}

/// Problems made safe to show where Secret values must not appear (CI logs, a GitSource's
/// status): no source snippet for a Secret (it shows the values and their neighbours), and
/// no reason or help for a Secret's `data` or `stringData` field (they may quote the value).
pub fn hide_secret_values(problems: Vec<Problem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|mut p| {
            let secret_object = p
                .object
                .as_deref()
                .is_some_and(|o| o.starts_with("Secret "));
            let secret_file = p.source.as_ref().is_some_and(|f| f.text.contains("Secret"));
            if secret_object || secret_file {
                p.source = None;
            }
            let secret_field = p
                .field
                .as_deref()
                .is_some_and(|f| f.starts_with("data") || f.starts_with("stringData"));
            if secret_object && secret_field {
                p.reason = "invalid value (not shown: it is Secret data)".into();
                p.help = Some("run `berth validate` on your machine to see the value".into());
            }
            p
        })
        .collect()
}

/// Counts for the `--summary` line, as kubeconform prints it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub resources: usize,
    pub files: usize,
    pub valid: usize,
    pub invalid: usize,
    /// Files or documents that could not be read or parsed.
    pub errors: usize,
    /// Objects not checked (unknown kinds with `--ignore-unknown-kinds`).
    pub skipped: usize,
}

impl Summary {
    /// `3 errors in 2 of 5 resources[ and 1 of 4 files]`, or `None` without errors.
    pub fn error_line(&self, errors: usize) -> Option<String> {
        if errors == 0 {
            return None;
        }
        let mut line = format!(
            "{errors} error{} in {} of {} resources",
            if errors == 1 { "" } else { "s" },
            self.invalid,
            self.resources,
        );
        if self.errors > 0 {
            line.push_str(&format!(" and {} of {} files", self.errors, self.files));
        }
        Some(line)
    }

    pub fn line(&self) -> String {
        format!(
            "Summary: {} resource{} found in {} file{} - Valid: {}, Invalid: {}, Errors: {}, Skipped: {}",
            self.resources,
            if self.resources == 1 { "" } else { "s" },
            self.files,
            if self.files == 1 { "" } else { "s" },
            self.valid,
            self.invalid,
            self.errors,
            self.skipped
        )
    }
}

/// The character offset `index` of `text` as a byte offset.
fn byte_offset(text: &str, index: usize) -> usize {
    if text.is_ascii() {
        return index.min(text.len());
    }
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(b, _)| b)
}

#[derive(Debug)]
struct Rendered {
    message: String,
    help: Option<String>,
    severity: miette::Severity,
    source: Option<miette::NamedSource<Arc<str>>>,
    label: Option<miette::LabeledSpan>,
}

impl std::fmt::Display for Rendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Rendered {}

impl miette::Diagnostic for Rendered {
    fn severity(&self) -> Option<miette::Severity> {
        Some(self.severity)
    }
    fn help<'a>(&'a self) -> Option<Box<dyn std::fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|h| Box::new(h.clone()) as Box<dyn std::fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.source.as_ref().map(|s| s as &dyn miette::SourceCode)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = miette::LabeledSpan> + '_>> {
        self.label
            .clone()
            .map(|l| Box::new(std::iter::once(l)) as Box<dyn Iterator<Item = _>>)
    }
}

/// Longest source line shown in a snippet. A longer one (minified JSON, a huge value, a
/// hostile file) would flood the terminal, and miette panics on columns past 65,535.
const MAX_SNIPPET_LINE: usize = 500;

/// Whether the line at byte `at` and the context lines around it are short enough to show.
fn snippet_fits(text: &str, at: usize) -> bool {
    let at = at.min(text.len());
    let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
    let window_start = match line_start {
        0 => 0,
        _ => text[..line_start - 1].rfind('\n').map_or(0, |i| i + 1),
    };
    let line_end = text[at..].find('\n').map_or(text.len(), |i| at + i);
    let window_end = match line_end {
        end if end == text.len() => end,
        end => text[end + 1..]
            .find('\n')
            .map_or(text.len(), |i| end + 1 + i),
    };
    text[window_start..window_end]
        .lines()
        .all(|l| l.len() <= MAX_SNIPPET_LINE)
}

/// Problems shown with a snippet; later ones get their location and message only. Each
/// snippet costs a scan of its file, and nobody reads the thousandth one.
const MAX_SNIPPETS: usize = 100;

/// Problems printed in human form at all; a terminal or CI log must stay readable, and the
/// machine formats carry the rest.
const MAX_SHOWN: usize = 1000;

/// Renders problems for a person: `file:line:col`, the message, a snippet with the node
/// underlined, and the help line. `color` only when writing to a terminal.
pub fn render_human(problems: &[Problem], color: bool) -> String {
    let theme = if color {
        miette::GraphicalTheme::unicode()
    } else {
        miette::GraphicalTheme::unicode_nocolor()
    };
    let handler = miette::GraphicalReportHandler::new_themed(theme).with_context_lines(1);
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i == MAX_SHOWN {
            let _ = writeln!(
                out,
                "… {} more problems not shown (-o json lists every one)\n",
                problems.len() - MAX_SHOWN
            );
            break;
        }
        let (source, label) = match (&p.source, p.span) {
            (Some(file), Some(span))
                if i < MAX_SNIPPETS
                    && !file.text.is_empty()
                    && snippet_fits(&file.text, byte_offset(&file.text, span.start.index)) =>
            {
                let start = byte_offset(&file.text, span.start.index);
                let mut end = byte_offset(&file.text, span.end.index.max(span.start.index));
                // Point at the node's first line only: a mapping's span can run for pages.
                if let Some(nl) = file.text[start..end].find('\n') {
                    end = start + nl;
                }
                let len = end
                    .saturating_sub(start)
                    .max(1)
                    .min(file.text.len().saturating_sub(start));
                let label_text = p.field.clone().unwrap_or_else(|| "here".into());
                (
                    Some(miette::NamedSource::new(&file.path, file.text.clone())),
                    Some(miette::LabeledSpan::new(Some(label_text), start, len)),
                )
            }
            _ => (None, None),
        };
        let severity = match p.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        };
        let rendered = Rendered {
            message: format!("{}: {}", p.location(), p.message()),
            help: p.help.clone(),
            severity,
            source,
            label,
        };
        let _ = handler.render_report(&mut out, &rendered);
        out.push('\n');
    }
    out
}

/// The JSON report: every problem and the summary.
pub fn render_json(problems: &[Problem], summary: &Summary) -> String {
    let items: Vec<serde_json::Value> = problems
        .iter()
        .map(|p| {
            json!({
                "severity": match p.severity { Severity::Error => "error", Severity::Warning => "warning" },
                "file": p.path,
                "line": p.line(),
                "column": p.column(),
                "object": p.object,
                "field": p.field,
                "reason": p.reason,
                "help": p.help,
                "rule": p.rule,
            })
        })
        .collect();
    let report = json!({
        "problems": items,
        "summary": {
            "resources": summary.resources,
            "files": summary.files,
            "valid": summary.valid,
            "invalid": summary.invalid,
            "errors": summary.errors,
            "skipped": summary.skipped,
        }
    });
    let mut text = serde_json::to_string_pretty(&report).expect("report serializes");
    text.push('\n');
    text
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// One test case of the JUnit report: a resource or an unreadable file.
#[derive(Debug, Clone)]
pub struct Case {
    /// The file, used as the test's class name.
    pub file: String,
    /// `Deployment shop/web`, or the file for file-level problems.
    pub name: String,
    pub problems: Vec<Problem>,
    pub skipped: bool,
}

/// JUnit XML, one test case per resource, for CI systems that show test reports.
pub fn render_junit(cases: &[Case]) -> String {
    let failures = cases
        .iter()
        .filter(|c| c.problems.iter().any(|p| p.severity == Severity::Error))
        .count();
    let skipped = cases.iter().filter(|c| c.skipped).count();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"berth validate\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        cases.len()
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"berth validate\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">",
        cases.len()
    );
    for case in cases {
        let _ = write!(
            out,
            "    <testcase classname=\"{}\" name=\"{}\"",
            xml_escape(&case.file),
            xml_escape(&case.name)
        );
        let errors: Vec<&Problem> = case
            .problems
            .iter()
            .filter(|p| p.severity == Severity::Error)
            .collect();
        if errors.is_empty() && !case.skipped {
            out.push_str("/>\n");
            continue;
        }
        out.push_str(">\n");
        if case.skipped {
            out.push_str("      <skipped message=\"unknown kind\"/>\n");
        }
        for p in errors {
            let _ = writeln!(
                out,
                "      <failure message=\"{}\" type=\"{}\">{}</failure>",
                xml_escape(&p.message()),
                p.rule,
                xml_escape(&format!(
                    "{}: {}",
                    p.location(),
                    p.help.as_deref().unwrap_or("")
                ))
            );
        }
        out.push_str("    </testcase>\n");
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

fn gh_escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_escape_property(s: &str) -> String {
    gh_escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: `::error file=…,line=…,col=…::message`.
pub fn render_github(problems: &[Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        let level = match p.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = format!("file={}", gh_escape_property(&p.path));
        if let (Some(line), Some(col)) = (p.line(), p.column()) {
            let _ = write!(props, ",line={line},col={col}");
        }
        let _ = write!(
            props,
            ",title={}",
            gh_escape_property(&format!("berth validate: {}", p.rule))
        );
        let mut message = p.message();
        if let Some(help) = &p.help {
            message.push_str(" (");
            message.push_str(help);
            message.push(')');
        }
        let _ = writeln!(out, "::{level} {props}::{}", gh_escape_data(&message));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_values_are_left_out_of_problems_about_secrets() {
        let file = Arc::new(SourceFile {
            path: "s.yaml".into(),
            text: Arc::from("kind: Secret\ndata: {password: hunter2}\n"),
        });
        let problem = |object: &str, field: &str| Problem {
            severity: Severity::Error,
            path: file.path.clone(),
            source: Some(file.clone()),
            span: None,
            object: Some(object.into()),
            field: Some(field.into()),
            reason: "not valid base64: hunter2".into(),
            help: None,
            rule: "format",
        };
        let hidden = hide_secret_values(vec![
            problem("Secret default/s", "data.password"),
            problem("Secret default/s", "metadata.name"),
            problem("ConfigMap default/c", "data.x"),
        ]);
        assert!(hidden.iter().all(|p| p.source.is_none()));
        assert!(!hidden[0].message().contains("hunter2"));
        assert!(hidden[0].reason.contains("not shown"));
        assert_eq!(hidden[1].reason, "not valid base64: hunter2");
        assert_eq!(hidden[2].reason, "not valid base64: hunter2");
    }

    #[test]
    fn github_annotations_escape_their_properties() {
        let p = Problem {
            severity: Severity::Error,
            path: "a,b.yaml".into(),
            source: None,
            span: None,
            object: None,
            field: None,
            reason: "50% bad\nnext".into(),
            help: None,
            rule: "parse",
        };
        let out = render_github(&[p]);
        assert_eq!(
            out,
            "::error file=a%2Cb.yaml,title=berth validate%3A parse::50%25 bad%0Anext\n"
        );
    }

    #[test]
    fn long_lines_get_no_snippet() {
        let long = "x".repeat(70_000);
        assert!(snippet_fits("a: 1\nb: 2\nc: 3\n", 5));
        assert!(!snippet_fits(&format!("a: {long}\n"), 1));
        assert!(!snippet_fits(&format!("a: {long}\nb: 2\n"), 70_004));
        assert!(snippet_fits(
            &format!("a: {long}\nb: 2\nc: 3\nd: 4\n"),
            70_010
        ));
    }

    #[test]
    fn byte_offsets_count_characters() {
        assert_eq!(byte_offset("é: x", 1), 2);
        assert_eq!(byte_offset("ab", 1), 1);
    }
}
