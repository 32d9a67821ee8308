// The counter-based generator of native/cpu/creation.cc on the device: Philox4x32-10 (Salmon et al., SC'11,
// Random123's constants), 10 rounds, counter (ctr, 0) of 128 bits, key = seed. Word p of the stream (p = offset
// + i for element i of a request) is lane p % 4 of the block with counter p / 4, so a thread that owns one block
// computes four consecutive stream positions at once. Internal to native/cuda (dropout.cu, random.cu).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace modalab {
namespace cuda {

// The four words of block `ctr` (low 64 bits of the counter; the high 64 are zero), bit for bit the CPU's
// philox_blocks(): __umulhi / the 32-bit product are the high and low halves of its 64-bit product.
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

// u in [0, 1): the word's top 24 bits times 2^-24 (exact in f32), as the CPU's words_to_uniform.
__device__ __forceinline__ float philox_unit(uint32_t w) {
  return static_cast<float>(static_cast<int32_t>(w >> 8)) * (1.0f / 16777216.0f);
}

// The grid-stride loop of the element-wise generators (dropout, rand_uniform): this thread's Philox blocks among the
// `nblocks` that cover stream positions offset .. offset + n - 1, and fn(i, word) for each element i in [0, n) of
// them (positions wrap like the CPU's uint64 ones).
template <typename F>
__device__ __forceinline__ void philox_for_each(int64_t n, uint64_t seed, uint64_t offset, int64_t nblocks, F fn) {
  const uint64_t first = offset >> 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < nblocks; t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t ctr = first + static_cast<uint64_t>(t);
    const uint4 w = philox4x32_10(ctr, seed);
    const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
    for (int lane = 0; lane < 4; lane++) {
      const int64_t i = static_cast<int64_t>(ctr * 4 + lane - offset);
      if (i >= 0 && i < n) fn(i, words[lane]);
    }
  }
}

// How many Philox blocks cover stream positions offset .. offset + n - 1 (n > 0).
inline int64_t philox_block_count(uint64_t offset, int64_t n) {
  return static_cast<int64_t>(((offset + static_cast<uint64_t>(n) - 1) >> 2) - (offset >> 2)) + 1;
}

}  // namespace cuda
}  // namespace modalab
