// Bindings for fills, ranges, random numbers and casts (names and argument order: src/api/binding.ts).
// Every count is checked against the buffers it touches before a kernel runs.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

DType Code(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t c = Int(info, i, op);
  if (c < 0 || c > 3) Throw(info.Env(), std::string(op) + ": unknown dtype code " + std::to_string(c));
  return static_cast<DType>(c);
}

}  // namespace

void RegisterCreation(Napi::Env env, Napi::Object exports) {
  // fillF32(out, off, n, value)
  exports.Set("fillF32", Fn(env, "fillF32", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "fillF32";
    int64_t n = Count(info, 2, op);
    float* out = F32(info, 0, n, op);
    ML_KERNEL(info, op, fill_f32, out, n, static_cast<float>(Num(info, 3, op)));
    return info.Env().Undefined();
  }));

  // fillI32(out, off, n, value)
  exports.Set("fillI32", Fn(env, "fillI32", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "fillI32";
    int64_t n = Count(info, 2, op);
    int32_t* out = I32(info, 0, n, op);
    int64_t v = Int(info, 3, op);
    if (v < INT32_MIN || v > INT32_MAX) Throw(info.Env(), std::string(op) + ": value " + std::to_string(v) + " is outside i32");
    ML_KERNEL(info, op, fill_i32, out, n, static_cast<int32_t>(v));
    return info.Env().Undefined();
  }));

  // arangeF32(out, off, n, start, step)
  exports.Set("arangeF32", Fn(env, "arangeF32", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "arangeF32";
    int64_t n = Count(info, 2, op);
    float* out = F32(info, 0, n, op);
    ML_KERNEL(info, op, arange_f32, out, n, Num(info, 3, op), Num(info, 4, op));
    return info.Env().Undefined();
  }));

  // arangeI32(out, off, n, start, step): every value must fit in i32.
  exports.Set("arangeI32", Fn(env, "arangeI32", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "arangeI32";
    int64_t n = Count(info, 2, op);
    int32_t* out = I32(info, 0, n, op);
    int64_t start = Int(info, 3, op), step = Int(info, 4, op);
    if (n > 0) {
      double last = static_cast<double>(start) + static_cast<double>(n - 1) * static_cast<double>(step);
      if (start < INT32_MIN || start > INT32_MAX || last < INT32_MIN || last > INT32_MAX)
        Throw(info.Env(), std::string(op) + ": values from " + std::to_string(start) + " to " +
                              std::to_string(static_cast<int64_t>(last)) + " do not fit in i32");
    }
    ML_KERNEL(info, op, arange_i32, out, n, start, step);
    return info.Env().Undefined();
  }));

  // randUniform(out, off, n, seed, offset, lo, hi)
  exports.Set("randUniform", Fn(env, "randUniform", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "randUniform";
    int64_t n = Count(info, 2, op);
    float* out = F32(info, 0, n, op);
    uint64_t seed = Seed(info, 3, op, "seed"), offset = Seed(info, 4, op, "offset");
    ML_KERNEL(info, op, rand_uniform, out, n, seed, offset, static_cast<float>(Num(info, 5, op)),
              static_cast<float>(Num(info, 6, op)));
    return info.Env().Undefined();
  }));

  // randNormal(out, off, n, seed, offset, mean, std)
  exports.Set("randNormal", Fn(env, "randNormal", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "randNormal";
    int64_t n = Count(info, 2, op);
    float* out = F32(info, 0, n, op);
    uint64_t seed = Seed(info, 3, op, "seed"), offset = Seed(info, 4, op, "offset");
    ML_KERNEL(info, op, rand_normal, out, n, seed, offset, static_cast<float>(Num(info, 5, op)),
              static_cast<float>(Num(info, 6, op)));
    return info.Env().Undefined();
  }));

  // cast(out, off, outDtype, x, xoff, xDtype, n)
  exports.Set("cast", Fn(env, "cast", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "cast";
    DType od = Code(info, 2, op), xd = Code(info, 5, op);
    int64_t n = Count(info, 6, op);
    void* out = Resolve(info, 0, n, dtype_size(od), op);
    const void* x = Resolve(info, 3, n, dtype_size(xd), op);
    ML_KERNEL(info, op, cast, out, od, x, xd, n);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
