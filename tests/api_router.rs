//! The API through `tower::ServiceExt::oneshot` over a real SQLite store: what kubectl and
//! client libraries rely on, checked without a socket.

pub mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::api::{AGENT, Api, events};

fn cm(name: &str, data: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"app": name}}, "data": data})
}

fn deployment(name: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "web", "image": image, "ports": [{"containerPort": 80}]}]}}}})
}

const CMS: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOYS: &str = "/apis/apps/v1/namespaces/default/deployments";

/// The names of a list's items, in order.
fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn discovery_serves_what_kubectl_needs() {
    let api = Api::new().await;
    let (code, v) = api.call("GET", "/api", None).await;
    assert_eq!(code, 200);
    assert_eq!(v["versions"][0], "v1");
    let (_, v) = api.call("GET", "/apis", None).await;
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let (_, v) = api.call("GET", "/apis/apps/v1", None).await;
    let deploy = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"][0], "deploy");
    let (code, v) = api.send("GET", "/version", None, "", None).await;
    assert_eq!(code, 200, "version is public");
    assert_eq!(v["major"], "1");
    let (code, v) = api.call("GET", "/apis/batch/v1/widgets", None).await;
    assert_eq!(code, 404);
    assert_eq!(v["kind"], "Status");
}

#[tokio::test]
async fn crud_sets_server_fields_and_reports_kubernetes_statuses() {
    let api = Api::new().await;
    let (code, created) = api
        .call("POST", CMS, Some(&cm("a", json!({"k": "v"}))))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{created}");
    let meta = &created["metadata"];
    assert!(meta["uid"].as_str().unwrap().len() >= 32);
    assert!(meta["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(meta["namespace"], "default");
    assert_eq!(meta["managedFields"][0]["operation"], "Update");
    let rv: i64 = meta["resourceVersion"].as_str().unwrap().parse().unwrap();

    let (code, again) = api.call("POST", CMS, Some(&cm("a", json!({})))).await;
    assert_eq!(code, 409);
    assert_eq!(again["reason"], "AlreadyExists");
    assert_eq!(again["message"], "configmaps \"a\" already exists");

    let (code, got) = api.call("GET", &format!("{CMS}/a"), None).await;
    assert_eq!(code, 200);
    assert_eq!(got["data"]["k"], "v");

    let mut update = got.clone();
    update["data"]["k"] = json!("w");
    let (code, updated) = api.call("PUT", &format!("{CMS}/a"), Some(&update)).await;
    assert_eq!(code, 200, "{updated}");
    let rv2: i64 = updated["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv);
    assert_eq!(updated["metadata"]["uid"], meta["uid"]);

    // The first read's resourceVersion is stale now.
    let (code, stale) = api.call("PUT", &format!("{CMS}/a"), Some(&update)).await;
    assert_eq!(code, 409);
    assert_eq!(stale["reason"], "Conflict");
    assert!(
        stale["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    let (code, gone) = api.call("DELETE", &format!("{CMS}/a"), None).await;
    assert_eq!(code, 200, "{gone}");
    let (code, nf) = api.call("GET", &format!("{CMS}/a"), None).await;
    assert_eq!(code, 404);
    assert_eq!(nf["reason"], "NotFound");
    assert_eq!(nf["details"]["kind"], "configmaps");
}

#[tokio::test]
async fn invalid_objects_get_422_with_every_cause_and_change_nothing() {
    let api = Api::new().await;
    let mut bad = deployment("web", "nginx:1");
    bad["spec"]["replicas"] = json!("three");
    bad["spec"]["template"]["spec"]["containers"][0]["name"] = json!("Not_A_Name");
    bad["spec"]["bogus"] = json!(true);
    let (code, status) = api.call("POST", DEPLOYS, Some(&bad)).await;
    assert_eq!(code, 422, "{status}");
    assert_eq!(status["reason"], "Invalid");
    let causes = status["details"]["causes"].as_array().unwrap();
    assert!(causes.len() >= 3, "{causes:?}");
    assert!(
        causes
            .iter()
            .any(|c| c["field"].as_str().unwrap().contains("replicas"))
    );
    let (_, list) = api.call("GET", DEPLOYS, None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn defaults_generation_generate_name_and_dry_run() {
    let api = Api::new().await;
    let (code, d) = api
        .call("POST", DEPLOYS, Some(&deployment("web", "nginx:1.27")))
        .await;
    assert_eq!(code, 201, "{d}");
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 600);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert_eq!(c["ports"][0]["protocol"], "TCP");
    assert_eq!(d["metadata"]["generation"], 1);

    // A label change does not bump generation; a spec change does.
    let (_, d2) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            Some(support::api::ADMIN),
            "application/merge-patch+json",
            Some(json!({"metadata": {"labels": {"x": "y"}}}).to_string()),
        )
        .await;
    assert_eq!(d2["metadata"]["generation"], 1);
    let (_, d3) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            Some(support::api::ADMIN),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 3}}).to_string()),
        )
        .await;
    assert_eq!(d3["metadata"]["generation"], 2);

    let generated =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "job-"}});
    let (code, g) = api.call("POST", CMS, Some(&generated)).await;
    assert_eq!(code, 201);
    assert!(g["metadata"]["name"].as_str().unwrap().starts_with("job-"));

    let (code, dry) = api
        .call(
            "POST",
            &format!("{CMS}?dryRun=All"),
            Some(&cm("dry", json!({}))),
        )
        .await;
    assert_eq!(code, 201);
    assert_eq!(dry["metadata"]["name"], "dry");
    let (code, _) = api.call("GET", &format!("{CMS}/dry"), None).await;
    assert_eq!(code, 404, "dry run stores nothing");
}

