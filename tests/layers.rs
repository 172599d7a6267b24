//! The module layering of `src/`, checked on every `cargo test`: no two modules import each
//! other, and no lower layer imports a higher one.
//!
//! The check reads every module file reachable from `src/lib.rs` (following `mod` declarations
//! and `#[path]`), collects each `crate::`, `super::` and `self::` path (in `use` trees and in
//! code), and resolves it to the module it names, through a parent's `pub use child::Item`
//! re-exports. A reference from module `a::b::x` to `a::c::y` is an arrow `b → c` among the
//! children of `a`: so the check sees file modules within a folder against each other
//! (`cluster::api::handlers → binding`) and folders against each other (`cluster::api →
//! controllers`, `cluster → daemons`). A module using its own parent or children is not an
//! arrow. Every strongly connected group of such arrows is a cycle; an arrow from a lower
//! layer of [`LAYERS`] to a higher one is a violation. Both are printed with the file and line
//! of every reference that makes them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, low to high, among the children of a module (`""` is the crate root). A module
/// may import a lower layer and its own layer (if that makes no cycle), never a higher one.
/// Children not listed are only checked for cycles.
const LAYERS: &[(&str, &[&[&str]])] = &[
    (
        "",
        &[
            &["manifest"],
            &["diff"],
            &["apply"],
            &["client"],
            &["cluster"],
            &["daemons"],
            &["cli"],
        ],
    ),
    (
        "cluster",
        &[&["store"], &["api"], &["scheduler", "controllers"]],
    ),
];

