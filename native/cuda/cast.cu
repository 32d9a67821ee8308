// Casts between F32, F16, BF16 and I32, bit-for-bit what cpu::cast gives (native/cpu/creation.cc).
//
// Rounding is the hardware's round-to-nearest-even conversion (which, like the CPU routine, rounds subnormals
// exactly and overflows to infinity); only NaN needs care, since the hardware writes one canonical NaN while the
// CPU keeps the payload (f16) or writes PyTorch's 0x7FC0 (bf16). Conversions involving i32 or going between
// the two half types pass through f32, as PyTorch's (and the CPU's) do.
//
// Memory-bound, so each thread moves a pack of 8 elements with 16-byte loads and stores. The packs start at the
// first element where input and output are both 16-byte aligned; the few elements before it (and after the last
// whole pack) are done one by one. If no such element exists (misalignments that never line up), all elements go
// one by one, still coalesced.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "common.cuh"
#include "half.cuh"

namespace modalab {
namespace cuda {
namespace {

__device__ __forceinline__ int32_t f32_to_i32(float f) {
  if (!(f > -2147483649.0f && f < 2147483648.0f)) return INT32_MIN;   // NaN and out of range, as the CPU
  return static_cast<int32_t>(f);
}

// One functor per (out, in) pair; `float` is the common middle.
template <DType O, DType I> struct Conv;
#define MODALAB_CONV(O, I, OutT, InT, expr)                                      \
  template <> struct Conv<DType::O, DType::I> {                                  \
    using Out = OutT;                                                            \
    using In = InT;                                                              \
    __device__ __forceinline__ Out operator()(In v) const { return expr; }      \
  };
MODALAB_CONV(F32, F16, float, uint16_t, h_f16_to_f32(v))
MODALAB_CONV(F32, BF16, float, uint16_t, h_bf16_to_f32(v))
MODALAB_CONV(F32, I32, float, int32_t, static_cast<float>(v))
MODALAB_CONV(F16, F32, uint16_t, float, h_f32_to_f16(v))
MODALAB_CONV(F16, BF16, uint16_t, uint16_t, h_f32_to_f16(h_bf16_to_f32(v)))
MODALAB_CONV(F16, I32, uint16_t, int32_t, h_f32_to_f16(static_cast<float>(v)))
MODALAB_CONV(BF16, F32, uint16_t, float, h_f32_to_bf16(v))
MODALAB_CONV(BF16, F16, uint16_t, uint16_t, h_f32_to_bf16(h_f16_to_f32(v)))
MODALAB_CONV(BF16, I32, uint16_t, int32_t, h_f32_to_bf16(static_cast<float>(v)))
MODALAB_CONV(I32, F32, int32_t, float, f32_to_i32(v))
MODALAB_CONV(I32, F16, int32_t, uint16_t, f32_to_i32(h_f16_to_f32(v)))
MODALAB_CONV(I32, BF16, int32_t, uint16_t, f32_to_i32(h_bf16_to_f32(v)))
#undef MODALAB_CONV

constexpr int kPack = 8;
template <typename T>
struct alignas(16) Pack {
  T v[kPack];   // 16 or 32 bytes: one or two 16-byte accesses
};

template <typename C>
__global__ void cast_kernel(typename C::Out* out, const typename C::In* x, int64_t n, int64_t head, int64_t npack) {
  using Out = typename C::Out;
  using In = typename C::In;
  const C conv;
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const Pack<In>* src = reinterpret_cast<const Pack<In>*>(x + head);
  Pack<Out>* dst = reinterpret_cast<Pack<Out>*>(out + head);
  for (int64_t i = tid; i < npack; i += stride) {
    const Pack<In> p = src[i];
    Pack<Out> q;
#pragma unroll
    for (int k = 0; k < kPack; k++) q.v[k] = conv(p.v[k]);
    dst[i] = q;
  }
  // Head (before the first aligned pack) and tail (after the last whole one): fewer than kPack each, unless
  // nothing lines up, in which case head == n and every thread loops over it.
  for (int64_t i = tid; i < head; i += stride) out[i] = conv(x[i]);
  const int64_t t0 = head + npack * kPack;
  if (tid < n - t0) out[t0 + tid] = conv(x[t0 + tid]);
}

template <DType O, DType I>
void launch_cast(void* out, const void* x, int64_t n) {
  using C = Conv<O, I>;
  using Out = typename C::Out;
  using In = typename C::In;
  const uintptr_t ao = reinterpret_cast<uintptr_t>(out), ax = reinterpret_cast<uintptr_t>(x);
  int64_t head = n;   // no common alignment: all one by one
  for (int64_t h = 0; h < kPack && h < n; h++) {
    if ((ao + h * sizeof(Out)) % 16 == 0 && (ax + h * sizeof(In)) % 16 == 0) {
      head = h;
      break;
    }
  }
  const int64_t npack = head < n ? (n - head) / kPack : 0;
  constexpr int T = 256;
  const int64_t work = npack > 0 ? npack : (head > 0 ? head : 1);
  cast_kernel<C><<<grid_for(work, T), T, 0, stream()>>>(static_cast<Out*>(out), static_cast<const In*>(x), n, head,
                                                        npack);
  CUDA_CHECK_LAUNCH("cast");
}

}  // namespace

void cast(void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n) {   // out (n), x (n)
  if (n <= 0) return;
  if (out_dtype == x_dtype) return memcpy_d2d(out, x, static_cast<size_t>(n) * dtype_size(x_dtype));
  using F = DType;
  switch (static_cast<int>(out_dtype) * 4 + static_cast<int>(x_dtype)) {
    case 0 * 4 + 1: return launch_cast<F::F32, F::F16>(out, x, n);
    case 0 * 4 + 2: return launch_cast<F::F32, F::BF16>(out, x, n);
    case 0 * 4 + 3: return launch_cast<F::F32, F::I32>(out, x, n);
    case 1 * 4 + 0: return launch_cast<F::F16, F::F32>(out, x, n);
    case 1 * 4 + 2: return launch_cast<F::F16, F::BF16>(out, x, n);
    case 1 * 4 + 3: return launch_cast<F::F16, F::I32>(out, x, n);
    case 2 * 4 + 0: return launch_cast<F::BF16, F::F32>(out, x, n);
    case 2 * 4 + 1: return launch_cast<F::BF16, F::F16>(out, x, n);
    case 2 * 4 + 3: return launch_cast<F::BF16, F::I32>(out, x, n);
    case 3 * 4 + 0: return launch_cast<F::I32, F::F32>(out, x, n);
    case 3 * 4 + 1: return launch_cast<F::I32, F::F16>(out, x, n);
    case 3 * 4 + 2: return launch_cast<F::I32, F::BF16>(out, x, n);
    default:
      throw std::invalid_argument("modalab cuda: cast: unknown dtype pair " + std::to_string(int(out_dtype)) + " <- " +
                                  std::to_string(int(x_dtype)));
  }
}

}  // namespace cuda
}  // namespace modalab
