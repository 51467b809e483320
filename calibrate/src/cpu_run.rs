//! `servesim calibrate plan|run --device cpu`: the CPU backend's plan, its estimate, and a
//! measured, fitted profile under `calibrate/profiles/cpu/<model>/tp1/`.

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use servesim::catalogue::{CPU_DEVICE, Catalogue, ModelSpec};
use servesim::cost::profile::{ProfileMode, ProfileTables};
use servesim::profile::{
    DeviceInfo, MeasurementInfo, Meta, Op, Profile, Provenance, SCHEMA_VERSION,
};

use crate::cli::{PlanArgs, RunArgs};
use crate::cpu::{
    CPU_COPY_VARIANT, CpuOptions, CpuReport, check_model, cpu_items, cpu_plan_config,
    estimate_call_s, estimate_s, iteration_overhead_s, measure,
};
use crate::plan::{PlanItem, describe, plan};

/// `--device cpu` (any case).
pub fn is_cpu(device: &str) -> bool {
    device.eq_ignore_ascii_case(CPU_DEVICE)
}

fn options(quick: bool, threads: usize, seed: u64) -> CpuOptions {
    if quick {
        CpuOptions::quick(threads, seed)
    } else {
        CpuOptions::full(threads, seed)
    }
}

/// The CPU plan of `model` (checked), quick or full.
fn cpu_plan(name: &str, tp: u32, quick: bool) -> Result<(ModelSpec, Vec<PlanItem>)> {
    let model = Catalogue::builtin().model(name)?.clone();
    check_model(name, &model, tp)?;
    let cfg = cpu_plan_config(&model, quick);
    Ok((model.clone(), cpu_items(plan(&model, 1, &cfg)?)))
}

/// One line per operator: shapes and the x range.
fn print_ops(out: &mut dyn Write, items: &[PlanItem]) -> Result<()> {
    for op in Op::ALL {
        let xs: Vec<&PlanItem> = items.iter().filter(|i| i.op == op).collect();
        if let (Some(lo), Some(hi)) = (xs.iter().map(|i| i.x).min(), xs.iter().map(|i| i.x).max()) {
            let (n, axis) = (xs.len(), op.axes().0);
            writeln!(out, "  {:<20} {n:>4} shapes  x {lo}–{hi} {axis}", op.name())?;
        }
    }
    Ok(())
}

/// `calibrate plan --device cpu`.
pub fn plan_cmd(a: &PlanArgs, out: &mut dyn Write) -> Result<()> {
    let (model, items) = cpu_plan(&a.model, a.tp, a.quick)?;
    if let Some(p) = &a.out {
        servesim::output::check_file_dest(p, &[], a.force)?;
    }
    let o = options(a.quick, 0, 0);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fwd: Vec<PlanItem> = (items.iter())
        .filter(|i| crate::cpu_forward::in_forward(i.op))
        .cloned()
        .collect();
    let cells = crate::cpu_forward::grid(&fwd, model.max_context_tokens as usize).cells;
    writeln!(
        out,
        "plan for {} tp1 on the CPU ({threads} threads): {} shapes ({} timed inside {} forward cells, the rest alone), {} rounds of {} warm-up calls + {:.2} s (≥ {} calls) each, estimated {:.0} s",
        a.model,
        items.len(),
        fwd.len(),
        cells.len(),
        o.rounds,
        o.warmup,
        o.cell_s,
        o.min_samples,
        estimate_s(&model, &items, &o)
    )?;
    print_ops(out, &items)?;
    if let Some(p) = &a.out {
        let mut s = String::from("op,x,y,kernel,estimate_s\n");
        for i in &items {
            let (op, k, t) = (i.op.name(), describe(&i.kernel), estimate_call_s(&i.kernel));
            s += &format!("{op},{},{},{k},{t:.3e}\n", i.x, i.y);
        }
        servesim::output::write_file(p, s.as_bytes(), &[], a.force)?;
        writeln!(out, "wrote {}", p.display())?;
    }
    Ok(())
}

