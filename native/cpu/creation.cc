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
// Casts are bit-exact with PyTorch's conversions: round to nearest even, overflow to infinity, subnormals exact,
// NaN stays NaN (PyTorch's canonical quiet NaNs: 0x7E00 | sign for f16, 0x7FC0 for bf16). The portable bit
// manipulation below is the reference; f32 <-> f16 / bf16 also have instruction paths picked at load time
// (F16C's vcvtps2ph / vcvtph2ps, AVX-512's wider forms, AVX-512 BF16's vcvtneps2bf16), each patched where the
// instruction and PyTorch disagree (see "cast paths"), and checked bit for bit against the portable code and
// PyTorch's tables in native/test/test_half.cc.
// f32 -> i32 truncates toward zero; NaN and values outside the i32 range give INT32_MIN, which is what
// PyTorch gives on x86 (cvttps2dq) and avoids C++'s undefined behaviour.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "modalab/kernels.h"
#include "parallel.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

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

// ------------------------------------------------------------------------------------------------ cast paths
// The four conversions between f32 and the half types, each as a function over a contiguous range, in one table
// per instruction set. The table is picked once (the best the processor has; MODALAB_CAST_KERNEL=portable|f16c|
// avx512|avx512bf16 forces one, for tests and the benchmarks), and cast_variant() runs any of them by name.
using CastRange = void (*)(void* out, const void* x, int64_t n);   // out (n), x (n)
struct CastPaths {
  const char* name;
  CastRange f32_to_f16, f16_to_f32, f32_to_bf16, bf16_to_f32;
};

void portable_f32_to_f16(void* o, const void* x, int64_t n) {
  convert_range(static_cast<uint16_t*>(o), static_cast<const float*>(x), 0, n, [](float f) { return f32_to_f16(f); });
}
void portable_f16_to_f32(void* o, const void* x, int64_t n) {
  convert_range(static_cast<float*>(o), static_cast<const uint16_t*>(x), 0, n, [](uint16_t h) { return f16_to_f32(h); });
}
void portable_f32_to_bf16(void* o, const void* x, int64_t n) {
  convert_range(static_cast<uint16_t*>(o), static_cast<const float*>(x), 0, n, [](float f) { return f32_to_bf16(f); });
}
void portable_bf16_to_f32(void* o, const void* x, int64_t n) {
  convert_range(static_cast<float*>(o), static_cast<const uint16_t*>(x), 0, n, [](uint16_t h) { return bf16_to_f32(h); });
}
constexpr CastPaths kPortable{"portable", portable_f32_to_f16, portable_f16_to_f32, portable_f32_to_bf16,
                              portable_bf16_to_f32};

#if defined(__x86_64__) && defined(__GNUC__)
#define MODALAB_X86_CASTS 1
// GCC 12 warns inside its own AVX-512 headers (the _mm512_undefined_* idiom reads as uninitialised).
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// F16C (8 lanes, with AVX2). vcvtps2ph rounds to nearest even from the immediate (not MXCSR), overflows to
// infinity and writes f16 subnormals exactly, as PyTorch does; it differs only on NaN, where it keeps the top of
// the payload (0x7FFFFFFF -> 0x7FFF) while PyTorch writes 0x7E00 with the sign. So NaN lanes are redone by the
// portable function, which costs nothing when there are none. vcvtph2ps is exact and quiets signalling NaNs the
// way PyTorch's conversion does (payload << 13, quiet bit set).
__attribute__((target("avx2,f16c"))) void f16c_f32_to_f16(void* out, const void* in, int64_t n) {
  uint16_t* o = static_cast<uint16_t*>(out);
  const float* x = static_cast<const float*>(in);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    const int nan = _mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    if (nan)
      for (int l = 0; l < 8; l++)
        if ((nan >> l) & 1) o[i + l] = f32_to_f16(x[i + l]);
  }
  for (; i < n; i++) o[i] = f32_to_f16(x[i]);
}
__attribute__((target("avx2,f16c"))) void f16c_f16_to_f32(void* out, const void* in, int64_t n) {
  float* o = static_cast<float*>(out);
  const uint16_t* x = static_cast<const uint16_t*>(in);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(o + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + i))));
  for (; i < n; i++) o[i] = f16_to_f32(x[i]);
}
constexpr CastPaths kF16C{"f16c", f16c_f32_to_f16, f16c_f16_to_f32, portable_f32_to_bf16, portable_bf16_to_f32};

#define MODALAB_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,f16c,avx2,fma")))
#define MODALAB_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,f16c,avx2,fma")))

