// Creation kernels: fills, ranges, counter-based random numbers (Philox4x32-10), and dtype casts.
//
// Random numbers. Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11) maps a
// 128-bit counter and a 64-bit key to four 32-bit words. Element i of a request (seed, offset) reads word
// (offset + i) % 4 of the block with counter (offset + i) / 4 (low 64 bits; the high 64 bits are zero) and key
// = seed. So an element depends only on (seed, offset + i): never on the thread count or the chunking, and the
// CUDA backend can reproduce the same stream.
//   uniform: the word's top 24 bits times 2^-24, in [0, 1) (every value is an exact float);
//   normal:  Box-Muller on the two words of the element's pair {2k, 2k+1} within its block, computed in double
//            (u1 = (w0 + 1/2) 2^-32, u2 = w1 2^-32); the even lane takes r cos(theta), the odd lane r sin(theta).
// Dropout (elementwise.cc) regenerates its mask from rand_uniform, so "keep iff u >= p" reads this stream.
//
// Casts are portable bit manipulation, bit-exact with PyTorch's conversions: round to nearest even, overflow
// to infinity, subnormals exact, NaN stays NaN (PyTorch's canonical quiet NaNs: 0x7E00 | sign for f16, 0x7FC0
// for bf16).
// f32 -> i32 truncates toward zero; NaN and values outside the i32 range give INT32_MIN, which is what
// PyTorch gives on x86 (cvttps2dq) and avoids C++'s undefined behaviour.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "modalab/kernels.h"
#include "parallel.h"

// Hot loops are compiled for AVX2 and for baseline x86-64 and picked at load time (see elementwise.cc).
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 12
#define MODALAB_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MODALAB_SIMD_CLONES
#endif

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;       // elements below which a fill or cast runs inline
constexpr int64_t kRandGrain = 1 << 13;   // random numbers cost more per element

