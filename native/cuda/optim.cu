// Optimizer updates: AdamW, SGD with momentum, and the in-place helpers (scale_inplace, add_inplace). The arithmetic of native/cpu/optim.cc (PyTorch's single-tensor AdamW, operation by
// operation in float32, scalar coefficients formed in double and rounded once), so the two backends agree to the
// last bit where the math library allows. nvcc would fuse a*b+c into one fma, which rounds once instead of twice
// and so differs from the CPU in the last bit; the __fmul_rn/__fadd_rn intrinsics are never fused.
//
// p, m, v (AdamW), p, buf (SGD) and x (the helpers) are updated in place (=). SGD and the helpers take the CPU's
// signature exactly (double hyperparameters, rounded once to float on the host as the CPU does), so they match
// cpu::sgd_step / scale_inplace / add_inplace bit for bit: every product and sum is its own rounding.
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

// torch.lerp(a, b, w): from whichever end is nearer.
__device__ __forceinline__ float lerp_(float a, float b, float w) {
  return fabsf(w) < 0.5f ? __fadd_rn(a, __fmul_rn(w, __fsub_rn(b, a)))
                         : __fsub_rn(b, __fmul_rn(__fsub_rn(b, a), __fsub_rn(1.0f, w)));
}

__global__ void adamw_kernel(float* __restrict__ p, float* __restrict__ m, float* __restrict__ v,
                             const float* __restrict__ g, int64_t n, float beta2, float eps, float decay, bool decays,
                             float w1, float w2, float step_size, float bc2_sqrt) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = g[i];
    const float pi = decays ? __fmul_rn(p[i], decay) : p[i];
    const float mi = lerp_(m[i], gi, w1);                                              // beta1 m + (1 - beta1) g
    const float vi = __fadd_rn(__fmul_rn(v[i], beta2), __fmul_rn(__fmul_rn(w2, gi), gi));   // beta2 v + (1 - beta2) g^2
    const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), bc2_sqrt), eps);
    m[i] = mi;
    v[i] = vi;
    p[i] = __fadd_rn(pi, __fmul_rn(-step_size, __fdiv_rn(mi, denom)));
  }
}

// SGD with momentum (PyTorch's _single_tensor_sgd, as native/cpu/optim.cc): g' = g + wd p; buf = g' on the first
// step, else momentum buf + (1 - dampening) g'; p += -lr (nesterov ? g' + momentum buf : buf), or -lr g' without
// a buffer.
__global__ void sgd_kernel(float* __restrict__ p, float* __restrict__ buf, const float* __restrict__ g, int64_t n,
                           float lr, float mom, float damp, float wd, bool decays, bool use_buf, bool nesterov,
                           bool first_step) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float gi = decays ? __fadd_rn(g[i], __fmul_rn(wd, p[i])) : g[i];
    float d = gi;
    if (use_buf) {
      const float bi = first_step ? gi : __fadd_rn(__fmul_rn(buf[i], mom), __fmul_rn(damp, gi));
      buf[i] = bi;
      d = nesterov ? __fadd_rn(gi, __fmul_rn(mom, bi)) : bi;
    }
    p[i] = __fadd_rn(p[i], __fmul_rn(-lr, d));
  }
}

__global__ void scale_inplace_kernel(float* __restrict__ x, int64_t n, float s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fmul_rn(x[i], s);
}

__global__ void add_inplace_kernel(float* __restrict__ x, const float* __restrict__ y, int64_t n, float alpha) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    x[i] = __fadd_rn(x[i], __fmul_rn(alpha, y[i]));
}

}  // namespace

void adamw_step(float* p, float* m, float* v, const float* g, int64_t n, double lr, double beta1, double beta2,
                double eps, double weight_decay, double bias_c1, double bias_c2) {   // p, m, v, g (n)
  if (n <= 0) return;
  // The CPU's scalars exactly (native/cpu/optim.cc): formed in double, rounded to float once each.
  // Decoupled weight decay (Loshchilov & Hutter, Alg. 2 line 12): p shrinks by (1 - lr wd) before the Adam step.
  const float decay = static_cast<float>(1.0 - lr * weight_decay);
  const float step_size = static_cast<float>(lr / bias_c1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_c2));
  adamw_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(p, m, v, g, n, static_cast<float>(beta2), static_cast<float>(eps),
                                                       decay, weight_decay != 0.0, static_cast<float>(1.0 - beta1),
                                                       static_cast<float>(1.0 - beta2), step_size, bc2_sqrt);
  CUDA_CHECK_LAUNCH("adamw_step");
}

void sgd_step(float* p, float* buf, const float* g, int64_t n, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool first_step) {   // p, buf, g (n); buf may be null
  if (n <= 0) return;
  // As on the CPU (and in PyTorch): momentum 0 means plain SGD; the buffer and dampening play no part.
  const bool use_buf = buf != nullptr && momentum != 0.0;
  sgd_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(p, buf, g, n, static_cast<float>(lr), static_cast<float>(momentum),
                                                     static_cast<float>(1.0 - dampening),
                                                     static_cast<float>(weight_decay), weight_decay != 0.0, use_buf,
                                                     nesterov, first_step);
  CUDA_CHECK_LAUNCH("sgd_step");
}

void scale_inplace(float* x, int64_t n, float s) {   // x (n) *= s
  if (n <= 0) return;
  scale_inplace_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, n, s);
  CUDA_CHECK_LAUNCH("scale_inplace");
}

void add_inplace(float* x, const float* y, int64_t n, float alpha) {   // x (n) += alpha * y (n)
  if (n <= 0) return;
  add_inplace_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(x, y, n, alpha);
  CUDA_CHECK_LAUNCH("add_inplace");
}

}  // namespace cuda
}  // namespace modalab
