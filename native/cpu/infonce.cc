// infoNCE: CLIP's symmetric contrastive loss without the N x N logit matrix (Inf-CL, Cheng et al. 2024).
//
// S = s a b^T is only ever seen one kTile x kTile tile at a time, in a per-thread buffer:
//   forward   S tile (GEMM) -> online softmax statistics of its rows and of its columns
//             (a running max and a running sum of exp(S - max) per row and per column: FlashAttention's
//             rescaling, in both directions at once) and, from the diagonal tiles, the positives S_ii.
//   backward  S tile again (recomputed, bit-identical) -> G = dloss (P_r + P_c - 2 I) / (2N) in place, where
//             P_r = exp(S - lse_r) and P_c = exp(S - lse_c) come from the saved statistics ->
//             da_I += s G b_J and db_J += s G^T a_I (two more GEMMs), and sum(G * S) for the logit scale.
// Memory beyond the inputs and outputs: a packed copy of b (N D floats, made and freed by each call), O(N)
// statistics and a 64 KB tile per thread; never O(N^2).
// Every output is overwritten (=): da, db get beta = 0 on their first tile, loss and dlogit_scale are assigned.
//
// Threads and determinism. Rows of a and columns of b are cut into nb = ceil(N / kTile) blocks. A naive split by
// row blocks would let two threads add into the same db rows (or column statistics) at once. Instead the nb x nb
// tiles are swept as a wavefront: at step t, task p handles tile (I = p, J = (p + t) mod nb). Within one step
// every row block and every column block belongs to exactly one task, so the tasks of a step run in parallel
// with no shared writes, and each da_I / db_J / statistic receives its tiles in an order fixed by (I, J, t)
// alone: results are bit-identical whatever the thread count. kTile is a constant for the same reason.
//
// The tile products are register-tiled micro-kernels (below, "GEMM tiles") and the softmax passes are vectorised
// with GCC vector types; both are compiled three times (AVX-512, AVX2+FMA, baseline) and picked at run time like
// matmul.cc's kernels.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"

#define MODALAB_INLINE inline __attribute__((always_inline))

