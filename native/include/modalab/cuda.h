// modalab CUDA backend: the CUDA side of the kernel contract in kernels.h.
//
// Every kernel below has the SAME signature and semantics as its modalab::cpu namesake in kernels.h, with every
// tensor pointer a DEVICE pointer (from cuda::malloc). Size and stride arrays (binary_forward's shape/astride/
// bstride, matmul's bshape/astride/bstride) stay HOST pointers, exactly as the bindings pass them; they are read
// before the launcher returns. Kernels run asynchronously on the backend's one stream, in call order; results
// are visible to the host after memcpy_d2h or synchronize().
//
// Errors: every CUDA call is checked and a failure throws std::runtime_error naming the kernel or call and
// cudaGetErrorString (never exit() or abort()); an allocation that fails even after emptying the cache throws
// cuda::OutOfMemory, which names the requested size. Bad arguments (a dtype pair with no kernel) throw
// std::invalid_argument. The functions that meet bad user data (cross_entropy_forward, embedding_forward,
// index_select, gather) return the first bad position like their CPU namesakes; they synchronise to read it back,
// as do sum_squares and all_finite, which return a host value.
//
// This header includes no CUDA header: the bindings and the test program are plain C++ and link modalab_cuda.
// Nothing here is usable unless the build defines MODALAB_HAVE_CUDA (CMake: check_language(CUDA)).
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "modalab/kernels.h"

namespace modalab {
namespace cuda {

// ---------------------------------------------------------------------------------------------- runtime
// The number of usable devices; 0 (never an exception) when there is no driver, no GPU, or the driver is too old
// for this build's runtime. Everything else below requires device_count() > 0.
int device_count();
// "NVIDIA H200 (sm_90, 132 SMs, 139.8 GiB)", for logs; "" without a device.
std::string device_name();
// The CUDA runtime version this build carries (statically linked) and the driver's, as 13000 for 13.0; 0 if none.
int runtime_version();
int driver_version();
// Whether matmul goes through cuBLAS in this build (MODALAB_HAVE_CUBLAS).
bool have_cublas();

// Thrown when the device cannot satisfy an allocation even after the cache has been emptied.
class OutOfMemory : public std::runtime_error {
 public:
  OutOfMemory(const std::string& what, size_t requested) : std::runtime_error(what), requested_(requested) {}
  size_t requested() const { return requested_; }

