//! Readers for Vidur's profiling CSVs. Every reader takes the file's text (pure, testable on
//! hand-made strings) and finds columns by header name, so it accepts the upstream files unchanged
//! as well as the column-trimmed copies committed under `calibrate/data/vidur/`.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use servesim::catalogue::ModelSpec;

/// The linear (GEMM) operators of one layer: QKV projection, output projection, MLP up (Vidur fuses
/// gate and up for a gated MLP) and down projections.
pub const LINEAR_OPS: [&str; 4] = [
    "attn_pre_proj",
    "attn_post_proj",
    "mlp_up_proj",
    "mlp_down_proj",
];

/// The small per-layer operators: the two RMSNorms, the MLP activation, rotary embedding and the
/// residual add. Vidur profiles `add` once per layer and adds it once per block, so it is summed once.
pub const SMALL_OPS: [&str; 5] = [
    "input_layernorm",
    "post_attention_layernorm",
    "mlp_act",
    "attn_rope",
    "add",
];

/// One row of an `mlp.csv`: a single layer's operator medians at one token count and TP degree.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSample {
    /// Catalogue name of the model (e.g. `llama-2-7b`).
    pub model: String,
    pub tp: u32,
    pub tokens: u32,
    /// Σ of the [`LINEAR_OPS`] medians, seconds.
    pub linear_s: f64,
    /// Σ of the [`SMALL_OPS`] medians, seconds.
    pub small_s: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AttnPhase {
    Prefill,
    Decode,
}

/// One attention-kernel measurement (per layer, TP 1).
#[derive(Debug, Clone, PartialEq)]
pub struct AttnSample {
    pub phase: AttnPhase,
    /// Decode: sequences in the batch. Prefill: 1.
    pub batch: u32,
    /// Prefill: new tokens in the chunk. Decode: 0.
    pub chunk: u32,
    /// KV tokens already cached per sequence (the prefix a prefill chunk also attends to).
    pub kv: u32,
    pub time_s: f64,
}

/// One NCCL all-reduce measurement inside one node.
#[derive(Debug, Clone, PartialEq)]
pub struct AllReduceSample {
    pub workers: u32,
    pub bytes: f64,
    pub time_s: f64,
}

struct Table {
    headers: HashMap<String, usize>,
    rows: Vec<csv::StringRecord>,
    source: String,
}

impl Table {
    fn parse(text: &str, source: &str) -> Result<Table> {
        let mut rdr = csv::ReaderBuilder::new()
            .has_headers(true)
            .from_reader(text.as_bytes());
        let headers = rdr
            .headers()
            .with_context(|| format!("{source}: cannot read the CSV header"))?
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_string(), i))
            .collect();
        let mut rows = Vec::new();
        for (i, r) in rdr.records().enumerate() {
            rows.push(r.with_context(|| format!("{source}: line {}", i + 2))?);
        }
        Ok(Table {
            headers,
            rows,
            source: source.to_string(),
        })
    }

    fn col(&self, name: &str) -> Result<usize> {
        self.headers
            .get(name)
            .copied()
            .with_context(|| format!("{}: no column `{name}`", self.source))
    }

    fn get(&self, row: usize, col: usize, name: &str) -> Result<&str> {
        self.rows[row]
            .get(col)
            .map(str::trim)
            .with_context(|| format!("{}: line {}: missing field `{name}`", self.source, row + 2))
    }

    fn num(&self, row: usize, col: usize, name: &str) -> Result<f64> {
        let s = self.get(row, col, name)?;
        let v: f64 = s.parse().with_context(|| {
            format!(
                "{}: line {}: field `{name}`: `{s}` is not a number",
                self.source,
                row + 2
            )
        })?;
        if !v.is_finite() {
            bail!(
                "{}: line {}: field `{name}` is not finite",
                self.source,
                row + 2
            );
        }
        Ok(v)
    }

    fn uint(&self, row: usize, col: usize, name: &str) -> Result<u64> {
        let s = self.get(row, col, name)?;
        s.parse().with_context(|| {
            format!(
                "{}: line {}: field `{name}`: `{s}` is not a non-negative integer",
                self.source,
                row + 2
            )
        })
    }
}

/// One row of an `mlp.csv` with every operator kept apart (milliseconds, as in the file).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerOps {
    pub tp: u32,
    pub tokens: u32,
    /// Medians of [`LINEAR_OPS`], in that order, ms.
    pub linear_ms: [f64; 4],
    /// Medians of [`SMALL_OPS`], in that order, ms.
    pub small_ms: [f64; 5],
}

impl LayerOps {
    /// Σ of the linear operators, seconds.
    pub fn linear_s(&self) -> f64 {
        let mut s = 0.0;
        for v in self.linear_ms {
            s += v;
        }
        s * 1e-3
    }
    /// Σ of the small operators, seconds.
    pub fn small_s(&self) -> f64 {
        let mut s = 0.0;
        for v in self.small_ms {
            s += v;
        }
        s * 1e-3
    }
}

