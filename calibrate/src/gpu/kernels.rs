//! CUDA C sources of servesim's own kernels, compiled at run time with NVRTC (no CUDA headers
//! needed: fp16 is `unsigned short` converted with inline PTX). fp16 storage, fp32 math.
//!
//! Layouts (row-major):
//! - KV cache: `[num_blocks, block_size, num_kv_heads, head_dim]` for K and for V;
//! - decode: `q`, `out` `[num_seqs, num_heads, head_dim]`, `block_tables` `[num_seqs,
//!   max_blocks_per_seq]`, `context_lens` `[num_seqs]`;
//! - prefill (one sequence): `q`, `out` `[chunk, num_heads, head_dim]`, `block_table`
//!   `[ceil((cached + chunk) / block_size)]`; query `i` sits at position `cached + i` and attends
//!   to positions `0..=cached + i` (its own K/V already in the cache).
//!
//! Grouped-query attention: query head `h` reads KV head `h / (num_heads / num_kv_heads)`.
//! `head_dim` must be a multiple of 32 and at most [`MAX_HEAD_DIM`].

/// Largest head dimension the attention kernels support.
pub const MAX_HEAD_DIM: u32 = 128;
/// Query rows (warps) per thread block of the prefill kernel.
pub const PREFILL_ROWS: u32 = 4;
/// Threads per block of the decode kernel.
pub const DECODE_THREADS: u32 = 128;
/// Static shared memory of the decode kernel (bytes), besides its dynamic `context × 4`.
pub const DECODE_STATIC_SMEM: u32 = (32 + MAX_HEAD_DIM + 4 * MAX_HEAD_DIM) * 4;

/// Kernel names in [`SOURCE`], in load order.
pub const NAMES: [&str; 10] = [
    "fill_random_f16",
    "rmsnorm_f16",
    "layernorm_f16",
    "silu_mul_f16",
    "relu_f16",
    "rope_f16",
    "add_f16",
    "paged_decode_f16",
    "paged_prefill_f16",
    "gather_copy",
];

pub const SOURCE: &str = r#"
typedef unsigned short f16_t;
#define MAX_HEAD_DIM 128
#define PF_ROWS 4
#define PF_TILE 32
#define DEC_WARPS 4
#define NEG_BIG (-3.402823466e+38f)

__device__ __forceinline__ float h2f(f16_t h) {
    float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f;
}
__device__ __forceinline__ f16_t f2h(float f) {
    f16_t h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h;
}
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}
/* Block-wide sum / max; blockDim.x a multiple of 32; `red` holds 32 floats. */
__device__ float block_sum(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = (lane < nw) ? red[lane] : 0.0f;
        r = warp_sum(r);
        if (lane == 0) red[0] = r;
    }
    __syncthreads();
    return red[0];
}
__device__ float block_max(float v, float* red) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) red[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float r = (lane < nw) ? red[lane] : NEG_BIG;
        r = warp_max(r);
        if (lane == 0) red[0] = r;
    }
    __syncthreads();
    return red[0];
}
__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* p[i] = uniform in [-scale, scale), a hash of (seed, i). */
extern "C" __global__ void fill_random_f16(f16_t* p, long long n, unsigned long long seed, float scale) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        unsigned long long h = mix64(seed ^ mix64((unsigned long long)i));
        float u = (float)(h >> 40) * (1.0f / 16777216.0f);
        p[i] = f2h((2.0f * u - 1.0f) * scale);
    }
}

/* One block per token: out = x / rms(x) * w. */
extern "C" __global__ void rmsnorm_f16(f16_t* out, const f16_t* in, const f16_t* w, int hidden, float eps) {
    __shared__ float red[32];
    const f16_t* x = in + (size_t)blockIdx.x * hidden;
    f16_t* y = out + (size_t)blockIdx.x * hidden;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) { float v = h2f(x[i]); ss += v * v; }
    const float inv = rsqrtf(block_sum(ss, red) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) y[i] = f2h(h2f(x[i]) * inv * h2f(w[i]));
}

/* One block per token: out = (x - mean) / sqrt(var + eps) * w + b. */
extern "C" __global__ void layernorm_f16(f16_t* out, const f16_t* in, const f16_t* w, const f16_t* b,
                                         int hidden, float eps) {
    __shared__ float red[32];
    const f16_t* x = in + (size_t)blockIdx.x * hidden;
    f16_t* y = out + (size_t)blockIdx.x * hidden;
    float s = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) s += h2f(x[i]);
    const float mean = block_sum(s, red) / hidden;
    float v = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) { float d = h2f(x[i]) - mean; v += d * d; }
    const float inv = rsqrtf(block_sum(v, red) / hidden + eps);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x)
        y[i] = f2h((h2f(x[i]) - mean) * inv * h2f(w[i]) + h2f(b[i]));
}

