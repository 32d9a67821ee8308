// Native tests of the creation, cast, element-wise and reduction kernels against plain reference loops.
// References are written independently of the kernels: Philox from its round definition, casts by rounding in
// double and looking the result up among all half values, broadcasting by explicit index arithmetic.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <numeric>
#include <vector>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;
namespace c = modalab::cpu;

namespace {

uint32_t fbits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
float ffrom(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// Run fn with n threads, then restore the previous setting.
template <typename F>
void with_threads(int n, F fn) {
  int before = c::num_threads();
  c::set_num_threads(n);
  fn();
  c::set_num_threads(before);
}

// ------------------------------------------------------------------------------------------------ Philox
// Reference Philox4x32-10, written from the paper's round: (L0, R0, L1, R1) with two multipliers.
std::vector<uint32_t> ref_philox(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = uint64_t(0xD2511F53u) * c0, p1 = uint64_t(0xCD9E8D57u) * c2;
    uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0), hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  return {c0, c1, c2, c3};
}

float ref_uniform(uint64_t seed, uint64_t pos) {
  uint64_t ctr = pos / 4;
  auto w = ref_philox(uint32_t(ctr), uint32_t(ctr >> 32), 0, 0, uint32_t(seed), uint32_t(seed >> 32));
  return float(w[pos % 4] >> 8) / 16777216.0f;
}

}  // namespace

TEST(philox_known_answer) {
  // Random123's kat_vectors: Philox4x32-10, counter 0, key 0.
  auto w = ref_philox(0, 0, 0, 0, 0, 0);
  CHECK(w[0] == 0x6627e8d5u && w[1] == 0xe169c58du && w[2] == 0xbc57ac4cu && w[3] == 0x9b00dbd8u);
  auto w2 = ref_philox(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu);
  CHECK(w2[0] == 0x408f276du && w2[1] == 0x41c83b0eu && w2[2] == 0xa20bc7c6u && w2[3] == 0x6d5451fdu);
  float u[4];
  c::rand_uniform(u, 4, 0, 0, 0.0f, 1.0f);
  const uint32_t kat[4] = {0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u};
  for (int i = 0; i < 4; i++) CHECK(u[i] == float(kat[i] >> 8) / 16777216.0f);
}

TEST(rand_uniform_matches_reference_stream) {
  const uint64_t seeds[] = {0, 1, 42, 0xDEADBEEFCAFEull, (1ull << 53) - 1};
  const uint64_t offsets[] = {0, 1, 3, 5, 4096, (1ull << 32) + 7, (1ull << 50) + 2};
  for (uint64_t s : seeds)
    for (uint64_t off : offsets) {
      std::vector<float> out(37);
      c::rand_uniform(out.data(), 37, s, off, 0.0f, 1.0f);
      for (int i = 0; i < 37; i++) CHECK(out[i] == ref_uniform(s, off + i));
    }
  // lo/hi
  std::vector<float> a(100), b(100);
  c::rand_uniform(a.data(), 100, 7, 3, 0.0f, 1.0f);
  c::rand_uniform(b.data(), 100, 7, 3, -2.0f, 3.0f);
  for (int i = 0; i < 100; i++) CHECK(b[i] == -2.0f + 5.0f * a[i] && a[i] >= 0.0f && a[i] < 1.0f);
}

TEST(rand_independent_of_threads_and_chunking) {
  const int64_t n = 300001;
  std::vector<float> u1(n), u4(n), z1(n), z4(n);
  with_threads(1, [&] {
    c::rand_uniform(u1.data(), n, 123, 9, 0.0f, 1.0f);
    c::rand_normal(z1.data(), n, 123, 9, 0.0f, 1.0f);
  });
  with_threads(4, [&] {
    c::rand_uniform(u4.data(), n, 123, 9, 0.0f, 1.0f);
    c::rand_normal(z4.data(), n, 123, 9, 0.0f, 1.0f);
  });
  CHECK(std::memcmp(u1.data(), u4.data(), n * 4) == 0);
  CHECK(std::memcmp(z1.data(), z4.data(), n * 4) == 0);
  // Element i depends only on offset + i: a request starting later reads the same numbers.
  for (int64_t start : {1, 2, 3, 4, 1001, 77777}) {
    std::vector<float> part(500);
    c::rand_normal(part.data(), 500, 123, 9 + start, 0.0f, 1.0f);
    CHECK(std::memcmp(part.data(), z1.data() + start, 500 * 4) == 0);
    c::rand_uniform(part.data(), 500, 123, 9 + start, 0.0f, 1.0f);
    CHECK(std::memcmp(part.data(), u1.data() + start, 500 * 4) == 0);
  }
}

TEST(rand_normal_moments_and_box_muller) {
  const int64_t n = 1 << 20;
  std::vector<float> z(n);
  c::rand_normal(z.data(), n, 5, 0, 0.0f, 1.0f);
  double m = 0, v = 0, m4 = 0;
  for (float x : z) m += x;
  m /= n;
  for (float x : z) { v += (x - m) * (x - m); m4 += std::pow(x - m, 4); }
  v /= n;
  m4 /= n;
  CHECK(std::fabs(m) < 5e-3);
  CHECK(std::fabs(v - 1) < 5e-3);
  CHECK(std::fabs(m4 / (v * v) - 3) < 0.05);   // kurtosis of a normal
  for (float x : z) CHECK(std::isfinite(x));
  // The Box-Muller pair of elements 0 and 1 from the reference words.
  auto w = ref_philox(0, 0, 0, 0, 5, 0);
  double u1 = (double(w[0]) + 0.5) / 4294967296.0, u2 = double(w[1]) / 4294967296.0;
  double r = std::sqrt(-2 * std::log(u1));
  CHECK(std::fabs(z[0] - r * std::cos(2 * M_PI * u2)) < 1e-6);
  CHECK(std::fabs(z[1] - r * std::sin(2 * M_PI * u2)) < 1e-6);
  // mean and std
  std::vector<float> s(1000);
  c::rand_normal(s.data(), 1000, 5, 0, 3.0f, 2.0f);
  for (int i = 0; i < 1000; i++) CHECK(std::fabs(s[i] - (3.0f + 2.0f * z[i])) <= 1e-5f * (1 + std::fabs(s[i])));
}