#[tokio::test]
async fn lists_filter_by_labels_and_fields_and_page_consistently() {
    let api = Api::new().await;
    for i in 0..7 {
        let mut c = cm(&format!("c{i}"), json!({}));
        c["metadata"]["labels"] =
            json!({"tier": if i % 2 == 0 { "even" } else { "odd" }, "n": i.to_string()});
        assert_eq!(api.call("POST", CMS, Some(&c)).await.0, 201);
    }
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}});
    api.call("POST", "/api/v1/namespaces", Some(&ns)).await;
    api.call(
        "POST",
        "/api/v1/namespaces/other/configmaps",
        Some(&cm("x", json!({}))),
    )
    .await;

    let (_, v) = api
        .call("GET", &format!("{CMS}?labelSelector=tier%3Deven"), None)
        .await;
    assert_eq!(names(&v), ["c0", "c2", "c4", "c6"]);
    let (_, v) = api
        .call(
            "GET",
            &format!("{CMS}?labelSelector=n%20in%20(1,2),tier!%3Deven"),
            None,
        )
        .await;
    assert_eq!(names(&v), ["c1"]);
    let (_, v) = api
        .call(
            "GET",
            &format!("{CMS}?fieldSelector=metadata.name%3Dc3"),
            None,
        )
        .await;
    assert_eq!(names(&v), ["c3"]);
    let (_, v) = api.call("GET", "/api/v1/configmaps", None).await;
    assert_eq!(v["items"].as_array().unwrap().len(), 8, "all namespaces");
    let (code, _) = api
        .call("GET", &format!("{CMS}?fieldSelector=spec.bogus%3D1"), None)
        .await;
    assert_eq!(code, 400);

    let mut seen = Vec::new();
    let (_, mut page) = api.call("GET", &format!("{CMS}?limit=3"), None).await;
    let first_rv = page["metadata"]["resourceVersion"].clone();
    seen.extend(names(&page));
    // Writes between pages do not show up: pages are read at the first page's revision. An
    // object added after the first page and one deleted from a later page both are.
    let (code, added) = api.call("POST", CMS, Some(&cm("c55", json!({})))).await;
    assert_eq!(code, 201, "{added}");
    let (code, deleted) = api.call("DELETE", &format!("{CMS}/c6"), None).await;
    assert_eq!(code, 200, "{deleted}");
    while let Some(cont) = page["metadata"]["continue"].as_str().map(str::to_string) {
        let (_, next) = api
            .call("GET", &format!("{CMS}?limit=3&continue={cont}"), None)
            .await;
        assert_eq!(next["metadata"]["resourceVersion"], first_rv);
        seen.extend(names(&next));
        page = next;
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4", "c5", "c6"]);
    let (_, now) = api.call("GET", CMS, None).await;
    assert_eq!(
        names(&now),
        ["c0", "c1", "c2", "c3", "c4", "c5", "c55"],
        "both writes happened"
    );
}

