//! `berth apply -f` and `berth diff -f` against a live `berth server` (the real binary), checked
//! with real kubectl: all-or-nothing applies, prune and its guard, server-side-apply ownership,
//! ApplySet labels, Secret masking and `diff -f` exit codes.

pub mod support;

use base64::Engine as _;
use support::api::{Server, stderr, stdout};
use support::apply::{Manifests, berth, berth_code, configmap, configmaps, deployment};

#[test]
fn first_apply_creates_reapply_is_unchanged_and_a_change_configures() {
    let server = Server::start();
    let m = Manifests::new(&[
        ("cm.yaml", &configmap("settings", "one")),
        (
            "web.yaml",
            &deployment("web", "berth-test/busybox:1.36", Some(2)),
        ),
    ]);
    let first = berth_code(&server, &["apply", "-f", m.path()], 0);
    assert_eq!(
        first,
        "configmap/settings created\ndeployment.apps/web created\n\
         2 created, 0 configured, 0 unchanged, 0 pruned\n"
    );
    let again = berth_code(&server, &["apply", "-f", m.path()], 0);
    assert_eq!(
        again,
        "configmap/settings unchanged\ndeployment.apps/web unchanged\n\
         0 created, 0 configured, 2 unchanged, 0 pruned\n"
    );
    let rv_before = server.kubectl_ok(&[
        "get",
        "cm",
        "settings",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    std::fs::write(m.file("cm.yaml"), configmap("settings", "two")).unwrap();
    let changed = berth_code(&server, &["apply", "-f", m.path()], 0);
    assert_eq!(
        changed,
        "configmap/settings configured\ndeployment.apps/web unchanged\n\
         0 created, 1 configured, 1 unchanged, 0 pruned\n"
    );
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.key}"]),
        "two"
    );
    assert_ne!(
        rv_before,
        server.kubectl_ok(&[
            "get",
            "cm",
            "settings",
            "-o",
            "jsonpath={.metadata.resourceVersion}"
        ])
    );
    // A dry run says what would happen and changes nothing.
    std::fs::write(m.file("cm.yaml"), configmap("settings", "three")).unwrap();
    let dry = berth_code(&server, &["apply", "--dry-run", "-f", m.path()], 0);
    assert!(
        dry.contains("configmap/settings configured (dry run)"),
        "{dry}"
    );
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.key}"]),
        "two"
    );
}

#[test]
fn members_carry_applyset_labels_kubectl_recognises() {
    let server = Server::start();
    let m = Manifests::new(&[
        ("cm.yaml", &configmap("settings", "one")),
        (
            "web.yaml",
            &deployment("web", "berth-test/busybox:1.36", None),
        ),
    ]);
    berth_code(&server, &["apply", "-f", m.path(), "--applyset", "shop"], 0);
    let parent: serde_json::Value =
        serde_json::from_str(&server.kubectl_ok(&["get", "secret", "shop", "-o", "json"])).unwrap();
    let id = parent["metadata"]["labels"]["applyset.kubernetes.io/id"]
        .as_str()
        .expect("the parent carries the ApplySet id");
    // KEP-3659: applyset-<base64url(sha256("shop.default.Secret."))>-v1.
    assert!(id.starts_with("applyset-") && id.ends_with("-v1"), "{id}");
    let annotations = &parent["metadata"]["annotations"];
    assert_eq!(
        annotations["applyset.kubernetes.io/contains-group-kinds"],
        "ConfigMap,Deployment.apps"
    );
    assert!(
        annotations["applyset.kubernetes.io/tooling"]
            .as_str()
            .unwrap()
            .starts_with("berth/")
    );
    let members = server.kubectl_ok(&[
        "get",
        "cm,deploy",
        "-l",
        &format!("applyset.kubernetes.io/part-of={id}"),
        "-o",
        "name",
    ]);
    assert_eq!(members, "configmap/settings\ndeployment.apps/web\n");
}

