// Cross entropy over logits (N, C) with integer targets (N), forward beside backward.
//
// Fused: the forward keeps only lse = log(sum_c exp(x_c)) per row and the backward recomputes the softmax as
// exp(x - lse), so an (N, C) probability matrix never exists (for a 32k vocabulary that matrix is the largest
// buffer of a language-model step). The backward overwrites dlogits.
//
// Label smoothing e follows PyTorch: the target distribution is (1 - e) onehot(t) + e / C, so
//   loss = (1 - e) (lse - x_t) + e (lse - mean_c x_c),   dlogits = dloss (softmax - (1 - e) onehot(t) - e / C).
// Rows whose target is ignore_index give loss 0 and gradient 0. A target outside [0, C) that is not ignored is
// bad user data: the forward reports the first such row (the binding turns it into an Error) and never reads
// x_t for it; the backward never indexes by the target, so a bad one cannot make it read out of bounds.
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>

#include "modalab/kernels.h"
#include "parallel.h"
#include "vmath.h"

// vexp (vmath.h) vectorises because the build passes -fno-trapping-math (CMakeLists.txt says why).

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrainElems = 32768;  // elements per task; a smaller call runs inline with no threads
constexpr int64_t kChunk = 256;         // scratch length for the exp pass
constexpr float kNegInf = -std::numeric_limits<float>::infinity();


// log(sum_c exp(x_c)) = max + log(sum_c exp(x_c - max)), the sum in double.
double row_lse(const float* x, int64_t n) {  // x (n)
  float m = row_max(x, n);
  float tmp[kChunk];
  double s = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    int64_t w = n - j0 < kChunk ? n - j0 : kChunk;
    for (int64_t j = 0; j < w; j++) tmp[j] = vexp(x[j0 + j] - m);
    s += row_sum(tmp, w);
  }
  return static_cast<double>(m) + std::log(s);
}

int64_t grain_rows(int64_t C) { return C > 0 && kGrainElems / C > 1 ? kGrainElems / C : 1; }

}  // namespace

int64_t cross_entropy_forward(float* loss,             // (N)
                              float* lse,              // (N)
                              const float* logits,     // (N, C)
                              const int32_t* targets,  // (N)
                              int64_t N, int64_t C, int32_t ignore_index, float smoothing) {
  // The first bad row over all tasks: each task offers its first, the minimum wins, whatever the scheduling.
  std::atomic<int64_t> first_bad{N};
  const double e = smoothing;
  parallel_for(N, grain_rows(C), [&](int64_t b, int64_t end) {
    int64_t bad = -1;
    for (int64_t n = b; n < end; n++) {
      const float* xr = logits + n * C;
      int32_t t = targets[n];
      double l = row_lse(xr, C);
      lse[n] = static_cast<float>(l);
      if (t == ignore_index) {
        loss[n] = 0.0f;
        continue;
      }
      if (t < 0 || t >= C) {
        loss[n] = std::numeric_limits<float>::quiet_NaN();
        if (bad < 0) bad = n;
        continue;
      }
      double nll = l - static_cast<double>(xr[t]);
      if (e != 0.0) {
        double smooth = l - row_sum(xr, C) / static_cast<double>(C);  // -mean_c log p_c
        loss[n] = static_cast<float>((1.0 - e) * nll + e * smooth);
      } else {
        loss[n] = static_cast<float>(nll);
      }
    }
    if (bad >= 0) {
      int64_t cur = first_bad.load();
      while (bad < cur && !first_bad.compare_exchange_weak(cur, bad)) {
      }
    }
  });
  int64_t r = first_bad.load();
  return r < N ? r : -1;
}

void cross_entropy_backward(float* dlogits,          // (N, C), overwritten
                            const float* dloss,      // (N)
                            const float* logits,     // (N, C)
                            const float* lse,        // (N)
                            const int32_t* targets,  // (N)
                            int64_t N, int64_t C, int32_t ignore_index, float smoothing) {
  const float off = C > 0 ? static_cast<float>(static_cast<double>(smoothing) / static_cast<double>(C)) : 0.0f;
  const float on = 1.0f - smoothing;
  parallel_for(N, grain_rows(C), [&](int64_t b, int64_t end) {
    for (int64_t n = b; n < end; n++) {
      const float* xr = logits + n * C;
      float* dr = dlogits + n * C;
      int32_t t = targets[n];
      if (t == ignore_index) {
        for (int64_t c = 0; c < C; c++) dr[c] = 0.0f;
        continue;
      }
      float g = dloss[n], l = lse[n];
      // softmax_c = exp(x_c - lse), recomputed instead of stored.
      for (int64_t c = 0; c < C; c++) dr[c] = g * (vexp(xr[c] - l) - off);
      if (t >= 0 && t < C) dr[t] = g * ((vexp(xr[t] - l) - off) - on);
    }
  });
}

}  // namespace cpu
}  // namespace modalab
