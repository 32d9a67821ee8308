// Bindings for the fused attention op family (see src/api/binding.ts for the exported names and argument order).
#include <algorithm>
#include <string>

#include "common.h"

namespace modalab {
namespace bind {
namespace {

struct AttnArgs {
  DType dtype, out_dtype;
  bool mask_i32;
  int64_t B, H, N, M, D, Dv;
  float scale;
  bool causal;
  int64_t window;
};

std::string Dims(const AttnArgs& a) {
  return "(B " + std::to_string(a.B) + ", H " + std::to_string(a.H) + ", N " + std::to_string(a.N) + ", M " +
         std::to_string(a.M) + ", D " + std::to_string(a.D) + ", Dv " + std::to_string(a.Dv) + ")";
}

// A float dtype code (f32, f16, bf16) at argument i.
DType FloatCode(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t code = Int(info, i, op);
  if (code < 0 || code > 2)
    Throw(info.Env(),
          std::string(op) + ": dtype code " + std::to_string(code) + " is not a float dtype (f32, f16, bf16)");
  return static_cast<DType>(code);
}

// (dtype, [outDtype,] mask..., B, H, N, M, D, Dv, scale, causal, window): dtype at argument `d`, outDtype (dtype
// or f32) at d + 1 when `with_out`, maskIsI32 at `mi`, the sizes from `s` on. Sizes must be non-negative and every
// tensor must have an addressable element count.
AttnArgs ReadArgs(const Napi::CallbackInfo& info, size_t d, bool with_out, size_t mi, size_t s, const char* op) {
  AttnArgs a;
  a.dtype = FloatCode(info, d, op);
  a.out_dtype = with_out ? FloatCode(info, d + 1, op) : DType::F32;
  if (a.out_dtype != a.dtype && a.out_dtype != DType::F32)
    Throw(info.Env(), std::string(op) + ": the output dtype must be the inputs' dtype or f32");
  a.mask_i32 = Bool(info, mi, op);
  a.B = Int(info, s, op);
  a.H = Int(info, s + 1, op);
  a.N = Int(info, s + 2, op);
  a.M = Int(info, s + 3, op);
  a.D = Int(info, s + 4, op);
  a.Dv = Int(info, s + 5, op);
  a.scale = static_cast<float>(Num(info, s + 6, op));
  a.causal = Bool(info, s + 7, op);
  a.window = Int(info, s + 8, op);
  if (a.B < 0 || a.H < 0 || a.N < 0 || a.M < 0 || a.D < 0 || a.Dv < 0)
    Throw(info.Env(), std::string(op) + ": negative size " + Dims(a));
  if (a.window < 0)
    Throw(info.Env(), std::string(op) + ": window must be >= 0 (0: none), got " + std::to_string(a.window));
  const double bh = static_cast<double>(a.B) * static_cast<double>(a.H);
  const double big = std::max({bh * a.N * a.D, bh * a.N * a.Dv, bh * a.M * a.D, bh * a.M * a.Dv});
  if (big > 9.0e15) Throw(info.Env(), std::string(op) + ": sizes " + Dims(a) + " are too large");
  return a;
}

// The key padding mask [B, M] at argument i (null for none), f32 or i32.
const void* Mask(const Napi::CallbackInfo& info, size_t i, const AttnArgs& a, const char* op) {
  if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return Resolve(info, i, a.B * a.M, 4, op);
}

}  // namespace

void RegisterAttention(Napi::Env env, Napi::Object exports) {
  // attention(out, ooff, stats, soff, q, qoff, k, koff, v, voff, dtype, outDtype, mask, moff, maskIsI32,
  //           B, H, N, M, D, Dv, scale, causal, window)
  exports.Set("attention", Fn(env, "attention", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "attention";
    AttnArgs a = ReadArgs(info, 10, true, 14, 15, op);
    const size_t es = dtype_size(a.dtype);
    void* out = Resolve(info, 0, a.B * a.H * a.N * a.Dv, dtype_size(a.out_dtype), op);
    float* stats = F32(info, 2, 2 * a.B * a.H * a.N, op);
    const void* q = Resolve(info, 4, a.B * a.H * a.N * a.D, es, op);
    const void* k = Resolve(info, 6, a.B * a.H * a.M * a.D, es, op);
    const void* v = Resolve(info, 8, a.B * a.H * a.M * a.Dv, es, op);
    const void* mask = Mask(info, 12, a, op);
    ML_KERNEL(info, op, attention_forward, out, a.out_dtype, stats, q, k, v, a.dtype, mask, a.mask_i32, a.B, a.H, a.N,
              a.M, a.D, a.Dv, a.scale, a.causal, a.window);
    return info.Env().Undefined();
  }));

  // attentionBackward(dq, dqoff, dk, dkoff, dv, dvoff, dout, dooff, q, qoff, k, koff, v, voff, stats, soff, dtype,
  //                   mask, moff, maskIsI32, B, H, N, M, D, Dv, scale, causal, window)
  exports.Set("attentionBackward", Fn(env, "attentionBackward", [](const Napi::CallbackInfo& info) -> Napi::Value {
    const char* op = "attentionBackward";
    AttnArgs a = ReadArgs(info, 16, false, 19, 20, op);
    const size_t es = dtype_size(a.dtype);
    float* dq = F32(info, 0, a.B * a.H * a.N * a.D, op);
    float* dk = F32(info, 2, a.B * a.H * a.M * a.D, op);
    float* dv = F32(info, 4, a.B * a.H * a.M * a.Dv, op);
    const float* dout = F32(info, 6, a.B * a.H * a.N * a.Dv, op);
    const void* q = Resolve(info, 8, a.B * a.H * a.N * a.D, es, op);
    const void* k = Resolve(info, 10, a.B * a.H * a.M * a.D, es, op);
    const void* v = Resolve(info, 12, a.B * a.H * a.M * a.Dv, es, op);
    const float* stats = F32(info, 14, 2 * a.B * a.H * a.N, op);
    const void* mask = Mask(info, 17, a, op);
    ML_KERNEL(info, op, attention_backward, dq, dk, dv, dout, q, k, v, stats, a.dtype, mask, a.mask_i32, a.B, a.H,
              a.N, a.M, a.D, a.Dv, a.scale, a.causal, a.window);
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
