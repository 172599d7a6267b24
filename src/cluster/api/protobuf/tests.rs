//! The transcoder against every kind berth knows (a sample object with every field its schema
//! has, JSON → protobuf → JSON) and against `k8s-pb`'s independently generated prost types.

use std::collections::HashSet;

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use prost::Message;
use prost_reflect::{Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::transcode::Transcoder;
use super::*;
use crate::manifest::kinds::KINDS;

fn transcoder() -> &'static Transcoder {
    &TRANSCODER
}

/// Every built-in kind (berth's own have no protobuf), with its list kind where it has one.
fn built_in() -> impl Iterator<Item = (&'static str, String)> {
    KINDS
        .iter()
        .filter(|k| k.api_version != "berth.dev/v1")
        .flat_map(|k| {
            let list = k
                .listable
                .then(|| (k.api_version, format!("{}List", k.kind)));
            [(k.api_version, k.kind.to_string())]
                .into_iter()
                .chain(list)
        })
}

#[test]
fn every_built_in_kind_and_the_api_machinery_kinds_have_a_message() {
    let t = transcoder();
    let extra = [
        ("v1", "DeleteOptions"),
        ("apps/v1", "DeleteOptions"),
        ("v1", "Status"),
        ("meta.k8s.io/v1", "WatchEvent"),
        ("autoscaling/v1", "Scale"),
        ("policy/v1", "Eviction"),
    ];
    let mut missing = Vec::new();
    for (av, kind) in built_in().chain(extra.iter().map(|(a, k)| (*a, k.to_string()))) {
        if t.message(av, &kind).is_none() {
            missing.push(format!("{av} {kind}"));
        }
    }
    assert!(missing.is_empty(), "no message for: {missing:?}");
    let deployment = t.message("apps/v1", "Deployment").unwrap();
    assert_eq!(deployment.full_name(), "k8s.io.api.apps.v1.Deployment");
    let status = t.message("v1", "Status").unwrap();
    assert_eq!(
        status.full_name(),
        "k8s.io.apimachinery.pkg.apis.meta.v1.Status"
    );
}

/// The messages a kind's message reaches.
fn reachable(m: &MessageDescriptor, seen: &mut HashSet<String>) {
    if !seen.insert(m.full_name().to_string()) {
        return;
    }
    for f in m.fields() {
        if let Kind::Message(inner) = f.kind() {
            if inner.is_map_entry() {
                if let Kind::Message(v) = inner.map_entry_value_field().kind() {
                    reachable(&v, seen);
                }
            } else {
                reachable(&inner, seen);
            }
        }
    }
}

#[test]
fn the_go_field_table_describes_every_message_a_kind_reaches() {
    let t = transcoder();
    let mut seen = HashSet::new();
    for (av, kind) in built_in() {
        reachable(&t.message(av, &kind).unwrap(), &mut seen);
    }
    let mut undescribed: Vec<_> = seen.iter().filter(|m| !t.is_described(m)).collect();
    undescribed.sort();
    assert!(
        undescribed.is_empty(),
        "proto/go-fields.txt lacks: {undescribed:?}"
    );
    assert!(seen.len() > 500, "{} messages", seen.len());
}

