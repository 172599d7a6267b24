//! `configMap` and `secret` volumes: which files (key → path, mode) a volume holds, and the
//! tar archive the agent writes them with. Each such volume is a pod-scoped engine volume
//! (a tmpfs one for Secrets, so their files never touch disk) that the sandbox keeps
//! mounted for the pod's life; the agent writes into it through the sandbox, and rewrites it
//! when the ConfigMap or Secret changes, so the files update in place in every container.

use std::fmt;

use k8s_openapi::api::core::v1::{KeyToPath, Volume};

use super::env::ObjectResolver;

/// Where volumes are mounted inside the sandbox for the agent to write them.
pub const SANDBOX_VOLUME_ROOT: &str = "/berth/volumes";

/// One file of a volume.
#[derive(Clone, PartialEq, Eq)]
pub struct ProjectedFile {
    /// Relative path inside the volume.
    pub path: String,
    /// Permission bits.
    pub mode: u32,
    /// The content (may be secret: never printed).
    pub content: Vec<u8>,
}

impl fmt::Debug for ProjectedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:o}, {} bytes)",
            self.path,
            self.mode,
            self.content.len()
        )
    }
}

/// The files of one configMap or secret volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeFiles {
    /// The pod's name for the volume.
    pub volume: String,
    /// Where the sandbox mounts it.
    pub sandbox_path: String,
    /// Its files.
    pub files: Vec<ProjectedFile>,
}

/// Why a volume's files cannot be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The ConfigMap or Secret does not exist and the volume is not optional.
    #[error("volume {volume:?}: {kind} {name:?} not found")]
    MissingObject {
        volume: String,
        kind: &'static str,
        name: String,
    },
    /// An item names a key the object lacks.
    #[error("volume {volume:?}: key {key:?} not found in {kind} {name:?}")]
    MissingKey {
        volume: String,
        kind: &'static str,
        name: String,
        key: String,
    },
    /// An item path that is absolute or climbs out of the volume.
    #[error("volume {volume:?}: item path {path:?} must be relative and must not contain '..'")]
    BadPath { volume: String, path: String },
}

/// Kubernetes' default file mode for these volumes (0644).
const DEFAULT_MODE: i32 = 0o644;

/// The files of `volume` if it is a configMap or secret volume; `None` for other kinds.
pub fn volume_files(
    namespace: &str,
    volume: &Volume,
    objects: &dyn ObjectResolver,
) -> Option<Result<VolumeFiles, ProjectionError>> {
    let (kind, name, items, default_mode, optional, data) = if let Some(cm) = &volume.config_map {
        let data = objects.config_map(namespace, &cm.name);
        (
            "ConfigMap",
            cm.name.clone(),
            &cm.items,
            cm.default_mode,
            cm.optional,
            data,
        )
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = objects.secret(namespace, &name);
        ("Secret", name, &s.items, s.default_mode, s.optional, data)
    } else {
        return None;
    };
    Some(project(
        &volume.name,
        kind,
        &name,
        items.as_deref(),
        default_mode.unwrap_or(DEFAULT_MODE),
        optional == Some(true),
        data,
    ))
}

fn project(
    volume: &str,
    kind: &'static str,
    name: &str,
    items: Option<&[KeyToPath]>,
    default_mode: i32,
    optional: bool,
    data: Option<std::collections::BTreeMap<String, String>>,
) -> Result<VolumeFiles, ProjectionError> {
    let sandbox_path = format!("{SANDBOX_VOLUME_ROOT}/{volume}");
    let Some(data) = data else {
        if optional {
            return Ok(VolumeFiles {
                volume: volume.into(),
                sandbox_path,
                files: Vec::new(),
            });
        }
        return Err(ProjectionError::MissingObject {
            volume: volume.into(),
            kind,
            name: name.into(),
        });
    };
    let mode = |m: Option<i32>| (m.unwrap_or(default_mode) & 0o7777) as u32;
    let mut files = Vec::new();
    match items {
        Some(items) => {
            for item in items {
                let Some(value) = data.get(&item.key) else {
                    if optional {
                        continue;
                    }
                    return Err(ProjectionError::MissingKey {
                        volume: volume.into(),
                        kind,
                        name: name.into(),
                        key: item.key.clone(),
                    });
                };
                if item.path.starts_with('/') || item.path.split('/').any(|s| s == "..") {
                    return Err(ProjectionError::BadPath {
                        volume: volume.into(),
                        path: item.path.clone(),
                    });
                }
                files.push(ProjectedFile {
                    path: item.path.clone(),
                    mode: mode(item.mode),
                    content: value.as_bytes().to_vec(),
                });
            }
        }
        None => {
            for (key, value) in &data {
                files.push(ProjectedFile {
                    path: key.clone(),
                    mode: mode(None),
                    content: value.as_bytes().to_vec(),
                });
            }
        }
    }
    Ok(VolumeFiles {
        volume: volume.into(),
        sandbox_path,
        files,
    })
}

