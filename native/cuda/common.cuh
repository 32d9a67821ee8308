// Helpers shared by the CUDA kernel files: error checks that throw, the backend's stream, grid sizing, and the
// warp/block reductions the row kernels use. Internal to native/cuda (the public header is modalab/cuda.h).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "modalab/cuda.h"

namespace modalab {
namespace cuda {

// Throws std::runtime_error("modalab cuda: <what>: <error string>"); clears the sticky-free error state first so
// that one failed call does not poison the next check.
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);

#define CUDA_CHECK(call, what)                                                   \
  do {                                                                           \
    cudaError_t err_ = (call);                                                   \
    if (err_ != cudaSuccess) ::modalab::cuda::throw_cuda_error(err_, what, __FILE__, __LINE__); \
  } while (0)

// After a <<<...>>> launch: a bad configuration is reported by cudaGetLastError, with the kernel's name.
#define CUDA_CHECK_LAUNCH(name) CUDA_CHECK(cudaGetLastError(), name)

// The one stream every kernel and copy of the backend runs on (created on first use, non-blocking).
cudaStream_t stream();
// Multiprocessor count of the current device (cached).
int sm_count();

// Blocks for a grid-stride loop over n items with `threads` per block: enough to fill the device several times
// over, never more than the work needs.
inline unsigned grid_for(int64_t n, int threads) {
  int64_t want = (n + threads - 1) / threads;
  int64_t cap = static_cast<int64_t>(sm_count()) * 32;
  if (want > cap) want = cap;
  return static_cast<unsigned>(want < 1 ? 1 : want);
}

// The widest unit (16, 8, 4 or 2 bytes) that divides every value given: byte counts, byte strides and addresses
// of a copy of 2-byte-aligned elements, so that it can move uint4 / uint2 / uint32_t / uint16_t words.
inline int copy_unit(std::initializer_list<int64_t> bytes) {
  uint64_t all = 0;
  for (int64_t b : bytes) all |= static_cast<uint64_t>(b);
  return (all & 15) == 0 ? 16 : (all & 7) == 0 ? 8 : (all & 3) == 0 ? 4 : 2;
}

// A small device scratch value used by the kernels that report the first bad position: set to `init`,
// atomically min'd by the kernel, read back by read_first_bad (which synchronises). Not reentrant: the backend
// is single-stream and the bindings call it from one thread.
unsigned long long* bad_flag(unsigned long long init);
int64_t read_first_bad(int64_t none);

// --------------------------------------------------------------------------------------------- reductions
template <typename T>
struct SumOp {
  __device__ __forceinline__ T operator()(T a, T b) const { return a + b; }
};
template <typename T>
struct MaxOp {   // fmaxf would drop NaN; `a > b || a != a` keeps it, as the CPU's row max does via its sum
  __device__ __forceinline__ T operator()(T a, T b) const { return (a > b || a != a) ? a : b; }
};

template <typename T, typename Op>
__device__ __forceinline__ T warp_reduce(T v, Op op) {
  // Butterfly: every lane ends with the same value, combined in the same order: deterministic.
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Reduce over a group of G threads (G = 32: one warp; G > 32: the whole block, G == blockDim.x). Every thread of
// the group gets the result. scratch: __shared__ T[32], used only when G > 32. Must be called by every thread
// of the block when G > 32 (it synchronises).
template <int G, typename T, typename Op>
__device__ __forceinline__ T group_reduce(T v, Op op, T* scratch) {
  v = warp_reduce(v, op);
  if (G <= 32) return v;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();   // the previous call's readers are done with scratch
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  T r = scratch[0];
#pragma unroll
  for (int w = 1; w < G / 32; w++) r = op(r, scratch[w]);
  return r;
}

}  // namespace cuda
}  // namespace modalab
