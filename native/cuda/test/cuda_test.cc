// modalab_cuda_test: every CUDA kernel against its CPU namesake (modalab::cpu, kernels.h) on fresh random inputs.
//
//   modalab_cuda_test                 run every check; one line per kernel (and variant): the sizes it ran, the
//                                     worst error over them, PASS/FAIL; then "N passed, N failed"
//   modalab_cuda_test FILTER...       only the checks whose name contains one of the FILTERs
//   modalab_cuda_test --seed S        reuse the inputs of an earlier run (each run prints its seed)
//   modalab_cuda_test --bench         timings: GEMM 4096^3 (f32, bf16), casts over 64M elements against a
//                                     device-to-device copy of the same bytes, softmax and layernorm bandwidth,
//                                     fused attention B4 H16 N4096 D128 bf16 (fwd, fwd+bwd; causal and not),
//                                     InfoNCE N 65536 D 512 (fwd, bwd)
//
// Without a GPU (or a driver) it prints "no CUDA device: skipped" and exits 0.
//
// How a check works (STYLE.md, "Tests"): inputs are fresh random numbers, never zeros. Every device output
// buffer is allocated with guard elements on both sides and filled with a sentinel (a NaN with an unusual
// payload) before the kernel runs, so an out-of-bounds write shows up as a changed guard and an element the
// kernel forgot to write shows up as a NaN against the CPU's number. Accumulating kernels (embedding_backward,
// matmul with beta != 0) start from random data instead. The tolerance is |x - ref| <= atol + rtol |ref| with
// rtol by dtype (f32 1e-5; products of f16/bf16 inputs 1e-3; casts and copies exact) and atol sized to what the
// kernel sums; "err" is the worst element's share of its budget (PASS when <= 1), "abs" its absolute error.
#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "modalab/cuda.h"
#include "modalab/kernels.h"

namespace cu = modalab::cuda;
namespace cpu = modalab::cpu;
using modalab::BinaryOp;
using modalab::DType;
using modalab::ReduceOp;
using modalab::UnaryOp;

