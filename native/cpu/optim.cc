// Optimizer updates: AdamW, SGD with momentum, and the in-place helpers (gradient scaling, accumulation).
//
// Every function updates its first arguments in place (p, m, v, buf, x) element by element, so the result
// never depends on the thread count. The arithmetic follows PyTorch's single-tensor code paths
// (torch/optim/adam.py `_single_tensor_adam` with decoupled weight decay, torch/optim/sgd.py
// `_single_tensor_sgd`) operation by operation, in float32, so that a run can be compared step by step with
// PyTorch fixtures: scalar coefficients are formed in double (as Python does) and rounded once to float.
#include <cmath>
#include <cstdio>
#include <cstdlib>

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

// 1 - beta as PyTorch forms it: from the double the user wrote, not from its float rounding. The contract passes
// beta as float, and 1 - 0.999f is 0.000999987, 1.3e-5 away from 0.001: enough to fail a 1e-5 comparison of
// exp_avg_sq with PyTorch. The shortest decimal that reads back as the same float is the number the user wrote
// whenever it had at most 9 significant digits (0.9, 0.95, 0.999, 0.9999 ...), so it is used instead.
float one_minus(float beta) {
  // A few remembered answers: every parameter tensor of a step asks again with the same betas.
  thread_local float seen[4] = {std::nanf(""), std::nanf(""), std::nanf(""), std::nanf("")};
  thread_local float answer[4];
  thread_local int next = 0;
  for (int k = 0; k < 4; k++)
    if (seen[k] == beta) return answer[k];
  double d = beta;
  char buf[32];
  for (int digits = 1; digits <= 9; digits++) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, static_cast<double>(beta));
    double parsed = std::strtod(buf, nullptr);
    if (static_cast<float>(parsed) == beta) {
      d = parsed;
      break;
    }
  }
  seen[next] = beta;
  answer[next] = static_cast<float>(1.0 - d);
  float r = answer[next];
  next = (next + 1) % 4;
  return r;
}

}  // namespace

void adamw_step(float* p,        // (n) parameters, updated
                float* m,        // (n) first moment, updated
                float* v,        // (n) second moment, updated
                const float* g,  // (n) gradient
                int64_t n, float lr, float beta1, float beta2, float eps, float weight_decay, float bias_c1,
                float bias_c2) {
  // Decoupled weight decay (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", Alg. 2 line 12):
  // p is shrunk by (1 - lr wd) before the Adam step and the decay never enters the moments.
  const float decay = static_cast<float>(1.0 - static_cast<double>(lr) * static_cast<double>(weight_decay));
  const float w1 = one_minus(beta1);
  const float w2 = one_minus(beta2);
  // step = lr / (1 - beta1^t); denom = sqrt(v) / sqrt(1 - beta2^t) + eps (PyTorch's order, eps outside).
  const float step_size = static_cast<float>(static_cast<double>(lr) / static_cast<double>(bias_c1));
  const float bc2_sqrt = static_cast<float>(std::sqrt(static_cast<double>(bias_c2)));
  const bool decays = weight_decay != 0.0f;
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float gi = g[i];
      float pi = decays ? p[i] * decay : p[i];
      float mi = lerp(m[i], gi, w1);             // m = beta1 m + (1 - beta1) g
      float vi = v[i] * beta2 + w2 * gi * gi;    // v = beta2 v + (1 - beta2) g^2
      float denom = std::sqrt(vi) / bc2_sqrt + eps;
      m[i] = mi;
      v[i] = vi;
      p[i] = pi + -step_size * (mi / denom);
    }
  });
}

void sgd_step(float* p,        // (n) parameters, updated
              float* buf,      // (n) momentum buffer, updated; may be null when momentum == 0
              const float* g,  // (n) gradient
              int64_t n, float lr, float momentum, float dampening, float weight_decay, bool nesterov,
              bool first_step) {
  // As in PyTorch, momentum == 0 means plain SGD: the buffer (and dampening) plays no part and is not touched.
  const bool use_buf = buf != nullptr && momentum != 0.0f;
  const bool decays = weight_decay != 0.0f;
  const float damp = one_minus(dampening);
  parallel_for(n, kGrainElems, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) {
      float gi = decays ? g[i] + weight_decay * p[i] : g[i];  // L2 penalty, coupled (PyTorch's SGD)
      float d = gi;
      if (use_buf) {
        float bi = first_step ? gi : buf[i] * momentum + damp * gi;
        buf[i] = bi;
        d = nesterov ? gi + momentum * bi : bi;
      }
      p[i] = p[i] + -lr * d;
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
