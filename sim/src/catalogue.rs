//! Model and GPU catalogue: data files (`sim/catalogue/*.toml`) compiled in as defaults, extendable
//! from a scenario's `catalogue_files` without recompiling.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, SimError};

const MODELS_TOML: &str = include_str!("../catalogue/models.toml");
const GPUS_TOML: &str = include_str!("../catalogue/gpus.toml");

/// The catalogue "GPU" that stands for the CPU backend (`servesim-kernels`).
pub const CPU_DEVICE: &str = "cpu";

/// A model made for the CPU backend (names start with `cpu-`), not a published model.
pub fn is_cpu_test_model(name: &str) -> bool {
    name.to_lowercase().starts_with("cpu-")
}

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

    /// Every field in its range and the head counts consistent: `Err((field, message))`. With these
    /// bounds every derived size ([`Self::weight_bytes`], [`Self::kv_bytes_per_token`]) fits in u64.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        for (field, v, max) in [
            ("layers", self.layers, MAX_LAYERS),
            ("hidden", self.hidden, MAX_HIDDEN),
            ("heads", self.heads, MAX_HEADS),
            ("kv_heads", self.kv_heads, MAX_HEADS),
            ("ffn", self.ffn, MAX_FFN),
            ("vocab", self.vocab, MAX_VOCAB),
            ("dtype_bytes", self.dtype_bytes, MAX_DTYPE_BYTES),
            (
                "max_context_tokens",
                self.max_context_tokens,
                MAX_CONTEXT_TOKENS,
            ),
        ] {
            if v == 0 || v > max {
                return Err((
                    field,
                    format!("must be an integer from 1 to {max}, got {v}"),
                ));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err((
                "kv_heads",
                format!(
                    "kv_heads = {} must divide heads = {}",
                    self.kv_heads, self.heads
                ),
            ));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err((
                "heads",
                format!(
                    "heads = {} must divide hidden = {} (head_dim = hidden / heads)",
                    self.heads, self.hidden
                ),
            ));
        }
        Ok(())
    }
}

/// Upper bounds of the model fields (far above any published model; they keep every derived
/// byte count within 64 bits).
pub const MAX_LAYERS: u32 = 10_000;
pub const MAX_HIDDEN: u32 = 1 << 20;
pub const MAX_HEADS: u32 = 1 << 16;
pub const MAX_FFN: u32 = 1 << 22;
pub const MAX_VOCAB: u32 = 1 << 24;
pub const MAX_DTYPE_BYTES: u32 = 8;
pub const MAX_CONTEXT_TOKENS: u32 = 1 << 24;
/// Upper bounds of the GPU fields: 1 PiB of memory, 10²¹ FLOP/s, 10¹⁸ bytes/s, PCIe generation 16.
pub const MAX_GPU_MEMORY_BYTES: u64 = 1 << 50;
pub const MAX_FLOPS_PER_S: f64 = 1e21;
pub const MAX_BYTES_PER_S: f64 = 1e18;
pub const MAX_PCIE_GENERATION: u32 = 16;

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

