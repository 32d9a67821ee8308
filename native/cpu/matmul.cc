// matmul: batched GEMM with broadcast batch strides, through CBLAS when the build found one, else the portable
// blocked GEMM below. c is always overwritten as c = alpha * op(a) @ op(b) + beta * c; beta = 0 never reads c
// (as in BLAS), so an uninitialised output is fine and NaN in it does not leak through.
//
// The portable GEMM follows the GotoBLAS/BLIS decomposition (Goto & van de Geijn, "Anatomy of High-Performance
// Matrix Multiplication", 2008): for each KC x NC panel of op(b), pack it into NR-wide column strips; for each
// MC x KC block of op(a), pack it into MR-tall row strips; an MR x NR register-tile micro-kernel then streams
// both packed buffers with unit stride. The micro-kernel is C++ on GCC vector types (no intrinsics), so g++ -O3
// emits broadcast + vector FMAs and keeps the MR x NR accumulators in registers. The build has no -march, so the
// kernel is compiled three times (AVX-512 8x32, AVX2+FMA 6x16, baseline SSE2 4x8) and picked at run time.
//
// Measured (AMD EPYC Zen 5, one thread, 1024^3): ~170-185 GFLOP/s (AVX-512 kernel); OpenBLAS 0.3.21 reaches ~85
// with the Haswell kernels it picks for this CPU and ~180 when forced to SkylakeX (OPENBLAS_CORETYPE).
//
// Determinism: every c element is accumulated over k in the same order (KC blocks in sequence, k ascending
// inside a block) whatever the thread count or the MC/column split, so results do not depend on threads.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"

#ifdef MODALAB_HAVE_CBLAS
#ifdef MODALAB_HAVE_ACCELERATE
#include <Accelerate/Accelerate.h>
#else
#include <cblas.h>
#endif
#endif

#define MODALAB_INLINE inline __attribute__((always_inline))

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kKC = 512;   // depth of a packed panel (256 and 384 measured ~10% slower on Zen 5)
constexpr int64_t kMC = 192;   // rows of a packed a-block (a multiple of every MR below), 384 KB in L2
constexpr int64_t kNC = 3072;  // columns of a packed b-panel (a multiple of every NR), 6 MB shared in L3

// Below this many multiply-adds a GEMM runs on the calling thread: waking the pool costs more than it saves.
constexpr int64_t kParallelFlops = 1 << 18;

// A growable 64-byte-aligned scratch buffer, one per thread, so small GEMMs allocate nothing.
struct Scratch {
  float* p = nullptr;
  size_t n = 0;
  ~Scratch() { std::free(p); }
  float* get(size_t need) {
    if (need > n) {
      std::free(p);
      size_t bytes = (need * sizeof(float) + 63) / 64 * 64;
      p = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!p) throw std::bad_alloc();
      n = need;
    }
    return p;
  }
};
thread_local Scratch t_apack, t_bpack;

// The operands of one GEMM, op() already described by element strides: op(a)(i, k) = a[i * ars + k * acs].
struct Gemm {
  float* c;
  const float* a;
  const float* b;
  int64_t M, N, K, ldc;
  int64_t ars, acs;  // op(a) row and column strides
  int64_t brs, bcs;  // op(b) row (k) and column (j) strides
  float alpha, beta;
};

// Pack rows [i0, i0+mc) x depth [p0, p0+kc) of op(a) into MR-tall strips: ap[strip][k][r], zero-padded.
template <int MR>
MODALAB_INLINE void pack_a(float* ap, const Gemm& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc) {
  for (int64_t is = 0; is < mc; is += MR) {
    int64_t mr = std::min<int64_t>(MR, mc - is);
    float* dst = ap + is * kc;
    const float* src = g.a + (i0 + is) * g.ars + p0 * g.acs;
    if (mr == MR && g.acs == 1) {
      for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < MR; r++) dst[k * MR + r] = src[r * g.ars + k];
    } else if (mr == MR && g.ars == 1) {  // op(a) is a transpose: a row of the strip is contiguous in memory
      for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < MR; r++) dst[k * MR + r] = src[k * g.acs + r];
    } else {
      for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < MR; r++) dst[k * MR + r] = r < mr ? src[r * g.ars + k * g.acs] : 0.0f;
    }
  }
}