TEST(fill_and_arange) {
  std::vector<float> f(70000);
  c::fill_f32(f.data(), 70000, 2.5f);
  CHECK(std::all_of(f.begin(), f.end(), [](float v) { return v == 2.5f; }));
  std::vector<int32_t> iv(70000);
  c::fill_i32(iv.data(), 70000, -7);
  CHECK(std::all_of(iv.begin(), iv.end(), [](int32_t v) { return v == -7; }));
  c::arange_f32(f.data(), 70000, 0.5, 0.1);
  for (int i = 0; i < 70000; i++) CHECK(f[i] == float(0.5 + i * 0.1));
  c::arange_i32(iv.data(), 70000, -100, 3);
  for (int i = 0; i < 70000; i++) CHECK(iv[i] == -100 + 3 * i);
}

// ------------------------------------------------------------------------------------------------ casts
namespace {

// Decode a half by its definition.
double ref_f16_value(uint16_t h) {
  int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
  double v = e == 0 ? std::ldexp(m, -24) : e == 31 ? (m ? NAN : INFINITY) : std::ldexp(1024 + m, e - 25);
  return s ? -v : v;
}

// Encode by rounding in double to the f16 grid (quantum 2^(e-10), e >= -14), ties to even (nearbyint).
uint16_t ref_f32_to_f16(float f) {
  if (std::isnan(f)) return 0x7E00;
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  double a = std::fabs(double(f));
  if (std::isinf(a)) return sign | 0x7C00;
  if (a == 0) return sign;
  int e = std::max(std::ilogb(a), -14);
  double q = std::ldexp(1.0, e - 10);
  double r = std::nearbyint(a / q) * q;
  if (r >= 65520.0 || std::isinf(r)) return sign | 0x7C00;
  if (r > 65504.0) return sign | 0x7C00;
  // find the half with this value: exponent and mantissa from r
  if (r < std::ldexp(1.0, -14)) return sign | uint16_t(r / std::ldexp(1.0, -24));
  int re = std::ilogb(r);
  uint16_t m = uint16_t(r / std::ldexp(1.0, re - 10) - 1024);
  return sign | uint16_t((re + 15) << 10) | m;
}

uint16_t ref_f32_to_bf16(float f) {
  if (std::isnan(f)) return 0x7FC0;
  double a = std::fabs(double(f));
  uint16_t sign = std::signbit(f) ? 0x8000 : 0;
  if (std::isinf(a)) return sign | 0x7F80;
  if (a == 0) return sign;
  int e = std::max(std::ilogb(a), -126);
  double q = std::ldexp(1.0, e - 7);
  double r = std::nearbyint(a / q) * q;
  if (r >= std::ldexp(1.0, 128)) return sign | 0x7F80;
  return sign | uint16_t(fbits(float(r)) >> 16);
}

// Random floats over the whole range, and near the interesting boundaries of the half types.
std::vector<float> cast_inputs() {
  std::mt19937 g(11);
  std::vector<float> v;
  for (int i = 0; i < 200000; i++) v.push_back(ffrom(g()));                    // any bit pattern
  std::uniform_real_distribution<float> ud(-70000.0f, 70000.0f);
  for (int i = 0; i < 100000; i++) v.push_back(ud(g));
  for (int i = 0; i < 100000; i++) v.push_back(std::ldexp(ud(g) / 70000.0f, -int(g() % 30)));   // f16 subnormals
  // exact ties between neighbouring halves and bf16s, and the overflow boundaries
  for (uint32_t h = 0; h < 0x7C00; h += 7) {
    double a = ref_f16_value(uint16_t(h)), b = ref_f16_value(uint16_t(h + 1));
    v.push_back(float((a + b) / 2));
    v.push_back(-float((a + b) / 2));
  }
  for (int i = 0; i < 20000; i++) v.push_back(ffrom((g() & 0xFFFF0000u) | 0x8000u));   // bf16 ties
  for (float f : {65504.0f, 65519.0f, 65519.996f, 65520.0f, 65536.0f, 3.4028235e38f, 5.96e-8f, 2.98e-8f, 2.9802322e-8f,
                  0.0f, -0.0f, INFINITY, -INFINITY, NAN})
    v.push_back(f);
  return v;
}

}  // namespace

TEST(cast_f16_all_bit_patterns_round_trip) {
  std::vector<uint16_t> h(65536), back(65536);
  std::iota(h.begin(), h.end(), 0);
  std::vector<float> f(65536);
  c::cast(f.data(), DType::F32, h.data(), DType::F16, 65536);
  c::cast(back.data(), DType::F16, f.data(), DType::F32, 65536);
  int bad = 0;
  for (int i = 0; i < 65536; i++) {
    double ref = ref_f16_value(uint16_t(i));
    if (std::isnan(ref)) {
      bad += !std::isnan(f[i]) || ((back[i] & 0x7C00) != 0x7C00) || !(back[i] & 0x3FF) || !(back[i] & 0x200);
      continue;
    }
    bad += double(f[i]) != ref || std::signbit(f[i]) != bool(i & 0x8000) || back[i] != i;
  }
  CHECK(bad == 0);
}

