//! `import-vidur`: turn Microsoft Vidur's profiling CSVs (`calibrate/data/vidur/`, laid out like
//! Vidur's `data/profiling/`) into servesim profiles.
//!
//! From one device's `mlp.csv` at one TP degree: `qkv` (`attn_pre_proj`), `out_proj`
//! (`attn_post_proj`), `mlp_up` (`mlp_up_proj`, gate and up fused), `mlp_down` (`mlp_down_proj`)
//! and `small_ops` (the two norms, `mlp_act`, `attn_rope`, `add`), one row per Vidur row. From
//! `attention_samples.csv`: `attn_prefill` (x = chunk, y = cached tokens) and `attn_decode`
//! (x = batch, y = cached tokens + 1, the new token included as servesim counts context). From
//! `all_reduce.csv` (TP > 1): `all_reduce` over `tp` GPUs.
//!
//! Vidur measures no LM head and no host↔GPU copies, and attention only on the A100 for
//! Llama-2-7B at TP 1. What is missing is **derived**, marked `derived:…` in `source` and
//! explained in `meta.toml` `[provenance.derived]`:
//! - `lm_head` = `mlp_up` at the same token count × (vocab/tp) / (mlp_up output width): the same
//!   GEMM `k` (hidden) with `n` scaled (GEMM time is close to proportional to `n` at fixed m, k);
//! - attention on another GPU, model or TP = the A100 Llama-2-7B TP1 samples × the ratio of the
//!   `analytic` model's attention times (target / source) at the same shape;
//! - no copy rows: such profiles carry no swap model (`[swap] profile` needs a GPU run).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use servesim::catalogue::{Catalogue, ModelSpec};
use servesim::cost::analytic::AnalyticCost;
use servesim::profile::{
    DeviceInfo, Measurement, MeasurementInfo, Meta, Op, Profile, Provenance, SCHEMA_VERSION,
};

use crate::vidur_fit::data::{self, AttnPhase, AttnSample};
use crate::vidur_fit::fit::round_sig;
use crate::vidur_fit::{DEVICES, DeviceInputs, MODELS};

/// The iteration overhead written into imported profiles (not in Vidur's data; the analytic fit's
/// published vLLM figure, sources at [`crate::vidur_fit::fit::ITERATION_OVERHEAD_S`]).
pub const ITERATION_OVERHEAD_S: f64 = crate::vidur_fit::fit::ITERATION_OVERHEAD_S;

/// The profiles shipped in `calibrate/profiles/` by default: (Vidur device, model, TP).
pub const DEFAULT_SET: [(&str, &str, u32); 2] =
    [("a100", "llama-2-7b", 1), ("h100", "llama-2-7b", 1)];

/// What the driver would report for Vidur's devices (SXM parts; see the data README).
fn device_info(device: &str, memory_bytes: u64) -> DeviceInfo {
    let (name, sms, cc) = match device {
        "a100" => ("NVIDIA A100-SXM4-80GB", 108, "8.0"),
        "h100" => ("NVIDIA H100 80GB HBM3", 132, "9.0"),
        other => (other, 0, ""),
    };
    DeviceInfo {
        name: name.to_string(),
        sm_count: (sms > 0).then_some(sms),
        memory_bytes: Some(memory_bytes),
        compute_capability: (!cc.is_empty()).then(|| cc.to_string()),
        driver_version: None,
        cuda_version: None,
    }
}

/// The committed default output folder, `calibrate/profiles/`.
pub fn default_profiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("profiles")
}

/// `<root>/<gpu>/<model>/tp<k>`.
pub fn profile_dir(root: &Path, gpu: &str, model: &str, tp: u32) -> PathBuf {
    root.join(gpu).join(model).join(format!("tp{tp}"))
}

fn device(name: &str) -> Result<&'static DeviceInputs> {
    DEVICES.iter().find(|d| d.device == name).with_context(|| {
        format!(
            "unknown Vidur device `{name}`; known: {}",
            DEVICES.map(|d| d.device).join(", ")
        )
    })
}

fn vidur_folder(model: &str) -> Result<&'static str> {
    MODELS
        .iter()
        .find(|(_, c)| *c == model)
        .map(|(v, _)| *v)
        .with_context(|| {
            format!(
                "no Vidur profile of model `{model}`; Vidur models: {}",
                MODELS.map(|m| m.1).join(", ")
            )
        })
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

fn row(op: Op, x: u64, y: u64, time_s: f64, source: &str) -> Measurement {
    Measurement {
        op,
        x,
        y,
        // Vidur's milliseconds → seconds without binary-conversion noise in the CSV.
        time_s: round_sig(time_s, 10),
        min_s: None,
        max_s: None,
        repeats: None,
        source: source.to_string(),
    }
}

