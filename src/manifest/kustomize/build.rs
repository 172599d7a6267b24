//! Building a kustomization: resources, generators, components, then the transformers in
//! kustomize's order; at the top, the hash suffixes, the name references and the sort.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::super::SourceFile;
use super::super::patch::{json_patch, strategic_merge};
use super::super::yaml::{Node, NodeValue};
use super::fields::{
    self, ANNOTATIONS, REPLICA_KINDS, Spec, TEMPLATE_LABELS, gvk, segments, visit,
};
use super::generate::{content_hash, generate};
use super::kustomization::{self, FieldSpec, Loaded, Patch};
use super::res::{Res, set_metadata};
use super::select::Matcher;
use super::{Error, Files, Rendered, join, kustomization_in, within};

struct Builder<'a> {
    files: &'a dyn Files,
    /// The `vars` of every kustomization built, resolved at the end.
    vars: Vec<kustomization::Var>,
    /// The kustomizations being built, to refuse a cycle.
    stack: Vec<String>,
}

pub fn render(files: &dyn Files, dir: &str) -> Result<Vec<Rendered>, Error> {
    let mut builder = Builder {
        files,
        vars: Vec::new(),
        stack: Vec::new(),
    };
    let mut acc = Vec::new();
    let top = builder.accumulate(dir, &mut acc, false)?;
    for r in &mut acc {
        if r.hash {
            let name = format!("{}-{}", r.name(), content_hash(&r.value));
            r.rename(name);
        }
    }
    fix_references(&mut acc);
    super::replace::resolve_vars(&mut acc, &builder.vars).map_err(|e| top.error_at("vars", e))?;
    sort(&mut acc, &top)?;
    Ok(acc
        .into_iter()
        .map(|r| Rendered {
            value: r.value,
            file: r.file,
            node: r.node,
            line: r.line,
        })
        .collect())
}

/// Whether a resource entry names something remote (a URL or a git repository).
fn is_remote(entry: &str) -> bool {
    entry.contains("://")
        || entry.starts_with("git@")
        || entry.starts_with("github.com/")
        || entry.starts_with("gitlab.com/")
        || entry.starts_with("bitbucket.org/")
        || entry.contains("?ref=")
        || entry.contains(".git//")
}

/// Adds objects, refusing one whose id is already there.
fn append(acc: &mut Vec<Res>, more: Vec<Res>, l: &Loaded, field: &str) -> Result<(), Error> {
    let mut ids: HashSet<String> = acc.iter().map(Res::id).collect();
    for r in more {
        let id = r.id();
        if !ids.insert(id.clone()) {
            return Err(l
                .error_at(
                    field,
                    format!("{id} is defined twice (from {}:{})", r.file.path, r.line),
                )
                .help(
                    "each object may come from one resource only; patch it instead of repeating it",
                ));
        }
        acc.push(r);
    }
    Ok(())
}

/// The line of item `index` of the top-level list `field` (or of the field).
fn item_line(l: &Loaded, field: &str, index: usize) -> usize {
    match l.node.get(field) {
        Some(Node {
            value: NodeValue::Seq(items),
            ..
        }) => items.get(index).map_or(0, |n| n.span.start.line),
        Some(node) => node.span.start.line,
        None => l.node.span.start.line,
    }
}

/// Objects read from YAML text (a file or an inline patch): each must be a mapping.
fn objects_of(path: &str, bytes: Vec<u8>) -> Result<Vec<(Value, Node, Arc<SourceFile>)>, Error> {
    let objects = super::parse_objects(path, bytes)?;
    for (value, node, file) in &objects {
        if !value.is_object() {
            return Err(Error {
                path: path.to_string(),
                file: Some(file.clone()),
                span: Some(node.span),
                message: "a document is not a mapping (an object with apiVersion and kind)".into(),
                help: None,
            });
        }
    }
    Ok(objects)
}