#[tokio::test]
async fn a_list_longer_than_the_server_reads_at_once_arrives_whole_in_order() {
    // A list with no `limit` is sent in chunks of a few hundred objects as they are read; a
    // client must not see the seams.
    let api = Api::new().await;
    let n = 1_203;
    let posts = (0..n).map(|i| {
        let mut c = cm(&format!("c{i:04}"), json!({"i": i.to_string()}));
        if i % 3 == 0 {
            c["metadata"]["labels"] = json!({"every": "third"});
        }
        let api = &api;
        async move { api.call("POST", CMS, Some(&c)).await.0 }
    });
    for code in futures::future::join_all(posts).await {
        assert_eq!(code, 201);
    }
    let (_, newest) = api.call("POST", CMS, Some(&cm("z-last", json!({})))).await;

    let (code, all) = api.call("GET", CMS, None).await;
    assert_eq!(code, 200);
    let mut want: Vec<String> = (0..n).map(|i| format!("c{i:04}")).collect();
    want.push("z-last".into());
    assert_eq!(names(&all), want);
    assert_eq!(all["items"][7]["data"]["i"], "7");
    assert_eq!(
        all["metadata"]["resourceVersion"], newest["metadata"]["resourceVersion"],
        "the list is read at the newest revision"
    );

    let (_, thirds) = api
        .call("GET", &format!("{CMS}?labelSelector=every%3Dthird"), None)
        .await;
    let want: Vec<String> = (0..n).step_by(3).map(|i| format!("c{i:04}")).collect();
    assert_eq!(names(&thirds), want);
}

#[tokio::test]
async fn watch_streams_added_modified_deleted_and_bookmarks() {
    let api = Api::new().await;
    let (_, list) = api.call("GET", CMS, None).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut body = api
        .watch(&format!(
            "{CMS}?watch=1&resourceVersion={rv}&allowWatchBookmarks=true&labelSelector=app%3Dw"
        ))
        .await;
    api.call("POST", CMS, Some(&cm("w", json!({"a": "1"}))))
        .await;
    api.call("POST", CMS, Some(&cm("other", json!({})))).await;
    api.send(
        "PATCH",
        &format!("{CMS}/w"),
        Some(support::api::ADMIN),
        "application/merge-patch+json",
        Some(json!({"data": {"a": "2"}}).to_string()),
    )
    .await;
    api.call("DELETE", &format!("{CMS}/w"), None).await;
    let got = events(&mut body, 3, Duration::from_secs(10)).await;
    let kinds: Vec<_> = got
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"], "{got:?}");
    assert_eq!(got[1]["object"]["data"]["a"], "2");
    let marks = events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(marks[0]["type"], "BOOKMARK");

    // Without a resourceVersion the watch starts with the current objects.
    let mut body = api
        .watch(&format!("{CMS}?watch=true&timeoutSeconds=1"))
        .await;
    let first = events(&mut body, 10, Duration::from_secs(5)).await;
    assert_eq!(
        first.len(),
        1,
        "only `other` exists, then the watch times out: {first:?}"
    );
    assert_eq!(first[0]["type"], "ADDED");
}

