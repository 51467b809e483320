use super::*;

fn tempdir() -> PathBuf {
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!(
        "servesim-staging-test-{}-{seq}",
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A PID that no running process has: a child that has exited and been reaped.
fn dead_pid() -> u32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

#[test]
fn a_second_writer_of_the_same_destination_fails_and_the_first_finishes_intact() {
    let d = tempdir();
    let dest = d.join("out");
    let a = StagedDir::new(&dest, &Replace::default()).unwrap();
    a.write("x", b"first").unwrap();
    let msg = StagedDir::new(&dest, &Replace::default())
        .err()
        .expect("the second writer is refused")
        .to_string();
    assert!(msg.contains("another servesim command"), "{msg}");
    a.commit().unwrap();
    assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"first");
    // The lock went with the first writer: a third may write now.
    let c = StagedDir::new(&dest, &Replace::default()).unwrap();
    c.write("x", b"third").unwrap();
    c.commit().unwrap();
    assert_eq!(std::fs::read(dest.join("x")).unwrap(), b"third");
    let left: Vec<_> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out")]);
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn debris_of_dead_writers_is_cleaned_and_a_set_aside_output_put_back() {
    let d = tempdir();
    let pid = dead_pid();
    for n in [
        format!(".out.servesim-tmp-{pid}-3"),
        format!(".out.tmp-{pid}"),
        format!(".other.servesim-tmp-{pid}-1"),
        format!(".out.servesim-tmp-{}-999", std::process::id()),
    ] {
        std::fs::create_dir_all(d.join(&n)).unwrap();
        std::fs::write(d.join(&n).join(MARKER_FILE), MARKER_TEXT).unwrap();
        std::fs::write(d.join(&n).join("junk"), "x").unwrap();
    }
    // Named like debris but without the marker: the user's, kept.
    let users = format!(".out.servesim-tmp-{pid}-5");
    std::fs::create_dir_all(d.join(&users)).unwrap();
    std::fs::write(d.join(&users).join("thesis.tex"), "precious").unwrap();
    // A writer killed between setting the old output aside and moving its own into place.
    let aside = d.join(format!(".out.servesim-old-{pid}-4"));
    std::fs::create_dir_all(&aside).unwrap();
    std::fs::write(
        aside.join(MARKER_FILE),
        format!("{MARKER_TEXT}{MARKER_LIST}summary.json\n"),
    )
    .unwrap();
    std::fs::write(aside.join("summary.json"), "old").unwrap();
    std::fs::write(d.join(".out.servesim-lock"), format!("{pid}-4")).unwrap();
    let dest = d.join("out");
    let s = StagedDir::new(&dest, &Replace::default()).unwrap();
    // The old output is back in place until the new one replaces it.
    assert_eq!(
        std::fs::read_to_string(dest.join("summary.json")).unwrap(),
        "old"
    );
    s.commit().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    let mut expected = vec![
        format!(".other.servesim-tmp-{pid}-1"),
        format!(".out.servesim-tmp-{pid}-5"),
        format!(".out.servesim-tmp-{}-999", std::process::id()),
        "out".to_string(),
    ];
    expected.sort();
    assert_eq!(
        left, expected,
        "only other destinations' debris, a live process's staging and unmarked directories remain"
    );
    assert!(!dest.join("summary.json").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// A directory of the user's named like a set-aside old output, without the marker, was moved
/// onto the missing destination, which `--force` then replaced (round 8, case 01): it is kept
/// where it is.
#[test]
fn an_unmarked_set_aside_name_is_not_put_back() {
    let d = tempdir();
    let pid = dead_pid();
    let users = d.join(format!(".out.servesim-old-{pid}-0"));
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("thesis.txt"), "precious").unwrap();
    let dest = d.join("out");
    let s = StagedDir::new(&dest, &Replace::new(true, [])).unwrap();
    s.commit().unwrap();
    assert_eq!(
        std::fs::read_to_string(users.join("thesis.txt")).unwrap(),
        "precious"
    );
    assert!(!dest.join("thesis.txt").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn only_servesim_outputs_and_empty_directories_are_replaced_without_force() {
    let d = tempdir();
    let user = d.join("mine");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(user.join("thesis.tex"), "precious").unwrap();
    let msg = StagedDir::new(&user, &Replace::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("--force"), "{msg}");
    assert!(user.join("thesis.tex").exists());
    let file = d.join("file");
    std::fs::write(&file, "precious").unwrap();
    assert!(StagedDir::new(&file, &Replace::default()).is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    let empty = d.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    StagedDir::new(&empty, &Replace::default())
        .unwrap()
        .commit()
        .unwrap();
    assert!(empty.join(MARKER_FILE).is_file());
    // Written by servesim now: replaced without --force.
    StagedDir::new(&empty, &Replace::default())
        .unwrap()
        .commit()
        .unwrap();
    // --force replaces the user's directory and the file.
    StagedDir::new(&user, &Replace::new(true, []))
        .unwrap()
        .commit()
        .unwrap();
    assert!(!user.join("thesis.tex").exists());
    StagedDir::new(&file, &Replace::new(true, []))
        .unwrap()
        .commit()
        .unwrap();
    assert!(file.join(MARKER_FILE).is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn inputs_are_never_replaced_even_with_force() {
    let d = tempdir();
    let shard = d.join("s0");
    StagedDir::new(&shard, &Replace::default())
        .unwrap()
        .commit()
        .unwrap();
    let msg = StagedDir::new(&shard, &Replace::new(true, [shard.clone()]))
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("an input directory of this command"), "{msg}");
    let inner = shard.join("scenario.toml");
    std::fs::write(&inner, "x").unwrap();
    assert!(StagedDir::new(&shard, &Replace::new(true, [inner.clone()])).is_err());
    assert!(StagedDir::new(&d, &Replace::new(true, [inner.clone()])).is_err());
    assert!(inner.exists());
    // A file output onto its own input.
    let msg = check_file_dest(&inner, std::slice::from_ref(&inner), true)
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("an input of this command"), "{msg}");
    for bad in [".", "..", "/"] {
        assert!(StagedDir::new(Path::new(bad), &Replace::new(true, [])).is_err());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn a_lock_file_whose_holder_is_gone_is_taken_over_even_when_its_pid_runs() {
    let d = tempdir();
    // PID 1 always runs; the lock file is not locked by anyone.
    std::fs::write(d.join(".out.servesim-lock"), "1-0").unwrap();
    let dest = d.join("out");
    let s = StagedDir::new(&dest, &Replace::default()).unwrap();
    // While held, a second writer (even of this process) is refused.
    let msg = StagedFile::new(&dest, true).err().unwrap().to_string();
    assert!(msg.contains("another servesim command"), "{msg}");
    s.commit().unwrap();
    assert!(!d.join(".out.servesim-lock").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_staged_file_never_replaces_a_file_unless_allowed() {
    let d = tempdir();
    let dest = d.join("f.csv");
    std::fs::write(&dest, "precious").unwrap();
    assert!(StagedFile::new(&dest, false).is_err());
    // A file that appears while the output is being written is kept.
    let fresh = d.join("g.csv");
    let mut f = StagedFile::new(&fresh, false).unwrap();
    f.write_all(b"new").unwrap();
    std::fs::write(&fresh, "theirs").unwrap();
    assert!(f.commit().is_err());
    assert_eq!(std::fs::read_to_string(&fresh).unwrap(), "theirs");
    let mut f = StagedFile::new(&dest, true).unwrap();
    f.write_all(b"new").unwrap();
    f.commit().unwrap();
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "new");
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["f.csv", "g.csv"]);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A file named like the lock but holding something else is the user's: refused, kept as it
/// was, and no output is written.
#[test]
fn a_users_file_named_like_the_lock_is_kept() {
    let d = tempdir();
    let lock = d.join(".out.servesim-lock");
    std::fs::write(&lock, "my notes\n").unwrap();
    let dest = d.join("out");
    let msg = StagedDir::new(&dest, &Replace::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("not written by servesim"), "{msg}");
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), "my notes\n");
    assert_eq!(
        std::fs::read_dir(&d).unwrap().count(),
        1,
        "only the user's file"
    );
    // A lock file a killed writer left (its token, longer than the new one) is taken over and
    // holds exactly the new writer's token while held.
    std::fs::write(&lock, "4000000000-123456789").unwrap();
    let s = StagedDir::new(&dest, &Replace::default()).unwrap();
    let held = std::fs::read_to_string(&lock).unwrap();
    assert!(
        held.starts_with(&format!("{}-", std::process::id())),
        "{held}"
    );
    assert!(!held.contains('\0'), "{held:?}");
    s.commit().unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

/// Writes each of `files` (paths relative to `dir`) with its directories.
fn tree(dir: &Path, files: &[&str]) {
    for f in files {
        let p = dir.join(f);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, "precious").unwrap();
    }
}

/// Adversarial round 7, 01: files below the top level of an output (notes in a run directory,
/// a figure in `plots/`, another output written inside) were deleted silently on rerun.
#[test]
fn the_marker_lists_every_path_and_unlisted_ones_are_found_at_any_depth() {
    let d = tempdir();
    let out = d.join("out");
    let s = StagedDir::new(&out, &Replace::default()).unwrap();
    s.write("runs/0000-a/summary.json", b"{}").unwrap();
    s.write("runs/0000-a/.servesim-output", b"x").unwrap();
    s.write("sweep.csv", b"x").unwrap();
    s.commit().unwrap();
    let marker = std::fs::read_to_string(out.join(MARKER_FILE)).unwrap();
    let list =
        "runs\nruns/0000-a\nruns/0000-a/.servesim-output\nruns/0000-a/summary.json\nsweep.csv\n";
    assert_eq!(marker, format!("{MARKER_TEXT}{MARKER_PATHS}{list}"));
    assert!(only_servesim_entries(&out).unwrap());
    tree(
        &out,
        &[
            "runs/0000-a/notes.md",
            "plots/my_fig.png",
            "runs/quick/summary.json",
            "runs/quick/deep/x",
        ],
    );
    let foreign = |out: &Path| foreign_entries(out, &marker_listing(out).unwrap()).unwrap();
    // An unlisted directory is reported whole, not descended into.
    assert_eq!(
        foreign(&out),
        ["plots", "runs/0000-a/notes.md", "runs/quick"]
    );
    assert!(!only_servesim_entries(&out).unwrap());
    let msg = StagedDir::new(&out, &Replace::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(
        msg.contains("now also holds `plots`, `runs/0000-a/notes.md`, `runs/quick`, which servesim did not write there"),
        "{msg}"
    );
    assert!(out.join("runs/0000-a/notes.md").is_file());
    // What a command adds (with its directories) joins the list.
    assert!(add_to_marker(&out, &[out.join("plots/my_fig.png")]).unwrap());
    assert_eq!(foreign(&out), ["runs/0000-a/notes.md", "runs/quick"]);
    let marker = std::fs::read_to_string(out.join(MARKER_FILE)).unwrap();
    assert!(
        marker.contains(&format!("{MARKER_PATHS}plots\nplots/my_fig.png\nruns\n")),
        "{marker}"
    );
    StagedDir::new(&out, &Replace::new(true, []))
        .unwrap()
        .commit()
        .unwrap();
    assert!(!out.join("runs").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[cfg(unix)]
#[test]
fn a_symlink_inside_an_output_is_an_entry_never_followed() {
    let d = tempdir();
    let out = d.join("out");
    let elsewhere = d.join("elsewhere");
    tree(&elsewhere, &["thesis.tex", "sub/data.csv"]);
    let s = StagedDir::new(&out, &Replace::default()).unwrap();
    s.write("runs/r/summary.json", b"{}").unwrap();
    s.commit().unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("runs/r/link")).unwrap();
    let listing = marker_listing(&out).unwrap();
    assert_eq!(foreign_entries(&out, &listing).unwrap(), ["runs/r/link"]);
    let msg = StagedDir::new(&out, &Replace::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("`runs/r/link`"), "{msg}");
    // A listed directory that is now a symlink is not descended into (what it points to is not
    // the output's), and replacing the output removes the link only.
    std::fs::remove_dir_all(out.join("runs/r")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, out.join("runs/r")).unwrap();
    assert!(foreign_entries(&out, &listing).unwrap().is_empty());
    StagedDir::new(&out, &Replace::default())
        .unwrap()
        .commit()
        .unwrap();
    assert!(elsewhere.join("thesis.tex").is_file() && elsewhere.join("sub/data.csv").is_file());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_marker_cut_short_or_too_long_is_no_marker_and_a_big_sweeps_fits() {
    let d = tempdir();
    let out = d.join("out");
    let s = StagedDir::new(&out, &Replace::default()).unwrap();
    s.write("a/b", b"x").unwrap();
    s.commit().unwrap();
    let text = std::fs::read_to_string(out.join(MARKER_FILE)).unwrap();
    let len = text.len() as u64;
    assert!(marker_listing_within(&out, len).is_some());
    assert!(marker_listing_within(&out, len - 1).is_none());
    std::fs::write(out.join(MARKER_FILE), &text[..text.len() - 2]).unwrap();
    assert!(!is_servesim_output(&out));
    assert!(StagedDir::new(&out, &Replace::default()).is_err());
    // A sweep of 100,000 runs: each run's directory and its four files.
    let per_run: usize = [
        "",
        "/config.json",
        "/replicas.csv",
        "/requests.csv",
        "/summary.json",
    ]
    .iter()
    .map(|f| format!("runs/99999-some_policy-12.5-seed-1234567-max_batch_size-256{f}\n").len())
    .sum();
    assert!(100_000 * per_run as u64 <= MARKER_MAX_BYTES);
    std::fs::remove_dir_all(&d).unwrap();
}

/// A directory written by the previous release (its marker lists top-level names) is checked as
/// before: top level only, `plots/` and `compare.csv` taken as servesim's.
#[test]
fn a_marker_of_the_previous_format_is_checked_at_the_top_level_only() {
    let d = tempdir();
    let out = d.join("out");
    tree(
        &out,
        &[
            "runs/r/summary.json",
            "runs/r/notes.md",
            "plots/mine.png",
            "compare.csv",
        ],
    );
    let old = format!("{MARKER_TEXT}{MARKER_LIST}runs\n");
    std::fs::write(out.join(MARKER_FILE), &old).unwrap();
    assert!(matches!(marker_listing(&out), Some(Listing::Top(_))));
    assert!(only_servesim_entries(&out).unwrap());
    assert!(add_to_marker(&out, &[out.join("plots/new.png")]).unwrap());
    assert_eq!(std::fs::read_to_string(out.join(MARKER_FILE)).unwrap(), old);
    tree(&out, &["NOTES.md"]);
    let msg = StagedDir::new(&out, &Replace::default())
        .err()
        .expect("refused")
        .to_string();
    assert!(msg.contains("now also holds `NOTES.md`,"), "{msg}");
    std::fs::remove_file(out.join("NOTES.md")).unwrap();
    StagedDir::new(&out, &Replace::default())
        .unwrap()
        .commit()
        .unwrap();
    assert!(!out.join("plots").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// `--out o/../o` over a servesim output `o`: the staging path ran through `o`, which the commit
/// set aside, so the output vanished into debris with a false "another process" message (round
/// 8, case 14). The parent is now resolved first; a parent through `..` that does not exist is
/// refused.
#[test]
fn a_parent_through_the_output_itself_is_resolved_first() {
    let d = tempdir();
    let o = d.join("o");
    let s = StagedDir::new(&o, &Replace::default()).unwrap();
    s.write("summary.json", b"old").unwrap();
    s.commit().unwrap();
    let s = StagedDir::new(&o.join("..").join("o"), &Replace::default()).unwrap();
    s.write("summary.json", b"new").unwrap();
    s.commit().unwrap();
    assert_eq!(
        std::fs::read_to_string(o.join("summary.json")).unwrap(),
        "new"
    );
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, vec!["o".to_string()]);
    let msg = StagedDir::new(&d.join("x").join("..").join("y"), &Replace::default())
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("without `..`"), "{msg}");
    assert!(!d.join("x").exists() && !d.join("y").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// The same through a symlinked parent: `P -> o/..` with `--out P/o`, and a user's folder `d`
/// holding `up -> ..` with `--out d/up/d`: only a literal `..` was resolved, and the output
/// vanished into debris the same way (round 9, 01).
#[test]
fn a_symlinked_parent_through_the_output_itself_is_resolved_first() {
    let d = tempdir();
    let o = d.join("o");
    let s = StagedDir::new(&o, &Replace::default()).unwrap();
    s.write("summary.json", b"old").unwrap();
    s.commit().unwrap();
    std::os::unix::fs::symlink("o/..", d.join("P")).unwrap();
    let s = StagedDir::new(&d.join("P").join("o"), &Replace::default()).unwrap();
    s.write("summary.json", b"new").unwrap();
    s.commit().unwrap();
    assert_eq!(
        std::fs::read_to_string(o.join("summary.json")).unwrap(),
        "new"
    );
    std::fs::create_dir(d.join("u")).unwrap();
    std::fs::write(d.join("u").join("thesis.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("..", d.join("u").join("up")).unwrap();
    let force = Replace {
        force: true,
        ..Replace::default()
    };
    // `u/up/u` is `u` itself: replacing it with --force is what the user asked for, and the
    // new output must then be there, not lost in debris.
    let s = StagedDir::new(&d.join("u").join("up").join("u"), &force).unwrap();
    s.write("summary.json", b"forced").unwrap();
    s.commit().unwrap();
    let mut left: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["P", "o", "u"]);
    assert_eq!(
        std::fs::read_to_string(d.join("u").join("summary.json")).unwrap(),
        "forced"
    );
    std::fs::remove_dir_all(&d).unwrap();
}