namespace {

// ------------------------------------------------------------------------------------------------ reporting
int g_passed = 0, g_failed = 0;
std::vector<std::string> g_filters;
std::mt19937_64 g_rng;

bool selected(const std::string& name) {
  if (g_filters.empty()) return true;
  for (auto& f : g_filters)
    if (name.find(f) != std::string::npos) return true;
  return false;
}

// The worst element of one comparison, accumulated over the sizes a check runs.
struct Result {
  double worst = 0;     // share of the tolerance budget used (<= 1 passes)
  double max_abs = 0;   // absolute error of the worst element
  bool guards_ok = true;
  std::string note;     // the first failure, in words
  void fail(const std::string& why) {
    if (note.empty()) note = why;
    worst = INFINITY;
  }
  bool ok() const { return guards_ok && worst <= 1.0 && note.empty(); }
};

void report(const std::string& name, const std::string& sizes, const Result& r) {
  const bool ok = r.ok();
  (ok ? g_passed : g_failed)++;
  std::printf("%-36s %-44s abs %-10.3g err %-8.3g %s%s%s\n", name.c_str(), sizes.c_str(), r.max_abs, r.worst,
              ok ? "PASS" : "FAIL", r.note.empty() ? "" : "  ", r.note.c_str());
  std::fflush(stdout);
}

// Runs one check; an exception (a CUDA error, an allocation failure) is that check's FAIL, not the program's end.
void check(const std::string& name, const std::function<std::string(Result&)>& body) {
  if (!selected(name)) return;
  Result r;
  std::string sizes;
  try {
    sizes = body(r);
  } catch (const std::exception& e) {
    r.fail(std::string("exception: ") + e.what());
  }
  report(name, sizes, r);
}

void compare(Result& r, const char* what, const float* x, const float* ref, size_t n, double rtol, double atol) {
  for (size_t i = 0; i < n; i++) {
    const bool both_nan = std::isnan(x[i]) && std::isnan(ref[i]);
    const bool same_inf = std::isinf(x[i]) && x[i] == ref[i];
    if (both_nan || same_inf) continue;
    const double err = std::fabs(double(x[i]) - double(ref[i]));
    if (err == 0) continue;
    double used = err / (atol + rtol * std::fabs(double(ref[i])));
    if (std::isnan(used)) used = INFINITY;
    if (used > r.worst) {
      r.worst = used;
      r.max_abs = err;
    }
    if (used > 1.0 && r.note.empty()) {
      char buf[200];
      std::snprintf(buf, sizeof buf, "%s[%zu] = %.9g, cpu %.9g", what, i, x[i], ref[i]);
      r.note = buf;
    }
  }
}

template <typename T>
void compare_exact(Result& r, const char* what, const T* x, const T* ref, size_t n) {
  for (size_t i = 0; i < n; i++) {
    if (std::memcmp(&x[i], &ref[i], sizeof(T)) != 0) {
      char buf[200];
      uint64_t xb = 0, rb = 0;
      std::memcpy(&xb, &x[i], sizeof(T));
      std::memcpy(&rb, &ref[i], sizeof(T));
      std::snprintf(buf, sizeof buf, "%s[%zu] bits 0x%" PRIx64 ", cpu 0x%" PRIx64, what, i, xb, rb);
      r.fail(buf);
      return;
    }
  }
}

// ------------------------------------------------------------------------------------ guarded device buffers
constexpr size_t kGuard = 16;   // elements each side (16-byte multiple for every dtype, so alignment is kept)

template <typename T>
T sentinel() {
  T v;
  if (sizeof(T) == 4) {
    uint32_t b = 0x7FC5A5A5u;   // f32: a quiet NaN with a payload no kernel produces; i32: 2143659429
    std::memcpy(&v, &b, 4);
  } else {
    uint16_t b = 0x7E5Au;   // f16: a NaN; bf16: about 7e37
    std::memcpy(&v, &b, 2);
  }
  return v;
}

template <typename T>
struct DBuf {
  T* base = nullptr;
  size_t n = 0, shift = 0;   // shift: extra elements before the data, to test unaligned starts
  DBuf() = default;
  DBuf(const DBuf&) = delete;
  DBuf& operator=(const DBuf&) = delete;
  DBuf(DBuf&& o) noexcept : base(o.base), n(o.n), shift(o.shift) { o.base = nullptr; }
  DBuf& operator=(DBuf&& o) noexcept {
    if (this != &o) {
      try {
        cu::free(base);
      } catch (...) {
      }
      base = o.base;
      n = o.n;
      shift = o.shift;
      o.base = nullptr;
    }
    return *this;
  }
  ~DBuf() {
    try {
      cu::free(base);
    } catch (...) {
    }
  }
  T* ptr() const { return base + kGuard + shift; }
  size_t total() const { return n + 2 * kGuard + shift; }
};

// A device buffer holding `v` (or only sentinels when v is empty and n given), guards around it.
template <typename T>
DBuf<T> upload(const std::vector<T>& v, size_t n = 0, size_t shift = 0) {
  DBuf<T> d;
  d.n = v.empty() ? n : v.size();
  d.shift = shift;
  std::vector<T> host(d.total(), sentinel<T>());
  if (!v.empty()) std::copy(v.begin(), v.end(), host.begin() + kGuard + shift);
  d.base = static_cast<T*>(cu::malloc(host.size() * sizeof(T)));
  cu::memcpy_h2d(d.base, host.data(), host.size() * sizeof(T));
  return d;
}
template <typename T>
DBuf<T> poisoned(size_t n, size_t shift = 0) {
  return upload<T>({}, n, shift);
}

// The data part of a device buffer; checks that the guards still hold the sentinel.
template <typename T>
std::vector<T> download(const DBuf<T>& d, Result& r, const char* what) {
  std::vector<T> host(d.total());
  cu::memcpy_d2h(host.data(), d.base, host.size() * sizeof(T));
  const T s = sentinel<T>();
  for (size_t i = 0; i < host.size(); i++) {
    const bool guard = i < kGuard + d.shift || i >= kGuard + d.shift + d.n;
    if (guard && std::memcmp(&host[i], &s, sizeof(T)) != 0) {
      r.guards_ok = false;
      r.fail(std::string(what) + ": guard overwritten at " +
             std::to_string(static_cast<long long>(i) - static_cast<long long>(kGuard + d.shift)));
      break;
    }
  }
  return std::vector<T>(host.begin() + kGuard + d.shift, host.begin() + kGuard + d.shift + d.n);
}

// -------------------------------------------------------------------------------------------- random data
std::vector<float> randn(size_t n, float scale = 1.0f, float mean = 0.0f) {
  std::normal_distribution<float> d(mean, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
std::vector<float> uniform(size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}
std::vector<int32_t> randint(size_t n, int32_t lo, int32_t hi) {   // [lo, hi]
  std::uniform_int_distribution<int32_t> d(lo, hi);
  std::vector<int32_t> v(n);
  for (auto& x : v) x = d(g_rng);
  return v;
}

std::string join(const std::vector<std::string>& parts) {
  std::string s;
  for (size_t i = 0; i < parts.size(); i++) s += (i ? " " : "") + parts[i];
  return s.size() > 44 ? s.substr(0, 41) + "..." : s;
}

const int64_t kRows[] = {1, 7, 129, 1000, 4097};   // uneven against every tile size used

// ---------------------------------------------------------------------------------------------- runtime
void test_runtime() {
  check("allocator (reuse, accounting)", [](Result& r) {
    cu::empty_cache();
    const size_t used0 = cu::bytes_in_use();
    void* p = cu::malloc(1000);
    if (cu::bytes_in_use() != used0 + 1024) r.fail("1000 bytes should take a 1024-byte class");
    cu::free(p);
    void* q = cu::malloc(900);   // same class: the cached block comes back
    if (q != p) r.fail("a freed block of the same class was not reused");
    cu::free(q);
    if (cu::bytes_in_use() != used0) r.fail("bytes_in_use did not return to its start");
    const size_t reserved = cu::bytes_reserved();
    cu::empty_cache();
    if (cu::bytes_reserved() >= reserved) r.fail("empty_cache released nothing");
    if (cu::malloc(0) != nullptr) r.fail("malloc(0) should be nullptr");
    cu::free(nullptr);
    bool threw = false;
    try {
      int x = 0;
      cu::free(&x);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    if (!threw) r.fail("free of a foreign pointer did not throw");
    return "1000 B, 900 B";
  });
  check("allocator (out of memory)", [](Result& r) {
    const size_t huge = size_t(1) << 50;   // 1 PiB
    bool threw = false;
    try {
      cu::malloc(huge);
    } catch (const cu::OutOfMemory& e) {
      threw = true;
      if (e.requested() != huge || std::string(e.what()).find(std::to_string(huge)) == std::string::npos)
        r.fail(std::string("message does not name the request: ") + e.what());
    }
    if (!threw) r.fail("no OutOfMemory for 1 PiB");
    void* p = cu::malloc(4096);   // the device still works afterwards
    cu::free(p);
    return "1 PiB";
  });
  check("cast (bad dtype throws)", [](Result& r) {
    bool threw = false;
    try {
      cu::cast(nullptr, static_cast<DType>(7), nullptr, DType::F32, 4);
    } catch (const std::invalid_argument&) {
      threw = true;
    }
    if (!threw) r.fail("no exception");
    return "dtype 7";
  });
}

// ---------------------------------------------------------------------------------------------- creation
void test_fill() {
  check("fill_f32", [](Result& r) {
    std::vector<std::string> sizes;
    for (int64_t n : {int64_t(1), int64_t(7), int64_t(129), int64_t(1000), int64_t(4097), int64_t(1) << 20 | 3}) {
      for (size_t shift : {size_t(0), size_t(1), size_t(3)}) {
        const float value = randn(1)[0];
        std::vector<float> ref(n);
        cpu::fill_f32(ref.data(), n, value);
        auto d = poisoned<float>(n, shift);
        cu::fill_f32(d.ptr(), n, value);
        auto got = download(d, r, "out");
        compare_exact(r, "out", got.data(), ref.data(), n);
      }
      sizes.push_back(std::to_string(n));
    }
    return "n=" + join(sizes) + " x3 offsets";
  });
}

// -------------------------------------------------------------------------------------------------- casts
// Inputs that reach every branch: random bit patterns (NaN payloads, infinities, subnormals), normal numbers of
// every scale, and the rounding boundaries of the half types.
std::vector<float> cast_inputs_f32(size_t n) {
  std::vector<float> v(n);
  std::uniform_int_distribution<uint32_t> bits;
  std::uniform_int_distribution<int> kind(0, 7), ex(-30, 20);
  const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65519.0f, 65520.0f, 65536.0f,
                           5.9604645e-8f, 2.9802322e-8f, 6.1035156e-5f, 1e-40f, 3.3895314e38f, -1.5f};
  for (auto& x : v) {
    switch (kind(g_rng)) {
      case 0: case 1: {
        uint32_t b = bits(g_rng);
        std::memcpy(&x, &b, 4);
        break;
      }
      case 2: x = special[bits(g_rng) % (sizeof special / sizeof special[0])]; break;
      case 3: {   // exact ties for bf16 (low 16 bits 0x8000) and f16 (low 13 bits 0x1000)
        uint32_t b = bits(g_rng);
        b = (bits(g_rng) & 1) ? ((b & 0xFFFF0000u) | 0x8000u) : ((b & 0xC7FFE000u) | 0x38001000u);
        std::memcpy(&x, &b, 4);
        break;
      }
      default: x = std::ldexp(std::normal_distribution<float>()(g_rng), ex(g_rng)); break;
    }
  }
  return v;
}

template <typename T>
std::vector<T> cast_inputs(DType dt, size_t n) {
  std::vector<T> v(n);
  if (dt == DType::F32) {
    auto f = cast_inputs_f32(n);
    std::memcpy(v.data(), f.data(), n * 4);
  } else if (dt == DType::I32) {
    std::uniform_int_distribution<int32_t> any(INT32_MIN, INT32_MAX), small(-70000, 70000);
    for (auto& x : v) {
      int32_t i = (g_rng() & 1) ? any(g_rng) : small(g_rng);
      std::memcpy(&x, &i, 4);
    }
  } else {
    std::uniform_int_distribution<uint32_t> bits(0, 0xFFFF);   // every 16-bit pattern is a valid input
    for (auto& x : v) {
      uint16_t b = static_cast<uint16_t>(bits(g_rng));
      std::memcpy(&x, &b, 2);
    }
  }
  return v;
}

const char* dtype_name(DType d) {
  switch (d) {
    case DType::F32: return "f32";
    case DType::F16: return "f16";
    case DType::BF16: return "bf16";
    case DType::I32: return "i32";
  }
  return "?";
}

template <typename O, typename I>
void cast_case(Result& r, DType od, DType id, int64_t n, size_t oshift, size_t ishift) {
  auto x = cast_inputs<I>(id, n);
  std::vector<O> ref(n);
  cpu::cast(ref.data(), od, x.data(), id, n);
  auto dx = upload(x, 0, ishift);
  auto dout = poisoned<O>(n, oshift);
  cu::cast(dout.ptr(), od, dx.ptr(), id, n);
  auto got = download(dout, r, "out");
  compare_exact(r, "out", got.data(), ref.data(), n);
}

void test_cast() {
  const DType all[] = {DType::F32, DType::F16, DType::BF16, DType::I32};
  for (DType od : all)
    for (DType id : all) {
      const std::string name = std::string("cast ") + dtype_name(id) + "->" + dtype_name(od);
      check(name, [&](Result& r) {
        std::vector<std::string> sizes;
        for (int64_t n : {int64_t(1), int64_t(7), int64_t(129), int64_t(4097), int64_t(1000003)}) {
          for (auto sh : {std::pair<size_t, size_t>{0, 0}, {1, 1}, {1, 0}, {3, 5}}) {
            const bool o4 = modalab::dtype_size(od) == 4, i4 = modalab::dtype_size(id) == 4;
            if (o4 && i4) cast_case<uint32_t, uint32_t>(r, od, id, n, sh.first, sh.second);
            else if (o4) cast_case<uint32_t, uint16_t>(r, od, id, n, sh.first, sh.second);
            else if (i4) cast_case<uint16_t, uint32_t>(r, od, id, n, sh.first, sh.second);
            else cast_case<uint16_t, uint16_t>(r, od, id, n, sh.first, sh.second);
          }
          sizes.push_back(std::to_string(n));
        }
        return "n=" + join(sizes) + " x4 offsets";
      });
    }
}

// ------------------------------------------------------------------------------------------- elementwise
const char* unary_name(UnaryOp op) {
  static const char* names[] = {"neg", "exp", "log", "sqrt", "tanh", "sigmoid", "relu", "gelu_erf",
                                "gelu_tanh", "silu", "abs", "square", "reciprocal", "sin", "cos"};
  return names[static_cast<int>(op)];
}

const int64_t kElemSizes[] = {1, 7, 129, 1000, 4097, 100003};

void test_unary() {
  for (int o = 0; o <= static_cast<int>(UnaryOp::Cos); o++) {
    const UnaryOp op = static_cast<UnaryOp>(o);
    const bool positive = op == UnaryOp::Log || op == UnaryOp::Sqrt || op == UnaryOp::Reciprocal;
    auto inputs = [&](int64_t n) {
      auto x = randn(n, 2.0f);
      if (positive)
        for (auto& v : x) v = std::fabs(v) + 0.05f;
      return x;
    };
    check(std::string("unary_forward ") + unary_name(op), [&](Result& r) {
      for (int64_t n : kElemSizes) {
        auto x = inputs(n);
        std::vector<float> ref(n);
        cpu::unary_forward(ref.data(), x.data(), n, op);
        auto dx = upload(x);
        auto dy = poisoned<float>(n);
        cu::unary_forward(dy.ptr(), dx.ptr(), n, op);
        auto got = download(dy, r, "y");
        compare(r, "y", got.data(), ref.data(), n, 1e-5, 1e-6);
      }
      return std::string("n=1 7 129 1000 4097 100003");
    });
    check(std::string("unary_backward ") + unary_name(op), [&](Result& r) {
      for (int64_t n : kElemSizes) {
        auto x = inputs(n), g = randn(n);
        std::vector<float> y(n), ref(n);
        cpu::unary_forward(y.data(), x.data(), n, op);
        cpu::unary_backward(ref.data(), g.data(), x.data(), y.data(), n, op);
        auto dx = upload(x), dyv = upload(y), dg = upload(g);
        auto out = poisoned<float>(n);
        cu::unary_backward(out.ptr(), dg.ptr(), dx.ptr(), dyv.ptr(), n, op);
        auto got = download(out, r, "dx");
        compare(r, "dx", got.data(), ref.data(), n, 1e-5, 1e-6);
      }
      return std::string("n=1 7 129 1000 4097 100003");
    });
  }
  check("affine", [](Result& r) {
    for (int64_t n : kElemSizes) {
      auto x = randn(n);
      const float scale = randn(1)[0], shift = randn(1)[0];
      std::vector<float> ref(n);
      cpu::affine(ref.data(), x.data(), n, scale, shift);
      auto dx = upload(x);
      auto dy = poisoned<float>(n);
      cu::affine(dy.ptr(), dx.ptr(), n, scale, shift);
      auto got = download(dy, r, "y");
      compare(r, "y", got.data(), ref.data(), n, 1e-5, 1e-6);
    }
    return std::string("n=1 7 129 1000 4097 100003");
  });
}

const char* binary_name(BinaryOp op) {
  static const char* names[] = {"add", "sub", "mul", "div", "pow", "maximum", "minimum",
                                "eq", "lt", "gt", "le", "ge", "ne"};
  return names[static_cast<int>(op)];
}

// One broadcast pattern: the output shape and each input's strides over it, and the element count each
// input buffer needs.
struct Bcast {
  const char* what;
  std::vector<int64_t> shape, as, bs;
  int64_t na, nb;
};

std::vector<Bcast> bcast_patterns(int64_t R, int64_t C) {
  return {
      {"same", {R, C}, {C, 1}, {C, 1}, R * C, R * C},
      {"row", {R, C}, {C, 1}, {0, 1}, R * C, C},
      {"col", {R, C}, {C, 1}, {1, 0}, R * C, R},
      {"scalar", {R, C}, {C, 1}, {0, 0}, R * C, 1},
      {"a^T", {R, C}, {1, R}, {C, 1}, R * C, R * C},              // a is a (C, R) buffer read transposed
      {"3d", {3, R, C}, {R * C, C, 1}, {0, 1, 0}, 3 * R * C, R},   // b (R, 1) broadcast over a batch axis
  };
}

void test_binary() {
  for (int o = 0; o <= static_cast<int>(BinaryOp::Ne); o++) {
    const BinaryOp op = static_cast<BinaryOp>(o);
    check(std::string("binary_forward ") + binary_name(op), [&](Result& r) {
      const int64_t shapes[][2] = {{1, 1}, {7, 33}, {129, 7}, {1000, 257}, {4097, 3}};
      for (auto& s : shapes) {
        for (const Bcast& p : bcast_patterns(s[0], s[1])) {
          std::vector<float> a, b;
          if (op == BinaryOp::Pow) {
            a = uniform(p.na, 0.1f, 3.0f);
            b = uniform(p.nb, -2.0f, 2.0f);
          } else if (o >= static_cast<int>(BinaryOp::Maximum)) {   // halves in [-2, 2]: equal values do occur
            a = uniform(p.na, -2.0f, 2.0f);
            b = uniform(p.nb, -2.0f, 2.0f);
            for (auto& v : a) v = std::round(v * 2) / 2;
            for (auto& v : b) v = std::round(v * 2) / 2;
          } else {
            a = randn(p.na);
            b = randn(p.nb);
            if (op == BinaryOp::Div)
              for (auto& v : b) v = v < 0 ? v - 0.1f : v + 0.1f;
          }
          int64_t n = 1;
          for (auto d : p.shape) n *= d;
          const int nd = static_cast<int>(p.shape.size());
          std::vector<float> ref(n);
          cpu::binary_forward(ref.data(), a.data(), b.data(), nd, p.shape.data(), p.as.data(), p.bs.data(), op);
          auto da = upload(a), db = upload(b);
          auto dout = poisoned<float>(n);
          cu::binary_forward(dout.ptr(), da.ptr(), db.ptr(), nd, p.shape.data(), p.as.data(), p.bs.data(), op);
          auto got = download(dout, r, p.what);
          compare(r, p.what, got.data(), ref.data(), n, 1e-5, 1e-6);
        }
      }
      return std::string("(R,C)=1x1..4097x3, 6 broadcasts");
    });
  }
}

// ------------------------------------------------------------------------------------------------- reduce
void test_reduce() {
  const char* names[] = {"sum", "mean", "max", "min"};
  const int64_t shapes[][3] = {{1, 1, 1},     {7, 129, 1},  {129, 1000, 1}, {1000, 7, 1},   {4097, 33, 1},
                               {3, 5000, 1},  {1, 1048583, 1}, {2, 300000, 1}, {7, 129, 33},  {2, 1000, 7},
                               {1, 4097, 3},  {4097, 2, 5},  {3, 0, 2}};
  for (int o = 0; o < 4; o++) {
    const ReduceOp op = static_cast<ReduceOp>(o);
    const bool arg = op == ReduceOp::Max || op == ReduceOp::Min;
    check(std::string("reduce ") + names[o], [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t outer = s[0], len = s[1], inner = s[2], nout = outer * inner;
        auto x = randn(outer * len * inner, 1.0f, 0.5f);
        std::vector<float> ref(nout);
        std::vector<int32_t> ref_idx(nout);
        cpu::reduce(ref.data(), arg ? ref_idx.data() : nullptr, x.data(), outer, len, inner, op);
        auto dx = upload(x);
        auto dout = poisoned<float>(nout);
        auto didx = poisoned<int32_t>(nout);
        cu::reduce(dout.ptr(), arg ? didx.ptr() : nullptr, dx.ptr(), outer, len, inner, op);
        auto got = download(dout, r, "out");
        // Sums are accumulated in double on both sides; the budget allows for a different order.
        compare(r, "out", got.data(), ref.data(), nout, 1e-5, arg ? 0.0 : 1e-5);
        if (arg) {
          auto gidx = download(didx, r, "argidx");
          compare_exact(r, "argidx", gidx.data(), ref_idx.data(), nout);
        }
      }
      return std::string("13 shapes, len 0..1048583, inner 1..33");
    });
  }
}

// ------------------------------------------------------------------------------------------------ softmax
void test_softmax() {
  const int64_t shapes[][3] = {{1, 1, 1},   {7, 129, 1},  {129, 1000, 1}, {1000, 7, 1}, {4097, 33, 1},
                               {3, 4097, 1}, {2, 50000, 1}, {7, 33, 129},  {2, 1000, 3}, {1, 5, 4097}};
  for (bool log : {false, true}) {
    const std::string suffix = log ? " (log)" : "";
    check("softmax_forward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t outer = s[0], len = s[1], inner = s[2], n = outer * len * inner;
        auto x = randn(n, 3.0f);
        std::vector<float> ref(n);
        cpu::softmax_forward(ref.data(), x.data(), outer, len, inner, log);
        auto dx = upload(x);
        auto dy = poisoned<float>(n);
        cu::softmax_forward(dy.ptr(), dx.ptr(), outer, len, inner, log);
        auto got = download(dy, r, "y");
        compare(r, "y", got.data(), ref.data(), n, 1e-5, 1e-6);
      }
      return std::string("10 shapes, len 1..50000, inner 1..4097");
    });
    check("softmax_backward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t outer = s[0], len = s[1], inner = s[2], n = outer * len * inner;
        auto x = randn(n, 3.0f), g = randn(n);
        std::vector<float> y(n), ref(n);
        cpu::softmax_forward(y.data(), x.data(), outer, len, inner, log);
        cpu::softmax_backward(ref.data(), g.data(), y.data(), outer, len, inner, log);
        auto dyv = upload(y), dg = upload(g);
        auto dx = poisoned<float>(n);
        cu::softmax_backward(dx.ptr(), dg.ptr(), dyv.ptr(), outer, len, inner, log);
        auto got = download(dx, r, "dx");
        // dx = y (dy - sum(dy y)) sums len products: allow for a different summation order.
        compare(r, "dx", got.data(), ref.data(), n, 1e-5, 1e-6 * std::sqrt(double(len)));
      }
      return std::string("10 shapes, len 1..50000, inner 1..4097");
    });
  }
}

