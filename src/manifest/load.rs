//! Reading manifests from files, directories, stdin and git blobs into [`Object`]s.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::diagnostic::Problem;
use super::kustomize::{self, Disk, Rendered};
use super::yaml::{self, Limits, NodeValue, Pos, Span};
use super::{Object, SourceFile};

/// Where to read manifests from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Path(PathBuf),
    Stdin,
    /// A file already read (a git blob, a file of the working tree), named as the user
    /// will see it.
    File {
        path: String,
        bytes: Vec<u8>,
    },
    /// A folder holding a kustomization, rendered (from disk or a git tree).
    Kustomized(Arc<Kustomized>),
}

/// A kustomization folder and what rendering it gave.
#[derive(Debug)]
pub struct Kustomized {
    /// The folder, as the user will see it.
    pub path: String,
    pub rendered: Result<Vec<Rendered>, kustomize::Error>,
}

impl PartialEq for Kustomized {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Kustomized {}

impl Kustomized {
    /// Renders the kustomization in folder `path` of `files`.
    pub fn render(files: &dyn kustomize::Files, path: &str) -> Input {
        Input::Kustomized(Arc::new(Kustomized {
            path: if path.is_empty() {
                ".".into()
            } else {
                path.to_string()
            },
            rendered: kustomize::render(files, path),
        }))
    }
}

/// A folder of the disk rendered, if it holds a kustomization.
fn kustomized_dir(path: &Path) -> Option<Input> {
    let name = display(path);
    kustomize::kustomization_in(&Disk, &name)?;
    Some(Kustomized::render(&Disk, &name))
}

impl Input {
    /// `-` means stdin, as for kubectl.
    pub fn parse(arg: &str) -> Input {
        if arg == "-" {
            Input::Stdin
        } else {
            Input::Path(PathBuf::from(arg))
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    pub limits: Limits,
}

/// The extensions of the files read from a folder (or a git tree).
pub const MANIFEST_EXTENSIONS: [&str; 3] = ["yaml", "yml", "json"];

/// Whether a file in a folder is read as manifests, by its name's extension.
pub fn is_manifest_name(name: &str) -> bool {
    Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| MANIFEST_EXTENSIONS.contains(&e))
}

/// Expands directories (recursively, sorted, hidden entries skipped) into the files to read.
/// Files named explicitly are read whatever their extension. A folder holding a
/// kustomization is rendered instead of read file by file.
pub fn expand_inputs(inputs: Vec<Input>) -> (Vec<Input>, Vec<Problem>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    for input in inputs {
        match input {
            Input::Path(path) => match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => match kustomized_dir(&path) {
                    Some(kustomized) => out.push(kustomized),
                    None => walk(&path, &mut out, &mut problems),
                },
                Ok(_) => out.push(Input::Path(path)),
                Err(e) => problems.push(Problem::io(&display(&path), &e)),
            },
            other => out.push(other),
        }
    }
    (out, problems)
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.') && n != "." && n != "..")
}

fn walk(dir: &Path, out: &mut Vec<Input>, problems: &mut Vec<Problem>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            problems.push(Problem::io(&display(dir), &e));
            return;
        }
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            match kustomized_dir(&path) {
                Some(kustomized) => out.push(kustomized),
                None => walk(&path, out, problems),
            }
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(is_manifest_name)
        {
            out.push(Input::Path(path));
        }
    }
}

fn display(path: &Path) -> String {
    let text = path.to_string_lossy();
    text.strip_prefix("./").unwrap_or(&text).to_string()
}

/// An input that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {source}")]
pub struct ReadError {
    pub path: String,
    #[source]
    pub source: std::io::Error,
}

impl ReadError {
    pub fn problem(&self) -> Problem {
        Problem::io(&self.path, &self.source)
    }
}

/// One file's text as loaded: the file, its objects, and what was wrong with it.
pub type FileLoad = (Arc<SourceFile>, Vec<Object>, Vec<Problem>);

impl Input {
    /// The input's bytes, named as the user will see it.
    pub fn read(self) -> Result<(String, Vec<u8>), ReadError> {
        let (name, read) = match self {
            Input::Stdin => {
                let mut buf = Vec::new();
                let read = std::io::stdin().read_to_end(&mut buf).map(|_| buf);
                ("<stdin>".to_string(), read)
            }
            Input::Path(path) => (display(&path), std::fs::read(&path)),
            Input::File { path, bytes } => (path, Ok(bytes)),
            Input::Kustomized(k) => (
                k.path.clone(),
                Err(std::io::Error::other(
                    "a rendered kustomization has no bytes",
                )),
            ),
        };
        match read {
            Ok(bytes) => Ok((name, bytes)),
            Err(source) => Err(ReadError { path: name, source }),
        }
    }
}

