// Element-wise kernels: unary activations (forward beside backward), affine, pow by a scalar, and binary ops and
// where() with NumPy broadcasting by strides. The formulas are those of native/cpu/elementwise.cc (PyTorch's derivatives.yaml), so
// the two backends agree to the rounding of the math library.
//
// Backward kernels overwrite their gradient output (=).
//
// The op is a kernel argument, uniform across the grid, so the switch costs a few instructions and never
// diverges; these kernels are memory-bound. Broadcasting: before the launch, axes of size 1 are dropped and
// neighbouring axes that are contiguous for both inputs are merged (as on the CPU), so most broadcasts reach the
// kernel as one or two axes.
//
// pow_scalar takes the CPU's (PyTorch's) special cases for p in {1, 2, 3, 0.5, -0.5, -1, -2} with IEEE-rounded
// sqrt and division intrinsics, so those match cpu::pow_scalar bit for bit; any other p is powf (the device's,
// a few ulp from glibc's). where_forward is a pure selection (cond != 0, so NaN picks a, -0 picks b): exact.
#include <utility>

#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr float kSqrt1_2 = 0.70710678118654752440f;
constexpr float kInvSqrt2Pi = 0.39894228040143267794f;   // 1 / sqrt(2 pi)
constexpr float kGeluBeta = 0.79788456080286535588f;     // sqrt(2 / pi)
constexpr float kGeluKappa = 0.044715f;

__device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

// ------------------------------------------------------------------------------------------------ unary
__device__ __forceinline__ float unary_f(float v, UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return -v;
    case UnaryOp::Exp: return expf(v);
    case UnaryOp::Log: return logf(v);
    case UnaryOp::Sqrt: return sqrtf(v);
    case UnaryOp::Tanh: return tanhf(v);
    case UnaryOp::Sigmoid: return sigmoidf_(v);
    case UnaryOp::Relu: return v < 0.0f ? 0.0f : v;   // keeps NaN, as torch.relu
    case UnaryOp::GeluErf: return 0.5f * v * (1.0f + erff(v * kSqrt1_2));
    case UnaryOp::GeluTanh: return 0.5f * v * (1.0f + tanhf(kGeluBeta * (v + kGeluKappa * v * v * v)));
    case UnaryOp::Silu: return v * sigmoidf_(v);
    case UnaryOp::Abs: return fabsf(v);
    case UnaryOp::Square: return v * v;
    case UnaryOp::Reciprocal: return 1.0f / v;
    case UnaryOp::Sin: return sinf(v);
    case UnaryOp::Cos: return cosf(v);
  }
  return v;
}

// d * f'(v), with o = f(v) where the derivative is cheaper from the output.
__device__ __forceinline__ float unary_df(float d, float v, float o, UnaryOp op) {
  switch (op) {
    case UnaryOp::Neg: return -d;
    case UnaryOp::Exp: return d * o;
    case UnaryOp::Log: return d / v;
    case UnaryOp::Sqrt: return d / (2.0f * o);
    case UnaryOp::Tanh: return d * (1.0f - o * o);
    case UnaryOp::Sigmoid: return d * ((1.0f - o) * o);
    case UnaryOp::Relu: return v <= 0.0f ? 0.0f : d;   // torch's threshold_backward
    case UnaryOp::GeluErf: {   // d/dx x Phi(x) = Phi(x) + x phi(x)
      float cdf = 0.5f * (1.0f + erff(v * kSqrt1_2));
      float pdf = kInvSqrt2Pi * expf(-0.5f * v * v);
      return d * (cdf + v * pdf);
    }
    case UnaryOp::GeluTanh: {
      float x_sq = v * v;
      float t = tanhf(kGeluBeta * (v + kGeluKappa * x_sq * v));
      float left = 0.5f * v, right = 1.0f + t;
      float right_derivative = left * (1.0f - t * t) * kGeluBeta * (1.0f + 3.0f * kGeluKappa * x_sq);
      return d * (0.5f * right + right_derivative);
    }
    case UnaryOp::Silu: {
      float s = sigmoidf_(v);
      return d * s * (1.0f + v * (1.0f - s));
    }
    case UnaryOp::Abs: return v > 0.0f ? d : v < 0.0f ? -d : 0.0f * d;   // sign(0) = 0; NaN gives NaN
    case UnaryOp::Square: return d * (2.0f * v);
    case UnaryOp::Reciprocal: return -d * (o * o);
    case UnaryOp::Sin: return d * cosf(v);
    case UnaryOp::Cos: return d * -sinf(v);
  }
  return d;
}

