// Fused attention against a plain reference that materialises the N x M score matrix in double: forward (out,
// logsumexp) and backward (dq, dk, dv) for every mask option, uneven N and M, sizes that are not multiples of the tile,
// head sizes that are not multiples of the vector width, every SIMD path this processor has, f16 / bf16 inputs,
// rows that see no key (zeros, never NaN), guard values around every output (nothing written out of bounds), and
// bitwise equality across thread counts.
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "harness.h"
#include "modalab/kernels.h"

using namespace modalab;
using std::vector;

namespace {

const float kInf = std::numeric_limits<float>::infinity();

struct Cfg {
  int64_t B, H, N, M, D, Dv;
  bool causal;
  int64_t window;
  int mask;  // 0: none, 1: random padding (f32), 2: random padding (i32), 3: padding with one batch all masked
  float scale;  // 0: the default 1 / sqrt(D)
  std::string name() const {
    char buf[160];
    std::snprintf(buf, sizeof buf, "B%lld H%lld N%lld M%lld D%lld Dv%lld causal %d window %lld mask %d scale %g",
                  (long long)B, (long long)H, (long long)N, (long long)M, (long long)D, (long long)Dv, causal,
                  (long long)window, mask, scale);
    return buf;
  }
};

struct Inputs {
  vector<float> q, k, v, dout;
  vector<int32_t> pad;  // (B, M), 1 = masked; empty for none
  float scale;
};

Inputs make_inputs(const Cfg& c, uint32_t seed) {
  Inputs in;
  in.q = mtest::randn(c.B * c.H * c.N * c.D, seed + 1);
  in.k = mtest::randn(c.B * c.H * c.M * c.D, seed + 2);
  in.v = mtest::randn(c.B * c.H * c.M * c.Dv, seed + 3);
  in.dout = mtest::randn(c.B * c.H * c.N * c.Dv, seed + 4);
  in.scale = c.scale != 0.0f ? c.scale : 1.0f / std::sqrt(static_cast<float>(c.D));
  if (c.mask) {
    in.pad.assign(c.B * c.M, 0);
    uint32_t s = seed * 2654435761u + 7;
    for (auto& m : in.pad) {
      s = s * 1664525u + 1013904223u;
      m = (s >> 28) < 5;  // about a third of the keys
    }
    if (c.mask == 3) for (int64_t j = 0; j < c.M; j++) in.pad[j] = 1;  // batch 0 sees nothing
  }
  return in;
}

bool visible(const Cfg& c, const Inputs& in, int64_t b, int64_t i, int64_t j) {
  const int64_t ii = i + c.M - c.N;
  if (!in.pad.empty() && in.pad[b * c.M + j]) return false;
  if ((c.causal || c.window > 0) && j > ii) return false;
  if (c.window > 0 && j <= ii - c.window) return false;
  return true;
}

// The reference: per head, the whole N x M probability matrix in double.
void reference(const Cfg& c, const Inputs& in, vector<float>& out, vector<float>& lse, vector<float>& dq,
               vector<float>& dk, vector<float>& dv) {
  const int64_t N = c.N, M = c.M, D = c.D, Dv = c.Dv;
  out.assign(c.B * c.H * N * Dv, 0.0f);
  lse.assign(c.B * c.H * N, kInf);
  dq.assign(c.B * c.H * N * D, 0.0f);
  dk.assign(c.B * c.H * M * D, 0.0f);
  dv.assign(c.B * c.H * M * Dv, 0.0f);
  vector<double> P(N * M), dP(N * M), gq(N * D), gk(M * D), gv(M * Dv);
  for (int64_t b = 0; b < c.B; b++)
    for (int64_t h = 0; h < c.H; h++) {
      const int64_t bh = b * c.H + h;
      const float* q = in.q.data() + bh * N * D;
      const float* k = in.k.data() + bh * M * D;
      const float* v = in.v.data() + bh * M * Dv;
      const float* g = in.dout.data() + bh * N * Dv;
      std::fill(gq.begin(), gq.end(), 0.0);
      std::fill(gk.begin(), gk.end(), 0.0);
      std::fill(gv.begin(), gv.end(), 0.0);
      for (int64_t i = 0; i < N; i++) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < M; j++) {
          double s = -INFINITY;
          if (visible(c, in, b, i, j)) {
            s = 0;
            for (int64_t d = 0; d < D; d++) s += double(q[i * D + d]) * k[j * D + d];
            s *= in.scale;
          }
          P[i * M + j] = s;
          mx = std::fmax(mx, s);
        }
        if (mx == -INFINITY) {
          for (int64_t j = 0; j < M; j++) P[i * M + j] = 0;
          continue;
        }
        double sum = 0;
        for (int64_t j = 0; j < M; j++) sum += std::exp(P[i * M + j] - mx);
        for (int64_t j = 0; j < M; j++) P[i * M + j] = std::exp(P[i * M + j] - mx) / sum;
        lse[bh * N + i] = static_cast<float>(mx + std::log(sum));
        for (int64_t e = 0; e < Dv; e++) {
          double o = 0;
          for (int64_t j = 0; j < M; j++) o += P[i * M + j] * v[j * Dv + e];
          out[(bh * N + i) * Dv + e] = static_cast<float>(o);
        }
      }
      for (int64_t i = 0; i < N; i++) {
        double rowdot = 0;
        for (int64_t j = 0; j < M; j++) {
          double d = 0;
          for (int64_t e = 0; e < Dv; e++) d += double(g[i * Dv + e]) * v[j * Dv + e];
          dP[i * M + j] = d;
          rowdot += P[i * M + j] * d;
        }
        for (int64_t j = 0; j < M; j++) {
          const double p = P[i * M + j];
          if (p == 0) continue;
          for (int64_t e = 0; e < Dv; e++) gv[j * Dv + e] += p * g[i * Dv + e];
          const double ds = p * (dP[i * M + j] - rowdot) * in.scale;
          for (int64_t d = 0; d < D; d++) {
            gq[i * D + d] += ds * k[j * D + d];
            gk[j * D + d] += ds * q[i * D + d];
          }
        }
      }
      for (int64_t x = 0; x < N * D; x++) dq[bh * N * D + x] = static_cast<float>(gq[x]);
      for (int64_t x = 0; x < M * D; x++) dk[bh * M * D + x] = static_cast<float>(gk[x]);
      for (int64_t x = 0; x < M * Dv; x++) dv[bh * M * Dv + x] = static_cast<float>(gv[x]);
    }
}

