// Indexing kernels: index_select, gather (torch.gather) and embedding, each forward beside its backward.
//
// Forwards check every index before writing anything (one small kernel, then a read-back that synchronises)
// and return the position of the first bad one, or -1; a bad index leaves the output untouched, as on the CPU.
// index_select moves whole slices of `inner` elements as opaque 2- or 4-byte words (elsize) in the widest unit
// that divides them (copy_unit); gather is f32. Forwards are exact copies.
//
// Backwards accumulate (+=) into dx / dtable and skip indices outside the range, as on the CPU.
// - index_select_backward and gather_backward walk columns: one thread per (o, i) adds its contributions in
//   index order (j = 0, 1, ...), which is exactly the CPU's order, so the result is deterministic and the CPU's
//   bits. That walk is serial in nidx (glen), so when there are few columns and a long walk (fewer than
//   kWalkColumns columns and more than kWalkShort indices) one thread per dy element adds with atomics instead:
//   fast, but the order of the additions into one dx element, and so its last bit, can vary run to run.
// - embedding_backward adds with atomics, so when a token repeats in the batch the order of the additions into
//   its row, and so the last bit, can vary from run to run (the CPU's is fixed). A sorted, segmented version
//   would make it deterministic; it is not written yet.
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

// ------------------------------------------------------------------------------------------- index_select
// out (outer, nidx, row units) = x (outer, xlen, row units)[:, idx, :], rows of `upr` units U.
template <typename U>
__global__ void index_select_kernel(U* __restrict__ out, const U* __restrict__ x, const int32_t* __restrict__ idx,
                                    int64_t outer, int64_t xlen, int64_t nidx, int64_t upr) {
  const int64_t total = outer * nidx * upr;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t t = k / upr, u = k % upr, o = t / nidx, j = t % nidx;
    out[k] = x[(o * xlen + idx[j]) * upr + u];
  }
}

template <typename U>
void index_select_as(void* out, const void* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t nidx,
                     int64_t row) {
  const int64_t upr = row / static_cast<int64_t>(sizeof(U));
  index_select_kernel<U><<<grid_for(outer * nidx * upr, 256), 256, 0, stream()>>>(
      static_cast<U*>(out), static_cast<const U*>(x), idx, outer, xlen, nidx, upr);
  CUDA_CHECK_LAUNCH("index_select");
}

// Scatter-adds. A column is (o, i); `walk` indices per column.
constexpr int64_t kWalkColumns = 32768;   // at least this many columns: the deterministic column walk
constexpr int64_t kWalkShort = 64;        // or at most this many indices per column

bool walk_columns(int64_t columns, int64_t walk) { return columns >= kWalkColumns || walk <= kWalkShort; }

// dx (outer, xlen, inner)[o, idx[j], i] += dy (outer, nidx, inner)[o, j, i], j in order, one thread per (o, i).
__global__ void index_select_backward_walk(float* dx, const float* __restrict__ dy, const int32_t* __restrict__ idx,
                                           int64_t outer, int64_t xlen, int64_t inner, int64_t nidx) {
  const int64_t cols = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < cols; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / inner, i = k % inner;
    float* dxo = dx + o * xlen * inner + i;
    const float* dyo = dy + o * nidx * inner + i;
    for (int64_t j = 0; j < nidx; j++) {
      const int64_t r = idx[j];
      if (r < 0 || r >= xlen) continue;
      dxo[r * inner] = __fadd_rn(dxo[r * inner], dyo[j * inner]);
    }
  }
}

__global__ void index_select_backward_atomic(float* dx, const float* __restrict__ dy, const int32_t* __restrict__ idx,
                                             int64_t outer, int64_t xlen, int64_t inner, int64_t nidx) {
  const int64_t total = outer * nidx * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k % inner, t = k / inner, j = t % nidx, o = t / nidx;
    const int64_t r = idx[j];
    if (r < 0 || r >= xlen) continue;
    atomicAdd(dx + (o * xlen + r) * inner + i, dy[k]);
  }
}

// ------------------------------------------------------------------------------------------------ gather
// out (outer, glen, inner)[o, j, i] = x (outer, xlen, inner)[o, idx[o, j, i], i]
__global__ void gather_kernel(float* __restrict__ out, const float* __restrict__ x, const int32_t* __restrict__ idx,
                              int64_t n, int64_t xlen, int64_t inner, int64_t glen) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k % inner, o = k / inner / glen;
    out[k] = x[(o * xlen + idx[k]) * inner + i];
  }
}