__global__ void unary_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n, UnaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = unary_f(x[i], op);
}

// x or y may be null when op does not need it (the bindings may pass either); dx never aliases them in a way
// that matters, since each element is read before it is written by the same thread.
__global__ void unary_backward_kernel(float* dx, const float* dy, const float* x, const float* y, int64_t n,
                                      UnaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x ? x[i] : 0.0f, o = y ? y[i] : 0.0f;
    dx[i] = unary_df(dy[i], v, o, op);
  }
}

__global__ void affine_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n, float scale,
                              float shift) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = fmaf(x[i], scale, shift);
}

// ------------------------------------------------------------------------------------------------ binary
__device__ __forceinline__ float binary_f(float x, float y, BinaryOp op) {
  switch (op) {
    case BinaryOp::Add: return x + y;
    case BinaryOp::Sub: return x - y;
    case BinaryOp::Mul: return x * y;
    case BinaryOp::Div: return x / y;
    case BinaryOp::Pow: return powf(x, y);
    // maximum/minimum propagate NaN like torch.maximum
    case BinaryOp::Maximum: return (x != x || y != y) ? x + y : (x > y ? x : y);
    case BinaryOp::Minimum: return (x != x || y != y) ? x + y : (x < y ? x : y);
    case BinaryOp::Eq: return x == y ? 1.0f : 0.0f;
    case BinaryOp::Lt: return x < y ? 1.0f : 0.0f;
    case BinaryOp::Gt: return x > y ? 1.0f : 0.0f;
    case BinaryOp::Le: return x <= y ? 1.0f : 0.0f;
    case BinaryOp::Ge: return x >= y ? 1.0f : 0.0f;
    case BinaryOp::Ne: return x != y ? 1.0f : 0.0f;
  }
  return x;
}

constexpr int kMaxDims = 64;   // what the bindings allow; 3 x 64 strides fit in a kernel's 4 KB of parameters
struct Layout {
  int ndim;
  int64_t shape[kMaxDims], as[kMaxDims], bs[kMaxDims];
};

// One axis after merging: a contiguous sweep with a stride per input (0 for a broadcast operand).
__global__ void binary_1d_kernel(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b,
                                 int64_t n, int64_t as, int64_t bs, BinaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = binary_f(a[i * as], b[i * bs], op);
}

__global__ void binary_nd_kernel(float* __restrict__ out, const float* __restrict__ a, const float* __restrict__ b,
                                 int64_t n, const Layout L, BinaryOp op) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i, ao = 0, bo = 0;
    for (int d = L.ndim - 1; d >= 0; d--) {
      const int64_t c = r % L.shape[d];
      r /= L.shape[d];
      ao += c * L.as[d];
      bo += c * L.bs[d];
    }
    out[i] = binary_f(a[ao], b[bo], op);
  }
}

// ------------------------------------------------------------------------------------------------ pow
enum class PowKind : int { Identity, Square, Cube, Sqrt, Rsqrt, Reciprocal, ReciprocalSquare, General };