 private:
  size_t requested_;
};

// Caching allocator. cudaMalloc and cudaFree synchronise the device and cost tens of microseconds, so freed
// blocks are kept in per-size-class free lists and handed out again. Sizes round up to a class: 512-byte steps
// up to 4 KiB, then four classes per power of two (at most 25% waste). Blocks are reused only on the one stream
// everything runs on, so a block freed while a kernel still reads it is safe to hand out (stream order).
// malloc(0) returns nullptr; free(nullptr) does nothing; free of a pointer not from malloc throws.
void* malloc(size_t bytes);
void free(void* ptr);
size_t bytes_in_use();     // sum of the class sizes of blocks handed out and not yet freed
size_t bytes_reserved();   // sum of everything obtained from cudaMalloc (in use + cached)
void empty_cache();        // return every cached (free) block to the driver

// Copies on the backend's stream. h2d returns once the host buffer may be reused; d2h returns once the data
// has arrived (it waits for the kernels queued before it); d2d is asynchronous like a kernel.
void memcpy_h2d(void* dst, const void* src, size_t bytes);
void memcpy_d2h(void* dst, const void* src, size_t bytes);
void memcpy_d2d(void* dst, const void* src, size_t bytes);
// Wait for everything queued so far; a kernel's asynchronous fault surfaces here as an exception.
void synchronize();

// Timing for benchmarks: runs body `warmup` times, then `iters` times each between two events on the stream,
// and returns the median milliseconds per run.
double time_ms(const std::function<void()>& body, int warmup, int iters);

// ---------------------------------------------------------------------------------------------- kernels
// Same contract as modalab::cpu (kernels.h); device pointers. One launcher per direction.
void fill_f32(float* out, int64_t n, float value);   // out (n)
void fill_i32(int32_t* out, int64_t n, int32_t value);   // out (n)
// start + i * step in double, rounded once to f32 (product and sum unfused, as on the CPU): bit for bit.
void arange_f32(float* out, int64_t n, double start, double step);   // out (n)
void arange_i32(int32_t* out, int64_t n, int64_t start, int64_t step);   // out (n), wraps modulo 2^32
// The CPU's Philox4x32-10 stream (element i at stream position offset + i). rand_uniform is bit for bit
// cpu::rand_uniform; rand_normal is the CPU's Box-Muller in double with the device's log / sin / cos, so a value
// can differ from the CPU's by one f32 ulp of the standard normal (rarely).
void rand_uniform(float* out, int64_t n, uint64_t seed, uint64_t offset, float lo, float hi);   // out (n)
void rand_normal(float* out, int64_t n, uint64_t seed, uint64_t offset, float mean, float stddev);   // out (n)

// Every pair of F32, F16, BF16 and I32, bit-for-bit what cpu::cast gives (round to nearest even, NaN stays NaN
// with the CPU's payload rules, overflow to infinity, subnormals exact). 16-byte accesses where aligned.
void cast(void* out, DType out_dtype, const void* x, DType x_dtype, int64_t n);

void unary_forward(float* y, const float* x, int64_t n, UnaryOp op);   // y (n) = f(x (n))
void unary_backward(float* dx, const float* dy, const float* x, const float* y, int64_t n, UnaryOp op);   // =
void affine(float* y, const float* x, int64_t n, float scale, float shift);   // y (n) = x (n) * scale + shift
// y (n) = x (n) ^ p; the CPU's special cases (p = 1, 2, 3, 0.5, -0.5, -1, -2) bit for bit, else the device's powf.
void pow_scalar(float* y, const float* x, int64_t n, float p);
// out (shape) = a op b, a and b laid over shape by element strides (0 on broadcast axes); shape/strides on host.
void binary_forward(float* out, const float* a, const float* b, int ndim, const int64_t* shape,
                    const int64_t* astride, const int64_t* bstride, BinaryOp op);
// out (shape) = cond != 0 ? a : b, all three laid over shape by strides (host arrays); cond f32 or i32 (cond_i32).
void where_forward(float* out, const void* cond, bool cond_i32, const float* a, const float* b, int ndim,
                   const int64_t* shape, const int64_t* cstride, const int64_t* astride, const int64_t* bstride);

// x (outer, len, inner) -> out (outer, inner); argidx (outer, inner) for Max/Min, may be null.
void reduce(float* out, int32_t* argidx, const float* x, int64_t outer, int64_t len, int64_t inner, ReduceOp op);
// dx (outer, len, inner) = dy (outer, inner) broadcast along len, times scale. Overwrites.
void broadcast_axis(float* dx, const float* dy, int64_t outer, int64_t len, int64_t inner, float scale);
// dx (outer, len, inner) = 0 except dx[o, argidx[o, i], i] = dy[o, i] (indices outside [0, len) skipped). Overwrites.
void scatter_arg(float* dx, const float* dy, const int32_t* argidx, int64_t outer, int64_t len, int64_t inner);
// Sum of x (n)^2 in double, in a fixed order that depends on n only (not the CPU's order: equal to double
// rounding). Returns a host value: synchronises.
double sum_squares(const float* x, int64_t n);
bool all_finite(const float* x, int64_t n);   // no NaN, no infinity in x (n); synchronises

void softmax_forward(float* y, const float* x, int64_t outer, int64_t len, int64_t inner, bool log);
void softmax_backward(float* dx, const float* dy, const float* y, int64_t outer, int64_t len, int64_t inner,
                      bool log);   // =

void layernorm_forward(float* y, float* mean, float* rstd, const float* x, const float* weight,
                       const float* bias, int64_t rows, int64_t C, float eps);
void layernorm_backward(float* dx, float* dweight, float* dbias, const float* dy, const float* x,
                        const float* weight, const float* mean, const float* rstd, int64_t rows, int64_t C);   // =

int64_t cross_entropy_forward(float* loss, float* lse, const float* logits, const int32_t* targets,
                              int64_t N, int64_t C, int32_t ignore_index, float smoothing);   // synchronises
void cross_entropy_backward(float* dlogits, const float* dloss, const float* logits, const float* lse,
                            const int32_t* targets, int64_t N, int64_t C, int32_t ignore_index, float smoothing);

// Layout: elements are opaque 2- or 4-byte words (elsize; anything else throws std::invalid_argument), exact copies.
// out (shape, contiguous) = x laid out by xstride (element strides, host array) over shape. Covers permute.
void copy_strided(void* out, const void* x, int ndim, const int64_t* shape, const int64_t* xstride,
                  int64_t elsize);
// out (outer, len, inner) = x (outer, xlen, inner)[:, start:start+len, :]
void slice_copy(void* out, const void* x, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                int64_t len, int64_t elsize);
// out (outer, outlen, inner)[:, start:start+len, :] = x (outer, len, inner)
void slice_assign(void* out, const void* x, int64_t outer, int64_t outlen, int64_t inner, int64_t start,
                  int64_t len, int64_t elsize);
// dx (outer, xlen, inner)[:, start:start+len, :] += dy (outer, len, inner)
void slice_add_backward(float* dx, const float* dy, int64_t outer, int64_t xlen, int64_t inner, int64_t start,
                        int64_t len);

// Indexing forwards check every index first and write nothing when one is bad (synchronises to read the check
// back); they return -1 or the first bad position, as on the CPU. Backwards (+=) skip indices out of range.
// out (outer, nidx, inner) = x (outer, xlen, inner)[:, idx, :]; elsize 2 or 4 (else std::invalid_argument).
int64_t index_select(void* out, const void* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t nidx, int64_t elsize);
// dx (outer, xlen, inner)[:, idx[j], :] += dy (outer, nidx, inner)[:, j, :]. Deterministic and the CPU's bits
// (one thread per (o, i) column adds in index order) when outer * inner >= 32768 or nidx <= 64; otherwise atomic
// adds, whose order into one element (and so its last bit) can vary run to run.
void index_select_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen,
                           int64_t inner, int64_t nidx);
// out (outer, glen, inner)[o, j, i] = x (outer, xlen, inner)[o, idx[o, j, i], i]   (torch.gather)
int64_t gather(float* out, const float* x, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
               int64_t glen);
// +=; deterministic under the same rule as index_select_backward (outer * inner >= 32768 or glen <= 64).
void gather_backward(float* dx, const float* dy, const int32_t* idx, int64_t outer, int64_t xlen, int64_t inner,
                     int64_t glen);
int64_t embedding_forward(float* y, const float* table, const int32_t* idx, int64_t n, int64_t V, int64_t C);
// dtable (V, C) += dy (n, C) scattered by idx; indices outside [0, V) are skipped. Atomic adds: the order of
// the additions into one row (a token repeated in the batch) is not fixed, so the last bit may vary run to run.
void embedding_backward(float* dtable, const float* dy, const int32_t* idx, int64_t n, int64_t V, int64_t C);

void adamw_step(float* p, float* m, float* v, const float* g, int64_t n, double lr, double beta1, double beta2,
                double eps, double weight_decay, double bias_c1, double bias_c2);
// SGD with momentum, cpu::sgd_step's contract and arithmetic (double hyperparameters rounded once to float; buf may
// be null, and is untouched, when momentum == 0): bit for bit.
void sgd_step(float* p, float* buf, const float* g, int64_t n, double lr, double momentum, double dampening,
              double weight_decay, bool nesterov, bool first_step);
void scale_inplace(float* x, int64_t n, float s);                     // x (n) *= s
void add_inplace(float* x, const float* y, int64_t n, float alpha);   // x (n) += alpha * y (n)

// c (batch..., M, N) = alpha * op(a) @ op(b) + beta * c, batch axes broadcast by strides (host arrays); beta = 0
// never reads c. Goes through cuBLAS (plain f32, no TF32) when the build has it, else through matmul_tiled.
void matmul(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
            bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride,
            float alpha, float beta);
// The backend's own shared-memory tiled f32 GEMM (same contract), exposed so tests check it with cuBLAS present.
void matmul_tiled(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K, bool trans_a,
                  bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride, const int64_t* bstride,
                  float alpha, float beta);

// Mixed precision: a and b in ab_dtype (F16 or BF16), f32 accumulation, c in f32 (same contract otherwise).
enum class GemmImpl : int32_t { Auto = 0, TensorCore, Cublas };
// Auto: cuBLAS when the build has it, else the wmma tensor-core kernel. Cublas without cuBLAS throws.
void matmul_half(float* c, const void* a, const void* b, DType ab_dtype, int64_t M, int64_t N, int64_t K,
                 bool trans_a, bool trans_b, int nbatch, const int64_t* bshape, const int64_t* astride,
                 const int64_t* bstride, float alpha, float beta, GemmImpl impl = GemmImpl::Auto);

// ---------------------------------------------------------------------------------------------- fused kernels
// Dropout with the CPU's mask bits: keep element i iff uniform(seed, offset + i) >= p (the Philox4x32-10 stream of
// cpu::rand_uniform), kept values times 1 / (1 - p). Bit-for-bit cpu::dropout_forward / dropout_backward.
void dropout_forward(float* y, const float* x, int64_t n, float p, uint64_t seed, uint64_t offset);
void dropout_backward(float* dx, const float* dy, int64_t n, float p, uint64_t seed, uint64_t offset);   // =

// Fused attention (FlashAttention-2), cpu::attention_forward / attention_backward's contract (kernels.h): q, k, v
// in dtype (F32, F16, BF16), out in out_dtype, stats (B, H, N, 2) = (m, log l), causal (bottom-right), window,
// key_padding_mask (B, M) i32 or f32 (may be null). Device pointers (the mask too). D and Dv at most 256
// (std::invalid_argument beyond). F16 / BF16 with D == Dv in {64, 128} and 16-byte aligned q, k, v go through
// the tensor cores (wmma, f32 accumulation; the backward BF16 only); everything else through f32 tile kernels.
void attention_forward(void* out, DType out_dtype, float* stats, const void* q, const void* k, const void* v,
                       DType dtype, const void* key_padding_mask, bool mask_i32, int64_t B, int64_t H, int64_t N,
                       int64_t M, int64_t D, int64_t Dv, float scale, bool causal, int64_t window);
// dq, dk, dv f32, overwritten; deterministic (no atomics: dk/dv per key block, dq in a separate pass).
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const void* q, const void* k,
                        const void* v, const float* stats, DType dtype, const void* key_padding_mask, bool mask_i32,
                        int64_t B, int64_t H, int64_t N, int64_t M, int64_t D, int64_t Dv, float scale, bool causal,
                        int64_t window);
// Which path a call with these arguments takes: "wmma" or "f32" (for tests and benchmarks). The backward uses
// the tensor cores for BF16 only (D == Dv in {64, 128}, 16-byte aligned): F16's range would flush the low halves
// of the split f32 operands (dout, dS).
const char* attention_forward_path(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k, const void* v);
const char* attention_backward_path(DType dtype, int64_t D, int64_t Dv, const void* q, const void* k, const void* v);

// CLIP's symmetric InfoNCE, cpu::infonce_forward / infonce_backward's contract (kernels.h), f32, tiled: the N x N
// logits are never stored. loss (1), stats (4, N), dloss (1), dlogit_scale (1) are device pointers; logit_scale is
// a host float as on the CPU. Deterministic (fixed summation orders, no atomics).
void infonce_forward(float* loss, float* stats, const float* a, const float* b, int64_t N, int64_t D,
                     float logit_scale);
void infonce_backward(float* da, float* db, float* dlogit_scale, const float* dloss, const float* a, const float* b,
                      const float* stats, int64_t N, int64_t D, float logit_scale);

}  // namespace cuda
}  // namespace modalab
