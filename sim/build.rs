//! Records the git commit servesim is built from (`SERVESIM_BUILD`: the commit id, or empty
//! outside a git checkout), so that `merge` can refuse shards written by two different builds
//! of one crate version (their results may differ). Two builds of one commit with different
//! uncommitted changes are not told apart.

use std::path::{Path, PathBuf};
use std::process::Command;

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into()));
    // Rerun when HEAD moves (a checkout, or a commit on the branch HEAD names); without git,
    // only when this script changes.
    println!("cargo:rerun-if-changed=build.rs");
    let commit = git(&dir, &["rev-parse", "HEAD"]).unwrap_or_default();
    if !commit.is_empty() {
        let abs = |p: String| {
            let p = PathBuf::from(p);
            if p.is_absolute() { p } else { dir.join(p) }
        };
        if let Some(head) = git(&dir, &["rev-parse", "--git-path", "HEAD"]) {
            println!("cargo:rerun-if-changed={}", abs(head).display());
        }
        if let Some(branch) = git(&dir, &["symbolic-ref", "-q", "HEAD"])
            && let Some(r) = git(&dir, &["rev-parse", "--git-path", &branch])
            && abs(r.clone()).exists()
        {
            println!("cargo:rerun-if-changed={}", abs(r).display());
        }
    }
    println!("cargo:rustc-env=SERVESIM_BUILD={commit}");
}