// ---------------------------------------------------------------------------------------------- layernorm
void test_layernorm() {
  const int64_t shapes[][2] = {{1, 1}, {7, 33}, {129, 768}, {1000, 1500}, {4097, 64}, {3, 4097}, {1200, 1}};
  for (bool affine : {true, false}) {
    const std::string suffix = affine ? "" : " (no weight/bias)";
    check("layernorm_forward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t rows = s[0], C = s[1];
        auto x = randn(rows * C, 2.0f, 3.0f), w = randn(C), b = randn(C);
        std::vector<float> ref(rows * C), rm(rows), rr(rows);
        const float eps = 1e-5f;
        cpu::layernorm_forward(ref.data(), rm.data(), rr.data(), x.data(), affine ? w.data() : nullptr,
                               affine ? b.data() : nullptr, rows, C, eps);
        auto dx = upload(x), dw = upload(w), db = upload(b);
        auto dy = poisoned<float>(rows * C), dm = poisoned<float>(rows), dr = poisoned<float>(rows);
        cu::layernorm_forward(dy.ptr(), dm.ptr(), dr.ptr(), dx.ptr(), affine ? dw.ptr() : nullptr,
                              affine ? db.ptr() : nullptr, rows, C, eps);
        auto gy = download(dy, r, "y"), gm = download(dm, r, "mean"), gr = download(dr, r, "rstd");
        compare(r, "y", gy.data(), ref.data(), rows * C, 1e-5, 1e-5);
        compare(r, "mean", gm.data(), rm.data(), rows, 1e-5, 1e-6);
        compare(r, "rstd", gr.data(), rr.data(), rows, 1e-5, 1e-6);
      }
      return std::string("(rows,C)=1x1 7x33 129x768 1000x1500 4097x64..");
    });
    check("layernorm_backward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t rows = s[0], C = s[1];
        auto x = randn(rows * C, 2.0f, 3.0f), w = randn(C), b = randn(C), g = randn(rows * C);
        std::vector<float> y(rows * C), m(rows), rs(rows), rdx(rows * C), rdw(C), rdb(C);
        const float* wp = affine ? w.data() : nullptr;
        cpu::layernorm_forward(y.data(), m.data(), rs.data(), x.data(), wp, affine ? b.data() : nullptr, rows, C,
                               1e-5f);
        cpu::layernorm_backward(rdx.data(), rdw.data(), rdb.data(), g.data(), x.data(), wp, m.data(), rs.data(),
                                rows, C);
        auto dx_in = upload(x), dw_in = upload(w), dg = upload(g), dm = upload(m), drs = upload(rs);
        auto ddx = poisoned<float>(rows * C), ddw = poisoned<float>(C), ddb = poisoned<float>(C);
        cu::layernorm_backward(ddx.ptr(), ddw.ptr(), ddb.ptr(), dg.ptr(), dx_in.ptr(), affine ? dw_in.ptr() : nullptr,
                               dm.ptr(), drs.ptr(), rows, C);
        auto gdx = download(ddx, r, "dx"), gdw = download(ddw, r, "dweight"), gdb = download(ddb, r, "dbias");
        compare(r, "dx", gdx.data(), rdx.data(), rows * C, 1e-5, 1e-5);
        compare(r, "dweight", gdw.data(), rdw.data(), C, 1e-5, 1e-5);
        compare(r, "dbias", gdb.data(), rdb.data(), C, 1e-5, 1e-5);
      }
      return std::string("(rows,C)=1x1 7x33 129x768 1000x1500 4097x64..");
    });
  }
}

// ------------------------------------------------------------------------------------------ cross entropy
void test_cross_entropy() {
  const int64_t shapes[][2] = {{1, 1}, {7, 10}, {129, 1000}, {1000, 129}, {4097, 33}, {3, 50257}};
  const int32_t ignore = -100;
  auto targets_for = [&](int64_t N, int64_t C) {   // about one row in five ignored
    auto t = randint(N, 0, static_cast<int32_t>(C - 1));
    for (auto& v : t)
      if (g_rng() % 5 == 0) v = ignore;
    return t;
  };
  for (float smoothing : {0.0f, 0.1f}) {
    const std::string suffix = smoothing != 0.0f ? " (smoothing 0.1)" : "";
    check("cross_entropy_forward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t N = s[0], C = s[1];
        auto x = randn(N * C, 3.0f);
        auto t = targets_for(N, C);
        std::vector<float> rl(N), rlse(N);
        const int64_t rbad = cpu::cross_entropy_forward(rl.data(), rlse.data(), x.data(), t.data(), N, C, ignore,
                                                        smoothing);
        auto dx = upload(x);
        auto dt = upload(t);
        auto dl = poisoned<float>(N), dlse = poisoned<float>(N);
        const int64_t bad = cu::cross_entropy_forward(dl.ptr(), dlse.ptr(), dx.ptr(), dt.ptr(), N, C, ignore,
                                                      smoothing);
        if (bad != rbad) r.fail("returned " + std::to_string(bad) + ", cpu " + std::to_string(rbad));
        auto gl = download(dl, r, "loss"), glse = download(dlse, r, "lse");
        compare(r, "loss", gl.data(), rl.data(), N, 1e-5, 1e-5);
        compare(r, "lse", glse.data(), rlse.data(), N, 1e-5, 1e-5);
      }
      // A target outside [0, C): the first bad row comes back, as on the CPU.
      {
        const int64_t N = 129, C = 17;
        auto x = randn(N * C);
        auto t = targets_for(N, C);
        t[40] = C;
        t[77] = -1;
        std::vector<float> rl(N), rlse(N);
        const int64_t rbad = cpu::cross_entropy_forward(rl.data(), rlse.data(), x.data(), t.data(), N, C, ignore,
                                                        smoothing);
        auto dx = upload(x);
        auto dt = upload(t);
        auto dl = poisoned<float>(N), dlse = poisoned<float>(N);
        const int64_t bad = cu::cross_entropy_forward(dl.ptr(), dlse.ptr(), dx.ptr(), dt.ptr(), N, C, ignore,
                                                      smoothing);
        if (bad != rbad || bad != 40)
          r.fail("bad target: returned " + std::to_string(bad) + ", cpu " + std::to_string(rbad) + ", want 40");
        auto gl = download(dl, r, "loss");
        compare(r, "loss (bad rows)", gl.data(), rl.data(), N, 1e-5, 1e-5);
      }
      return std::string("(N,C)=1x1 7x10 129x1000 1000x129 4097x33 3x50257");
    });
    check("cross_entropy_backward" + suffix, [&](Result& r) {
      for (auto& s : shapes) {
        const int64_t N = s[0], C = s[1];
        auto x = randn(N * C, 3.0f), dloss = randn(N);
        auto t = targets_for(N, C);
        std::vector<float> rl(N), rlse(N), rdx(N * C);
        cpu::cross_entropy_forward(rl.data(), rlse.data(), x.data(), t.data(), N, C, ignore, smoothing);
        cpu::cross_entropy_backward(rdx.data(), dloss.data(), x.data(), rlse.data(), t.data(), N, C, ignore,
                                    smoothing);
        auto dx = upload(x), dd = upload(dloss), dlse = upload(rlse);
        auto dt = upload(t);
        auto out = poisoned<float>(N * C);
        cu::cross_entropy_backward(out.ptr(), dd.ptr(), dx.ptr(), dlse.ptr(), dt.ptr(), N, C, ignore, smoothing);
        auto got = download(out, r, "dlogits");
        compare(r, "dlogits", got.data(), rdx.data(), N * C, 1e-5, 1e-6);
      }
      return std::string("(N,C)=1x1 7x10 129x1000 1000x129 4097x33 3x50257");
    });
  }
}

// ---------------------------------------------------------------------------------------------- embedding
void test_embedding() {
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 10, 33}, {129, 50, 768}, {1000, 7, 129}, {4097, 1000, 64}};
  check("embedding_forward", [&](Result& r) {
    for (auto& s : shapes) {
      const int64_t n = s[0], V = s[1], C = s[2];
      auto table = randn(V * C);
      auto idx = randint(n, 0, static_cast<int32_t>(V - 1));
      std::vector<float> ref(n * C);
      cpu::embedding_forward(ref.data(), table.data(), idx.data(), n, V, C);
      auto dt = upload(table);
      auto di = upload(idx);
      auto dy = poisoned<float>(n * C);
      const int64_t bad = cu::embedding_forward(dy.ptr(), dt.ptr(), di.ptr(), n, V, C);
      if (bad != -1) r.fail("returned " + std::to_string(bad) + " for valid indices");
      auto got = download(dy, r, "y");
      compare_exact(r, "y", got.data(), ref.data(), n * C);
    }
    {   // bad indices: the first one's position comes back and y is not written
      const int64_t n = 129, V = 20, C = 7;
      auto table = randn(V * C);
      auto idx = randint(n, 0, static_cast<int32_t>(V - 1));
      idx[50] = static_cast<int32_t>(V);
      idx[90] = -3;
      std::vector<float> ref(n * C);
      const int64_t rbad = cpu::embedding_forward(ref.data(), table.data(), idx.data(), n, V, C);
      auto dt = upload(table);
      auto di = upload(idx);
      auto dy = poisoned<float>(n * C);
      const int64_t bad = cu::embedding_forward(dy.ptr(), dt.ptr(), di.ptr(), n, V, C);
      if (bad != rbad || bad != 50)
        r.fail("bad index: returned " + std::to_string(bad) + ", cpu " + std::to_string(rbad) + ", want 50");
      auto got = download(dy, r, "y");
      const float s = sentinel<float>();
      for (auto v : got)
        if (std::memcmp(&v, &s, 4) != 0) {
          r.fail("y written despite a bad index");
          break;
        }
    }
    return std::string("(n,V,C)=1x1x1 7x10x33 129x50x768 .. 4097x1000x64");
  });
  check("embedding_backward", [&](Result& r) {
    for (auto& s : shapes) {
      const int64_t n = s[0], V = s[1], C = s[2];
      auto dtable0 = randn(V * C), dy = randn(n * C);
      auto idx = randint(n, 0, static_cast<int32_t>(V - 1));   // V < n: rows repeat
      std::vector<float> ref = dtable0;
      cpu::embedding_backward(ref.data(), dy.data(), idx.data(), n, V, C);
      auto dtab = upload(dtable0), ddy = upload(dy);
      auto di = upload(idx);
      cu::embedding_backward(dtab.ptr(), ddy.ptr(), di.ptr(), n, V, C);
      auto got = download(dtab, r, "dtable");
      // Atomic additions in any order: allow for the rounding of a different order of up to n/V terms.
      compare(r, "dtable", got.data(), ref.data(), V * C, 1e-5, 1e-6 * std::sqrt(double(n)));
    }
    return std::string("(n,V,C)=1x1x1 7x10x33 129x50x768 .. 4097x1000x64");
  });
}

// ---------------------------------------------------------------------------------------------- optimizer
void test_adamw() {
  check("adamw_step", [](Result& r) {
    for (int64_t n : kElemSizes) {
      auto p = randn(n), m = randn(n, 0.1f), g = randn(n);
      auto v = uniform(n, 0.0f, 0.01f);
      const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
      const int t = 3;
      const float c1 = static_cast<float>(1 - std::pow(0.9, t)), c2 = static_cast<float>(1 - std::pow(0.999, t));
      std::vector<float> rp = p, rm = m, rv = v;
      cpu::adamw_step(rp.data(), rm.data(), rv.data(), g.data(), n, lr, b1, b2, eps, wd, c1, c2);
      auto dp = upload(p), dm = upload(m), dv = upload(v), dg = upload(g);
      cu::adamw_step(dp.ptr(), dm.ptr(), dv.ptr(), dg.ptr(), n, lr, b1, b2, eps, wd, c1, c2);
      auto gp = download(dp, r, "p"), gm = download(dm, r, "m"), gv = download(dv, r, "v");
      compare(r, "p", gp.data(), rp.data(), n, 1e-6, 1e-7);
      compare(r, "m", gm.data(), rm.data(), n, 1e-6, 1e-8);
      compare(r, "v", gv.data(), rv.data(), n, 1e-6, 1e-10);
    }
    return std::string("n=1 7 129 1000 4097 100003");
  });
}

// ------------------------------------------------------------------------------------------------- matmul
struct MM {
  int64_t M, N, K;
  std::vector<int64_t> bshape, as, bs;   // batch axes; element strides of a's and b's matrices
  int64_t na, nb;                        // elements in a and b
};

std::vector<MM> matmul_cases() {
  std::vector<MM> cases;
  const int64_t mnk[][3] = {{1, 1, 1},     {7, 129, 33},  {129, 7, 1000}, {1000, 129, 257},
                            {4097, 64, 129}, {65, 4097, 17}, {128, 128, 128}, {33, 65, 0}};
  for (auto& s : mnk) cases.push_back({s[0], s[1], s[2], {}, {}, {}, s[0] * s[2], s[2] * s[1]});
  // Batched: (2, 3) batch; a broadcast over the first batch axis, b not.
  const int64_t M = 37, N = 70, K = 45;
  cases.push_back({M, N, K, {2, 3}, {0, M * K}, {3 * K * N, K * N}, 3 * M * K, 6 * K * N});
  // b shared by every batch (a linear layer applied to a batch of sequences).
  cases.push_back({129, 33, 64, {5}, {129 * 64}, {0}, 5 * 129 * 64, 33 * 64});
  return cases;
}

using MatmulFn = std::function<void(float*, const float*, const float*, int64_t, int64_t, int64_t, bool, bool, int,
                                    const int64_t*, const int64_t*, const int64_t*, float, float)>;

void matmul_check(const std::string& name, const MatmulFn& fn) {
  check(name, [&](Result& r) {
    for (const MM& c : matmul_cases()) {
      int64_t nbatch = 1;
      for (auto d : c.bshape) nbatch *= d;
      const int64_t nc = nbatch * c.M * c.N;
      for (int tr = 0; tr < 4; tr++) {
        const bool ta = tr & 1, tb = tr & 2;
        for (int ab = 0; ab < 2; ab++) {   // (alpha, beta) = (1, 0) on a NaN-filled c, then (0.5, 2) on random c
          const float alpha = ab ? 0.5f : 1.0f, beta = ab ? 2.0f : 0.0f;
          auto a = randn(c.na), b = randn(c.nb);
          auto c0 = randn(nc);
          std::vector<float> ref = c0;
          cpu::matmul(ref.data(), a.data(), b.data(), c.M, c.N, c.K, ta, tb, static_cast<int>(c.bshape.size()),
                      c.bshape.data(), c.as.data(), c.bs.data(), alpha, beta);
          const size_t shift = (tr == 3 && ab) ? 1 : 0;   // one unaligned a: the loader's element path
          auto da = upload(a, 0, shift), db = upload(b);
          auto dc = ab ? upload(c0) : poisoned<float>(nc);
          fn(dc.ptr(), da.ptr(), db.ptr(), c.M, c.N, c.K, ta, tb, static_cast<int>(c.bshape.size()), c.bshape.data(),
             c.as.data(), c.bs.data(), alpha, beta);
          auto got = download(dc, r, "c");
          // f32 sums of K products of N(0,1) numbers in another order: rounding grows with K.
          compare(r, "c", got.data(), ref.data(), nc, 1e-5, 1e-6 * (c.K + 1));
        }
      }
    }
    return std::string("MxNxK 1x1x1..4097x64x129 65x4097x17, batched, 4 trans");
  });
}

