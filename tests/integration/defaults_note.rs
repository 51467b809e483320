//! `run`'s summary names a `[scheduler]` value the scenario sets away from its default (issue 20
//! §5: FastServe's max_batch_size 16 against the default 256 moves capacity by 60 %), once, and
//! says nothing when the values are the defaults.

use crate::support::{Workdir, cli, workspace_root};

/// `run` of the quickstart scenario with its `[scheduler]` batch lines replaced by `batch`.
fn run_stdout(w: &Workdir, name: &str, batch: &str) -> String {
    let text = std::fs::read_to_string(workspace_root().join("scenarios/quickstart.toml")).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("max_batch_size") && !l.starts_with("max_batch_tokens"))
        .map(|l| {
            if l.starts_with("lengths_file") {
                let traces = workspace_root().join("traces/sharegpt_vllm_opt.csv");
                format!("lengths_file = {:?}\n", traces.display().to_string())
            } else if l.starts_with("policy") {
                format!("{l}\n{batch}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let path = w.write(&format!("{name}.toml"), text);
    let out = w.path(name);
    let r = cli([
        "run".into(),
        path.display().to_string(),
        "--num-requests".into(),
        "20".into(),
        "--out".into(),
        out.display().to_string(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    r.stdout
}

#[test]
fn the_summary_names_a_batch_limit_that_differs_from_its_default() {
    let w = Workdir::new();
    let out = run_stdout(&w, "fastserve", "max_batch_size = 16");
    let notes: Vec<&str> = out.lines().filter(|l| l.starts_with("note:")).collect();
    assert_eq!(notes.len(), 1, "{out}");
    assert!(
        notes[0].contains("max_batch_size 16 (default 256, vLLM's max_num_seqs)"),
        "{}",
        notes[0]
    );
    assert!(!notes[0].contains("max_batch_tokens"), "{}", notes[0]);
    let both = run_stdout(&w, "both", "max_batch_size = 16\nmax_batch_tokens = 4096");
    assert!(both.contains("max_batch_size 16 (default 256"), "{both}");
    assert!(
        both.contains("max_batch_tokens 4096 (default 2048"),
        "{both}"
    );
    for (name, batch) in [
        ("unset", ""),
        ("explicit", "max_batch_size = 256\nmax_batch_tokens = 2048"),
    ] {
        let out = run_stdout(&w, name, batch);
        assert!(!out.contains("note:"), "{name}: {out}");
        assert!(out.contains("metric (s)"), "{out}");
    }
}