// Full vectors load and store without a mask; only the tail (fewer than 16 lanes) is masked, instead of a scalar
// loop. (Masked stores of whole vectors measured 3x slower on Zen 5 once the output no longer fits in cache.)
MODALAB_AVX512 inline __mmask16 tail16(int64_t left) { return static_cast<__mmask16>((1u << left) - 1u); }

// The portable f32 -> bf16 rounding on 16 lanes: (x + 0x7FFF + lsb) >> 16, NaN -> 0x7FC0.
MODALAB_AVX512 inline __m256i bf16_round16(__m512 v) {
  const __m512i x = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(x, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// AVX-512 (16 lanes): the F16C conversions at full width (NaN lanes patched the same way, in registers), and
// bf16 by the portable integer rounding written out in AVX-512 (the compiler's AVX2 clone is 8 lanes).
MODALAB_AVX512 inline __m256i f16_round16(__m512 v) {
  __m256i h = _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  if (nan) {   // 0x7E00 with the sign, as PyTorch writes every NaN
    const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(_mm512_castps_si512(v), 16), _mm512_set1_epi32(0x8000));
    h = _mm256_mask_blend_epi16(nan, h, _mm512_cvtepi32_epi16(_mm512_or_si512(sign, _mm512_set1_epi32(0x7E00))));
  }
  return h;
}
MODALAB_AVX512 inline __m512 bf16_widen16(__m256i h) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

// Ranges at least this long (one thread's share of a cast) write with non-temporal stores: an output of
// megabytes would not stay in cache anyway, and streaming it skips reading every line before writing it.
constexpr int64_t kStreamMin = int64_t(1) << 20;

// out (n) 16-bit = round(x (n) f32) with `round` on 16 lanes; and the widening the other way.
template <__m256i (*round)(__m512)>
MODALAB_AVX512 inline void narrow16(uint16_t* o, const float* x, int64_t n) {
  int64_t i = 0;
  if (n >= kStreamMin) {
    // lanes up to the first 32-byte boundary of the output, then aligned streaming stores
    const int64_t head = ((32 - (reinterpret_cast<uintptr_t>(o) & 31)) & 31) / 2;
    if (head && (reinterpret_cast<uintptr_t>(o) & 1) == 0) {
      const __mmask16 k = tail16(head);
      _mm256_mask_storeu_epi16(o, k, round(_mm512_maskz_loadu_ps(k, x)));
      i = head;
    }
    if ((reinterpret_cast<uintptr_t>(o + i) & 31) == 0) {
      for (; i + 16 <= n; i += 16)
        _mm256_stream_si256(reinterpret_cast<__m256i*>(o + i), round(_mm512_loadu_ps(x + i)));
      _mm_sfence();
    }
  }
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + i), round(_mm512_loadu_ps(x + i)));
  if (i < n) {
    const __mmask16 k = tail16(n - i);
    _mm256_mask_storeu_epi16(o + i, k, round(_mm512_maskz_loadu_ps(k, x + i)));
  }
}
template <__m512 (*widen)(__m256i)>
MODALAB_AVX512 inline void widen16(float* o, const uint16_t* x, int64_t n) {
  int64_t i = 0;
  if (n >= kStreamMin) {
    const int64_t head = ((64 - (reinterpret_cast<uintptr_t>(o) & 63)) & 63) / 4;
    if (head && (reinterpret_cast<uintptr_t>(o) & 3) == 0) {
      const __mmask16 k = tail16(head);
      _mm512_mask_storeu_ps(o, k, widen(_mm256_maskz_loadu_epi16(k, x)));
      i = head;
    }
    if ((reinterpret_cast<uintptr_t>(o + i) & 63) == 0) {
      for (; i + 16 <= n; i += 16)
        _mm512_stream_ps(o + i, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))));
      _mm_sfence();
    }
  }
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(o + i, widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i))));
  if (i < n) {
    const __mmask16 k = tail16(n - i);
    _mm512_mask_storeu_ps(o + i, k, widen(_mm256_maskz_loadu_epi16(k, x + i)));
  }
}

MODALAB_AVX512 inline __m512 f16_widen16(__m256i h) { return _mm512_cvtph_ps(h); }

MODALAB_AVX512 void avx512_f32_to_f16(void* out, const void* in, int64_t n) {
  narrow16<f16_round16>(static_cast<uint16_t*>(out), static_cast<const float*>(in), n);
}
MODALAB_AVX512 void avx512_f16_to_f32(void* out, const void* in, int64_t n) {
  widen16<f16_widen16>(static_cast<float*>(out), static_cast<const uint16_t*>(in), n);
}
MODALAB_AVX512 void avx512_f32_to_bf16(void* out, const void* in, int64_t n) {
  narrow16<bf16_round16>(static_cast<uint16_t*>(out), static_cast<const float*>(in), n);
}
MODALAB_AVX512 void avx512_bf16_to_f32(void* out, const void* in, int64_t n) {
  widen16<bf16_widen16>(static_cast<float*>(out), static_cast<const uint16_t*>(in), n);
}
constexpr CastPaths kAVX512{"avx512", avx512_f32_to_f16, avx512_f16_to_f32, avx512_f32_to_bf16, avx512_bf16_to_f32};

