// Fused attention: FlashAttention-2 (Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work
// Partitioning", 2023) on the CPU. Forward and backward of softmax(scale * q k^T + masks) v without ever holding
// the N x M score matrix: only tiles of Br x Bc scores exist, one per worker thread.
//
// Forward (FA-2 Algorithm 1). One task per (b, h, query tile of Br rows). The task streams key/value tiles of Bc
// rows and keeps, per query row, the running max m and running sum l of the online softmax (Milakov & Gimelshein
// 2018): m' = max(m, rowmax(S)), P = exp(S - m'), l' = exp(m - m') l + rowsum(P), O' = exp(m - m') O + P V.
// At the end O /= l, and m and log l are saved (the logsumexp m + log l, kept as two numbers so that the backward's
// exp(s - m - log l) does not lose an ulp of a large logsumexp): that is all the backward needs.
// The score tile is computed key-major, S^T = K (Q scale)^T, so that the row statistics of the softmax (max, sum,
// rescale factor) are plain vector operations across query rows, with no horizontal reductions; Q^T is formed once
// per task, and K and V tiles are read in place when they are f32.
//
// Backward (FA-2 Algorithm 2). D_i = sum_j P_ij dP_ij first (see dvec_task: the same number as FA-2's
// rowsum(dO_i * O_i) in exact arithmetic, not in f32). Then one task per (b, h, group of key tiles): each
// task owns dK and dV of its key tiles and, per query tile, recomputes S = (Q scale) K^T and P = exp(S - m - log l):
//   dV += P^T dO,   dP = dO V^T,   dS = P * (dP - D),   dK += dS^T (Q scale),   dQ += dS K   (dQ *= scale at the end).
// dQ receives contributions from every key tile. To stay deterministic without atomics, the key tiles of a head
// are split into G interleaved groups (tile t belongs to group t mod G) and each group accumulates dQ in its own
// buffer; the G buffers are summed in group order at the end. G depends on the problem's shape only (more groups
// when B * H is small, so that a single head still keeps several threads busy), never on the thread count, so
// results are bitwise the same for any number of threads. Extra memory: at most 8 dQ-sized buffers (O(N D)).
//
// Masks. Per (query tile, key tile) pair the masks are classified once: fully hidden pairs are skipped entirely
// (this is where causal and windowed attention get their speed: about half, or w / M, of the pairs), fully visible
// pairs run without any mask arithmetic, and only pairs on the diagonal edges mask element by element. Key padding
// is an additive 0 / -inf bias per key (also hiding the keys past M in a partial last tile); a key tile whose keys
// are all padded is skipped. A query row that sees no key outputs 0 with m = +inf, so exp(s - m) = 0 in the
// backward and its gradient is exactly 0, never NaN.
//
// Arithmetic. Every product runs through one register-tiled micro-kernel (C (+)= A B with A read by broadcast
// through arbitrary strides, so transposed operands cost nothing, and B read as vectors) written with GCC vector
// types and compiled three times: AVX-512 (4 x 64 tile), AVX2 + FMA (4 x 16) and baseline SSE2 (2 x 16), picked at
// load time. Tiles of f16 / bf16 inputs are widened to f32 as they are loaded (exact); the output is rounded once,
// to the inputs' dtype (or written in f32, as autocast asks). The softmax statistics, exp (vmath.h) and the masks
// are plain loops the compiler vectorises.
//
// Buffers written: out, stats (forward) and dq, dk, dv (backward) are overwritten (=), never accumulated into.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <string>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"
#include "vmath.h"

#define MODALAB_INLINE inline __attribute__((always_inline))

