// Bindings for the indexing op family (see src/api/binding.ts for the exported names and argument order).
#include "common.h"

namespace modalab {
namespace bind {

void RegisterIndexing(Napi::Env env, Napi::Object exports) {}

}  // namespace bind
}  // namespace modalab
