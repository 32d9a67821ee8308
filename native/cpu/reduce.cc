// Reductions over the middle axis of x (outer, len, inner): sum and mean (accumulated in double), max and min
// (with the first arg index; NaN propagates, as in torch.max), their backward helpers (broadcast_axis and
// scatter_arg, which overwrite their output), and the two whole-tensor checks the optimizers need.
//
// Parallel and deterministic. The work is cut into units of (outer row, block of columns, block of len) whose
// sizes depend only on the tensor's shape, never on the thread count. When len spans several blocks, each
// unit writes a partial result and a second pass combines the partials in block order. So a result is the same
// with 1 thread or 64, and long rows (a sum over all of a large tensor) still use every core.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"

// Hot loops are compiled for AVX2 and for baseline x86-64 and picked at load time (see elementwise.cc).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define MODALAB_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MODALAB_SIMD_CLONES
#endif

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kUnitElems = 1 << 15;   // elements one unit of work reads
constexpr int64_t kColBlock = 64;         // columns per unit when inner > 1 (its accumulators stay in L1)

// Partial result of a max/min: the value and the index along len where it was first met.
struct Arg {
  float v;
  int32_t i;
};

// Is candidate c better than the current best b, for the first-index semantics of torch.max(dim)?
// A NaN wins over any number and the first NaN is kept. Written with bitwise operators: no branches.
template <bool kMax>
inline bool better(float c, float b) {
  return (b == b) & ((c != c) | (kMax ? c > b : c < b));
}

// The first best element of a contiguous run x[l0, l1) (non-empty). A vectorisable pass finds the best value
// and whether there is a NaN, eight lanes at a time; a second pass finds where that value first occurs.
template <bool kMax>
MODALAB_SIMD_CLONES Arg run_arg(const float* x, int64_t l0, int64_t l1) {
  constexpr int kLanes = 8;
  float acc[kLanes];
  int32_t nan[kLanes];
  for (int k = 0; k < kLanes; k++) { acc[k] = x[l0]; nan[k] = 0; }
  int64_t j = l0;
  for (; j + kLanes <= l1; j += kLanes) {
    for (int k = 0; k < kLanes; k++) {
      const float v = x[j + k];
      acc[k] = (kMax ? v > acc[k] : v < acc[k]) ? v : acc[k];
      nan[k] |= v != v;
    }
  }
  float m = acc[0];
  int32_t any_nan = 0;
  for (int k = 0; k < kLanes; k++) {
    m = (kMax ? acc[k] > m : acc[k] < m) ? acc[k] : m;
    any_nan |= nan[k];
  }
  for (; j < l1; j++) {
    m = (kMax ? x[j] > m : x[j] < m) ? x[j] : m;
    any_nan |= x[j] != x[j];
  }
  int64_t at = l0;
  if (any_nan) {
    while (x[at] == x[at]) at++;
  } else {
    while (x[at] != m) at++;   // -0 == +0: the first zero, as a sequential scan would pick
  }
  return Arg{x[at], static_cast<int32_t>(at)};
}

// Columns [0, w) of rows l0 .. l1-1 of x (row stride `inner`): best (w) and idx (w), started from row l0.
template <bool kMax>
MODALAB_SIMD_CLONES void cols_arg(float* best, int32_t* idx, const float* x, int64_t inner, int64_t l0, int64_t l1,
                                  int64_t w) {
  for (int64_t c = 0; c < w; c++) { best[c] = x[l0 * inner + c]; idx[c] = static_cast<int32_t>(l0); }
  for (int64_t l = l0 + 1; l < l1; l++) {
    const float* row = x + l * inner;
    const int32_t li = static_cast<int32_t>(l);
    for (int64_t c = 0; c < w; c++) {
      const bool take = better<kMax>(row[c], best[c]);
      best[c] = take ? row[c] : best[c];
      idx[c] = take ? li : idx[c];
    }
  }
}

// Sum of a contiguous run in double, with four independent accumulators (a fixed order: deterministic).
MODALAB_SIMD_CLONES double sum_run(const float* x, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    s0 += x[j];
    s1 += x[j + 1];
    s2 += x[j + 2];
    s3 += x[j + 3];
  }
  for (; j < n; j++) s0 += x[j];
  return (s0 + s1) + (s2 + s3);
}

// acc (w) = column sums over rows l0 .. l1-1 of x (row stride `inner`), in double, row by row.
MODALAB_SIMD_CLONES void cols_sum(double* acc, const float* x, int64_t inner, int64_t l0, int64_t l1, int64_t w) {
  for (int64_t c = 0; c < w; c++) acc[c] = 0;
  for (int64_t l = l0; l < l1; l++) {
    const float* row = x + l * inner;
    for (int64_t c = 0; c < w; c++) acc[c] += row[c];
  }
}

struct Plan {
  int64_t outer, len, inner;
  int64_t cb;    // columns per unit
  int64_t ncb;   // column blocks
  int64_t lb;    // len per unit
  int64_t nlb;   // len blocks
  int64_t units() const { return outer * ncb * nlb; }
};