/* gate_up [tokens, 2*ffn] (gate then up) -> out [tokens, ffn] = silu(gate) * up. */
extern "C" __global__ void silu_mul_f16(f16_t* out, const f16_t* gate_up, int ffn, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const long long t = i / ffn, j = i % ffn;
        const float g = h2f(gate_up[t * 2 * ffn + j]);
        const float u = h2f(gate_up[t * 2 * ffn + ffn + j]);
        out[i] = f2h(g / (1.0f + __expf(-g)) * u);
    }
}

extern "C" __global__ void relu_f16(f16_t* out, const f16_t* in, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = f2h(fmaxf(h2f(in[i]), 0.0f));
}

/* Rotary embedding (rotate-half), in place on q [tokens, heads, hd] and k [tokens, kv_heads, hd]. */
extern "C" __global__ void rope_f16(f16_t* q, f16_t* k, const int* positions, int tokens, int heads,
                                    int kv_heads, int head_dim) {
    const int half = head_dim / 2;
    const long long per_token = (long long)(heads + kv_heads) * half;
    const long long n = per_token * tokens;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        const int t = (int)(i / per_token);
        const int r = (int)(i % per_token);
        const int h = r / half, d = r % half;
        f16_t* v = (h < heads) ? q + ((size_t)t * heads + h) * head_dim
                               : k + ((size_t)t * kv_heads + (h - heads)) * head_dim;
        const float theta = (float)positions[t] * __powf(10000.0f, -2.0f * d / head_dim);
        float s, c;
        __sincosf(theta, &s, &c);
        const float x1 = h2f(v[d]), x2 = h2f(v[d + half]);
        v[d] = f2h(x1 * c - x2 * s);
        v[d + half] = f2h(x2 * c + x1 * s);
    }
}

extern "C" __global__ void add_f16(f16_t* out, const f16_t* a, const f16_t* b, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x)
        out[i] = f2h(h2f(a[i]) + h2f(b[i]));
}

/* Paged decode attention. grid (num_heads, num_seqs), block DEC_WARPS * 32 threads,
   dynamic shared memory max_context * 4 bytes. */
extern "C" __global__ void paged_decode_f16(
    f16_t* __restrict__ out, const f16_t* __restrict__ q,
    const f16_t* __restrict__ k_cache, const f16_t* __restrict__ v_cache,
    const int* __restrict__ block_tables, const int* __restrict__ context_lens,
    int num_heads, int num_kv_heads, int head_dim, int block_size, int max_blocks_per_seq, float scale)
{
    extern __shared__ float logits[];
    __shared__ float red[32];
    __shared__ float q_s[MAX_HEAD_DIM];
    __shared__ float part[DEC_WARPS][MAX_HEAD_DIM];
    const int head = blockIdx.x, seq = blockIdx.y;
    const int kvh = head / (num_heads / num_kv_heads);
    const int ctx = context_lens[seq];
    const int* table = block_tables + (size_t)seq * max_blocks_per_seq;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
        q_s[d] = h2f(q[((size_t)seq * num_heads + head) * head_dim + d]) * scale;
    __syncthreads();
    /* 1) scores: a warp per token, lanes over head_dim */
    for (int t = warp; t < ctx; t += nw) {
        const int phys = table[t / block_size];
        const f16_t* kp = k_cache + (((size_t)phys * block_size + (t % block_size)) * num_kv_heads + kvh) * head_dim;
        float acc = 0.0f;
        for (int d = lane; d < head_dim; d += 32) acc += q_s[d] * h2f(kp[d]);
        acc = warp_sum(acc);
        if (lane == 0) logits[t] = acc;
    }
    __syncthreads();
    /* 2) softmax weights (unnormalised) */
    float m = NEG_BIG;
    for (int t = threadIdx.x; t < ctx; t += blockDim.x) m = fmaxf(m, logits[t]);
    m = block_max(m, red);
    float s = 0.0f;
    for (int t = threadIdx.x; t < ctx; t += blockDim.x) { const float e = __expf(logits[t] - m); logits[t] = e; s += e; }
    s = block_sum(s, red);
    const float inv = 1.0f / s;
    /* 3) weighted sum of V: a warp per token subset, lanes over head_dim, then across warps */
    float acc[MAX_HEAD_DIM / 32];
    for (int i = 0; i < MAX_HEAD_DIM / 32; ++i) acc[i] = 0.0f;
    for (int t = warp; t < ctx; t += nw) {
        const int phys = table[t / block_size];
        const f16_t* vp = v_cache + (((size_t)phys * block_size + (t % block_size)) * num_kv_heads + kvh) * head_dim;
        const float p = logits[t];
        for (int i = 0; i < head_dim / 32; ++i) acc[i] += p * h2f(vp[lane + 32 * i]);
    }
    for (int i = 0; i < head_dim / 32; ++i) part[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float r = 0.0f;
        for (int w = 0; w < nw; ++w) r += part[w][d];
        out[((size_t)seq * num_heads + head) * head_dim + d] = f2h(r * inv);
    }
}

