//! Input fuzzing (proptest-driven byte fuzzing: `cargo fuzz` would need a nightly toolchain).
//! Overload behaviour and streaming are in [`crate::overload`].
//!
//! Every reader of user files — the trace CSV reader ([`TraceCsv`], [`scan_trace`],
//! [`read_lengths`]), the importers (`sharegpt`, `alpaca`, `azure`, `vidur`) and the scenario
//! parser ([`scenario::load`] + `resolve`) — is fed random bytes and mutations of valid inputs, and
//! must return `Ok` or a clean `Err`: never panic (checked with `catch_unwind`) and never hang
//! (inputs are bounded, a few KiB). The committed corpus `tests/fuzz_corpus/` holds nasty inputs
//! (empty, truncated, huge numbers, NaN, negative, non-UTF-8, BOM, CRLF, duplicated headers…);
//! a 10⁷-character line is generated at test time.
//!
//! Cases per property: `SERVESIM_FUZZ_CASES` (default 256). `SERVESIM_FUZZ_SHOW=1` prints every
//! reader's outcome on every corpus file (run with `--nocapture`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use proptest::prelude::*;
use servesim::scenario::{self, Overrides};
use servesim::trace::import::{
    LengthFilter, TextImport, TokenCounter, alpaca, azure, sharegpt, vidur,
};
use servesim::trace::{TraceCsv, read_lengths, scan_trace};

use crate::support::Workdir;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(p)
}

fn cases() -> u32 {
    std::env::var("SERVESIM_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256)
}

fn text_opts(strict: bool) -> &'static TextImport {
    static STRICT: OnceLock<TextImport> = OnceLock::new();
    static LOOSE: OnceLock<TextImport> = OnceLock::new();
    let make = |strict: bool| TextImport {
        tokenizer: TokenCounter::builtin("opt").expect("builtin tokenizer"),
        filter: if strict {
            LengthFilter::VLLM
        } else {
            LengthFilter::NONE
        },
        shuffle_seed: strict.then_some(7),
        num: strict.then_some(3),
        allow_truncated: !strict,
        replace: false,
    };
    if strict {
        STRICT.get_or_init(|| make(true))
    } else {
        LOOSE.get_or_init(|| make(false))
    }
}

