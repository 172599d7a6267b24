//! `berth validate` end to end: the real binary on manifests in temporary folders, checked the
//! way a user or a CI system reads its answers (exit codes, locations, the report formats).

pub mod support;

use serde_json::Value;
use support::workspace::Workspace;

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
        imagePullPolicy: IfNotPresent
        ports:
        - containerPort: 80
";

/// DEPLOYMENT with `imagePullPolicy` misspelt on line 19, column 9.
fn deployment_with_typo() -> String {
    let text = DEPLOYMENT.replace("imagePullPolicy:", "imagePullPolicyy:");
    assert_eq!(
        text.lines().nth(18),
        Some("        imagePullPolicyy: IfNotPresent")
    );
    text
}

const TYPO_FIELD: &str = "spec.template.spec.containers[0].imagePullPolicyy";

const SERVICE: &str = "\
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: shop
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 80
";

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: value\n")
}

/// The counts of the `--summary` line, parsed back: (resources, files, valid, invalid, errors,
/// skipped).
fn summary_counts(output: &str) -> (usize, usize, usize, usize, usize, usize) {
    let line = output
        .lines()
        .find(|l| l.starts_with("Summary: "))
        .unwrap_or_else(|| panic!("no summary line in:\n{output}"));
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(numbers.len(), 6, "unexpected summary line: {line}");
    (
        numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[5],
    )
}

fn json_report(run: &support::workspace::Run) -> Value {
    serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("-o json is not JSON ({e}):\n{}", run.stdout))
}

#[test]
fn valid_manifests_exit_0() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", DEPLOYMENT);
    ws.write("service.yaml", SERVICE);
    let run = ws.berth(&["validate", "deploy.yaml", "service.yaml"]);
    run.assert_code(0).assert_no_panic();
    assert!(
        !run.stdout.contains("error"),
        "a valid manifest printed an error:\n{}",
        run.stdout
    );
}

#[test]
fn a_typo_exits_1_naming_file_line_column_field_and_the_fix() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    let run = ws.berth(&["validate", "deploy.yaml"]);
    run.assert_code(1)
        .assert_output_contains("deploy.yaml:19:9")
        .assert_output_contains(TYPO_FIELD)
        .assert_output_contains("Deployment shop/web")
        .assert_output_contains("did you mean `imagePullPolicy`?");
    // Not a terminal: no colour codes for a log file or a CI page.
    assert!(
        !run.stdout.contains('\u{1b}'),
        "escape codes in piped output:\n{}",
        run.stdout
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    ws.write(
        "service.yaml",
        SERVICE.replace("targetPort: 80", "targetPort: 80\n    protocoll: TCP"),
    );
    let run = ws.berth(&["validate", "-o", "json", "deploy.yaml", "service.yaml"]);
    run.assert_code(1);
    let report = json_report(&run);
    let files: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["deploy.yaml", "service.yaml"], "{report:#}");
}

#[test]
fn a_missing_file_exits_2_and_names_it() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", DEPLOYMENT);
    let run = ws.berth(&["validate", "deploy.yaml", "nowhere.yaml"]);
    run.assert_code(2).assert_output_contains("nowhere.yaml");
}

#[test]
fn usage_errors_exit_2() {
    let ws = Workspace::new();
    ws.berth(&["validate"])
        .assert_code(2)
        .assert_output_contains("Usage");
    ws.berth(&["validate", "--no-such-flag", "x.yaml"])
        .assert_code(2);
    ws.berth(&["validate", "-o", "xml", "x.yaml"])
        .assert_code(2);
}

#[test]
fn stdin_is_read_with_dash_f_dash() {
    let ws = Workspace::new();
    ws.berth_stdin(&["validate", "-f", "-"], DEPLOYMENT)
        .assert_code(0);
    ws.berth_stdin(&["validate", "-f", "-"], deployment_with_typo())
        .assert_code(1)
        .assert_output_contains("<stdin>:19:9")
        .assert_output_contains(TYPO_FIELD);
}