#[test]
fn modules_form_no_cycles_and_respect_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = read_modules(&src);
    let arrows = arrows(&modules, &src);

    let mut report = String::new();
    for (parent, members) in cycles(&arrows) {
        let names: Vec<String> = members.iter().map(|m| join(&parent, m)).collect();
        writeln!(report, "cycle between {}:", names.join(", ")).unwrap();
        for (arrow, evidence) in &arrows {
            if arrow.parent == parent
                && members.contains(&arrow.child)
                && members.contains(&arrow.target)
            {
                write_arrow(&mut report, arrow, evidence);
            }
        }
        report.push('\n');
    }
    for (arrow, evidence) in &arrows {
        let Some(rank_of) = layer_ranks(&arrow.parent) else {
            continue;
        };
        if let (Some(from), Some(to)) = (rank_of(&arrow.child), rank_of(&arrow.target))
            && from < to
        {
            writeln!(report, "a lower layer imports a higher one:").unwrap();
            write_arrow(&mut report, arrow, evidence);
            report.push('\n');
        }
    }
    assert!(
        report.is_empty(),
        "the module layering is broken (layers, low to high: {}):\n\n{report}",
        LAYERS
            .iter()
            .map(|(parent, layers)| format!(
                "{}{}",
                if parent.is_empty() {
                    String::new()
                } else {
                    format!("{parent}: ")
                },
                layers
                    .iter()
                    .map(|l| l.join("/"))
                    .collect::<Vec<_>>()
                    .join(" < ")
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );
}

/// The checker itself: a cycle, an arrow up the layers and a stale allowance are each found.
#[test]
fn the_check_finds_what_it_must() {
    let root = std::env::temp_dir().join(format!("berth-layers-{}", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    let files: &[(&str, &str)] = &[
        ("lib.rs", "pub mod manifest;\npub mod cluster;\n"),
        ("manifest/mod.rs", "//! m\npub mod a;\npub mod b;\n"),
        // a → b in a use tree, b → a in code, a child of b re-exported by b.
        (
            "manifest/a.rs",
            "use super::{b::Thing, a_helper};\nuse crate::manifest::b::Inner;\n",
        ),
        (
            "manifest/b.rs",
            "pub use deep::Inner;\nmod deep;\nfn f() { super::a::g(); }\n\
             // crate::cluster::x in a comment\nconst S: &str = \"crate::cluster::y\";\n",
        ),
        ("manifest/b/deep.rs", "pub struct Inner;\n"),
        (
            "cluster/mod.rs",
            // `super` in an inline module is the file's module: this names `cluster` itself.
            "pub mod api;\n#[cfg(test)]\nmod tests { use super::manifest::X; }\n",
        ),
        ("cluster/api.rs", "#[path = \"api_extra.rs\"]\nmod extra;\n"),
        (
            "cluster/api_extra.rs",
            "fn f() { crate::manifest::a::g(); }\n",
        ),
    ];
    for (path, text) in files {
        let path = root.join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }
    let modules = read_modules(&root);
    assert_eq!(
        modules.keys().map(|m| m.join("::")).collect::<Vec<_>>(),
        [
            "",
            "cluster",
            "cluster::api",
            "cluster::api::extra",
            "manifest",
            "manifest::a",
            "manifest::b",
            "manifest::b::deep"
        ]
    );
    let arrows = arrows(&modules, &root);
    let found: Vec<(String, String, Vec<String>)> = arrows
        .iter()
        .map(|(a, e)| {
            (
                a.from(),
                a.to(),
                e.iter().map(|e| format!("{}:{}", e.file, e.line)).collect(),
            )
        })
        .collect();
    let dir = root.file_name().unwrap().to_str().unwrap();
    let file = |p: &str| format!("{dir}/{p}");
    assert_eq!(
        found,
        [
            (
                "cluster".to_string(),
                "manifest".to_string(),
                vec![format!("{}:1", file("cluster/api_extra.rs"))]
            ),
            (
                "manifest::a".to_string(),
                "manifest::b".to_string(),
                vec![
                    format!("{}:1", file("manifest/a.rs")),
                    format!("{}:2", file("manifest/a.rs"))
                ]
            ),
            (
                "manifest::b".to_string(),
                "manifest::a".to_string(),
                vec![format!("{}:3", file("manifest/b.rs"))]
            ),
        ]
    );
    assert_eq!(
        cycles(&arrows),
        [(
            vec!["manifest".to_string()],
            vec!["a".to_string(), "b".to_string()]
        )]
    );
    let up = arrows.keys().find(|a| a.child == "cluster").unwrap();
    let rank = layer_ranks(&up.parent).unwrap();
    assert!(
        rank("cluster") > rank("manifest"),
        "cluster → manifest goes down"
    );
    let _ = fs::remove_dir_all(&root);
}

/// A module file: its path (`["cluster", "api", "batch"]`) and where it is.
type Modules = BTreeMap<Vec<String>, PathBuf>;

/// Every module file reachable from `root/lib.rs`.
fn read_modules(root: &Path) -> Modules {
    let mut modules = Modules::new();
    let mut todo = vec![(Vec::new(), root.join("lib.rs"))];
    while let Some((module, file)) = todo.pop() {
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        let dir = file.parent().unwrap();
        let owns_dir = matches!(
            file.file_name().and_then(|n| n.to_str()),
            Some("mod.rs" | "lib.rs")
        );
        for declared in parse(&text).children {
            let child_file = match declared.path_attribute {
                Some(p) => dir.join(p),
                None => {
                    let base = if owns_dir {
                        dir.to_path_buf()
                    } else {
                        dir.join(file.file_stem().unwrap())
                    };
                    let flat = base.join(format!("{}.rs", declared.name));
                    if flat.exists() {
                        flat
                    } else {
                        base.join(&declared.name).join("mod.rs")
                    }
                }
            };
            let mut child = module.clone();
            child.push(declared.name);
            todo.push((child, child_file));
        }
        modules.insert(module, file);
    }
    modules
}

/// An arrow between two children of `parent`: `child` uses something in `target`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Arrow {
    parent: Vec<String>,
    child: String,
    target: String,
}

impl Arrow {
    fn from(&self) -> String {
        join(&self.parent, &self.child)
    }

    fn to(&self) -> String {
        join(&self.parent, &self.target)
    }
}

fn join(parent: &[String], child: &str) -> String {
    parent
        .iter()
        .map(String::as_str)
        .chain([child])
        .collect::<Vec<_>>()
        .join("::")
}

/// One reference that makes an arrow.
#[derive(Debug, Clone)]
struct Evidence {
    file: String,
    line: usize,
    path: String,
}

/// Every arrow between sibling modules, with the references that make it.
fn arrows(modules: &Modules, root: &Path) -> BTreeMap<Arrow, Vec<Evidence>> {
    let parsed: BTreeMap<&Vec<String>, Parsed> = modules
        .iter()
        .map(|(m, file)| (m, parse(&fs::read_to_string(file).unwrap())))
        .collect();
    // `pub use child::Item` in a module: `Item` resolves to that child.
    let mut reexports: BTreeMap<(Vec<String>, String), Vec<String>> = BTreeMap::new();
    for (module, p) in &parsed {
        for r in p.refs.iter().filter(|r| r.reexport) {
            let Some(target) = resolve_module(modules, &BTreeMap::new(), module, &r.path) else {
                continue;
            };
            if target.len() > module.len() && target.starts_with(module) {
                let name = r.alias.clone().or_else(|| r.path.last().cloned());
                if let Some(name) = name.filter(|n| n != "*" && n != "self") {
                    reexports.insert(((*module).clone(), name), target);
                }
            }
        }
    }
    let mut arrows: BTreeMap<Arrow, Vec<Evidence>> = BTreeMap::new();
    for (module, p) in &parsed {
        let file = &modules[*module];
        for r in &p.refs {
            let mut scope = (*module).clone();
            scope.extend(r.inline_scope.iter().cloned());
            let Some(target) = resolve_module(modules, &reexports, &scope, &r.path) else {
                continue;
            };
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                continue; // its own parent or child
            }
            arrows
                .entry(Arrow {
                    parent: module[..common].to_vec(),
                    child: module[common].clone(),
                    target: target[common].clone(),
                })
                .or_default()
                .push(Evidence {
                    file: file
                        .strip_prefix(root.parent().unwrap_or(root))
                        .unwrap_or(file)
                        .display()
                        .to_string(),
                    line: r.line,
                    path: r.path.join("::"),
                });
        }
    }
    for evidence in arrows.values_mut() {
        evidence.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        evidence.dedup_by(|a, b| a.file == b.file && a.line == b.line);
    }
    arrows
}

/// The module a path names, from inside `scope`; `None` for other crates' paths.
fn resolve_module(
    modules: &Modules,
    reexports: &BTreeMap<(Vec<String>, String), Vec<String>>,
    scope: &[String],
    path: &[String],
) -> Option<Vec<String>> {
    let mut at: Vec<String> = scope.to_vec();
    let mut rest = path;
    match rest.first()?.as_str() {
        "crate" | "$crate" => {
            at.clear();
            rest = &rest[1..];
        }
        "self" => rest = &rest[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                at.pop()?;
                rest = &rest[1..];
            }
        }
        first => {
            // A 2018-edition path through a child module; anything else is another crate.
            let mut child = at.clone();
            child.push(first.to_string());
            if !modules.contains_key(&child) {
                return None;
            }
        }
    }
    // The innermost module file that holds `at` (inline modules live in their file).
    while !modules.contains_key(&at) {
        at.pop()?;
    }
    for segment in rest {
        let mut child = at.clone();
        child.push(segment.clone());
        if modules.contains_key(&child) {
            at = child;
        } else if let Some(target) = reexports.get(&(at.clone(), segment.clone())) {
            at = target.clone();
        } else {
            break;
        }
    }
    Some(at)
}

