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

// out (R, C) = x (C, R)^T for x with row stride xs (elements), in 32 x 32 tiles that stay in L1 both ways.
template <typename T>
void transpose_2d(T* __restrict out, const T* __restrict x, int64_t R, int64_t C, int64_t xs) {
  constexpr int64_t B = 32;
  for (int64_t r0 = 0; r0 < R; r0 += B) {
    int64_t r1 = std::min(R, r0 + B);
    for (int64_t c0 = 0; c0 < C; c0 += B) {
      int64_t c1 = std::min(C, c0 + B);
      for (int64_t r = r0; r < r1; r++)
        for (int64_t c = c0; c < c1; c++) out[r * C + c] = x[c * xs + r];
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
    parallel_for(nmat, std::max<int64_t>(1, kGrainElems / mat), [&](int64_t b, int64_t e) {
      for (int64_t m = b; m < e; m++) transpose_2d(out + m * mat, x + row_offset(v, nd - 2, m), R, C, ls);
    });
    // When one matrix is so big that there are fewer matrices than threads, the loop above ran nearly serially;
    // that is acceptable for a copy (the transpose is memory bound).
    return;
  }
  // Generic: rows of `last` elements; contiguous rows are memcpy'd, strided (or broadcast, stride 0) rows looped.
  const int64_t rows = total / last;
  parallel_for(rows, std::max<int64_t>(1, kGrainElems / last), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const T* src = x + row_offset(v, nd - 1, r);
      T* dst = out + r * last;
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
