// Matrix products: c (batch..., M, N) = alpha * op(a) @ op(b) + beta * c, batch axes broadcast by strides.
// beta = 0 never reads c (it may hold NaN), as in BLAS and on the CPU.
//
// Three implementations:
//   - matmul_tiled: the backend's own f32 GEMM. 64 x 64 output tiles, 16-deep k slices staged in shared memory,
//     256 threads each computing a 4 x 4 register tile from float4 reads of the staged slices. Plain f32 FMA (no
//     TF32), so it agrees with the CPU to f32 rounding.
//   - the wmma kernel (matmul_half, GemmImpl::TensorCore): f16/bf16 inputs on the tensor cores, f32 accumulation.
//     128 x 128 output tiles, 32-deep k slices, 8 warps each owning a 64 x 32 sub-tile (4 x 2 fragments of
//     16 x 16 x 16). No cp.async pipelining yet: a first, correct version.
//   - cuBLAS (MODALAB_HAVE_CUBLAS): cublasSgemm (default math mode: no TF32) and cublasGemmEx, through the
//     row-major identity C^T = op(B)^T op(A)^T, so the column-major library needs no copies.
//
// Tiles are staged by one loader for every layout: op(a)'s transpose flag decides which tile axis is contiguous
// in memory, and consecutive threads take consecutive 16-byte chunks along that axis (coalesced); a chunk is one
// vector load when the matrix is 16-byte aligned with a leading dimension to match and the chunk lies inside it,
// else element loads with zero fill past the edges (so ragged tiles compute correctly).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>

#include "common.cuh"

#ifdef MODALAB_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace modalab {
namespace cuda {
namespace {

// ------------------------------------------------------------------------------------------ batch layout
constexpr int kMaxBatchDims = 64;   // what the bindings allow
struct BatchLayout {
  int nd;   // axes after merging, outermost first
  int64_t shape[kMaxBatchDims], as[kMaxBatchDims], bs[kMaxBatchDims];
};

// Drop size-1 batch axes and merge neighbours that both a and b step through as one; returns the batch count.
int64_t make_batch_layout(BatchLayout& L, int nbatch, const int64_t* bshape, const int64_t* astride,
                          const int64_t* bstride) {
  if (nbatch < 0 || nbatch > kMaxBatchDims)
    throw std::invalid_argument("modalab cuda: matmul: " + std::to_string(nbatch) + " batch axes (at most " +
                                std::to_string(kMaxBatchDims) + ")");
  L.nd = 0;
  int64_t count = 1;
  for (int d = nbatch - 1; d >= 0; d--) {   // innermost first, reversed below
    count *= bshape[d];
    if (bshape[d] == 1) continue;
    if (L.nd > 0) {
      const int k = L.nd - 1;
      if (astride[d] == L.as[k] * L.shape[k] && bstride[d] == L.bs[k] * L.shape[k]) {
        L.shape[k] *= bshape[d];
        continue;
      }
    }
    L.shape[L.nd] = bshape[d];
    L.as[L.nd] = astride[d];
    L.bs[L.nd] = bstride[d];
    L.nd++;
  }
  for (int i = 0, j = L.nd - 1; i < j; i++, j--) {
    std::swap(L.shape[i], L.shape[j]);
    std::swap(L.as[i], L.as[j]);
    std::swap(L.bs[i], L.bs[j]);
  }
  return count;
}

__device__ __forceinline__ void batch_offsets(const BatchLayout& L, int64_t z, int64_t& ao, int64_t& bo) {
  ao = 0;
  bo = 0;
  for (int d = L.nd - 1; d >= 0; d--) {
    const int64_t c = z % L.shape[d];
    z /= L.shape[d];
    ao += c * L.as[d];
    bo += c * L.bs[d];
  }
}

// --------------------------------------------------------------------------------------------- tile loader
// Stages the (R x S) tile at (r0, s0) of a logical matrix X (rows x cols) into sm[r * LDS + s], zero outside X.
// s_contig: X[r][s] = g[r * ld + s]; else X[r][s] = g[s * ld + r]. T is the storage type (float or the 16-bit
// pattern of a half type); vec: g is 16-byte aligned and ld a multiple of the chunk.
template <typename T, int R, int S, int LDS>
__device__ __forceinline__ void load_tile(T* sm, const T* g, int64_t rows, int64_t cols, int64_t r0, int64_t s0,
                                          bool s_contig, int64_t ld, bool vec) {
  constexpr int V = 16 / sizeof(T);   // elements per 16-byte chunk
  static_assert(R % V == 0 && S % V == 0, "tile sides must be whole chunks");
  constexpr int kChunks = R * S / V;
  for (int q = threadIdx.x; q < kChunks; q += blockDim.x) {
    alignas(16) T vals[V];   // reinterpreted as one uint4
    if (s_contig) {
      const int r = q / (S / V), s = (q % (S / V)) * V;
      const int64_t gr = r0 + r, gs = s0 + s;
      const T* p = g + gr * ld + gs;
      if (vec && gr < rows && gs + V <= cols) {
        *reinterpret_cast<uint4*>(vals) = *reinterpret_cast<const uint4*>(p);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) vals[v] = (gr < rows && gs + v < cols) ? p[v] : T(0);
      }
      if constexpr ((LDS * sizeof(T)) % 16 == 0) {
        *reinterpret_cast<uint4*>(sm + r * LDS + s) = *reinterpret_cast<const uint4*>(vals);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) sm[r * LDS + s + v] = vals[v];
      }
    } else {
      const int s = q / (R / V), r = (q % (R / V)) * V;
      const int64_t gr = r0 + r, gs = s0 + s;
      const T* p = g + gs * ld + gr;
      if (vec && gs < cols && gr + V <= rows) {
        *reinterpret_cast<uint4*>(vals) = *reinterpret_cast<const uint4*>(p);
      } else {
#pragma unroll
        for (int v = 0; v < V; v++) vals[v] = (gs < cols && gr + v < rows) ? p[v] : T(0);
      }
#pragma unroll
      for (int v = 0; v < V; v++) sm[(r + v) * LDS + s] = vals[v];
    }
  }
}

