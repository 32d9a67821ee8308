// matmul, layout and indexing kernels against plain reference loops.
// GEMM: the dispatching matmul (BLAS when the build has one) and the portable blocked kernel, both against a
// naive triple loop in double, at uneven sizes that leave partial register tiles and panels everywhere.
#include <algorithm>
#include <cstring>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;

namespace {

// c (M, N) = alpha * op(a) @ op(b) + beta * c in double, the obvious way.
void gemm_ref(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
              float alpha, float beta) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0;
      for (int64_t k = 0; k < K; k++) {
        double av = ta ? a[k * M + i] : a[i * K + k];
        double bv = tb ? b[j * K + k] : b[k * N + j];
        s += av * bv;
      }
      double prev = beta == 0.0f ? 0.0 : double(beta) * c[i * N + j];
      c[i * N + j] = static_cast<float>(alpha * s + prev);
    }
}

// The float32 error of a K-long dot product grows ~ sqrt(K) eps |a||b|; scale atol by that instead of rtol alone.
float gemm_atol(int64_t K) { return 2e-6f * std::sqrt(float(std::max<int64_t>(K, 1))) * 4.0f; }

void check_gemm(int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta, uint32_t seed) {
  auto a = mtest::randn(size_t(M * K), seed);
  auto b = mtest::randn(size_t(K * N), seed + 1);
  auto c0 = mtest::randn(size_t(M * N), seed + 2);
  std::vector<float> ref = c0, port = c0, disp = c0;
  gemm_ref(ref.data(), a.data(), b.data(), M, N, K, ta, tb, alpha, beta);
  cpu::gemm_portable(port.data(), a.data(), b.data(), M, N, K, ta, tb, ta ? M : K, tb ? K : N, N, alpha, beta);
  int64_t none = 0;
  cpu::matmul(disp.data(), a.data(), b.data(), M, N, K, ta, tb, 0, &none, &none, &none, alpha, beta);
  char what[160];
  std::snprintf(what, sizeof what, "gemm_portable %lldx%lldx%lld ta=%d tb=%d alpha=%g beta=%g", (long long)M,
                (long long)N, (long long)K, ta, tb, alpha, beta);
  mtest::close(what, port.data(), ref.data(), ref.size(), 1e-5f, gemm_atol(K));
  std::snprintf(what, sizeof what, "matmul(%s) %lldx%lldx%lld ta=%d tb=%d alpha=%g beta=%g", cpu::blas_name(),
                (long long)M, (long long)N, (long long)K, ta, tb, alpha, beta);
  mtest::close(what, disp.data(), ref.data(), ref.size(), 1e-5f, gemm_atol(K));
}

}  // namespace

TEST(gemm_uneven_sizes_all_transposes) {
  const int64_t sizes[][3] = {{1, 1, 1}, {17, 33, 65}, {128, 257, 31}, {5, 3, 300}, {300, 7, 9}, {64, 64, 64},
                              {2, 513, 600}, {150, 40, 520}, {1, 100, 1}, {100, 1, 100}, {9, 9, 9},
                              {5, 3100, 7}, {200, 70, 1100}};  // past one kNC panel; two full kKC blocks
  uint32_t seed = 1;
  for (auto& s : sizes)
    for (int t = 0; t < 4; t++) check_gemm(s[0], s[1], s[2], t & 1, t & 2, 1.0f, 0.0f, seed += 3);
}

TEST(gemm_alpha_beta) {
  check_gemm(17, 33, 65, false, false, 0.5f, 1.0f, 11);
  check_gemm(128, 257, 31, true, false, -2.0f, 0.25f, 12);
  check_gemm(40, 70, 300, false, true, 1.0f, 1.0f, 13);
  check_gemm(3, 5, 7, true, true, 3.0f, -1.0f, 14);  // the tiny path
}

