//! The module layers of `sim/src` (`docs/architecture.md` §1). Every top-level module belongs to a
//! layer; a module may use modules of its own layer or below. This test reads every `crate::NAME`
//! path in the non-test code of `sim/src` (comments and `#[cfg(test)]` modules left out) and fails
//! on any use of a higher layer that is not in [`KNOWN_BACK_EDGES`], the list of today's
//! violations still to be removed. The list is a ratchet: an edge in it that no longer exists also
//! fails the test, so it can only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer and the layers before it.
const LAYERS: &[&[&str]] = &[
    // L0 utilities: errors, bounded input, seeded randomness, atomic outputs.
    &["error", "input", "rng", "staging"],
    // L1 data schemas (the shared vocabulary of time, requests, KV pools and plans belongs here
    // too, once it moves out of `engine/`; see docs/architecture.md).
    &["catalogue", "profile"],
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

/// Today's uses of a higher layer (`from -> to`), to be removed; see `docs/architecture.md`.
const KNOWN_BACK_EDGES: &[(&str, &str)] = &[
    // The shared vocabulary (time, requests, KV pools, observer records) lives in `engine/`:
    // move it to an L1 module.
    ("exec", "engine"),
    ("policy", "engine"),
    ("route", "engine"),
    ("swap", "engine"),
    ("trace", "engine"),
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

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

#[test]
fn lower_layers_never_use_higher_ones_beyond_the_known_list() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sim/src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} sources under {root:?}",
        files.len()
    );
    let mut edges: BTreeMap<(String, String), PathBuf> = BTreeMap::new();
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
            if to == from {
                continue;
            }
            let Some(lt) = layer_of(&to) else {
                continue; // a re-exported item of lib.rs, not a module
            };
            if lt > layer_of(&from).unwrap() {
                edges
                    .entry((from.clone(), to))
                    .or_insert_with(|| rel.to_path_buf());
            }
        }
    }
    let known: BTreeSet<(String, String)> = KNOWN_BACK_EDGES
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    let new: Vec<String> = edges
        .iter()
        .filter(|(e, _)| !known.contains(*e))
        .map(|((a, b), f)| format!("{a} -> {b} (first in sim/src/{})", f.display()))
        .collect();
    assert!(
        new.is_empty(),
        "a lower layer uses a higher one; move the shared item down instead:\n{}",
        new.join("\n")
    );
    let gone: Vec<String> = known
        .iter()
        .filter(|e| !edges.contains_key(*e))
        .map(|(a, b)| format!("{a} -> {b}"))
        .collect();
    assert!(
        gone.is_empty(),
        "these known back-edges are gone: remove them from KNOWN_BACK_EDGES:\n{}",
        gone.join("\n")
    );
}

#[test]
fn the_scanner_reads_paths_and_groups() {
    let src = "use crate::engine::Ns;\nuse crate::{error::Result, policy::{Plan, Policy},\n    swap};\nlet x = crate::cost::f();";
    let got: Vec<String> = referenced_modules(src).into_iter().collect();
    assert_eq!(got, ["cost", "engine", "error", "policy", "swap"]);
}
