// f16 / bf16 <-> f32 on the device with the CPU's rules (cpu::cast: round to nearest even, PyTorch's canonical
// NaNs 0x7E00 | sign | payload for f16 and 0x7FC0 for bf16), shared by the casts (cast.cu) and the fused
// kernels (attention).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace modalab {
namespace cuda {

__device__ __forceinline__ uint16_t h_f32_to_f16(float f) {
  const uint32_t x = __float_as_uint(f), ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return static_cast<uint16_t>(((x >> 16) & 0x8000) | 0x7E00 | ((ax >> 13) & 0x3FF));
  return __half_as_ushort(__float2half_rn(f));
}
__device__ __forceinline__ float h_f16_to_f32(uint16_t h) {
  const uint32_t e = (h >> 10) & 0x1F, m = h & 0x3FF;
  if (e == 31 && m) return __uint_as_float((static_cast<uint32_t>(h & 0x8000) << 16) | 0x7FC00000u | (m << 13));
  return __half2float(__ushort_as_half(h));
}
__device__ __forceinline__ uint16_t h_f32_to_bf16(float f) {
  if ((__float_as_uint(f) & 0x7FFFFFFFu) > 0x7F800000u) return 0x7FC0;
  return __bfloat16_as_ushort(__float2bfloat16_rn(f));
}
__device__ __forceinline__ float h_bf16_to_f32(uint16_t h) { return __uint_as_float(static_cast<uint32_t>(h) << 16); }

// Element i of a tensor of dtype dt (0 = F32, 1 = F16, 2 = BF16 in the kernels' encoding), widened to f32.
__device__ __forceinline__ float load_as_f32(const void* p, int dt, int64_t i) {
  if (dt == 0) return static_cast<const float*>(p)[i];
  const uint16_t h = static_cast<const uint16_t*>(p)[i];
  return dt == 2 ? h_bf16_to_f32(h) : h_f16_to_f32(h);
}
__device__ __forceinline__ void store_from_f32(void* p, int dt, int64_t i, float v) {
  if (dt == 0) {
    static_cast<float*>(p)[i] = v;
  } else {
    static_cast<uint16_t*>(p)[i] = dt == 2 ? h_f32_to_bf16(v) : h_f32_to_f16(v);
  }
}

}  // namespace cuda
}  // namespace modalab
