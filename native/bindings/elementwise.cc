// Bindings for the elementwise op family (see src/api/binding.ts for the exported names and argument order).
#include "common.h"

namespace modalab {
namespace bind {

void RegisterElementwise(Napi::Env env, Napi::Object exports) {}

}  // namespace bind
}  // namespace modalab