/// `calibrate run --device cpu`: measure, fit, measure the per-iteration overhead, write.
pub fn run_cmd(a: RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> Result<()> {
    if let Some(g) = a.gpu.as_deref().filter(|g| !is_cpu(g)) {
        anyhow::bail!("--device cpu measures the catalogue device `cpu`, not --gpu {g}");
    }
    let (model, items) = cpu_plan(&a.model, a.tp, a.quick)?;
    let (o, items) = run_settings(&a, items)?;
    // Every run builds the whole model at some point (in-forward cells or the overhead probe):
    // a model too big for this machine is refused before minutes of other cells.
    servesim_kernels::cpu::check_weights_fit(&crate::cpu::dims_of(&model))?;
    let dest = a.out.clone().unwrap_or_else(|| {
        crate::import::profile_dir(
            &crate::import::default_profiles_dir(),
            CPU_DEVICE,
            &a.model.to_lowercase(),
            1,
        )
    });
    let replace = servesim::output::Replace::profile(a.force, []);
    // Refuse a destination we may not replace before minutes of measuring.
    servesim::output::check_dest(&dest, &replace)?;
    writeln!(
        out,
        "measuring {} shapes of {} tp1 on {} ({} rounds), estimated {:.0} s",
        items.len(),
        a.model,
        crate::cpu::cpu_name(),
        o.rounds,
        estimate_s(&model, &items, &o)
    )?;
    let started = Instant::now();
    let mut progress = |i: usize, n: usize, item: &PlanItem, median: f64| {
        crate::cli::progress_line(err, started, (i, n), item, median)
    };
    let (report, rows) = measure(&model, &items, &o, &mut progress)?;
    let meta = cpu_meta(&a, &o, &report, started.elapsed().as_secs_f64());
    let mut p = crate::fitting::fit_profile(meta, rows, 0.0, Vec::new(), Some(CPU_COPY_VARIANT))?;
    match report.forward_other_s {
        Some(s) => {
            p.fit.iteration_overhead_s = (s * 1e7).round() / 1e7;
            p.fit.notes = vec![
                "iteration_overhead_s is measured: the median, over every timed forward of the in-forward grid, of its time outside the timed operators (block admission, embedding lookup, final norm, checksum, argmax)".into(),
            ];
        }
        None => set_overhead(&mut p, &a.model, &model, &o)?,
    }
    p.meta.measurement.wall_s = Some((started.elapsed().as_secs_f64() * 10.0).round() / 10.0);
    let dest = p.write(&dest, &replace)?;
    writeln!(
        out,
        "measured in {:.0} s; wrote {}\n",
        started.elapsed().as_secs_f64(),
        dest.display()
    )?;
    write!(out, "{}", crate::report::text_report(&dest, &p, false))?;
    Ok(())
}

/// The timing options and plan items of `run --device cpu` after the flags' overrides.
fn run_settings(a: &RunArgs, mut items: Vec<PlanItem>) -> Result<(CpuOptions, Vec<PlanItem>)> {
    let mut o = options(a.quick, a.threads, a.seed);
    if a.cold_cache {
        o.flush_bytes = crate::cpu::default_flush_bytes();
    }
    // A cache flush only makes sense between isolated calls.
    o.in_forward = !(a.isolated || a.cold_cache);
    if let Some(w) = a.warmup {
        o.warmup = w;
    }
    if let Some(ms) = a.cell_ms {
        anyhow::ensure!(
            ms.is_finite() && (0.0..=60_000.0).contains(&ms),
            "--cell-ms must be from 0 to 60000, got {ms}"
        );
        o.cell_s = ms / 1e3;
    }
    if let Some(r) = a.repeats {
        o.min_samples = r.div_ceil(o.rounds).max(1);
    }
    if let Some(t) = a.max_tokens {
        items.retain(|i| {
            !matches!(
                i.op,
                Op::Qkv | Op::OutProj | Op::MlpUp | Op::MlpDown | Op::SmallOps
            ) || i.x <= t as u64
        });
    }
    if !a.only.is_empty() {
        let ops: Vec<Op> = a
            .only
            .iter()
            .map(|n| Op::parse(n).with_context(|| format!("--only: unknown operator `{n}`")))
            .collect::<Result<_>>()?;
        items.retain(|i| ops.contains(&i.op));
    }
    Ok((o, items))
}

/// Measure the backend's per-iteration overhead against the fitted operators (0 with a note when
/// the profile lacks an operator an iteration needs, e.g. after `--only`).
fn set_overhead(p: &mut Profile, name: &str, model: &ModelSpec, o: &CpuOptions) -> Result<()> {
    match ProfileTables::new(p, name, model, 1, ProfileMode::Interpolate, Some(0.0)) {
        Ok(tables) => {
            let ov = iteration_overhead_s(model, o, &|s| tables.iteration(s).0)?;
            p.fit.iteration_overhead_s = (ov * 1e7).round() / 1e7;
            p.fit.notes = vec![format!(
                "iteration_overhead_s is measured: the median, over real CpuBackend::forward decode steps of 1, 4 and 16 sequences near context 64, of the measured time minus the profile's operators (embedding lookup, final norm, argmax, block allocation, thread-pool hand-offs)"
            )];
        }
        Err(e) => {
            p.fit.iteration_overhead_s = 0.0;
            p.fit.notes = vec![format!("iteration_overhead_s = 0: not measured ({e})")];
        }
    }
    Ok(())
}

/// The `meta.toml` note on how the operators were timed.
fn timing_note(o: &CpuOptions, r: &CpuReport) -> String {
    if o.in_forward {
        format!(
            "in-forward timing: the iteration operators are timed inside real CpuBackend::forward calls (decode forwards of each attn_decode cell's sequences × context, prefill forwards of each attn_prefill cell, GEMMs, small operators and LM head from the reference cell of their size (same batch at the smallest context; decode forwards at context {} or prefills for sizes the grid lacks), attention charged what a forward took beyond its reference's other operators; the same step repeated, KV rewound between calls); copies alone{}",
            crate::cpu_forward::FILL_CONTEXT,
            r.forward_other_s.map_or(String::new(), |s| format!(
                "; median time per forward outside the timed operators {:.1} µs",
                s * 1e6
            ))
        )
    } else if o.flush_bytes > 0 {
        format!(
            "cold caches (--cold-cache): {} MiB read before every timed call (twice the last-level cache)",
            o.flush_bytes >> 20
        )
    } else {
        "isolated timing, warm caches: each operator alone, timed calls back to back".into()
    }
}

/// `meta.toml` of a CPU run.
fn cpu_meta(a: &RunArgs, o: &CpuOptions, r: &CpuReport, wall_s: f64) -> Meta {
    let (g0, g1) = r.reference_gemm_s;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut notes = vec![
        format!(
            "CPU backend (servesim-kernels): f32, faer GEMMs, paged KV with block size {}, {} threads of its own pool",
            servesim_kernels::BLOCK_TOKENS,
            r.threads
        ),
        format!(
            "timing: {} rounds over the whole grid; per cell and round {} warm-up calls then timed calls for {:.3} s (at least {}); time_s = median of the round medians; min_s/max_s over all calls",
            o.rounds, o.warmup, o.cell_s, o.min_samples
        ),
        timing_note(o, r),
        format!(
            "drift reference: 512×512×512 GEMM median {:.1} µs before the grid, {:.1} µs after ({:+.0} %)",
            g0 * 1e6,
            g1 * 1e6,
            100.0 * (g1 / g0 - 1.0)
        ),
        format!("load average at the end: {}", load.trim()),
        "copies: one memcpy per chunk between two RAM pools; written as pinned_memcpy rows (h2d = host → device pool, d2h = device → host pool)".into(),
    ];
    if !r.unsteady_cells.is_empty() {
        let shown = &r.unsteady_cells[..r.unsteady_cells.len().min(12)];
        notes.push(format!(
            "{} of {} cells have round medians that differ by > 25 % (noise on a shared machine), e.g. {}",
            r.unsteady_cells.len(),
            r.cells,
            shown.join("; ")
        ));
    }
    Meta {
        schema_version: SCHEMA_VERSION,
        gpu: CPU_DEVICE.into(),
        model: a.model.to_lowercase(),
        tp: 1,
        created: a.date.clone().unwrap_or_else(crate::cli::today),
        source: "measured".into(),
        tool: format!(
            "servesim-calibrate {} run --device cpu",
            env!("CARGO_PKG_VERSION")
        ),
        device: DeviceInfo {
            name: r.cpu_name.clone(),
            ..Default::default()
        },
        measurement: MeasurementInfo {
            dtype: "fp32".into(),
            statistic: "median".into(),
            repeats: Some(o.min_samples * o.rounds),
            warmup: Some(o.warmup),
            block_tokens: vec![servesim_kernels::BLOCK_TOKENS as u32],
            wall_s: Some((wall_s * 10.0).round() / 10.0),
        },
        provenance: Provenance {
            sources: vec![format!(
                "servesim calibrate run --device cpu on {} with {} threads, plan {}",
                r.cpu_name,
                r.threads,
                if a.quick { "quick" } else { "full" }
            )],
            derived: Default::default(),
            notes,
        },
        grid: Default::default(),
        fit: Default::default(),
    }
}
