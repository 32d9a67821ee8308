// Bindings for the element-wise family (names and argument order: src/api/binding.ts). Every count is checked
// against the buffers: for broadcast ops the reach of each strided input over the output shape.
#include <string>
#include <vector>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

constexpr size_t kMaxDims = 64;   // native/cpu/elementwise.cc walks at most this many axes

UnaryOp Unary(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t c = Int(info, i, op);
  if (c < 0 || c > static_cast<int64_t>(UnaryOp::Cos)) Throw(info.Env(), std::string(op) + ": unknown unary op " + std::to_string(c));
  return static_cast<UnaryOp>(c);
}

float DropP(const Napi::CallbackInfo& info, size_t i, const char* op) {
  double p = Num(info, i, op);
  if (!(p >= 0 && p <= 1)) Throw(info.Env(), std::string(op) + ": p must be in [0, 1], got " + std::to_string(p));
  return static_cast<float>(p);
}

// The output shape and one stride array per input; returns the output's element count. Checks lengths, signs
// and sizes (in double, so nothing overflows) before any extent is computed.
int64_t Broadcast(const Napi::CallbackInfo& info, const char* op, const std::vector<int64_t>& shape,
                  std::initializer_list<const std::vector<int64_t>*> strides) {
  if (shape.size() > kMaxDims)
    Throw(info.Env(), std::string(op) + ": at most " + std::to_string(kMaxDims) + " dims, got " + std::to_string(shape.size()));
  double total = 1;
  for (int64_t d : shape) {
    if (d < 0) Throw(info.Env(), std::string(op) + ": negative size in the output shape");
    total *= static_cast<double>(d);
  }
  if (total > 9.0e15) Throw(info.Env(), std::string(op) + ": output shape is too large");
  for (const std::vector<int64_t>* s : strides) {
    if (s->size() != shape.size())
      Throw(info.Env(), std::string(op) + ": a stride array has " + std::to_string(s->size()) + " entries for " +
                            std::to_string(shape.size()) + " dims");
    double reach = 0;
    for (size_t k = 0; k < shape.size(); k++) {
      if ((*s)[k] < 0) Throw(info.Env(), std::string(op) + ": strides must be non-negative");
      if (shape[k] > 0) reach += static_cast<double>(shape[k] - 1) * static_cast<double>((*s)[k]);
    }
    if (reach > 9.0e15) Throw(info.Env(), std::string(op) + ": strides reach too far");
  }
  return static_cast<int64_t>(total);
}

}  // namespace

