// What every part of a oneDNN session shares: the engine and stream, the user-mode scratchpad,
// the scratch activations of the coupling nets and split priors, and the primitives. Buffers only
// grow, and only while a batch size's primitives are being created; the session's steady state
// never allocates.
#pragma once

#include <array>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <utility>
#include <vector>

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
// intermediate activations in whatever layout oneDNN picked, the scratchpad, and a residual
// source kept until its add (plain NHWC f32).
enum class Role { In, Out, T0, T1, Scratchpad, Skip, Count };

// Primitives shared by all the items that solve the same problem: the K steps of a level have
// nets of identical shapes, and a 1x1 conv's A and A^-1 are two matmuls of one shape. One
// primitive descriptor and one primitive per distinct problem, each item executing it on its own
// memories (a primitive keeps no state between executions; the scratchpad is the user's), rather
// than one of each per item, which costs ~25 kB per item and per batch size (oneDNN 2.6).
// Every primitive here has a user-mode scratchpad and at most a ReLU post-op.
class Primitives {
 public:
  template <typename PD>
  struct Entry {
    PD pd;
    dnnl::primitive prim;
  };
  using Conv = Entry<dnnl::convolution_forward::primitive_desc>;
  using Matmul = Entry<dnnl::matmul::primitive_desc>;

  // Forward-inference convolution, stride 1, symmetric padding `pad`.
  Conv conv(const dnnl::engine &eng, const dnnl::memory::desc &src, const dnnl::memory::desc &w,
            const dnnl::memory::desc &bias, const dnnl::memory::desc &dst,
            const dnnl::memory::dims &pad, bool relu) {
    const Key key{{src, w, bias, dst}, pad, relu};
    for (const auto &e : convs_)
      if (e.first == key) return e.second;
    auto pd = make_conv_pd(eng, src, w, bias, dst, pad, attr(relu));
    convs_.emplace_back(key, Conv{pd, dnnl::convolution_forward(pd)});
    return convs_.back().second;
  }
  // src [M, K] x weights [K, N] (+ bias [1, N], or an empty desc) -> dst [M, N].
  Matmul matmul(const dnnl::engine &eng, const dnnl::memory::desc &src, const dnnl::memory::desc &w,
                const dnnl::memory::desc &bias, const dnnl::memory::desc &dst, bool relu) {
    const Key key{{src, w, bias, dst}, {}, relu};
    for (const auto &e : matmuls_)
      if (e.first == key) return e.second;
    auto pd = make_matmul_pd(eng, src, w, bias, dst, attr(relu));
    matmuls_.emplace_back(key, Matmul{pd, dnnl::matmul(pd)});
    return matmuls_.back().second;
  }
  // The attributes of every primitive here.
  static dnnl::primitive_attr attr(bool relu) {
    dnnl::primitive_attr a;
    a.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (relu) {
      dnnl::post_ops po;
      append_relu(po);
      a.set_post_ops(po);
    }
    return a;
  }

 private:
  struct Key {
    dnnl::memory::desc md[4];
    dnnl::memory::dims pad;
    bool relu = false;
    bool operator==(const Key &o) const {
      for (int i = 0; i < 4; ++i)
        if (md[i] != o.md[i]) return false;
      return pad == o.pad && relu == o.relu;
    }
  };
  std::vector<std::pair<Key, Conv>> convs_;
  std::vector<std::pair<Key, Matmul>> matmuls_;
};

// Memories shared by the items that bind the same layout to the same pointer (a oneDNN 2.6 memory
// object costs about 1 kB; a cifar model has ~500 items per batch size): a batch size's
// activations and scratchpad on the context's buffers (a cache that lives while that batch size
// is bound), and the biases, which every batch size shares (Context::constants).
class MemoryCache {
 public:
  const dnnl::memory &get(const dnnl::engine &eng, const dnnl::memory::desc &md, float *ptr) {
    for (const Entry &e : entries_)
      if (e.ptr == ptr && e.md == md) return e.mem;
    entries_.push_back(Entry{md, ptr, dnnl::memory(md, eng, ptr)});
    return entries_.back().mem;
  }

 private:
  struct Entry {
    dnnl::memory::desc md;
    float *ptr;
    dnnl::memory mem;
  };
  std::vector<Entry> entries_;
};

struct Context {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  Buffer buffers[static_cast<int>(Role::Count)];
  Primitives prims;
  MemoryCache constants;  // memories on data that never moves (biases)
  // Whether oneDNN's 1x1 convolution keeps its weights layout across batch sizes, by problem
  // (form, in, out, h, w, relu, plain dst, max batch): see OnednnNet::choose_forms.
  using Probe = std::array<int64_t, 8>;
  std::vector<std::pair<Probe, bool>> probes;
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