void half_matmul_check(const std::string& name, DType dt, cu::GemmImpl impl) {
  check(name, [&](Result& r) {
    for (const MM& c : matmul_cases()) {
      int64_t nbatch = 1;
      for (auto d : c.bshape) nbatch *= d;
      const int64_t nc = nbatch * c.M * c.N;
      for (int tr = 0; tr < 4; tr++) {
        const bool ta = tr & 1, tb = tr & 2;
        const float alpha = tr == 2 ? 0.5f : 1.0f, beta = tr == 2 ? 2.0f : 0.0f;
        // Inputs rounded to the half type; the reference multiplies those exact values in f32 on the CPU.
        auto a = randn(c.na), b = randn(c.nb);
        std::vector<uint16_t> ah(c.na), bh(c.nb);
        cpu::cast(ah.data(), dt, a.data(), DType::F32, c.na);
        cpu::cast(bh.data(), dt, b.data(), DType::F32, c.nb);
        cpu::cast(a.data(), DType::F32, ah.data(), dt, c.na);
        cpu::cast(b.data(), DType::F32, bh.data(), dt, c.nb);
        auto c0 = randn(nc);
        std::vector<float> ref = c0;
        cpu::matmul(ref.data(), a.data(), b.data(), c.M, c.N, c.K, ta, tb, static_cast<int>(c.bshape.size()),
                    c.bshape.data(), c.as.data(), c.bs.data(), alpha, beta);
        const size_t shift = tr == 1 ? 1 : 0;   // unaligned a: element loads
        auto da = upload(ah, 0, shift), db = upload(bh);
        auto dc = beta != 0.0f ? upload(c0) : poisoned<float>(nc);
        cu::matmul_half(dc.ptr(), da.ptr(), db.ptr(), dt, c.M, c.N, c.K, ta, tb, static_cast<int>(c.bshape.size()),
                        c.bshape.data(), c.as.data(), c.bs.data(), alpha, beta, impl);
        auto got = download(dc, r, "c");
        compare(r, "c", got.data(), ref.data(), nc, 1e-4, 2e-6 * (c.K + 1));
      }
    }
    return std::string("MxNxK 1x1x1..4097x64x129 65x4097x17, batched, 4 trans");
  });
}

void test_matmul() {
  matmul_check("matmul_tiled f32", cu::matmul_tiled);
  if (cu::have_cublas()) matmul_check("matmul f32 (cuBLAS)", cu::matmul);
  half_matmul_check("matmul_half bf16 (wmma)", DType::BF16, cu::GemmImpl::TensorCore);
  half_matmul_check("matmul_half f16 (wmma)", DType::F16, cu::GemmImpl::TensorCore);
  if (cu::have_cublas()) {
    half_matmul_check("matmul_half bf16 (cuBLAS)", DType::BF16, cu::GemmImpl::Cublas);
    half_matmul_check("matmul_half f16 (cuBLAS)", DType::F16, cu::GemmImpl::Cublas);
  }
}

// ---------------------------------------------------------------------------------------------- dropout
void test_dropout() {
  check("dropout_forward/backward", [](Result& r) {
    const int64_t ns[] = {1, 7, 129, 1000, 4097, int64_t(1) << 20};
    const uint64_t offsets[] = {0, 1, 3, 5, (uint64_t(1) << 33) + 2};
    const float ps[] = {0.1f, 0.5f, 0.9f, 0.0f, 1.0f};
    const uint64_t seed = g_rng();
    for (int64_t n : ns)
      for (uint64_t off : offsets)
        for (float p : ps) {
          if (n > 4097 && off != 3) continue;
          auto x = randn(n);
          std::vector<float> ref(n), refb(n);
          cpu::dropout_forward(ref.data(), x.data(), n, p, seed, off);
          cpu::dropout_backward(refb.data(), x.data(), n, p, seed, off);
          auto dx = upload(x);
          auto dy = poisoned<float>(n), dg = poisoned<float>(n);
          cu::dropout_forward(dy.ptr(), dx.ptr(), n, p, seed, off);
          cu::dropout_backward(dg.ptr(), dx.ptr(), n, p, seed, off);
          auto y = download(dy, r, "y");
          auto g = download(dg, r, "dx");
          compare_exact(r, "y", y.data(), ref.data(), n);
          compare_exact(r, "dx", g.data(), refb.data(), n);
        }
    return std::string("n 1..1M, offsets 0..2^33+2, p .1 .5 .9 0 1");
  });
}

// -------------------------------------------------------------------------------------------- attention
struct AttnCase {
  int64_t B, H, N, M, D, Dv;
  bool causal;
  int64_t window;
  int mask;            // 0 none, 1 i32, 2 f32 (with a NaN: masked)
  bool pad_last_batch; // every key of the last batch masked: its rows see nothing (out 0, stats +inf)
};

std::vector<AttnCase> attention_cases() {
  return {
      {1, 1, 1, 1, 64, 64, false, 0, 0, false},
      {2, 3, 7, 129, 64, 64, true, 0, 0, false},         // N < M, causal (bottom-right)
      {1, 2, 129, 129, 128, 128, true, 0, 1, false},     // uneven against 32 / 64 tiles, i32 padding
      {2, 1, 200, 77, 32, 48, false, 0, 2, true},        // N > M, D != Dv, f32 mask, a fully padded batch
      {1, 2, 300, 300, 128, 128, true, 50, 0, false},    // sliding window
      {2, 2, 65, 65, 3, 5, false, 20, 1, false},         // window without causal, tiny head dims
      {1, 1, 100, 40, 64, 64, true, 0, 0, false},        // causal with N > M: the first 60 rows see nothing
      {2, 2, 130, 190, 128, 128, false, 0, 1, true},     // padding on the tensor-core path
      {1, 1, 64, 64, 200, 256, false, 0, 0, false},      // the largest head dims
  };
}

std::vector<float> round_to(DType dt, const std::vector<float>& x, std::vector<uint16_t>* bits) {
  if (dt == DType::F32) return x;
  bits->resize(x.size());
  cpu::cast(bits->data(), dt, x.data(), DType::F32, static_cast<int64_t>(x.size()));
  std::vector<float> back(x.size());
  cpu::cast(back.data(), DType::F32, bits->data(), dt, static_cast<int64_t>(x.size()));
  return back;
}

double max_abs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v)
    if (std::isfinite(x)) m = std::max(m, double(std::fabs(x)));
  return m;
}

void attention_check(DType dt, bool out_half) {
  const char* dn = dt == DType::F32 ? "f32" : dt == DType::BF16 ? "bf16" : "f16";
  const std::string name = std::string("attention ") + dn + (out_half ? " (out " + std::string(dn) + ")" : "");
  check(name + " forward", [&](Result& r) {
    std::string paths;
    for (const AttnCase& c : attention_cases()) {
      const int64_t nq = c.B * c.H * c.N * c.D, nk = c.B * c.H * c.M * c.D, nv = c.B * c.H * c.M * c.Dv;
      const int64_t no = c.B * c.H * c.N * c.Dv, ns = c.B * c.H * c.N * 2;
      std::vector<uint16_t> qh, kh, vh;
      auto q = round_to(dt, randn(nq), &qh), k = round_to(dt, randn(nk), &kh), v = round_to(dt, randn(nv), &vh);
      std::vector<int32_t> mi;
      std::vector<float> mf;
      if (c.mask) {
        auto bits = randint(c.B * c.M, 0, 3);   // about one key in four masked
        for (int64_t j = 0; j < c.B * c.M; j++) {
          const bool hide = bits[j] == 0 || (c.pad_last_batch && j >= (c.B - 1) * c.M);
          mi.push_back(hide ? 7 : 0);
          mf.push_back(hide ? (j % 5 == 0 ? NAN : 1.5f) : 0.0f);
        }
      }
      const void* hq = dt == DType::F32 ? static_cast<const void*>(q.data()) : qh.data();
      const void* hk = dt == DType::F32 ? static_cast<const void*>(k.data()) : kh.data();
      const void* hv = dt == DType::F32 ? static_cast<const void*>(v.data()) : vh.data();
      const void* hm = c.mask == 1 ? static_cast<const void*>(mi.data()) : c.mask == 2 ? mf.data() : nullptr;
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
      const DType odt = out_half ? dt : DType::F32;
      std::vector<float> ref_out(no), ref_stats(ns);
      std::vector<uint16_t> ref_out_h(out_half ? no : 0);
      cpu::attention_forward(out_half ? static_cast<void*>(ref_out_h.data()) : ref_out.data(), odt, ref_stats.data(),
                             hq, hk, hv, dt, hm, c.mask == 1, c.B, c.H, c.N, c.M, c.D, c.Dv, scale, c.causal, c.window);
      if (out_half) cpu::cast(ref_out.data(), DType::F32, ref_out_h.data(), dt, no);
      // device copies
      DBuf<float> dqf, dkf, dvf;
      DBuf<uint16_t> dqh, dkh, dvh;
      const void *gq, *gk, *gv;
      if (dt == DType::F32) {
        dqf = upload(q); dkf = upload(k); dvf = upload(v);
        gq = dqf.ptr(); gk = dkf.ptr(); gv = dvf.ptr();
      } else {
        dqh = upload(qh); dkh = upload(kh); dvh = upload(vh);
        gq = dqh.ptr(); gk = dkh.ptr(); gv = dvh.ptr();
      }
      DBuf<int32_t> gmi;
      DBuf<float> gmf;
      const void* gm = nullptr;
      if (c.mask == 1) { gmi = upload(mi); gm = gmi.ptr(); }
      if (c.mask == 2) { gmf = upload(mf); gm = gmf.ptr(); }
      auto gstats = poisoned<float>(ns);
      std::vector<float> out(no);
      const std::string path = cu::attention_forward_path(dt, c.D, c.Dv, gq, gk, gv);
      if (paths.find(path) == std::string::npos) paths += (paths.empty() ? "" : "+") + path;
      if (out_half) {
        auto gout = poisoned<uint16_t>(no);
        cu::attention_forward(gout.ptr(), odt, gstats.ptr(), gq, gk, gv, dt, gm, c.mask == 1, c.B, c.H, c.N, c.M, c.D,
                              c.Dv, scale, c.causal, c.window);
        auto oh = download(gout, r, "out");
        cpu::cast(out.data(), DType::F32, oh.data(), dt, no);
      } else {
        auto gout = poisoned<float>(no);
        cu::attention_forward(gout.ptr(), odt, gstats.ptr(), gq, gk, gv, dt, gm, c.mask == 1, c.B, c.H, c.N, c.M, c.D,
                              c.Dv, scale, c.causal, c.window);
        out = download(gout, r, "out");
      }
      auto stats = download(gstats, r, "stats");
      // f32 paths: f32 arithmetic in another order (rtol 1e-5, atol 1e-5 of the output's scale); the tensor-core
      // path: q . k on the tensor cores then scaled, P kept to ~16 bits (1e-4); a half output: one rounding of
      // the half type apart at most (2^-8 bf16, 2^-11 f16, relative).
      const bool tc = path == "wmma";
      double rt = tc ? 1e-4 : 1e-5;
      if (out_half) rt = dt == DType::BF16 ? 1.0 / 128 : 1.0 / 1024;
      compare(r, "out", out.data(), ref_out.data(), no, rt, (tc ? 1e-4 : 1e-5) * std::max(1.0, max_abs(ref_out)));
      compare(r, "stats", stats.data(), ref_stats.data(), ns, tc ? 1e-4 : 1e-5, tc ? 1e-4 : 1e-5);
    }
    return "9 shapes, masks, windows; path " + paths;
  });
  if (out_half) return;
  check(name + " backward", [&](Result& r) {
    std::string paths;
    for (const AttnCase& c : attention_cases()) {
      const int64_t nq = c.B * c.H * c.N * c.D, nk = c.B * c.H * c.M * c.D, nv = c.B * c.H * c.M * c.Dv;
      const int64_t no = c.B * c.H * c.N * c.Dv, ns = c.B * c.H * c.N * 2;
      std::vector<uint16_t> qh, kh, vh;
      auto q = round_to(dt, randn(nq), &qh), k = round_to(dt, randn(nk), &kh), v = round_to(dt, randn(nv), &vh);
      auto dout = randn(no);
      std::vector<int32_t> mi;
      if (c.mask) {
        auto bits = randint(c.B * c.M, 0, 3);
        for (int64_t j = 0; j < c.B * c.M; j++)
          mi.push_back(bits[j] == 0 || (c.pad_last_batch && j >= (c.B - 1) * c.M) ? 1 : 0);
      }
      const void* hq = dt == DType::F32 ? static_cast<const void*>(q.data()) : qh.data();
      const void* hk = dt == DType::F32 ? static_cast<const void*>(k.data()) : kh.data();
      const void* hv = dt == DType::F32 ? static_cast<const void*>(v.data()) : vh.data();
      const void* hm = c.mask ? mi.data() : nullptr;
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.D));
      std::vector<float> ref_out(no), stats(ns), rdq(nq), rdk(nk), rdv(nv);
      cpu::attention_forward(ref_out.data(), DType::F32, stats.data(), hq, hk, hv, dt, hm, true, c.B, c.H, c.N, c.M,
                             c.D, c.Dv, scale, c.causal, c.window);
      cpu::attention_backward(rdq.data(), rdk.data(), rdv.data(), dout.data(), hq, hk, hv, stats.data(), dt, hm, true,
                              c.B, c.H, c.N, c.M, c.D, c.Dv, scale, c.causal, c.window);
      DBuf<float> dqf, dkf, dvf;
      DBuf<uint16_t> dqh, dkh, dvh;
      const void *gq, *gk, *gv;
      if (dt == DType::F32) {
        dqf = upload(q); dkf = upload(k); dvf = upload(v);
        gq = dqf.ptr(); gk = dkf.ptr(); gv = dvf.ptr();
      } else {
        dqh = upload(qh); dkh = upload(kh); dvh = upload(vh);
        gq = dqh.ptr(); gk = dkh.ptr(); gv = dvh.ptr();
      }
      DBuf<int32_t> gm;
      if (c.mask) gm = upload(mi);
      // The CPU's stats feed the GPU backward, so that this check sees the backward kernels alone.
      auto gstats = upload(stats), gdout = upload(dout);
      auto gdq = poisoned<float>(nq), gdk = poisoned<float>(nk), gdv = poisoned<float>(nv);
      cu::attention_backward(gdq.ptr(), gdk.ptr(), gdv.ptr(), gdout.ptr(), gq, gk, gv, gstats.ptr(), dt,
                             c.mask ? gm.ptr() : nullptr, true, c.B, c.H, c.N, c.M, c.D, c.Dv, scale, c.causal,
                             c.window);
      auto dq = download(gdq, r, "dq"), dk = download(gdk, r, "dk"), dv = download(gdv, r, "dv");
      const std::string path = cu::attention_backward_path(dt, c.D, c.Dv, gq, gk, gv);
      if (paths.find(path) == std::string::npos) paths += (paths.empty() ? "" : "+") + path;
      // f32 kernels (inputs widened exactly): sums of up to max(N, M) terms in another order (and other tiles
      // than the CPU's), so the absolute budget grows with sqrt(length) past 128. The bf16 tensor-core kernels
      // carry dout, P and dS as two bf16 terms (~16 bits): 1e-4.
      const double tol = path == "wmma" ? 1e-4 : 1e-5;
      const double grow = std::max(1.0, std::sqrt(double(std::max(c.N, c.M)) / 128.0));
      compare(r, "dq", dq.data(), rdq.data(), nq, tol, tol * grow * std::max(1.0, max_abs(rdq)));
      compare(r, "dk", dk.data(), rdk.data(), nk, tol, tol * grow * std::max(1.0, max_abs(rdk)));
      compare(r, "dv", dv.data(), rdv.data(), nv, tol, tol * grow * std::max(1.0, max_abs(rdv)));
    }
    return "9 shapes, masks, windows; path " + paths;
  });
}