__device__ __forceinline__ bool aligned16(const void* p, int64_t ld, int chunk) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0 && ld % chunk == 0;
}

// ----------------------------------------------------------------------------------------- f32 tiled GEMM
constexpr int kBM = 64, kBN = 64, kBK = 16;

__global__ void __launch_bounds__(256)
gemm_f32_tiled_kernel(float* __restrict__ c, const float* __restrict__ a, const float* __restrict__ b, int64_t M,
                      int64_t N, int64_t K, bool trans_a, bool trans_b, const BatchLayout L, int64_t nbatch,
                      float alpha, float beta) {
  // As holds op(a)^T (k, m) so that a thread's 4 rows are one float4; Bs holds op(b) (k, n).
  __shared__ __align__(16) float As[kBK][kBM + 4];
  __shared__ __align__(16) float Bs[kBK][kBN + 4];
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kBM, n0 = static_cast<int64_t>(blockIdx.y) * kBN;
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  for (int64_t z = blockIdx.z; z < nbatch; z += gridDim.z) {
    int64_t ao, bo;
    batch_offsets(L, z, ao, bo);
    const float* az = a + ao;
    const float* bz = b + bo;
    const bool va = aligned16(az, lda, 4), vb = aligned16(bz, ldb, 4);
    float acc[4][4] = {};
    for (int64_t k0 = 0; k0 < K; k0 += kBK) {
      // op(a)^T is (K x M): X[k][m] = a[k * M + m] when trans_a (m contiguous), else a[m * K + k].
      load_tile<float, kBK, kBM, kBM + 4>(&As[0][0], az, K, M, k0, m0, trans_a, lda, va);
      load_tile<float, kBK, kBN, kBN + 4>(&Bs[0][0], bz, K, N, k0, n0, !trans_b, ldb, vb);
      __syncthreads();
#pragma unroll
      for (int k = 0; k < kBK; k++) {
        const float4 av = *reinterpret_cast<const float4*>(&As[k][ty * 4]);
        const float4 bv = *reinterpret_cast<const float4*>(&Bs[k][tx * 4]);
        const float ar[4] = {av.x, av.y, av.z, av.w}, br[4] = {bv.x, bv.y, bv.z, bv.w};
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 4; j++) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
      }
      __syncthreads();
    }
    float* cz = c + z * M * N;
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int64_t m = m0 + ty * 4 + i;
      if (m >= M) continue;
#pragma unroll
      for (int j = 0; j < 4; j++) {
        const int64_t n = n0 + tx * 4 + j;
        if (n >= N) continue;
        float* cp = cz + m * N + n;
        *cp = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *cp;
      }
    }
  }
}