impl Builder<'_> {
    fn read(&self, l: &Loaded, field: &str, path: &str) -> Result<Vec<u8>, Error> {
        match self.files.read(path) {
            Ok(Some(bytes)) => Ok(bytes),
            Ok(None) => Err(l.error_at(field, format!("`{path}`: no such file"))),
            Err(e) => Err(l.error_at(field, format!("cannot read `{path}`: {e}"))),
        }
    }

    /// Builds the kustomization (or component) in `dir` into `acc`; returns it.
    fn accumulate(
        &mut self,
        dir: &str,
        acc: &mut Vec<Res>,
        component: bool,
    ) -> Result<Loaded, Error> {
        let Some(path) = kustomization_in(self.files, dir) else {
            let shown = if dir.is_empty() { "." } else { dir };
            return Err(Error::at(
                shown,
                format!("no kustomization.yaml, kustomization.yml or Kustomization in `{shown}`"),
            )
            .help("a folder listed in resources or components must hold a kustomization"));
        };
        if self.stack.iter().any(|d| d == dir) {
            return Err(Error::at(
                &path,
                format!(
                    "kustomizations include each other in a cycle: {} -> {dir}",
                    self.stack.join(" -> ")
                ),
            ));
        }
        let bytes = match self.files.read(&path) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(Error::at(&path, "no such file")),
            Err(e) => return Err(Error::at(&path, format!("cannot read: {e}"))),
        };
        let l = kustomization::parse(&path, bytes)?;
        let is_component = l.k.kind.as_deref() == Some("Component");
        if component && !is_component {
            return Err(l.error_at("kind", "listed under `components`, but its kind is not Component")
                .help("set `apiVersion: kustomize.config.k8s.io/v1alpha1` and `kind: Component`, or list it under resources"));
        }
        if !component && is_component {
            return Err(l
                .error_at(
                    "kind",
                    "a Component cannot be listed under resources or built on its own",
                )
                .help("list it under `components` of a kustomization"));
        }
        self.stack.push(dir.to_string());
        let result = self.build(dir, &l, acc);
        self.stack.pop();
        result.map(|()| l)
    }

    fn build(&mut self, dir: &str, l: &Loaded, acc: &mut Vec<Res>) -> Result<(), Error> {
        let k = &l.k;
        // Resources.
        let entries: Vec<(&str, &String)> = k
            .resources
            .iter()
            .map(|r| ("resources", r))
            .chain(k.bases.iter().map(|b| ("bases", b)))
            .collect();
        for (field, entry) in entries {
            if is_remote(entry) {
                return Err(l
                    .error_at(field, format!("`{entry}` is a remote resource; berth renders only files of this repository"))
                    .help("vendor the remote kustomization into the repository and list its folder"));
            }
            let path = join(dir, entry);
            if self.files.is_dir(&path) {
                let mut sub = Vec::new();
                self.accumulate(&path, &mut sub, false)?;
                append(acc, sub, l, field)?;
            } else {
                if !within(dir, &path) {
                    return Err(l
                        .error_at(field, format!("`{entry}` is a file outside the kustomization's folder; kustomize refuses it (load restrictor)"))
                        .help("move the file below the kustomization, or list the folder of another kustomization holding it"));
                }
                let bytes = match self.files.read(&path) {
                    Ok(Some(b)) => b,
                    Ok(None) => {
                        return Err(l.error_at(
                            field,
                            format!("`{entry}`: no such file or folder ({path})"),
                        ));
                    }
                    Err(e) => return Err(l.error_at(field, format!("cannot read `{path}`: {e}"))),
                };
                let mut more = Vec::new();
                for (value, node, file) in objects_of(&path, bytes)? {
                    if !value.is_object() || value.get("kind").and_then(Value::as_str).is_none() {
                        return Err(Error {
                            path: path.clone(),
                            file: Some(file),
                            span: Some(node.span),
                            message: "a resource has no kind".into(),
                            help: None,
                        });
                    }
                    more.push(Res {
                        line: node.span.start.line,
                        value,
                        node: Some(node),
                        file,
                        prev: Vec::new(),
                        hash: false,
                    });
                }
                append(acc, more, l, field)?;
            }
        }
        // Generators.
        for field in ["configMapGenerator", "secretGenerator"] {
            let list = if field == "configMapGenerator" {
                &k.config_map_generator
            } else {
                &k.secret_generator
            };
            for (i, g) in list.iter().enumerate() {
                let made = generate(self.files, l, dir, g, field)?;
                let res = Res {
                    value: made.value,
                    file: l.file.clone(),
                    node: None,
                    line: item_line(l, field, i),
                    prev: Vec::new(),
                    hash: made.hash,
                };
                match made.behavior.as_str() {
                    "create" => append(acc, vec![res], l, field)?,
                    behavior => merge_generated(acc, res, behavior, l, field)?,
                }
            }
        }
        // Components.
        for entry in &k.components {
            if is_remote(entry) {
                return Err(l.error_at(
                    "components",
                    format!("`{entry}` is remote; berth renders only files of this repository"),
                ));
            }
            self.accumulate(&join(dir, entry), acc, true)?;
        }
        // Transformers, in kustomize's order.
        for entry in &k.patches_strategic_merge {
            let (name, bytes) =
                self.patch_text(dir, l, "patchesStrategicMerge", Some(entry), None)?;
            for (patch, _, _) in objects_of(&name, bytes)? {
                apply_smp(
                    acc,
                    &patch,
                    None,
                    &Default::default(),
                    l,
                    "patchesStrategicMerge",
                )?;
            }
        }
        for p in &k.patches {
            self.apply_patch(acc, dir, l, p, "patches")?;
        }
        if let Some(ns) = k.namespace.as_deref().filter(|n| !n.is_empty()) {
            set_namespace(acc, ns);
        }
        let skip_rename = |r: &Res| {
            let (group, _, kind) = gvk(&r.value);
            kind == "CustomResourceDefinition"
                || kind == "Namespace"
                || (kind == "APIService" && group == "apiregistration.k8s.io")
        };
        if let Some(prefix) = k.name_prefix.as_deref().filter(|p| !p.is_empty()) {
            for r in acc.iter_mut().filter(|r| !skip_rename(r)) {
                let name = format!("{prefix}{}", r.name());
                r.rename(name);
            }
        }
        if let Some(suffix) = k.name_suffix.as_deref().filter(|p| !p.is_empty()) {
            for r in acc.iter_mut().filter(|r| !skip_rename(r)) {
                let name = format!("{}{suffix}", r.name());
                r.rename(name);
            }
        }
        let selectors = fields::selector_labels();
        let templates = fields::template_labels();
        for label in &k.labels {
            let pairs = pairs(&label.pairs);
            let specs: &[Spec] = if label.include_selectors {
                &selectors
            } else if label.include_templates {
                &templates
            } else {
                &TEMPLATE_LABELS[..1]
            };
            for r in acc.iter_mut() {
                fields::add_pairs(&mut r.value, specs, &pairs);
                add_custom(&mut r.value, &label.fields, &pairs);
            }
        }
        let common = pairs(&k.common_labels);
        let annotations = pairs(&k.common_annotations);
        for r in acc.iter_mut() {
            fields::add_pairs(&mut r.value, &selectors, &common);
            fields::add_pairs(&mut r.value, ANNOTATIONS, &annotations);
        }
        for p in &k.patches_json6902 {
            if p.target.is_none() {
                return Err(l
                    .error_at("patchesJson6902", "an entry has no target")
                    .help("give the target's kind and name"));
            }
            self.apply_patch(acc, dir, l, p, "patchesJson6902")?;
        }
        for replica in &k.replicas {
            let mut found = false;
            for r in acc.iter_mut() {
                if REPLICA_KINDS.contains(&r.kind()) && r.all_names().any(|n| n == replica.name) {
                    found = true;
                    if let Value::Object(map) = &mut r.value {
                        let spec = map.entry("spec").or_insert_with(|| json!({}));
                        if let Value::Object(spec) = spec {
                            spec.insert("replicas".into(), json!(replica.count));
                        }
                    }
                }
            }
            if !found {
                return Err(l.error_at(
                    "replicas",
                    format!("no Deployment, ReplicationController, ReplicaSet or StatefulSet named `{}`", replica.name),
                ));
            }
        }
        for image in &k.images {
            for r in acc.iter_mut() {
                set_images(&mut r.value, image);
            }
        }
        self.vars.extend(k.vars.iter().cloned());
        if !k.replacements.is_empty() {
            let mut list = Vec::new();
            for rep in &k.replacements {
                match &rep.path {
                    Some(path) => {
                        let file = join(dir, path);
                        let bytes = self.read(l, "replacements", &file)?;
                        for (value, node, f) in objects_of(&file, bytes)? {
                            let parsed: Vec<kustomization::Replacement> = match value {
                                Value::Array(_) => serde_json::from_value(value.clone()),
                                other => serde_json::from_value(other).map(|r| vec![r]),
                            }
                            .map_err(|e| Error {
                                path: file.clone(),
                                file: Some(f.clone()),
                                span: Some(node.span),
                                message: format!("invalid replacement: {e}"),
                                help: None,
                            })?;
                            list.extend(parsed);
                        }
                    }
                    None => list.push(rep.clone()),
                }
            }
            super::replace::apply(acc, &list).map_err(|e| l.error_at("replacements", e))?;
        }
        Ok(())
    }

    /// A patch's name (for errors) and text: from its file, or inline.
    fn patch_text(
        &self,
        dir: &str,
        l: &Loaded,
        field: &str,
        path_or_inline: Option<&String>,
        inline: Option<&String>,
    ) -> Result<(String, Vec<u8>), Error> {
        if let Some(text) = inline {
            return Ok((
                format!("{} ({field}, inline)", l.file.path),
                text.as_bytes().to_vec(),
            ));
        }
        let Some(entry) = path_or_inline else {
            return Err(l.error_at(field, "an entry has neither `path` nor `patch`"));
        };
        // patchesStrategicMerge takes a file or inline YAML in one string.
        if field == "patchesStrategicMerge" && entry.contains('\n') {
            return Ok((
                format!("{} ({field}, inline)", l.file.path),
                entry.as_bytes().to_vec(),
            ));
        }
        let path = join(dir, entry);
        if !within(dir, &path) {
            return Err(l.error_at(field, format!("`{entry}` is outside the kustomization's folder; kustomize refuses it (load restrictor)")));
        }
        Ok((path.clone(), self.read(l, field, &path)?))
    }

    fn apply_patch(
        &self,
        acc: &mut Vec<Res>,
        dir: &str,
        l: &Loaded,
        p: &Patch,
        field: &str,
    ) -> Result<(), Error> {
        let (name, bytes) = self.patch_text(dir, l, field, p.path.as_ref(), p.patch.as_ref())?;
        let docs = objects_of(&name, bytes.clone());
        // A JSON 6902 patch is a list: the loader (which wants objects) refuses it.
        let text = String::from_utf8_lossy(&bytes).to_string();
        let (parsed, _) = super::super::yaml::parse_stream(&text, Default::default());
        let first = parsed
            .iter()
            .find_map(|d| d.root.as_ref())
            .map(Node::to_json);
        let options = p.options.clone().unwrap_or_default();
        let matcher = match &p.target {
            Some(t) => Some(Matcher::new(t).map_err(|e| l.error_at(field, e))?),
            None => None,
        };
        if let Some(ops @ Value::Array(_)) = first {
            let Some(matcher) = matcher else {
                return Err(l.error_at(field, "a JSON 6902 patch needs a `target`"));
            };
            for r in acc.iter_mut() {
                if !matcher.matches(&r.value, &r.names()) {
                    continue;
                }
                let before = (r.name(), r.kind().to_string());
                ensure_parents(&mut r.value, &ops);
                json_patch(&mut r.value, &ops)
                    .map_err(|e| l.error_at(field, format!("{name} on {}: {e}", r.id())))?;
                keep_identity(r, before, &options);
            }
            return Ok(());
        }
        for (patch, _, _) in docs? {
            apply_smp(acc, &patch, matcher.as_ref(), &options, l, field)?;
        }
        Ok(())
    }
}

