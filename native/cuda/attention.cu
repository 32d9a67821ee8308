// Fused scaled dot-product attention (FlashAttention-2, Dao 2023) on the GPU: cpu::attention_forward /
// attention_backward's contract (kernels.h), device pointers. No N x M buffer exists, forward or backward.
//
// Masks and special rows follow attention.cc exactly: with i' = i + M - N, query i sees key j iff
// (causal or window: j <= i'), (window w > 0: j > i' - w), and the key is not padded (mask != 0, NaN counts as
// masked); a row that sees no key gets out = 0 and stats (m, log l) = (+inf, 0), so its gradients are exactly 0.
// Scores are s_ij = (q_i scale) . k_j in the f32 paths (as the CPU: q scaled once when loaded) and
// scale (q_i . k_j) on the tensor cores (q stays in its half dtype there).
//
// Two forward paths:
//   - f32 tile kernel (every dtype, D and Dv up to 256): a block of 256 threads owns 32 query rows of one head
//     and streams tiles of 32 keys through shared memory (q, k, v widened to f32 as they are loaded); scores,
//     the online softmax and O += P V in f32 FMAs, O in registers. Row statistics are warp reductions (one warp
//     per row, lane = key).
//   - wmma kernel (F16 / BF16, D == Dv in {64, 128}, 16-byte aligned q, k, v): 4 warps, 64 query rows a block
//     (16 per warp), 64-key tiles; S = Q K^T on the tensor cores with f32 accumulation, the softmax in f32 with
//     one lane pair per row, and P V on the tensor cores with P split into two half-precision terms,
//     P = P_hi + P_lo (P_hi = half(P), P_lo = half(P - P_hi)): two MMAs instead of one, but P keeps ~16 bits, so
//     the output should agree with the CPU's f32 arithmetic on the same inputs to ~1e-5 (checked at 1e-4) instead
//     of the ~4e-3 a single bf16 P would cost. O lives in registers (a lane owns half a row), rescaled by the running max as usual.
// Backward (three passes, no atomics, so results are deterministic; f32 tile kernels for every dtype, and the
// bf16 wmma kernels described at "wmma backward" for D == Dv in {64, 128}):
//   1. dvec: D_i = sum_j P_ij dP_ij (as attention.cc, not rowsum(dO * O): the out tensor is not an argument, and
//      this form makes each row of dS sum to zero with the dP actually computed), per query tile, in double.
//   2. dK, dV: one block per (head, 32-key tile) walks the query tiles that can see it, recomputing
//      S, P = exp((S - m) - log l), dP = dO V^T, dS = P (dP - D); dV += P^T dO, dK += dS^T (q scale) in registers.
//   3. dQ: one block per (head, 32-query tile) walks the key tiles, recomputing the same P, dP, dS bit for bit,
//      dQ = scale * sum dS K.
//   Pass 3 recomputes what pass 2 has (FA-2 instead adds dQ with atomics): about 1.5x the arithmetic of an
//   atomic dQ, for results that do not change from run to run.
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "common.cuh"
#include "half.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kBR = 32;        // f32 kernels: query rows per block
constexpr int kBC = 32;        // f32 kernels: keys per tile (one warp lane per key)
constexpr int kThreads = 256;  // f32 kernels: threads per block
constexpr int kMaxDim = 256;   // D, Dv limit of the f32 kernels (register accumulators)
constexpr int kAcc = kBR * kMaxDim / kThreads;   // accumulator elements per thread (32)

