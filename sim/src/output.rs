//! A run's output files: `requests.csv`, `replicas.csv`, `kv_timeline.csv`, `summary.json`…,
//! written atomically through [`StagedDir`] (see [`crate::staging`]: a temporary sibling renamed
//! into place at the end, so an error never leaves a partial result directory, and a directory
//! servesim did not write is never replaced without `--force`).

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::error::Result;
use crate::metrics::request_metrics;
use crate::run::RunOutput;
pub use crate::staging::{
    Replace, StagedDir, StagedFile, check_dest, check_file_dest, first_line_is, write_file,
};
use crate::vocab::time::ns_to_s;

pub const REQUESTS_HEADER: &str = "id,arrival_s,input_tokens,output_tokens,first_token_s,finish_s,jct_s,ttft_s,tpot_s,queue_s,preemptions,replica,predicted_output_tokens,priority_at_finish,demotions,promotions,swap_out_bytes,swap_in_bytes,swap_stall_s,recomputed_tokens,itl_max_s,itl_p99_s";

/// `requests.csv` text: one row per request, sorted by id, times with 9 decimals (nanoseconds).
pub fn requests_csv(out: &RunOutput) -> String {
    let mut s = String::with_capacity(out.completions.len() * 96 + 128);
    s.push_str(REQUESTS_HEADER);
    s.push('\n');
    for c in &out.completions {
        let m = request_metrics(c);
        let opt = |x: Option<f64>| x.map(|t| format!("{t:.9}")).unwrap_or_default();
        let tpot = opt(m.tpot_s);
        let _ = writeln!(
            s,
            "{},{:.9},{},{},{:.9},{:.9},{:.9},{:.9},{},{:.9},{},{},{},{},{},{},{},{},{:.9},{},{},{}",
            c.id,
            ns_to_s(c.arrival_ns),
            c.input_tokens,
            c.output_tokens,
            ns_to_s(c.first_token_ns),
            ns_to_s(c.finish_ns),
            m.jct_s,
            m.ttft_s,
            tpot,
            m.queue_s,
            c.preemptions,
            c.replica,
            c.predicted_output_tokens,
            c.priority,
            c.demotions,
            c.promotions,
            c.swap_out_bytes,
            c.swap_in_bytes,
            ns_to_s(c.swap_stall_ns),
            c.recomputed_tokens,
            opt(m.itl_max_s),
            opt(m.itl_p99_s)
        );
    }
    s
}

/// Columns of `replicas.csv`.
pub const REPLICAS_HEADER: &str = "replica,requests,iterations,busy_fraction,mean_batch_size,kv_capacity_blocks,peak_kv_blocks,mean_kv_blocks,host_capacity_blocks,peak_host_blocks,mean_host_blocks,preemptions,swap_outs,swap_ins,d2h_busy_fraction,h2d_busy_fraction";

/// `replicas.csv` text: one row per replica (the `replicas` array of `summary.json`), fractions
/// and means with 9 decimals.
pub fn replicas_csv(summary: &crate::metrics::Summary) -> String {
    let mut s = String::from(REPLICAS_HEADER);
    s.push('\n');
    for (i, r) in summary.replicas.iter().enumerate() {
        let _ = writeln!(
            s,
            "{i},{},{},{:.9},{:.9},{},{},{:.9},{},{},{:.9},{},{},{},{:.9},{:.9}",
            r.requests,
            r.iterations,
            r.busy_fraction,
            r.mean_batch_size,
            r.kv_capacity_blocks,
            r.peak_kv_blocks,
            r.mean_kv_blocks,
            r.host_capacity_blocks,
            r.peak_host_blocks,
            r.mean_host_blocks,
            r.preemptions,
            r.swap_outs,
            r.swap_ins,
            r.d2h_busy_fraction,
            r.h2d_busy_fraction
        );
    }
    s
}

/// Columns of `kv_timeline.csv` (a plot reads exactly these names).
pub const KV_TIMELINE_HEADER: &str =
    "time_s,replica,gpu_blocks_used,host_blocks_used,running,waiting,swapped";