void test_attention() {
  attention_check(DType::F32, false);
  attention_check(DType::BF16, false);
  attention_check(DType::F16, false);
  attention_check(DType::BF16, true);
  attention_check(DType::F16, true);
}

// ---------------------------------------------------------------------------------------------- infoNCE
// The scores s (a . b) of unit rows carry an absolute rounding of about s sqrt(D) 2^-24 / sqrt(D) per order of
// summation, and every probability inherits it as a relative error: 1e-5, widened for large s and D.
double infonce_tol(float logit_scale, int64_t D) {
  const double s = std::min(std::exp(double(logit_scale)), 100.0);
  return 1e-5 * std::max(1.0, s * std::sqrt(double(D)) / 100.0);
}

void test_infonce() {
  struct IC {
    int64_t N, D;
    float logit_scale;
    int grads;   // bit 0 da, bit 1 db, bit 2 dlogit_scale
  };
  const IC cases[] = {{1, 8, 2.6593f, 7},  {7, 3, 2.6593f, 7},   {65, 64, 2.6593f, 7}, {300, 129, 4.0f, 7},
                      {1000, 520, 5.0f, 7}, {129, 64, 3.0f, 1},   {129, 64, 3.0f, 6},   {200, 32, 1.0f, 4}};
  check("infonce_forward", [&](Result& r) {
    for (const IC& c : cases) {
      auto a = randn(c.N * c.D), b = randn(c.N * c.D);
      for (int64_t i = 0; i < c.N; i++) {   // unit rows, as CLIP's normalised embeddings
        double na = 0, nb = 0;
        for (int64_t k = 0; k < c.D; k++) na += a[i * c.D + k] * a[i * c.D + k], nb += b[i * c.D + k] * b[i * c.D + k];
        for (int64_t k = 0; k < c.D; k++) a[i * c.D + k] /= std::sqrt(na), b[i * c.D + k] /= std::sqrt(nb);
      }
      float ref_loss = 0;
      std::vector<float> ref_stats(4 * c.N);
      cpu::infonce_forward(&ref_loss, ref_stats.data(), a.data(), b.data(), c.N, c.D, c.logit_scale);
      auto ga = upload(a), gb = upload(b);
      auto gl = poisoned<float>(1), gs = poisoned<float>(4 * c.N);
      cu::infonce_forward(gl.ptr(), gs.ptr(), ga.ptr(), gb.ptr(), c.N, c.D, c.logit_scale);
      auto loss = download(gl, r, "loss"), stats = download(gs, r, "stats");
      const double tol = infonce_tol(c.logit_scale, c.D);
      compare(r, "loss", loss.data(), &ref_loss, 1, tol, 1e-6);
      compare(r, "stats", stats.data(), ref_stats.data(), 4 * c.N, tol, tol);
    }
    return std::string("N 1..1000, D 3..520 (> 512), scale 14.3..100");
  });
  check("infonce_backward", [&](Result& r) {
    for (const IC& c : cases) {
      auto a = randn(c.N * c.D), b = randn(c.N * c.D);
      for (int64_t i = 0; i < c.N; i++) {
        double na = 0, nb = 0;
        for (int64_t k = 0; k < c.D; k++) na += a[i * c.D + k] * a[i * c.D + k], nb += b[i * c.D + k] * b[i * c.D + k];
        for (int64_t k = 0; k < c.D; k++) a[i * c.D + k] /= std::sqrt(na), b[i * c.D + k] /= std::sqrt(nb);
      }
      float ref_loss = 0;
      std::vector<float> stats(4 * c.N), rda(c.N * c.D), rdb(c.N * c.D);
      cpu::infonce_forward(&ref_loss, stats.data(), a.data(), b.data(), c.N, c.D, c.logit_scale);
      const float dloss = 0.75f;
      float rds = 0;
      const bool wa = c.grads & 1, wb = c.grads & 2, ws = c.grads & 4;
      cpu::infonce_backward(wa ? rda.data() : nullptr, wb ? rdb.data() : nullptr, ws ? &rds : nullptr, &dloss, a.data(),
                            b.data(), stats.data(), c.N, c.D, c.logit_scale);
      auto ga = upload(a), gb = upload(b), gst = upload(stats), gdl = upload(std::vector<float>{dloss});
      auto gda = poisoned<float>(c.N * c.D), gdb = poisoned<float>(c.N * c.D), gds = poisoned<float>(1);
      cu::infonce_backward(wa ? gda.ptr() : nullptr, wb ? gdb.ptr() : nullptr, ws ? gds.ptr() : nullptr, gdl.ptr(),
                           ga.ptr(), gb.ptr(), gst.ptr(), c.N, c.D, c.logit_scale);
      // Sums over N tiles in another order; the gradients' scale is ~s/N, hence the atol relative to it.
      const double tol = infonce_tol(c.logit_scale, c.D);
      if (wa) {
        auto da = download(gda, r, "da");
        compare(r, "da", da.data(), rda.data(), c.N * c.D, tol, tol * max_abs(rda) + 1e-12);
      }
      if (wb) {
        auto db = download(gdb, r, "db");
        compare(r, "db", db.data(), rdb.data(), c.N * c.D, tol, tol * max_abs(rdb) + 1e-12);
      }
      if (ws) {
        auto ds = download(gds, r, "dlogit_scale");
        compare(r, "dlogit_scale", ds.data(), &rds, 1, 10 * tol, 1e-6);
      }
    }
    return std::string("N 1..1000, D 3..520, subsets of da/db/ds");
  });
}

// ---------------------------------------------------------------------------- kernels for the addon dispatch
// fill_i32, arange, rand_*, pow_scalar, where, the reduction helpers, layout, index_select / gather, SGD and the
// in-place helpers. Pure copies and selections are compared bit for bit; arithmetic that follows the CPU operation
// by operation (SGD, scale/add, the column-walk scatter-adds) gets a tight tolerance, and the check line also
// says how many elements were not bit-identical ("bits: k differ"), which should be 0.

template <typename T>
size_t count_bit_diffs(const T* x, const T* ref, size_t n) {
  size_t k = 0;
  for (size_t i = 0; i < n; i++) k += std::memcmp(&x[i], &ref[i], sizeof(T)) != 0;
  return k;
}

void compare_scalar(Result& r, const char* what, double x, double ref, double rtol, double atol) {
  const double err = std::fabs(x - ref);
  if (err == 0) return;
  double used = err / (atol + rtol * std::fabs(ref));
  if (std::isnan(used)) used = INFINITY;
  if (used > r.worst) {
    r.worst = used;
    r.max_abs = err;
  }
  if (used > 1.0 && r.note.empty()) {
    char buf[200];
    std::snprintf(buf, sizeof buf, "%s = %.17g, cpu %.17g", what, x, ref);
    r.note = buf;
  }
}

template <typename T>
std::vector<T> random_bits(size_t n) {   // opaque words for the copies: every pattern (NaNs included)
  std::uniform_int_distribution<uint32_t> d;
  std::vector<T> v(n);
  for (auto& x : v) {
    const uint32_t b = d(g_rng);
    std::memcpy(&x, &b, sizeof(T));
  }
  return v;
}

template <typename T>
void expect_untouched(Result& r, const char* what, const std::vector<T>& got) {
  const T s = sentinel<T>();
  for (const T& v : got)
    if (std::memcmp(&v, &s, sizeof(T)) != 0) {
      r.fail(std::string(what) + " written despite a bad index");
      return;
    }
}

std::string bits_note(size_t differ) { return "; bits: " + std::to_string(differ) + " differ"; }

const int64_t kFillSizes[] = {1, 7, 129, 1000, 4097, int64_t(1) << 20 | 3};

void test_creation_more() {
  check("fill_i32", [](Result& r) {
    for (int64_t n : kFillSizes)
      for (size_t shift : {size_t(0), size_t(1), size_t(3)}) {
        const int32_t value = randint(1, INT32_MIN, INT32_MAX)[0];
        std::vector<int32_t> ref(n);
        cpu::fill_i32(ref.data(), n, value);
        auto d = poisoned<int32_t>(n, shift);
        cu::fill_i32(d.ptr(), n, value);
        auto got = download(d, r, "out");
        compare_exact(r, "out", got.data(), ref.data(), n);
      }
    return std::string("n=1 7 129 1000 4097 1M+3 x3 offsets");
  });
  check("arange_f32", [](Result& r) {
    for (int64_t n : kFillSizes) {
      const double ranges[][2] = {{0.0, 1.0}, {1e6 + 0.3, 0.1}, {-5.0, -0.37}, {double(randn(1)[0]), 1e-3},
                                  {0.5, 1.0 / 3.0}};
      for (auto& a : ranges) {
        std::vector<float> ref(n);
        cpu::arange_f32(ref.data(), n, a[0], a[1]);
        auto d = poisoned<float>(n, n % 2);
        cu::arange_f32(d.ptr(), n, a[0], a[1]);
        auto got = download(d, r, "out");
        compare_exact(r, "out", got.data(), ref.data(), n);
      }
    }
    return std::string("n=1..1M+3, 5 (start, step)");
  });
  check("arange_i32", [](Result& r) {
    for (int64_t n : kFillSizes) {
      const int64_t ranges[][2] = {{0, 1}, {-1000, 7}, {INT32_MAX - 5, 1}, {int64_t(1) << 40, -3}, {17, 0}};
      for (auto& a : ranges) {   // the third and fourth leave the i32 range: both wrap modulo 2^32
        std::vector<int32_t> ref(n);
        cpu::arange_i32(ref.data(), n, a[0], a[1]);
        auto d = poisoned<int32_t>(n);
        cu::arange_i32(d.ptr(), n, a[0], a[1]);
        auto got = download(d, r, "out");
        compare_exact(r, "out", got.data(), ref.data(), n);
      }
    }
    return std::string("n=1..1M+3, 5 (start, step), wrapping");
  });
}

void test_random() {
  const int64_t ns[] = {1, 2, 7, 129, 1000, 4097, int64_t(1) << 20};
  const uint64_t offsets[] = {0, 1, 2, 3, 5, (uint64_t(1) << 33) + 2, (uint64_t(1) << 40) + 1};
  check("rand_uniform", [&](Result& r) {
    for (int64_t n : ns)
      for (uint64_t off : offsets) {
        if (n > 4097 && off != 3) continue;
        const uint64_t seed = g_rng();
        const float lo = randn(1)[0], hi = lo + std::fabs(randn(1, 3.0f)[0]) + 0.01f;
        std::vector<float> ref(n);
        cpu::rand_uniform(ref.data(), n, seed, off, lo, hi);
        auto d = poisoned<float>(n, off % 3);
        cu::rand_uniform(d.ptr(), n, seed, off, lo, hi);
        auto got = download(d, r, "out");
        compare_exact(r, "out", got.data(), ref.data(), n);
      }
    {   // [0, 1): the raw stream
      const int64_t n = 4097;
      std::vector<float> ref(n);
      cpu::rand_uniform(ref.data(), n, 0, 0, 0.0f, 1.0f);
      auto d = poisoned<float>(n);
      cu::rand_uniform(d.ptr(), n, 0, 0, 0.0f, 1.0f);
      auto got = download(d, r, "out");
      compare_exact(r, "out [0,1)", got.data(), ref.data(), n);
    }
    return std::string("n 1..1M, offsets 0..2^40+1, seeds random");
  });
  check("rand_normal", [&](Result& r) {
    size_t differ = 0, total = 0;
    for (int64_t n : ns)
      for (uint64_t off : offsets) {
        if (n > 4097 && off != 3) continue;
        const uint64_t seed = g_rng();
        const float mean = randn(1)[0], stddev = std::fabs(randn(1, 2.0f)[0]) + 0.05f;
        std::vector<float> ref(n);
        cpu::rand_normal(ref.data(), n, seed, off, mean, stddev);
        auto d = poisoned<float>(n, off % 3);
        cu::rand_normal(d.ptr(), n, seed, off, mean, stddev);
        auto got = download(d, r, "out");
        // The device's double log / sin / cos may move z = r cos(theta) by one f32 ulp (|z| < 6.8 < 8):
        // stddev 2^-20 absolute, and the last rounding of mean + stddev z, 2^-22 relative.
        compare(r, "out", got.data(), ref.data(), n, std::ldexp(1.0, -22), stddev * std::ldexp(1.0, -20));
        differ += count_bit_diffs(got.data(), ref.data(), n);
        total += n;
      }
    return "n 1..1M, offsets 0..2^40+1" + bits_note(differ) + " of " + std::to_string(total);
  });
}

