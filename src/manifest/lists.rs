//! How Kubernetes' types merge lists, for server-side apply and strategic merge patch: the
//! merge key of each keyed list (`patchMergeKey`), the keys that tell its items apart
//! (`x-kubernetes-list-map-keys`), and the lists that are sets of scalars.

use serde_json::Value;

/// The merge key of a list field, as Kubernetes' types declare it (`patchMergeKey`).
/// `sample` is an item of the list, to tell container ports from Service ports.
pub fn merge_key(field: &str, sample: Option<&Value>) -> Option<&'static str> {
    let has = |k: &str| sample.and_then(|s| s.get(k)).is_some();
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "readinessGates"
        | "resourceClaims" => "name",
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" | "topologySpreadConstraints" if has("type") => "type",
        "topologySpreadConstraints" => "topologyKey",
        "ports" if has("containerPort") => "containerPort",
        "ports" => "port",
        "addresses" if has("type") => "type",
        _ => return None,
    })
}

/// The keys that tell the items of a list apart in server-side apply (Kubernetes'
/// `x-kubernetes-list-map-keys`): the merge key, and for ports also `protocol`, so port 53 over
/// TCP and over UDP are two items, not one.
pub fn list_map_keys(field: &str, sample: Option<&Value>) -> Option<&'static [&'static str]> {
    Some(match merge_key(field, sample)? {
        "containerPort" => &["containerPort", "protocol"],
        "port" => &["port", "protocol"],
        "name" => &["name"],
        "mountPath" => &["mountPath"],
        "devicePath" => &["devicePath"],
        "ip" => &["ip"],
        "uid" => &["uid"],
        "type" => &["type"],
        "topologyKey" => &["topologyKey"],
        other => unreachable!("merge key {other} has list-map keys"),
    })
}

/// An item's value for a list-map key; a port's `protocol` defaults to TCP, as the server
/// defaults it.
pub fn list_map_value<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    static TCP: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    match item.get(key) {
        None if key == "protocol" => Some(TCP.get_or_init(|| Value::String("TCP".into()))),
        found => found,
    }
}

/// Lists whose items are a set of scalars, merged by value.
pub fn is_set_list(field: &str) -> bool {
    matches!(field, "finalizers")
}
