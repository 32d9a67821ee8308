// Bindings for the layout op family (see src/api/binding.ts for the exported names and argument order).
// elsize is the element size in bytes (2 for f16/bf16, 4 for f32/i32); every extent is checked against its buffer.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

int64_t Elsize(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t e = Int(info, i, op);
  if (e != 2 && e != 4) Throw(info.Env(), std::string(op) + ": elsize must be 2 or 4 bytes, got " + std::to_string(e));
  return e;
}

// (outer, len, inner) sizes plus a [start, start+len) window into an axis of length `full`; all checked.
void CheckWindow(const Napi::CallbackInfo& info, const char* op, int64_t outer, int64_t full, int64_t inner,
                 int64_t start, int64_t len) {
  if (outer < 0 || full < 0 || inner < 0 || len < 0)
    Throw(info.Env(), std::string(op) + ": negative size (outer " + std::to_string(outer) + ", axis " +
                          std::to_string(full) + ", inner " + std::to_string(inner) + ", len " + std::to_string(len) + ")");
  if (start < 0 || start > full || len > full - start)
    Throw(info.Env(), std::string(op) + ": window [" + std::to_string(start) + ", " + std::to_string(start + len) +
                          ") is outside an axis of length " + std::to_string(full));
}

}  // namespace

void RegisterLayout(Napi::Env env, Napi::Object exports) {
  // copyStrided(out, ooff, x, xoff, shape, xstride, elsize)
  exports.Set("copyStrided", Fn(env, "copyStrided", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "copyStrided";
    std::vector<int64_t> shape = IntArray(info, 4, op), xstride = IntArray(info, 5, op);
    int64_t el = Elsize(info, 6, op);
    if (shape.size() != xstride.size())
      Throw(info.Env(), "copyStrided: shape has " + std::to_string(shape.size()) + " axes but xstride has " +
                            std::to_string(xstride.size()));
    if (shape.size() > 64) Throw(info.Env(), "copyStrided: more than 64 axes");
    int64_t n = 1;
    for (int64_t d : shape) {
      if (d < 0) Throw(info.Env(), "copyStrided: negative size " + std::to_string(d));
      n = Mul(n, d, op);
    }
    double far = 0;  // forged strides must not overflow StridedExtent's arithmetic
    for (size_t d = 0; d < shape.size(); d++) far += static_cast<double>(shape[d]) * static_cast<double>(xstride[d]);
    if (far > 9.0e15) Throw(info.Env(), "copyStrided: strides reach past 2^53 elements");
    void* out = Resolve(info, 0, n, static_cast<size_t>(el), op);
    const void* x = Resolve(info, 2, StridedExtent(shape, xstride), static_cast<size_t>(el), op);
    ML_KERNEL(info, op, copy_strided, out, x, static_cast<int>(shape.size()), shape.data(), xstride.data(), el);
    return info.Env().Undefined();
  }));

  // sliceCopy(out, ooff, x, xoff, outer, xlen, inner, start, len, elsize)
  exports.Set("sliceCopy", Fn(env, "sliceCopy", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "sliceCopy";
    int64_t outer = Int(info, 4, op), xlen = Int(info, 5, op), inner = Int(info, 6, op);
    int64_t start = Int(info, 7, op), len = Int(info, 8, op), el = Elsize(info, 9, op);
    CheckWindow(info, op, outer, xlen, inner, start, len);
    void* out = Resolve(info, 0, Mul(Mul(outer, len, op), inner, op), static_cast<size_t>(el), op);
    const void* x = Resolve(info, 2, Mul(Mul(outer, xlen, op), inner, op), static_cast<size_t>(el), op);
    ML_KERNEL(info, op, slice_copy, out, x, outer, xlen, inner, start, len, el);
    return info.Env().Undefined();
  }));

  // sliceAssign(out, ooff, x, xoff, outer, outlen, inner, start, len, elsize)
  exports.Set("sliceAssign", Fn(env, "sliceAssign", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "sliceAssign";
    int64_t outer = Int(info, 4, op), outlen = Int(info, 5, op), inner = Int(info, 6, op);
    int64_t start = Int(info, 7, op), len = Int(info, 8, op), el = Elsize(info, 9, op);
    CheckWindow(info, op, outer, outlen, inner, start, len);
    void* out = Resolve(info, 0, Mul(Mul(outer, outlen, op), inner, op), static_cast<size_t>(el), op);
    const void* x = Resolve(info, 2, Mul(Mul(outer, len, op), inner, op), static_cast<size_t>(el), op);
    ML_KERNEL(info, op, slice_assign, out, x, outer, outlen, inner, start, len, el);
    return info.Env().Undefined();
  }));

  // sliceAddBackward(dx, dxoff, dy, dyoff, outer, xlen, inner, start, len)   dx += (f32)
  exports.Set("sliceAddBackward", Fn(env, "sliceAddBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "sliceAddBackward";
    int64_t outer = Int(info, 4, op), xlen = Int(info, 5, op), inner = Int(info, 6, op);
    int64_t start = Int(info, 7, op), len = Int(info, 8, op);
    CheckWindow(info, op, outer, xlen, inner, start, len);
    float* dx = F32(info, 0, Mul(Mul(outer, xlen, op), inner, op), op);
    const float* dy = F32(info, 2, Mul(Mul(outer, len, op), inner, op), op);
    ML_KERNEL(info, op, slice_add_backward, dx, dy, outer, xlen, inner, start, len);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
