//! `servesim-calibrate` (run as `servesim calibrate …`): the calibration command line.
//!
//! ```text
//! servesim calibrate plan   --model llama-2-7b [--tp 1] [--gpu h100-80gb] [--quick] [--out plan.csv]
//! servesim calibrate run    --model llama-2-7b [--tp 1] [--gpu NAME] [--out DIR] [--quick] [--self-test]
//! servesim calibrate self-test [--device 0]
//! servesim calibrate fit    PROFILE_DIR [--out DIR]
//! servesim calibrate import-vidur [VIDUR_DATA_DIR] [--out calibrate/profiles] [--check]
//! servesim calibrate report PROFILE_DIR [--png FILE] [--all-points]
//! servesim calibrate compare MEASURED_DIR [--reference PROFILE_DIR] [--out FILE.md]
//! ```
//! Exit status: 0 success, 1 `import-vidur --check` found differences, 2 any error (one message on
//! stderr), including `run` without a GPU ("no CUDA driver found") or without the `cuda` feature.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use servesim::catalogue::{Catalogue, ModelSpec};
use servesim::profile::{
    CopyVariant, DeviceInfo, MeasurementInfo, Meta, Op, Profile, Provenance, SCHEMA_VERSION,
};

pub use crate::fitting::load_for_fit;
use crate::gpu::{self, RunOptions};
use crate::plan::{PlanConfig, estimate_s, plan, plan_csv};

