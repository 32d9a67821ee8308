// Storage table, argument readers, and the runtime functions (threads, backend info).
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "common.h"

namespace modalab {
namespace bind {
namespace {

constexpr double kSlotRange = 16777216.0;  // 2^24 slots
constexpr size_t kAlign = 64;              // cache line; also what AVX-512 loads like
constexpr size_t kHugePage = size_t(2) << 20;  // transparent huge page size on x86-64 and most arm64 Linux

struct Slot {
  void* ptr = nullptr;
  size_t nbytes = 0;
  uint32_t gen = 0;
  bool live = false;
  Dev dev = Dev::Cpu;
};

std::vector<Slot> g_slots;
std::vector<uint32_t> g_free;
int64_t g_live_bytes[2] = {0, 0};     // per Dev
int64_t g_live_buffers[2] = {0, 0};

inline int DevIndex(Dev d) { return d == Dev::Cuda ? 1 : 0; }

// Whether this process can put buffers on the GPU: a CUDA build, a driver and a device (asked once).
bool CudaUsable() {
#ifdef MODALAB_HAVE_CUDA
  static const bool usable = cuda::device_count() > 0;
  return usable;
#else
  return false;
#endif
}

void* DeviceAlloc(size_t nbytes, bool zero) {
#ifdef MODALAB_HAVE_CUDA
  void* p = cuda::malloc(nbytes == 0 ? 4 : nbytes);
  if (zero) {
    try {
      // fill_f32 writes whole floats: the caching allocator's classes are multiples of 512 bytes, so rounding
      // the count up stays inside the block.
      cuda::fill_f32(static_cast<float*>(p), static_cast<int64_t>((nbytes + 3) / 4), 0.0f);
    } catch (...) {
      cuda::free(p);
      throw;
    }
  }
  return p;
#else
  (void)nbytes;
  (void)zero;
  throw std::runtime_error("this build has no CUDA backend");
#endif
}

void DeviceFree(void* p) {
#ifdef MODALAB_HAVE_CUDA
  cuda::free(p);
#else
  (void)p;
#endif
}

// memcpy between any two of host and device memory (the stream orders it after queued kernels).
void CopyBytes(void* dst, Dev ddev, const void* src, Dev sdev, size_t nbytes) {
  if (nbytes == 0) return;
  if (ddev == Dev::Cpu && sdev == Dev::Cpu) {
    std::memmove(dst, src, nbytes);
    return;
  }
#ifdef MODALAB_HAVE_CUDA
  if (ddev == Dev::Cuda && sdev == Dev::Cuda) cuda::memcpy_d2d(dst, src, nbytes);
  else if (ddev == Dev::Cuda) cuda::memcpy_h2d(dst, src, nbytes);
  else cuda::memcpy_d2h(dst, src, nbytes);
#else
  throw std::runtime_error("this build has no CUDA backend");
#endif
}

Slot* Lookup(double h) {
  if (!(h >= 0) || h != std::floor(h) || h > 9.0e15) return nullptr;
  uint64_t slot = static_cast<uint64_t>(std::fmod(h, kSlotRange));
  uint64_t gen = static_cast<uint64_t>(std::floor(h / kSlotRange));
  if (slot >= g_slots.size()) return nullptr;
  Slot& s = g_slots[slot];
  if (!s.live || s.gen != gen) return nullptr;
  return &s;
}

Slot* LookupArg(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsNumber())
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be a storage handle");
  Slot* s = Lookup(info[i].As<Napi::Number>().DoubleValue());
  if (!s) Throw(info.Env(), std::string(op) + ": storage was freed (tensor used after dispose?)");
  return s;
}

}  // namespace

CallDevices g_call;

bool OnCuda(const Napi::CallbackInfo& info, const char* op) {
  if (g_call.cpu && g_call.cuda)
    Throw(info.Env(), std::string(op) + ": tensors are on different devices (cpu and cuda); move them with to() first");
  return g_call.cuda;
}

void Throw(const Napi::Env& env, const std::string& msg) { throw Napi::Error::New(env, msg); }

int64_t Int(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsNumber())
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (!(std::fabs(d) <= 9.0e15) || d != std::floor(d))
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be an integer, got " +
                          std::to_string(d));
  return static_cast<int64_t>(d);
}

int64_t Count(const Napi::CallbackInfo& info, size_t i, const char* op) {
  int64_t n = Int(info, i, op);
  if (n < 0) Throw(info.Env(), std::string(op) + ": negative element count " + std::to_string(n));
  return n;
}

uint64_t Seed(const Napi::CallbackInfo& info, size_t i, const char* op, const char* what) {
  int64_t v = Int(info, i, op);
  if (v < 0) Throw(info.Env(), std::string(op) + ": " + what + " must be a non-negative integer, got " + std::to_string(v));
  return static_cast<uint64_t>(v);
}

