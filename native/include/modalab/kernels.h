// modalab kernel contract.
//
// Every backend (native/cpu now, native/cuda later) implements these functions on raw pointers and sizes.
// No Node header is included here or by any implementation: native/bindings is the only C++ that knows Node.
//
// Conventions (llm.c style):
//   - outputs first, then inputs, then sizes; gradients are prefixed `d`;
//   - every pointer has a shape comment; sizes are int64_t element counts;
//   - "outer, len, inner" describes one axis of a contiguous tensor: shape = [outer, len, inner];
//   - a backward says whether it overwrites (=) or accumulates (+=) its gradient outputs.
//   - functions that can meet bad user data (an index out of range) return a status instead of throwing, so
//     that this layer stays free of exceptions that cross thread pools; the binding turns it into an Error.
#pragma once
#include <cstddef>
#include <cstdint>

namespace modalab {

enum class DType : int32_t { F32 = 0, F16 = 1, BF16 = 2, I32 = 3 };
inline size_t dtype_size(DType d) { return d == DType::F32 || d == DType::I32 ? 4 : 2; }

// Element-wise unary ops. The order is part of the binding contract (src/api/binding.ts mirrors it).
enum class UnaryOp : int32_t {
  Neg = 0, Exp, Log, Sqrt, Tanh, Sigmoid, Relu, GeluErf, GeluTanh, Silu, Abs, Square, Reciprocal, Sin, Cos
};
// Element-wise binary ops with NumPy broadcasting. Comparisons write 1.0f / 0.0f.
enum class BinaryOp : int32_t { Add = 0, Sub, Mul, Div, Pow, Maximum, Minimum, Eq, Lt, Gt, Le, Ge, Ne };
enum class ReduceOp : int32_t { Sum = 0, Mean, Max, Min };

namespace cpu {

// ---------------------------------------------------------------------------------------------- runtime
// One setting governs every thread pool, the BLAS's included (MODALAB_NUM_THREADS, default: the cores).
void set_num_threads(int n);
int num_threads();
// Which GEMM and which SIMD path this build uses, for `ml.backendInfo()` and the build log.
const char* blas_name();
const char* simd_name();

// ---------------------------------------------------------------------------------------------- creation
void fill_f32(float* out, int64_t n, float value);                 // out (n)
void fill_i32(int32_t* out, int64_t n, int32_t value);             // out (n)
void arange_f32(float* out, int64_t n, double start, double step); // out (n)
void arange_i32(int32_t* out, int64_t n, int64_t start, int64_t step);
// Counter-based Philox4x32-10: element i depends only on (seed, offset + i), never on the thread count.
void rand_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi);
void rand_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float stddev);

// ---------------------------------------------------------------------------------------------- casts
// Round to nearest even; NaN stays NaN; overflow to infinity; subnormals exact. Any pair of dtypes.
void cast(void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n);
// f32 <-> f16 / bf16 run on the best instruction path the processor has (F16C, AVX-512, AVX-512 BF16), each
// bit-exact with the portable one. cast_path() names the one cast() uses (MODALAB_CAST_KERNEL forces one);
// cast_variant() runs cast() through a named path ("portable", "f16c", "avx512", "avx512bf16") for tests and
// benchmarks, returning false when this processor lacks it. Pairs without an instruction path run portable.
const char* cast_path();
bool cast_variant(const char* path, void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n);

// ---------------------------------------------------------------------------------------------- elementwise
void unary_forward(float* y, const float* x, int64_t n, UnaryOp op);   // y (n) = f(x)
// dx (n) = dy * f'(x); y is f(x) where the derivative is cheaper from it (exp, tanh, sigmoid). Overwrites dx.
void unary_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n, UnaryOp op);
void affine(float* y, const float* x, int64_t n, float scale, float shift);   // y = x * scale + shift
void pow_scalar(float* y, const float* x, int64_t n, float p);               // y = x ^ p
// out (shape) = a op b. astride/bstride are element strides of a and b laid over `shape` (0 on broadcast axes).
void binary_forward(float* out, const float* a, const float* b, int ndim, const int64_t* shape,
                    const int64_t* astride, const int64_t* bstride, BinaryOp op);
// out (shape) = cond != 0 ? a : b, all three broadcast by strides; cond is f32 or i32 (cond_i32).
void where_forward(float* out, const void* cond, bool cond_i32, const float* a, const float* b, int ndim,
                   const int64_t* shape, const int64_t* cstride, const int64_t* astride, const int64_t* bstride);
