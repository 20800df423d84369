// The compute environment of one backend call: the session's thread count for OpenMP (which
// oneDNN's CPU runtime uses too) and denormals flushed to zero (FTZ/DAZ) in every thread of the
// team, since denormal arithmetic is ~100x slower and changes nothing visible in a flow. The
// caller's thread count and every thread's MXCSR are restored when the scope ends.
#pragma once

#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define FLOWRT_HAVE_MXCSR 1
#endif

#include "core/threads.hpp"

namespace flowrt::onednn {

using flowrt::resolve_threads;

// OpenMP's thread count for the scope (the caller's is restored): oneDNN fixes a primitive's
// thread partition when it creates it and sizes its team when it executes it.
class ThreadCount {
 public:
  explicit ThreadCount(int threads) {
#ifdef _OPENMP
    prev_ = omp_get_max_threads();
    omp_set_num_threads(threads);
#else
    (void)threads;
#endif
  }
  ~ThreadCount() {
#ifdef _OPENMP
    omp_set_num_threads(prev_);
#endif
  }
  ThreadCount(const ThreadCount &) = delete;
  ThreadCount &operator=(const ThreadCount &) = delete;

 private:
  int prev_ = 1;
};

class ComputeScope {
 public:
  // `saved` holds one MXCSR per thread (at least `threads` entries), owned by the backend so
  // that entering a scope never allocates.
  ComputeScope(int threads, std::vector<unsigned> &saved)
      : team_(threads), threads_(threads), saved_(saved) {
#ifdef FLOWRT_HAVE_MXCSR
    constexpr unsigned kFtzDaz = 0x8040;
#pragma omp parallel num_threads(threads_)
    {
      const int t = thread_id();
      saved_[t] = _mm_getcsr();
      _mm_setcsr(saved_[t] | kFtzDaz);
    }
#endif
  }
  ~ComputeScope() {
#ifdef FLOWRT_HAVE_MXCSR
#pragma omp parallel num_threads(threads_)
    _mm_setcsr(saved_[thread_id()]);
#endif
  }
  ComputeScope(const ComputeScope &) = delete;
  ComputeScope &operator=(const ComputeScope &) = delete;

 private:
  static int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
  }
  ThreadCount team_;  // restores the caller's count after the MXCSRs
  int threads_;
  std::vector<unsigned> &saved_;
};

}  // namespace flowrt::onednn