/// Groups of sibling modules that reach each other through arrows: each group's parent and
/// its members, sorted.
fn cycles(arrows: &BTreeMap<Arrow, Vec<Evidence>>) -> Vec<(Vec<String>, Vec<String>)> {
    let mut by_parent: BTreeMap<&Vec<String>, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for a in arrows.keys() {
        by_parent
            .entry(&a.parent)
            .or_default()
            .entry(&a.child)
            .or_default()
            .insert(&a.target);
    }
    let mut out = Vec::new();
    for (parent, graph) in by_parent {
        let reach = |start: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start];
            while let Some(n) = todo.pop() {
                for &next in graph.get(n).into_iter().flatten() {
                    if seen.insert(next) {
                        todo.push(next);
                    }
                }
            }
            seen
        };
        let reaches: BTreeMap<&str, BTreeSet<&str>> =
            graph.keys().map(|&n| (n, reach(n))).collect();
        let mut grouped = BTreeSet::new();
        for (&n, from_n) in &reaches {
            if grouped.contains(n) || !from_n.contains(n) {
                continue;
            }
            let group: Vec<String> = from_n
                .iter()
                .filter(|m| reaches.get(*m).is_some_and(|r| r.contains(n)))
                .map(|m| m.to_string())
                .collect();
            grouped.extend(group.iter().cloned());
            out.push((parent.clone(), group));
        }
    }
    out
}