// Vector types wider than the baseline ABI never cross a call here (everything that takes one is inlined), so
// GCC's note about the ABI of such arguments does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace modalab {
namespace cpu {
namespace {

// Tile sizes (Br x Bc). 64 x 64 keeps a task's tiles (Q^T, S, O, K, V: 5 x 16 KB at D = 64) inside L2 and the score
// tile in L1. Measured on Zen 5, one thread, AVX-512, B4 H4 N256 D64 forward + backward, plain / causal, ms:
// 64 x 64: 6.0 / 4.1;  32 x 32: 6.6 / 4.1;  32 x 64: 6.8 / 4.5;  64 x 128: 6.5 / 5.6;  128 x 64: 6.7 / 5.3 (larger
// tiles skip less of the causal triangle).
constexpr int64_t kBr = 64;  // query rows per tile
constexpr int64_t kBc = 64;  // keys per tile
// Below this many multiply-adds a call runs on the calling thread: waking the pool would cost more.
constexpr int64_t kInlineFlops = int64_t(1) << 19;
// Backward: aim for this many (b, h, key-group) tasks when B * H is small (see the file comment).
constexpr int64_t kBackwardTasks = 8;

constexpr float kInf = std::numeric_limits<float>::infinity();

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// Exact widening of the 16-bit formats. f16: the exponent and mantissa bits moved into f32 position describe
// 2^-112 times the value, subnormals included (a power-of-two product is exact); exponent 31 (inf, NaN) is rebuilt.
MODALAB_INLINE float f16_to_float(uint16_t h) {
  const uint32_t em = h & 0x7fffu;
  uint32_t bits = float_bits(bits_to_float(em << 13) * 0x1p112f);
  bits = em >= 0x7c00u ? (0x7f800000u | ((em & 0x3ffu) << 13)) : bits;
  return bits_to_float(bits | (static_cast<uint32_t>(h & 0x8000u) << 16));
}
MODALAB_INLINE float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// dst[0, n) = src[off, off + n) of dtype dt, widened to f32, times mul (1 is exact).
MODALAB_INLINE void load_row(float* __restrict dst, const void* src, DType dt, int64_t off, int64_t n, float mul) {
  if (dt == DType::F32) {
    const float* s = static_cast<const float*>(src) + off;
    for (int64_t i = 0; i < n; i++) dst[i] = s[i] * mul;
  } else if (dt == DType::BF16) {
    const uint16_t* s = static_cast<const uint16_t*>(src) + off;
    for (int64_t i = 0; i < n; i++) dst[i] = bf16_to_float(s[i]) * mul;
  } else {
    const uint16_t* s = static_cast<const uint16_t*>(src) + off;
    for (int64_t i = 0; i < n; i++) dst[i] = f16_to_float(s[i]) * mul;
  }
}

// dst (rows, ld) = src rows [row0, row0 + rows) of a (*, cols) tensor, times mul; columns [cols, ld) zeroed.
MODALAB_INLINE void load_rows(float* dst, int64_t ld, const void* src, DType dt, int64_t row0, int64_t rows,
                              int64_t cols, float mul) {
  for (int64_t r = 0; r < rows; r++) {
    load_row(dst + r * ld, src, dt, (row0 + r) * cols, cols, mul);
    std::fill(dst + r * ld + cols, dst + (r + 1) * ld, 0.0f);
  }
}

// dst (cols, ld) = transpose of src rows [row0, row0 + rows) of a (*, cols) tensor, times mul; columns [rows, ld)
// zeroed. `row` is a scratch row of `cols` floats.
MODALAB_INLINE void load_rows_transposed(float* dst, int64_t ld, const void* src, DType dt, int64_t row0,
                                         int64_t rows, int64_t cols, float mul, float* row) {
  for (int64_t r = 0; r < rows; r++) {
    load_row(row, src, dt, (row0 + r) * cols, cols, mul);
    for (int64_t c = 0; c < cols; c++) dst[c * ld + r] = row[c];
  }
  for (int64_t c = 0; c < cols; c++) std::fill(dst + c * ld + rows, dst + (c + 1) * ld, 0.0f);
}

// ------------------------------------------------------------------------------------------------ vectors
// GCC vector types: plain arithmetic on them compiles to whatever the enclosing function's target has (zmm under
// AVX-512, ymm under AVX2, xmm on baseline), as in matmul.cc.
template <int W>
struct Vt {
  typedef float F __attribute__((vector_size(W * sizeof(float))));
};

template <class F>
MODALAB_INLINE F vload(const float* p) {
  F v;
  std::memcpy(&v, p, sizeof(F));
  return v;
}
template <class F>
MODALAB_INLINE void vstore(float* p, const F& v) {
  std::memcpy(p, &v, sizeof(F));
}
// ------------------------------------------------------------------------------------------------ micro-kernel
// c (R, NV*W) = (accumulate ? c : 0) + a (R, K) b (K, NV*W), where a(r, k) = a[r * ars + k * acs] is read one
// scalar at a time and broadcast (any layout, transposes included) and row k of b starts at b + k * ldb.
template <int R, int NV, int W>
MODALAB_INLINE void micro(float* __restrict c, int64_t ldc, const float* __restrict a, int64_t ars, int64_t acs,
                          const float* __restrict b, int64_t ldb, int64_t K, bool accumulate) {
  typedef typename Vt<W>::F F;
  F acc[R][NV];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) acc[r][v] = accumulate ? vload<F>(c + r * ldc + v * W) : F{};
  for (int64_t k = 0; k < K; k++) {
    F bk[NV];
    for (int v = 0; v < NV; v++) bk[v] = vload<F>(b + k * ldb + v * W);
    const float* ak = a + k * acs;
    for (int r = 0; r < R; r++) {
      const float av = ak[r * ars];
      for (int v = 0; v < NV; v++) acc[r][v] += av * bk[v];
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < NV; v++) vstore(c + r * ldc + v * W, acc[r][v]);
}

template <int R, int NV, int W>
MODALAB_INLINE void micro_rows(float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs, const float* b,
                               int64_t ldb, int64_t rows, int64_t K, bool accumulate) {
  int64_t r = 0;
  for (; r + R <= rows; r += R) micro<R, NV, W>(c + r * ldc, ldc, a + r * ars, ars, acs, b, ldb, K, accumulate);
  if (R > 2)
    for (; r + 2 <= rows; r += 2) micro<2, NV, W>(c + r * ldc, ldc, a + r * ars, ars, acs, b, ldb, K, accumulate);
  for (; r < rows; r++) micro<1, NV, W>(c + r * ldc, ldc, a + r * ars, ars, acs, b, ldb, K, accumulate);
}

// A column block of nv <= NV vectors: the micro-kernel for exactly that many.
template <int R, int NV, int W>
MODALAB_INLINE void micro_cols(int64_t nv, float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs,
                               const float* b, int64_t ldb, int64_t rows, int64_t K, bool accumulate) {
  if (nv == NV) {
    micro_rows<R, NV, W>(c, ldc, a, ars, acs, b, ldb, rows, K, accumulate);
  } else if constexpr (NV > 1) {
    micro_cols<R, NV - 1, W>(nv, c, ldc, a, ars, acs, b, ldb, rows, K, accumulate);
  }
}

// c (rows, cols) (+)= a (rows, K) b (K, cols) for cols a multiple of W, in register tiles of R x (NV * W).
template <int W, int R, int NV>
MODALAB_INLINE void gemm_impl(float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs, const float* b,
                              int64_t ldb, int64_t rows, int64_t cols, int64_t K, bool accumulate) {
  const int64_t nvec = cols / W;
  for (int64_t v0 = 0; v0 < nvec; v0 += NV) {
    micro_cols<R, NV, W>(std::min<int64_t>(NV, nvec - v0), c + v0 * W, ldc, a, ars, acs, b + v0 * W, ldb, rows, K,
                         accumulate);
  }
}

// ------------------------------------------------------------------------------------------------ the problem
struct Problem {
  DType dtype;       // of q, k, v
  DType out_dtype;   // of out: dtype or F32
  const void *q, *k, *v;
  int64_t B, H, N, M, D, Dv;
  float scale;
  bool causal;
  int64_t window;
  int64_t shift;     // M - N: query i is aligned with key i + shift
  int64_t nqt, nkt;  // query and key tiles per head
  int64_t Dp, Dvp;   // D and Dv rounded up to the vector width
  // Key padding, per batch over nkt * kBc keys: bias 0 (visible) or -inf (padded, or past M), and per key tile
  // whether none (0), some (1) or all (2) of its keys are hidden.
  const float* key_bias;
  const uint8_t* tile_state;

