// Layout kernels: strided copies (permute, transpose, broadcast), slices and their assignment.
// Elements are moved as opaque 2- or 4-byte words, so one kernel serves every dtype.
// Backward: slice_add_backward accumulates (+=) into dx; every other function overwrites its output (=).
#include <algorithm>
#include <cstring>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"

namespace modalab {
namespace cpu {
namespace {

// Copies under this many elements run on the calling thread.
constexpr int64_t kGrainElems = 1 << 15;

// A view after simplification: size-1 axes dropped and neighbours merged where x is contiguous across them.
struct View {
  std::vector<int64_t> shape, stride;
};

View simplify(int ndim, const int64_t* shape, const int64_t* xstride) {
  View v;
  for (int d = 0; d < ndim; d++) {
    if (shape[d] == 1) continue;
    if (!v.shape.empty() && v.stride.back() == xstride[d] * shape[d]) {
      // Axis d continues the previous one in memory: fold it in (out is contiguous, so this is safe for it too).
      v.shape.back() *= shape[d];
      v.stride.back() = xstride[d];
    } else {
      v.shape.push_back(shape[d]);
      v.stride.push_back(xstride[d]);
    }
  }
  return v;
}

// Element offset in x of the first element of outer row `row`, for the axes [0, nouter) of v.
int64_t row_offset(const View& v, int nouter, int64_t row) {
  int64_t off = 0;
  for (int d = nouter - 1; d >= 0; d--) {
    off += (row % v.shape[d]) * v.stride[d];
    row /= v.shape[d];
  }
  return off;
}

// Rows [r0, r1) of out (R, C) = x (C, R)^T, x with row stride xs (elements). 64 x 64 blocks keep both sides in
// L1; inside them, fixed 8 x 8 tiles (gathered into a local tile, then written row by row) let the compiler
// unroll, and only touch 8 lines at the large stride at a time, below the L1 associativity. Measured on 1024 x 1024
// f32 (Zen 5, one thread): plain 32 x 32 tiles 2.6 GB/s (32 lines at a 4 KB stride share one cache set),
// 16 x 16 3.4, 8 x 8 5.6, 8 x 8 inside 64 x 64 blocks 6 GB/s; reading x contiguously instead was 0.4-1 GB/s.
template <typename T>
void transpose_rows(T* __restrict out, const T* __restrict x, int64_t R, int64_t C, int64_t xs, int64_t r0,
                    int64_t r1) {
  constexpr int64_t B = 64, t = 8;
  for (int64_t rb = r0; rb < r1; rb += B) {
    const int64_t re = std::min(r1, rb + B);
    for (int64_t cb = 0; cb < C; cb += B) {
      const int64_t ce = std::min(C, cb + B);
      for (int64_t rr = rb; rr < re; rr += t) {
        for (int64_t cc = cb; cc < ce; cc += t) {
          if (rr + t <= re && cc + t <= ce) {
            T tile[t][t];
            for (int64_t c = 0; c < t; c++)
              for (int64_t r = 0; r < t; r++) tile[c][r] = x[(cc + c) * xs + rr + r];
            for (int64_t r = 0; r < t; r++)
              for (int64_t c = 0; c < t; c++) out[(rr + r) * C + cc + c] = tile[c][r];
          } else {
            for (int64_t r = rr; r < std::min(re, rr + t); r++)
              for (int64_t c = cc; c < std::min(ce, cc + t); c++) out[r * C + c] = x[c * xs + r];
          }
        }
      }
    }
  }
}

template <typename T>
void copy_strided_t(T* out, const T* x, const View& v) {
  const int nd = static_cast<int>(v.shape.size());
  if (nd == 0) {  // a single element (every axis had size 1)
    out[0] = x[0];
    return;
  }
  int64_t total = 1;
  for (int64_t s : v.shape) total *= s;
  const int64_t last = v.shape[nd - 1], ls = v.stride[nd - 1];
  if (nd == 1 && ls == 1) {  // contiguous after merging
    parallel_for(total, kGrainElems, [&](int64_t b, int64_t e) {
      std::memcpy(out + b, x + b, static_cast<size_t>(e - b) * sizeof(T));
    });
    return;
  }
  // Permutes that swap the last two axes: out's last axis walks x with a stride while out's second-to-last
  // axis is x's contiguous one. A blocked transpose per (R, C) matrix reads and writes whole cache lines.
  if (nd >= 2 && v.stride[nd - 2] == 1 && ls > 1 && v.shape[nd - 2] >= 8 && last >= 8) {
    const int64_t R = v.shape[nd - 2], C = last, mat = R * C;
    const int64_t nmat = total / mat;
    // Work items are 64-row bands of one matrix, so that a single large transpose also spreads over threads.
    const int64_t bands = (R + 63) / 64, items = nmat * bands;
    parallel_for(items, std::max<int64_t>(1, kGrainElems / (64 * C)), [&](int64_t b, int64_t e) {
      for (int64_t w = b; w < e; w++) {
        const int64_t m = w / bands, band = w % bands;
        transpose_rows(out + m * mat, x + row_offset(v, nd - 2, m), R, C, ls, band * 64,
                       std::min(R, band * 64 + 64));
      }
    });
    return;
  }
  // Generic: rows of `last` elements; contiguous rows are memcpy'd, strided (or broadcast, stride 0) rows looped.
  const int64_t rows = total / last;
  parallel_for(rows, std::max<int64_t>(1, kGrainElems / last), [&](int64_t b, int64_t e) {
    // The multi-index of row b over the outer axes, then stepped like an odometer (no divisions per row).
    std::vector<int64_t> ix(static_cast<size_t>(nd), 0);
    for (int64_t r = b, d = nd - 2; d >= 0; d--) {
      ix[static_cast<size_t>(d)] = r % v.shape[static_cast<size_t>(d)];
      r /= v.shape[static_cast<size_t>(d)];
    }
    int64_t off = row_offset(v, nd - 1, b);
    for (int64_t r = b; r < e; r++) {
      const T* src = x + off;
      T* dst = out + r * last;
      for (int d = nd - 2; d >= 0; d--) {
        off += v.stride[static_cast<size_t>(d)];
        if (++ix[static_cast<size_t>(d)] < v.shape[static_cast<size_t>(d)]) break;
        off -= v.stride[static_cast<size_t>(d)] * v.shape[static_cast<size_t>(d)];
        ix[static_cast<size_t>(d)] = 0;
      }
      if (ls == 1) {
        std::memcpy(dst, src, static_cast<size_t>(last) * sizeof(T));
      } else if (ls == 0) {
        std::fill(dst, dst + last, src[0]);
      } else {
        for (int64_t j = 0; j < last; j++) dst[j] = src[j * ls];
      }
    }
  });
}

// Copy `rows` blocks of `row` bytes between two strided byte layouts.
void copy_rows(char* out, int64_t ostride, const char* x, int64_t xstride, int64_t rows, int64_t row) {
  parallel_for(rows, std::max<int64_t>(1, (kGrainElems * 4) / std::max<int64_t>(row, 1)), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) std::memcpy(out + r * ostride, x + r * xstride, static_cast<size_t>(row));
  });
}

}  // namespace

