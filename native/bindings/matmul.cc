// Bindings for the matmul op family (see src/api/binding.ts for the exported names and argument order).
//
// matmul(c, coff, a, aoff, b, boff, M, N, K, transA, transB, bshape, astride, bstride, alpha, beta)
// Every extent is checked against its buffer: c covers prod(bshape) contiguous (M, N) matrices; a and b cover
// the furthest batch offset their strides reach plus one (M, K) / (K, N) matrix.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

}  // namespace

void RegisterMatmul(Napi::Env env, Napi::Object exports) {
  exports.Set("matmul", Fn(env, "matmul", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "matmul";
    int64_t M = Int(info, 6, op), N = Int(info, 7, op), K = Int(info, 8, op);
    bool ta = Bool(info, 9, op), tb = Bool(info, 10, op);
    std::vector<int64_t> bshape = IntArray(info, 11, op), as = IntArray(info, 12, op), bs = IntArray(info, 13, op);
    float alpha = static_cast<float>(Num(info, 14, op)), beta = static_cast<float>(Num(info, 15, op));
    if (M < 0 || N < 0 || K < 0)
      Throw(info.Env(), "matmul: negative size M=" + std::to_string(M) + " N=" + std::to_string(N) +
                            " K=" + std::to_string(K));
    if (as.size() != bshape.size() || bs.size() != bshape.size())
      Throw(info.Env(), "matmul: bshape, astride and bstride must have the same length (" +
                            std::to_string(bshape.size()) + ", " + std::to_string(as.size()) + ", " +
                            std::to_string(bs.size()) + ")");
    if (bshape.size() > 64) Throw(info.Env(), "matmul: more than 64 batch axes");
    int64_t nbatch = 1;
    for (int64_t d : bshape) {
      if (d < 0) Throw(info.Env(), "matmul: negative batch size " + std::to_string(d));
      nbatch = Mul(nbatch, d, op);
    }
    int64_t mn = Mul(M, N, op), mk = Mul(M, K, op), kn = Mul(K, N, op);
    float* c = F32(info, 0, Mul(nbatch, mn, op), op);
    const float* a = F32(info, 2, BatchedExtent(bshape, as, mk), op);
    const float* b = F32(info, 4, BatchedExtent(bshape, bs, kn), op);
    ML_KERNEL(info, op, matmul, c, a, b, M, N, K, ta, tb, static_cast<int>(bshape.size()), bshape.data(), as.data(),
              bs.data(), alpha, beta);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
