//! The pod sandbox: a tiny container per pod that owns the pod's network namespace.
//!
//! Every container of the pod joins it (`--network container:<sandbox>`), so they share
//! `localhost` and the pod's IP, and host ports are published on it. Its image is built on
//! the node when missing — no registry — from `FROM scratch` plus a static busybox that
//! sleeps; the engine's init (`--init`) is PID 1 so SIGTERM ends it promptly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::labels;

/// The sandbox image's tag. Bump the version when the build context changes.
pub const SANDBOX_IMAGE: &str = "berth.dev/sandbox:1";

/// Where the static busybox comes from unless `BERTH_SANDBOX_BUSYBOX` names another file.
pub const DEFAULT_BUSYBOX: &str = "/bin/busybox";

/// Building a context failed.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// The static binary could not be read.
    #[error("cannot read the static busybox {path:?} (Debian package busybox-static)")]
    ReadBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing the tar archive failed.
    #[error("cannot write the build context")]
    Tar {
        #[source]
        source: std::io::Error,
    },
}

/// The static busybox to put in images.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("BERTH_SANDBOX_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_BUSYBOX))
}

/// A tar build context holding `Dockerfile` and the static busybox as `busybox`.
pub fn busybox_context(dockerfile: &str, busybox: &Path) -> Result<Vec<u8>, ContextError> {
    let binary = std::fs::read(busybox).map_err(|source| ContextError::ReadBinary {
        path: busybox.to_path_buf(),
        source,
    })?;
    let mut archive = tar::Builder::new(Vec::new());
    let mut add = |name: &str, bytes: &[u8], mode: u32| {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, name, bytes)
    };
    add("Dockerfile", dockerfile.as_bytes(), 0o644)
        .map_err(|source| ContextError::Tar { source })?;
    add("busybox", &binary, 0o755).map_err(|source| ContextError::Tar { source })?;
    archive
        .into_inner()
        .map_err(|source| ContextError::Tar { source })
}

/// The sandbox image's build context.
pub fn build_context() -> Result<Vec<u8>, ContextError> {
    let dockerfile = "FROM scratch\n\
        COPY busybox /busybox\n\
        ENTRYPOINT [\"/busybox\", \"sleep\", \"2147483647\"]\n";
    busybox_context(dockerfile, &busybox_path())
}

/// Labels on the sandbox image, so it can be told apart from users' images.
pub fn image_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::MANAGED.to_string(), "true".to_string()),
        (
            labels::ROLE.to_string(),
            labels::Role::Sandbox.as_str().to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_holds_dockerfile_and_executable_binary() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("busybox");
        std::fs::write(&fake, b"\x7fELF").unwrap();
        let bytes = busybox_context("FROM scratch\n", &fake).unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("Dockerfile".to_string(), 0o644),
                ("busybox".to_string(), 0o755)
            ]
        );
    }

    #[test]
    fn missing_binary_says_which_package() {
        let err = busybox_context("FROM scratch\n", Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(err.to_string().contains("busybox-static"));
    }
}