/// servesim calibration: measure GPU kernels, fit per-operator models, write and inspect profiles.
#[derive(Debug, Parser)]
#[command(name = "servesim calibrate", version, about, max_term_width = 100)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print (and optionally write as CSV) the measurement plan of a model at a TP degree, with
    /// its estimated GPU time.
    Plan(PlanArgs),
    /// Measure the plan on a GPU, fit it and write a profile directory (needs the `cuda` feature
    /// and an NVIDIA GPU).
    Run(RunArgs),
    /// Check the GPU kernels against CPU references and time a large GEMM.
    SelfTest {
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0)]
        device: usize,
    },
    /// Re-fit a profile directory from its measurements.csv (fit.toml and meta.toml's residuals
    /// are rewritten).
    Fit {
        /// Profile directory with meta.toml and measurements.csv (fit.toml optional).
        profile: PathBuf,
        /// Write the fitted profile here instead of in place.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Replace the output directory even when it was not written by servesim.
        #[arg(long)]
        force: bool,
    },
    /// Turn Vidur's profiling CSVs into servesim profiles (default: the shipped A100 and H100
    /// Llama-2-7B TP1 profiles and VIDUR_COMPARISON.md under calibrate/profiles/).
    ImportVidur(ImportArgs),
    /// Print measured vs fitted per operator and draw them into a PNG.
    Report {
        /// Profile directory.
        profile: PathBuf,
        /// PNG to write (default: results/calibrate/<gpu>-<model>-tp<k>.png).
        #[arg(long, value_name = "FILE")]
        png: Option<PathBuf>,
        /// Print every measured shape, not a sample per operator.
        #[arg(long)]
        all_points: bool,
        /// Replace the output file if it exists (it is refused otherwise).
        #[arg(long)]
        force: bool,
    },
    /// Compare the analytic model and a reference profile (default: the shipped Vidur import of
    /// the same GPU, model and TP) with a measured profile's points.
    Compare {
        /// The measured profile directory.
        measured: PathBuf,
        /// Reference profile (default calibrate/profiles/<gpu>/<model>/tp<k> when it is not the
        /// measured one, else the analytic model alone).
        #[arg(long, value_name = "DIR")]
        reference: Option<PathBuf>,
        /// Also write the Markdown here.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Replace the output file if it exists (it is refused otherwise).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    /// Catalogue model (see `servesim list`).
    #[arg(long)]
    pub model: String,
    /// Tensor-parallel degree.
    #[arg(long, default_value_t = 1)]
    pub tp: u32,
    /// Catalogue GPU the plan is sized for (memory, time estimate).
    #[arg(long, default_value = "h100-80gb")]
    pub gpu: String,
    /// GPUs visible (≥ 1; all-reduce shapes need `tp` of them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub gpus: u32,
    /// A small plan (coarse grids).
    #[arg(long)]
    pub quick: bool,
    /// `cpu`: the CPU backend's plan and estimate (--gpu is ignored); `cuda`, `gpu` or a CUDA
    /// device ordinal: the GPU plan (the default).
    #[arg(long, value_parser = crate::flags::plan_device)]
    pub device: Option<String>,
    /// Write the plan as CSV.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Replace the --out file if it exists (it is refused otherwise).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Catalogue model (see `servesim list`).
    #[arg(long)]
    pub model: String,
    #[arg(long, default_value_t = 1)]
    pub tp: u32,
    /// Catalogue GPU name of the device (default: from the device name, e.g. H100 → h100-80gb).
    #[arg(long)]
    pub gpu: Option<String>,
    /// Profile directory (default calibrate/profiles/<gpu>/<model>/tp<k>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Replace the output directory even when it was not written by servesim.
    #[arg(long)]
    pub force: bool,
    /// CUDA device ordinal, or `cpu` for the CPU backend (servesim-kernels).
    #[arg(long, default_value = "0")]
    pub device: String,
    /// Threads of the CPU backend (`--device cpu`; 0 = every core; at most 1024).
    #[arg(long, default_value_t = 0, value_parser = crate::flags::threads)]
    pub threads: usize,
    /// `--device cpu`: milliseconds of timed calls per shape and round (default 100, quick 30).
    #[arg(long, value_name = "MS")]
    pub cell_ms: Option<f64>,
    /// A small plan (coarse grids; for smoke runs).
    #[arg(long)]
    pub quick: bool,
    /// `--device cpu`: time each operator alone, back to back (by default the iteration
    /// operators are timed inside real forward passes, as live mode runs them).
    #[arg(long)]
    pub isolated: bool,
    /// `--device cpu`: time operators alone and read twice the last-level cache before every
    /// timed call (cold caches; implies --isolated).
    #[arg(long)]
    pub cold_cache: bool,
    /// Timed repetitions per shape: on a GPU 20 to 100000 (the median of at least 20 runs); with
    /// `--device cpu` 1 to 100000, the fewest timed calls per shape over all rounds.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub repeats: Option<u32>,
    /// Untimed calls per shape before the timed ones, 0 to 10000.
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub warmup: Option<u32>,
    /// Largest token count of the GEMM grid, 1 to 1048576.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_048_576))]
    pub max_tokens: Option<u32>,
    /// Only these operators (comma-separated names, e.g. qkv,attn_decode).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Run the kernel self-test first and stop on a mismatch.
    #[arg(long)]
    pub self_test: bool,
    /// Seed of the random inputs and block placements.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Date written into meta.toml, YYYY-MM-DD (default: today, UTC).
    #[arg(long, value_parser = crate::flags::date)]
    pub date: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// Vidur profiling data (laid out like Vidur's data/profiling/; default calibrate/data/vidur).
    pub data_dir: Option<PathBuf>,
    /// Root of the profile tree (default calibrate/profiles).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Vidur devices (a100, h100); with --model and --tp replaces the default set.
    #[arg(long, value_delimiter = ',')]
    pub device: Vec<String>,
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long)]
    pub tp: Option<u32>,
    /// Date written into meta.toml, YYYY-MM-DD (default: an existing profile's, else today).
    #[arg(long, value_parser = crate::flags::date)]
    pub date: Option<String>,
    /// Write nothing; exit 1 if the files on disk differ from what the import produces.
    #[arg(long)]
    pub check: bool,
    /// Replace a profile directory even when it was not written by servesim.
    #[arg(long)]
    pub force: bool,
}

/// `import-vidur --check` found differences.
#[derive(Debug)]
pub struct Differs;

impl std::fmt::Display for Differs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the files differ from what the import produces")
    }
}

impl std::error::Error for Differs {}

/// Parse, run, and return the exit status (errors are printed to `err`).
pub fn main_with_args(args: Vec<OsString>, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let cli = match servesim::cli::parse_or_report::<Cli>(args, out, err) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match dispatch(cli, out, err) {
        Ok(()) => 0,
        Err(e) if e.downcast_ref::<Differs>().is_some() => {
            let _ = writeln!(err, "{e}");
            1
        }
        Err(e) => {
            let msg = servesim::error::one_line(&format!("{e:#}"));
            let _ = writeln!(err, "error: {msg}");
            2
        }
    }
}