TEST(gemm_beta_zero_ignores_nan_in_c) {
  // BLAS semantics: beta = 0 never reads c, so garbage (here NaN) in an uninitialised output cannot leak.
  for (int64_t n : {4, 40}) {
    auto a = mtest::randn(size_t(n * n), 1), b = mtest::randn(size_t(n * n), 2);
    std::vector<float> c(size_t(n * n), NAN), ref(size_t(n * n), 0.0f), port(size_t(n * n), NAN);
    gemm_ref(ref.data(), a.data(), b.data(), n, n, n, false, false, 1.0f, 0.0f);
    int64_t none = 0;
    cpu::matmul(c.data(), a.data(), b.data(), n, n, n, false, false, 0, &none, &none, &none, 1.0f, 0.0f);
    cpu::gemm_portable(port.data(), a.data(), b.data(), n, n, n, false, false, n, n, n, 1.0f, 0.0f);
    mtest::close("matmul beta=0 over NaN", c.data(), ref.data(), ref.size(), 1e-5f, gemm_atol(n));
    mtest::close("gemm_portable beta=0 over NaN", port.data(), ref.data(), ref.size(), 1e-5f, gemm_atol(n));
  }
}

TEST(gemm_empty_inner_dimension_scales_c) {
  std::vector<float> c = {1, 2, 3, 4, 5, 6}, c2 = c, c3(6, NAN);
  int64_t none = 0;
  cpu::matmul(c.data(), nullptr, nullptr, 2, 3, 0, false, false, 0, &none, &none, &none, 1.0f, 0.5f);
  cpu::gemm_portable(c2.data(), nullptr, nullptr, 2, 3, 0, false, false, 1, 3, 3, 1.0f, 0.5f);
  cpu::matmul(c3.data(), nullptr, nullptr, 2, 3, 0, false, false, 0, &none, &none, &none, 1.0f, 0.0f);
  for (int i = 0; i < 6; i++) {
    CHECK(c[i] == 0.5f * float(i + 1));
    CHECK(c2[i] == 0.5f * float(i + 1));
    CHECK(c3[i] == 0.0f);
  }
  // M or N = 0: nothing to write, nothing read.
  cpu::matmul(nullptr, nullptr, nullptr, 0, 3, 4, false, false, 0, &none, &none, &none, 1.0f, 0.0f);
  cpu::gemm_portable(nullptr, nullptr, nullptr, 3, 0, 4, false, false, 4, 1, 1, 1.0f, 0.0f);
}

TEST(matmul_broadcast_batches) {
  // a (2, 1, M, K) @ b (5, K, N) -> c (2, 5, M, N); strides 0 on the broadcast axes. A tiny and a medium size
  // (the portable path, parallel over batches) and one large enough for BLAS.
  for (int64_t s : {3, 40, 70}) {
    const int64_t M = s, K = s + 1, N = s + 2;
    auto a = mtest::randn(size_t(2 * M * K), 21), b = mtest::randn(size_t(5 * K * N), 22);
    for (int t = 0; t < 4; t++) {
      bool ta = t & 1, tb = t & 2;
      std::vector<float> c(size_t(10 * M * N)), ref(size_t(10 * M * N));
      const int64_t bshape[2] = {2, 5}, as[2] = {M * K, 0}, bs[2] = {0, K * N};
      cpu::matmul(c.data(), a.data(), b.data(), M, N, K, ta, tb, 2, bshape, as, bs, 1.0f, 0.0f);
      for (int64_t i = 0; i < 2; i++)
        for (int64_t j = 0; j < 5; j++)
          gemm_ref(ref.data() + (i * 5 + j) * M * N, a.data() + i * M * K, b.data() + j * K * N, M, N, K, ta, tb,
                   1.0f, 0.0f);
      mtest::close("batched broadcast matmul", c.data(), ref.data(), ref.size(), 1e-5f, gemm_atol(K));
    }
  }
}

TEST(gemm_is_thread_count_independent) {
  auto a = mtest::randn(300 * 280, 31), b = mtest::randn(280 * 190, 32);
  std::vector<float> c1(300 * 190), c2(300 * 190);
  int before = cpu::num_threads();
  cpu::set_num_threads(1);
  cpu::gemm_portable(c1.data(), a.data(), b.data(), 300, 190, 280, false, false, 280, 190, 190, 1.0f, 0.0f);
  cpu::set_num_threads(3);
  cpu::gemm_portable(c2.data(), a.data(), b.data(), 300, 190, 280, false, false, 280, 190, 190, 1.0f, 0.0f);
  cpu::set_num_threads(before);
  CHECK(std::memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0);
}

