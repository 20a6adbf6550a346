//! The module graph points one way, read from the sources so that a new import that
//! closes a circle fails here:
//!
//! - no top-level module of `src/` reaches itself through the others;
//! - inside every module with files of its own (`health/`, `health/checker/`, `policy/`,
//!   ...), no file reaches itself through its siblings;
//! - the leaves import nothing of the crate but other leaves.
//!
//! Every path a file names counts: `crate::`, `super::` and `self::`, in `use` lists
//! (braces expanded) and inline, and in a `mod.rs` the paths through its own children.
//! A name a `mod.rs` re-exports (`pub use child::Item`) counts as the child's, so a
//! facade is not mistaken for a circle; an item defined in the `mod.rs` itself is the
//! node `mod`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path from the crate root: `["health", "checker", "core"]`.
type ModPath = Vec<String>;

struct SourceFile {
    module: ModPath,
    is_mod_rs: bool,
    text: String,
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments (doc comments name paths they do not import).
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let code = match line.find("//") {
            // `://` inside a string (a URL) is not a comment.
            Some(i) if !line[..i].ends_with(':') => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn load() -> Vec<SourceFile> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    all.iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).ok()?;
            let mut module: ModPath = rel
                .components()
                .map(|c| {
                    c.as_os_str()
                        .to_string_lossy()
                        .trim_end_matches(".rs")
                        .to_string()
                })
                .collect();
            let last = module.last()?.clone();
            let is_mod_rs = last == "mod";
            if is_mod_rs || last == "lib" || last == "main" {
                module.pop();
            }
            if module.is_empty() {
                return None; // lib.rs and main.rs wire everything: not part of the graph
            }
            let mut text = strip_comments(&std::fs::read_to_string(f).ok()?);
            // An inline test module imports for tests only, and its `super` is the file.
            if let Some(i) = text.find("#[cfg(test)]\nmod ") {
                text.truncate(i);
            }
            Some(SourceFile {
                module,
                is_mod_rs,
                text,
            })
        })
        .collect()
}

/// The `use` trees of a file, each expanded into plain paths, with whether the `use`
/// is a re-export (`pub use`, `pub(..) use`).
fn use_paths(text: &str) -> Vec<(bool, Vec<String>)> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(found) = text[i..].find("use ") {
        let at = i + found;
        i = at + 4;
        // A `use` keyword starts a statement: line start, after `pub`/`pub(..)`.
        let before = text[..at].trim_end_matches([' ', '\t']);
        let line_start = before.is_empty()
            || before.ends_with('\n')
            || before.ends_with('{')
            || before.ends_with(';')
            || before.ends_with('}');
        let reexport = before.ends_with("pub") || before.ends_with(')') && before.contains("pub(");
        if !line_start && !reexport {
            continue;
        }
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let Some(end) = text[i..].find(';') else {
            break;
        };
        // Renames (`x as y`) name `x`; then whitespace goes.
        let spaced = text[i..i + end]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let mut tree = String::new();
        let mut rest = spaced.as_str();
        while let Some(k) = rest.find(" as ") {
            tree.push_str(&rest[..k]);
            let after = &rest[k + 4..];
            let stop = after.find([',', '}']).unwrap_or(after.len());
            rest = &after[stop..];
        }
        tree.push_str(rest);
        let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
        for p in expand(&tree) {
            out.push((reexport, p.split("::").map(str::to_string).collect()));
        }
    }
    out
}

/// `a::{b, c::{d, e as f}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let Some(open) = tree.find('{') else {
        return vec![tree.trim_end_matches("::").to_string()];
    };
    let prefix = &tree[..open];
    let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (j, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&inner[start..j]);
                start = j + 1;
            }
            _ => {}
        }
    }
    parts.push(&inner[start..]);
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .flat_map(|p| {
            expand(p).into_iter().map(move |q| {
                if q == "self" {
                    prefix.trim_end_matches("::").to_string()
                } else {
                    format!("{prefix}{q}")
                }
            })
        })
        .collect()
}

