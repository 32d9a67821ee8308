// The addon's entry point: every op family registers its functions on the exports object.
// The full list of exports, with types, is src/api/binding.ts.
#include "common.h"

namespace modalab {
namespace bind {

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // Start the thread pool now: that is when MODALAB_NUM_THREADS is read and handed to the BLAS, so even a first
  // op that goes straight to the BLAS runs with the configured thread count.
  cpu::num_threads();
  RegisterStorage(env, exports);
  RegisterCreation(env, exports);
  RegisterElementwise(env, exports);
  RegisterReduce(env, exports);
  RegisterSoftmax(env, exports);
  RegisterLayernorm(env, exports);
  RegisterLoss(env, exports);
  RegisterMatmul(env, exports);
  RegisterMatmulHalf(env, exports);
  RegisterLayout(env, exports);
  RegisterIndexing(env, exports);
  RegisterOptim(env, exports);
  RegisterAttention(env, exports);
  RegisterInfonce(env, exports);
  return exports;
}

}  // namespace bind
}  // namespace modalab

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return modalab::bind::Init(env, exports); }

NODE_API_MODULE(modalab, InitAddon)
