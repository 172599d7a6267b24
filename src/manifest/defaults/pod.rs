//! Pod specs, wherever they are (a Pod, a Deployment's template, a CronJob's job template):
//! `SetDefaults_PodSpec`, `SetDefaults_Container`, probes, volumes; and what only a Pod gets
//! (`SetDefaults_Pod`: service links, requests from limits, host ports on the host network;
//! its registry's phase and QoS class; admission's service account, priority and tolerations).

use serde_json::{Map, Value, json};

use super::{Fill, Hook, Origin, Step, Stripped, Table, at};

/// `Always` for `:latest` or an untagged image, else `IfNotPresent` (a digest counts as a tag).
fn image_pull_policy(_: &Value, container: &Map<String, Value>) -> Option<Value> {
    let image = container.get("image")?.as_str()?;
    let last = image.rsplit('/').next().unwrap_or(image);
    let tagged = image.contains('@') || last.contains(':');
    let latest = !image.contains('@') && last.ends_with(":latest");
    Some(json!(if !tagged || latest {
        "Always"
    } else {
        "IfNotPresent"
    }))
}

/// The keys a volume names besides its source.
const VOLUME_NAME_KEYS: [&str; 2] = ["name", "emptyDir"];

/// A volume that names no source is an `emptyDir`.
fn empty_dir(_: &Value, volume: &Map<String, Value>) -> Option<Value> {
    volume
        .keys()
        .all(|k| VOLUME_NAME_KEYS.contains(&k.as_str()))
        .then(|| json!({}))
}

