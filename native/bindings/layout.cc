// Bindings for the layout op family (see src/api/binding.ts for the exported names and argument order).
#include "common.h"

namespace modalab {
namespace bind {

void RegisterLayout(Napi::Env env, Napi::Object exports) {}

}  // namespace bind
}  // namespace modalab
