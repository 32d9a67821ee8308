// Half precision: every cast path (portable, F16C, AVX-512, AVX-512 BF16) bit for bit against PyTorch's tables
// (test/fixtures/casts/*.bin) and against the portable path, and the bf16/f16 GEMM (both paths) against a plain
// triple loop in double on the widened operands.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <string>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;

namespace {

const char* const kPaths[] = {"portable", "f16c", "avx512", "avx512bf16"};

// The repository root, from this file's path (CMake passes sources by absolute path).
std::string repo_root() {
  std::string f = __FILE__;
  const std::string tail = "native/test/test_half.cc";
  return f.size() >= tail.size() ? f.substr(0, f.size() - tail.size()) : std::string("./");
}

template <typename T>
std::vector<T> read_table(const std::string& name) {
  std::ifstream in(repo_root() + "test/fixtures/casts/" + name, std::ios::binary);
  std::vector<T> v;
  if (!in) {
    std::printf("    FAIL cannot read test/fixtures/casts/%s\n", name.c_str());
    mtest::failures++;
    return v;
  }
  in.seekg(0, std::ios::end);
  v.resize(static_cast<size_t>(in.tellg()) / sizeof(T));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(v.size() * sizeof(T)));
  return v;
}

bool is_bf16_nan(uint32_t b) { return (b & 0x7F80) == 0x7F80 && (b & 0x7F); }

// Compare bit patterns; report the first difference with its input. With `bf16_nan_class`, an expected bf16 NaN
// accepts any NaN: PyTorch's own bf16 NaN bits depend on which of its code paths ran (its vectorised kernel
// writes 0xFFFF, c10::BFloat16 writes 0x7FC0); ours is always 0x7FC0, which the comparisons against the portable
// path pin.
template <typename T>
bool same_bits(const char* what, const std::vector<T>& got, const std::vector<T>& want, const std::vector<uint32_t>& in,
               bool bf16_nan_class = false) {
  for (size_t i = 0; i < want.size(); i++) {
    if (bf16_nan_class && is_bf16_nan(want[i]) && is_bf16_nan(got[i])) continue;
    if (got[i] != want[i]) {
      std::printf("    FAIL %s: element %zu (input 0x%08x) gave 0x%x, expected 0x%x\n", what, i, i < in.size() ? in[i] : 0u,
                  static_cast<unsigned>(got[i]), static_cast<unsigned>(want[i]));
      mtest::failures++;
      return false;
    }
  }
  return true;
}

// The million seeded floats of test/fixtures/make_half_fixtures.py (the generator is described there).
uint32_t mix(uint32_t t) {
  t = (t ^ (t >> 15)) * (t | 1u);
  t ^= t + (t ^ (t >> 7)) * (t | 61u);
  return t ^ (t >> 14);
}
std::vector<uint32_t> seeded_floats(uint32_t seed, size_t n) {
  std::vector<uint32_t> out(n);
  static const uint32_t low2[4] = {0x7FFF, 0x8000, 0x8001, 0x0000};
  static const uint32_t low3[4] = {0x0FFF, 0x1000, 0x1001, 0x1000};
  for (size_t i = 0; i < n; i++) {
    const uint32_t w0 = mix(seed + static_cast<uint32_t>(2 * i) * 0x6D2B79F5u);
    const uint32_t w1 = mix(seed + static_cast<uint32_t>(2 * i + 1) * 0x6D2B79F5u);
    switch (i % 4) {
      case 0: out[i] = w0; break;
      case 1: out[i] = (w0 & 0x807FFFFFu) | ((101u + w1 % 46u) << 23); break;
      case 2: out[i] = (w0 & 0xFFFF0000u) | low2[w1 & 3u]; break;
      default: out[i] = (w0 & 0x807FE000u) | ((113u + w1 % 30u) << 23) | low3[(w1 >> 30) & 3u]; break;
    }
  }
  return out;
}

// Inputs that hit every rounding case: for each of the 65536 high halves, low halves at the bf16 tie and its
// neighbours, at the f16 tie (dropped 13 bits) and its neighbours, at the extremes, and two random ones.
std::vector<uint32_t> edge_floats() {
  std::vector<uint32_t> v;
  const uint32_t lows[] = {0x0000, 0x0001, 0x0FFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x7FFF, 0x8000, 0x8001, 0xEFFF,
                           0xF000, 0xF001, 0xFFFF};
  uint32_t r = 12345;
  for (uint32_t hi = 0; hi < 65536; hi++) {
    for (uint32_t lo : lows) v.push_back(hi << 16 | lo);
    for (int k = 0; k < 2; k++) v.push_back(hi << 16 | ((r = mix(r)) & 0xFFFF));
  }
  return v;
}