TEST(cast_bf16_all_bit_patterns_round_trip) {
  std::vector<uint16_t> h(65536), back(65536);
  std::iota(h.begin(), h.end(), 0);
  std::vector<float> f(65536);
  c::cast(f.data(), DType::F32, h.data(), DType::BF16, 65536);
  c::cast(back.data(), DType::BF16, f.data(), DType::F32, 65536);
  int bad = 0;
  for (int i = 0; i < 65536; i++) {
    bad += fbits(f[i]) != (uint32_t(i) << 16);
    if (std::isnan(f[i])) bad += back[i] != 0x7FC0;
    else bad += back[i] != i;
  }
  CHECK(bad == 0);
}

TEST(cast_f32_to_half_matches_reference_rounding) {
  std::vector<float> v = cast_inputs();
  const int64_t n = int64_t(v.size());
  std::vector<uint16_t> h(n), b(n);
  c::cast(h.data(), DType::F16, v.data(), DType::F32, n);
  c::cast(b.data(), DType::BF16, v.data(), DType::F32, n);
  int bad16 = 0, bad_b = 0;
  for (int64_t i = 0; i < n; i++) {
    if (std::isnan(v[i])) {
      bad16 += (h[i] & 0x7E00) != 0x7E00 || !(h[i] & 0x3FF);
      bad_b += b[i] != 0x7FC0;
      continue;
    }
    uint16_t r = ref_f32_to_f16(v[i]);
    if (h[i] != r && bad16++ < 5) std::printf("    f16 of %.9g (0x%08x): got 0x%04x, want 0x%04x\n", v[i], fbits(v[i]), h[i], r);
    uint16_t rb = ref_f32_to_bf16(v[i]);
    if (b[i] != rb && bad_b++ < 5) std::printf("    bf16 of %.9g (0x%08x): got 0x%04x, want 0x%04x\n", v[i], fbits(v[i]), b[i], rb);
  }
  CHECK(bad16 == 0);
  CHECK(bad_b == 0);
}

TEST(cast_int_and_between_halves) {
  std::vector<float> f = {0.0f, 1.9f, -1.9f, 2.5f, -2.5f, 1e9f, -2147483648.0f, 2147483648.0f, 3e10f, NAN, -0.7f};
  std::vector<int32_t> iv(f.size());
  c::cast(iv.data(), DType::I32, f.data(), DType::F32, int64_t(f.size()));
  const int32_t want[] = {0, 1, -1, 2, -2, 1000000000, INT32_MIN, INT32_MIN, INT32_MIN, INT32_MIN, 0};
  for (size_t i = 0; i < f.size(); i++) CHECK(iv[i] == want[i]);
  std::vector<int32_t> ints = {0, 1, -1, 2049, 65504, 65519, 65520, 16777217, INT32_MAX, INT32_MIN};
  std::vector<float> back(ints.size());
  std::vector<uint16_t> h(ints.size()), bb(ints.size());
  c::cast(back.data(), DType::F32, ints.data(), DType::I32, int64_t(ints.size()));
  c::cast(h.data(), DType::F16, ints.data(), DType::I32, int64_t(ints.size()));
  c::cast(bb.data(), DType::BF16, ints.data(), DType::I32, int64_t(ints.size()));
  for (size_t i = 0; i < ints.size(); i++) {
    CHECK(back[i] == float(ints[i]));
    CHECK(h[i] == ref_f32_to_f16(float(ints[i])));
    CHECK(bb[i] == ref_f32_to_bf16(float(ints[i])));
  }
  // f16 <-> bf16 go through f32
  std::vector<uint16_t> all(65536), out(65536);
  std::iota(all.begin(), all.end(), 0);
  c::cast(out.data(), DType::BF16, all.data(), DType::F16, 65536);
  int bad = 0;
  for (int i = 0; i < 65536; i++) {
    double r = ref_f16_value(uint16_t(i));
    if (std::isnan(r)) bad += out[i] != 0x7FC0;
    else bad += out[i] != ref_f32_to_bf16(float(r));
  }
  c::cast(out.data(), DType::F16, all.data(), DType::BF16, 65536);
  for (int i = 0; i < 65536; i++) {
    float r = ffrom(uint32_t(i) << 16);
    if (std::isnan(r)) bad += (out[i] & 0x7E00) != 0x7E00;
    else bad += out[i] != ref_f32_to_f16(r);
  }
  CHECK(bad == 0);
  // same dtype: a copy; i32 from half
  std::vector<float> src = mtest::randn(1000, 3), dst(1000);
  c::cast(dst.data(), DType::F32, src.data(), DType::F32, 1000);
  CHECK(std::memcmp(src.data(), dst.data(), 4000) == 0);
  uint16_t hv[3] = {0x4500 /* 5 */, 0xC0E0 /* -2.4375 */, 0x7C00};
  int32_t io[3];
  c::cast(io, DType::I32, hv, DType::F16, 3);
  CHECK(io[0] == 5 && io[1] == -2 && io[2] == INT32_MIN);
}

