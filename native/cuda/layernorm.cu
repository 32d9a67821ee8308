// LayerNorm over the last axis of x (rows, C), forward beside backward, in llm.c's formulation, with the same
// arithmetic as native/cpu/layernorm.cc (double accumulators, two-pass variance).
//
// forward:  mean, rstd (rows) are saved; y = (x - mean) * rstd * weight + bias  (weight, bias may be null).
// backward: dx (rows, C) is overwritten; dweight, dbias (C) are overwritten (either may be null).
//
// Row kernels give each row a group of threads: a warp when C <= 1024, else a block of 512. dweight and dbias
// are sums over rows: a second kernel gives each block 32 columns and a fixed chunk of rows (8 threads per column
// walk the chunk's rows, then combine in a fixed order), and when there are several chunks a third kernel adds
// the chunk partials in chunk order. No atomics: the result does not depend on scheduling.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

constexpr int kWarpRowMax = 1024;
constexpr int64_t kRowsPerChunk = 512;   // rows per partial sum of dweight/dbias (more if gridDim.y would overflow)

template <int G>
__global__ void layernorm_forward_kernel(float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd,
                                         const float* __restrict__ x, const float* __restrict__ weight,
                                         const float* __restrict__ bias, int64_t rows, int64_t C, float eps) {
  __shared__ double scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;
  const float* xr = x + row * C;
  float* yr = y + row * C;
  double s = 0;
  for (int64_t j = t; j < C; j += G) s += xr[j];
  const double mu = C > 0 ? group_reduce<G>(s, SumOp<double>(), scratch) / static_cast<double>(C) : 0.0;
  double q = 0;
  for (int64_t j = t; j < C; j += G) {
    const double d = xr[j] - mu;
    q += d * d;
  }
  const double var = C > 0 ? group_reduce<G>(q, SumOp<double>(), scratch) / static_cast<double>(C) : 0.0;
  const float m = static_cast<float>(mu), r = static_cast<float>(1.0 / sqrt(var + static_cast<double>(eps)));
  if (t == 0) {
    mean[row] = m;
    rstd[row] = r;
  }
  for (int64_t j = t; j < C; j += G) {
    float v = (xr[j] - m) * r;
    if (weight) v *= weight[j];
    if (bias) v += bias[j];
    yr[j] = v;
  }
}

// dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), norm = (x - mean) rstd, dnorm = dy * weight.
template <int G>
__global__ void layernorm_backward_dx_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                             const float* __restrict__ x, const float* __restrict__ weight,
                                             const float* __restrict__ mean, const float* __restrict__ rstd,
                                             int64_t rows, int64_t C) {
  __shared__ double scratch[32];
  const int64_t row = blockIdx.x * int64_t(blockDim.x / G) + threadIdx.x / G;
  const int t = threadIdx.x % G;
  if (G <= 32 && row >= rows) return;
  const float* xr = x + row * C;
  const float* dyr = dy + row * C;
  float* dxr = dx + row * C;
  const float m = mean[row], s = rstd[row];
  double sd = 0, sdn = 0;
  for (int64_t j = t; j < C; j += G) {
    const float norm = (xr[j] - m) * s;
    const float dnorm = weight ? dyr[j] * weight[j] : dyr[j];
    sd += dnorm;
    sdn += dnorm * norm;
  }
  sd = group_reduce<G>(sd, SumOp<double>(), scratch);
  sdn = group_reduce<G>(sdn, SumOp<double>(), scratch);
  const float dnorm_mean = static_cast<float>(sd / static_cast<double>(C));
  const float dnorm_norm_mean = static_cast<float>(sdn / static_cast<double>(C));
  for (int64_t j = t; j < C; j += G) {
    const float norm = (xr[j] - m) * s;
    const float dnorm = weight ? dyr[j] * weight[j] : dyr[j];
    dxr[j] = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}

// Block (32, 8): 32 columns, 8 row lanes; grid (ceil(C / 32), nchunks). Writes the chunk's sums to dweight/dbias
// directly when nchunks == 1, else to the partials (nchunks, C).
__global__ void layernorm_backward_dwdb_kernel(float* dweight, float* dbias, double* pw, double* pb,
                                               const float* __restrict__ dy, const float* __restrict__ x,
                                               const float* __restrict__ mean, const float* __restrict__ rstd,
                                               int64_t rows, int64_t C, int64_t nchunks, int64_t chunk_rows) {
  __shared__ double sw[8][33], sb[8][33];
  const int64_t c = blockIdx.x * 32 + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * chunk_rows, r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  double aw = 0, ab = 0;
  if (c < C) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const float d = dy[r * C + c];
      const float norm = (x[r * C + c] - mean[r]) * rstd[r];
      aw += static_cast<double>(norm) * d;
      ab += d;
    }
  }
  sw[threadIdx.y][threadIdx.x] = aw;
  sb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    double tw = 0, tb = 0;
    for (int k = 0; k < 8; k++) {
      tw += sw[k][threadIdx.x];
      tb += sb[k][threadIdx.x];
    }
    if (nchunks == 1) {
      if (dweight) dweight[c] = static_cast<float>(tw);
      if (dbias) dbias[c] = static_cast<float>(tb);
    } else {
      if (pw) pw[chunk * C + c] = tw;
      if (pb) pb[chunk * C + c] = tb;
    }
  }
}

