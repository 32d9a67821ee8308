// Optimizer updates: AdamW, SGD with momentum, and the in-place helpers (gradient scaling, accumulation).
//
// Every function updates its first arguments in place (p, m, v, buf, x) element by element, so the result
// never depends on the thread count. The arithmetic follows PyTorch's single-tensor code paths
// (torch/optim/adam.py `_single_tensor_adam` with decoupled weight decay, torch/optim/sgd.py
// `_single_tensor_sgd`) operation by operation, in float32, so that a run can be compared step by step with
// PyTorch fixtures: scalar coefficients are formed in double (as Python does) and rounded once to float.
#include <cmath>

#include "modalab/kernels.h"
#include "parallel.h"

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrainElems = 32768;  // elements per task; a smaller call runs inline with no threads

// torch.lerp(a, b, w): from whichever end is nearer, which keeps the result exact at w = 0 and w = 1.
inline float lerp(float a, float b, float w) {
  return std::fabs(w) < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

}  // namespace

void adamw_step(float* p,        // (n) parameters, updated
                float* m,        // (n) first moment, updated
                float* v,        // (n) second moment, updated
                const float* g,  // (n) gradient
                int64_t n, double lr, double beta1, double beta2, double eps, double weight_decay, double bias_c1,
                double bias_c2) {
  // Decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Alg. 2 line 12):
  // p is shrunk by (1 - lr wd) before the Adam step and the decay never enters the moments.
  const float decay = static_cast<float>(1.0 - lr * weight_decay);
  const float w1 = static_cast<float>(1.0 - beta1);
  const float w2 = static_cast<float>(1.0 - beta2);
  const float b2 = static_cast<float>(beta2);
  const float epsf = static_cast<float>(eps);
  // step = lr / (1 - beta1^t); denom = sqrt(v) / sqrt(1 - beta2^t) + eps (PyTorch's order, eps outside).
  const float step_size = static_cast<float>(lr / bias_c1);
  const float bc2_sqrt = static_cast<float>(std::sqrt(bias_c2));
  const bool decays = weight_decay != 0.0;
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float gi = g[i];
      float pi = decays ? p[i] * decay : p[i];
      float mi = lerp(m[i], gi, w1);             // m = beta1 m + (1 - beta1) g
      float vi = v[i] * b2 + w2 * gi * gi;    // v = beta2 v + (1 - beta2) g^2
      float denom = std::sqrt(vi) / bc2_sqrt + epsf;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi + -step_size * (mi / denom);
    }
  });
}

void sgd_step(float* p,        // (n) parameters, updated
              float* buf,      // (n) momentum buffer, updated; may be null when momentum == 0
              const float* g,  // (n) gradient
              int64_t n, double lr, double momentum, double dampening, double weight_decay, bool nesterov,
              bool first_step) {
  // As in PyTorch, momentum == 0 means plain SGD: the buffer (and dampening) plays no part and is not touched.
  const bool use_buf = buf != nullptr && momentum != 0.0;
  const bool decays = weight_decay != 0.0;
  const float damp = static_cast<float>(1.0 - dampening);
  const float mom = static_cast<float>(momentum);
  const float wd = static_cast<float>(weight_decay);
  const float lrf = static_cast<float>(lr);
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float gi = decays ? g[i] + wd * p[i] : g[i];  // L2 penalty, coupled (PyTorch's SGD)
      float d = gi;
      if (use_buf) {
        float bi = first_step ? gi : buf[i] * mom + damp * gi;
        buf[i] = bi;
        d = nesterov ? gi + mom * bi : bi;
      }
      p[i] = p[i] + -lrf * d;
    }
  });
}

void scale_inplace(float* x,  // (n)
                   int64_t n, float s) {
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) x[i] *= s;
  });
}

void add_inplace(float* x,        // (n), x += alpha * y
                 const float* y,  // (n)
                 int64_t n, float alpha) {
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) x[i] += alpha * y[i];
  });
}

}  // namespace cpu
}  // namespace modalab
