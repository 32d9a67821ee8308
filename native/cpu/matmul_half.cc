// matmul_half: c (f32) = alpha * op(a) @ op(b) + beta * c for bf16 or f16 operands, with f32 accumulation: the
// GEMM behind ml.matmul on half-precision tensors and under ml.autocast. c is overwritten as in matmul(); beta = 0
// never reads c.
//
// Two paths:
//   - "avx512_bf16" (bf16 on processors with AVX-512 BF16): a blocked GEMM on vdpbf16ps, which multiplies pairs
//     of bf16 and adds both products into an f32 lane: acc[j] += a[2p] b[2p][j] + a[2p+1] b[2p+1][j]. Each
//     product of two bf16 is exact in f32, so the only rounding is the f32 accumulation, as in an f32 GEMM; the
//     instruction treats bf16 subnormal inputs (below 2^-126) as zero and flushes subnormal sums, which an
//     f32 GEMM would not (a difference below 2^-126 per product).
//     It follows the GotoBLAS/BLIS decomposition of native/cpu/matmul.cc, with depth packed in pairs: op(a) is
//     packed into MR-tall strips of 32-bit words (a(i, 2p), a(i, 2p+1)), op(b) into NR-wide strips of words
//     (b(2p, j), b(2p+1, j)), so the micro-kernel broadcasts one word of a and multiplies it with whole vectors
//     of b: MR x NR = 8 x 32 outputs in 16 zmm accumulators, twice the multiply-adds of an f32 FMA per
//     instruction. An odd depth is padded with a zero pair half.
//   - "f32" (f16 everywhere, bf16 elsewhere): the operands are widened to f32 (exact) by the cast kernels and
//     matmul() does the product (the BLAS, or the portable GEMM). The widening is O(n^2) against the GEMM's
//     O(n^3), and it keeps every batch stride valid, since an operand is widened over the whole extent its
//     strides reach.
//
// Results never depend on the thread count: every output element is summed by one task in a fixed order.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "modalab/kernels.h"
#include "parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MODALAB_BF16_DOT 1
#define MODALAB_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#endif

#define MODALAB_INLINE inline __attribute__((always_inline))