void test_pow_where() {
  check("pow_scalar", [](Result& r) {
    // The CPU's special cases are exact (IEEE sqrt and division on both sides); other p go through powf.
    const float special[] = {1.0f, 2.0f, 3.0f, 0.5f, -0.5f, -1.0f, -2.0f};
    const float general[] = {1.7f, -0.3f, 2.5f, 0.0f, 4.0f, -3.0f};
    for (int64_t n : kElemSizes) {
      for (float p : special) {
        auto x = randn(n, 2.0f);   // negatives too: sqrt gives NaN on both sides
        std::vector<float> ref(n);
        cpu::pow_scalar(ref.data(), x.data(), n, p);
        auto dx = upload(x);
        auto dy = poisoned<float>(n);
        cu::pow_scalar(dy.ptr(), dx.ptr(), n, p);
        auto got = download(dy, r, "y");
        // NaN payloads may differ between the CPU's and the device's sqrt of a negative: compare as floats.
        compare(r, "y (special p)", got.data(), ref.data(), n, 0.0, 0.0);
      }
      for (float p : general) {
        auto x = uniform(n, 0.05f, 3.0f);
        std::vector<float> ref(n);
        cpu::pow_scalar(ref.data(), x.data(), n, p);
        auto dx = upload(x);
        auto dy = poisoned<float>(n);
        cu::pow_scalar(dy.ptr(), dx.ptr(), n, p);
        auto got = download(dy, r, "y");
        compare(r, "y", got.data(), ref.data(), n, 1e-5, 1e-6);
      }
    }
    return std::string("n=1..100003, p 1 2 3 .5 -.5 -1 -2 exact; 6 others");
  });
  for (bool ci : {false, true}) {
    check(std::string("where_forward (cond ") + (ci ? "i32)" : "f32)"), [&](Result& r) {
      const int64_t shapes[][2] = {{1, 1}, {7, 33}, {129, 7}, {1000, 257}, {4097, 3}};
      for (auto& s : shapes) {
        const int64_t R = s[0], C = s[1];
        struct Case {
          std::vector<int64_t> shape, cs, as, bs;
          int64_t nc, na, nb;
        };
        const std::vector<Case> cases = {
            {{R, C}, {C, 1}, {C, 1}, {C, 1}, R * C, R * C, R * C},
            {{R, C}, {0, 1}, {1, 0}, {0, 0}, C, R, 1},             // cond a row, a a column, b a scalar
            {{R, C}, {1, R}, {C, 1}, {0, 1}, R * C, R * C, C},     // cond read transposed
            {{3, R, C}, {R * C, C, 1}, {0, 1, 0}, {0, C, 1}, 3 * R * C, R, R * C},
            {{2, 1, R, 1, C}, {0, 0, C, 0, 1}, {R * C, 0, C, 0, 1}, {1, 0, 0, 0, 0}, R * C, 2 * R * C, 2},
        };
        for (const Case& c : cases) {
          int64_t n = 1;
          for (auto d : c.shape) n *= d;
          auto a = randn(c.na), b = randn(c.nb);
          std::vector<float> condf(c.nc);
          std::vector<int32_t> condi(c.nc);
          const float fvals[] = {0.0f, 1.0f, -0.0f, NAN, 2.5f, -INFINITY};
          const int32_t ivals[] = {0, 1, -7, 0, INT32_MIN};
          for (int64_t k = 0; k < c.nc; k++) {
            condf[k] = fvals[g_rng() % 6];
            condi[k] = ivals[g_rng() % 5];
          }
          const void* hc = ci ? static_cast<const void*>(condi.data()) : condf.data();
          const int nd = static_cast<int>(c.shape.size());
          std::vector<float> ref(n);
          cpu::where_forward(ref.data(), hc, ci, a.data(), b.data(), nd, c.shape.data(), c.cs.data(), c.as.data(),
                             c.bs.data());
          auto da = upload(a), db = upload(b);
          auto dcf = upload(condf);
          auto dci = upload(condi);
          const void* gc = ci ? static_cast<const void*>(dci.ptr()) : dcf.ptr();
          auto dout = poisoned<float>(n);
          cu::where_forward(dout.ptr(), gc, ci, da.ptr(), db.ptr(), nd, c.shape.data(), c.cs.data(), c.as.data(),
                            c.bs.data());
          auto got = download(dout, r, "out");
          compare_exact(r, "out", got.data(), ref.data(), n);
        }
      }
      {   // no axes (one element) and an empty axis (nothing written)
        auto a = randn(1), b = randn(1);
        std::vector<float> condf = {1.0f};
        std::vector<int32_t> condi = {0};
        const void* hc = ci ? static_cast<const void*>(condi.data()) : condf.data();
        float ref = 0;
        cpu::where_forward(&ref, hc, ci, a.data(), b.data(), 0, nullptr, nullptr, nullptr, nullptr);
        auto da = upload(a), db = upload(b);
        auto dcf = upload(condf);
        auto dci = upload(condi);
        const void* gc = ci ? static_cast<const void*>(dci.ptr()) : dcf.ptr();
        auto dout = poisoned<float>(1);
        cu::where_forward(dout.ptr(), gc, ci, da.ptr(), db.ptr(), 0, nullptr, nullptr, nullptr, nullptr);
        auto got = download(dout, r, "out (0-d)");
        compare_exact(r, "out (0-d)", got.data(), &ref, 1);
        const int64_t shape[] = {3, 0, 4}, st[] = {4, 4, 1};
        auto dempty = poisoned<float>(0);
        cu::where_forward(dempty.ptr(), gc, ci, da.ptr(), db.ptr(), 3, shape, st, st, st);
        download(dempty, r, "out (empty)");
      }
      return std::string("(R,C)=1x1..4097x3, 5 broadcasts, 0-d, empty");
    });
  }
}

void test_reduce_helpers() {
  const int64_t shapes[][3] = {{1, 1, 1}, {7, 129, 1}, {129, 1000, 1}, {1000, 7, 1}, {7, 129, 33},
                               {2, 1000, 7}, {1, 4097, 3}, {4097, 2, 5}, {3, 0, 2}, {0, 5, 3}};
  check("broadcast_axis", [&](Result& r) {
    for (auto& s : shapes)
      for (float scale : {1.0f, 0.37f, -3.0f}) {
        const int64_t outer = s[0], len = s[1], inner = s[2];
        auto dy = randn(outer * inner);
        std::vector<float> ref(outer * len * inner);
        cpu::broadcast_axis(ref.data(), dy.data(), outer, len, inner, scale);
        auto ddy = upload(dy);
        auto ddx = poisoned<float>(outer * len * inner);
        cu::broadcast_axis(ddx.ptr(), ddy.ptr(), outer, len, inner, scale);
        auto got = download(ddx, r, "dx");
        compare_exact(r, "dx", got.data(), ref.data(), got.size());
      }
    return std::string("10 shapes, len 0..4097, scale 1 .37 -3");
  });
  check("scatter_arg", [&](Result& r) {
    for (auto& s : shapes) {
      const int64_t outer = s[0], len = s[1], inner = s[2];
      auto dy = randn(outer * inner);
      auto arg = randint(outer * inner, 0, static_cast<int32_t>(std::max<int64_t>(len - 1, 0)));
      for (auto& a : arg)   // about one in ten outside [0, len): skipped
        if (g_rng() % 10 == 0) a = (g_rng() & 1) ? -1 : static_cast<int32_t>(len);
      std::vector<float> ref(outer * len * inner);
      cpu::scatter_arg(ref.data(), dy.data(), arg.data(), outer, len, inner);
      auto ddy = upload(dy);
      auto darg = upload(arg);
      auto ddx = poisoned<float>(outer * len * inner);
      cu::scatter_arg(ddx.ptr(), ddy.ptr(), darg.ptr(), outer, len, inner);
      auto got = download(ddx, r, "dx");
      compare_exact(r, "dx", got.data(), ref.data(), got.size());
    }
    return std::string("10 shapes, len 0..4097, bad indices skipped");
  });
  check("sum_squares", [](Result& r) {
    const int64_t ns[] = {0, 1, 7, 129, 4095, 4097, 1000003, int64_t(3) << 22};
    for (int64_t n : ns)
      for (size_t shift : {size_t(0), size_t(1)}) {
        auto x = randn(n, 3.0f, 0.5f);
        const double ref = cpu::sum_squares(x.data(), n);
        auto dx = upload(x, n, shift);
        const double got = cu::sum_squares(dx.ptr(), n);
        // Both sum exact products in double, in different orders: n eps relative at worst.
        compare_scalar(r, "sum", got, ref, 1e-15 * (static_cast<double>(n) + 1), 0.0);
      }
    return std::string("n=0 1 7 129 4095 4097 1M 12.6M x2 offsets");
  });
  check("all_finite", [](Result& r) {
    const int64_t ns[] = {0, 1, 7, 129, 4097, 1000003};
    const float bad[] = {NAN, INFINITY, -INFINITY};
    for (int64_t n : ns)
      for (int k = -1; k < 3; k++)
        for (int where = 0; where < 3; where++) {
          auto x = randn(n, 1e30f);   // large but finite
          if (k >= 0 && n > 0) x[where == 0 ? 0 : where == 1 ? n - 1 : g_rng() % n] = bad[k];
          const bool ref = cpu::all_finite(x.data(), n);
          auto dx = upload(x, n, where);
          const bool got = cu::all_finite(dx.ptr(), n);
          if (got != ref)
            r.fail("n=" + std::to_string(n) + ": " + (got ? "true" : "false") + ", cpu " + (ref ? "true" : "false"));
        }
    return std::string("n=0..1M, NaN/+inf/-inf first, last, anywhere");
  });
}

// ------------------------------------------------------------------------------------------------ layout
struct StridedCase {
  const char* what;
  std::vector<int64_t> shape, stride;
};

std::vector<StridedCase> strided_cases() {
  std::vector<StridedCase> v;
  const int64_t rc[][2] = {{1, 1}, {7, 33}, {8, 8}, {33, 65}, {129, 257}, {1000, 7}, {4097, 3}};
  for (auto& s : rc) {
    const int64_t R = s[0], C = s[1];
    v.push_back({"contiguous", {R, C}, {C, 1}});
    v.push_back({"transpose", {R, C}, {1, R}});              // x is (C, R)
    v.push_back({"row broadcast", {R, C}, {0, 1}});
    v.push_back({"column broadcast", {R, C}, {1, 0}});
    v.push_back({"strided", {R, C}, {2 * C + 3, 2}});
    v.push_back({"size-1 axes", {1, R, 1, C}, {999, C, 5, 1}});
  }
  v.push_back({"permute 0213", {2, 3, 37, 16}, {37 * 3 * 16, 16, 3 * 16, 1}});   // (B, N, H, D) -> (B, H, N, D)
  v.push_back({"batched transpose", {5, 40, 70}, {2800, 1, 40}});
  v.push_back({"batched transpose 2", {4, 3, 33, 17}, {3 * 33 * 17, 33 * 17, 1, 33}});
  v.push_back({"permute 210", {3, 50, 20}, {1, 60, 3}});
  v.push_back({"0-d", {}, {}});
  v.push_back({"empty", {3, 0, 5}, {5, 5, 1}});
  return v;
}

template <typename T>
void strided_case(Result& r, const StridedCase& c, size_t oshift, size_t ishift) {
  int64_t n = 1, nx = 1;
  for (size_t d = 0; d < c.shape.size(); d++) {
    n *= c.shape[d];
    if (c.shape[d] > 0) nx += (c.shape[d] - 1) * c.stride[d];
  }
  if (n == 0) nx = 1;
  auto x = random_bits<T>(nx);
  std::vector<T> ref(n);
  const int nd = static_cast<int>(c.shape.size());
  cpu::copy_strided(ref.data(), x.data(), nd, c.shape.data(), c.stride.data(), sizeof(T));
  auto dx = upload(x, 0, ishift);
  auto dout = poisoned<T>(n, oshift);
  cu::copy_strided(dout.ptr(), dx.ptr(), nd, c.shape.data(), c.stride.data(), sizeof(T));
  auto got = download(dout, r, c.what);
  compare_exact(r, c.what, got.data(), ref.data(), n);
}

struct SliceCase {
  int64_t outer, xlen, inner, start, len;
};
const SliceCase kSlices[] = {{1, 1, 1, 0, 1},      {7, 10, 33, 3, 5},   {129, 20, 1, 7, 13}, {3, 4097, 3, 1, 4000},
                             {1000, 7, 2, 6, 1},   {2, 5, 8, 0, 5},     {5, 9, 4, 2, 0},     {1, 100, 7, 3, 50},
                             {33, 16, 4, 4, 8},    {0, 4, 4, 1, 2}};

