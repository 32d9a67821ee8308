// A small fork-join thread pool shared by every CPU kernel.
//
// parallel_for(n, grain, fn) splits [0, n) into at most num_threads() contiguous chunks of at least `grain`
// items and calls fn(begin, end) on each; the calling thread takes the first chunk. Work below `grain` runs
// inline with no synchronisation at all, which keeps tiny ops cheap. Chunks are deterministic for a given
// (n, grain, thread count), and kernels are written so that results never depend on the chunking.
#pragma once
#include <cstdint>
#include <functional>

namespace modalab {
namespace cpu {

void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace cpu
}  // namespace modalab
