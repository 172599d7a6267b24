//! The defaults Kubernetes fills in on write, that users see in `kubectl get -o yaml`:
//! pod and container policies, Service port protocol and targetPort, Deployment strategy and
//! limits. Pure: a function over the object's JSON, applied before validation and storage.

use serde_json::{Map, Value, json};

fn obj(v: &mut Value) -> Option<&mut Map<String, Value>> {
    v.as_object_mut()
}

/// Sets `key` to `value` where it is absent (or null).
fn default(map: &mut Map<String, Value>, key: &str, value: Value) {
    match map.get(key) {
        None | Some(Value::Null) => {
            map.insert(key.to_string(), value);
        }
        Some(_) => {}
    }
}

/// The image's tag, if any (`nginx:1.27` → `1.27`; digests count as pinned).
fn image_is_latest(image: &str) -> bool {
    if image.contains('@') {
        return false;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) => tag == "latest",
        None => true,
    }
}

fn container(c: &mut Value) {
    let Some(c) = obj(c) else { return };
    let image = c.get("image").and_then(Value::as_str).unwrap_or("");
    let policy = if image_is_latest(image) {
        "Always"
    } else {
        "IfNotPresent"
    };
    default(c, "imagePullPolicy", json!(policy));
    default(c, "terminationMessagePath", json!("/dev/termination-log"));
    default(c, "terminationMessagePolicy", json!("File"));
    default(c, "resources", json!({}));
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(obj) {
            default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).and_then(obj) {
            default(p, "timeoutSeconds", json!(1));
            default(p, "periodSeconds", json!(10));
            default(p, "successThreshold", json!(1));
            default(p, "failureThreshold", json!(3));
        }
    }
}

/// Defaults of a PodSpec, also inside Deployment and ReplicaSet templates.
pub fn pod_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    default(s, "restartPolicy", json!("Always"));
    default(s, "dnsPolicy", json!("ClusterFirst"));
    default(s, "terminationGracePeriodSeconds", json!(30));
    default(s, "schedulerName", json!("default-scheduler"));
    default(s, "securityContext", json!({}));
    for list in ["initContainers", "containers"] {
        if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
            cs.iter_mut().for_each(container);
        }
    }
}

fn pod_template(spec: &mut Map<String, Value>) {
    if let Some(t) = spec.get_mut("template").and_then(obj) {
        if let Some(ps) = t.get_mut("spec") {
            pod_spec(ps);
        }
    }
}

fn service_spec(spec: &mut Value) {
    let Some(s) = obj(spec) else { return };
    default(s, "type", json!("ClusterIP"));
    default(s, "sessionAffinity", json!("None"));
    default(s, "internalTrafficPolicy", json!("Cluster"));
    default(s, "ipFamilyPolicy", json!("SingleStack"));
    let kind = s
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if kind != "ExternalName" {
        default(s, "ipFamilies", json!(["IPv4"]));
    }
    if matches!(kind.as_str(), "NodePort" | "LoadBalancer") {
        default(s, "externalTrafficPolicy", json!("Cluster"));
    }
    if kind == "LoadBalancer" {
        default(s, "allocateLoadBalancerNodePorts", json!(true));
    }
    if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports.iter_mut().filter_map(obj) {
            default(p, "protocol", json!("TCP"));
            if let Some(port) = p.get("port").cloned() {
                default(p, "targetPort", port);
            }
        }
    }
}

/// Applies the defaults of `kind` (in the group of `api_version`) to an object in place.
pub fn apply(api_version: &str, kind: &str, object: &mut Value) {
    let Some(root) = obj(object) else { return };
    match (api_version, kind) {
        ("v1", "Pod") => {
            if let Some(spec) = root.get_mut("spec") {
                pod_spec(spec);
            }
            let status = root.entry("status").or_insert_with(|| json!({}));
            if let Some(st) = obj(status) {
                default(st, "phase", json!("Pending"));
                default(st, "qosClass", json!("BestEffort"));
            }
        }
        ("v1", "Service") => {
            if let Some(spec) = root.get_mut("spec") {
                service_spec(spec);
            }
            default(root, "status", json!({"loadBalancer": {}}));
        }
        ("v1", "Secret") => {
            default(root, "type", json!("Opaque"));
            // stringData is write-only: it is folded into data, as Kubernetes does.
            if let Some(Value::Object(plain)) = root.remove("stringData") {
                use base64::Engine;
                let data = root.entry("data").or_insert_with(|| json!({}));
                if let Some(d) = obj(data) {
                    for (k, v) in plain {
                        let text = v.as_str().unwrap_or_default().to_string();
                        d.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(text)),
                        );
                    }
                }
            }
        }
        ("v1", "Namespace") => {
            default(root, "spec", json!({"finalizers": ["kubernetes"]}));
            default(root, "status", json!({"phase": "Active"}));
        }
        ("apps/v1", "Deployment") => {
            if let Some(s) = root.get_mut("spec").and_then(obj) {
                default(s, "replicas", json!(1));
                default(s, "revisionHistoryLimit", json!(10));
                default(s, "progressDeadlineSeconds", json!(600));
                default(
                    s,
                    "strategy",
                    json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
                );
                pod_template(s);
            }
        }
        ("apps/v1", "ReplicaSet") => {
            if let Some(s) = root.get_mut("spec").and_then(obj) {
                default(s, "replicas", json!(1));
                pod_template(s);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_gets_the_defaults_kubectl_shows() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]},
                                    {"name": "side", "image": "busybox"}]}}}});
        apply("apps/v1", "Deployment", &mut d);
        assert_eq!(d["spec"]["replicas"], 1);
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
        let ps = &d["spec"]["template"]["spec"];
        assert_eq!(ps["restartPolicy"], "Always");
        assert_eq!(ps["dnsPolicy"], "ClusterFirst");
        assert_eq!(ps["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(ps["containers"][1]["imagePullPolicy"], "Always");
        assert_eq!(ps["containers"][0]["ports"][0]["protocol"], "TCP");
    }

    #[test]
    fn service_ports_get_protocol_and_target_port_but_user_values_stay() {
        let mut s = json!({"spec": {"ports": [{"port": 80}, {"port": 443, "targetPort": "https", "protocol": "UDP"}]}});
        apply("v1", "Service", &mut s);
        assert_eq!(s["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(s["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(s["spec"]["ports"][1]["targetPort"], "https");
        assert_eq!(s["spec"]["ports"][1]["protocol"], "UDP");
        assert_eq!(s["spec"]["type"], "ClusterIP");
        assert_eq!(s["spec"]["ipFamilies"], json!(["IPv4"]));
        assert!(s["spec"].get("externalTrafficPolicy").is_none());
        let mut lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        apply("v1", "Service", &mut lb);
        assert_eq!(lb["spec"]["externalTrafficPolicy"], "Cluster");
    }
}