/// The analytic model of `model` at `tp` on a catalogue GPU, with its committed fitted parameters.
fn analytic(cat: &Catalogue, gpu: &str, model: &ModelSpec, tp: u32) -> Result<AnalyticCost> {
    let params = servesim::scenario::analytic_params_for(gpu, None).map_err(anyhow::Error::msg)?;
    Ok(AnalyticCost::new(
        model.clone(),
        cat.gpu(gpu)?.clone(),
        tp,
        params,
    )?)
}

/// The A100 Llama-2-7B TP1 attention samples (the only attention data Vidur has).
fn attention_source(dir: &Path) -> Result<(String, String, Vec<AttnSample>)> {
    let d = &DEVICES[0];
    let m = d
        .attention_model
        .context("the first Vidur device has attention samples")?;
    let rel = format!("compute/{}/meta-llama/{m}/attention_samples.csv", d.device);
    let samples = data::parse_attention_csv(&read(&dir.join(&rel))?, &rel)?;
    Ok((d.catalogue_gpu.to_string(), rel, samples))
}

/// What the sections of one profile import gather: sources, derived operators, measurements.
#[derive(Default)]
struct Gathered {
    sources: Vec<String>,
    derived: std::collections::BTreeMap<String, String>,
    rows: Vec<Measurement>,
}

/// Import one profile: Vidur `device` (`a100`, `h100`), catalogue `model`, TP degree `tp`.
pub fn import_profile(
    dir: &Path,
    device_name: &str,
    model: &str,
    tp: u32,
    date: &str,
) -> Result<Profile> {
    let d = device(device_name)?;
    let cat = Catalogue::builtin();
    let spec = cat.model(model)?.clone();
    let folder = vidur_folder(model)?;
    if !d.models.contains(&folder) {
        bail!(
            "Vidur has no {} profile of `{model}` (it has: {})",
            d.device,
            d.models.join(", ")
        );
    }
    let mut g = Gathered::default();
    linear_layers(&mut g, dir, d, folder, model, &spec, tp)?;
    let own = d.attention_model == Some(folder) && tp == 1;
    attention(&mut g, dir, d, &cat, model, &spec, tp, own)?;
    all_reduce(&mut g, dir, d, tp)?;
    let Gathered {
        sources,
        derived,
        rows,
    } = g;
    let meta = Meta {
        schema_version: SCHEMA_VERSION,
        gpu: d.catalogue_gpu.to_string(),
        model: model.to_string(),
        tp,
        created: date.to_string(),
        source: "vidur-import".to_string(),
        tool: format!("servesim-calibrate {} import-vidur", env!("CARGO_PKG_VERSION")),
        device: device_info(d.device, cat.gpu(d.catalogue_gpu)?.memory_bytes),
        measurement: MeasurementInfo {
            dtype: "fp16".into(),
            statistic: "median".into(),
            repeats: None,
            warmup: None,
            block_tokens: vec![],
            wall_s: None,
        },
        provenance: Provenance {
            sources,
            derived,
            notes: vec![
                "Vidur's files, checksums and licence: calibrate/data/vidur/README.md; times are Vidur's medians (ms → s)".into(),
                "driver/CUDA versions and repeat counts of Vidur's runs are not recorded in its data".into(),
                "no host↔GPU copy measurements: this profile has no swap model".into(),
            ],
        },
        grid: Default::default(),
        fit: Default::default(),
    };
    crate::fitting::fit_profile(
        meta,
        rows,
        ITERATION_OVERHEAD_S,
        vec![format!(
            "iteration_overhead_s = {ITERATION_OVERHEAD_S} is not measured: Vidur's operator profiles contain no CPU scheduling/sampling time; the published vLLM v0 per-step CPU overhead the analytic fit uses (vllm-project/vllm#6854; sources in sim/catalogue/analytic_fit.toml)"
        )],
        None,
    )
}