/// The link to the current generation of a volume's files. As the kubelet's atomic writer
/// lays a volume out, each top-level name is a symlink through it (`key -> ..data/key`) and it
/// points at a hidden folder per generation (`..data -> ..2026_11_22_07_01_02.123456789`), so
/// an update swaps every file at once with one rename and readers never see half of it.
pub const DATA_LINK: &str = "..data";
/// The next generation's link, renamed over [`DATA_LINK`] to publish it.
pub const NEXT_LINK: &str = "..data_tmp";

/// A fresh generation folder's name, from the time.
pub fn generation_name(now: chrono::DateTime<chrono::Utc>) -> String {
    now.format("..%Y_%m_%d_%H_%M_%S.%f").to_string()
}

/// A tar archive to extract at the volume's root: the files (with their parent directories)
/// under `generation`, the link `link` (either [`DATA_LINK`] for a volume written for the
/// first time, or [`NEXT_LINK`] to be renamed by [`swap_command`]) pointing at it, and one
/// symlink per top-level name through [`DATA_LINK`].
pub fn archive(files: &[ProjectedFile], generation: &str, link: &str) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mtime = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut dirs = std::collections::BTreeSet::new();
    let mut top = std::collections::BTreeSet::new();
    let add_dir = |tar: &mut tar::Builder<Vec<u8>>, dir: &std::path::Path| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, dir, std::io::empty())
    };
    let root = std::path::Path::new(generation);
    add_dir(&mut tar, root)?;
    for file in files {
        let relative = std::path::Path::new(&file.path);
        if let Some(first) = relative.components().next() {
            top.insert(first.as_os_str().to_string_lossy().into_owned());
        }
        let mut parent = relative.parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_path_buf());
            parent = p.parent();
        }
        for dir in chain.into_iter().rev() {
            if dirs.insert(dir.clone()) {
                add_dir(&mut tar, &root.join(&dir))?;
            }
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(file.content.len() as u64);
        header.set_mode(file.mode);
        header.set_mtime(mtime);
        header.set_cksum();
        tar.append_data(&mut header, root.join(relative), file.content.as_slice())?;
    }
    let symlink = |tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_mode(0o777);
        header.set_size(0);
        header.set_mtime(mtime);
        tar.append_link(&mut header, path, target)
    };
    symlink(&mut tar, link, generation)?;
    for name in &top {
        symlink(&mut tar, name, &format!("{DATA_LINK}/{name}"))?;
    }
    tar.into_inner()
}

/// The command, run in the sandbox, that publishes the generation an update archive wrote:
/// renames [`NEXT_LINK`] over [`DATA_LINK`] (atomic), then removes older generations and
/// top-level links left dangling by keys that are gone.
pub fn swap_command(volume_path: &str, generation: &str) -> Vec<String> {
    let script = r#"cd "$1" || exit 1
/busybox mv -fT ..data_tmp ..data || exit 1
for e in ..?*; do
  case "$e" in ..data|"$2") ;; *) /busybox rm -rf "$e" ;; esac
done
for l in *; do
  if [ -L "$l" ] && [ ! -e "$l" ]; then /busybox rm -f "$l"; fi