namespace modalab {
namespace cpu {
namespace {

// Elements touched by the matrices of a batch whose offsets follow `stride` over `shape` (the last one's start
// plus one matrix of `mat` elements); 0 for an empty batch.
int64_t batched_extent(int nbatch, const int64_t* shape, const int64_t* stride, int64_t mat) {
  int64_t far = 0;
  for (int d = 0; d < nbatch; d++) {
    if (shape[d] == 0) return 0;
    far += (shape[d] - 1) * stride[d];
  }
  return mat == 0 ? 0 : far + mat;
}

// A growable 64-byte-aligned scratch buffer. One per thread for the packed panels (small GEMMs allocate
// nothing); the widened operands of the f32 path use one on the calling thread, kept up to kKeepBytes so that
// a training loop does not fault fresh pages in every step, and freed after the call when larger.
constexpr size_t kKeepBytes = size_t(64) << 20;
struct Scratch {
  void* p = nullptr;
  size_t bytes = 0;
  ~Scratch() { std::free(p); }
  void* get(size_t need) {
    if (need > bytes) {
      std::free(p);
      p = nullptr;
      bytes = 0;
      const size_t rounded = (need + 63) / 64 * 64;
      p = std::aligned_alloc(64, rounded);
      if (!p) throw std::bad_alloc();
      bytes = rounded;
    }
    return p;
  }
  void trim() {
    if (bytes > kKeepBytes) {
      std::free(p);
      p = nullptr;
      bytes = 0;
    }
  }
};

// ------------------------------------------------------------------------------------------------ f32 path
thread_local Scratch t_widen;

void matmul_via_f32(float* c, const uint16_t* a, const uint16_t* b, DType dtype, int64_t M, int64_t N, int64_t K,
                    bool trans_a, bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride,
                    const int64_t* bstride, float alpha, float beta) {
  const int64_t na = batched_extent(nbatch, bshape, astride, M * K);
  const int64_t nb = batched_extent(nbatch, bshape, bstride, K * N);
  float* wide = static_cast<float*>(t_widen.get(static_cast<size_t>(na + nb) * sizeof(float) + 64));
  float* af = wide;
  float* bf = wide + (na + 15) / 16 * 16;
  cast(af, DType::F32, a, dtype, na);
  cast(bf, DType::F32, b, dtype, nb);
  matmul(c, af, bf, M, N, K, trans_a, trans_b, nbatch, bshape, astride, bstride, alpha, beta);
  t_widen.trim();
}

// ------------------------------------------------------------------------------------------------ bf16 dot path
#ifdef MODALAB_BF16_DOT
constexpr int kMR = 8;          // rows of the register tile
constexpr int kNV = 2;          // zmm vectors across it
constexpr int kNR = 16 * kNV;   // columns of the register tile
constexpr int64_t kKC = 512;    // depth of a packed panel, in elements (256 pairs)
constexpr int64_t kMC = 192;    // rows of a packed a-block (a multiple of kMR): 192 x 512 x 2 B = 192 KB in L2
constexpr int64_t kNC = 3072;   // columns of a packed b-panel (a multiple of kNR): 3 MB in L3
constexpr int64_t kParallelFlops = 1 << 18;   // below this many multiply-adds the GEMM runs on the caller

thread_local Scratch t_apack, t_bpack;

// One GEMM, op() described by element strides: op(a)(i, k) = a[i * ars + k * acs], op(b)(k, j) = b[k * brs + j * bcs].
struct HalfGemm {
  float* c;
  const uint16_t* a;
  const uint16_t* b;
  int64_t M, N, K, ldc;
  int64_t ars, acs, brs, bcs;
  float alpha, beta;
};

MODALAB_INLINE uint32_t pair(uint16_t lo, uint16_t hi) { return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16); }
MODALAB_INLINE uint32_t load_pair(const uint16_t* p) { uint32_t w; std::memcpy(&w, p, 4); return w; }

// Rows [i0, i0+mc) x depth [p0, p0+kc) of op(a) into kMR-tall strips of depth pairs:
// ap[strip][q][r] = (a(i, p0+2q), a(i, p0+2q+1)) for row i = i0 + strip*kMR + r, zero past the block's edges.
MODALAB_BF16_TARGET void pack_a(uint32_t* ap, const HalfGemm& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  const int64_t kq = (kc + 1) / 2, full_q = kc / 2;
  for (int64_t is = 0; is < mc; is += kMR) {
    const int64_t mr = std::min<int64_t>(kMR, mc - is);
    uint32_t* dst = ap + is * kq;
    const uint16_t* src = g.a + (i0 + is) * g.ars + p0 * g.acs;
    int64_t q0 = 0;
    if (mr == kMR && g.acs == 1) {   // rows of op(a) are contiguous: each pair is one 32-bit load
      for (int64_t q = 0; q < full_q; q++)
        for (int r = 0; r < kMR; r++) dst[q * kMR + r] = load_pair(src + r * g.ars + 2 * q);
      q0 = full_q;
    } else if (mr == kMR && g.ars == 1) {   // op(a) is a transpose: interleave two contiguous runs of kMR
      for (int64_t q = 0; q < full_q; q++) {
        const uint16_t* k0 = src + 2 * q * g.acs;
        const uint16_t* k1 = k0 + g.acs;
        for (int r = 0; r < kMR; r++) dst[q * kMR + r] = pair(k0[r], k1[r]);
      }
      q0 = full_q;
    }
    for (int64_t q = q0; q < kq; q++)   // edges: rows past mr, and the odd last depth
      for (int r = 0; r < kMR; r++) {
        const bool in = r < mr;
        const uint16_t lo = in ? src[r * g.ars + 2 * q * g.acs] : 0;
        const uint16_t hi = in && 2 * q + 1 < kc ? src[r * g.ars + (2 * q + 1) * g.acs] : 0;
        dst[q * kMR + r] = pair(lo, hi);
      }
  }
}

// Strips [s0, s1) of columns [j0, j0+nc) x depth [p0, p0+kc) of op(b) into kNR-wide strips of depth pairs:
// bp[strip][q][c] = (b(p0+2q, j), b(p0+2q+1, j)) for column j = j0 + strip*kNR + c, zero past the edges.
MODALAB_BF16_TARGET void pack_b(uint32_t* bp, const HalfGemm& g, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                                int64_t s0, int64_t s1) {
  const int64_t kq = (kc + 1) / 2, full_q = kc / 2;
  // Interleaving two rows of 32 bf16 into 32 pairs: lanes (0, 32, 1, 33, ...) and (16, 48, 17, 49, ...).
  alignas(64) uint16_t lo_idx[32], hi_idx[32];
  for (int t = 0; t < 16; t++) {
    lo_idx[2 * t] = static_cast<uint16_t>(t);
    lo_idx[2 * t + 1] = static_cast<uint16_t>(32 + t);
    hi_idx[2 * t] = static_cast<uint16_t>(16 + t);
    hi_idx[2 * t + 1] = static_cast<uint16_t>(48 + t);
  }
  const __m512i ilo = _mm512_load_si512(lo_idx), ihi = _mm512_load_si512(hi_idx);
  for (int64_t s = s0; s < s1; s++) {
    const int64_t js = s * kNR;
    const int64_t nr = std::min<int64_t>(kNR, nc - js);
    uint32_t* dst = bp + js * kq;
    const uint16_t* src = g.b + p0 * g.brs + (j0 + js) * g.bcs;
    int64_t q0 = 0;
    if (nr == kNR && g.bcs == 1) {   // rows of op(b) are contiguous: interleave rows 2q and 2q+1 in registers
      static_assert(kNR == 32, "the interleave below assumes 32-column strips");
      for (int64_t q = 0; q < full_q; q++) {
        const __m512i r0 = _mm512_loadu_si512(src + 2 * q * g.brs);
        const __m512i r1 = _mm512_loadu_si512(src + (2 * q + 1) * g.brs);
        _mm512_storeu_si512(dst + q * kNR, _mm512_permutex2var_epi16(r0, ilo, r1));
        _mm512_storeu_si512(dst + q * kNR + 16, _mm512_permutex2var_epi16(r0, ihi, r1));
      }
      q0 = full_q;
    } else if (nr == kNR && g.brs == 1) {   // op(b) is a transpose: each pair is one 32-bit load
      for (int64_t q = 0; q < full_q; q++)
        for (int c = 0; c < kNR; c++) dst[q * kNR + c] = load_pair(src + c * g.bcs + 2 * q);
      q0 = full_q;
    }
    for (int64_t q = q0; q < kq; q++)
      for (int c = 0; c < kNR; c++) {
        const bool in = c < nr;
        const uint16_t lo = in ? src[2 * q * g.brs + c * g.bcs] : 0;
        const uint16_t hi = in && 2 * q + 1 < kc ? src[(2 * q + 1) * g.brs + c * g.bcs] : 0;
        dst[q * kNR + c] = pair(lo, hi);
      }
  }
}

// The register tile: acc (kMR, kNR) = sum over kq pairs of ap (kq, kMR) words times bp (kq, kNR) words, then
// c (mr, nr) = alpha acc + beta c on the first depth block (first), c += alpha acc on later ones.
MODALAB_BF16_TARGET void micro_kernel(int64_t kq, const uint32_t* __restrict ap, const uint32_t* __restrict bp,
                                      float* __restrict c, int64_t ldc, int64_t mr, int64_t nr, float alpha,
                                      float beta, bool first) {
  __m512 acc[kMR][kNV];
  for (int r = 0; r < kMR; r++)
    for (int v = 0; v < kNV; v++) acc[r][v] = _mm512_setzero_ps();
  for (int64_t q = 0; q < kq; q++) {
    __m512bh bq[kNV];
    for (int v = 0; v < kNV; v++) bq[v] = reinterpret_cast<__m512bh>(_mm512_loadu_si512(bp + q * kNR + v * 16));
    const uint32_t* aq = ap + q * kMR;
    for (int r = 0; r < kMR; r++) {
      const __m512bh av = reinterpret_cast<__m512bh>(_mm512_set1_epi32(static_cast<int>(aq[r])));
      for (int v = 0; v < kNV; v++) acc[r][v] = _mm512_dpbf16_ps(acc[r][v], av, bq[v]);
    }
  }
  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(first ? beta : 1.0f);
  const bool read_c = !first || beta != 0.0f;
  for (int64_t r = 0; r < mr; r++) {
    float* cr = c + r * ldc;
    for (int v = 0; v < kNV; v++) {
      const int64_t left = nr - v * 16;
      if (left <= 0) break;
      const __mmask16 k = left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
      __m512 out = _mm512_mul_ps(va, acc[r][v]);
      // beta * c is added after alpha * acc, as the f32 kernel does (c = alpha acc + beta c, rounded per step)
      if (read_c) out = _mm512_add_ps(out, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(k, cr + v * 16)));
      _mm512_mask_storeu_ps(cr + v * 16, k, out);
    }
  }
}

// One task: rows [i0, i0+mc) and packed-b strips [s0, s1) of the current (jc, pc) panel.
void block_task(const HalfGemm& g, const uint32_t* bp, int64_t jc, int64_t nc, int64_t pc, int64_t kc, int64_t i0,
                int64_t mc, int64_t s0, int64_t s1) {
  const int64_t kq = (kc + 1) / 2;
  const int64_t mpad = (mc + kMR - 1) / kMR * kMR;
  uint32_t* ap = static_cast<uint32_t*>(t_apack.get(static_cast<size_t>(mpad * kq) * 4));
  pack_a(ap, g, i0, mc, pc, kc);
  const bool first = pc == 0;
  for (int64_t s = s0; s < s1; s++) {
    const int64_t js = s * kNR;
    const int64_t nr = std::min<int64_t>(kNR, nc - js);
    for (int64_t is = 0; is < mc; is += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, mc - is);
      micro_kernel(kq, ap + is * kq, bp + js * kq, g.c + (i0 + is) * g.ldc + jc + js, g.ldc, mr, nr, g.alpha,
                   g.beta, first);
    }
  }
}