// dx[o, idx[o, j, i], i] += dy[o, j, i], j in order, one thread per (o, i).
__global__ void gather_backward_walk(float* dx, const float* __restrict__ dy, const int32_t* __restrict__ idx,
                                     int64_t outer, int64_t xlen, int64_t inner, int64_t glen) {
  const int64_t cols = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < cols; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / inner, i = k % inner;
    float* dxo = dx + o * xlen * inner + i;
    const int64_t base = o * glen * inner + i;
    for (int64_t j = 0; j < glen; j++) {
      const int64_t r = idx[base + j * inner];
      if (r < 0 || r >= xlen) continue;
      dxo[r * inner] = __fadd_rn(dxo[r * inner], dy[base + j * inner]);
    }
  }
}

__global__ void gather_backward_atomic(float* dx, const float* __restrict__ dy, const int32_t* __restrict__ idx,
                                       int64_t n, int64_t xlen, int64_t inner, int64_t glen) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx[k];
    if (r < 0 || r >= xlen) continue;
    const int64_t i = k % inner, o = k / inner / glen;
    atomicAdd(dx + (o * xlen + r) * inner + i, dy[k]);
  }
}

// The first position in idx (n) outside [0, bound), or -1; synchronises. Nothing is launched for n <= 0.
int64_t first_bad_index(const int32_t* idx, int64_t n, int64_t bound, const char* name) {
  if (n <= 0) return -1;
  unsigned long long* flag = bad_flag(static_cast<unsigned long long>(n));
  check_indices_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(idx, n, bound, flag);
  CUDA_CHECK_LAUNCH(name);
  return read_first_bad(n);
}

}  // namespace

int64_t index_select(void* out, const void* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t nidx, int64_t elsize) {   // out (outer, nidx, inner) = x (outer, xlen, inner)[:, idx, :]
  if (elsize != 2 && elsize != 4)
    throw std::invalid_argument("modalab cuda: index_select: element size " + std::to_string(elsize) + " (2 or 4)");
  const int64_t bad = first_bad_index(idx, nidx, xlen, "index_select (index check)");
  if (bad >= 0) return bad;
  const int64_t row = inner * elsize;   // bytes of one selected slice
  if (outer <= 0 || nidx <= 0 || row <= 0) return -1;
  switch (copy_unit({row, reinterpret_cast<intptr_t>(out), reinterpret_cast<intptr_t>(x)})) {
    case 16: index_select_as<uint4>(out, x, idx, outer, xlen, nidx, row); break;
    case 8: index_select_as<uint2>(out, x, idx, outer, xlen, nidx, row); break;
    case 4: index_select_as<uint32_t>(out, x, idx, outer, xlen, nidx, row); break;
    default: index_select_as<uint16_t>(out, x, idx, outer, xlen, nidx, row); break;
  }
  return -1;
}

void index_select_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen,
                           int64_t inner, int64_t nidx) {   // dx (outer, xlen, inner) +=; dy (outer, nidx, inner)
  if (outer <= 0 || nidx <= 0 || inner <= 0) return;
  const int64_t cols = outer * inner;
  if (walk_columns(cols, nidx)) {
    index_select_backward_walk<<<grid_for(cols, 256), 256, 0, stream()>>>(dx, dy, idx, outer, xlen, inner, nidx);
  } else {
    index_select_backward_atomic<<<grid_for(cols * nidx, 256), 256, 0, stream()>>>(dx, dy, idx, outer, xlen, inner,
                                                                                    nidx);
  }
  CUDA_CHECK_LAUNCH("index_select_backward");
}

int64_t gather(float* out, const float* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
               int64_t glen) {   // out, idx (outer, glen, inner); x (outer, xlen, inner)
  const int64_t n = outer * glen * inner;
  const int64_t bad = first_bad_index(idx, n, xlen, "gather (index check)");
  if (bad >= 0 || n <= 0) return bad;
  gather_kernel<<<grid_for(n, 256), 256, 0, stream()>>>(out, x, idx, n, xlen, inner, glen);
  CUDA_CHECK_LAUNCH("gather");
  return -1;
}

void gather_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t glen) {   // dx (outer, xlen, inner) +=; dy, idx (outer, glen, inner)
  if (outer <= 0 || glen <= 0 || inner <= 0) return;
  const int64_t cols = outer * inner;
  if (walk_columns(cols, glen)) {
    gather_backward_walk<<<grid_for(cols, 256), 256, 0, stream()>>>(dx, dy, idx, outer, xlen, inner, glen);
  } else {
    gather_backward_atomic<<<grid_for(cols * glen, 256), 256, 0, stream()>>>(dx, dy, idx, cols * glen, xlen, inner,
                                                                            glen);
  }
  CUDA_CHECK_LAUNCH("gather_backward");
}

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