/// A value for every property the schema has, so that every field is transcoded.
fn sample(schema: &Value, defs: &Map<String, Value>, trail: &mut Vec<String>) -> Option<Value> {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap_or(r);
        let short = name.rsplit('.').next().unwrap_or(name);
        let known = match short {
            "Time" => json!("2024-05-01T10:00:00Z"),
            "MicroTime" => json!("2024-05-01T10:00:00.123456Z"),
            "Duration" => json!("1m30s"),
            "Quantity" => json!("250m"),
            "IntOrString" => json!(8080),
            "RawExtension" => json!({"raw": ["json", 1]}),
            "FieldsV1" => json!({"f:metadata": {"f:labels": {}}}),
            "JSON" => json!({"any": [1, "json"]}),
            "JSONSchemaPropsOrBool" => json!(true),
            "JSONSchemaPropsOrArray" => json!({"type": "string"}),
            "JSONSchemaPropsOrStringArray" => json!(["a", "b"]),
            _ => Value::Null,
        };
        if !known.is_null() {
            return Some(known);
        }
        if trail.iter().any(|n| n == name) || trail.len() > 14 {
            return None;
        }
        trail.push(name.to_string());
        let out = sample(defs.get(name)?, defs, trail);
        trail.pop();
        return out;
    }
    if schema.get("x-kubernetes-int-or-string").is_some() {
        return Some(json!("25%"));
    }
    let ty = schema.get("type").and_then(Value::as_str).unwrap_or("");
    match ty {
        "object" | "" => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                // An object embedded in another (a StatefulSet's claim templates) keeps its
                // type in JSON only, as in Kubernetes: protobuf messages have no TypeMeta.
                let embedded = props.contains_key("metadata") && !trail.is_empty();
                let mut out = Map::new();
                for (k, p) in props {
                    if embedded && (k == "apiVersion" || k == "kind") {
                        continue;
                    }
                    if let Some(v) = sample(p, defs, trail) {
                        out.insert(k.clone(), v);
                    }
                }
                return Some(Value::Object(out));
            }
            if let Some(extra) = schema.get("additionalProperties") {
                let v = sample(extra, defs, trail)?;
                return Some(json!({"some-key": v}));
            }
            if schema.get("x-kubernetes-preserve-unknown-fields").is_some() {
                return Some(json!({"free": "form"}));
            }
            Some(json!({}))
        }
        "array" => Some(json!([sample(schema.get("items")?, defs, trail)?])),
        "string" => Some(match schema.get("format").and_then(Value::as_str) {
            Some("byte") => json!("aGVsbG8="),
            Some("date-time") => json!("2024-05-01T10:00:00Z"),
            _ => json!("text"),
        }),
        "integer" => Some(json!(3)),
        "number" => Some(json!(1.5)),
        "boolean" => Some(json!(true)),
        _ => None,
    }
}

/// Where two JSON values first differ, for a readable failure.
fn difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => {
                        if let Some(d) = difference(v, w, &format!("{path}.{k}")) {
                            return Some(d);
                        }
                    }
                    None => return Some(format!("{path}.{k}: lost")),
                }
            }
            y.keys()
                .find(|k| !x.contains_key(*k))
                .map(|k| format!("{path}.{k}: added"))
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .find_map(|(i, (v, w))| difference(v, w, &format!("{path}[{i}]"))),
        _ if a == b => None,
        _ => Some(format!("{path}: {a} became {b}")),
    }
}

/// Fields k8s-openapi's 1.37 has and the published `.proto` files (proto/README.md's
/// commits) do not have yet: protobuf cannot carry them until the files are regenerated.
const NEWER_THAN_THE_PROTO_FILES: &[&str] = &[
    "runningInUserNamespace",
    "derivedAttributes",
    "compatibilityGroups",
];

/// Removes every field of this name, at any depth.
fn remove(v: &mut Value, name: &str) {
    match v {
        Value::Object(m) => {
            m.remove(name);
            m.values_mut().for_each(|x| remove(x, name));
        }
        Value::Array(a) => a.iter_mut().for_each(|x| remove(x, name)),
        _ => {}
    }
}