// ------------------------------------------------------------------------------------------------ Philox
// Philox4x32 with 10 rounds (Random123's constants) for the consecutive counters ctr0 .. ctr0 + nblocks - 1:
// words (nblocks * 4). Written as a plain loop over blocks so that the compiler runs several blocks per vector.
MODALAB_SIMD_CLONES void philox_blocks(uint32_t* words, uint64_t seed, uint64_t ctr0, int64_t nblocks) {
  const uint32_t key0 = static_cast<uint32_t>(seed), key1 = static_cast<uint32_t>(seed >> 32);
  for (int64_t b = 0; b < nblocks; b++) {
    const uint64_t ctr = ctr0 + static_cast<uint64_t>(b);
    uint32_t c0 = static_cast<uint32_t>(ctr), c1 = static_cast<uint32_t>(ctr >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = key0, k1 = key1;
    for (int r = 0; r < 10; r++) {
      const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
      const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
      const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
      const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
      c1 = static_cast<uint32_t>(p1);
      c3 = static_cast<uint32_t>(p0);
      c0 = n0;
      c2 = n2;
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    words[4 * b + 0] = c0;
    words[4 * b + 1] = c1;
    words[4 * b + 2] = c2;
    words[4 * b + 3] = c3;
  }
}

// words (n) = the stream's words at positions pos .. pos + n - 1 (word p is lane p % 4 of block p / 4).
void stream_words(uint32_t* words, int64_t n, uint64_t seed, uint64_t pos) {
  constexpr int64_t kBlocks = 128;
  uint32_t buf[4 * kBlocks];
  int64_t i = 0;
  while (i < n) {
    const uint64_t p = pos + static_cast<uint64_t>(i);
    const int64_t lane = static_cast<int64_t>(p & 3);
    const int64_t nb = std::min<int64_t>(kBlocks, (n - i + lane + 3) / 4);
    philox_blocks(buf, seed, p >> 2, nb);
    const int64_t take = std::min<int64_t>(n - i, 4 * nb - lane);
    std::memcpy(words + i, buf + lane, static_cast<size_t>(take) * 4);
    i += take;
  }
}

// out (n) = lo + (hi - lo) * u, u = top 24 bits * 2^-24 (exact in float).
MODALAB_SIMD_CLONES void words_to_uniform(float* out, const uint32_t* w, int64_t n, float lo, float range) {
  for (int64_t i = 0; i < n; i++) out[i] = lo + range * (static_cast<float>(static_cast<int32_t>(w[i] >> 8)) * (1.0f / 16777216.0f));
}

// ------------------------------------------------------------------------------------------------ casts
inline uint32_t bits_of(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float float_of(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }

// c ? a : b as a bit blend: both sides are always computed, so the optimizer cannot sink one (with its float
// arithmetic) into a branch, which would stop the loop from vectorising.
inline uint32_t blend(bool c, uint32_t a, uint32_t b) {
  const uint32_t m = 0u - static_cast<uint32_t>(c);
  return (a & m) | (b & ~m);
}

// f32 -> f16 by letting the FPU round (Maratyszcza's FP16 algorithm, which PyTorch's c10::Half uses, so the
// results are PyTorch's bit for bit): scale |f| so that the f16 rounding point lands on the f32 one, add a power
// of two that fixes the exponent, and read the rounded f16 bits out of the sum. Branch-free, so it vectorises.
// NaN gives 0x7E00 with the sign, as in PyTorch.
inline uint16_t f32_to_f16(float f) {
  const float scale_to_inf = 5.192296858534828e+33f;   // 2^112
  const float scale_to_zero = 7.703719777548943e-34f;  // 2^-110
  float base = (std::fabs(f) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits_of(f);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bits_of(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | blend(shl1_w > 0xFF000000u, 0x7E00u, nonsign));
}

// f16 -> f32, exact (the same algorithm's inverse): normals by rebiasing with a multiply, subnormals by
// subtracting a magic number; infinities and NaNs come out of the multiply (a signalling NaN is quieted).
inline float f16_to_f32(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  const uint32_t sign = w & 0x80000000u;
  const uint32_t two_w = w + w;
  const uint32_t exp_offset = 0xE0u << 23;
  const float exp_scale = 1.925929944387236e-34f;      // 2^-112
  const float normalized = float_of((two_w >> 4) + exp_offset) * exp_scale;
  const uint32_t magic_mask = 126u << 23;
  const float denormalized = float_of((two_w >> 17) | magic_mask) - 0.5f;
  const uint32_t cutoff = 1u << 27;
  return float_of(sign | blend(two_w < cutoff, bits_of(denormalized), bits_of(normalized)));
}

// Round to nearest even by adding 0x7FFF plus the lowest kept bit; NaN gives PyTorch's canonical 0x7FC0.
inline uint16_t f32_to_bf16(float f) {
  const uint32_t x = bits_of(f);
  const uint32_t rounded = (x + 0x7FFFu + ((x >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((x & 0x7FFFFFFFu) > 0x7F800000u ? 0x7FC0u : rounded);
}

inline float bf16_to_f32(uint16_t h) { return float_of(static_cast<uint32_t>(h) << 16); }

// Truncation toward zero. The conversion always runs on an in-range value (so the loop has no branch to
// vectorise around); NaN and values outside (-2^31 - 1, 2^31) give INT32_MIN.
inline int32_t f32_to_i32(float f) {
  const bool in_range = f > -2147483904.0f && f < 2147483648.0f;   // the floats next to -2^31 - 1 and 2^31
  const int32_t v = static_cast<int32_t>(in_range ? f : 0.0f);
  return in_range ? v : std::numeric_limits<int32_t>::min();
}

template <typename Out, typename In, typename Conv>
MODALAB_SIMD_CLONES void convert_range(Out* o, const In* in, int64_t b, int64_t e, Conv conv) {
  for (int64_t i = b; i < e; i++) o[i] = conv(in[i]);
}

template <typename Out, typename In, typename Conv>
void convert(void* out, const void* x, int64_t n, Conv conv) {
  Out* o = static_cast<Out*>(out);
  const In* in = static_cast<const In*>(x);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { convert_range(o, in, b, e, conv); });
}

}  // namespace

// ------------------------------------------------------------------------------------------------ fills
void fill_f32(float* out, int64_t n, float value) {   // out (n)
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = value;
  });
}

void fill_i32(int32_t* out, int64_t n, int32_t value) {   // out (n)
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = value;
  });
}

// start + i * step in double, rounded once to float (what torch.arange computes for float32).
void arange_f32(float* out, int64_t n, double start, double step) {   // out (n)
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++) out[i] = static_cast<float>(start + static_cast<double>(i) * step);
  });
}

// Wraps modulo 2^32 if the range leaves i32 (the TypeScript side checks the range first).
void arange_i32(int32_t* out, int64_t n, int64_t start, int64_t step) {   // out (n)
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; i++)
      out[i] = static_cast<int32_t>(static_cast<uint32_t>(static_cast<uint64_t>(start) +
                                                          static_cast<uint64_t>(i) * static_cast<uint64_t>(step)));
  });
}

// ------------------------------------------------------------------------------------------------ random
void rand_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi) {   // out (n)
  const float range = hi - lo;
  parallel_for(n, kRandGrain, [&](int64_t b, int64_t e) {
    constexpr int64_t kChunk = 1024;
    uint32_t w[kChunk];
    for (int64_t s = b; s < e; s += kChunk) {
      const int64_t cnt = std::min(kChunk, e - s);
      stream_words(w, cnt, seed, offset + static_cast<uint64_t>(s));
      words_to_uniform(out + s, w, cnt, lo, range);
    }
  });
}

