// Indexing kernels: embedding, forward beside backward.
//
// The forward checks every index before writing anything (one small kernel, then a read-back that synchronises)
// and returns the position of the first bad one, or -1; a bad index leaves y untouched, as on the CPU.
// The backward accumulates (+=) into dtable and skips indices outside [0, V). It adds with atomics, so when a
// token repeats in the batch the order of the additions into its row, and so the last bit, can vary from run to
// run (the CPU's is fixed). A sorted, segmented version would make it deterministic; it is not written yet.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

__global__ void check_indices_kernel(const int32_t* __restrict__ idx, int64_t n, int64_t bound,
                                     unsigned long long* first_bad) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (idx[i] < 0 || idx[i] >= bound) atomicMin(first_bad, static_cast<unsigned long long>(i));
}

// y (n, C) = table (V, C)[idx]: flat over (n, C), so each row's copy is a coalesced sweep.
__global__ void embedding_forward_kernel(float* __restrict__ y, const float* __restrict__ table,
                                         const int32_t* __restrict__ idx, int64_t n, int64_t C) {
  const int64_t total = n * C;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / C, c = k % C;
    y[k] = table[static_cast<int64_t>(idx[r]) * C + c];
  }
}

__global__ void embedding_backward_kernel(float* dtable, const float* __restrict__ dy, const int32_t* __restrict__ idx,
                                          int64_t n, int64_t V, int64_t C) {
  const int64_t total = n * C;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / C, c = k % C;
    const int64_t v = idx[r];
    if (v < 0 || v >= V) continue;
    atomicAdd(dtable + v * C + c, dy[k]);
  }
}

}  // namespace

int64_t embedding_forward(float* y, const float* table, const int32_t* idx, int64_t n, int64_t V, int64_t C) {
  if (n <= 0) return -1;   // y (n, C), table (V, C), idx (n)
  unsigned long long* flag = bad_flag(static_cast<unsigned long long>(n));
  check_indices_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(idx, n, V, flag);
  CUDA_CHECK_LAUNCH("embedding_forward (index check)");
  const int64_t bad = read_first_bad(n);
  if (bad >= 0 || C <= 0) return bad;
  embedding_forward_kernel<<<grid_for(n * C, 256), 256, 0, stream()>>>(y, table, idx, n, C);
  CUDA_CHECK_LAUNCH("embedding_forward");
  return -1;
}

void embedding_backward(float* dtable, const float* dy, const int32_t* idx, int64_t n, int64_t V, int64_t C) {
  if (n <= 0 || C <= 0) return;   // dtable (V, C) +=; dy (n, C); idx (n)
  embedding_backward_kernel<<<grid_for(n * C, 256), 256, 0, stream()>>>(dtable, dy, idx, n, V, C);
  CUDA_CHECK_LAUNCH("embedding_backward");
}

}  // namespace cuda
}  // namespace modalab
