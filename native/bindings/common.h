// Shared helpers for the Node-API bindings: the storage table, argument readers and error translation.
//
// Storage handles. JavaScript never sees a pointer. Each allocation lives in a slot of a table and is named by
// a handle = generation * 2^24 + slot, a plain JS number. Every kernel argument is resolved through the table:
// a freed, reused or forged handle, or an offset/size past the end of the allocation, throws a JS Error instead
// of touching memory. That is what lets the TypeScript layer promise "nothing a caller passes crashes".
//
// Tensor arguments travel as two numbers: (handle, element offset). Sizes are checked against the allocation.
#pragma once
#include <napi.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "modalab/kernels.h"
#ifdef MODALAB_HAVE_CUDA
#include "modalab/cuda.h"
#endif

namespace modalab {
namespace bind {

// Where a buffer lives. A handle names host memory or (in a CUDA build) device memory; kernels dispatch on it.
enum class Dev : uint8_t { Cpu = 0, Cuda = 1 };

// The devices of the buffers one call has resolved so far. `Fn` clears it before each call and `Resolve` notes
// every buffer's device, so a binding needs no device argument: `OnCuda` reads the note.
struct CallDevices {
  bool cpu = false;
  bool cuda = false;
};
extern CallDevices g_call;

// Whether this call runs on the CUDA backend (every buffer it resolved is device memory). Buffers on both
// devices throw an error naming the op: tensors must be moved with `to()` first, nothing is copied implicitly.
bool OnCuda(const Napi::CallbackInfo& info, const char* op);

// The kernel call of a binding: modalab::cuda::fn when the call's buffers are on the GPU, else modalab::cpu::fn
// (the two namespaces share every signature). Every Resolve of the call must come before it.
#ifdef MODALAB_HAVE_CUDA
#define ML_KERNEL(info, op, fn, ...) \
  (::modalab::bind::OnCuda(info, op) ? ::modalab::cuda::fn(__VA_ARGS__) : ::modalab::cpu::fn(__VA_ARGS__))
#else
#define ML_KERNEL(info, op, fn, ...) (::modalab::bind::OnCuda(info, op), ::modalab::cpu::fn(__VA_ARGS__))
#endif

// Element i of an i32 buffer this call resolved (for error messages: the bad index or target). Copied from the
// GPU when the call runs there.
int32_t ElementI32(const int32_t* p, int64_t i);

// One f32 value read from a tensor argument, wherever it lives (a device scalar is copied to the host).
float ReadF32(const Napi::CallbackInfo& info, size_t i, const char* op);

// Resolve a (handle, element offset) pair to a pointer, checking that `count` elements of `elsize` bytes fit.
void* Resolve(const Napi::CallbackInfo& info, size_t i, int64_t count, size_t elsize, const char* op);

inline float* F32(const Napi::CallbackInfo& info, size_t i, int64_t count, const char* op) {
  return static_cast<float*>(Resolve(info, i, count, 4, op));
}
inline int32_t* I32(const Napi::CallbackInfo& info, size_t i, int64_t count, const char* op) {
  return static_cast<int32_t*>(Resolve(info, i, count, 4, op));
}
// A nullable tensor argument: `null`/`undefined` in the handle position gives nullptr.
inline float* F32OrNull(const Napi::CallbackInfo& info, size_t i, int64_t count, const char* op) {
  if (info[i].IsNull() || info[i].IsUndefined()) return nullptr;
  return F32(info, i, count, op);
}

int64_t Int(const Napi::CallbackInfo& info, size_t i, const char* op);   // an integer (throws otherwise)
int64_t Count(const Napi::CallbackInfo& info, size_t i, const char* op); // a non-negative integer (an element count)
// A Philox seed or stream offset: an exact non-negative integer (TypeScript keeps them below 2^53).
uint64_t Seed(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what);
double Num(const Napi::CallbackInfo& info, size_t i, const char* op);    // any number
bool Bool(const Napi::CallbackInfo& info, size_t i, const char* op);
std::vector<int64_t> IntArray(const Napi::CallbackInfo& info, size_t i, const char* op);
int64_t Product(const std::vector<int64_t>& v);
// a * b for non-negative sizes, throwing instead of wrapping (a forged 2^40 x 2^40 must not pass the checks).
int64_t Mul(int64_t a, int64_t b, const char* op);
// Elements touched by batched matrices of `mat` elements whose batch offsets follow `stride` over `shape`:
// the furthest batch offset plus one matrix (0 when the batch or the matrix is empty).
int64_t BatchedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t mat);

// The largest element index (plus one) reached by a strided view: 1 + sum((shape-1) * stride), 0 if empty.
int64_t StridedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride);

[[noreturn]] void Throw(const Napi::Env& env, const std::string& msg);

// Wrap a binding body so that any C++ exception becomes a JavaScript Error naming the function.
template <typename F>
Napi::Function Fn(Napi::Env env, const char* name, F body) {
  return Napi::Function::New(
      env,
      [name, body](const Napi::CallbackInfo& info) -> Napi::Value {
        try {
          g_call = CallDevices{};
          return body(info);
        } catch (const Napi::Error&) {
          throw;
        } catch (const std::bad_alloc&) {
          throw Napi::Error::New(info.Env(), std::string(name) + ": out of host memory");
        } catch (const std::exception& e) {
          throw Napi::Error::New(info.Env(), std::string(name) + ": " + e.what());
        }
      },
      name);
}

// Registration functions, one per op family (native/bindings/<family>.cc).
void RegisterStorage(Napi::Env env, Napi::Object exports);
void RegisterCreation(Napi::Env env, Napi::Object exports);
void RegisterElementwise(Napi::Env env, Napi::Object exports);
void RegisterReduce(Napi::Env env, Napi::Object exports);
void RegisterSoftmax(Napi::Env env, Napi::Object exports);
void RegisterLayernorm(Napi::Env env, Napi::Object exports);
void RegisterLoss(Napi::Env env, Napi::Object exports);
void RegisterMatmul(Napi::Env env, Napi::Object exports);
void RegisterMatmulHalf(Napi::Env env, Napi::Object exports);
void RegisterLayout(Napi::Env env, Napi::Object exports);
void RegisterIndexing(Napi::Env env, Napi::Object exports);
void RegisterOptim(Napi::Env env, Napi::Object exports);
void RegisterAttention(Napi::Env env, Napi::Object exports);
void RegisterInfonce(Napi::Env env, Napi::Object exports);

}  // namespace bind
}  // namespace modalab
