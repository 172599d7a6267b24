//! Rendering a plan: a unified diff of YAML per object (plain or coloured), a pull-request
//! comment in Markdown, or JSON for machines. Every format shows Secrets masked.

use std::fmt::Write as _;

use serde_json::{Value, json};
use similar::{ChangeTag, TextDiff};

use super::{Action, ApplyPlan, PlanEntry};

mod markdown;

/// How a plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Unified diffs of YAML, as `kubectl diff` prints them.
    Text,
    /// A pull-request comment: a summary table and one collapsible diff per object.
    Markdown,
    /// One JSON document.
    Json,
}

#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Names the live / old side in headers (`live`, a git revision).
    pub old_label: String,
    /// Names the desired / new side (`merged`, a git revision, `working tree`).
    pub new_label: String,
    /// ANSI colours in [`Format::Text`].
    pub color: bool,
    /// Largest Markdown output in bytes: later objects' diffs are left out past it (GitHub
    /// refuses comments over 65,536 characters). `None`: no limit.
    pub markdown_limit: Option<usize>,
    /// Lines of context around each change.
    pub context: usize,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            old_label: "live".into(),
            new_label: "merged".into(),
            color: false,
            markdown_limit: None,
            context: 3,
        }
    }
}

/// Renders a plan in one format.
pub fn render(plan: &ApplyPlan, format: Format, options: &RenderOptions) -> String {
    match format {
        Format::Text => render_text(plan, options),
        Format::Markdown => markdown::render_markdown(plan, options),
        Format::Json => render_json(plan, options),
    }
}

/// An object as YAML; empty for an absent side.
pub fn to_yaml(value: Option<&Value>) -> String {
    value.map(super::yaml::to_yaml).unwrap_or_default()
}

/// `apps.v1.Deployment.shop.web`: the object's name in diff headers, as kubectl diff names its
/// temporary files.
pub fn diff_id(entry: &PlanEntry) -> String {
    let mut id = entry.api_version.replace('/', ".");
    id.push('.');
    id.push_str(&entry.key.kind);
    if let Some(ns) = &entry.key.namespace {
        id.push('.');
        id.push_str(ns);
    }
    id.push('.');
    id.push_str(&entry.key.name);
    id
}

/// The masked YAML of both sides.
fn masked_yaml(entry: &PlanEntry) -> (String, String) {
    let (before, after) = entry.masked();
    (to_yaml(before.as_ref()), to_yaml(after.as_ref()))
}

#[derive(Clone, Copy)]
enum Line {
    FileHeader,
    Hunk,
    Delete,
    Insert,
    Context,
}

fn paint(out: &mut String, line: Line, text: &str, color: bool) {
    let code = match line {
        Line::FileHeader => "\x1b[1m",
        Line::Hunk => "\x1b[36m",
        Line::Delete => "\x1b[31m",
        Line::Insert => "\x1b[32m",
        Line::Context => "",
    };
    if color && !code.is_empty() {
        let _ = writeln!(out, "{code}{text}\x1b[0m");
    } else {
        let _ = writeln!(out, "{text}");
    }
}

/// The hunks of a unified diff between two texts (no file headers).
fn hunks(old: &str, new: &str, context: usize, color: bool) -> String {
    let diff = TextDiff::from_lines(old, new);
    let mut out = String::new();
    for hunk in diff.unified_diff().context_radius(context).iter_hunks() {
        paint(&mut out, Line::Hunk, &hunk.header().to_string(), color);
        for change in hunk.iter_changes() {
            let (line, sign) = match change.tag() {
                ChangeTag::Delete => (Line::Delete, '-'),
                ChangeTag::Insert => (Line::Insert, '+'),
                ChangeTag::Equal => (Line::Context, ' '),
            };
            let text = change.to_string_lossy();
            let text = text.strip_suffix('\n').unwrap_or(&text);
            paint(&mut out, line, &format!("{sign}{text}"), color);
            if change.missing_newline() {
                paint(
                    &mut out,
                    Line::Context,
                    "\\ No newline at end of file",
                    color,
                );
            }
        }
    }
    out
}