/// A reader under test: `(name, read(input, out) -> Ok(()) | Err(message))`.
type Reader = (&'static str, fn(&Path, &Path) -> Result<(), String>);

fn drain(t: TraceCsv) -> Result<(), String> {
    for r in t {
        r.map_err(|e| e.to_string())?;
    }
    Ok(())
}

const READERS: &[Reader] = &[
    ("TraceCsv", |p, _| {
        drain(TraceCsv::open(p, None, None).map_err(|e| e.to_string())?)
    }),
    ("TraceCsv rescaled", |p, _| {
        drain(TraceCsv::open(p, Some((0.5, 1e300)), Some(1000)).map_err(|e| e.to_string())?)
    }),
    ("scan_trace", |p, _| {
        scan_trace(p).map(|_| ()).map_err(|e| e.to_string())
    }),
    ("read_lengths", |p, _| {
        read_lengths(p).map(|_| ()).map_err(|e| e.to_string())
    }),
    ("import sharegpt", |p, o| {
        sharegpt::import(p, o, text_opts(false))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("import sharegpt (vLLM filters, --num)", |p, o| {
        sharegpt::import(p, o, text_opts(true))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("import alpaca", |p, o| {
        alpaca::import(p, o, text_opts(false))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("import alpaca (vLLM filters, --num)", |p, o| {
        alpaca::import(p, o, text_opts(true))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("import azure", |p, o| {
        azure::import(p, o, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("import vidur", |p, o| {
        vidur::import(p, o, false)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
    ("scenario", |p, _| {
        scenario::load(p)
            .map_err(|e| e.to_string())?
            .resolve(&Overrides::default())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }),
];

/// `bytes` as a short printable excerpt for failure messages.
fn excerpt(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned();
    format!("{s:?} ({} bytes)", bytes.len())
}

/// Run every reader on `input` (already written to `path`); a panic or an empty/multi-line error
/// message fails. Returns each reader's outcome.
pub(crate) fn run_all(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
) -> Vec<(&'static str, Result<(), String>)> {
    let out = dir.join("out.csv");
    READERS
        .iter()
        .map(|&(name, read)| {
            let _ = std::fs::remove_file(&out);
            let r = std::panic::catch_unwind(|| read(path, &out)).unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("{name} panicked ({msg}) on {}", excerpt(bytes))
            });
            if let Err(e) = &r {
                assert!(
                    !e.trim().is_empty(),
                    "{name}: empty error message on {}",
                    excerpt(bytes)
                );
                assert!(
                    !out.exists(),
                    "{name} failed but left {} on {}",
                    out.display(),
                    excerpt(bytes)
                );
            }
            (name, r)
        })
        .collect()
}

/// A directory with the files scenarios may reference (`trace.csv`, `lengths.csv`).
pub(crate) fn fuzz_dir() -> Workdir {
    let w = Workdir::new();
    w.write(
        "trace.csv",
        "arrival_s,input_tokens,output_tokens\n0,4,2\n0.5,8,3\n",
    );
    w.write("lengths.csv", "input_tokens,output_tokens\n4,2\n8,3\n");
    w
}

const SCENARIO: &str = r#"name = "fuzz"
seed = 3
model = "opt-13b"
gpu = "a100-40gb"
replicas = 2
router = "round-robin"

[trace]
arrival = "gamma"
rate_per_s = 2.5
cv = 2.0
lengths_file = "lengths.csv"
num_requests = 100

[memory]
block_tokens = 16
gpu_memory_utilization = 0.9

[cost]
model = "constant"
iteration_s = 0.1

[scheduler]
policy = "vllm"
max_batch_size = 8

[limits]
max_queue = 1000
"#;

/// Valid inputs of every reader, the mutation seeds.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let mut v: Vec<Vec<u8>> = vec![
            b"arrival_s,input_tokens,output_tokens\n0,4,2\n0.05,4,1\n1.5,100,20\n".to_vec(),
            b"input_tokens,output_tokens\n4,2\n17,9\n".to_vec(),
            SCENARIO.as_bytes().to_vec(),
            SCENARIO
                .replace(
                    "arrival = \"gamma\"\nrate_per_s = 2.5\ncv = 2.0\nlengths_file = \"lengths.csv\"",
                    "file = \"trace.csv\"",
                )
                .into_bytes(),
            SCENARIO
                .replace(
                    "lengths_file = \"lengths.csv\"",
                    "input_lengths = { dist = \"lognormal\", mean = 19.31, sigma = 0.6 }\noutput_lengths = { dist = \"zipf\", n = 100, s = 1.1 }",
                )
                .into_bytes(),
        ];
        for f in [
            "sharegpt_small.json",
            "alpaca_small.json",
            "azure_small.csv",
            "azure_2024_small.csv",
            "vidur_arrivals.csv",
            "vidur_lengths.csv",
        ] {
            v.push(std::fs::read(repo("sim/tests/fixtures").join(f)).expect("fixture"));
        }
        let traces = repo("traces").display().to_string();
        for f in ["quickstart.toml", "policies_sharegpt.toml"] {
            let text = std::fs::read_to_string(repo("scenarios").join(f)).expect("scenario");
            v.push(text.replace("../traces", &traces).into_bytes());
        }
        v
    })
}

/// Byte strings a mutation may splice in.
const TOKENS: &[&[u8]] = &[
    b"NaN",
    b"inf",
    b"-1",
    b"-0",
    b"0",
    b"1e309",
    b"1e-400",
    b"18446744073709551616",
    b"4294967296",
    b"99999999999999999999999999999999",
    b"\xef\xbb\xbf",
    b"\r\n",
    b"\r",
    b"\n",
    b"\"",
    b",",
    b"\0",
    b"\xff\xfe",
    b"\xc3",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\\u0000",
    b"\\ud800",
    b"=",
    b"[[",
    b"arrival_s",
    b"input_tokens",
    b"TIMESTAMP",
    b"num_prefill_tokens",
    b"2023-11-16 18:15:46+1\xc3\xa91",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the byte at (position mod len) with `b`.
    Set(usize, u8),
    /// Insert a splice token at a position.
    Insert(usize, usize),
    /// Delete `n` bytes from a position.
    Delete(usize, usize),
    /// Duplicate `n` bytes from a position in place.
    Duplicate(usize, usize),
    /// Cut the input at a position.
    Truncate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(p, t)| Mutation::Insert(p, t)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), 1usize..128).prop_map(|(p, n)| Mutation::Duplicate(p, n)),
        any::<usize>().prop_map(Mutation::Truncate),
    ]
}

fn apply(mut v: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let at = |p: usize| if v.is_empty() { 0 } else { p % (v.len() + 1) };
        match *m {
            Mutation::Set(p, b) => {
                if !v.is_empty() {
                    let i = p % v.len();
                    v[i] = b;
                }
            }
            Mutation::Insert(p, t) => {
                let i = at(p);
                v.splice(i..i, TOKENS[t].iter().copied());
            }
            Mutation::Delete(p, n) => {
                let i = at(p);
                let j = (i + n).min(v.len());
                v.drain(i..j);
            }
            Mutation::Duplicate(p, n) => {
                let i = at(p);
                let j = (i + n).min(v.len());
                let chunk = v[i..j].to_vec();
                v.splice(j..j, chunk);
            }
            Mutation::Truncate(p) => {
                let i = at(p);
                v.truncate(i);
            }
        }
    }
    v
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Which file name the input is written under (importers and the scenario loader do not look at
/// the extension, but keep the names realistic).
const NAMES: [&str; 3] = ["input.csv", "input.json", "input.toml"];

proptest! {
    #![proptest_config(config())]

    /// Mutations of valid inputs (one to eight edits) through every reader.
    #[test]
    fn mutated_valid_inputs_never_panic(
        seed in any::<prop::sample::Index>(),
        muts in prop::collection::vec(mutation(), 1..8),
        name in 0..NAMES.len(),
    ) {
        let w = fuzz_dir();
        let s = seeds();
        let bytes = apply(s[seed.index(s.len())].clone(), &muts);
        let path = w.write(NAMES[name], &bytes);
        run_all(w.dir.path(), &path, &bytes);
    }

    /// Random bytes, and random bytes after a valid header, through every reader.
    #[test]
    fn random_bytes_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..512),
        header in 0..6usize,
    ) {
        let w = fuzz_dir();
        let prefix: &[u8] = match header {
            0 => b"arrival_s,input_tokens,output_tokens\n",
            1 => b"TIMESTAMP,ContextTokens,GeneratedTokens\n",
            2 => b"arrived_at,num_prefill_tokens,num_decode_tokens\n",
            3 => b"[{\"conversations\": [",
            _ => b"",
        };
        let mut input = prefix.to_vec();
        input.extend_from_slice(&bytes);
        let path = w.write("input", &input);
        run_all(w.dir.path(), &path, &input);
    }

    /// Random printable text made of the format's own tokens (more likely to get deep into the
    /// parsers than raw bytes).
    #[test]
    fn token_soup_never_panics(
        parts in prop::collection::vec(
            prop_oneof![
                (0..TOKENS.len()).prop_map(|t| TOKENS[t].to_vec()),
                "[a-z_]{1,12}".prop_map(String::into_bytes),
                "[0-9.eE+-]{1,24}".prop_map(String::into_bytes),
                Just(b" = ".to_vec()),
                Just(b"\"value\": ".to_vec()),
            ],
            0..64,
        ),
    ) {
        let w = fuzz_dir();
        let input = parts.concat();
        let path = w.write("input", &input);
        run_all(w.dir.path(), &path, &input);
    }
}

/// Every committed nasty input through every reader: a clean outcome, and the trace CSV reader
/// accepts exactly the valid ones.
#[test]
fn corpus_gives_clean_outcomes() {
    let corpus = repo("tests/fuzz_corpus");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&corpus)
        .expect("tests/fuzz_corpus exists")
        .map(|e| e.expect("corpus entry").path())
        .collect();
    files.sort();
    assert!(files.len() >= 30, "corpus has {} files", files.len());
    let w = fuzz_dir();
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let bytes = std::fs::read(f).expect("read corpus file");
        // Copy next to trace.csv / lengths.csv so that scenarios resolve their relative paths.
        let path = w.write(&name, &bytes);
        let outcomes = run_all(w.dir.path(), &path, &bytes);
        let trace_ok = outcomes[0].1.is_ok();
        // A header without rows is a valid, empty stream (the run then reports the empty trace);
        // so are Unix-epoch arrivals (the run refuses them against `[limits] max_sim_s`).
        let want_ok = matches!(
            name.as_str(),
            "valid.csv" | "bom.csv" | "bom_crlf.csv" | "header_only.csv" | "epoch_arrivals.csv"
        );
        if std::env::var_os("SERVESIM_FUZZ_SHOW").is_some() {
            for (reader, r) in &outcomes {
                eprintln!("{name:40} {reader:36} {r:?}");
            }
        }
        assert_eq!(trace_ok, want_ok, "TraceCsv on {name}: {:?}", outcomes[0].1);
        if name == "empty" {
            for (reader, r) in &outcomes {
                assert!(r.is_err(), "{reader} accepted an empty file");
            }
        }
    }
    // The scenario with a BOM and CRLF line ends resolves.
    let s = scenario::load(&w.path("scenario_bom_crlf.toml"));
    assert!(
        s.as_ref()
            .is_ok_and(|l| l.clone().resolve(&Overrides::default()).is_ok()),
        "{:?}",
        s.err()
    );
}

/// A 10⁷-character line (generated here rather than committed) in every position a reader may
/// meet it: the whole file, a CSV field, a JSON string, a TOML string.
#[test]
fn ten_million_character_line() {
    const N: usize = 10_000_000;
    let w = fuzz_dir();
    let long_digits = "9".repeat(N);
    let long_text = "a".repeat(N);
    let inputs: Vec<(&str, Vec<u8>)> = vec![
        ("line", long_text.clone().into_bytes()),
        (
            "field.csv",
            format!("arrival_s,input_tokens,output_tokens\n0,{long_digits},1\n").into_bytes(),
        ),
        (
            "arrival.csv",
            format!("arrival_s,input_tokens,output_tokens\n{long_digits},1,1\n").into_bytes(),
        ),
        (
            "header.csv",
            format!("arrival_s,input_tokens,output_tokens,{long_text}\n0,1,1,x\n").into_bytes(),
        ),
        (
            "azure.csv",
            format!(
                "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.{long_digits},1,1\n"
            )
            .into_bytes(),
        ),
        (
            "number.json",
            format!("[{{\"instruction\": \"a\", \"output\": {long_digits}}}]").into_bytes(),
        ),
        (
            "scenario.toml",
            SCENARIO
                .replace("name = \"fuzz\"", &format!("name = \"{long_text}\""))
                .into_bytes(),
        ),
    ];
    for (name, bytes) in &inputs {
        let t = std::time::Instant::now();
        let path = w.write(name, bytes);
        let outcomes = run_all(w.dir.path(), &path, bytes);
        // An extra column with a long name is allowed (extra columns are ignored).
        assert_eq!(
            outcomes[0].1.is_ok(),
            *name == "header.csv",
            "TraceCsv on the 10⁷-character {name}: {:?}",
            outcomes[0].1
        );
        assert!(
            t.elapsed().as_secs_f64() < 30.0,
            "{name} took {:?}",
            t.elapsed()
        );
    }
}

/// Azure timestamps with a multi-byte character inside the UTC offset used to panic (a string
/// slice inside a character).
#[test]
fn azure_timestamp_with_multibyte_offset() {
    for s in [
        "2023-11-16 18:15:46+1\u{e9}1",
        "2023-11-16 18:15:46+\u{e9}\u{e9}",
        "2023-11-16 18:15:46-\u{20ac}1",
        "2023-11-16 18:15:46+12:\u{e9}",
    ] {
        assert_eq!(azure::parse_timestamp(s), None, "{s}");
    }
}

// ---------------------------------------------------------------------------------------------
// Overload and streaming, with the peak memory measured in a child process.
// ---------------------------------------------------------------------------------------------