  // The visible keys of query i are [lo(i), hi(i)] (before padding); they may be empty.
  int64_t hi(int64_t i) const { return causal || window > 0 ? i + shift : M - 1; }
  int64_t lo(int64_t i) const { return window > 0 ? i + shift - window + 1 : 0; }
};

enum class Pair { Skip, Full, Edge };

// Query rows [i0, i0 + in) against keys [j0, j0 + jn) of batch b: hidden, fully visible (up to padding, handled
// by the bias) or on an edge of the causal / window band (masked element by element).
Pair classify(const Problem& p, int64_t b, int64_t kt, int64_t i0, int64_t in, int64_t j0, int64_t jn) {
  if (p.tile_state[b * p.nkt + kt] == 2) return Pair::Skip;
  const int64_t i1 = i0 + in - 1, j1 = j0 + jn - 1;
  if (j0 > p.hi(i1) || j1 < p.lo(i0)) return Pair::Skip;
  return j1 > p.hi(i0) || j0 < p.lo(i1) ? Pair::Edge : Pair::Full;
}

// Builds key_bias and tile_state from the user's mask (may be null).
struct PaddingTable {
  std::vector<float> bias;
  std::vector<uint8_t> state;
  PaddingTable(const Problem& p, const void* mask, bool mask_i32) {
    const int64_t Mp = p.nkt * kBc;
    bias.assign(static_cast<size_t>(p.B * Mp), 0.0f);
    state.assign(static_cast<size_t>(p.B * p.nkt), 0);
    for (int64_t b = 0; b < p.B; b++) {
      float* bb = bias.data() + b * Mp;
      for (int64_t j = 0; j < Mp; j++) {
        bool hidden = j >= p.M;
        if (!hidden && mask) {
          hidden = mask_i32 ? static_cast<const int32_t*>(mask)[b * p.M + j] != 0
                            : static_cast<const float*>(mask)[b * p.M + j] != 0.0f;  // NaN counts as masked
        }
        bb[j] = hidden ? -kInf : 0.0f;
      }
      for (int64_t kt = 0; kt < p.nkt; kt++) {
        int64_t hidden = 0;
        for (int64_t j = kt * kBc; j < (kt + 1) * kBc; j++) hidden += bb[j] != 0.0f;
        state[static_cast<size_t>(b * p.nkt + kt)] = hidden == 0 ? 0 : hidden == kBc ? 2 : 1;
      }
    }
  }
};

// ------------------------------------------------------------------------------------------------ forward
inline int64_t up16(int64_t n) { return (n + 15) / 16 * 16; }

// Key tiles [kt0, kt1) that some row of the query rows [i0, i0 + in) can see.
inline void key_tile_range(const Problem& p, int64_t i0, int64_t in, int64_t* kt0, int64_t* kt1) {
  const int64_t jlo = std::max<int64_t>(0, p.lo(i0)), jhi = std::min(p.M - 1, p.hi(i0 + in - 1));
  *kt0 = jlo <= jhi ? jlo / kBc : 0;
  *kt1 = jlo <= jhi ? jhi / kBc + 1 : 0;
}

// S^T (jn, Br) = k_tile (q scale)^T for query rows [i0, i0 + Br) and keys [j0, j0 + jn) of head bh, masked:
// padded keys hide a whole row of S^T; on a band edge, key j is seen by queries i with lo(i) <= j <= hi(i), i.e.
// i in [j - shift, j - shift + window - 1]. QT (D, Br) is (q scale)^T; Kbuf (Bc, D) holds a converted f16 / bf16
// key tile (f32 keys are read in place).
template <class Isa>
MODALAB_INLINE void scores_key_major(const Problem& p, int64_t bh, int64_t kt, Pair pair, int64_t i0, int64_t j0,
                                     int64_t jn, const float* QT, float* ST, float* Kbuf) {
  const int64_t D = p.D, b = bh / p.H;
  const float* kp = Kbuf;
  if (p.dtype == DType::F32) {
    kp = static_cast<const float*>(p.k) + (bh * p.M + j0) * D;
  } else {
    load_rows(Kbuf, D, p.k, p.dtype, bh * p.M + j0, jn, D, 1.0f);
  }
  Isa::gemm(ST, kBr, kp, D, 1, QT, kBr, jn, kBr, D, false);
  if (p.tile_state[b * p.nkt + kt] == 1) {
    const float* bias = p.key_bias + b * p.nkt * kBc;
    for (int64_t j = 0; j < jn; j++)
      if (bias[j0 + j] != 0.0f) std::fill(ST + j * kBr, ST + (j + 1) * kBr, -kInf);
  }
  if (pair == Pair::Edge) {
    for (int64_t j = 0; j < jn; j++) {
      const int64_t jj = j0 + j;
      const int64_t ilo = p.causal || p.window > 0 ? jj - p.shift : i0;
      const int64_t ihi = p.window > 0 ? jj - p.shift + p.window - 1 : i0 + kBr - 1;
      float* s = ST + j * kBr;
      for (int64_t c = 0; c < std::min(kBr, ilo - i0); c++) s[c] = -kInf;
      for (int64_t c = std::max<int64_t>(0, ihi - i0 + 1); c < kBr; c++) s[c] = -kInf;
    }
  }
}

// The value rows [j0, j0 + jn) of head bh as f32 rows of Dvp floats apart (*ldv): in place for f32 values whose
// rows are whole vectors, else converted / padded into Vbuf (Bc, Dvp).
MODALAB_INLINE const float* value_tile(const Problem& p, int64_t bh, int64_t j0, int64_t jn, float* Vbuf,
                                       int64_t* ldv) {
  if (p.dtype == DType::F32 && p.Dv == p.Dvp) {
    *ldv = p.Dv;
    return static_cast<const float*>(p.v) + (bh * p.M + j0) * p.Dv;
  }
  load_rows(Vbuf, p.Dvp, p.v, p.dtype, bh * p.M + j0, jn, p.Dv, 1.0f);
  *ldv = p.Dvp;
  return Vbuf;
}

// Workspace of one forward worker, in floats (each part rounded up to a cache line).
int64_t forward_ws(const Problem& p) {
  return up16(p.D * kBr) + up16(kBc * kBr) + up16(kBr * p.Dvp) + 4 * up16(kBr) + up16(kBc * p.D) +
         up16(kBc * p.Dvp) + up16(std::max(p.D, p.Dv));
}

// One task: query tile qt of head bh. ws: forward_ws(p) floats.
template <class Isa>
MODALAB_INLINE void forward_task(const Problem& p, void* out, float* stats, int64_t bh, int64_t qt, float* ws) {
  const int64_t D = p.D, Dv = p.Dv, Dvp = p.Dvp, M = p.M;
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kBr, in = std::min(kBr, p.N - i0);
  float* QT = ws;                          // (D, Br): (q * scale)^T, columns past `in` zero
  float* ST = QT + up16(D * kBr);          // (Bc, Br): scores, key-major, then probabilities
  float* O = ST + up16(kBc * kBr);         // (Br, Dvp): unnormalised output
  float* m = O + up16(kBr * Dvp);          // (Br): running max
  float* l = m + up16(kBr);                // (Br): running sum
  float* alpha = l + up16(kBr);            // (Br): rescale factor of this step
  float* mt = alpha + up16(kBr);           // (Br): this tile's max, then the max subtracted
  float* Kbuf = mt + up16(kBr);            // (Bc, D): a converted key tile (f16 / bf16)
  float* Vbuf = Kbuf + up16(kBc * D);      // (Bc, Dvp): a converted or padded value tile
  float* row = Vbuf + up16(kBc * Dvp);     // (max(D, Dv)): scratch row

  load_rows_transposed(QT, kBr, p.q, p.dtype, bh * p.N + i0, in, D, p.scale, row);
  std::fill(m, m + kBr, -kInf);
  std::fill(l, l + kBr, 0.0f);
  std::fill(O, O + kBr * Dvp, 0.0f);

  int64_t kt0, kt1;
  key_tile_range(p, i0, in, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kBc, jn = std::min(kBc, M - j0);
    const Pair pair = classify(p, b, kt, i0, in, j0, jn);
    if (pair == Pair::Skip) continue;
    scores_key_major<Isa>(p, bh, kt, pair, i0, j0, jn, QT, ST, Kbuf);

    // Online softmax (FA-2 Algorithm 1, lines 9-10). S^T is key-major, so every statistic is a loop across the
    // query columns c, which the compiler vectorises.
    std::fill(mt, mt + kBr, -kInf);
    for (int64_t j = 0; j < jn; j++)
      for (int64_t c = 0; c < kBr; c++) mt[c] = std::max(mt[c], ST[j * kBr + c]);
    for (int64_t c = 0; c < kBr; c++) {
      const float mnew = std::max(m[c], mt[c]);
      // A row that has seen no key yet keeps m = -inf; subtracting 0 instead keeps exp(-inf) = 0 (not NaN).
      mt[c] = mnew == -kInf ? 0.0f : mnew;
      alpha[c] = vexp(m[c] - mt[c]);
      m[c] = mnew;
      l[c] *= alpha[c];
    }
    for (int64_t j = 0; j < jn; j++) {
      float* st = ST + j * kBr;
      for (int64_t c = 0; c < kBr; c++) {
        st[c] = vexp(st[c] - mt[c]);
        l[c] += st[c];
      }
    }
    for (int64_t i = 0; i < in; i++) {
      const float a = alpha[i];
      if (a == 1.0f) continue;
      float* o = O + i * Dvp;
      for (int64_t d = 0; d < Dvp; d++) o[d] *= a;
    }

    // O (in, Dvp) += P V, with P(i, j) = S^T[j][i] read transposed by the micro-kernel.
    int64_t ldv;
    const float* vp = value_tile(p, bh, j0, jn, Vbuf, &ldv);
    Isa::gemm(O, Dvp, ST, 1, kBr, vp, ldv, in, Dvp, jn, true);
  }

  // O /= l; stats = (m, log l). A row that saw nothing outputs 0 with m = +inf.
  float* st = stats + 2 * (bh * p.N + i0);
  for (int64_t i = 0; i < in; i++) {
    float* o = O + i * Dvp;
    if (l[i] == 0.0f) {
      std::fill(o, o + Dv, 0.0f);
      st[2 * i] = kInf;
      st[2 * i + 1] = 0.0f;
    } else {
      const float inv = 1.0f / l[i];
      for (int64_t d = 0; d < Dv; d++) o[d] *= inv;
      st[2 * i] = m[i];
      st[2 * i + 1] = std::log(l[i]);
    }
  }
  const int64_t obase = (bh * p.N + i0) * Dv;
  if (p.out_dtype == DType::F32) {
    float* dst = static_cast<float*>(out) + obase;
    for (int64_t i = 0; i < in; i++) std::memcpy(dst + i * Dv, O + i * Dvp, static_cast<size_t>(Dv) * 4);
  } else {
    uint16_t* dst = static_cast<uint16_t*>(out) + obase;
    for (int64_t i = 0; i < in; i++) cast(dst + i * Dv, p.out_dtype, O + i * Dvp, DType::F32, Dv);
  }
}

// ------------------------------------------------------------------------------------------------ backward
struct Backward {
  float *dq, *dk, *dv;
  const float* dout;
  const float* stats;  // (B, H, N, 2): m and log l per query row
  const float* dvec;   // (B, H, N): rowsum(dout * out)
  int64_t groups;      // G key-tile groups per head
  float* dq_groups;    // (B * H * G, N, Dp) when G > 1, else null (each worker accumulates in its workspace)
};

// D_i = sum_j P_ij dP_ij (FA-2 Algorithm 2, line 4, which forms the same number as rowsum(dO_i * O_i)). In exact
// arithmetic the two agree; in f32 only this form makes each row of dS = P (dP - D) sum to zero with the dP that
// the backward actually computes. With rowsum(dO * O) the difference, a rounding of dO . O against the f32 dot
// products dP, reaches dq as a multiple of the P-weighted mean key: over 300 random D = 128 causal problems the
// worst dq / dk error was 1.07x the 1e-5 tolerance that way, 0.59x this way (PyTorch's softmax backward also sums
// P dP). It costs a pass of two GEMMs per tile pair, laid out as the forward (key-major, no transposes but
// (q scale)^T and dO^T once per task); the scores, probabilities and dP are bitwise those of the main pass.
int64_t dvec_ws(const Problem& p) {
  return up16(p.D * kBr) + up16(p.Dv * kBr) + 2 * up16(kBc * kBr) + 4 * up16(kBr) + up16(kBc * p.D) +
         up16(kBc * p.Dvp) + up16(std::max(p.D, p.Dv));
}

// One task: D for query tile qt of head bh. ws: dvec_ws(p) floats.
template <class Isa>
MODALAB_INLINE void dvec_task(const Problem& p, const float* dout, const float* stats, float* dvec, int64_t bh,
                              int64_t qt, float* ws) {
  const int64_t D = p.D, Dv = p.Dv, Dvp = p.Dvp, M = p.M;
  const int64_t b = bh / p.H;
  const int64_t i0 = qt * kBr, in = std::min(kBr, p.N - i0);
  float* QT = ws;                          // (D, Br): (q * scale)^T
  float* dOT = QT + up16(D * kBr);         // (Dv, Br): dout^T
  float* ST = dOT + up16(Dv * kBr);        // (Bc, Br): scores, then P, key-major
  float* dPT = ST + up16(kBc * kBr);       // (Bc, Br): dP, key-major
  float* m = dPT + up16(kBc * kBr);        // (Br): the forward's row max (+inf past `in`: P = 0)
  float* ll = m + up16(kBr);               // (Br): the forward's log l
  double* acc = reinterpret_cast<double*>(ll + up16(kBr));  // (Br) doubles, in 2 * up16(Br) floats
  float* Kbuf = ll + 3 * up16(kBr);        // (Bc, D)
  float* Vbuf = Kbuf + up16(kBc * D);      // (Bc, Dvp)
  float* row = Vbuf + up16(kBc * Dvp);     // (max(D, Dv))

  load_rows_transposed(QT, kBr, p.q, p.dtype, bh * p.N + i0, in, D, p.scale, row);
  load_rows_transposed(dOT, kBr, dout, DType::F32, bh * p.N + i0, in, Dv, 1.0f, row);
  const float* st = stats + 2 * (bh * p.N + i0);
  for (int64_t c = 0; c < kBr; c++) {
    m[c] = c < in ? st[2 * c] : kInf;
    ll[c] = c < in ? st[2 * c + 1] : 0.0f;
    acc[c] = 0.0;
  }
  int64_t kt0, kt1;
  key_tile_range(p, i0, in, &kt0, &kt1);
  for (int64_t kt = kt0; kt < kt1; kt++) {
    const int64_t j0 = kt * kBc, jn = std::min(kBc, M - j0);
    const Pair pair = classify(p, b, kt, i0, in, j0, jn);
    if (pair == Pair::Skip) continue;
    scores_key_major<Isa>(p, bh, kt, pair, i0, j0, jn, QT, ST, Kbuf);
    int64_t ldv;
    const float* vp = value_tile(p, bh, j0, jn, Vbuf, &ldv);
    Isa::gemm(dPT, kBr, vp, ldv, 1, dOT, kBr, jn, kBr, Dv, false);  // dP^T (jn, Br) = v dout^T
    for (int64_t j = 0; j < jn; j++) {
      const float* s = ST + j * kBr;
      const float* dp = dPT + j * kBr;
      for (int64_t c = 0; c < kBr; c++) acc[c] += static_cast<double>(vexp((s[c] - m[c]) - ll[c])) * dp[c];
    }
  }
  for (int64_t c = 0; c < in; c++) dvec[bh * p.N + i0 + c] = static_cast<float>(acc[c]);
}

int64_t backward_ws(const Problem& p, int64_t groups) {
  return up16(p.D * kBc) + up16(kBc * p.Dp) + up16(p.Dv * kBc) + up16(kBc * p.Dp) + up16(kBc * p.Dvp) +
         up16(kBr * p.Dp) + up16(kBr * p.Dvp) + 2 * up16(kBr * kBc) + up16(std::max(p.D, p.Dv)) +
         (groups == 1 ? up16(p.N * p.Dp) : 0);
}

// One task: key-tile group g of head bh. ws: backward_ws(p, G) floats.
template <class Isa>
MODALAB_INLINE void backward_task(const Problem& p, const Backward& g, int64_t bh, int64_t grp, float* ws) {
  const int64_t D = p.D, Dv = p.Dv, Dp = p.Dp, Dvp = p.Dvp, N = p.N, M = p.M;
  const int64_t b = bh / p.H;
  float* KT = ws;                          // (D, Bc): k^T, columns past jn zero
  float* Kb = KT + up16(D * kBc);          // (Bc, Dp): k
  float* VT = Kb + up16(kBc * Dp);         // (Dv, Bc): v^T, columns past jn zero
  float* dK = VT + up16(Dv * kBc);         // (Bc, Dp): dk of this key tile (q was scaled: no scale left)
  float* dV = dK + up16(kBc * Dp);         // (Bc, Dvp)
  float* Qs = dV + up16(kBc * Dvp);        // (Br, Dp): q * scale
  float* dOb = Qs + up16(kBr * Dp);        // (Br, Dvp): dout, padded (when Dv is not a multiple of W)
  float* S = dOb + up16(kBr * Dvp);        // (Br, Bc): scores, then P
  float* dS = S + up16(kBr * kBc);         // (Br, Bc): dP, then dS
  float* row = dS + up16(kBr * kBc);       // (max(D, Dv))
  float* dQ = g.groups == 1 ? row + up16(std::max(D, Dv))                     // (N, Dp): this group's dq / scale
                            : g.dq_groups + (bh * g.groups + grp) * N * Dp;
  std::fill(dQ, dQ + N * Dp, 0.0f);
  const float* bias = p.key_bias + b * p.nkt * kBc;

  for (int64_t kt = grp; kt < p.nkt; kt += g.groups) {
    const int64_t j0 = kt * kBc, jn = std::min(kBc, M - j0);
    float* dk_out = g.dk + (bh * M + j0) * D;
    float* dv_out = g.dv + (bh * M + j0) * Dv;
    std::fill(dK, dK + jn * Dp, 0.0f);
    std::fill(dV, dV + jn * Dvp, 0.0f);
    bool loaded = false;
    for (int64_t qt = 0; qt < p.nqt; qt++) {
      const int64_t i0 = qt * kBr, in = std::min(kBr, N - i0);
      const Pair pair = classify(p, b, kt, i0, in, j0, jn);
      if (pair == Pair::Skip) continue;
      if (!loaded) {  // the key tile, once, and only when some query tile sees it
        load_rows(Kb, Dp, p.k, p.dtype, bh * M + j0, jn, D, 1.0f);
        load_rows_transposed(KT, kBc, p.k, p.dtype, bh * M + j0, jn, D, 1.0f, row);
        load_rows_transposed(VT, kBc, p.v, p.dtype, bh * M + j0, jn, Dv, 1.0f, row);
        loaded = true;
      }
      load_rows(Qs, Dp, p.q, p.dtype, bh * N + i0, in, D, p.scale);
      const float* dO = g.dout + (bh * N + i0) * Dv;
      int64_t ldo = Dv;
      if (Dv != Dvp) {
        load_rows(dOb, Dvp, g.dout, DType::F32, bh * N + i0, in, Dv, 1.0f);
        dO = dOb;
        ldo = Dvp;
      }
      const float* St = g.stats + 2 * (bh * N + i0);
      const float* Dr = g.dvec + bh * N + i0;

      // S (in, Bc) = (q scale) k^T, masked as in the forward, then P = exp(S - m - log l) (FA-2 Algorithm 2, line
      // 11). S - m is exact for the scores that matter (Sterbenz), so P is as accurate as the forward's.
      Isa::gemm(S, kBc, Qs, Dp, 1, KT, kBc, in, kBc, D, false);
      const bool padded = p.tile_state[b * p.nkt + kt] != 0;
      for (int64_t i = 0; i < in; i++) {
        float* s = S + i * kBc;
        if (padded)
          for (int64_t j = 0; j < kBc; j++) s[j] += bias[j0 + j];
        if (pair == Pair::Edge) {
          const int64_t jlo = p.lo(i0 + i) - j0, jhi = p.hi(i0 + i) - j0;
          for (int64_t j = 0; j < std::min(kBc, jlo); j++) s[j] = -kInf;
          for (int64_t j = std::max<int64_t>(0, jhi + 1); j < kBc; j++) s[j] = -kInf;
        }
        const float mi = St[2 * i], li = St[2 * i + 1];
        for (int64_t j = 0; j < kBc; j++) s[j] = vexp((s[j] - mi) - li);
      }
      // dP (in, Bc) = dO v^T;  dS = P * (dP - D)  (line 14)
      Isa::gemm(dS, kBc, dO, ldo, 1, VT, kBc, in, kBc, Dv, false);
      for (int64_t i = 0; i < in; i++) {
        const float di = Dr[i];
        const float* pr = S + i * kBc;
        float* ds = dS + i * kBc;
        for (int64_t j = 0; j < kBc; j++) ds[j] = pr[j] * (ds[j] - di);
      }
      // dV (jn, Dvp) += P^T dO;  dK (jn, Dp) += dS^T (q scale);  dQ (in, Dp) += dS k  (lines 12, 15, 16)
      Isa::gemm(dV, Dvp, S, 1, kBc, dO, ldo, jn, Dvp, in, true);
      Isa::gemm(dK, Dp, dS, 1, kBc, Qs, Dp, jn, Dp, in, true);
      Isa::gemm(dQ + i0 * Dp, Dp, dS, kBc, 1, Kb, Dp, in, Dp, jn, true);
    }
    for (int64_t j = 0; j < jn; j++) {
      std::memcpy(dk_out + j * D, dK + j * Dp, static_cast<size_t>(D) * 4);
      std::memcpy(dv_out + j * Dv, dV + j * Dvp, static_cast<size_t>(Dv) * 4);
    }
  }
  if (g.groups == 1) {
    float* dst = g.dq + bh * N * D;
    for (int64_t i = 0; i < N; i++)
      for (int64_t d = 0; d < D; d++) dst[i * D + d] = dQ[i * Dp + d] * p.scale;
  }
}

// ------------------------------------------------------------------------------------------------ dispatch
typedef void (*GemmFn)(float*, int64_t, const float*, int64_t, int64_t, const float*, int64_t, int64_t, int64_t,
                       int64_t, bool);
typedef void (*ForwardFn)(const Problem&, void*, float*, int64_t, int64_t, float*);
typedef void (*BackwardFn)(const Problem&, const Backward&, int64_t, int64_t, float*);
typedef void (*DvecFn)(const Problem&, const float*, const float*, float*, int64_t, int64_t, float*);

struct Kernels {
  const char* name;
  int width;
  ForwardFn forward;
  BackwardFn backward;
  DvecFn dvec;
};

#define MODALAB_ATTENTION_ISA(NAME, TARGET, W_, R_, NV_)                                                              \
  TARGET void gemm_##NAME(float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs, const float* b,      \
                          int64_t ldb, int64_t rows, int64_t cols, int64_t K, bool acc) {                       \
    gemm_impl<W_, R_, NV_>(c, ldc, a, ars, acs, b, ldb, rows, cols, K, acc);                                      \
  }                                                                                                             \
  struct Isa_##NAME {                                                                                           \
    static constexpr int W = W_;                                                                                \
    static MODALAB_INLINE void gemm(float* c, int64_t ldc, const float* a, int64_t ars, int64_t acs,            \
                                    const float* b, int64_t ldb, int64_t rows, int64_t cols, int64_t K,         \
                                    bool acc) {                                                                 \
      gemm_##NAME(c, ldc, a, ars, acs, b, ldb, rows, cols, K, acc);                                             \
    }                                                                                                           \
  };                                                                                                            \
  TARGET void forward_##NAME(const Problem& p, void* out, float* stats, int64_t bh, int64_t qt, float* ws) {    \
    forward_task<Isa_##NAME>(p, out, stats, bh, qt, ws);                                                        \
  }                                                                                                             \
  TARGET void backward_##NAME(const Problem& p, const Backward& g, int64_t bh, int64_t grp, float* ws) {        \
    backward_task<Isa_##NAME>(p, g, bh, grp, ws);                                                               \
  }                                                                                                             \
  TARGET void dvec_##NAME(const Problem& p, const float* dout, const float* stats, float* dvec, int64_t bh,     \
                          int64_t qt, float* ws) {                                                              \
    dvec_task<Isa_##NAME>(p, dout, stats, dvec, bh, qt, ws);                                                    \
  }

