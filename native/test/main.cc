// modalab_native_test: runs every TEST in native/test/*.cc; `modalab_native_test NAME...` runs those matching.
#include <cstring>

#include "harness.h"

namespace mtest {
std::vector<Case>& registry() {
  static std::vector<Case> r;
  return r;
}
int failures = 0;
}  // namespace mtest

int main(int argc, char** argv) {
  int ran = 0, failed_cases = 0;
  for (auto& c : mtest::registry()) {
    bool selected = argc < 2;
    for (int i = 1; i < argc; i++) selected = selected || std::strstr(c.name, argv[i]);
    if (!selected) continue;
    int before = mtest::failures;
    c.fn();
    ran++;
    bool ok = mtest::failures == before;
    if (!ok) failed_cases++;
    std::printf("%s %s\n", ok ? "ok  " : "FAIL", c.name);
  }
  std::printf("%d passed, %d failed\n", ran - failed_cases, failed_cases);
  return failed_cases ? 1 : 0;
}
