//! A container's environment from `env` and `envFrom`, and `$(VAR)` expansion in
//! `command` and `args`, with Kubernetes' precedence rules.
//!
//! ConfigMaps and Secrets come through [`ObjectResolver`], so the standalone runtime tests use
//! [`StaticObjects`] and the API-backed agent plugs in its watch cache.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// Looks up the ConfigMaps and Secrets a pod refers to.
pub trait ObjectResolver: Send + Sync {
    /// The data of a ConfigMap, `None` when it does not exist.
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
    /// The decoded data of a Secret, `None` when it does not exist.
    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;
}

/// A fixed set of ConfigMaps and Secrets, keyed by `(namespace, name)`.
#[derive(Debug, Clone, Default)]
pub struct StaticObjects {
    /// ConfigMaps' data.
    pub config_maps: BTreeMap<(String, String), BTreeMap<String, String>>,
    /// Secrets' decoded data.
    pub secrets: BTreeMap<(String, String), BTreeMap<String, String>>,
}

impl ObjectResolver for StaticObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }
}

/// Why a variable could not be resolved (Kubernetes reports `CreateContainerConfigError`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// A referenced ConfigMap or Secret is missing and the reference is not optional.
    #[error("container {container:?}: {kind} {name:?} not found")]
    MissingObject {
        container: String,
        kind: &'static str,
        name: String,
    },
    /// A referenced key is missing and the reference is not optional.
    #[error("container {container:?}: key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        container: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    /// A `fieldRef` or `resourceFieldRef` berth does not support.
    #[error("container {container:?}: variable {variable:?} uses unsupported {what:?}")]
    Unsupported {
        container: String,
        variable: String,
        what: String,
    },
}

/// Values of the pod that `fieldRef` may read and the agent knows.
#[derive(Debug, Clone, Default)]
pub struct PodFields {
    /// The pod's IP (known once the sandbox runs).
    pub pod_ip: Option<String>,
    /// The node's IP.
    pub host_ip: Option<String>,
    /// The node's name.
    pub node_name: String,
}

fn field_value(pod: &Pod, fields: &PodFields, path: &str) -> Option<String> {
    let meta = &pod.metadata;
    let from_map = |map: &Option<BTreeMap<String, String>>, prefix: &str| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.as_ref()?.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => meta.namespace.clone(),
        "metadata.uid" => meta.uid.clone(),
        "spec.nodeName" => Some(fields.node_name.clone()),
        "spec.serviceAccountName" => pod
            .spec
            .as_ref()
            .and_then(|s| s.service_account_name.clone()),
        "status.podIP" => Some(fields.pod_ip.clone().unwrap_or_default()),
        "status.hostIP" => Some(fields.host_ip.clone().unwrap_or_default()),
        _ => from_map(&meta.labels, "metadata.labels['")
            .or_else(|| from_map(&meta.annotations, "metadata.annotations['")),
    }
}

/// Sets `name`, keeping the first position and the last value, as Kubernetes does.
fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(entry) => entry.1 = value,
        None => env.push((name.to_string(), value)),
    }
}

