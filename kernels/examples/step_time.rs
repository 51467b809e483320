//! Median wall time of whole `CpuBackend::forward` iterations of a few batch shapes:
//!
//! ```text
//! cargo run --release -p servesim-kernels --example step_time -- [LAYERS HIDDEN HEADS FFN VOCAB] [THREADS]
//! ```
//! (default: the `cpu-small-4x512` shape, 2 threads).

use std::time::Instant;

use servesim_kernels::{Backend, CpuBackend, CpuConfig, ModelDims, SeqStep};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().expect("numbers"))
        .collect();
    let get = |i: usize, d: usize| a.get(i).copied().unwrap_or(d);
    let dims = ModelDims {
        layers: get(0, 4),
        hidden: get(1, 512),
        heads: get(2, 8),
        kv_heads: get(2, 8),
        ffn: get(3, 1408),
        vocab: get(4, 8192),
        max_context_tokens: 4096,
    };
    let threads = get(5, 2);
    let mut be = CpuBackend::new(&CpuConfig {
        dims,
        threads,
        seed: 0,
        device_blocks: 4096,
        host_bytes: 0,
    })
    .expect("backend");
    let mut seq = 0u64;
    for (batch, ctx) in [(1usize, 512usize), (16, 128), (16, 512), (64, 512)] {
        let ids: Vec<u64> = (seq..seq + batch as u64).collect();
        seq += batch as u64;
        let pre: Vec<SeqStep> = ids
            .iter()
            .map(|&s| SeqStep {
                seq: s,
                cached_tokens: 0,
                new_tokens: ctx - 11,
            })
            .collect();
        be.forward(&pre).expect("prefill");
        let mut times = Vec::new();
        for i in 0..10 {
            let steps: Vec<SeqStep> = ids
                .iter()
                .map(|&s| SeqStep {
                    seq: s,
                    cached_tokens: ctx - 11 + i,
                    new_tokens: 1,
                })
                .collect();
            let t = Instant::now();
            be.forward(&steps).expect("decode");
            times.push(t.elapsed().as_secs_f64());
        }
        println!(
            "decode b{batch}@{ctx}: {:.2} ms",
            1e3 * median(times[2..].to_vec())
        );
        ids.iter().for_each(|&s| be.release(s));
    }
    for n in [128usize, 512] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            be.forward(&[SeqStep {
                seq,
                cached_tokens: 0,
                new_tokens: n,
            }])
            .expect("prefill");
            times.push(t.elapsed().as_secs_f64());
            be.release(seq);
            seq += 1;
        }
        println!("prefill {n}: {:.2} ms", 1e3 * median(times));
    }
}
