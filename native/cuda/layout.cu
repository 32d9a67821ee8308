// Layout kernels: strided copies (permute, transpose, broadcast), slices and their assignment, the slice's
// backward. Elements move as opaque 2- or 4-byte words (elsize), as on the CPU (native/cpu/layout.cc), so every
// copy is exact; any other elsize throws std::invalid_argument. slice_add_backward accumulates (+=) into dx with
// one f32 addition per element, the CPU's; every other function overwrites its output.
//
// copy_strided: axes of size 1 are dropped and neighbours merged where x is contiguous across them (the CPU's
// simplification). Then: one contiguous run is a device-to-device copy; a batch of matrices read transposed (x
// contiguous along out's second-to-last axis) goes through 32 x 32 shared-memory tiles, so that both the reads and
// the writes coalesce; anything else is one thread per output element, unravelling its index over the merged axes.
// Slices (and index_select in indexing.cu) copy rows between two strided layouts in the widest unit (16, 8, 4 or
// 2 bytes) that divides the row, both row strides and both base addresses (copy_unit in common.cuh).
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kMaxDims = 64;   // what the bindings allow (as elementwise.cu)
struct View {                  // 1 KB of kernel parameters
  int ndim;
  int64_t shape[kMaxDims], stride[kMaxDims];
};

// Element offset in x of the first element of outer item m, over the axes [0, nouter) of v.
__device__ __forceinline__ int64_t outer_offset(const View& v, int nouter, int64_t m) {
  int64_t off = 0;
  for (int d = nouter - 1; d >= 0; d--) {
    off += (m % v.shape[d]) * v.stride[d];
    m /= v.shape[d];
  }
  return off;
}

template <typename T>
__global__ void copy_strided_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t total, const View v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = x[outer_offset(v, v.ndim, i)];
}

// out (nmat, R, C)[m, r, c] = x[off(m) + r + c * ls]: x is contiguous along r. Block (32, 8), tile 32 x 33.
constexpr int kTile = 32, kTileRows = 8;
template <typename T>
__global__ void transpose_kernel(T* __restrict__ out, const T* __restrict__ x, int64_t R, int64_t C, int64_t ls,
                                 int64_t nmat, const View v) {
  __shared__ T tile[kTile][kTile + 1];   // tile[c][r]
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t ctiles = (C + kTile - 1) / kTile, rtiles = (R + kTile - 1) / kTile;
  const int64_t tiles = ctiles * rtiles;
  for (int64_t m = blockIdx.z; m < nmat; m += gridDim.z) {
    const T* xm = x + outer_offset(v, v.ndim - 2, m);
    T* om = out + m * R * C;
    for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
      const int64_t c0 = (t % ctiles) * kTile, r0 = (t / ctiles) * kTile;
      __syncthreads();   // the previous tile's readers are done
      for (int k = ty; k < kTile; k += kTileRows) {
        const int64_t c = c0 + k, r = r0 + tx;
        if (c < C && r < R) tile[k][tx] = xm[r + c * ls];
      }
      __syncthreads();
      for (int k = ty; k < kTile; k += kTileRows) {
        const int64_t r = r0 + k, c = c0 + tx;
        if (r < R && c < C) om[r * C + c] = tile[tx][k];
      }
    }
  }
}

template <typename T>
void copy_strided_t(T* out, const T* x, const View& v) {
  if (v.ndim == 0) {   // a single element (every axis had size 1)
    memcpy_d2d(out, x, sizeof(T));
    return;
  }
  int64_t total = 1;
  for (int d = 0; d < v.ndim; d++) total *= v.shape[d];
  const int nd = v.ndim;
  const int64_t last = v.shape[nd - 1], ls = v.stride[nd - 1];
  if (nd == 1 && ls == 1) {   // contiguous after merging
    memcpy_d2d(out, x, static_cast<size_t>(total) * sizeof(T));
    return;
  }
  if (nd >= 2 && v.stride[nd - 2] == 1 && ls > 1 && v.shape[nd - 2] >= 8 && last >= 8) {
    const int64_t R = v.shape[nd - 2], C = last, nmat = total / (R * C);
    const int64_t tiles = ((R + kTile - 1) / kTile) * ((C + kTile - 1) / kTile);
    const int64_t want_z = nmat < 65535 ? nmat : 65535;
    int64_t want_x = (static_cast<int64_t>(sm_count()) * 16 + want_z - 1) / want_z;   // ~16 blocks per SM
    if (want_x > tiles) want_x = tiles;
    if (want_x < 1) want_x = 1;
    dim3 grid(static_cast<unsigned>(want_x), 1, static_cast<unsigned>(want_z));
    transpose_kernel<T><<<grid, dim3(kTile, kTileRows), 0, stream()>>>(out, x, R, C, ls, nmat, v);
    CUDA_CHECK_LAUNCH("copy_strided (transpose)");
    return;
  }
  copy_strided_kernel<T><<<grid_for(total, 256), 256, 0, stream()>>>(out, x, total, v);
  CUDA_CHECK_LAUNCH("copy_strided");
}