void test_layout() {
  for (int es : {4, 2}) {
    const std::string sz = es == 4 ? " (elsize 4)" : " (elsize 2)";
    check("copy_strided" + sz, [&](Result& r) {
      for (const StridedCase& c : strided_cases())
        for (auto sh : {std::pair<size_t, size_t>{0, 0}, {1, 3}}) {
          if (es == 4) strided_case<uint32_t>(r, c, sh.first, sh.second);
          else strided_case<uint16_t>(r, c, sh.first, sh.second);
        }
      return std::string("7 (R,C) x 6 layouts, permutes, 0-d, empty");
    });
    check("slice_copy" + sz, [&](Result& r) {
      for (const SliceCase& s : kSlices)
        for (size_t shift : {size_t(0), size_t(1)}) {
          const int64_t nx = s.outer * s.xlen * s.inner, n = s.outer * s.len * s.inner;
          auto run = [&](auto tag) {
            using T = decltype(tag);
            auto x = random_bits<T>(nx);
            std::vector<T> ref(n);
            cpu::slice_copy(ref.data(), x.data(), s.outer, s.xlen, s.inner, s.start, s.len, es);
            auto dx = upload(x, nx, shift);
            auto dout = poisoned<T>(n, 1 - shift);
            cu::slice_copy(dout.ptr(), dx.ptr(), s.outer, s.xlen, s.inner, s.start, s.len, es);
            auto got = download(dout, r, "out");
            compare_exact(r, "out", got.data(), ref.data(), n);
          };
          if (es == 4) run(uint32_t{}); else run(uint16_t{});
        }
      return std::string("10 (outer,xlen,inner,start,len), 2 alignments");
    });
    check("slice_assign" + sz, [&](Result& r) {
      for (const SliceCase& s : kSlices)
        for (size_t shift : {size_t(0), size_t(1)}) {
          const int64_t nout = s.outer * s.xlen * s.inner, n = s.outer * s.len * s.inner;
          auto run = [&](auto tag) {
            using T = decltype(tag);
            auto x = random_bits<T>(n), out0 = random_bits<T>(nout);
            std::vector<T> ref = out0;
            cpu::slice_assign(ref.data(), x.data(), s.outer, s.xlen, s.inner, s.start, s.len, es);
            auto dx = upload(x, n, shift);
            auto dout = upload(out0, nout, 1 - shift);
            cu::slice_assign(dout.ptr(), dx.ptr(), s.outer, s.xlen, s.inner, s.start, s.len, es);
            auto got = download(dout, r, "out");
            compare_exact(r, "out", got.data(), ref.data(), nout);
          };
          if (es == 4) run(uint32_t{}); else run(uint16_t{});
        }
      return std::string("10 (outer,outlen,inner,start,len), 2 alignments");
    });
  }
  check("layout (bad elsize throws)", [](Result& r) {
    for (int64_t es : {int64_t(1), int64_t(8)}) {
      bool threw = false;
      try {
        cu::slice_copy(nullptr, nullptr, 1, 1, 1, 0, 1, es);
      } catch (const std::invalid_argument&) {
        threw = true;
      }
      if (!threw) r.fail("slice_copy: no exception for elsize " + std::to_string(es));
    }
    return std::string("elsize 1, 8");
  });
  check("slice_add_backward", [](Result& r) {
    size_t differ = 0;
    for (const SliceCase& s : kSlices) {
      const int64_t nx = s.outer * s.xlen * s.inner, n = s.outer * s.len * s.inner;
      auto dx0 = randn(nx), dy = randn(n);
      std::vector<float> ref = dx0;
      cpu::slice_add_backward(ref.data(), dy.data(), s.outer, s.xlen, s.inner, s.start, s.len);
      auto ddx = upload(dx0, nx), ddy = upload(dy, n);
      cu::slice_add_backward(ddx.ptr(), ddy.ptr(), s.outer, s.xlen, s.inner, s.start, s.len);
      auto got = download(ddx, r, "dx");
      compare(r, "dx", got.data(), ref.data(), nx, 1e-6, 1e-7);   // one f32 addition: identical in practice
      differ += count_bit_diffs(got.data(), ref.data(), nx);
    }
    return "10 (outer,xlen,inner,start,len)" + bits_note(differ);
  });
}

// ---------------------------------------------------------------------------------------------- indexing
void test_index_ops() {
  // (outer, xlen, inner, nidx): indices repeat (nidx > xlen); the backward's two paths both appear: the column
  // walk (outer * inner >= 32768 or nidx <= 64) and atomics (the rest).
  const int64_t sel[][4] = {{1, 1, 1, 1},     {7, 10, 33, 5},     {3, 50, 1, 129},  {129, 20, 768, 7},
                            {1, 1000, 64, 4097}, {2, 7, 3, 0},    {64, 30, 600, 100}, {0, 5, 3, 4},
                            {5, 3, 2, 1000}};
  for (int es : {4, 2}) {
    check(std::string("index_select (elsize ") + std::to_string(es) + ")", [&](Result& r) {
      for (auto& s : sel)
        for (size_t shift : {size_t(0), size_t(1)}) {
          const int64_t outer = s[0], xlen = s[1], inner = s[2], nidx = s[3];
          const int64_t nx = outer * xlen * inner, n = outer * nidx * inner;
          auto idx = randint(nidx, 0, static_cast<int32_t>(xlen - 1));
          auto run = [&](auto tag) {
            using T = decltype(tag);
            auto x = random_bits<T>(nx);
            std::vector<T> ref(n);
            const int64_t rbad = cpu::index_select(ref.data(), x.data(), idx.data(), outer, xlen, inner, nidx, es);
            auto dx = upload(x, nx, shift);
            auto di = upload(idx, nidx);
            auto dout = poisoned<T>(n, shift);
            const int64_t bad = cu::index_select(dout.ptr(), dx.ptr(), di.ptr(), outer, xlen, inner, nidx, es);
            if (bad != rbad || bad != -1) r.fail("returned " + std::to_string(bad) + " for valid indices");
            auto got = download(dout, r, "out");
            compare_exact(r, "out", got.data(), ref.data(), n);
          };
          if (es == 4) run(uint32_t{}); else run(uint16_t{});
        }
      for (int64_t outer : {int64_t(3), int64_t(0)}) {   // bad indices: the first position, nothing written
        const int64_t xlen = 20, inner = 7, nidx = 129, nx = outer * xlen * inner, n = outer * nidx * inner;
        auto idx = randint(nidx, 0, static_cast<int32_t>(xlen - 1));
        idx[40] = static_cast<int32_t>(xlen);
        idx[77] = -1;
        auto x = random_bits<uint32_t>(nx);
        std::vector<uint32_t> ref(n);
        const int64_t rbad = cpu::index_select(ref.data(), x.data(), idx.data(), outer, xlen, inner, nidx, 4);
        auto dx = upload(x, nx);
        auto di = upload(idx);
        auto dout = poisoned<uint32_t>(n);
        const int64_t bad = cu::index_select(dout.ptr(), dx.ptr(), di.ptr(), outer, xlen, inner, nidx, 4);
        if (bad != rbad || bad != 40)
          r.fail("bad index: returned " + std::to_string(bad) + ", cpu " + std::to_string(rbad) + ", want 40");
        expect_untouched(r, "out", download(dout, r, "out"));
      }
      return std::string("9 (outer,xlen,inner,nidx), 2 alignments, bad");
    });
  }
  check("index_select_backward", [&](Result& r) {
    size_t differ = 0;
    for (auto& s : sel) {
      const int64_t outer = s[0], xlen = s[1], inner = s[2], nidx = s[3];
      const int64_t nx = outer * xlen * inner, n = outer * nidx * inner;
      const bool walk = outer * inner >= 32768 || nidx <= 64;
      auto idx = randint(nidx, -1, static_cast<int32_t>(xlen));   // a few out of range: skipped
      auto dx0 = randn(nx), dy = randn(n);
      std::vector<float> ref = dx0;
      cpu::index_select_backward(ref.data(), dy.data(), idx.data(), outer, xlen, inner, nidx);
      auto ddx = upload(dx0, nx), ddy = upload(dy, n);
      auto di = upload(idx, nidx);
      cu::index_select_backward(ddx.ptr(), ddy.ptr(), di.ptr(), outer, xlen, inner, nidx);
      auto got = download(ddx, r, "dx");
      // The walk adds in the CPU's order (should be bit-identical); atomics in any order: about nidx / xlen terms
      // per element, partial sums growing like their square root, so the rounding grows about linearly.
      const double per_row = xlen > 0 ? double(nidx) / double(xlen) + 1 : 1;
      compare(r, "dx", got.data(), ref.data(), nx, walk ? 1e-6 : 1e-5, 1e-6 * per_row);
      if (walk) differ += count_bit_diffs(got.data(), ref.data(), nx);
    }
    return "9 shapes, walk + atomic" + bits_note(differ) + " (walk)";
  });
  // (outer, xlen, inner, glen)
  const int64_t gat[][4] = {{1, 1, 1, 1},     {7, 10, 33, 5},  {129, 1000, 1, 3}, {4, 7, 3, 200},
                            {1, 50000, 1, 4097}, {64, 30, 600, 7}, {3, 5, 0, 4},  {2, 9, 40000, 3}};
  check("gather", [&](Result& r) {
    for (auto& s : gat) {
      const int64_t outer = s[0], xlen = s[1], inner = s[2], glen = s[3];
      const int64_t nx = outer * xlen * inner, n = outer * glen * inner;
      auto x = randn(nx);
      auto idx = randint(n, 0, static_cast<int32_t>(xlen - 1));
      std::vector<float> ref(n);
      const int64_t rbad = cpu::gather(ref.data(), x.data(), idx.data(), outer, xlen, inner, glen);
      auto dx = upload(x, nx);
      auto di = upload(idx, n);
      auto dout = poisoned<float>(n);
      const int64_t bad = cu::gather(dout.ptr(), dx.ptr(), di.ptr(), outer, xlen, inner, glen);
      if (bad != rbad || bad != -1) r.fail("returned " + std::to_string(bad) + " for valid indices");
      auto got = download(dout, r, "out");
      compare_exact(r, "out", got.data(), ref.data(), n);
    }
    {   // bad indices: the first flat position, nothing written
      const int64_t outer = 4, xlen = 9, inner = 5, glen = 6, n = outer * glen * inner;
      auto x = randn(outer * xlen * inner);
      auto idx = randint(n, 0, static_cast<int32_t>(xlen - 1));
      idx[33] = -2;
      idx[90] = static_cast<int32_t>(xlen);
      std::vector<float> ref(n);
      const int64_t rbad = cpu::gather(ref.data(), x.data(), idx.data(), outer, xlen, inner, glen);
      auto dx = upload(x);
      auto di = upload(idx);
      auto dout = poisoned<float>(n);
      const int64_t bad = cu::gather(dout.ptr(), dx.ptr(), di.ptr(), outer, xlen, inner, glen);
      if (bad != rbad || bad != 33)
        r.fail("bad index: returned " + std::to_string(bad) + ", cpu " + std::to_string(rbad) + ", want 33");
      expect_untouched(r, "out", download(dout, r, "out"));
    }
    return std::string("8 (outer,xlen,inner,glen), bad");
  });
  check("gather_backward", [&](Result& r) {
    size_t differ = 0;
    for (auto& s : gat) {
      const int64_t outer = s[0], xlen = s[1], inner = s[2], glen = s[3];
      const int64_t nx = outer * xlen * inner, n = outer * glen * inner;
      const bool walk = outer * inner >= 32768 || glen <= 64;
      auto idx = randint(n, -1, static_cast<int32_t>(xlen));   // a few out of range: skipped
      auto dx0 = randn(nx), dy = randn(n);
      std::vector<float> ref = dx0;
      cpu::gather_backward(ref.data(), dy.data(), idx.data(), outer, xlen, inner, glen);
      auto ddx = upload(dx0, nx), ddy = upload(dy, n);
      auto di = upload(idx, n);
      cu::gather_backward(ddx.ptr(), ddy.ptr(), di.ptr(), outer, xlen, inner, glen);
      auto got = download(ddx, r, "dx");
      const double per_row = double(glen) / double(xlen) + 1;
      compare(r, "dx", got.data(), ref.data(), nx, walk ? 1e-6 : 1e-5, 1e-6 * per_row);
      if (walk) differ += count_bit_diffs(got.data(), ref.data(), nx);
    }
    return "8 shapes, walk + atomic" + bits_note(differ) + " (walk)";
  });
}

// ---------------------------------------------------------------------------------------------- optimizer
void test_sgd_helpers() {
  struct Sgd {
    double lr, momentum, dampening, wd;
    bool nesterov, first, buf;
  };
  const Sgd variants[] = {{0.1, 0.0, 0.0, 0.0, false, false, false},    // plain SGD, no buffer
                          {0.05, 0.0, 0.3, 0.01, false, false, true},   // momentum 0: the buffer is untouched
                          {1e-3, 0.9, 0.0, 0.0, false, true, true},     // first step: buf = g
                          {1e-3, 0.9, 0.1, 0.01, false, false, true},
                          {0.01, 0.95, 0.0, 5e-4, true, false, true}};  // nesterov
  check("sgd_step", [&](Result& r) {
    size_t differ = 0;
    for (int64_t n : kElemSizes)
      for (const Sgd& v : variants) {
        auto p = randn(n), g = randn(n), buf = randn(n, 0.1f);
        std::vector<float> rp = p, rb = buf;
        cpu::sgd_step(rp.data(), v.buf ? rb.data() : nullptr, g.data(), n, v.lr, v.momentum, v.dampening, v.wd,
                      v.nesterov, v.first);
        auto dp = upload(p), dg = upload(g), db = upload(buf);
        cu::sgd_step(dp.ptr(), v.buf ? db.ptr() : nullptr, dg.ptr(), n, v.lr, v.momentum, v.dampening, v.wd,
                     v.nesterov, v.first);
        auto gp = download(dp, r, "p"), gb = download(db, r, "buf");
        compare(r, "p", gp.data(), rp.data(), n, 1e-6, 1e-7);
        compare(r, "buf", gb.data(), rb.data(), n, 1e-6, 1e-7);
        differ += count_bit_diffs(gp.data(), rp.data(), n) + count_bit_diffs(gb.data(), rb.data(), n);
      }
    return "n=1..100003, 5 variants" + bits_note(differ);
  });
  check("scale_inplace / add_inplace", [](Result& r) {
    size_t differ = 0;
    for (int64_t n : kElemSizes) {
      auto x = randn(n), y = randn(n);
      const float s = randn(1)[0], alpha = randn(1)[0];
      std::vector<float> rs = x, ra = x;
      cpu::scale_inplace(rs.data(), n, s);
      cpu::add_inplace(ra.data(), y.data(), n, alpha);
      auto dxs = upload(x), dxa = upload(x), dy = upload(y);
      cu::scale_inplace(dxs.ptr(), n, s);
      cu::add_inplace(dxa.ptr(), dy.ptr(), n, alpha);
      auto gs = download(dxs, r, "x (scale)"), ga = download(dxa, r, "x (add)");
      compare(r, "x (scale)", gs.data(), rs.data(), n, 1e-6, 1e-7);
      compare(r, "x (add)", ga.data(), ra.data(), n, 1e-6, 1e-7);
      differ += count_bit_diffs(gs.data(), rs.data(), n) + count_bit_diffs(ga.data(), ra.data(), n);
    }
    return "n=1..100003" + bits_note(differ);
  });
}