impl GpuSpec {
    /// Every field finite, > 0 and within its bound: `Err((field, message))`.
    pub fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        for (field, v, max) in [
            ("flops_per_s", self.flops_per_s, MAX_FLOPS_PER_S),
            ("hbm_bytes_per_s", self.hbm_bytes_per_s, MAX_BYTES_PER_S),
            ("pcie_bytes_per_s", self.pcie_bytes_per_s, MAX_BYTES_PER_S),
            (
                "nvlink_bytes_per_s",
                self.nvlink_bytes_per_s,
                MAX_BYTES_PER_S,
            ),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= max) {
                return Err((
                    field,
                    format!("must be a finite number > 0 and ≤ {max:e}, got {v:.6e}"),
                ));
            }
        }
        if self.memory_bytes == 0 || self.memory_bytes > MAX_GPU_MEMORY_BYTES {
            return Err((
                "memory_bytes",
                format!(
                    "must be an integer from 1 to {MAX_GPU_MEMORY_BYTES} (1 PiB), got {}",
                    self.memory_bytes
                ),
            ));
        }
        if self.pcie_generation == 0 || self.pcie_generation > MAX_PCIE_GENERATION {
            return Err((
                "pcie_generation",
                format!(
                    "must be an integer from 1 to {MAX_PCIE_GENERATION}, got {}",
                    self.pcie_generation
                ),
            ));
        }
        Ok(())
    }
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

    /// Add the `[models.NAME]` and `[gpus.NAME]` tables of a user file. A name already defined
    /// (built in, by an earlier file, or twice in this one, case-blind) is an error: a silently
    /// replaced `opt-13b` would change every result that names it.
    pub fn extend_from_file(&mut self, path: &Path) -> Result<()> {
        let text = crate::input::read_text(path, crate::input::MAX_CONFIG_BYTES).map_err(|e| {
            SimError::Io {
                path: path.to_path_buf(),
                msg: format!("cannot read catalogue file: {e}"),
            }
        })?;
        let extra: ExtraFile = toml::from_str(&text).map_err(|e| SimError::Scenario {
            path: path.to_path_buf(),
            msg: crate::error::toml_error_message(&text, &e),
        })?;
        let bad = |table: &str, name: &str, field: &str, msg: String| {
            let field_name = format!("[{table}.{name}] {field}");
            match field_line(&text, table, name, field) {
                Some(line) => SimError::Input {
                    path: path.to_path_buf(),
                    line,
                    field: field_name,
                    msg,
                },
                None => SimError::Scenario {
                    path: path.to_path_buf(),
                    msg: format!("field `{field_name}`: {msg}"),
                },
            }
        };
        let builtin = Catalogue::builtin();
        let taken = |table: &str, name: &str, builtin_has: bool| {
            let what = if table == "models" { "model" } else { "GPU" };
            let lower = crate::error::echo(&name.to_lowercase());
            let before = if builtin_has {
                format!("the built-in {what} `{lower}`")
            } else {
                format!("{what} `{lower}`, defined earlier (names are case-blind)")
            };
            let msg = format!(
                "[{table}.{}] redefines {before}; give yours another name",
                crate::error::echo(name)
            );
            match table_line(&text, table, name) {
                Some(line) => SimError::Scenario {
                    path: path.to_path_buf(),
                    msg: format!("line {line}: {msg}"),
                },
                None => SimError::Scenario {
                    path: path.to_path_buf(),
                    msg,
                },
            }
        };
        for (k, v) in extra.models {
            v.validate()
                .map_err(|(field, msg)| bad("models", &k, field, msg))?;
            let key = k.to_lowercase();
            if self.models.contains_key(&key) {
                return Err(taken("models", &k, builtin.models.contains_key(&key)));
            }
            self.models.insert(key, v);
        }
        for (k, v) in extra.gpus {
            v.validate()
                .map_err(|(field, msg)| bad("gpus", &k, field, msg))?;
            let key = k.to_lowercase();
            if self.gpus.contains_key(&key) {
                return Err(taken("gpus", &k, builtin.gpus.contains_key(&key)));
            }
            self.gpus.insert(key, v);
        }
        Ok(())
    }

    pub fn model(&self, name: &str) -> Result<&ModelSpec> {
        self.models.get(&name.to_lowercase()).ok_or_else(|| {
            SimError::config(format!(
                "unknown model `{name}`; {}valid models: {}",
                crate::error::did_you_mean(name, self.models.keys().map(String::as_str)),
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    pub fn gpu(&self, name: &str) -> Result<&GpuSpec> {
        self.gpus.get(&name.to_lowercase()).ok_or_else(|| {
            SimError::config(format!(
                "unknown GPU `{name}`; {}valid GPUs: {}",
                crate::error::did_you_mean(name, self.gpus.keys().map(String::as_str)),
                self.gpus.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// The 1-based line of the `[table.name]` header of a catalogue file (`None` when the table is
/// written some other way, e.g. with dotted keys).
fn table_line(text: &str, table: &str, name: &str) -> Option<u64> {
    text.lines()
        .position(|l| {
            l.trim()
                .strip_prefix('[')
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|inner| inner.split_once('.'))
                .is_some_and(|(t, n)| {
                    t.trim() == table && n.trim().trim_matches(['"', '\'']) == name
                })
        })
        .map(|i| i as u64 + 1)
}

/// The 1-based line of `field = …` inside the `[table.name]` header of a catalogue file (a plain
/// line scan: the usual layout of these files; `None` when the key is written some other way).
fn field_line(text: &str, table: &str, name: &str, field: &str) -> Option<u64> {
    let header = |l: &str| {
        let l = l.trim();
        let inner = l.strip_prefix('[')?.strip_suffix(']')?;
        let (t, n) = inner.split_once('.')?;
        Some(t.trim() == table && n.trim().trim_matches(['"', '\'']) == name)
    };
    let mut inside = false;
    for (i, l) in text.lines().enumerate() {
        if let Some(is_ours) = header(l) {
            inside = is_ours;
        } else if l.trim_start().starts_with('[') {
            inside = false;
        } else if inside
            && l.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches(['"', '\'']) == field)
        {
            return Some(i as u64 + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_entries_pass_validation() {
        let c = Catalogue::builtin();
        for (name, m) in &c.models {
            assert_eq!(m.validate(), Ok(()), "{name}");
        }
        for (name, g) in &c.gpus {
            assert_eq!(g.validate(), Ok(()), "{name}");
        }
    }

    #[test]
    fn largest_valid_model_sizes_fit_in_u64() {
        let m = ModelSpec {
            layers: MAX_LAYERS,
            hidden: MAX_HIDDEN,
            heads: 1,
            kv_heads: 1,
            ffn: MAX_FFN,
            gated_mlp: true,
            vocab: MAX_VOCAB,
            dtype_bytes: MAX_DTYPE_BYTES,
            max_context_tokens: MAX_CONTEXT_TOKENS,
            tied_embeddings: false,
            learned_positions: true,
        };
        assert_eq!(m.validate(), Ok(()));
        let params = 10_000u128 * ((1u128 << 20) * 3 * (1 << 20) + (1 << 40) + 3 * (1 << 42))
            + 3 * (1u128 << 44);
        assert_eq!(m.params() as u128, params);
        assert!(params * 8 < u64::MAX as u128);
        assert!(m.kv_bytes_per_token() > 0);
    }

    #[test]
    fn bad_user_entries_name_file_line_model_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = "[models.m]\nlayers = 32\nhidden = 4096\nheads = 32\nkv_heads = 8\nffn = 11008\ngated_mlp = true\nvocab = 32000\ndtype_bytes = 2\nmax_context_tokens = 4096\ntied_embeddings = false\nlearned_positions = false\n[gpus.g]\nflops_per_s = 1e15\nhbm_bytes_per_s = 2e12\nmemory_bytes = 85899345920\npcie_generation = 4\npcie_bytes_per_s = 3e10\nnvlink_bytes_per_s = 3e11\n";
        let p = dir.path().join("cat.toml");
        std::fs::write(&p, good).unwrap();
        Catalogue::builtin().extend_from_file(&p).unwrap();
        for (from, to, line, field) in [
            ("layers = 32", "layers = 0", 2, "[models.m] layers"),
            ("hidden = 4096", "hidden = 0", 3, "[models.m] hidden"),
            ("heads = 32", "heads = 0", 4, "[models.m] heads"),
            ("kv_heads = 8", "kv_heads = 0", 5, "[models.m] kv_heads"),
            ("kv_heads = 8", "kv_heads = 5", 5, "[models.m] kv_heads"),
            ("hidden = 4096", "hidden = 4100", 4, "[models.m] heads"),
            (
                "dtype_bytes = 2",
                "dtype_bytes = 0",
                9,
                "[models.m] dtype_bytes",
            ),
            ("ffn = 11008", "ffn = 4294967295", 6, "[models.m] ffn"),
            (
                "flops_per_s = 1e15",
                "flops_per_s = nan",
                14,
                "[gpus.g] flops_per_s",
            ),
            (
                "memory_bytes = 85899345920",
                "memory_bytes = 0",
                16,
                "[gpus.g] memory_bytes",
            ),
            (
                "nvlink_bytes_per_s = 3e11",
                "nvlink_bytes_per_s = -1.0",
                19,
                "[gpus.g] nvlink_bytes_per_s",
            ),
            (
                "pcie_generation = 4",
                "pcie_generation = 0",
                17,
                "[gpus.g] pcie_generation",
            ),
        ] {
            std::fs::write(&p, good.replace(from, to)).unwrap();
            let e = Catalogue::builtin()
                .extend_from_file(&p)
                .unwrap_err()
                .to_string();
            let want = format!("{}:{line}: field `{field}`", p.display());
            assert!(e.starts_with(&want), "{to}: {e} (wanted {want})");
        }
    }

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
        for g in ["a100-40gb", "a100-80gb", "h100-80gb", "h200", CPU_DEVICE] {
            assert!(c.gpu(g).is_ok(), "{g}");
        }
    }

    #[test]
    fn cpu_test_models_have_the_documented_shapes() {
        let c = Catalogue::builtin();
        for (name, layers, hidden, vocab) in [
            ("cpu-tiny-2x256", 2, 256, 8192),
            ("cpu-small-4x512", 4, 512, 8192),
            ("cpu-medium-8x1024", 8, 1024, 32000),
        ] {
            let m = c.model(name).unwrap();
            assert!(is_cpu_test_model(name));
            assert_eq!((m.layers, m.hidden, m.vocab), (layers, hidden, vocab));
            assert_eq!((m.head_dim(), m.dtype_bytes), (64, 4), "{name}");
        }
        // 4x512: 16 KiB of f32 KV per token (doc: cpu-backend.md §4).
        assert_eq!(
            c.model("cpu-small-4x512").unwrap().kv_bytes_per_token(),
            16 << 10
        );
        assert!(!is_cpu_test_model("llama-2-7b"));
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