#[test]
fn folders_are_walked_recursively_in_sorted_order_skipping_hidden_and_other_files() {
    let ws = Workspace::new();
    let bad = |name: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  key: 1\n")
    };
    ws.write("m/b.yaml", bad("b"));
    ws.write("m/a/c.yml", bad("c"));
    ws.write("m/a/deeper/d.json", r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}, "data": {"key": 1}}"#);
    ws.write(
        "m/z.json",
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}}"#,
    );
    // None of these may be read: hidden folders and files, and files that are not manifests.
    ws.write("m/.git/config.yaml", "not: [valid");
    ws.write("m/.hidden.yaml", "not: [valid");
    ws.write("m/a/.cache/x.yml", "not: [valid");
    ws.write("m/notes.txt", "not: [valid");
    ws.write("m/chart.tpl", "not: [valid");

    let run = ws.berth(&["validate", "-o", "json", "--summary", "m"]);
    run.assert_code(1);
    let report = json_report(&run);
    let files: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["m/a/c.yml", "m/a/deeper/d.json", "m/b.yaml"],
        "{report:#}"
    );
    assert_eq!(report["summary"]["files"], 4, "{report:#}");
    assert_eq!(report["summary"]["resources"], 4, "{report:#}");
    assert_eq!(report["summary"]["valid"], 1, "{report:#}");
    assert_eq!(report["summary"]["invalid"], 3, "{report:#}");
}

#[test]
fn multiple_documents_and_lists_are_expanded() {
    let ws = Workspace::new();
    let text = format!(
        "{}---\n---\n# just a comment\n---\napiVersion: v1\nkind: List\nitems:\n- {{apiVersion: v1, kind: ConfigMap, metadata: {{name: b}}}}\n- {{apiVersion: v1, kind: Secret, metadata: {{name: c}}, stringData: {{k: v}}}}\n---\napiVersion: v1\nkind: ConfigMapList\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n  metadata:\n    name: d\n  data:\n    bad: 1\n",
        config_map("a")
    );
    ws.write("all.yaml", &text);
    let run = ws.berth(&["validate", "--summary", "all.yaml"]);
    run.assert_code(1);
    assert_eq!(
        summary_counts(&run.stdout),
        (4, 1, 3, 1, 0, 0),
        "{}",
        run.stdout
    );
    // The problem in a list item points into the item, in the document it came from.
    run.assert_output_contains("all.yaml:25:10")
        .assert_output_contains("ConfigMap d");
}

#[test]
fn empty_and_comment_only_files_hold_no_objects_and_pass() {
    let ws = Workspace::new();
    ws.write("empty.yaml", "");
    ws.write("comments.yaml", "# nothing here yet\n\n# still nothing\n");
    ws.write("separators.yml", "---\n---\n...\n");
    let run = ws.berth(&[
        "validate",
        "--summary",
        "empty.yaml",
        "comments.yaml",
        "separators.yml",
    ]);
    run.assert_code(0);
    assert_eq!(
        summary_counts(&run.stdout),
        (0, 3, 0, 0, 0, 0),
        "{}",
        run.stdout
    );
}

#[test]
fn json_output_carries_every_field_of_a_problem() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    ws.write("cm.yaml", config_map("fine"));
    let run = ws.berth(&["validate", "-o", "json", "deploy.yaml", "cm.yaml"]);
    run.assert_code(1);
    let report = json_report(&run);
    let problems = report["problems"].as_array().expect("problems is a list");
    assert_eq!(problems.len(), 1, "{report:#}");
    let p = &problems[0];
    assert_eq!(p["file"], "deploy.yaml");
    assert_eq!(p["line"], 19);
    assert_eq!(p["column"], 9);
    assert_eq!(p["object"], "Deployment shop/web");
    assert_eq!(p["field"], TYPO_FIELD);
    assert_eq!(p["severity"], "error");
    assert!(
        p["reason"].as_str().unwrap().contains("imagePullPolicyy"),
        "{p:#}"
    );
    assert_eq!(report["summary"]["resources"], 2);
    assert_eq!(report["summary"]["valid"], 1);
    assert_eq!(report["summary"]["invalid"], 1);
}

