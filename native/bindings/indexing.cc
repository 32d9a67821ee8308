// Bindings for the indexing op family (see src/api/binding.ts for the exported names and argument order).
// The forward kernels validate every index before writing; a bad one becomes
// "embedding: index 70 at position 3 is outside [0, 50)", the position counted in the flattened index tensor.
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

void NonNegative(const Napi::CallbackInfo& info, const char* op, std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s < 0) Throw(info.Env(), std::string(op) + ": negative size " + std::to_string(s));
}

[[noreturn]] void BadIndex(const Napi::CallbackInfo& info, const char* op, const int32_t* idx, int64_t pos,
                           int64_t bound) {
  Throw(info.Env(), std::string(op) + ": index " + std::to_string(ElementI32(idx, pos)) + " at position " +
                        std::to_string(pos) + " is outside [0, " + std::to_string(bound) + ")");
}

int64_t Elsize(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t e = Int(info, i, op);
  if (e != 2 && e != 4) Throw(info.Env(), std::string(op) + ": elsize must be 2 or 4 bytes, got " + std::to_string(e));
  return e;
}

}  // namespace

void RegisterIndexing(Napi::Env env, Napi::Object exports) {
  // indexSelect(out, ooff, x, xoff, idx, ioff, outer, xlen, inner, nidx, elsize)
  exports.Set("indexSelect", Fn(env, "indexSelect", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "indexSelect";
    int64_t outer = Int(info, 6, op), xlen = Int(info, 7, op), inner = Int(info, 8, op), nidx = Int(info, 9, op);
    int64_t el = Elsize(info, 10, op);
    NonNegative(info, op, {outer, xlen, inner, nidx});
    void* out = Resolve(info, 0, Mul(Mul(outer, nidx, op), inner, op), static_cast<size_t>(el), op);
    const void* x = Resolve(info, 2, Mul(Mul(outer, xlen, op), inner, op), static_cast<size_t>(el), op);
    const int32_t* idx = I32(info, 4, nidx, op);
    int64_t bad = ML_KERNEL(info, op, index_select, out, x, idx, outer, xlen, inner, nidx, el);
    if (bad >= 0) BadIndex(info, op, idx, bad, xlen);
    return info.Env().Undefined();
  }));

  // indexSelectBackward(dx, dxoff, dy, dyoff, idx, ioff, outer, xlen, inner, nidx)   dx +=
  exports.Set("indexSelectBackward", Fn(env, "indexSelectBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "indexSelectBackward";
    int64_t outer = Int(info, 6, op), xlen = Int(info, 7, op), inner = Int(info, 8, op), nidx = Int(info, 9, op);
    NonNegative(info, op, {outer, xlen, inner, nidx});
    float* dx = F32(info, 0, Mul(Mul(outer, xlen, op), inner, op), op);
    const float* dy = F32(info, 2, Mul(Mul(outer, nidx, op), inner, op), op);
    const int32_t* idx = I32(info, 4, nidx, op);
    ML_KERNEL(info, op, index_select_backward, dx, dy, idx, outer, xlen, inner, nidx);
    return info.Env().Undefined();
  }));

  // gather(out, ooff, x, xoff, idx, ioff, outer, xlen, inner, glen)
  exports.Set("gather", Fn(env, "gather", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "gather";
    int64_t outer = Int(info, 6, op), xlen = Int(info, 7, op), inner = Int(info, 8, op), glen = Int(info, 9, op);
    NonNegative(info, op, {outer, xlen, inner, glen});
    int64_t n = Mul(Mul(outer, glen, op), inner, op);
    float* out = F32(info, 0, n, op);
    const float* x = F32(info, 2, Mul(Mul(outer, xlen, op), inner, op), op);
    const int32_t* idx = I32(info, 4, n, op);
    int64_t bad = ML_KERNEL(info, op, gather, out, x, idx, outer, xlen, inner, glen);
    if (bad >= 0) BadIndex(info, op, idx, bad, xlen);
    return info.Env().Undefined();
  }));

  // gatherBackward(dx, dxoff, dy, dyoff, idx, ioff, outer, xlen, inner, glen)   dx +=
  exports.Set("gatherBackward", Fn(env, "gatherBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "gatherBackward";
    int64_t outer = Int(info, 6, op), xlen = Int(info, 7, op), inner = Int(info, 8, op), glen = Int(info, 9, op);
    NonNegative(info, op, {outer, xlen, inner, glen});
    int64_t n = Mul(Mul(outer, glen, op), inner, op);
    float* dx = F32(info, 0, Mul(Mul(outer, xlen, op), inner, op), op);
    const float* dy = F32(info, 2, n, op);
    const int32_t* idx = I32(info, 4, n, op);
    ML_KERNEL(info, op, gather_backward, dx, dy, idx, outer, xlen, inner, glen);
    return info.Env().Undefined();
  }));

  // embedding(y, yoff, table, toff, idx, ioff, n, V, C)
  exports.Set("embedding", Fn(env, "embedding", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "embedding";
    int64_t n = Int(info, 6, op), V = Int(info, 7, op), C = Int(info, 8, op);
    NonNegative(info, op, {n, V, C});
    float* y = F32(info, 0, Mul(n, C, op), op);
    const float* table = F32(info, 2, Mul(V, C, op), op);
    const int32_t* idx = I32(info, 4, n, op);
    int64_t bad = ML_KERNEL(info, op, embedding_forward, y, table, idx, n, V, C);
    if (bad >= 0) BadIndex(info, op, idx, bad, V);
    return info.Env().Undefined();
  }));

  // embeddingBackward(dtable, dtoff, dy, dyoff, idx, ioff, n, V, C)   dtable +=
  exports.Set("embeddingBackward", Fn(env, "embeddingBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "embeddingBackward";
    int64_t n = Int(info, 6, op), V = Int(info, 7, op), C = Int(info, 8, op);
    NonNegative(info, op, {n, V, C});
    float* dtable = F32(info, 0, Mul(V, C, op), op);
    const float* dy = F32(info, 2, Mul(n, C, op), op);
    const int32_t* idx = I32(info, 4, n, op);
    ML_KERNEL(info, op, embedding_backward, dtable, dy, idx, n, V, C);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
