//! Reading manifest files straight from git objects (no checkout) or from the working tree,
//! named by their path in the repository.

use std::path::{Component, Path, PathBuf};

use git2::{ObjectType, Repository, TreeWalkMode, TreeWalkResult};

use crate::manifest::Input;
use crate::manifest::load::expand_inputs;

/// The extensions the manifest loader picks from a folder (see `manifest::load`).
const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// A symbolic link's file mode in a git tree: its blob is a link target, not a manifest.
const GIT_FILEMODE_LINK: i32 = 0o120000;

#[derive(Debug, thiserror::Error)]
pub enum GitReadError {
    #[error("{path} is not inside a git repository")]
    NoRepository {
        path: PathBuf,
        #[source]
        source: git2::Error,
    },
    #[error("unknown revision {rev:?}")]
    Revision {
        rev: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read {path} at {rev}")]
    Tree {
        rev: String,
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot read {path} in the working tree")]
    WorkingTree {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is outside the repository at {workdir}")]
    OutsideRepository { path: PathBuf, workdir: PathBuf },
}

/// One manifest file: its path in the repository and its bytes.
#[derive(Debug)]
pub struct RepoFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// The repository around the current directory and the folder (or file) in it to compare.
pub struct RepoManifests {
    repo: Repository,
    /// Repository-relative, `/`-separated; empty for the whole repository.
    prefix: String,
}

/// `a/./b/../c` → `a/c`, without touching the file system (the path may exist only in git).
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn is_manifest_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
}

impl RepoManifests {
    /// Finds the repository containing `cwd`; `path` (relative to `cwd`) is what to compare.
    pub fn open(cwd: &Path, path: &Path) -> Result<RepoManifests, GitReadError> {
        let repo = Repository::discover(cwd).map_err(|source| GitReadError::NoRepository {
            path: cwd.to_path_buf(),
            source,
        })?;
        let prefix = match repo.workdir() {
            Some(workdir) => {
                let workdir = workdir.canonicalize().unwrap_or_else(|_| workdir.into());
                let cwd = cwd.canonicalize().unwrap_or_else(|_| cwd.into());
                let wanted = lexical(&cwd.join(path));
                let relative =
                    wanted
                        .strip_prefix(&workdir)
                        .map_err(|_| GitReadError::OutsideRepository {
                            path: wanted.clone(),
                            workdir: workdir.clone(),
                        })?;
                relative
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            }
            // A bare repository: the path is taken as repository-relative.
            None => lexical(path)
                .to_string_lossy()
                .trim_matches('/')
                .to_string(),
        };
        Ok(RepoManifests { repo, prefix })
    }

    /// The path compared, for messages: `manifests/` or `.`.
    pub fn prefix(&self) -> &str {
        if self.prefix.is_empty() {
            "."
        } else {
            &self.prefix
        }
    }

    fn revparse(&self, rev: &str) -> Result<git2::Object<'_>, GitReadError> {
        self.repo
            .revparse_single(rev)
            .map_err(|source| GitReadError::Revision {
                rev: rev.to_string(),
                source,
            })
    }

    /// The manifest files under the path at a revision, sorted by path. `None` when the path
    /// does not exist at that revision.
    pub fn at_revision(&self, rev: &str) -> Result<Option<Vec<RepoFile>>, GitReadError> {
        let tree_error = |source| GitReadError::Tree {
            rev: rev.to_string(),
            path: self.prefix().to_string(),
            source,
        };
        let root = self.revparse(rev)?.peel_to_tree().map_err(tree_error)?;
        let (tree, single) = if self.prefix.is_empty() {
            (root, None)
        } else {
            let entry = match root.get_path(Path::new(&self.prefix)) {
                Ok(entry) => entry,
                Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
                Err(e) => return Err(tree_error(e)),
            };
            match entry.kind() {
                Some(ObjectType::Tree) => (
                    entry
                        .to_object(&self.repo)
                        .and_then(|o| o.peel_to_tree())
                        .map_err(tree_error)?,
                    None,
                ),
                // A file named explicitly is read whatever its extension, as the loader does.
                _ => (root, Some(entry.id())),
            }
        };
        let mut found: Vec<(String, git2::Oid)> = Vec::new();
        if let Some(id) = single {
            found.push((self.prefix.clone(), id));
        } else {
            let base = if self.prefix.is_empty() {
                String::new()
            } else {
                format!("{}/", self.prefix)
            };
            tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
                let name = entry.name().unwrap_or("");
                if name.starts_with('.') {
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
            .map_err(tree_error)?;
        }
        found.sort();
        let mut files = Vec::with_capacity(found.len());
        for (path, id) in found {
            let blob = self
                .repo
                .find_blob(id)
                .map_err(|source| GitReadError::Tree {
                    rev: rev.to_string(),
                    path: path.clone(),
                    source,
                })?;
            files.push(RepoFile {
                path,
                bytes: blob.content().to_vec(),
            });
        }
        Ok(Some(files))
    }

    /// The manifest files under the path in the working tree, as the loader would pick them
    /// from the folder, less what `.gitignore` ignores. `None` when the path does not exist.
    pub fn working_tree(&self) -> Result<Option<Vec<RepoFile>>, GitReadError> {
        let Some(workdir) = self.repo.workdir() else {
            return Ok(None);
        };
        let start = workdir.join(&self.prefix);
        if !start.exists() {
            return Ok(None);
        }
        let (inputs, problems) = expand_inputs(&[Input::Path(start)]);
        if let Some(problem) = problems.first() {
            return Err(GitReadError::WorkingTree {
                path: problem.path.clone(),
                source: std::io::Error::other(problem.reason.clone()),
            });
        }
        let mut files = Vec::new();
        for input in inputs {
            let Input::Path(path) = input else { continue };
            let relative = path.strip_prefix(workdir).unwrap_or(&path);
            if self.repo.is_path_ignored(relative).unwrap_or(false) {
                continue;
            }
            let name = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            let bytes = std::fs::read(&path).map_err(|source| GitReadError::WorkingTree {
                path: name.clone(),
                source,
            })?;
            files.push(RepoFile { path: name, bytes });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Some(files))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_resolve_dots_without_the_file_system() {
        assert_eq!(lexical(Path::new("/r/./a/../b")), PathBuf::from("/r/b"));
    }

    #[test]
    fn only_manifest_extensions_are_picked() {
        assert!(is_manifest_name("web.yaml") && is_manifest_name("x.json"));
        assert!(!is_manifest_name("README.md") && !is_manifest_name("yaml"));
    }
}