// An output buffer with guard values on both sides: data() points past the front guard.
struct Guarded {
  static constexpr int64_t kGuard = 37;
  static constexpr float kSentinel = -12345.5f;
  vector<float> buf;
  int64_t n;
  explicit Guarded(int64_t n_) : buf(n_ + 2 * kGuard, kSentinel), n(n_) {
    for (int64_t i = 0; i < n; i++) buf[kGuard + i] = std::nanf("");  // every element must be written
  }
  float* data() { return buf.data() + kGuard; }
  bool guards_intact() const {
    for (int64_t i = 0; i < kGuard; i++)
      if (buf[i] != kSentinel || buf[kGuard + n + i] != kSentinel) return false;
    return true;
  }
};

struct Result {
  vector<float> out, stats, dq, dk, dv;
  // The logsumexp of each row, m + log l, from the kernel's (m, log l) pairs.
  vector<float> lse() const {
    vector<float> r(stats.size() / 2);
    for (size_t i = 0; i < r.size(); i++) r[i] = stats[2 * i] + stats[2 * i + 1];
    return r;
  }
};

// Run the fused kernels in f32, checking the guards; returns the outputs.
Result run_f32(const Cfg& c, const Inputs& in) {
  Guarded out(c.B * c.H * c.N * c.Dv), stats(2 * c.B * c.H * c.N), dq(c.B * c.H * c.N * c.D), dk(c.B * c.H * c.M * c.D),
      dv(c.B * c.H * c.M * c.Dv);
  const void* mask = nullptr;
  vector<float> maskf;
  if (c.mask) {
    if (c.mask == 2) {
      mask = in.pad.data();
    } else {
      maskf.assign(in.pad.begin(), in.pad.end());
      mask = maskf.data();
    }
  }
  cpu::attention_forward(out.data(), DType::F32, stats.data(), in.q.data(), in.k.data(), in.v.data(), DType::F32,
                         mask, c.mask == 2, c.B, c.H, c.N, c.M, c.D, c.Dv, in.scale, c.causal, c.window);
  cpu::attention_backward(dq.data(), dk.data(), dv.data(), in.dout.data(), in.q.data(), in.k.data(), in.v.data(),
                          stats.data(), DType::F32, mask, c.mask == 2, c.B, c.H, c.N, c.M, c.D, c.Dv, in.scale,
                          c.causal, c.window);
  CHECK(out.guards_intact());
  CHECK(stats.guards_intact());
  CHECK(dq.guards_intact());
  CHECK(dk.guards_intact());
  CHECK(dv.guards_intact());
  auto take = [](Guarded& g) { return vector<float>(g.data(), g.data() + g.n); };
  return {take(out), take(stats), take(dq), take(dk), take(dv)};
}

