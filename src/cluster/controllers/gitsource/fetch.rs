//! Fetching a GitSource's repository with git2 and reading its manifest files at one commit
//! straight from git objects, with the manifest core's tree reader: no working tree, so a
//! half-written checkout is never read.
//!
//! Local paths and `file://` URLs are opened in place (nothing to fetch; the commit is read
//! from the repository's own objects). Other URLs are fetched into a bare mirror under the
//! server's data dir, authenticating with the source's [`Credentials`]. An ssh URL is fetched
//! only from a server whose host key the Secret's `known_hosts` lists ([`ssh`]).

mod known_hosts;
mod ssh;

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use git2::{
    CertificateCheckStatus, Cred, CredentialType, FetchOptions, RemoteCallbacks, Repository,
};

use self::ssh::HostKeyCheck;
use crate::manifest::Input;
use crate::manifest::git::{TreeError, TreeListing, list_tree, read_entries};

/// Credentials from the Secret named by `spec.secretRef`. `Debug` shows no value.
#[derive(Clone, Default)]
pub struct Credentials {
    pub username: Option<String>,
    /// The https password, or the passphrase of an encrypted `ssh_key` (Flux's convention).
    pub password: Option<String>,
    pub token: Option<String>,
    /// The ssh private key (`identity`, or Argo CD's `sshPrivateKey`).
    pub ssh_key: Option<String>,
    /// Its public half (`identity.pub`); derived from the private key when absent.
    pub ssh_public_key: Option<String>,
    /// The OpenSSH `known_hosts` lines that vouch for an ssh server's host key.
    pub known_hosts: Option<String>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |v: &Option<String>| v.as_ref().map(|_| "<set>");
        f.debug_struct("Credentials")
            .field("username", &set(&self.username))
            .field("password", &set(&self.password))
            .field("token", &set(&self.token))
            .field("ssh_key", &set(&self.ssh_key))
            .field("ssh_public_key", &set(&self.ssh_public_key))
            .field("known_hosts", &set(&self.known_hosts))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot open the repository at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot prepare the local mirror at {path}: {source}")]
    Mirror {
        path: String,
        #[source]
        source: git2::Error,
    },
    #[error("cannot fetch {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: git2::Error,
    },
    #[error(
        "cannot fetch {url}: the host key of {host} cannot be verified: the Secret in \
         spec.secretRef has no `known_hosts`; add one with the output of `{keyscan}`, checked \
         against a fingerprint you trust"
    )]
    NoKnownHosts {
        url: String,
        host: String,
        keyscan: String,
    },
    #[error("refused to fetch {url}: {problem}")]
    HostKey { url: String, problem: String },
    #[error("the repository has no branch, tag or commit {git_ref:?}")]
    Ref { git_ref: String },
    #[error("the folder {path:?} does not exist at commit {commit}")]
    NoPath { path: String, commit: String },
    #[error("cannot read {path} at commit {commit}: {source}")]
    Read {
        path: String,
        commit: String,
        #[source]
        source: git2::Error,
    },
}

/// The manifests of one commit.
#[derive(Debug)]
pub struct Fetched {
    pub commit: String,
    /// Every manifest file and kustomization folder of the commit, by its path in the
    /// repository, with its id (see [`TreeListing::Folder`]).
    pub entries: Vec<(String, git2::Oid)>,
    /// The contents of those the caller did not know already (every one, for a caller that
    /// knows none).
    pub files: Vec<Input>,
}

/// The local repository a URL names, if it is a path or a `file://` URL.
pub fn local_path(url: &str) -> Option<PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if url.starts_with('/') || url.starts_with("./") || url.starts_with("../") {
        return Some(PathBuf::from(url));
    }
    None
}

/// The URL without any `user:password@` part, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            match authority.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}{path}"),
                None => url.to_string(),
            }
        }
        None => url.to_string(),
    }
}

/// The git directory of the local repository at `path` (`.git` of a clone, or a bare one):
/// where refs change when someone commits or pushes.
pub fn git_dir(path: &Path) -> Result<PathBuf, FetchError> {
    Repository::open(path)
        .map(|r| r.path().to_path_buf())
        .map_err(|source| FetchError::Open {
            path: path.display().to_string(),
            source,
        })
}