/// Inline paths anchored at `crate`, `super` or `self`.
fn inline_paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for anchor in ["crate::", "super::", "self::"] {
        for (at, _) in text.match_indices(anchor) {
            let prev = text[..at].chars().last();
            if prev.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue; // `super::super::` is read from its first `super`
            }
            let path: String = text[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.push(
                path.split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            );
        }
    }
    out
}

struct Crate {
    files: Vec<SourceFile>,
    /// Every module path that is a file or a directory.
    modules: BTreeSet<ModPath>,
    /// Per `mod.rs` module: re-exported name → the child it comes from.
    reexports: BTreeMap<ModPath, BTreeMap<String, String>>,
}

impl Crate {
    fn read() -> Crate {
        let files = load();
        let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
        let mut reexports: BTreeMap<ModPath, BTreeMap<String, String>> = BTreeMap::new();
        for f in files.iter().filter(|f| f.is_mod_rs) {
            for (re, path) in use_paths(&f.text) {
                let path: Vec<String> = path.into_iter().skip_while(|s| s == "self").collect();
                if let (true, Some(child), Some(name)) = (re, path.first(), path.last())
                    && modules.contains(&[f.module.clone(), vec![child.clone()]].concat())
                {
                    reexports
                        .entry(f.module.clone())
                        .or_default()
                        .insert(name.clone(), child.clone());
                }
            }
        }
        Crate {
            files,
            modules,
            reexports,
        }
    }

    /// The module a path names, from file `f`: the longest prefix that is a module, with
    /// a name re-exported by a `mod.rs` followed to its child. `None`: not the crate's.
    fn resolve(&self, f: &SourceFile, path: &[String]) -> Option<ModPath> {
        let (mut base, rest): (ModPath, &[String]) = match path.first()?.as_str() {
            "crate" => (vec![], &path[1..]),
            "self" => (f.module.clone(), &path[1..]),
            "super" => {
                let mut b = f.module.clone();
                let mut rest = path;
                while rest.first().is_some_and(|s| s == "super") {
                    b.pop();
                    rest = &rest[1..];
                }
                (b, rest)
            }
            // In a mod.rs, a path through one of its children.
            first
                if f.is_mod_rs
                    && self
                        .modules
                        .contains(&[f.module.clone(), vec![first.to_string()]].concat()) =>
            {
                (f.module.clone(), path)
            }
            _ => return None,
        };
        for seg in rest {
            let mut next = base.clone();
            next.push(seg.clone());
            if self.modules.contains(&next) {
                base = next;
            } else {
                if let Some(child) = self.reexports.get(&base).and_then(|r| r.get(seg)) {
                    base.push(child.clone());
                }
                break;
            }
        }
        (!base.is_empty()).then_some(base)
    }

    /// Every (file, module named) pair, re-exports of a mod.rs left out.
    fn references(&self) -> Vec<(&SourceFile, ModPath)> {
        let mut out = Vec::new();
        for f in &self.files {
            let mut paths: Vec<Vec<String>> = use_paths(&f.text)
                .into_iter()
                .filter(|(re, _)| !(f.is_mod_rs && *re))
                .map(|(_, p)| p)
                .collect();
            paths.extend(inline_paths(&f.text));
            for p in paths {
                if let Some(t) = self.resolve(f, &p) {
                    out.push((f, t));
                }
            }
        }
        out
    }
}

fn find_cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for d in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(d, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(m, g, &mut Vec::new(), &mut done))
}

