// Softmax, layerNorm, cross entropy and the optimizer updates against plain reference loops in double, plus
// the edge cases each kernel promises (all -inf rows, ignored and bad targets, null weight/bias) and the
// promise that results do not depend on the thread count (1 vs 2 threads, bit for bit).
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;
using std::vector;

namespace {

const float kInf = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------------------- references
void ref_softmax(vector<float>& y, const vector<float>& x, int64_t outer, int64_t len, int64_t inner, bool log) {
  y.assign(x.size(), 0.0f);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      auto at = [&](int64_t l) { return (o * len + l) * inner + i; };
      double m = -INFINITY;
      for (int64_t l = 0; l < len; l++) m = std::fmax(m, x[at(l)]);
      double s = 0;
      for (int64_t l = 0; l < len; l++) s += std::exp(x[at(l)] - m);
      for (int64_t l = 0; l < len; l++)
        y[at(l)] = static_cast<float>(log ? x[at(l)] - m - std::log(s) : std::exp(x[at(l)] - m) / s);
    }
}

void ref_softmax_backward(vector<float>& dx, const vector<float>& dy, const vector<float>& y, int64_t outer,
                          int64_t len, int64_t inner, bool log) {
  dx.assign(dy.size(), 0.0f);
  for (int64_t o = 0; o < outer; o++)
    for (int64_t i = 0; i < inner; i++) {
      auto at = [&](int64_t l) { return (o * len + l) * inner + i; };
      double s = 0;
      for (int64_t l = 0; l < len; l++) s += log ? dy[at(l)] : double(dy[at(l)]) * y[at(l)];
      for (int64_t l = 0; l < len; l++)
        dx[at(l)] = static_cast<float>(log ? dy[at(l)] - std::exp(double(y[at(l)])) * s : y[at(l)] * (dy[at(l)] - s));
    }
}

void ref_layernorm(vector<float>& y, vector<float>& mean, vector<float>& rstd, const vector<float>& x,
                   const float* w, const float* b, int64_t rows, int64_t C, float eps) {
  y.assign(rows * C, 0.0f);
  mean.assign(rows, 0.0f);
  rstd.assign(rows, 0.0f);
  for (int64_t r = 0; r < rows; r++) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; c++) m += x[r * C + c];
    m /= C;
    for (int64_t c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    v /= C;
    double s = 1.0 / std::sqrt(v + eps);
    mean[r] = static_cast<float>(m);
    rstd[r] = static_cast<float>(s);
    for (int64_t c = 0; c < C; c++)
      y[r * C + c] = static_cast<float>((x[r * C + c] - m) * s * (w ? w[c] : 1.0) + (b ? b[c] : 0.0));
  }
}

// Gradients of L = sum(dy * layernorm(x)) by the textbook formula, in double.
void ref_layernorm_backward(vector<float>& dx, vector<float>& dw, vector<float>& db, const vector<float>& dy,
                            const vector<float>& x, const float* w, int64_t rows, int64_t C, float eps) {
  dx.assign(rows * C, 0.0f);
  vector<double> dwd(C, 0.0), dbd(C, 0.0);
  for (int64_t r = 0; r < rows; r++) {
    double m = 0, v = 0;
    for (int64_t c = 0; c < C; c++) m += x[r * C + c];
    m /= C;
    for (int64_t c = 0; c < C; c++) v += (x[r * C + c] - m) * (x[r * C + c] - m);
    v /= C;
    double s = 1.0 / std::sqrt(v + eps);
    double a = 0, bsum = 0;
    for (int64_t c = 0; c < C; c++) {
      double xh = (x[r * C + c] - m) * s, g = dy[r * C + c] * (w ? w[c] : 1.0);
      a += g;
      bsum += g * xh;
      dwd[c] += dy[r * C + c] * xh;
      dbd[c] += dy[r * C + c];
    }
    for (int64_t c = 0; c < C; c++) {
      double xh = (x[r * C + c] - m) * s, g = dy[r * C + c] * (w ? w[c] : 1.0);
      dx[r * C + c] = static_cast<float>(s * (g - a / C - xh * bsum / C));
    }
  }
  dw.assign(C, 0.0f);
  db.assign(C, 0.0f);
  for (int64_t c = 0; c < C; c++) {
    dw[c] = static_cast<float>(dwd[c]);
    db[c] = static_cast<float>(dbd[c]);
  }
}