double Num(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsNumber())
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be a number");
  return info[i].As<Napi::Number>().DoubleValue();
}

bool Bool(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsBoolean())
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be a boolean");
  return info[i].As<Napi::Boolean>().Value();
}

std::vector<int64_t> IntArray(const Napi::CallbackInfo& info, size_t i, const char* op) {
  if (i >= info.Length() || !info[i].IsArray())
    Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be an array of integers");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : std::nan("");
    if (!(std::fabs(d) <= 9.0e15) || d != std::floor(d))
      Throw(info.Env(), std::string(op) + ": argument " + std::to_string(i) + " must be an array of integers");
    out[k] = static_cast<int64_t>(d);
  }
  return out;
}

int64_t Product(const std::vector<int64_t>& v) {
  int64_t p = 1;
  for (int64_t x : v) p *= x;
  return p;
}

int64_t StridedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride) {
  int64_t hi = 0;
  for (size_t k = 0; k < shape.size(); k++) {
    if (shape[k] == 0) return 0;
    if (stride[k] < 0) throw std::invalid_argument("negative stride");
    hi += (shape[k] - 1) * stride[k];
  }
  return hi + 1;
}

int64_t Mul(int64_t a, int64_t b, const char* op) {
  int64_t r;
  if (__builtin_mul_overflow(a, b, &r)) throw std::invalid_argument(std::string("sizes overflow in ") + op);
  return r;
}

int64_t BatchedExtent(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride, int64_t mat) {
  double far = 0;  // forged strides must not overflow the extent arithmetic below
  for (size_t d = 0; d < shape.size(); d++) far += static_cast<double>(shape[d]) * static_cast<double>(stride[d]);
  if (far > 9.0e15) throw std::invalid_argument("batch strides reach past 2^53 elements");
  int64_t reach = StridedExtent(shape, stride);  // 1 + furthest batch offset, 0 when the batch is empty
  if (reach == 0 || mat == 0) return 0;
  return reach - 1 + mat;
}

void* Resolve(const Napi::CallbackInfo& info, size_t i, int64_t count, size_t elsize, const char* op) {
  Slot* s = LookupArg(info, i, op);
  int64_t off = Int(info, i + 1, op);
  if (off < 0 || count < 0 ||
      static_cast<double>(off + count) * static_cast<double>(elsize) > static_cast<double>(s->nbytes))
    Throw(info.Env(), std::string(op) + ": access of " + std::to_string(count) + " elements at offset " +
                          std::to_string(off) + " is outside a buffer of " + std::to_string(s->nbytes) + " bytes");
  if (s->dev == Dev::Cuda) g_call.cuda = true;
  else g_call.cpu = true;
  return static_cast<char*>(s->ptr) + off * static_cast<int64_t>(elsize);
}

int32_t ElementI32(const int32_t* p, int64_t i) {
  int32_t v;
  CopyBytes(&v, Dev::Cpu, p + i, g_call.cuda ? Dev::Cuda : Dev::Cpu, 4);
  return v;
}

float ReadF32(const Napi::CallbackInfo& info, size_t i, const char* op) {
  const float* p = static_cast<const float*>(Resolve(info, i, 1, 4, op));
  float v;
  CopyBytes(&v, Dev::Cpu, p, LookupArg(info, i, op)->dev, 4);
  return v;
}