// The vector helpers below take and return GCC vector types; GCC warns that such a function's ABI depends on
// the target. They are always inlined into the one target-specific function that uses them, so no call with
// that ABI ever exists.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace modalab {
namespace cpu {
namespace {

// 128 x 128 tiles: the S tile (64 KB) and the a/b blocks of a D = 256 problem (128 KB each) stay in L2, and
// each tile is 128 * 128 * D multiply-adds, enough to hide the per-tile passes. N = 4096 gives 32 tasks a step.
constexpr int64_t kTile = 128;
constexpr double kMaxScale = 100.0;  // CLIP's clamp on exp(logit_scale)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <int W>
struct Vec {
  typedef float f __attribute__((vector_size(W * sizeof(float))));
  typedef int32_t i __attribute__((vector_size(W * sizeof(int32_t))));
};

template <int W>
MODALAB_INLINE typename Vec<W>::f splat(float v) {
  typename Vec<W>::f r = {};
  return r + v;
}
template <int W>
MODALAB_INLINE typename Vec<W>::f load(const float* p) {
  typename Vec<W>::f v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
template <int W>
MODALAB_INLINE void store(float* p, const typename Vec<W>::f& v) {
  std::memcpy(p, &v, sizeof(v));
}
template <int W>
MODALAB_INLINE typename Vec<W>::f vmax(const typename Vec<W>::f& a, const typename Vec<W>::f& b) {
  return a > b ? a : b;
}
template <int W>
MODALAB_INLINE float hmax(const typename Vec<W>::f& v) {
  float m = v[0];
  for (int l = 1; l < W; l++) m = v[l] > m ? v[l] : m;
  return m;
}
template <int W>
MODALAB_INLINE float hsum(const typename Vec<W>::f& v) {
  float s = 0.0f;
  for (int l = 0; l < W; l++) s += v[l];
  return s;
}

// e^x on a vector (the same method as elementwise.cc's fast_exp, within a few ulp): n = round(x / ln 2),
// r = x - n ln 2 in two parts (Cody-Waite), e^r by its Taylor series to degree 7, times 2^n built in the
// exponent bits. Here x is always S - max or S - lse, so x <= ~0: the result underflows to 0 below the smallest
// normal (that also covers -inf), and the upper clamp at 88 only keeps 2^n representable. NaN stays NaN.
template <int W>
MODALAB_INLINE typename Vec<W>::f vexp(const typename Vec<W>::f& xin) {
  typedef typename Vec<W>::f VF;
  typedef typename Vec<W>::i VI;
  const VI under = xin < -87.33f;
  const VF x = xin > 88.0f ? splat<W>(88.0f) : xin;  // NaN: the comparison is false, NaN goes on
  const float magic = 12582912.0f;      // 1.5 * 2^23: adding it rounds to an integer, which lands in the low bits
  const VF t = x * 1.44269504088896341f + magic;
  const VF n = t - magic;
  VF r = x - n * 0.693359375f;          // ln 2 = 0.693359375 - 2.12194440e-4 (the first part exact)
  r = r + n * 2.12194440e-4f;
  VF p = splat<W>(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VI ni = (VI)t - 0x4B400000;     // the integer n from t's mantissa (t's bits are magic's + n)
  const VF scale = (VF)((ni + 127) << 23);
  return under ? splat<W>(0.0f) : p * scale;
}

// Lanes of a row's last vector that lie inside the tile (nj columns): all ones when nj is a multiple of W.
template <int W>
MODALAB_INLINE typename Vec<W>::i tail_mask(int64_t nj) {
  typename Vec<W>::i m;
  const int64_t base = (nj + W - 1) / W * W - W;
  for (int l = 0; l < W; l++) m[l] = base + l < nj ? -1 : 0;
  return m;
}

// ------------------------------------------------------------------------------------------------ forward tile
// Fold one tile S (ni, nj), row stride ld, into the running statistics of its rows (mr, lr: ni) and columns
// (mc, lc: nj): m = max so far, l = sum of exp(S - m) so far (in double, rescaled by exp(m_old - m_new) when the
// max grows). Two sweeps: the maxima first, so every exp is taken once against the final max of this tile.
// Columns past nj in the buffer are read (the rows are kTile wide) but masked to -inf.
template <int W>
MODALAB_INLINE void forward_tile(const float* S, int64_t ld, int64_t ni, int64_t nj, float* mr, double* lr,
                                 float* mc, double* lc) {
  typedef typename Vec<W>::f VF;
  typedef typename Vec<W>::i VI;
  constexpr int64_t kV = kTile / W;
  const int64_t nv = (nj + W - 1) / W;
  const VI tail = tail_mask<W>(nj);
  const VF ninf = splat<W>(kNegInf);

  VF cmax[kV];
  for (int64_t v = 0; v < nv; v++) cmax[v] = ninf;
  for (int64_t i = 0; i < ni; i++) {
    const float* row = S + i * ld;
    VF rm = ninf;
    for (int64_t v = 0; v < nv; v++) {
      VF x = load<W>(row + v * W);
      if (v == nv - 1) x = tail ? x : ninf;
      rm = vmax<W>(rm, x);
      cmax[v] = vmax<W>(cmax[v], x);
    }
    const float m = hmax<W>(rm);
    const float mnew = m > mr[i] ? m : mr[i];
    if (lr[i] != 0.0) lr[i] *= std::exp(static_cast<double>(mr[i]) - mnew);
    mr[i] = mnew;
  }
  float cm[kTile];
  for (int64_t v = 0; v < nv; v++) store<W>(cm + v * W, cmax[v]);
  for (int64_t j = 0; j < nj; j++) {
    const float mnew = cm[j] > mc[j] ? cm[j] : mc[j];
    if (lc[j] != 0.0) lc[j] *= std::exp(static_cast<double>(mc[j]) - mnew);
    mc[j] = mnew;
    cm[j] = mnew;
  }
  for (int64_t j = nj; j < nv * W; j++) cm[j] = 0.0f;  // masked lanes: exp(-inf - 0) = 0, no NaN

  VF cacc[kV];
  for (int64_t v = 0; v < nv; v++) cacc[v] = splat<W>(0.0f);
  for (int64_t i = 0; i < ni; i++) {
    const float* row = S + i * ld;
    const VF m = splat<W>(mr[i]);
    VF racc = splat<W>(0.0f);
    for (int64_t v = 0; v < nv; v++) {
      VF x = load<W>(row + v * W);
      if (v == nv - 1) x = tail ? x : ninf;
      racc += vexp<W>(x - m);
      cacc[v] += vexp<W>(x - load<W>(cm + v * W));
    }
    lr[i] += hsum<W>(racc);
  }
  float cs[kTile];
  for (int64_t v = 0; v < nv; v++) store<W>(cs + v * W, cacc[v]);
  for (int64_t j = 0; j < nj; j++) lc[j] += cs[j];
}

// ------------------------------------------------------------------------------------------------ backward tile
// Overwrite the tile S (ni, nj) with G = coef (P_r + P_c), P_r = exp((S - mr) - lr) by rows, P_c by columns
// (mc, lc: padded to a multiple of W with zeros); the -2 coef on the diagonal is the caller's (done there in
// double). Masked tail lanes get G = 0. With kGS, also return the tile's share of sum(G S) / coef, written as
//   sum_ij P_r,ij (S_ij - S_ii) + P_c,ij (S_ij - S_jj)      (pr: S_ii of the tile's rows, pc: S_jj of its columns)
// which equals sum (P_r + P_c - 2 I) S because each softmax sums to 1; the plain form subtracts 2 S_ii from a sum
// near 2 S_ii and, for confident pairs, kept only a few digits of the logit scale's gradient.
template <int W, bool kGS>
MODALAB_INLINE double backward_tile(float* S, int64_t ld, int64_t ni, int64_t nj, const float* mr, const float* lr,
                                    const float* pr, const float* mc, const float* lc, const float* pc, float coef) {
  typedef typename Vec<W>::f VF;
  typedef typename Vec<W>::i VI;
  const int64_t nv = (nj + W - 1) / W;
  const VI tail = tail_mask<W>(nj);
  const VF zero = splat<W>(0.0f);
  double gs = 0.0;
  for (int64_t i = 0; i < ni; i++) {
    float* row = S + i * ld;
    const VF m = splat<W>(mr[i]), l = splat<W>(lr[i]), sii = splat<W>(pr[i]);
    VF acc = zero;
    for (int64_t v = 0; v < nv; v++) {
      const VF x = load<W>(row + v * W);
      VF p_r = vexp<W>((x - m) - l);
      VF p_c = vexp<W>((x - load<W>(mc + v * W)) - load<W>(lc + v * W));
      if (v == nv - 1) {
        p_r = tail ? p_r : zero;
        p_c = tail ? p_c : zero;
      }
      if (kGS) {
        VF d_r = x - sii, d_c = x - load<W>(pc + v * W);
        if (v == nv - 1) {  // masked lanes hold stale values: keep inf * 0 out of the sum
          d_r = tail ? d_r : zero;
          d_c = tail ? d_c : zero;
        }
        acc += p_r * d_r + p_c * d_c;
      }
      store<W>(row + v * W, (p_r + p_c) * coef);
    }
    if (kGS) gs += hsum<W>(acc);
  }
  return gs;
}

// ------------------------------------------------------------------------------------------------ GEMM tiles
// The three products of a tile, on GCC vector types with an MR x NR register tile (AVX-512 8 x 32, AVX2 6 x 16,
// baseline 4 x 8, as matmul.cc): acc (MR, NR) += a(r, k) * b(k, 0:NR) over k, one broadcast of a and NR/W
// vector loads of b per k. What differs from a general GEMM is that no operand is packed per tile:
//   score      S (ni, nj) = s a_I b_J^T: a's rows are read in place (a(r, k) = a[(i0 + r) D + k]) and b is packed
//              once per call into panels of NR-wide strips, bp[J][strip][k][NR], the only layout change (O(N D)).
//   grad_rows  da_I (ni, D) (+)= s G (ni, nj) b_J (nj, D): G is broadcast from the tile, b_J's rows read in place.
//   grad_cols  db_J (nj, D) (+)= s G^T (nj, ni) a_I (ni, D): G read down its columns, a_I's rows in place.
// Packing a 128 x D block per tile costs about as much as a quarter of its multiply-adds at AVX-512 speed
// (gemm_portable on tile pointers, the first version, ran the S tiles at 117 GFLOP/s per core against 170 for
// one big GEMM); reading in place and packing b once removes that.
//
// a(r, k) is a[r * lda + k] (kColA false) or a[k * lda + r] (kColA true). Rows past mr are clamped to the last
// valid row (row mode) or read from the tile buffer's slack (column mode); their results are never stored.
// first: c = alpha acc, else c += alpha acc.
template <int MR, int NR, int W, bool kColA>
MODALAB_INLINE void micro(int64_t K, const float* __restrict a, int64_t lda, const float* __restrict b, int64_t ldb,
                          float* __restrict c, int64_t ldc, int64_t mr, int64_t nr, float alpha, bool first) {
  typedef typename Vec<W>::f V;
  constexpr int NV = NR / W;
  static_assert(NV * W == NR, "NR must be a multiple of the vector width");
  V acc[MR][NV];
  for (int r = 0; r < MR; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = V{};
  if (kColA) {
    for (int64_t k = 0; k < K; k++) {
      V bk[NV];
      for (int v = 0; v < NV; v++) bk[v] = load<W>(b + k * ldb + v * W);
      const float* ak = a + k * lda;
      for (int r = 0; r < MR; r++) {
        const float av = ak[r];
        for (int v = 0; v < NV; v++) acc[r][v] += av * bk[v];
      }
    }
  } else {
    const float* ar[MR];
    for (int r = 0; r < MR; r++) ar[r] = a + std::min<int64_t>(r, mr - 1) * lda;
    for (int64_t k = 0; k < K; k++) {
      V bk[NV];
      for (int v = 0; v < NV; v++) bk[v] = load<W>(b + k * ldb + v * W);
      for (int r = 0; r < MR; r++) {
        const float av = ar[r][k];
        for (int v = 0; v < NV; v++) acc[r][v] += av * bk[v];
      }
    }
  }
  if (mr == MR && nr == NR) {
    for (int r = 0; r < MR; r++)
      for (int v = 0; v < NV; v++) {
        V out = alpha * acc[r][v];
        if (!first) out += load<W>(c + r * ldc + v * W);
        store<W>(c + r * ldc + v * W, out);
      }
    return;
  }
  float tile[MR][NR];
  std::memcpy(tile, acc, sizeof(tile));
  for (int64_t r = 0; r < mr; r++)
    for (int64_t j = 0; j < nr; j++) {
      const float v = alpha * tile[r][j];
      c[r * ldc + j] = first ? v : c[r * ldc + j] + v;
    }
}

// One panel of b: rows [j0, j0 + nj) of b (N, D) as bp[strip][k][NR], kTile columns, zeros past nj.
template <int NR>
MODALAB_INLINE void pack_panel(float* bp, const float* b, int64_t j0, int64_t nj, int64_t D) {
  for (int64_t s = 0; s < kTile / NR; s++) {
    float* dst = bp + s * D * NR;
    for (int64_t c = 0; c < NR; c++) {
      const int64_t j = s * NR + c;
      const float* src = b + (j0 + j) * D;
      if (j < nj) {
        for (int64_t k = 0; k < D; k++) dst[k * NR + c] = src[k];
      } else {
        for (int64_t k = 0; k < D; k++) dst[k * NR + c] = 0.0f;
      }
    }
  }
}

// S (ni, nj), row stride kTile, = s a_I (ni, D) b_J^T from b_J's packed panel. Whole NR strips are written (the
// buffer is kTile wide); columns past nj hold zeros and are masked by the tile passes.
template <int MR, int NR, int W>
MODALAB_INLINE void score(float* S, const float* a, const float* bp, int64_t ni, int64_t nj, int64_t D, float s) {
  for (int64_t js = 0; js < nj; js += NR)
    for (int64_t is = 0; is < ni; is += MR)
      micro<MR, NR, W, false>(D, a + is * D, D, bp + js * D, NR, S + is * kTile + js, kTile,
                              std::min<int64_t>(MR, ni - is), NR, s, true);
}

// c (m, D) (+)= s op(G) (m, K) rows (K, D): op(G) = G (ni, nj) when !kColA (m = ni, K = nj), G^T when kColA
// (m = nj, K = ni). Each NR-wide strip of `rows` is first copied into `pad` (K, NR), zero-padded past D: read in
// place, rows D floats apart fall into a handful of L1 sets (a 1 KB stride at D = 256 uses 8 of 64) and every
// load of b went to L2 (da ran at 40% of the GEMM's speed). The copy is K NR floats for m K NR multiply-adds.
// It is a separate, not inlined function: inlined (vectorised by g++) it left too few vector registers for the
// micro-kernel, which then kept a b vector on the stack and fed the FMAs from memory (2x slower).
__attribute__((noinline)) void copy_strip(float* pad, const float* rows, int64_t K, int64_t D, int64_t nr,
                                          int64_t NR) {
  for (int64_t k = 0; k < K; k++) {
    std::memcpy(pad + k * NR, rows + k * D, static_cast<size_t>(nr) * sizeof(float));
    for (int64_t j = nr; j < NR; j++) pad[k * NR + j] = 0.0f;
  }
}

template <int MR, int NR, int W, bool kColA>
MODALAB_INLINE void grad(float* c, const float* G, const float* rows, int64_t m, int64_t K, int64_t D, float s,
                         bool first, float* pad) {
  for (int64_t js = 0; js < D; js += NR) {
    const int64_t nr = std::min<int64_t>(NR, D - js);
    copy_strip(pad, rows + js, K, D, nr, NR);
    for (int64_t is = 0; is < m; is += MR) {
      const float* ai = kColA ? G + is : G + is * kTile;
      micro<MR, NR, W, kColA>(K, ai, kTile, pad, NR, c + is * D + js, D, std::min<int64_t>(MR, m - is), nr, s,
                              first);
    }
  }
}

// ------------------------------------------------------------------------------------------------ dispatch
struct Kernels {
  int nr;  // the panel strip width pack() writes and score() reads
  void (*pack)(float* bp, const float* b, int64_t j0, int64_t nj, int64_t D);
  void (*score)(float* S, const float* a, const float* bp, int64_t ni, int64_t nj, int64_t D, float s);
  void (*grad_rows)(float* c, const float* G, const float* rows, int64_t m, int64_t K, int64_t D, float s,
                    bool first, float* pad);
  void (*grad_cols)(float* c, const float* G, const float* rows, int64_t m, int64_t K, int64_t D, float s,
                    bool first, float* pad);
  void (*fwd)(const float*, int64_t, int64_t, int64_t, float*, double*, float*, double*);
  double (*bwd)(float*, int64_t, int64_t, int64_t, const float*, const float*, const float*, const float*,
                const float*, const float*, float, bool);
};

// Every entry point of one variant, compiled for TARGET with an MR x NR tile of W-lane vectors.
#define MODALAB_INFONCE_VARIANT(NAME, TARGET, MR, NR, W)                                                         \
  TARGET void pack_##NAME(float* bp, const float* b, int64_t j0, int64_t nj, int64_t D) {                        \
    pack_panel<NR>(bp, b, j0, nj, D);                                                                            \
  }                                                                                                              \
  TARGET void score_##NAME(float* S, const float* a, const float* bp, int64_t ni, int64_t nj, int64_t D,         \
                           float s) {                                                                            \
    score<MR, NR, W>(S, a, bp, ni, nj, D, s);                                                                    \
  }                                                                                                              \
  TARGET void rows_##NAME(float* c, const float* G, const float* rows, int64_t m, int64_t K, int64_t D, float s, \
                          bool first, float* pad) {                                                              \
    grad<MR, NR, W, false>(c, G, rows, m, K, D, s, first, pad);                                                  \
  }                                                                                                              \
  TARGET void cols_##NAME(float* c, const float* G, const float* rows, int64_t m, int64_t K, int64_t D, float s, \
                          bool first, float* pad) {                                                              \
    grad<MR, NR, W, true>(c, G, rows, m, K, D, s, first, pad);                                                   \
  }                                                                                                              \
  TARGET void fwd_##NAME(const float* S, int64_t ld, int64_t ni, int64_t nj, float* mr, double* lr, float* mc,   \
                         double* lc) {                                                                           \
    forward_tile<W>(S, ld, ni, nj, mr, lr, mc, lc);                                                              \
  }                                                                                                              \
  TARGET double bwd_##NAME(float* S, int64_t ld, int64_t ni, int64_t nj, const float* mr, const float* lr,       \
                           const float* pr, const float* mc, const float* lc, const float* pc, float coef,       \
                           bool want_gs) {                                                                       \
    return want_gs ? backward_tile<W, true>(S, ld, ni, nj, mr, lr, pr, mc, lc, pc, coef)                        \
                   : backward_tile<W, false>(S, ld, ni, nj, mr, lr, pr, mc, lc, pc, coef);                      \
  }                                                                                                              \
  const Kernels kernels_##NAME = {NR, pack_##NAME, score_##NAME, rows_##NAME, cols_##NAME, fwd_##NAME, bwd_##NAME};