__host__ __device__ __forceinline__ int64_t mn(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t mx(int64_t a, int64_t b) { return a > b ? a : b; }

struct Attn {
  const void *q, *k, *v;
  const void* mask;
  int dt;        // DType of q, k, v
  int mask_i32;
  int64_t B, H, N, M, D, Dv;
  float scale;
  int causal;
  int64_t window, shift;
  __device__ __forceinline__ int64_t hi(int64_t i) const { return causal || window > 0 ? i + shift : M - 1; }
  __device__ __forceinline__ int64_t lo(int64_t i) const { return window > 0 ? i + shift - window + 1 : 0; }
  // Key j of batch b hidden by padding (or past M).
  __device__ __forceinline__ bool padded(int64_t b, int64_t j) const {
    if (j >= M) return true;
    if (!mask) return false;
    return mask_i32 ? static_cast<const int32_t*>(mask)[b * M + j] != 0
                    : static_cast<const float*>(mask)[b * M + j] != 0.0f;   // NaN counts as masked
  }
};

// Key tiles [kt0, kt1) (of width bc) that some of the query rows [i0, i0 + in) can see.
__device__ __forceinline__ void key_tiles(const Attn& p, int64_t i0, int64_t in, int bc, int64_t* kt0,
                                          int64_t* kt1) {
  const int64_t jlo = mx(int64_t(0), p.lo(i0)), jhi = mn(p.M - 1, p.hi(i0 + in - 1));
  *kt0 = jlo <= jhi ? jlo / bc : 0;
  *kt1 = jlo <= jhi ? jhi / bc + 1 : 0;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// rows (n, cols) of a tensor of dtype dt starting at element row0 * cols, into dst with leading dimension ld,
// times mul; rows past `valid` are zero.
__device__ __forceinline__ void load_tile(float* dst, int ld, const void* src, int dt, int64_t row0, int n,
                                          int valid, int64_t cols, float mul) {
  for (int idx = threadIdx.x; idx < n * cols; idx += blockDim.x) {
    const int r = idx / static_cast<int>(cols), c = idx % static_cast<int>(cols);
    dst[r * ld + c] = r < valid ? load_as_f32(src, dt, (row0 + r) * cols + c) * mul : 0.0f;
  }
}

// ------------------------------------------------------------------------------------------ f32 forward
__global__ void __launch_bounds__(kThreads) attn_fwd_f32(Attn p, void* out, int out_dt, float* stats) {
  extern __shared__ __align__(16) float sm[];
  const int64_t D = p.D, Dv = p.Dv, BH = p.B * p.H;
  const int64_t nqt = (p.N + kBR - 1) / kBR;
  const int64_t bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;   // heavy (late causal) tiles first
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kBR;
  const int in = static_cast<int>(mn(int64_t(kBR), p.N - i0));
  const int ldk = static_cast<int>(D) + 1;
  float* Qs = sm;                       // (BR, D)
  float* Ks = Qs + kBR * D;             // (BC, D + 1)
  float* Vs = Ks + kBC * ldk;           // (BC, Dv)
  float* Ss = Vs + kBC * Dv;            // (BR, BC + 1)
  float* rowm = Ss + kBR * (kBC + 1);   // (BR)
  float* rowl = rowm + kBR;
  float* rowa = rowl + kBR;
  int* kpad = reinterpret_cast<int*>(rowa + kBR);   // (BC)
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;

  load_tile(Qs, static_cast<int>(D), p.q, p.dt, bh * p.N + i0, kBR, in, D, p.scale);
  if (t < kBR) {
    rowm[t] = -INFINITY;
    rowl[t] = 0.0f;
  }
  float acc[kAcc];
#pragma unroll
  for (int e = 0; e < kAcc; e++) acc[e] = 0.0f;

  int64_t kt0, kt1;
  key_tiles(p, i0, in, kBC, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kBC;
    const int jn = static_cast<int>(mn(int64_t(kBC), p.M - j0));
    __syncthreads();   // the previous tile's readers are done
    load_tile(Ks, ldk, p.k, p.dt, bh * p.M + j0, kBC, jn, D, 1.0f);
    load_tile(Vs, static_cast<int>(Dv), p.v, p.dt, bh * p.M + j0, kBC, jn, Dv, 1.0f);
    if (t < kBC) kpad[t] = p.padded(b, j0 + t);
    __syncthreads();
    for (int idx = t; idx < kBR * kBC; idx += kThreads) {
      const int r = idx / kBC, c = idx % kBC;
      const float* qr = Qs + r * D;
      const float* kc = Ks + c * ldk;
      float s = 0.0f;
      for (int64_t d = 0; d < D; d++) s = fmaf(qr[d], kc[d], s);
      const int64_t i = i0 + r, j = j0 + c;
      const bool vis = r < in && !kpad[c] && j <= p.hi(i) && j >= p.lo(i);
      Ss[r * (kBC + 1) + c] = vis ? s : -INFINITY;
    }
    __syncthreads();
    for (int rr = 0; rr < kBR / 8; rr++) {   // warp w: rows w * 4 .. w * 4 + 3; lane = key
      const int r = warp * (kBR / 8) + rr;
      const float x = Ss[r * (kBC + 1) + lane];
      const float tmax = warp_max(x);
      const float mold = rowm[r];
      const float mnew = fmaxf(mold, tmax);
      const float mt = mnew == -INFINITY ? 0.0f : mnew;   // nothing seen yet: exp(-inf - 0) = 0, not NaN
      const float alpha = expf(mold - mt);
      const float pr = expf(x - mt);
      const float psum = warp_sum(pr);
      Ss[r * (kBC + 1) + lane] = pr;
      __syncwarp();
      if (lane == 0) {
        rowm[r] = mnew;
        rowl[r] = rowl[r] * alpha + psum;
        rowa[r] = alpha;
      }
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < kAcc; e++) {
      const int idx = t + e * kThreads;
      if (idx < kBR * Dv) {
        const int r = idx / static_cast<int>(Dv), d = idx % static_cast<int>(Dv);
        float a = acc[e] * rowa[r];
        const float* pr = Ss + r * (kBC + 1);
        for (int c = 0; c < kBC; c++) a = fmaf(pr[c], Vs[c * Dv + d], a);
        acc[e] = a;
      }
    }
  }
  __syncthreads();
#pragma unroll
  for (int e = 0; e < kAcc; e++) {
    const int idx = t + e * kThreads;
    if (idx < kBR * Dv) {
      const int r = idx / static_cast<int>(Dv), d = idx % static_cast<int>(Dv);
      if (r < in) {
        const float l = rowl[r];
        const float o = l == 0.0f ? 0.0f : acc[e] * (1.0f / l);
        store_from_f32(out, out_dt, (bh * p.N + i0 + r) * Dv + d, o);
      }
    }
  }
  if (t < in) {
    const float l = rowl[t];
    float* st = stats + 2 * (bh * p.N + i0 + t);
    st[0] = l == 0.0f ? INFINITY : rowm[t];
    st[1] = l == 0.0f ? 0.0f : logf(l);
  }
}

size_t fwd_f32_smem(int64_t D, int64_t Dv) {
  return sizeof(float) * (kBR * D + kBC * (D + 1) + kBC * Dv + kBR * (kBC + 1) + 3 * kBR + kBC);
}

// ------------------------------------------------------------------------------------------ wmma forward
namespace wmma = nvcuda::wmma;
constexpr int kWR = 64;   // query rows per block (4 warps x 16)
constexpr int kWC = 64;   // keys per tile
constexpr int kPld = kWC + 8;   // leading dimension of the P tiles (halves)

template <int D>
constexpr size_t wmma_smem() {
  return 3 * size_t(kWR) * (D + 8) * 2 + kWC * 4 + 4 * (16 * size_t(D + 4) * 4 + 2 * 16 * size_t(kPld) * 2);
}

template <typename Hh>
__device__ __forceinline__ Hh to_half(float x);
template <>
__device__ __forceinline__ __half to_half<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_half<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
__device__ __forceinline__ float from_half(__half x) { return __half2float(x); }
__device__ __forceinline__ float from_half(__nv_bfloat16 x) { return __bfloat162float(x); }

// rows [row0, row0 + valid) of a (*, D) half tensor into dst (kWR rows, ld D + 8), zeros past valid; 16-byte loads.
template <int D>
__device__ __forceinline__ void load_half_tile(uint16_t* dst, const uint16_t* src, int64_t row0, int valid) {
  constexpr int kVec = D / 8;   // uint4 per row
  for (int idx = threadIdx.x; idx < kWR * kVec; idx += blockDim.x) {
    const int r = idx / kVec, c = idx % kVec;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r < valid) v = reinterpret_cast<const uint4*>(src + (row0 + r) * D)[c];
    reinterpret_cast<uint4*>(dst + r * (D + 8))[c] = v;
  }
}

template <int D, typename Hh>
__global__ void __launch_bounds__(128) attn_fwd_wmma(Attn p, void* out, int out_dt, float* stats) {
  extern __shared__ __align__(128) unsigned char smw[];
  constexpr int ld = D + 8, lds = D + 4;
  uint16_t* Qs = reinterpret_cast<uint16_t*>(smw);
  uint16_t* Ks = Qs + kWR * ld;
  uint16_t* Vs = Ks + kWC * ld;
  int* kvis = reinterpret_cast<int*>(Vs + kWC * ld);
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  float* Sf = reinterpret_cast<float*>(kvis + kWC) + warp * (16 * lds + 2 * 16 * kPld / 2);
  Hh* Ph = reinterpret_cast<Hh*>(Sf + 16 * lds);
  Hh* Pl = Ph + 16 * kPld;

  const int64_t BH = p.B * p.H;
  const int64_t nqt = (p.N + kWR - 1) / kWR;
  const int64_t bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kWR;
  const int in = static_cast<int>(mn(int64_t(kWR), p.N - i0));
  load_half_tile<D>(Qs, static_cast<const uint16_t*>(p.q), bh * p.N + i0, in);

  const int r = lane >> 1, half = lane & 1;     // this lane's row of the warp's 16, and which half of it
  const int64_t i = i0 + warp * 16 + r;         // its query row
  const bool row_ok = warp * 16 + r < in;
  float m = -INFINITY, l = 0.0f;
  float o[D / 2];
#pragma unroll
  for (int d = 0; d < D / 2; d++) o[d] = 0.0f;

  int64_t kt0, kt1;
  key_tiles(p, i0, in, kWC, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kWC;
    const int jn = static_cast<int>(mn(int64_t(kWC), p.M - j0));
    __syncthreads();
    load_half_tile<D>(Ks, static_cast<const uint16_t*>(p.k), bh * p.M + j0, jn);
    load_half_tile<D>(Vs, static_cast<const uint16_t*>(p.v), bh * p.M + j0, jn);
    int any = 0;
    if (t < kWC) {
      kvis[t] = !p.padded(b, j0 + t);
      any = kvis[t];
    }
    if (!__syncthreads_or(any)) continue;   // every key of the tile padded

    // S (16, 64) of this warp = Q_w K^T
    {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[4];
#pragma unroll
      for (int j = 0; j < 4; j++) wmma::fill_fragment(sacc[j], 0.0f);
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> af;
        wmma::load_matrix_sync(af, reinterpret_cast<const Hh*>(Qs + warp * 16 * ld + kk * 16), ld);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::col_major> bf;
          wmma::load_matrix_sync(bf, reinterpret_cast<const Hh*>(Ks + j * 16 * ld + kk * 16), ld);
          wmma::mma_sync(sacc[j], af, bf, sacc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; j++) wmma::store_matrix_sync(Sf + j * 16, sacc[j], lds, wmma::mem_row_major);
    }
    __syncwarp();
    // Online softmax of row r over this lane's 32 keys, combined with the other half through one shuffle.
    const int64_t ihi = p.hi(i), ilo = p.lo(i);
    float x[32];
    float tmax = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; c++) {
      const int cc = half * 32 + c;
      const int64_t j = j0 + cc;
      const bool vis = row_ok && kvis[cc] && j <= ihi && j >= ilo;
      x[c] = vis ? Sf[r * lds + cc] * p.scale : -INFINITY;
      tmax = fmaxf(tmax, x[c]);
    }
    tmax = fmaxf(tmax, __shfl_xor_sync(0xffffffffu, tmax, 1));
    const float mnew = fmaxf(m, tmax);
    const float mt = mnew == -INFINITY ? 0.0f : mnew;
    const float alpha = expf(m - mt);
    float psum = 0.0f;
#pragma unroll
    for (int c = 0; c < 32; c++) {
      const float pr = expf(x[c] - mt);
      psum += pr;
      const Hh ph = to_half<Hh>(pr);
      Ph[r * kPld + half * 32 + c] = ph;
      Pl[r * kPld + half * 32 + c] = to_half<Hh>(pr - from_half(ph));
    }
    psum += __shfl_xor_sync(0xffffffffu, psum, 1);
    m = mnew;
    l = l * alpha + psum;
    __syncwarp();
    // PV (16, D) = (P_hi + P_lo) V into Sf, then o = o alpha + PV.
#pragma unroll
    for (int n = 0; n < D / 16; n++) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> pv;
      wmma::fill_fragment(pv, 0.0f);
#pragma unroll
      for (int kk = 0; kk < kWC / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> ah, al;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::row_major> bf;
        wmma::load_matrix_sync(ah, Ph + kk * 16, kPld);
        wmma::load_matrix_sync(al, Pl + kk * 16, kPld);
        wmma::load_matrix_sync(bf, reinterpret_cast<const Hh*>(Vs + kk * 16 * ld + n * 16), ld);
        wmma::mma_sync(pv, ah, bf, pv);
        wmma::mma_sync(pv, al, bf, pv);
      }
      wmma::store_matrix_sync(Sf + n * 16, pv, lds, wmma::mem_row_major);
    }
    __syncwarp();
#pragma unroll
    for (int d = 0; d < D / 2; d++) o[d] = o[d] * alpha + Sf[r * lds + half * (D / 2) + d];
    __syncwarp();
  }
  if (row_ok) {
    const float inv = l == 0.0f ? 0.0f : 1.0f / l;
    const int64_t base = (bh * p.N + i) * D + half * (D / 2);
#pragma unroll
    for (int d = 0; d < D / 2; d++) store_from_f32(out, out_dt, base + d, l == 0.0f ? 0.0f : o[d] * inv);
    if (half == 0) {
      float* st = stats + 2 * (bh * p.N + i);
      st[0] = l == 0.0f ? INFINITY : m;
      st[1] = l == 0.0f ? 0.0f : logf(l);
    }
  }
}