#[test]
fn json_output_of_valid_input_is_an_empty_report() {
    let ws = Workspace::new();
    ws.write("cm.yaml", config_map("fine"));
    let run = ws.berth(&["validate", "-o", "json", "cm.yaml"]);
    run.assert_code(0);
    let report = json_report(&run);
    assert_eq!(report["problems"], serde_json::json!([]));
    assert_eq!(report["summary"]["valid"], 1);
}

#[test]
fn junit_output_is_well_formed_and_counts_failures() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    // Characters that must be escaped in XML, in a reported value.
    ws.write(
        "cm.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a<b>&\"c\"\n",
    );
    ws.write("ok.yaml", config_map("fine"));
    ws.write("broken.yaml", "apiVersion: v1\nkind: [ConfigMap\n");
    let run = ws.berth(&[
        "validate",
        "-o",
        "junit",
        "deploy.yaml",
        "cm.yaml",
        "ok.yaml",
        "broken.yaml",
    ]);
    run.assert_code(1);
    let doc = roxmltree::Document::parse(&run.stdout)
        .unwrap_or_else(|e| panic!("JUnit report is not well-formed XML ({e}):\n{}", run.stdout));
    let cases: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    let failing = cases
        .iter()
        .filter(|c| c.children().any(|n| n.has_tag_name("failure")))
        .count();
    assert_eq!(failing, 3, "{}", run.stdout);
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .expect("a testsuite element");
    assert_eq!(suite.attribute("failures"), Some("3"), "{}", run.stdout);
    assert_eq!(
        suite.attribute("tests"),
        Some(cases.len().to_string().as_str()),
        "{}",
        run.stdout
    );
    assert!(
        cases
            .iter()
            .any(|c| c.attribute("classname") == Some("ok.yaml")
                && c.children().all(|n| !n.has_tag_name("failure"))),
        "the valid object is a passing test case:\n{}",
        run.stdout
    );
    let messages: Vec<&str> = doc
        .descendants()
        .filter(|n| n.has_tag_name("failure"))
        .filter_map(|n| n.attribute("message"))
        .collect();
    assert!(
        messages.iter().any(|m| m.contains(TYPO_FIELD)),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("a<b>&\"c\"")),
        "escaped text reads back unchanged: {messages:?}"
    );
}

#[test]
fn github_output_is_workflow_annotations() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    let run = ws.berth(&["validate", "-o", "github", "deploy.yaml"]);
    run.assert_code(1);
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("no ::error annotation in:\n{}", run.stdout));
    assert!(
        line.starts_with("::error file=deploy.yaml,line=19,col=9"),
        "{line}"
    );
    let (_, message) = line[2..].split_once("::").expect("`::` before the message");
    assert!(message.contains(TYPO_FIELD), "{line}");
    assert!(message.contains("imagePullPolicy"), "{line}");
}

#[test]
fn summary_line_counts_resources_files_valid_invalid_errors_skipped() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    ws.write(
        "two.yaml",
        format!("{}---\n{}", config_map("a"), config_map("b")),
    );
    ws.write("broken.yaml", "apiVersion: v1\nkind: \"ConfigMap\n");
    ws.write(
        "crd.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n",
    );
    let run = ws.berth(&[
        "validate",
        "--summary",
        "--ignore-unknown-kinds",
        "deploy.yaml",
        "two.yaml",
        "broken.yaml",
        "crd.yaml",
    ]);
    run.assert_code(1);
    assert_eq!(
        summary_counts(&run.stdout),
        (4, 4, 2, 1, 1, 1),
        "{}",
        run.stdout
    );

    let run = ws.berth(&["validate", "--summary", "two.yaml"]);
    run.assert_code(0);
    assert_eq!(
        summary_counts(&run.stdout),
        (2, 1, 2, 0, 0, 0),
        "{}",
        run.stdout
    );
}

#[test]
fn no_strict_accepts_unknown_fields_and_duplicate_keys() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", deployment_with_typo());
    ws.write(
        "dup.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  key: one\n  key: two\n",
    );
    ws.berth(&["validate", "dup.yaml"])
        .assert_code(1)
        .assert_output_contains("dup.yaml:7:3")
        .assert_output_contains("duplicate key");
    ws.berth(&["validate", "--strict", "deploy.yaml"])
        .assert_code(1);
    ws.berth(&["validate", "--no-strict", "deploy.yaml", "dup.yaml"])
        .assert_code(0);
    // Relaxed is not lax: a wrong type is still an error.
    ws.write(
        "wrong.yaml",
        DEPLOYMENT.replace("replicas: 2", "replicas: two"),
    );
    ws.berth(&["validate", "--no-strict", "wrong.yaml"])
        .assert_code(1)
        .assert_output_contains("spec.replicas");
}