// Each available path on f32 inputs `in`, against `want_f16` / `want_bf16` (null: against the portable path).
void check_f32_to_half(const char* label, const std::vector<uint32_t>& in, const std::vector<uint16_t>* want_f16,
                       const std::vector<uint16_t>* want_bf16) {
  const int64_t n = static_cast<int64_t>(in.size());
  std::vector<uint16_t> ref16(in.size()), refb(in.size());
  cpu::cast_variant("portable", ref16.data(), DType::F16, in.data(), DType::F32, n);
  cpu::cast_variant("portable", refb.data(), DType::BF16, in.data(), DType::F32, n);
  const bool torch_bf16 = want_bf16 != nullptr;
  if (!want_f16) want_f16 = &ref16;
  if (!want_bf16) want_bf16 = &refb;
  for (const char* path : kPaths) {
    std::vector<uint16_t> h(in.size(), 0xDEAD), b(in.size(), 0xDEAD);
    if (!cpu::cast_variant(path, h.data(), DType::F16, in.data(), DType::F32, n)) continue;   // not on this CPU
    cpu::cast_variant(path, b.data(), DType::BF16, in.data(), DType::F32, n);
    std::string w = std::string(label) + " f32 -> f16 (" + path + ")";
    same_bits(w.c_str(), h, *want_f16, in);
    w = std::string(label) + " f32 -> bf16 (" + path + ")";
    same_bits(w.c_str(), b, *want_bf16, in, torch_bf16);
  }
}

}  // namespace

TEST(cast_paths_half_to_f32_all_patterns_match_pytorch) {
  auto f16_ref = read_table<uint32_t>("f16_to_f32.bin");
  auto bf16_ref = read_table<uint32_t>("bf16_to_f32.bin");
  if (f16_ref.size() != 65536 || bf16_ref.size() != 65536) {
    CHECK(false);
    return;
  }
  std::vector<uint16_t> pats(65536);
  std::vector<uint32_t> pats32(65536);
  for (uint32_t i = 0; i < 65536; i++) pats[i] = static_cast<uint16_t>(pats32[i] = i);
  for (const char* path : kPaths) {
    std::vector<uint32_t> out(65536, 0xDEADBEEF);
    if (!cpu::cast_variant(path, out.data(), DType::F32, pats.data(), DType::F16, 65536)) continue;
    same_bits((std::string("f16 -> f32 (") + path + ")").c_str(), out, f16_ref, pats32);
    std::fill(out.begin(), out.end(), 0xDEADBEEF);
    cpu::cast_variant(path, out.data(), DType::F32, pats.data(), DType::BF16, 65536);
    same_bits((std::string("bf16 -> f32 (") + path + ")").c_str(), out, bf16_ref, pats32);
  }
}

TEST(cast_paths_f32_to_half_match_pytorch_tables) {
  auto in = read_table<uint32_t>("f32_samples.bin");
  auto f16 = read_table<uint16_t>("f32_to_f16.bin");
  auto bf16 = read_table<uint16_t>("f32_to_bf16.bin");
  if (in.empty() || f16.size() != in.size() || bf16.size() != in.size()) {
    CHECK(false);
    return;
  }
  check_f32_to_half("pytorch samples", in, &f16, &bf16);
  // Every half pattern widened to f32 and back is itself (NaN: PyTorch's canonical NaN).
  auto f16_wide = read_table<uint32_t>("f16_to_f32.bin");
  auto bf16_wide = read_table<uint32_t>("bf16_to_f32.bin");
  std::vector<uint16_t> back16(65536), backb(65536);
  for (uint32_t i = 0; i < 65536; i++) {
    const bool nan16 = (i & 0x7C00) == 0x7C00 && (i & 0x3FF);
    const bool nanb = (i & 0x7F80) == 0x7F80 && (i & 0x7F);
    back16[i] = static_cast<uint16_t>(nan16 ? (0x7E00 | (i & 0x8000)) : i);
    backb[i] = static_cast<uint16_t>(nanb ? 0x7FC0 : i);
  }
  check_f32_to_half("every f16 pattern round trip", f16_wide, &back16, nullptr);
  check_f32_to_half("every bf16 pattern round trip", bf16_wide, nullptr, &backb);
}