bool check_against_reference(const Cfg& c, uint32_t seed) {
  Inputs in = make_inputs(c, seed);
  Result r = run_f32(c, in);
  vector<float> out, lse, dq, dk, dv;
  reference(c, in, out, lse, dq, dk, dv);
  const int before = mtest::failures;
  const std::string n = c.name() + " [" + cpu::attention_isa() + "]";
  mtest::close((n + " out").c_str(), r.out.data(), out.data(), out.size());
  const vector<float> rl = r.lse();
  mtest::close((n + " lse").c_str(), rl.data(), lse.data(), lse.size());
  mtest::close((n + " dq").c_str(), r.dq.data(), dq.data(), dq.size());
  mtest::close((n + " dk").c_str(), r.dk.data(), dk.data(), dk.size());
  mtest::close((n + " dv").c_str(), r.dv.data(), dv.data(), dv.size());
  return mtest::failures == before;
}

const vector<Cfg>& configs() {
  static const vector<Cfg> cs = {
      // small, uneven, every option alone
      {2, 2, 5, 7, 32, 32, false, 0, 0, 0},
      {1, 2, 9, 9, 32, 32, true, 0, 0, 0},
      {2, 1, 3, 11, 16, 16, true, 0, 0, 0},      // fewer queries than keys (KV cache)
      {1, 2, 11, 4, 16, 16, true, 0, 0, 0},      // more queries than keys: leading rows see nothing
      {2, 2, 6, 9, 8, 8, false, 0, 1, 0},        // f32 padding mask
      {2, 1, 7, 7, 8, 12, true, 0, 2, 0},        // i32 padding + causal, Dv != D
      {2, 2, 5, 6, 8, 8, false, 0, 3, 0},        // a batch with every key masked
      {1, 2, 10, 10, 16, 16, false, 3, 0, 0},    // window
      {1, 1, 6, 13, 16, 16, true, 4, 1, 0.3f},   // window + padding + custom scale, N < M
      {1, 1, 5, 5, 3, 5, false, 0, 0, 0.7f},     // head sizes below the vector width
      {1, 1, 4, 6, 64, 64, false, 0, 0, 0},
      {1, 1, 4, 6, 128, 128, true, 0, 0, 0},
      // tile boundaries: N, M not multiples of 64, several tiles, band edges crossing tiles
      {1, 2, 70, 70, 32, 32, true, 0, 0, 0},
      {1, 1, 130, 67, 32, 24, false, 0, 1, 0},
      {2, 1, 100, 150, 16, 16, true, 0, 2, 0},
      {1, 1, 129, 129, 16, 16, true, 40, 0, 0},
      {1, 1, 150, 200, 24, 40, false, 70, 3, 0},
      {1, 1, 64, 64, 64, 64, true, 0, 0, 0},
      {1, 1, 200, 30, 8, 8, true, 0, 0, 0},      // many dead leading rows
      {2, 1, 65, 129, 32, 32, false, 0, 1, 0},
  };
  return cs;
}

vector<std::string> isas() {
  vector<std::string> out;
  for (const char* n : {"avx512", "avx2", "base"})
    if (cpu::attention_set_isa(n)) out.push_back(n);
  cpu::attention_set_isa("auto");
  return out;
}

}  // namespace

