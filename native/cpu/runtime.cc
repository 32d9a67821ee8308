// Build facts the addon reports through ml.backendInfo().
#include "modalab/kernels.h"

namespace modalab {
namespace cpu {

const char* blas_name() {
#ifdef MODALAB_BLAS_NAME
  return MODALAB_BLAS_NAME;
#else
  return "portable blocked GEMM";
#endif
}

const char* simd_name() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return "avx512";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2+fma";
  return "sse2";
#elif defined(__aarch64__)
  return "neon";
#else
  return "portable";
#endif
}

}  // namespace cpu
}  // namespace modalab