fn dispatch(cli: Cli, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    match cli.command {
        Command::Plan(a) => plan_cmd(a, out),
        Command::Run(a) if crate::cpu_run::is_cpu(&a.device) => {
            crate::cpu_run::run_cmd(a, out, err)
        }
        Command::Run(a) => run_cmd(a, out, err),
        Command::SelfTest { device } => {
            let text = gpu::self_test(&RunOptions {
                ordinal: device,
                warmup: 3,
                repeats: 20,
                seed: 0,
            })?;
            write!(out, "{text}")?;
            Ok(())
        }
        Command::Fit {
            profile,
            out: dest,
            force,
        } => fit_cmd(&profile, dest.as_deref(), force, out),
        Command::ImportVidur(a) => import_cmd(a, out),
        Command::Compare {
            measured,
            reference,
            out: file,
            force,
        } => {
            let p = Profile::load(&measured)?;
            let reference = reference.unwrap_or_else(|| {
                crate::import::profile_dir(&profiles_root(), &p.meta.gpu, &p.meta.model, p.meta.tp)
            });
            let same = reference.canonicalize().ok() == measured.canonicalize().ok();
            let md = if same || !reference.is_dir() {
                crate::compare::compare_markdown(&[(measured.display().to_string(), p)])?
            } else {
                let r = Profile::load(&reference)?;
                format!(
                    "{}\n{}",
                    crate::compare::compare_against(&p, &r)?,
                    crate::compare::compare_markdown(&[(measured.display().to_string(), p)])?
                )
            };
            if let Some(f) = &file {
                servesim::output::check_file_dest(
                    f,
                    &[measured.clone(), reference.clone()],
                    force,
                )?;
            }
            write!(out, "{md}")?;
            if let Some(f) = file {
                servesim::output::write_file(&f, md.as_bytes(), &[measured, reference], force)?;
            }
            Ok(())
        }
        Command::Report {
            profile,
            png,
            all_points,
            force,
        } => crate::report::report_cmd(&profile, png, all_points, force, out),
    }
}

fn plan_cmd(a: PlanArgs, out: &mut dyn Write) -> Result<()> {
    if a.device.as_deref().is_some_and(crate::cpu_run::is_cpu) {
        return crate::cpu_run::plan_cmd(&a, out);
    }
    if crate::cpu_run::is_cpu(&a.gpu) {
        anyhow::bail!(
            "--gpu {}: the catalogue device `cpu` is measured by the CPU backend; plan it with --device cpu",
            a.gpu
        );
    }
    let cat = Catalogue::builtin();
    let model = cat.model(&a.model)?.clone();
    let gpu = cat.gpu(&a.gpu)?.clone();
    let cfg = if a.quick {
        PlanConfig::quick(&model, a.tp, gpu.memory_bytes, a.gpus)
    } else {
        PlanConfig::full(&model, a.tp, gpu.memory_bytes, a.gpus)
    };
    let items = plan(&model, a.tp, &cfg)?;
    if let Some(p) = &a.out {
        // Checked before the plan is printed.
        servesim::output::check_file_dest(p, &[], a.force)?;
    }
    writeln!(
        out,
        "plan for {} tp{} on {}: {} shapes, {} warm-up + {} timed runs each, estimated {:.0} s of GPU time",
        a.model,
        a.tp,
        a.gpu,
        items.len(),
        cfg.warmup,
        cfg.repeats,
        estimate_s(&items, &cfg, &gpu)
    )?;
    for op in Op::ALL {
        let xs: Vec<&crate::plan::PlanItem> = items.iter().filter(|i| i.op == op).collect();
        if xs.is_empty() {
            continue;
        }
        let (x0, x1) = xs
            .iter()
            .fold((u64::MAX, 0), |(a, b), i| (a.min(i.x), b.max(i.x)));
        writeln!(
            out,
            "  {:<20} {:>4} shapes  x {x0}–{x1} {}",
            op.name(),
            xs.len(),
            op.axes().0
        )?;
    }
    if let Some(p) = a.out {
        servesim::output::write_file(&p, plan_csv(&items, &gpu).as_bytes(), &[], a.force)?;
        writeln!(out, "wrote {}", p.display())?;
    }
    Ok(())
}

/// Today's date (UTC), `YYYY-MM-DD`, from the system clock (civil-from-days).
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    civil_date((secs / 86_400) as i64)
}