#[test]
fn an_invalid_manifest_changes_nothing_and_is_reported_as_validate_does() {
    let server = Server::start();
    let m = Manifests::new(&[
        ("a.yaml", &configmap("good", "x")),
        (
            "b.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\ndata:\n  k: v\n",
        ),
    ]);
    let before = configmaps(&server, "default");
    let out = berth(&server, &["apply", "-f", m.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let validate = berth(&server, &["validate", m.path()]);
    let report = stdout(&validate);
    let problem_line = report
        .lines()
        .find(|l| l.contains("Bad_Name"))
        .expect("validate reports the bad name");
    assert!(stderr(&out).contains(problem_line), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("1 error in 1 of 2 resources"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("nothing was applied"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
    assert_eq!(configmaps(&server, "default"), before);

    // Valid for the validator, refused by the server (a version it does not serve: it serves
    // HorizontalPodAutoscalers as autoscaling/v2 only): the whole batch is refused, the valid
    // ConfigMap included.
    m.set(&[
        ("a.yaml", &configmap("good", "x")),
        (
            "hpa.yaml",
            "apiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef:\n    kind: Deployment\n    name: web\n  maxReplicas: 3\n",
        ),
    ]);
    let out = berth(&server, &["apply", "-f", m.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(
            "does not serve HorizontalPodAutoscaler of autoscaling/v1 (it serves HorizontalPodAutoscaler as autoscaling/v2"
        ),
        "{}",
        stderr(&out)
    );
    assert_eq!(configmaps(&server, "default"), before);
}

#[test]
fn a_conflict_with_another_manager_changes_nothing_unless_forced() {
    let server = Server::start();
    let m = Manifests::new(&[
        ("cm.yaml", &configmap("settings", "one")),
        (
            "web.yaml",
            &deployment("web", "berth-test/busybox:1.36", Some(2)),
        ),
    ]);
    berth_code(&server, &["apply", "-f", m.path()], 0);
    server.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    // The manifest still says 2 replicas, which kubectl now owns at 5: a conflict, and the
    // ConfigMap change in the same batch is not applied either.
    std::fs::write(m.file("cm.yaml"), configmap("settings", "two")).unwrap();
    let out = berth(&server, &["apply", "-f", m.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("nothing was applied"), "{err}");
    assert!(err.contains("conflict with \"kubectl"), "{err}");
    assert!(err.contains(".spec.replicas"), "{err}");
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "settings", "-o", "jsonpath={.data.key}"]),
        "one"
    );
    assert_eq!(
        server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "5"
    );
    let forced = berth_code(&server, &["apply", "--force-conflicts", "-f", m.path()], 0);
    assert!(
        forced.contains("deployment.apps/web configured"),
        "{forced}"
    );
    assert_eq!(
        server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "2"
    );
}

#[test]
fn kubectl_scale_then_reapply_keeps_the_replicas() {
    let server = Server::start();
    let m = Manifests::new(&[(
        "web.yaml",
        &deployment("web", "berth-test/busybox:1.36", None),
    )]);
    berth_code(&server, &["apply", "-f", m.path()], 0);
    server.kubectl_ok(&["scale", "deployment/web", "--replicas=4"]);
    let again = berth_code(&server, &["apply", "-f", m.path()], 0);
    assert!(again.contains("deployment.apps/web unchanged"), "{again}");
    std::fs::write(
        m.file("web.yaml"),
        deployment("web", "berth-test/busybox:1.37", None),
    )
    .unwrap();
    let changed = berth_code(&server, &["apply", "-f", m.path()], 0);
    assert!(
        changed.contains("deployment.apps/web configured"),
        "{changed}"
    );
    assert_eq!(
        server.kubectl_ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "4"
    );
    assert_eq!(
        server.kubectl_ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "berth-test/busybox:1.37"
    );
}

#[test]
fn prune_deletes_exactly_the_members_that_left() {
    let server = Server::start();
    let four: Vec<(String, String)> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| (format!("{n}.yaml"), configmap(n, n)))
        .collect();
    let files = |names: &[&str]| -> Vec<(&str, &str)> {
        four.iter()
            .filter(|(f, _)| names.iter().any(|n| f.starts_with(n)))
            .map(|(f, t)| (f.as_str(), t.as_str()))
            .collect()
    };
    let m = Manifests::new(&files(&["a", "b", "c", "d"]));
    berth_code(&server, &["apply", "-f", m.path()], 0);
    // Not a member: made by kubectl, and by berth under another ApplySet.
    server.kubectl_ok(&["create", "configmap", "outsider", "--from-literal=k=v"]);
    let other = Manifests::new(&[("x.yaml", &configmap("other-set", "x"))]);
    berth_code(
        &server,
        &["apply", "-f", other.path(), "--applyset", "other"],
        0,
    );

    m.set(&files(&["a", "b", "c"]));
    let out = berth_code(&server, &["apply", "--prune", "-f", m.path()], 0);
    assert!(out.contains("configmap/d pruned"), "{out}");
    assert!(
        out.ends_with("0 created, 0 configured, 3 unchanged, 1 pruned\n"),
        "{out}"
    );
    assert_eq!(
        configmaps(&server, "default"),
        ["a", "b", "c", "other-set", "outsider"]
    );
    // Without --prune, a member that left stays.
    m.set(&files(&["a", "b"]));
    berth_code(&server, &["apply", "-f", m.path()], 0);
    assert!(configmaps(&server, "default").contains(&"c".to_string()));
}

#[test]
fn the_prune_guard_refuses_mass_deletes_unless_allowed() {
    let server = Server::start();
    let m = Manifests::new(&[
        ("a.yaml", &configmap("a", "a")),
        ("b.yaml", &configmap("b", "b")),
        ("c.yaml", &configmap("c", "c")),
        ("d.yaml", &configmap("d", "d")),
    ]);
    berth_code(&server, &["apply", "-f", m.path()], 0);
    // Three of four members would go: more than half.
    m.set(&[("a.yaml", &configmap("a", "a2"))]);
    let out = berth(&server, &["apply", "--prune", "-f", m.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("refusing to prune 3 of 4 objects (more than half of the set)"),
        "{err}"
    );
    for gone in ["configmap/b", "configmap/c", "configmap/d"] {
        assert!(err.contains(&format!("  - {gone}\n")), "{err}");
    }
    assert_eq!(configmaps(&server, "default"), ["a", "b", "c", "d"]);
    assert_eq!(
        server.kubectl_ok(&["get", "cm", "a", "-o", "jsonpath={.data.key}"]),
        "a"
    );
    // Every member would go.
    m.set(&[("e.yaml", &configmap("e", "e"))]);
    let out = berth(&server, &["apply", "--prune", "-f", m.path()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("every member of the set"),
        "{}",
        stderr(&out)
    );
    assert_eq!(configmaps(&server, "default"), ["a", "b", "c", "d"]);
    // With consent.
    m.set(&[("a.yaml", &configmap("a", "a2"))]);
    let out = berth_code(
        &server,
        &[
            "apply",
            "--prune",
            "--prune-allow-mass-delete",
            "-f",
            m.path(),
        ],
        0,
    );
    assert!(
        out.ends_with("0 created, 1 configured, 0 unchanged, 3 pruned\n"),
        "{out}"
    );
    assert_eq!(configmaps(&server, "default"), ["a"]);
}

/// A Secret value that must never be printed, plain or base64.
const CANARY: &str = "berth-canary-apply-hunter2";
const OLD_CANARY: &str = "berth-canary-apply-hunter1";

fn secret(value: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ntype: Opaque\nstringData:\n  password: {value}\n"
    )
}

#[test]
fn secret_values_never_appear_in_apply_or_diff_output() {
    let server = Server::start();
    let m = Manifests::new(&[("s.yaml", &secret(OLD_CANARY))]);
    let mut outputs = vec![berth(&server, &["diff", "-f", m.path()])];
    outputs.push(berth(&server, &["apply", "-f", m.path()]));
    m.set(&[("s.yaml", &secret(CANARY))]);
    for format in ["text", "markdown", "json"] {
        let out = berth(&server, &["diff", "-f", m.path(), "--format", format]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        outputs.push(out);
    }
    let text = berth(&server, &["diff", "-f", m.path()]);
    assert!(stdout(&text).contains("*** (before)"), "{}", stdout(&text));
    assert!(stdout(&text).contains("*** (after)"), "{}", stdout(&text));
    outputs.push(text);
    outputs.push(berth(&server, &["apply", "--dry-run", "-f", m.path()]));
    outputs.push(berth(&server, &["apply", "-f", m.path()]));
    // An invalid Secret: the validation report leaves the value out too.
    m.set(&[(
        "s.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\ndata:\n  password: {CANARY}!\n"
        ),
    )]);
    outputs.push(berth(&server, &["apply", "-f", m.path()]));
    outputs.push(berth(&server, &["diff", "-f", m.path()]));
    let b64 = base64::engine::general_purpose::STANDARD;
    for out in &outputs {
        let all = format!("{}{}", stdout(out), stderr(out));
        for canary in [CANARY, OLD_CANARY] {
            assert!(!all.contains(canary), "a Secret value is shown:\n{all}");
            assert!(
                !all.contains(&b64.encode(canary)),
                "a Secret value is shown:\n{all}"
            );
        }
    }
}

#[test]
fn diff_exit_codes_follow_kubectl_diff() {
    let server = Server::start();
    let m = Manifests::new(&[("cm.yaml", &configmap("settings", "one"))]);
    // Differences: a create.
    let created = berth_code(&server, &["diff", "-f", m.path()], 1);
    assert!(created.contains("+  name: settings"), "{created}");
    berth_code(&server, &["apply", "-f", m.path()], 0);
    // No differences once applied (server-set fields and defaults normalised away).
    assert_eq!(berth_code(&server, &["diff", "-f", m.path()], 0), "");
    std::fs::write(m.file("cm.yaml"), configmap("settings", "two")).unwrap();
    let changed = berth_code(&server, &["diff", "-f", m.path()], 1);
    assert!(
        changed.contains("-  key: \"one\"") || changed.contains("-  key: one"),
        "{changed}"
    );
    // What --prune would delete is listed.
    m.set(&[("other.yaml", &configmap("other", "x"))]);
    let pruned = berth_code(&server, &["diff", "--prune", "-f", m.path()], 1);
    assert!(pruned.contains("-  name: settings"), "{pruned}");
    // Errors are above 1: invalid manifests, an unreachable server.
    m.set(&[(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    )]);
    berth_code(&server, &["diff", "-f", m.path()], 2);
    m.set(&[("cm.yaml", &configmap("settings", "one"))]);
    let out = berth(
        &server,
        &[
            "diff",
            "-f",
            m.path(),
            "--server",
            "https://127.0.0.1:9",
            "--token",
            "x",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
