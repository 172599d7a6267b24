//! The ConfigMaps and Secrets pods refer to, served from the agent's watch caches
//! (kube-runtime reflectors), so planning a pod never waits on the API server.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::reflector::{ObjectRef, Store};

use crate::daemons::agent::pod::env::ObjectResolver;

/// Reads the reflector stores.
pub struct ClusterObjects {
    pub config_maps: Store<ConfigMap>,
    pub secrets: Store<Secret>,
}

impl ObjectResolver for ClusterObjects {
    fn config_map(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let found = self
            .config_maps
            .get(&ObjectRef::new(name).within(namespace))?;
        let mut data = found.data.clone().unwrap_or_default();
        for (k, v) in found.binary_data.iter().flatten() {
            data.insert(k.clone(), String::from_utf8_lossy(&v.0).into_owned());
        }
        Some(data)
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>> {
        let found = self.secrets.get(&ObjectRef::new(name).within(namespace))?;
        let mut data: BTreeMap<String, String> = found
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
            .collect();
        for (k, v) in found.string_data.iter().flatten() {
            data.insert(k.clone(), v.clone());
        }
        Some(data)
    }
}