#if defined(__x86_64__) && defined(__GNUC__)
// Register tiles (rows x vectors): AVX-512 4 x 4 zmm (16 accumulators of 32 registers); AVX2 + FMA 4 x 2 ymm (8 of
// 16: a 2 x 4 tile made GCC reload b from memory for every row, 3x slower); baseline 2 x 4 xmm.
MODALAB_ATTENTION_ISA(avx512, __attribute__((target("avx512f,avx2,fma"))), 16, 4, 4)
MODALAB_ATTENTION_ISA(avx2, __attribute__((target("avx2,fma"))), 8, 4, 2)
#define MODALAB_ATTENTION_X86 1
#endif
MODALAB_ATTENTION_ISA(base, , 4, 2, 4)

const Kernels kBase{"base", 4, forward_base, backward_base, dvec_base};
#ifdef MODALAB_ATTENTION_X86
const Kernels kAvx2{"avx2", 8, forward_avx2, backward_avx2, dvec_avx2};
const Kernels kAvx512{"avx512", 16, forward_avx512, backward_avx512, dvec_avx512};
#endif

const Kernels* best_kernels() {
#ifdef MODALAB_ATTENTION_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return &kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return &kAvx2;
#endif
  return &kBase;
}

std::atomic<const Kernels*> g_kernels{nullptr};