// ------------------------------------------------------------------------------------------- layout
namespace {

// out (contiguous over shape) = x by xstride, by walking a multi-index: the reference for copy_strided.
template <typename T>
std::vector<T> strided_ref(const std::vector<T>& x, const std::vector<int64_t>& shape,
                           const std::vector<int64_t>& st) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<T> out(size_t(std::max<int64_t>(n, 0)));
  std::vector<int64_t> ix(shape.size(), 0);
  for (int64_t t = 0; t < n; t++) {
    int64_t off = 0;
    for (size_t d = 0; d < shape.size(); d++) off += ix[d] * st[d];
    out[size_t(t)] = x[size_t(off)];
    for (int d = int(shape.size()) - 1; d >= 0; d--) {
      if (++ix[size_t(d)] < shape[size_t(d)]) break;
      ix[size_t(d)] = 0;
    }
  }
  return out;
}

// Strides of a permutation of a contiguous tensor of `shape`: out axis i reads x axis perm[i].
void permuted(const std::vector<int64_t>& shape, const std::vector<int>& perm, std::vector<int64_t>& oshape,
              std::vector<int64_t>& ostride) {
  std::vector<int64_t> cs(shape.size());
  int64_t acc = 1;
  for (int d = int(shape.size()) - 1; d >= 0; d--) {
    cs[size_t(d)] = acc;
    acc *= shape[size_t(d)];
  }
  oshape.clear();
  ostride.clear();
  for (int p : perm) {
    oshape.push_back(shape[size_t(p)]);
    ostride.push_back(cs[size_t(p)]);
  }
}

template <typename T>
void check_permute(const std::vector<int64_t>& shape, const std::vector<int>& perm) {
  int64_t n = 1;
  for (auto d : shape) n *= d;
  std::vector<T> x(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) x[size_t(i)] = T(i * 2654435761u + 7);
  std::vector<int64_t> os, st;
  permuted(shape, perm, os, st);
  auto ref = strided_ref(x, os, st);
  std::vector<T> out(size_t(n), T(0xdead));
  cpu::copy_strided(out.data(), x.data(), int(os.size()), os.data(), st.data(), int64_t(sizeof(T)));
  bool ok = out == ref;
  if (!ok) std::printf("    copy_strided elsize %zu, %zu dims: mismatch\n", sizeof(T), shape.size());
  CHECK(ok);
}

}  // namespace

TEST(copy_strided_permutes_and_transposes) {
  for (int e = 0; e < 2; e++) {
    auto run = [&](const std::vector<int64_t>& s, const std::vector<int>& p) {
      if (e == 0) check_permute<uint32_t>(s, p); else check_permute<uint16_t>(s, p);
    };
    run({5, 7}, {1, 0});                      // small 2-D transpose (generic path)
    run({67, 45}, {1, 0});                    // blocked transpose with partial tiles
    run({3, 40, 33}, {0, 2, 1});              // batched last-two swap
    run({2, 3, 4, 5}, {0, 2, 1, 3});          // (B, N, H, D) -> (B, H, N, D): contiguous last axis
    run({2, 3, 4, 5}, {3, 1, 0, 2});          // arbitrary
    run({4, 1, 6, 1, 3}, {4, 2, 1, 0, 3});    // size-1 axes get dropped
    run({9}, {0});                            // identity
    run({6, 5, 40, 36}, {0, 1, 3, 2});        // blocked transpose, many matrices (parallel)
    run({300, 200}, {1, 0});                  // big transpose
  }
}

TEST(copy_strided_broadcast_and_scalar) {
  // A (3, 1) column broadcast to (2, 3, 4) with stride 0 on axes 0 and 2.
  std::vector<uint32_t> x = {10, 20, 30};
  std::vector<int64_t> shape = {2, 3, 4}, st = {0, 1, 0};
  std::vector<uint32_t> out(24);
  cpu::copy_strided(out.data(), x.data(), 3, shape.data(), st.data(), 4);
  CHECK(out == strided_ref(x, shape, st));
  // A row broadcast (last axis strided, stride 1) and a 0-d tensor.
  std::vector<int64_t> shape2 = {4, 3}, st2 = {0, 1};
  std::vector<uint32_t> out2(12);
  cpu::copy_strided(out2.data(), x.data(), 2, shape2.data(), st2.data(), 4);
  CHECK(out2 == strided_ref(x, shape2, st2));
  uint16_t one = 7, res = 0;
  cpu::copy_strided(&res, &one, 0, nullptr, nullptr, 2);
  CHECK(res == 7);
  // An empty shape writes nothing.
  std::vector<int64_t> shape3 = {3, 0}, st3 = {1, 1};
  cpu::copy_strided(nullptr, nullptr, 2, shape3.data(), st3.data(), 4);
}

