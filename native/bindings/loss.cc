// Bindings for the loss op family (see src/api/binding.ts for the exported names and argument order).
#include <cmath>
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

struct CEArgs {
  int64_t N, C;
  int32_t ignore_index;
  float smoothing;
};

// (N, C, ignoreIndex, smoothing) starting at argument i, checked.
CEArgs ReadCEArgs(const Napi::CallbackInfo& info, size_t i, const char* op) {
  CEArgs a;
  a.N = Int(info, i, op);
  a.C = Int(info, i + 1, op);
  if (a.N < 0 || a.C < 0)
    Throw(info.Env(), std::string(op) + ": negative size (N " + std::to_string(a.N) + ", C " + std::to_string(a.C) +
                          ")");
  if (static_cast<double>(a.N) * static_cast<double>(a.C) > 9.0e15)
    Throw(info.Env(), std::string(op) + ": size N " + std::to_string(a.N) + " x C " + std::to_string(a.C) +
                          " is too large");
  int64_t ig = Int(info, i + 2, op);
  if (ig < INT32_MIN || ig > INT32_MAX)
    Throw(info.Env(), std::string(op) + ": ignoreIndex " + std::to_string(ig) + " is not a 32-bit integer");
  a.ignore_index = static_cast<int32_t>(ig);
  double e = Num(info, i + 3, op);
  if (!(e >= 0.0 && e <= 1.0))
    Throw(info.Env(), std::string(op) + ": labelSmoothing must be in [0, 1], got " + std::to_string(e));
  a.smoothing = static_cast<float>(e);
  return a;
}

}  // namespace

void RegisterLoss(Napi::Env env, Napi::Object exports) {
  // crossEntropy(loss, loff, lse, lseoff, logits, xoff, targets, toff, N, C, ignoreIndex, smoothing)
  exports.Set("crossEntropy", Fn(env, "crossEntropy", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "crossEntropy";
    CEArgs a = ReadCEArgs(info, 8, op);
    float* loss = F32(info, 0, a.N, op);
    float* lse = F32(info, 2, a.N, op);
    const float* logits = F32(info, 4, a.N * a.C, op);
    const int32_t* targets = I32(info, 6, a.N, op);
    int64_t bad = ML_KERNEL(info, op, cross_entropy_forward, loss, lse, logits, targets, a.N, a.C, a.ignore_index,
                            a.smoothing);
    if (bad >= 0)
      Throw(info.Env(), std::string(op) + ": target " + std::to_string(ElementI32(targets, bad)) + " at row " +
                            std::to_string(bad) + " is outside [0, " + std::to_string(a.C) + ")" +
                            " (and is not ignoreIndex " + std::to_string(a.ignore_index) + ")");
    return info.Env().Undefined();
  }));

  // crossEntropyBackward(dlogits, dxoff, dloss, dloff, logits, xoff, lse, lseoff, targets, toff, N, C,
  //                      ignoreIndex, smoothing)
  exports.Set("crossEntropyBackward",
              Fn(env, "crossEntropyBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
                const char* op = "crossEntropyBackward";
                CEArgs a = ReadCEArgs(info, 10, op);
                float* dlogits = F32(info, 0, a.N * a.C, op);
                const float* dloss = F32(info, 2, a.N, op);
                const float* logits = F32(info, 4, a.N * a.C, op);
                const float* lse = F32(info, 6, a.N, op);
                const int32_t* targets = I32(info, 8, a.N, op);
                ML_KERNEL(info, op, cross_entropy_backward, dlogits, dloss, logits, lse, targets, a.N, a.C,
                          a.ignore_index, a.smoothing);
                return info.Env().Undefined();
              }));
}

}  // namespace bind
}  // namespace modalab