#if defined(__x86_64__) && defined(__GNUC__)
MODALAB_INFONCE_VARIANT(avx512, __attribute__((target("avx512f,avx2,fma"))), 8, 32, 16)
MODALAB_INFONCE_VARIANT(avx2, __attribute__((target("avx2,fma"))), 6, 16, 8)
#endif
MODALAB_INFONCE_VARIANT(base, , 4, 8, 4)

// The widest variant the processor runs. MODALAB_INFONCE_KERNEL=avx2|base forces a narrower one; it is read on
// every call (a getenv per loss is nothing) so that one test process can compare every variant.
const Kernels& kernels() {
  const char* force = std::getenv("MODALAB_INFONCE_KERNEL");
  const std::string want = force ? force : "";
  if (want == "base") return kernels_base;
#if defined(__x86_64__) && defined(__GNUC__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (want != "avx2" && avx2 && __builtin_cpu_supports("avx512f")) return kernels_avx512;
  if (avx2) return kernels_avx2;
#endif
  return kernels_base;
}

// Per-thread scratch: the S / G tile (kTile x kTile, plus slack that column-mode reads of a partial register
// tile may touch) and the pad for a partial strip of D. Allocated once per thread, zeroed.
struct Scratch {
  std::vector<float> tile = std::vector<float>(static_cast<size_t>(kTile * kTile + 64), 0.0f);
  std::vector<float> pad = std::vector<float>(static_cast<size_t>(kTile * 32), 0.0f);
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

struct Block {
  int64_t i0, ni, J, j0, nj;
};
// Tile (I, J) = (p, (p + t) mod nb) of step t.
Block block_of(int64_t p, int64_t t, int64_t nb, int64_t N) {
  Block b;
  b.J = (p + t) % nb;
  b.i0 = p * kTile;
  b.ni = std::min(kTile, N - b.i0);
  b.j0 = b.J * kTile;
  b.nj = std::min(kTile, N - b.j0);
  return b;
}

// b (N, D) packed into nb panels of kTile x D (see pack_panel), in parallel (each panel is independent).
std::vector<float> pack_b(const Kernels& k, const float* b, int64_t N, int64_t D, int64_t nb) {
  std::vector<float> bp(static_cast<size_t>(nb * kTile * D));
  parallel_for(nb, 1, [&](int64_t J0, int64_t J1) {
    for (int64_t J = J0; J < J1; J++) k.pack(bp.data() + J * kTile * D, b, J * kTile, std::min(kTile, N - J * kTile), D);
  });
  return bp;
}

}  // namespace