/// Days since 1970-01-01 → `YYYY-MM-DD` (proleptic Gregorian).
pub fn civil_date(days: i64) -> String {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The profiles tree of this checkout, `calibrate/profiles`.
fn profiles_root() -> PathBuf {
    crate::import::default_profiles_dir()
}

/// One stderr line of a measurement run: shape `i + 1` of `n`, its median and the time so far.
pub(crate) fn progress_line(
    err: &mut dyn Write,
    started: Instant,
    (i, n): (usize, usize),
    item: &crate::plan::PlanItem,
    median_s: f64,
) {
    let _ = writeln!(
        err,
        "[{:>4}/{n}] {:<20} x={:<8} y={:<8} median {:>10.4} ms  ({:.0} s)",
        i + 1,
        item.op.name(),
        item.x,
        item.y,
        median_s * 1e3,
        started.elapsed().as_secs_f64()
    );
}

fn run_cmd(a: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    let ordinal: usize = (a.device.parse())
        .with_context(|| format!("--device {}: a CUDA device ordinal or `cpu`", a.device))?;
    if let Some(r) = a.repeats.filter(|&r| r < crate::plan::MIN_GPU_REPEATS) {
        anyhow::bail!(
            "--repeats {r}: a GPU run times every shape at least {} times (its median is recorded)",
            crate::plan::MIN_GPU_REPEATS
        );
    }
    let cat = Catalogue::builtin();
    let model = cat.model(&a.model)?.clone();
    // Fail fast (exit 2, no panic) without the cuda feature or without a driver.
    let dev = gpu::probe(ordinal)?;
    let gpu_name = catalogue_gpu_name(&a, &dev)?;
    cat.gpu(&gpu_name)?;
    let opts = RunOptions {
        ordinal,
        warmup: 0,
        repeats: 0,
        seed: a.seed,
    };
    if a.self_test {
        write!(out, "{}", gpu::self_test(&opts)?)?;
    }
    let cfg = plan_config(&a, &model, &dev);
    let mut items = plan(&model, a.tp, &cfg)?;
    if !a.only.is_empty() {
        let ops: Vec<Op> = a
            .only
            .iter()
            .map(|n| Op::parse(n).with_context(|| format!("--only: unknown operator `{n}`")))
            .collect::<Result<_>>()?;
        items.retain(|i| ops.contains(&i.op));
    }
    writeln!(
        out,
        "measuring {} shapes of {} tp{} on {} ({}), {} warm-up + {} repeats each",
        items.len(),
        a.model,
        a.tp,
        dev.name,
        gpu_name,
        cfg.warmup,
        cfg.repeats
    )?;
    let started = Instant::now();
    let opts = RunOptions {
        warmup: cfg.warmup,
        repeats: cfg.repeats,
        ..opts
    };
    let mut progress = |i: usize, n: usize, item: &crate::plan::PlanItem, median: f64| {
        progress_line(err, started, (i, n), item, median)
    };
    let (dev, rows) = gpu::measure(&items, &opts, &mut progress)?;
    let wall_s = started.elapsed().as_secs_f64();
    let meta = measured_meta(&a, &gpu_name, &dev, &cfg, wall_s, ordinal);
    let mut p = crate::fitting::fit_profile(
        meta,
        rows,
        crate::import::ITERATION_OVERHEAD_S,
        vec![format!(
            "iteration_overhead_s = {} is not measured (CPU scheduling/sampling outside the kernels); the published vLLM v0 per-step figure the analytic fit uses",
            crate::import::ITERATION_OVERHEAD_S
        )],
        None,
    )?;
    p.fit.swap_variant = fastest_copy_variant(&p, &model, a.tp, cfg.block_tokens[0]);
    let dest = a.out.unwrap_or_else(|| {
        crate::import::profile_dir(&profiles_root(), &gpu_name, &a.model.to_lowercase(), a.tp)
    });
    let dest = p.write(&dest, &servesim::output::Replace::profile(a.force, []))?;
    writeln!(out, "measured in {wall_s:.0} s; wrote {}\n", dest.display())?;
    write!(out, "{}", crate::report::text_report(&dest, &p, false))?;
    Ok(())
}

/// The catalogue GPU of the run: `--gpu`, else the one the device's name and memory tell.
fn catalogue_gpu_name(a: &RunArgs, dev: &gpu::DeviceReport) -> Result<String> {
    Ok(match &a.gpu {
        Some(g) => g.clone(),
        None => gpu::catalogue_gpu_for(&dev.name, dev.memory_bytes)
            .map(str::to_string)
            .with_context(|| {
                format!(
                    "cannot tell which catalogue GPU `{}` is; pass --gpu NAME (see `servesim list`)",
                    dev.name
                )
            })?,
    })
}

/// The measurement plan's settings: quick or full for the device, then the flags' overrides.
fn plan_config(a: &RunArgs, model: &ModelSpec, dev: &gpu::DeviceReport) -> PlanConfig {
    let mut cfg = if a.quick {
        PlanConfig::quick(model, a.tp, dev.memory_bytes, dev.device_count)
    } else {
        PlanConfig::full(model, a.tp, dev.memory_bytes, dev.device_count)
    };
    if let Some(r) = a.repeats {
        cfg.repeats = r;
    }
    if let Some(w) = a.warmup {
        cfg.warmup = w;
    }
    if let Some(t) = a.max_tokens {
        cfg.max_tokens = t;
    }
    cfg
}

/// The profile's meta.toml for a run measured on `dev` with `cfg` in `wall_s` seconds.
fn measured_meta(
    a: &RunArgs,
    gpu_name: &str,
    dev: &gpu::DeviceReport,
    cfg: &PlanConfig,
    wall_s: f64,
    ordinal: usize,
) -> Meta {
    Meta {
        schema_version: SCHEMA_VERSION,
        gpu: gpu_name.to_string(),
        model: a.model.to_lowercase(),
        tp: a.tp,
        created: a.date.clone().unwrap_or_else(today),
        source: "measured".into(),
        tool: format!("servesim-calibrate {} run", env!("CARGO_PKG_VERSION")),
        device: DeviceInfo {
            name: dev.name.clone(),
            sm_count: Some(dev.sm_count),
            memory_bytes: Some(dev.memory_bytes),
            compute_capability: Some(format!(
                "{}.{}",
                dev.compute_capability.0, dev.compute_capability.1
            )),
            driver_version: Some(format!("CUDA {}", dev.driver_version)),
            cuda_version: dev.nvrtc_version.as_ref().map(|v| format!("NVRTC {v}")),
        },
        measurement: MeasurementInfo {
            dtype: "fp16".into(),
            statistic: "median".into(),
            repeats: Some(cfg.repeats),
            warmup: Some(cfg.warmup),
            block_tokens: cfg.block_tokens.clone(),
            wall_s: Some((wall_s * 10.0).round() / 10.0),
        },
        provenance: Provenance {
            sources: vec![format!(
                "servesim calibrate run on {} (device {}), plan {}",
                dev.name,
                ordinal,
                if a.quick { "quick" } else { "full" }
            )],
            derived: Default::default(),
            notes: vec![
                "GEMMs: cuBLAS fp16 (fp32 accumulate); attention and small operators: servesim's NVRTC kernels (calibrate/src/gpu/kernels.rs); copies: cuMemcpyAsync per chunk or the gather kernel over mapped pinned memory".into(),
            ],
        },
        grid: Default::default(),
        fit: Default::default(),
    }
}

/// The copy variant whose fitted H2D + D2H time of 16 blocks of the model is least.
pub fn fastest_copy_variant(
    p: &Profile,
    model: &servesim::catalogue::ModelSpec,
    tp: u32,
    block_tokens: u32,
) -> Option<CopyVariant> {
    let chunk = crate::plan::chunk_bytes(model, tp, block_tokens) as f64;
    let chunks = 16.0 * 2.0 * model.layers as f64;
    CopyVariant::ALL
        .into_iter()
        .filter_map(|v| {
            let h = p.op_fit(Op::copy(true, v))?.eval(chunks, chunk);
            let d = p.op_fit(Op::copy(false, v))?.eval(chunks, chunk);
            Some((h + d, v))
        })
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v)
}

