// Bindings for the layernorm op family (see src/api/binding.ts for the exported names and argument order).
#include <cmath>
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

// rows * C, refusing negative sizes and products no tensor could have.
int64_t RowsCount(const Napi::CallbackInfo& info, size_t i, const char* op, int64_t* rows, int64_t* C) {
  *rows = Int(info, i, op);
  *C = Int(info, i + 1, op);
  if (*rows < 0 || *C < 0)
    Throw(info.Env(), std::string(op) + ": negative size (rows " + std::to_string(*rows) + ", C " +
                          std::to_string(*C) + ")");
  if (static_cast<double>(*rows) * static_cast<double>(*C) > 9.0e15)
    Throw(info.Env(), std::string(op) + ": size rows " + std::to_string(*rows) + " x C " + std::to_string(*C) +
                          " is too large");
  return *rows * *C;
}

}  // namespace

void RegisterLayernorm(Napi::Env env, Napi::Object exports) {
  // layerNorm(y, yoff, mean, moff, rstd, roff, x, xoff, w|null, woff, b|null, boff, rows, C, eps)
  exports.Set("layerNorm", Fn(env, "layerNorm", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "layerNorm";
    int64_t rows, C;
    int64_t n = RowsCount(info, 12, op, &rows, &C);
    double eps = Num(info, 14, op);
    if (!(eps >= 0) || !std::isfinite(eps))
      Throw(info.Env(), std::string(op) + ": eps must be a finite number >= 0, got " + std::to_string(eps));
    float* y = F32(info, 0, n, op);
    float* mean = F32(info, 2, rows, op);
    float* rstd = F32(info, 4, rows, op);
    const float* x = F32(info, 6, n, op);
    const float* w = F32OrNull(info, 8, C, op);
    const float* b = F32OrNull(info, 10, C, op);
    ML_KERNEL(info, op, layernorm_forward, y, mean, rstd, x, w, b, rows, C, static_cast<float>(eps));
    return info.Env().Undefined();
  }));

  // layerNormBackward(dx, dxoff, dw|null, dwoff, db|null, dboff, dy, dyoff, x, xoff, w|null, woff, mean, moff,
  //                   rstd, roff, rows, C)
  exports.Set("layerNormBackward", Fn(env, "layerNormBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "layerNormBackward";
    int64_t rows, C;
    int64_t n = RowsCount(info, 16, op, &rows, &C);
    float* dx = F32(info, 0, n, op);
    float* dw = F32OrNull(info, 2, C, op);
    float* db = F32OrNull(info, 4, C, op);
    const float* dy = F32(info, 6, n, op);
    const float* x = F32(info, 8, n, op);
    const float* w = F32OrNull(info, 10, C, op);
    const float* mean = F32(info, 12, rows, op);
    const float* rstd = F32(info, 14, rows, op);
    ML_KERNEL(info, op, layernorm_backward, dx, dw, db, dy, x, w, mean, rstd, rows, C);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
