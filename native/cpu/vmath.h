// Vectorisable scalar math shared by the CPU kernels: written so that g++ -O3 turns the loops that call it into
// SIMD code (libm's expf is a scalar call and stops vectorisation). Include only from native/cpu.
#pragma once
#include <cstdint>
#include <cstring>

namespace modalab {
namespace cpu {

// exp(x) in a form the compiler vectorises (std::exp is a scalar libm call). Cody-Waite reduction x = n ln2 + r,
// |r| <= ln2/2, then Cephes' degree-6 polynomial for exp(r): within 1.2e-7 relative of exp over the normal
// range. 2^n is applied as two factors 2^(n/2) 2^(n - n/2) so that results fall smoothly into the subnormals.
// Edges: x < -103.9 (and -inf) give exactly 0 as float exp does, x > 88.72 (and +inf) give +inf, NaN stays NaN
// (it passes both clamps, which only replace values that compare beyond them). No branches, no libm calls.
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

// Max of a contiguous row in 8 lanes. NaN is skipped here; callers let it reach the output through exp(NaN - max).
inline float row_max(const float* x, int64_t n) {  // x (n)
  const float neg_inf = -__builtin_inff();
  float m[8];
  for (float& v : m) v = neg_inf;
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) m[k] = x[j + k] > m[k] ? x[j + k] : m[k];
  float r = neg_inf;
  for (; j < n; j++) r = x[j] > r ? x[j] : r;
  for (float v : m) r = v > r ? v : r;
  return r;
}

// Sum of a contiguous row in 8 double lanes, combined in a fixed order (the same result for any chunking).
inline double row_sum(const float* x, int64_t n) {  // x (n)
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) s[k] += x[j + k];
  double r = 0;
  for (; j < n; j++) r += x[j];
  return r + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

}  // namespace cpu
}  // namespace modalab