void ref_cross_entropy(vector<float>& loss, vector<float>& dlogits, const vector<float>& x, const vector<int32_t>& t,
                       const vector<float>& dloss, int64_t N, int64_t C, int32_t ignore, double e) {
  loss.assign(N, 0.0f);
  dlogits.assign(N * C, 0.0f);
  for (int64_t n = 0; n < N; n++) {
    if (t[n] == ignore) continue;
    double m = -INFINITY, s = 0, mean = 0;
    for (int64_t c = 0; c < C; c++) m = std::fmax(m, x[n * C + c]);
    for (int64_t c = 0; c < C; c++) s += std::exp(x[n * C + c] - m), mean += x[n * C + c];
    double lse = m + std::log(s);
    mean /= C;
    loss[n] = static_cast<float>((1 - e) * (lse - x[n * C + t[n]]) + e * (lse - mean));
    for (int64_t c = 0; c < C; c++) {
      double q = (1 - e) * (c == t[n]) + e / C;
      dlogits[n * C + c] = static_cast<float>(dloss[n] * (std::exp(x[n * C + c] - lse) - q));
    }
  }
}

// Run fn once with 1 thread and once with 2, restoring the pool afterwards.
template <typename F>
void with_threads(int n, F fn) {
  int before = cpu::num_threads();
  cpu::set_num_threads(n);
  fn();
  cpu::set_num_threads(before);
}

bool same_bits(const vector<float>& a, const vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

}  // namespace

// ---------------------------------------------------------------------------------------- softmax

TEST(softmax_matches_reference) {
  // Contiguous rows, strided rows narrower and wider than one tile (64 columns), and a single element.
  const int64_t shapes[][3] = {{7, 33, 1}, {3, 1000, 1}, {4, 9, 5}, {2, 17, 70}, {1, 1, 1}, {5, 1, 3}};
  for (auto& s : shapes) {
    int64_t outer = s[0], len = s[1], inner = s[2], n = outer * len * inner;
    auto x = mtest::randn(n, 1, 3.0f);
    vector<float> dy = mtest::randn(n, 2);
    for (bool log : {false, true}) {
      vector<float> y(n), ry, dx(n), rdx;
      cpu::softmax_forward(y.data(), x.data(), outer, len, inner, log);
      ref_softmax(ry, x, outer, len, inner, log);
      mtest::close(log ? "logSoftmax" : "softmax", y.data(), ry.data(), n);
      cpu::softmax_backward(dx.data(), dy.data(), y.data(), outer, len, inner, log);
      ref_softmax_backward(rdx, dy, y, outer, len, inner, log);
      mtest::close(log ? "logSoftmax backward" : "softmax backward", dx.data(), rdx.data(), n, 1e-5f, 1e-6f);
    }
  }
}

TEST(softmax_exp_is_accurate_over_the_whole_range) {
  // A row spanning [-100, 0] exercises every branch of the vectorised exp (underflow to 0 included).
  int64_t len = 2001;
  vector<float> x(len), y(len), ry;
  for (int64_t j = 0; j < len; j++) x[j] = -100.0f + 0.05f * static_cast<float>(j);
  cpu::softmax_forward(y.data(), x.data(), 1, len, 1, false);
  ref_softmax(ry, x, 1, len, 1, false);
  mtest::close("softmax over [-100, 0]", y.data(), ry.data(), len, 2e-6f, 1e-30f);
}

TEST(softmax_of_a_neg_inf_row_is_nan_and_neg_inf_entries_get_zero) {
  vector<float> x = {-kInf, -kInf, -kInf, 1.0f, -kInf, 2.0f};  // two rows of 3
  vector<float> y(6), yl(6);
  cpu::softmax_forward(y.data(), x.data(), 2, 3, 1, false);
  cpu::softmax_forward(yl.data(), x.data(), 2, 3, 1, true);
  for (int k = 0; k < 3; k++) CHECK(std::isnan(y[k]) && std::isnan(yl[k]));
  CHECK(y[4] == 0.0f && yl[4] == -kInf);
  CHECK(std::fabs(y[3] - 0.26894142f) < 1e-6f && std::fabs(y[5] - 0.73105858f) < 1e-6f);
  // The same through the strided path: columns are the rows here.
  vector<float> xt = {-kInf, 1.0f, -kInf, -kInf, -kInf, 2.0f}, yt(6);
  cpu::softmax_forward(yt.data(), xt.data(), 1, 3, 2, false);
  CHECK(std::isnan(yt[0]) && std::isnan(yt[2]) && std::isnan(yt[4]));
  CHECK(yt[3] == 0.0f && std::fabs(yt[1] - 0.26894142f) < 1e-6f);
}