Plan make_plan(int64_t outer, int64_t len, int64_t inner) {
  Plan p{outer, len, inner, 0, 0, 0, 0};
  p.cb = std::min<int64_t>(inner, kColBlock);
  p.ncb = (inner + p.cb - 1) / p.cb;
  p.lb = std::max<int64_t>(1, kUnitElems / p.cb);
  p.nlb = std::max<int64_t>(1, (len + p.lb - 1) / p.lb);
  return p;
}

// Grain in units, so that a parallel chunk reads about kUnitElems elements at least.
int64_t unit_grain(const Plan& p) {
  int64_t per_unit = std::max<int64_t>(1, std::min(p.lb, p.len) * p.cb);
  return std::max<int64_t>(1, kUnitElems / per_unit);
}

// ------------------------------------------------------------------------------------------------ sum/mean
void reduce_sum(float* out, const float* x, const Plan& p, bool mean) {
  const int64_t inner = p.inner, len = p.len;
  const double scale = mean ? 1.0 / static_cast<double>(len) : 1.0;   // len 0: inf, and 0 * inf = NaN
  std::vector<double> partial;
  if (p.nlb > 1) partial.resize(static_cast<size_t>(p.outer * p.nlb * inner));
  auto finish = [&](double s) { return static_cast<float>(mean ? s * scale : s); };

  parallel_for(p.units(), unit_grain(p), [&](int64_t ub, int64_t ue) {
    double acc[kColBlock];
    for (int64_t u = ub; u < ue; u++) {
      const int64_t lbi = u % p.nlb, cbi = (u / p.nlb) % p.ncb, o = u / (p.nlb * p.ncb);
      const int64_t l0 = lbi * p.lb, l1 = std::min(len, l0 + p.lb);
      const int64_t c0 = cbi * p.cb, c1 = std::min(inner, c0 + p.cb), w = c1 - c0;
      if (inner == 1) {
        acc[0] = sum_run(x + o * len + l0, l1 - l0);
      } else {
        cols_sum(acc, x + (o * len) * inner + c0, inner, l0, l1, w);
      }
      if (p.nlb == 1) {
        for (int64_t c = 0; c < w; c++) out[o * inner + c0 + c] = finish(acc[c]);
      } else {
        for (int64_t c = 0; c < w; c++) partial[(o * p.nlb + lbi) * inner + c0 + c] = acc[c];
      }
    }
  });
  if (p.nlb == 1) return;
  parallel_for(p.outer * inner, kUnitElems / p.nlb + 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const int64_t o = k / inner, i = k % inner;
      double s = 0;
      for (int64_t lbi = 0; lbi < p.nlb; lbi++) s += partial[(o * p.nlb + lbi) * inner + i];
      out[k] = finish(s);
    }
  });
}

// ------------------------------------------------------------------------------------------------ max/min
template <bool kMax>
void reduce_arg(float* out, int32_t* argidx, const float* x, const Plan& p) {
  const int64_t inner = p.inner, len = p.len;
  std::vector<Arg> partial;
  if (p.nlb > 1) partial.resize(static_cast<size_t>(p.outer * p.nlb * inner));

  parallel_for(p.units(), unit_grain(p), [&](int64_t ub, int64_t ue) {
    float best[kColBlock];
    int32_t idx[kColBlock];
    for (int64_t u = ub; u < ue; u++) {
      const int64_t lbi = u % p.nlb, cbi = (u / p.nlb) % p.ncb, o = u / (p.nlb * p.ncb);
      const int64_t l0 = lbi * p.lb, l1 = std::min(len, l0 + p.lb);
      const int64_t c0 = cbi * p.cb, c1 = std::min(inner, c0 + p.cb), w = c1 - c0;
      const float* base = x + o * len * inner + c0;
      if (inner == 1) {
        const Arg a = run_arg<kMax>(base, l0, l1);
        best[0] = a.v;
        idx[0] = a.i;
      } else {
        cols_arg<kMax>(best, idx, base, inner, l0, l1, w);
      }
      for (int64_t c = 0; c < w; c++) {
        if (p.nlb == 1) {
          out[o * inner + c0 + c] = best[c];
          if (argidx) argidx[o * inner + c0 + c] = idx[c];
        } else {
          partial[(o * p.nlb + lbi) * inner + c0 + c] = Arg{best[c], idx[c]};
        }
      }
    }
  });
  if (p.nlb == 1) return;
  // Combine in block order: a later block wins only when strictly better, so the first index is kept.
  parallel_for(p.outer * inner, kUnitElems / p.nlb + 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const int64_t o = k / inner, i = k % inner;
      Arg bst = partial[(o * p.nlb) * inner + i];
      for (int64_t lbi = 1; lbi < p.nlb; lbi++) {
        const Arg& c = partial[(o * p.nlb + lbi) * inner + i];
        if (better<kMax>(c.v, bst.v)) bst = c;
      }
      out[k] = bst.v;
      if (argidx) argidx[k] = bst.i;
    }
  });
}

}  // namespace

