//! The process-wide side of served CRDs: each definition with the servers (owners) whose
//! stores hold it, the resources it adds to [`crate::cluster::api::resources`], and the custom
//! kinds the OpenAPI documents describe. A definition stays served while any owner holds it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use crate::cluster::api::openapi::{self, CustomKind};
use crate::cluster::api::resources::{self, Resource, Subresource};
use crate::manifest::crd::{Catalog, Definition, Version};

/// A definition as the process serves it, and the servers whose stores hold it.
struct Entry {
    definition: Arc<Definition>,
    owners: HashSet<u64>,
}

/// Definitions by storage key segment (`example.com/widgets`, [`Resource::storage`]).
static DEFINITIONS: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Default::default);
pub(super) static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

fn definitions() -> MutexGuard<'static, HashMap<String, Entry>> {
    DEFINITIONS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn storage_key(d: &Definition) -> String {
    format!("{}/{}", d.group, d.names.plural)
}

/// Strings of runtime resources live as long as the process: each distinct one is leaked once.
fn intern(s: &str) -> &'static str {
    static STRINGS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut set = STRINGS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

fn intern_list(items: &[String]) -> &'static [&'static str] {
    static LISTS: LazyLock<Mutex<HashSet<&'static [&'static str]>>> =
        LazyLock::new(Default::default);
    let list: Vec<&'static str> = items.iter().map(|s| intern(s)).collect();
    let mut set = LISTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(list.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(list.into_boxed_slice());
    set.insert(leaked);
    leaked
}

/// The resource of one served version of a definition.
pub fn resource_of(d: &Definition, v: &Version) -> Resource {
    let storage = d.storage();
    Resource {
        group: intern(&d.group),
        version: intern(&v.name),
        api_version: intern(&d.api_version(&v.name)),
        kind: intern(&d.names.kind),
        plural: intern(&d.names.plural),
        storage: intern(&storage_key(d)),
        singular: d.names.singular.clone(),
        namespaced: d.namespaced,
        short_names: intern_list(&d.names.short_names),
        categories: intern_list(&d.names.categories),
        subresources: match (v.status, v.scale.is_some()) {
            (true, true) => &[Subresource::Status, Subresource::Scale],
            (true, false) => &[Subresource::Status],
            (false, true) => &[Subresource::Scale],
            (false, false) => &[],
        },
        has_spec: true,
        stored_as: (storage.name != v.name).then(|| intern(&d.api_version(&storage.name))),
    }
}

/// The definition a served resource comes from; `None` for built-in resources.
pub fn definition(r: &Resource) -> Option<Arc<Definition>> {
    let map = definitions();
    let entry = map.get(r.storage)?;
    (entry.definition.group == r.group && entry.definition.names.kind == r.kind)
        .then(|| entry.definition.clone())
}

/// The served definitions, for checking custom resources whose CRD is not in the same set
/// (git sync's commits).
pub fn catalog() -> Catalog {
    let mut catalog = Catalog::default();
    for entry in definitions().values() {
        // Two served definitions cannot claim one kind: their plurals key the registry.
        let _ = catalog.add(Definition::clone(&entry.definition));
    }
    catalog
}

/// Whether `r` is a custom resource.
pub fn is_custom(r: &Resource) -> bool {
    definition(r).is_some()
}

/// Serves `d` for `owner`: its served versions join the registry, versions it no longer
/// serves leave it.
pub(super) fn register(owner: u64, d: Arc<Definition>) {
    let mut map = definitions();
    register_in(&mut map, owner, d);
    publish(&map);
}

fn register_in(map: &mut HashMap<String, Entry>, owner: u64, d: Arc<Definition>) {
    let entry = map.entry(storage_key(&d)).or_insert_with(|| Entry {
        definition: d.clone(),
        owners: HashSet::new(),
    });
    let old = std::mem::replace(&mut entry.definition, d.clone());
    entry.owners.insert(owner);
    for v in old.versions.iter().filter(|v| v.served) {
        if d.served(&v.name).is_none() {
            resources::remove(&old.group, &v.name, &old.names.plural);
        }
    }
    for v in d.versions.iter().filter(|v| v.served) {
        resources::insert(resource_of(&d, v));
    }
}