// ------------------------------------------------------------------------------------------ wmma backward
// BF16 with D == Dv in {64, 128} (16-byte aligned q, k, v): the same three passes as the f32 kernels below, with
// every product on the tensor cores and f32 accumulation. dout is f32 and the probabilities and dS are f32
// numbers, so each is split into two bf16 terms, x = hi + lo (hi = bf16(x), lo = bf16(x - hi): ~16 bits, and
// bf16 has f32's exponent range, so small gradients lose nothing to underflow):
//   S = Q K^T (exact inputs, one MMA), dP = dO V^T (2), dV += P^T dO (3: hi hi, hi lo, lo hi),
//   dK += dS^T Q (2), dQ += dS K (2), and the scale applied once at the end (dK, dQ) or to S.
// F16 keeps the f32 kernels: its 5-bit exponent would flush the lo terms of small dO / dS values.
// Q-major kernel (passes 1 and 3): 4 warps, 64 query rows a block (16 a warp), 64-key tiles; a lane pair owns a
// row (32 keys each) for the elementwise work. K-major kernel (pass 2): 4 warps, 64 keys a block (16 a warp),
// 64-query tiles; the lane pair owns a key. Accumulators stay in wmma fragments across tiles.
constexpr int kBF = 16 * 68;   // floats of one per-warp f32 tile (16 x 64, ld 68)

__device__ __forceinline__ void split_bf16(float x, __nv_bfloat16* hi, __nv_bfloat16* lo) {
  const __nv_bfloat16 h = __float2bfloat16_rn(x);
  *hi = h;
  *lo = __float2bfloat16_rn(x - __bfloat162float(h));
}

// dout rows [row0, row0 + valid) (f32, D wide) split into hi and lo tiles (kWR rows, ld D + 8); zeros past valid.
template <int D>
__device__ __forceinline__ void load_split_tile(__nv_bfloat16* hi, __nv_bfloat16* lo, const float* src, int64_t row0,
                                                int valid) {
  for (int idx = threadIdx.x; idx < kWR * D; idx += blockDim.x) {
    const int r = idx / D, c = idx % D;
    const float x = r < valid ? src[(row0 + r) * D + c] : 0.0f;
    split_bf16(x, hi + r * (D + 8) + c, lo + r * (D + 8) + c);
  }
}

template <int D>
constexpr size_t wmma_bwd_q_smem() {
  return 5 * size_t(kWR) * (D + 8) * 2 + kWC * 4 + 4 * (2 * kBF * 4 + 2 * 16 * size_t(kPld) * 2);
}
template <int D>
constexpr size_t wmma_bwd_kv_smem() {
  return 5 * size_t(kWR) * (D + 8) * 2 + kWC * 4 + 3 * kWR * 4 + 4 * (2 * kBF * 4 + 4 * 16 * size_t(kPld) * 2);
}

