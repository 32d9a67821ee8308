// Element-wise kernels: unary activations (forward beside backward), affine, pow by a scalar, binary ops and
// where() with NumPy broadcasting by strides, and dropout with a mask regenerated from the random stream.
//
// Backward kernels here overwrite their gradient output (=); autograd does any accumulation.
//
// Broadcasting. A binary op gets the output shape and, for each input, element strides over that shape (0 on a
// broadcast axis). Before walking, axes of size 1 are dropped and neighbouring axes that are contiguous for
// every operand are merged, so most broadcasts become one or two axes. Then [0, total) is cut into chunks for
// the thread pool; each chunk unravels its start index once and runs along the innermost axis, with
// specialised loops (contiguous/contiguous, contiguous/scalar, scalar/contiguous) the compiler vectorises.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "modalab/kernels.h"
#include "parallel.h"

// Hot loops are compiled three times, for AVX-512, AVX2 and baseline x86-64, and picked at load time (GCC's
// ifunc dispatch): the build has no -march, so one binary runs everywhere and still uses 16- or 8-wide vectors
// where it can. Contraction into FMA is off for this file (CMakeLists.txt: -ffp-contract=off; AVX-512 implies
// FMA), so every version rounds identically and results do not depend on the CPU.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define MODALAB_SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define MODALAB_SIMD_CLONES
#endif

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrain = 1 << 14;                // cheap ops: below this many elements, run inline
constexpr int64_t kTranscendentalGrain = 1 << 12;  // exp, tanh, erf ... cost more per element
constexpr float kSqrt1_2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;   // 1 / sqrt(2 pi)
constexpr float kGeluBeta = 0.79788456080286535588f;     // sqrt(2 / pi), PyTorch's kBeta
constexpr float kGeluKappa = 0.044715f;

int64_t unary_grain(UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: case UnaryOp::Relu: case UnaryOp::Abs: case UnaryOp::Square: case UnaryOp::Reciprocal:
      return kGrain;
    default:
      return kTranscendentalGrain;
  }
}

// ------------------------------------------------------------------------------------------------ vector math
// Branch-free float versions of exp, erfc and tanh that the compiler vectorises (libm's are scalar calls).
// Each is within a few ulp (checked against double references in native/test/test_elementwise.cc), far inside
// the 1e-5 relative tolerance the PyTorch fixtures use.

inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// c ? a : b as a bit blend. Both sides are always computed, so the optimizer cannot sink one into a branch,
// which (under the default -ftrapping-math) would stop the loop from vectorising.
inline float select(bool c, float a, float b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return bits_to_float((float_bits(a) & m) | (float_bits(b) & ~m));
}

// e^x: n = round(x / ln 2), r = x - n ln 2 in two parts (Cody-Waite), e^r by its Taylor series to degree 7
// (|r| <= ln2/2, truncation below 1e-8 relative), then times 2^n in two steps so that results that fall into the
// subnormals round once. Overflow gives inf, underflow 0, NaN stays NaN.
inline float fast_exp(float x) {
  float xc = select(x < -104.0f, -104.0f, x);
  xc = select(xc > 88.8f, 88.8f, xc);               // keeps NaN (both comparisons are false)
  const float magic = 12582912.0f;                  // 1.5 * 2^23: adding it rounds to an integer (ties to even)
  float n = (xc * 1.44269504088896341f + magic) - magic;
  float r = xc - n * 0.693359375f;                  // ln 2 = 0.693359375 - 2.12194440e-4 (the first part exact)
  r = r + n * 2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t ni = static_cast<int32_t>(select(n == n, n, 0.0f));
  const int32_t n1 = ni >> 1, n2 = ni - n1;
  const float s1 = bits_to_float(static_cast<uint32_t>(n1 + 127) << 23);
  const float s2 = bits_to_float(static_cast<uint32_t>(n2 + 127) << 23);
  return (p * s1) * s2;
}