/// Loads one file's bytes: refuses binary and non-UTF-8 content with a clear problem.
pub fn load_bytes(name: String, bytes: Vec<u8>, options: LoadOptions) -> FileLoad {
    if let Some(nul) = bytes.iter().position(|b| *b == 0) {
        let file = Arc::new(SourceFile {
            path: name,
            text: Arc::from(""),
        });
        let problem = Problem::file_error(
            &file,
            None,
            "parse",
            format!("binary file: found a NUL byte at byte {nul}; manifests are YAML or JSON text"),
            Some("pass only YAML (.yaml, .yml) or JSON (.json) files".into()),
        );
        return (file, Vec::new(), vec![problem]);
    }
    match String::from_utf8(bytes) {
        Ok(text) => load_text(name, text, options),
        Err(e) => {
            let valid = e.utf8_error().valid_up_to();
            let bytes = e.into_bytes();
            let prefix = String::from_utf8_lossy(&bytes[..valid]).into_owned();
            let line = prefix.matches('\n').count() + 1;
            let col = prefix.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            let at = Pos {
                index: prefix.chars().count(),
                line,
                col,
            };
            let file = Arc::new(SourceFile {
                path: name,
                text: Arc::from(prefix),
            });
            let problem = Problem::file_error(
                &file,
                Some(Span { start: at, end: at }),
                "parse",
                format!("invalid UTF-8 at byte {valid}"),
                Some("save the file as UTF-8".into()),
            );
            (file, Vec::new(), vec![problem])
        }
    }
}

/// Loads manifests from text: every document, with `List` kinds expanded.
pub fn load_text(name: String, text: String, options: LoadOptions) -> FileLoad {
    let file = Arc::new(SourceFile {
        path: name,
        text: Arc::from(text),
    });
    let (docs, error) = yaml::parse_stream(&file.text, options.limits);
    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for doc in docs {
        let Some(root) = doc.root else { continue };
        if matches!(root.value, NodeValue::Null) {
            continue;
        }
        if !matches!(root.value, NodeValue::Map(_)) {
            problems.push(Problem::file_error(
                &file,
                Some(root.span),
                "parse",
                format!(
                    "document {} is not a mapping (an object with apiVersion and kind)",
                    doc.index + 1
                ),
                None,
            ));
            continue;
        }
        if let Some(bad) = root.find_non_finite() {
            let text = match bad.value {
                NodeValue::Float(f) => yaml::non_finite_text(f),
                _ => "",
            };
            problems.push(Problem::file_error(
                &file,
                Some(bad.span),
                "parse",
                format!(
                    "`{text}` is not a number a manifest can hold (JSON has no NaN or infinity)"
                ),
                Some("use a finite number, or quote it to make it a string".into()),
            ));
        }
        let value = root.to_json();
        let items = list_items(&value, &root);
        match items {
            Some(item_nodes) => {
                for (i, item) in item_nodes.into_iter().enumerate() {
                    objects.push(Object {
                        file: file.clone(),
                        document: doc.index,
                        list_item: Some(i),
                        value: item.to_json(),
                        node: item,
                        duplicate_keys: doc.duplicate_keys.clone(),
                    });
                }
            }
            None => objects.push(Object {
                file: file.clone(),
                document: doc.index,
                list_item: None,
                node: root,
                value,
                duplicate_keys: doc.duplicate_keys,
            }),
        }
    }
    if let Some(e) = error {
        let at = e.pos();
        problems.push(Problem::file_error(
            &file,
            Some(Span { start: at, end: at }),
            "parse",
            format!("YAML error: {e}"),
            Some(e.help().to_string()),
        ));
    }
    (file, objects, problems)
}

/// The items of a `kind: List` or `kind: FooList` document, if it is one.
fn list_items(value: &serde_json::Value, root: &yaml::Node) -> Option<Vec<yaml::Node>> {
    let kind = value.get("kind")?.as_str()?;
    if !kind.ends_with("List") {
        return None;
    }
    let items = root.get("items")?;
    match &items.value {
        NodeValue::Seq(items) => Some(
            items
                .iter()
                .filter(|n| !matches!(n.value, NodeValue::Null))
                .cloned()
                .collect(),
        ),
        NodeValue::Null => Some(Vec::new()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Vec<Object>, Vec<Problem>) {
        let (_, objects, problems) =
            load_text("t.yaml".into(), text.into(), LoadOptions::default());
        (objects, problems)
    }

    #[test]
    fn lists_expand_and_empty_documents_are_fine() {
        let (objects, problems) = load(
            "# nothing\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n- {apiVersion: v1, kind: ConfigMap, metadata: {name: b}}\n---\n",
        );
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<_> = objects.iter().map(|o| o.name().unwrap()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(objects[1].list_item, Some(1));
    }

    #[test]
    fn only_manifest_extensions_are_picked() {
        assert!(is_manifest_name("web.yaml") && is_manifest_name("x.json"));
        assert!(!is_manifest_name("README.md") && !is_manifest_name("yaml"));
    }

    #[test]
    fn comment_only_file_has_no_objects() {
        let (objects, problems) = load("# just a comment\n");
        assert!(objects.is_empty() && problems.is_empty());
    }

    #[test]
    fn binary_and_bad_utf8_are_refused() {
        let (_, o, p) = load_bytes(
            "b".into(),
            vec![0x7f, b'E', b'L', b'F', 0, 1],
            LoadOptions::default(),
        );
        assert!(o.is_empty() && p[0].reason.contains("binary"));
        let (_, o, p) = load_bytes("u".into(), b"a: \xff\xfe".to_vec(), LoadOptions::default());
        assert!(o.is_empty() && p[0].reason.contains("UTF-8"));
    }

    #[test]
    fn unterminated_string_is_a_located_error() {
        let (_, problems) = load("apiVersion: v1\nkind: \"Pod\nmetadata: {}\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].span.is_some());
    }
}