TEST(attention_forward_backward_match_reference_on_every_simd_path) {
  for (const std::string& isa : isas()) {
    CHECK(cpu::attention_set_isa(isa.c_str()));
    uint32_t seed = 100;
    for (const Cfg& c : configs()) check_against_reference(c, seed++);
  }
  cpu::attention_set_isa("auto");
  CHECK(!cpu::attention_set_isa("sse9"));
}

TEST(attention_with_an_all_masked_key_row_gives_zeros_and_zero_gradient) {
  Cfg c{2, 2, 5, 6, 8, 8, true, 0, 3, 0};
  Inputs in = make_inputs(c, 7);
  Result r = run_f32(c, in);
  // Batch 0 sees no key at all: zero output, m = +inf, zero gradients; nothing anywhere is NaN.
  for (int64_t x = 0; x < c.H * c.N * c.Dv; x++) CHECK(r.out[x] == 0.0f);
  for (int64_t x = 0; x < c.H * c.N; x++) CHECK(r.stats[2 * x] == kInf && r.stats[2 * x + 1] == 0.0f);
  for (int64_t x = 0; x < c.H * c.N * c.D; x++) CHECK(r.dq[x] == 0.0f);
  for (int64_t x = 0; x < c.H * c.M * c.D; x++) CHECK(r.dk[x] == 0.0f);
  for (const vector<float>* t : {&r.out, &r.dq, &r.dk, &r.dv})
    for (float x : *t) CHECK(!std::isnan(x));
}

TEST(attention_does_not_depend_on_the_thread_count) {
  // Shapes that use the dq groups (B * H small) and the per-head path (B * H large), causal and not.
  const vector<Cfg> cs = {{1, 1, 300, 257, 32, 32, true, 0, 0, 0},
                          {3, 4, 90, 130, 16, 16, false, 0, 1, 0},
                          {1, 2, 200, 200, 64, 64, true, 50, 0, 0}};
  const int saved = cpu::num_threads();
  for (const Cfg& c : cs) {
    Inputs in = make_inputs(c, 11);
    cpu::set_num_threads(1);
    Result one = run_f32(c, in);
    cpu::set_num_threads(3);
    Result three = run_f32(c, in);
    auto same = [](const vector<float>& a, const vector<float>& b) {
      return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * 4) == 0;
    };
    CHECK(same(one.out, three.out));
    CHECK(same(one.stats, three.stats));
    CHECK(same(one.dq, three.dq));
    CHECK(same(one.dk, three.dk));
    CHECK(same(one.dv, three.dv));
  }
  cpu::set_num_threads(saved);
}

