//! kubectl's protobuf bodies and OpenAPI use against a live `berth server`: the `create`
//! generators (typed clients that send protobuf), protobuf responses and watch frames read
//! with `k8s-pb`'s types, `kubectl explain` from the OpenAPI documents, and
//! `--validate=strict` refusing a misspelt field.

pub mod support;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::Value;
use support::api::{Server, stderr, stdout};

const PROTOBUF: &str = "application/vnd.kubernetes.protobuf";

/// The stored object as JSON, read by a JSON client.
async fn stored(server: &Server, path: &str) -> Value {
    let r = server
        .client()
        .get(format!("{}{path}", server.url))
        .bearer_auth(&server.admin_token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{path}");
    assert!(
        r.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    r.json().await.unwrap()
}

fn unwrap_envelope(body: &[u8]) -> Unknown {
    assert!(body.starts_with(b"k8s\0"), "not an enveloped object");
    Unknown::decode(&body[4..]).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kubectl_create_generator_sends_protobuf_and_stores_the_right_object() {
    let server = Server::start();

    // kubectl's typed clients send protobuf; -v=8 shows the request's content type.
    let out = server.kubectl(&[
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "-v=8",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(PROTOBUF),
        "kubectl did not send protobuf"
    );
    let d = stored(&server, "/apis/apps/v1/namespaces/default/deployments/web").await;
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "busybox:1.36");
    assert_eq!(c["name"], "busybox");
    assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "web");
    // Defaults apply as to a JSON create: Go's empty `strategy: {}` is no value.
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
    assert_eq!(c["imagePullPolicy"], "IfNotPresent");
    assert!(d["metadata"].get("generateName").is_none(), "{d}");

    // An explicit zero in a pointer field is kept.
    server.kubectl_ok(&[
        "create",
        "deployment",
        "idle",
        "--image=busybox:1.36",
        "--replicas=0",
    ]);
    let d = stored(&server, "/apis/apps/v1/namespaces/default/deployments/idle").await;
    assert_eq!(d["spec"]["replicas"], 0);

    server.kubectl_ok(&[
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ]);
    let cm = stored(&server, "/api/v1/namespaces/default/configmaps/settings").await;
    assert_eq!(cm["data"]["mode"], "fast");

    server.kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "login",
        "--from-literal=password=s3cret",
    ]);
    let s = stored(&server, "/api/v1/namespaces/default/secrets/login").await;
    assert_eq!(s["data"]["password"], "czNjcmV0");
    assert_eq!(s["type"], "Opaque");

    let tls = rcgen::generate_simple_self_signed(vec!["web.example".into()]).unwrap();
    let cert = server.dir.path().join("tls-test.crt");
    let key = server.dir.path().join("tls-test.key");
    std::fs::write(&cert, tls.cert.pem()).unwrap();
    std::fs::write(&key, tls.key_pair.serialize_pem()).unwrap();
    server.kubectl_ok(&[
        "create",
        "secret",
        "tls",
        "web-tls",
        &format!("--cert={}", cert.display()),
        &format!("--key={}", key.display()),
    ]);
    let s = stored(&server, "/api/v1/namespaces/default/secrets/web-tls").await;
    assert_eq!(s["type"], "kubernetes.io/tls");
    assert!(s["data"]["tls.crt"].as_str().is_some_and(|v| v.len() > 100));

    server.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "pull",
        "--docker-server=registry.example",
        "--docker-username=me",
        "--docker-password=pw",
    ]);
    let s = stored(&server, "/api/v1/namespaces/default/secrets/pull").await;
    assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
    assert!(s["data"][".dockerconfigjson"].is_string());

    server.kubectl_ok(&["create", "namespace", "shop"]);
    let ns = stored(&server, "/api/v1/namespaces/shop").await;
    assert_eq!(ns["status"]["phase"], "Active");

    server.kubectl_ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let svc = stored(&server, "/api/v1/namespaces/default/services/web").await;
    assert_eq!(svc["spec"]["ports"][0]["port"], 80);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(svc["spec"]["type"], "ClusterIP");
    assert!(svc["spec"]["clusterIP"].is_string());

    server.kubectl_ok(&["create", "service", "nodeport", "edge", "--tcp=80:8080"]);
    let svc = stored(&server, "/api/v1/namespaces/default/services/edge").await;
    assert_eq!(svc["spec"]["type"], "NodePort");
    assert!(svc["spec"]["ports"][0]["nodePort"].as_i64().unwrap() >= 30000);

    // kubectl prints what the server answered in protobuf.
    let yaml = server.kubectl_ok(&[
        "create",
        "configmap",
        "echo",
        "--from-literal=k=v",
        "-o",
        "yaml",
    ]);
    assert!(yaml.contains("uid:") && yaml.contains("k: v"), "{yaml}");
    let yaml = server.kubectl_ok(&["get", "deployment", "web", "-o", "yaml"]);
    assert!(yaml.contains("image: busybox:1.36"), "{yaml}");
    server.kubectl_ok(&["delete", "deployment", "idle"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_responses_and_watch_frames_read_with_k8s_pb() {
    let server = Server::start();
    server.kubectl_ok(&["create", "deployment", "web", "--image=busybox:1.36"]);
    let http = server.client();
    let get = |path: &str| {
        http.get(format!("{}{path}", server.url))
            .bearer_auth(&server.admin_token)
            .header(
                reqwest::header::ACCEPT,
                format!("{PROTOBUF}, application/json"),
            )
            .send()
    };
    let r = get("/apis/apps/v1/namespaces/default/deployments/web")
        .await
        .unwrap();
    assert_eq!(r.headers()[reqwest::header::CONTENT_TYPE], PROTOBUF);
    let unknown = unwrap_envelope(&r.bytes().await.unwrap());
    assert_eq!(
        unknown.type_meta.unwrap().kind.as_deref(),
        Some("Deployment")
    );
    let d = apps::Deployment::decode(unknown.raw.unwrap().as_slice()).unwrap();
    assert_eq!(d.metadata.unwrap().name.as_deref(), Some("web"));
    assert_eq!(d.spec.unwrap().replicas, Some(1));

    let r = get("/apis/apps/v1/namespaces/default/deployments")
        .await
        .unwrap();
    let unknown = unwrap_envelope(&r.bytes().await.unwrap());
    let list = apps::DeploymentList::decode(unknown.raw.unwrap().as_slice()).unwrap();
    assert_eq!(list.items.len(), 1);
    assert!(list.metadata.unwrap().resource_version.is_some());

    // Errors stay JSON Status objects, which clients read whatever they asked for.
    let r = get("/apis/apps/v1/namespaces/default/deployments/none")
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let mut r = get("/apis/apps/v1/namespaces/default/deployments?watch=1&timeoutSeconds=5")
        .await
        .unwrap();
    assert_eq!(
        r.headers()[reqwest::header::CONTENT_TYPE],
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let mut buf = Vec::new();
    while buf.len() < 4 || buf.len() < 4 + u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize
    {
        let chunk = r.chunk().await.unwrap().expect("a watch frame");
        buf.extend_from_slice(&chunk);
    }
    let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
    let event = meta::WatchEvent::decode(&buf[4..4 + len]).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let object = unwrap_envelope(&event.object.unwrap().raw.unwrap());
    let d = apps::Deployment::decode(object.raw.unwrap().as_slice()).unwrap();
    assert_eq!(d.metadata.unwrap().name.as_deref(), Some("web"));
}

#[test]
fn kubectl_explain_knows_every_served_kind_and_strict_validation_names_a_misspelt_field() {
    let server = Server::start();
    // NAME [SHORTNAMES] APIVERSION NAMESPACED KIND: the plural and its group/version, which
    // `kubectl explain` needs where a plural is served by two groups (`events`).
    let kinds = server.kubectl_ok(&["api-resources", "--no-headers"]);
    let mut explained = 0;
    for line in kinds.lines().filter(|l| !l.is_empty()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (resource, api_version) = (words[0], words[words.len() - 3]);
        let version_arg = format!("--api-version={api_version}");
        let text = server.kubectl_ok(&["explain", resource, &version_arg]);
        assert!(
            text.contains("DESCRIPTION") && text.contains("FIELDS"),
            "kubectl explain {resource} {version_arg}:\n{text}"
        );
        explained += 1;
    }
    // Every built-in kind berth stores, not only the first thirteen.
    assert!(explained >= 70, "{kinds}");
    let strategy = server.kubectl_ok(&["explain", "deployment.spec.strategy"]);
    assert!(
        strategy.contains("DeploymentStrategy describes how to replace existing pods"),
        "{strategy}"
    );
    assert!(strategy.contains("rollingUpdate"), "{strategy}");
    let image = server.kubectl_ok(&["explain", "pods.spec.containers.image"]);
    assert!(image.contains("Container image name"), "{image}");

    let misspelt = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: typo\nspec:\n  replicaz: 2\n  selector:\n    matchLabels: {app: typo}\n  template:\n    metadata:\n      labels: {app: typo}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1.36\n";
    let out = server.kubectl_stdin(&["apply", "--validate=strict", "-f", "-"], Some(misspelt));
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("replicaz"), "{}", stderr(&out));
    let missing = server.kubectl(&["get", "deployment", "typo"]);
    assert!(!missing.status.success());
}
