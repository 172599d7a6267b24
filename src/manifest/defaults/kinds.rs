//! The defaults of every kind but Pod, one function per kind, each as Kubernetes 1.37 sets
//! them (`SetDefaults_<Kind>` and the generated defaulters of its group, plus what its registry
//! sets on create). Pod templates get [`pod_spec`]'s.

use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::pod::pod_spec;
use super::{Fill, Hook, Origin, Table, is_str};

/// Where a workload's pod template spec is.
const TEMPLATE: [&str; 3] = ["spec", "template", "spec"];

/// Whether the object has a name yet (not only a `generateName`).
fn named(object: &Value) -> bool {
    object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty())
}

pub(super) fn namespace(t: &mut Table) {
    // Every named Namespace carries its own name as a label (`SetDefaults_Namespace`).
    t.computed(&["metadata"], "labels", |o, _| named(o).then(|| json!({})));
    t.computed(
        &["metadata", "labels"],
        "kubernetes.io/metadata.name",
        |o, _| named(o).then(|| o.pointer("/metadata/name").cloned())?,
    );
    // The registry on create: the `kubernetes` finalizer.
    t.with_origin(Origin::Registry, &[], "spec", Fill::Constant(json!({})));
    t.with_origin(
        Origin::Registry,
        &["spec"],
        "finalizers",
        Fill::Constant(json!(["kubernetes"])),
    );
    t.constant(&[], "status", json!({}));
    t.constant(&["status"], "phase", json!("Active"));
}