// erfc(x), from Numerical Recipes' Chebyshev fit (fractional error below 1.2e-7 for every x):
// erfc(z) = t exp(-z^2 - 1.26551223 + t (1.00002368 + ...)), t = 1 / (1 + z/2), z = |x|; erfc(-z) = 2 - erfc(z).
// Computing GELU as x/2 erfc(-x/sqrt 2) avoids the cancellation of 1 + erf(x/sqrt 2) for negative x.
inline float fast_erfc(float x) {
  const float z = std::fabs(x);
  const float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  const float r = t * fast_exp(p - z * z);
  return select(x >= 0.0f, r, 2.0f - r);            // NaN: r is NaN, 2 - NaN is NaN
}

// tanh: an odd Taylor polynomial to x^17 below |x| = 0.55 (where 1 - 2/(e^2x + 1) would cancel), and
// 1 - 2 / (e^{2|x|} + 1) with the sign of x above.
inline float fast_tanh(float x) {
  const float ax = std::fabs(x);
  const float x2 = x * x;
  float p = 6404582.0f / 10854718875.0f;
  p = p * x2 - 929569.0f / 638512875.0f;
  p = p * x2 + 21844.0f / 6081075.0f;
  p = p * x2 - 1382.0f / 155925.0f;
  p = p * x2 + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  const float small = x + x * x2 * p;
  const float large = std::copysign(1.0f - 2.0f / (fast_exp(2.0f * ax) + 1.0f), x);
  return select(ax < 0.55f, small, large);
}

inline float fast_sigmoid(float x) { return 1.0f / (1.0f + fast_exp(-x)); }

// GELU with erf: x Phi(x) = x/2 erfc(-x / sqrt 2).
inline float gelu_erf(float x) { return 0.5f * x * fast_erfc(-x * kSqrt1_2); }

// PyTorch's tanh approximation 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3), written with
// 1 + tanh(u) = 2 sigmoid(2u) so that negative x does not cancel.
inline float gelu_tanh(float x) {
  const float u = kGeluBeta * (x + kGeluKappa * x * x * x);
  return x * fast_sigmoid(2.0f * u);
}

// ------------------------------------------------------------------------------------------------ unary
template <typename F>
MODALAB_SIMD_CLONES void map_range(float* y, const float* x, int64_t b, int64_t e, F f) {
  for (int64_t i = b; i < e; i++) y[i] = f(x[i]);
}

template <typename F>
void map1(float* y, const float* x, int64_t n, int64_t grain, F f) {
  parallel_for(n, grain, [&](int64_t b, int64_t e) { map_range(y, x, b, e, f); });
}

}  // namespace

void unary_forward(float* y, const float* x, int64_t n, UnaryOp op) {   // y (n), x (n)
  const int64_t g = unary_grain(op);
  switch (op) {
    case UnaryOp::Neg: return map1(y, x, n, g, [](float v) { return -v; });
    case UnaryOp::Exp: return map1(y, x, n, g, [](float v) { return fast_exp(v); });
    case UnaryOp::Log: return map1(y, x, n, g, [](float v) { return std::log(v); });
    case UnaryOp::Sqrt: return map1(y, x, n, g, [](float v) { return std::sqrt(v); });
    case UnaryOp::Tanh: return map1(y, x, n, g, [](float v) { return fast_tanh(v); });
    case UnaryOp::Sigmoid: return map1(y, x, n, g, [](float v) { return fast_sigmoid(v); });
    // `v < 0 ? 0 : v` keeps NaN, as torch.relu does.
    case UnaryOp::Relu: return map1(y, x, n, g, [](float v) { return v < 0.0f ? 0.0f : v; });
    case UnaryOp::GeluErf: return map1(y, x, n, g, [](float v) { return gelu_erf(v); });
    case UnaryOp::GeluTanh: return map1(y, x, n, g, [](float v) { return gelu_tanh(v); });
    case UnaryOp::Silu: return map1(y, x, n, g, [](float v) { return v / (1.0f + fast_exp(-v)); });
    case UnaryOp::Abs: return map1(y, x, n, g, [](float v) { return std::fabs(v); });
    case UnaryOp::Square: return map1(y, x, n, g, [](float v) { return v * v; });
    case UnaryOp::Reciprocal: return map1(y, x, n, g, [](float v) { return 1.0f / v; });
    case UnaryOp::Sin: return map1(y, x, n, g, [](float v) { return std::sin(v); });
    case UnaryOp::Cos: return map1(y, x, n, g, [](float v) { return std::cos(v); });
  }
}