TEST(softmax_nan_spreads_to_its_row_only) {
  vector<float> x = {1.0f, std::nanf(""), 2.0f, 1.0f, 2.0f, 3.0f}, y(6);
  cpu::softmax_forward(y.data(), x.data(), 2, 3, 1, false);
  CHECK(std::isnan(y[0]) && std::isnan(y[1]) && std::isnan(y[2]));
  CHECK(!std::isnan(y[3]) && !std::isnan(y[4]) && !std::isnan(y[5]));
}

TEST(softmax_same_bits_for_1_and_2_threads) {
  for (auto s : {vector<int64_t>{64, 3000, 1}, vector<int64_t>{32, 200, 90}}) {
    int64_t n = s[0] * s[1] * s[2];
    auto x = mtest::randn(n, 3), dy = mtest::randn(n, 4);
    vector<float> y1(n), y2(n), d1(n), d2(n);
    with_threads(1, [&] {
      cpu::softmax_forward(y1.data(), x.data(), s[0], s[1], s[2], false);
      cpu::softmax_backward(d1.data(), dy.data(), y1.data(), s[0], s[1], s[2], false);
    });
    with_threads(2, [&] {
      cpu::softmax_forward(y2.data(), x.data(), s[0], s[1], s[2], false);
      cpu::softmax_backward(d2.data(), dy.data(), y2.data(), s[0], s[1], s[2], false);
    });
    CHECK(same_bits(y1, y2));
    CHECK(same_bits(d1, d2));
  }
}

// ---------------------------------------------------------------------------------------- layernorm

TEST(layernorm_matches_reference) {
  const int64_t shapes[][2] = {{5, 7}, {3, 768}, {1, 1}, {300, 33}};
  for (auto& s : shapes) {
    int64_t rows = s[0], C = s[1], n = rows * C;
    auto x = mtest::randn(n, 5, 2.0f);
    for (float& v : x) v += 3.0f;  // a large mean: the two-pass variance must not lose it
    auto w = mtest::randn(C, 6), b = mtest::randn(C, 7), dy = mtest::randn(n, 8);
    for (int variant = 0; variant < 3; variant++) {
      const float* wp = variant == 2 ? nullptr : w.data();
      const float* bp = variant >= 1 ? nullptr : b.data();
      vector<float> y(n), mean(rows), rstd(rows), ry, rmean, rrstd;
      cpu::layernorm_forward(y.data(), mean.data(), rstd.data(), x.data(), wp, bp, rows, C, 1e-5f);
      ref_layernorm(ry, rmean, rrstd, x, wp, bp, rows, C, 1e-5f);
      mtest::close("layernorm y", y.data(), ry.data(), n);
      mtest::close("layernorm mean", mean.data(), rmean.data(), rows);
      mtest::close("layernorm rstd", rstd.data(), rrstd.data(), rows);
      vector<float> dx(n), dw(C, 123.0f), db(C, 456.0f), rdx, rdw, rdb;  // junk in dw/db: they are overwritten
      cpu::layernorm_backward(dx.data(), dw.data(), db.data(), dy.data(), x.data(), wp, mean.data(), rstd.data(),
                              rows, C);
      ref_layernorm_backward(rdx, rdw, rdb, dy, x, wp, rows, C, 1e-5f);
      // C == 1 has dx = 0 up to rounding: compare with an absolute budget there.
      mtest::close("layernorm dx", dx.data(), rdx.data(), n, 1e-4f, C == 1 ? 1e-3f : 1e-5f);
      mtest::close("layernorm dweight", dw.data(), rdw.data(), C, 1e-4f, 1e-5f);
      mtest::close("layernorm dbias", db.data(), rdb.data(), C, 1e-5f, 1e-5f);
      // Null gradient outputs are skipped, dx is still written.
      vector<float> dx2(n);
      cpu::layernorm_backward(dx2.data(), nullptr, nullptr, dy.data(), x.data(), wp, mean.data(), rstd.data(), rows, C);
      CHECK(same_bits(dx, dx2));
    }
  }
}

TEST(layernorm_zero_rows_zeroes_dweight_and_dbias) {
  vector<float> dw(4, 7.0f), db(4, 7.0f);
  cpu::layernorm_backward(nullptr, dw.data(), db.data(), nullptr, nullptr, nullptr, nullptr, nullptr, 0, 4);
  for (int c = 0; c < 4; c++) CHECK(dw[c] == 0.0f && db[c] == 0.0f);
}

