//! `servesim calibrate …`: forwards to the `servesim-calibrate` executable next to `servesim`
//! (git-style), passing the arguments through and returning its exit status. The calibration code
//! lives in the `servesim-calibrate` crate, which depends on this one, so this crate cannot call it
//! directly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The executable's file name (without the platform suffix).
pub const CALIBRATE_EXE: &str = "servesim-calibrate";

/// `servesim-calibrate` finished with a non-zero status (already reported by it).
#[derive(Debug)]
pub struct Forwarded(pub i32);

impl std::fmt::Display for Forwarded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{CALIBRATE_EXE} exited with status {}", self.0)
    }
}

impl std::error::Error for Forwarded {}

/// Where `servesim-calibrate` may be, in order: next to `current_exe`, and — when the running
/// executable is a test binary in cargo's `deps/` folder — one level up, where cargo puts the
/// workspace's binaries.
pub fn candidates(current_exe: &Path) -> Vec<PathBuf> {
    let name = format!("{CALIBRATE_EXE}{}", std::env::consts::EXE_SUFFIX);
    let mut out = Vec::new();
    if let Some(dir) = current_exe.parent() {
        out.push(dir.join(&name));
        if dir.file_name().is_some_and(|n| n == "deps")
            && let Some(up) = dir.parent()
        {
            out.push(up.join(&name));
        }
    }
    out
}

/// The `servesim-calibrate` beside `current_exe`, or the error to show.
pub fn find_calibrate(current_exe: &Path) -> Result<PathBuf, String> {
    let c = candidates(current_exe);
    c.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        format!(
            "`servesim calibrate` runs the `{CALIBRATE_EXE}` executable, which is not installed next to {} (looked for {}); build the whole workspace: cargo build --release --workspace",
            current_exe.display(),
            c.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

/// Run `servesim-calibrate ARGS…` with this process's stdin/stdout/stderr; a non-zero exit
/// becomes [`Forwarded`] (its status is servesim's exit status).
pub fn calibrate_cmd(args: Vec<OsString>) -> anyhow::Result<()> {
    let me = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot locate the servesim executable: {e}"))?;
    let exe = find_calibrate(&me).map_err(anyhow::Error::msg)?;
    // A signal to servesim alone (e.g. `kill PID`) reaches the calibration too, instead of
    // leaving it running on, writing its profile after servesim said it stopped.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    let mut child = std::process::Command::new(&exe)
        .args(&args)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}", exe.display()))?;
    let mut forwarded = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if crate::interrupt::interrupted() && !forwarded {
            crate::interrupt::forward_to(child.id());
            forwarded = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(Forwarded(code).into()),
        None if forwarded => Err(anyhow::anyhow!(
            "{} stopped the calibration; nothing written",
            crate::interrupt::signal_name()
        )),
        None => Err(anyhow::anyhow!(
            "{} was terminated by a signal",
            exe.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sibling_or_the_one_above_deps() {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("{CALIBRATE_EXE}{}", std::env::consts::EXE_SUFFIX);
        let deps = dir.path().join("release/deps");
        std::fs::create_dir_all(&deps).unwrap();
        let test_exe = deps.join("integration-0123");
        let main_exe = dir.path().join("release/servesim");
        // Missing: a clear error naming the build command and where it looked.
        let e = find_calibrate(&main_exe).unwrap_err();
        assert!(e.contains("cargo build --release --workspace"), "{e}");
        assert!(e.contains(&name), "{e}");
        let e = find_calibrate(&test_exe).unwrap_err();
        assert!(e.contains(&deps.join(&name).display().to_string()), "{e}");
        // Present next to servesim.
        let sibling = dir.path().join("release").join(&name);
        std::fs::write(&sibling, b"").unwrap();
        assert_eq!(find_calibrate(&main_exe).unwrap(), sibling);
        // A test binary in deps/ finds it one level up.
        assert_eq!(find_calibrate(&test_exe).unwrap(), sibling);
        assert_eq!(candidates(&main_exe).len(), 1);
        assert_eq!(candidates(&test_exe).len(), 2);
    }

    #[test]
    fn forwarded_status_displays() {
        assert_eq!(
            Forwarded(2).to_string(),
            "servesim-calibrate exited with status 2"
        );
    }
}
