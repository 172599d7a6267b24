//! The batch endpoint `POST /apis/berth.dev/v1/namespaces/{ns}/applysets/{name}` through the
//! router over a real SQLite store: one transaction (one revision, watch events for each
//! object), dry runs that store nothing, and refusals that leave everything as it was.

pub mod support;

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::{Value, json};
use support::api::{AGENT, Api, events};

fn cm(name: &str, value: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": value}})
}

const SET: &str = "/apis/berth.dev/v1/namespaces/default/applysets/app";

async fn names(api: &Api) -> Vec<String> {
    let (code, list) = api
        .call("GET", "/api/v1/namespaces/default/configmaps", None)
        .await;
    assert_eq!(code, StatusCode::OK, "{list}");
    let mut names: Vec<String> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn a_batch_is_one_revision_and_watches_see_every_object() {
    let api = Api::new().await;
    let (_, list) = api
        .call("GET", "/api/v1/namespaces/default/configmaps", None)
        .await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let mut watch = api
        .watch(&format!(
            "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}"
        ))
        .await;
    let (code, body) = api
        .call(
            "POST",
            SET,
            Some(&json!({"objects": [cm("a", "1"), cm("b", "2"), cm("c", "3")]})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let outcomes: Vec<&str> = body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["created", "created", "created"]);
    let seen = events(&mut watch, 3, Duration::from_secs(5)).await;
    assert_eq!(seen.len(), 3, "{seen:?}");
    let revisions: Vec<&str> = seen
        .iter()
        .map(|e| {
            assert_eq!(e["type"], "ADDED");
            e["object"]["metadata"]["resourceVersion"].as_str().unwrap()
        })
        .collect();
    assert!(
        revisions.iter().all(|r| *r == revisions[0]),
        "{revisions:?}"
    );
    assert_eq!(revisions[0], body["revision"].to_string());
}

#[tokio::test]
async fn a_dry_run_returns_both_sides_and_stores_nothing() {
    let api = Api::new().await;
    api.call("POST", SET, Some(&json!({"objects": [cm("a", "1")]})))
        .await;
    let (code, body) = api
        .call(
            "POST",
            SET,
            Some(&json!({"objects": [cm("a", "2"), cm("b", "1")], "dryRun": true})),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let a = &body["results"][0];
    assert_eq!(a["outcome"], "configured");
    assert_eq!(a["live"]["data"]["k"], "1");
    assert_eq!(a["object"]["data"]["k"], "2");
    assert_eq!(body["results"][1]["outcome"], "created");
    assert!(body["results"][1].get("live").is_none());
    assert_eq!(names(&api).await, ["a"]);
}

#[tokio::test]
async fn one_bad_object_refuses_the_whole_batch() {
    let api = Api::new().await;
    let bad = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"bad key": "v"}});
    let (code, body) = api
        .call("POST", SET, Some(&json!({"objects": [cm("a", "1"), bad]})))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["details"]["causes"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("ConfigMap default/x: "),
        "{body}"
    );
    assert!(names(&api).await.is_empty());
    // A namespace that does not exist refuses the batch too.
    let (code, body) = api
        .call(
            "POST",
            "/apis/berth.dev/v1/namespaces/nowhere/applysets/app",
            Some(&json!({"objects": [cm("a", "1")]})),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
}

#[tokio::test]
async fn agents_may_not_apply_sets_and_foreign_parents_are_left_alone() {
    let api = Api::new().await;
    let (code, _) = api
        .send(
            "POST",
            SET,
            Some(AGENT),
            "application/json",
            Some(json!({"objects": [cm("a", "1")]}).to_string()),
        )
        .await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    // A Secret named like the set that is not a berth ApplySet parent.
    let (code, body) = api
        .call(
            "POST",
            "/api/v1/namespaces/default/secrets",
            Some(&json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "app"}})),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    let (code, body) = api
        .call("POST", SET, Some(&json!({"objects": [cm("a", "1")]})))
        .await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not the parent of a berth ApplySet")
    );
    assert!(names(&api).await.is_empty());
}