// ------------------------------------------------------------------------------------ tensor-core GEMM
constexpr int kTM = 128, kTN = 128, kTK = 32, kTPad = 8;

template <typename H>   // __half or __nv_bfloat16
__global__ void __launch_bounds__(256)
gemm_wmma_kernel(float* __restrict__ c, const uint16_t* __restrict__ a, const uint16_t* __restrict__ b, int64_t M,
                 int64_t N, int64_t K, bool trans_a, bool trans_b, const BatchLayout L, int64_t nbatch, float alpha,
                 float beta) {
  using namespace nvcuda;
  __shared__ __align__(128) uint16_t As[kTM][kTK + kTPad];   // op(a) tile (m, k)
  __shared__ __align__(128) uint16_t Bs[kTK][kTN + kTPad];   // op(b) tile (k, n)
  __shared__ __align__(128) float Cs[8][16 * 16];            // one fragment per warp, for the epilogue
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp / 4, wn = warp % 4;   // 2 x 4 warps, each 64 x 32 of the output tile
  const int64_t m0 = static_cast<int64_t>(blockIdx.x) * kTM, n0 = static_cast<int64_t>(blockIdx.y) * kTN;
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  for (int64_t z = blockIdx.z; z < nbatch; z += gridDim.z) {
    int64_t ao, bo;
    batch_offsets(L, z, ao, bo);
    const uint16_t* az = a + ao;
    const uint16_t* bz = b + bo;
    const bool va = aligned16(az, lda, 8), vb = aligned16(bz, ldb, 8);
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.0f);
    for (int64_t k0 = 0; k0 < K; k0 += kTK) {
      // op(a) is (M x K): X[m][k] = a[m * K + k] (k contiguous) unless trans_a; op(b) is (K x N) likewise.
      load_tile<uint16_t, kTM, kTK, kTK + kTPad>(&As[0][0], az, M, K, m0, k0, !trans_a, lda, va);
      load_tile<uint16_t, kTK, kTN, kTN + kTPad>(&Bs[0][0], bz, K, N, k0, n0, !trans_b, ldb, vb);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTK; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, H, wmma::row_major> af[4];
        wmma::fragment<wmma::matrix_b, 16, 16, 16, H, wmma::row_major> bf[2];
#pragma unroll
        for (int i = 0; i < 4; i++)
          wmma::load_matrix_sync(af[i], reinterpret_cast<const H*>(&As[wm * 64 + i * 16][kk]), kTK + kTPad);
#pragma unroll
        for (int j = 0; j < 2; j++)
          wmma::load_matrix_sync(bf[j], reinterpret_cast<const H*>(&Bs[kk][wn * 32 + j * 16]), kTN + kTPad);
#pragma unroll
        for (int i = 0; i < 4; i++)
#pragma unroll
          for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
      }
      __syncthreads();
    }
    float* cz = c + z * M * N;
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
      for (int j = 0; j < 2; j++) {
        wmma::store_matrix_sync(Cs[warp], acc[i][j], 16, wmma::mem_row_major);
        __syncwarp();
        for (int e = lane; e < 256; e += 32) {
          const int64_t m = m0 + wm * 64 + i * 16 + e / 16, n = n0 + wn * 32 + j * 16 + e % 16;
          if (m < M && n < N) {
            float* cp = cz + m * N + n;
            *cp = beta == 0.0f ? alpha * Cs[warp][e] : alpha * Cs[warp][e] + beta * *cp;
          }
        }
        __syncwarp();
      }
  }
}

