//! Model and GPU catalogue: data files (`sim/catalogue/*.toml`) compiled in as defaults, extendable
//! from a scenario's `catalogue_files` without recompiling.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};

const MODELS_TOML: &str = include_str!("../catalogue/models.toml");
const GPUS_TOML: &str = include_str!("../catalogue/gpus.toml");

/// Transformer shape. Units: counts, tokens, bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    pub layers: u32,
    pub hidden: u32,
    pub heads: u32,
    pub kv_heads: u32,
    pub ffn: u32,
    pub gated_mlp: bool,
    pub vocab: u32,
    pub dtype_bytes: u32,
    pub max_context_tokens: u32,
    pub tied_embeddings: bool,
    pub learned_positions: bool,
}

impl ModelSpec {
    pub fn head_dim(&self) -> u64 {
        (self.hidden / self.heads) as u64
    }
    /// Parameters of one layer's linear weights (QKV, output projection, MLP), biases ignored.
    pub fn layer_linear_params(&self) -> u64 {
        let h = self.hidden as u64;
        let q = self.heads as u64 * self.head_dim();
        let kv = 2 * self.kv_heads as u64 * self.head_dim();
        let attn = h * (q + kv) + q * h;
        let mlp = if self.gated_mlp { 3 } else { 2 } * h * self.ffn as u64;
        attn + mlp
    }
    /// All parameters: layers, token embedding, LM head (if untied), learned positions.
    pub fn params(&self) -> u64 {
        let h = self.hidden as u64;
        let emb = self.vocab as u64 * h;
        let head = if self.tied_embeddings { 0 } else { emb };
        let pos = if self.learned_positions {
            self.max_context_tokens as u64 * h
        } else {
            0
        };
        self.layers as u64 * self.layer_linear_params() + emb + head + pos
    }
    pub fn weight_bytes(&self) -> u64 {
        self.params() * self.dtype_bytes as u64
    }
    /// KV bytes per token over the whole model: 2 (K and V) × layers × kv_heads × head_dim × dtype.
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * self.layers as u64 * self.kv_heads as u64 * self.head_dim() * self.dtype_bytes as u64
    }
}

/// GPU datasheet figures. Units last in names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpuSpec {
    pub flops_per_s: f64,
    pub hbm_bytes_per_s: f64,
    pub memory_bytes: u64,
    pub pcie_generation: u32,
    pub pcie_bytes_per_s: f64,
    pub nvlink_bytes_per_s: f64,
}

/// The models and GPUs a scenario may name (names are lower-case).
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub models: BTreeMap<String, ModelSpec>,
    pub gpus: BTreeMap<String, GpuSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExtraFile {
    #[serde(default)]
    models: BTreeMap<String, ModelSpec>,
    #[serde(default)]
    gpus: BTreeMap<String, GpuSpec>,
}

impl Catalogue {
    /// The built-in catalogue.
    pub fn builtin() -> Self {
        let models: BTreeMap<String, ModelSpec> =
            toml::from_str(MODELS_TOML).expect("built-in models.toml is valid (unit-tested)");
        let gpus: BTreeMap<String, GpuSpec> =
            toml::from_str(GPUS_TOML).expect("built-in gpus.toml is valid (unit-tested)");
        Catalogue { models, gpus }
    }

    /// Add the `[models.NAME]` and `[gpus.NAME]` tables of a user file; same names replace.
    pub fn extend_from_file(&mut self, path: &Path) -> Result<()> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Io {
            path: path.to_path_buf(),
            msg: format!("cannot read catalogue file: {e}"),
        })?;
        let extra: ExtraFile = toml::from_str(&text).map_err(|e| SimError::Scenario {
            path: path.to_path_buf(),
            msg: crate::scenario::toml_error_message(&text, &e),
        })?;
        for (k, v) in extra.models {
            self.models.insert(k.to_lowercase(), v);
        }
        for (k, v) in extra.gpus {
            self.gpus.insert(k.to_lowercase(), v);
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Result<&ModelSpec> {
        self.models.get(&name.to_lowercase()).ok_or_else(|| {
            SimError::config(format!(
                "unknown model `{name}`; valid models: {}",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    pub fn gpu(&self, name: &str) -> Result<&GpuSpec> {
        self.gpus.get(&name.to_lowercase()).ok_or_else(|| {
            SimError::config(format!(
                "unknown GPU `{name}`; valid GPUs: {}",
                self.gpus.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_parses_and_has_the_issue_list() {
        let c = Catalogue::builtin();
        for m in [
            "opt-13b",
            "opt-30b",
            "opt-66b",
            "opt-175b",
            "llama-2-7b",
            "llama-2-13b",
            "llama-2-70b",
            "llama-3-8b",
            "llama-3-70b",
        ] {
            assert!(c.model(m).is_ok(), "{m}");
        }
        for g in ["a100-40gb", "a100-80gb", "h100-80gb", "h200"] {
            assert!(c.gpu(g).is_ok(), "{g}");
        }
    }

    #[test]
    fn parameter_counts_match_published_sizes() {
        let c = Catalogue::builtin();
        // Published: OPT-13B 12.85e9, Llama-2-7B 6.74e9, Llama-2-70B 68.98e9, Llama-3-8B 8.03e9.
        for (name, published) in [
            ("opt-13b", 12.85e9),
            ("llama-2-7b", 6.74e9),
            ("llama-2-70b", 68.98e9),
            ("llama-3-8b", 8.03e9),
            ("opt-175b", 175e9),
        ] {
            let p = c.model(name).unwrap().params() as f64;
            assert!(
                (p / published - 1.0).abs() < 0.01,
                "{name}: {p} vs {published}"
            );
        }
    }

    #[test]
    fn kv_bytes_per_token_match_vllm_table() {
        let c = Catalogue::builtin();
        // vLLM paper Table 1: OPT-13B 800 KB per token (= 2*40*5120*2 = 819,200 B).
        assert_eq!(c.model("opt-13b").unwrap().kv_bytes_per_token(), 819_200);
        // OPT-175B: 4.5 MiB = 4*96*12288.
        assert_eq!(
            c.model("opt-175b").unwrap().kv_bytes_per_token(),
            4 * 96 * 12288
        );
    }

    #[test]
    fn unknown_names_list_valid_ones() {
        let c = Catalogue::builtin();
        let e = c.model("gpt-5").unwrap_err().to_string();
        assert!(e.contains("llama-2-7b") && e.contains("gpt-5"), "{e}");
        let e = c.gpu("tpu").unwrap_err().to_string();
        assert!(e.contains("a100-40gb"), "{e}");
    }
}
