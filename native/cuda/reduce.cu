// Reductions over the middle axis of x (outer, len, inner): sum and mean (accumulated in double, like the CPU),
// max and min with the first arg index (NaN wins and the first NaN is kept, as torch.max does).
//
// Deterministic: every sum combines its terms in an order fixed by the shape and the launch configuration, never
// by scheduling (no atomics).
//
// inner == 1 (a reduction over the last axis): a group of threads per row, a warp for short rows and a block
// for long ones. When there are few rows and they are long (a whole-tensor sum), each row is also split over
// several blocks that write partial results, and a second small kernel combines them in split order.
// inner > 1: one thread per output column, walking len; neighbouring threads read neighbouring columns, so the
// loads coalesce.
//
// Also here: the reductions' backward helpers (broadcast_axis, scatter_arg: one thread per dx element, each written
// once, no separate zero fill) and the two whole-tensor checks the optimizers need, which return a host value and
// so synchronise:
//   sum_squares: sum of x^2 in double, in an order fixed by n alone (not by the device): blocks of kSqChunk
//                elements, each thread of a block summing its strided share in order, a fixed block tree, then
//                one block combining the block sums the same way. Not the CPU's order (that one is 32768-element
//                runs in 4 serial chains, which would leave the GPU idle), so the two agree to double rounding.
//   all_finite:  false iff some element's exponent field is all ones (NaN or infinity), as on the CPU.
#include <algorithm>
#include <cfloat>
#include <climits>

#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kBlock = 256;     // threads per block for every kernel here
constexpr int kLongRow = 2048;  // rows at least this long get a block (512 threads) instead of a warp

struct Arg {
  float v;
  int64_t i;
};

// Is c better than b? A total order, so any combination tree gives the first index of the extreme value.
__device__ __forceinline__ bool arg_better(Arg c, Arg b, bool is_max) {
  const bool cn = c.v != c.v, bn = b.v != b.v;
  if (cn != bn) return cn;
  if (cn) return c.i < b.i;
  if (c.v != b.v) return is_max ? c.v > b.v : c.v < b.v;
  return c.i < b.i;
}

__device__ __forceinline__ Arg arg_init(bool is_max) { return Arg{is_max ? -INFINITY : INFINITY, LLONG_MAX}; }

template <int G>
__device__ __forceinline__ Arg arg_group_reduce(Arg a, bool is_max, Arg* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    Arg other{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    if (arg_better(other, a, is_max)) a = other;
  }
  if (G <= 32) return a;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  __syncthreads();
  if (lane == 0) scratch[warp] = a;
  __syncthreads();
  Arg r = scratch[0];
#pragma unroll
  for (int w = 1; w < G / 32; w++)
    if (arg_better(scratch[w], r, is_max)) r = scratch[w];
  return r;
}

// ------------------------------------------------------------------------------------------ inner == 1
// Row r, split s reduces x[r, s*chunk : min((s+1)*chunk, len)]. With nsplit == 1 it writes the result, else a
// partial at (r, s).
template <int G>
__global__ void sum_rows_kernel(float* out, double* partial, const float* __restrict__ x, int64_t rows, int64_t len,
                                int64_t nsplit, int64_t chunk, double scale) {
  __shared__ double scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int64_t split = blockIdx.y;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;   // a warp group never synchronises with the others
  const int64_t j0 = split * chunk, j1 = j0 + chunk < len ? j0 + chunk : len;
  const float* xr = x + row * len;
  double s = 0;
  for (int64_t j = j0 + t; j < j1; j += G) s += xr[j];
  s = group_reduce<G>(s, SumOp<double>(), scratch);
  if (t == 0) {
    if (nsplit == 1) out[row] = static_cast<float>(s * scale);
    else partial[row * nsplit + split] = s;
  }
}