void copy_strided(void* out, const void* x, int ndim, const int64_t* shape, const int64_t* xstride,
                  int64_t elsize) {
  for (int d = 0; d < ndim; d++)
    if (shape[d] == 0) return;
  View v = simplify(ndim, shape, xstride);
  if (elsize == 2) {
    copy_strided_t(static_cast<uint16_t*>(out), static_cast<const uint16_t*>(x), v);
  } else {
    copy_strided_t(static_cast<uint32_t*>(out), static_cast<const uint32_t*>(x), v);
  }
}

void slice_copy(void* out, const void* x, int64_t outer, int64_t xlen, int64_t inner, int64_t start, int64_t len,
                int64_t elsize) {
  if (outer == 0 || len == 0 || inner == 0) return;
  copy_rows(static_cast<char*>(out), len * inner * elsize,
            static_cast<const char*>(x) + start * inner * elsize, xlen * inner * elsize, outer, len * inner * elsize);
}

void slice_assign(void* out, const void* x, int64_t outer, int64_t outlen, int64_t inner, int64_t start,
                  int64_t len, int64_t elsize) {
  if (outer == 0 || len == 0 || inner == 0) return;
  copy_rows(static_cast<char*>(out) + start * inner * elsize, outlen * inner * elsize,
            static_cast<const char*>(x), len * inner * elsize, outer, len * inner * elsize);
}

void slice_add_backward(float* dx, const float* dy, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                        int64_t len) {
  const int64_t row = len * inner;  // one outer block of dy; contiguous in dx as well
  if (outer == 0 || row == 0) return;
  parallel_for(outer, std::max<int64_t>(1, kGrainElems / row), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; o++) {
      float* __restrict d = dx + (o * xlen + start) * inner;
      const float* __restrict s = dy + o * row;
      for (int64_t i = 0; i < row; i++) d[i] += s[i];
    }
  });
}

}  // namespace cpu
}  // namespace modalab
