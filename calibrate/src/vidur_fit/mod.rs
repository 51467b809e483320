//! Fit the `analytic` cost model's efficiency factors ([`AnalyticParams`]) to Microsoft Vidur's
//! measured GPU operator times (`calibrate/data/vidur/`, see its README for provenance).
//!
//! Per Vidur device (`a100`, `h100`):
//! - `gemm_compute_eff`, `gemm_memory_eff`: the four linear operators of a layer, summed, against
//!   `AnalyticCost::linear_layer_s` (roofline), over every model and TP degree profiled;
//! - `layer_overhead_s`, `layer_s_per_token`: the small operators against `small_ops_layer_s`;
//! - `attn_prefill_eff`, `attn_decode_eff`: attention kernel samples (A100 only; other devices carry
//!   the A100 values over);
//! - `allreduce_latency_s`, `allreduce_eff`: single-node NCCL all-reduce times against the ring
//!   formula of `allreduce_bytes_s`;
//! - `iteration_overhead_s` is not in the data; it is the published vLLM per-step CPU overhead
//!   [`fit::ITERATION_OVERHEAD_S`] (sources there).
//!
//! [`AnalyticParams`]: servesim::cost::analytic::AnalyticParams

pub mod data;
pub mod fit;
pub mod render;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use servesim::catalogue::Catalogue;

pub use fit::{AttnSource, ErrRow, ErrStats, GpuData, GpuFit, Group, fit_gpu};

/// Vidur's model directory (under `compute/<device>/meta-llama/`) → servesim catalogue name.
pub const MODELS: [(&str, &str); 3] = [
    ("Llama-2-7b-hf", "llama-2-7b"),
    ("Llama-2-70b-hf", "llama-2-70b"),
    ("Meta-Llama-3-8B", "llama-3-8b"),
];

/// What is read for one Vidur device.
#[derive(Debug, Clone, Copy)]
pub struct DeviceInputs {
    /// Vidur's device name and `compute/` sub-folder.
    pub device: &'static str,
    /// The catalogue GPU Vidur's device is (its datasheet peaks scale the efficiencies).
    pub catalogue_gpu: &'static str,
    /// `network/` sub-folder with `all_reduce.csv`.
    pub network: &'static str,
    /// Vidur model folders with an `mlp.csv`.
    pub models: &'static [&'static str],
    /// Vidur model folder with `attention_samples.csv`, if any.
    pub attention_model: Option<&'static str>,
}

/// The inputs fitted, in fit order (the A100 first: the H100 carries its attention factors).
/// Vidur's `a100` is the 80 GB SXM part.
pub const DEVICES: [DeviceInputs; 2] = [
    DeviceInputs {
        device: "a100",
        catalogue_gpu: "a100-80gb",
        network: "a100_dgx",
        models: &["Llama-2-7b-hf", "Llama-2-70b-hf", "Meta-Llama-3-8B"],
        attention_model: Some("Llama-2-7b-hf"),
    },
    DeviceInputs {
        device: "h100",
        catalogue_gpu: "h100-80gb",
        network: "h100_dgx",
        models: &["Llama-2-7b-hf", "Llama-2-70b-hf"],
        attention_model: None,
    },
];

/// The committed data folder, `calibrate/data/vidur/`.
pub fn default_data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/vidur")
}

/// The catalogue file the fit writes, `sim/catalogue/analytic_fit.toml`.
pub fn default_fit_toml_path() -> PathBuf {
    let calibrate = Path::new(env!("CARGO_MANIFEST_DIR"));
    calibrate
        .parent()
        .unwrap_or(calibrate)
        .join("sim/catalogue/analytic_fit.toml")
}

/// The error report the fit writes, `calibrate/data/vidur/FIT_REPORT.md`.
pub fn default_report_path() -> PathBuf {
    default_data_dir().join("FIT_REPORT.md")
}

/// The `fit_date` of the first table of an `analytic_fit.toml` that has one.
pub fn fit_date_of(toml_text: &str) -> Option<String> {
    let t: toml::Table = toml::from_str(toml_text).ok()?;
    t.values().find_map(|v| {
        v.get("fit_date")
            .and_then(|d| d.as_str())
            .map(str::to_string)
    })
}

fn catalogue_name(vidur_model: &str) -> Result<&'static str> {
    MODELS
        .iter()
        .find(|(v, _)| *v == vidur_model)
        .map(|(_, c)| *c)
        .with_context(|| format!("no catalogue model for Vidur model `{vidur_model}`"))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// Load one device's samples from `dir` (laid out like Vidur's `data/profiling/`).
pub fn load_device(dir: &Path, d: &DeviceInputs, cat: &Catalogue) -> Result<GpuData> {
    let gpu = cat.gpu(d.catalogue_gpu)?.clone();
    let mut models = BTreeMap::new();
    let mut layers = Vec::new();
    for m in d.models {
        let name = catalogue_name(m)?;
        let spec = cat.model(name)?.clone();
        let path = dir.join(format!("compute/{}/meta-llama/{m}/mlp.csv", d.device));
        let rel = format!("compute/{}/meta-llama/{m}/mlp.csv", d.device);
        layers.extend(data::parse_mlp_csv(&read(&path)?, &rel, name, &spec)?);
        models.insert(name.to_string(), spec);
    }
    let attention = match d.attention_model {
        Some(m) => {
            let name = catalogue_name(m)?;
            let rel = format!("compute/{}/meta-llama/{m}/attention_samples.csv", d.device);
            let samples = data::parse_attention_csv(&read(&dir.join(&rel))?, &rel)?;
            models.insert(name.to_string(), cat.model(name)?.clone());
            Some((name.to_string(), samples))
        }
        None => None,
    };
    let rel = format!("network/{}/all_reduce.csv", d.network);
    let all_reduce = data::parse_all_reduce_csv(&read(&dir.join(&rel))?, &rel)?;
    Ok(GpuData {
        device: d.device.to_string(),
        catalogue_gpu: d.catalogue_gpu.to_string(),
        gpu,
        models,
        layers,
        attention,
        all_reduce,
        reference_model: catalogue_name(d.models[0])?.to_string(),
    })
}

/// Load and fit every device in [`DEVICES`], in order.
pub fn fit_all(dir: &Path) -> Result<Vec<GpuFit>> {
    let cat = Catalogue::builtin();
    let mut fits: Vec<GpuFit> = Vec::new();
    for d in &DEVICES {
        let data = load_device(dir, d, &cat)?;
        let carried = fits
            .iter()
            .find(|f| f.attention == AttnSource::Fitted)
            .map(|f| (f.device.as_str(), &f.params));
        let fit = fit_gpu(&data, carried).with_context(|| format!("fitting {}", d.device))?;
        fits.push(fit);
    }
    Ok(fits)
}