/// Parse a Vidur `mlp.csv` for the catalogue model `model` (`spec` its shape). The dimension columns
/// of every row must match `spec`, so a file can never be fitted against the wrong model.
pub fn parse_mlp_csv(
    text: &str,
    source: &str,
    model: &str,
    spec: &ModelSpec,
) -> Result<Vec<LayerSample>> {
    Ok(parse_mlp_ops(text, source, model, spec)?
        .into_iter()
        .map(|o| LayerSample {
            model: model.to_string(),
            tp: o.tp,
            tokens: o.tokens,
            linear_s: o.linear_s(),
            small_s: o.small_s(),
        })
        .collect())
}

/// The columns `time_stats.{op}.median` of `ops`, with their names.
fn median_cols(t: &Table, ops: &[&str]) -> Result<Vec<(usize, String)>> {
    ops.iter()
        .map(|op| {
            let name = format!("time_stats.{op}.median");
            Ok((t.col(&name)?, name))
        })
        .collect()
}

/// Like [`parse_mlp_csv`], keeping every operator's median apart.
pub fn parse_mlp_ops(
    text: &str,
    source: &str,
    model: &str,
    spec: &ModelSpec,
) -> Result<Vec<LayerOps>> {
    let t = Table::parse(text, source)?;
    let lin = median_cols(&t, &LINEAR_OPS)?;
    let small = median_cols(&t, &SMALL_OPS)?;
    let dims = [
        ("n_head", spec.heads as u64),
        ("n_kv_head", spec.kv_heads as u64),
        ("n_embd", spec.hidden as u64),
        ("n_expanded_embd", spec.ffn as u64),
    ];
    let dim_cols: Vec<(usize, &str, u64)> = dims
        .iter()
        .map(|&(n, v)| Ok((t.col(n)?, n, v)))
        .collect::<Result<_>>()?;
    let gated = t.col("use_gated_mlp")?;
    let tokens = t.col("num_tokens")?;
    let tp = t.col("num_tensor_parallel_workers")?;
    let mut out = Vec::with_capacity(t.rows.len());
    for i in 0..t.rows.len() {
        for &(c, n, want) in &dim_cols {
            let got = t.uint(i, c, n)?;
            if got != want {
                bail!(
                    "{source}: line {}: `{n}` = {got} but catalogue model `{model}` has {want}",
                    i + 2
                );
            }
        }
        let g = t
            .get(i, gated, "use_gated_mlp")?
            .eq_ignore_ascii_case("true");
        if g != spec.gated_mlp {
            bail!(
                "{source}: line {}: `use_gated_mlp` = {g} but catalogue model `{model}` has {}",
                i + 2,
                spec.gated_mlp
            );
        }
        let mut linear_ms = [0.0; 4];
        for (k, (c, n)) in lin.iter().enumerate() {
            linear_ms[k] = t.num(i, *c, n)?;
        }
        let mut small_ms = [0.0; 5];
        for (k, (c, n)) in small.iter().enumerate() {
            small_ms[k] = t.num(i, *c, n)?;
        }
        let sample = LayerOps {
            tp: t.uint(i, tp, "num_tensor_parallel_workers")? as u32,
            tokens: t.uint(i, tokens, "num_tokens")? as u32,
            linear_ms,
            small_ms,
        };
        if sample.tp == 0
            || sample.tokens == 0
            || sample.linear_s() <= 0.0
            || sample.small_s() <= 0.0
        {
            bail!(
                "{source}: line {}: zero TP, tokens or time in {sample:?}",
                i + 2
            );
        }
        out.push(sample);
    }
    if out.is_empty() {
        bail!("{source}: no rows");
    }
    Ok(out)
}

/// Parse `attention_samples.csv`: `phase,batch_size,prefill_chunk_size,kv_cache_size,attn_median_ms`.
pub fn parse_attention_csv(text: &str, source: &str) -> Result<Vec<AttnSample>> {
    let t = Table::parse(text, source)?;
    let (ph, b, c, kv, ms) = (
        t.col("phase")?,
        t.col("batch_size")?,
        t.col("prefill_chunk_size")?,
        t.col("kv_cache_size")?,
        t.col("attn_median_ms")?,
    );
    let mut out = Vec::with_capacity(t.rows.len());
    for i in 0..t.rows.len() {
        let phase = match t.get(i, ph, "phase")? {
            "prefill" => AttnPhase::Prefill,
            "decode" => AttnPhase::Decode,
            other => bail!(
                "{source}: line {}: phase `{other}` is neither prefill nor decode",
                i + 2
            ),
        };
        let s = AttnSample {
            phase,
            batch: t.uint(i, b, "batch_size")? as u32,
            chunk: t.uint(i, c, "prefill_chunk_size")? as u32,
            kv: t.uint(i, kv, "kv_cache_size")? as u32,
            time_s: t.num(i, ms, "attn_median_ms")? * 1e-3,
        };
        let ok = s.time_s > 0.0
            && match phase {
                AttnPhase::Prefill => s.chunk > 0,
                AttnPhase::Decode => s.batch > 0 && s.kv > 0,
            };
        if !ok {
            bail!("{source}: line {}: empty or zero-time sample {s:?}", i + 2);
        }
        out.push(s);
    }
    if out.is_empty() {
        bail!("{source}: no rows");
    }
    Ok(out)
}

