// A tiny test harness for the native kernels: TEST(name) { ... } registers a case; CHECK_CLOSE uses the
// project's tolerance policy |x - ref| <= atol + rtol * |ref| and reports the worst element.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <random>
#include <string>
#include <vector>

namespace mtest {

struct Case { const char* name; std::function<void()> fn; };
std::vector<Case>& registry();
extern int failures;

struct Registrar {
  Registrar(const char* name, std::function<void()> fn) { registry().push_back({name, std::move(fn)}); }
};

// Fresh random inputs, never zeros (STYLE.md).
inline std::vector<float> randn(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g);
  return v;
}

// Compare, print the worst element and how much of the budget it used; returns true when within tolerance.
inline bool close(const char* what, const float* x, const float* ref, size_t n, float rtol = 1e-5f,
                  float atol = 1e-6f) {
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < n; i++) {
    bool both_nan = std::isnan(x[i]) && std::isnan(ref[i]);
    bool same_inf = std::isinf(x[i]) && x[i] == ref[i];
    if (both_nan || same_inf) continue;
    double budget = atol + rtol * std::fabs(ref[i]);
    double used = std::fabs(double(x[i]) - double(ref[i])) / budget;
    if (!(used <= worst)) { worst = used; wi = i; }
    if (std::isnan(used)) { worst = INFINITY; wi = i; break; }
  }
  if (worst > 1.0) {
    std::printf("    FAIL %s: element %zu is %.9g, reference %.9g (%.2fx the tolerance)\n", what, wi, x[wi], ref[wi], worst);
    failures++;
    return false;
  }
  return true;
}

}  // namespace mtest

#define MT_CONCAT2(a, b) a##b
#define MT_CONCAT(a, b) MT_CONCAT2(a, b)
#define TEST(name)                                                              \
  static void MT_CONCAT(test_, name)();                                         \
  static mtest::Registrar MT_CONCAT(reg_, name)(#name, MT_CONCAT(test_, name)); \
  static void MT_CONCAT(test_, name)()
#define CHECK(cond)                                                                   \
  do {                                                                                \
    if (!(cond)) {                                                                    \
      std::printf("    FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                \
      mtest::failures++;                                                              \
    }                                                                                 \
  } while (0)
