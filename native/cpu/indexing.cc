// Indexing kernels: index_select, gather (torch.gather) and embedding, each with its scatter-add backward.
//
// Forwards check every index before writing anything and return the position of the first bad one (or -1), so
// a bad index leaves the output untouched and the binding can name it. Backwards accumulate (+=) into dx /
// dtable; they skip indices outside the range (the forward has rejected them already, and skipping keeps a
// forged direct call from writing outside dx).
//
// Scatter-adds are deterministic: two indices may name the same row, so the work is split over columns (or over
// independent outer blocks), never over the rows that may collide; every dx element sums its contributions in
// index order whatever the thread count.
#include <algorithm>
#include <cstring>

#include "modalab/kernels.h"
#include "parallel.h"

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrainElems = 1 << 15;

// The first position in idx (n) outside [0, bound), or -1.
int64_t first_bad(const int32_t* idx, int64_t n, int64_t bound) {
  for (int64_t p = 0; p < n; p++)
    if (idx[p] < 0 || idx[p] >= bound) return p;
  return -1;
}

// Split [0, outer) x [0, inner) for a scatter-add: over outer blocks when there are enough of them, else over
// column ranges. fn(o0, o1, i0, i1) owns dx[o0:o1, :, i0:i1] exclusively.
template <typename F>
void scatter_split(int64_t outer, int64_t inner, int64_t work_per_col, F fn) {
  if (outer >= num_threads() * 4 || inner < 64) {
    int64_t per_outer = std::max<int64_t>(1, work_per_col * inner);
    parallel_for(outer, std::max<int64_t>(1, kGrainElems / per_outer),
                 [&](int64_t b, int64_t e) { fn(b, e, 0, inner); });
  } else {
    int64_t per_col = std::max<int64_t>(1, work_per_col * outer);
    // Column chunks of at least 16 floats (a cache line) so that threads never share a line of dx.
    parallel_for(inner, std::max<int64_t>(16, kGrainElems / per_col), [&](int64_t b, int64_t e) { fn(0, outer, b, e); });
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------- index_select
int64_t index_select(void* out, const void* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t nidx, int64_t elsize) {
  int64_t bad = first_bad(idx, nidx, xlen);
  if (bad >= 0) return bad;
  const int64_t row = inner * elsize;  // bytes of one selected slice
  if (outer == 0 || nidx == 0 || row == 0) return -1;
  const char* xs = static_cast<const char*>(x);
  char* os = static_cast<char*>(out);
  parallel_for(outer * nidx, std::max<int64_t>(1, kGrainElems * 4 / row), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / nidx, j = t % nidx;
      std::memcpy(os + t * row, xs + (o * xlen + idx[j]) * row, static_cast<size_t>(row));
    }
  });
  return -1;
}

void index_select_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen,
                           int64_t inner, int64_t nidx) {
  if (outer == 0 || nidx == 0 || inner == 0) return;
  scatter_split(outer, inner, nidx, [&](int64_t o0, int64_t o1, int64_t i0, int64_t i1) {
    for (int64_t o = o0; o < o1; o++) {
      for (int64_t j = 0; j < nidx; j++) {
        int64_t r = idx[j];
        if (r < 0 || r >= xlen) continue;
        float* __restrict d = dx + (o * xlen + r) * inner;
        const float* __restrict s = dy + (o * nidx + j) * inner;
        for (int64_t i = i0; i < i1; i++) d[i] += s[i];
      }
    }
  });
}

// ------------------------------------------------------------------------------------------- gather
int64_t gather(float* out, const float* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
               int64_t glen) {
  const int64_t n = outer * glen * inner;
  int64_t bad = first_bad(idx, n, xlen);
  if (bad >= 0) return bad;
  if (n == 0) return -1;
  const int64_t rows = outer * glen;  // (o, j) pairs, each a row of `inner` outputs
  parallel_for(rows, std::max<int64_t>(1, kGrainElems / std::max<int64_t>(inner, 1)), [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; t++) {
      int64_t o = t / glen;
      const float* xo = x + o * xlen * inner;
      const int32_t* it = idx + t * inner;
      float* ot = out + t * inner;
      for (int64_t i = 0; i < inner; i++) ot[i] = xo[static_cast<int64_t>(it[i]) * inner + i];
    }
  });
  return -1;
}

void gather_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t glen) {
  if (outer == 0 || glen == 0 || inner == 0) return;
  scatter_split(outer, inner, glen, [&](int64_t o0, int64_t o1, int64_t i0, int64_t i1) {
    for (int64_t o = o0; o < o1; o++) {
      float* dxo = dx + o * xlen * inner;
      for (int64_t j = 0; j < glen; j++) {
        const int32_t* it = idx + (o * glen + j) * inner;
        const float* st = dy + (o * glen + j) * inner;
        for (int64_t i = i0; i < i1; i++) {
          int64_t r = it[i];
          if (r >= 0 && r < xlen) dxo[r * inner + i] += st[i];
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------- embedding
int64_t embedding_forward(float* y, const float* table, const int32_t* idx, int64_t n, int64_t V, int64_t C) {
  int64_t bad = first_bad(idx, n, V);
  if (bad >= 0) return bad;
  if (n == 0 || C == 0) return -1;
  parallel_for(n, std::max<int64_t>(1, kGrainElems / C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++)
      std::memcpy(y + r * C, table + static_cast<int64_t>(idx[r]) * C, static_cast<size_t>(C) * sizeof(float));
  });
  return -1;
}

void embedding_backward(float* dtable, const float* dy, const int32_t* idx, int64_t n, int64_t V, int64_t C) {
  if (n == 0 || C == 0) return;
  // Token rows repeat (the same word many times in a batch), so threads take column ranges of the table and
  // each walks every row in order: no two threads touch the same dtable element, and sums are in row order.
  parallel_for(C, std::max<int64_t>(16, kGrainElems / n), [&](int64_t c0, int64_t c1) {
    for (int64_t r = 0; r < n; r++) {
      int64_t v = idx[r];
      if (v < 0 || v >= V) continue;
      float* __restrict d = dtable + v * C;
      const float* __restrict s = dy + r * C;
      for (int64_t c = c0; c < c1; c++) d[c] += s[c];
    }
  });
}

}  // namespace cpu
}  // namespace modalab
