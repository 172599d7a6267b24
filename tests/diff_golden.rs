//! Golden files for what users read from `berth diff`: every case under
//! `tests/golden/diff/` rendered as text, markdown and JSON, compared byte for byte.
//! `UPDATE_GOLDEN=1 cargo test --test diff_golden` rewrites them.

pub mod support;

use std::fs;
use std::path::Path;

use base64::Engine as _;
use berth::diff::{Action, ApplyPlan, Format, PlanOptions, RenderOptions, plan, render};
use berth::manifest::{LoadOptions, load_text};
use support::golden::{self, Golden};

/// Secret values used in the fixtures: none may appear in any output, plain or base64.
const CANARIES: [&str; 2] = ["berth-canary-hunter2", "berth-canary-old-hunter1"];

fn load(path: &Path) -> Vec<serde_json::Value> {
    let text = fs::read_to_string(path).unwrap_or_default();
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let (_, objects, problems) = load_text(name, text, LoadOptions::default());
    assert!(problems.is_empty(), "{}: {problems:?}", path.display());
    objects.into_iter().map(|o| o.value).collect()
}

fn case_plan(dir: &Path) -> ApplyPlan {
    let desired = load(&dir.join("desired.yaml"));
    let live = load(&dir.join("live.yaml"));
    let options = PlanOptions {
        prune: true,
        ..PlanOptions::default()
    };
    plan(&desired, &live, &options).expect("plan")
}

fn outputs(plan: &ApplyPlan) -> [(&'static str, String); 3] {
    let options = RenderOptions::default();
    [
        ("expected.txt", render(plan, Format::Text, &options)),
        ("expected.md", render(plan, Format::Markdown, &options)),
        ("expected.json", render(plan, Format::Json, &options)),
    ]
}

#[test]
fn golden_outputs_match() {
    let mut golden = Golden::new();
    for dir in golden::cases("diff") {
        let plan = case_plan(&dir);
        for (file, actual) in outputs(&plan) {
            golden.check(&dir.join(file), &actual);
        }
    }
    golden.finish();
}

#[test]
fn secret_values_appear_in_no_output_format() {
    let b64 = base64::engine::general_purpose::STANDARD;
    for dir in golden::cases("diff") {
        let plan = case_plan(&dir);
        let mut rendered: Vec<(String, String)> = outputs(&plan)
            .into_iter()
            .map(|(f, t)| (f.to_string(), t))
            .collect();
        let coloured = RenderOptions {
            color: true,
            ..RenderOptions::default()
        };
        rendered.push(("colour".into(), render(&plan, Format::Text, &coloured)));
        rendered.push(("debug".into(), format!("{plan:?}")));
        for (what, text) in rendered {
            for canary in CANARIES {
                let encoded = b64.encode(canary);
                assert!(
                    !text.contains(canary) && !text.contains(&encoded),
                    "{} {what} shows a secret value",
                    dir.display()
                );
            }
        }
    }
}

#[test]
fn a_changed_secret_shows_before_and_after_markers() {
    let plan = case_plan(&golden::dir("diff").join("secret-change"));
    let text = render(&plan, Format::Text, &RenderOptions::default());
    assert!(text.contains("-  password: \"*** (before)\""), "{text}");
    assert!(text.contains("+  password: \"*** (after)\""), "{text}");
    assert!(text.contains("+  api-key: \"***\""), "{text}");
    assert!(
        text.contains("   username: \"***\""),
        "an unchanged key is masked too: {text}"
    );
}

#[test]
fn an_unchanged_manifest_has_no_diff_against_the_server_object() {
    let plan = case_plan(&golden::dir("diff").join("unchanged-server-defaults"));
    assert_eq!(plan.entries.len(), 3);
    for entry in &plan.entries {
        assert_eq!(
            entry.action,
            Action::Unchanged,
            "{}: {:?}",
            entry.key,
            entry.changed_fields()
        );
    }
    assert!(!plan.has_changes());
}
