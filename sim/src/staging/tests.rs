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
