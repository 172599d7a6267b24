//! What a source's last applied commit declares, kept between commits: every manifest file
//! with its blob id and the objects it declares, and who declares each object. A new commit
//! is compared with it file by file ([`Index::next`]): only files whose blob changed were read
//! and validated; the whole-set check (an object declared twice) runs over the index, and the
//! change to apply ([`Change`]) names only the objects that differ and the ones that left.
//! The drift view and health read the same index.
//!
//! Pure: no git, no I/O; the caller lists the commit's blobs and loads the changed files.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde_json::{Value, json};

use super::SOURCE_COMMIT_ANNOTATION;

/// One manifest file of a commit.
#[derive(Debug, Clone)]
pub struct IndexedFile {
    /// Its blob id: the same id, the same content.
    pub blob: git2::Oid,
    /// The objects it declares, in file order, as applied (source annotations included).
    pub objects: Arc<Vec<Value>>,
}

/// Everything a commit of a source declares.
#[derive(Debug, Clone, Default)]
pub struct Index {
    pub commit: String,
    /// By path in the repository (the order objects are applied in).
    pub files: BTreeMap<String, IndexedFile>,
    /// Who declares each object: [`identity`] → path.
    owners: HashMap<String, String>,
    count: usize,
}

/// What one commit changes, against the index of the one before.
#[derive(Debug, Default)]
pub struct Change {
    /// New objects and objects whose manifest changed (annotations of the commit aside).
    pub changed: Vec<Value>,
    /// Objects no manifest declares any more (`apiVersion`, `kind`, `metadata`).
    pub removed: Vec<Value>,
}

/// `group/Kind/namespace/name` of a manifest, its namespace as written (empty when none).
pub fn identity(object: &Value) -> String {
    let text = |p: &str| object.pointer(p).and_then(Value::as_str).unwrap_or("");
    let group = text("/apiVersion").rsplit_once('/').map_or("", |(g, _)| g);
    format!(
        "{group}/{}/{}/{}",
        text("/kind"),
        text("/metadata/namespace"),
        text("/metadata/name")
    )
}

/// Whether two manifests say the same, the commit they were applied from aside.
fn same_manifest(a: &Value, b: &Value) -> bool {
    let commit = |v: &Value| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(SOURCE_COMMIT_ANNOTATION))
            .cloned()
    };
    if commit(a) == commit(b) {
        return a == b;
    }
    let mut b = b.clone();
    if let Some(annotations) = b
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(
            SOURCE_COMMIT_ANNOTATION.into(),
            commit(a).unwrap_or(Value::Null),
        );
    }
    *a == b
}

/// `apiVersion`, `kind` and `metadata.name`/`namespace` of an object: enough to name it.
fn reference(object: &Value) -> Value {
    let mut metadata = json!({"name": object.pointer("/metadata/name")});
    if let Some(ns) = object.pointer("/metadata/namespace") {
        metadata["namespace"] = ns.clone();
    }
    json!({"apiVersion": object.get("apiVersion"), "kind": object.get("kind"), "metadata": metadata})
}

impl Index {
    /// The index of a commit read whole: every file loaded. `Err`: each object declared twice.
    pub fn full(
        commit: &str,
        entries: &[(String, git2::Oid)],
        loaded: HashMap<String, Vec<Value>>,
    ) -> Result<Index, Vec<String>> {
        Index::default()
            .next(commit, entries, loaded)
            .map(|(i, _)| i)
    }