fn fit_cmd(dir: &Path, dest: Option<&Path>, force: bool, out: &mut dyn Write) -> Result<()> {
    let p = crate::fitting::load_for_fit(dir)?;
    let mut fitted = crate::fitting::refit(&p).with_context(|| {
        format!(
            "{}: cannot fit",
            dir.join(servesim::profile::MEASUREMENTS_FILE).display()
        )
    })?;
    if fitted.fit.swap_variant.is_none()
        && let Ok(m) = Catalogue::builtin().model(&p.meta.model)
    {
        let bt = p
            .meta
            .measurement
            .block_tokens
            .first()
            .copied()
            .unwrap_or(16);
        fitted.fit.swap_variant = fastest_copy_variant(&fitted, m, p.meta.tp, bt);
    }
    // Refitting in place rewrites the input; any other destination must not hold it.
    let dest = dest.unwrap_or(dir);
    let in_place = dest
        .canonicalize()
        .ok()
        .is_some_and(|d| dir.canonicalize().ok() == Some(d));
    let inputs = if in_place {
        vec![]
    } else {
        vec![dir.to_path_buf()]
    };
    let dest = fitted.write(dest, &servesim::output::Replace::profile(force, inputs))?;
    writeln!(out, "wrote {}\n", dest.display())?;
    write!(out, "{}", crate::report::text_report(&dest, &fitted, false))?;
    Ok(())
}