namespace {
template <typename F>
MODALAB_SIMD_CLONES void map_backward_range(float* dx, const float* dy, const float* x, const float* y, int64_t b,
                                            int64_t e, F f) {
  for (int64_t i = b; i < e; i++) dx[i] = f(dy[i], x[i], y[i]);
}

template <typename F>
void map_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n, int64_t grain, F f) {
  parallel_for(n, grain, [&](int64_t b, int64_t e) { map_backward_range(dx, dy, x, y, b, e, f); });
}
}  // namespace

// dx (n) = dy (n) * f'(x (n)), with y (n) = f(x) for the ops whose derivative is cheaper from the output.
// The formulas follow PyTorch's derivatives.yaml so that gradients agree to rounding.
void unary_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n, UnaryOp op) {
  const int64_t g = unary_grain(op);
  switch (op) {
    case UnaryOp::Neg: return map_backward(dx, dy, x, y, n, g, [](float d, float, float) { return -d; });
    case UnaryOp::Exp: return map_backward(dx, dy, x, y, n, g, [](float d, float, float o) { return d * o; });
    case UnaryOp::Log: return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) { return d / v; });
    case UnaryOp::Sqrt:
      return map_backward(dx, dy, x, y, n, g, [](float d, float, float o) { return d / (2.0f * o); });
    case UnaryOp::Tanh:
      return map_backward(dx, dy, x, y, n, g, [](float d, float, float o) { return d * (1.0f - o * o); });
    case UnaryOp::Sigmoid:
      return map_backward(dx, dy, x, y, n, g, [](float d, float, float o) { return d * ((1.0f - o) * o); });
    // torch's threshold_backward: the gradient passes where the output is not <= 0.
    case UnaryOp::Relu:
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) { return v <= 0.0f ? 0.0f : d; });
    case UnaryOp::GeluErf:
      // d/dx x Phi(x) = Phi(x) + x phi(x)
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) {
        const float cdf = 0.5f * fast_erfc(-v * kSqrt1_2);
        const float pdf = kInvSqrt2Pi * fast_exp(-0.5f * v * v);
        return d * (cdf + v * pdf);
      });
    case UnaryOp::GeluTanh:
      // PyTorch's 0.5 (1 + t) + 0.5 x (1 - t^2) beta (1 + 3 kappa x^2), t = tanh(u), with 1 + t = 2s and
      // 1 - t^2 = 4 s (1 - s) for s = sigmoid(2u).
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) {
        const float x_sq = v * v;
        const float u = kGeluBeta * (v + kGeluKappa * x_sq * v);
        const float s = fast_sigmoid(2.0f * u);
        const float right = 2.0f * v * s * (1.0f - s) * kGeluBeta * (1.0f + 3.0f * kGeluKappa * x_sq);
        return d * (s + right);
      });
    case UnaryOp::Silu:
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) {
        const float s = fast_sigmoid(v);
        return d * s * (1.0f + v * (1.0f - s));
      });
    case UnaryOp::Abs:
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) {
        return select(v > 0.0f, d, select(v < 0.0f, -d, 0.0f * d));   // sign(0) = sign(NaN) = 0, as torch.sign
      });
    case UnaryOp::Square:
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) { return d * (2.0f * v); });
    case UnaryOp::Reciprocal:
      return map_backward(dx, dy, x, y, n, g, [](float d, float, float o) { return -d * (o * o); });
    case UnaryOp::Sin: return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) { return d * std::cos(v); });
    case UnaryOp::Cos:
      return map_backward(dx, dy, x, y, n, g, [](float d, float v, float) { return d * -std::sin(v); });
  }
}