TEST(layernorm_same_bits_for_1_and_2_threads) {
  int64_t rows = 2000, C = 96, n = rows * C;
  auto x = mtest::randn(n, 9), w = mtest::randn(C, 10), b = mtest::randn(C, 11), dy = mtest::randn(n, 12);
  vector<float> y[2], mean[2], rstd[2], dx[2], dw[2], db[2];
  for (int k = 0; k < 2; k++) {
    y[k].resize(n), mean[k].resize(rows), rstd[k].resize(rows), dx[k].resize(n), dw[k].resize(C), db[k].resize(C);
    with_threads(k + 1, [&] {
      cpu::layernorm_forward(y[k].data(), mean[k].data(), rstd[k].data(), x.data(), w.data(), b.data(), rows, C,
                             1e-5f);
      cpu::layernorm_backward(dx[k].data(), dw[k].data(), db[k].data(), dy.data(), x.data(), w.data(),
                              mean[k].data(), rstd[k].data(), rows, C);
    });
  }
  CHECK(same_bits(y[0], y[1]));
  CHECK(same_bits(dx[0], dx[1]));
  CHECK(same_bits(dw[0], dw[1]));
  CHECK(same_bits(db[0], db[1]));
}

// ---------------------------------------------------------------------------------------- cross entropy

TEST(cross_entropy_matches_reference) {
  const int64_t shapes[][2] = {{6, 5}, {40, 1000}, {3, 1}};
  for (auto& s : shapes) {
    int64_t N = s[0], C = s[1];
    auto x = mtest::randn(N * C, 13, 3.0f), dloss = mtest::randn(N, 14);
    vector<int32_t> t(N);
    for (int64_t n = 0; n < N; n++) t[n] = static_cast<int32_t>((n * 7 + 3) % C);
    if (N > 2) t[1] = -100;  // ignored
    for (float e : {0.0f, 0.1f}) {
      vector<float> loss(N), lse(N), dl(N * C, 99.0f), rloss, rdl;
      int64_t bad = cpu::cross_entropy_forward(loss.data(), lse.data(), x.data(), t.data(), N, C, -100, e);
      CHECK(bad == -1);
      cpu::cross_entropy_backward(dl.data(), dloss.data(), x.data(), lse.data(), t.data(), N, C, -100, e);
      ref_cross_entropy(rloss, rdl, x, t, dloss, N, C, -100, e);
      mtest::close("cross entropy loss", loss.data(), rloss.data(), N);
      mtest::close("cross entropy dlogits", dl.data(), rdl.data(), N * C);
      if (N > 2) {
        CHECK(loss[1] == 0.0f);
        for (int64_t c = 0; c < C; c++) CHECK(dl[C + c] == 0.0f);
      }
    }
  }
}

TEST(cross_entropy_reports_the_first_bad_row) {
  int64_t N = 5000, C = 16;  // several tasks: the answer must be the smallest bad row whatever the scheduling
  auto x = mtest::randn(N * C, 15);
  vector<int32_t> t(N, 3);
  t[4321] = 16;
  t[2500] = -1;
  t[10] = -100;  // ignored, not bad
  vector<float> loss(N), lse(N);
  for (int threads : {1, 2})
    with_threads(threads, [&] {
      CHECK(cpu::cross_entropy_forward(loss.data(), lse.data(), x.data(), t.data(), N, C, -100, 0.0f) == 2500);
    });
  // With another ignore index, -100 is a bad target too.
  CHECK(cpu::cross_entropy_forward(loss.data(), lse.data(), x.data(), t.data(), N, C, 3, 0.0f) == 10);
}

TEST(cross_entropy_of_a_neg_inf_row_is_nan) {
  vector<float> x = {-kInf, -kInf, 0.0f, 1.0f}, loss(2), lse(2);
  vector<int32_t> t = {0, 1};
  CHECK(cpu::cross_entropy_forward(loss.data(), lse.data(), x.data(), t.data(), 2, 2, -100, 0.0f) == -1);
  CHECK(std::isnan(loss[0]));
  CHECK(std::fabs(loss[1] - 0.31326169f) < 1e-6f);
}