/// Drops `owner`'s claim on the definition stored under `key`; the last claim unregisters it.
pub(super) fn unregister(owner: u64, key: &str) {
    let mut map = definitions();
    if unregister_in(&mut map, owner, key) {
        publish(&map);
    }
}

/// Returns whether the definition left the registry.
fn unregister_in(map: &mut HashMap<String, Entry>, owner: u64, key: &str) -> bool {
    let Some(entry) = map.get_mut(key) else {
        return false;
    };
    entry.owners.remove(&owner);
    if !entry.owners.is_empty() {
        return false;
    }
    let Some(entry) = map.remove(key) else {
        return false;
    };
    let d = entry.definition;
    for v in d.versions.iter().filter(|v| v.served) {
        resources::remove(&d.group, &v.name, &d.names.plural);
    }
    true
}

/// Hands the served custom kinds' schemas to the OpenAPI documents (`kubectl explain`).
fn publish(map: &HashMap<String, Entry>) {
    let mut kinds: Vec<CustomKind> = map
        .values()
        .flat_map(|e| {
            let d = &e.definition;
            d.versions
                .iter()
                .filter(|v| v.served)
                .map(move |v| CustomKind {
                    group: d.group.clone(),
                    version: v.name.clone(),
                    kind: d.names.kind.clone(),
                    plural: d.names.plural.clone(),
                    namespaced: d.namespaced,
                    schema: v.schema_json.clone(),
                })
        })
        .collect();
    kinds.sort_by(|a, b| (&a.group, &a.plural, &a.version).cmp(&(&b.group, &b.plural, &b.version)));
    openapi::set_custom_kinds(kinds);
}

#[cfg(test)]
pub(super) mod tests {
    use std::sync::atomic::Ordering;

    use serde_json::json;

    use super::*;

    pub(crate) fn widget_crd(group: &str) -> serde_json::Value {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": format!("widgets.{group}")},
            "spec": {
                "group": group, "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wdg"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true,
                     "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.size", "statusReplicasPath": ".status.size"}},
                     "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                        "spec": {"type": "object", "properties": {"size": {"type": "integer", "default": 1}}},
                        "status": {"type": "object", "properties": {"size": {"type": "integer"}}}}}}},
                    {"name": "v1beta1", "served": true, "storage": false,
                     "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}},
                ],
            },
        })
    }

    #[test]
    fn two_owners_share_a_definition_until_the_last_lets_go() {
        let group = "owners-test.berth.dev";
        let d = Arc::new(Definition::parse(&widget_crd(group)).unwrap());
        // The `_in` forms: the OpenAPI documents' custom kinds belong to another test.
        let a = NEXT_OWNER.fetch_add(2, Ordering::Relaxed);
        let b = a + 1;
        register_in(&mut definitions(), a, d.clone());
        register_in(&mut definitions(), b, d.clone());
        let v1 = resources::by_plural(group, "v1", "widgets").unwrap();
        assert!(v1.has(Subresource::Scale) && v1.stored_as.is_none());
        let beta = resources::by_plural(group, "v1beta1", "widgets").unwrap();
        assert_eq!(beta.stored_as, Some("owners-test.berth.dev/v1"));
        assert!(is_custom(beta));
        let key = storage_key(&d);
        assert!(!unregister_in(&mut definitions(), a, &key));
        assert!(
            resources::by_plural(group, "v1", "widgets").is_some(),
            "the other server still has it"
        );
        assert!(unregister_in(&mut definitions(), b, &key));
        assert!(resources::by_plural(group, "v1", "widgets").is_none());
        assert!(resources::by_plural(group, "v1beta1", "widgets").is_none());
    }
}