/// The container's environment: `envFrom` first, then `env`, later entries winning.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    fields: &PodFields,
    objects: &dyn ObjectResolver,
) -> Result<Vec<(String, String)>, EnvError> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
    let cname = || container.name.clone();
    let mut env: Vec<(String, String)> = Vec::new();
    for source in container.env_from.iter().flatten() {
        let prefix = source.prefix.as_deref().unwrap_or("");
        let (kind, name, optional, data) = if let Some(r) = &source.config_map_ref {
            let data = objects.config_map(namespace, &r.name);
            ("ConfigMap", &r.name, r.optional, data)
        } else if let Some(r) = &source.secret_ref {
            let data = objects.secret(namespace, &r.name);
            ("Secret", &r.name, r.optional, data)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (key, value) in data {
                    set(&mut env, &format!("{prefix}{key}"), value);
                }
            }
            None if optional == Some(true) => {}
            None => {
                return Err(EnvError::MissingObject {
                    container: cname(),
                    kind,
                    name: name.clone(),
                });
            }
        }
    }
    for var in container.env.iter().flatten() {
        let Some(from) = &var.value_from else {
            let current: BTreeMap<String, String> = env.iter().cloned().collect();
            let value = expand(var.value.as_deref().unwrap_or(""), &current);
            set(&mut env, &var.name, value);
            continue;
        };
        let keyed = match (&from.config_map_key_ref, &from.secret_key_ref) {
            (Some(r), _) => Some((
                "ConfigMap",
                &r.name,
                &r.key,
                r.optional,
                objects.config_map(namespace, &r.name),
            )),
            (None, Some(r)) => Some((
                "Secret",
                &r.name,
                &r.key,
                r.optional,
                objects.secret(namespace, &r.name),
            )),
            (None, None) => None,
        };
        if let Some((kind, name, key, optional, data)) = keyed {
            let optional = optional == Some(true);
            match data.map(|d| d.get(key).cloned()) {
                Some(Some(value)) => set(&mut env, &var.name, value),
                _ if optional => {}
                None => {
                    return Err(EnvError::MissingObject {
                        container: cname(),
                        kind,
                        name: name.clone(),
                    });
                }
                Some(None) => {
                    return Err(EnvError::MissingKey {
                        container: cname(),
                        kind,
                        name: name.clone(),
                        key: key.clone(),
                    });
                }
            }
        } else if let Some(field) = &from.field_ref {
            let value = field_value(pod, fields, &field.field_path).ok_or_else(|| {
                EnvError::Unsupported {
                    container: cname(),
                    variable: var.name.clone(),
                    what: format!("fieldRef {}", field.field_path),
                }
            })?;
            set(&mut env, &var.name, value);
        } else {
            return Err(EnvError::Unsupported {
                container: cname(),
                variable: var.name.clone(),
                what: "resourceFieldRef".to_string(),
            });
        }
    }
    Ok(env)
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is a literal `$`,
/// anything else stays as written.
pub fn expand(input: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some((name, tail)) = after
            .strip_prefix('(')
            .and_then(|inner| inner.split_once(')'))
            .filter(|(name, _)| env.contains_key(*name))
        {
            out.push_str(&env[name]);
            rest = tail;
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod_with(container: serde_json::Value) -> (Pod, Container) {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "shop", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"containers": [container]}
        }))
        .unwrap();
        let c = pod.spec.as_ref().unwrap().containers[0].clone();
        (pod, c)
    }

    fn objects() -> StaticObjects {
        let mut o = StaticObjects::default();
        o.config_maps.insert(
            ("shop".into(), "cfg".into()),
            BTreeMap::from([("MODE".into(), "fast".into()), ("LEVEL".into(), "3".into())]),
        );
        o.secrets.insert(
            ("shop".into(), "db".into()),
            BTreeMap::from([("password".into(), "hunter2".into())]),
        );
        o
    }

    #[test]
    fn env_sources_resolve_with_kubernetes_precedence() {
        let (pod, c) = pod_with(serde_json::json!({
            "name": "app", "image": "busybox",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "CFG_"}],
            "env": [
                {"name": "CFG_MODE", "value": "slow"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "URL", "value": "http://$(POD):$(CFG_LEVEL)/$$(POD)/$(NOPE)"}
            ]
        }));
        let fields = PodFields {
            node_name: "n1".into(),
            ..Default::default()
        };
        let env = container_env(&pod, &c, &fields, &objects()).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("CFG_MODE"), Some("slow"));
        assert_eq!(get("CFG_LEVEL"), Some("3"));
        assert_eq!(get("PW"), Some("hunter2"));
        assert_eq!(get("POD"), Some("web"));
        assert_eq!(get("APP"), Some("web"));
        assert_eq!(get("NODE"), Some("n1"));
        assert_eq!(get("URL"), Some("http://web:3/$(POD)/$(NOPE)"));
    }

    #[test]
    fn missing_references_fail_unless_optional() {
        let (pod, c) = pod_with(serde_json::json!({
            "name": "app", "image": "busybox",
            "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "NOPE"}}}]
        }));
        let err = container_env(&pod, &c, &PodFields::default(), &objects()).unwrap_err();
        assert!(matches!(err, EnvError::MissingKey { ref key, .. } if key == "NOPE"));

        let (pod, c) = pod_with(serde_json::json!({
            "name": "app", "image": "busybox",
            "env": [{"name": "X", "valueFrom": {"secretKeyRef":
                {"name": "gone", "key": "k", "optional": true}}}]
        }));
        let env = container_env(&pod, &c, &PodFields::default(), &objects()).unwrap();
        assert!(env.is_empty());
    }
}