void RegisterStorage(Napi::Env env, Napi::Object exports) {
  // alloc(nbytes, zero, device = 0) -> handle. device 0 is host memory, 64-byte aligned; device 1 is GPU memory
  // from the CUDA caching allocator. Both are reported to V8 as external memory, so that the garbage collector
  // (the backstop that frees forgotten tensors) feels device pressure too.
  exports.Set("alloc", Fn(env, "alloc", [](const Napi::CallbackInfo& info) -> Napi::Value {
    int64_t nbytes = Int(info, 0, "alloc");
    bool zero = info.Length() > 1 && info[1].ToBoolean().Value();
    if (nbytes < 0) Throw(info.Env(), "alloc: negative size " + std::to_string(nbytes));
    int64_t devcode = info.Length() > 2 && !info[2].IsUndefined() ? Int(info, 2, "alloc") : 0;
    if (devcode != 0 && devcode != 1) Throw(info.Env(), "alloc: unknown device code " + std::to_string(devcode));
    const Dev dev = devcode == 1 ? Dev::Cuda : Dev::Cpu;
    void* p = nullptr;
    if (dev == Dev::Cuda) {
      if (!CudaUsable())
        Throw(info.Env(), "alloc: no CUDA device (this build has no CUDA backend, or no driver or GPU was found)");
      p = DeviceAlloc(static_cast<size_t>(nbytes), zero);  // cuda::OutOfMemory names the request
    } else {
      // Large buffers are aligned to 2 MiB and offered to the kernel as transparent huge pages: on these VMs a
      // first touch costs about 15 us per 4 KiB page, which dominated ops that write a fresh 64 MB output (a cast
      // of 16M elements ran 5-30x slower than with huge pages). Small buffers stay cache-line aligned.
      const bool huge = static_cast<size_t>(nbytes) >= kHugePage;
      const size_t align = huge ? kHugePage : kAlign;
      size_t rounded = (static_cast<size_t>(nbytes) + align - 1) / align * align;
      if (rounded == 0) rounded = kAlign;
      p = std::aligned_alloc(align, rounded);
      if (!p) Throw(info.Env(), "alloc: out of host memory allocating " + std::to_string(nbytes) + " bytes");
#ifdef MADV_HUGEPAGE
      if (huge) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure just means 4 KiB pages
#endif
      if (zero) std::memset(p, 0, rounded);
    }
    uint32_t slot;
    if (!g_free.empty()) {
      slot = g_free.back();
      g_free.pop_back();
    } else {
      if (g_slots.size() >= static_cast<size_t>(kSlotRange)) {
        if (dev == Dev::Cuda) DeviceFree(p);
        else std::free(p);
        Throw(info.Env(), "alloc: more than 2^24 live buffers (are tensors being disposed?)");
      }
      slot = static_cast<uint32_t>(g_slots.size());
      g_slots.emplace_back();
    }
    Slot& s = g_slots[slot];
    s.ptr = p;
    s.nbytes = static_cast<size_t>(nbytes);
    s.live = true;
    s.dev = dev;
    g_live_bytes[DevIndex(dev)] += nbytes;
    g_live_buffers[DevIndex(dev)]++;
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), nbytes);
    return Napi::Number::New(info.Env(), static_cast<double>(s.gen) * kSlotRange + slot);
  }));

  // free(handle): a second free of the same handle throws instead of corrupting the heap.
  exports.Set("free", Fn(env, "free", [](const Napi::CallbackInfo& info) -> Napi::Value {
    Slot* s = LookupArg(info, 0, "free");
    if (s->dev == Dev::Cuda) DeviceFree(s->ptr);
    else std::free(s->ptr);
    g_live_bytes[DevIndex(s->dev)] -= static_cast<int64_t>(s->nbytes);
    g_live_buffers[DevIndex(s->dev)]--;
    Napi::MemoryManagement::AdjustExternalMemory(info.Env(), -static_cast<int64_t>(s->nbytes));
    s->ptr = nullptr;
    s->nbytes = 0;
    s->live = false;
    s->gen = (s->gen + 1) % (1u << 29);
    g_free.push_back(static_cast<uint32_t>(s - g_slots.data()));
    return info.Env().Undefined();
  }));

  // write(handle, byteOffset, typedArray): copy host data into a buffer (host or device).
  exports.Set("write", Fn(env, "write", [](const Napi::CallbackInfo& info) -> Napi::Value {
    if (info.Length() < 3 || !info[2].IsTypedArray()) Throw(info.Env(), "write: argument 2 must be a TypedArray");
    Napi::TypedArray ta = info[2].As<Napi::TypedArray>();
    size_t nbytes = ta.ByteLength();
    void* dst = Resolve(info, 0, static_cast<int64_t>(nbytes), 1, "write");
    const char* src = static_cast<const char*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    CopyBytes(dst, LookupArg(info, 0, "write")->dev, src, Dev::Cpu, nbytes);
    return info.Env().Undefined();
  }));

  // read(handle, byteOffset, nbytes) -> ArrayBuffer (a copy: JS never aliases native memory). A device buffer
  // is read after the kernels queued before it have finished.
  exports.Set("read", Fn(env, "read", [](const Napi::CallbackInfo& info) -> Napi::Value {
    int64_t nbytes = Int(info, 2, "read");
    void* src = Resolve(info, 0, nbytes, 1, "read");
    Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(info.Env(), static_cast<size_t>(nbytes));
    CopyBytes(ab.Data(), Dev::Cpu, src, LookupArg(info, 0, "read")->dev, static_cast<size_t>(nbytes));
    return ab;
  }));

  // copy(dst, dstByteOffset, src, srcByteOffset, nbytes): between any two buffers, host or device (to() uses it
  // to move a tensor).
  exports.Set("copy", Fn(env, "copy", [](const Napi::CallbackInfo& info) -> Napi::Value {
    int64_t nbytes = Int(info, 4, "copy");
    void* dst = Resolve(info, 0, nbytes, 1, "copy");
    void* src = Resolve(info, 2, nbytes, 1, "copy");
    CopyBytes(dst, LookupArg(info, 0, "copy")->dev, src, LookupArg(info, 2, "copy")->dev, static_cast<size_t>(nbytes));
    return info.Env().Undefined();
  }));

  exports.Set("isLive", Fn(env, "isLive", [](const Napi::CallbackInfo& info) -> Napi::Value {
    bool ok = info.Length() > 0 && info[0].IsNumber() && Lookup(info[0].As<Napi::Number>().DoubleValue());
    return Napi::Boolean::New(info.Env(), ok);
  }));

  exports.Set("stats", Fn(env, "stats", [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("buffers", Napi::Number::New(info.Env(), static_cast<double>(g_live_buffers[0] + g_live_buffers[1])));
    o.Set("bytes", Napi::Number::New(info.Env(), static_cast<double>(g_live_bytes[0] + g_live_bytes[1])));
    o.Set("cudaBuffers", Napi::Number::New(info.Env(), static_cast<double>(g_live_buffers[1])));
    o.Set("cudaBytes", Napi::Number::New(info.Env(), static_cast<double>(g_live_bytes[1])));
    return o;
  }));

  exports.Set("setNumThreads", Fn(env, "setNumThreads", [](const Napi::CallbackInfo& info) -> Napi::Value {
    int64_t n = Int(info, 0, "setNumThreads");
    if (n < 1 || n > 1024) Throw(info.Env(), "setNumThreads: expected 1..1024 threads, got " + std::to_string(n));
    cpu::set_num_threads(static_cast<int>(n));
    return info.Env().Undefined();
  }));

  exports.Set("backendInfo", Fn(env, "backendInfo", [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Object o = Napi::Object::New(info.Env());
    o.Set("blas", cpu::blas_name());
    o.Set("simd", cpu::simd_name());
    o.Set("threads", Napi::Number::New(info.Env(), cpu::num_threads()));
    o.Set("cuda", Napi::Boolean::New(info.Env(), CudaUsable()));
#ifdef MODALAB_HAVE_CUDA
    o.Set("cudaBuild", Napi::Boolean::New(info.Env(), true));
#else
    o.Set("cudaBuild", Napi::Boolean::New(info.Env(), false));
#endif
    return o;
  }));

  // cudaInfo() -> { build, available, device, runtime, driver, cublas, reserved, inUse }: what the CUDA backend
  // found. Safe to call in any build and on any machine (no device: available false, the numbers 0).
  exports.Set("cudaInfo", Fn(env, "cudaInfo", [](const Napi::CallbackInfo& info) -> Napi::Value {
    Napi::Env e = info.Env();
    Napi::Object o = Napi::Object::New(e);
#ifdef MODALAB_HAVE_CUDA
    const bool ok = CudaUsable();
    o.Set("build", true);
    o.Set("available", ok);
    o.Set("device", ok ? cuda::device_name() : std::string());
    o.Set("runtime", Napi::Number::New(e, cuda::runtime_version()));
    o.Set("driver", Napi::Number::New(e, cuda::driver_version()));
    o.Set("cublas", cuda::have_cublas());
    o.Set("reserved", Napi::Number::New(e, ok ? static_cast<double>(cuda::bytes_reserved()) : 0.0));
    o.Set("inUse", Napi::Number::New(e, ok ? static_cast<double>(cuda::bytes_in_use()) : 0.0));
#else
    o.Set("build", false);
    o.Set("available", false);
    o.Set("device", std::string());
    o.Set("runtime", Napi::Number::New(e, 0));
    o.Set("driver", Napi::Number::New(e, 0));
    o.Set("cublas", false);
    o.Set("reserved", Napi::Number::New(e, 0));
    o.Set("inUse", Napi::Number::New(e, 0));
#endif
    return o;
  }));

  // cudaSynchronize(): wait for the queued GPU work (an asynchronous kernel fault surfaces here, as an Error).
  exports.Set("cudaSynchronize", Fn(env, "cudaSynchronize", [](const Napi::CallbackInfo& info) -> Napi::Value {
#ifdef MODALAB_HAVE_CUDA
    if (CudaUsable()) cuda::synchronize();
#endif
    return info.Env().Undefined();
  }));

  // cudaEmptyCache(): hand the caching allocator's free blocks back to the driver.
  exports.Set("cudaEmptyCache", Fn(env, "cudaEmptyCache", [](const Napi::CallbackInfo& info) -> Napi::Value {
#ifdef MODALAB_HAVE_CUDA
    if (CudaUsable()) cuda::empty_cache();
#endif
    return info.Env().Undefined();
  }));
}

}  // namespace bind
}  // namespace modalab
