// Softmax and log-softmax over the middle axis of x (outer, len, inner), forward beside backward.
//
//   softmax:     y = exp(x - max) / sum exp(x - max)        dx = y * (dy - sum(dy * y))
//   logSoftmax:  y = x - max - log(sum exp(x - max))        dx = dy - exp(y) * sum(dy)
// The backward overwrites dx.
//
// inner == 1 (the usual case: the last axis): a group of threads per row, a warp when len <= 1024, else a block
// of 512; the row is read once for the max, once for the sum and once to write (the re-reads hit L1/L2 for rows
// of normal length). inner > 1: one thread per (outer, inner) column walking len; neighbouring threads read
// neighbouring columns, so the loads coalesce.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kWarpRowMax = 1024;   // longest row a single warp handles

template <int G>
__global__ void softmax_rows_forward(float* __restrict__ y, const float* __restrict__ x, int64_t rows, int64_t len,
                                     bool log) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;
  const float* xr = x + row * len;
  float* yr = y + row * len;
  float m = -INFINITY;
  for (int64_t j = t; j < len; j += G) m = MaxOp<float>()(xr[j], m);
  m = group_reduce<G>(m, MaxOp<float>(), scratch);
  float s = 0.0f;
  for (int64_t j = t; j < len; j += G) s += expf(xr[j] - m);
  s = group_reduce<G>(s, SumOp<float>(), scratch);
  if (log) {
    const float off = m + logf(s);
    for (int64_t j = t; j < len; j += G) yr[j] = xr[j] - off;
  } else {
    const float inv = 1.0f / s;
    for (int64_t j = t; j < len; j += G) yr[j] = expf(xr[j] - m) * inv;
  }
}

template <int G>
__global__ void softmax_rows_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                      const float* __restrict__ y, int64_t rows, int64_t len, bool log) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;
  const float* dyr = dy + row * len;
  const float* yr = y + row * len;
  float* dxr = dx + row * len;
  float s = 0.0f;
  if (log) {
    for (int64_t j = t; j < len; j += G) s += dyr[j];
  } else {
    for (int64_t j = t; j < len; j += G) s += dyr[j] * yr[j];
  }
  s = group_reduce<G>(s, SumOp<float>(), scratch);
  if (log) {
    for (int64_t j = t; j < len; j += G) dxr[j] = dyr[j] - expf(yr[j]) * s;
  } else {
    for (int64_t j = t; j < len; j += G) dxr[j] = yr[j] * (dyr[j] - s);
  }
}

__global__ void softmax_cols_forward(float* __restrict__ y, const float* __restrict__ x, int64_t outer, int64_t len,
                                     int64_t inner, bool log) {
  const int64_t n = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / inner, i = k % inner;
    const float* xc = x + o * len * inner + i;
    float* yc = y + o * len * inner + i;
    float m = -INFINITY;
    for (int64_t j = 0; j < len; j++) m = MaxOp<float>()(xc[j * inner], m);
    float s = 0.0f;
    for (int64_t j = 0; j < len; j++) s += expf(xc[j * inner] - m);
    if (log) {
      const float off = m + logf(s);
      for (int64_t j = 0; j < len; j++) yc[j * inner] = xc[j * inner] - off;
    } else {
      const float inv = 1.0f / s;
      for (int64_t j = 0; j < len; j++) yc[j * inner] = expf(xc[j * inner] - m) * inv;
    }
  }
}

__global__ void softmax_cols_backward(float* __restrict__ dx, const float* __restrict__ dy,
                                      const float* __restrict__ y, int64_t outer, int64_t len, int64_t inner,
                                      bool log) {
  const int64_t n = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t base = (k / inner) * len * inner + k % inner;
    float s = 0.0f;
    for (int64_t j = 0; j < len; j++) {
      const int64_t e = base + j * inner;
      s += log ? dy[e] : dy[e] * y[e];
    }
    for (int64_t j = 0; j < len; j++) {
      const int64_t e = base + j * inner;
      dx[e] = log ? dy[e] - expf(y[e]) * s : y[e] * (dy[e] - s);
    }
  }
}

}  // namespace

void softmax_forward(float* y, const float* x, int64_t outer, int64_t len, int64_t inner, bool log) {
  if (outer <= 0 || len <= 0 || inner <= 0) return;   // y, x (outer, len, inner)
  if (inner > 1) {
    softmax_cols_forward<<<grid_for(outer * inner, 256), 256, 0, stream()>>>(y, x, outer, len, inner, log);
  } else if (len <= kWarpRowMax) {
    softmax_rows_forward<32><<<static_cast<unsigned>((outer + 7) / 8), 256, 0, stream()>>>(y, x, outer, len, log);
  } else {
    softmax_rows_forward<512><<<static_cast<unsigned>(outer), 512, 0, stream()>>>(y, x, outer, len, log);
  }
  CUDA_CHECK_LAUNCH("softmax_forward");
}

void softmax_backward(float* dx, const float* dy, const float* y, int64_t outer, int64_t len, int64_t inner,
                      bool log) {   // dx, dy, y (outer, len, inner)
  if (outer <= 0 || len <= 0 || inner <= 0) return;
  if (inner > 1) {
    softmax_cols_backward<<<grid_for(outer * inner, 256), 256, 0, stream()>>>(dx, dy, y, outer, len, inner, log);
  } else if (len <= kWarpRowMax) {
    softmax_rows_backward<32><<<static_cast<unsigned>((outer + 7) / 8), 256, 0, stream()>>>(dx, dy, y, outer, len, log);
  } else {
    softmax_rows_backward<512><<<static_cast<unsigned>(outer), 512, 0, stream()>>>(dx, dy, y, outer, len, log);
  }
  CUDA_CHECK_LAUNCH("softmax_backward");
}

}  // namespace cuda
}  // namespace modalab
