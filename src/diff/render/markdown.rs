//! The pull-request comment: a summary table per kind, then one collapsible section per
//! changed object holding a fenced `diff` block.

use std::fmt::Write as _;

use super::{RenderOptions, entry_hunks};
use crate::diff::{Action, ApplyPlan, PlanEntry};

/// A code fence longer than any run of backticks in `text`, so YAML cannot close it early.
fn fence_for(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    "`".repeat(longest.max(2) + 1)
}

/// Text safe inside a code span and an HTML summary line.
fn inline(text: &str) -> String {
    text.replace('`', "'")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn section(entry: &PlanEntry, options: &RenderOptions) -> String {
    let diff = entry_hunks(entry, options.context, false);
    let fence = fence_for(&diff);
    format!(
        "<details>\n<summary>{} <code>{}</code></summary>\n\n{fence}diff\n{diff}{fence}\n\n</details>\n\n",
        entry.action.past_tense(),
        inline(&entry.key.to_string()),
    )
}

pub(super) fn render_markdown(plan: &ApplyPlan, options: &RenderOptions) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### berth diff: `{}` → `{}`\n",
        inline(&options.old_label),
        inline(&options.new_label)
    );
    let total = plan.counts();
    if !plan.has_changes() {
        let _ = writeln!(
            out,
            "No changes: {} object{} unchanged.",
            total.unchanged,
            if total.unchanged == 1 { "" } else { "s" }
        );
        return out;
    }
    out.push_str("| Kind | Created | Changed | Deleted | Unchanged |\n");
    out.push_str("| --- | ---: | ---: | ---: | ---: |\n");
    for (kind, c) in plan.counts_by_kind() {
        let _ = writeln!(
            out,
            "| {kind} | {} | {} | {} | {} |",
            c.create, c.update, c.delete, c.unchanged
        );
    }
    let _ = writeln!(
        out,
        "| **Total** | **{}** | **{}** | **{}** | **{}** |\n",
        total.create, total.update, total.delete, total.unchanged
    );

    let changed: Vec<&PlanEntry> = plan
        .entries
        .iter()
        .filter(|e| e.action != Action::Unchanged)
        .collect();
    for (shown, entry) in changed.iter().enumerate() {
        let text = section(entry, options);
        if let Some(limit) = options.markdown_limit
            && out.len() + text.len() + 200 > limit
        {
            let left = changed.len() - shown;
            let _ = writeln!(
                out,
                "_{left} more changed object{} not shown: the comment would pass {limit} bytes. \
                 Run `berth diff` locally to see every change._",
                if left == 1 { " is" } else { "s are" },
            );
            return out;
        }
        out.push_str(&text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::{Format, PlanOptions, plan, render};
    use serde_json::json;

    fn cm(name: &str, value: &str) -> serde_json::Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": {"text": value}})
    }

    #[test]
    fn backticks_in_values_cannot_close_the_fence() {
        assert_eq!(fence_for("a ``` b"), "````");
        assert_eq!(fence_for("plain"), "```");
    }

    #[test]
    fn long_comments_are_cut_with_a_note() {
        let desired: Vec<_> = (0..50)
            .map(|i| cm(&format!("c{i:02}"), &"x".repeat(200)))
            .collect();
        let p = plan(&desired, &[], &PlanOptions::default()).unwrap();
        let options = RenderOptions {
            markdown_limit: Some(4000),
            ..RenderOptions::default()
        };
        let text = render(&p, Format::Markdown, &options);
        assert!(text.len() <= 4000, "{}", text.len());
        assert!(text.contains("more changed objects are not shown"));
        assert!(text.contains("| ConfigMap | 50 | 0 | 0 | 0 |"));
    }
}