/// Linear layers and small operators from Vidur's `mlp.csv` at `tp`; the LM head derived from
/// `mlp_up`.
fn linear_layers(
    g: &mut Gathered,
    dir: &Path,
    d: &DeviceInputs,
    folder: &str,
    model: &str,
    spec: &ModelSpec,
    tp: u32,
) -> Result<()> {
    let rel = format!("compute/{}/meta-llama/{folder}/mlp.csv", d.device);
    let ops = data::parse_mlp_ops(&read(&dir.join(&rel))?, &rel, model, spec)?;
    let at_tp: Vec<_> = ops.iter().filter(|o| o.tp == tp).collect();
    if at_tp.is_empty() {
        let mut tps: Vec<u32> = ops.iter().map(|o| o.tp).collect();
        tps.sort_unstable();
        tps.dedup();
        bail!("{rel} has no rows at tp = {tp} (it has tp = {tps:?})");
    }
    let src = "vidur:mlp.csv";
    g.sources.push(format!(
        "Microsoft Vidur data/profiling (MIT), {rel} (rows with source vidur:mlp.csv): attn_pre_proj → qkv, attn_post_proj → out_proj, mlp_up_proj → mlp_up, mlp_down_proj → mlp_down, input_layernorm + post_attention_layernorm + mlp_act + attn_rope + add → small_ops ({} rows at tp {tp})",
        at_tp.len()
    ));
    let up_width = if spec.gated_mlp { 2 } else { 1 } * spec.ffn / tp;
    let lm_scale = spec.vocab.div_ceil(tp) as f64 / up_width as f64;
    for o in &at_tp {
        let x = o.tokens as u64;
        for (k, op) in Op::LAYER_GEMMS.iter().enumerate() {
            g.rows.push(row(*op, x, 0, o.linear_ms[k] * 1e-3, src));
        }
        g.rows.push(row(Op::SmallOps, x, 0, o.small_s(), src));
    }
    for o in &at_tp {
        g.rows.push(row(
            Op::LmHead,
            o.tokens as u64,
            0,
            o.linear_ms[2] * 1e-3 * lm_scale,
            "derived:mlp_up*vocab_ratio",
        ));
    }
    g.derived.insert(
        "lm_head".to_string(),
        format!(
            "not in Vidur's data: mlp_up at the same token count × (vocab/tp = {}) / (mlp_up width = {up_width}) = ×{lm_scale:.4} (same k = hidden, n scaled)",
            spec.vocab.div_ceil(tp)
        ),
    );
    Ok(())
}

/// Attention from the first Vidur device's samples: as they are (`own`: the profile's device,
/// model and tp 1), else scaled by the analytic model's ratio.
#[allow(clippy::too_many_arguments)]
fn attention(
    g: &mut Gathered,
    dir: &Path,
    d: &DeviceInputs,
    cat: &Catalogue,
    model: &str,
    spec: &ModelSpec,
    tp: u32,
    own: bool,
) -> Result<()> {
    let (src_gpu, att_rel, samples) = attention_source(dir)?;
    type Scale = Box<dyn Fn(&AttnSample) -> f64>;
    let (att_src, scale): (String, Scale) = if own {
        g.sources.push(format!(
            "Microsoft Vidur data/profiling (MIT), {att_rel} (rows with source vidur:attention_samples.csv): prefill rows → attn_prefill (x = chunk, y = cached), decode rows → attn_decode (x = batch, y = cached + 1)"
        ));
        ("vidur:attention_samples.csv".to_string(), Box::new(|_| 1.0))
    } else {
        let src_model = cat.model(vidur_catalogue_name(&DEVICES[0])?)?.clone();
        let from = analytic(cat, &src_gpu, &src_model, 1)?;
        let to = analytic(cat, d.catalogue_gpu, spec, tp)?;
        g.derived.insert(
            "attn_prefill, attn_decode".to_string(),
            format!(
                "Vidur has no attention data for {} {model} tp{tp}: the {src_gpu} llama-2-7b tp1 samples ({att_rel}) × the analytic model's attention time on {} {model} tp{tp} / on {src_gpu} llama-2-7b tp1 at the same shape (committed analytic_fit.toml parameters)",
                d.device, d.catalogue_gpu
            ),
        );
        (
            "derived:a100_attention*analytic_ratio".to_string(),
            Box::new(move |s: &AttnSample| match s.phase {
                AttnPhase::Prefill => {
                    let pairs = s.chunk as f64 * (s.chunk as f64 + 2.0 * s.kv as f64);
                    to.prefill_attention_layer_s(pairs) / from.prefill_attention_layer_s(pairs)
                }
                AttnPhase::Decode => {
                    let b = s.batch as f64;
                    let k = b * (s.kv as f64 + 1.0);
                    to.decode_attention_layer_s(b, k) / from.decode_attention_layer_s(b, k)
                }
            }),
        )
    };
    for s in &samples {
        let t = s.time_s * scale(s);
        match s.phase {
            AttnPhase::Prefill => g.rows.push(row(
                Op::AttnPrefill,
                s.chunk as u64,
                s.kv as u64,
                t,
                &att_src,
            )),
            AttnPhase::Decode => g.rows.push(row(
                Op::AttnDecode,
                s.batch as u64,
                s.kv as u64 + 1,
                t,
                &att_src,
            )),
        }
    }
    Ok(())
}