// y (n) = x (n) * scale + shift. The two common special cases are computed as a single operation, so that
// x + c and x * c round exactly as PyTorch's add and mul do (and -0 stays -0 under x * c).
void affine(float* y, const float* x, int64_t n, float scale, float shift) {
  if (shift == 0.0f) return map1(y, x, n, kGrain, [scale](float v) { return v * scale; });
  if (scale == 1.0f) return map1(y, x, n, kGrain, [shift](float v) { return v + shift; });
  map1(y, x, n, kGrain, [scale, shift](float v) { return v * scale + shift; });
}

// y (n) = x (n) ^ p, with PyTorch's special cases (x*x for 2, sqrt for 0.5, 1/x for -1, ...), which are both
// faster and what torch computes.
void pow_scalar(float* y, const float* x, int64_t n, float p) {
  if (p == 1.0f) return map1(y, x, n, kGrain, [](float v) { return v; });
  if (p == 2.0f) return map1(y, x, n, kGrain, [](float v) { return v * v; });
  if (p == 3.0f) return map1(y, x, n, kGrain, [](float v) { return v * v * v; });
  if (p == 0.5f) return map1(y, x, n, kTranscendentalGrain, [](float v) { return std::sqrt(v); });
  if (p == -0.5f) return map1(y, x, n, kTranscendentalGrain, [](float v) { return 1.0f / std::sqrt(v); });
  if (p == -1.0f) return map1(y, x, n, kGrain, [](float v) { return 1.0f / v; });
  if (p == -2.0f) return map1(y, x, n, kGrain, [](float v) { return 1.0f / (v * v); });
  map1(y, x, n, kTranscendentalGrain, [p](float v) { return std::pow(v, p); });
}

// ------------------------------------------------------------------------------------------------ broadcasting
namespace {

// An n-d iteration space over a contiguous output with up to three strided inputs, simplified. Fixed-size
// arrays keep tiny ops free of heap allocation (the binding rejects more than kMaxDims axes).
constexpr int kMaxDims = 64;
struct Walk {
  int nd = 0;
  int64_t total = 0;
  int64_t shape[kMaxDims];      // (nd)
  int64_t st[3][kMaxDims];      // (nd) element strides per input
};

Walk simplify(int ndim, const int64_t* shape, const int64_t* const* strides, int nin) {
  Walk w;
  w.total = 1;
  for (int d = 0; d < ndim; d++) w.total *= shape[d];
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 1) continue;  // contributes nothing to any offset
    // Merge into the previous (outer) axis when every input steps over both as over one axis.
    bool merge = w.nd > 0;
    for (int k = 0; k < nin && merge; k++) merge = w.st[k][w.nd - 1] == strides[k][d] * shape[d];
    if (merge) {
      w.shape[w.nd - 1] *= shape[d];
      for (int k = 0; k < nin; k++) w.st[k][w.nd - 1] = strides[k][d];
    } else {
      w.shape[w.nd] = shape[d];
      for (int k = 0; k < nin; k++) w.st[k][w.nd] = strides[k][d];
      w.nd++;
    }
  }
  if (w.nd == 0) {  // a single element (all axes of size 1, or none)
    w.nd = 1;
    w.shape[0] = 1;
    for (int k = 0; k < nin; k++) w.st[k][0] = 0;
  }
  return w;
}

