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

// GCC turns the clamps in vexp into branches, and then vectorises none of the loops that call it, unless it may
// assume that float compares do not trap. modalab never unmasks floating-point exceptions, so this changes no
// result; it only lets the exp loops run 4 (SSE2) lanes wide. Clang vectorises them as they are.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrainElems = 32768;  // elements per task; a smaller call runs inline with no threads
constexpr int64_t kChunk = 256;         // scratch length for the exp pass
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// exp(x) in a form the compiler vectorises (std::exp is a scalar libm call). Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, then Cephes' degree-6 polynomial for exp(r): within 1.2e-7 relative of exp over the normal
// range. 2^n is applied as two factors 2^(n/2) 2^(n - n/2) so that results fall smoothly into the subnormals.
// Edges: x < -103.9 (and -inf) give exactly 0 as float exp does, x > 88.72 (and +inf) give +inf, NaN stays NaN
// (it passes both clamps, which only replace values that compare beyond them). No branches, no libm calls.
// The same routine as in native/cpu/softmax.cc, kept beside the loops it must inline into.
inline float vexp(float x) {
  float xc = x < -110.0f ? -110.0f : x;
  xc = xc > 89.0f ? 89.0f : xc;
  float t = xc * 1.44269504088896341f + 12582912.0f;  // 1.5 * 2^23: round(x log2 e) lands in the low bits
  float n = t - 12582912.0f;
  int32_t ti;
  std::memcpy(&ti, &t, sizeof ti);
  int32_t ni = ti - 0x4B400000;  // the same n as an integer, read from the bits (no float-to-int cast of a NaN)
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t n1 = ni >> 1, n2 = ni - n1;
  uint32_t b1 = static_cast<uint32_t>(n1 + 127) << 23, b2 = static_cast<uint32_t>(n2 + 127) << 23;
  float s1, s2;
  std::memcpy(&s1, &b1, sizeof s1);
  std::memcpy(&s2, &b2, sizeof s2);
  return (p * s1) * s2;
}

float row_max(const float* x, int64_t n) {  // x (n), 8 lanes; NaN reaches the result through the exp sum
  float m[8];
  for (float& v : m) v = kNegInf;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) m[k] = x[j + k] > m[k] ? x[j + k] : m[k];
  float r = kNegInf;
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  for (float v : m) r = v > r ? v : r;
  return r;
}

double row_sum(const float* x, int64_t n) {  // x (n), 8 double lanes combined in a fixed order
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) s[k] += x[j + k];
  double r = 0;
  for (; j < n; j++) r += x[j];
  return r + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

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