TEST(cast_paths_agree_with_portable_on_edges_and_a_million_seeded_floats) {
  check_f32_to_half("edges", edge_floats(), nullptr, nullptr);
  check_f32_to_half("seeded", seeded_floats(20261130u, size_t(1) << 20), nullptr, nullptr);
  // Unaligned starts and every tail length (the vector paths use masked or scalar tails).
  auto in = seeded_floats(7u, 300);
  for (int64_t off = 0; off < 3; off++)
    for (int64_t n = 0; n < 40; n++) {
      std::vector<uint32_t> part(in.begin() + off, in.begin() + off + n);
      check_f32_to_half("tails", part, nullptr, nullptr);
    }
  // Long ranges (one thread's share of at least 2^20) take the streaming-store loops: on one thread, from an
  // unaligned start, widening too.
  const int before = cpu::num_threads();
  cpu::set_num_threads(1);
  auto big = seeded_floats(99u, (size_t(3) << 20) + 7);
  std::vector<uint32_t> shifted(big.begin() + 1, big.end());
  check_f32_to_half("streamed", shifted, nullptr, nullptr);
  std::vector<uint16_t> pats(shifted.size() + 1);
  for (size_t i = 0; i < pats.size(); i++) pats[i] = static_cast<uint16_t>(big[i]);
  for (DType dt : {DType::F16, DType::BF16}) {
    std::vector<uint32_t> ref(shifted.size()), got(shifted.size() + 1);
    cpu::cast_variant("portable", ref.data(), DType::F32, pats.data() + 1, dt, int64_t(ref.size()));
    for (const char* path : kPaths) {
      std::vector<uint32_t> g(ref.size());
      if (!cpu::cast_variant(path, got.data() + 1, DType::F32, pats.data() + 1, dt, int64_t(ref.size()))) continue;
      std::copy(got.begin() + 1, got.end(), g.begin());
      same_bits((std::string("streamed widening (") + path + ")").c_str(), g, ref, shifted);
    }
  }
  cpu::set_num_threads(before);
  // The instruction paths really are exercised here, not silently skipped: say which ran.
  std::printf("    cast() uses the %s path\n", cpu::cast_path());
}

// Opt-in (MODALAB_TEST_EXHAUSTIVE=1, ~50 s on 2 cores): every one of the 2^32 f32 patterns, each path against portable.
TEST(cast_paths_exhaustive_f32_opt_in) {
  const char* on = std::getenv("MODALAB_TEST_EXHAUSTIVE");
  if (!on || std::string(on) != "1") return;
  const size_t chunk = size_t(1) << 24;
  std::vector<uint32_t> in(chunk);
  std::vector<uint16_t> ref(chunk), got(chunk);
  for (uint64_t base = 0; base < (uint64_t(1) << 32); base += chunk) {
    for (size_t i = 0; i < chunk; i++) in[i] = static_cast<uint32_t>(base + i);
    for (DType dt : {DType::F16, DType::BF16}) {
      cpu::cast_variant("portable", ref.data(), dt, in.data(), DType::F32, int64_t(chunk));
      for (const char* path : kPaths) {
        if (!cpu::cast_variant(path, got.data(), dt, in.data(), DType::F32, int64_t(chunk))) continue;
        if (!same_bits(path, got, ref, in)) return;
      }
    }
  }
}

// ------------------------------------------------------------------------------------------------ GEMM
namespace {

float widen(uint16_t h, DType dt) {
  float f;
  if (dt == DType::BF16) {
    uint32_t u = uint32_t(h) << 16;
    std::memcpy(&f, &u, 4);
    return f;
  }
  // f16, decoded from its fields with ldexp (a route independent of the cast kernels)
  const int e = (h >> 10) & 31, m = h & 1023;
  const float s = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 0) return s * std::ldexp(float(m), -24);
  if (e == 31) return m ? NAN : s * INFINITY;
  return s * std::ldexp(float(1024 + m), e - 25);
}

std::vector<uint16_t> rand_half(size_t n, uint32_t seed, DType dt) {
  auto f = mtest::randn(n, seed);
  std::vector<uint16_t> h(n);
  cpu::cast(h.data(), dt, f.data(), DType::F32, int64_t(n));
  return h;
}

