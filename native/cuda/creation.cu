// Creation kernels: fills and ranges. (Random numbers are in random.cu.)
//
// Fills: one launch, 16-byte stores over the aligned body, single stores for the (at most 3 + 3) elements before
// and after it, since a tensor at an element offset need not start 16-byte aligned. fill_f32 and fill_i32 are the
// same kernel on 32-bit words.
// Ranges: arange_f32 is start + i * step in double, rounded once to f32 (the CPU's and torch.arange's float32
// result); the product and the sum are rounded separately (__dmul_rn / __dadd_rn: nvcc would otherwise fuse them
// into one fma, which rounds once and can differ from the CPU in the last bit). arange_i32 wraps modulo 2^32 like
// the CPU.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

template <typename T, typename T4>
__global__ void fill_kernel(T* out, int64_t n, int64_t head, int64_t n4, T value) {   // out (n)
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  T4* body = reinterpret_cast<T4*>(out + head);   // (n4 * 4), 16-byte aligned
  T4 v;
  v.x = v.y = v.z = v.w = value;
  for (int64_t i = tid; i < n4; i += stride) body[i] = v;
  const int64_t t0 = head + n4 * 4;
  if (tid < head) out[tid] = value;
  if (tid < n - t0) out[t0 + tid] = value;
}

template <typename T, typename T4>
void fill_launch(T* out, int64_t n, T value, const char* name) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  int64_t head = (16 - static_cast<int64_t>(reinterpret_cast<uintptr_t>(out) & 15)) / 4 % 4;
  if (head > n) head = n;
  const int64_t n4 = (n - head) / 4;
  fill_kernel<T, T4><<<grid_for(n4 > 0 ? n4 : 1, kThreads), kThreads, 0, stream()>>>(out, n, head, n4, value);
  CUDA_CHECK_LAUNCH(name);
}

__global__ void arange_f32_kernel(float* __restrict__ out, int64_t n, double start, double step) {   // out (n)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __double2float_rn(__dadd_rn(start, __dmul_rn(static_cast<double>(i), step)));
}

__global__ void arange_i32_kernel(int32_t* __restrict__ out, int64_t n, uint64_t start, uint64_t step) {   // out (n)
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(static_cast<uint32_t>(start + static_cast<uint64_t>(i) * step));
}

}  // namespace

void fill_f32(float* out, int64_t n, float value) {   // out (n)
  fill_launch<float, float4>(out, n, value, "fill_f32");
}

void fill_i32(int32_t* out, int64_t n, int32_t value) {   // out (n)
  fill_launch<int32_t, int4>(out, n, value, "fill_i32");
}

void arange_f32(float* out, int64_t n, double start, double step) {   // out (n)
  if (n <= 0) return;
  arange_f32_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, n, start, step);
  CUDA_CHECK_LAUNCH("arange_f32");
}

void arange_i32(int32_t* out, int64_t n, int64_t start, int64_t step) {   // out (n)
  if (n <= 0) return;
  arange_i32_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, n, static_cast<uint64_t>(start),
                                                            static_cast<uint64_t>(step));
  CUDA_CHECK_LAUNCH("arange_i32");
}

}  // namespace cuda
}  // namespace modalab
