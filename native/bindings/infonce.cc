// Bindings for the infoNCE op family (see src/api/binding.ts for the exported names and argument order).
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

// (N, D) starting at argument i, checked: non-negative and small enough that N * D and 4 N are exact.
void ReadSizes(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t* N, int64_t* D) {
  *N = Int(info, i, op);
  *D = Int(info, i + 1, op);
  if (*N < 0 || *D < 0)
    Throw(info.Env(), std::string(op) + ": negative size (N " + std::to_string(*N) + ", D " + std::to_string(*D) +
                          ")");
  if (static_cast<double>(*N) * static_cast<double>(*D) > 9.0e15 || static_cast<double>(*N) > 1.0e15)
    Throw(info.Env(), std::string(op) + ": size N " + std::to_string(*N) + " x D " + std::to_string(*D) +
                          " is too large");
}

}  // namespace

void RegisterInfonce(Napi::Env env, Napi::Object exports) {
  // infoNCE(loss, loff, stats, soff, a, aoff, b, boff, logitScale, lsoff, N, D)
  exports.Set("infoNCE", Fn(env, "infoNCE", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "infoNCE";
    int64_t N, D;
    ReadSizes(info, 10, op, &N, &D);
    float* loss = F32(info, 0, 1, op);
    float* stats = F32(info, 2, 4 * N, op);
    const float* a = F32(info, 4, N * D, op);
    const float* b = F32(info, 6, N * D, op);
    const float logit_scale = ReadF32(info, 8, op);
    ML_KERNEL(info, op, infonce_forward, loss, stats, a, b, N, D, logit_scale);
    return info.Env().Undefined();
  }));

  // infoNCEBackward(da, daoff, db, dboff, dlogitScale, dlsoff, dloss, dloff, a, aoff, b, boff, stats, soff,
  //                 logitScale, lsoff, N, D); da, db and dlogitScale may be null (that gradient is not computed)
  exports.Set("infoNCEBackward", Fn(env, "infoNCEBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "infoNCEBackward";
    int64_t N, D;
    ReadSizes(info, 16, op, &N, &D);
    float* da = F32OrNull(info, 0, N * D, op);
    float* db = F32OrNull(info, 2, N * D, op);
    float* dls = F32OrNull(info, 4, 1, op);
    const float* dloss = F32(info, 6, 1, op);
    const float* a = F32(info, 8, N * D, op);
    const float* b = F32(info, 10, N * D, op);
    const float* stats = F32(info, 12, 4 * N, op);
    const float logit_scale = ReadF32(info, 14, op);
    ML_KERNEL(info, op, infonce_backward, da, db, dls, dloss, a, b, stats, N, D, logit_scale);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