// c (M, N) = beta * c, the whole GEMM when K = 0 (beta = 0 writes zeros without reading c).
void scale_c(float* c, int64_t M, int64_t N, int64_t ldc, float beta) {
  for (int64_t i = 0; i < M; i++) {
    float* cr = c + i * ldc;
    if (beta == 0.0f) std::fill(cr, cr + N, 0.0f);
    else if (beta != 1.0f) for (int64_t j = 0; j < N; j++) cr[j] *= beta;
  }
}

// The blocked GEMM, parallel as matmul.cc's: b panels packed by all threads, then row blocks (and, for short
// wide products, strip ranges) handed out as tasks.
void gemm_dot(const HalfGemm& g) {
  if (g.M <= 0 || g.N <= 0) return;
  if (g.K <= 0) {
    scale_c(g.c, g.M, g.N, g.ldc, g.beta);
    return;
  }
  const int nthreads = num_threads();
  const bool parallel = g.M * g.N * g.K >= kParallelFlops && nthreads > 1;
  int64_t mc_size = kMC;
  if (parallel) {
    const int64_t per = (g.M + nthreads - 1) / nthreads;
    mc_size = std::min<int64_t>(kMC, std::max<int64_t>(kMR, (per + kMR - 1) / kMR * kMR));
  }
  const int64_t mblocks = (g.M + mc_size - 1) / mc_size;
  for (int64_t jc = 0; jc < g.N; jc += kNC) {
    const int64_t nc = std::min<int64_t>(kNC, g.N - jc);
    const int64_t nstrips = (nc + kNR - 1) / kNR;
    const int64_t nsplit = parallel ? std::min<int64_t>(nstrips, (nthreads + mblocks - 1) / mblocks) : 1;
    for (int64_t pc = 0; pc < g.K; pc += kKC) {
      const int64_t kc = std::min<int64_t>(kKC, g.K - pc);
      const int64_t kq = (kc + 1) / 2;
      uint32_t* bp = static_cast<uint32_t*>(t_bpack.get(static_cast<size_t>(nstrips * kNR * kq) * 4));
      if (parallel) {
        parallel_for(nstrips, 4, [&](int64_t s0, int64_t s1) { pack_b(bp, g, jc, nc, pc, kc, s0, s1); });
      } else {
        pack_b(bp, g, jc, nc, pc, kc, 0, nstrips);
      }
      auto run = [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) {
          const int64_t ib = t / nsplit, sp = t % nsplit;
          const int64_t i0 = ib * mc_size, mc = std::min<int64_t>(mc_size, g.M - i0);
          const int64_t s0 = nstrips * sp / nsplit, s1 = nstrips * (sp + 1) / nsplit;
          block_task(g, bp, jc, nc, pc, kc, i0, mc, s0, s1);
        }
      };
      const int64_t ntasks = mblocks * nsplit;
      if (parallel) parallel_for(ntasks, 1, run);
      else run(0, ntasks);
    }
  }
}

