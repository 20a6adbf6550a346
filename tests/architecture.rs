//! The module graph points one way: no top-level module of `src/` reaches itself through
//! the `crate::` paths of the others, and the leaves import nothing of the crate.
//! Read from the sources, so a new import that closes a cycle fails here.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn module_of(path: &Path, src: &Path) -> Option<String> {
    let rel = path.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules its code names as `crate::x`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all {
        let Some(m) = module_of(&f, &src) else {
            continue;
        };
        if m == "main" || m == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let deps = g.entry(m.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let rest = &text[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && name != m {
                deps.insert(name);
            }
        }
    }
    g
}

#[test]
fn no_top_level_module_imports_itself_through_others() {
    let g = graph();
    // Depth-first search for a back edge.
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
    for m in g.keys() {
        if let Some(cycle) = visit(m, &g, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_leaves_import_nothing_else_of_the_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for leaf in [
        "health/model.rs",
        "health/view.rs",
        "health/cause.rs",
        "health/peers.rs",
        "iana.rs",
        "name.rs",
        "diag.rs",
        "metrics.rs",
        "traffic/mod.rs",
        "traffic/split.rs",
        "traffic/ramp.rs",
    ] {
        let text = std::fs::read_to_string(root.join(leaf)).unwrap();
        let uses: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("crate::") && !l.trim_start().starts_with("//"))
            // The metrics registry may name the shared DNS vocabulary, nothing else.
            .filter(|l| !(leaf == "metrics.rs" && l.contains("crate::iana")))
            // The published health view carries the traffic split's shares (a leaf too).
            .filter(|l| !(leaf == "health/view.rs" && l.contains("crate::traffic::Share")))
            .collect();
        assert!(uses.is_empty(), "{leaf} imports {uses:?}");
    }
}