// Pass 1 (DQ false): dvec = sum_j P dP per row (double). Pass 3 (DQ true): dq = scale sum_j dS_ij k_j.
template <int D, bool DQ>
__global__ void __launch_bounds__(128) attn_bwd_q_wmma(Attn p, const float* __restrict__ dout,
                                                       const float* __restrict__ stats, float* dvec, float* dq) {
  typedef __nv_bfloat16 Hh;
  extern __shared__ __align__(128) unsigned char smq[];
  constexpr int ld = D + 8;
  Hh* Qs = reinterpret_cast<Hh*>(smq);
  Hh* dOh = Qs + kWR * ld;
  Hh* dOl = dOh + kWR * ld;
  Hh* Ks = dOl + kWR * ld;
  Hh* Vs = Ks + kWC * ld;
  int* kvis = reinterpret_cast<int*>(Vs + kWC * ld);
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  float* Sf = reinterpret_cast<float*>(kvis + kWC) + warp * (2 * kBF + 16 * kPld);   // (16, 68) scores
  float* dPf = Sf + kBF;                                                              // (16, 68) dP
  Hh* dSh = reinterpret_cast<Hh*>(dPf + kBF);                                         // (16, 72)
  Hh* dSl = dSh + 16 * kPld;

  const int64_t BH = p.B * p.H;
  const int64_t nqt = (p.N + kWR - 1) / kWR;
  const int64_t bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kWR;
  const int in = static_cast<int>(mn(int64_t(kWR), p.N - i0));
  load_half_tile<D>(reinterpret_cast<uint16_t*>(Qs), static_cast<const uint16_t*>(p.q), bh * p.N + i0, in);
  load_split_tile<D>(dOh, dOl, dout, bh * p.N + i0, in);

  const int r = lane >> 1, half = lane & 1;
  const int64_t i = i0 + warp * 16 + r;
  const bool row_ok = warp * 16 + r < in;
  const float m = row_ok ? stats[2 * (bh * p.N + i)] : INFINITY;
  const float ll = row_ok ? stats[2 * (bh * p.N + i) + 1] : 0.0f;
  const float di = DQ && row_ok ? dvec[bh * p.N + i] : 0.0f;
  const int64_t ihi = p.hi(i), ilo = p.lo(i);
  double dacc = 0.0;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> qacc[DQ ? D / 16 : 1];
#pragma unroll
  for (int n = 0; n < (DQ ? D / 16 : 1); n++) wmma::fill_fragment(qacc[n], 0.0f);

  int64_t kt0, kt1;
  key_tiles(p, i0, in, kWC, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kWC;
    const int jn = static_cast<int>(mn(int64_t(kWC), p.M - j0));
    __syncthreads();
    load_half_tile<D>(reinterpret_cast<uint16_t*>(Ks), static_cast<const uint16_t*>(p.k), bh * p.M + j0, jn);
    load_half_tile<D>(reinterpret_cast<uint16_t*>(Vs), static_cast<const uint16_t*>(p.v), bh * p.M + j0, jn);
    int any = 0;
    if (t < kWC) {
      kvis[t] = !p.padded(b, j0 + t);
      any = kvis[t];
    }
    if (!__syncthreads_or(any)) continue;
    {   // S = Q_w K^T, dP = (dO_hi + dO_lo)_w V^T
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[4], pacc[4];
#pragma unroll
      for (int j = 0; j < 4; j++) {
        wmma::fill_fragment(sacc[j], 0.0f);
        wmma::fill_fragment(pacc[j], 0.0f);
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> qa, oh, ol;
        wmma::load_matrix_sync(qa, Qs + warp * 16 * ld + kk * 16, ld);
        wmma::load_matrix_sync(oh, dOh + warp * 16 * ld + kk * 16, ld);
        wmma::load_matrix_sync(ol, dOl + warp * 16 * ld + kk * 16, ld);
#pragma unroll
        for (int j = 0; j < 4; j++) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::col_major> kb, vb;
          wmma::load_matrix_sync(kb, Ks + j * 16 * ld + kk * 16, ld);
          wmma::load_matrix_sync(vb, Vs + j * 16 * ld + kk * 16, ld);
          wmma::mma_sync(sacc[j], qa, kb, sacc[j]);
          wmma::mma_sync(pacc[j], oh, vb, pacc[j]);
          wmma::mma_sync(pacc[j], ol, vb, pacc[j]);
        }
      }
#pragma unroll
      for (int j = 0; j < 4; j++) {
        wmma::store_matrix_sync(Sf + j * 16, sacc[j], 68, wmma::mem_row_major);
        wmma::store_matrix_sync(dPf + j * 16, pacc[j], 68, wmma::mem_row_major);
      }
    }
    __syncwarp();
#pragma unroll 4
    for (int c = 0; c < 32; c++) {
      const int cc = half * 32 + c;
      const int64_t j = j0 + cc;
      const bool vis = row_ok && kvis[cc] && j <= ihi && j >= ilo;
      const float pr = vis ? expf((Sf[r * 68 + cc] * p.scale - m) - ll) : 0.0f;
      const float dp = dPf[r * 68 + cc];
      if (DQ) {
        split_bf16(pr * (dp - di), dSh + r * kPld + cc, dSl + r * kPld + cc);
      } else {
        dacc += static_cast<double>(pr) * dp;
      }
    }
    if (DQ) {
      __syncwarp();
#pragma unroll
      for (int kk = 0; kk < kWC / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> ah, al;
        wmma::load_matrix_sync(ah, dSh + kk * 16, kPld);
        wmma::load_matrix_sync(al, dSl + kk * 16, kPld);
#pragma unroll
        for (int n = 0; n < (DQ ? D / 16 : 1); n++) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::row_major> kb;
          wmma::load_matrix_sync(kb, Ks + kk * 16 * ld + n * 16, ld);
          wmma::mma_sync(qacc[n], ah, kb, qacc[n]);
          wmma::mma_sync(qacc[n], al, kb, qacc[n]);
        }
      }
    }
    __syncwarp();
  }
  if (DQ) {
    // dq (16, D) of this warp through its f32 tiles (2 x 16 x 68 floats >= 16 x (D + 4)).
    __syncwarp();
#pragma unroll
    for (int n = 0; n < (DQ ? D / 16 : 1); n++)
      wmma::store_matrix_sync(Sf + n * 16, qacc[n], D + 4, wmma::mem_row_major);
    __syncwarp();
    if (row_ok) {
      float* dst = dq + (bh * p.N + i) * D + half * (D / 2);
      for (int d = 0; d < D / 2; d++) dst[d] = Sf[r * (D + 4) + half * (D / 2) + d] * p.scale;
    }
  } else {
    dacc += __shfl_xor_sync(0xffffffffu, dacc, 1);
    if (row_ok && half == 0) dvec[bh * p.N + i] = static_cast<float>(dacc);
  }
}