/// The probe and lifecycle-handler defaults of one container list.
fn container(t: &mut Table, c: &[&'static str]) {
    let at = |rest: &[&'static str]| at(c, rest);
    t.computed(c, "imagePullPolicy", image_pull_policy);
    t.constant(c, "terminationMessagePath", json!("/dev/termination-log"));
    t.constant(c, "terminationMessagePolicy", json!("File"));
    // Not a default: `resources` is a struct, so the API always writes it out.
    t.constant(c, "resources", json!({}));
    t.constant(&at(&["ports", "*"]), "protocol", json!("TCP"));
    t.constant(
        &at(&["env", "*", "valueFrom", "fieldRef"]),
        "apiVersion",
        json!("v1"),
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let p = at(&[probe]);
        t.constant(&p, "timeoutSeconds", json!(1));
        t.constant(&p, "periodSeconds", json!(10));
        t.constant(&p, "successThreshold", json!(1));
        t.constant(&p, "failureThreshold", json!(3));
        http_get(t, &at(&[probe, "httpGet"]));
        t.constant(&at(&[probe, "grpc"]), "service", json!(""));
    }
    for handler in ["postStart", "preStop"] {
        http_get(t, &at(&["lifecycle", handler, "httpGet"]));
    }
}

fn http_get(t: &mut Table, get: &[&'static str]) {
    t.constant(get, "path", json!("/"));
    t.constant(get, "scheme", json!("HTTP"));
}

fn volumes(t: &mut Table, spec: &[&'static str]) {
    let v = at(spec, &["volumes", "*"]);
    let at = |rest: &[&'static str]| at(&v, rest);
    t.computed(&v, "emptyDir", empty_dir);
    t.constant(&at(&["hostPath"]), "type", json!(""));
    for source in ["configMap", "secret", "projected", "downwardAPI"] {
        t.constant(&at(&[source]), "defaultMode", json!(420));
    }
    t.constant(
        &at(&["downwardAPI", "items", "*", "fieldRef"]),
        "apiVersion",
        json!("v1"),
    );
    let sources = at(&["projected", "sources", "*"]);
    t.constant(
        &super::at(&sources, &["downwardAPI", "items", "*", "fieldRef"]),
        "apiVersion",
        json!("v1"),
    );
    t.constant(
        &super::at(&sources, &["serviceAccountToken"]),
        "expirationSeconds",
        json!(3600),
    );
    t.constant(
        &at(&["ephemeral", "volumeClaimTemplate", "spec"]),
        "volumeMode",
        json!("Filesystem"),
    );
    t.constant(&at(&["iscsi"]), "iscsiInterface", json!("default"));
    t.constant(&at(&["rbd"]), "pool", json!("rbd"));
    t.constant(&at(&["rbd"]), "user", json!("admin"));
    t.constant(&at(&["rbd"]), "keyring", json!("/etc/ceph/keyring"));
    t.constant(&at(&["azureDisk"]), "cachingMode", json!("ReadWrite"));
    t.constant(&at(&["azureDisk"]), "kind", json!("Shared"));
    t.constant(&at(&["azureDisk"]), "fsType", json!("ext4"));
    t.constant(&at(&["azureDisk"]), "readOnly", json!(false));
    t.constant(&at(&["scaleIO"]), "storageMode", json!("ThinProvisioned"));
    t.constant(&at(&["scaleIO"]), "fsType", json!("xfs"));
}

/// The defaults of a PodSpec at `spec`, as every kind with a pod template gets them.
pub(super) fn pod_spec(t: &mut Table, spec: &[&'static str]) {
    t.constant(spec, "dnsPolicy", json!("ClusterFirst"));
    t.constant(spec, "restartPolicy", json!("Always"));
    t.constant(spec, "securityContext", json!({}));
    t.constant(spec, "terminationGracePeriodSeconds", json!(30));
    t.constant(spec, "schedulerName", json!("default-scheduler"));
    volumes(t, spec);
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        container(t, &at(spec, &[list, "*"]));
    }
}

/// A PodTemplate (`template.spec`).
pub(super) fn pod_template(t: &mut Table) {
    pod_spec(t, &["template", "spec"]);
}

/// A Pod: its spec's defaults, `SetDefaults_Pod`, the registry's status and the admission
/// plugins' additions.
pub(super) fn pod(t: &mut Table) {
    t.hook(Hook {
        apply: requests_from_limits,
        strip: Some(strip_requests_equal_to_limits),
        origin: Origin::Defaulting,
    });
    pod_spec(t, &["spec"]);
    t.constant(&["spec"], "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        t.computed(&["spec", list, "*", "ports", "*"], "hostPort", host_port);
    }
    // The registry on create: a Pod starts Pending, with the QoS class of its resources.
    let registry = |t: &mut Table, parent: &[&'static str], field, fill| {
        t.with_origin(Origin::Registry, parent, field, fill);
    };
    registry(t, &[], "status", Fill::Constant(json!({})));
    registry(t, &["status"], "phase", Fill::Constant(json!("Pending")));
    registry(t, &["status"], "qosClass", Fill::Computed(qos_class));
    // Admission plugins of a stock kube-apiserver (ServiceAccount, Priority,
    // DefaultTolerationSeconds), which berth's server does not run.
    let admission = |t: &mut Table, field, fill| {
        t.with_origin(Origin::Admission, &["spec"], field, fill);
    };
    admission(
        t,
        "preemptionPolicy",
        Fill::Constant(json!("PreemptLowerPriority")),
    );
    admission(t, "priority", Fill::Constant(json!(0)));
    admission(t, "serviceAccountName", Fill::Constant(json!("default")));
    admission(
        t,
        "serviceAccount",
        Fill::Computed(|_, spec| spec.get("serviceAccountName").cloned()),
    );
    admission(
        t,
        "tolerations",
        Fill::Constant(json!([
            {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready",
             "operator": "Exists", "tolerationSeconds": 300},
            {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable",
             "operator": "Exists", "tolerationSeconds": 300},
        ])),
    );
}

/// On the host network a container port is also a host port.
fn host_port(pod: &Value, port: &Map<String, Value>) -> Option<Value> {
    let host_network = pod.pointer("/spec/hostNetwork") == Some(&json!(true));
    host_network.then(|| port.get("containerPort").cloned())?
}

/// The containers and init containers of a Pod, mutably.
fn pod_containers(pod: &mut Value) -> impl Iterator<Item = &mut Map<String, Value>> {
    let spec = pod.get_mut("spec").and_then(Value::as_object_mut);
    spec.into_iter().flat_map(|spec| {
        spec.iter_mut()
            .filter(|(k, _)| *k == "containers" || *k == "initContainers")
            .filter_map(|(_, list)| list.as_array_mut())
            .flatten()
            .filter_map(Value::as_object_mut)
    })
}

/// A container's limits are also its requests where it states none (`SetDefaults_Pod`).
fn requests_from_limits(pod: &mut Value) {
    for container in pod_containers(pod) {
        let Some(Value::Object(resources)) = container.get_mut("resources") else {
            continue;
        };
        let Some(Value::Object(limits)) = resources.get("limits").cloned() else {
            continue;
        };
        if limits.is_empty() {
            continue;
        }
        let requests = resources.entry("requests").or_insert_with(|| json!({}));
        if requests.is_null() {
            *requests = json!({});
        }
        if let Value::Object(requests) = requests {
            for (name, quantity) in limits {
                requests.entry(name).or_insert(quantity);
            }
        }
    }
}

/// The inverse for the diff: requests equal to their limit go (the whole `requests` when
/// nothing else is left).
fn strip_requests_equal_to_limits(pod: &mut Value) -> Vec<Stripped> {
    let mut removed = Vec::new();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return removed;
    };
    for list in ["containers", "initContainers"] {
        let Some(Value::Array(containers)) = spec.get_mut(list) else {
            continue;
        };
        for (i, container) in containers.iter_mut().enumerate() {
            let Some(Value::Object(resources)) = container.get_mut("resources") else {
                continue;
            };
            let limits = resources.get("limits").cloned().unwrap_or(Value::Null);
            let Some(Value::Object(requests)) = resources.get_mut("requests") else {
                continue;
            };
            let same: Vec<String> = requests
                .iter()
                .filter(|(name, q)| limits.get(name.as_str()) == Some(*q))
                .map(|(name, _)| name.clone())
                .collect();
            let path = |rest: &[&str]| {
                let mut p = vec![
                    Step::Key("spec".into()),
                    Step::Key(list.into()),
                    Step::Index(i),
                    Step::Key("resources".into()),
                    Step::Key("requests".into()),
                ];
                p.extend(rest.iter().map(|k| Step::Key((*k).into())));
                p
            };
            for name in same {
                if let Some(value) = requests.shift_remove(&name) {
                    removed.push(Stripped {
                        path: path(&[&name]),
                        value,
                    });
                }
            }
            if requests.is_empty() {
                resources.shift_remove("requests");
            }
        }
    }
    removed
}

/// A quantity in billionths (`250m` → 250,000,000; `1Ki` → 1,024,000,000,000), rounded up;
/// `None` when it is not a quantity or too large to add up.
fn nanos(quantity: &Value) -> Option<i128> {
    let text = match quantity {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        "Ki" => (1, 0),
        "Mi" => (2, 0),
        "Gi" => (3, 0),
        "Ti" => (4, 0),
        "Pi" => (5, 0),
        "Ei" => (6, 0),
        other => (0, other.strip_prefix(['e', 'E'])?.parse().ok()?),
    };
    let negative = number.starts_with('-');
    let number = number.trim_start_matches(['+', '-']);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    let digits: i128 = format!("{whole}{fraction}").parse().ok()?;
    // value = digits × 10^(decimal − fraction digits) × 1024^binary, in billionths.
    let exponent = decimal + 9 - i32::try_from(fraction.len()).ok()?;
    let mut value = digits.checked_mul(1024i128.checked_pow(binary)?)?;
    if exponent >= 0 {
        value = value.checked_mul(10i128.checked_pow(exponent.unsigned_abs())?)?;
    } else {
        let divisor = 10i128.checked_pow(exponent.unsigned_abs())?;
        value = (value + divisor - 1) / divisor;
    }
    Some(if negative { -value } else { value })
}

/// Adds the positive cpu and memory quantities of `list` to `sums`; returns the names added.
fn add_compute(sums: &mut Map<String, Value>, list: Option<&Value>) -> Vec<String> {
    let mut found = Vec::new();
    for (name, quantity) in list.and_then(Value::as_object).into_iter().flatten() {
        if name != "cpu" && name != "memory" {
            continue;
        }
        let Some(n) = nanos(quantity).filter(|n| *n > 0) else {
            continue;
        };
        let sum = sums.get(name).and_then(Value::as_i64).map_or(0, i128::from);
        // Sums past i64 are far beyond any machine; they compare as unequal.
        let total = i64::try_from(sum + n).unwrap_or(i64::MAX);
        sums.insert(name.clone(), json!(total));
        found.push(name.clone());
    }
    found
}

/// `Guaranteed`, `Burstable` or `BestEffort`, from the resources of the pod (pod-level when
/// it sets cpu or memory there) or of its containers and init containers, as Kubernetes'
/// `ComputePodQOS` does.
fn qos_class(pod: &Value, _: &Map<String, Value>) -> Option<Value> {
    let mut requests = Map::new();
    let mut limits = Map::new();
    let mut guaranteed = true;
    let pod_level = pod.pointer("/spec/resources").filter(|r| {
        ["requests", "limits"].iter().any(|list| {
            r.get(*list).and_then(Value::as_object).is_some_and(|m| {
                m.keys()
                    .any(|k| k == "cpu" || k == "memory" || k.starts_with("hugepages-"))
            })
        })
    });
    let both = |found: &[String]| {
        ["cpu", "memory"]
            .iter()
            .all(|r| found.iter().any(|f| f == r))
    };
    match pod_level {
        Some(resources) => {
            add_compute(&mut requests, resources.get("requests"));
            if resources
                .get("limits")
                .and_then(Value::as_object)
                .is_some_and(|l| !l.is_empty())
            {
                guaranteed &= both(&add_compute(&mut limits, resources.get("limits")));
            }
        }
        None => {
            for list in ["containers", "initContainers"] {
                let containers = pod
                    .pointer(&format!("/spec/{list}"))
                    .and_then(Value::as_array);
                for c in containers.into_iter().flatten() {
                    add_compute(&mut requests, c.pointer("/resources/requests"));
                    guaranteed &= both(&add_compute(&mut limits, c.pointer("/resources/limits")));
                }
            }
        }
    }
    let class = if requests.is_empty() && limits.is_empty() {
        "BestEffort"
    } else if guaranteed
        && requests.len() == limits.len()
        && requests.iter().all(|(name, r)| limits.get(name) == Some(r))
    {
        "Guaranteed"
    } else {
        "Burstable"
    };
    Some(json!(class))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_pull_policy_follows_the_tag() {
        let policy = |image: &str| {
            let c = json!({"image": image});
            image_pull_policy(&Value::Null, c.as_object().unwrap()).unwrap()
        };
        assert_eq!(policy("nginx"), json!("Always"));
        assert_eq!(policy("nginx:latest"), json!("Always"));
        assert_eq!(policy("registry:5000/nginx"), json!("Always"));
        assert_eq!(policy("registry:5000/nginx:1.2"), json!("IfNotPresent"));
        assert_eq!(policy("nginx@sha256:abcd"), json!("IfNotPresent"));
    }

    #[test]
    fn quantities_compare_exactly_whatever_their_unit() {
        let n = |q: &str| nanos(&json!(q));
        assert_eq!(n("1"), n("1000m"));
        assert_eq!(n("1Gi"), n("1073741824"));
        assert_eq!(n("0.5"), n("500m"));
        assert_eq!(n("1e3"), n("1k"));
        assert_eq!(n("250m"), Some(250_000_000));
        assert_eq!(nanos(&json!(2)), n("2"));
        assert_eq!(n("lots"), None);
    }

    #[test]
    fn qos_classes_follow_requests_and_limits() {
        let class = |containers: Value| {
            let pod = json!({"spec": {"containers": containers}});
            qos_class(&pod, &Map::new()).unwrap()
        };
        assert_eq!(class(json!([{"name": "a"}])), json!("BestEffort"));
        let both = json!({"cpu": "1", "memory": "64Mi"});
        assert_eq!(
            class(
                json!([{"resources": {"limits": both, "requests": {"cpu": "1000m", "memory": "64Mi"}}}])
            ),
            json!("Guaranteed")
        );
        assert_eq!(
            class(json!([{"resources": {"limits": both, "requests": {"cpu": "500m"}}}])),
            json!("Burstable")
        );
        assert_eq!(
            class(json!([{"resources": {"limits": {"cpu": "1"}, "requests": {"cpu": "1"}}}])),
            json!("Burstable")
        );
        assert_eq!(
            class(json!([{"resources": {"requests": {"cpu": "0"}}}])),
            json!("BestEffort")
        );
    }
}