// Dropout with a regenerated mask: keep element i iff uniform(seed, offset + i) >= p; kept values scale by 1/(1-p).
void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset);
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t offset); // =

// ---------------------------------------------------------------------------------------------- reductions
// x (outer, len, inner) -> out (outer, inner). For Max/Min, argidx (outer, inner) gets the first arg index
// (may be null). An empty axis (len 0) gives 0 for Sum, NaN for Mean, -inf/+inf for Max/Min.
void reduce(float* out, int32_t* argidx, const float* x, int64_t outer, int64_t len, int64_t inner, ReduceOp op);
// dx (outer, len, inner) = broadcast of dy (outer, inner) along len, times `scale`. Overwrites.
void broadcast_axis(float* dx, const float* dy, int64_t outer, int64_t len, int64_t inner, float scale);
// dx (outer, len, inner) = 0 except dx[o, argidx[o,i], i] = dy[o, i]. Overwrites.
void scatter_arg(float* dx, const float* dy, const int32_t* argidx, int64_t outer, int64_t len, int64_t inner);
double sum_squares(const float* x, int64_t n);   // for clipGradNorm, accumulated in double
bool all_finite(const float* x, int64_t n);      // for GradScaler

// ---------------------------------------------------------------------------------------------- softmax
// Stable softmax over the middle axis of x (outer, len, inner); log=true gives logSoftmax.
void softmax_forward(float* y, const float* x, int64_t outer, int64_t len, int64_t inner, bool log);
// softmax: dx = y * (dy - sum(dy*y)); logSoftmax: dx = dy - exp(y) * sum(dy). Overwrites.
void softmax_backward(float* dx, const float* dy, const float* y, int64_t outer, int64_t len, int64_t inner,
                      bool log);

// ---------------------------------------------------------------------------------------------- layernorm
// x (rows, C); weight, bias (C) may be null; mean, rstd (rows) are saved for backward.
void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t rows, int64_t C, float eps);
// dx (rows, C) overwritten; dweight, dbias (C) overwritten (may be null).
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dy, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t C);

// ---------------------------------------------------------------------------------------------- cross entropy
// logits (N, C), targets (N). Fused: only lse (N) is stored, never the probability matrix.
// loss (N) per row, 0 where target == ignore_index. With smoothing e (PyTorch's definition):
//   loss = (1 - e) * (lse - x[t]) + e * (lse - mean_c x[c]).
// Returns -1 when every target is valid, else the row of the first target outside [0, C) (and not ignored).
int64_t cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets,
                              int64_t N, int64_t C, int32_t ignore_index, float smoothing);
// dlogits (N, C) = dloss[n] * (softmax(x) - (1-e) onehot(t) - e/C); 0 on ignored rows. Overwrites.
void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t C, int32_t ignore_index, float smoothing);

// ---------------------------------------------------------------------------------------------- matmul
// c (batch..., M, N) = alpha * op(a) @ op(b) + beta * c, with op = transpose when the flag is set.
// a is (batch..., M, K) or (batch..., K, M) when trans_a; b is (batch..., K, N) or (batch..., N, K).
// The batch axes broadcast: bshape (nbatch) is the output's batch shape, astride/bstride (nbatch) the element
// strides of a's and b's matrices over it (0 on broadcast axes). c is contiguous.
void matmul(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride,
            float alpha, float beta);
// The portable blocked GEMM used when no BLAS is found (exposed for the kernel lab and tests).
// c (M, N) = alpha * op(a) @ op(b) + beta * c, row-major with leading dimensions lda, ldb, ldc.
void gemm_portable(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                   bool trans_b, int64_t lda, int64_t ldb, int64_t ldc, float alpha, float beta);

// ---------------------------------------------------------------------------------------------- half matmul
// c (batch..., M, N) f32 = alpha * op(a) @ op(b) + beta * c where a and b are both `dtype` (F16 or BF16, raw
// 16-bit patterns); products and sums in f32. Shapes, flags, batch broadcasting and beta = 0 (c never read) are
// exactly those of matmul(). bf16 runs on AVX-512 BF16 dot products (vdpbf16ps: pairs of bf16 products summed
// into f32; like the instruction, bf16 subnormal inputs count as zero) where the processor has them; otherwise
// (and for f16) the operands are widened to f32 (exactly) and matmul() does the product.
void matmul_half(float* c, const uint16_t* a, const uint16_t* b, DType dtype, int64_t M, int64_t N, int64_t K,
                 bool trans_a, bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride,
                 const int64_t* bstride, float alpha, float beta);
