//! Reading manifests straight from a git tree (no checkout, so a half-written working tree is
//! never read): the files under a path at one commit, chosen as a folder's are (manifest
//! extensions, hidden entries skipped), named by their path in the repository. `berth diff
//! --git-base` and git sync both read commits this way.

use std::path::Path;

use git2::{ObjectType, Repository, Tree, TreeWalkMode, TreeWalkResult};

use super::kustomize::{Files, KUSTOMIZATION_FILES, kustomization_in};
use super::load::{Input, Kustomized, is_manifest_name};

/// The files of one commit's tree, for rendering a kustomization from git objects. Paths are
/// relative to the repository's root.
pub struct TreeFiles<'r> {
    pub repo: &'r Repository,
    pub root: Tree<'r>,
}

impl Files for TreeFiles<'_> {
    fn read(&self, path: &str) -> std::io::Result<Option<Vec<u8>>> {
        if path.is_empty() || path.starts_with("..") || path.starts_with('/') {
            return Ok(None);
        }
        let Ok(entry) = self.root.get_path(Path::new(path)) else {
            return Ok(None);
        };
        if entry.kind() != Some(ObjectType::Blob) || entry.filemode() == GIT_FILEMODE_LINK {
            return Ok(None);
        }
        let blob = self
            .repo
            .find_blob(entry.id())
            .map_err(std::io::Error::other)?;
        Ok(Some(blob.content().to_vec()))
    }

    fn is_dir(&self, path: &str) -> bool {
        if path.is_empty() {
            return true;
        }
        if path.starts_with("..") || path.starts_with('/') {
            return false;
        }
        self.root
            .get_path(Path::new(path))
            .is_ok_and(|e| e.kind() == Some(ObjectType::Tree))
    }
}

/// A symbolic link's file mode in a git tree: its blob is a link target, not a manifest.
const GIT_FILEMODE_LINK: i32 = 0o120000;

/// A path of the tree that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path} in the git tree")]
pub struct TreeError {
    /// The path in the repository.
    pub path: String,
    #[source]
    pub source: git2::Error,
}

/// What a path of a tree holds.
#[derive(Debug)]
pub enum TreeManifests {
    /// Nothing is at the path.
    Missing,
    /// A file, named explicitly: read whatever its extension, as a file named on the
    /// command line is.
    File(Input),
    /// A folder: its manifest files, sorted by path.
    Folder(Vec<Input>),
}

impl TreeManifests {
    /// The files, whether the path named a file or a folder; `None` when it is missing.
    pub fn into_files(self) -> Option<Vec<Input>> {
        match self {
            TreeManifests::Missing => None,
            TreeManifests::File(file) => Some(vec![file]),
            TreeManifests::Folder(files) => Some(files),
        }
    }
}

/// `manifests/`, `./manifests`, `.` and `` as a repository path: `manifests`, or empty for
/// the root.
fn clean(path: &str) -> &str {
    let path = path.trim_matches('/');
    let path = path.strip_prefix("./").unwrap_or(path);
    if path == "." { "" } else { path }
}

/// What a path of a tree holds, listed without reading the manifests' contents.
#[derive(Debug)]
pub enum TreeListing {
    /// Nothing is at the path.
    Missing,
    /// A file, named explicitly, read whatever its extension.
    File(Input),
    /// A folder: each manifest file and each kustomization folder under it, sorted by path,
    /// with an id that changes when what it declares may have changed: a file's blob id; for
    /// a kustomization folder (rendered whole, from files it may read anywhere in the
    /// repository) the id of the commit's root tree, which [`read_entries`] recognises.
    Folder(Vec<(String, git2::Oid)>),
}

/// The manifests at `path` (repository-relative; empty for the whole tree) of `root`.
pub fn read_tree(
    repo: &Repository,
    root: Tree<'_>,
    path: &str,
) -> Result<TreeManifests, TreeError> {
    Ok(match list_tree(repo, root.clone(), path)? {
        TreeListing::Missing => TreeManifests::Missing,
        TreeListing::File(file) => TreeManifests::File(file),
        TreeListing::Folder(entries) => TreeManifests::Folder(read_entries(repo, &root, entries)?),
    })
}