const Kernels& kernels() {
  const Kernels* k = g_kernels.load(std::memory_order_acquire);
  if (!k) {
    // MODALAB_ATTENTION_KERNEL=avx2|base forces a narrower path (where the processor has it), so that the
    // TypeScript tests can run every path on one machine, as MODALAB_GEMM_KERNEL does for matmul.
    const char* force = std::getenv("MODALAB_ATTENTION_KERNEL");
    if (!force || !attention_set_isa(force)) g_kernels.store(best_kernels(), std::memory_order_release);
    k = g_kernels.load(std::memory_order_acquire);
  }
  return *k;
}

// A 64-byte-aligned float buffer for the duration of one call.
struct Buffer {
  float* p = nullptr;
  explicit Buffer(int64_t n) {
    if (n <= 0) return;
    const size_t bytes = (static_cast<size_t>(n) * sizeof(float) + 63) / 64 * 64;
    p = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (!p) throw std::bad_alloc();
  }
  ~Buffer() { std::free(p); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
};

Problem make_problem(DType dtype, DType out_dtype, const void* q, const void* k, const void* v, int64_t B, int64_t H,
                     int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window,
                     int width) {
  Problem p;
  p.dtype = dtype;
  p.out_dtype = out_dtype;
  p.q = q;
  p.k = k;
  p.v = v;
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
  p.nqt = (N + kBr - 1) / kBr;
  p.nkt = (M + kBc - 1) / kBc;
  p.Dp = (D + width - 1) / width * width;
  p.Dvp = (Dv + width - 1) / width * width;
  p.key_bias = nullptr;
  p.tile_state = nullptr;
  return p;
}

// Run task(t, worker) for t in [0, ntasks) on `workers` threads; tasks are handed out one at a time from a
// counter (dynamic scheduling: causal tiles differ in cost), which cannot change any result since tasks write
// disjoint outputs.
template <class Fn>
void run_tasks(int64_t ntasks, int64_t workers, const Fn& task) {
  if (workers <= 1) {
    for (int64_t t = 0; t < ntasks; t++) task(t, 0);
    return;
  }
  std::atomic<int64_t> next{0};
  parallel_for(workers, 1, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; w++)
      for (int64_t t = next.fetch_add(1); t < ntasks; t = next.fetch_add(1)) task(t, w);
  });
}

