// What every part of a oneDNN session shares: the engine and stream, the user-mode scratchpad,
// and the scratch activations of the coupling nets and split priors. Buffers only grow, and only
// while a batch size's primitives are being created; the session's steady state never allocates.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <memory>

#include "backends/onednn/onednn_compat.hpp"

namespace flowrt::onednn {

// A 64-byte aligned float buffer (AVX-512 rows, one cache line).
class Buffer {
 public:
  float *data() const { return ptr_.get(); }
  size_t bytes() const { return bytes_; }
  // Returns true when it had to grow (existing pointers into it are then stale).
  bool reserve(size_t bytes) {
    if (bytes <= bytes_) return false;
    const size_t rounded = (bytes + 63) / 64 * 64;
    ptr_.reset(static_cast<float *>(std::aligned_alloc(64, rounded)));
    if (!ptr_) throw std::bad_alloc();
    bytes_ = rounded;
    return true;
  }

 private:
  struct Free {
    void operator()(float *p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> ptr_;
  size_t bytes_ = 0;
};

// Scratch roles of a net: its input and output (plain NHWC), two ping-pong buffers for the
// intermediate activations in whatever layout oneDNN picked, and the scratchpad.
enum class Role { In, Out, T0, T1, Scratchpad, Count };

struct Context {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  Buffer buffers[static_cast<int>(Role::Count)];
  Buffer &buf(Role r) { return buffers[static_cast<int>(r)]; }
};

// Sizes the roles need for one batch size.
struct Needs {
  size_t bytes[static_cast<int>(Role::Count)] = {};
  void need(Role r, size_t b) {
    size_t &v = bytes[static_cast<int>(r)];
    if (b > v) v = b;
  }
  void merge(const Needs &o) {
    for (int i = 0; i < static_cast<int>(Role::Count); ++i) need(static_cast<Role>(i), o.bytes[i]);
  }
};

}  // namespace flowrt::onednn