/// kustomize's JSON patches create the missing maps above an `add` (its library's
/// `EnsurePathExistsOnAdd`); RFC 6902, and so the API server, would refuse them.
fn ensure_parents(object: &mut Value, ops: &Value) {
    let Value::Array(ops) = ops else { return };
    for op in ops {
        if op.get("op").and_then(Value::as_str) != Some("add") {
            continue;
        }
        let Some(path) = op.get("path").and_then(Value::as_str) else {
            continue;
        };
        let parts: Vec<String> = path
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let mut at = &mut *object;
        for part in parts.iter().take(parts.len().saturating_sub(1)) {
            at = match at {
                Value::Object(map) => map
                    .entry(part.clone())
                    .or_insert_with(|| Value::Object(Map::new())),
                Value::Array(items) => match part.parse::<usize>() {
                    Ok(i) if i < items.len() => &mut items[i],
                    _ => break,
                },
                _ => break,
            };
            if at.is_null() {
                *at = Value::Object(Map::new());
            }
        }
    }
}

fn pairs(p: &kustomization::Pairs) -> Vec<(String, String)> {
    p.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

/// A label's own `fields`.
fn add_custom(object: &mut Value, specs: &[FieldSpec], pairs: &[(String, String)]) {
    for s in specs {
        if !fields::selects(&s.group, &s.kind, object)
            || !(s.version.is_empty() || gvk(object).1 == s.version)
        {
            continue;
        }
        visit(object, &segments(&s.path), s.create, &mut |v| {
            if !v.is_object() {
                *v = Value::Object(Map::new());
            }
            if let Value::Object(map) = v {
                for (k, val) in pairs {
                    map.insert(k.clone(), Value::String(val.clone()));
                }
            }
        });
    }
}

/// After a patch: the name and kind stay unless the patch's options allow a change.
fn keep_identity(
    r: &mut Res,
    (name, kind): (String, String),
    options: &std::collections::BTreeMap<String, bool>,
) {
    let new_name = r.name();
    if new_name != name {
        set_metadata(&mut r.value, "name", name.clone());
        if options.get("allowNameChange") == Some(&true) {
            r.rename(new_name);
        }
    }
    if r.kind() != kind
        && options.get("allowKindChange") != Some(&true)
        && let Value::Object(map) = &mut r.value
    {
        map.insert("kind".into(), Value::String(kind));
    }
}

/// Applies one strategic merge patch: to the selected objects, or to the object it names.
fn apply_smp(
    acc: &mut Vec<Res>,
    patch: &Value,
    matcher: Option<&Matcher>,
    options: &std::collections::BTreeMap<String, bool>,
    l: &Loaded,
    field: &str,
) -> Result<(), Error> {
    let targets: Vec<usize> = match matcher {
        Some(m) => (0..acc.len())
            .filter(|&i| m.matches(&acc[i].value, &acc[i].names()))
            .collect(),
        None => {
            let (group, _, kind) = gvk(patch);
            let name = patch
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let ns = patch.pointer("/metadata/namespace").and_then(Value::as_str);
            let found: Vec<usize> = (0..acc.len())
                .filter(|&i| {
                    let r = &acc[i];
                    let (g, _, k) = gvk(&r.value);
                    k == kind
                        && (group.is_empty() || g == group)
                        && r.all_names().any(|n| n == name)
                        && ns.is_none_or(|ns| {
                            r.names().iter().any(|(_, rns)| rns == ns)
                                || r.prev.iter().any(|(_, p)| p == ns)
                        })
                })
                .collect();
            if found.is_empty() {
                return Err(l
                    .error_at(
                        field,
                        format!("the patch for {kind} {name} matches no resource"),
                    )
                    .help(
                        "patch an object of the resources by its kind and name, or give a `target`",
                    ));
            }
            found
        }
    };
    let delete = patch.get("$patch").and_then(Value::as_str) == Some("delete");
    if delete {
        let gone: HashSet<usize> = targets.into_iter().collect();
        let mut i = 0;
        acc.retain(|_| {
            i += 1;
            !gone.contains(&(i - 1))
        });
        return Ok(());
    }
    for i in targets {
        let r = &mut acc[i];
        let before = (r.name(), r.kind().to_string());
        let ns = r.str_at("/metadata/namespace");
        let mut patch = patch.clone();
        if matcher.is_some() {
            // A targeted patch's own name and kind do not matter.
            if let Some(meta) = patch.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.remove("name");
                meta.remove("namespace");
            }
            if let Some(map) = patch.as_object_mut() {
                map.remove("kind");
                map.remove("apiVersion");
            }
        }
        strategic_merge(&mut r.value, &patch)
            .map_err(|e| l.error_at(field, format!("{} on {}", e, r.id())))?;
        if r.str_at("/metadata/namespace") != ns {
            set_metadata(&mut r.value, "namespace", ns.clone());
            if ns.is_empty()
                && let Some(meta) = r.value.get_mut("metadata").and_then(Value::as_object_mut)
            {
                meta.remove("namespace");
            }
        }
        keep_identity(r, before, options);
    }
    Ok(())
}

