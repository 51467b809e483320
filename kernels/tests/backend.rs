//! Correctness of the CPU backend: paged attention against a dense reference, incremental
//! decoding against a longer prefill, swaps, block accounting and the logits checksum.

use servesim_kernels::attention::{Heads, SeqRows, attention, reference_attention, write_kv};
use servesim_kernels::kv::{FreeList, KvPool};
use servesim_kernels::model::Rng;
use servesim_kernels::{Backend, BackendError, CpuBackend, CpuConfig, ModelDims, SeqStep};

fn dims() -> ModelDims {
    ModelDims {
        layers: 2,
        hidden: 64,
        heads: 4,
        kv_heads: 2,
        ffn: 176,
        vocab: 256,
        max_context_tokens: 256,
    }
}

fn backend(device_blocks: usize, host_bytes: usize) -> CpuBackend {
    CpuBackend::new(&CpuConfig {
        dims: dims(),
        threads: 2,
        seed: 42,
        device_blocks,
        host_bytes,
    })
    .unwrap()
}

fn step(seq: u64, cached_tokens: usize, new_tokens: usize) -> SeqStep {
    SeqStep {
        seq,
        cached_tokens,
        new_tokens,
    }
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rows `r0..r1` of the K (part 1) or V (part 2) columns of a fused QKV buffer.
fn kv_cols(qkv: &[f32], h: Heads, part: usize, r0: usize, r1: usize) -> Vec<f32> {
    let (w, kw) = (h.qkv_width(), h.kv_heads * h.head_dim);
    let start = h.heads * h.head_dim + (part - 1) * kw;
    (r0..r1)
        .flat_map(|r| qkv[r * w + start..r * w + start + kw].to_vec())
        .collect()
}

fn q_cols(qkv: &[f32], h: Heads, r0: usize, r1: usize) -> Vec<f32> {
    let (w, qw) = (h.qkv_width(), h.heads * h.head_dim);
    (r0..r1)
        .flat_map(|r| qkv[r * w..r * w + qw].to_vec())
        .collect()
}

#[test]
fn paged_prefill_and_chunks_match_dense_attention() {
    let h = Heads {
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
    };
    // 20 cached then a 50-token chunk; a 130-token prompt (tiles of 64 rows: three tiles, the
    // last one partial); a 2-token chunk after 37.
    for (cached, new) in [(20usize, 50usize), (0, 130), (37, 2)] {
        let total = cached + new;
        let mut rng = Rng::new(total as u64);
        let qkv: Vec<f32> = rng.fill(total * h.qkv_width(), 1.0);
        let mut pool = KvPool::new(64, 1, h.kv_heads, h.head_dim);
        let mut free = FreeList::new(64, 9);
        let table = free.take(total.div_ceil(16)).unwrap();
        let prefix = SeqRows {
            seq: 0,
            row0: 0,
            cached: 0,
            new: cached,
            table: table.clone(),
        };
        if cached > 0 {
            write_kv(&mut pool, 0, &qkv, &[prefix], h);
        }
        let chunk_qkv = qkv[cached * h.qkv_width()..].to_vec();
        let chunk = SeqRows {
            seq: 0,
            row0: 0,
            cached,
            new,
            table,
        };
        write_kv(&mut pool, 0, &chunk_qkv, std::slice::from_ref(&chunk), h);
        let mut out = vec![0.0; new * h.heads * h.head_dim];
        attention(&pool, 0, &chunk_qkv, &[chunk], h, &mut out);
        let want = reference_attention(
            &q_cols(&qkv, h, cached, total),
            &kv_cols(&qkv, h, 1, 0, total),
            &kv_cols(&qkv, h, 2, 0, total),
            cached,
            h,
        );
        assert!(max_diff(&out, &want) < 1e-4, "prefill ({cached}, {new})");
    }
}

#[test]
fn paged_decode_batch_matches_dense_attention() {
    let h = Heads {
        heads: 4,
        kv_heads: 2,
        head_dim: 16,
    };
    // A decode batch of three sequences with scattered blocks.
    let ctxs = [97usize, 1, 33];
    let mut pool = KvPool::new(64, 1, h.kv_heads, h.head_dim);
    let mut free = FreeList::new(64, 5);
    let mut rng = Rng::new(3);
    let mut step_qkv = Vec::new();
    let mut seqs = Vec::new();
    let mut refs = Vec::new();
    for (i, &ctx) in ctxs.iter().enumerate() {
        let qkv = rng.fill(ctx * h.qkv_width(), 1.0);
        let table = free.take(ctx.div_ceil(16)).unwrap();
        let past = SeqRows {
            seq: i as u64,
            row0: 0,
            cached: 0,
            new: ctx - 1,
            table: table.clone(),
        };
        if ctx > 1 {
            write_kv(&mut pool, 0, &qkv, &[past], h);
        }
        step_qkv.extend_from_slice(&qkv[(ctx - 1) * h.qkv_width()..]);
        seqs.push(SeqRows {
            seq: i as u64,
            row0: i,
            cached: ctx - 1,
            new: 1,
            table,
        });
        refs.extend(reference_attention(
            &q_cols(&qkv, h, ctx - 1, ctx),
            &kv_cols(&qkv, h, 1, 0, ctx),
            &kv_cols(&qkv, h, 2, 0, ctx),
            ctx - 1,
            h,
        ));
    }
    write_kv(&mut pool, 0, &step_qkv, &seqs, h);
    let mut out = vec![0.0; ctxs.len() * h.heads * h.head_dim];
    attention(&pool, 0, &step_qkv, &seqs, h, &mut out);
    assert!(max_diff(&out, &refs) < 1e-4, "decode");
}

#[test]
fn prefill_then_decode_equals_a_longer_prefill() {
    let vocab = dims().vocab;
    let mut a = backend(64, 0);
    a.forward(&[step(7, 0, 40)]).unwrap();
    a.forward(&[step(7, 40, 1)]).unwrap();
    let inc = a.last_logits().to_vec();
    // Chunked: 25 + 15, then the decode.
    let mut c = backend(64, 0);
    c.forward(&[step(7, 0, 25)]).unwrap();
    c.forward(&[step(7, 25, 15)]).unwrap();
    c.forward(&[step(7, 40, 1)]).unwrap();
    let chunked = c.last_logits().to_vec();
    let mut b = backend(64, 0);
    let out = b.forward(&[step(7, 0, 41)]).unwrap();
    let full = b.last_logits().to_vec();
    assert_eq!(full.len(), vocab);
    assert!(max_diff(&inc, &full) < 1e-4, "{}", max_diff(&inc, &full));
    assert!(max_diff(&chunked, &full) < 1e-4);
    assert_eq!(out.argmax.len(), 1);
    assert_eq!(b.seq_tokens(7), Some(41));
}

#[test]
fn swap_out_and_in_gives_identical_logits() {
    let block_bytes = dims().block_bytes();
    let mut a = backend(32, 16 * block_bytes);
    let mut b = backend(32, 16 * block_bytes);
    for be in [&mut a, &mut b] {
        be.forward(&[step(1, 0, 50), step(2, 0, 20)]).unwrap();
    }
    let (free_before, _) = a.device_blocks();
    a.swap_out(1).unwrap();
    assert_eq!(a.device_blocks().0, free_before + 4);
    assert_eq!(a.host_blocks().0, 16 - 4);
    // A swapped-out sequence cannot run, and swapping it out twice is an error.
    assert!(matches!(
        a.forward(&[step(1, 50, 1)]),
        Err(BackendError::BadStep { seq: 1, .. })
    ));
    assert!(a.swap_out(1).is_err());
    a.swap_in(1).unwrap();
    assert_eq!(a.host_blocks().0, 16);
    let sa = a.forward(&[step(1, 50, 1), step(2, 20, 1)]).unwrap();
    let sb = b.forward(&[step(1, 50, 1), step(2, 20, 1)]).unwrap();
    assert_eq!(a.last_logits(), b.last_logits());
    assert_eq!(sa, sb);
}

#[test]
fn release_frees_blocks_and_running_out_is_an_error() {
    let mut be = backend(8, 2 * dims().block_bytes());
    assert_eq!(be.device_blocks(), (8, 8));
    be.forward(&[step(1, 0, 33)]).unwrap(); // 3 blocks
    assert_eq!(be.device_blocks().0, 5);
    // 6 more blocks do not fit: an error, and nothing is taken.
    let e = be.forward(&[step(2, 0, 16), step(3, 0, 80)]).unwrap_err();
    assert!(
        matches!(e, BackendError::OutOfDeviceBlocks { seq: 3, .. }),
        "{e}"
    );
    assert_eq!(be.device_blocks().0, 5);
    assert_eq!(be.seq_tokens(2), None);
    // The host pool holds 2 blocks: a 3-block swap-out is refused.
    assert!(matches!(
        be.swap_out(1),
        Err(BackendError::OutOfHostBlocks { .. })
    ));
    be.release(1);
    assert_eq!(be.device_blocks().0, 8);
    assert_eq!(be.seq_tokens(1), None);
    be.release(1); // unknown: ignored
    // Wrong cached count, duplicate sequence, empty step, too long: errors.
    assert!(be.forward(&[step(4, 3, 1)]).is_err());
    assert!(be.forward(&[step(4, 0, 2), step(4, 0, 2)]).is_err());
    assert!(be.forward(&[step(4, 0, 0)]).is_err());
    assert!(be.forward(&[step(4, 0, 257)]).is_err());
    assert!(matches!(be.swap_in(9), Err(BackendError::UnknownSeq(9))));
}

#[test]
fn the_checksum_changes_with_the_batch() {
    let one = backend(64, 0).forward(&[step(1, 0, 8)]).unwrap();
    let two = backend(64, 0)
        .forward(&[step(1, 0, 8), step(2, 0, 5)])
        .unwrap();
    let other = backend(64, 0).forward(&[step(3, 0, 8)]).unwrap();
    assert!(one.checksum.is_finite() && one.checksum != 0.0);
    assert_ne!(one.checksum, two.checksum);
    assert_ne!(one.checksum, other.checksum);
    // The same batch gives the same result (deterministic weights and tokens).
    assert_eq!(one, backend(64, 0).forward(&[step(1, 0, 8)]).unwrap());
    assert_eq!(two.argmax[0], one.argmax[0]);
}

#[test]
fn bad_configurations_are_errors() {
    let mut d = dims();
    d.kv_heads = 3;
    let cfg = CpuConfig {
        dims: d,
        threads: 1,
        seed: 0,
        device_blocks: 4,
        host_bytes: 0,
    };
    assert!(matches!(
        CpuBackend::new(&cfg),
        Err(BackendError::Config(_))
    ));
    let cfg = CpuConfig {
        dims: dims(),
        device_blocks: 0,
        ..cfg
    };
    assert!(CpuBackend::new(&cfg).is_err());
    // A pool whose size overflows is an error, not an abort.
    let cfg = CpuConfig {
        device_blocks: usize::MAX / 64,
        ..cfg
    };
    assert!(matches!(
        CpuBackend::new(&cfg),
        Err(BackendError::Config(_))
    ));
}