// -------------------------------------------------------------------------------------------------- bench
struct Dev {   // a plain device buffer for the benchmarks (random contents, written on the device)
  void* p = nullptr;
  explicit Dev(size_t bytes) : p(cu::malloc(bytes)) {}
  ~Dev() {
    try {
      cu::free(p);
    } catch (...) {
    }
  }
  float* f() const { return static_cast<float*>(p); }
};

void fill_random(float* d, int64_t n) {   // random values without a device RNG: a random block, replicated
  const int64_t block = std::min<int64_t>(n, 1 << 20);
  auto v = randn(block);
  for (int64_t i = 0; i < n; i += block) cu::memcpy_h2d(d + i, v.data(), sizeof(float) * std::min(block, n - i));
}

void bench_line(const char* what, const char* size, double ms, double amount, const char* unit) {
  std::printf("bench %-34s %-22s %9.3f ms  %9.1f %s\n", what, size, ms, amount, unit);
  std::fflush(stdout);
}

void run_bench() {
  std::printf("benchmarks (median of timed runs after warm-up; bandwidth counts bytes read + written)\n");
  const int W = 3, I = 10;
  {   // GEMM 4096^3
    const int64_t S = 4096;
    Dev a(S * S * 4), b(S * S * 4), c(S * S * 4), ah(S * S * 2), bh(S * S * 2);
    fill_random(a.f(), S * S);
    fill_random(b.f(), S * S);
    cu::cast(ah.p, DType::BF16, a.p, DType::F32, S * S);
    cu::cast(bh.p, DType::BF16, b.p, DType::F32, S * S);
    const double flop = 2.0 * S * S * S;
    double ms = cu::time_ms([&] { cu::matmul_tiled(c.f(), a.f(), b.f(), S, S, S, false, false, 0, nullptr, nullptr, nullptr, 1.0f, 0.0f); }, W, I);
    bench_line("matmul f32 (tiled)", "4096^3", ms, flop / ms / 1e9, "TFLOP/s");
    if (cu::have_cublas()) {
      ms = cu::time_ms([&] { cu::matmul(c.f(), a.f(), b.f(), S, S, S, false, false, 0, nullptr, nullptr, nullptr, 1.0f, 0.0f); }, W, I);
      bench_line("matmul f32 (cuBLAS)", "4096^3", ms, flop / ms / 1e9, "TFLOP/s");
    }
    ms = cu::time_ms([&] { cu::matmul_half(c.f(), ah.p, bh.p, DType::BF16, S, S, S, false, false, 0, nullptr, nullptr, nullptr, 1.0f, 0.0f, cu::GemmImpl::TensorCore); }, W, I);
    bench_line("matmul bf16 (wmma)", "4096^3", ms, flop / ms / 1e9, "TFLOP/s");
    ms = cu::time_ms([&] { cu::matmul_half(c.f(), ah.p, bh.p, DType::BF16, S, S, S, true, true, 0, nullptr, nullptr, nullptr, 1.0f, 0.0f, cu::GemmImpl::TensorCore); }, W, I);
    bench_line("matmul bf16 (wmma, a^T b^T)", "4096^3", ms, flop / ms / 1e9, "TFLOP/s");
    if (cu::have_cublas()) {
      ms = cu::time_ms([&] { cu::matmul_half(c.f(), ah.p, bh.p, DType::BF16, S, S, S, false, false, 0, nullptr, nullptr, nullptr, 1.0f, 0.0f, cu::GemmImpl::Cublas); }, W, I);
      bench_line("matmul bf16 (cuBLAS)", "4096^3", ms, flop / ms / 1e9, "TFLOP/s");
    }
  }
  {   // casts over 64M elements against a device-to-device copy of the same bytes
    const int64_t n = int64_t(64) << 20;
    Dev f(n * 4), h(n * 2), f2(n * 4);
    fill_random(f.f(), n);
    double ms = cu::time_ms([&] { cu::memcpy_d2d(f2.p, f.p, n * 4); }, W, I);
    bench_line("memcpy d2d (f32 bytes)", "64M x 4 B", ms, 2.0 * n * 4 / ms / 1e6, "GB/s");
    ms = cu::time_ms([&] { cu::memcpy_d2d(h.p, f.p, n * 2); }, W, I);
    bench_line("memcpy d2d (half bytes)", "64M x 2 B", ms, 2.0 * n * 2 / ms / 1e6, "GB/s");
    const double bytes = n * 6.0;
    ms = cu::time_ms([&] { cu::cast(h.p, DType::BF16, f.p, DType::F32, n); }, W, I);
    bench_line("cast f32->bf16", "64M", ms, bytes / ms / 1e6, "GB/s");
    ms = cu::time_ms([&] { cu::cast(f2.p, DType::F32, h.p, DType::BF16, n); }, W, I);
    bench_line("cast bf16->f32", "64M", ms, bytes / ms / 1e6, "GB/s");
    ms = cu::time_ms([&] { cu::cast(h.p, DType::F16, f.p, DType::F32, n); }, W, I);
    bench_line("cast f32->f16", "64M", ms, bytes / ms / 1e6, "GB/s");
    ms = cu::time_ms([&] { cu::cast(f2.p, DType::F32, h.p, DType::F16, n); }, W, I);
    bench_line("cast f16->f32", "64M", ms, bytes / ms / 1e6, "GB/s");
  }
  {   // softmax and layernorm over 64M elements (16384 rows of 4096), and 262144 rows of 256
    const int64_t shapes[][2] = {{16384, 4096}, {262144, 256}};
    for (auto& s : shapes) {
      const int64_t rows = s[0], C = s[1], n = rows * C;
      Dev x(n * 4), y(n * 4), w(C * 4), b(C * 4), m(rows * 4), r(rows * 4), g(n * 4), dw(C * 4), db(C * 4);
      fill_random(x.f(), n);
      fill_random(g.f(), n);
      fill_random(w.f(), C);
      fill_random(b.f(), C);
      char size[64];
      std::snprintf(size, sizeof size, "%lldx%lld", static_cast<long long>(rows), static_cast<long long>(C));
      double ms = cu::time_ms([&] { cu::softmax_forward(y.f(), x.f(), rows, C, 1, false); }, W, I);
      bench_line("softmax_forward", size, ms, 2.0 * n * 4 / ms / 1e6, "GB/s");
      ms = cu::time_ms([&] { cu::softmax_backward(x.f(), g.f(), y.f(), rows, C, 1, false); }, W, I);
      bench_line("softmax_backward", size, ms, 3.0 * n * 4 / ms / 1e6, "GB/s");
      fill_random(x.f(), n);
      ms = cu::time_ms([&] { cu::layernorm_forward(y.f(), m.f(), r.f(), x.f(), w.f(), b.f(), rows, C, 1e-5f); }, W, I);
      bench_line("layernorm_forward", size, ms, 2.0 * n * 4 / ms / 1e6, "GB/s");
      ms = cu::time_ms([&] { cu::layernorm_backward(y.f(), dw.f(), db.f(), g.f(), x.f(), w.f(), m.f(), r.f(), rows, C); }, W, I);
      bench_line("layernorm_backward", size, ms, 3.0 * n * 4 / ms / 1e6, "GB/s");
    }
  }
  {   // fused attention, B4 H16 N4096 D128 bf16. FLOPs as FlashAttention counts them: forward 4 B H N^2 D, backward
      // 2.5x that (5 GEMMs), causal half of each. fwd+bwd is timed once after one warm-up.
    const int64_t B = 4, H = 16, N = 4096, D = 128, n = B * H * N * D;
    Dev q(n * 4), k(n * 4), v(n * 4), qh(n * 2), kh(n * 2), vh(n * 2), out(n * 2), outf(n * 4), st(B * H * N * 8),
        dq(n * 4), dk(n * 4), dv(n * 4), dout(n * 4);
    fill_random(q.f(), n);
    fill_random(k.f(), n);
    fill_random(v.f(), n);
    fill_random(dout.f(), n);
    cu::cast(qh.p, DType::BF16, q.p, DType::F32, n);
    cu::cast(kh.p, DType::BF16, k.p, DType::F32, n);
    cu::cast(vh.p, DType::BF16, v.p, DType::F32, n);
    const float scale = 1.0f / std::sqrt(float(D));
    for (int causal = 0; causal < 2; causal++) {
      const double fwd_flop = 4.0 * B * H * N * N * D * (causal ? 0.5 : 1.0);
      const char* size = causal ? "B4 H16 N4096 D128 causal" : "B4 H16 N4096 D128";
      double ms = cu::time_ms([&] {
        cu::attention_forward(out.p, DType::BF16, st.f(), qh.p, kh.p, vh.p, DType::BF16, nullptr, false, B, H, N, N, D,
                              D, scale, causal, 0);
      }, W, I);
      char what[64];
      std::snprintf(what, sizeof what, "attention fwd bf16 (%s)", cu::attention_forward_path(DType::BF16, D, D, qh.p, kh.p, vh.p));
      bench_line(what, size, ms, fwd_flop / ms / 1e9, "TFLOP/s");
      ms = cu::time_ms([&] {
        cu::attention_forward(outf.p, DType::F32, st.f(), q.p, k.p, v.p, DType::F32, nullptr, false, B, H, N, N, D, D,
                              scale, causal, 0);
      }, 1, 3);
      bench_line("attention fwd f32", size, ms, fwd_flop / ms / 1e9, "TFLOP/s");
      ms = cu::time_ms([&] {
        cu::attention_forward(out.p, DType::BF16, st.f(), qh.p, kh.p, vh.p, DType::BF16, nullptr, false, B, H, N, N, D,
                              D, scale, causal, 0);
        cu::attention_backward(dq.f(), dk.f(), dv.f(), dout.f(), qh.p, kh.p, vh.p, st.f(), DType::BF16, nullptr, false,
                               B, H, N, N, D, D, scale, causal, 0);
      }, 2, 5);
      std::snprintf(what, sizeof what, "attention fwd+bwd bf16 (%s)", cu::attention_backward_path(DType::BF16, D, D, qh.p, kh.p, vh.p));
      bench_line(what, size, ms, 3.5 * fwd_flop / ms / 1e9, "TFLOP/s");
    }
  }
  {   // InfoNCE N = 65536, D = 512 (f32): forward and backward (da, db, dlogit_scale)
    const int64_t N = 65536, D = 512;
    Dev a(N * D * 4), b(N * D * 4), da(N * D * 4), db(N * D * 4), st(4 * N * 4), loss(4), dl(4), ds(4);
    fill_random(a.f(), N * D);
    fill_random(b.f(), N * D);
    cu::fill_f32(dl.f(), 1, 1.0f);
    const double flop = 2.0 * N * N * D;
    double ms = cu::time_ms([&] { cu::infonce_forward(loss.f(), st.f(), a.f(), b.f(), N, D, 2.6593f); }, 1, 2);
    bench_line("infonce_forward f32", "N65536 D512", ms, 2 * flop / ms / 1e9, "TFLOP/s");
    ms = cu::time_ms([&] {
      cu::infonce_backward(da.f(), db.f(), ds.f(), dl.f(), a.f(), b.f(), st.f(), N, D, 2.6593f);
    }, 1, 2);
    bench_line("infonce_backward f32", "N65536 D512", ms, 4 * flop / ms / 1e9, "TFLOP/s");
  }
}

}  // namespace

int main(int argc, char** argv) {
  bool bench = false;
  uint64_t seed = std::random_device{}() ^ (uint64_t(std::random_device{}()) << 32);
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--bench") bench = true;
    else if (a == "--seed" && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
    else g_filters.push_back(a);
  }
  if (cu::device_count() == 0) {
    std::printf("no CUDA device: skipped (runtime %d, driver %d)\n", cu::runtime_version(), cu::driver_version());
    return 0;
  }
  g_rng.seed(seed);
  try {
    std::printf("device: %s; CUDA runtime %d, driver %d; cuBLAS: %s; CPU reference: %s, %d threads\n",
                cu::device_name().c_str(), cu::runtime_version(), cu::driver_version(),
                cu::have_cublas() ? "yes" : "no", cpu::blas_name(), cpu::num_threads());
  } catch (const std::exception& e) {
    std::printf("device query failed: %s\n", e.what());
    return 1;
  }
  if (bench) {
    try {
      run_bench();
    } catch (const std::exception& e) {
      std::printf("bench failed: %s\n", e.what());
      return 1;
    }
    return 0;
  }
  std::printf("seed %llu (rerun with --seed %llu)\n", static_cast<unsigned long long>(seed),
              static_cast<unsigned long long>(seed));
  test_runtime();
  test_fill();
  test_cast();
  test_unary();
  test_binary();
  test_reduce();
  test_softmax();
  test_layernorm();
  test_cross_entropy();
  test_embedding();
  test_adamw();
  test_matmul();
  test_dropout();
  test_attention();
  test_infonce();
  test_creation_more();
  test_random();
  test_pow_where();
  test_reduce_helpers();
  test_layout();
  test_index_ops();
  test_sgd_helpers();
  try {
    cu::synchronize();
  } catch (const std::exception& e) {
    std::printf("final synchronize failed: %s\n", e.what());
    g_failed++;
  }
  std::printf("%d passed, %d failed\n", g_passed, g_failed);
  return g_failed ? 1 : 0;
}