// Call run(out_index, in_offsets[3], inner_count) for each innermost run of [begin, end).
template <typename Run>
void walk_range(const Walk& w, int nin, int64_t begin, int64_t end, Run run) {
  const int nd = w.nd;
  const int64_t inner = w.shape[nd - 1];
  int64_t idx[kMaxDims];
  int64_t off[3] = {0, 0, 0};
  int64_t rem = begin;
  for (int d = nd - 1; d >= 0; d--) {
    idx[d] = rem % w.shape[d];
    rem /= w.shape[d];
    for (int k = 0; k < nin; k++) off[k] += idx[d] * w.st[k][d];
  }
  int64_t i = begin;
  while (i < end) {
    int64_t cnt = std::min(inner - idx[nd - 1], end - i);
    run(i, off, cnt);
    i += cnt;
    // advance the multi-index by cnt along the innermost axis, carrying outward
    idx[nd - 1] += cnt;
    for (int k = 0; k < nin; k++) off[k] += cnt * w.st[k][nd - 1];
    for (int d = nd - 1; d > 0 && idx[d] == w.shape[d]; d--) {
      for (int k = 0; k < nin; k++) off[k] += w.st[k][d - 1] - w.shape[d] * w.st[k][d];
      idx[d] = 0;
      idx[d - 1]++;
    }
  }
}

// One innermost run of a binary op, with the contiguous and scalar cases as separate loops to vectorise.
template <typename F>
MODALAB_SIMD_CLONES void binary_run(float* o, const float* pa, const float* pb, int64_t cnt, int64_t sa, int64_t sb,
                                    F f) {
  if (sa == 1 && sb == 1) {
    for (int64_t j = 0; j < cnt; j++) o[j] = f(pa[j], pb[j]);
  } else if (sa == 1 && sb == 0) {
    const float vb = *pb;
    for (int64_t j = 0; j < cnt; j++) o[j] = f(pa[j], vb);
  } else if (sa == 0 && sb == 1) {
    const float va = *pa;
    for (int64_t j = 0; j < cnt; j++) o[j] = f(va, pb[j]);
  } else {
    for (int64_t j = 0; j < cnt; j++) o[j] = f(pa[j * sa], pb[j * sb]);
  }
}

template <typename F>
void binary_apply(float* out, const float* a, const float* b, int ndim, const int64_t* shape,
                  const int64_t* astride, const int64_t* bstride, F f) {
  const int64_t* strides[2] = {astride, bstride};
  Walk w = simplify(ndim, shape, strides, 2);
  if (w.total == 0) return;
  const int64_t sa = w.st[0][w.nd - 1], sb = w.st[1][w.nd - 1];
  parallel_for(w.total, kGrain, [&](int64_t begin, int64_t end) {
    walk_range(w, 2, begin, end, [&](int64_t i, const int64_t* off, int64_t cnt) {
      binary_run(out + i, a + off[0], b + off[1], cnt, sa, sb, f);
    });
  });
}

template <typename C>
MODALAB_SIMD_CLONES void where_run(float* o, const C* pc, const float* pa, const float* pb, int64_t cnt, int64_t sc,
                                   int64_t sa, int64_t sb) {
  // Both sides are loaded unconditionally, so that the choice is a blend and the loop vectorises.
  if (sc == 1 && sa == 1 && sb == 1) {
    for (int64_t j = 0; j < cnt; j++) {
      const float va = pa[j], vb = pb[j];
      o[j] = pc[j] != 0 ? va : vb;
    }
  } else {
    for (int64_t j = 0; j < cnt; j++) {
      const float va = pa[j * sa], vb = pb[j * sb];
      o[j] = pc[j * sc] != 0 ? va : vb;
    }
  }
}

}  // namespace