/// The diff of one entry without file headers; empty when unchanged.
pub fn entry_hunks(entry: &PlanEntry, context: usize, color: bool) -> String {
    if entry.action == Action::Unchanged {
        return String::new();
    }
    let (old, new) = masked_yaml(entry);
    hunks(&old, &new, context, color)
}

/// `diff -u -N old/id new/id`, `--- old/id`, `+++ new/id` and hunks per changed object.
fn render_text(plan: &ApplyPlan, options: &RenderOptions) -> String {
    let mut out = String::new();
    for entry in plan
        .entries
        .iter()
        .filter(|e| e.action != Action::Unchanged)
    {
        let id = diff_id(entry);
        let (old, new) = (&options.old_label, &options.new_label);
        let c = options.color;
        paint(
            &mut out,
            Line::FileHeader,
            &format!("diff -u -N {old}/{id} {new}/{id}"),
            c,
        );
        paint(&mut out, Line::FileHeader, &format!("--- {old}/{id}"), c);
        paint(&mut out, Line::FileHeader, &format!("+++ {new}/{id}"), c);
        out.push_str(&entry_hunks(entry, options.context, c));
    }
    out
}

/// `2 to create, 1 to change, 1 to delete, 5 unchanged`.
pub fn summary_line(plan: &ApplyPlan) -> String {
    let c = plan.counts();
    format!(
        "{} to create, {} to change, {} to delete, {} unchanged",
        c.create, c.update, c.delete, c.unchanged
    )
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Create => "create",
        Action::Update => "update",
        Action::Delete => "delete",
        Action::Unchanged => "unchanged",
    }
}

fn render_json(plan: &ApplyPlan, options: &RenderOptions) -> String {
    let counts = plan.counts();
    let objects: Vec<Value> = plan
        .entries
        .iter()
        .map(|entry| {
            let mut object = json!({
                "action": action_name(entry.action),
                "apiVersion": entry.api_version,
                "group": entry.key.group,
                "kind": entry.key.kind,
                "namespace": entry.key.namespace,
                "name": entry.key.name,
            });
            if entry.action != Action::Unchanged {
                let (before, after) = entry.masked();
                object["changedFields"] = json!(entry.changed_fields());
                object["diff"] = json!(entry_hunks(entry, options.context, false));
                object["before"] = before.unwrap_or(Value::Null);
                object["after"] = after.unwrap_or(Value::Null);
            }
            object
        })
        .collect();
    let document = json!({
        "old": options.old_label,
        "new": options.new_label,
        "summary": {
            "create": counts.create,
            "update": counts.update,
            "delete": counts.delete,
            "unchanged": counts.unchanged,
        },
        "objects": objects,
    });
    serde_json::to_string_pretty(&document).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{PlanOptions, plan};

    fn cm(value: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "app"},
            "data": {"mode": value}})
    }

    #[test]
    fn text_has_kubectl_style_headers_and_colour_only_when_asked() {
        let p = plan(&[cm("b")], &[cm("a")], &PlanOptions::default()).unwrap();
        let plain = render(&p, Format::Text, &RenderOptions::default());
        assert!(plain.starts_with(
            "diff -u -N live/v1.ConfigMap.default.app merged/v1.ConfigMap.default.app\n"
        ));
        assert!(plain.contains("\n-  mode: a\n+  mode: b\n"), "{plain}");
        assert!(!plain.contains('\x1b'));
        let options = RenderOptions {
            color: true,
            ..RenderOptions::default()
        };
        assert!(render(&p, Format::Text, &options).contains("\x1b[32m+  mode: b\x1b[0m"));
    }

    #[test]
    fn an_unchanged_plan_renders_no_text_diff() {
        let p = plan(&[cm("a")], &[cm("a")], &PlanOptions::default()).unwrap();
        assert_eq!(render(&p, Format::Text, &RenderOptions::default()), "");
    }
}
