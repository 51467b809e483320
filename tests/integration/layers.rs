//! The module layers of `sim/src` (`docs/architecture.md` §1). Every top-level module belongs to a
//! layer; a module may use modules of its own layer or below. This test reads every `crate::NAME`
//! path in the non-test code of `sim/src` (comments and `#[cfg(test)]` modules left out) and fails
//! on any use of a higher layer, and on any import cycle between modules (within a layer too).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::support::rust_sources;

/// Bottom to top. A module may use its own layer and the layers before it.
const LAYERS: &[&[&str]] = &[
    // L0 utilities: errors, bounded input, seeded randomness, atomic outputs.
    &["error", "input", "rng", "staging"],
    // L1 the shared vocabulary (time, request state, KV pools, trace rows) and data schemas.
    &["vocab", "catalogue", "profile"],
    // L2 decide, estimate, price, read: policies, routers, predictors, cost and swap models,
    // executors, traces.
    &[
        "policy", "route", "predict", "cost", "swap", "exec", "trace",
    ],
    // L3 the discrete-event engine.
    &["engine"],
    // L4 scenario resolution and metrics.
    &["scenario", "metrics"],
    // L5 one run, many runs, live mode, outputs, Ctrl-C.
    &["run", "sweep", "capacity", "live", "output", "interrupt"],
    // L6 the command line and its output tools.
    &["cli", "plot", "check", "shard"],
];

/// The top-level module names a source file refers to: every `crate::NAME` and every name opening
/// a `use crate::{NAME, …}` group.
fn referenced_modules(src: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut rest = src;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // `crate::{a, b::c, d::{e, f}}`: the names at depth 0 of the group.
            let mut depth = 0;
            let mut start = true;
            for (k, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident(&group[k..]));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

/// The non-test code of a source file: comments (and so doc links) dropped, and everything from
/// the first `#[cfg(test)]` on (test modules sit at the end of their files).
fn code_of(src: &str) -> String {
    let code = src.split("#[cfg(test)]").next().unwrap_or("");
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `from -> to` use between distinct top-level modules of `sim/src` (non-test code), with
/// the first file that makes it.
fn module_edges() -> BTreeMap<(String, String), PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/src");
    let mut files = Vec::new();
    rust_sources(&root, &mut files);
    files.sort();
    assert!(
        files.len() > 20,
        "found only {} sources under {root:?}",
        files.len()
    );
    let mut edges = BTreeMap::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let first = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let from = first.trim_end_matches(".rs").to_string();
        if from == "lib" || from == "main" {
            continue;
        }
        assert!(
            layer_of(&from).is_some(),
            "module `{from}` ({rel:?}) is in no layer: add it to LAYERS in tests/integration/layers.rs"
        );
        let src = std::fs::read_to_string(f).unwrap();
        for to in referenced_modules(&code_of(&src)) {
            if to != from && layer_of(&to).is_some() {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    edges
}

#[test]
fn lower_layers_never_use_higher_ones() {
    let up: Vec<String> = module_edges()
        .iter()
        .filter(|((a, b), _)| layer_of(b) > layer_of(a))
        .map(|((a, b), f)| format!("{a} -> {b} (first in sim/src/{})", f.display()))
        .collect();
    assert!(
        up.is_empty(),
        "a lower layer uses a higher one; move the shared item down instead:\n{}",
        up.join("\n")
    );
}

/// Within a layer modules may use each other, but never in a circle: the whole module graph is a
/// DAG, so any module can be read and tested with only what it uses below it.
#[test]
fn the_module_graph_has_no_cycle() {
    let edges = module_edges();
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (a, b) in edges.keys() {
        next.entry(a).or_default().push(b);
    }
    // Depth-first search with colours: 1 = on the current path, 2 = done.
    fn visit<'a>(
        m: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        colour: &mut BTreeMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match colour.get(m) {
            Some(2) => return None,
            Some(1) => {
                let at = path.iter().position(|x| *x == m).unwrap();
                let mut cycle = path[at..].to_vec();
                cycle.push(m);
                return Some(cycle);
            }
            _ => {}
        }
        colour.insert(m, 1);
        path.push(m);
        for n in next.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, next, colour, path) {
                return Some(c);
            }
        }
        path.pop();
        colour.insert(m, 2);
        None
    }
    let mut colour = BTreeMap::new();
    for m in next.keys() {
        if let Some(cycle) = visit(m, &next, &mut colour, &mut Vec::new()) {
            panic!("module import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let src = "use crate::engine::Ns;\nuse crate::{error::Result, policy::{Plan, Policy},\n    swap};\nlet x = crate::cost::f();";
    let got: Vec<String> = referenced_modules(src).into_iter().collect();
    assert_eq!(got, ["cost", "engine", "error", "policy", "swap"]);
}