fn sample_of(kind: &crate::manifest::kinds::KindInfo) -> Value {
    let schema = serde_json::to_value((kind.schema)()).unwrap();
    let defs = schema
        .get("$defs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut object = sample(&schema, &defs, &mut Vec::new()).unwrap();
    object["apiVersion"] = json!(kind.api_version);
    object["kind"] = json!(kind.kind);
    object
}

#[test]
fn a_sample_of_every_kind_with_every_field_survives_json_to_protobuf_and_back() {
    let t = transcoder();
    let mut failures = Vec::new();
    let mut kinds = 0;
    for kind in KINDS.iter().filter(|k| k.api_version != "berth.dev/v1") {
        let object = sample_of(kind);
        let back = encode_with(t, &object).and_then(|pb| decode_envelope(t, &pb));
        match back {
            Ok(back) => {
                let mut object = object;
                for path in NEWER_THAN_THE_PROTO_FILES {
                    remove(&mut object, path);
                }
                if let Some(d) = difference(&object, &back, "") {
                    failures.push(format!("{} {}: {d}", kind.api_version, kind.kind));
                }
            }
            Err(e) => failures.push(format!("{} {}: {e}", kind.api_version, kind.kind)),
        }
        kinds += 1;
    }
    assert!(kinds > 90, "{kinds} kinds");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn envelope(api_version: &str, kind: &str, raw: Vec<u8>) -> Vec<u8> {
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown {
        type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(raw),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
}

fn some(s: &str) -> Option<String> {
    Some(s.into())
}

/// A Deployment as Go's marshaller writes it for `kubectl create deployment`: every value
/// field present, zero or not, and `replicas` an explicit pointer.
fn go_style_deployment(replicas: i32) -> apps::Deployment {
    use k8s_pb::api::core::v1 as core;
    let labels = std::collections::BTreeMap::from([("app".to_string(), "web".to_string())]);
    let empty_meta = meta::ObjectMeta {
        name: some(""),
        generate_name: some(""),
        namespace: some(""),
        self_link: some(""),
        uid: some(""),
        resource_version: some(""),
        generation: Some(0),
        creation_timestamp: Some(meta::Time::default()),
        ..Default::default()
    };
    apps::Deployment {
        metadata: Some(meta::ObjectMeta {
            name: some("web"),
            labels: labels.clone(),
            ..empty_meta.clone()
        }),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(replicas),
            selector: Some(meta::LabelSelector {
                match_labels: labels.clone(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels,
                    ..empty_meta
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: some("busybox"),
                        image: some("busybox:1.36"),
                        resources: Some(core::ResourceRequirements::default()),
                        termination_message_path: some(""),
                        image_pull_policy: some(""),
                        ..Default::default()
                    }],
                    restart_policy: some(""),
                    dns_policy: some(""),
                    service_account_name: some(""),
                    host_network: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy {
                r#type: some(""),
                rolling_update: None,
            }),
            min_ready_seconds: Some(0),
            paused: Some(false),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus {
            replicas: Some(0),
            ..Default::default()
        }),
    }
}

#[test]
fn a_deployment_from_k8s_pb_prost_types_decodes_to_the_json_kubectl_means() {
    let body = envelope(
        "apps/v1",
        "Deployment",
        go_style_deployment(0).encode_to_vec(),
    );
    let v = decode(&body).unwrap();
    assert_eq!(
        v,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            // Value structs Go wrote with zero fields (`strategy`, `status`) are left out.
            "spec": {
                // A pointer: an explicit zero is kept.
                "replicas": 0,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{
                        "name": "busybox",
                        "image": "busybox:1.36",
                    }]},
                },
            },
        })
    );
}

#[test]
fn bytes_berth_writes_decode_with_k8s_pb_to_the_same_fields() {
    let object = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "42",
            "creationTimestamp": "2024-05-01T10:00:00Z", "labels": {"app": "web"}},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{
                "name": "web", "image": "nginx", "ports": [{"containerPort": 80}],
                "resources": {"limits": {"cpu": "500m"}}}]}}},
    });
    let pb = encode(&object).unwrap();
    let unknown =
        k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&pb[4..]).expect("an Unknown");
    assert_eq!(
        unknown.type_meta.as_ref().unwrap().kind.as_deref(),
        Some("Deployment")
    );
    let d = apps::Deployment::decode(unknown.raw.unwrap().as_slice()).unwrap();
    let m = d.metadata.unwrap();
    assert_eq!(m.namespace.as_deref(), Some("shop"));
    assert_eq!(m.creation_timestamp.unwrap().seconds, Some(1_714_557_600));
    let spec = d.spec.unwrap();
    assert_eq!(spec.replicas, Some(3));
    let ru = spec.strategy.unwrap().rolling_update.unwrap();
    assert_eq!(ru.max_surge.unwrap().str_val.as_deref(), Some("25%"));
    assert_eq!(ru.max_unavailable.unwrap().int_val, Some(1));
    let c = &spec.template.unwrap().spec.unwrap().containers[0];
    assert_eq!(c.ports[0].container_port, Some(80));
    let cpu = &c.resources.as_ref().unwrap().limits["cpu"];
    assert_eq!(cpu.string.as_deref(), Some("500m"));
}

