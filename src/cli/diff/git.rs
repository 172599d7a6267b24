//! The repository around the current directory, and the manifests of a folder in it at a
//! revision (read from git objects by the manifest core's tree reader) or in the working tree,
//! named by their path in the repository.

use std::path::{Component, Path, PathBuf};

use git2::Repository;

use crate::manifest::Input;
use crate::manifest::git::{TreeError, read_tree};
use crate::manifest::kustomize::Rooted;
use crate::manifest::load::{Kustomized, expand_inputs};

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
    pub fn at_revision(&self, rev: &str) -> Result<Option<Vec<Input>>, GitReadError> {
        let root = self
            .revparse(rev)?
            .peel_to_tree()
            .map_err(|source| GitReadError::Tree {
                rev: rev.to_string(),
                path: self.prefix().to_string(),
                source,
            })?;
        let found =
            read_tree(&self.repo, root, &self.prefix).map_err(|TreeError { path, source }| {
                GitReadError::Tree {
                    rev: rev.to_string(),
                    path,
                    source,
                }
            })?;
        Ok(found.into_files())
    }

    /// The manifest files under the path in the working tree, as the loader would pick them
    /// from the folder, less what `.gitignore` ignores. `None` when the path does not exist.
    pub fn working_tree(&self) -> Result<Option<Vec<Input>>, GitReadError> {
        let Some(workdir) = self.repo.workdir() else {
            return Ok(None);
        };
        let start = workdir.join(&self.prefix);
        if !start.exists() {
            return Ok(None);
        }
        let (inputs, problems) = expand_inputs(vec![Input::Path(start)]);
        if let Some(problem) = problems.first() {
            return Err(GitReadError::WorkingTree {
                path: problem.path.clone(),
                source: std::io::Error::other(problem.reason.clone()),
            });
        }
        let mut files = Vec::new();
        let mut rendered = Vec::new();
        for input in inputs {
            if let Input::Kustomized(k) = &input {
                // Rendered again, named relative to the repository as git names files.
                let relative = Path::new(&k.path)
                    .strip_prefix(workdir)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_else(|_| k.path.clone());
                rendered.push((
                    relative.clone(),
                    Kustomized::render(&Rooted(workdir.to_path_buf()), &relative),
                ));
                continue;
            }
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
            files.push((name, bytes));
        }
        let mut inputs: Vec<(String, Input)> = files
            .into_iter()
            .map(|(path, bytes)| (path.clone(), Input::File { path, bytes }))
            .chain(rendered)
            .collect();
        inputs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Some(inputs.into_iter().map(|(_, input)| input).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths_resolve_dots_without_the_file_system() {
        assert_eq!(lexical(Path::new("/r/./a/../b")), PathBuf::from("/r/b"));
    }
}