    /// The index of the next commit and what changed: `entries` lists every manifest file of
    /// the commit with its blob id, `loaded` holds the objects of each file whose blob the
    /// index does not have (every other file is taken from the index as it is). `Err`: each
    /// object declared twice, `path: Kind ns/name is declared twice (also in path)`.
    pub fn next(
        &self,
        commit: &str,
        entries: &[(String, git2::Oid)],
        mut loaded: HashMap<String, Vec<Value>>,
    ) -> Result<(Index, Change), Vec<String>> {
        let mut files = BTreeMap::new();
        let mut owners: HashMap<String, String> = HashMap::with_capacity(self.owners.len());
        let mut duplicates = Vec::new();
        let mut change = Change::default();
        let mut count = 0;
        for (path, blob) in entries {
            let file = match self.files.get(path) {
                Some(file) if file.blob == *blob && !loaded.contains_key(path) => file.clone(),
                _ => {
                    let objects = loaded.remove(path).unwrap_or_default();
                    // What the file held before, by identity (an object may also have moved
                    // in from another file).
                    let before: HashMap<String, &Value> = self
                        .files
                        .get(path)
                        .into_iter()
                        .flat_map(|f| f.objects.iter())
                        .map(|o| (identity(o), o))
                        .collect();
                    // Unchanged objects of a changed file keep what was applied.
                    let objects = objects
                        .into_iter()
                        .map(|object| {
                            let id = identity(&object);
                            let old = before.get(&id).copied().or_else(|| self.declared(&id));
                            (object, old)
                        })
                        .map(|(object, old)| match old {
                            Some(old) if same_manifest(old, &object) => old.clone(),
                            _ => {
                                change.changed.push(object.clone());
                                object
                            }
                        })
                        .collect();
                    IndexedFile {
                        blob: *blob,
                        objects: Arc::new(objects),
                    }
                }
            };
            for object in file.objects.iter() {
                count += 1;
                let id = identity(object);
                if let Some(first) = owners.get(&id) {
                    duplicates.push(format!(
                        "{path}: {} {} is declared twice (also in {first}); remove one of them",
                        object["kind"].as_str().unwrap_or(""),
                        describe_name(object)
                    ));
                } else {
                    owners.insert(id, path.clone());
                }
            }
            files.insert(path.clone(), file);
        }
        if !duplicates.is_empty() {
            return Err(duplicates);
        }
        for (path, file) in &self.files {
            if files.get(path).is_some_and(|f| f.blob == file.blob) {
                continue;
            }
            for object in file.objects.iter() {
                if !owners.contains_key(&identity(object)) {
                    change.removed.push(reference(object));
                }
            }
        }
        let index = Index {
            commit: commit.to_string(),
            files,
            owners,
            count,
        };
        Ok((index, change))
    }

    /// The object the index declares under `id` ([`identity`]).
    fn declared(&self, id: &str) -> Option<&Value> {
        let path = self.owners.get(id)?;
        self.files
            .get(path)?
            .objects
            .iter()
            .find(|o| identity(o) == id)
    }

    /// How many objects the commit declares.
    pub fn object_count(&self) -> usize {
        self.count
    }

    /// Every object, in path order.
    pub fn objects(&self) -> impl Iterator<Item = &Value> {
        self.files.values().flat_map(|f| f.objects.iter())
    }

    /// `apiVersion`, `kind` and namespace of each kind of member, once each: what the
    /// ApplySet parent's annotations need.
    pub fn member_kinds(&self) -> Vec<Value> {
        let kinds: BTreeSet<(&str, &str, Option<&str>)> = self
            .objects()
            .map(|o| {
                (
                    o["apiVersion"].as_str().unwrap_or(""),
                    o["kind"].as_str().unwrap_or(""),
                    o.pointer("/metadata/namespace").and_then(Value::as_str),
                )
            })
            .collect();
        kinds
            .into_iter()
            .map(|(api_version, kind, ns)| {
                json!({"apiVersion": api_version, "kind": kind, "metadata": {"namespace": ns}})
            })
            .collect()
    }
}

