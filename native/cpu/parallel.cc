// Fork-join pool: workers sleep on a condition variable; a job is a chunked range handed out by index.
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "modalab/kernels.h"

#ifdef MODALAB_HAVE_OPENBLAS
extern "C" void openblas_set_num_threads(int);
#endif

namespace modalab {
namespace cpu {
namespace {

class Pool {
 public:
  explicit Pool(int n) { resize(n); }
  ~Pool() { stop(); }

  int size() const { return nthreads_; }

  void resize(int n) {
    if (n < 1) n = 1;
    stop();
    nthreads_ = n;
    quit_ = false;
    for (int i = 1; i < n; i++) workers_.emplace_back([this, i] { loop(i); });
  }

  void run(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    int64_t chunks = std::min<int64_t>(nthreads_, std::max<int64_t>(1, n / std::max<int64_t>(grain, 1)));
    if (chunks <= 1 || in_parallel_) {  // nested calls run inline: no deadlock, no oversubscription
      fn(0, n);
      return;
    }
    std::unique_lock<std::mutex> job_lock(job_mutex_);  // one parallel region at a time
    {
      // A worker that woke late for the previous job may still be inside drain(); wait it out so that it can
      // never observe this job half set up.
      std::unique_lock<std::mutex> lk(m_);
      done_cv_.wait(lk, [this] { return active_ == 0; });
      fn_ = &fn;
      n_ = n;
      chunks_ = chunks;
      next_.store(1);
      pending_ = chunks - 1;
      generation_++;
    }
    cv_.notify_all();
    in_parallel_ = true;
    std::exception_ptr own;
    try {
      fn(0, chunk_end(0));  // the caller takes chunk 0
    } catch (...) {
      own = std::current_exception();
    }
    drain();
    in_parallel_ = false;
    std::unique_lock<std::mutex> lk(m_);
    done_cv_.wait(lk, [this] { return pending_ == 0; });
    fn_ = nullptr;
    std::exception_ptr err = own ? own : error_;
    error_ = nullptr;
    lk.unlock();
    if (err) std::rethrow_exception(err);
  }

 private:
  int64_t chunk_end(int64_t c) const { return c + 1 == chunks_ ? n_ : (n_ * (c + 1)) / chunks_; }
  int64_t chunk_begin(int64_t c) const { return (n_ * c) / chunks_; }

  // Take chunks until none are left; every thread, the caller included, runs this.
  void drain() {
    for (;;) {
      int64_t c = next_.fetch_add(1);
      if (c >= chunks_) return;
      // A chunk that throws (a failed allocation inside a kernel) must not end the process from a worker
      // thread: keep the first exception and rethrow it on the calling thread once every chunk is done.
      std::exception_ptr err;
      try {
        (*fn_)(chunk_begin(c), chunk_end(c));
      } catch (...) {
        err = std::current_exception();
      }
      std::lock_guard<std::mutex> lk(m_);
      if (err && !error_) error_ = err;
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  void loop(int) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(m_);
        cv_.wait(lk, [&] { return quit_ || generation_ != seen; });
        if (quit_) return;
        seen = generation_;
        active_++;
      }
      in_parallel_ = true;
      drain();
      in_parallel_ = false;
      std::lock_guard<std::mutex> lk(m_);
      if (--active_ == 0) done_cv_.notify_all();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lk(m_);
      quit_ = true;
    }
    cv_.notify_all();
    for (auto& t : workers_) t.join();
    workers_.clear();
  }

  int nthreads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex m_, job_mutex_;
  std::condition_variable cv_, done_cv_;
  bool quit_ = false;
  uint64_t generation_ = 0;
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0, chunks_ = 0, pending_ = 0, active_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
  static thread_local bool in_parallel_;
};
thread_local bool Pool::in_parallel_ = false;

int default_threads() {
  if (const char* s = std::getenv("MODALAB_NUM_THREADS")) {
    int n = std::atoi(s);
    if (n > 0) return n;
  }
  unsigned hc = std::thread::hardware_concurrency();
  return hc ? static_cast<int>(hc) : 1;
}

Pool& pool() {
  static Pool* p = [] {
    int n = default_threads();
#ifdef MODALAB_HAVE_OPENBLAS
    openblas_set_num_threads(n);
#endif
    return new Pool(n);  // leaked on purpose: no teardown order problems at process exit
  }();
  return *p;
}

}  // namespace

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  if (n <= grain) {
    fn(0, n);
    return;
  }
  pool().run(n, grain, fn);
}

void set_num_threads(int n) {
  if (n < 1) n = 1;
  pool().resize(n);
#ifdef MODALAB_HAVE_OPENBLAS
  openblas_set_num_threads(n);
#endif
}

int num_threads() { return pool().size(); }

}  // namespace cpu
}  // namespace modalab