/// `LoadBalancer` and `NodePort` Services, and `ClusterIP` ones with external IPs.
fn externally_accessible(spec: &Map<String, Value>) -> bool {
    is_str(spec, "type", "LoadBalancer")
        || is_str(spec, "type", "NodePort")
        || (is_str(spec, "type", "ClusterIP")
            && spec
                .get("externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|ips| !ips.is_empty()))
}

/// Whether a Service keeps clients on one endpoint (`sessionAffinity: ClientIP`).
fn client_ip(service: &Value) -> bool {
    service.pointer("/spec/sessionAffinity") == Some(&json!("ClientIP"))
}

/// `clusterIP: None` and no selector: the registry's one dual-stack default.
fn headless_without_selector(spec: &Map<String, Value>) -> bool {
    is_str(spec, "clusterIP", "None")
        && spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(Map::is_empty)
}

pub(super) fn service(t: &mut Table) {
    t.hook(Hook {
        apply: drop_affinity_config_without_affinity,
        strip: None,
        origin: Origin::Defaulting,
    });
    t.constant(&["spec"], "type", json!("ClusterIP"));
    t.constant(&["spec"], "sessionAffinity", json!("None"));
    t.computed(&["spec"], "sessionAffinityConfig", |o, _| {
        client_ip(o).then(|| json!({}))
    });
    t.computed(&["spec", "sessionAffinityConfig"], "clientIP", |o, _| {
        client_ip(o).then(|| json!({}))
    });
    t.computed(
        &["spec", "sessionAffinityConfig", "clientIP"],
        "timeoutSeconds",
        |o, _| client_ip(o).then(|| json!(10800)),
    );
    t.constant(&["spec", "ports", "*"], "protocol", json!("TCP"));
    t.computed(&["spec", "ports", "*"], "targetPort", |_, p| {
        p.get("port").cloned()
    });
    t.computed(&["spec"], "externalTrafficPolicy", |_, s| {
        externally_accessible(s).then(|| json!("Cluster"))
    });
    t.computed(&["spec"], "internalTrafficPolicy", |_, s| {
        ["ClusterIP", "NodePort", "LoadBalancer"]
            .iter()
            .any(|ty| is_str(s, "type", ty))
            .then(|| json!("Cluster"))
    });
    t.computed(&["spec"], "allocateLoadBalancerNodePorts", |_, s| {
        is_str(s, "type", "LoadBalancer").then(|| json!(true))
    });
    t.computed(
        &["status", "loadBalancer", "ingress", "*"],
        "ipMode",
        |o, ingress| {
            let lb = o.pointer("/spec/type") == Some(&json!("LoadBalancer"));
            (lb && ingress
                .get("ip")
                .and_then(Value::as_str)
                .is_some_and(|ip| !ip.is_empty()))
            .then(|| json!("VIP"))
        },
    );
    // The registry on create, for berth's single-stack IPv4 cluster: every Service but an
    // ExternalName one gets an IP family policy and its families.
    t.with_origin(
        Origin::Registry,
        &["spec"],
        "ipFamilyPolicy",
        Fill::Computed(|_, s| {
            if is_str(s, "type", "ExternalName") {
                None
            } else if headless_without_selector(s) {
                Some(json!("RequireDualStack"))
            } else {
                Some(json!("SingleStack"))
            }
        }),
    );
    t.with_origin(
        Origin::Registry,
        &["spec"],
        "ipFamilies",
        Fill::Computed(|_, s| {
            if is_str(s, "type", "ExternalName") {
                None
            } else if headless_without_selector(s) && !is_str(s, "ipFamilyPolicy", "SingleStack") {
                Some(json!(["IPv4", "IPv6"]))
            } else {
                Some(json!(["IPv4"]))
            }
        }),
    );
    // Not a default: `status.loadBalancer` is a struct, so the API always writes it out.
    t.with_origin(
        Origin::Registry,
        &[],
        "status",
        Fill::Constant(json!({"loadBalancer": {}})),
    );
}

/// `sessionAffinityConfig` only means something with `sessionAffinity: ClientIP`.
fn drop_affinity_config_without_affinity(service: &mut Value) {
    let Some(spec) = service.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    if spec
        .get("sessionAffinity")
        .is_none_or(|a| a == "None" || a.is_null())
    {
        spec.shift_remove("sessionAffinityConfig");
    }
}

pub(super) fn endpoints(t: &mut Table) {
    t.constant(&["subsets", "*", "ports", "*"], "protocol", json!("TCP"));
}

pub(super) fn endpoint_slice(t: &mut Table) {
    t.constant(&["ports", "*"], "name", json!(""));
    t.constant(&["ports", "*"], "protocol", json!("TCP"));
}

pub(super) fn secret(t: &mut Table) {
    t.hook(Hook {
        apply: fold_string_data,
        strip: None,
        origin: Origin::Defaulting,
    });
    t.constant(&[], "type", json!("Opaque"));
}

/// A Secret's write-only `stringData` is merged into `data`, base64-encoded, as the API server
/// does when it decodes one.
fn fold_string_data(secret: &mut Value) {
    let Value::Object(root) = secret else { return };
    let Some(Value::Object(string_data)) = root.shift_remove("stringData") else {
        return;
    };
    let data = root.entry("data").or_insert_with(|| json!({}));
    if data.is_null() {
        *data = json!({});
    }
    if let Value::Object(data) = data {
        for (key, value) in string_data {
            let text = match value {
                Value::String(s) => s,
                other => other.to_string(),
            };
            let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            data.insert(key, Value::String(encoded));
        }
    }
}

pub(super) fn node(t: &mut Table) {
    t.computed(&["status"], "allocatable", |_, status| {
        status.get("capacity").filter(|c| !c.is_null()).cloned()
    });
}

pub(super) fn persistent_volume_claim(t: &mut Table) {
    t.constant(&["spec"], "volumeMode", json!("Filesystem"));
    t.constant(&[], "status", json!({}));
    t.constant(&["status"], "phase", json!("Pending"));
}

pub(super) fn persistent_volume(t: &mut Table) {
    t.constant(&["spec"], "persistentVolumeReclaimPolicy", json!("Retain"));
    t.constant(&["spec"], "volumeMode", json!("Filesystem"));
    t.constant(&[], "status", json!({}));
    t.constant(&["status"], "phase", json!("Pending"));
}

pub(super) fn storage_class(t: &mut Table) {
    t.constant(&[], "reclaimPolicy", json!("Delete"));
    t.constant(&[], "volumeBindingMode", json!("Immediate"));
}

pub(super) fn priority_class(t: &mut Table) {
    t.constant(&[], "preemptionPolicy", json!("PreemptLowerPriority"));
}

pub(super) fn csi_driver(t: &mut Table) {
    t.constant(&["spec"], "attachRequired", json!(true));
    t.constant(&["spec"], "podInfoOnMount", json!(false));
    t.constant(&["spec"], "requiresRepublish", json!(false));
    t.constant(&["spec"], "storageCapacity", json!(false));
    t.constant(&["spec"], "seLinuxMount", json!(false));
    t.constant(&["spec"], "fsGroupPolicy", json!("ReadWriteOnceWithFSType"));
    t.constant(&["spec"], "volumeLifecycleModes", json!(["Persistent"]));
}

pub(super) fn replication_controller(t: &mut Table) {
    t.constant(&["spec"], "replicas", json!(1));
    pod_spec(t, &TEMPLATE);
}

/// A rolling-update strategy block: `{type: RollingUpdate, rollingUpdate: {...}}`.
fn rolling_update(t: &mut Table, strategy: &'static str, fields: &[(&'static str, Value)]) {
    t.constant(&["spec"], strategy, json!({}));
    t.constant(&["spec", strategy], "type", json!("RollingUpdate"));
    t.computed(&["spec", strategy], "rollingUpdate", |_, s| {
        is_str(s, "type", "RollingUpdate").then(|| json!({}))
    });
    for (field, value) in fields {
        t.constant(&["spec", strategy, "rollingUpdate"], field, value.clone());
    }
}