// The path matmul_half takes for `dtype` here: "avx512_bf16" or "f32". matmul_half_variant() forces one
// ("avx512_bf16" is bf16 only) and returns false when it cannot run here (tests, benchmarks, the kernel lab).
const char* matmul_half_path(DType dtype);
bool matmul_half_variant(const char* path, float* c, const uint16_t* a, const uint16_t* b, DType dtype, int64_t M,
                         int64_t N, int64_t K, bool trans_a, bool trans_b, int nbatch, const int64_t* bshape,
                         const int64_t* astride, const int64_t* bstride, float alpha, float beta);

// ---------------------------------------------------------------------------------------------- layout
// Generic strided copy: out (contiguous over shape) = x laid out by xstride over shape. Covers permute.
void copy_strided(void* out, const void* x, int ndim, const int64_t* shape, const int64_t* xstride,
                  int64_t elsize);
// out (outer, len, inner) = x (outer, xlen, inner)[:, start:start+len, :]   (slice along one axis)
void slice_copy(void* out, const void* x, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                int64_t len, int64_t elsize);
// out (outer, outlen, inner)[:, start:start+len, :] = x (outer, len, inner)   (concat writes each part)
void slice_assign(void* out, const void* x, int64_t outer, int64_t outlen, int64_t inner, int64_t start,
                  int64_t len, int64_t elsize);
// dx (outer, xlen, inner)[:, start:start+len, :] += dy (outer, len, inner)
void slice_add_backward(float* dx, const float* dy, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                        int64_t len);

// ---------------------------------------------------------------------------------------------- indexing
// out (outer, nidx, inner) = x (outer, xlen, inner)[:, idx, :]. Returns -1 or the position of a bad index.
int64_t index_select(void* out, const void* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t nidx, int64_t elsize);
// dx (outer, xlen, inner)[:, idx[j], :] += dy (outer, nidx, inner)[:, j, :]   (scatter-add, serial per row)
void index_select_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen,
                           int64_t inner, int64_t nidx);
// torch.gather along the middle axis: out (outer, glen, inner)[o, j, i] = x (outer, xlen, inner)[o, idx[o,j,i], i]
int64_t gather(float* out, const float* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
               int64_t glen);
void gather_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t glen);   // +=
// Embedding: y (n, C) = table (V, C)[idx (n)]. Returns -1 or the position of the first index outside [0, V).
int64_t embedding_forward(float* y, const float* table, const int32_t* idx, int64_t n, int64_t V, int64_t C);
void embedding_backward(float* dtable, const float* dy, const int32_t* idx, int64_t n, int64_t V, int64_t C); // +=

// ---------------------------------------------------------------------------------------------- attention
// Fused scaled dot-product attention, tiled with the online softmax (FlashAttention-2, Dao 2023): no buffer of
// N x M exists at any point, forward or backward. q (B, H, N, D), k (B, H, M, D) and v (B, H, M, Dv) share one
// float dtype (F32, F16 or BF16); tiles are converted to f32 as they are loaded and every sum is accumulated in
// f32. out (B, H, N, Dv) is written in out_dtype: the inputs' dtype, or F32 (autocast wants f32 back, without a
// rounding to the low dtype on the way). s_ij = scale * q_i . k_j. With i' = i + M - N (bottom-right alignment),
// query i sees key j when all of these hold:
//   - causal: j <= i';
//   - window w > 0: i' - w < j <= i' (the previous w keys, its own included; the window implies the causal bound);
//     w = 0: no window;
//   - key_padding_mask (B, M), i32 (mask_i32) or f32, may be null: nonzero hides key j from every query of batch b.
// stats (B, H, N, 2), saved for the backward: per query row the max m of its visible scores and log l, with
// l = sum_j exp(s_ij - m) (so logsumexp = m + log l). They are kept apart because the backward's exp(s - m - log l)
// would lose up to an ulp of a large logsumexp in its argument if they were added first. A row that sees no key
// gets out = 0 and m = +inf, log l = 0, so that the recomputed probabilities are exactly 0 there (zero gradient).
void attention_forward(void* out, DType out_dtype, float* stats, const void* q, const void* k, const void* v,
                       DType dtype, const void* key_padding_mask, bool mask_i32, int64_t B, int64_t H, int64_t N,
                       int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window);
