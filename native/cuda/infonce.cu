// CLIP's symmetric InfoNCE on the GPU, cpu::infonce_forward / infonce_backward's contract (kernels.h), f32.
// The logits S = s a b^T (N, N) are never stored: only 64-column tiles of them, in shared memory.
//
// Every score is computed the same way everywhere: s * (sum_k a_ik b_jk), the sum one fmaf after another in k
// order from 0. fmaf(x, y, acc) = fmaf(y, x, acc), so S_ij is the same bits in the row pass (a against b), the
// column pass (b against a), the backward, and the positives kernel (S_ii): the diagonal found inside a tile is
// exactly the saved positive, as on the CPU.
//
// forward   pos_i = S_ii (one thread per row);
//           row pass: a block owns 64 rows of a, walks every 64-column tile of b, and keeps per row the running
//           max m and the sum l of exp(S - m) (f32 exps, the sum in double, rescaled by exp(m_old - m_new) as
//           attention does): stats rows 0 and 1 (m, log l);
//           column pass: the same kernel with a and b swapped (the rows of S^T are the columns of S): rows 2, 3;
//           loss = sum_i ((m_r - S_ii) + log l_r) + ((m_c - S_ii) + log l_c) over 2N, in double, one block in a
//           fixed order.
// backward  G = dloss (P_r + P_c - 2I) / (2N) tile by tile (the diagonal as coef (expm1 + expm1) in double, as
//           the CPU), da_I = s sum_J G_IJ b_J by a block owning 32 rows of a (accumulated in registers over every
//           column tile, D in chunks of 512: a wider D recomputes the score tiles once per chunk), and db by the
//           same kernel with a and b (and the row and column statistics) swapped. dlogit_scale = coef * sum over
//           tiles of P_r (S - S_ii) + P_c (S - S_jj) (the CPU's cancellation-free form), per block in double, the
//           block sums added in block order.
// No atomics anywhere: results do not change from run to run. The scores are plain f32 FMAs (no TF32), so the
// row and column passes each cost one f32 GEMM of N x N x D (forward 2, backward 4 with the gradients).
#include <cmath>
#include <limits>

#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kT = 64;        // columns per tile (and rows per block in the forward)
constexpr int kK = 16;        // k slice staged in shared memory
constexpr int kGR = 32;       // rows per block in the backward
constexpr int kDChunk = 512;  // backward: D columns accumulated in registers per sweep

// pos (N) = s * (a_i . b_i)
__global__ void infonce_pos(float* pos, const float* __restrict__ a, const float* __restrict__ b, int64_t N,
                            int64_t D, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N; i += int64_t(gridDim.x) * blockDim.x) {
    float acc = 0.0f;
    for (int64_t k = 0; k < D; k++) acc = fmaf(a[i * D + k], b[i * D + k], acc);
    pos[i] = s * acc;
  }
}

// The score tile S (R rows from i0, 64 columns from j0) = s A_I B_J^T into Ss (R, 65); rows past N and columns
// past N are computed from zeros (and ignored by the callers). 256 threads: thread (ty, tx) = (t / 16, t % 16)
// owns rows ty + 16 a and columns tx + 16 b.
template <int R>
__device__ __forceinline__ void score_tile(float* Ss, float (*As)[R + 1], float (*Bs)[kT + 1], const float* A,
                                           const float* B, int64_t i0, int64_t j0, int64_t N, int64_t D, float s) {
  constexpr int RA = R / 16;
  const int t = threadIdx.x, ty = t / 16, tx = t % 16;
  float acc[RA][4];
#pragma unroll
  for (int x = 0; x < RA; x++)
#pragma unroll
    for (int y = 0; y < 4; y++) acc[x][y] = 0.0f;
  for (int64_t k0 = 0; k0 < D; k0 += kK) {
    __syncthreads();   // the previous slice's readers are done
    for (int idx = t; idx < R * kK; idx += 256) {
      const int r = idx / kK, kk = idx % kK;
      const int64_t i = i0 + r, k = k0 + kk;
      As[kk][r] = i < N && k < D ? A[i * D + k] : 0.0f;
    }
    for (int idx = t; idx < kT * kK; idx += 256) {
      const int c = idx / kK, kk = idx % kK;
      const int64_t j = j0 + c, k = k0 + kk;
      Bs[kk][c] = j < N && k < D ? B[j * D + k] : 0.0f;
    }
    __syncthreads();
    const int kn = static_cast<int>(D - k0 < kK ? D - k0 : kK);   // never fold in the zero padding: keeps the
    for (int kk = 0; kk < kn; kk++) {                              // fmaf chain identical to infonce_pos
      float av[RA], bv[4];
#pragma unroll
      for (int x = 0; x < RA; x++) av[x] = As[kk][ty + 16 * x];
#pragma unroll
      for (int y = 0; y < 4; y++) bv[y] = Bs[kk][tx + 16 * y];
#pragma unroll
      for (int x = 0; x < RA; x++)
#pragma unroll
        for (int y = 0; y < 4; y++) acc[x][y] = fmaf(av[x], bv[y], acc[x][y]);
    }
  }
  __syncthreads();   // every reader of the previous tile in Ss is done (also when D = 0)
#pragma unroll
  for (int x = 0; x < RA; x++)
#pragma unroll
    for (int y = 0; y < 4; y++) Ss[(ty + 16 * x) * (kT + 1) + tx + 16 * y] = s * acc[x][y];
  __syncthreads();
}

