//! Sharded sweeps: `sweep --shard I/3` × 3 + `merge` equals the unsharded sweep byte for byte,
//! and `merge` refuses edited `shard.json` rows, garbage run files and symbolic links in a shard.

use std::path::{Path, PathBuf};

use crate::support::{Workdir, cli, read_summary, workspace_root};

/// A small sweep with a failing point (max_queue = 2 overloads at the high rate).
const SWEEP: &str = r#"name = "shards"
model = "opt-13b"
gpu = "a100-40gb"
replicas = 2

[trace]
arrival = "poisson"
rate_per_s = 1.0
lengths_file = "LENGTHS"
num_requests = 60

[memory]
kv_capacity_blocks = 200

[cost]
model = "linear"
a_s = 0.012
b_s_per_token = 1.0e-4
c_s_per_token_sq = 0.0
d_s_per_request = 1.0e-4
e_s_per_context_token = 1.0e-7

[scheduler]
policy = "vllm"
max_batch_size = 8

[sweep]
policy = ["fcfs", "vllm"]
rate = [1.0, 20.0]
router = ["round-robin", "least-work"]
"limits.max_queue" = [2, 1000]
"#;

/// `servesim sweep ARGS --allow-failures` (the sweep's `max_queue = 2` runs fail on purpose).
fn sweep(args: &[&str]) -> crate::support::CliResult {
    let mut v: Vec<String> = vec!["sweep".into(), "--allow-failures".into()];
    v.extend(args.iter().map(|s| s.to_string()));
    cli(v)
}

/// `servesim merge S0 S1 --out OUT`.
fn merge_two(s0: &Path, s1: &Path, out: &Path) -> crate::support::CliResult {
    cli([
        "merge".as_ref(),
        s0.as_os_str(),
        s1.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ])
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out.sort();
    out
}