// AVX-512 BF16's vcvtneps2bf16 rounds to nearest even like PyTorch, but it treats f32 subnormal inputs as zero
// (PyTorch rounds them into bf16 subnormals: 0x00010000 -> 0x0001) and keeps a NaN's payload (0x7FFFFFFF ->
// 0x7FFF, PyTorch writes 0x7FC0). Those lanes (rare in practice) are redone by the integer rounding.
MODALAB_AVX512_BF16 inline __m256i bf16_convert16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  __m256i h = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
  const __mmask16 subnormal = _mm512_testn_epi32_mask(bits, _mm512_set1_epi32(0x7F800000)) &
                              _mm512_test_epi32_mask(bits, _mm512_set1_epi32(0x007FFFFF));
  const __mmask16 fix = subnormal | _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  if (fix) h = _mm256_mask_blend_epi16(fix, h, bf16_round16(v));
  return h;
}
MODALAB_AVX512_BF16 void avx512bf16_f32_to_bf16(void* out, const void* in, int64_t n) {
  narrow16<bf16_convert16>(static_cast<uint16_t*>(out), static_cast<const float*>(in), n);
}
constexpr CastPaths kAVX512BF16{"avx512bf16", avx512_f32_to_f16, avx512_f16_to_f32, avx512bf16_f32_to_bf16,
                                avx512_bf16_to_f32};

bool cpu_has(const char* feature) {
  __builtin_cpu_init();
  const std::string f = feature;
  if (f == "f16c") return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
  if (f == "avx512") {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c");
  }
  if (f == "avx512bf16") return cpu_has("avx512") && __builtin_cpu_supports("avx512bf16");
  return false;
}
#pragma GCC diagnostic pop
#endif

// The table called `name`, or null when this build or processor has no such path.
const CastPaths* find_cast_paths(const std::string& name) {
  if (name == "portable") return &kPortable;
#ifdef MODALAB_X86_CASTS
  if (name == "f16c" && cpu_has("f16c")) return &kF16C;
  if (name == "avx512" && cpu_has("avx512")) return &kAVX512;
  if (name == "avx512bf16" && cpu_has("avx512bf16")) return &kAVX512BF16;
#endif
  return nullptr;
}

const CastPaths& cast_paths() {
  static const CastPaths* p = [] {
    const char* force = std::getenv("MODALAB_CAST_KERNEL");
    if (force && find_cast_paths(force)) return find_cast_paths(force);
    for (const char* name : {"avx512bf16", "avx512", "f16c"})
      if (const CastPaths* q = find_cast_paths(name)) return q;
    return &kPortable;
  }();
  return *p;
}

// The conversion of paths `p` for (out, x), or null for pairs that have none (they use the portable switch).
CastRange pick(const CastPaths& p, DType out, DType x) {
  if (out == DType::F16 && x == DType::F32) return p.f32_to_f16;
  if (out == DType::F32 && x == DType::F16) return p.f16_to_f32;
  if (out == DType::BF16 && x == DType::F32) return p.f32_to_bf16;
  if (out == DType::F32 && x == DType::BF16) return p.bf16_to_f32;
  return nullptr;
}

void run_cast(CastRange f, void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n) {
  char* o = static_cast<char*>(out);
  const char* in = static_cast<const char*>(x);
  const size_t os = dtype_size(out_dtype), is = dtype_size(x_dtype);
  parallel_for(n, kGrain, [&](int64_t b, int64_t e) { f(o + b * os, in + b * is, e - b); });
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
  if (CastRange f = pick(cast_paths(), out_dtype, x_dtype)) return run_cast(f, out, out_dtype, x, x_dtype, n);
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

const char* cast_path() { return cast_paths().name; }

bool cast_variant(const char* path, void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n) {
  const CastPaths* p = find_cast_paths(path ? path : "");
  if (!p) return false;
  CastRange f = pick(*p, out_dtype, x_dtype);
  if (!f) {
    cast(out, out_dtype, x, x_dtype, n);   // no instruction path for this pair: every variant is the portable one
    return true;
  }
  if (n > 0) run_cast(f, out, out_dtype, x, x_dtype, n);
  return true;
}

}  // namespace cpu
}  // namespace modalab
