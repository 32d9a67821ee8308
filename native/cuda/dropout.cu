// Dropout with the CPU's mask: element i is kept iff u >= p, u = uniform(seed, offset + i) from the Philox4x32-10
// stream of creation.cc (word p of the stream is lane p % 4 of the block with counter p / 4, key = seed; u = the
// word's top 24 bits times 2^-24, exact in f32). Kept values are multiplied by 1 / (1 - p) (one f32 rounding,
// computed on the host as the CPU does), dropped ones are 0: the same bits as cpu::dropout_forward. The mask is
// never stored; forward and backward regenerate it.
//
// One thread per Philox block (four consecutive stream positions), so each block of words is computed once.
#include "common.cuh"

namespace modalab {
namespace cuda {
namespace {

__device__ __forceinline__ uint4 philox4x32_10(uint64_t ctr, uint64_t seed) {
  uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
#pragma unroll
  for (int r = 0; r < 10; r++) {
    const uint32_t hi0 = __umulhi(0xD2511F53u, c0), lo0 = 0xD2511F53u * c0;
    const uint32_t hi1 = __umulhi(0xCD9E8D57u, c2), lo1 = 0xCD9E8D57u * c2;
    const uint32_t n0 = hi1 ^ c1 ^ k0;
    const uint32_t n2 = hi0 ^ c3 ^ k1;
    c1 = lo1;
    c3 = lo0;
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return make_uint4(c0, c1, c2, c3);
}

// out (n) = keep_i ? in_i * scale : 0 for stream positions offset .. offset + n - 1.
__global__ void dropout_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t offset, int64_t nblocks) {
  const uint64_t first = offset >> 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < nblocks; t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t ctr = first + static_cast<uint64_t>(t);
    const uint4 w = philox4x32_10(ctr, seed);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int lane = 0; lane < 4; lane++) {
      const int64_t i = static_cast<int64_t>(ctr * 4 + lane - offset);   // wraps like the CPU's uint64 positions
      if (i < 0 || i >= n) continue;
      const float u = static_cast<float>(static_cast<int32_t>(words[lane] >> 8)) * (1.0f / 16777216.0f);
      const float v = __fmul_rn(in[i], scale);
      out[i] = u >= p ? v : 0.0f;
    }
  }
}

void dropout_apply(float* out, const float* in, int64_t n, float p, uint64_t seed, uint64_t offset) {
  if (n <= 0) return;
  if (p <= 0.0f) {
    if (out != in) memcpy_d2d(out, in, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  if (p >= 1.0f) {
    fill_f32(out, n, 0.0f);
    return;
  }
  const float scale = 1.0f / (1.0f - p);
  const int64_t nblocks = static_cast<int64_t>(((offset + static_cast<uint64_t>(n) - 1) >> 2) - (offset >> 2)) + 1;
  dropout_kernel<<<grid_for(nblocks, 256), 256, 0, stream()>>>(out, in, n, p, scale, seed, offset, nblocks);
  CUDA_CHECK_LAUNCH("dropout");
}

}  // namespace

void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset) {
  dropout_apply(y, x, n, p, seed, offset);
}
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t offset) {
  dropout_apply(dx, dy, n, p, seed, offset);
}

}  // namespace cuda
}  // namespace modalab