// ------------------------------------------------------------------------------------------------ unary
namespace {

double ref_unary(UnaryOp op, double x) {
  switch (op) {
    case UnaryOp::Neg: return -x;
    case UnaryOp::Exp: return std::exp(x);
    case UnaryOp::Log: return std::log(x);
    case UnaryOp::Sqrt: return std::sqrt(x);
    case UnaryOp::Tanh: return std::tanh(x);
    case UnaryOp::Sigmoid: return 1 / (1 + std::exp(-x));
    case UnaryOp::Relu: return x > 0 ? x : 0;
    case UnaryOp::GeluErf: return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case UnaryOp::GeluTanh: return 0.5 * x * (1 + std::tanh(std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case UnaryOp::Silu: return x / (1 + std::exp(-x));
    case UnaryOp::Abs: return std::fabs(x);
    case UnaryOp::Square: return x * x;
    case UnaryOp::Reciprocal: return 1 / x;
    case UnaryOp::Sin: return std::sin(x);
    case UnaryOp::Cos: return std::cos(x);
  }
  return 0;
}

const UnaryOp kAllUnary[] = {UnaryOp::Neg, UnaryOp::Exp, UnaryOp::Log, UnaryOp::Sqrt, UnaryOp::Tanh,
                             UnaryOp::Sigmoid, UnaryOp::Relu, UnaryOp::GeluErf, UnaryOp::GeluTanh, UnaryOp::Silu,
                             UnaryOp::Abs, UnaryOp::Square, UnaryOp::Reciprocal, UnaryOp::Sin, UnaryOp::Cos};

bool positive_domain(UnaryOp op) { return op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Reciprocal; }

}  // namespace

TEST(unary_forward_and_backward_against_reference) {
  const int64_t n = 20000;   // above the grain: exercises the thread pool
  for (UnaryOp op : kAllUnary) {
    std::vector<float> x = mtest::randn(n, 100 + int(op), 2.0f);
    if (positive_domain(op)) for (auto& v : x) v = std::fabs(v) + 0.1f;
    std::vector<float> y(n), ref(n), dy = mtest::randn(n, 7), dx(n), dref(n);
    c::unary_forward(y.data(), x.data(), n, op);
    for (int64_t i = 0; i < n; i++) ref[i] = float(ref_unary(op, x[i]));
    char what[64];
    std::snprintf(what, sizeof what, "unary %d forward", int(op));
    mtest::close(what, y.data(), ref.data(), n, 2e-6f, 1e-6f);
    c::unary_backward(dx.data(), dy.data(), x.data(), y.data(), n, op);
    // Reference derivative: central difference of the double reference (step scaled to x).
    for (int64_t i = 0; i < n; i++) {
      double h = 1e-6 * std::max(1.0, std::fabs(double(x[i])));
      double d = (ref_unary(op, x[i] + h) - ref_unary(op, x[i] - h)) / (2 * h);
      dref[i] = float(dy[i] * d);
    }
    std::snprintf(what, sizeof what, "unary %d backward", int(op));
    mtest::close(what, dx.data(), dref.data(), n, 1e-4f, 1e-5f);
  }
}

// The vectorised exp, tanh, erfc behind exp/tanh/sigmoid/silu/gelu, swept over their whole useful range
// against double references: relative error within a few ulp wherever the result is a normal float. The two
// GELUs allow a little more on their negative tails, where exp amplifies the rounding of its float argument
// (x^2 or x^3 terms); still far inside the 1e-5 tolerance of the PyTorch fixtures.
TEST(vector_math_accuracy_over_the_whole_range) {
  struct R { const char* name; UnaryOp op; double lo, hi, rtol; double (*f)(double); };
  const R ranges[] = {
      {"exp", UnaryOp::Exp, -87, 88.7, 3e-7, [](double x) { return std::exp(x); }},
      {"tanh", UnaryOp::Tanh, -12, 12, 3e-7, [](double x) { return std::tanh(x); }},
      {"tanh near 0", UnaryOp::Tanh, -0.7, 0.7, 3e-7, [](double x) { return std::tanh(x); }},
      {"sigmoid", UnaryOp::Sigmoid, -80, 80, 4e-7, [](double x) { return 1 / (1 + std::exp(-x)); }},
      {"silu", UnaryOp::Silu, -80, 80, 4e-7, [](double x) { return x / (1 + std::exp(-x)); }},
      {"gelu", UnaryOp::GeluErf, -5, 10, 3e-6, [](double x) { return 0.5 * x * std::erfc(-x / std::sqrt(2.0)); }},
      {"gelu tanh", UnaryOp::GeluTanh, -5, 10, 3e-6, [](double x) {
         double u = std::sqrt(2 / M_PI) * (x + 0.044715 * x * x * x);
         return x / (1 + std::exp(-2 * u));   // = 0.5 x (1 + tanh u), without the cancellation
       }},
  };
  const int64_t n = 400001;
  std::vector<float> x(n), y(n), ref(n);
  for (const R& r : ranges) {
    for (int64_t i = 0; i < n; i++) x[i] = float(r.lo + (r.hi - r.lo) * double(i) / double(n - 1));
    c::unary_forward(y.data(), x.data(), n, r.op);
    for (int64_t i = 0; i < n; i++) ref[i] = float(r.f(x[i]));
    char what[64];
    std::snprintf(what, sizeof what, "%s accuracy", r.name);
    mtest::close(what, y.data(), ref.data(), n, float(r.rtol), 1e-30f);
  }
  float e[5] = {-200.0f, 200.0f, NAN, -INFINITY, INFINITY}, o[5];
  c::unary_forward(o, e, 5, UnaryOp::Exp);
  CHECK(o[0] == 0.0f && o[1] == INFINITY && std::isnan(o[2]) && o[3] == 0.0f && o[4] == INFINITY);
  c::unary_forward(o, e, 5, UnaryOp::Tanh);
  CHECK(o[0] == -1.0f && o[1] == 1.0f && std::isnan(o[2]) && o[3] == -1.0f && o[4] == 1.0f);
  c::unary_forward(o, e, 5, UnaryOp::Sigmoid);
  CHECK(o[0] == 0.0f && o[1] == 1.0f && std::isnan(o[2]));
  c::unary_forward(o, e, 5, UnaryOp::GeluTanh);
  CHECK(o[0] == -0.0f && o[1] == 200.0f && std::isnan(o[2]));
  float sub = -100.0f;   // e^-100 = 3.7e-44 is subnormal: scaled in two steps, it rounds once
  c::unary_forward(o, &sub, 1, UnaryOp::Exp);
  CHECK(o[0] == float(std::exp(-100.0)));
}

TEST(unary_edges) {
  float x[6] = {0.0f, -0.0f, NAN, INFINITY, -INFINITY, -3.0f}, y[6], dx[6];
  float dy[6] = {1, 1, 1, 1, 1, 1};
  c::unary_forward(y, x, 6, UnaryOp::Relu);
  CHECK(y[0] == 0 && std::isnan(y[2]) && y[3] == INFINITY && y[4] == 0 && y[5] == 0);
  c::unary_forward(y, x, 6, UnaryOp::Sigmoid);
  CHECK(y[0] == 0.5f && y[3] == 1.0f && y[4] == 0.0f);
  c::unary_backward(dx, dy, x, y, 6, UnaryOp::Abs);
  CHECK(dx[0] == 0 && dx[5] == -1);
  c::unary_backward(dx, dy, x, y, 6, UnaryOp::Relu);
  CHECK(dx[0] == 0 && dx[3] == 1 && dx[5] == 0);
  c::unary_forward(y, x, 6, UnaryOp::GeluErf);   // gelu(-inf) is -inf * 0 = NaN, as in torch
  CHECK(y[3] == INFINITY && std::isnan(y[2]) && y[0] == 0.0f);
}

TEST(affine_and_pow_scalar) {
  const int64_t n = 50000;
  std::vector<float> x = mtest::randn(n, 21), y(n), ref(n);
  c::affine(y.data(), x.data(), n, 1.5f, -0.25f);
  for (int64_t i = 0; i < n; i++) ref[i] = x[i] * 1.5f - 0.25f;
  mtest::close("affine", y.data(), ref.data(), n);
  c::affine(y.data(), x.data(), n, 3.0f, 0.0f);
  for (int64_t i = 0; i < n; i++) CHECK(y[i] == x[i] * 3.0f);
  c::affine(y.data(), x.data(), n, 1.0f, 0.7f);
  for (int64_t i = 0; i < n; i++) CHECK(y[i] == x[i] + 0.7f);
  float nz = -0.0f, out;
  c::affine(&out, &nz, 1, 2.0f, 0.0f);
  CHECK(std::signbit(out));
  for (auto& v : x) v = std::fabs(v) + 0.01f;
  for (float p : {1.0f, 2.0f, 3.0f, 0.5f, -0.5f, -1.0f, -2.0f, 1.7f, -2.3f, 0.0f}) {
    c::pow_scalar(y.data(), x.data(), n, p);
    for (int64_t i = 0; i < n; i++) ref[i] = float(std::pow(double(x[i]), double(p)));
    mtest::close("pow_scalar", y.data(), ref.data(), n, 3e-6f, 1e-6f);
  }
  float neg = -2.0f;
  c::pow_scalar(&out, &neg, 1, 3.0f);
  CHECK(out == -8.0f);
  c::pow_scalar(&out, &neg, 1, 0.5f);
  CHECK(std::isnan(out));
}

// ------------------------------------------------------------------------------------------------ broadcast
namespace {

double ref_binary(BinaryOp op, double a, double b) {
  switch (op) {
    case BinaryOp::Add: return a + b;
    case BinaryOp::Sub: return a - b;
    case BinaryOp::Mul: return a * b;
    case BinaryOp::Div: return a / b;
    case BinaryOp::Pow: return std::pow(a, b);
    case BinaryOp::Maximum: return std::isnan(a) || std::isnan(b) ? NAN : std::max(a, b);
    case BinaryOp::Minimum: return std::isnan(a) || std::isnan(b) ? NAN : std::min(a, b);
    case BinaryOp::Eq: return a == b;
    case BinaryOp::Lt: return a < b;
    case BinaryOp::Gt: return a > b;
    case BinaryOp::Le: return a <= b;
    case BinaryOp::Ge: return a >= b;
    case BinaryOp::Ne: return a != b;
  }
  return 0;
}

// A random shape of up to 4 axes and, for each of k inputs, a shape that broadcasts to it (as strides).
struct Case3 {
  std::vector<int64_t> shape;
  std::vector<int64_t> st[3];
  int64_t extent[3];
};

Case3 random_case(std::mt19937& g, int k, int64_t maxdim = 5) {
  Case3 cs;
  int nd = int(g() % 5);
  for (int d = 0; d < nd; d++) cs.shape.push_back(1 + int64_t(g() % maxdim));
  for (int j = 0; j < k; j++) {
    // input shape: drop some leading axes, set some axes to 1
    int drop = nd ? int(g() % (nd + 1)) : 0;
    std::vector<int64_t> ish(cs.shape.begin() + drop, cs.shape.end());
    for (auto& d : ish) if (g() % 3 == 0) d = 1;
    std::vector<int64_t> own(ish.size());
    int64_t acc = 1;
    for (int d = int(ish.size()) - 1; d >= 0; d--) { own[d] = acc; acc *= ish[d]; }
    cs.extent[j] = acc;
    cs.st[j].assign(nd, 0);
    for (int d = drop; d < nd; d++) cs.st[j][d] = ish[d - drop] == 1 ? 0 : own[d - drop];
  }
  return cs;
}

int64_t offset_of(const Case3& cs, int j, int64_t flat) {
  int64_t off = 0;
  for (int d = int(cs.shape.size()) - 1; d >= 0; d--) {
    off += (flat % cs.shape[d]) * cs.st[j][d];
    flat /= cs.shape[d];
  }
  return off;
}

}  // namespace

TEST(binary_broadcast_against_index_arithmetic) {
  std::mt19937 g(5);
  const BinaryOp ops[] = {BinaryOp::Add, BinaryOp::Sub, BinaryOp::Mul, BinaryOp::Div, BinaryOp::Pow,
                          BinaryOp::Maximum, BinaryOp::Minimum, BinaryOp::Eq, BinaryOp::Lt, BinaryOp::Gt,
                          BinaryOp::Le, BinaryOp::Ge, BinaryOp::Ne};
  for (int t = 0; t < 400; t++) {
    Case3 cs = random_case(g, 2);
    int64_t n = 1;
    for (auto d : cs.shape) n *= d;
    std::vector<float> a = mtest::randn(cs.extent[0], g()), b = mtest::randn(cs.extent[1], g());
    for (auto& v : a) v = std::round(v * 2) / 2;   // some ties, for the comparisons and maximum
    for (auto& v : b) v = std::round(v * 2) / 2 + (g() % 2 ? 0.0f : 0.25f);
    BinaryOp op = ops[t % 13];
    if (op == BinaryOp::Pow) for (auto& v : a) v = std::fabs(v) + 0.5f;
    std::vector<float> out(n), ref(n);
    c::binary_forward(out.data(), a.data(), b.data(), int(cs.shape.size()), cs.shape.data(), cs.st[0].data(),
                      cs.st[1].data(), op);
    for (int64_t i = 0; i < n; i++) ref[i] = float(ref_binary(op, a[offset_of(cs, 0, i)], b[offset_of(cs, 1, i)]));
    mtest::close("binary", out.data(), ref.data(), n, 2e-6f, 1e-6f);
  }
}

TEST(binary_large_broadcasts_and_threads) {
  // (300, 257) op (257): a row broadcast big enough to run in parallel; (300, 1) column broadcast;
  // scalar on either side; results identical for 1 and 4 threads.
  const int64_t R = 300, C = 257, n = R * C;
  std::vector<float> a = mtest::randn(n, 1), row = mtest::randn(C, 2), col = mtest::randn(R, 3), s = {1.5f};
  std::vector<int64_t> shape = {R, C}, full = {C, 1}, rowst = {0, 1}, colst = {1, 0}, zero = {0, 0};
  struct V { const float* b; std::vector<int64_t> bs; };
  V cases[] = {{row.data(), rowst}, {col.data(), colst}, {s.data(), zero}, {a.data(), full}};
  for (auto& v : cases) {
    std::vector<float> o1(n), o4(n), ref(n);
    with_threads(1, [&] { c::binary_forward(o1.data(), a.data(), v.b, 2, shape.data(), full.data(), v.bs.data(), BinaryOp::Sub); });
    with_threads(4, [&] { c::binary_forward(o4.data(), a.data(), v.b, 2, shape.data(), full.data(), v.bs.data(), BinaryOp::Sub); });
    for (int64_t i = 0; i < n; i++) ref[i] = a[i] - v.b[(i / C) * v.bs[0] + (i % C) * v.bs[1]];
    CHECK(std::memcmp(o1.data(), ref.data(), n * 4) == 0);
    CHECK(std::memcmp(o4.data(), ref.data(), n * 4) == 0);
    // and with the scalar first
    with_threads(4, [&] { c::binary_forward(o4.data(), v.b, a.data(), 2, shape.data(), v.bs.data(), full.data(), BinaryOp::Sub); });
    for (int64_t i = 0; i < n; i++) ref[i] = v.b[(i / C) * v.bs[0] + (i % C) * v.bs[1]] - a[i];
    CHECK(std::memcmp(o4.data(), ref.data(), n * 4) == 0);
  }
  // NaN: maximum/minimum propagate, comparisons are false except ne
  float x[3] = {NAN, 1.0f, 2.0f}, y[3] = {1.0f, NAN, 1.0f}, o[3];
  int64_t sh[1] = {3}, st[1] = {1};
  c::binary_forward(o, x, y, 1, sh, st, st, BinaryOp::Maximum);
  CHECK(std::isnan(o[0]) && std::isnan(o[1]) && o[2] == 2.0f);
  c::binary_forward(o, x, y, 1, sh, st, st, BinaryOp::Minimum);
  CHECK(std::isnan(o[0]) && std::isnan(o[1]) && o[2] == 1.0f);
  c::binary_forward(o, x, y, 1, sh, st, st, BinaryOp::Ne);
  CHECK(o[0] == 1 && o[1] == 1 && o[2] == 1);
  c::binary_forward(o, x, y, 1, sh, st, st, BinaryOp::Eq);
  CHECK(o[0] == 0 && o[1] == 0 && o[2] == 0);
  // an empty shape writes nothing; a 0-d shape is one element
  c::binary_forward(o, x, y, 0, sh, st, st, BinaryOp::Add);
  CHECK(std::isnan(o[0]));
  int64_t zsh[2] = {3, 0}, zst[2] = {0, 1};
  o[0] = 42;
  c::binary_forward(o, x, y, 2, zsh, zst, zst, BinaryOp::Add);
  CHECK(o[0] == 42);
}

TEST(where_broadcast_f32_and_i32_cond) {
  std::mt19937 g(9);
  for (int t = 0; t < 300; t++) {
    Case3 cs = random_case(g, 3);
    int64_t n = 1;
    for (auto d : cs.shape) n *= d;
    std::vector<float> cf(cs.extent[0]), a = mtest::randn(cs.extent[1], g()), b = mtest::randn(cs.extent[2], g());
    std::vector<int32_t> ci(cs.extent[0]);
    for (int64_t i = 0; i < cs.extent[0]; i++) {
      ci[i] = int32_t(g() % 3) - 1;   // -1, 0, 1: nonzero is true
      cf[i] = ci[i] == 0 ? (g() % 2 ? 0.0f : -0.0f) : float(ci[i]) * 0.5f;
    }
    std::vector<float> o1(n), o2(n), ref(n);
    c::where_forward(o1.data(), ci.data(), true, a.data(), b.data(), int(cs.shape.size()), cs.shape.data(),
                     cs.st[0].data(), cs.st[1].data(), cs.st[2].data());
    c::where_forward(o2.data(), cf.data(), false, a.data(), b.data(), int(cs.shape.size()), cs.shape.data(),
                     cs.st[0].data(), cs.st[1].data(), cs.st[2].data());
    for (int64_t i = 0; i < n; i++)
      ref[i] = ci[offset_of(cs, 0, i)] != 0 ? a[offset_of(cs, 1, i)] : b[offset_of(cs, 2, i)];
    CHECK(std::memcmp(o1.data(), ref.data(), n * 4) == 0);
    CHECK(std::memcmp(o2.data(), ref.data(), n * 4) == 0);
  }
}

TEST(dropout_mask_from_the_uniform_stream) {
  const int64_t n = 100003;
  std::vector<float> x = mtest::randn(n, 4), y(n), dy = mtest::randn(n, 5), dx(n), u(n);
  const float p = 0.3f;
  c::dropout_forward(y.data(), x.data(), n, p, 77, 13);
  c::dropout_backward(dx.data(), dy.data(), n, p, 77, 13);
  c::rand_uniform(u.data(), n, 77, 13, 0.0f, 1.0f);
  int64_t kept = 0, bad = 0;
  for (int64_t i = 0; i < n; i++) {
    bool keep = u[i] >= p;
    kept += keep;
    bad += y[i] != (keep ? x[i] * (1.0f / (1.0f - p)) : 0.0f);
    bad += dx[i] != (keep ? dy[i] * (1.0f / (1.0f - p)) : 0.0f);
  }
  CHECK(bad == 0);
  CHECK(std::fabs(double(kept) / n - 0.7) < 0.01);
  std::vector<float> y4(n);
  with_threads(4, [&] { c::dropout_forward(y4.data(), x.data(), n, p, 77, 13); });
  CHECK(std::memcmp(y.data(), y4.data(), n * 4) == 0);
  c::dropout_forward(y.data(), x.data(), n, 0.0f, 77, 13);
  CHECK(std::memcmp(y.data(), x.data(), n * 4) == 0);
  c::dropout_forward(y.data(), x.data(), n, 1.0f, 77, 13);
  CHECK(std::all_of(y.begin(), y.end(), [](float v) { return v == 0.0f; }));
}

// ------------------------------------------------------------------------------------------------ reductions
namespace {

void ref_reduce(std::vector<float>& out, std::vector<int32_t>& arg, const std::vector<float>& x, int64_t outer,
                int64_t len, int64_t inner, ReduceOp op) {
  out.assign(outer * inner, 0);
  arg.assign(outer * inner, -1);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      double s = 0;
      float best = op == ReduceOp::Max ? -INFINITY : INFINITY;
      int32_t bi = -1;
      for (int64_t l = 0; l < len; l++) {
        float v = x[(o * len + l) * inner + i];
        s += v;
        if (bi >= 0 && std::isnan(best)) continue;
        if (std::isnan(v) || bi < 0 || (op == ReduceOp::Max ? v > best : v < best)) { best = v; bi = int32_t(l); }
      }
      if (op == ReduceOp::Sum) out[o * inner + i] = float(s);
      else if (op == ReduceOp::Mean) out[o * inner + i] = float(s / len);
      else { out[o * inner + i] = best; arg[o * inner + i] = bi; }
    }
}

}  // namespace

TEST(reduce_against_reference_all_layouts) {
  struct S { int64_t outer, len, inner; };
  const S shapes[] = {{1, 1, 1}, {3, 7, 1}, {1, 100000, 1}, {2, 70001, 1}, {4, 5, 3}, {1, 3000, 130},
                      {2, 600, 64}, {5, 2, 1000}, {1, 200000, 2}, {7, 1, 9}, {64, 33, 1}, {3, 40000, 3}};
  const ReduceOp ops[] = {ReduceOp::Sum, ReduceOp::Mean, ReduceOp::Max, ReduceOp::Min};
  uint32_t seed = 1;
  for (const S& s : shapes) {
    std::vector<float> x = mtest::randn(s.outer * s.len * s.inner, seed++);
    for (auto& v : x) v = std::round(v * 8) / 8;   // ties, so that first-index matters
    for (ReduceOp op : ops) {
      std::vector<float> out(s.outer * s.inner), ref;
      std::vector<int32_t> arg(s.outer * s.inner), rarg;
      c::reduce(out.data(), arg.data(), x.data(), s.outer, s.len, s.inner, op);
      ref_reduce(ref, rarg, x, s.outer, s.len, s.inner, op);
      mtest::close("reduce", out.data(), ref.data(), out.size(), 1e-6f, 1e-6f);
      if (op == ReduceOp::Max || op == ReduceOp::Min) CHECK(arg == rarg);
      // the same bits with 1 and 4 threads
      std::vector<float> o1(out.size()), o4(out.size());
      with_threads(1, [&] { c::reduce(o1.data(), nullptr, x.data(), s.outer, s.len, s.inner, op); });
      with_threads(4, [&] { c::reduce(o4.data(), nullptr, x.data(), s.outer, s.len, s.inner, op); });
      CHECK(std::memcmp(o1.data(), o4.data(), o1.size() * 4) == 0);
    }
  }
}

TEST(reduce_nan_empty_and_long_sums) {
  // NaN propagates through max/min and its first index is returned, across a block boundary too.
  for (int64_t len : {10, 100000}) {
    std::vector<float> x = mtest::randn(len, 3);
    x[len - 3] = NAN;
    x[len - 1] = NAN;
    float out;
    int32_t arg;
    c::reduce(&out, &arg, x.data(), 1, len, 1, ReduceOp::Max);
    CHECK(std::isnan(out) && arg == len - 3);
    c::reduce(&out, &arg, x.data(), 1, len, 1, ReduceOp::Min);
    CHECK(std::isnan(out) && arg == len - 3);
    c::reduce(&out, nullptr, x.data(), 1, len, 1, ReduceOp::Sum);
    CHECK(std::isnan(out));
  }
  float o[2];
  int32_t a[2];
  c::reduce(o, a, nullptr, 2, 0, 1, ReduceOp::Sum);
  CHECK(o[0] == 0 && o[1] == 0);
  c::reduce(o, a, nullptr, 2, 0, 1, ReduceOp::Mean);
  CHECK(std::isnan(o[0]));
  c::reduce(o, a, nullptr, 2, 0, 1, ReduceOp::Max);
  CHECK(o[0] == -INFINITY && a[0] == -1);
  c::reduce(o, a, nullptr, 1, 0, 2, ReduceOp::Min);
  CHECK(o[1] == INFINITY && a[1] == -1);
  // A long sum in double: 1e7 copies of 0.1f sum to 1e7 * 0.1f to float precision (f32 accumulation drifts).
  const int64_t n = 10000000;
  std::vector<float> tenth(n, 0.1f);
  float s;
  c::reduce(&s, nullptr, tenth.data(), 1, n, 1, ReduceOp::Sum);
  CHECK(s == float(double(0.1f) * n));
  c::reduce(&s, nullptr, tenth.data(), 1, n, 1, ReduceOp::Mean);
  CHECK(s == 0.1f);
}

TEST(broadcast_axis_scatter_arg_sum_squares_all_finite) {
  const int64_t outer = 3, len = 5, inner = 4;
  std::vector<float> dy = mtest::randn(outer * inner, 8), dx(outer * len * inner);
  c::broadcast_axis(dx.data(), dy.data(), outer, len, inner, 0.5f);
  int bad = 0;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < len; l++)
      for (int64_t i = 0; i < inner; i++) bad += dx[(o * len + l) * inner + i] != dy[o * inner + i] * 0.5f;
  std::vector<int32_t> arg(outer * inner);
  for (int64_t k = 0; k < outer * inner; k++) arg[k] = int32_t(k % 7) - 1;   // includes -1 and 5: skipped
  c::scatter_arg(dx.data(), dy.data(), arg.data(), outer, len, inner);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < len; l++)
      for (int64_t i = 0; i < inner; i++) {
        int32_t a = arg[o * inner + i];
        bad += dx[(o * len + l) * inner + i] != (a == l ? dy[o * inner + i] : 0.0f);
      }
  CHECK(bad == 0);
  // big broadcast, threads
  std::vector<float> big(1000 * 300), by = mtest::randn(1000, 9);
  c::broadcast_axis(big.data(), by.data(), 1000, 300, 1, 1.0f);
  for (int64_t r = 0; r < 1000; r++) bad += big[r * 300 + 17] != by[r];
  CHECK(bad == 0);

  std::vector<float> x = mtest::randn(1000003, 10);
  double ref = 0;
  for (float v : x) ref += double(v) * v;
  double s1 = 0, s4 = 0;
  with_threads(1, [&] { s1 = c::sum_squares(x.data(), int64_t(x.size())); });
  with_threads(4, [&] { s4 = c::sum_squares(x.data(), int64_t(x.size())); });
  CHECK(std::fabs(s1 - ref) <= 1e-9 * ref && s1 == s4);
  CHECK(c::sum_squares(x.data(), 0) == 0);
  CHECK(c::all_finite(x.data(), int64_t(x.size())));
  for (float bad_v : {NAN, INFINITY, -INFINITY}) {
    float keep = x[999999];
    x[999999] = bad_v;
    CHECK(!c::all_finite(x.data(), int64_t(x.size())));
    x[999999] = keep;
  }
  float maxf = 3.4028235e38f;
  CHECK(c::all_finite(&maxf, 1) && c::all_finite(nullptr, 0));
}

// parallel_for: an exception thrown by any chunk, on any thread, reaches the caller (never std::terminate).
#include "../cpu/parallel.h"
#include <stdexcept>
TEST(parallel_for_rethrows_a_worker_exception) {
  modalab::cpu::set_num_threads(2);
  for (int64_t bad : {int64_t(0), int64_t(999)}) {
    bool caught = false;
    try {
      modalab::cpu::parallel_for(1000, 10, [&](int64_t b, int64_t e) {
        if (b <= bad && bad < e) throw std::runtime_error("boom");
      });
    } catch (const std::runtime_error&) {
      caught = true;
    }
    CHECK(caught);
  }
  int64_t sum = 0;  // the pool still works afterwards
  std::vector<int64_t> part(1000, 1);
  modalab::cpu::parallel_for(1000, 10, [&](int64_t b, int64_t e) { for (int64_t i = b; i < e; i++) part[i] = i; });
  for (int64_t v : part) sum += v;
  CHECK(sum == 999 * 1000 / 2);
}
