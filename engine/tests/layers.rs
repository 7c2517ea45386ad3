//! The engine's layering, checked from its source: the modules (files) and the `crate::`
//! paths each names outside comments form a graph with no cycle — so there is a one-way
//! order, printed here lowest layer first — and `unsafe` appears only in the named
//! kernel-facing places (docs/architecture.md, "Where unsafe lives").

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `sys/net.rs` -> "sys::net"; `rio/mod.rs` -> "rio"; `lib.rs` -> "".
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).unwrap().with_extension("");
    let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    let parts: Vec<&str> = parts
        .iter()
        .map(String::as_str)
        .filter(|p| *p != "mod" && *p != "lib")
        .collect();
    parts.join("::")
}

/// The code of a file without comments (line comments and doc comments).
fn code(text: &str) -> String {
    text.lines()
        .map(|l| l.split("//").next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Graph {
    edges: BTreeMap<String, BTreeSet<String>>,
    files: BTreeMap<String, String>,
}

fn graph() -> Graph {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let modules: BTreeMap<String, String> = files
        .iter()
        .map(|f| (module_of(&root, f), code(&std::fs::read_to_string(f).unwrap())))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, text) in &modules {
        let to = edges.entry(m.clone()).or_default();
        let parent = m.rsplit_once("::").map_or("", |p| p.0).to_string();
        for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
            for (i, _) in text.match_indices(prefix) {
                let path: String = text[i + prefix.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let full = if base.is_empty() {
                    path
                } else {
                    format!("{base}::{path}")
                };
                // The deepest module the path names (a file), not the item in it.
                let mut segs: Vec<&str> = full.split("::").filter(|s| !s.is_empty()).collect();
                while !segs.is_empty() && !modules.contains_key(&segs.join("::")) {
                    segs.pop();
                }
                let target = segs.join("::");
                if !target.is_empty() && &target != m && !m.starts_with(&format!("{target}::")) {
                    to.insert(target);
                }
            }
        }
    }
    Graph { edges, files: modules }
}

#[test]
fn module_imports_form_a_one_way_order() {
    let g = graph();
    // Kahn's algorithm: repeatedly take the modules whose every import is already placed.
    let mut placed: Vec<String> = Vec::new();
    let mut left: BTreeSet<String> = g.edges.keys().cloned().collect();
    while !left.is_empty() {
        let ready: Vec<String> = left
            .iter()
            .filter(|m| {
                g.edges[*m]
                    .iter()
                    .all(|d| placed.contains(d) || !g.edges.contains_key(d))
            })
            .cloned()
            .collect();
        assert!(
            !ready.is_empty(),
            "import cycle among: {:?}",
            left.iter().map(|m| (m, &g.edges[m])).collect::<Vec<_>>()
        );
        for m in ready {
            left.remove(&m);
            placed.push(m);
        }
    }
    eprintln!("layers, lowest first: {placed:?}");
}

#[test]
fn unsafe_lives_only_in_the_named_modules() {
    // Kernel-facing code (syscalls, mmaps, rings, the providers), the typed views over mapped
    // memory, the core's hand-over of an op to its driver (`Driver::push`), and BPF map key
    // types. Anything else is safe code over these.
    let allowed = [
        "sys::bpf",
        "sys::bufring",
        "sys::clock",
        "sys::cpu",
        "sys::genl",
        "sys::net",
        "sys::netns",
        "sys::region",
        "sys::ring",
        "sys::shm",
        "sys::xsk",
        "driver",
        "driver::uring",
        "driver::lent",
        "driver::epoll",
        "driver::sim",
        "pool",
        "rio::buf",
        "shard",
        "shard::ops",
        "xdp::program",
        "loom_models",
    ];
    let g = graph();
    let with_unsafe: Vec<&String> = g
        .files
        .iter()
        .filter(|(_, text)| text.contains("unsafe "))
        .map(|(m, _)| m)
        .filter(|m| !m.is_empty())
        .collect();
    let stray: Vec<&&String> = with_unsafe.iter().filter(|m| !allowed.contains(&m.as_str())).collect();
    assert!(stray.is_empty(), "unsafe outside the named modules: {stray:?}");
}
