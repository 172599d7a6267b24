//! Every built-in kind served, as a user of kubectl and `berth apply` meets it: each
//! `kubectl create` generator, `kubectl get` and `kubectl explain` of the kinds, `kubectl get
//! all`, and a folder holding one object of every built-in kind applied in one transaction.
//! One live `berth server` for the whole binary (the phases run in one test, one after the
//! other). Fails, not skips, when kubectl is missing.

pub mod support;

use std::collections::BTreeSet;

use serde_json::Value;
use support::api::Server;
use support::apply::berth_code;

const EVERY_KIND: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/every-kind");
const NS: &str = "kinds";

#[test]
fn every_built_in_kind_is_served_to_kubectl_and_applied_in_one_transaction() {
    let server = Server::start();
    create_generators_succeed_and_get_shows_each(&server);
    tables_have_kubernetes_columns(&server);
    get_all_lists_the_kubernetes_set(&server);
    explain_knows_the_kinds(&server);
    a_folder_of_every_kind_applies_in_one_transaction_and_reapplies_as_a_no_op(&server);
}

/// kubectl in the test namespace; must succeed.
fn kubectl_ns(server: &Server, args: &[&str]) -> String {
    let mut all = args.to_vec();
    all.extend(["-n", NS]);
    server.kubectl_ok(&all)
}

fn create_generators_succeed_and_get_shows_each(server: &Server) {
    let created = server.kubectl_ok(&["create", "namespace", NS]);
    assert!(created.contains("namespace/kinds created"), "{created}");

    let tls = rcgen::generate_simple_self_signed(vec!["web.example".to_string()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, tls.cert.pem()).unwrap();
    std::fs::write(&key, tls.key_pair.serialize_pem()).unwrap();
    let cert_arg = format!("--cert={}", cert.display());
    let key_arg = format!("--key={}", key.display());

    // (kubectl create arguments, what `kubectl get` names, the object's name)
    let generators: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["deployment", "web", "--image=busybox:1.36"],
            "deployment",
            "web",
        ),
        (vec!["job", "once", "--image=busybox:1.36"], "job", "once"),
        (
            vec![
                "cronjob",
                "nightly",
                "--image=busybox:1.36",
                "--schedule=0 1 * * *",
            ],
            "cronjob",
            "nightly",
        ),
        (vec!["serviceaccount", "bot"], "serviceaccount", "bot"),
        (
            vec!["role", "reader", "--verb=get,list", "--resource=pods"],
            "role",
            "reader",
        ),
        (
            vec![
                "rolebinding",
                "read",
                "--role=reader",
                "--serviceaccount=kinds:bot",
            ],
            "rolebinding",
            "read",
        ),
        (
            vec![
                "clusterrole",
                "kinds-viewer",
                "--verb=get",
                "--resource=nodes",
            ],
            "clusterrole",
            "kinds-viewer",
        ),
        (
            vec![
                "clusterrolebinding",
                "kinds-view",
                "--clusterrole=kinds-viewer",
                "--user=alice",
            ],
            "clusterrolebinding",
            "kinds-view",
        ),
        (
            vec!["service", "clusterip", "web-cip", "--tcp=80:8080"],
            "service",
            "web-cip",
        ),
        (
            vec!["service", "nodeport", "web-np", "--tcp=80:8080"],
            "service",
            "web-np",
        ),
        (
            vec!["service", "loadbalancer", "web-lb", "--tcp=80:8080"],
            "service",
            "web-lb",
        ),
        (
            vec!["secret", "generic", "creds", "--from-literal=user=me"],
            "secret",
            "creds",
        ),
        (
            vec!["secret", "tls", "cert", &cert_arg, &key_arg],
            "secret",
            "cert",
        ),
        (
            vec![
                "secret",
                "docker-registry",
                "pull",
                "--docker-server=registry.example",
                "--docker-username=me",
                "--docker-password=secret",
            ],
            "secret",
            "pull",
        ),
        (
            vec!["configmap", "settings", "--from-literal=a=b"],
            "configmap",
            "settings",
        ),
        (
            vec!["quota", "small", "--hard=pods=10,cpu=2"],
            "resourcequota",
            "small",
        ),
        (
            vec!["priorityclass", "kinds-high", "--value=1000"],
            "priorityclass",
            "kinds-high",
        ),
        (
            vec![
                "poddisruptionbudget",
                "web",
                "--selector=app=web",
                "--min-available=1",
            ],
            "poddisruptionbudget",
            "web",
        ),
        (
            vec!["ingress", "web", "--rule=web.example/=web-cip:80"],
            "ingress",
            "web",
        ),
    ];
    let mut failed = Vec::new();
    for (args, resource, name) in &generators {
        let mut all = vec!["create"];
        all.extend(args);
        all.extend(["-n", NS]);
        let out = server.kubectl(&all);
        if !out.status.success() {
            failed.push(format!(
                "kubectl {}: {}",
                all.join(" "),
                support::api::stderr(&out)
            ));
            continue;
        }
        let got = kubectl_ns(server, &["get", resource, name, "-o", "name"]);
        assert!(
            got.contains(&format!("/{name}")),
            "get {resource} {name}: {got}"
        );
    }
    assert!(
        failed.is_empty(),
        "generators failed:\n{}",
        failed.join("\n")
    );

    // What the generators wrote is what the server keeps and serves back.
    let job = json(server, &["get", "job", "once"]);
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["image"],
        "busybox:1.36"
    );
    let binding = json(server, &["get", "rolebinding", "read"]);
    assert_eq!(binding["subjects"][0]["name"], "bot");
    let tls_secret = json(server, &["get", "secret", "cert"]);
    assert_eq!(tls_secret["type"], "kubernetes.io/tls");
    assert!(
        kubectl_ns(
            server,
            &["get", "clusterrole", "kinds-viewer", "-o", "name"]
        )
        .contains("clusterrole.rbac.authorization.k8s.io/kinds-viewer"),
        "cluster-scoped kinds ignore the namespace"
    );
    // Field selectors every kind supports.
    let selected = kubectl_ns(
        server,
        &[
            "get",
            "sa",
            "--field-selector=metadata.name=bot",
            "-o",
            "name",
        ],
    );
    assert_eq!(selected.trim(), "serviceaccount/bot");
    // The scale subresource of a StatefulSet, as of Deployments and ReplicaSets.
    server.kubectl_stdin(
        &["apply", "-n", NS, "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: db\nspec:\n  serviceName: db\n  selector:\n    matchLabels:\n      app: db\n  template:\n    metadata:\n      labels:\n        app: db\n    spec:\n      containers:\n      - name: db\n        image: busybox:1.36\n",
        ),
    );
    kubectl_ns(server, &["scale", "statefulset/db", "--replicas=3"]);
    assert_eq!(
        kubectl_ns(
            server,
            &["get", "sts", "db", "-o", "jsonpath={.spec.replicas}"]
        ),
        "3"
    );
}