// Long on purpose: one end-to-end flow (sweep, three shards, merge, byte comparison).
#[test]
fn sharded_sweep_merges_into_the_unsharded_sweep_byte_for_byte() {
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lengths.display().to_string()),
    );
    let s = s.to_str().unwrap();
    let whole = w.path("whole");
    let r = sweep(&[s, "--out", whole.to_str().unwrap(), "--no-plots", "-j", "2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mut shard_dirs = Vec::new();
    for i in 0..3 {
        let d = w.path(&format!("shard{i}"));
        let r = sweep(&[
            s,
            "--shard",
            &format!("{i}/3"),
            "--out",
            d.to_str().unwrap(),
            "-j",
            "1",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert!(d.join("shard.json").exists());
        assert!(!d.join("plots").exists(), "shards draw no plots");
        shard_dirs.push(d.to_str().unwrap().to_string());
    }
    let merged = w.path("merged");
    let mut args: Vec<String> = vec!["merge".into()];
    // Any order.
    args.extend([2, 0, 1].iter().map(|&i| shard_dirs[i].clone()));
    args.extend([
        "--out".into(),
        merged.to_str().unwrap().into(),
        "--no-plots".into(),
    ]);
    let r = cli(args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("merged 3 shards: 16 runs"),
        "{}",
        r.stdout
    );

    let a = std::fs::read(whole.join("sweep.csv")).unwrap();
    let b = std::fs::read(merged.join("sweep.csv")).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&a),
        String::from_utf8_lossy(&b),
        "merged sweep.csv differs from the unsharded one"
    );
    assert_eq!(a, b);
    let text = String::from_utf8(a).unwrap();
    assert!(text.starts_with("run,policy,rate,limits.max_queue,router,requests,"));
    assert!(text.contains("overloaded"), "a point should fail:\n{text}");
    // The runs/ trees match file for file (timing.json aside).
    let fa = files_under(&whole.join("runs"));
    let fb = files_under(&merged.join("runs"));
    assert_eq!(fa, fb);
    assert!(fa.iter().any(|p| p.ends_with("replicas.csv")));
    for f in &fa {
        assert_eq!(
            std::fs::read(whole.join("runs").join(f)).unwrap(),
            std::fs::read(merged.join("runs").join(f)).unwrap(),
            "runs/{} differs",
            f.display()
        );
    }
    // Each merged run's summary is the unsharded one.
    let some_run = fa.iter().find(|p| p.ends_with("summary.json")).unwrap();
    let dir = whole.join("runs").join(some_run.parent().unwrap());
    assert_eq!(read_summary(&dir)["replicas"].as_array().unwrap().len(), 2);

    // Errors: one line, exit 2, nothing written.
    let bad = w.path("bad");
    let merge = |dirs: &[&str]| {
        let mut a: Vec<String> = vec!["merge".into()];
        a.extend(dirs.iter().map(|s| s.to_string()));
        a.extend(["--out".into(), bad.to_str().unwrap().into()]);
        cli(a)
    };
    let r = merge(&[&shard_dirs[0], &shard_dirs[1]]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("missing shard(s) 2/3"), "{}", r.stderr);
    let r = merge(&[
        &shard_dirs[0],
        &shard_dirs[1],
        &shard_dirs[2],
        &shard_dirs[1],
    ]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("shard 1/3 is given twice"),
        "{}",
        r.stderr
    );
    let r = merge(&[&shard_dirs[0], whole.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("not a sweep shard directory"),
        "{}",
        r.stderr
    );
    // A shard of a different sweep (other --num-requests).
    let other = w.path("other1");
    let r = sweep(&[
        s,
        "--shard",
        "1/3",
        "--num-requests",
        "30",
        "--out",
        other.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = merge(&[&shard_dirs[0], other.to_str().unwrap(), &shard_dirs[2]]);
    assert_eq!(r.code, 2);
    assert!(
        r.stderr.contains("shards of different sweeps"),
        "{}",
        r.stderr
    );
    // A different shard count.
    let other = w.path("other2");
    let r = sweep(&[s, "--shard", "0/2", "--out", other.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let r = merge(&[&shard_dirs[0], other.to_str().unwrap()]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("shard counts 3 and 2"), "{}", r.stderr);
    assert!(!bad.exists());
    // Bad --shard values are usage errors.
    for spec in ["3/3", "1", "0/0"] {
        let r = sweep(&[s, "--shard", spec]);
        assert_eq!(r.code, 2, "--shard {spec}");
        assert!(r.stderr.contains("--shard"), "{}", r.stderr);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    for f in files_under(from) {
        std::fs::create_dir_all(to.join(&f).parent().unwrap()).unwrap();
        std::fs::copy(from.join(&f), to.join(&f)).unwrap();
    }
}

// Long on purpose: one case per way of tampering with a shard, on the same fixture.
/// `merge` checks each row of shard.json (one CSV record of the header's width, consistent with
/// the run it claims and with the shard's sweep.csv) and refuses symbolic links in a shard.
#[test]
fn merge_refuses_edited_rows_and_symlinks() {
    let w = Workdir::new();
    let lengths = workspace_root().join("traces/sharegpt_vllm_opt.csv");
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lengths.display().to_string()),
    );
    let s = s.to_str().unwrap();
    for i in 0..2 {
        let d = w.path(&format!("shard{i}"));
        let r = sweep(&[
            s,
            "--shard",
            &format!("{i}/2"),
            "--num-requests",
            "20",
            "--out",
            d.to_str().unwrap(),
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
    }
    let out = w.path("merged");
    let merge = |first: &Path| {
        cli([
            "merge".into(),
            first.as_os_str().to_owned(),
            w.path("shard1").into_os_string(),
            "--out".into(),
            out.clone().into_os_string(),
            "--no-plots".into(),
        ])
    };
    let r = merge(&w.path("shard0"));
    assert_eq!(r.code, 0, "{}", r.stderr);
    std::fs::remove_dir_all(&out).unwrap();
    let fails = |first: &Path, words: &[&str]| {
        let r = merge(first);
        assert_eq!(r.code, 2, "{words:?}: {}", r.stdout);
        assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
        for word in words {
            assert!(r.stderr.contains(word), "{word}: {}", r.stderr);
        }
        assert!(!out.exists());
    };
    // Edit the first row of a copy of shard 0 (shard.json, and sweep.csv where asked).
    let edited = |name: &str, edit: &dyn Fn(&mut serde_json::Value), csv_too: bool| {
        let d = w.path(name);
        copy_tree(&w.path("shard0"), &d);
        let mut m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("shard.json")).unwrap()).unwrap();
        edit(&mut m);
        std::fs::write(d.join("shard.json"), m.to_string()).unwrap();
        if csv_too {
            let mut csv = format!("{}\n", m["header"].as_str().unwrap());
            for row in m["rows"].as_array().unwrap() {
                csv += &format!("{}\n", row["csv"].as_str().unwrap());
            }
            std::fs::write(d.join("sweep.csv"), csv).unwrap();
        }
        d
    };
    let row0 = |m: &serde_json::Value| m["rows"][0]["csv"].as_str().unwrap().to_string();
    // An embedded newline injects a row.
    let d = edited(
        "inject",
        &|m| {
            let injected = format!("{}\n{}", row0(m), row0(m));
            m["rows"][0]["csv"] = injected.into();
        },
        true,
    );
    fails(&d, &["shard.json", "run 0", "2 CSV records"]);
    // A cell too many.
    let d = edited(
        "wide",
        &|m| m["rows"][0]["csv"] = format!("{},1", row0(m)).into(),
        true,
    );
    fails(&d, &["run 0", "cells"]);
    // A row that claims another run's index.
    let d = edited(
        "index",
        &|m| m["rows"][0]["csv"] = format!("7{}", row0(m)).into(),
        true,
    );
    fails(&d, &["run 0", "starts with run `70`"]);
    // A row edited in shard.json only.
    let d = edited(
        "csv_only",
        &|m| m["rows"][0]["csv"] = row0(m).replacen(",fcfs,", ",vllm,", 1).into(),
        false,
    );
    fails(
        &d,
        &["sweep.csv", "does not hold the rows shard.json lists"],
    );
    // A directory that is not the run's (another successful run's), and a failed run given one.
    let d = edited(
        "dir",
        &|m| {
            let rows = m["rows"].as_array_mut().unwrap();
            let ok: Vec<usize> = (0..rows.len())
                .filter(|&i| !rows[i]["dir"].is_null())
                .collect();
            rows[ok[0]]["dir"] = rows[ok[1]]["dir"].clone();
        },
        true,
    );
    fails(&d, &["does not match its index and axis values"]);
    let d = edited(
        "failed_dir",
        &|m| {
            let rows = m["rows"].as_array_mut().unwrap();
            let failed = (0..rows.len()).find(|&i| rows[i]["dir"].is_null()).unwrap();
            let ok = (0..rows.len())
                .find(|&i| !rows[i]["dir"].is_null())
                .unwrap();
            rows[failed]["dir"] = rows[ok]["dir"].clone();
        },
        true,
    );
    fails(&d, &["has a run directory but its `csv` records an error"]);
    // Garbage in a run's files: summary.json, an empty or garbled requests.csv.
    for (name, file, text, words) in [
        (
            "sum_x",
            "summary.json",
            "x",
            &["summary.json", "not a run summary"][..],
        ),
        (
            "sum_obj",
            "summary.json",
            "{}",
            &["summary.json", "no `policy`"][..],
        ),
        (
            "req_empty",
            "requests.csv",
            "",
            &["requests.csv", "line 1", "header"][..],
        ),
        (
            "req_garbled",
            "requests.csv",
            "HEADER\n1,2\n",
            &["requests.csv", "line 2", "cells"][..],
        ),
    ] {
        let d = w.path(name);
        copy_tree(&w.path("shard0"), &d);
        let run = std::fs::read_dir(d.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let text = text.replace("HEADER", servesim::output::REQUESTS_HEADER);
        std::fs::write(run.join(file), text).unwrap();
        fails(&d, words);
    }
    // Symbolic links: the shard directory, and a file under runs/ pointing outside.
    #[cfg(unix)]
    {
        let link = w.path("link0");
        std::os::unix::fs::symlink(w.path("shard0"), &link).unwrap();
        fails(&link, &["link0", "symbolic link"]);
        let d = w.path("leaky");
        copy_tree(&w.path("shard0"), &d);
        let run = std::fs::read_dir(d.join("runs"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        std::fs::remove_file(run.join("summary.json")).unwrap();
        std::fs::write(w.path("secret"), "secret").unwrap();
        std::os::unix::fs::symlink(w.path("secret"), run.join("summary.json")).unwrap();
        fails(&d, &["summary.json", "symbolic link"]);
    }
}

/// Shards run on two versions of one trace do not merge: the fingerprint sees the trace's path,
/// not its contents, so shard 0 on a trace and shard 1 after the file was replaced merged into
/// one sweep.csv of two traces, exit 0. `shard.json` now hashes the sweep's data files.
#[test]
fn shards_run_on_different_contents_of_a_trace_do_not_merge() {
    let w = Workdir::new();
    let lengths = |n: usize| -> String {
        let mut t = "input_tokens,output_tokens\n".to_string();
        for i in 0..200 {
            t.push_str(&format!("{},{}\n", 20 + (i * 7 + n) % 90, 5 + i % 30));
        }
        t
    };
    let lpath = w.write("lengths.csv", lengths(0));
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lpath.display().to_string()),
    );
    let shard = |i: usize| half_of_two(&w, &s, i);
    let s0 = shard(0);
    w.write("lengths.csv", lengths(1));
    let s1 = shard(1);
    let out = w.path("merged");
    let r = merge_two(&s0, &s1, &out);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("read different contents of the sweep's inputs")
            && r.stderr.contains("lengths.csv"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
    // The same contents again: the shards merge.
    w.write("lengths.csv", lengths(0));
    let s1 = shard(1);
    let r = merge_two(&s0, &s1, &out);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// A two-point sweep over the traces `{dir}/a.csv` and `{dir}/b.csv` (vllm, analytic cost).
fn two_trace_sweep(dir: &str) -> String {
    format!(
        "name = \"sw\"\nmodel = \"opt-13b\"\ngpu = \"a100-40gb\"\n[trace]\nfile = \"{dir}/a.csv\"\n\
         [cost]\nmodel = \"analytic\"\n[scheduler]\npolicy = \"vllm\"\n\
         [sweep]\n\"trace.file\" = [\"{dir}/a.csv\", \"{dir}/b.csv\"]\n"
    )
}

/// `merge s0 s1 --out W/merged` fails (exit 2) as shards that read different inputs, naming
/// `word`, and writes nothing.
fn assert_merge_refused_for_inputs(w: &Workdir, s0: &Path, s1: &Path, word: &str) {
    let out = w.path("merged");
    let r = merge_two(s0, s1, &out);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("read different contents of the sweep's inputs")
            && r.stderr.contains(word),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

/// Two traces whose contents were swapped between the shards merged: the hashes were compared as
/// a set, without their files' names (round 9, 10). With the same names, each file must hold
/// what it held.
#[test]
fn shards_whose_traces_swapped_contents_do_not_merge() {
    let w = Workdir::new();
    let (a, b) = ("0,10,5\n1,20,5\n", "0,30,7\n2,40,9\n");
    w.write(
        "a.csv",
        format!("arrival_s,input_tokens,output_tokens\n{a}"),
    );
    w.write(
        "b.csv",
        format!("arrival_s,input_tokens,output_tokens\n{b}"),
    );
    let s = w.write("s.toml", two_trace_sweep("."));
    let s0 = half_of_two(&w, &s, 0);
    w.write(
        "a.csv",
        format!("arrival_s,input_tokens,output_tokens\n{b}"),
    );
    w.write(
        "b.csv",
        format!("arrival_s,input_tokens,output_tokens\n{a}"),
    );
    let s1 = half_of_two(&w, &s, 1);
    assert_merge_refused_for_inputs(&w, &s0, &s1, "a.csv");
}

/// The same with the traces outside the scenario's folder (the shipped layout, `../traces/`) and
/// the scenario spelt differently by the two shards: the inputs were named as given, so the names
/// differed and the hashes were compared as a set again (round 10, 02). They are now named as
/// the scenario gives them, from its folder (`../data/a.csv`), alike.
#[test]
fn swapped_traces_outside_the_scenario_folder_do_not_merge_however_spelt() {
    let w = Workdir::new();
    let (a, b) = ("0,10,5\n1,20,5\n", "0,30,7\n2,40,9\n");
    let header = "arrival_s,input_tokens,output_tokens\n";
    std::fs::create_dir(w.path("data")).unwrap();
    std::fs::create_dir(w.path("exp")).unwrap();
    w.write("data/a.csv", format!("{header}{a}"));
    w.write("data/b.csv", format!("{header}{b}"));
    w.write("exp/s.toml", two_trace_sweep("../data"));
    let s0 = half_of_two(&w, &w.path("exp/s.toml"), 0);
    w.write("data/a.csv", format!("{header}{b}"));
    w.write("data/b.csv", format!("{header}{a}"));
    let s1 = half_of_two(&w, &w.path("exp/../exp/./s.toml"), 1);
    let manifest = std::fs::read_to_string(s1.join("shard.json")).unwrap();
    assert!(manifest.contains("\"../data/a.csv\""), "{manifest}");
    assert_merge_refused_for_inputs(&w, &s0, &s1, "a.csv");
}

/// Round 11, 03: inputs were named by their real paths, so (a) two symbolic links re-pointed at
/// each other's targets between the shards gave the same names and hashes, and (b) an absolute
/// trace path named from scenario copies at two depths gave two names (the hashes were then
/// compared as a set): both merged swapped results. Names are now the links' own paths and the
/// absolute path as given.
#[test]
fn swapped_symlinked_or_absolute_traces_do_not_merge() {
    let w = Workdir::new();
    let header = "arrival_s,input_tokens,output_tokens\n";
    let (a, b) = ("0,10,5\n1,20,5\n", "0,30,7\n2,40,9\n");
    for d in ["data", "exp", "c1/exp", "c2/deep/er/exp"] {
        std::fs::create_dir_all(w.path(d)).unwrap();
    }
    w.write("data/A.csv", format!("{header}{a}"));
    w.write("data/B.csv", format!("{header}{b}"));
    let link = |name: &str, target: &str| {
        let at = w.path(&format!("data/{name}"));
        let _ = std::fs::remove_file(&at);
        std::os::unix::fs::symlink(target, at).unwrap();
    };
    // (a) Links re-pointed between the shards.
    w.write("exp/s.toml", two_trace_sweep("../data"));
    link("a.csv", "A.csv");
    link("b.csv", "B.csv");
    let s0 = half_of_two(&w, &w.path("exp/s.toml"), 0);
    link("a.csv", "B.csv");
    link("b.csv", "A.csv");
    let s1 = half_of_two(&w, &w.path("exp/s.toml"), 1);
    assert_merge_refused_for_inputs(&w, &s0, &s1, "a.csv");
    // (b) Absolute paths, the scenario copied at two depths, the contents swapped between.
    let data = w.path("data");
    let abs = two_trace_sweep(data.to_str().unwrap());
    w.write("c1/exp/s.toml", &abs);
    w.write("c2/deep/er/exp/s.toml", &abs);
    link("a.csv", "A.csv");
    link("b.csv", "B.csv");
    let s0 = half_of_two(&w, &w.path("c1/exp/s.toml"), 0);
    link("a.csv", "B.csv");
    link("b.csv", "A.csv");
    let s1 = half_of_two(&w, &w.path("c2/deep/er/exp/s.toml"), 1);
    let manifest = std::fs::read_to_string(s1.join("shard.json")).unwrap();
    let named = format!("\"{}\"", data.join("a.csv").display());
    assert!(manifest.contains(&named), "{manifest}");
    assert_merge_refused_for_inputs(&w, &s0, &s1, "a.csv");
}

/// A shard.json edited to list no inputs merged when that shard was given second (its list
/// named nothing the first lacked) and was refused given first (round 12, 09): refused both ways.
#[test]
fn a_shard_listing_fewer_inputs_is_refused_in_either_order() {
    let w = Workdir::new();
    let header = "arrival_s,input_tokens,output_tokens\n";
    w.write("a.csv", format!("{header}0,10,5\n1,20,5\n"));
    w.write("b.csv", format!("{header}0,30,7\n2,40,9\n"));
    let s = w.write("s.toml", two_trace_sweep("."));
    let s0 = half_of_two(&w, &s, 0);
    let s1 = half_of_two(&w, &s, 1);
    let manifest = s1.join("shard.json");
    let mut m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    m["inputs"] = serde_json::json!([]);
    std::fs::write(&manifest, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    assert_merge_refused_for_inputs(&w, &s0, &s1, "a.csv of the first is not among");
    assert_merge_refused_for_inputs(&w, &s1, &s0, "a.csv in the second differs");
}

/// `sweep SCENARIO --shard I/2 --out W/sI` (which must succeed); its directory.
fn half_of_two(w: &Workdir, scenario: &Path, i: usize) -> PathBuf {
    let dir = w.path(&format!("s{i}"));
    let spec = format!("{i}/2");
    let r = sweep(&[
        scenario.to_str().unwrap(),
        "--shard",
        &spec,
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    dir
}

/// A calibration profile is a directory input: its files are hashed too. Shards run against two
/// measurements of one profile merged (shard.json listed the directory with hash "-"), and the
/// merged row of the second was another model's result.
#[test]
fn shards_run_on_different_profile_measurements_do_not_merge() {
    let w = Workdir::new();
    let prof = w.path("prof");
    copy_tree(
        &workspace_root().join("calibrate/profiles/a100-80gb/llama-2-7b/tp1"),
        &prof,
    );
    let s = w.write(
        "s.toml",
        "name = \"pf\"\nmodel = \"llama-2-7b\"\ngpu = \"a100-80gb\"\n[trace]\narrival = \"poisson\"\nrate_per_s = 4.0\nnum_requests = 30\ninput_lengths = { dist = \"fixed\", value = 64 }\noutput_lengths = { dist = \"fixed\", value = 16 }\n[cost]\nmodel = \"profile\"\npath = \"prof\"\n[scheduler]\npolicy = \"vllm\"\n[sweep]\nseed = [0, 1]\n",
    );
    let s0 = half_of_two(&w, &s, 0);
    let csv = prof.join("measurements.csv");
    let text = std::fs::read_to_string(&csv).unwrap();
    std::fs::write(&csv, text.replacen('\n', "\n\n", 1)).unwrap();
    let s1 = half_of_two(&w, &s, 1);
    let out = w.path("merged");
    let r = merge_two(&s0, &s1, &out);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr
            .contains("read different contents of the sweep's inputs")
            && r.stderr.contains("prof"),
        "{}",
        r.stderr
    );
    assert!(!out.exists());
}

/// Shards of two servesim builds are refused naming the builds (the refusal blamed the
/// scenario: "scenario fingerprints differ", and shard.json recorded no build).
#[test]
fn shards_of_two_builds_are_refused_naming_the_builds() {
    let w = Workdir::new();
    let lpath = w.write("lengths.csv", "input_tokens,output_tokens\n20,5\n30,6\n");
    let s = w.write(
        "sweep.toml",
        SWEEP.replace("LENGTHS", &lpath.display().to_string()),
    );
    let s0 = half_of_two(&w, &s, 0);
    let s1 = half_of_two(&w, &s, 1);
    let manifest = s1.join("shard.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let build = v["build"].as_str().unwrap().to_string();
    let other = format!("\"build\": \"{build}x\"");
    std::fs::write(
        &manifest,
        text.replace(&format!("\"build\": \"{build}\""), &other),
    )
    .unwrap();
    let out = w.path("merged");
    let r = merge_two(&s0, &s1, &out);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("servesim builds"), "{}", r.stderr);
    assert!(r.stderr.contains(&format!("{build}x")), "{}", r.stderr);
    assert!(!out.exists());
}