__global__ void layernorm_dwdb_combine_kernel(float* dweight, float* dbias, const double* pw, const double* pb,
                                              int64_t C, int64_t nchunks) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < C; c += int64_t(gridDim.x) * blockDim.x) {
    double tw = 0, tb = 0;
    for (int64_t k = 0; k < nchunks; k++) {
      if (pw) tw += pw[k * C + c];
      if (pb) tb += pb[k * C + c];
    }
    if (dweight) dweight[c] = static_cast<float>(tw);
    if (dbias) dbias[c] = static_cast<float>(tb);
  }
}

__global__ void zero_kernel(float* a, float* b, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if (a) a[i] = 0.0f;
    if (b) b[i] = 0.0f;
  }
}

}  // namespace

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* weight, const float* bias,
                       int64_t rows, int64_t C, float eps) {   // y, x (rows, C); mean, rstd (rows); weight, bias (C)
  if (rows <= 0) return;
  if (C <= kWarpRowMax) {
    layernorm_forward_kernel<32><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream()>>>(y, mean, rstd, x, weight,
                                                                                              bias, rows, C, eps);
  } else {
    layernorm_forward_kernel<512><<<static_cast<unsigned>(rows), 512, 0, stream()>>>(y, mean, rstd, x, weight, bias,
                                                                                     rows, C, eps);
  }
  CUDA_CHECK_LAUNCH("layernorm_forward");
}

void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dy, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t C) {
  if (C <= 0) return;   // dx, dy, x (rows, C); dweight, dbias, weight (C); mean, rstd (rows)
  if (rows <= 0) {      // no rows: the sums are empty
    if (dweight || dbias) {
      zero_kernel<<<grid_for(C, 256), 256, 0, stream()>>>(dweight, dbias, C);
      CUDA_CHECK_LAUNCH("layernorm_backward");
    }
    return;
  }
  if (C <= kWarpRowMax) {
    layernorm_backward_dx_kernel<32><<<static_cast<unsigned>((rows + 7) / 8), 256, 0, stream()>>>(dx, dy, x, weight,
                                                                                                  mean, rstd, rows, C);
  } else {
    layernorm_backward_dx_kernel<512><<<static_cast<unsigned>(rows), 512, 0, stream()>>>(dx, dy, x, weight, mean, rstd,
                                                                                         rows, C);
  }
  CUDA_CHECK_LAUNCH("layernorm_backward");
  if (!dweight && !dbias) return;
  int64_t chunk_rows = kRowsPerChunk;
  if ((rows + chunk_rows - 1) / chunk_rows > 65535) chunk_rows = (rows + 65534) / 65535;
  const int64_t nchunks = (rows + chunk_rows - 1) / chunk_rows;
  double* pw = nchunks > 1 && dweight ? static_cast<double*>(malloc(sizeof(double) * nchunks * C)) : nullptr;
  double* pb = nullptr;
  try {
    pb = nchunks > 1 && dbias ? static_cast<double*>(malloc(sizeof(double) * nchunks * C)) : nullptr;
  } catch (...) {
    free(pw);
    throw;
  }
  dim3 grid(static_cast<unsigned>((C + 31) / 32), static_cast<unsigned>(nchunks));
  layernorm_backward_dwdb_kernel<<<grid, dim3(32, 8), 0, stream()>>>(dweight, dbias, pw, pb, dy, x, mean, rstd, rows,
                                                                     C, nchunks, chunk_rows);
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && nchunks > 1) {
    layernorm_dwdb_combine_kernel<<<grid_for(C, 256), 256, 0, stream()>>>(dweight, dbias, pw, pb, C, nchunks);
    err = cudaGetLastError();
  }
  free(pw);
  free(pb);
  if (err != cudaSuccess) throw_cuda_error(err, "layernorm_backward", __FILE__, __LINE__);
}

}  // namespace cuda
}  // namespace modalab