/// Parse Vidur's `all_reduce.csv`, keeping the single-node rows (`devices_per_node == num_workers`,
/// i.e. NVLink only — tensor parallelism never spans nodes in servesim).
pub fn parse_all_reduce_csv(text: &str, source: &str) -> Result<Vec<AllReduceSample>> {
    let t = Table::parse(text, source)?;
    let (ms, nw, size, dpn) = (
        t.col("time_stats.all_reduce.median")?,
        t.col("num_workers")?,
        t.col("size")?,
        t.col("devices_per_node")?,
    );
    let mut out = Vec::new();
    for i in 0..t.rows.len() {
        let workers = t.uint(i, nw, "num_workers")?;
        if t.uint(i, dpn, "devices_per_node")? != workers {
            continue;
        }
        let s = AllReduceSample {
            workers: workers as u32,
            bytes: t.uint(i, size, "size")? as f64,
            time_s: t.num(i, ms, "time_stats.all_reduce.median")? * 1e-3,
        };
        if s.workers < 2 || s.bytes <= 0.0 || s.time_s <= 0.0 {
            bail!("{source}: line {}: degenerate sample {s:?}", i + 2);
        }
        out.push(s);
    }
    if out.is_empty() {
        bail!("{source}: no single-node rows");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use servesim::catalogue::Catalogue;

    fn header() -> String {
        let mut cols: Vec<String> = LINEAR_OPS
            .iter()
            .chain(SMALL_OPS.iter())
            .map(|op| format!("time_stats.{op}.median"))
            .collect();
        cols.push("time_stats.emb.median".into());
        for c in [
            "n_head",
            "n_kv_head",
            "n_embd",
            "n_expanded_embd",
            "vocab_size",
            "use_gated_mlp",
            "num_tokens",
            "num_tensor_parallel_workers",
        ] {
            cols.push(c.into());
        }
        cols.join(",")
    }

    #[test]
    fn mlp_rows_sum_linear_and_small_ops_in_seconds() {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        let text = format!(
            "{}\n1,2,3,4,0.5,0.5,1,1,1,9,32,32,4096,11008,32768,True,128,2\n",
            header()
        );
        let s = parse_mlp_csv(&text, "t.csv", "llama-2-7b", &spec).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].tp, s[0].tokens), (2, 128));
        assert!((s[0].linear_s - 10e-3).abs() < 1e-15);
        assert!((s[0].small_s - 4e-3).abs() < 1e-15);
    }

    #[test]
    fn mlp_rejects_a_file_of_another_model() {
        let spec = Catalogue::builtin().model("llama-2-70b").unwrap().clone();
        let text = format!(
            "{}\n1,2,3,4,0.5,0.5,1,1,1,9,32,32,4096,11008,32768,True,128,2\n",
            header()
        );
        let e = parse_mlp_csv(&text, "t.csv", "llama-2-70b", &spec).unwrap_err();
        assert!(e.to_string().contains("n_head"), "{e}");
    }

    #[test]
    fn mlp_reports_a_missing_column() {
        let spec = Catalogue::builtin().model("llama-2-7b").unwrap().clone();
        let e = parse_mlp_csv("num_tokens\n1\n", "t.csv", "llama-2-7b", &spec).unwrap_err();
        assert!(
            e.to_string().contains("time_stats.attn_pre_proj.median"),
            "{e}"
        );
    }

    #[test]
    fn attention_rows_parse_both_phases() {
        let text = "phase,batch_size,prefill_chunk_size,kv_cache_size,attn_median_ms\n\
                    decode,4,0,32,0.01\nprefill,1,96,160,0.02\n";
        let s = parse_attention_csv(text, "a.csv").unwrap();
        assert_eq!(s[0].phase, AttnPhase::Decode);
        assert_eq!((s[0].batch, s[0].kv), (4, 32));
        assert_eq!(s[1].phase, AttnPhase::Prefill);
        assert_eq!((s[1].chunk, s[1].kv), (96, 160));
        assert!((s[1].time_s - 2e-5).abs() < 1e-18);
        assert!(parse_attention_csv(&text.replace("decode,4", "other,4"), "a.csv").is_err());
    }

    #[test]
    fn all_reduce_keeps_single_node_rows_only() {
        let text = ",time_stats.all_reduce.median,rank,num_workers,size,collective,devices_per_node,max_devices_per_node\n\
                    0,0.05,0,2,2048,all_reduce,1,8\n\
                    1,0.04,0,2,4096,all_reduce,2,8\n\
                    2,0.03,0,8,4096,all_reduce,8,8\n";
        let s = parse_all_reduce_csv(text, "n.csv").unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s[0].workers, s[0].bytes), (2, 4096.0));
        assert!((s[1].time_s - 3e-5).abs() < 1e-18);
    }
}