/// The manifest files and kustomization folders at `path` of `root` with their ids, their
/// contents not read: a caller that knows an entry already (git sync, between commits) reads
/// only the others with [`read_entries`]. A folder holding a kustomization (the path itself,
/// or one below it) is one entry, rendered whole, not read file by file.
pub fn list_tree(repo: &Repository, root: Tree<'_>, path: &str) -> Result<TreeListing, TreeError> {
    let prefix = clean(path);
    let files = TreeFiles {
        repo,
        root: root.clone(),
    };
    if files.is_dir(prefix) && kustomization_in(&files, prefix).is_some() {
        let name = if prefix.is_empty() { "." } else { prefix };
        return Ok(TreeListing::Folder(vec![(name.to_string(), root.id())]));
    }
    let error = |path: &str| {
        let path = if path.is_empty() { "." } else { path }.to_string();
        move |source| TreeError { path, source }
    };
    let tree = if prefix.is_empty() {
        root
    } else {
        let entry = match root.get_path(Path::new(prefix)) {
            Ok(entry) => entry,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(TreeListing::Missing),
            Err(e) => return Err(error(prefix)(e)),
        };
        if entry.kind() != Some(ObjectType::Tree) {
            let blob = repo.find_blob(entry.id()).map_err(error(prefix))?;
            return Ok(TreeListing::File(Input::File {
                path: prefix.to_string(),
                bytes: blob.content().to_vec(),
            }));
        }
        entry
            .to_object(repo)
            .and_then(|o| o.peel_to_tree())
            .map_err(error(prefix))?
    };
    let base = if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    };
    let root_id = files.root.id();
    let mut found: Vec<(String, git2::Oid)> = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or("");
        if name.starts_with('.') {
            return TreeWalkResult::Skip;
        }
        if entry.kind() == Some(ObjectType::Tree)
            && let Ok(sub) = repo.find_tree(entry.id())
            && KUSTOMIZATION_FILES
                .iter()
                .any(|k| sub.get_name(k).is_some())
        {
            found.push((format!("{base}{dir}{name}"), root_id));
            return TreeWalkResult::Skip;
        }
        if entry.kind() == Some(ObjectType::Blob)
            && entry.filemode() != GIT_FILEMODE_LINK
            && is_manifest_name(name)
        {
            found.push((format!("{base}{dir}{name}"), entry.id()));
        }
        TreeWalkResult::Ok
    })
    .map_err(error(prefix))?;
    found.sort();
    Ok(TreeListing::Folder(found))
}

/// The contents of listed entries, as inputs named by their paths: a file's blob read, a
/// kustomization folder (listed with the id of `root`) rendered from the tree.
pub fn read_entries(
    repo: &Repository,
    root: &Tree<'_>,
    entries: impl IntoIterator<Item = (String, git2::Oid)>,
) -> Result<Vec<Input>, TreeError> {
    let files = TreeFiles {
        repo,
        root: root.clone(),
    };
    entries
        .into_iter()
        .map(|(path, id)| {
            if id == root.id() {
                return Ok(Kustomized::render(&files, clean(&path)));
            }
            match repo.find_blob(id) {
                Ok(blob) => Ok(Input::File {
                    bytes: blob.content().to_vec(),
                    path,
                }),
                Err(source) => Err(TreeError { path, source }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_taken_relative_to_the_repository_root() {
        assert_eq!(clean("./manifests/"), "manifests");
        assert_eq!(clean("/a/b"), "a/b");
        assert_eq!(clean("."), "");
        assert_eq!(clean(""), "");
    }

    #[test]
    fn a_commit_is_read_as_a_folder_is() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        let files = [
            ("deploy/web.yaml", "kind: A\n"),
            ("deploy/sub/db.yml", "kind: B\n"),
            ("deploy/README.md", "# not a manifest\n"),
            ("deploy/.hidden/x.yaml", "kind: C\n"),
            ("other/x.json", "{}\n"),
        ];
        for (path, text) in files {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        }
        let mut index = repo.index().unwrap();
        index
            .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
            .unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let names = |found: TreeManifests| -> Vec<String> {
            found
                .into_files()
                .unwrap()
                .into_iter()
                .map(|i| match i {
                    Input::File { path, .. } => path,
                    other => panic!("{other:?}"),
                })
                .collect()
        };
        assert_eq!(
            names(read_tree(&repo, tree.clone(), "./deploy/").unwrap()),
            ["deploy/sub/db.yml", "deploy/web.yaml"]
        );
        assert_eq!(
            names(read_tree(&repo, tree.clone(), "deploy/README.md").unwrap()),
            ["deploy/README.md"]
        );
        assert!(matches!(
            read_tree(&repo, tree.clone(), "nowhere").unwrap(),
            TreeManifests::Missing
        ));
        assert_eq!(names(read_tree(&repo, tree, "").unwrap()).len(), 3);
    }
}