// c (M, N) = alpha * op(a) @ op(b) + beta * c in double, from the widened operands.
void gemm_ref(float* c, const uint16_t* a, const uint16_t* b, DType dt, int64_t M, int64_t N, int64_t K, bool ta,
              bool tb, float alpha, float beta) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++)
        s += double(widen(ta ? a[k * M + i] : a[i * K + k], dt)) * double(widen(tb ? b[j * K + k] : b[k * N + j], dt));
      c[i * N + j] = static_cast<float>(alpha * s + (beta == 0.0f ? 0.0 : double(beta) * c[i * N + j]));
    }
}

// The products of two half values are exact in f32, so the only error is f32 accumulation: ~sqrt(K) eps |a||b|.
float half_gemm_atol(int64_t K) { return 8e-6f * std::sqrt(float(std::max<int64_t>(K, 1))); }

void check_half_gemm(DType dt, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta,
                     uint32_t seed) {
  auto a = rand_half(size_t(M * K), seed, dt);
  auto b = rand_half(size_t(K * N), seed + 1, dt);
  auto c0 = mtest::randn(size_t(M * N), seed + 2);
  if (beta == 0.0f) std::fill(c0.begin(), c0.end(), NAN);   // beta = 0 must never read c
  std::vector<float> ref = c0;
  gemm_ref(ref.data(), a.data(), b.data(), dt, M, N, K, ta, tb, alpha, beta);
  int64_t none = 0;
  for (const char* path : {"avx512_bf16", "f32"}) {
    std::vector<float> c = c0;
    if (!cpu::matmul_half_variant(path, c.data(), a.data(), b.data(), dt, M, N, K, ta, tb, 0, &none, &none, &none,
                                  alpha, beta))
      continue;
    char what[200];
    std::snprintf(what, sizeof what, "matmul_half %s (%s) %lldx%lldx%lld ta=%d tb=%d alpha=%g beta=%g",
                  dt == DType::BF16 ? "bf16" : "f16", path, (long long)M, (long long)N, (long long)K, ta, tb, alpha,
                  beta);
    mtest::close(what, c.data(), ref.data(), ref.size(), 1e-5f, half_gemm_atol(K));
  }
}

}  // namespace

TEST(matmul_half_uneven_sizes_all_transposes) {
  const int64_t sizes[][3] = {{1, 1, 1}, {1, 1, 2}, {17, 33, 65}, {128, 257, 31}, {5, 3, 300}, {300, 7, 9},
                              {64, 64, 64}, {2, 513, 600}, {9, 9, 1}, {100, 1, 100}, {33, 3100, 7},
                              {200, 70, 1100}};   // past one kNC panel; more than two kKC blocks, odd depth
  uint32_t seed = 11;
  for (DType dt : {DType::BF16, DType::F16})
    for (auto& s : sizes)
      for (int t = 0; t < 4; t++) check_half_gemm(dt, s[0], s[1], s[2], t & 1, t & 2, 1.0f, 0.0f, seed += 3);
}

TEST(matmul_half_alpha_beta_and_empty_depth) {
  check_half_gemm(DType::BF16, 37, 45, 70, false, true, 0.5f, 1.0f, 5);
  check_half_gemm(DType::BF16, 37, 45, 70, true, false, -2.0f, 0.25f, 6);
  check_half_gemm(DType::F16, 37, 45, 70, false, false, 1.5f, -1.0f, 7);
  // K = 0: c = beta * c, and zeros (not NaN) for beta = 0
  for (const char* path : {"avx512_bf16", "f32"}) {
    std::vector<float> c(6, NAN);
    int64_t none = 0;
    uint16_t dummy = 0;
    if (!cpu::matmul_half_variant(path, c.data(), &dummy, &dummy, DType::BF16, 2, 3, 0, false, false, 0, &none,
                                  &none, &none, 1.0f, 0.0f))
      continue;
    for (float v : c) CHECK(v == 0.0f);
  }
}