/// Fetches (remote URLs) and reads the manifests under `folder` at `git_ref`; a blob that
/// `known(path, blob)` says the caller has already is listed but not read.
/// Blocking: run it off the async runtime.
pub fn fetch(
    url: &str,
    git_ref: Option<&str>,
    folder: Option<&str>,
    credentials: Option<&Credentials>,
    mirror: &Path,
    known: &dyn Fn(&str, git2::Oid) -> bool,
) -> Result<Fetched, FetchError> {
    let (repo, remote_head) = match local_path(url) {
        Some(path) => (
            Repository::open(&path).map_err(|source| FetchError::Open {
                path: path.display().to_string(),
                source,
            })?,
            None,
        ),
        None => fetch_remote(url, credentials, mirror)?,
    };
    let commit = resolve(&repo, git_ref, remote_head.as_deref(), url)?;
    let root = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(|source| FetchError::Read {
            path: ".".into(),
            commit: commit.to_string(),
            source,
        })?;
    let entries = list_manifests(&repo, &root, commit, folder)?;
    let unknown = entries
        .iter()
        .filter(|(path, id)| !known(path, *id))
        .cloned();
    let files = read_entries(&repo, &root, unknown).map_err(|TreeError { path, source }| {
        FetchError::Read {
            path,
            commit: commit.to_string(),
            source,
        }
    })?;
    Ok(Fetched {
        commit: commit.to_string(),
        entries,
        files,
    })
}

/// Callbacks that verify an ssh server's host key against `known_hosts` (TLS certificates
/// keep the default verification) and answer one credential request from the Secret, then
/// give up: a refused credential is not offered again and again. A refused host key is
/// written to `refused`: libgit2 replaces the callback's message with a generic one.
fn callbacks(
    credentials: Option<&Credentials>,
    host_check: Option<Rc<HostKeyCheck>>,
    refused: Rc<RefCell<Option<String>>>,
) -> RemoteCallbacks<'static> {
    let credentials = credentials.cloned();
    let mut offered = false;
    let mut callbacks = RemoteCallbacks::new();
    callbacks.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        let problem = match (&host_check, hostkey.hostkey()) {
            (Some(check), Some(key)) => match check.refusal(key) {
                None => return Ok(CertificateCheckStatus::CertificateOk),
                Some(problem) => problem,
            },
            (None, _) => format!("cannot verify the ssh host key of {host}: not an ssh URL"),
            (Some(_), None) => format!("the ssh server {host} showed no host key"),
        };
        let error = git2::Error::from_str(&problem);
        *refused.borrow_mut() = Some(problem);
        Err(error)
    });
    callbacks.credentials(move |_url, user_from_url, allowed| {
        let Some(c) = &credentials else {
            return Err(git2::Error::from_str(
                "the repository asks for credentials: name a Secret in spec.secretRef",
            ));
        };
        // ssh first asks who to log in as when the URL does not say.
        if allowed == CredentialType::USERNAME {
            return Cred::username(user_from_url.unwrap_or("git"));
        }
        if offered {
            return Err(git2::Error::from_str(
                "the credentials of the Secret in spec.secretRef were refused",
            ));
        }
        offered = true;
        if allowed.contains(CredentialType::SSH_KEY)
            && let Some(key) = &c.ssh_key
        {
            // The Secret's values lose their final newline; PEM readers want it back.
            let key = format!("{}\n", key.trim_end());
            return Cred::ssh_key_from_memory(
                user_from_url.unwrap_or("git"),
                c.ssh_public_key.as_deref(),
                &key,
                c.password.as_deref(),
            );
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let user = c.username.as_deref().or(user_from_url);
            if let Some(token) = &c.token {
                return Cred::userpass_plaintext(user.unwrap_or("git"), token);
            }
            if let (Some(user), Some(password)) = (user, &c.password) {
                return Cred::userpass_plaintext(user, password);
            }
        }
        Err(git2::Error::from_str(
            "the Secret in spec.secretRef holds no credential the repository accepts \
             (https needs `token`, or `username` and `password`; ssh needs `identity`)",
        ))
    });
    callbacks
}