fn json(server: &Server, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&kubectl_ns(server, &all)).expect("kubectl -o json")
}

fn tables_have_kubernetes_columns(server: &Server) {
    for (resource, header) in [
        (
            "job",
            ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"].as_slice(),
        ),
        (
            "cronjob",
            &[
                "NAME",
                "SCHEDULE",
                "TIMEZONE",
                "SUSPEND",
                "ACTIVE",
                "LAST SCHEDULE",
            ],
        ),
        ("serviceaccount", &["NAME", "SECRETS", "AGE"]),
        ("statefulset", &["NAME", "READY", "AGE"]),
        ("ingress", &["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS"]),
        ("rolebinding", &["NAME", "ROLE", "AGE"]),
        ("role", &["NAME", "CREATED AT"]),
        (
            "poddisruptionbudget",
            &["MIN AVAILABLE", "ALLOWED DISRUPTIONS"],
        ),
    ] {
        let table = kubectl_ns(server, &["get", resource]);
        let first = table.lines().next().unwrap_or_default();
        for column in header {
            assert!(first.contains(column), "{resource}: {column} in\n{table}");
        }
    }
    let jobs = kubectl_ns(server, &["get", "job", "once", "--no-headers"]);
    assert!(jobs.contains("0/1"), "{jobs}");
    let bindings = kubectl_ns(server, &["get", "rolebinding", "read", "--no-headers"]);
    assert!(bindings.contains("Role/reader"), "{bindings}");
    let hosts = kubectl_ns(server, &["get", "ingress", "web", "--no-headers"]);
    assert!(hosts.contains("web.example"), "{hosts}");
}