TEST(matmul_half_batched_broadcast) {
  // a (2, 3, M, K) with its middle axis broadcast (stride 0), b (3, K, N) broadcast over the first axis.
  const int64_t M = 19, N = 40, K = 35;
  const int64_t bshape[2] = {2, 3};
  const int64_t as[2] = {M * K, 0}, bs[2] = {0, K * N};
  for (DType dt : {DType::BF16, DType::F16}) {
    auto a = rand_half(size_t(2 * M * K), 21, dt);
    auto b = rand_half(size_t(3 * K * N), 22, dt);
    std::vector<float> ref(size_t(6 * M * N));
    for (int64_t t = 0; t < 6; t++)
      gemm_ref(ref.data() + t * M * N, a.data() + (t / 3) * M * K, b.data() + (t % 3) * K * N, dt, M, N, K, false,
               false, 1.0f, 0.0f);
    for (const char* path : {"avx512_bf16", "f32"}) {
      std::vector<float> c(ref.size(), NAN);
      if (!cpu::matmul_half_variant(path, c.data(), a.data(), b.data(), dt, M, N, K, false, false, 2, bshape, as, bs,
                                    1.0f, 0.0f))
        continue;
      mtest::close((std::string("matmul_half batched (") + path + ")").c_str(), c.data(), ref.data(), ref.size(),
                   1e-5f, half_gemm_atol(K));
    }
  }
  // Many small matrices (spread one per thread) against the same GEMM one at a time.
  const int64_t bsh[1] = {37}, sa[1] = {8 * 9}, sb[1] = {9 * 10};
  auto a = rand_half(size_t(37 * 8 * 9), 23, DType::BF16);
  auto b = rand_half(size_t(37 * 9 * 10), 24, DType::BF16);
  std::vector<float> all(size_t(37 * 80)), one(size_t(37 * 80));
  cpu::matmul_half(all.data(), a.data(), b.data(), DType::BF16, 8, 10, 9, false, false, 1, bsh, sa, sb, 1.0f, 0.0f);
  int64_t none = 0;
  for (int64_t t = 0; t < 37; t++)
    cpu::matmul_half(one.data() + t * 80, a.data() + t * 72, b.data() + t * 90, DType::BF16, 8, 10, 9, false, false,
                     0, &none, &none, &none, 1.0f, 0.0f);
  CHECK(all == one);
}

TEST(matmul_half_independent_of_thread_count) {
  const int64_t M = 300, N = 260, K = 700;
  auto a = rand_half(size_t(M * K), 31, DType::BF16);
  auto b = rand_half(size_t(K * N), 32, DType::BF16);
  int64_t none = 0;
  const int before = cpu::num_threads();
  std::vector<float> c1(size_t(M * N)), c3(size_t(M * N));
  cpu::set_num_threads(1);
  cpu::matmul_half(c1.data(), a.data(), b.data(), DType::BF16, M, N, K, false, true, 0, &none, &none, &none, 1, 0);
  cpu::set_num_threads(3);
  cpu::matmul_half(c3.data(), a.data(), b.data(), DType::BF16, M, N, K, false, true, 0, &none, &none, &none, 1, 0);
  cpu::set_num_threads(before);
  CHECK(c1 == c3);
}

TEST(matmul_half_bf16_against_f32_inputs_within_bf16_rounding) {
  // The end-to-end error of rounding f32 operands to bf16 first: each operand moves by at most 2^-9 relative,
  // so each product by at most ~2^-8 and the sum by at most 2^-8 sum_k |a_ik b_kj| (plus f32 accumulation).
  const int64_t M = 64, N = 48, K = 256;
  auto af = mtest::randn(size_t(M * K), 41), bf = mtest::randn(size_t(K * N), 42);
  std::vector<uint16_t> a(af.size()), b(bf.size());
  cpu::cast(a.data(), DType::BF16, af.data(), DType::F32, int64_t(a.size()));
  cpu::cast(b.data(), DType::BF16, bf.data(), DType::F32, int64_t(b.size()));
  std::vector<float> c(size_t(M * N));
  int64_t none = 0;
  cpu::matmul_half(c.data(), a.data(), b.data(), DType::BF16, M, N, K, false, false, 0, &none, &none, &none, 1, 0);
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double exact = 0, mag = 0;
      for (int64_t k = 0; k < K; k++) {
        exact += double(af[i * K + k]) * bf[k * N + j];
        mag += std::fabs(double(af[i * K + k]) * bf[k * N + j]);
      }
      if (!(std::fabs(c[i * N + j] - exact) <= std::ldexp(1.0, -8) * mag + 1e-6)) {
        std::printf("    FAIL bf16 GEMM element (%lld, %lld): %g vs f32 %g (bound %g)\n", (long long)i, (long long)j,
                    c[i * N + j], exact, std::ldexp(1.0, -8) * mag);
        mtest::failures++;
        return;
      }
    }
}