// out (shape) = a op b; a and b laid over shape by astride/bstride (0 on broadcast axes).
// maximum/minimum propagate NaN like torch.maximum; comparisons with NaN are false except Ne.
void binary_forward(float* out, const float* a, const float* b, int ndim, const int64_t* shape,
                    const int64_t* astride, const int64_t* bstride, BinaryOp op) {
  auto go = [&](auto f) { binary_apply(out, a, b, ndim, shape, astride, bstride, f); };
  switch (op) {
    case BinaryOp::Add: return go([](float x, float y) { return x + y; });
    case BinaryOp::Sub: return go([](float x, float y) { return x - y; });
    case BinaryOp::Mul: return go([](float x, float y) { return x * y; });
    case BinaryOp::Div: return go([](float x, float y) { return x / y; });
    case BinaryOp::Pow: return go([](float x, float y) { return std::pow(x, y); });
    case BinaryOp::Maximum:   // x + y is NaN when either is
      return go([](float x, float y) { return select((x != x) | (y != y), x + y, x > y ? x : y); });
    case BinaryOp::Minimum:
      return go([](float x, float y) { return select((x != x) | (y != y), x + y, x < y ? x : y); });
    case BinaryOp::Eq: return go([](float x, float y) { return x == y ? 1.0f : 0.0f; });
    case BinaryOp::Lt: return go([](float x, float y) { return x < y ? 1.0f : 0.0f; });
    case BinaryOp::Gt: return go([](float x, float y) { return x > y ? 1.0f : 0.0f; });
    case BinaryOp::Le: return go([](float x, float y) { return x <= y ? 1.0f : 0.0f; });
    case BinaryOp::Ge: return go([](float x, float y) { return x >= y ? 1.0f : 0.0f; });
    case BinaryOp::Ne: return go([](float x, float y) { return x != y ? 1.0f : 0.0f; });
  }
}

// out (shape) = cond != 0 ? a : b, all three laid over shape by their strides. cond is f32 or i32.
void where_forward(float* out, const void* cond, bool cond_i32, const float* a, const float* b, int ndim,
                   const int64_t* shape, const int64_t* cstride, const int64_t* astride, const int64_t* bstride) {
  const int64_t* strides[3] = {cstride, astride, bstride};
  Walk w = simplify(ndim, shape, strides, 3);
  if (w.total == 0) return;
  const int64_t sc = w.st[0][w.nd - 1], sa = w.st[1][w.nd - 1], sb = w.st[2][w.nd - 1];
  auto body = [&](auto ctype) {
    using C = decltype(ctype);
    const C* c = static_cast<const C*>(cond);
    parallel_for(w.total, kGrain, [&](int64_t begin, int64_t end) {
      walk_range(w, 3, begin, end, [&](int64_t i, const int64_t* off, int64_t cnt) {
        where_run(out + i, c + off[0], a + off[1], b + off[2], cnt, sc, sa, sb);
      });
    });
  };
  if (cond_i32) body(int32_t{0}); else body(float{0});
}

// ------------------------------------------------------------------------------------------------ dropout
// The mask is never stored: forward and backward both regenerate u_i = uniform(seed, offset + i) with
// rand_uniform (creation.cc) a block at a time and keep element i iff u_i >= p, scaling kept values by 1/(1-p).
namespace {
MODALAB_SIMD_CLONES void dropout_run(float* out, const float* in, const float* u, int64_t cnt, float p, float scale) {
  for (int64_t j = 0; j < cnt; j++) {
    const float v = in[j] * scale;
    out[j] = select(u[j] >= p, v, 0.0f);
  }
}

// out (n) = keep_i ? in_i / (1 - p) : 0. The same map serves forward (x -> y) and backward (dy -> dx).
void dropout_apply(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset) {
  if (p <= 0.0f) {
    if (out != in) std::memmove(out, in, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  if (p >= 1.0f) {
    std::fill(out, out + n, 0.0f);
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  parallel_for(n, kTranscendentalGrain, [&](int64_t b, int64_t e) {
    constexpr int64_t kBuf = 512;
    float u[kBuf];
    for (int64_t s = b; s < e; s += kBuf) {
      int64_t cnt = std::min(kBuf, e - s);
      rand_uniform(u, cnt, seed, offset + static_cast<uint64_t>(s), 0.0f, 1.0f);
      dropout_run(out + s, in + s, u, cnt, p, scale);
    }
  });
}
}  // namespace

void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset) {  // y, x (n)
  dropout_apply(y, x, n, p, seed, offset);
}

void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t offset) {  // =
  dropout_apply(dx, dy, n, p, seed, offset);
}

}  // namespace cpu
}  // namespace modalab