int64_t worker_count(int64_t ntasks, double flops) {
  if (flops < static_cast<double>(kInlineFlops)) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(ntasks, num_threads()));
}

}  // namespace

bool attention_set_isa(const char* isa) {
  const std::string want = isa ? isa : "";
  const Kernels* k = nullptr;
  if (want == "auto") k = best_kernels();
  if (want == "base") k = &kBase;
#ifdef MODALAB_ATTENTION_X86
  __builtin_cpu_init();
  if (want == "avx2" && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) k = &kAvx2;
  if (want == "avx512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    k = &kAvx512;
#endif
  if (!k) return false;
  g_kernels.store(k, std::memory_order_release);
  return true;
}

const char* attention_isa() { return kernels().name; }

void attention_forward(void* out, DType out_dtype, float* stats, const void* q, const void* k, const void* v,
                       DType dtype, const void* key_padding_mask, bool mask_i32, int64_t B, int64_t H, int64_t N,
                       int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window) {
  if (B <= 0 || H <= 0 || N <= 0) return;
  const Kernels& kern = kernels();
  Problem p = make_problem(dtype, out_dtype, q, k, v, B, H, N, M, D, Dv, scale, causal, window, kern.width);
  PaddingTable pad(p, key_padding_mask, mask_i32);
  p.key_bias = pad.bias.data();
  p.tile_state = pad.state.data();
  // Heavy tiles first (under a causal mask the last query tiles see the most keys), so that the dynamic
  // schedule ends with small tasks.
  const int64_t ntasks = B * H * p.nqt;
  const int64_t workers =
      worker_count(ntasks, static_cast<double>(B) * H * N * std::max<int64_t>(M, 1) * (D + Dv + 1));
  const int64_t wsize = forward_ws(p);
  Buffer ws(workers * wsize);
  run_tasks(ntasks, workers, [&](int64_t t, int64_t w) {
    const int64_t bh = t % (B * H), qt = p.nqt - 1 - t / (B * H);
    kern.forward(p, out, stats, bh, qt, ws.p + w * wsize);
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k,
                        const void* v, const float* stats, DType dtype, const void* key_padding_mask, bool mask_i32,
                        int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal,
                        int64_t window) {
  if (B <= 0 || H <= 0) return;
  const Kernels& kern = kernels();
  Problem p = make_problem(dtype, DType::F32, q, k, v, B, H, N, M, D, Dv, scale, causal, window, kern.width);
  PaddingTable pad(p, key_padding_mask, mask_i32);
  p.key_bias = pad.bias.data();
  p.tile_state = pad.state.data();
  const int64_t BH = B * H;
  const double flops = static_cast<double>(BH) * N * std::max<int64_t>(M, 1) * (2 * D + 2 * Dv + 1);

  // D_i = sum_j P_ij dP_ij (see dvec_task), one task per query tile as in the forward.
  Buffer dvec(BH * N);
  {
    const int64_t ntasks = BH * p.nqt;
    const int64_t workers = worker_count(ntasks, flops * (D + Dv) / (2 * D + 2 * Dv + 1));
    const int64_t wsize = dvec_ws(p);
    Buffer ws(workers * wsize);
    run_tasks(ntasks, workers, [&](int64_t t, int64_t w) {
      kern.dvec(p, dout, stats, dvec.p, t % BH, p.nqt - 1 - t / BH, ws.p + w * wsize);
    });
  }

  // Key-tile groups per head: a function of the shape only (see the file comment).
  const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(p.nkt, kBackwardTasks / BH));
  Buffer dq_groups(groups > 1 ? BH * groups * N * p.Dp : 0);
  Backward g{dq, dk, dv, dout, stats, dvec.p, groups, dq_groups.p};
  const int64_t ntasks = BH * groups;
  const int64_t workers = worker_count(ntasks, flops);
  const int64_t wsize = backward_ws(p, groups);
  Buffer ws(workers * wsize);
  run_tasks(ntasks, workers, [&](int64_t t, int64_t w) {
    kern.backward(p, g, t / groups, t % groups, ws.p + w * wsize);
  });

  if (groups > 1) {
    // dq = scale * (group 0 + group 1 + ...), always in this order.
    const int64_t Dp = p.Dp;
    parallel_for(BH * N, std::max<int64_t>(1, 8192 / std::max<int64_t>(D * groups, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; r++) {
        const int64_t bh = r / N, i = r % N;
        float* dst = dq + r * D;
        for (int64_t d = 0; d < D; d++) {
          float s = 0.0f;
          for (int64_t grp = 0; grp < groups; grp++) s += dq_groups.p[((bh * groups + grp) * N + i) * Dp + d];
          dst[d] = s * scale;
        }
      }
    });
  }
}

}  // namespace cpu
}  // namespace modalab
