// CUDA runtime of the backend: device discovery that never throws, error reporting, the one stream, the caching
// allocator, copies, synchronisation and event timing.
//
// The CUDA runtime is linked statically (CUDA::cudart_static), so this library loads on a machine with no
// driver at all; the first runtime call there returns cudaErrorInsufficientDriver or cudaErrorNoDevice, which
// device_count() turns into 0.
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "common.cuh"

namespace modalab {
namespace cuda {

// --------------------------------------------------------------------------------------------------- errors
void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  cudaGetLastError();   // clear a non-sticky error so the next check starts clean
  const char* base = std::strrchr(file, '/');
  throw std::runtime_error(std::string("modalab cuda: ") + what + ": " + cudaGetErrorString(err) + " (" +
                           cudaGetErrorName(err) + ", " + (base ? base + 1 : file) + ":" + std::to_string(line) +
                           ")");
}

// --------------------------------------------------------------------------------------------------- device
int device_count() {
  static int count = [] {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return 0;   // no driver, no device, or a driver older than this runtime: the CPU backend serves
    }
    return n;
  }();
  return count;
}

std::string device_name() {
  if (device_count() == 0) return "";
  int dev = 0;
  CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
  cudaDeviceProp p{};
  CUDA_CHECK(cudaGetDeviceProperties(&p, dev), "cudaGetDeviceProperties");
  char buf[700];   // the name is up to 256 bytes
  std::snprintf(buf, sizeof buf, "%s (sm_%d%d, %d SMs, %.1f GiB)", p.name, p.major, p.minor,
                p.multiProcessorCount, static_cast<double>(p.totalGlobalMem) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

int runtime_version() {
  int v = 0;
  if (cudaRuntimeGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

int driver_version() {
  int v = 0;
  if (cudaDriverGetVersion(&v) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return v;
}

bool have_cublas() {
#ifdef MODALAB_HAVE_CUBLAS
  return true;
#else
  return false;
#endif
}

int sm_count() {
  static int n = [] {
    int dev = 0, v = 0;
    CUDA_CHECK(cudaGetDevice(&dev), "cudaGetDevice");
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev), "cudaDeviceGetAttribute");
    return v > 0 ? v : 1;
  }();
  return n;
}

cudaStream_t stream() {
  static cudaStream_t s = [] {
    cudaStream_t st = nullptr;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking), "cudaStreamCreate");
    return st;
  }();
  return s;
}

// ------------------------------------------------------------------------------------------------ allocator
namespace {

// 512-byte steps up to 4 KiB, then 4 classes per power of two: 4K, 5K, 6K, 7K, 8K, 10K, 12K, 14K, 16K, ...
size_t size_class(size_t bytes) {
  if (bytes <= 4096) return (bytes + 511) / 512 * 512;
  int top = 63 - __builtin_clzll(static_cast<unsigned long long>(bytes));   // 2^top <= bytes < 2^(top+1)
  size_t step = size_t(1) << (top - 2);
  return (bytes + step - 1) / step * step;
}

struct Allocator {
  std::mutex mu;
  std::unordered_map<size_t, std::vector<void*>> free_blocks;   // class size -> cached blocks
  std::unordered_map<void*, size_t> live;                       // pointer -> class size
  size_t in_use = 0, reserved = 0;

  void release_cached_locked() {
    for (auto& kv : free_blocks) {
      for (void* p : kv.second) {
        cudaFree(p);   // best effort: a failure here leaves the block to the driver at exit
        reserved -= kv.first;
      }
    }
    free_blocks.clear();
    cudaGetLastError();
  }
};

Allocator& allocator() {
  static Allocator* a = new Allocator();   // never destroyed: frees at process exit race the driver's teardown
  return *a;
}

std::string gib(size_t b) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.3f GiB", static_cast<double>(b) / (1024.0 * 1024.0 * 1024.0));
  return buf;
}

}  // namespace