// out (outer, inner) = op over len of x (outer, len, inner); argidx (outer, inner) for Max/Min, may be null.
// An empty axis gives 0 (Sum), NaN (Mean), -inf/+inf (Max/Min) with argidx -1.
void reduce(float* out, int32_t* argidx, const float* x, int64_t outer, int64_t len, int64_t inner,
            ReduceOp op) {
  const int64_t nout = outer * inner;
  if (nout == 0) return;
  if (len == 0) {
    const float v = op == ReduceOp::Sum ? 0.0f
                    : op == ReduceOp::Mean ? std::numeric_limits<float>::quiet_NaN()
                    : op == ReduceOp::Max ? -std::numeric_limits<float>::infinity()
                                          : std::numeric_limits<float>::infinity();
    std::fill(out, out + nout, v);
    if (argidx && (op == ReduceOp::Max || op == ReduceOp::Min)) std::fill(argidx, argidx + nout, -1);
    return;
  }
  const Plan p = make_plan(outer, len, inner);
  switch (op) {
    case ReduceOp::Sum: return reduce_sum(out, x, p, false);
    case ReduceOp::Mean: return reduce_sum(out, x, p, true);
    case ReduceOp::Max: return reduce_arg<true>(out, argidx, x, p);
    case ReduceOp::Min: return reduce_arg<false>(out, argidx, x, p);
  }
}

// dx (outer, len, inner) = dy (outer, inner) broadcast along len, times scale. Overwrites.
void broadcast_axis(float* dx, const float* dy, int64_t outer, int64_t len, int64_t inner, float scale) {
  const int64_t rows = outer * len;
  parallel_for(rows, std::max<int64_t>(1, kUnitElems / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* src = dy + (r / std::max<int64_t>(len, 1)) * inner;
      float* dst = dx + r * inner;
      if (scale == 1.0f) {
        for (int64_t i = 0; i < inner; i++) dst[i] = src[i];
      } else {
        for (int64_t i = 0; i < inner; i++) dst[i] = src[i] * scale;
      }
    }
  });
}

// dx (outer, len, inner) = 0 except dx[o, argidx[o, i], i] = dy[o, i]. Indices outside [0, len) are skipped,
// so a corrupted argidx can never write out of bounds. Overwrites.
void scatter_arg(float* dx, const float* dy, const int32_t* argidx, int64_t outer, int64_t len, int64_t inner) {
  const int64_t slab = len * inner;
  parallel_for(outer, std::max<int64_t>(1, kUnitElems / std::max<int64_t>(slab, 1)), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; o++) {
      float* d = dx + o * slab;
      std::fill(d, d + slab, 0.0f);
      for (int64_t i = 0; i < inner; i++) {
        const int64_t a = argidx[o * inner + i];
        if (a >= 0 && a < len) d[a * inner + i] = dy[o * inner + i];
      }
    }
  });
}

// sum of x^2 in double: fixed blocks summed in parallel, then the block sums in order (deterministic).
double sum_squares(const float* x, int64_t n) {
  if (n <= 0) return 0.0;
  const int64_t nb = (n + kUnitElems - 1) / kUnitElems;
  std::vector<double> part(static_cast<size_t>(nb));
  parallel_for(nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const float* p = x + k * kUnitElems;
      const int64_t m = std::min(kUnitElems, n - k * kUnitElems);
      double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      int64_t j = 0;
      for (; j + 4 <= m; j += 4) {
        s0 += double(p[j]) * p[j];
        s1 += double(p[j + 1]) * p[j + 1];
        s2 += double(p[j + 2]) * p[j + 2];
        s3 += double(p[j + 3]) * p[j + 3];
      }
      for (; j < m; j++) s0 += double(p[j]) * p[j];
      part[k] = (s0 + s1) + (s2 + s3);
    }
  });
  double s = 0;
  for (double v : part) s += v;
  return s;
}

// Whether every element is finite (no NaN, no infinity): an exponent field of all ones marks both.
bool all_finite(const float* x, int64_t n) {
  if (n <= 0) return true;
  const int64_t nb = (n + kUnitElems - 1) / kUnitElems;
  std::vector<char> ok(static_cast<size_t>(nb), 1);
  parallel_for(nb, 1, [&](int64_t b, int64_t e) {
    for (int64_t k = b; k < e; k++) {
      const int64_t lo = k * kUnitElems, hi = std::min(n, lo + kUnitElems);
      uint32_t bad = 0;
      for (int64_t j = lo; j < hi; j++) {
        uint32_t u;
        std::memcpy(&u, x + j, 4);
        bad |= ((u & 0x7F800000u) == 0x7F800000u) ? 1u : 0u;
      }
      ok[k] = bad ? 0 : 1;
    }
  });
  for (char c : ok) if (!c) return false;
  return true;
}

}  // namespace cpu
}  // namespace modalab