// c (count) = beta * c, or 0 when beta == 0 (the whole product when K == 0).
__global__ void scale_c_kernel(float* c, int64_t count, float beta) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    c[i] = beta == 0.0f ? 0.0f : beta * c[i];
}

// Shared prologue: empty problems, K == 0, batch layout. Returns false when nothing is left to do.
bool prepare(const char* name, float* c, int64_t M, int64_t N, int64_t K, int nbatch, const int64_t* bshape,
             const int64_t* astride, const int64_t* bstride, float beta, BatchLayout& L, int64_t& count) {
  count = make_batch_layout(L, nbatch, bshape, astride, bstride);
  if (count <= 0 || M <= 0 || N <= 0) return false;
  if (K <= 0) {
    const int64_t total = count * M * N;
    scale_c_kernel<<<grid_for(total, 256), 256, 0, stream()>>>(c, total, beta);
    CUDA_CHECK_LAUNCH(name);
    return false;
  }
  return true;
}

dim3 gemm_grid(int64_t M, int64_t N, int64_t count, int bm, int bn, const char* name) {
  const int64_t gx = (M + bm - 1) / bm, gy = (N + bn - 1) / bn;
  if (gx > 2147483647 || gy > 65535)
    throw std::invalid_argument(std::string("modalab cuda: ") + name + ": output of " + std::to_string(M) + " x " +
                                std::to_string(N) + " is too large for one launch");
  return dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy), static_cast<unsigned>(std::min<int64_t>(count, 65535)));
}

// -------------------------------------------------------------------------------------------------- cuBLAS
#ifdef MODALAB_HAVE_CUBLAS
void cublas_check(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw std::runtime_error(std::string("modalab cuda: ") + what + ": cuBLAS error " + cublasGetStatusString(st));
}