/// The layer of each child of `parent`, when [`LAYERS`] orders them.
fn layer_ranks(parent: &[String]) -> Option<impl Fn(&str) -> Option<usize>> {
    let name = parent.join("::");
    let (_, layers) = LAYERS.iter().find(|(p, _)| *p == name)?;
    Some(move |child: &str| layers.iter().position(|l| l.contains(&child)))
}

fn write_arrow(report: &mut String, arrow: &Arrow, evidence: &[Evidence]) {
    writeln!(report, "  {} → {}", arrow.from(), arrow.to()).unwrap();
    for e in evidence {
        writeln!(report, "    {}:{}: {}", e.file, e.line, e.path).unwrap();
    }
}

/// What one module file declares and refers to.
#[derive(Debug, Default)]
struct Parsed {
    children: Vec<Declared>,
    refs: Vec<Reference>,
}

/// `mod name;`, with its `#[path]` if it has one.
#[derive(Debug)]
struct Declared {
    name: String,
    path_attribute: Option<String>,
}

/// One `crate::`/`super::`/`self::` path (or a `use` of a child module).
#[derive(Debug)]
struct Reference {
    path: Vec<String>,
    line: usize,
    /// The inline modules (`mod tests { … }`) the path is written in.
    inline_scope: Vec<String>,
    /// A `pub use` at the file's top level.
    reexport: bool,
    alias: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    PathSep,
    Punct(char),
}