/// Fetches every branch and tag into the bare mirror; returns it and the remote's HEAD.
fn fetch_remote(
    url: &str,
    credentials: Option<&Credentials>,
    mirror: &Path,
) -> Result<(Repository, Option<String>), FetchError> {
    let host_check = HostKeyCheck::for_url(url, credentials)?.map(Rc::new);
    let mirror_error = |source| FetchError::Mirror {
        path: mirror.display().to_string(),
        source,
    };
    let repo = match Repository::open_bare(mirror) {
        Ok(r) => r,
        Err(_) => {
            std::fs::create_dir_all(mirror).map_err(|e| {
                mirror_error(git2::Error::from_str(&format!("cannot create it: {e}")))
            })?;
            Repository::init_bare(mirror).map_err(mirror_error)?
        }
    };
    let refused = Rc::new(RefCell::new(None));
    let fetch_error = |source| match refused.borrow_mut().take() {
        Some(problem) => FetchError::HostKey {
            url: redact_url(url),
            problem,
        },
        None => FetchError::Fetch {
            url: redact_url(url),
            source,
        },
    };
    let source_callbacks = || callbacks(credentials, host_check.clone(), refused.clone());
    let head = {
        let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
        let connection = remote
            .connect_auth(git2::Direction::Fetch, Some(source_callbacks()), None)
            .map_err(fetch_error)?;
        connection
            .default_branch()
            .ok()
            .and_then(|b| b.as_str().ok().map(str::to_string))
    };
    let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
    let mut options = FetchOptions::new();
    options.remote_callbacks(source_callbacks());
    options.download_tags(git2::AutotagOption::None);
    remote
        .fetch(
            &[
                "+refs/heads/*:refs/remotes/origin/*",
                "+refs/tags/*:refs/tags/*",
            ],
            Some(&mut options),
            None,
        )
        .map_err(fetch_error)?;
    drop(remote);
    let head = head.map(|h| match h.strip_prefix("refs/heads/") {
        Some(branch) => format!("refs/remotes/origin/{branch}"),
        None => h,
    });
    Ok((repo, head))
}

/// The commit `git_ref` names: a branch, a tag, or a commit id. No ref: HEAD.
fn resolve(
    repo: &Repository,
    git_ref: Option<&str>,
    remote_head: Option<&str>,
    url: &str,
) -> Result<git2::Oid, FetchError> {
    let remote = local_path(url).is_none();
    let candidates: Vec<String> = match git_ref {
        None => match remote_head {
            Some(h) => vec![h.to_string()],
            None if remote => vec![
                "refs/remotes/origin/main".into(),
                "refs/remotes/origin/master".into(),
            ],
            None => vec!["HEAD".into()],
        },
        Some(r) if remote => vec![
            format!("refs/remotes/origin/{r}"),
            format!("refs/tags/{r}"),
            r.to_string(),
        ],
        Some(r) => vec![
            format!("refs/heads/{r}"),
            format!("refs/tags/{r}"),
            r.to_string(),
        ],
    };
    for candidate in &candidates {
        if let Ok(object) = repo.revparse_single(candidate)
            && let Ok(commit) = object.peel_to_commit()
        {
            return Ok(commit.id());
        }
    }
    Err(FetchError::Ref {
        git_ref: git_ref.unwrap_or("HEAD").to_string(),
    })
}

/// The manifest files and kustomization folders under `folder` of `root`, the tree of
/// `commit` (hidden entries skipped), sorted by path, with their ids.
fn list_manifests(
    repo: &Repository,
    root: &git2::Tree<'_>,
    commit: git2::Oid,
    folder: Option<&str>,
) -> Result<Vec<(String, git2::Oid)>, FetchError> {
    let commit_text = commit.to_string();
    let folder = folder.unwrap_or("");
    match list_tree(repo, root.clone(), folder) {
        Ok(TreeListing::Folder(entries)) => Ok(entries),
        // A source names a folder; a file or nothing there is the same mistake.
        Ok(TreeListing::Missing | TreeListing::File(_)) => Err(FetchError::NoPath {
            path: folder
                .trim_matches('/')
                .trim_start_matches("./")
                .to_string(),
            commit: commit_text,
        }),
        Err(TreeError { path, source }) => Err(FetchError::Read {
            path,
            commit: commit_text,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_never_reach_messages() {
        assert_eq!(
            redact_url("https://bob:hunter2@git.example/r.git"),
            "https://***@git.example/r.git"
        );
        assert_eq!(
            redact_url("https://git.example/r.git"),
            "https://git.example/r.git"
        );
        let c = Credentials {
            token: Some("hunter2".into()),
            ssh_key: Some("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=".into()),
            ..Default::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("PRIVATE KEY") && !shown.contains("b3BlbnNzaC1rZXk"));
    }

    #[test]
    fn paths_and_file_urls_are_local() {
        assert_eq!(local_path("file:///srv/r.git"), Some("/srv/r.git".into()));
        assert_eq!(local_path("/srv/r"), Some("/srv/r".into()));
        assert_eq!(local_path("https://x/r.git"), None);
    }
}