cublasHandle_t cublas() {
  static cublasHandle_t h = [] {
    cublasHandle_t handle = nullptr;
    cublas_check(cublasCreate(&handle), "cublasCreate");
    cublas_check(cublasSetStream(handle, stream()), "cublasSetStream");
    cublas_check(cublasSetMathMode(handle, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");   // plain f32: no TF32
    return handle;
  }();
  return h;
}

bool fits_int(int64_t v) { return v >= 0 && v <= 2147483647; }

// Row-major c (M, N) = op(a) op(b) is column-major c^T (N, M) = op(b)^T op(a)^T: swap the operands.
// Batches: the innermost merged batch axis becomes one strided-batched call (stride 0 broadcasts); any outer
// axes loop on the host.
void cublas_gemm(float* c, const void* a, const void* b, cudaDataType_t ab_type, size_t elsize, int64_t M, int64_t N,
                 int64_t K, bool trans_a, bool trans_b, const BatchLayout& L, int64_t count, float alpha, float beta,
                 const char* name) {
  const int64_t lda = trans_a ? M : K, ldb = trans_b ? K : N;
  const cublasOperation_t opa = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, opb = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  const int64_t inner = L.nd > 0 ? L.shape[L.nd - 1] : 1;
  const int64_t sa = L.nd > 0 ? L.as[L.nd - 1] : 0, sb = L.nd > 0 ? L.bs[L.nd - 1] : 0;
  const int64_t outer = count / inner;
  for (int64_t o = 0; o < outer; o++) {
    int64_t ao = 0, bo = 0, r = o;
    for (int d = L.nd - 2; d >= 0; d--) {
      const int64_t cc = r % L.shape[d];
      r /= L.shape[d];
      ao += cc * L.as[d];
      bo += cc * L.bs[d];
    }
    const char* ap = static_cast<const char*>(a) + ao * elsize;
    const char* bp = static_cast<const char*>(b) + bo * elsize;
    float* cp = c + o * inner * M * N;
    cublasStatus_t st;
    if (ab_type == CUDA_R_32F) {
      st = cublasSgemmStridedBatched(cublas(), opb, opa, int(N), int(M), int(K), &alpha,
                                     reinterpret_cast<const float*>(bp), int(ldb), sb,
                                     reinterpret_cast<const float*>(ap), int(lda), sa, &beta, cp, int(N), M * N,
                                     int(inner));
    } else {
      st = cublasGemmStridedBatchedEx(cublas(), opb, opa, int(N), int(M), int(K), &alpha, bp, ab_type, int(ldb), sb,
                                      ap, ab_type, int(lda), sa, &beta, cp, CUDA_R_32F, int(N), M * N, int(inner),
                                      CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    }
    cublas_check(st, name);
  }
}

bool cublas_ok(int64_t M, int64_t N, int64_t K, const BatchLayout& L, int64_t count) {
  return fits_int(M) && fits_int(N) && fits_int(K) && fits_int(L.nd > 0 ? L.shape[L.nd - 1] : 1) && count > 0;
}
#endif

}  // namespace

// ------------------------------------------------------------------------------------------------ launchers
void matmul_tiled(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                  bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride,
                  float alpha, float beta) {   // c (batch, M, N); a (batch, M, K) or (K, M); b (K, N) or (N, K)
  BatchLayout L;
  int64_t count;
  if (!prepare("matmul_tiled", c, M, N, K, nbatch, bshape, astride, bstride, beta, L, count)) return;
  gemm_f32_tiled_kernel<<<gemm_grid(M, N, count, kBM, kBN, "matmul_tiled"), 256, 0, stream()>>>(
      c, a, b, M, N, K, trans_a, trans_b, L, count, alpha, beta);
  CUDA_CHECK_LAUNCH("matmul_tiled");
}

void matmul(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b,
            int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride, float alpha,
            float beta) {
#ifdef MODALAB_HAVE_CUBLAS
  BatchLayout L;
  int64_t count;
  if (!prepare("matmul", c, M, N, K, nbatch, bshape, astride, bstride, beta, L, count)) return;
  if (cublas_ok(M, N, K, L, count))
    return cublas_gemm(c, a, b, CUDA_R_32F, sizeof(float), M, N, K, trans_a, trans_b, L, count, alpha, beta,
                       "matmul (cublasSgemm)");
#endif
  matmul_tiled(c, a, b, M, N, K, trans_a, trans_b, nbatch, bshape, astride, bstride, alpha, beta);
}

void matmul_half(float* c, const void* a, const void* b, DType ab_dtype, int64_t M, int64_t N, int64_t K,
                 bool trans_a, bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride,
                 const int64_t* bstride, float alpha, float beta, GemmImpl impl) {
  if (ab_dtype != DType::F16 && ab_dtype != DType::BF16)
    throw std::invalid_argument("modalab cuda: matmul_half: a and b must be f16 or bf16");
  BatchLayout L;
  int64_t count;
  if (!prepare("matmul_half", c, M, N, K, nbatch, bshape, astride, bstride, beta, L, count)) return;
  if (impl == GemmImpl::Auto) impl = have_cublas() ? GemmImpl::Cublas : GemmImpl::TensorCore;
  if (impl == GemmImpl::Cublas) {
#ifdef MODALAB_HAVE_CUBLAS
    if (cublas_ok(M, N, K, L, count))
      return cublas_gemm(c, a, b, ab_dtype == DType::BF16 ? CUDA_R_16BF : CUDA_R_16F, 2, M, N, K, trans_a, trans_b,
                         L, count, alpha, beta, "matmul_half (cublasGemmEx)");
#else
    throw std::invalid_argument("modalab cuda: matmul_half: this build has no cuBLAS");
#endif
  }
  const dim3 grid = gemm_grid(M, N, count, kTM, kTN, "matmul_half");
  const uint16_t* ah = static_cast<const uint16_t*>(a);
  const uint16_t* bh = static_cast<const uint16_t*>(b);
  if (ab_dtype == DType::BF16)
    gemm_wmma_kernel<__nv_bfloat16><<<grid, 256, 0, stream()>>>(c, ah, bh, M, N, K, trans_a, trans_b, L, count,
                                                                alpha, beta);
  else
    gemm_wmma_kernel<__half><<<grid, 256, 0, stream()>>>(c, ah, bh, M, N, K, trans_a, trans_b, L, count, alpha, beta);
  CUDA_CHECK_LAUNCH("matmul_half (wmma)");
}

}  // namespace cuda
}  // namespace modalab
