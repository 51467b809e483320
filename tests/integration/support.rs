//! Helpers shared by the integration modules: the CLI run in-process, temporary scenario and
//! trace files, and an exact reader of `requests.csv`.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// What one in-process CLI invocation produced.
#[derive(Debug)]
pub struct CliResult {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Run `servesim ARGS…` in-process. A panic inside the CLI fails the calling test with a clear
/// message (user errors must never panic).
pub fn cli<I, S>(args: I) -> CliResult
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let mut argv: Vec<OsString> = vec!["servesim".into()];
    argv.extend(args.into_iter().map(Into::into));
    let shown = format!("{argv:?}");
    let mut out = Vec::new();
    let mut err = Vec::new();
    let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        servesim::cli::main_with_args(argv, &mut out, &mut err)
    }))
    .unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("servesim panicked on {shown}: {msg}")
    });
    CliResult {
        code,
        stdout: String::from_utf8(out).expect("stdout is UTF-8"),
        stderr: String::from_utf8(err).expect("stderr is UTF-8"),
    }
}

/// A temporary directory holding a scenario, its trace and its outputs.
pub struct Workdir {
    pub dir: tempfile::TempDir,
}

impl Workdir {
    pub fn new() -> Self {
        Workdir {
            dir: tempfile::tempdir().expect("create a temporary directory"),
        }
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    /// Write `text` to `name` (relative to the directory) and return its path.
    pub fn write(&self, name: &str, text: impl AsRef<[u8]>) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).expect("write a test file");
        p
    }
}

/// Seconds with up to 9 decimals (as `requests.csv` writes them) → integer nanoseconds, exactly.
pub fn parse_ns(s: &str) -> u64 {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    assert!(frac.len() <= 9, "more than 9 decimals in `{s}`");
    let int: u64 = int.parse().unwrap_or_else(|_| panic!("bad seconds `{s}`"));
    let frac_ns: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<9}")
            .parse()
            .unwrap_or_else(|_| panic!("bad seconds `{s}`"))
    };
    int * 1_000_000_000 + frac_ns
}

/// One row of `requests.csv` (times in nanoseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: u64,
    pub arrival_ns: u64,
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub first_token_ns: u64,
    pub finish_ns: u64,
    pub queue_ns: u64,
    pub preemptions: u32,
    pub replica: u32,
}

/// Read `DIR/requests.csv`, locating columns by header name (other columns are ignored).
pub fn read_requests(dir: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(dir.join("requests.csv")).expect("requests.csv exists");
    let mut lines = text.lines();
    let header: HashMap<&str, usize> = lines
        .next()
        .expect("requests.csv has a header")
        .split(',')
        .enumerate()
        .map(|(i, h)| (h, i))
        .collect();
    let col = |name: &str| {
        *header
            .get(name)
            .unwrap_or_else(|| panic!("requests.csv has no `{name}` column"))
    };
    let (id, arr, inp, outp, ft, fin, q, pre, rep) = (
        col("id"),
        col("arrival_s"),
        col("input_tokens"),
        col("output_tokens"),
        col("first_token_s"),
        col("finish_s"),
        col("queue_s"),
        col("preemptions"),
        col("replica"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Row {
                id: f[id].parse().unwrap(),
                arrival_ns: parse_ns(f[arr]),
                input_tokens: f[inp].parse().unwrap(),
                output_tokens: f[outp].parse().unwrap(),
                first_token_ns: parse_ns(f[ft]),
                finish_ns: parse_ns(f[fin]),
                queue_ns: parse_ns(f[q]),
                preemptions: f[pre].parse().unwrap(),
                replica: f[rep].parse().unwrap(),
            }
        })
        .collect()
}

/// The cells of column `name` of `DIR/requests.csv`, in row order.
pub fn read_column(dir: &Path, name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("requests.csv")).expect("requests.csv exists");
    let mut lines = text.lines();
    let header = lines.next().expect("requests.csv has a header");
    let c = header
        .split(',')
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("requests.csv has no `{name}` column"));
    lines
        .map(|l| l.split(',').nth(c).unwrap_or_default().to_string())
        .collect()
}

/// `DIR/summary.json`.
pub fn read_summary(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json exists");
    serde_json::from_str(&text).expect("summary.json is JSON")
}

/// The workspace root (for the shipped scenarios and traces).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Every `.rs` file under `dir`, recursively (for the tests that read the project's sources).
pub fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Write `rows` (`arrival_s,input_tokens,output_tokens` lines) as `w/trace.csv` and `text` as
/// `w/scenario.toml`, run it into `w/out` (`--quiet --force` plus `extra`): the requests, or the
/// CLI's stderr on failure.
pub fn run_with_trace(
    w: &Workdir,
    text: &str,
    rows: &str,
    extra: &[&str],
) -> Result<Vec<Row>, String> {
    w.write(
        "trace.csv",
        format!("arrival_s,input_tokens,output_tokens\n{rows}"),
    );
    let scen = w.write("scenario.toml", text);
    let out = w.path("out");
    let mut args: Vec<std::ffi::OsString> = vec![
        "run".into(),
        scen.into_os_string(),
        "--out".into(),
        out.clone().into_os_string(),
        "--quiet".into(),
        "--force".into(),
    ];
    args.extend(extra.iter().map(|a| a.into()));
    let r = cli(args);
    if r.code != 0 {
        return Err(r.stderr);
    }
    Ok(read_requests(&out))
}