fn describe_name(object: &Value) -> String {
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    match object
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
    {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn oid(text: &str) -> git2::Oid {
        git2::Oid::hash_object(git2::ObjectType::Blob, text.as_bytes()).unwrap()
    }

    /// As the loader gives it: annotated with the commit and the file.
    fn cm(name: &str, value: &str, commit: &str, path: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "annotations": {
                SOURCE_COMMIT_ANNOTATION: commit, super::super::SOURCE_PATH_ANNOTATION: path}},
            "data": {"v": value}})
    }

    /// A repository as the tests see it: path → the (name, value) pairs its file declares.
    type Tree = BTreeMap<String, Vec<(String, String)>>;

    fn blob_of(objects: &[(String, String)]) -> git2::Oid {
        oid(&format!("{objects:?}"))
    }

    fn entries(tree: &Tree) -> Vec<(String, git2::Oid)> {
        tree.iter().map(|(p, o)| (p.clone(), blob_of(o))).collect()
    }

    /// What the loader gives for the files of `tree` the index does not hold.
    fn load(tree: &Tree, index: &Index, commit: &str) -> HashMap<String, Vec<Value>> {
        tree.iter()
            .filter(|(p, o)| index.files.get(*p).is_none_or(|f| f.blob != blob_of(o)))
            .map(|(p, o)| {
                let objects = o.iter().map(|(n, v)| cm(n, v, commit, p)).collect();
                (p.clone(), objects)
            })
            .collect()
    }

    /// Without the commit annotation: what the property compares.
    fn bare(object: &Value) -> Value {
        let mut o = object.clone();
        o["metadata"]["annotations"]
            .as_object_mut()
            .unwrap()
            .remove(SOURCE_COMMIT_ANNOTATION);
        o
    }

    #[test]
    fn a_one_line_commit_changes_one_object_and_a_removed_file_removes_its_objects() {
        let mut tree: Tree = BTreeMap::new();
        for i in 0..100 {
            tree.insert(
                format!("cm-{i:03}.yaml"),
                vec![(format!("cm-{i}"), "a".into())],
            );
        }
        let first =
            Index::full("c1", &entries(&tree), load(&tree, &Index::default(), "c1")).unwrap();
        assert_eq!(first.object_count(), 100);
        tree.insert("cm-007.yaml".into(), vec![("cm-7".into(), "b".into())]);
        tree.remove("cm-050.yaml");
        let loaded = load(&tree, &first, "c2");
        assert_eq!(loaded.len(), 1, "only the changed file is loaded");
        let (second, change) = first.next("c2", &entries(&tree), loaded).unwrap();
        assert_eq!(change.changed.len(), 1);
        assert_eq!(change.changed[0]["data"]["v"], "b");
        assert_eq!(change.removed.len(), 1);
        assert_eq!(change.removed[0]["metadata"]["name"], "cm-50");
        assert_eq!(second.object_count(), 99);
        // An object moved to another file is neither changed nor removed.
        tree.remove("cm-008.yaml");
        tree.insert("moved.yaml".into(), vec![("cm-8".into(), "a".into())]);
        let loaded = load(&tree, &second, "c3");
        let (third, change) = second.next("c3", &entries(&tree), loaded).unwrap();
        assert!(change.removed.is_empty(), "{change:?}");
        assert_eq!(
            change.changed.len(),
            1,
            "its source path annotation would change"
        );
        assert_eq!(third.object_count(), 99);
        // A duplicate across files refuses the commit, naming both.
        tree.insert("dup.yaml".into(), vec![("cm-9".into(), "z".into())]);
        let loaded = load(&tree, &third, "c4");
        let errors = third.next("c4", &entries(&tree), loaded).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("ConfigMap cm-9 is declared twice"),
            "{errors:?}"
        );
    }

    fn trees() -> impl Strategy<Value = Tree> {
        // Few paths and names, so commits rewrite, move, duplicate-free, add and drop objects.
        prop::collection::btree_map(
            "f[0-5]\\.yaml",
            prop::collection::btree_map("n[0-9]", "[ab]", 0..3),
            0..6,
        )
        .prop_map(|files| {
            // One name once: a name goes to the first file that has it.
            let mut seen = BTreeSet::new();
            files
                .into_iter()
                .map(|(path, objects)| {
                    let objects = objects
                        .into_iter()
                        .filter(|(n, _)| seen.insert(n.clone()))
                        .collect();
                    (path, objects)
                })
                .collect()
        })
    }

    proptest! {
        /// Applying each commit's change to a cluster in turn leaves the cluster a full sync of
        /// the last commit makes (the commit annotation aside: it names the commit that last
        /// changed an object).
        #[test]
        fn incremental_syncs_end_where_one_full_sync_of_the_last_commit_does(
            commits in prop::collection::vec(trees(), 1..8)
        ) {
            let mut index = Index::default();
            let mut cluster: BTreeMap<String, Value> = BTreeMap::new();
            for (n, tree) in commits.iter().enumerate() {
                let commit = format!("c{n}");
                let loaded = load(tree, &index, &commit);
                let (next, change) = index.next(&commit, &entries(tree), loaded).unwrap();
                for object in change.removed {
                    cluster.remove(&identity(&object));
                }
                for object in change.changed {
                    cluster.insert(identity(&object), object);
                }
                index = next;
            }
            let last = commits.last().unwrap();
            let full = Index::full("full", &entries(last), load(last, &Index::default(), "full"))
                .unwrap();
            let want: BTreeMap<String, Value> =
                full.objects().map(|o| (identity(o), bare(o))).collect();
            let got: BTreeMap<String, Value> =
                cluster.iter().map(|(k, o)| (k.clone(), bare(o))).collect();
            prop_assert_eq!(&got, &want);
            let indexed: BTreeMap<String, Value> =
                index.objects().map(|o| (identity(o), bare(o))).collect();
            prop_assert_eq!(indexed, want);
            prop_assert_eq!(index.object_count(), full.object_count());
        }
    }
}