done"#;
    [
        "/busybox",
        "sh",
        "-c",
        script,
        "sh",
        volume_path,
        generation,
    ]
    .map(String::from)
    .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemons::agent::pod::env::StaticObjects;
    use std::collections::BTreeMap;

    fn objects() -> StaticObjects {
        let mut o = StaticObjects::default();
        o.config_maps.insert(
            ("ns".into(), "cfg".into()),
            BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]),
        );
        o.secrets.insert(
            ("ns".into(), "sec".into()),
            BTreeMap::from([("password".into(), "hunter2".into())]),
        );
        o
    }

    fn volume(v: serde_json::Value) -> Volume {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_key_becomes_a_file_with_the_default_mode() {
        let v = volume(serde_json::json!({"name": "c", "configMap": {"name": "cfg"}}));
        let files = volume_files("ns", &v, &objects()).unwrap().unwrap();
        assert_eq!(files.sandbox_path, "/berth/volumes/c");
        let paths: Vec<(&str, u32)> = files
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.mode))
            .collect();
        assert_eq!(paths, [("a", 0o644), ("b", 0o644)]);
    }

    #[test]
    fn items_pick_keys_paths_and_modes() {
        let v = volume(
            serde_json::json!({"name": "s", "secret": {"secretName": "sec",
            "defaultMode": 0o400, "items": [{"key": "password", "path": "db/pw"}]}}),
        );
        let files = volume_files("ns", &v, &objects()).unwrap().unwrap();
        assert_eq!(files.files.len(), 1);
        assert_eq!(
            (files.files[0].path.as_str(), files.files[0].mode),
            ("db/pw", 0o400)
        );
        assert!(
            !format!("{files:?}").contains("hunter2"),
            "secret content is never printed"
        );
        let tar = archive(&files.files, "..gen1", NEXT_LINK).unwrap();
        let mut a = tar::Archive::new(tar.as_slice());
        let entries: Vec<(String, Option<String>)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e
                    .link_name()
                    .unwrap()
                    .map(|l| l.to_string_lossy().into_owned());
                (e.path().unwrap().to_string_lossy().into_owned(), link)
            })
            .collect();
        let expected = [
            ("..gen1", None),
            ("..gen1/db", None),
            ("..gen1/db/pw", None),
            ("..data_tmp", Some("..gen1")),
            ("db", Some("..data/db")),
        ];
        let expected: Vec<(String, Option<String>)> = expected
            .iter()
            .map(|(p, l)| (p.to_string(), l.map(String::from)))
            .collect();
        assert_eq!(entries, expected);
    }

    #[test]
    fn updates_swap_one_link_and_drop_old_generations() {
        let command = swap_command("/berth/volumes/config", "..gen2");
        assert_eq!(&command[..3], ["/busybox", "sh", "-c"]);
        assert_eq!(&command[4..], ["sh", "/berth/volumes/config", "..gen2"]);
        assert!(command[3].contains("mv -fT ..data_tmp ..data"));
        assert!(generation_name(chrono::Utc::now()).starts_with("..20"));
    }

    #[test]
    fn missing_objects_and_keys_fail_unless_optional() {
        let v = volume(serde_json::json!({"name": "c", "configMap": {"name": "nope"}}));
        assert!(matches!(
            volume_files("ns", &v, &objects()).unwrap(),
            Err(ProjectionError::MissingObject { .. })
        ));
        let v = volume(
            serde_json::json!({"name": "c", "configMap": {"name": "nope", "optional": true}}),
        );
        assert!(
            volume_files("ns", &v, &objects())
                .unwrap()
                .unwrap()
                .files
                .is_empty()
        );
        let v = volume(serde_json::json!({"name": "c", "configMap": {"name": "cfg",
            "items": [{"key": "zz", "path": "z"}]}}));
        assert!(matches!(
            volume_files("ns", &v, &objects()).unwrap(),
            Err(ProjectionError::MissingKey { .. })
        ));
        let v = volume(serde_json::json!({"name": "c", "configMap": {"name": "cfg",
            "items": [{"key": "a", "path": "../etc/passwd"}]}}));
        assert!(matches!(
            volume_files("ns", &v, &objects()).unwrap(),
            Err(ProjectionError::BadPath { .. })
        ));
        let empty_dir = volume(serde_json::json!({"name": "e", "emptyDir": {}}));
        assert!(volume_files("ns", &empty_dir, &objects()).is_none());
    }
}
