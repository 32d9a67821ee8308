// Softmax and logSoftmax over the middle axis of x (outer, len, inner), forward beside backward.
//
// Both directions overwrite their outputs (y, dx). Every softmax row (one (o, i) pair) is computed by one
// thread from start to end, so the result never depends on the thread count. Stability: the row max is
// subtracted before exp, so exp never overflows; a row of all -inf gives (-inf) - (-inf) = NaN, which spreads
// to the whole row, as in PyTorch. Row sums are accumulated in double (rows of 50k logits would drift in float).
//
// Two layouts:
//   inner == 1   contiguous rows: one row per task, with 8-lane max/sum so that the loops vectorise.
//   inner  > 1   strided rows: a tile of up to kTile neighbouring columns walks the axis together, so every
//                load is a contiguous run of kTile floats instead of a stride-`inner` gather.
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
constexpr int64_t kTile = 64;           // columns walked together on a strided axis
constexpr int64_t kChunk = 256;         // scratch length for logSoftmax's exp pass
constexpr float kNegInf = -std::numeric_limits<float>::infinity();


double row_dot(const float* a, const float* b, int64_t n) {  // a, b (n)
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) s[k] += a[j + k] * b[j + k];
  double r = 0;
  for (; j < n; j++) r += a[j] * b[j];
  return r + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

// sum_j exp(x[j] - m) in double, through a small scratch buffer so that the exp loop vectorises on its own.
double row_sum_exp(const float* x, int64_t n, float m) {  // x (n)
  float tmp[kChunk];
  double s = 0;
  for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
    int64_t w = n - j0 < kChunk ? n - j0 : kChunk;
    for (int64_t j = 0; j < w; j++) tmp[j] = vexp(x[j0 + j] - m);
    s += row_sum(tmp, w);
  }
  return s;
}

// ---------------------------------------------------------------------------------------- contiguous rows

void forward_row(float* y, const float* x, int64_t n, bool log) {  // y, x (n)
  float m = row_max(x, n);
  if (log) {
    // logSoftmax = (x - max) - log(sum exp(x - max)), in PyTorch's order.
    float ls = static_cast<float>(std::log(row_sum_exp(x, n, m)));
    for (int64_t j = 0; j < n; j++) y[j] = (x[j] - m) - ls;
  } else {
    for (int64_t j = 0; j < n; j++) y[j] = vexp(x[j] - m);
    float inv = static_cast<float>(1.0 / row_sum(y, n));
    for (int64_t j = 0; j < n; j++) y[j] *= inv;
  }
}

void backward_row(float* dx, const float* dy, const float* y, int64_t n, bool log) {  // dx, dy, y (n)
  if (log) {
    // y = x - lse: dx = dy - softmax * sum(dy), softmax = exp(y).
    float s = static_cast<float>(row_sum(dy, n));
    for (int64_t j = 0; j < n; j++) dx[j] = dy[j] - vexp(y[j]) * s;
  } else {
    // dx = y * (dy - <dy, y>): the Jacobian diag(y) - y y^T applied to dy.
    float d = static_cast<float>(row_dot(dy, y, n));
    for (int64_t j = 0; j < n; j++) dx[j] = y[j] * (dy[j] - d);
  }
}

// ---------------------------------------------------------------------------------------- strided rows
// One tile: columns [i0, i0 + w) of block o; every pointer below points at (o, 0, i0) and steps by `inner`.