// Pass 2: dk, dv of 64 keys.
template <int D>
__global__ void __launch_bounds__(128) attn_bwd_kv_wmma(Attn p, const float* __restrict__ dout,
                                                        const float* __restrict__ stats, const float* dvec, float* dk,
                                                        float* dv) {
  typedef __nv_bfloat16 Hh;
  extern __shared__ __align__(128) unsigned char smkv[];
  constexpr int ld = D + 8;
  Hh* Ks = reinterpret_cast<Hh*>(smkv);
  Hh* Vs = Ks + kWC * ld;
  Hh* Qs = Vs + kWC * ld;
  Hh* dOh = Qs + kWR * ld;
  Hh* dOl = dOh + kWR * ld;
  int* kvis = reinterpret_cast<int*>(dOl + kWR * ld);
  float* rowm = reinterpret_cast<float*>(kvis + kWC);
  float* rowl = rowm + kWR;
  float* rowd = rowl + kWR;
  const int t = threadIdx.x, lane = t & 31, warp = t >> 5;
  float* STf = rowd + kWR + warp * (2 * kBF + 2 * 16 * kPld);   // (16 keys, 64 queries, ld 68)
  float* dPTf = STf + kBF;
  Hh* PTh = reinterpret_cast<Hh*>(dPTf + kBF);                   // (16, 72) each
  Hh* PTl = PTh + 16 * kPld;
  Hh* dSTh = PTl + 16 * kPld;
  Hh* dSTl = dSTh + 16 * kPld;

  const int64_t BH = p.B * p.H;
  const int64_t bh = blockIdx.x % BH, kt = blockIdx.x / BH;
  const int64_t b = bh / p.H;
  const int64_t j0 = kt * kWC;
  const int jn = static_cast<int>(mn(int64_t(kWC), p.M - j0));
  load_half_tile<D>(reinterpret_cast<uint16_t*>(Ks), static_cast<const uint16_t*>(p.k), bh * p.M + j0, jn);
  load_half_tile<D>(reinterpret_cast<uint16_t*>(Vs), static_cast<const uint16_t*>(p.v), bh * p.M + j0, jn);
  int any = 0;
  if (t < kWC) {
    kvis[t] = !p.padded(b, j0 + t);
    any = kvis[t];
  }
  const bool some_visible = __syncthreads_or(any);

  const int r = lane >> 1, half = lane & 1;   // this lane's key (of the warp's 16) and which 32 queries
  const int kr = warp * 16 + r;
  const int64_t j = j0 + kr;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> kacc[D / 16], vacc[D / 16];
#pragma unroll
  for (int n = 0; n < D / 16; n++) {
    wmma::fill_fragment(kacc[n], 0.0f);
    wmma::fill_fragment(vacc[n], 0.0f);
  }
  const int64_t j1 = j0 + jn - 1;
  const int64_t ilo = p.causal || p.window > 0 ? mx(int64_t(0), j0 - p.shift) : 0;
  int64_t ihi = p.window > 0 ? mn(p.N - 1, j1 - p.shift + p.window - 1) : p.N - 1;
  if (!some_visible) ihi = ilo - 1;
  for (int64_t qt = ilo / kWR; ilo <= ihi && qt <= ihi / kWR; qt++) {
    const int64_t i0 = qt * kWR;
    const int in = static_cast<int>(mn(int64_t(kWR), p.N - i0));
    __syncthreads();
    load_half_tile<D>(reinterpret_cast<uint16_t*>(Qs), static_cast<const uint16_t*>(p.q), bh * p.N + i0, in);
    load_split_tile<D>(dOh, dOl, dout, bh * p.N + i0, in);
    if (t < kWR) {
      const bool ok = t < in;
      rowm[t] = ok ? stats[2 * (bh * p.N + i0 + t)] : INFINITY;
      rowl[t] = ok ? stats[2 * (bh * p.N + i0 + t) + 1] : 0.0f;
      rowd[t] = ok ? dvec[bh * p.N + i0 + t] : 0.0f;
    }
    __syncthreads();
    {   // S^T = K_w Q^T, dP^T = V_w (dO_hi + dO_lo)^T
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> sacc[4], pacc[4];
#pragma unroll
      for (int c = 0; c < 4; c++) {
        wmma::fill_fragment(sacc[c], 0.0f);
        wmma::fill_fragment(pacc[c], 0.0f);
      }
#pragma unroll
      for (int kk = 0; kk < D / 16; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> ka, va;
        wmma::load_matrix_sync(ka, Ks + warp * 16 * ld + kk * 16, ld);
        wmma::load_matrix_sync(va, Vs + warp * 16 * ld + kk * 16, ld);
#pragma unroll
        for (int c = 0; c < 4; c++) {
          wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::col_major> qb, ohb, olb;
          wmma::load_matrix_sync(qb, Qs + c * 16 * ld + kk * 16, ld);
          wmma::load_matrix_sync(ohb, dOh + c * 16 * ld + kk * 16, ld);
          wmma::load_matrix_sync(olb, dOl + c * 16 * ld + kk * 16, ld);
          wmma::mma_sync(sacc[c], ka, qb, sacc[c]);
          wmma::mma_sync(pacc[c], va, ohb, pacc[c]);
          wmma::mma_sync(pacc[c], va, olb, pacc[c]);
        }
      }
#pragma unroll
      for (int c = 0; c < 4; c++) {
        wmma::store_matrix_sync(STf + c * 16, sacc[c], 68, wmma::mem_row_major);
        wmma::store_matrix_sync(dPTf + c * 16, pacc[c], 68, wmma::mem_row_major);
      }
    }
    __syncwarp();
#pragma unroll 4
    for (int c = 0; c < 32; c++) {   // query i0 + cq against key j
      const int cq = half * 32 + c;
      const int64_t i = i0 + cq;
      const bool vis = cq < in && kvis[kr] && j <= p.hi(i) && j >= p.lo(i);
      const float pr = vis ? expf((STf[r * 68 + cq] * p.scale - rowm[cq]) - rowl[cq]) : 0.0f;
      split_bf16(pr, PTh + r * kPld + cq, PTl + r * kPld + cq);
      split_bf16(pr * (dPTf[r * 68 + cq] - rowd[cq]), dSTh + r * kPld + cq, dSTl + r * kPld + cq);
    }
    __syncwarp();
#pragma unroll
    for (int kk = 0; kk < kWR / 16; kk++) {   // over the 64 queries
      wmma::fragment<wmma::matrix_a, 16, 16, 16, Hh, wmma::row_major> ph, pl, sh, sl;
      wmma::load_matrix_sync(ph, PTh + kk * 16, kPld);
      wmma::load_matrix_sync(pl, PTl + kk * 16, kPld);
      wmma::load_matrix_sync(sh, dSTh + kk * 16, kPld);
      wmma::load_matrix_sync(sl, dSTl + kk * 16, kPld);
#pragma unroll
      for (int n = 0; n < D / 16; n++) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, Hh, wmma::row_major> ohb, olb, qb;
        wmma::load_matrix_sync(ohb, dOh + kk * 16 * ld + n * 16, ld);
        wmma::load_matrix_sync(olb, dOl + kk * 16 * ld + n * 16, ld);
        wmma::load_matrix_sync(qb, Qs + kk * 16 * ld + n * 16, ld);
        wmma::mma_sync(vacc[n], ph, ohb, vacc[n]);
        wmma::mma_sync(vacc[n], ph, olb, vacc[n]);
        wmma::mma_sync(vacc[n], pl, ohb, vacc[n]);
        wmma::mma_sync(kacc[n], sh, qb, kacc[n]);
        wmma::mma_sync(kacc[n], sl, qb, kacc[n]);
      }
    }
  }
  // dk = scale * kacc, dv = vacc, through the warp's f32 tiles (2 x 16 x 68 floats >= 16 x (D + 4)).
  __syncwarp();