__global__ void pow_scalar_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n, PowKind kind,
                                  float p) {   // y (n), x (n)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = x[i];
    float o;
    switch (kind) {
      case PowKind::Identity: o = v; break;
      case PowKind::Square: o = __fmul_rn(v, v); break;
      case PowKind::Cube: o = __fmul_rn(__fmul_rn(v, v), v); break;
      case PowKind::Sqrt: o = __fsqrt_rn(v); break;
      case PowKind::Rsqrt: o = __fdiv_rn(1.0f, __fsqrt_rn(v)); break;
      case PowKind::Reciprocal: o = __fdiv_rn(1.0f, v); break;
      case PowKind::ReciprocalSquare: o = __fdiv_rn(1.0f, __fmul_rn(v, v)); break;
      default: o = powf(v, p); break;
    }
    y[i] = o;
  }
}

// ------------------------------------------------------------------------------------------------ where
// out = cond != 0 ? a : b over up to kMaxDims axes, three strided inputs (2 KB of kernel parameters).
struct WhereLayout {
  int ndim;
  int64_t shape[kMaxDims], cs[kMaxDims], as[kMaxDims], bs[kMaxDims];
};

template <typename C>
__global__ void where_1d_kernel(float* __restrict__ out, const C* __restrict__ cond, const float* __restrict__ a,
                                const float* __restrict__ b, int64_t n, int64_t cs, int64_t as, int64_t bs) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = cond[i * cs] != 0 ? a[i * as] : b[i * bs];
}

template <typename C>
__global__ void where_nd_kernel(float* __restrict__ out, const C* __restrict__ cond, const float* __restrict__ a,
                                const float* __restrict__ b, int64_t n, const WhereLayout L) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    int64_t r = i, co = 0, ao = 0, bo = 0;
    for (int d = L.ndim - 1; d >= 0; d--) {
      const int64_t c = r % L.shape[d];
      r /= L.shape[d];
      co += c * L.cs[d];
      ao += c * L.as[d];
      bo += c * L.bs[d];
    }
    out[i] = cond[co] != 0 ? a[ao] : b[bo];
  }
}

}  // namespace

// -------------------------------------------------------------------------------------------- launchers
void unary_forward(float* y, const float* x, int64_t n, UnaryOp op) {   // y (n), x (n)
  if (n <= 0) return;
  unary_forward_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(y, x, n, op);
  CUDA_CHECK_LAUNCH("unary_forward");
}

void unary_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n, UnaryOp op) {
  if (n <= 0) return;   // dx, dy, x, y (n)
  unary_backward_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(dx, dy, x, y, n, op);
  CUDA_CHECK_LAUNCH("unary_backward");
}

void affine(float* y, const float* x, int64_t n, float scale, float shift) {   // y (n), x (n)
  if (n <= 0) return;
  affine_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(y, x, n, scale, shift);
  CUDA_CHECK_LAUNCH("affine");
}

void binary_forward(float* out, const float* a, const float* b, int ndim, const int64_t* shape,
                    const int64_t* astride, const int64_t* bstride, BinaryOp op) {   // out (shape)
  if (ndim < 0 || ndim > kMaxDims)
    throw std::invalid_argument("modalab cuda: binary_forward: " + std::to_string(ndim) + " axes (at most " +
                                std::to_string(kMaxDims) + ")");
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  if (n <= 0) return;
  // Drop size-1 axes, then merge an axis into the one inside it when both inputs step through them as one.
  Layout L{};
  for (int d = ndim - 1; d >= 0; d--) {   // innermost first; reversed below
    if (shape[d] == 1) continue;
    if (L.ndim > 0) {
      const int k = L.ndim - 1;
      if (astride[d] == L.as[k] * L.shape[k] && bstride[d] == L.bs[k] * L.shape[k]) {
        L.shape[k] *= shape[d];
        continue;
      }
    }
    L.shape[L.ndim] = shape[d];
    L.as[L.ndim] = astride[d];
    L.bs[L.ndim] = bstride[d];
    L.ndim++;
  }
  if (L.ndim <= 1) {
    const int64_t as = L.ndim ? L.as[0] : 0, bs = L.ndim ? L.bs[0] : 0;
    binary_1d_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, a, b, n, as, bs, op);
    CUDA_CHECK_LAUNCH("binary_forward");
    return;
  }
  for (int i = 0, j = L.ndim - 1; i < j; i++, j--) {   // outermost first, as the kernel unravels
    std::swap(L.shape[i], L.shape[j]);
    std::swap(L.as[i], L.as[j]);
    std::swap(L.bs[i], L.bs[j]);
  }
  binary_nd_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, a, b, n, L, op);
  CUDA_CHECK_LAUNCH("binary_forward");
}