void matmul_dot(float* c, const uint16_t* a, const uint16_t* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride,
                float alpha, float beta) {
  int64_t count = 1;
  for (int d = 0; d < nbatch; d++) count *= bshape[d];
  if (M <= 0 || N <= 0 || count <= 0) return;
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  auto one = [&](int64_t t) {
    int64_t ao = 0, bo = 0, rest = t;
    for (int d = nbatch - 1; d >= 0; d--) {
      const int64_t i = rest % bshape[d];
      rest /= bshape[d];
      ao += i * astride[d];
      bo += i * bstride[d];
    }
    HalfGemm g{c + t * M * N, a + ao, b + bo, M, N, K, N, 0, 0, 0, 0, alpha, beta};
    g.ars = trans_a ? 1 : lda;
    g.acs = trans_a ? lda : 1;
    g.brs = trans_b ? 1 : ldb;
    g.bcs = trans_b ? ldb : 1;
    gemm_dot(g);
  };
  // As matmul(): big GEMMs one after another, each on every thread; batches of small ones one per thread
  // (nested parallel_for calls run inline).
  const int64_t work = std::max<int64_t>(1, M * N * std::max<int64_t>(K, 1));
  if (count == 1 || (work >= kParallelFlops && count < 2 * num_threads())) {
    for (int64_t t = 0; t < count; t++) one(t);
  } else {
    parallel_for(count, std::max<int64_t>(1, kParallelFlops / work), [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) one(t);
    });
  }
}

