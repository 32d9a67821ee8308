// Bindings for the softmax op family (see src/api/binding.ts for the exported names and argument order).
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

// outer * len * inner, refusing negative sizes and products no tensor could have.
int64_t AxisCount(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t* outer, int64_t* len,
                  int64_t* inner) {
  *outer = Int(info, i, op);
  *len = Int(info, i + 1, op);
  *inner = Int(info, i + 2, op);
  if (*outer < 0 || *len < 0 || *inner < 0)
    Throw(info.Env(), std::string(op) + ": negative size (" + std::to_string(*outer) + ", " + std::to_string(*len) +
                          ", " + std::to_string(*inner) + ")");
  double n = static_cast<double>(*outer) * static_cast<double>(*len) * static_cast<double>(*inner);
  if (n > 9.0e15) Throw(info.Env(), std::string(op) + ": size " + std::to_string(n) + " is too large");
  return *outer * *len * *inner;
}

}  // namespace

void RegisterSoftmax(Napi::Env env, Napi::Object exports) {
  // softmax(y, yoff, x, xoff, outer, len, inner, log)
  exports.Set("softmax", Fn(env, "softmax", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "softmax";
    int64_t outer, len, inner;
    int64_t n = AxisCount(info, 4, op, &outer, &len, &inner);
    bool log = Bool(info, 7, op);
    float* y = F32(info, 0, n, op);
    const float* x = F32(info, 2, n, op);
    ML_KERNEL(info, op, softmax_forward, y, x, outer, len, inner, log);
    return info.Env().Undefined();
  }));

  // softmaxBackward(dx, dxoff, dy, dyoff, y, yoff, outer, len, inner, log)
  exports.Set("softmaxBackward", Fn(env, "softmaxBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "softmaxBackward";
    int64_t outer, len, inner;
    int64_t n = AxisCount(info, 6, op, &outer, &len, &inner);
    bool log = Bool(info, 9, op);
    float* dx = F32(info, 0, n, op);
    const float* dy = F32(info, 2, n, op);
    const float* y = F32(info, 4, n, op);
    ML_KERNEL(info, op, softmax_backward, dx, dy, y, outer, len, inner, log);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
