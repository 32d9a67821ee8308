// Random numbers with the CPU's stream (native/cpu/creation.cc): Philox4x32-10 (philox.cuh), element i reading
// stream position offset + i, so a tensor filled on the GPU holds the numbers the CPU would have written.
//   rand_uniform: lo + (hi - lo) u, u = the word's top 24 bits times 2^-24; the product and the sum rounded
//                 separately (__fmul_rn / __fadd_rn, never fused), range = hi - lo rounded on the host as on the
//                 CPU: bit for bit cpu::rand_uniform.
//   rand_normal:  Box-Muller on the pair of words {2k, 2k + 1} of a Philox block, in double: u1 = (w0 + 1/2) 2^-32,
//                 u2 = w1 2^-32, r = sqrt(-2 log u1), theta = 2 pi u2; position 2k takes r cos(theta), 2k + 1
//                 takes r sin(theta), each rounded to f32, then mean + stddev z in f32 (unfused). The arithmetic
//                 is the CPU's; only the device's double log / sin / cos (1-2 ulp in double) can differ from
//                 glibc's, which after the rounding to f32 changes a value by at most one f32 ulp of z, rarely.
//
// One thread per Philox block (four consecutive stream positions, two Box-Muller pairs), grid-stride.
#include "common.cuh"
#include "philox.cuh"

namespace modalab {
namespace cuda {
namespace {

__global__ void rand_uniform_kernel(float* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset,
                                    int64_t nblocks, float lo, float range) {   // out (n)
  philox_for_each(n, seed, offset, nblocks, [&](int64_t i, uint32_t word) {
    out[i] = __fadd_rn(lo, __fmul_rn(range, philox_unit(word)));
  });
}

__global__ void rand_normal_kernel(float* __restrict__ out, int64_t n, uint64_t seed, uint64_t offset,
                                   int64_t nblocks, float mean, float stddev) {   // out (n)
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  const uint64_t first = offset >> 2;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < nblocks; t += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t ctr = first + static_cast<uint64_t>(t);
    const uint4 w = philox4x32_10(ctr, seed);
#pragma unroll
    for (int pair = 0; pair < 2; pair++) {
      const int64_t i0 = static_cast<int64_t>(ctr * 4 + 2 * pair - offset);   // the pair's even position
      const bool want0 = i0 >= 0 && i0 < n, want1 = i0 + 1 >= 0 && i0 + 1 < n;
      if (!want0 && !want1) continue;
      const uint32_t w0 = pair ? w.z : w.x, w1 = pair ? w.w : w.y;
      // (w0 + 1/2) 2^-32 and w1 2^-32 are exact; each step below is one rounded operation, as on the CPU
      // (a sum times a constant and single products cannot be contracted into an fma).
      const double u1 = (static_cast<double>(w0) + 0.5) * (1.0 / 4294967296.0);
      const double u2 = static_cast<double>(w1) * (1.0 / 4294967296.0);
      const double r = sqrt(-2.0 * log(u1));
      const double theta = kTwoPi * u2;
      double s, c;
      sincos(theta, &s, &c);
      if (want0) out[i0] = __fadd_rn(mean, __fmul_rn(stddev, static_cast<float>(r * c)));
      if (want1) out[i0 + 1] = __fadd_rn(mean, __fmul_rn(stddev, static_cast<float>(r * s)));
    }
  }
}

}  // namespace

void rand_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi) {   // out (n)
  if (n <= 0) return;
  const float range = hi - lo;
  const int64_t nblocks = philox_block_count(offset, n);
  rand_uniform_kernel<<<grid_for(nblocks, 256), 256, 0, stream()>>>(out, n, seed, offset, nblocks, lo, range);
  CUDA_CHECK_LAUNCH("rand_uniform");
}

void rand_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float stddev) {   // out (n)
  if (n <= 0) return;
  const int64_t nblocks = philox_block_count(offset, n);
  rand_normal_kernel<<<grid_for(nblocks, 256), 256, 0, stream()>>>(out, n, seed, offset, nblocks, mean, stddev);
  CUDA_CHECK_LAUNCH("rand_normal");
}

}  // namespace cuda
}  // namespace modalab