TEST(cross_entropy_same_bits_for_1_and_2_threads) {
  int64_t N = 512, C = 300;
  auto x = mtest::randn(N * C, 16), dloss = mtest::randn(N, 17);
  vector<int32_t> t(N);
  for (int64_t n = 0; n < N; n++) t[n] = static_cast<int32_t>((n * 31) % C);
  vector<float> loss[2], lse[2], dl[2];
  for (int k = 0; k < 2; k++) {
    loss[k].resize(N), lse[k].resize(N), dl[k].resize(N * C);
    with_threads(k + 1, [&] {
      cpu::cross_entropy_forward(loss[k].data(), lse[k].data(), x.data(), t.data(), N, C, -100, 0.1f);
      cpu::cross_entropy_backward(dl[k].data(), dloss.data(), x.data(), lse[k].data(), t.data(), N, C, -100, 0.1f);
    });
  }
  CHECK(same_bits(loss[0], loss[1]));
  CHECK(same_bits(dl[0], dl[1]));
}

// ---------------------------------------------------------------------------------------- optimizers

TEST(adamw_matches_reference_over_several_steps) {
  int64_t n = 1000;
  auto p = mtest::randn(n, 18), m = vector<float>(n, 0.0f), v = vector<float>(n, 0.0f);
  vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
  for (int t = 1; t <= 5; t++) {
    auto g = mtest::randn(n, 100 + t);
    double c1 = 1 - std::pow(b1, t), c2 = 1 - std::pow(b2, t);
    cpu::adamw_step(p.data(), m.data(), v.data(), g.data(), n, lr, b1, b2, eps, wd, c1, c2);
    for (int64_t i = 0; i < n; i++) {
      rp[i] *= 1 - lr * wd;
      rm[i] = b1 * rm[i] + (1 - b1) * g[i];
      rv[i] = b2 * rv[i] + (1 - b2) * g[i] * g[i];
      rp[i] -= lr * (rm[i] / c1) / (std::sqrt(rv[i] / c2) + eps);
    }
  }
  vector<float> fp(rp.begin(), rp.end()), fm(rm.begin(), rm.end()), fv(rv.begin(), rv.end());
  mtest::close("adamw p", p.data(), fp.data(), n);
  mtest::close("adamw m", m.data(), fm.data(), n);
  mtest::close("adamw v", v.data(), fv.data(), n, 1e-5f, 1e-9f);
}

TEST(sgd_matches_reference) {
  int64_t n = 257;
  for (bool nesterov : {false, true}) {
    auto p = mtest::randn(n, 19);
    vector<float> buf(n, 55.0f);  // junk: the first step must overwrite it
    vector<double> rp(p.begin(), p.end()), rb(n, 0.0);
    const double lr = 0.1, mom = 0.9, damp = nesterov ? 0.0 : 0.2, wd = 0.01;
    for (int t = 0; t < 3; t++) {
      auto g = mtest::randn(n, 200 + t);
      cpu::sgd_step(p.data(), buf.data(), g.data(), n, lr, mom, damp, wd, nesterov, t == 0);
      for (int64_t i = 0; i < n; i++) {
        double gi = g[i] + wd * rp[i];
        rb[i] = t == 0 ? gi : mom * rb[i] + (1 - damp) * gi;
        rp[i] -= lr * (nesterov ? gi + mom * rb[i] : rb[i]);
      }
    }
    vector<float> fp(rp.begin(), rp.end()), fb(rb.begin(), rb.end());
    mtest::close("sgd p", p.data(), fp.data(), n);
    mtest::close("sgd buf", buf.data(), fb.data(), n);
  }
  // No momentum: no buffer, plain p -= lr * g.
  vector<float> p = {1.0f, 2.0f}, g = {0.5f, -1.0f};
  cpu::sgd_step(p.data(), nullptr, g.data(), 2, 0.1f, 0.0f, 0.0f, 0.0f, false, true);
  CHECK(std::fabs(p[0] - 0.95f) < 1e-7f && std::fabs(p[1] - 2.1f) < 1e-7f);
}

TEST(scale_and_add_inplace) {
  int64_t n = 100000;  // above the grain: runs on the pool
  auto x = mtest::randn(n, 20), y = mtest::randn(n, 21);
  vector<float> ref(n);
  for (int64_t i = 0; i < n; i++) ref[i] = (x[i] * 0.5f) + -2.0f * y[i];
  cpu::scale_inplace(x.data(), n, 0.5f);
  cpu::add_inplace(x.data(), y.data(), n, -2.0f);
  CHECK(same_bits(x, ref));
}