// Box-Muller on the pair of words {2q, 2q+1} of the stream: u1 = (w0 + 1/2) 2^-32 in (0, 1), so log(u1) is
// finite, u2 = w1 2^-32; in double. Position 2q takes r cos(theta), 2q+1 takes r sin(theta).
void rand_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float stddev) {   // out (n)
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  parallel_for(n, kRandGrain, [&](int64_t b, int64_t e) {
    constexpr int64_t kChunk = 1024;
    uint32_t w[kChunk + 2];
    for (int64_t s = b; s < e; s += kChunk) {
      const int64_t cnt = std::min(kChunk, e - s);
      const uint64_t p0 = offset + static_cast<uint64_t>(s);
      const uint64_t first = p0 & ~uint64_t(1);            // start at the pair boundary
      const int64_t nw = static_cast<int64_t>((p0 + static_cast<uint64_t>(cnt) - first + 1) & ~uint64_t(1));
      stream_words(w, nw, seed, first);
      for (int64_t k = 0; k < nw; k += 2) {
        const double u1 = (static_cast<double>(w[k]) + 0.5) * (1.0 / 4294967296.0);
        const double u2 = static_cast<double>(w[k + 1]) * (1.0 / 4294967296.0);
        const double r = std::sqrt(-2.0 * std::log(u1));
        const double theta = kTwoPi * u2;
        // positions first + k and first + k + 1, relative to the chunk start
        const int64_t i0 = static_cast<int64_t>(first - p0) + k;
        if (i0 >= 0 && i0 < cnt) out[s + i0] = mean + stddev * static_cast<float>(r * std::cos(theta));
        if (i0 + 1 >= 0 && i0 + 1 < cnt) out[s + i0 + 1] = mean + stddev * static_cast<float>(r * std::sin(theta));
      }
    }
  });
}

// ------------------------------------------------------------------------------------------------ casts
// Every pair of dtypes. Conversions that involve i32 or go between the two half types pass through f32, as
// PyTorch's do (so int -> bf16 rounds twice above 2^24, exactly like torch).
void cast(void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n) {
  if (n <= 0) return;
  if (out_dtype == x_dtype) {
    const size_t bytes = static_cast<size_t>(n) * dtype_size(x_dtype);
    char* o = static_cast<char*>(out);
    const char* in = static_cast<const char*>(x);
    parallel_for(static_cast<int64_t>(bytes), kGrain * 4, [&](int64_t b, int64_t e) {
      std::memmove(o + b, in + b, static_cast<size_t>(e - b));
    });
    return;
  }
  using F = DType;
  auto key = [](F a, F b) { return static_cast<int>(a) * 4 + static_cast<int>(b); };
  switch (key(out_dtype, x_dtype)) {
    case 0 * 4 + 1: return convert<float, uint16_t>(out, x, n, [](uint16_t h) { return f16_to_f32(h); });
    case 0 * 4 + 2: return convert<float, uint16_t>(out, x, n, [](uint16_t h) { return bf16_to_f32(h); });
    case 0 * 4 + 3: return convert<float, int32_t>(out, x, n, [](int32_t v) { return static_cast<float>(v); });
    case 1 * 4 + 0: return convert<uint16_t, float>(out, x, n, [](float f) { return f32_to_f16(f); });
    case 1 * 4 + 2: return convert<uint16_t, uint16_t>(out, x, n, [](uint16_t h) { return f32_to_f16(bf16_to_f32(h)); });
    case 1 * 4 + 3:
      return convert<uint16_t, int32_t>(out, x, n, [](int32_t v) { return f32_to_f16(static_cast<float>(v)); });
    case 2 * 4 + 0: return convert<uint16_t, float>(out, x, n, [](float f) { return f32_to_bf16(f); });
    case 2 * 4 + 1: return convert<uint16_t, uint16_t>(out, x, n, [](uint16_t h) { return f32_to_bf16(f16_to_f32(h)); });
    case 2 * 4 + 3:
      return convert<uint16_t, int32_t>(out, x, n, [](int32_t v) { return f32_to_bf16(static_cast<float>(v)); });
    case 3 * 4 + 0: return convert<int32_t, float>(out, x, n, [](float f) { return f32_to_i32(f); });
    case 3 * 4 + 1: return convert<int32_t, uint16_t>(out, x, n, [](uint16_t h) { return f32_to_i32(f16_to_f32(h)); });
    case 3 * 4 + 2: return convert<int32_t, uint16_t>(out, x, n, [](uint16_t h) { return f32_to_i32(bf16_to_f32(h)); });
    default: return;  // unreachable: the binding validates dtype codes
  }
}

}  // namespace cpu
}  // namespace modalab