#pragma unroll
  for (int n = 0; n < D / 16; n++) wmma::store_matrix_sync(STf + n * 16, kacc[n], D + 4, wmma::mem_row_major);
  __syncwarp();
  if (kr < jn) {
    float* dst = dk + (bh * p.M + j) * D + half * (D / 2);
    for (int d = 0; d < D / 2; d++) dst[d] = STf[r * (D + 4) + half * (D / 2) + d] * p.scale;
  }
  __syncwarp();
#pragma unroll
  for (int n = 0; n < D / 16; n++) wmma::store_matrix_sync(STf + n * 16, vacc[n], D + 4, wmma::mem_row_major);
  __syncwarp();
  if (kr < jn) {
    float* dst = dv + (bh * p.M + j) * D + half * (D / 2);
    for (int d = 0; d < D / 2; d++) dst[d] = STf[r * (D + 4) + half * (D / 2) + d];
  }
}

// ------------------------------------------------------------------------------------------ f32 backward
// Pass 1 (DQ false): dvec[i] = sum_j P_ij dP_ij in double. Pass 3 (DQ true): dq = scale * sum_j dS_ij k_j.
template <bool DQ>
__global__ void __launch_bounds__(kThreads) attn_bwd_rows(Attn p, const float* __restrict__ dout,
                                                          const float* __restrict__ stats, float* dvec, float* dq) {
  extern __shared__ __align__(16) double smd[];
  const int64_t D = p.D, Dv = p.Dv, BH = p.B * p.H;
  const int64_t nqt = (p.N + kBR - 1) / kBR;
  const int64_t bh = blockIdx.x % BH, qt = nqt - 1 - blockIdx.x / BH;
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kBR;
  const int in = static_cast<int>(mn(int64_t(kBR), p.N - i0));
  const int ldk = static_cast<int>(D) + 1, ldv = static_cast<int>(Dv) + 1;
  double* dacc = smd;                                // (BR)
  float* Qs = reinterpret_cast<float*>(dacc + kBR);  // (BR, D), q * scale
  float* dOs = Qs + kBR * D;                         // (BR, Dv)
  float* Ks = dOs + kBR * Dv;                        // (BC, D + 1)
  float* Vs = Ks + kBC * ldk;                        // (BC, Dv + 1)
  float* Ss = Vs + kBC * ldv;                        // (BR, BC + 1): dS (DQ)
  float* rowm = Ss + kBR * (kBC + 1);
  float* rowl = rowm + kBR;
  float* rowd = rowl + kBR;
  int* kpad = reinterpret_cast<int*>(rowd + kBR);
  const int t = threadIdx.x;

  load_tile(Qs, static_cast<int>(D), p.q, p.dt, bh * p.N + i0, kBR, in, D, p.scale);
  load_tile(dOs, static_cast<int>(Dv), dout, 0, bh * p.N + i0, kBR, in, Dv, 1.0f);
  if (t < kBR) {
    const bool ok = t < in;
    rowm[t] = ok ? stats[2 * (bh * p.N + i0 + t)] : INFINITY;
    rowl[t] = ok ? stats[2 * (bh * p.N + i0 + t) + 1] : 0.0f;
    rowd[t] = DQ && ok ? dvec[bh * p.N + i0 + t] : 0.0f;
    dacc[t] = 0.0;
  }
  float acc[kAcc];
#pragma unroll
  for (int e = 0; e < kAcc; e++) acc[e] = 0.0f;
  int64_t kt0, kt1;
  key_tiles(p, i0, in, kBC, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kBC;
    const int jn = static_cast<int>(mn(int64_t(kBC), p.M - j0));
    __syncthreads();
    load_tile(Ks, ldk, p.k, p.dt, bh * p.M + j0, kBC, jn, D, 1.0f);
    load_tile(Vs, ldv, p.v, p.dt, bh * p.M + j0, kBC, jn, Dv, 1.0f);
    if (t < kBC) kpad[t] = p.padded(b, j0 + t);
    __syncthreads();
    for (int idx = t; idx < kBR * kBC; idx += kThreads) {   // a warp: one row r, lane = key c
      const int r = idx / kBC, c = idx % kBC;
      const int64_t i = i0 + r, j = j0 + c;
      float s = 0.0f, dp = 0.0f;
      for (int64_t d = 0; d < D; d++) s = fmaf(Qs[r * D + d], Ks[c * ldk + d], s);
      for (int64_t d = 0; d < Dv; d++) dp = fmaf(dOs[r * Dv + d], Vs[c * ldv + d], dp);
      const bool vis = r < in && !kpad[c] && j <= p.hi(i) && j >= p.lo(i);
      const float pr = vis ? expf((s - rowm[r]) - rowl[r]) : 0.0f;
      if (DQ) {
        Ss[r * (kBC + 1) + c] = pr * (dp - rowd[r]);
      } else {
        const double sum = warp_sum_d(static_cast<double>(pr) * dp);
        if ((t & 31) == 0) dacc[r] += sum;
      }
    }
    if (DQ) {
      __syncthreads();
#pragma unroll
      for (int e = 0; e < kAcc; e++) {
        const int idx = t + e * kThreads;
        if (idx < kBR * D) {
          const int r = idx / static_cast<int>(D), d = idx % static_cast<int>(D);
          float a = acc[e];
          const float* ds = Ss + r * (kBC + 1);
          for (int c = 0; c < kBC; c++) a = fmaf(ds[c], Ks[c * ldk + d], a);
          acc[e] = a;
        }
      }
    }
  }
  __syncthreads();
  if (DQ) {
#pragma unroll
    for (int e = 0; e < kAcc; e++) {
      const int idx = t + e * kThreads;
      if (idx < kBR * D) {
        const int r = idx / static_cast<int>(D), d = idx % static_cast<int>(D);
        if (r < in) dq[(bh * p.N + i0 + r) * D + d] = acc[e] * p.scale;
      }
    }
  } else if (t < in) {
    dvec[bh * p.N + i0 + t] = static_cast<float>(dacc[t]);
  }
}

size_t bwd_rows_smem(int64_t D, int64_t Dv) {
  return sizeof(double) * kBR +
         sizeof(float) * (kBR * D + kBR * Dv + kBC * (D + 1) + kBC * (Dv + 1) + kBR * (kBC + 1) + 3 * kBR + kBC);
}