float infonce_scale(float logit_scale, bool* grad_passes) {
  const double e = std::exp(static_cast<double>(logit_scale));
  // torch's clamp(max=100) passes the gradient where x <= max, so at exactly 100 too; NaN passes NaN on.
  if (grad_passes) *grad_passes = !(e > kMaxScale);
  return e > kMaxScale ? static_cast<float>(kMaxScale) : static_cast<float>(e);
}

void infonce_forward(float* loss, float* stats, const float* a, const float* b, int64_t N, int64_t D,
                     float logit_scale) {
  if (N <= 0) {
    *loss = std::numeric_limits<float>::quiet_NaN();  // the mean over no pairs, as PyTorch's cross_entropy
    return;
  }
  const float s = infonce_scale(logit_scale, nullptr);
  const int64_t nb = (N + kTile - 1) / kTile;
  const Kernels& kern = kernels();
  const std::vector<float> bp = pack_b(kern, b, N, D, nb);
  std::vector<float> mr(N, kNegInf), mc(N, kNegInf), pos(N);
  std::vector<double> lr(N, 0.0), lc(N, 0.0);
  for (int64_t t = 0; t < nb; t++) {
    parallel_for(nb, 1, [&](int64_t p0, int64_t p1) {
      float* S = scratch().tile.data();
      for (int64_t p = p0; p < p1; p++) {
        const Block k = block_of(p, t, nb, N);
        kern.score(S, a + k.i0 * D, bp.data() + k.J * kTile * D, k.ni, k.nj, D, s);
        if (t == 0)  // the diagonal tile: the positives, exactly as they enter the statistics
          for (int64_t r = 0; r < k.ni; r++) pos[k.i0 + r] = S[r * kTile + r];
        kern.fwd(S, kTile, k.ni, k.nj, mr.data() + k.i0, lr.data() + k.i0, mc.data() + k.j0, lc.data() + k.j0);
      }
    });
  }
  // loss_i = (lse_r[i] - S_ii) + (lse_c[i] - S_ii) with lse = m + log l, formed as (m - S_ii) + log l: when the
  // positive is the max, m - S_ii is exactly 0 and the small loss of a confident pair keeps its digits.
  double total = 0.0;
  for (int64_t i = 0; i < N; i++) {
    const double logr = std::log(lr[i]), logc = std::log(lc[i]);
    stats[i] = mr[i];
    stats[N + i] = static_cast<float>(logr);
    stats[2 * N + i] = mc[i];
    stats[3 * N + i] = static_cast<float>(logc);
    total += ((static_cast<double>(mr[i]) - pos[i]) + logr) + ((static_cast<double>(mc[i]) - pos[i]) + logc);
  }
  *loss = static_cast<float>(total / (2.0 * static_cast<double>(N)));
}

