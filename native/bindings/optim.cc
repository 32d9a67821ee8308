// Bindings for the optim op family (see src/api/binding.ts for the exported names and argument order).
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

float F(const Napi::CallbackInfo& info, size_t i, const char* op) { return static_cast<float>(Num(info, i, op)); }

}  // namespace

void RegisterOptim(Napi::Env env, Napi::Object exports) {
  // adamw(p, poff, m, moff, v, voff, g, goff, n, lr, beta1, beta2, eps, weightDecay, biasC1, biasC2)
  exports.Set("adamw", Fn(env, "adamw", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "adamw";
    int64_t n = Count(info, 8, op);
    float* p = F32(info, 0, n, op);
    float* m = F32(info, 2, n, op);
    float* v = F32(info, 4, n, op);
    const float* g = F32(info, 6, n, op);
    ML_KERNEL(info, op, adamw_step, p, m, v, g, n, Num(info, 9, op), Num(info, 10, op), Num(info, 11, op),
              Num(info, 12, op), Num(info, 13, op), Num(info, 14, op), Num(info, 15, op));
    return info.Env().Undefined();
  }));

  // sgd(p, poff, buf|null, boff, g, goff, n, lr, momentum, dampening, weightDecay, nesterov, firstStep)
  exports.Set("sgd", Fn(env, "sgd", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "sgd";
    int64_t n = Count(info, 6, op);
    float* p = F32(info, 0, n, op);
    float* buf = F32OrNull(info, 2, n, op);
    const float* g = F32(info, 4, n, op);
    ML_KERNEL(info, op, sgd_step, p, buf, g, n, Num(info, 7, op), Num(info, 8, op), Num(info, 9, op),
              Num(info, 10, op), Bool(info, 11, op), Bool(info, 12, op));
    return info.Env().Undefined();
  }));

  // scaleInplace(x, xoff, n, s)
  exports.Set("scaleInplace", Fn(env, "scaleInplace", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "scaleInplace";
    int64_t n = Count(info, 2, op);
    float* x = F32(info, 0, n, op);
    ML_KERNEL(info, op, scale_inplace, x, n, F(info, 3, op));
    return info.Env().Undefined();
  }));

  // addInplace(x, xoff, y, yoff, n, alpha)
  exports.Set("addInplace", Fn(env, "addInplace", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "addInplace";
    int64_t n = Count(info, 4, op);
    float* x = F32(info, 0, n, op);
    const float* y = F32(info, 2, n, op);
    ML_KERNEL(info, op, add_inplace, x, y, n, F(info, 5, op));
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