/// The all-reduce over `tp` GPUs of one node (none at tp 1).
fn all_reduce(g: &mut Gathered, dir: &Path, d: &DeviceInputs, tp: u32) -> Result<()> {
    if tp > 1 {
        let rel = format!("network/{}/all_reduce.csv", d.network);
        let ar = data::parse_all_reduce_csv(&read(&dir.join(&rel))?, &rel)?;
        let mut n = 0;
        for s in ar.iter().filter(|s| s.workers == tp) {
            g.rows.push(row(
                Op::AllReduce,
                s.bytes as u64,
                0,
                s.time_s,
                "vidur:all_reduce.csv",
            ));
            n += 1;
        }
        if n == 0 {
            bail!("{rel} has no all-reduce over {tp} GPUs");
        }
        g.sources.push(format!(
            "Microsoft Vidur data/profiling (MIT), {rel} (rows with source vidur:all_reduce.csv): NCCL all-reduce over {tp} GPUs of one node ({n} rows)"
        ));
    }
    Ok(())
}

fn vidur_catalogue_name(d: &DeviceInputs) -> Result<&'static str> {
    let m = d
        .attention_model
        .context("device without attention samples")?;
    MODELS
        .iter()
        .find(|(v, _)| *v == m)
        .map(|(_, c)| *c)
        .context("attention model not in MODELS")
}

/// The `created` date of an existing profile at `dir`, if any (so re-imports are reproducible).
pub fn existing_date(dir: &Path) -> Option<String> {
    Profile::load(dir).ok().map(|p| p.meta.created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imported_a100_profile_has_every_iteration_operator() {
        let p = import_profile(
            &crate::vidur_fit::default_data_dir(),
            "a100",
            "llama-2-7b",
            1,
            "2026-01-01",
        )
        .unwrap();
        for op in Op::ITERATION {
            assert!(p.rows_of(op).count() > 0, "{op:?}");
            assert!(p.op_fit(op).is_some(), "{op:?}");
        }
        assert_eq!(p.rows_of(Op::Qkv).count(), 261);
        // Attention is measured on the A100, the LM head derived.
        assert!(p.rows_of(Op::AttnDecode).all(|r| !r.is_derived()));
        assert!(p.rows_of(Op::LmHead).all(|r| r.is_derived()));
        assert_eq!(p.meta.fit["lm_head"].over, "derived");
        assert_eq!(p.meta.fit["qkv"].over, "measured");
        assert!(p.rows_of(Op::AllReduce).count() == 0);
    }

    #[test]
    fn h100_attention_is_derived_and_tp2_has_all_reduce() {
        let dir = crate::vidur_fit::default_data_dir();
        let p = import_profile(&dir, "h100", "llama-2-7b", 2, "2026-01-01").unwrap();
        assert!(p.rows_of(Op::AttnPrefill).all(|r| r.is_derived()));
        assert!(
            p.meta
                .provenance
                .derived
                .contains_key("attn_prefill, attn_decode")
        );
        assert!(p.rows_of(Op::AllReduce).count() > 100);
        assert!(p.op_fit(Op::AllReduce).is_some());
        // The H100 is faster than the A100 on the same derived attention shapes.
        let a = import_profile(&dir, "a100", "llama-2-7b", 1, "2026-01-01").unwrap();
        let h = import_profile(&dir, "h100", "llama-2-7b", 1, "2026-01-01").unwrap();
        let t = |p: &Profile| p.rows_of(Op::AttnDecode).map(|r| r.time_s).sum::<f64>();
        assert!(t(&h) < t(&a));
    }

    #[test]
    fn unknown_inputs_are_clear_errors() {
        let dir = crate::vidur_fit::default_data_dir();
        let e = import_profile(&dir, "tpu", "llama-2-7b", 1, "d").unwrap_err();
        assert!(e.to_string().contains("a100"), "{e}");
        let e = import_profile(&dir, "a100", "opt-13b", 1, "d").unwrap_err();
        assert!(e.to_string().contains("no Vidur profile"), "{e}");
        let e = import_profile(&dir, "h100", "llama-3-8b", 1, "d").unwrap_err();
        assert!(e.to_string().contains("no h100 profile"), "{e}");
        let e = import_profile(&dir, "a100", "llama-2-7b", 3, "d").unwrap_err();
        assert!(e.to_string().contains("tp = 3"), "{e}");
    }
}