void pow_scalar(float* y, const float* x, int64_t n, float p) {   // y (n) = x (n) ^ p
  if (n <= 0) return;
  const PowKind kind = p == 1.0f    ? PowKind::Identity
                       : p == 2.0f  ? PowKind::Square
                       : p == 3.0f  ? PowKind::Cube
                       : p == 0.5f  ? PowKind::Sqrt
                       : p == -0.5f ? PowKind::Rsqrt
                       : p == -1.0f ? PowKind::Reciprocal
                       : p == -2.0f ? PowKind::ReciprocalSquare
                                    : PowKind::General;
  pow_scalar_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(y, x, n, kind, p);
  CUDA_CHECK_LAUNCH("pow_scalar");
}

void where_forward(float* out, const void* cond, bool cond_i32, const float* a, const float* b, int ndim,
                   const int64_t* shape, const int64_t* cstride, const int64_t* astride,
                   const int64_t* bstride) {   // out (shape)
  if (ndim < 0 || ndim > kMaxDims)
    throw std::invalid_argument("modalab cuda: where_forward: " + std::to_string(ndim) + " axes (at most " +
                                std::to_string(kMaxDims) + ")");
  int64_t n = 1;
  for (int d = 0; d < ndim; d++) n *= shape[d];
  if (n <= 0) return;
  // As binary_forward: drop size-1 axes, merge an axis into the one inside it when all three inputs step
  // through them as one.
  WhereLayout L{};
  for (int d = ndim - 1; d >= 0; d--) {   // innermost first; reversed below
    if (shape[d] == 1) continue;
    if (L.ndim > 0) {
      const int k = L.ndim - 1;
      if (cstride[d] == L.cs[k] * L.shape[k] && astride[d] == L.as[k] * L.shape[k] &&
          bstride[d] == L.bs[k] * L.shape[k]) {
        L.shape[k] *= shape[d];
        continue;
      }
    }
    L.shape[L.ndim] = shape[d];
    L.cs[L.ndim] = cstride[d];
    L.as[L.ndim] = astride[d];
    L.bs[L.ndim] = bstride[d];
    L.ndim++;
  }
  const unsigned grid = grid_for(n, 256);
  if (L.ndim <= 1) {
    const int64_t cs = L.ndim ? L.cs[0] : 0, as = L.ndim ? L.as[0] : 0, bs = L.ndim ? L.bs[0] : 0;
    if (cond_i32)
      where_1d_kernel<int32_t><<<grid, 256, 0, stream()>>>(out, static_cast<const int32_t*>(cond), a, b, n, cs, as, bs);
    else
      where_1d_kernel<float><<<grid, 256, 0, stream()>>>(out, static_cast<const float*>(cond), a, b, n, cs, as, bs);
    CUDA_CHECK_LAUNCH("where_forward");
    return;
  }
  for (int i = 0, j = L.ndim - 1; i < j; i++, j--) {   // outermost first, as the kernel unravels
    std::swap(L.shape[i], L.shape[j]);
    std::swap(L.cs[i], L.cs[j]);
    std::swap(L.as[i], L.as[j]);
    std::swap(L.bs[i], L.bs[j]);
  }
  if (cond_i32)
    where_nd_kernel<int32_t><<<grid, 256, 0, stream()>>>(out, static_cast<const int32_t*>(cond), a, b, n, L);
  else
    where_nd_kernel<float><<<grid, 256, 0, stream()>>>(out, static_cast<const float*>(cond), a, b, n, L);
  CUDA_CHECK_LAUNCH("where_forward");
}

}  // namespace cuda
}  // namespace modalab