#[test]
fn unknown_kinds_fail_unless_ignored_then_warn() {
    let ws = Workspace::new();
    ws.write(
        "crd.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\nspec:\n  size: 3\n",
    );
    ws.berth(&["validate", "crd.yaml"])
        .assert_code(1)
        .assert_output_contains("crd.yaml:2:7")
        .assert_output_contains("Widget")
        .assert_output_contains("--ignore-unknown-kinds");
    let run = ws.berth(&[
        "validate",
        "--ignore-unknown-kinds",
        "-o",
        "json",
        "crd.yaml",
    ]);
    run.assert_code(0);
    let report = json_report(&run);
    assert_eq!(report["problems"][0]["severity"], "warning", "{report:#}");
    assert_eq!(report["summary"]["skipped"], 1, "{report:#}");
    // A known kind at a wrong version is not "unknown": it stays an error.
    ws.write(
        "old.yaml",
        "apiVersion: extensions/v1beta1\nkind: Deployment\nmetadata:\n  name: d\n",
    );
    ws.berth(&["validate", "--ignore-unknown-kinds", "old.yaml"])
        .assert_code(1)
        .assert_output_contains("apps/v1");
}

#[test]
fn missing_api_version_and_kind_are_named() {
    let ws = Workspace::new();
    ws.write("nokind.yaml", "apiVersion: v1\nmetadata:\n  name: a\n");
    ws.write("noversion.yaml", "kind: ConfigMap\nmetadata:\n  name: a\n");
    ws.berth(&["validate", "nokind.yaml"])
        .assert_code(1)
        .assert_output_contains("nokind.yaml:1:1")
        .assert_output_contains("kind");
    ws.berth(&["validate", "noversion.yaml"])
        .assert_code(1)
        .assert_output_contains("apiVersion");
}

#[test]
fn the_same_object_in_two_files_is_refused_naming_both() {
    let ws = Workspace::new();
    ws.write("one.yaml", config_map("settings"));
    ws.write("two.yaml", format!("# again\n{}", config_map("settings")));
    ws.berth(&["validate", "one.yaml", "two.yaml"])
        .assert_code(1)
        .assert_output_contains("two.yaml:5:9")
        .assert_output_contains("one.yaml:1:1");
}

#[test]
fn windows_line_endings_and_a_byte_order_mark_keep_locations_right() {
    let ws = Workspace::new();
    let crlf = deployment_with_typo().replace('\n', "\r\n");
    ws.write("crlf.yaml", format!("\u{feff}{crlf}"));
    ws.berth(&["validate", "crlf.yaml"])
        .assert_code(1)
        .assert_output_contains("crlf.yaml:19:9")
        .assert_output_contains(TYPO_FIELD);
    ws.write(
        "ok.yaml",
        format!("\u{feff}{}", DEPLOYMENT.replace('\n', "\r\n")),
    );
    ws.berth(&["validate", "ok.yaml"]).assert_code(0);
}

#[test]
fn json_manifests_indented_with_tabs_are_read() {
    let ws = Workspace::new();
    ws.write(
        "cm.json",
        "{\n\t\"apiVersion\": \"v1\",\n\t\"kind\": \"ConfigMap\",\n\t\"metadata\": {\n\t\t\"name\": \"tabs\"\n\t},\n\t\"data\": {\n\t\t\"key\": \"value\"\n\t}\n}\n",
    );
    ws.berth(&["validate", "cm.json"]).assert_code(0);
}

fn deployment_with_replicas(replicas: &str) -> String {
    DEPLOYMENT.replace("replicas: 2", &format!("replicas: {replicas}"))
}