/// `behavior: merge` or `replace`: the generated object joins the one it names.
fn merge_generated(
    acc: &mut [Res],
    new: Res,
    behavior: &str,
    l: &Loaded,
    field: &str,
) -> Result<(), Error> {
    let kind = new.kind().to_string();
    let name = new.name();
    let ns = new.str_at("/metadata/namespace");
    let found = acc.iter_mut().find(|r| {
        r.kind() == kind
            && r.all_names().any(|n| n == name)
            && (ns.is_empty() || r.names().iter().any(|(_, rns)| *rns == ns))
    });
    let Some(old) = found else {
        return Err(l
            .error_at(field, format!("behavior {behavior}: there is no {kind} `{name}` to {behavior}"))
            .help("merge and replace change an object of the resources (of a base); use behavior create for a new one"));
    };
    let keep_name = old.name();
    let keep_ns = old.str_at("/metadata/namespace");
    // Both behaviors merge labels and annotations; merge merges the data, replace replaces it.
    let metadata = old.value.get("metadata").cloned();
    if behavior == "replace" {
        old.value = new.value.clone();
        old.hash = new.hash;
        if let (Some(Value::Object(meta)), Some(Value::Object(old_meta))) =
            (old.value.get_mut("metadata"), metadata)
        {
            for key in ["labels", "annotations"] {
                if let Some(Value::Object(before)) = old_meta.get(key) {
                    let mut merged = before.clone();
                    if let Some(Value::Object(now)) = meta.get(key) {
                        merged.extend(now.clone());
                    }
                    meta.insert(key.into(), Value::Object(merged));
                }
            }
        }
    } else {
        for key in ["data", "binaryData"] {
            if let Some(Value::Object(add)) = new.value.get(key) {
                let target = old
                    .value
                    .as_object_mut()
                    .map(|m| m.entry(key).or_insert_with(|| json!({})));
                if let Some(Value::Object(t)) = target {
                    for (k, v) in add {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        for key in ["labels", "annotations"] {
            if let Some(Value::Object(add)) = new.value.pointer(&format!("/metadata/{key}")) {
                let add = add.clone();
                let meta = old
                    .value
                    .as_object_mut()
                    .map(|m| m.entry("metadata").or_insert_with(|| json!({})));
                if let Some(Value::Object(meta)) = meta
                    && let Value::Object(t) = meta.entry(key).or_insert_with(|| json!({}))
                {
                    t.extend(add);
                }
            }
        }
        old.hash = old.hash || new.hash;
    }
    set_metadata(&mut old.value, "name", keep_name);
    if !keep_ns.is_empty() {
        set_metadata(&mut old.value, "namespace", keep_ns);
    }
    old.file = new.file;
    old.line = new.line;
    old.node = None;
    Ok(())
}

fn set_namespace(acc: &mut [Res], ns: &str) {
    for r in acc.iter_mut() {
        let (group, version, kind) = gvk(&r.value);
        let (group, version, kind) = (group.to_string(), version.to_string(), kind.to_string());
        if !r.cluster_scoped() {
            r.set_namespace(ns);
        }
        if kind == "Namespace" && group.is_empty() && version == "v1" {
            r.rename(ns.to_string());
        }
        let mut set = |path: &str, create: bool| {
            visit(&mut r.value, &segments(path), create, &mut |v| {
                *v = Value::String(ns.to_string())
            });
        };
        match (group.as_str(), kind.as_str()) {
            ("apiregistration.k8s.io", "APIService") => set("spec/service/namespace", true),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => set(
                "spec/conversion/webhook/clientConfig/service/namespace",
                false,
            ),
            ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
                if let Some(Value::Array(subjects)) = r.value.get_mut("subjects") {
                    for s in subjects.iter_mut() {
                        if s.get("name").and_then(Value::as_str) == Some("default")
                            && let Value::Object(s) = s
                        {
                            s.insert("namespace".into(), Value::String(ns.to_string()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

/// kustomize's image name match: the name (a regular expression, as kustomize takes it),
/// then an optional tag and digest.
fn image_matches(image: &str, name: &str) -> bool {
    regex::Regex::new(&format!(
        "^{name}(:[a-zA-Z0-9_.{{}}-]*)?(@[a-zA-Z0-9]+([.+_-][a-zA-Z0-9]+)*:[a-zA-Z0-9_.{{}}-]*)?$"
    ))
    .is_ok_and(|re| re.is_match(image))
}

/// An image reference's name, tag and digest, split as kustomize splits them.
fn split_image(image: &str) -> (String, String, String) {
    let slash = image.find('/').filter(|&i| i > 0).unwrap_or(0);
    let search = &image[slash..];
    let at = search.find('@');
    let colon = search.find(':');
    match (colon, at) {
        (None, None) => (image.to_string(), String::new(), String::new()),
        (c, Some(d)) if c.is_none_or(|c| d < c) => {
            let d = d + slash;
            (
                image[..d].to_string(),
                String::new(),
                image[d + 1..].to_string(),
            )
        }
        (Some(c), Some(d)) => {
            let (c, d) = (c + slash, d + slash);
            (
                image[..c].to_string(),
                image[c + 1..d].to_string(),
                image[d + 1..].to_string(),
            )
        }
        (Some(c), None) => {
            let c = c + slash;
            (
                image[..c].to_string(),
                image[c + 1..].to_string(),
                String::new(),
            )
        }
        (None, Some(_)) => unreachable!("handled above"),
    }
}

fn new_image(old: &str, image: &kustomization::Image) -> Option<String> {
    if !image_matches(old, &image.name) {
        return None;
    }
    let (mut name, mut tag, mut digest) = split_image(old);
    if !image.new_name.is_empty() {
        name = image.new_name.clone();
    }
    let new_tag = &image.new_tag.0;
    if !new_tag.is_empty() && !image.digest.is_empty() {
        tag = new_tag.clone();
        digest = image.digest.clone();
    } else if !new_tag.is_empty() {
        tag = new_tag.clone();
        digest.clear();
    } else if !image.digest.is_empty() {
        tag.clear();
        digest = image.digest.clone();
    } else if !image.tag_suffix.is_empty() {
        tag.push_str(&image.tag_suffix);
        digest.clear();
    }
    if !tag.is_empty() {
        name = format!("{name}:{tag}");
    }
    if !digest.is_empty() {
        name = format!("{name}@{digest}");
    }
    Some(name)
}

/// Sets the images of every `containers` and `initContainers` list in the object, and of
/// image volumes.
fn set_images(object: &mut Value, image: &kustomization::Image) {
    if gvk(object).2 == "CustomResourceDefinition" {
        return;
    }
    fn walk(v: &mut Value, image: &kustomization::Image) {
        match v {
            Value::Object(map) => {
                for (key, child) in map.iter_mut() {
                    walk(child, image);
                    if (key == "containers" || key == "initContainers")
                        && let Value::Array(items) = child
                    {
                        for item in items {
                            if let Some(Value::String(old)) = item.get_mut("image")
                                && let Some(new) = new_image(old, image)
                            {
                                *old = new;
                            }
                        }
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, image)),
            _ => {}
        }
    }
    walk(object, image);
    // kustomize then applies its field specs too: the containers of a pod or a pod template
    // are changed a second time (which shows only with `tagSuffix`, added twice).
    for path in [
        "spec/containers/image",
        "spec/initContainers/image",
        "spec/template/spec/containers/image",
        "spec/template/spec/initContainers/image",
        "spec/volumes/image/reference",
        "spec/template/spec/volumes/image/reference",
    ] {
        visit(object, &segments(path), false, &mut |v| {
            if let Value::String(old) = v
                && let Some(new) = new_image(old, image)
            {
                *old = new;
            }
        });
    }
}

/// A renamed object's old names, in the fields that refer to it, become its new name.
fn fix_references(acc: &mut [Res]) {
    struct Target {
        kind: String,
        group: String,
        name: String,
        ns: String,
        raw_ns: String,
        names: HashSet<String>,
        namespaces: HashSet<String>,
    }
    let targets: Vec<Target> = acc
        .iter()
        .map(|r| {
            let (group, _, kind) = gvk(&r.value);
            Target {
                kind: kind.to_string(),
                group: group.to_string(),
                name: r.name(),
                ns: r.effective_ns(&r.str_at("/metadata/namespace")),
                raw_ns: r.str_at("/metadata/namespace"),
                names: r.all_names().collect(),
                namespaces: r
                    .prev
                    .iter()
                    .map(|(_, ns)| r.effective_ns(ns))
                    .chain([r.effective_ns(&r.str_at("/metadata/namespace"))])
                    .collect(),
            }
        })
        .collect();
    let resolve = |to: &str, to_group: &str, old: &str, ns: Option<&str>| -> Option<&Target> {
        let candidates: Vec<&Target> = targets
            .iter()
            .filter(|t| {
                t.kind == to
                    && (to_group.is_empty() || t.group == to_group)
                    && t.names.contains(old)
            })
            .collect();
        let in_ns: Vec<&Target> = match ns {
            Some(ns) => candidates
                .iter()
                .copied()
                .filter(|t| t.ns.is_empty() || t.namespaces.contains(ns))
                .collect(),
            None => candidates.clone(),
        };
        let pick = if in_ns.is_empty() {
            &candidates
        } else {
            &in_ns
        };
        if pick.iter().any(|t| t.name == old) {
            return None;
        }
        let first = pick.first()?;
        pick.iter().all(|t| t.name == first.name).then_some(*first)
    };
    for r in acc.iter_mut() {
        let own_ns = r.effective_ns(&r.str_at("/metadata/namespace"));
        let own_ns = (!own_ns.is_empty()).then_some(own_ns);
        for reference in fields::references() {
            let from = &reference.from;
            if !fields::selects(from.group, from.kind, &r.value) {
                continue;
            }
            visit(
                &mut r.value,
                &segments(from.path),
                false,
                &mut |v| match v {
                    Value::String(old) => {
                        if let Some(t) =
                            resolve(reference.to, reference.to_group, old, own_ns.as_deref())
                        {
                            *old = t.name.clone();
                        }
                    }
                    Value::Object(obj) => {
                        // A subject (only those of the referenced kind) or a webhook's service.
                        if let Some(kind) = obj.get("kind").and_then(Value::as_str)
                            && kind != reference.to
                        {
                            return;
                        }
                        let ns = obj
                            .get("namespace")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                            .or_else(|| own_ns.clone());
                        let Some(old) = obj.get("name").and_then(Value::as_str) else {
                            return;
                        };
                        if let Some(t) =
                            resolve(reference.to, reference.to_group, old, ns.as_deref())
                        {
                            obj.insert("name".into(), Value::String(t.name.clone()));
                            if !t.raw_ns.is_empty() {
                                obj.insert("namespace".into(), Value::String(t.raw_ns.clone()));
                            }
                        }
                    }
                    _ => {}
                },
            );
        }
    }
}

const ORDER_FIRST: [&str; 22] = [
    "Namespace",
    "ResourceQuota",
    "StorageClass",
    "CustomResourceDefinition",
    "ServiceAccount",
    "PodSecurityPolicy",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "ConfigMap",
    "Secret",
    "Endpoints",
    "Service",
    "LimitRange",
    "PriorityClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "Deployment",
    "StatefulSet",
    "CronJob",
    "PodDisruptionBudget",
];
const ORDER_LAST: [&str; 2] = [
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
];

/// kustomize's output order: `legacy` (by kind, then id; the default) or `fifo`.
fn sort(acc: &mut [Res], top: &Loaded) -> Result<(), Error> {
    let options = top.k.sort_options.clone().unwrap_or_default();
    match options.order.as_deref() {
        Some("fifo") => return Ok(()),
        None | Some("legacy") => {}
        Some(other) => {
            return Err(top.error_at(
                "sortOptions",
                format!("sort order `{other}` is not legacy or fifo"),
            ));
        }
    }
    let legacy = options.legacy_sort_options.unwrap_or_default();
    let (first, last): (Vec<String>, Vec<String>) =
        if legacy.order_first.is_empty() && legacy.order_last.is_empty() {
            (
                ORDER_FIRST.iter().map(|s| s.to_string()).collect(),
                ORDER_LAST.iter().map(|s| s.to_string()).collect(),
            )
        } else {
            (legacy.order_first, legacy.order_last)
        };
    let rank = |kind: &str| -> i64 {
        if let Some(i) = first.iter().position(|k| k == kind) {
            i as i64 - first.len() as i64
        } else if let Some(i) = last.iter().position(|k| k == kind) {
            1 + i as i64
        } else {
            0
        }
    };
    let gvk_string = |v: &Value| {
        let (g, ver, k) = gvk(v);
        let or = |s: &str, d: &str| {
            if s.is_empty() {
                d.to_string()
            } else {
                s.to_string()
            }
        };
        format!("{}_{}_{}", or(g, "~G"), or(ver, "~V"), or(k, "~K"))
    };
    let id_string = |r: &Res| {
        let (g, ver, k) = gvk(&r.value);
        let gvk = match (g.is_empty(), ver.is_empty()) {
            (true, _) => format!("{ver}.{k}"),
            (false, _) => format!("{g}_{ver}_{k}"),
        };
        let ns = r.str_at("/metadata/namespace");
        let name = r.name();
        let or = |s: String, d: &str| if s.is_empty() { d.to_string() } else { s };
        format!("{gvk}|{}|{}", or(ns, "~X"), or(name, "~N"))
    };
    acc.sort_by(|a, b| {
        let (ga, gb) = (gvk_string(&a.value), gvk_string(&b.value));
        if ga != gb {
            let (ra, rb) = (rank(a.kind()), rank(b.kind()));
            if ra != rb {
                return ra.cmp(&rb);
            }
            if a.kind() == "Namespace" && b.kind() == "Namespace" {
                return gb.cmp(&ga);
            }
            return ga.cmp(&gb);
        }
        id_string(a).cmp(&id_string(b))
    });
    Ok(())
}
