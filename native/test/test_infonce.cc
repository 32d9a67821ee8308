// infoNCE against a plain reference that materialises the N x N logits in double: loss and every gradient, at
// N = 1, N below, at and past the tile (128), N not a multiple of it, duplicated rows, the logit scale below and
// past the clamp; every SIMD variant of the tile passes (MODALAB_INFONCE_KERNEL); null gradient outputs; and
// bit-identical results for 1 and 2 threads.
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;
using std::vector;

namespace {

struct Ref {
  double loss;
  vector<float> da, db;
  float dl;
};

// The definition, in double: S = s a b^T, CE over rows and over columns, and the analytic gradients.
Ref reference(const vector<float>& a, const vector<float>& b, int64_t N, int64_t D, float logit_scale,
              double dloss) {
  const double e = std::exp(static_cast<double>(logit_scale));
  const bool passes = e <= 100.0;
  const double s = std::fmin(e, 100.0);
  vector<double> S(N * N), lr(N), lc(N);
  for (int64_t i = 0; i < N; i++)
    for (int64_t j = 0; j < N; j++) {
      double acc = 0;
      for (int64_t d = 0; d < D; d++) acc += double(a[i * D + d]) * b[j * D + d];
      S[i * N + j] = s * acc;
    }
  auto lse = [&](bool rows, int64_t k) {
    double m = -INFINITY;
    for (int64_t x = 0; x < N; x++) m = std::fmax(m, rows ? S[k * N + x] : S[x * N + k]);
    double sum = 0;
    for (int64_t x = 0; x < N; x++) sum += std::exp((rows ? S[k * N + x] : S[x * N + k]) - m);
    return m + std::log(sum);
  };
  Ref r;
  r.loss = 0;
  for (int64_t i = 0; i < N; i++) {
    lr[i] = lse(true, i);
    lc[i] = lse(false, i);
    r.loss += (lr[i] - S[i * N + i]) + (lc[i] - S[i * N + i]);
  }
  r.loss /= 2.0 * N;
  vector<double> G(N * N);
  double gs = 0;
  for (int64_t i = 0; i < N; i++)
    for (int64_t j = 0; j < N; j++) {
      double g = std::exp(S[i * N + j] - lr[i]) + std::exp(S[i * N + j] - lc[j]) - (i == j ? 2.0 : 0.0);
      G[i * N + j] = g * dloss / (2.0 * N);
      gs += G[i * N + j] * S[i * N + j];
    }
  r.da.assign(N * D, 0.0f);
  r.db.assign(N * D, 0.0f);
  for (int64_t i = 0; i < N; i++)
    for (int64_t d = 0; d < D; d++) {
      double x = 0, y = 0;
      for (int64_t j = 0; j < N; j++) {
        x += G[i * N + j] * b[j * D + d];
        y += G[j * N + i] * a[j * D + d];
      }
      r.da[i * D + d] = static_cast<float>(s * x);
      r.db[i * D + d] = static_cast<float>(s * y);
    }
  r.dl = passes ? static_cast<float>(gs) : 0.0f;
  return r;
}

// L2-normalised random rows, as CLIP feeds them.
vector<float> unit_rows(int64_t N, int64_t D, uint32_t seed) {
  vector<float> v = mtest::randn(N * D, seed);
  for (int64_t i = 0; i < N; i++) {
    double n = 0;
    for (int64_t d = 0; d < D; d++) n += double(v[i * D + d]) * v[i * D + d];
    for (int64_t d = 0; d < D; d++) v[i * D + d] = static_cast<float>(v[i * D + d] / std::sqrt(n));
  }
  return v;
}

struct Out {
  float loss;
  vector<float> stats, da, db;
  float dl;
};

Out run(const vector<float>& a, const vector<float>& b, int64_t N, int64_t D, float l, float dloss) {
  Out o;
  o.stats.assign(4 * N, NAN);
  o.da.assign(N * D, NAN);  // NaN guards: every element must be written
  o.db.assign(N * D, NAN);
  o.dl = NAN;
  cpu::infonce_forward(&o.loss, o.stats.data(), a.data(), b.data(), N, D, l);
  cpu::infonce_backward(o.da.data(), o.db.data(), &o.dl, &dloss, a.data(), b.data(), o.stats.data(), N, D, l);
  return o;
}

// Gradients are compared with an absolute floor scaled to their size: an element of da is a sum of N terms
// s G_ij b_j whose magnitudes are ~s/N, so float32 cancellation leaves ~1e-7 * s/N even where the sum is ~0.
bool check(const char* what, const vector<float>& a, const vector<float>& b, int64_t N, int64_t D, float l,
           float dloss = 1.0f) {
  Ref r = reference(a, b, N, D, l, dloss);
  Out o = run(a, b, N, D, l, dloss);
  const float loss_ref = static_cast<float>(r.loss);
  const float s = cpu::infonce_scale(l, nullptr);
  const float gatol = 2e-6f * s * std::fabs(dloss) / static_cast<float>(N);
  bool ok = mtest::close(what, &o.loss, &loss_ref, 1, 1e-5f, 1e-6f);
  ok = mtest::close(what, o.da.data(), r.da.data(), N * D, 1e-5f, gatol) && ok;
  ok = mtest::close(what, o.db.data(), r.db.data(), N * D, 1e-5f, gatol) && ok;
  ok = mtest::close(what, &o.dl, &r.dl, 1, 1e-5f, 1e-6f) && ok;
  if (!ok) std::printf("    (%s: N %lld, D %lld, logit scale %g)\n", what, (long long)N, (long long)D, l);
  return ok;
}

}  // namespace

