// LayerNorm over the last axis of x (rows, C), forward beside backward, in llm.c's formulation.
//
// forward:  mean, rstd (rows) are saved; y = (x - mean) * rstd * weight + bias  (weight, bias may be null).
// backward: dx (rows, C) is overwritten; dweight, dbias (C) are overwritten (either may be null).
//
// Row statistics use double accumulators and a two-pass variance (mean first, then sum (x - mean)^2), so long
// rows with a large mean do not lose precision. dweight and dbias are sums over rows: to keep them independent
// of the thread count, rows are cut into blocks whose size depends only on `rows`; each block writes its own
// partial sums, and the partials are added in block order afterwards.
#include <cmath>
#include <vector>

#include "modalab/kernels.h"
#include "parallel.h"

namespace modalab {
namespace cpu {
namespace {

constexpr int64_t kGrainElems = 32768;  // elements per task; a smaller call runs inline with no threads
constexpr int64_t kMaxBlocks = 128;     // row blocks for the dweight/dbias partial sums

double row_sum(const float* x, int64_t n) {  // x (n), 8 double lanes combined in a fixed order
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) s[k] += x[j + k];
  double r = 0;
  for (; j < n; j++) r += x[j];
  return r + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

double row_sq_dev(const float* x, int64_t n, double mean) {  // sum (x - mean)^2
  double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t j = 0;
  for (; j + 8 <= n; j += 8)
    for (int k = 0; k < 8; k++) {
      double d = x[j + k] - mean;
      s[k] += d * d;
    }
  double r = 0;
  for (; j < n; j++) {
    double d = x[j] - mean;
    r += d * d;
  }
  return r + ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

int64_t grain_rows(int64_t C) { return C > 0 && kGrainElems / C > 1 ? kGrainElems / C : 1; }

}  // namespace

void layernorm_forward(float* y,             // (rows, C)
                       float* mean,          // (rows)
                       float* rstd,          // (rows)
                       const float* x,       // (rows, C)
                       const float* weight,  // (C) or null
                       const float* bias,    // (C) or null
                       int64_t rows, int64_t C, float eps) {
  parallel_for(rows, grain_rows(C), [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; r++) {
      const float* xr = x + r * C;
      float* yr = y + r * C;
      // An empty row (C == 0) has no statistics; mean 0 and variance 0 keep the saved values finite.
      double mu = C > 0 ? row_sum(xr, C) / static_cast<double>(C) : 0.0;
      double var = C > 0 ? row_sq_dev(xr, C, mu) / static_cast<double>(C) : 0.0;  // biased, as in PyTorch
      double rs = 1.0 / std::sqrt(var + static_cast<double>(eps));
      float m = static_cast<float>(mu), s = static_cast<float>(rs);
      mean[r] = m;
      rstd[r] = s;
      if (weight && bias)
        for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m) * s * weight[c] + bias[c];
      else if (weight)
        for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m) * s * weight[c];
      else if (bias)
        for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m) * s + bias[c];
      else
        for (int64_t c = 0; c < C; c++) yr[c] = (xr[c] - m) * s;
    }
  });
}

void layernorm_backward(float* dx,            // (rows, C), overwritten
                        float* dweight,       // (C) or null, overwritten
                        float* dbias,         // (C) or null, overwritten
                        const float* dy,      // (rows, C)
                        const float* x,       // (rows, C)
                        const float* weight,  // (C) or null
                        const float* mean,    // (rows)
                        const float* rstd,    // (rows)
                        int64_t rows, int64_t C) {
  // Fixed row blocks (they depend on `rows` only, never on the thread count).
  int64_t block = (rows + kMaxBlocks - 1) / kMaxBlocks;
  if (block < 8) block = 8;
  int64_t nblocks = rows > 0 ? (rows + block - 1) / block : 0;
  bool want_w = dweight != nullptr, want_b = dbias != nullptr;
  std::vector<double> pw(want_w ? static_cast<size_t>(nblocks * C) : 0);  // (nblocks, C) partial dweight
  std::vector<double> pb(want_b ? static_cast<size_t>(nblocks * C) : 0);  // (nblocks, C) partial dbias

  int64_t grain_blocks = grain_rows(C) / block > 1 ? grain_rows(C) / block : 1;
  parallel_for(nblocks, grain_blocks, [&](int64_t b0, int64_t b1) {
    for (int64_t blk = b0; blk < b1; blk++) {
      double* bw = want_w ? pw.data() + blk * C : nullptr;
      double* bb = want_b ? pb.data() + blk * C : nullptr;
      int64_t r_end = (blk + 1) * block < rows ? (blk + 1) * block : rows;
      for (int64_t r = blk * block; r < r_end; r++) {
        const float* xr = x + r * C;
        const float* dyr = dy + r * C;
        float* dxr = dx + r * C;
        float m = mean[r], s = rstd[r];
        // norm = (x - mean) * rstd is the normalised input and dnorm = dy * weight its gradient; both are
        // recomputed where needed rather than kept in a scratch row.
        // The two row means of llm.c's layernorm_backward, accumulated in double:
        double sum_d[8] = {0, 0, 0, 0, 0, 0, 0, 0}, sum_dn[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        int64_t c = 0;
        for (; c + 8 <= C; c += 8)
          for (int k = 0; k < 8; k++) {
            float norm = (xr[c + k] - m) * s;
            float dnorm = weight ? dyr[c + k] * weight[c + k] : dyr[c + k];
            sum_d[k] += dnorm;
            sum_dn[k] += dnorm * norm;
          }
        double td = 0, tdn = 0;
        for (; c < C; c++) {
          float norm = (xr[c] - m) * s;
          float dnorm = weight ? dyr[c] * weight[c] : dyr[c];
          td += dnorm;
          tdn += dnorm * norm;
        }
        td += ((sum_d[0] + sum_d[1]) + (sum_d[2] + sum_d[3])) + ((sum_d[4] + sum_d[5]) + (sum_d[6] + sum_d[7]));
        tdn += ((sum_dn[0] + sum_dn[1]) + (sum_dn[2] + sum_dn[3])) +
               ((sum_dn[4] + sum_dn[5]) + (sum_dn[6] + sum_dn[7]));
        float dnorm_mean = static_cast<float>(td / static_cast<double>(C));
        float dnorm_norm_mean = static_cast<float>(tdn / static_cast<double>(C));
        // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm))
        for (int64_t j = 0; j < C; j++) {
          float norm = (xr[j] - m) * s;
          float dnorm = weight ? dyr[j] * weight[j] : dyr[j];
          dxr[j] = (dnorm - dnorm_mean - norm * dnorm_norm_mean) * s;
        }
        if (bw)
          for (int64_t j = 0; j < C; j++) bw[j] += static_cast<double>((xr[j] - m) * s) * dyr[j];
        if (bb)
          for (int64_t j = 0; j < C; j++) bb[j] += dyr[j];
      }
    }
  });

  // Add the block partials in block order: the same sums, in the same order, for any thread count.
  if (!want_w && !want_b) return;
  int64_t grain_cols = nblocks > 0 && kGrainElems / nblocks > 1 ? kGrainElems / nblocks : 1;
  parallel_for(C, grain_cols, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; c++) {
      double sw = 0, sb = 0;
      for (int64_t blk = 0; blk < nblocks; blk++) {
        if (want_w) sw += pw[blk * C + c];
        if (want_b) sb += pb[blk * C + c];
      }
      if (want_w) dweight[c] = static_cast<float>(sw);
      if (want_b) dbias[c] = static_cast<float>(sb);
    }
  });
}

}  // namespace cpu
}  // namespace modalab
