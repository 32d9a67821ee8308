// Cross entropy over logits (N, C) with integer targets (N), forward beside backward; the arithmetic of
// native/cpu/loss.cc (read its header for the formulas).
//
// Fused: the forward keeps only lse = log(sum_c exp(x_c)) per row (written for every row, ignored ones too) and
// the backward recomputes softmax as exp(x - lse), so no (N, C) probability matrix exists. The backward
// overwrites dlogits. Rows whose target is ignore_index give loss 0 and gradient 0; a target outside [0, C) that
// is not ignored gives loss NaN, and the forward returns the first such row (it synchronises to read it back).
//
// A group of threads per row: a warp when C <= 1024, else a block of 512 (vocabularies are tens of thousands).
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kWarpRowMax = 1024;

template <int G>
__global__ void cross_entropy_forward_kernel(float* __restrict__ loss, float* __restrict__ lse,
                                             const float* __restrict__ logits, const int32_t* __restrict__ targets,
                                             int64_t N, int64_t C, int32_t ignore_index, float smoothing,
                                             unsigned long long* first_bad) {
  __shared__ double dscratch[32];
  __shared__ float fscratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= N) return;
  const float* xr = logits + row * C;
  float m = -INFINITY;
  for (int64_t j = t; j < C; j += G) m = MaxOp<float>()(xr[j], m);
  m = group_reduce<G>(m, MaxOp<float>(), fscratch);
  double s = 0;
  for (int64_t j = t; j < C; j += G) s += expf(xr[j] - m);
  s = group_reduce<G>(s, SumOp<double>(), dscratch);
  const double l = static_cast<double>(m) + log(s);
  double sx = 0;   // sum_c x_c, for the smoothing term (a uniform branch: every thread of the group agrees)
  if (smoothing != 0.0f) {
    for (int64_t j = t; j < C; j += G) sx += xr[j];
    sx = group_reduce<G>(sx, SumOp<double>(), dscratch);
  }
  if (t != 0) return;
  lse[row] = static_cast<float>(l);
  const int32_t tg = targets[row];
  if (tg == ignore_index) {
    loss[row] = 0.0f;
  } else if (tg < 0 || tg >= C) {
    loss[row] = NAN;
    atomicMin(first_bad, static_cast<unsigned long long>(row));
  } else {
    const double nll = l - static_cast<double>(xr[tg]);
    const double e = smoothing;
    loss[row] = e != 0.0 ? static_cast<float>((1.0 - e) * nll + e * (l - sx / static_cast<double>(C)))
                         : static_cast<float>(nll);
  }
}

// dlogits = dloss (exp(x - lse) - e / C - (1 - e) onehot(t)); 0 on ignored rows.
__global__ void cross_entropy_backward_kernel(float* __restrict__ dlogits, const float* __restrict__ dloss,
                                              const float* __restrict__ logits, const float* __restrict__ lse,
                                              const int32_t* __restrict__ targets, int64_t N, int64_t C,
                                              int32_t ignore_index, float off, float on) {
  // Grid-stride over (N, C): row-major, so neighbouring threads write neighbouring logits.
  const int64_t n = N * C;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / C, c = k % C;
    const int32_t tg = targets[r];
    if (tg == ignore_index) {
      dlogits[k] = 0.0f;
      continue;
    }
    float v = expf(logits[k] - lse[r]) - off;
    if (c == tg) v -= on;
    dlogits[k] = dloss[r] * v;
  }
}

}  // namespace

int64_t cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets, int64_t N,
                              int64_t C, int32_t ignore_index, float smoothing) {   // loss, lse, targets (N)
  if (N <= 0) return -1;                                                            // logits (N, C)
  unsigned long long* flag = bad_flag(static_cast<unsigned long long>(N));
  if (C <= kWarpRowMax) {
    cross_entropy_forward_kernel<32><<<static_cast<unsigned>((N + 7) / 8), 256, 0, stream()>>>(
        loss, lse, logits, targets, N, C, ignore_index, smoothing, flag);
  } else {
    cross_entropy_forward_kernel<512><<<static_cast<unsigned>(N), 512, 0, stream()>>>(
        loss, lse, logits, targets, N, C, ignore_index, smoothing, flag);
  }
  CUDA_CHECK_LAUNCH("cross_entropy_forward");
  return read_first_bad(N);
}

void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t C, int32_t ignore_index, float smoothing) {
  if (N <= 0 || C <= 0) return;   // dlogits, logits (N, C); dloss, lse, targets (N)
  const float off = static_cast<float>(static_cast<double>(smoothing) / static_cast<double>(C));
  const float on = 1.0f - smoothing;
  cross_entropy_backward_kernel<<<grid_for(N * C, 256), 256, 0, stream()>>>(dlogits, dloss, logits, lse, targets, N,
                                                                            C, ignore_index, off, on);
  CUDA_CHECK_LAUNCH("cross_entropy_backward");
}

}  // namespace cuda
}  // namespace modalab