#[test]
fn no_top_level_module_imports_itself_through_others() {
    let c = Crate::read();
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (f, t) in c.references() {
        let (from, to) = (&f.module[0], &t[0]);
        g.entry(from.clone()).or_default();
        if from != to {
            g.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    if let Some(cycle) = find_cycle(&g) {
        panic!("import cycle between modules: {}", cycle.join(" -> "));
    }
}

#[test]
fn no_file_imports_itself_through_its_siblings() {
    let c = Crate::read();
    let refs = c.references();
    // Every directory module: its children (files or subdirectories) and `mod`.
    let dirs: BTreeSet<ModPath> = c
        .files
        .iter()
        .filter(|f| f.is_mod_rs)
        .map(|f| f.module.clone())
        .collect();
    let mut circles = Vec::new();
    for d in &dirs {
        let node = |m: &ModPath| -> Option<String> {
            if !m.starts_with(d) {
                return None;
            }
            Some(m.get(d.len()).cloned().unwrap_or_else(|| "mod".to_string()))
        };
        let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (f, t) in &refs {
            let (Some(from), Some(to)) = (node(&f.module), node(t)) else {
                continue;
            };
            g.entry(from.clone()).or_default();
            if from != to {
                g.entry(from).or_default().insert(to);
            }
        }
        if let Some(cycle) = find_cycle(&g) {
            circles.push(format!("{}: {}", d.join("::"), cycle.join(" -> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "import circles among the files of a module:\n{}",
        circles.join("\n")
    );
}

/// The leaves: what the query path, the policy model and the checker share. They name
/// nothing of the crate but each other.
const LEAVES: &[&[&str]] = &[
    &["health", "model"],
    &["health", "view"],
    &["health", "cause"],
    &["health", "peers"],
    &["iana"],
    &["name"],
    &["diag"],
    &["hash"],
    &["host"],
    &["metrics"],
    &["traffic"],
];

fn is_leaf(m: &ModPath) -> bool {
    LEAVES
        .iter()
        .any(|l| m.len() >= l.len() && m[..l.len()] == **l)
}

#[test]
fn the_leaves_import_nothing_but_other_leaves() {
    let c = Crate::read();
    let mut wrong = Vec::new();
    for (f, t) in c.references() {
        if is_leaf(&f.module) && !is_leaf(&t) {
            wrong.push(format!("{} names {}", f.module.join("::"), t.join("::")));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "leaves importing the rest of the crate:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_reader_sees_super_self_and_braced_imports() {
    // The reader itself, on the shapes it must not miss.
    let uses = use_paths(
        "use super::{view::{self, Effective}, cause::Cause as C};\npub use run::Handle;\n",
    );
    let paths: Vec<String> = uses.iter().map(|(_, p)| p.join("::")).collect();
    assert_eq!(
        paths,
        [
            "super::view",
            "super::view::Effective",
            "super::cause::Cause",
            "run::Handle"
        ]
    );
    assert_eq!(
        uses.iter().map(|(re, _)| *re).collect::<Vec<_>>(),
        [false, false, false, true]
    );
    let inline = inline_paths("let x = super::super::state::observe(); crate::hash::mix64(1);");
    assert!(inline.contains(&vec![
        "super".into(),
        "super".into(),
        "state".into(),
        "observe".into()
    ]));
    assert!(inline.contains(&vec!["crate".into(), "hash".into(), "mix64".into()]));
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(
        find_cycle(&g),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
    let c = Crate::read();
    let checker_core = c
        .files
        .iter()
        .find(|f| f.module == ["health", "checker", "core"])
        .unwrap();
    assert_eq!(
        c.resolve(
            checker_core,
            &["super".into(), "probes".into(), "Probes".into()]
        ),
        Some(vec!["health".into(), "checker".into(), "probes".into()])
    );
    assert_eq!(
        c.resolve(
            checker_core,
            &["crate".into(), "health".into(), "Cause".into()]
        ),
        Some(vec!["health".into(), "cause".into()]),
        "a name re-exported by health/mod.rs is the file's that defines it"
    );
}

/// `config` reads files into settings; the modules it configures depend on it, not the
/// other way round (DNSSEC's settings live in `config`).
#[test]
fn the_configuration_sits_below_what_it_configures() {
    let c = Crate::read();
    let mut wrong = Vec::new();
    for (f, t) in c.references() {
        if f.module[0] == "config"
            && t[0] != "config"
            && !is_leaf(&t)
            && !["geo", "zone"].contains(&t[0].as_str())
        {
            wrong.push(format!("{} names {}", f.module.join("::"), t.join("::")));
        }
    }
    wrong.sort();
    wrong.dedup();
    assert!(
        wrong.is_empty(),
        "config importing what it configures:\n{}",
        wrong.join("\n")
    );
}