/// Every field of a kind's sample, written by berth, read by `k8s-pb`'s type and written
/// again, reads back the same: no field lands on another number. `k8s-pb` is built from an
/// older Kubernetes, so fields it does not know yet are dropped, but nothing else may change.
fn through_k8s_pb<T: Message + Default>(api_version: &str, kind: &str) -> (usize, usize) {
    let t = transcoder();
    let info = crate::manifest::kinds::find(api_version, kind).unwrap();
    let object = sample_of(info);
    let pb = encode_with(t, &object).unwrap();
    let unknown = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&pb[4..]).unwrap();
    let typed = T::decode(unknown.raw.unwrap().as_slice())
        .unwrap_or_else(|e| panic!("{kind}: k8s-pb cannot read berth's bytes: {e}"));
    let back = decode_envelope(t, &envelope(api_version, kind, typed.encode_to_vec())).unwrap();
    let (mut kept, mut lost) = (0, 0);
    compare_subset(&object, &back, kind, &mut kept, &mut lost);
    (kept, lost)
}

/// Asserts `back` is `full` less some whole fields; counts the leaves kept and lost.
fn compare_subset(full: &Value, back: &Value, path: &str, kept: &mut usize, lost: &mut usize) {
    match (full, back) {
        (Value::Object(x), Value::Object(y)) => {
            for k in y.keys() {
                assert!(x.contains_key(k), "{path}.{k} appeared");
            }
            for (k, v) in x {
                match y.get(k) {
                    Some(w) => compare_subset(v, w, &format!("{path}.{k}"), kept, lost),
                    None => *lost += leaves(v),
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                compare_subset(v, w, &format!("{path}[{i}]"), kept, lost);
            }
        }
        _ => {
            assert_eq!(full, back, "{path}");
            *kept += 1;
        }
    }
}

fn leaves(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.values().map(leaves).sum(),
        Value::Array(a) => a.iter().map(leaves).sum(),
        _ => 1,
    }
}