void forward_tile(float* y, const float* x, int64_t len, int64_t inner, int64_t w, bool log) {
  float m[kTile];
  double s[kTile];
  for (int64_t k = 0; k < w; k++) { m[k] = kNegInf; s[k] = 0; }
  for (int64_t l = 0; l < len; l++) {
    const float* xr = x + l * inner;
    for (int64_t k = 0; k < w; k++) m[k] = xr[k] > m[k] ? xr[k] : m[k];
  }
  if (log) {
    for (int64_t l = 0; l < len; l++) {
      const float* xr = x + l * inner;
      for (int64_t k = 0; k < w; k++) s[k] += vexp(xr[k] - m[k]);
    }
    float ls[kTile];
    for (int64_t k = 0; k < w; k++) ls[k] = static_cast<float>(std::log(s[k]));
    for (int64_t l = 0; l < len; l++) {
      const float* xr = x + l * inner;
      float* yr = y + l * inner;
      for (int64_t k = 0; k < w; k++) yr[k] = (xr[k] - m[k]) - ls[k];
    }
  } else {
    for (int64_t l = 0; l < len; l++) {
      const float* xr = x + l * inner;
      float* yr = y + l * inner;
      for (int64_t k = 0; k < w; k++) {
        float e = vexp(xr[k] - m[k]);
        yr[k] = e;
        s[k] += e;
      }
    }
    float inv[kTile];
    for (int64_t k = 0; k < w; k++) inv[k] = static_cast<float>(1.0 / s[k]);
    for (int64_t l = 0; l < len; l++) {
      float* yr = y + l * inner;
      for (int64_t k = 0; k < w; k++) yr[k] *= inv[k];
    }
  }
}

void backward_tile(float* dx, const float* dy, const float* y, int64_t len, int64_t inner, int64_t w, bool log) {
  double s[kTile];
  for (int64_t k = 0; k < w; k++) s[k] = 0;
  for (int64_t l = 0; l < len; l++) {
    const float* dyr = dy + l * inner;
    const float* yr = y + l * inner;
    if (log)
      for (int64_t k = 0; k < w; k++) s[k] += dyr[k];
    else
      for (int64_t k = 0; k < w; k++) s[k] += dyr[k] * yr[k];
  }
  float sf[kTile];
  for (int64_t k = 0; k < w; k++) sf[k] = static_cast<float>(s[k]);
  for (int64_t l = 0; l < len; l++) {
    const float* dyr = dy + l * inner;
    const float* yr = y + l * inner;
    float* dxr = dx + l * inner;
    if (log)
      for (int64_t k = 0; k < w; k++) dxr[k] = dyr[k] - vexp(yr[k]) * sf[k];
    else
      for (int64_t k = 0; k < w; k++) dxr[k] = yr[k] * (dyr[k] - sf[k]);
  }
}

// Run fn_row on every contiguous row, or fn_tile on every (o, column tile), in parallel.
template <typename Row, typename Tile>
void for_each_row(int64_t outer, int64_t len, int64_t inner, Row fn_row, Tile fn_tile) {
  if (outer == 0 || len == 0 || inner == 0) return;
  if (inner == 1) {
    int64_t grain = kGrainElems / len > 1 ? kGrainElems / len : 1;
    parallel_for(outer, grain, [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; o++) fn_row(o * len);
    });
    return;
  }
  int64_t tiles = (inner + kTile - 1) / kTile;
  int64_t per_task = len * (inner < kTile ? inner : kTile);
  int64_t grain = kGrainElems / per_task > 1 ? kGrainElems / per_task : 1;
  parallel_for(outer * tiles, grain, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / tiles, i0 = (t % tiles) * kTile;
      int64_t w = inner - i0 < kTile ? inner - i0 : kTile;
      fn_tile(o * len * inner + i0, w);
    }
  });
}

}  // namespace

void softmax_forward(float* y,         // (outer, len, inner)
                     const float* x,   // (outer, len, inner)
                     int64_t outer, int64_t len, int64_t inner, bool log) {
  for_each_row(
      outer, len, inner, [&](int64_t off) { forward_row(y + off, x + off, len, log); },
      [&](int64_t off, int64_t w) { forward_tile(y + off, x + off, len, inner, w, log); });
}

void softmax_backward(float* dx,         // (outer, len, inner)
                      const float* dy,   // (outer, len, inner)
                      const float* y,    // (outer, len, inner), the forward's output
                      int64_t outer, int64_t len, int64_t inner, bool log) {
  for_each_row(
      outer, len, inner, [&](int64_t off) { backward_row(dx + off, dy + off, y + off, len, log); },
      [&](int64_t off, int64_t w) { backward_tile(dx + off, dy + off, y + off, len, inner, w, log); });
}

}  // namespace cpu
}  // namespace modalab
