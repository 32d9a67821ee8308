// Bindings for reductions (names and argument order: src/api/binding.ts). Every count is checked against the
// buffers before a kernel runs.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

// (outer, len, inner) starting at argument i: non-negative, and their product must not overflow.
struct Axis {
  int64_t outer, len, inner;
  int64_t total() const { return outer * len * inner; }
  int64_t rows() const { return outer * inner; }
};

Axis ReadAxis(const Napi::CallbackInfo& info, size_t i, const char* op) {
  Axis a{Int(info, i, op), Int(info, i + 1, op), Int(info, i + 2, op)};
  if (a.outer < 0 || a.len < 0 || a.inner < 0)
    Throw(info.Env(), std::string(op) + ": negative size (outer " + std::to_string(a.outer) + ", len " +
                          std::to_string(a.len) + ", inner " + std::to_string(a.inner) + ")");
  if (static_cast<double>(a.outer) * static_cast<double>(a.len) * static_cast<double>(a.inner) > 9.0e15)
    Throw(info.Env(), std::string(op) + ": sizes are too large");
  return a;
}

}  // namespace

void RegisterReduce(Napi::Env env, Napi::Object exports) {
  // reduce(op, out, ooff, argidx | null, aoff, x, xoff, outer, len, inner)
  exports.Set("reduce", Fn(env, "reduce", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "reduce";
    int64_t code = Int(info, 0, op);
    if (code < 0 || code > static_cast<int64_t>(ReduceOp::Min))
      Throw(info.Env(), std::string(op) + ": unknown reduce op " + std::to_string(code));
    Axis a = ReadAxis(info, 7, op);
    if ((code == static_cast<int64_t>(ReduceOp::Max) || code == static_cast<int64_t>(ReduceOp::Min)) && a.len > INT32_MAX)
      Throw(info.Env(), std::string(op) + ": an axis of " + std::to_string(a.len) + " elements is too long for i32 arg indices");
    float* out = F32(info, 1, a.rows(), op);
    int32_t* arg = (info[3].IsNull() || info[3].IsUndefined()) ? nullptr : I32(info, 3, a.rows(), op);
    const float* x = F32(info, 5, a.total(), op);
    ML_KERNEL(info, op, reduce, out, arg, x, a.outer, a.len, a.inner, static_cast<ReduceOp>(code));
    return info.Env().Undefined();
  }));

  // broadcastAxis(dx, dxoff, dy, dyoff, outer, len, inner, scale)
  exports.Set("broadcastAxis", Fn(env, "broadcastAxis", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "broadcastAxis";
    Axis a = ReadAxis(info, 4, op);
    float* dx = F32(info, 0, a.total(), op);
    const float* dy = F32(info, 2, a.rows(), op);
    ML_KERNEL(info, op, broadcast_axis, dx, dy, a.outer, a.len, a.inner, static_cast<float>(Num(info, 7, op)));
    return info.Env().Undefined();
  }));

  // scatterArg(dx, dxoff, dy, dyoff, argidx, aoff, outer, len, inner)
  exports.Set("scatterArg", Fn(env, "scatterArg", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "scatterArg";
    Axis a = ReadAxis(info, 6, op);
    float* dx = F32(info, 0, a.total(), op);
    const float* dy = F32(info, 2, a.rows(), op);
    const int32_t* arg = I32(info, 4, a.rows(), op);
    ML_KERNEL(info, op, scatter_arg, dx, dy, arg, a.outer, a.len, a.inner);
    return info.Env().Undefined();
  }));

  // sumSquares(x, xoff, n) -> number
  exports.Set("sumSquares", Fn(env, "sumSquares", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "sumSquares";
    int64_t n = Count(info, 2, op);
    const float* x = F32(info, 0, n, op);
    return Napi::Number::New(info.Env(), ML_KERNEL(info, op, sum_squares, x, n));
  }));

  // allFinite(x, xoff, n) -> boolean
  exports.Set("allFinite", Fn(env, "allFinite", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "allFinite";
    int64_t n = Count(info, 2, op);
    const float* x = F32(info, 0, n, op);
    return Napi::Boolean::New(info.Env(), ML_KERNEL(info, op, all_finite, x, n));
  }));
}

}  // namespace bind
}  // namespace modalab