TEST(slice_copy_assign_add_backward) {
  const int64_t outer = 3, xlen = 7, inner = 5, start = 2, len = 4;
  auto x = mtest::randn(size_t(outer * xlen * inner), 41);
  std::vector<float> out(size_t(outer * len * inner), -1.0f);
  cpu::slice_copy(out.data(), x.data(), outer, xlen, inner, start, len, 4);
  bool ok = true;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < len; l++)
      for (int64_t i = 0; i < inner; i++)
        ok = ok && out[size_t((o * len + l) * inner + i)] == x[size_t((o * xlen + start + l) * inner + i)];
  CHECK(ok);
  // assign it back into a fresh buffer: exactly the window changes.
  std::vector<float> y(size_t(outer * xlen * inner), 0.5f);
  cpu::slice_assign(y.data(), out.data(), outer, xlen, inner, start, len, 4);
  ok = true;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < xlen; l++)
      for (int64_t i = 0; i < inner; i++) {
        size_t p = size_t((o * xlen + l) * inner + i);
        ok = ok && y[p] == (l >= start && l < start + len ? x[p] : 0.5f);
      }
  CHECK(ok);
  // add backward accumulates into the window only.
  std::vector<float> dx(size_t(outer * xlen * inner), 1.0f), ref = dx;
  cpu::slice_add_backward(dx.data(), out.data(), outer, xlen, inner, start, len);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t l = 0; l < len; l++)
      for (int64_t i = 0; i < inner; i++)
        ref[size_t((o * xlen + start + l) * inner + i)] += out[size_t((o * len + l) * inner + i)];
  mtest::close("slice_add_backward", dx.data(), ref.data(), ref.size());
  // 2-byte elements move bit-exactly.
  std::vector<uint16_t> h(size_t(outer * xlen * inner)), hs(size_t(outer * len * inner));
  for (size_t i = 0; i < h.size(); i++) h[i] = uint16_t(i * 37 + 1);
  cpu::slice_copy(hs.data(), h.data(), outer, xlen, inner, start, len, 2);
  CHECK(hs[0] == h[size_t(start * inner)] && hs.back() == h[size_t((2 * xlen + start + len - 1) * inner + inner - 1)]);
}

// ------------------------------------------------------------------------------------------- indexing
TEST(index_select_and_backward) {
  const int64_t outer = 2, xlen = 6, inner = 3, nidx = 5;
  auto x = mtest::randn(size_t(outer * xlen * inner), 51);
  std::vector<int32_t> idx = {4, 0, 4, 5, 1};  // a repeat: the backward must add both
  std::vector<float> out(size_t(outer * nidx * inner));
  CHECK(cpu::index_select(out.data(), x.data(), idx.data(), outer, xlen, inner, nidx, 4) == -1);
  bool ok = true;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < nidx; j++)
      for (int64_t i = 0; i < inner; i++)
        ok = ok && out[size_t((o * nidx + j) * inner + i)] == x[size_t((o * xlen + idx[size_t(j)]) * inner + i)];
  CHECK(ok);
  auto dy = mtest::randn(out.size(), 52);
  std::vector<float> dx(x.size(), 0.25f), ref = dx;
  cpu::index_select_backward(dx.data(), dy.data(), idx.data(), outer, xlen, inner, nidx);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < nidx; j++)
      for (int64_t i = 0; i < inner; i++)
        ref[size_t((o * xlen + idx[size_t(j)]) * inner + i)] += dy[size_t((o * nidx + j) * inner + i)];
  mtest::close("index_select_backward", dx.data(), ref.data(), ref.size());
  // A bad index: its position comes back and nothing is written.
  std::vector<int32_t> bad = {1, 2, 6, -1};
  std::vector<float> untouched(size_t(outer * 4 * inner), 9.0f);
  CHECK(cpu::index_select(untouched.data(), x.data(), bad.data(), outer, xlen, inner, 4, 4) == 2);
  CHECK(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 9.0f; }));
}