TEST(attention_half_inputs_accumulate_in_f32) {
  // f16 / bf16 q, k, v: the reference runs in double on the same (rounded) values, so the only difference is the
  // output's rounding when it is written in the low dtype; the gradients (computed from the rounded inputs, never
  // from the output) and the f32 output meet the f32 policy.
  for (DType dt : {DType::F16, DType::BF16})
    for (bool f32_out : {false, true}) {
      Cfg c{2, 2, 70, 90, 32, 32, true, 0, 1, 0};
      Inputs in = make_inputs(c, 21);
      auto round_trip = [&](vector<float>& x, vector<uint16_t>& h) {
        h.resize(x.size());
        cpu::cast(h.data(), dt, x.data(), DType::F32, static_cast<int64_t>(x.size()));
        cpu::cast(x.data(), DType::F32, h.data(), dt, static_cast<int64_t>(x.size()));
      };
      vector<uint16_t> qh, kh, vh;
      round_trip(in.q, qh);
      round_trip(in.k, kh);
      round_trip(in.v, vh);
      vector<float> maskf(in.pad.begin(), in.pad.end());
      const DType odt = f32_out ? DType::F32 : dt;
      vector<uint16_t> outh(c.B * c.H * c.N * c.Dv);
      vector<float> out(c.B * c.H * c.N * c.Dv), stats(2 * c.B * c.H * c.N), dq(c.B * c.H * c.N * c.D),
          dk(c.B * c.H * c.M * c.D), dv(c.B * c.H * c.M * c.Dv);
      void* o = f32_out ? static_cast<void*>(out.data()) : static_cast<void*>(outh.data());
      cpu::attention_forward(o, odt, stats.data(), qh.data(), kh.data(), vh.data(), dt, maskf.data(), false, c.B, c.H,
                             c.N, c.M, c.D, c.Dv, in.scale, c.causal, c.window);
      cpu::attention_backward(dq.data(), dk.data(), dv.data(), in.dout.data(), qh.data(), kh.data(), vh.data(),
                              stats.data(), dt, maskf.data(), false, c.B, c.H, c.N, c.M, c.D, c.Dv, in.scale, c.causal,
                              c.window);
      if (!f32_out) cpu::cast(out.data(), DType::F32, outh.data(), dt, static_cast<int64_t>(out.size()));
      vector<float> rout, rlse, rdq, rdk, rdv;
      reference(c, in, rout, rlse, rdq, rdk, rdv);
      const float rtol = f32_out ? 1e-5f : dt == DType::BF16 ? 1e-2f : 1e-3f;
      const float atol = f32_out ? 1e-6f : dt == DType::BF16 ? 1e-2f : 1e-3f;
      const std::string n = std::string(dt == DType::BF16 ? "bf16" : "f16") + (f32_out ? " (f32 out)" : "");
      mtest::close((n + " out").c_str(), out.data(), rout.data(), out.size(), rtol, atol);
      vector<float> lse(rlse.size());
      for (size_t i = 0; i < lse.size(); i++) lse[i] = stats[2 * i] + stats[2 * i + 1];
      mtest::close((n + " lse").c_str(), lse.data(), rlse.data(), lse.size(), 1e-5f, 1e-6f);
      mtest::close((n + " dq").c_str(), dq.data(), rdq.data(), dq.size());
      mtest::close((n + " dk").c_str(), dk.data(), rdk.data(), dk.size());
      mtest::close((n + " dv").c_str(), dv.data(), rdv.data(), dv.size());
    }
}

TEST(attention_empty_sizes_write_what_they_must) {
  // M = 0: every row sees nothing (zeros, m = +inf, zero dq); N = 0: dk and dv are zero.
  Cfg c{1, 2, 3, 0, 4, 4, false, 0, 0, 0};
  Inputs in = make_inputs(c, 3);
  Result r = run_f32(c, in);
  for (float x : r.out) CHECK(x == 0.0f);
  for (size_t x = 0; x < r.stats.size(); x += 2) CHECK(r.stats[x] == kInf);
  for (float x : r.dq) CHECK(x == 0.0f);
  Cfg c2{1, 2, 0, 5, 4, 4, true, 0, 0, 0};
  Inputs in2 = make_inputs(c2, 4);
  Result r2 = run_f32(c2, in2);
  for (float x : r2.dk) CHECK(x == 0.0f);
  for (float x : r2.dv) CHECK(x == 0.0f);
  // D = 0: every score is 0, so the output is the mean of the visible values.
  Cfg c3{1, 1, 2, 3, 0, 2, false, 0, 0, 1.0f};
  Inputs in3 = make_inputs(c3, 5);
  Result r3 = run_f32(c3, in3);
  for (int64_t e = 0; e < 2; e++) {
    const float mean = (in3.v[e] + in3.v[2 + e] + in3.v[4 + e]) / 3.0f;
    CHECK(std::fabs(r3.out[e] - mean) < 1e-6f);
  }
}

TEST(attention_row_with_one_visible_key_has_exactly_zero_dq) {
  // Causal N = M: query 0 sees key 0 only, so p = 1, out = v_0 and dS = p (dP - D) = 0 exactly: dq row 0 is 0
  // (a reference in double gives 0 there, so any residue shows up against an absolute tolerance).
  for (const std::string& isa : isas()) {
    cpu::attention_set_isa(isa.c_str());
    Cfg c{1, 2, 9, 9, 32, 32, true, 0, 0, 0};
    Inputs in = make_inputs(c, 31);
    Result r = run_f32(c, in);
    for (int64_t h = 0; h < c.H; h++)
      for (int64_t d = 0; d < c.D; d++) CHECK(r.dq[h * c.N * c.D + d] == 0.0f);
  }
  cpu::attention_set_isa("auto");
}