// Pass 2: dk, dv of one 32-key tile.
__global__ void __launch_bounds__(kThreads) attn_bwd_kv(Attn p, const float* __restrict__ dout,
                                                        const float* __restrict__ stats, const float* dvec, float* dk,
                                                        float* dv) {
  extern __shared__ __align__(16) float smk[];
  const int64_t D = p.D, Dv = p.Dv, BH = p.B * p.H;
  const int64_t nkt = (p.M + kBC - 1) / kBC;
  const int64_t bh = blockIdx.x % BH, kt = blockIdx.x / BH;
  const int64_t b = bh / p.H;
  const int64_t j0 = kt * kBC;
  const int jn = static_cast<int>(mn(int64_t(kBC), p.M - j0));
  const int ldk = static_cast<int>(D) + 1, ldv = static_cast<int>(Dv) + 1;
  float* Ks = smk;                      // (BC, D + 1)
  float* Vs = Ks + kBC * ldk;           // (BC, Dv + 1)
  float* Qs = Vs + kBC * ldv;           // (BR, D), q * scale
  float* dOs = Qs + kBR * D;            // (BR, Dv)
  float* Ps = dOs + kBR * Dv;           // (BR, BC + 1)
  float* dSs = Ps + kBR * (kBC + 1);    // (BR, BC + 1)
  float* rowm = dSs + kBR * (kBC + 1);
  float* rowl = rowm + kBR;
  float* rowd = rowl + kBR;
  int* kpad = reinterpret_cast<int*>(rowd + kBR);
  const int t = threadIdx.x;
  (void)nkt;

  load_tile(Ks, ldk, p.k, p.dt, bh * p.M + j0, kBC, jn, D, 1.0f);
  load_tile(Vs, ldv, p.v, p.dt, bh * p.M + j0, kBC, jn, Dv, 1.0f);
  int any = 0;
  if (t < kBC) {
    kpad[t] = p.padded(b, j0 + t);
    any = !kpad[t];
  }
  const bool some_visible = __syncthreads_or(any);
  float ak[kAcc], av[kAcc];
#pragma unroll
  for (int e = 0; e < kAcc; e++) ak[e] = av[e] = 0.0f;

  // Query rows that can see some key of [j0, j0 + jn): i' >= j0 (causal / window), i' - w < j0 + jn - 1 + 1.
  const int64_t j1 = j0 + jn - 1;
  int64_t ilo = p.causal || p.window > 0 ? mx(int64_t(0), j0 - p.shift) : 0;
  int64_t ihi = p.window > 0 ? mn(p.N - 1, j1 - p.shift + p.window - 1) : p.N - 1;
  if (!some_visible) ihi = ilo - 1;
  for (int64_t qt = ilo / kBR; ilo <= ihi && qt <= ihi / kBR; qt++) {
    const int64_t i0 = qt * kBR;
    const int in = static_cast<int>(mn(int64_t(kBR), p.N - i0));
    __syncthreads();
    load_tile(Qs, static_cast<int>(D), p.q, p.dt, bh * p.N + i0, kBR, in, D, p.scale);
    load_tile(dOs, static_cast<int>(Dv), dout, 0, bh * p.N + i0, kBR, in, Dv, 1.0f);
    if (t < kBR) {
      const bool ok = t < in;
      rowm[t] = ok ? stats[2 * (bh * p.N + i0 + t)] : INFINITY;
      rowl[t] = ok ? stats[2 * (bh * p.N + i0 + t) + 1] : 0.0f;
      rowd[t] = ok ? dvec[bh * p.N + i0 + t] : 0.0f;
    }
    __syncthreads();
    for (int idx = t; idx < kBR * kBC; idx += kThreads) {
      const int r = idx / kBC, c = idx % kBC;
      const int64_t i = i0 + r, j = j0 + c;
      float s = 0.0f, dp = 0.0f;
      for (int64_t d = 0; d < D; d++) s = fmaf(Qs[r * D + d], Ks[c * ldk + d], s);
      for (int64_t d = 0; d < Dv; d++) dp = fmaf(dOs[r * Dv + d], Vs[c * ldv + d], dp);
      const bool vis = r < in && !kpad[c] && j <= p.hi(i) && j >= p.lo(i);
      const float pr = vis ? expf((s - rowm[r]) - rowl[r]) : 0.0f;
      Ps[r * (kBC + 1) + c] = pr;
      dSs[r * (kBC + 1) + c] = pr * (dp - rowd[r]);
    }
    __syncthreads();
#pragma unroll
    for (int e = 0; e < kAcc; e++) {
      const int idx = t + e * kThreads;
      if (idx < kBC * Dv) {   // dV (c, d) += sum_r P (r, c) dO (r, d)
        const int c = idx / static_cast<int>(Dv), d = idx % static_cast<int>(Dv);
        float a = av[e];
        for (int r = 0; r < kBR; r++) a = fmaf(Ps[r * (kBC + 1) + c], dOs[r * Dv + d], a);
        av[e] = a;
      }
      if (idx < kBC * D) {    // dK (c, d) += sum_r dS (r, c) (q scale) (r, d)
        const int c = idx / static_cast<int>(D), d = idx % static_cast<int>(D);
        float a = ak[e];
        for (int r = 0; r < kBR; r++) a = fmaf(dSs[r * (kBC + 1) + c], Qs[r * D + d], a);
        ak[e] = a;
      }
    }
  }
#pragma unroll
  for (int e = 0; e < kAcc; e++) {
    const int idx = t + e * kThreads;
    if (idx < kBC * Dv) {
      const int c = idx / static_cast<int>(Dv), d = idx % static_cast<int>(Dv);
      if (c < jn) dv[(bh * p.M + j0 + c) * Dv + d] = av[e];
    }
    if (idx < kBC * D) {
      const int c = idx / static_cast<int>(D), d = idx % static_cast<int>(D);
      if (c < jn) dk[(bh * p.M + j0 + c) * D + d] = ak[e];
    }
  }
}

size_t bwd_kv_smem(int64_t D, int64_t Dv) {
  return sizeof(float) * (kBC * (D + 1) + kBC * (Dv + 1) + kBR * D + kBR * Dv + 2 * kBR * (kBC + 1) + 3 * kBR + kBC);
}

// ------------------------------------------------------------------------------------------ launch helpers
int smem_optin() {
  static int v = -1;
  if (v < 0) {
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev), "cudaDeviceGetAttribute");
  }
  return v;
}

template <typename K>
void prepare(K kernel, size_t smem, const char* name) {
  if (smem > static_cast<size_t>(smem_optin()))
    throw std::invalid_argument(std::string("modalab cuda: ") + name + ": needs " + std::to_string(smem) +
                                " bytes of shared memory, the device allows " + std::to_string(smem_optin()));
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)),
             "cudaFuncSetAttribute");
}

Attn make_attn(const void* q, const void* k, const void* v, DType dtype, const void* mask, bool mask_i32, int64_t B,
               int64_t H, int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window,
               const char* who) {
  if (dtype != DType::F32 && dtype != DType::F16 && dtype != DType::BF16)
    throw std::invalid_argument(std::string("modalab cuda: ") + who + ": q, k, v must be F32, F16 or BF16");
  if (D < 1 || Dv < 1 || D > kMaxDim || Dv > kMaxDim)
    throw std::invalid_argument(std::string("modalab cuda: ") + who + ": head dims D = " + std::to_string(D) +
                                ", Dv = " + std::to_string(Dv) + " (the CUDA kernels take 1 .. " +
                                std::to_string(kMaxDim) + ")");
  Attn p;
  p.q = q;
  p.k = k;
  p.v = v;
  p.mask = mask;
  p.dt = static_cast<int>(dtype);
  p.mask_i32 = mask_i32;
  p.B = B;
  p.H = H;
  p.N = N;
  p.M = M;
  p.D = D;
  p.Dv = Dv;
  p.scale = scale;
  p.causal = causal;
  p.window = window > 0 ? window : 0;
  p.shift = M - N;
  return p;
}

bool aligned16(const void* x) { return (reinterpret_cast<uintptr_t>(x) & 15) == 0; }