// Pack columns [j0, j0+nc) x depth [p0, p0+kc) of op(b) into NR-wide strips: bp[strip][k][c], zero-padded.
template <int NR>
MODALAB_INLINE void pack_b_strips(float* bp, const Gemm& g, int64_t j0, int64_t nc, int64_t p0, int64_t kc,
                                  int64_t s0, int64_t s1) {
  for (int64_t s = s0; s < s1; s++) {
    int64_t js = s * NR;
    int64_t nr = std::min<int64_t>(NR, nc - js);
    float* dst = bp + js * kc;
    const float* src = g.b + p0 * g.brs + (j0 + js) * g.bcs;
    if (nr == NR && g.bcs == 1) {
      for (int64_t k = 0; k < kc; k++)
        for (int c = 0; c < NR; c++) dst[k * NR + c] = src[k * g.brs + c];
    } else {
      for (int64_t k = 0; k < kc; k++)
        for (int c = 0; c < NR; c++) dst[k * NR + c] = c < nr ? src[k * g.brs + c * g.bcs] : 0.0f;
    }
  }
}

// Vector types through GCC's vector extension: plain C++ arithmetic on them compiles to whatever the enclosing
// function's target has (zmm under AVX-512, ymm under AVX2, pairs of xmm on baseline SSE2). Plain float loops
// were tried first; g++ vectorised the AVX-512 tile well but turned the 6 x 16 AVX2 tile into shuffles and
// stack spills (~30x slower), so the register tile is spelled out in vectors.
template <int W>
struct Vec {
  typedef float type __attribute__((vector_size(W * sizeof(float))));
};

