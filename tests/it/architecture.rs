//! The layers of `src/` stay one-way: reads every `crate::…` path (in `use` lines and in
//! code) of every source file and fails, naming file and line, when a module imports one of a
//! higher layer, or when imports between modules form a circle.
//!
//! Layers, lowest first (docs/design.md draws them): util/error → spec → source → tree →
//! emit + measure → boot → build → cmd → main. A module not in [`LAYERS`] is refused, so a
//! new top-level module must be placed in a layer here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of the library, by layer (0 = lowest).
const LAYERS: &[(&str, &[&str])] = &[
    ("util", &["error", "date", "digest", "fsutil", "progress", "tarfmt", "kernelfmt", "reference", "util", "Error", "Result"]),
    ("spec", &["spec"]),
    ("source", &["source"]),
    ("tree", &["tree"]),
    ("emit/measure", &["emit", "measure"]),
    ("boot", &["boot"]),
    ("build", &["build"]),
    ("cmd", &["cmd"]),
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// One `crate::a::b…` path as written at `line` of a file.
struct Import {
    line: usize,
    path: Vec<String>,
}

/// The text with comments blanked out (line structure kept) so doc links don't count.
fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.trim_start().starts_with("//") {
            true => "",
            false => l.split(" // ").next().unwrap_or(l),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Expand a use tree (`a::{b, c::d}`) into full paths.
fn expand(tree: &str, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let tree = tree.trim();
    if tree.is_empty() {
        return;
    }
    if let Some(open) = tree.find('{') {
        let head: Vec<String> = tree[..open].split("::").map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect();
        let mut p = prefix.to_vec();
        p.extend(head);
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let (mut depth, mut start) = (0, 0);
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &p, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &p, out);
    } else {
        let mut p = prefix.to_vec();
        let tree = tree.split(" as ").next().unwrap();
        p.extend(tree.split("::").map(str::trim).filter(|s| !s.is_empty() && *s != "self" && *s != "*").map(String::from));
        out.push(p);
    }
}

/// Every `crate::` path of a file, with its line. `root` is `crate` (library) or the crate's
/// name (main.rs).
fn imports(text: &str, root: &str) -> Vec<Import> {
    let text = strip_comments(text);
    let mut out = Vec::new();
    let needle = format!("{root}::");
    let mut at = 0;
    while let Some(i) = text[at..].find(&needle) {
        let start = at + i;
        at = start + needle.len();
        if text[..start].chars().next_back().is_some_and(|c| is_ident(c) || c == ':') {
            continue;
        }
        let line = text[..start].matches('\n').count() + 1;
        let rest = &text[at..];
        if rest.starts_with('{') {
            // A grouped use: up to the matching brace.
            let mut depth = 0;
            let mut end = rest.len();
            for (j, c) in rest.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let mut paths = Vec::new();
            expand(&rest[..end], &[], &mut paths);
            out.extend(paths.into_iter().map(|path| Import { line, path }));
        } else {
            let mut path = Vec::new();
            let mut r = rest;
            loop {
                let n = r.find(|c: char| !is_ident(c)).unwrap_or(r.len());
                if n == 0 {
                    break;
                }
                path.push(r[..n].to_string());
                r = &r[n..];
                match r.strip_prefix("::") {
                    Some(x) if x.starts_with(|c: char| is_ident(c)) => r = x,
                    Some(x) if x.starts_with('{') => {
                        let mut paths = Vec::new();
                        let end = x.find('}').map(|e| e + 1).unwrap_or(x.len());
                        expand(&x[..end], &path, &mut paths);
                        out.extend(paths.into_iter().map(|path| Import { line, path }));
                        path.clear();
                        break;
                    }
                    _ => break,
                }
            }
            if !path.is_empty() {
                out.push(Import { line, path });
            }
        }
    }
    out
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → `["a", "b"]`; `src/a/mod.rs` → `["a"]`; `src/lib.rs` → `[]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

/// The node an import lands on for circle checks: the longest module prefix of `path` that
/// is a file of `src/`, at most two deep (`emit::tar`, `boot::kernel`, `tree`).
fn node(modules: &BTreeSet<Vec<String>>, path: &[String]) -> Vec<String> {
    let mut best = path[..1].to_vec();
    for n in 2..=path.len().min(2) {
        if modules.contains(&path[..n].to_vec()) {
            best = path[..n].to_vec();
        }
    }
    best
}

/// Every problem found under `src`: upward imports and circles, one line each.
fn problems(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rs_files(src, &mut files);
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(src, f)).collect();
    let mut found = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(src.parent().unwrap()).unwrap().display().to_string();
        let module = module_of(src, f);
        let text = std::fs::read_to_string(f).unwrap();
        if module == ["main"] {
            // The binary: the top layer, anything below it may be called.
            continue;
        }
        if module.is_empty() {
            continue; // lib.rs declares the modules.
        }
        let Some(own) = layer_of(&module[0]) else {
            found.push(format!("{rel}: module `{}` is in no layer of tests/it/architecture.rs", module[0]));
            continue;
        };
        let from = node(&modules, &module);
        for i in imports(&text, "crate") {
            let Some(top) = i.path.first() else { continue };
            let Some(theirs) = layer_of(top) else {
                found.push(format!("{rel}:{}: imports `crate::{}`, which is in no layer", i.line, i.path.join("::")));
                continue;
            };
            if theirs > own {
                found.push(format!(
                    "{rel}:{}: `crate::{}` runs up from layer {} to layer {}",
                    i.line,
                    i.path.join("::"),
                    LAYERS[own].0,
                    LAYERS[theirs].0
                ));
            }
            let to = node(&modules, &i.path);
            // A module and its own parent or child are one room (mod.rs re-exports its files).
            if to.starts_with(&from) || from.starts_with(&to) {
                continue;
            }
            edges.entry(from.clone()).or_default().entry(to).or_insert_with(|| format!("{rel}:{}", i.line));
        }
    }
    for circle in circles(&edges) {
        let mut s = format!("import circle: {}", circle.iter().map(|n| n.join("::")).collect::<Vec<_>>().join(" → "));
        for w in circle.windows(2) {
            s += &format!("\n    {} → {} at {}", w[0].join("::"), w[1].join("::"), edges[&w[0]][&w[1]]);
        }
        found.push(s);
    }
    found
}

/// Each circle of the graph, as a path that returns to its start (one per strongly
/// connected component of more than one node).
fn circles(edges: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>) -> Vec<Vec<Vec<String>>> {
    type N = Vec<String>;
    let nodes: BTreeSet<N> = edges.keys().cloned().chain(edges.values().flat_map(|m| m.keys().cloned())).collect();
    let reach = |from: &N| -> BTreeSet<N> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(n) = todo.pop() {
            for m in edges.get(&n).into_iter().flat_map(|m| m.keys()) {
                if seen.insert(m.clone()) {
                    todo.push(m.clone());
                }
            }
        }
        seen
    };
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(n) || !reach(n).contains(n) {
            continue;
        }
        // The shortest path back to n (breadth first), for the message.
        let mut prev: BTreeMap<N, N> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::from([n.clone()]);
        'bfs: while let Some(m) = queue.pop_front() {
            for k in edges.get(&m).into_iter().flat_map(|e| e.keys()) {
                if k == n {
                    prev.insert(n.clone(), m.clone());
                    break 'bfs;
                }
                if !prev.contains_key(k) {
                    prev.insert(k.clone(), m.clone());
                    queue.push_back(k.clone());
                }
            }
        }
        let mut path = vec![n.clone()];
        let mut cur = prev[n].clone();
        while &cur != n {
            path.push(cur.clone());
            cur = prev[&cur].clone();
        }
        path.push(n.clone());
        path.reverse();
        let r = reach(n);
        done.extend(nodes.iter().filter(|m| r.contains(*m) && reach(m).contains(n)).cloned());
        out.push(path);
    }
    out
}

#[test]
fn architecture_imports_run_down_the_layers_only() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = problems(&src);
    assert!(
        found.is_empty(),
        "{} import(s) break the layers (util/error → spec → source → tree → emit/measure → boot → build → cmd → main; docs/design.md):\n{}",
        found.len(),
        found.join("\n")
    );
}

#[test]
fn architecture_test_reads_grouped_and_inline_paths() {
    let text = "use crate::{spec::{self, BoxSpec}, tree::Tree};\n// crate::boot::x in a comment\nfn f() { crate::emit::tar::write(); }\nuse crate::source::{a, b::c as d};\n";
    let got: Vec<(usize, String)> = imports(text, "crate").into_iter().map(|i| (i.line, i.path.join("::"))).collect();
    assert_eq!(
        got,
        [
            (1, "spec".to_string()),
            (1, "spec::BoxSpec".into()),
            (1, "tree::Tree".into()),
            (3, "emit::tar::write".into()),
            (4, "source::a".into()),
            (4, "source::b::c".into())
        ]
    );
}

/// The check itself can fail: a tree with an upward import and an import circle is reported
/// with both, naming file and line.
#[test]
fn architecture_test_reports_an_upward_import_and_a_circle() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("src");
    for (f, text) in [
        ("lib.rs", "pub mod build;\npub mod emit;\npub mod spec;\n"),
        ("spec/mod.rs", "use crate::error::Result;\nuse crate::build::Plan;\n"),
        ("build/mod.rs", "pub struct Plan;\nuse crate::spec::Box;\n"),
        ("emit/mod.rs", "pub mod a;\npub mod b;\n"),
        ("emit/a.rs", "use crate::emit::b::B;\npub struct A;\n"),
        ("emit/b.rs", "pub struct B;\nfn f() { crate::emit::a::A; }\n"),
    ] {
        let p = src.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let found = problems(&src).join("\n");
    assert!(found.contains("src/spec/mod.rs:2") && found.contains("crate::build::Plan"), "{found}");
    assert!(found.contains("import circle: emit::a → emit::b → emit::a") || found.contains("import circle: emit::b → emit::a → emit::b"), "{found}");
    assert!(!found.contains("runs up from layer build"), "a downward import was reported as upward: {found}");
}