void RegisterElementwise(Napi::Env env, Napi::Object exports) {
  // unary(op, y, yoff, x, xoff, n)
  exports.Set("unary", Fn(env, "unary", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "unary";
    UnaryOp u = Unary(info, 0, op);
    int64_t n = Count(info, 5, op);
    float* y = F32(info, 1, n, op);
    const float* x = F32(info, 3, n, op);
    ML_KERNEL(info, op, unary_forward, y, x, n, u);
    return info.Env().Undefined();
  }));

  // unaryBackward(op, dx, dxoff, dy, dyoff, x, xoff, y, yoff, n)
  exports.Set("unaryBackward", Fn(env, "unaryBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "unaryBackward";
    UnaryOp u = Unary(info, 0, op);
    int64_t n = Count(info, 9, op);
    float* dx = F32(info, 1, n, op);
    const float* dy = F32(info, 3, n, op);
    const float* x = F32(info, 5, n, op);
    const float* y = F32(info, 7, n, op);
    ML_KERNEL(info, op, unary_backward, dx, dy, x, y, n, u);
    return info.Env().Undefined();
  }));

  // affine(y, yoff, x, xoff, n, scale, shift)
  exports.Set("affine", Fn(env, "affine", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "affine";
    int64_t n = Count(info, 4, op);
    float* y = F32(info, 0, n, op);
    const float* x = F32(info, 2, n, op);
    ML_KERNEL(info, op, affine, y, x, n, static_cast<float>(Num(info, 5, op)), static_cast<float>(Num(info, 6, op)));
    return info.Env().Undefined();
  }));

  // powScalar(y, yoff, x, xoff, n, p)
  exports.Set("powScalar", Fn(env, "powScalar", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "powScalar";
    int64_t n = Count(info, 4, op);
    float* y = F32(info, 0, n, op);
    const float* x = F32(info, 2, n, op);
    ML_KERNEL(info, op, pow_scalar, y, x, n, static_cast<float>(Num(info, 5, op)));
    return info.Env().Undefined();
  }));

  // binary(op, out, ooff, a, aoff, b, boff, shape, astride, bstride)
  exports.Set("binary", Fn(env, "binary", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "binary";
    int64_t code = Int(info, 0, op);
    if (code < 0 || code > static_cast<int64_t>(BinaryOp::Ne))
      Throw(info.Env(), std::string(op) + ": unknown binary op " + std::to_string(code));
    std::vector<int64_t> shape = IntArray(info, 7, op), as = IntArray(info, 8, op), bs = IntArray(info, 9, op);
    int64_t n = Broadcast(info, op, shape, {&as, &bs});
    float* out = F32(info, 1, n, op);
    const float* a = F32(info, 3, StridedExtent(shape, as), op);
    const float* b = F32(info, 5, StridedExtent(shape, bs), op);
    ML_KERNEL(info, op, binary_forward, out, a, b, static_cast<int>(shape.size()), shape.data(), as.data(), bs.data(),
              static_cast<BinaryOp>(code));
    return info.Env().Undefined();
  }));

  // binaryContig(op, out, ooff, a, aoff, b, boff, n): same-shape contiguous operands, the common case. No arrays
  // cross the boundary, which is most of the cost of a tiny op.
  exports.Set("binaryContig", Fn(env, "binaryContig", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "binaryContig";
    int64_t code = Int(info, 0, op);
    if (code < 0 || code > static_cast<int64_t>(BinaryOp::Ne))
      Throw(info.Env(), std::string(op) + ": unknown binary op " + std::to_string(code));
    int64_t n = Int(info, 7, op);
    if (n < 0) Throw(info.Env(), std::string(op) + ": negative size " + std::to_string(n));
    float* out = F32(info, 1, n, op);
    const float* a = F32(info, 3, n, op);
    const float* b = F32(info, 5, n, op);
    const int64_t one = 1;
    ML_KERNEL(info, op, binary_forward, out, a, b, 1, &n, &one, &one, static_cast<BinaryOp>(code));
    return info.Env().Undefined();
  }));

  // where(out, ooff, cond, coff, condIsI32, a, aoff, b, boff, shape, cstride, astride, bstride)
  exports.Set("where", Fn(env, "where", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "where";
    bool ci32 = Bool(info, 4, op);
    std::vector<int64_t> shape = IntArray(info, 9, op), cs = IntArray(info, 10, op), as = IntArray(info, 11, op),
                         bs = IntArray(info, 12, op);
    int64_t n = Broadcast(info, op, shape, {&cs, &as, &bs});
    float* out = F32(info, 0, n, op);
    const void* c = Resolve(info, 2, StridedExtent(shape, cs), 4, op);
    const float* a = F32(info, 5, StridedExtent(shape, as), op);
    const float* b = F32(info, 7, StridedExtent(shape, bs), op);
    ML_KERNEL(info, op, where_forward, out, c, ci32, a, b, static_cast<int>(shape.size()), shape.data(), cs.data(),
              as.data(), bs.data());
    return info.Env().Undefined();
  }));

  // dropout(y, yoff, x, xoff, n, p, seed, offset)
  exports.Set("dropout", Fn(env, "dropout", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "dropout";
    int64_t n = Count(info, 4, op);
    float* y = F32(info, 0, n, op);
    const float* x = F32(info, 2, n, op);
    float p = DropP(info, 5, op);
    ML_KERNEL(info, op, dropout_forward, y, x, n, p, Seed(info, 6, op, "seed"), Seed(info, 7, op, "offset"));
    return info.Env().Undefined();
  }));

  // dropoutBackward(dx, dxoff, dy, dyoff, n, p, seed, offset)
  exports.Set("dropoutBackward", Fn(env, "dropoutBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "dropoutBackward";
    int64_t n = Count(info, 4, op);
    float* dx = F32(info, 0, n, op);
    const float* dy = F32(info, 2, n, op);
    float p = DropP(info, 5, op);
    ML_KERNEL(info, op, dropout_backward, dx, dy, n, p, Seed(info, 6, op, "seed"), Seed(info, 7, op, "offset"));
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