#[test]
fn every_field_berth_writes_sits_where_k8s_pb_expects_it() {
    use k8s_pb::api;
    let results = [
        through_k8s_pb::<apps::Deployment>("apps/v1", "Deployment"),
        through_k8s_pb::<apps::StatefulSet>("apps/v1", "StatefulSet"),
        through_k8s_pb::<apps::DaemonSet>("apps/v1", "DaemonSet"),
        through_k8s_pb::<api::core::v1::Pod>("v1", "Pod"),
        through_k8s_pb::<api::core::v1::Service>("v1", "Service"),
        through_k8s_pb::<api::core::v1::ConfigMap>("v1", "ConfigMap"),
        through_k8s_pb::<api::core::v1::Secret>("v1", "Secret"),
        through_k8s_pb::<api::core::v1::Namespace>("v1", "Namespace"),
        through_k8s_pb::<api::core::v1::Node>("v1", "Node"),
        through_k8s_pb::<api::core::v1::PersistentVolume>("v1", "PersistentVolume"),
        through_k8s_pb::<api::core::v1::ServiceAccount>("v1", "ServiceAccount"),
        through_k8s_pb::<api::core::v1::ResourceQuota>("v1", "ResourceQuota"),
        through_k8s_pb::<api::batch::v1::Job>("batch/v1", "Job"),
        through_k8s_pb::<api::batch::v1::CronJob>("batch/v1", "CronJob"),
        through_k8s_pb::<api::rbac::v1::Role>("rbac.authorization.k8s.io/v1", "Role"),
        through_k8s_pb::<api::rbac::v1::ClusterRoleBinding>(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
        ),
        through_k8s_pb::<api::networking::v1::Ingress>("networking.k8s.io/v1", "Ingress"),
        through_k8s_pb::<api::networking::v1::NetworkPolicy>(
            "networking.k8s.io/v1",
            "NetworkPolicy",
        ),
        through_k8s_pb::<api::policy::v1::PodDisruptionBudget>("policy/v1", "PodDisruptionBudget"),
        through_k8s_pb::<api::scheduling::v1::PriorityClass>(
            "scheduling.k8s.io/v1",
            "PriorityClass",
        ),
        through_k8s_pb::<api::autoscaling::v2::HorizontalPodAutoscaler>(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
        ),
        through_k8s_pb::<api::storage::v1::StorageClass>("storage.k8s.io/v1", "StorageClass"),
        through_k8s_pb::<api::coordination::v1::Lease>("coordination.k8s.io/v1", "Lease"),
        through_k8s_pb::<api::discovery::v1::EndpointSlice>("discovery.k8s.io/v1", "EndpointSlice"),
        through_k8s_pb::<
            k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
        >("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
    ];
    let (kept, lost) = results.iter().fold((0, 0), |(k, l), (a, b)| (k + a, l + b));
    // Only fields newer than k8s-pb's Kubernetes may be lost.
    assert!(
        lost * 20 < kept,
        "{lost} of {} leaves lost through k8s-pb",
        kept + lost
    );
}

#[test]
fn a_watch_frame_is_a_length_and_a_watch_event_holding_an_enveloped_object() {
    let line = serde_json::to_vec(&json!({"type": "ADDED", "object": {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}}))
    .unwrap();
    let frame = watch_frame(transcoder(), &line).unwrap();
    let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
    assert_eq!(len, frame.len() - 4);
    let event = meta::WatchEvent::decode(&frame[4..]).unwrap();
    assert_eq!(event.r#type.as_deref(), Some("ADDED"));
    let object = decode(&event.object.unwrap().raw.unwrap()).unwrap();
    assert_eq!(object["data"]["k"], "v");
}

#[test]
fn delete_options_and_unknown_kinds_from_kubectl() {
    let options = meta::DeleteOptions {
        grace_period_seconds: Some(0),
        propagation_policy: some("Foreground"),
        dry_run: vec!["All".into()],
        ..Default::default()
    };
    let v = decode(&envelope("v1", "DeleteOptions", options.encode_to_vec())).unwrap();
    assert_eq!(v["gracePeriodSeconds"], 0);
    assert_eq!(v["propagationPolicy"], "Foreground");
    assert_eq!(v["dryRun"], json!(["All"]));
    let err = decode(&envelope("berth.dev/v1", "GitSource", vec![])).unwrap_err();
    assert!(matches!(err, ApiError::UnsupportedMediaType { .. }));
    assert!(matches!(decode(b"k8s\0\xff"), Err(ApiError::BadRequest(_))));
    assert!(matches!(decode(b"{}"), Err(ApiError::BadRequest(_))));
}

#[test]
fn a_secret_keeps_bytes_and_a_crd_keeps_its_schema_forms() {
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"},
        "type": "kubernetes.io/tls", "data": {"tls.crt": "aGVsbG8=", "tls.key": ""}});
    let back = decode(&encode(&secret).unwrap()).unwrap();
    assert_eq!(back, secret);
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object",
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {"spec": {"type": "object",
                        "additionalProperties": false,
                        "properties": {"size": {"type": "integer", "minimum": 0.0,
                            "default": 1}}}}}}}]}});
    let back = decode(&encode(&crd).unwrap()).unwrap();
    assert_eq!(difference(&crd, &back, ""), None);
}

#[test]
fn accept_headers_choose_protobuf_only_when_it_comes_first_and_not_as_a_table() {
    let with = |a: &'static str| {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_static(a));
        wants_protobuf(&h)
    };
    assert!(with("application/vnd.kubernetes.protobuf, */*"));
    assert!(with("application/vnd.kubernetes.protobuf,application/json"));
    assert!(!with(
        "application/json, application/vnd.kubernetes.protobuf"
    ));
    assert!(!with(
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json"
    ));
    assert!(!wants_protobuf(&HeaderMap::new()));
}