TEST(infonce_matches_reference_at_tile_edges) {
  const float l = std::log(1 / 0.07f);  // CLIP's initial temperature
  const int64_t sizes[][2] = {{1, 8}, {2, 3}, {7, 16}, {33, 17}, {127, 32}, {128, 32}, {129, 20}, {300, 24},
                              {257, 1}, {5, 0}};
  for (auto& nd : sizes) {
    vector<float> a = unit_rows(nd[0], nd[1], 1 + nd[0]), b = unit_rows(nd[0], nd[1], 100 + nd[0]);
    check("infonce N/D sweep", a, b, nd[0], nd[1], l);
  }
}

TEST(infonce_confident_pairs) {
  // b close to a: the positives dominate, losses are small and P_ii is near 1 (the expm1 path on the diagonal).
  const int64_t N = 200, D = 32;
  vector<float> a = unit_rows(N, D, 7), noise = mtest::randn(N * D, 8, 0.05f), b(N * D);
  for (int64_t k = 0; k < N * D; k++) b[k] = a[k] + noise[k];
  check("infonce confident", a, b, N, D, std::log(100.0f) - 0.01f);
}

TEST(infonce_duplicated_rows) {
  // Identical captions: rows 3, 4 and 150 of b are the same, and so are rows 10 and 11 of a.
  const int64_t N = 160, D = 24;
  vector<float> a = unit_rows(N, D, 11), b = unit_rows(N, D, 12);
  std::memcpy(&b[4 * D], &b[3 * D], D * sizeof(float));
  std::memcpy(&b[150 * D], &b[3 * D], D * sizeof(float));
  std::memcpy(&a[11 * D], &a[10 * D], D * sizeof(float));
  check("infonce duplicated rows", a, b, N, D, 2.0f);
}

TEST(infonce_logit_scale_clamp) {
  const int64_t N = 140, D = 16;
  vector<float> a = unit_rows(N, D, 21), b = unit_rows(N, D, 22);
  const float at = std::log(100.0f);  // f32(log 100): exp of it is just above 100, so the clamp is active
  bool passes = true;
  CHECK(cpu::infonce_scale(at, &passes) == 100.0f && !passes);
  CHECK(cpu::infonce_scale(std::nextafter(at, 0.0f), &passes) < 100.0f && passes);
  CHECK(std::isnan(cpu::infonce_scale(NAN, &passes)));
  check("infonce below clamp", a, b, N, D, std::nextafter(at, 0.0f));
  check("infonce at clamp", a, b, N, D, at);
  check("infonce past clamp", a, b, N, D, 6.0f);
  check("infonce small scale", a, b, N, D, -1.0f, 3.0f);
}

TEST(infonce_every_simd_variant_agrees) {
  const int64_t N = 150, D = 40;
  vector<float> a = unit_rows(N, D, 31), b = unit_rows(N, D, 32);
  const char* prev = std::getenv("MODALAB_INFONCE_KERNEL");
  for (const char* k : {"base", "avx2", ""}) {
    setenv("MODALAB_INFONCE_KERNEL", k, 1);
    check(k[0] ? k : "infonce default kernel", a, b, N, D, 3.0f);
  }
  if (prev) setenv("MODALAB_INFONCE_KERNEL", prev, 1); else unsetenv("MODALAB_INFONCE_KERNEL");
}

TEST(infonce_null_outputs_and_thread_independence) {
  const int64_t N = 700, D = 24;  // 6 row blocks: every wavefront step has several tasks
  vector<float> a = unit_rows(N, D, 41), b = unit_rows(N, D, 42);
  const int threads = cpu::num_threads();
  cpu::set_num_threads(1);
  Out one = run(a, b, N, D, 2.5f, 1.0f);
  cpu::set_num_threads(2);
  Out two = run(a, b, N, D, 2.5f, 1.0f);
  cpu::set_num_threads(3);
  Out three = run(a, b, N, D, 2.5f, 1.0f);
  cpu::set_num_threads(threads);
  for (const Out* o : {&two, &three}) {
    CHECK(std::memcmp(&one.loss, &o->loss, sizeof(float)) == 0);
    CHECK(std::memcmp(one.stats.data(), o->stats.data(), one.stats.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(one.da.data(), o->da.data(), one.da.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(one.db.data(), o->db.data(), one.db.size() * sizeof(float)) == 0);
    CHECK(std::memcmp(&one.dl, &o->dl, sizeof(float)) == 0);
  }
  // Only db requested: the same values as with everything requested.
  vector<float> db(N * D, NAN);
  float dloss = 1.0f;
  cpu::infonce_backward(nullptr, db.data(), nullptr, &dloss, a.data(), b.data(), one.stats.data(), N, D, 2.5f);
  CHECK(std::memcmp(db.data(), one.db.data(), db.size() * sizeof(float)) == 0);
}

TEST(infonce_nan_and_empty) {
  const int64_t N = 9, D = 4;
  vector<float> a = unit_rows(N, D, 51), b = unit_rows(N, D, 52);
  a[5] = NAN;
  Out o = run(a, b, N, D, 1.0f, 1.0f);
  CHECK(std::isnan(o.loss));
  float loss = 0;
  cpu::infonce_forward(&loss, nullptr, nullptr, nullptr, 0, 4, 1.0f);
  CHECK(std::isnan(loss));
}