/* Paged causal prefill attention of one sequence (flash-style online softmax).
   grid (num_heads, ceil(chunk / PF_ROWS)), block PF_ROWS * 32 threads; a warp per query row,
   keys staged in shared memory PF_TILE at a time, a lane per key of the tile. */
extern "C" __global__ void paged_prefill_f16(
    f16_t* __restrict__ out, const f16_t* __restrict__ q,
    const f16_t* __restrict__ k_cache, const f16_t* __restrict__ v_cache,
    const int* __restrict__ block_table, int cached, int chunk,
    int num_heads, int num_kv_heads, int head_dim, int block_size, float scale)
{
    __shared__ float k_s[PF_TILE][MAX_HEAD_DIM + 1];
    __shared__ float v_s[PF_TILE][MAX_HEAD_DIM];
    __shared__ float q_s[PF_ROWS][MAX_HEAD_DIM];
    const int head = blockIdx.x;
    const int kvh = head / (num_heads / num_kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row = blockIdx.y * PF_ROWS + warp;
    const bool active = row < chunk;
    const int pos = cached + row;
    if (active)
        for (int d = lane; d < head_dim; d += 32)
            q_s[warp][d] = h2f(q[((size_t)row * num_heads + head) * head_dim + d]) * scale;
    int last = blockIdx.y * PF_ROWS + PF_ROWS - 1;
    if (last > chunk - 1) last = chunk - 1;
    const int n_keys = cached + last + 1;
    float m = NEG_BIG, l = 0.0f;
    float acc[MAX_HEAD_DIM / 32];
    for (int i = 0; i < MAX_HEAD_DIM / 32; ++i) acc[i] = 0.0f;
    for (int t0 = 0; t0 < n_keys; t0 += PF_TILE) {
        __syncthreads();
        for (int e = threadIdx.x; e < PF_TILE * head_dim; e += blockDim.x) {
            const int j = e / head_dim, d = e % head_dim, t = t0 + j;
            float kv = 0.0f, vv = 0.0f;
            if (t < n_keys) {
                const int phys = block_table[t / block_size];
                const size_t off = (((size_t)phys * block_size + (t % block_size)) * num_kv_heads + kvh) * head_dim + d;
                kv = h2f(k_cache[off]);
                vv = h2f(v_cache[off]);
            }
            k_s[j][d] = kv;
            v_s[j][d] = vv;
        }
        __syncthreads();
        if (active) {
            const int t = t0 + lane;
            float sc = NEG_BIG;
            if (t <= pos) {
                float a = 0.0f;
                for (int d = 0; d < head_dim; ++d) a += q_s[warp][d] * k_s[lane][d];
                sc = a;
            }
            const float tile_max = warp_max(sc);
            if (tile_max > NEG_BIG) {
                const float m_new = fmaxf(m, tile_max);
                const float corr = __expf(m - m_new);
                const float p = (t <= pos) ? __expf(sc - m_new) : 0.0f;
                l = l * corr + warp_sum(p);
                for (int i = 0; i < head_dim / 32; ++i) acc[i] *= corr;
                for (int j = 0; j < PF_TILE; ++j) {
                    const float pj = __shfl_sync(0xffffffffu, p, j);
                    for (int i = 0; i < head_dim / 32; ++i) acc[i] += pj * v_s[j][lane + 32 * i];
                }
                m = m_new;
            }
        }
    }
    if (active)
        for (int i = 0; i < head_dim / 32; ++i)
            out[((size_t)row * num_heads + head) * head_dim + lane + 32 * i] = f2h(acc[i] / l);
}

/* Copy n chunks of chunk_bytes (a multiple of 16) from src_base + src_off[c] to
   dst_base + dst_off[c]; either side may be mapped pinned host memory. */
struct alignas(16) v16 { unsigned int a, b, c, d; };
extern "C" __global__ void gather_copy(unsigned long long src_base, unsigned long long dst_base,
                                       const long long* __restrict__ src_off,
                                       const long long* __restrict__ dst_off,
                                       long long chunk_bytes, int n) {
    const long long words = chunk_bytes / 16;
    for (int c = blockIdx.x; c < n; c += gridDim.x) {
        const v16* s = (const v16*)(src_base + (unsigned long long)src_off[c]);
        v16* d = (v16*)(dst_base + (unsigned long long)dst_off[c]);
        for (long long i = threadIdx.x; i < words; i += blockDim.x) d[i] = s[i];
    }
}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_kernel_is_defined_with_c_linkage() {
        for n in NAMES {
            assert!(
                SOURCE.contains(&format!("extern \"C\" __global__ void {n}(")),
                "{n}"
            );
        }
        assert!(SOURCE.contains(&format!("#define MAX_HEAD_DIM {MAX_HEAD_DIM}")));
        assert!(SOURCE.contains(&format!("#define PF_ROWS {PREFILL_ROWS}")));
        assert!(SOURCE.contains(&format!("#define DEC_WARPS {}", DECODE_THREADS / 32)));
        // Header-free: NVRTC has no cuda_fp16.h of its own.
        assert!(!SOURCE.contains("#include"));
    }
}