TEST(index_select_backward_wide_columns_parallel) {
  // outer = 1 and wide rows: the split is over columns; compare with the serial reference exactly in order.
  const int64_t xlen = 50, inner = 4096, nidx = 40;
  auto dy = mtest::randn(size_t(nidx * inner), 53);
  std::vector<int32_t> idx(static_cast<size_t>(nidx));
  for (int64_t j = 0; j < nidx; j++) idx[size_t(j)] = int32_t((j * 7) % 13);  // many repeats
  std::vector<float> dx(size_t(xlen * inner), 0.0f), ref = dx;
  cpu::index_select_backward(dx.data(), dy.data(), idx.data(), 1, xlen, inner, nidx);
  for (int64_t j = 0; j < nidx; j++)
    for (int64_t i = 0; i < inner; i++) ref[size_t(idx[size_t(j)] * inner + i)] += dy[size_t(j * inner + i)];
  CHECK(std::memcmp(dx.data(), ref.data(), dx.size() * sizeof(float)) == 0);
}

TEST(gather_and_backward) {
  const int64_t outer = 3, xlen = 5, inner = 4, glen = 6;
  auto x = mtest::randn(size_t(outer * xlen * inner), 61);
  std::vector<int32_t> idx(size_t(outer * glen * inner));
  for (size_t p = 0; p < idx.size(); p++) idx[p] = int32_t((p * 11 + 3) % xlen);
  std::vector<float> out(idx.size());
  CHECK(cpu::gather(out.data(), x.data(), idx.data(), outer, xlen, inner, glen) == -1);
  bool ok = true;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < glen; j++)
      for (int64_t i = 0; i < inner; i++) {
        size_t p = size_t((o * glen + j) * inner + i);
        ok = ok && out[p] == x[size_t((o * xlen + idx[p]) * inner + i)];
      }
  CHECK(ok);
  auto dy = mtest::randn(out.size(), 62);
  std::vector<float> dx(x.size(), 0.0f), ref = dx;
  cpu::gather_backward(dx.data(), dy.data(), idx.data(), outer, xlen, inner, glen);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t j = 0; j < glen; j++)
      for (int64_t i = 0; i < inner; i++) {
        size_t p = size_t((o * glen + j) * inner + i);
        ref[size_t((o * xlen + idx[p]) * inner + i)] += dy[p];
      }
  mtest::close("gather_backward", dx.data(), ref.data(), ref.size());
  idx[17] = 5;
  std::vector<float> untouched(out.size(), 3.0f);
  CHECK(cpu::gather(untouched.data(), x.data(), idx.data(), outer, xlen, inner, glen) == 17);
  CHECK(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 3.0f; }));
}

TEST(embedding_forward_backward_deterministic) {
  const int64_t V = 50, C = 200, n = 3000;
  auto table = mtest::randn(size_t(V * C), 71);
  std::vector<int32_t> idx(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; r++) idx[size_t(r)] = int32_t((r * r + 3 * r) % V);
  std::vector<float> y(size_t(n * C));
  CHECK(cpu::embedding_forward(y.data(), table.data(), idx.data(), n, V, C) == -1);
  bool ok = true;
  for (int64_t r = 0; r < n; r++)
    ok = ok && std::memcmp(&y[size_t(r * C)], &table[size_t(idx[size_t(r)] * C)], size_t(C) * 4) == 0;
  CHECK(ok);
  auto dy = mtest::randn(y.size(), 72);
  std::vector<float> dt(table.size(), 0.0f), ref = dt;
  cpu::embedding_backward(dt.data(), dy.data(), idx.data(), n, V, C);
  for (int64_t r = 0; r < n; r++)
    for (int64_t c = 0; c < C; c++) ref[size_t(idx[size_t(r)] * C + c)] += dy[size_t(r * C + c)];
  // Row order is kept, so the sums match the serial reference bit for bit.
  CHECK(std::memcmp(dt.data(), ref.data(), dt.size() * sizeof(float)) == 0);
  // Out of range (70 >= 50) at position 3: reported, nothing written.
  std::vector<int32_t> bad = {0, 1, 2, 70, -5};
  std::vector<float> untouched(size_t(5 * C), 1.5f);
  CHECK(cpu::embedding_forward(untouched.data(), table.data(), bad.data(), 5, V, C) == 3);
  CHECK(std::all_of(untouched.begin(), untouched.end(), [](float v) { return v == 1.5f; }));
}
