// Dropout with the CPU's mask: element i is kept iff u >= p, u = uniform(seed, offset + i) from the Philox4x32-10
// stream of creation.cc (word p of the stream is lane p % 4 of the block with counter p / 4, key = seed; u = the
// word's top 24 bits times 2^-24, exact in f32). Kept values are multiplied by 1 / (1 - p) (one f32 rounding,
// computed on the host as the CPU does), dropped ones are 0: the same bits as cpu::dropout_forward. The mask is
// never stored; forward and backward regenerate it.
//
// One thread per Philox block (four consecutive stream positions), so each block of words is computed once. The
// generator itself is in philox.cuh, shared with rand_uniform / rand_normal (random.cu).
#include "common.cuh"
#include "philox.cuh"

namespace modalab {
namespace cuda {
namespace {

// out (n) = keep_i ? in_i * scale : 0 for stream positions offset .. offset + n - 1.
__global__ void dropout_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t n, float p, float scale,
                               uint64_t seed, uint64_t offset, int64_t nblocks) {
  philox_for_each(n, seed, offset, nblocks, [&](int64_t i, uint32_t word) {
    const float v = __fmul_rn(in[i], scale);
    out[i] = philox_unit(word) >= p ? v : 0.0f;
  });
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
  const int64_t nblocks = philox_block_count(offset, n);
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