fn import_cmd(a: ImportArgs, out: &mut dyn Write) -> Result<()> {
    let custom = !a.device.is_empty() || a.model.is_some() || a.tp.is_some();
    let set = profile_set(&a, custom);
    let data = a
        .data_dir
        .unwrap_or_else(crate::vidur_fit::default_data_dir);
    let root = a.out.unwrap_or_else(profiles_root);
    let mut profiles = Vec::new();
    let mut differs = Vec::new();
    for (device, model, tp) in &set {
        let gpu = crate::vidur_fit::DEVICES
            .iter()
            .find(|d| d.device == device)
            .map(|d| d.catalogue_gpu)
            .with_context(|| format!("unknown Vidur device `{device}` (a100, h100)"))?;
        let dir = crate::import::profile_dir(&root, gpu, model, *tp);
        let date = a
            .date
            .clone()
            .or_else(|| crate::import::existing_date(&dir))
            .unwrap_or_else(today);
        let p = crate::import::import_profile(&data, device, model, *tp, &date)?;
        if a.check {
            let want = p.render()?;
            for (name, text) in &want {
                let path = dir.join(name);
                if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                    differs.push(path);
                }
            }
        } else {
            p.write(
                &dir,
                &servesim::output::Replace::profile(a.force, [data.clone()]),
            )?;
            writeln!(out, "wrote {}", dir.display())?;
            print_fit_errors(out, &p)?;
        }
        let rel = dir
            .strip_prefix(&root)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| dir.clone());
        profiles.push((rel.display().to_string(), p));
    }
    if !custom {
        let md = crate::compare::compare_markdown(&profiles)?;
        let path = root.join("VIDUR_COMPARISON.md");
        if a.check {
            if std::fs::read_to_string(&path).ok().as_deref() != Some(md.as_str()) {
                differs.push(path);
            }
        } else {
            // Replaces only a comparison servesim wrote (same title line), unless --force.
            let ours = |t: &str| t.lines().next() == md.lines().next();
            if !a.force && std::fs::read_to_string(&path).is_ok_and(|old| !ours(&old)) {
                anyhow::bail!(
                    "{}: exists and was not written by servesim (its first line differs); pass --force to replace it",
                    path.display()
                );
            }
            servesim::output::write_file(&path, md.as_bytes(), std::slice::from_ref(&data), true)?;
            writeln!(out, "wrote {}", path.display())?;
        }
    }
    if a.check {
        if differs.is_empty() {
            writeln!(out, "the profiles match the import of {}", data.display())?;
        } else {
            for p in &differs {
                writeln!(out, "differs: {}", p.display())?;
            }
            return Err(Differs.into());
        }
    }
    Ok(())
}

/// The profiles to import: `--device`/`--model`/`--tp` (`custom`; a100 and h100, llama-2-7b,
/// tp 1 by default), else the committed set.
fn profile_set(a: &ImportArgs, custom: bool) -> Vec<(String, String, u32)> {
    if custom {
        let devices = if a.device.is_empty() {
            vec!["a100".to_string(), "h100".to_string()]
        } else {
            a.device.clone()
        };
        devices
            .into_iter()
            .map(|d| {
                (
                    d,
                    a.model.clone().unwrap_or_else(|| "llama-2-7b".into()),
                    a.tp.unwrap_or(1),
                )
            })
            .collect()
    } else {
        crate::import::DEFAULT_SET
            .iter()
            .map(|(d, m, t)| (d.to_string(), m.to_string(), *t))
            .collect()
    }
}

/// Each fitted operator's form, points and errors, one line each.
fn print_fit_errors(out: &mut dyn Write, p: &Profile) -> Result<()> {
    for op in Op::ALL {
        if let Some(r) = p.meta.fit.get(op.name()) {
            writeln!(
                out,
                "  {:<14} {:<9} {:>4} rows  median {:>5.1}%  mean {:>5.1}%  max {:>6.1}%  ({})",
                op.name(),
                r.form,
                r.points,
                100.0 * r.median_rel_err,
                100.0 * r.mean_rel_err,
                100.0 * r.max_rel_err,
                r.over
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "cli_tests.rs"]
mod tests;