// Row statistics of S = s A B^T over all N columns for the 64 rows of this block: m_out, logl_out (f32 log l),
// logl_d (double log l).
__global__ void __launch_bounds__(256) infonce_rows(float* m_out, float* logl_out, double* logl_d,
                                                    const float* __restrict__ A, const float* __restrict__ B,
                                                    int64_t N, int64_t D, float s) {
  __shared__ float As[kK][kT + 1];
  __shared__ float Bs[kK][kT + 1];
  __shared__ float Ss[kT * (kT + 1)];
  const int t = threadIdx.x, row = t / 4, q = t % 4;
  const int64_t i0 = blockIdx.x * int64_t(kT);
  float m = -INFINITY;
  double l = 0.0;
  for (int64_t j0 = 0; j0 < N; j0 += kT) {
    score_tile<kT>(Ss, As, Bs, A, B, i0, j0, N, D, s);
    const float* x = Ss + row * (kT + 1) + q * 16;
    const int64_t jq = j0 + q * 16;
    float tm = -INFINITY;
    for (int c = 0; c < 16; c++)
      if (jq + c < N) tm = fmaxf(tm, x[c]);
    tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 1));
    tm = fmaxf(tm, __shfl_xor_sync(0xffffffffu, tm, 2));
    const float mnew = tm > m ? tm : m;
    if (l != 0.0) l *= exp(static_cast<double>(m) - mnew);
    m = mnew;
    float ps = 0.0f;
    for (int c = 0; c < 16; c++)
      if (jq + c < N) ps += expf(x[c] - m);
    ps += __shfl_xor_sync(0xffffffffu, ps, 1);
    ps += __shfl_xor_sync(0xffffffffu, ps, 2);
    l += ps;
  }
  const int64_t i = i0 + row;
  if (q == 0 && i < N) {
    const double lg = log(l);
    m_out[i] = m;
    logl_out[i] = static_cast<float>(lg);
    logl_d[i] = lg;
  }
}

// loss = sum_i ((m_r - pos) + log l_r) + ((m_c - pos) + log l_c) / (2N); one block of 1024 threads.
__global__ void __launch_bounds__(1024) infonce_loss(float* loss, const float* stats, const double* logl_d,
                                                     const float* pos, int64_t N) {
  __shared__ double part[32];
  double acc = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    acc += ((static_cast<double>(stats[i]) - pos[i]) + logl_d[i]) +
           ((static_cast<double>(stats[2 * N + i]) - pos[i]) + logl_d[N + i]);
  for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    double total = 0.0;
    for (int w = 0; w < static_cast<int>(blockDim.x / 32); w++) total += part[w];
    *loss = static_cast<float>(total / (2.0 * static_cast<double>(N)));
  }
}

