// Creation kernels: fill. One launch: 16-byte stores over the aligned body, single stores for the (at most 3 +
// 3) elements before and after it, since a tensor at an element offset need not start 16-byte aligned.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

__global__ void fill_f32_kernel(float* out, int64_t n, int64_t head, int64_t n4, float value) {   // out (n)
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  float4* body = reinterpret_cast<float4*>(out + head);   // (n4 * 4), 16-byte aligned
  const float4 v = make_float4(value, value, value, value);
  for (int64_t i = tid; i < n4; i += stride) body[i] = v;
  const int64_t t0 = head + n4 * 4;
  if (tid < head) out[tid] = value;
  if (tid < n - t0) out[t0 + tid] = value;
}

}  // namespace

void fill_f32(float* out, int64_t n, float value) {   // out (n)
  if (n <= 0) return;
  constexpr int T = 256;
  int64_t head = (16 - static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) & 15)) / 4 % 4;
  if (head > n) head = n;
  const int64_t n4 = (n - head) / 4;
  fill_f32_kernel<<<grid_for(n4 > 0 ? n4 : 1, T), T, 0, stream()>>>(out, n, head, n4, value);
  CUDA_CHECK_LAUNCH("fill_f32");
}

}  // namespace cuda
}  // namespace modalab