#[test]
fn not_a_number_and_infinity_are_refused_not_dropped() {
    // JSON has no NaN or infinity; Kubernetes refuses them. Read as null, they would make the
    // field look absent and the manifest pass.
    let ws = Workspace::new();
    for value in [".nan", ".inf", "-.Inf"] {
        ws.write("d.yaml", deployment_with_replicas(value));
        ws.berth(&["validate", "d.yaml"])
            .assert_code(1)
            .assert_output_contains("d.yaml:7:13")
            .assert_output_contains("spec.replicas");
    }
}

#[test]
fn the_smallest_64_bit_integer_is_an_integer() {
    let ws = Workspace::new();
    ws.write("d.yaml", deployment_with_replicas("-9223372036854775808"));
    let run = ws.berth(&["validate", "-o", "json", "d.yaml"]);
    let report = json_report(&run);
    let reasons: Vec<&str> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["reason"].as_str())
        .collect();
    assert!(
        reasons.iter().all(|r| !r.contains("found string")),
        "read as a string: {reasons:?}"
    );
}

#[test]
fn warn_unacted_flags_kinds_berth_only_stores_and_keeps_the_exit_code() {
    let ws = Workspace::new();
    ws.write("deploy.yaml", DEPLOYMENT);
    ws.write(
        "policy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: deny\n  namespace: shop\nspec:\n  podSelector: {}\n",
    );
    // Quiet by default, as the pre-commit hook runs it.
    let quiet = ws.berth(&["validate", "-o", "json", "deploy.yaml", "policy.yaml"]);
    quiet.assert_code(0);
    assert_eq!(
        json_report(&quiet)["problems"].as_array().unwrap().len(),
        0,
        "{}",
        quiet.stdout
    );
    let warned = ws.berth(&[
        "validate",
        "--warn-unacted",
        "-o",
        "json",
        "deploy.yaml",
        "policy.yaml",
    ]);
    warned.assert_code(0).assert_no_panic();
    let report = json_report(&warned);
    let problems = report["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "only the NetworkPolicy: {report:#}");
    assert_eq!(problems[0]["severity"], "warning");
    assert_eq!(problems[0]["object"], "NetworkPolicy shop/deny");
    assert_eq!(problems[0]["file"], "policy.yaml");
    assert!(
        problems[0]["reason"]
            .as_str()
            .unwrap()
            .contains("nothing in berth acts on"),
        "{report:#}"
    );
}

/// A CustomResourceDefinition as operators ship one.
const WIDGET_CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    kind: Widget
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size:
                type: string
                enum: [small, large]
              replicas:
                type: integer
                minimum: 0
                default: 1
";

fn widget(name: &str, spec: &str) -> String {
    format!("apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn custom_resources_are_checked_against_the_definitions_in_the_same_set() {
    let ws = Workspace::new();
    ws.write("app/crd.yaml", WIDGET_CRD);
    ws.write("app/small.yaml", widget("small", "  size: small\n"));
    let run = ws.berth(&["validate", "--summary", "app"]);
    run.assert_code(0).assert_no_panic();
    assert_eq!(
        summary_counts(&run.stdout),
        (2, 2, 2, 0, 0, 0),
        "{}",
        run.stdout
    );

    // Line 6 holds the wrong size, line 7 a field the schema does not have.
    ws.write(
        "app/huge.yaml",
        widget("huge", "  size: huge\n  replicas: -1\n  colour: red\n"),
    );
    let run = ws.berth(&["validate", "-o", "json", "app"]);
    run.assert_code(1);
    let report = json_report(&run);
    let found: Vec<(String, String, u64, String)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["rule"].as_str().unwrap().to_string(),
                p["field"].as_str().unwrap().to_string(),
                p["line"].as_u64().unwrap(),
                p["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(found.len(), 3, "{report:#}");
    assert_eq!(
        (found[0].0.as_str(), found[0].1.as_str(), found[0].2),
        ("unknown-field", "spec.colour", 8)
    );
    assert_eq!(
        (found[1].0.as_str(), found[1].1.as_str(), found[1].2),
        ("schema", "spec.size", 6)
    );
    assert!(
        found[1]
            .3
            .contains("Unsupported value: \"huge\": supported values: \"small\", \"large\""),
        "{report:#}"
    );
    assert_eq!((found[2].1.as_str(), found[2].2), ("spec.replicas", 7));
    assert!(
        found[2].3.contains("should be greater than or equal to 0"),
        "{report:#}"
    );

    // --no-strict: a field the schema lacks is a warning (a server drops it), not an error.
    ws.write(
        "app/huge.yaml",
        widget("huge", "  size: large\n  colour: red\n"),
    );
    let run = ws.berth(&["validate", "--no-strict", "-o", "json", "app"]);
    run.assert_code(0);
    let report = json_report(&run);
    assert_eq!(report["problems"][0]["severity"], "warning", "{report:#}");
    assert_eq!(
        report["problems"][0]["reason"], "unknown field `colour`",
        "{report:#}"
    );
}

#[test]
fn a_folder_of_definitions_is_given_with_crds_and_without_one_a_custom_resource_stays_unknown() {
    let ws = Workspace::new();
    ws.write("crds/widgets.yaml", WIDGET_CRD);
    ws.write("crds/README.md", "not a manifest");
    ws.write("app/w.yaml", widget("w", "  replicas: 2\n"));
    ws.berth(&["validate", "app"])
        .assert_code(1)
        .assert_output_contains("unknown kind Widget")
        .assert_output_contains("--crds");
    ws.berth(&["validate", "--crds", "crds", "app"])
        .assert_code(1)
        .assert_output_contains("app/w.yaml:6:3")
        .assert_output_contains("spec.size: Required value");
    ws.write("app/w.yaml", widget("w", "  size: small\n"));
    ws.berth(&["validate", "--crds", "crds", "app"])
        .assert_code(0);
    ws.berth(&["validate", "--ignore-unknown-kinds", "app"])
        .assert_code(0);

    // A version the definition does not serve is named with the ones it does.
    ws.write(
        "app/w.yaml",
        widget("w", "  size: small\n").replace("example.com/v1", "example.com/v2"),
    );
    ws.berth(&["validate", "--crds", "crds", "app"])
        .assert_code(1)
        .assert_output_contains("not served in example.com/v2")
        .assert_output_contains("example.com/v1");
}

#[test]
fn a_wrong_definition_is_refused_naming_its_field_and_its_resources_are_not_blamed_on_it() {
    let ws = Workspace::new();
    ws.write(
        "crd.yaml",
        WIDGET_CRD
            .replace("name: widgets.example.com", "name: widget.example.com")
            .replace("        type: object\n        properties:\n          spec:\n            type: object\n", "        type: object\n        properties:\n          spec:\n"),
    );
    let run = ws.berth(&["validate", "-o", "json", "crd.yaml"]);
    run.assert_code(1);
    let report = json_report(&run);
    let found: Vec<(&str, &str, &str)> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["rule"].as_str().unwrap(),
                p["field"].as_str().unwrap(),
                p["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "crd",
                "metadata.name",
                "Invalid value: \"widget.example.com\": must be spec.names.plural+\".\"+spec.group (`widgets.example.com`)"
            ),
            (
                "crd",
                "spec.versions[0].schema.openAPIV3Schema.properties.spec.type",
                "Required value: must not be empty for specified fields"
            ),
        ],
        "{report:#}"
    );
    // Given with --crds, the wrong definition's problems are reported and fail the run.
    ws.write("app/w.yaml", widget("w", "  size: small\n"));
    ws.berth(&["validate", "--crds", "crd.yaml", "app"])
        .assert_code(1)
        .assert_output_contains("crd.yaml:")
        .assert_output_contains("metadata.name");
    // Two definitions claiming one kind: the second is refused.
    ws.write("two/a.yaml", WIDGET_CRD);
    ws.write(
        "two/b.yaml",
        WIDGET_CRD
            .replace("widgets.example.com", "gadgets.example.com")
            .replace("plural: widgets", "plural: gadgets"),
    );
    let run = ws.berth(&["validate", "-o", "json", "two"]);
    run.assert_code(1);
    let report = json_report(&run);
    assert_eq!(report["problems"][0]["file"], "two/b.yaml", "{report:#}");
    assert_eq!(
        report["problems"][0]["reason"],
        "gadgets.example.com claims kind Widget / plural gadgets in group example.com, as widgets.example.com already does",
        "{report:#}"
    );
}