// dq (B, H, N, D), dk (B, H, M, D), dv (B, H, M, Dv), f32, overwritten (=), from dout (B, H, N, Dv) f32 and the
// forward's stats (the output itself is not needed). Deterministic: the result does not depend on the thread count.
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k,
                        const void* v, const float* stats, DType dtype, const void* key_padding_mask, bool mask_i32,
                        int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal,
                        int64_t window);
// Which SIMD path the attention kernels use: "avx512", "avx2" or "base"; "auto" picks the best this processor
// has (the default). Returns false (and changes nothing) for an unknown name or one the processor lacks. For
// tests that check every path on one machine.
bool attention_set_isa(const char* isa);
const char* attention_isa();

// ---------------------------------------------------------------------------------------------- optimizers
// AdamW (Loshchilov & Hutter): p -= lr * (mhat / (sqrt(vhat) + eps) + wd * p), decay decoupled from the moments.
// bias_c1 = 1 - beta1^t, bias_c2 = 1 - beta2^t. p, g, m, v (n); m and v updated in place.
// Hyperparameters are doubles, as the user wrote them: coefficients such as 1 - beta2 are formed in double and
// rounded once (1 - 0.999f would be 1.3e-5 away from PyTorch's 0.001).
void adamw_step(float* p, float* m, float* v, const float* g, int64_t n, double lr, double beta1, double beta2,
                double eps, double weight_decay, double bias_c1, double bias_c2);
// SGD with momentum (PyTorch's formulation): g' = g + wd p; buf = momentum buf + (1 - dampening) g'
// (buf = g' on the first step); p -= lr * (nesterov ? g' + momentum buf : buf). With momentum 0 the buffer
// (which may be null) and dampening play no part, as in PyTorch.
void sgd_step(float* p, float* buf, const float* g, int64_t n, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool first_step);
void scale_inplace(float* x, int64_t n, float s);   // x *= s
void add_inplace(float* x, const float* y, int64_t n, float alpha);   // x += alpha * y

// ---------------------------------------------------------------------------------------------- infoNCE
// CLIP's symmetric contrastive loss on a batch of N pairs, fused and tiled as in Inf-CL (Cheng et al., "Breaking
// the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss", 2024): the logits
// S = s a b^T (N, N) are never materialised, only tiles of them, so memory stays O(N D).
//   s = min(exp(logit_scale), 100)   (PyTorch's logit_scale.exp().clamp(max=100))
//   loss = (CE(S, arange N) + CE(S^T, arange N)) / 2
//        = mean_i ((lse_r[i] - S_ii) + (lse_c[i] - S_ii)) / 2,   lse_r/lse_c: logsumexp of S's rows/columns.
// The logit scale: returns s; *grad_passes (may be null) is whether d s / d logit_scale = s, i.e. exp(l) <= 100
// (torch's clamp passes the gradient at x == max); past the clamp it is 0. NaN gives NaN.
float infonce_scale(float logit_scale, bool* grad_passes);
// loss (1); stats (4, N) saved for backward: rows [max_r, log sum_r, max_c, log sum_c], so that
// lse_r[i] = stats[0][i] + stats[1][i] (the max and the log of the shifted sum kept apart, for precision).
// a, b (N, D). Results do not depend on the thread count.
void infonce_forward(float* loss, float* stats, const float* a, const float* b, int64_t N, int64_t D,
                     float logit_scale);
// dS = dloss (softmax_r(S) + softmax_c(S) - 2 I) / (2N);  da = s dS b,  db = s dS^T a,
// dlogit_scale = sum(dS * S) while the clamp is inactive, else 0.
// da, db (N, D) and dlogit_scale (1) are overwritten; any of them may be null (not computed). dloss (1);
// stats (4, N) from infonce_forward with the same inputs.
void infonce_backward(float* da, float* db, float* dlogit_scale, const float* dloss, const float* a, const float* b,
                      const float* stats, int64_t N, int64_t D, float logit_scale);

}  // namespace cpu
}  // namespace modalab