// The register tile: acc (MR, NR) = ap (kc, MR)^T @ bp (kc, NR) with NR = NV vectors of W lanes, then
// c (mr, nr) = alpha * acc + beta * c on the first depth block (first), c += alpha * acc on later ones.
template <int MR, int NR, int W>
MODALAB_INLINE void micro_kernel(int64_t kc, const float* __restrict ap, const float* __restrict bp,
                                 float* __restrict c, int64_t ldc, int64_t mr, int64_t nr, float alpha, float beta,
                                 bool first) {
  typedef typename Vec<W>::type V;
  constexpr int NV = NR / W;
  static_assert(NV * W == NR, "NR must be a multiple of the vector width");
  V acc[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = V{};
  for (int64_t k = 0; k < kc; k++) {
    V bk[NV];
    for (int v = 0; v < NV; v++) std::memcpy(&bk[v], bp + k * NR + v * W, sizeof(V));
    const float* ak = ap + k * MR;
    for (int r = 0; r < MR; r++) {
      const float av = ak[r];  // broadcast: scalar * vector
      for (int v = 0; v < NV; v++) acc[r][v] += av * bk[v];
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++) {
      float* cr = c + r * ldc;
      for (int v = 0; v < NV; v++) {
        V out = alpha * acc[r][v], prev;
        if (!first || beta != 0.0f) {
          std::memcpy(&prev, cr + v * W, sizeof(V));
          out += (first ? beta : 1.0f) * prev;
        }
        std::memcpy(cr + v * W, &out, sizeof(V));
      }
    }
    return;
  }
  // A partial tile at the bottom or right edge: spill the accumulators and store what is inside c.
  float tile[MR][NR];
  std::memcpy(tile, acc, sizeof(tile));
  for (int64_t r = 0; r < mr; r++) {
    float* cr = c + r * ldc;
    for (int64_t j = 0; j < nr; j++) {
      float v = alpha * tile[r][j];
      cr[j] = !first ? cr[j] + v : beta == 0.0f ? v : v + beta * cr[j];
    }
  }
}

// One task: rows [i0, i0+mc) and packed-b strips [s0, s1) of the current (jc, pc) panel.
template <int MR, int NR, int W>
MODALAB_INLINE void block_task(const Gemm& g, const float* bp, int64_t jc, int64_t nc, int64_t pc, int64_t kc,
                               int64_t i0, int64_t mc, int64_t s0, int64_t s1) {
  int64_t mpad = (mc + MR - 1) / MR * MR;
  float* ap = t_apack.get(static_cast<size_t>(mpad * kc));
  pack_a<MR>(ap, g, i0, mc, pc, kc);
  bool first = pc == 0;
  for (int64_t s = s0; s < s1; s++) {
    int64_t js = s * NR;
    int64_t nr = std::min<int64_t>(NR, nc - js);
    for (int64_t is = 0; is < mc; is += MR) {
      int64_t mr = std::min<int64_t>(MR, mc - is);
      micro_kernel<MR, NR, W>(kc, ap + is * kc, bp + js * kc, g.c + (i0 + is) * g.ldc + jc + js, g.ldc, mr, nr,
                           g.alpha, g.beta, first);
    }
  }
}

// The ISA-specific entry points. Everything they call is always_inline, so it is compiled for their target.
struct Kernels {
  int mr, nr;
  void (*task)(const Gemm&, const float*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
  void (*pack_b)(float*, const Gemm&, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
};

#if defined(__x86_64__) && defined(__GNUC__)
// AVX-512: 8 x 32 tile = 16 zmm accumulators, 2 b vectors and a broadcast per k.
__attribute__((target("avx512f,avx2,fma"))) void task_avx512(const Gemm& g, const float* bp, int64_t jc,
    int64_t nc, int64_t pc, int64_t kc, int64_t i0, int64_t mc, int64_t s0, int64_t s1) {
  block_task<8, 32, 16>(g, bp, jc, nc, pc, kc, i0, mc, s0, s1);
}
__attribute__((target("avx512f,avx2,fma"))) void packb_avx512(float* bp, const Gemm& g, int64_t j0, int64_t nc,
    int64_t p0, int64_t kc, int64_t s0, int64_t s1) {
  pack_b_strips<32>(bp, g, j0, nc, p0, kc, s0, s1);
}
// AVX2: 6 x 16 tile = 12 ymm accumulators.
__attribute__((target("avx2,fma"))) void task_avx2(const Gemm& g, const float* bp, int64_t jc, int64_t nc,
    int64_t pc, int64_t kc, int64_t i0, int64_t mc, int64_t s0, int64_t s1) {
  block_task<6, 16, 8>(g, bp, jc, nc, pc, kc, i0, mc, s0, s1);
}
__attribute__((target("avx2,fma"))) void packb_avx2(float* bp, const Gemm& g, int64_t j0, int64_t nc,
    int64_t p0, int64_t kc, int64_t s0, int64_t s1) {
  pack_b_strips<16>(bp, g, j0, nc, p0, kc, s0, s1);
}
#endif
// Baseline (SSE2 / NEON): 4 x 8 tile = 8 xmm accumulators.
void task_base(const Gemm& g, const float* bp, int64_t jc, int64_t nc, int64_t pc, int64_t kc, int64_t i0,
               int64_t mc, int64_t s0, int64_t s1) {
  block_task<4, 8, 4>(g, bp, jc, nc, pc, kc, i0, mc, s0, s1);
}
void packb_base(float* bp, const Gemm& g, int64_t j0, int64_t nc, int64_t p0, int64_t kc, int64_t s0, int64_t s1) {
  pack_b_strips<8>(bp, g, j0, nc, p0, kc, s0, s1);
}

const Kernels& kernels() {
  static const Kernels k = [] {
#if defined(__x86_64__) && defined(__GNUC__)
    // MODALAB_GEMM_KERNEL=avx2|base forces a narrower kernel, so that every variant can be tested on one machine.
    const char* force = std::getenv("MODALAB_GEMM_KERNEL");
    std::string want = force ? force : "";
    if (want == "base") return Kernels{4, 8, task_base, packb_base};
    __builtin_cpu_init();
    if (want == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{6, 16, task_avx2, packb_avx2};
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
      return Kernels{8, 32, task_avx512, packb_avx512};
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Kernels{6, 16, task_avx2, packb_avx2};
#endif
    return Kernels{4, 8, task_base, packb_base};
  }();
  return k;
}

// c (M, N) = beta * c, the whole GEMM when K = 0 (beta = 0 writes zeros without reading c).
void scale_c(float* c, int64_t M, int64_t N, int64_t ldc, float beta) {
  for (int64_t i = 0; i < M; i++) {
    float* cr = c + i * ldc;
    if (beta == 0.0f) {
      std::fill(cr, cr + N, 0.0f);
    } else if (beta != 1.0f) {
      for (int64_t j = 0; j < N; j++) cr[j] *= beta;
    }
  }
}

void gemm_blocked(const Gemm& g) {
  const Kernels& kern = kernels();
  const int64_t MR = kern.mr, NR = kern.nr;
  const int nthreads = num_threads();
  const bool parallel = g.M * g.N * g.K >= kParallelFlops && nthreads > 1;
  // Row blocks: at most kMC rows, fewer when that gives every thread a block (a multiple of MR either way).
  int64_t mc_size = kMC;
  if (parallel) {
    int64_t per = (g.M + nthreads - 1) / nthreads;
    mc_size = std::min<int64_t>(kMC, std::max<int64_t>(MR, (per + MR - 1) / MR * MR));
  }
  const int64_t mblocks = (g.M + mc_size - 1) / mc_size;
  for (int64_t jc = 0; jc < g.N; jc += kNC) {
    const int64_t nc = std::min<int64_t>(kNC, g.N - jc);
    const int64_t nstrips = (nc + NR - 1) / NR;
    // With fewer row blocks than threads (a short, wide product), split the strips between threads too.
    const int64_t nsplit = parallel ? std::min<int64_t>(nstrips, (nthreads + mblocks - 1) / mblocks) : 1;
    for (int64_t pc = 0; pc < g.K; pc += kKC) {
      const int64_t kc = std::min<int64_t>(kKC, g.K - pc);
      float* bp = t_bpack.get(static_cast<size_t>(nstrips * NR * kc));
      if (parallel) {
        parallel_for(nstrips, 4, [&](int64_t s0, int64_t s1) { kern.pack_b(bp, g, jc, nc, pc, kc, s0, s1); });
      } else {
        kern.pack_b(bp, g, jc, nc, pc, kc, 0, nstrips);
      }
      auto run = [&](int64_t t0, int64_t t1) {
        for (int64_t t = t0; t < t1; t++) {
          int64_t ib = t / nsplit, sp = t % nsplit;
          int64_t i0 = ib * mc_size, mc = std::min<int64_t>(mc_size, g.M - i0);
          int64_t s0 = nstrips * sp / nsplit, s1 = nstrips * (sp + 1) / nsplit;
          kern.task(g, bp, jc, nc, pc, kc, i0, mc, s0, s1);
        }
      };
      const int64_t ntasks = mblocks * nsplit;
      if (parallel) {
        parallel_for(ntasks, 1, run);
      } else {
        run(0, ntasks);
      }
    }
  }
}

Gemm make_gemm(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
               bool trans_b, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta) {
  Gemm g{c, a, b, M, N, K, ldc, 0, 0, 0, 0, alpha, beta};
  // op(a)(i, k): a[i * lda + k], or a[k * lda + i] when a is stored (K, M).
  g.ars = trans_a ? 1 : lda;
  g.acs = trans_a ? lda : 1;
  // op(b)(k, j): b[k * ldb + j], or b[j * ldb + k] when b is stored (N, K).
  g.brs = trans_b ? 1 : ldb;
  g.bcs = trans_b ? ldb : 1;
  return g;
}

// Below this many multiply-adds the portable kernel beats a BLAS call (whose setup and thread wake-up dominate),
// and batches of such GEMMs are better spread over our pool than handed to BLAS one at a time. Measured on
// an AMD EPYC (Zen 5), one thread, against OpenBLAS 0.3.21: equal at 32^3 (~0.6 us), the portable kernel ahead
// from 64^3 up with OpenBLAS's Haswell kernels, behind by ~20% with its SkylakeX kernels (OPENBLAS_CORETYPE).
constexpr int64_t kSmallFlops = 32 * 32 * 32;

bool is_small(int64_t M, int64_t N, int64_t K) { return M * N * K <= kSmallFlops; }

}  // namespace

void gemm_portable(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                   bool trans_b, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    scale_c(c, M, N, ldc, beta);
    return;
  }
  gemm_blocked(make_gemm(c, a, b, M, N, K, trans_a, trans_b, lda, ldb, ldc, alpha, beta));
}

void matmul(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
            int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride, float alpha,
            float beta) {
  int64_t count = 1;
  for (int d = 0; d < nbatch; d++) count *= bshape[d];
  if (M <= 0 || N <= 0 || count <= 0) return;
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N, ldc = N;
  // Element offsets of batch t's matrices: t decomposed over bshape, dotted with the strides.
  auto offsets = [&](int64_t t, int64_t* ao, int64_t* bo) {
    *ao = 0;
    *bo = 0;
    for (int d = nbatch - 1; d >= 0; d--) {
      int64_t i = t % bshape[d];
      t /= bshape[d];
      *ao += i * astride[d];
      *bo += i * bstride[d];
    }
  };
  auto one = [&](int64_t t, bool portable) {
    int64_t ao, bo;
    offsets(t, &ao, &bo);
    float* ct = c + t * M * N;
    if (K <= 0) {
      scale_c(ct, M, N, ldc, beta);
      return;
    }
#ifdef MODALAB_HAVE_CBLAS
    if (!portable) {
      cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
                  static_cast<int>(M), static_cast<int>(N), static_cast<int>(K), alpha, a + ao,
                  static_cast<int>(lda), b + bo, static_cast<int>(ldb), beta, ct, static_cast<int>(ldc));
      return;
    }
#endif
    gemm_portable(ct, a + ao, b + bo, M, N, K, trans_a, trans_b, lda, ldb, ldc, alpha, beta);
  };
  // BLAS for everything but small matrices, where its per-call setup costs more than the arithmetic, and batches
  // of medium ones (attention heads: 64 x 64 x 32 per head), which are better spread one GEMM per thread over our
  // pool than handed to BLAS one at a time. CBLAS takes int sizes, so anything past 2^31 stays portable too.
  const int64_t work = std::max<int64_t>(1, M * N * std::max<int64_t>(K, 1));
  bool portable = true;
#ifdef MODALAB_HAVE_CBLAS
  const int64_t kIntMax = 0x7fffffff;
  portable = is_small(M, N, K) || (count > 1 && work < kParallelFlops) || M * K > kIntMax || K * N > kIntMax ||
             M * N > kIntMax;
#endif
  if (!portable) {
    // OpenBLAS threads inside each call; batches run one after another.
    for (int64_t t = 0; t < count; t++) one(t, false);
    return;
  }
  // The portable kernel: spread whole matrices over threads (each GEMM then runs inline in its thread, since
  // nested parallel_for calls do), enough of them per chunk to be worth a wake-up.
  // When the batch is shorter than twice the thread count and each GEMM is big enough to split, the GEMMs run
  // one after another and each uses every thread instead (better balance than 3 matrices on 2 threads).
  int64_t grain = std::max<int64_t>(1, kParallelFlops / work);
  if (count == 1 || (work >= kParallelFlops && count < 2 * num_threads())) {
    for (int64_t t = 0; t < count; t++) one(t, true);
  } else {
    parallel_for(count, grain, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; t++) one(t, true);
    });
  }
}

}  // namespace cpu
}  // namespace modalab