template <int G>
__global__ void arg_rows_kernel(float* out, int32_t* argidx, Arg* partial, const float* __restrict__ x, int64_t rows,
                                int64_t len, int64_t nsplit, int64_t chunk, bool is_max) {
  __shared__ Arg scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int64_t split = blockIdx.y;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;
  const int64_t j0 = split * chunk, j1 = j0 + chunk < len ? j0 + chunk : len;
  const float* xr = x + row * len;
  Arg a = arg_init(is_max);
  for (int64_t j = j0 + t; j < j1; j += G) {
    Arg c{xr[j], j};
    if (arg_better(c, a, is_max)) a = c;
  }
  a = arg_group_reduce<G>(a, is_max, scratch);
  if (t == 0) {
    if (nsplit == 1) {
      out[row] = a.v;
      if (argidx) argidx[row] = static_cast<int32_t>(a.i);
    } else {
      partial[row * nsplit + split] = a;
    }
  }
}

// One warp per row combines its nsplit partials (in a fixed order: the butterfly over a fixed lane assignment).
__global__ void sum_combine_kernel(float* out, const double* partial, int64_t rows, int64_t nsplit, double scale) {
  const int64_t row = blockIdx.x * int64_t(kBlock / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  double s = 0;
  for (int64_t k = lane; k < nsplit; k += 32) s += partial[row * nsplit + k];
  s = warp_reduce(s, SumOp<double>());
  if (lane == 0) out[row] = static_cast<float>(s * scale);
}

__global__ void arg_combine_kernel(float* out, int32_t* argidx, const Arg* partial, int64_t rows, int64_t nsplit,
                                   bool is_max) {
  const int64_t row = blockIdx.x * int64_t(kBlock / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;
  Arg a = arg_init(is_max);
  for (int64_t k = lane; k < nsplit; k += 32)
    if (arg_better(partial[row * nsplit + k], a, is_max)) a = partial[row * nsplit + k];
  a = arg_group_reduce<32>(a, is_max, nullptr);
  if (lane == 0) {
    out[row] = a.v;
    if (argidx) argidx[row] = static_cast<int32_t>(a.i);
  }
}

// ------------------------------------------------------------------------------------------ inner > 1
__global__ void sum_cols_kernel(float* out, const float* __restrict__ x, int64_t outer, int64_t len, int64_t inner,
                                double scale) {
  const int64_t n = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / inner, i = k % inner;
    const float* xc = x + o * len * inner + i;
    double s = 0;
    for (int64_t j = 0; j < len; j++) s += xc[j * inner];
    out[k] = static_cast<float>(s * scale);
  }
}

__global__ void arg_cols_kernel(float* out, int32_t* argidx, const float* __restrict__ x, int64_t outer, int64_t len,
                                int64_t inner, bool is_max) {
  const int64_t n = outer * inner;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t o = k / inner, i = k % inner;
    const float* xc = x + o * len * inner + i;
    Arg a = arg_init(is_max);
    for (int64_t j = 0; j < len; j++) {
      Arg c{xc[j * inner], j};
      if (arg_better(c, a, is_max)) a = c;
    }
    out[k] = a.v;
    if (argidx) argidx[k] = static_cast<int32_t>(a.i);
  }
}

__global__ void fill_empty_kernel(float* out, int32_t* argidx, int64_t n, float v) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    out[k] = v;
    if (argidx) argidx[k] = -1;
  }
}

// ------------------------------------------------------------------------------------------ backward helpers
// dx (outer, len, inner) = dy (outer, inner) broadcast along len, times scale (a plain copy when scale == 1).
__global__ void broadcast_axis_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t total,
                                      int64_t len, int64_t inner, float scale) {
  const bool copy = scale == 1.0f;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k % inner, o = k / inner / len;
    const float v = dy[o * inner + i];
    dx[k] = copy ? v : __fmul_rn(v, scale);
  }
}

// dx (outer, len, inner) = dy[o, i] where j == argidx[o, i], else 0 (an index outside [0, len) matches no j).
__global__ void scatter_arg_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                   const int32_t* __restrict__ argidx, int64_t total, int64_t len, int64_t inner) {
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = k % inner, t = k / inner, j = t % len, o = t / len;
    const int64_t col = o * inner + i;
    dx[k] = static_cast<int64_t>(argidx[col]) == j ? dy[col] : 0.0f;
  }
}

// ------------------------------------------------------------------------------------------ whole-tensor checks
constexpr int kSqThreads = 256;
constexpr int64_t kSqChunk = kSqThreads * 16;   // elements per block of the first pass
constexpr int kSqFinal = 1024;                  // threads of the combining block

