// Bindings for the half-precision matmul (see src/api/binding.ts for the exported names and argument order).
//
// matmulHalf(c, coff, a, aoff, b, boff, dtype, M, N, K, transA, transB, bshape, astride, bstride, alpha, beta)
//   c f32; a and b both `dtype` (DTypeCode F16 or BF16). Extents are checked as for matmul: c covers prod(bshape)
//   contiguous (M, N) matrices; a and b cover the furthest batch offset their strides reach plus one matrix.
// halfPaths() -> { cast, gemmBf16, gemmF16 }: the instruction paths the cast and GEMM kernels picked here.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

}  // namespace

void RegisterMatmulHalf(Napi::Env env, Napi::Object exports) {
  exports.Set("matmulHalf", Fn(env, "matmulHalf", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "matmulHalf";
    const int64_t code = Int(info, 6, op);
    if (code != static_cast<int64_t>(DType::F16) && code != static_cast<int64_t>(DType::BF16))
      Throw(info.Env(), "matmulHalf: dtype code must be f16 (1) or bf16 (2), got " + std::to_string(code));
    const DType dtype = static_cast<DType>(code);
    const int64_t M = Int(info, 7, op), N = Int(info, 8, op), K = Int(info, 9, op);
    const bool ta = Bool(info, 10, op), tb = Bool(info, 11, op);
    std::vector<int64_t> bshape = IntArray(info, 12, op), as = IntArray(info, 13, op), bs = IntArray(info, 14, op);
    const float alpha = static_cast<float>(Num(info, 15, op)), beta = static_cast<float>(Num(info, 16, op));
    if (M < 0 || N < 0 || K < 0)
      Throw(info.Env(), "matmulHalf: negative size M=" + std::to_string(M) + " N=" + std::to_string(N) +
                            " K=" + std::to_string(K));
    if (as.size() != bshape.size() || bs.size() != bshape.size())
      Throw(info.Env(), "matmulHalf: bshape, astride and bstride must have the same length");
    if (bshape.size() > 64) Throw(info.Env(), "matmulHalf: more than 64 batch axes");
    int64_t nbatch = 1;
    for (int64_t d : bshape) {
      if (d < 0) Throw(info.Env(), "matmulHalf: negative batch size " + std::to_string(d));
      nbatch = Mul(nbatch, d, op);
    }
    const int64_t mn = Mul(M, N, op), mk = Mul(M, K, op), kn = Mul(K, N, op);
    float* c = F32(info, 0, Mul(nbatch, mn, op), op);
    const auto* a = static_cast<const uint16_t*>(Resolve(info, 2, BatchedExtent(bshape, as, mk), 2, op));
    const auto* b = static_cast<const uint16_t*>(Resolve(info, 4, BatchedExtent(bshape, bs, kn), 2, op));
    ML_KERNEL(info, op, matmul_half, c, a, b, dtype, M, N, K, ta, tb, static_cast<int>(bshape.size()), bshape.data(),
              as.data(), bs.data(), alpha, beta);
    return info.Env().Undefined();
  }));

  exports.Set("halfPaths", Fn(env, "halfPaths", [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("cast", cpu::cast_path());
    o.Set("gemmBf16", cpu::matmul_half_path(DType::BF16));
    o.Set("gemmF16", cpu::matmul_half_path(DType::F16));
    return o;
  }));
}

}  // namespace bind
}  // namespace modalab