/// Rust source as identifiers, strings, `::` and punctuation, with line numbers; comments,
/// character literals, lifetimes and numbers are left out.
fn lex(text: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if at(i) == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if at(i) == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else if i >= chars.len() {
                    break;
                } else {
                    line += usize::from(chars[i] == '\n');
                    i += 1;
                }
            }
        } else if let Some((hashes, start)) = raw_string_start(&chars, i) {
            let start_line = line;
            let mut j = start;
            let closes = |j: usize| at(j) == '"' && (1..=hashes).all(|k| at(j + k) == '#');
            while j < chars.len() && !closes(j) {
                line += usize::from(chars[j] == '\n');
                j += 1;
            }
            out.push((Token::Str(chars[start..j].iter().collect()), start_line));
            i = j + 1 + hashes;
        } else if c == '"' || (c == 'b' && at(i + 1) == '"') {
            let start_line = line;
            let mut j = i + if c == 'b' { 2 } else { 1 };
            let start = j;
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                }
                line += usize::from(at(j) == '\n');
                j += 1;
            }
            out.push((Token::Str(chars[start..j].iter().collect()), start_line));
            i = j + 1;
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}') or a lifetime ('a).
            if at(i + 1) == '\\' {
                let mut j = i + 2;
                while j < chars.len() && chars[j] != '\'' {
                    j += 1;
                }
                i = j + 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if c == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
            let start = i + 2;
            i = start;
            while is_ident_char(at(i)) {
                i += 1;
            }
            out.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if is_ident_start(c) || (c == '$' && is_ident_start(at(i + 1))) {
            let start = i;
            i += 1;
            while is_ident_char(at(i)) {
                i += 1;
            }
            out.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c.is_ascii_digit() {
            while is_ident_char(at(i)) || (at(i) == '.' && at(i + 1).is_ascii_digit()) {
                i += 1;
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((Token::Punct(c), line));
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`…: the number of hashes and where the text starts.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    (chars.get(j + hashes) == Some(&'"')).then_some((hashes, j + hashes + 1))
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The `mod` declarations and the module paths of one file.
fn parse(text: &str) -> Parsed {
    let tokens = lex(text);
    let ident = |i: usize| match tokens.get(i) {
        Some((Token::Ident(s), _)) => Some(s.as_str()),
        _ => None,
    };
    let is = |i: usize, t: &Token| tokens.get(i).map(|(x, _)| x) == Some(t);
    let mut parsed = Parsed::default();
    let mut depth = 0usize;
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut path_attribute: Option<String> = None;
    let mut i = 0;
    while i < tokens.len() {
        let (token, line) = &tokens[i];
        match token {
            Token::Punct('#')
                if is(i + 1, &Token::Punct('['))
                    && ident(i + 2) == Some("path")
                    && is(i + 3, &Token::Punct('=')) =>
            {
                if let Some((Token::Str(p), _)) = tokens.get(i + 4) {
                    path_attribute = Some(p.clone());
                }
                i += 5;
                continue;
            }
            Token::Punct('{') => depth += 1,
            Token::Punct('}') => {
                depth = depth.saturating_sub(1);
                while inline.last().is_some_and(|(_, d)| *d > depth) {
                    inline.pop();
                }
            }
            Token::Ident(k) if k == "mod" => {
                if let Some(name) = ident(i + 1) {
                    if is(i + 2, &Token::Punct(';')) && inline.is_empty() {
                        parsed.children.push(Declared {
                            name: name.to_string(),
                            path_attribute: path_attribute.take(),
                        });
                    } else if is(i + 2, &Token::Punct('{')) {
                        depth += 1;
                        inline.push((name.to_string(), depth));
                        i += 3;
                        continue;
                    }
                }
                path_attribute = None;
            }
            Token::Ident(k) if k == "use" => {
                let reexport = inline.is_empty()
                    && i > 0
                    && (ident(i - 1) == Some("pub") || is(i - 1, &Token::Punct(')')));
                let mut j = i + 1;
                let mut paths = Vec::new();
                use_tree(&tokens, &mut j, &[], &mut paths);
                for (path, alias, line) in paths {
                    parsed.refs.push(Reference {
                        path,
                        line,
                        inline_scope: inline.iter().map(|(n, _)| n.clone()).collect(),
                        reexport,
                        alias,
                    });
                }
                i = j;
                continue;
            }
            Token::Ident(k)
                if matches!(k.as_str(), "crate" | "$crate" | "super" | "self")
                    && is(i + 1, &Token::PathSep)
                    && !(i > 0 && is(i - 1, &Token::PathSep)) =>
            {
                let mut path = vec![k.clone()];
                let mut j = i + 1;
                while is(j, &Token::PathSep) {
                    match ident(j + 1) {
                        Some(s) => path.push(s.to_string()),
                        None => break,
                    }
                    j += 2;
                }
                parsed.refs.push(Reference {
                    path,
                    line: *line,
                    inline_scope: inline.iter().map(|(n, _)| n.clone()).collect(),
                    reexport: false,
                    alias: None,
                });
                i = j;
                continue;
            }
            Token::Punct(';') => path_attribute = None,
            _ => {}
        }
        i += 1;
    }
    parsed
}

/// Reads one use tree at `*i` (after `use`, or inside braces) into full paths, each with its
/// `as` name and line; leaves `*i` after the tree.
fn use_tree(
    tokens: &[(Token, usize)],
    i: &mut usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, Option<String>, usize)>,
) {
    let mut path = prefix.to_vec();
    if matches!(tokens.get(*i), Some((Token::PathSep, _))) {
        *i += 1;
    }
    let line = tokens.get(*i).map_or(0, |(_, l)| *l);
    loop {
        match tokens.get(*i) {
            Some((Token::Ident(s), _)) => {
                // `use a::{self, b}`: `self` is `a` itself.
                if s != "self" || path.len() != prefix.len() || prefix.is_empty() {
                    path.push(s.clone());
                }
                *i += 1;
            }
            Some((Token::Punct('*'), _)) => {
                path.push("*".into());
                *i += 1;
                break;
            }
            Some((Token::Punct('{'), _)) => {
                *i += 1;
                loop {
                    match tokens.get(*i) {
                        Some((Token::Punct('}'), _)) | None => {
                            *i += 1;
                            return;
                        }
                        Some((Token::Punct(','), _)) => *i += 1,
                        _ => use_tree(tokens, i, &path, out),
                    }
                }
            }
            _ => break,
        }
        if matches!(tokens.get(*i), Some((Token::PathSep, _))) {
            *i += 1;
        } else {
            break;
        }
    }
    let mut alias = None;
    if matches!(tokens.get(*i), Some((Token::Ident(a), _)) if a == "as") {
        if let Some((Token::Ident(name), _)) = tokens.get(*i + 1) {
            alias = Some(name.clone());
        }
        *i += 2;
    }
    if path.len() > prefix.len() || !prefix.is_empty() {
        out.push((path, alias, line));
    }
}
