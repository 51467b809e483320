//! The CUDA C of the backend's own kernels (compiled at run time by NVRTC), f32 throughout, with
//! the CPU backend's layouts: row-major `[rows, width]` activations, a fused QKV row of
//! `(heads + 2·kv_heads)·head_dim`, and a KV pool `[layer][K|V][block][kv_head][slot][head_dim]`.
//! Elementwise kernels use grid-stride loops; the norms, the attention and the argmax use one
//! thread block of [`THREADS`] threads per row.
//!
//! The attention is one kernel for decode and (chunked) prefill: a block per (query row, query
//! head) scores every visible key of its sequence through the block table, softmaxes in shared
//! memory and sums the values. Simple and correct, not fast (no tiling, no tensor cores).

/// Threads per block of every kernel (a power of two: the block reductions halve it).
pub const THREADS: u32 = 256;

/// Names of the kernels in [`SOURCE`].
pub const NAMES: [&str; 7] = [
    "gather_rows_f32",
    "rms_norm_f32",
    "rope_f32",
    "silu_gate_f32",
    "write_kv_f32",
    "attention_f32",
    "argmax_sum_f32",
];

pub const SOURCE: &str = r#"
#define THREADS 256
#define BLOCK_TOKENS 16

// out[r, :] = src[idx[r], :] (embedding lookup, last-row gather).
extern "C" __global__ void gather_rows_f32(float* out, const float* src, const int* idx,
                                           int rows, int width) {
    long long n = (long long)rows * width;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / width, c = i % width;
        out[i] = src[(long long)idx[r] * width + c];
    }
}

// One block per row: out = x / rms(x) * gain.
extern "C" __global__ void rms_norm_f32(float* out, const float* x, const float* gain, int width,
                                        float eps) {
    __shared__ float part[THREADS];
    const float* xr = x + (long long)blockIdx.x * width;
    float* o = out + (long long)blockIdx.x * width;
    float ss = 0.f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) ss += xr[i] * xr[i];
    part[threadIdx.x] = ss;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    float inv = rsqrtf(part[0] / width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) o[i] = xr[i] * inv * gain[i];
}

// Rotary embedding (rotate-half) of the first `rot_heads` heads of each fused QKV row.
extern "C" __global__ void rope_f32(float* qkv, const int* pos, int rows, int rot_heads, int width,
                                    int head_dim, float base) {
    int half = head_dim / 2;
    long long n = (long long)rows * rot_heads * half;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int j = (int)(i % half);
        long long t = i / half;
        int h = (int)(t % rot_heads);
        long long r = t / rot_heads;
        float inv_freq = powf(base, -2.0f * (float)j / (float)head_dim);
        float s, c;
        sincosf((float)pos[r] * inv_freq, &s, &c);
        float* p = qkv + r * width + (long long)h * head_dim;
        float x0 = p[j], x1 = p[j + half];
        p[j] = x0 * c - x1 * s;
        p[j + half] = x1 * c + x0 * s;
    }
}

// out[r, i] = silu(gu[r, i]) * gu[r, ffn + i].
extern "C" __global__ void silu_gate_f32(float* out, const float* gu, int rows, int ffn) {
    long long n = (long long)rows * ffn;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        long long r = i / ffn, c = i % ffn;
        float a = gu[r * 2 * ffn + c], u = gu[r * 2 * ffn + ffn + c];
        out[i] = a / (1.f + expf(-a)) * u;
    }
}

// K and V of every row into `layer` of the pool; slot_of_row[r] = block * 16 + slot.
extern "C" __global__ void write_kv_f32(float* pool, const float* qkv, const int* slot_of_row,
                                        int rows, int heads, int kv_heads, int head_dim,
                                        int pool_blocks, int layer) {
    long long width = (long long)(heads + 2 * kv_heads) * head_dim;
    long long chunk = (long long)kv_heads * BLOCK_TOKENS * head_dim;
    long long n = (long long)rows * 2 * kv_heads * head_dim;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        int d = (int)(i % head_dim);
        long long t = i / head_dim;
        int g = (int)(t % kv_heads);
        t /= kv_heads;
        int kv = (int)(t % 2);
        long long r = t / 2;
        int s = slot_of_row[r];
        long long block = s / BLOCK_TOKENS, slot = s % BLOCK_TOKENS;
        float v = qkv[r * width + (long long)(heads + kv * kv_heads + g) * head_dim + d];
        pool[(((long long)layer * 2 + kv) * pool_blocks + block) * chunk +
             ((long long)g * BLOCK_TOKENS + slot) * head_dim + d] = v;
    }
}