pub(super) fn deployment(t: &mut Table) {
    t.constant(&["spec"], "replicas", json!(1));
    rolling_update(
        t,
        "strategy",
        &[("maxUnavailable", json!("25%")), ("maxSurge", json!("25%"))],
    );
    t.constant(&["spec"], "revisionHistoryLimit", json!(10));
    t.constant(&["spec"], "progressDeadlineSeconds", json!(600));
    pod_spec(t, &TEMPLATE);
}

pub(super) fn replica_set(t: &mut Table) {
    t.constant(&["spec"], "replicas", json!(1));
    pod_spec(t, &TEMPLATE);
}

pub(super) fn stateful_set(t: &mut Table) {
    t.constant(&["spec"], "podManagementPolicy", json!("OrderedReady"));
    rolling_update(t, "updateStrategy", &[("partition", json!(0))]);
    t.constant(&["spec"], "persistentVolumeClaimRetentionPolicy", json!({}));
    for field in ["whenDeleted", "whenScaled"] {
        t.constant(
            &["spec", "persistentVolumeClaimRetentionPolicy"],
            field,
            json!("Retain"),
        );
    }
    t.constant(&["spec"], "replicas", json!(1));
    t.constant(&["spec"], "revisionHistoryLimit", json!(10));
    t.constant(
        &["spec", "volumeClaimTemplates", "*", "spec"],
        "volumeMode",
        json!("Filesystem"),
    );
    pod_spec(t, &TEMPLATE);
}

pub(super) fn daemon_set(t: &mut Table) {
    rolling_update(
        t,
        "updateStrategy",
        &[("maxUnavailable", json!(1)), ("maxSurge", json!(0))],
    );
    t.constant(&["spec"], "revisionHistoryLimit", json!(10));
    pod_spec(t, &TEMPLATE);
}

pub(super) fn job(t: &mut Table) {
    t.constant(&["spec"], "backoffLimit", json!(6));
    // Both are 1 when neither is given; a lone parallelism leaves completions unset.
    t.computed(&["spec"], "completions", |_, s| {
        (!s.contains_key("parallelism")).then(|| json!(1))
    });
    t.constant(&["spec"], "parallelism", json!(1));
    t.constant(&["spec"], "completionMode", json!("NonIndexed"));
    t.constant(&["spec"], "suspend", json!(false));
    t.computed(&["spec"], "podReplacementPolicy", |_, s| {
        (!s.contains_key("podFailurePolicy")).then(|| json!("TerminatingOrFailed"))
    });
    pod_spec(t, &TEMPLATE);
}

pub(super) fn cron_job(t: &mut Table) {
    t.constant(&["spec"], "concurrencyPolicy", json!("Allow"));
    t.constant(&["spec"], "suspend", json!(false));
    t.constant(&["spec"], "successfulJobsHistoryLimit", json!(3));
    t.constant(&["spec"], "failedJobsHistoryLimit", json!(1));
    pod_spec(t, &["spec", "jobTemplate", "spec", "template", "spec"]);
}