#[tokio::test]
async fn watch_from_a_compacted_revision_gets_410_expired() {
    let api = Api::new().await;
    for i in 0..5 {
        api.call("POST", CMS, Some(&cm(&format!("c{i}"), json!({}))))
            .await;
    }
    let rev = api.state.storage.store.current_revision().await.unwrap();
    api.state.storage.store.compact(rev).await.unwrap();
    let mut body = api.watch(&format!("{CMS}?watch=1&resourceVersion=1")).await;
    let got = events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0]["type"], "ERROR");
    assert_eq!(got[0]["object"]["code"], 410);
    assert_eq!(got[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_cleared() {
    let api = Api::new().await;
    let mut c = cm("held", json!({}));
    c["metadata"]["finalizers"] = json!(["berth.dev/test"]);
    api.call("POST", CMS, Some(&c)).await;
    let (code, v) = api.call("DELETE", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    let (code, still) = api.call("GET", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 200, "still there while a finalizer remains");
    let mut cleared = still.clone();
    cleared["metadata"]["finalizers"] = json!([]);
    let (code, _) = api
        .call("PUT", &format!("{CMS}/held"), Some(&cleared))
        .await;
    assert_eq!(code, 200);
    let (code, _) = api.call("GET", &format!("{CMS}/held"), None).await;
    assert_eq!(code, 404, "gone once the finalizers are cleared");

    // Foreground propagation leaves the object with the foregroundDeletion finalizer.
    api.call("POST", DEPLOYS, Some(&deployment("fg", "nginx:1")))
        .await;
    let (_, v) = api
        .call(
            "DELETE",
            &format!("{DEPLOYS}/fg"),
            Some(&json!({"propagationPolicy": "Foreground"})),
        )
        .await;
    assert_eq!(v["metadata"]["finalizers"][0], "foregroundDeletion");
}

#[tokio::test]
async fn patches_strategic_json_and_scale() {
    let api = Api::new().await;
    let mut d = deployment("web", "nginx:1");
    d["spec"]["template"]["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "side", "image": "busybox:1"}));
    api.call("POST", DEPLOYS, Some(&d)).await;
    let sm = json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:2"}]}}}});
    let (code, v) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            Some(support::api::ADMIN),
            "application/strategic-merge-patch+json",
            Some(sm.to_string()),
        )
        .await;
    assert_eq!(code, 200, "{v}");
    let cs = v["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 2);
    assert_eq!(cs[0]["image"], "nginx:2");
    let jp = json!([{"op": "replace", "path": "/spec/replicas", "value": 4}]);
    let (code, v) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            Some(support::api::ADMIN),
            "application/json-patch+json",
            Some(jp.to_string()),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(v["spec"]["replicas"], 4);
    let (code, scale) = api.call("GET", &format!("{DEPLOYS}/web/scale"), None).await;
    assert_eq!(code, 200);
    assert_eq!(scale["kind"], "Scale");
    assert_eq!(scale["spec"]["replicas"], 4);
    assert_eq!(scale["status"]["selector"], "app=web");
    let (code, s) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web/scale"),
            Some(support::api::ADMIN),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 7}}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{s}");
    let (_, v) = api.call("GET", &format!("{DEPLOYS}/web"), None).await;
    assert_eq!(v["spec"]["replicas"], 7);
    let (code, _) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web"),
            Some(support::api::ADMIN),
            "text/plain",
            Some("{}".into()),
        )
        .await;
    assert_eq!(code, 415);
}

#[tokio::test]
async fn server_side_apply_owns_fields_reports_conflicts_and_is_idempotent() {
    let api = Api::new().await;
    let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {app: web}\n  template:\n    metadata:\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx:1\n";
    let url = format!("{DEPLOYS}/web?fieldManager=ci");
    let ct = "application/apply-patch+yaml";
    let (code, first) = api
        .send(
            "PATCH",
            &url,
            Some(support::api::ADMIN),
            ct,
            Some(yaml.into()),
        )
        .await;
    assert_eq!(code, 201, "{first}");
    assert_eq!(first["metadata"]["managedFields"][0]["operation"], "Apply");
    let (code, second) = api
        .send(
            "PATCH",
            &url,
            Some(support::api::ADMIN),
            ct,
            Some(yaml.into()),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(
        first["metadata"]["resourceVersion"], second["metadata"]["resourceVersion"],
        "no change, no write"
    );

    let (code, _) = api
        .send(
            "PATCH",
            &format!("{DEPLOYS}/web?fieldManager=other"),
            Some(support::api::ADMIN),
            "application/merge-patch+json",
            Some(json!({"spec": {"replicas": 5}}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    let (code, conflict) = api
        .send(
            "PATCH",
            &url,
            Some(support::api::ADMIN),
            ct,
            Some(yaml.into()),
        )
        .await;
    assert_eq!(code, 409, "{conflict}");
    assert_eq!(conflict["reason"], "Conflict");
    assert_eq!(conflict["details"]["causes"][0]["field"], ".spec.replicas");
    assert!(
        conflict["message"]
            .as_str()
            .unwrap()
            .contains("conflict with \"other\"")
    );
    let (code, forced) = api
        .send(
            "PATCH",
            &format!("{url}&force=true"),
            Some(support::api::ADMIN),
            ct,
            Some(yaml.into()),
        )
        .await;
    assert_eq!(code, 200);
    assert_eq!(forced["spec"]["replicas"], 2);
}

#[tokio::test]
async fn auth_limits_and_body_size() {
    let api = Api::new().await;
    let (code, v) = api.send("GET", CMS, None, "", None).await;
    assert_eq!(code, 401);
    assert_eq!(v["reason"], "Unauthorized");
    let (code, _) = api
        .send("GET", CMS, Some("berth-admin.wrong"), "", None)
        .await;
    assert_eq!(code, 401);
    let (code, _) = api.send("GET", "/api/v1/pods", Some(AGENT), "", None).await;
    assert_eq!(code, 200);
    let (code, v) = api
        .send(
            "POST",
            CMS,
            Some(AGENT),
            "application/json",
            Some(cm("x", json!({})).to_string()),
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(v["reason"], "Forbidden");
    let (code, _) = api
        .send("GET", "/apis/apps/v1/deployments", Some(AGENT), "", None)
        .await;
    assert_eq!(code, 403);
    // Objects are capped at 1.5 MiB, as in Kubernetes; the 413 names the limit.
    let big = cm("big", json!({"k": "x".repeat(2 * 1024 * 1024)}));
    let (code, v) = api.call("POST", CMS, Some(&big)).await;
    assert_eq!(code, 413);
    assert_eq!(v["reason"], "RequestEntityTooLarge");
    let message = v["message"].as_str().unwrap_or("");
    assert!(message.contains("1572864 bytes (1.5 MiB)"), "{message}");
    let (code, v) = api
        .call(
            "POST",
            CMS,
            Some(&cm("one-mib", json!({"k": "x".repeat(1024 * 1024)}))),
        )
        .await;
    assert_eq!(code, 201, "{v}");
    // A patch cannot grow an object past the limit either.
    let grow = json!({"data": {"more": "y".repeat(1024 * 1024)}});
    let (code, v) = api
        .send(
            "PATCH",
            &format!("{CMS}/one-mib"),
            Some(support::api::ADMIN),
            "application/merge-patch+json",
            Some(grow.to_string()),
        )
        .await;
    assert_eq!(code, 413, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap_or("")
            .contains("an object may have"),
        "{v}"
    );
}

#[tokio::test]
async fn secrets_are_sealed_in_the_store() {
    let api = Api::new().await;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db"},
        "stringData": {"password": "hunter2-plaintext"}, "data": {"token": "c3VwZXJzZWNyZXQtdG9rZW4="}});
    let (code, v) = api
        .call("POST", "/api/v1/namespaces/default/secrets", Some(&secret))
        .await;
    assert_eq!(code, 201, "{v}");
    let (_, got) = api
        .call("GET", "/api/v1/namespaces/default/secrets/db", None)
        .await;
    assert_eq!(got["type"], "Opaque");
    let raw = api
        .state
        .storage
        .store
        .get("/registry/secrets/default/db")
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw.value);
    assert!(text.starts_with("berth:enc:aes256gcm:v2:key1:"));
    for needle in [
        "hunter2",
        "c3VwZXJzZWNyZXQ",
        "supersecret",
        "password",
        "\"db\"",
    ] {
        assert!(!text.contains(needle), "found {needle} in the stored bytes");
    }
}

/// The scheduler's batch binding gives each pod what `POST …/pods/NAME/binding` would: the
/// same object (managedFields included), and a 404, 409 or 400 for the pods that cannot be
/// bound, without failing the others; each one is counted as a binding request.
#[tokio::test(flavor = "multi_thread")]
async fn binding_many_pods_at_once_answers_each_as_its_own_binding() {
    use berth::cluster::api::binding::{Binding, bind_pods};
    let api = Api::new().await;
    let pods = "/api/v1/namespaces/default/pods";
    for name in ["by-http", "a", "b", "taken", "twice", "bad-node"] {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        let (code, v) = api.call("POST", pods, Some(&pod)).await;
        assert_eq!(code, StatusCode::CREATED, "{v}");
    }
    let bind_http = |pod: &'static str, node: &'static str| {
        let api = &api;
        async move {
            let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": pod},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
            let uri = format!("{pods}/{pod}/binding?fieldManager=berth-scheduler");
            api.call("POST", &uri, Some(&binding)).await
        }
    };
    assert_eq!(bind_http("by-http", "node-1").await.0, StatusCode::CREATED);
    assert_eq!(bind_http("taken", "node-1").await.0, StatusCode::CREATED);

    let one = |pod: &str, node: &str| Binding {
        namespace: "default".into(),
        pod: pod.into(),
        node: node.into(),
    };
    let batch = [
        one("a", "node-1"),
        one("gone", "node-1"),
        one("taken", "node-2"),
        one("twice", "node-1"),
        one("twice", "node-2"),
        one("bad-node", "Not_A_Node"),
        one("b", "node-2"),
    ];
    let results = bind_pods(&api.state, "berth-scheduler", &batch).await;
    let codes: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().map_or_else(|e| e.code().as_u16(), |()| 201))
        .collect();
    // The second binding of "twice" read the pod before the first one was written.
    assert_eq!(codes, [201, 404, 409, 201, 409, 400, 201]);
    let message = results[2].as_ref().unwrap_err().to_string();
    assert!(
        message.contains("already assigned to node \"node-1\""),
        "{message}"
    );

    let get = |name: &'static str| {
        let api = &api;
        async move { api.call("GET", &format!("{pods}/{name}"), None).await.1 }
    };
    let (http, a, b) = (get("by-http").await, get("a").await, get("b").await);
    assert_eq!(a["spec"]["nodeName"], "node-1");
    assert_eq!(b["spec"]["nodeName"], "node-2");
    assert_eq!(get("twice").await["spec"]["nodeName"], "node-1");
    assert_eq!(get("taken").await["spec"]["nodeName"], "node-1");
    assert!(get("bad-node").await["spec"]["nodeName"].is_null());
    let without_time = |pod: &Value| -> Vec<Value> {
        let mut entries = pod["metadata"]["managedFields"].as_array().unwrap().clone();
        for e in &mut entries {
            e.as_object_mut().unwrap().remove("time");
        }
        entries
    };
    assert_eq!(without_time(&a), without_time(&http));
    assert!(
        without_time(&a)
            .iter()
            .any(|e| e["manager"] == "berth-scheduler" && e["subresource"] == "binding"),
        "{a}"
    );

    let (_, metrics) = api
        .send(
            "GET",
            "/metrics",
            Some(support::api::ADMIN),
            "application/json",
            None,
        )
        .await;
    let metrics = metrics.as_str().unwrap_or_default().to_string();
    for (code, n) in [(201, 5), (404, 1), (409, 2), (400, 1)] {
        let line = format!(
            "apiserver_request_total{{verb=\"create\",resource=\"pods/binding\",code=\"{code}\"}} {n}"
        );
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
}