__device__ float block_reduce(float v, float* red, bool is_max) {
    red[threadIdx.x] = v;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float o = red[threadIdx.x + s];
            red[threadIdx.x] = is_max ? fmaxf(red[threadIdx.x], o) : red[threadIdx.x] + o;
        }
        __syncthreads();
    }
    float r = red[0];
    __syncthreads();
    return r;
}

// Block (row, head): causal attention of query row `row` (at position pos[row]) over keys
// 0..=pos[row] of its sequence, whose block table starts at tables[row_table[row]].
// Dynamic shared memory: (head_dim + pos[row] + 1) floats.
extern "C" __global__ void attention_f32(float* out, const float* qkv, const float* pool,
                                         const int* pos, const int* row_table, const int* tables,
                                         int heads, int kv_heads, int head_dim, int pool_blocks,
                                         int layer, float scale) {
    extern __shared__ float sm[];
    __shared__ float red[THREADS];
    long long row = blockIdx.x;
    int h = blockIdx.y;
    int g = h / (heads / kv_heads);
    int ctx = pos[row] + 1;
    const int* table = tables + row_table[row];
    long long width = (long long)(heads + 2 * kv_heads) * head_dim;
    long long chunk = (long long)kv_heads * BLOCK_TOKENS * head_dim;
    const float* kbase = pool + ((long long)layer * 2) * pool_blocks * chunk;
    const float* vbase = pool + ((long long)layer * 2 + 1) * pool_blocks * chunk;
    float* q = sm;
    float* s = sm + head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x)
        q[d] = qkv[row * width + (long long)h * head_dim + d];
    __syncthreads();
    float mx = __int_as_float(0xff800000);
    for (int t = threadIdx.x; t < ctx; t += blockDim.x) {
        const float* k = kbase + (long long)table[t / BLOCK_TOKENS] * chunk +
                         ((long long)g * BLOCK_TOKENS + t % BLOCK_TOKENS) * head_dim;
        float acc = 0.f;
        for (int d = 0; d < head_dim; ++d) acc += q[d] * k[d];
        acc *= scale;
        s[t] = acc;
        mx = fmaxf(mx, acc);
    }
    mx = block_reduce(mx, red, true);
    float sum = 0.f;
    for (int t = threadIdx.x; t < ctx; t += blockDim.x) {
        float e = expf(s[t] - mx);
        s[t] = e;
        sum += e;
    }
    sum = block_reduce(sum, red, false);
    float inv = 1.f / sum;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.f;
        for (int t = 0; t < ctx; ++t) {
            const float* v = vbase + (long long)table[t / BLOCK_TOKENS] * chunk +
                             ((long long)g * BLOCK_TOKENS + t % BLOCK_TOKENS) * head_dim;
            acc += s[t] * v[d];
        }
        out[row * heads * head_dim + (long long)h * head_dim + d] = acc * inv;
    }
}

// One block per logits row: the first index of the largest value, and the row's sum (double).
extern "C" __global__ void argmax_sum_f32(int* idx, double* sums, const float* logits, int vocab) {
    __shared__ float bv[THREADS];
    __shared__ int bi[THREADS];
    __shared__ double bs[THREADS];
    const float* l = logits + (long long)blockIdx.x * vocab;
    float best = __int_as_float(0xff800000);
    int besti = 0x7fffffff;
    double sum = 0.0;
    for (int i = threadIdx.x; i < vocab; i += blockDim.x) {
        float v = l[i];
        sum += (double)v;
        if (v > best || (v == best && i < besti)) { best = v; besti = i; }
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = besti;
    bs[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) {
            float ov = bv[threadIdx.x + s];
            int oi = bi[threadIdx.x + s];
            if (ov > bv[threadIdx.x] || (ov == bv[threadIdx.x] && oi < bi[threadIdx.x])) {
                bv[threadIdx.x] = ov;
                bi[threadIdx.x] = oi;
            }
            bs[threadIdx.x] += bs[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        idx[blockIdx.x] = bi[0] == 0x7fffffff ? 0 : bi[0];
        sums[blockIdx.x] = bs[0];
    }
}
"#;
