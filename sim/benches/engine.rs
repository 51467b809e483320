//! Criterion benchmarks of whole simulation runs (issue "Performance"). Run with
//! `cargo bench -p servesim` from the repository root; `servesim bench` gives the same runs'
//! requests/s, iterations/s, events/s and peak RSS in one table.
//!
//! Cases: the 10,000-request Azure-conversation `vllm` workload (the Vidur comparison), 10,000
//! ShareGPT requests at 90% load for `vllm`, `skip-join-mlfq` and `srpt-oracle`, each of the
//! fast-forwarded policies also stepping every iteration (`--no-fast-forward`), and the
//! 16-replica cluster scenario cut to 20,000 requests.

use std::path::{Path, PathBuf};

use criterion::{Criterion, criterion_group, criterion_main};
use servesim::scenario::{Overrides, Resolved, load};

fn scenario(name: &str, num_requests: u64) -> Resolved {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let path: PathBuf = root.join("scenarios").join(name);
    load(&path)
        .and_then(|l| {
            l.resolve(&Overrides {
                num_requests: Some(num_requests),
                ..Default::default()
            })
        })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn runs(c: &mut Criterion) {
    let mut g = c.benchmark_group("run");
    g.sample_size(10);
    let cases = [
        (
            "azure_conv_vllm_10k",
            "bench_vllm_azure_conv_10k.toml",
            10_000,
            true,
        ),
        (
            "azure_conv_vllm_10k_stepping",
            "bench_vllm_azure_conv_10k.toml",
            10_000,
            false,
        ),
        (
            "sharegpt_vllm_10k",
            "bench_sharegpt_vllm.toml",
            10_000,
            true,
        ),
        (
            "sharegpt_skipjoin_10k",
            "bench_sharegpt_skipjoin.toml",
            10_000,
            true,
        ),
        (
            "sharegpt_skipjoin_10k_stepping",
            "bench_sharegpt_skipjoin.toml",
            10_000,
            false,
        ),
        (
            "sharegpt_srpt_oracle_10k",
            "bench_sharegpt_srpt.toml",
            10_000,
            true,
        ),
        ("cluster_16x_20k", "cluster_1m_16x.toml", 20_000, true),
    ];
    for (label, file, n, fast_forward) in cases {
        let r = scenario(file, n);
        g.bench_function(label, |b| {
            b.iter(|| {
                let o = servesim::run::run_with(&r, None, fast_forward).expect("run");
                assert_eq!(o.summary.requests, n);
                o.stats.iterations
            })
        });
    }
    g.finish();
}

criterion_group!(benches, runs);
criterion_main!(benches);