bool use_wmma(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k, const void* v) {
  return (dtype == DType::F16 || dtype == DType::BF16) && D == Dv && (D == 64 || D == 128) && aligned16(q) &&
         aligned16(k) && aligned16(v);
}

unsigned grid_blocks(int64_t n, const char* who) {
  if (n > 0x7fffffffLL) throw std::invalid_argument(std::string("modalab cuda: ") + who + ": too many tiles");
  return static_cast<unsigned>(n);
}

bool use_wmma_backward(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k, const void* v) {
  return dtype == DType::BF16 && use_wmma(dtype, D, Dv, q, k, v);
}

template <int D>
void launch_wmma_backward(const Attn& p, float* dq, float* dk, float* dv, const float* dout, const float* stats,
                          float* dvec) {
  constexpr size_t qsmem = wmma_bwd_q_smem<D>(), kvsmem = wmma_bwd_kv_smem<D>();
  prepare(attn_bwd_q_wmma<D, false>, qsmem, "attention_backward (wmma)");
  prepare(attn_bwd_q_wmma<D, true>, qsmem, "attention_backward (wmma)");
  prepare(attn_bwd_kv_wmma<D>, kvsmem, "attention_backward (wmma)");
  const unsigned qgrid = grid_blocks(p.B * p.H * ((p.N + kWR - 1) / kWR), "attention_backward");
  attn_bwd_q_wmma<D, false><<<qgrid, 128, qsmem, stream()>>>(p, dout, stats, dvec, nullptr);
  CUDA_CHECK_LAUNCH("attention_backward (wmma dvec)");
  if (p.M > 0) {
    const unsigned kgrid = grid_blocks(p.B * p.H * ((p.M + kWC - 1) / kWC), "attention_backward");
    attn_bwd_kv_wmma<D><<<kgrid, 128, kvsmem, stream()>>>(p, dout, stats, dvec, dk, dv);
    CUDA_CHECK_LAUNCH("attention_backward (wmma dk, dv)");
  }
  attn_bwd_q_wmma<D, true><<<qgrid, 128, qsmem, stream()>>>(p, dout, stats, dvec, dq);
  CUDA_CHECK_LAUNCH("attention_backward (wmma dq)");
}

template <int D, typename Hh>
void launch_wmma(const Attn& p, void* out, DType out_dtype, float* stats) {
  constexpr size_t smem = wmma_smem<D>();
  prepare(attn_fwd_wmma<D, Hh>, smem, "attention_forward (wmma)");
  const unsigned grid = grid_blocks(p.B * p.H * ((p.N + kWR - 1) / kWR), "attention_forward");
  attn_fwd_wmma<D, Hh><<<grid, 128, smem, stream()>>>(p, out, static_cast<int>(out_dtype), stats);
  CUDA_CHECK_LAUNCH("attention_forward (wmma)");
}

}  // namespace

const char* attention_forward_path(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k, const void* v) {
  return use_wmma(dtype, D, Dv, q, k, v) ? "wmma" : "f32";
}

const char* attention_backward_path(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k,
                                    const void* v) {
  return use_wmma_backward(dtype, D, Dv, q, k, v) ? "wmma" : "f32";
}

void attention_forward(void* out, DType out_dtype, float* stats, const void* q, const void* k, const void* v,
                       DType dtype, const void* key_padding_mask, bool mask_i32, int64_t B, int64_t H, int64_t N,
                       int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window) {
  if (B <= 0 || H <= 0 || N <= 0) return;
  const Attn p = make_attn(q, k, v, dtype, key_padding_mask, mask_i32, B, H, N, M, D, Dv, scale, causal, window,
                           "attention_forward");
  if (out_dtype != DType::F32 && out_dtype != dtype)
    throw std::invalid_argument("modalab cuda: attention_forward: out_dtype must be F32 or the inputs' dtype");
  if (use_wmma(dtype, D, Dv, q, k, v)) {
    if (dtype == DType::BF16) {
      if (D == 64) launch_wmma<64, __nv_bfloat16>(p, out, out_dtype, stats);
      else launch_wmma<128, __nv_bfloat16>(p, out, out_dtype, stats);
    } else {
      if (D == 64) launch_wmma<64, __half>(p, out, out_dtype, stats);
      else launch_wmma<128, __half>(p, out, out_dtype, stats);
    }
    return;
  }
  const size_t smem = fwd_f32_smem(D, Dv);
  prepare(attn_fwd_f32, smem, "attention_forward");
  const unsigned grid = grid_blocks(B * H * ((N + kBR - 1) / kBR), "attention_forward");
  attn_fwd_f32<<<grid, kThreads, smem, stream()>>>(p, out, static_cast<int>(out_dtype), stats);
  CUDA_CHECK_LAUNCH("attention_forward");
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k,
                        const void* v, const float* stats, DType dtype, const void* key_padding_mask, bool mask_i32,
                        int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal,
                        int64_t window) {
  if (B <= 0 || H <= 0) return;
  const Attn p = make_attn(q, k, v, dtype, key_padding_mask, mask_i32, B, H, N, M, D, Dv, scale, causal, window,
                           "attention_backward");
  if (N <= 0) {   // no query: dk = dv = 0
    if (M > 0) {
      fill_f32(dk, B * H * M * D, 0.0f);
      fill_f32(dv, B * H * M * Dv, 0.0f);
    }
    return;
  }
  float* dvec = static_cast<float*>(malloc(static_cast<size_t>(B * H * N) * sizeof(float)));
  try {
    if (use_wmma_backward(dtype, D, Dv, q, k, v)) {
      if (D == 64) launch_wmma_backward<64>(p, dq, dk, dv, dout, stats, dvec);
      else launch_wmma_backward<128>(p, dq, dk, dv, dout, stats, dvec);
      free(dvec);
      return;
    }
    const unsigned qgrid = grid_blocks(B * H * ((N + kBR - 1) / kBR), "attention_backward");
    const size_t rsmem = bwd_rows_smem(D, Dv);
    prepare(attn_bwd_rows<false>, rsmem, "attention_backward");
    prepare(attn_bwd_rows<true>, rsmem, "attention_backward");
    attn_bwd_rows<false><<<qgrid, kThreads, rsmem, stream()>>>(p, dout, stats, dvec, nullptr);
    CUDA_CHECK_LAUNCH("attention_backward (dvec)");
    if (M > 0) {
      const size_t ksmem = bwd_kv_smem(D, Dv);
      prepare(attn_bwd_kv, ksmem, "attention_backward");
      const unsigned kgrid = grid_blocks(B * H * ((M + kBC - 1) / kBC), "attention_backward");
      attn_bwd_kv<<<kgrid, kThreads, ksmem, stream()>>>(p, dout, stats, dvec, dk, dv);
      CUDA_CHECK_LAUNCH("attention_backward (dk, dv)");
    }
    attn_bwd_rows<true><<<qgrid, kThreads, rsmem, stream()>>>(p, dout, stats, dvec, dq);
    CUDA_CHECK_LAUNCH("attention_backward (dq)");
  } catch (...) {
    free(dvec);
    throw;
  }
  free(dvec);
}

}  // namespace cuda
}  // namespace modalab