// partial[b] = sum of x[b kSqChunk .. (b + 1) kSqChunk)^2 in double: thread t takes elements t, t + 256, ... in
// order, then the block's fixed tree. Products of floats are exact in double.
__global__ void sum_squares_kernel(double* __restrict__ partial, const float* __restrict__ x, int64_t n) {
  __shared__ double scratch[32];
  const int64_t base = blockIdx.x * kSqChunk;
  const int64_t end = base + kSqChunk < n ? base + kSqChunk : n;
  double s = 0;
  for (int64_t j = base + threadIdx.x; j < end; j += kSqThreads) {
    const double v = x[j];
    s = __dadd_rn(s, __dmul_rn(v, v));
  }
  s = group_reduce<kSqThreads>(s, SumOp<double>(), scratch);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[0] = the nb partials summed: thread t takes t, t + 1024, ... in order, then the block's fixed tree.
__global__ void sum_partials_kernel(double* __restrict__ out, const double* __restrict__ partial, int64_t nb) {
  __shared__ double scratch[32];
  double s = 0;
  for (int64_t j = threadIdx.x; j < nb; j += kSqFinal) s = __dadd_rn(s, partial[j]);
  s = group_reduce<kSqFinal>(s, SumOp<double>(), scratch);
  if (threadIdx.x == 0) out[0] = s;
}

// *first_bad = 0 when an element is NaN or infinite (every writer stores the same value).
__global__ void all_finite_kernel(unsigned long long* first_bad, const uint32_t* __restrict__ x, int64_t n) {
  bool bad = false;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x)
    bad |= (x[k] & 0x7F800000u) == 0x7F800000u;
  if (bad) *first_bad = 0;
}

}  // namespace

void reduce(float* out, int32_t* argidx, const float* x, int64_t outer, int64_t len, int64_t inner, ReduceOp op) {
  const int64_t nout = outer * inner;   // out, argidx (outer, inner); x (outer, len, inner)
  if (nout <= 0) return;
  const bool is_arg = op == ReduceOp::Max || op == ReduceOp::Min, is_max = op == ReduceOp::Max;
  if (!is_arg) argidx = nullptr;
  if (len == 0) {   // as the CPU: 0 for Sum, NaN for Mean, -inf/+inf for Max/Min with argidx -1
    const float v = op == ReduceOp::Sum ? 0.0f : op == ReduceOp::Mean ? NAN : is_max ? -INFINITY : INFINITY;
    fill_empty_kernel<<<grid_for(nout, kBlock), kBlock, 0, stream()>>>(out, argidx, nout, v);
    CUDA_CHECK_LAUNCH("reduce");
    return;
  }
  const double scale = op == ReduceOp::Mean ? 1.0 / static_cast<double>(len) : 1.0;
  if (inner > 1) {
    if (is_arg) arg_cols_kernel<<<grid_for(nout, kBlock), kBlock, 0, stream()>>>(out, argidx, x, outer, len, inner, is_max);
    else sum_cols_kernel<<<grid_for(nout, kBlock), kBlock, 0, stream()>>>(out, x, outer, len, inner, scale);
    CUDA_CHECK_LAUNCH("reduce");
    return;
  }
  const int64_t rows = outer;
  // Split long rows when there are too few of them to occupy the device: aim for ~4 blocks per SM in total,
  // each block taking at least 16K elements of its row.
  int64_t nsplit = 1;
  if (len >= kLongRow) {
    const int64_t want_blocks = 4 * int64_t(sm_count());
    if (rows < want_blocks) {
      nsplit = (want_blocks + rows - 1) / rows;
      nsplit = std::min<int64_t>(nsplit, std::max<int64_t>(1, len / 16384));
      nsplit = std::min<int64_t>(nsplit, 65535);   // gridDim.y limit
    }
  }
  const int64_t chunk = (len + nsplit - 1) / nsplit;
  void* partial = nsplit > 1 ? malloc(static_cast<size_t>(rows * nsplit) * (is_arg ? sizeof(Arg) : sizeof(double)))
                             : nullptr;
  if (len >= kLongRow) {
    dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>(nsplit));   // one block (512 threads) per piece
    if (is_arg) arg_rows_kernel<512><<<grid, 512, 0, stream()>>>(out, argidx, static_cast<Arg*>(partial), x, rows, len, nsplit, chunk, is_max);
    else sum_rows_kernel<512><<<grid, 512, 0, stream()>>>(out, static_cast<double*>(partial), x, rows, len, nsplit, chunk, scale);
  } else {
    dim3 grid(static_cast<unsigned>((rows + kBlock / 32 - 1) / (kBlock / 32)), 1);   // a warp per row
    if (is_arg) arg_rows_kernel<32><<<grid, kBlock, 0, stream()>>>(out, argidx, nullptr, x, rows, len, 1, len, is_max);
    else sum_rows_kernel<32><<<grid, kBlock, 0, stream()>>>(out, nullptr, x, rows, len, 1, len, scale);
  }
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && nsplit > 1) {
    const unsigned g = static_cast<unsigned>((rows + kBlock / 32 - 1) / (kBlock / 32));
    if (is_arg) arg_combine_kernel<<<g, kBlock, 0, stream()>>>(out, argidx, static_cast<Arg*>(partial), rows, nsplit, is_max);
    else sum_combine_kernel<<<g, kBlock, 0, stream()>>>(out, static_cast<double*>(partial), rows, nsplit, scale);
    err = cudaGetLastError();
  }
  free(partial);   // stream-ordered: the block is only handed out again to work queued after these kernels
  if (err != cudaSuccess) throw_cuda_error(err, "reduce", __FILE__, __LINE__);
}