fn get_all_lists_the_kubernetes_set(server: &Server) {
    let in_all: BTreeSet<String> = server
        .kubectl_ok(&["api-resources", "--categories=all", "-o", "name"])
        .lines()
        .map(str::to_string)
        .collect();
    let want: BTreeSet<String> = [
        "pods",
        "services",
        "replicationcontrollers",
        "daemonsets.apps",
        "deployments.apps",
        "replicasets.apps",
        "statefulsets.apps",
        "horizontalpodautoscalers.autoscaling",
        "cronjobs.batch",
        "jobs.batch",
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    assert_eq!(in_all, want);
    let all = kubectl_ns(server, &["get", "all"]);
    for shown in [
        "deployment.apps/web",
        "service/web-cip",
        "job.batch/once",
        "cronjob.batch/nightly",
        "statefulset.apps/db",
    ] {
        assert!(all.contains(shown), "{shown} in\n{all}");
    }
    assert!(!all.contains("configmap/"), "{all}");
}

fn explain_knows_the_kinds(server: &Server) {
    for (path, says) in [
        ("job.spec.backoffLimit", "backoffLimit"),
        ("cronjob.spec.schedule", "schedule"),
        ("statefulset.spec.serviceName", "serviceName"),
        ("daemonset.spec.updateStrategy", "updateStrategy"),
        ("ingress.spec.rules", "rules"),
        ("networkpolicy.spec.podSelector", "podSelector"),
        (
            "serviceaccount.automountServiceAccountToken",
            "automountServiceAccountToken",
        ),
        ("role.rules", "rules"),
        ("clusterrolebinding.roleRef", "roleRef"),
        ("persistentvolumeclaim.spec.accessModes", "accessModes"),
        ("persistentvolume.spec.capacity", "capacity"),
        ("storageclass.provisioner", "provisioner"),
        ("priorityclass.value", "value"),
        ("horizontalpodautoscaler.spec.metrics", "metrics"),
        ("poddisruptionbudget.spec.minAvailable", "minAvailable"),
    ] {
        let text = server.kubectl_ok(&["explain", path]);
        assert!(
            text.contains("DESCRIPTION") && text.contains(says),
            "kubectl explain {path}:\n{text}"
        );
    }
}

fn a_folder_of_every_kind_applies_in_one_transaction_and_reapplies_as_a_no_op(server: &Server) {
    let first = berth_code(server, &["apply", "-f", EVERY_KIND], 0);
    let summary = first.lines().last().unwrap_or_default().to_string();
    let created: usize = summary
        .split(" created")
        .next()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(created >= 70, "{first}");
    assert!(
        summary.contains(" 0 configured, 0 unchanged, 0 pruned"),
        "{first}"
    );

    // One transaction: every object nothing in berth acts on carries the one revision.
    let unacted = [
        "ingress/every-kind",
        "serviceaccount/every-kind",
        "role/every-kind",
        "clusterrole/every-kind",
        "persistentvolume/every-kind",
        "storageclass/every-kind",
        "cronjob/every-kind",
        "networkpolicy/every-kind",
        "priorityclass/every-kind",
        "deviceclass/every-kind",
    ];
    let revisions = |server: &Server| -> Vec<String> {
        let mut args = vec!["get", "-n", "default"];
        args.extend(unacted);
        args.extend([
            "-o",
            "jsonpath={range .items[*]}{.metadata.resourceVersion} {end}",
        ]);
        server
            .kubectl_ok(&args)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let before = revisions(server);
    assert_eq!(before.len(), unacted.len(), "{before:?}");
    let distinct: BTreeSet<&String> = before.iter().collect();
    assert_eq!(
        distinct.len(),
        1,
        "one transaction, one revision: {before:?}"
    );

    let again = berth_code(server, &["apply", "-f", EVERY_KIND], 0);
    assert!(
        again.ends_with(&format!(
            "0 created, 0 configured, {created} unchanged, 0 pruned\n"
        )),
        "{again}"
    );
    assert_eq!(
        revisions(server),
        before,
        "the no-op re-apply wrote nothing"
    );
}