void* malloc(size_t bytes) {
  if (bytes == 0) return nullptr;
  const size_t cls = size_class(bytes);
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  auto it = A.free_blocks.find(cls);
  if (it != A.free_blocks.end() && !it->second.empty()) {
    void* p = it->second.back();
    it->second.pop_back();
    A.live[p] = cls;
    A.in_use += cls;
    return p;
  }
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, cls);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    A.release_cached_locked();   // other size classes may hold enough memory between them
    err = cudaMalloc(&p, cls);
  }
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    cudaGetLastError();
    throw OutOfMemory("modalab cuda: out of memory allocating " + std::to_string(bytes) + " bytes (" + gib(bytes) +
                          "); in use by modalab " + gib(A.in_use) + ", reserved " + gib(A.reserved) +
                          ", free on the device " + gib(free_b) + " of " + gib(total_b),
                      bytes);
  }
  if (err != cudaSuccess) throw_cuda_error(err, ("cudaMalloc of " + std::to_string(bytes) + " bytes").c_str(),
                                           __FILE__, __LINE__);
  A.live[p] = cls;
  A.in_use += cls;
  A.reserved += cls;
  return p;
}

void free(void* ptr) {
  if (!ptr) return;
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  auto it = A.live.find(ptr);
  if (it == A.live.end()) throw std::invalid_argument("modalab cuda: free of a pointer that cuda::malloc did not return");
  const size_t cls = it->second;
  A.live.erase(it);
  A.in_use -= cls;
  A.free_blocks[cls].push_back(ptr);
}

size_t bytes_in_use() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  return A.in_use;
}

size_t bytes_reserved() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  return A.reserved;
}

void empty_cache() {
  Allocator& A = allocator();
  std::lock_guard<std::mutex> lock(A.mu);
  A.release_cached_locked();
}

// ------------------------------------------------------------------------------------------------- copies
void memcpy_h2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  // From pageable memory the runtime stages the data before returning, so the caller may reuse src at once.
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream()), "memcpy_h2d");
}

void memcpy_d2h(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream()), "memcpy_d2h");
  CUDA_CHECK(cudaStreamSynchronize(stream()), "memcpy_d2h (synchronize)");
}

void memcpy_d2d(void* dst, const void* src, size_t bytes) {
  if (bytes == 0) return;
  CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream()), "memcpy_d2d");
}

void synchronize() { CUDA_CHECK(cudaStreamSynchronize(stream()), "synchronize"); }

// ------------------------------------------------------------------------------------------- bad-index flag
namespace {
unsigned long long* flag_ptr() {
  static unsigned long long* flag = static_cast<unsigned long long*>(malloc(sizeof(unsigned long long)));
  return flag;
}

__global__ void set_flag_kernel(unsigned long long* flag, unsigned long long v) { *flag = v; }
}  // namespace

// Reset by a one-thread kernel rather than a copy: a copy from pageable host memory would wait for the stream.
unsigned long long* bad_flag(unsigned long long init) {
  set_flag_kernel<<<1, 1, 0, stream()>>>(flag_ptr(), init);
  CUDA_CHECK_LAUNCH("bad_flag (reset)");
  return flag_ptr();
}

int64_t read_first_bad(int64_t none) {
  unsigned long long v = 0;
  memcpy_d2h(&v, flag_ptr(), sizeof v);
  return static_cast<int64_t>(v) == none ? -1 : static_cast<int64_t>(v);
}

// --------------------------------------------------------------------------------------------------- timing
double time_ms(const std::function<void()>& body, int warmup, int iters) {
  for (int i = 0; i < warmup; i++) body();
  synchronize();
  cudaEvent_t e0, e1;
  CUDA_CHECK(cudaEventCreate(&e0), "cudaEventCreate");
  CUDA_CHECK(cudaEventCreate(&e1), "cudaEventCreate");
  std::vector<float> ms;
  for (int i = 0; i < iters; i++) {
    CUDA_CHECK(cudaEventRecord(e0, stream()), "cudaEventRecord");
    body();
    CUDA_CHECK(cudaEventRecord(e1, stream()), "cudaEventRecord");
    CUDA_CHECK(cudaEventSynchronize(e1), "cudaEventSynchronize");
    float t = 0;
    CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1), "cudaEventElapsedTime");
    ms.push_back(t);
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  std::sort(ms.begin(), ms.end());
  return ms.empty() ? 0.0 : ms[ms.size() / 2];
}

}  // namespace cuda
}  // namespace modalab
