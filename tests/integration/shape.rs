//! The size rules of `docs/architecture.md` §5, checked on the sources so they stay true: no source
//! file over [`MAX_FILE_LINES`] lines, and no function over [`MAX_FN_LINES`] lines unless the
//! comment block just above it says why, in a line starting `// Long on purpose:`.

use std::path::{Path, PathBuf};

use crate::support::rust_sources;

const MAX_FILE_LINES: usize = 800;
const MAX_FN_LINES: usize = 80;
const REASON: &str = "// Long on purpose:";

fn all_sources() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "sim/src",
        "sim/benches",
        "calibrate/src",
        "tests/integration",
    ] {
        rust_sources(&root.join(dir), &mut files);
    }
    files.sort();
    assert!(files.len() > 50, "found only {} sources", files.len());
    files
}

/// `(name, first line (1-based), lines)` of every function with a body. rustfmt puts a body's
/// closing brace at the indentation of its `fn`, which is what this relies on.
fn functions(src: &str) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let mut out = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let t = l.trim_start();
        let indent = &l[..l.len() - t.len()];
        let t = t
            .trim_start_matches("pub(crate) ")
            .trim_start_matches("pub(super) ")
            .trim_start_matches("pub ")
            .trim_start_matches("const ")
            .trim_start_matches("unsafe ");
        let Some(rest) = t.strip_prefix("fn ") else {
            continue;
        };
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        // The line that opens the body (or ends a body-less declaration).
        let Some(open) = (i..lines.len()).find(|&j| {
            let s = lines[j].trim_end();
            s.ends_with('{') || s.ends_with(';') || s.ends_with('}')
        }) else {
            continue;
        };
        let s = lines[open].trim_end();
        if !s.ends_with('{') {
            continue; // `fn f();` or `fn f() {}`
        }
        let close = format!("{indent}}}");
        if let Some(end) = (open + 1..lines.len()).find(|&j| lines[j] == close) {
            out.push((name, i + 1, end - i + 1));
        }
    }
    out
}

/// Whether the comment/attribute block right above line `first` (1-based) gives a reason.
fn has_reason(src: &str, first: usize) -> bool {
    src.lines()
        .take(first - 1)
        .collect::<Vec<_>>()
        .iter()
        .rev()
        .take_while(|l| {
            let t = l.trim_start();
            t.starts_with("//") || t.starts_with("#[")
        })
        .any(|l| l.trim_start().starts_with(REASON))
}

#[test]
fn no_source_file_is_over_the_limit() {
    let long: Vec<String> = all_sources()
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines: split them by concept (docs/architecture.md §5):\n{}",
        long.join("\n")
    );
}

#[test]
fn long_functions_say_why() {
    let mut long = Vec::new();
    for f in all_sources() {
        let src = std::fs::read_to_string(&f).unwrap();
        for (name, first, n) in functions(&src) {
            if n > MAX_FN_LINES && !has_reason(&src, first) {
                long.push(format!("{}:{first} fn {name} ({n} lines)", f.display()));
            }
        }
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines without a `{REASON} …` comment above them: break \
         them into named steps, or say why they stay long:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_scanner_measures_functions() {
    let src = "fn a() {}\n\n// Long on purpose: a table.\npub fn b(\n    x: u32,\n) -> u32 {\n    x\n}\n    fn c();\n";
    let f = functions(src);
    assert_eq!(f, [("b".to_string(), 4, 5)]);
    assert!(has_reason(src, 4));
    assert!(!has_reason(src, 1));
}