bool has_bf16_dot() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return ok;
}
#else
bool has_bf16_dot() { return false; }
#endif

// MODALAB_HALF_GEMM=f32 sends bf16 down the f32 path too (to compare the two on one machine).
bool dot_allowed() {
  static const bool ok = [] {
    const char* force = std::getenv("MODALAB_HALF_GEMM");
    return !(force && std::string(force) == "f32");
  }();
  return ok;
}

}  // namespace

const char* matmul_half_path(DType dtype) {
  return dtype == DType::BF16 && has_bf16_dot() && dot_allowed() ? "avx512_bf16" : "f32";
}

bool matmul_half_variant(const char* path, float* c, const uint16_t* a, const uint16_t* b, DType dtype, int64_t M,
                         int64_t N, int64_t K, bool trans_a, bool trans_b, int nbatch, const int64_t* bshape,
                         const int64_t* astride, const int64_t* bstride, float alpha, float beta) {
  const std::string p = path ? path : "";
  if (dtype != DType::BF16 && dtype != DType::F16) return false;
  if (p == "f32") {
    matmul_via_f32(c, a, b, dtype, M, N, K, trans_a, trans_b, nbatch, bshape, astride, bstride, alpha, beta);
    return true;
  }
#ifdef MODALAB_BF16_DOT
  if (p == "avx512_bf16" && dtype == DType::BF16 && has_bf16_dot()) {
    matmul_dot(c, a, b, M, N, K, trans_a, trans_b, nbatch, bshape, astride, bstride, alpha, beta);
    return true;
  }
#endif
  return false;
}

void matmul_half(float* c, const uint16_t* a, const uint16_t* b, DType dtype, int64_t M, int64_t N, int64_t K,
                 bool trans_a, bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride,
                 const int64_t* bstride, float alpha, float beta) {
  matmul_half_variant(matmul_half_path(dtype), c, a, b, dtype, M, N, K, trans_a, trans_b, nbatch, bshape, astride,
                      bstride, alpha, beta);
}

}  // namespace cpu
}  // namespace modalab