/// `kv_timeline.csv` text: one row per sample instant and replica, time with 9 decimals.
pub fn kv_timeline_csv(rows: &[crate::engine::KvSample]) -> String {
    let mut s = String::with_capacity(rows.len() * 40 + 80);
    s.push_str(KV_TIMELINE_HEADER);
    s.push('\n');
    for k in rows {
        let _ = writeln!(
            s,
            "{:.9},{},{},{},{},{},{}",
            ns_to_s(k.time_ns),
            k.replica,
            k.gpu_blocks_used,
            k.host_blocks_used,
            k.running,
            k.waiting,
            k.swapped
        );
    }
    s
}

/// Pretty JSON with a trailing newline.
pub fn pretty_json(v: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialise");
    s.push('\n');
    s
}

/// Write `requests.csv`, `replicas.csv`, `summary.json`, `config.json`, `timing.json` and (unless
/// disabled) `kv_timeline.csv` into `dest` atomically. A `partial` run (stopped by Ctrl-C) gets
/// `"partial": true` in `summary.json` and a `PARTIAL` file, as live mode writes them; a complete
/// run's files are unchanged (no `partial` key).
pub fn write_run(
    dir: StagedDir,
    out: &RunOutput,
    config: &serde_json::Value,
    timing: &serde_json::Value,
    partial: bool,
) -> Result<PathBuf> {
    write_run_with(dir, out, config, timing, partial, true)
}

/// [`write_run`], optionally without the per-request `requests.csv` (huge runs; every summary is
/// still computed from all requests).
pub fn write_run_with(
    dir: StagedDir,
    out: &RunOutput,
    config: &serde_json::Value,
    timing: &serde_json::Value,
    partial: bool,
    with_requests_csv: bool,
) -> Result<PathBuf> {
    write_run_files(&dir, "", out, config, timing, partial, with_requests_csv)?;
    dir.commit()
}

/// `name` inside the staged directory's subdirectory `sub` (`""`: its top).
pub fn sub_path(sub: &str, name: &str) -> String {
    if sub.is_empty() {
        name.to_string()
    } else {
        format!("{sub}/{name}")
    }
}

/// [`write_run_with`]'s files into `sub` of a staged directory, without committing it.
pub fn write_run_files(
    dir: &StagedDir,
    sub: &str,
    out: &RunOutput,
    config: &serde_json::Value,
    timing: &serde_json::Value,
    partial: bool,
    with_requests_csv: bool,
) -> Result<()> {
    let at = |name: &str| sub_path(sub, name);
    if with_requests_csv {
        dir.write(&at("requests.csv"), requests_csv(out).as_bytes())?;
    }
    dir.write(&at("replicas.csv"), replicas_csv(&out.summary).as_bytes())?;
    let pretty = pretty_json;
    let mut summary = serde_json::to_value(&out.summary).expect("summary serialises");
    if partial {
        summary["partial"] = serde_json::json!(true);
        // Unfinished requests are missing from the completions: no judgement of stability.
        summary["stability"] = serde_json::Value::Null;
    }
    dir.write(&at("summary.json"), pretty(&summary).as_bytes())?;
    dir.write(&at("config.json"), pretty(config).as_bytes())?;
    dir.write(&at("timing.json"), pretty(timing).as_bytes())?;
    if let Some(rows) = &out.kv_timeline {
        dir.write(&at("kv_timeline.csv"), kv_timeline_csv(rows).as_bytes())?;
    }
    if partial {
        dir.write(
            &at("PARTIAL"),
            partial_note(out.summary.requests).as_bytes(),
        )?;
    }
    Ok(())
}

/// The text of the `PARTIAL` file of a run stopped before every request finished.
pub fn partial_note(completed_requests: u64) -> String {
    format!(
        "stopped before every request finished: {completed_requests} requests completed; unfinished requests are not in requests.csv\n"
    )
}