void broadcast_axis(float* dx, const float* dy, int64_t outer, int64_t len, int64_t inner, float scale) {
  const int64_t total = outer * len * inner;   // dx (outer, len, inner) =; dy (outer, inner)
  if (total <= 0) return;
  broadcast_axis_kernel<<<grid_for(total, kBlock), kBlock, 0, stream()>>>(dx, dy, total, len, inner, scale);
  CUDA_CHECK_LAUNCH("broadcast_axis");
}

void scatter_arg(float* dx, const float* dy, const int32_t* argidx, int64_t outer, int64_t len, int64_t inner) {
  const int64_t total = outer * len * inner;   // dx (outer, len, inner) =; dy, argidx (outer, inner)
  if (total <= 0) return;
  scatter_arg_kernel<<<grid_for(total, kBlock), kBlock, 0, stream()>>>(dx, dy, argidx, total, len, inner);
  CUDA_CHECK_LAUNCH("scatter_arg");
}

double sum_squares(const float* x, int64_t n) {   // x (n); synchronises
  if (n <= 0) return 0.0;
  const int64_t nb = (n + kSqChunk - 1) / kSqChunk;
  if (nb > 0x7FFFFFFF) throw std::invalid_argument("modalab cuda: sum_squares: " + std::to_string(n) + " elements");
  double* scratch = static_cast<double*>(malloc(static_cast<size_t>(nb + 1) * sizeof(double)));
  double result = 0;
  try {
    sum_squares_kernel<<<static_cast<unsigned>(nb), kSqThreads, 0, stream()>>>(scratch + 1, x, n);
    CUDA_CHECK_LAUNCH("sum_squares");
    sum_partials_kernel<<<1, kSqFinal, 0, stream()>>>(scratch, scratch + 1, nb);
    CUDA_CHECK_LAUNCH("sum_squares (combine)");
    memcpy_d2h(&result, scratch, sizeof result);
  } catch (...) {
    free(scratch);
    throw;
  }
  free(scratch);
  return result;
}

bool all_finite(const float* x, int64_t n) {   // x (n); synchronises
  if (n <= 0) return true;
  unsigned long long* flag = bad_flag(static_cast<unsigned long long>(n));
  all_finite_kernel<<<grid_for(n, kBlock), kBlock, 0, stream()>>>(flag, reinterpret_cast<const uint32_t*>(x), n);
  CUDA_CHECK_LAUNCH("all_finite");
  return read_first_bad(n) < 0;
}

}  // namespace cuda
}  // namespace modalab