// out_I (32 rows, D) = s sum_J G_IJ B_J with G_ij = coef (exp((S - mR_i) - lR_i) + exp((S - mC_j) - lC_j)) off the
// diagonal and coef (expm1 + expm1) on it; out may be null (only gs). gs_part[block] (may be null) = sum over the
// block's tiles of P_r (S - pos_i) + P_c (S - pos_j).
__global__ void __launch_bounds__(256) infonce_grad(float* out, double* gs_part, const float* __restrict__ A,
                                                    const float* __restrict__ B, const float* mR, const float* lR,
                                                    const float* mC, const float* lC, const float* pos,
                                                    const float* dloss, int64_t N, int64_t D, float s) {
  __shared__ float As[kK][kGR + 1];
  __shared__ float Bs[kK][kT + 1];
  __shared__ float Gs[kGR * (kT + 1)];
  __shared__ __align__(16) float Bt[kT][kT];
  __shared__ double part[8];
  const int t = threadIdx.x, tr = t / 32, tc = t % 32;
  const int64_t i0 = blockIdx.x * int64_t(kGR);
  const double coef = static_cast<double>(*dloss) / (2.0 * static_cast<double>(N));
  const float coeff = static_cast<float>(coef);
  double gs = 0.0;
  const int64_t ds_end = out && D > 0 ? D : 1;
  for (int64_t ds = 0; ds < ds_end; ds += kDChunk) {
    float acc[kDChunk / kT][4][2];
#pragma unroll
    for (int c = 0; c < kDChunk / kT; c++)
#pragma unroll
      for (int a = 0; a < 4; a++) acc[c][a][0] = acc[c][a][1] = 0.0f;
    for (int64_t j0 = 0; j0 < N; j0 += kT) {
      score_tile<kGR>(Gs, As, Bs, A, B, i0, j0, N, D, s);
      float gsl = 0.0f;
      for (int idx = t; idx < kGR * kT; idx += 256) {
        const int r = idx / kT, c = idx % kT;
        const int64_t i = i0 + r, j = j0 + c;
        float g = 0.0f;
        if (i < N && j < N) {
          const float x = Gs[r * (kT + 1) + c];
          const float pr = expf((x - mR[i]) - lR[i]);
          const float pc = expf((x - mC[j]) - lC[j]);
          gsl += pr * (x - pos[i]) + pc * (x - pos[j]);
          if (i == j) {
            const double xd = pos[i];
            g = static_cast<float>(coef * (expm1((xd - mR[i]) - lR[i]) + expm1((xd - mC[j]) - lC[j])));
          } else {
            g = (pr + pc) * coeff;
          }
        }
        Gs[r * (kT + 1) + c] = g;
      }
      if (ds == 0) gs += gsl;
      if (!out) continue;
      // acc (32, chunk) += G (32, 64) B_J (64, chunk), chunk by chunk of 64 columns.
#pragma unroll
      for (int ch = 0; ch < kDChunk / kT; ch++) {
        const int64_t dc = ds + ch * kT;
        if (dc < D) {   // block-uniform
          __syncthreads();   // G written / the previous chunk's readers done
          for (int idx = t; idx < kT * kT; idx += 256) {
            const int key = idx / kT, d = idx % kT;
            const int64_t j = j0 + key, dd = dc + d;
            Bt[key][d] = j < N && dd < D ? B[j * D + dd] : 0.0f;
          }
          __syncthreads();
          for (int k = 0; k < kT; k++) {
            const float2 bv = *reinterpret_cast<const float2*>(&Bt[k][tc * 2]);
#pragma unroll
            for (int a = 0; a < 4; a++) {
              const float g = Gs[(tr * 4 + a) * (kT + 1) + k];
              acc[ch][a][0] = fmaf(g, bv.x, acc[ch][a][0]);
              acc[ch][a][1] = fmaf(g, bv.y, acc[ch][a][1]);
            }
          }
        }
      }
    }
    if (out) {
#pragma unroll
      for (int ch = 0; ch < kDChunk / kT; ch++)
#pragma unroll
        for (int a = 0; a < 4; a++)
#pragma unroll
          for (int e = 0; e < 2; e++) {
            const int64_t i = i0 + tr * 4 + a, d = ds + ch * kT + tc * 2 + e;
            if (i < N && d < D) out[i * D + d] = s * acc[ch][a][e];
          }
    }
  }
  if (gs_part) {
    for (int o = 16; o > 0; o >>= 1) gs += __shfl_xor_sync(0xffffffffu, gs, o);
    if ((t & 31) == 0) part[t >> 5] = gs;
    __syncthreads();
    if (t == 0) {
      double total = 0.0;
      for (int w = 0; w < 8; w++) total += part[w];
      gs_part[blockIdx.x] = total;
    }
  }
}

// dlogit = passes ? coef * sum(gs_part) : 0, the blocks added in order.
__global__ void infonce_dscale(float* dlogit, const double* gs_part, int64_t nblocks, const float* dloss, int64_t N) {
  double total = 0.0;
  for (int64_t k = 0; k < nblocks; k++) total += gs_part[k];
  const double coef = static_cast<double>(*dloss) / (2.0 * static_cast<double>(N));
  *dlogit = static_cast<float>(coef * total);
}