void infonce_backward(float* da, float* db, float* dlogit_scale, const float* dloss, const float* a, const float* b,
                      const float* stats, int64_t N, int64_t D, float logit_scale) {
  bool passes = false;
  const float s = infonce_scale(logit_scale, &passes);
  const bool want_gs = dlogit_scale != nullptr && passes;
  if (N <= 0 || (!da && !db && !want_gs)) {
    if (dlogit_scale) *dlogit_scale = 0.0f;
    return;
  }
  const int64_t nb = (N + kTile - 1) / kTile;
  const Kernels& kern = kernels();
  const std::vector<float> bp = pack_b(kern, b, N, D, nb);
  const double coef = static_cast<double>(*dloss) / (2.0 * static_cast<double>(N));
  const float* mr = stats;
  const float* lr = stats + N;
  const float* mc = stats + 2 * N;
  const float* lc = stats + 3 * N;
  std::vector<double> gs_rows(nb, 0.0);  // sum(G * S) / coef per row block, added in step order
  // The positives S_ii, recomputed: every block's diagonal tile comes at step 0, before any tile needs them (a
  // row block's own rows, or another block's columns, whose step 0 the barrier between steps has completed).
  std::vector<float> pos(N);
  for (int64_t t = 0; t < nb; t++) {
    parallel_for(nb, 1, [&](int64_t p0, int64_t p1) {
      Scratch& scr = scratch();
      float* S = scr.tile.data();
      float cm[kTile], cl[kTile], cp[kTile];
      for (int64_t p = p0; p < p1; p++) {
        const Block k = block_of(p, t, nb, N);
        kern.score(S, a + k.i0 * D, bp.data() + k.J * kTile * D, k.ni, k.nj, D, s);
        if (t == 0)
          for (int64_t r = 0; r < k.ni; r++) pos[k.i0 + r] = S[r * kTile + r];
        std::fill(cm, cm + kTile, 0.0f);
        std::fill(cl, cl + kTile, 0.0f);
        std::fill(cp, cp + kTile, 0.0f);
        std::copy(mc + k.j0, mc + k.j0 + k.nj, cm);
        std::copy(lc + k.j0, lc + k.j0 + k.nj, cl);
        std::copy(pos.data() + k.j0, pos.data() + k.j0 + k.nj, cp);
        const double gs = kern.bwd(S, kTile, k.ni, k.nj, mr + k.i0, lr + k.i0, pos.data() + k.i0, cm, cl, cp,
                                   static_cast<float>(coef), want_gs);
        if (t == 0) {
          // The diagonal: G_ii = coef ((P_r - 1) + (P_c - 1)) with expm1 in double, not coef (P_r + P_c) - 2 coef,
          // which for a confident pair (P near 1) would cancel away most of its digits.
          for (int64_t r = 0; r < k.ni; r++) {
            const int64_t i = k.i0 + r;
            const double x = pos[i];
            S[r * kTile + r] =
                static_cast<float>(coef * (std::expm1((x - mr[i]) - lr[i]) + std::expm1((x - mc[i]) - lc[i])));
          }
        }
        gs_rows[p] += gs;
        const bool first = t == 0;  // every block's first tile is its diagonal one, at t = 0
        if (da) kern.grad_rows(da + k.i0 * D, S, b + k.j0 * D, k.ni, k.nj, D, s, first, scr.pad.data());
        if (db) kern.grad_cols(db + k.j0 * D, S, a + k.i0 * D, k.nj, k.ni, D, s, first, scr.pad.data());
      }
    });
  }
  if (dlogit_scale) {
    // d loss / d logit_scale = (d loss / d s) (d s / d l) = (sum(G * S) / s) * s while exp(l) is not clamped.
    double gs = 0.0;
    for (int64_t p = 0; p < nb; p++) gs += gs_rows[p];
    *dlogit_scale = passes ? static_cast<float>(coef * gs) : 0.0f;
  }
}

}  // namespace cpu
}  // namespace modalab