// ------------------------------------------------------------------------------------------------ rows
// rows x (units per row) copies between two row strides, all counted in units U.
template <typename U>
__global__ void copy_rows_kernel(U* __restrict__ out, int64_t ostride, const U* __restrict__ x, int64_t xstride,
                                 int64_t rows, int64_t upr) {
  const int64_t total = rows * upr;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / upr, j = k % upr;
    out[r * ostride + j] = x[r * xstride + j];
  }
}

template <typename U>
void copy_rows_as(char* out, int64_t ostride, const char* x, int64_t xstride, int64_t rows, int64_t row) {
  constexpr int64_t u = sizeof(U);
  copy_rows_kernel<U><<<grid_for(rows * (row / u), 256), 256, 0, stream()>>>(
      reinterpret_cast<U*>(out), ostride / u, reinterpret_cast<const U*>(x), xstride / u, rows, row / u);
  CUDA_CHECK_LAUNCH("copy_rows");
}

__global__ void slice_add_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t outer, int64_t xlen,
                                 int64_t inner, int64_t start, int64_t row) {
  const int64_t total = outer * row;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / row, j = k % row;
    float* d = dx + (o * xlen + start) * inner + j;
    *d = __fadd_rn(*d, dy[k]);
  }
}

void check_elsize(int64_t elsize, const char* fn) {
  if (elsize != 2 && elsize != 4)
    throw std::invalid_argument(std::string("modalab cuda: ") + fn + ": element size " + std::to_string(elsize) +
                                " (2 or 4)");
}

// `rows` rows of `row` bytes from x (row stride xstride bytes) to out (ostride bytes), in the widest unit that
// divides the row, both strides and both addresses.
void copy_rows_bytes(void* out, int64_t ostride, const void* x, int64_t xstride, int64_t rows, int64_t row) {
  if (rows <= 0 || row <= 0) return;
  char* o = static_cast<char*>(out);
  const char* s = static_cast<const char*>(x);
  if (rows == 1 || (ostride == row && xstride == row)) {   // one contiguous run
    memcpy_d2d(o, s, static_cast<size_t>(rows * row));
    return;
  }
  switch (copy_unit({row, ostride, xstride, reinterpret_cast<intptr_t>(o), reinterpret_cast<intptr_t>(s)})) {
    case 16: return copy_rows_as<uint4>(o, ostride, s, xstride, rows, row);
    case 8: return copy_rows_as<uint2>(o, ostride, s, xstride, rows, row);
    case 4: return copy_rows_as<uint32_t>(o, ostride, s, xstride, rows, row);
    default: return copy_rows_as<uint16_t>(o, ostride, s, xstride, rows, row);
  }
}

}  // namespace

void copy_strided(void* out, const void* x, int ndim, const int64_t* shape, const int64_t* xstride,
                  int64_t elsize) {   // out (shape) contiguous; x laid out by xstride
  check_elsize(elsize, "copy_strided");
  if (ndim < 0 || ndim > kMaxDims)
    throw std::invalid_argument("modalab cuda: copy_strided: " + std::to_string(ndim) + " axes (at most " +
                                std::to_string(kMaxDims) + ")");
  for (int d = 0; d < ndim; d++)
    if (shape[d] == 0) return;
  // The CPU's simplification: outermost first, an axis folded into the previous one when it continues it.
  View v{};
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 1) continue;
    if (v.ndim > 0 && v.stride[v.ndim - 1] == xstride[d] * shape[d]) {
      v.shape[v.ndim - 1] *= shape[d];
      v.stride[v.ndim - 1] = xstride[d];
    } else {
      v.shape[v.ndim] = shape[d];
      v.stride[v.ndim] = xstride[d];
      v.ndim++;
    }
  }
  if (elsize == 2) copy_strided_t(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(x), v);
  else copy_strided_t(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(x), v);
}

void slice_copy(void* out, const void* x, int64_t outer, int64_t xlen, int64_t inner, int64_t start, int64_t len,
                int64_t elsize) {   // out (outer, len, inner) = x (outer, xlen, inner)[:, start:start+len, :]
  check_elsize(elsize, "slice_copy");
  if (outer == 0 || len == 0 || inner == 0) return;
  copy_rows_bytes(out, len * inner * elsize, static_cast<const char*>(x) + start * inner * elsize,
                  xlen * inner * elsize, outer, len * inner * elsize);
}

void slice_assign(void* out, const void* x, int64_t outer, int64_t outlen, int64_t inner, int64_t start,
                  int64_t len, int64_t elsize) {   // out (outer, outlen, inner)[:, start:start+len, :] = x
  check_elsize(elsize, "slice_assign");
  if (outer == 0 || len == 0 || inner == 0) return;
  copy_rows_bytes(static_cast<char*>(out) + start * inner * elsize, outlen * inner * elsize, x,
                  len * inner * elsize, outer, len * inner * elsize);
}

void slice_add_backward(float* dx, const float* dy, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                        int64_t len) {   // dx (outer, xlen, inner)[:, start:start+len, :] += dy (outer, len, inner)
  const int64_t row = len * inner;
  if (outer == 0 || row == 0) return;
  slice_add_kernel<<<grid_for(outer * row, 256), 256, 0, stream()>>>(dx, dy, outer, xlen, inner, start, row);
  CUDA_CHECK_LAUNCH("slice_add_backward");
}

}  // namespace cuda
}  // namespace modalab