// s = min(exp(logit_scale), 100), as cpu::infonce_scale (exp in double); *passes: the clamp lets the gradient through.
float scale_of(float logit_scale, bool* passes) {
  const double e = std::exp(static_cast<double>(logit_scale));
  if (passes) *passes = !(e > 100.0);
  return e > 100.0 ? 100.0f : static_cast<float>(e);
}

struct Scratch {   // device memory for one call, freed on every path
  void* p = nullptr;
  explicit Scratch(size_t bytes) : p(bytes ? malloc(bytes) : nullptr) {}
  ~Scratch() {
    try {
      free(p);
    } catch (...) {
    }
  }
};

unsigned blocks_of(int64_t n, int per) {
  const int64_t b = (n + per - 1) / per;
  if (b > 0x7fffffffLL) throw std::invalid_argument("modalab cuda: infonce: N too large");
  return static_cast<unsigned>(b);
}

}  // namespace

void infonce_forward(float* loss, float* stats, const float* a, const float* b, int64_t N, int64_t D,
                     float logit_scale) {
  if (N <= 0) {
    fill_f32(loss, 1, std::numeric_limits<float>::quiet_NaN());
    return;
  }
  const float s = scale_of(logit_scale, nullptr);
  Scratch pos(static_cast<size_t>(N) * sizeof(float)), logd(static_cast<size_t>(2 * N) * sizeof(double));
  float* posp = static_cast<float*>(pos.p);
  double* logdp = static_cast<double*>(logd.p);
  infonce_pos<<<grid_for(N, 256), 256, 0, stream()>>>(posp, a, b, N, D, s);
  CUDA_CHECK_LAUNCH("infonce_forward (positives)");
  infonce_rows<<<blocks_of(N, kT), 256, 0, stream()>>>(stats, stats + N, logdp, a, b, N, D, s);
  CUDA_CHECK_LAUNCH("infonce_forward (rows)");
  infonce_rows<<<blocks_of(N, kT), 256, 0, stream()>>>(stats + 2 * N, stats + 3 * N, logdp + N, b, a, N, D, s);
  CUDA_CHECK_LAUNCH("infonce_forward (columns)");
  infonce_loss<<<1, 1024, 0, stream()>>>(loss, stats, logdp, posp, N);
  CUDA_CHECK_LAUNCH("infonce_forward (loss)");
}

void infonce_backward(float* da, float* db, float* dlogit_scale, const float* dloss, const float* a, const float* b,
                      const float* stats, int64_t N, int64_t D, float logit_scale) {
  bool passes = false;
  const float s = scale_of(logit_scale, &passes);
  const bool want_gs = dlogit_scale != nullptr && passes;
  if (N <= 0 || (!da && !db && !want_gs)) {
    if (dlogit_scale) fill_f32(dlogit_scale, 1, 0.0f);
    return;
  }
  const float* mr = stats;
  const float* lr = stats + N;
  const float* mc = stats + 2 * N;
  const float* lc = stats + 3 * N;
  const unsigned nblk = blocks_of(N, kGR);
  Scratch pos(static_cast<size_t>(N) * sizeof(float)), part(want_gs ? nblk * sizeof(double) : 0);
  float* posp = static_cast<float*>(pos.p);
  double* partp = static_cast<double*>(part.p);
  infonce_pos<<<grid_for(N, 256), 256, 0, stream()>>>(posp, a, b, N, D, s);
  CUDA_CHECK_LAUNCH("infonce_backward (positives)");
  bool gs_done = false;
  if (da || !db) {   // da (or, with neither gradient, only the logit scale's sum)
    infonce_grad<<<nblk, 256, 0, stream()>>>(da, want_gs ? partp : nullptr, a, b, mr, lr, mc, lc, posp, dloss, N, D,
                                              s);
    CUDA_CHECK_LAUNCH("infonce_backward (da)");
    gs_done = true;
  }
  if (db) {
    infonce_grad<<<nblk, 256, 0, stream()>>>(db, want_gs && !gs_done ? partp : nullptr, b, a, mc, lc, mr, lr, posp,
                                              dloss, N, D, s);
    CUDA_CHECK_LAUNCH("infonce_backward (db)");
  }
  if (dlogit_scale) {
    if (want_gs) {
      infonce_dscale<<<1, 1, 0, stream()>>>(dlogit_scale, partp, nblk, dloss, N);
      CUDA_CHECK_LAUNCH("infonce_backward (dlogit_scale)");
    } else {
      fill_f32(dlogit_scale, 1, 0.0f);
    }
  }
}

}  // namespace cuda
}  // namespace modalab
