// The portable backend: FlowExecutor (the reference executor's walk) with PortableNets, which
// runs every net of a group of images as one chain of packed GEMMs.
//
// A net's activations live in a batched channel-major layout, [channels][images * H * W], so a
// convolution's output is one plain row-major C matrix that the next convolution reads as its
// input. The first convolution reads the walk's images (CHW, one pointer each) the same way, and
// the walk reads the net's output through a channel stride (layers::coupling_apply's h_stride).
//
// Memory: the Program views the nets' weights in the model's bytes (NetWeights::ViewScaled, the
// foldings kept aside) and pack_conv makes the backend's one copy of them, in the kernels' panel
// layout, at creation; the activations (two buffers of the largest net activation of a group)
// and the GEMM workspace are sized then for the maximum batch.
#include "backends/portable/portable_backend.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "backends/portable/portable_gemm.hpp"
#include "backends/ref/executor_backend.hpp"
#include "core/error.hpp"

namespace flowrt {
namespace portable {
namespace {

const Kernels &choose_kernels() {
  const std::vector<const Kernels *> all = available_kernels();
  const char *env = std::getenv("FLOWRT_PORTABLE_ISA");
  if (!env || !*env) return *all.front();
  if (const Kernels *k = kernels_named(env)) return *k;
  std::string names;
  for (const Kernels *k : all) names += (names.empty() ? "" : ", ") + std::string(k->name);
  fail(FLOWRT_UNSUPPORTED, std::string("FLOWRT_PORTABLE_ISA=") + env +
                               ": not among the portable kernels this build and CPU run (" + names +
                               ")");
}

// The net activation a group of images may occupy (both buffers of the largest layer) unless
// FLOWRT_PORTABLE_CHUNK_BYTES says otherwise: 2 MiB, about an L2, which keeps a layer's output
// in cache for the next and still gives each GEMM about kNc pixels (two cifar images at 16x16,
// eight at 8x8, all at 4x4). Measured single-thread on cifar at batch 16 (Xeon, 2 MiB L2 per
// core): 1, 2, 8, 32 MiB took 1.03, 1.00, 1.05, 1.15 s; fmnist 61, 63, 67-104 ms for 1, 2, 8.
size_t chunk_bytes() {
  const char *env = std::getenv("FLOWRT_PORTABLE_CHUNK_BYTES");
  if (env && *env) {
    const long long v = std::atoll(env);
    if (v > 0) return static_cast<size_t>(v);
  }
  return size_t{2} << 20;
}

}  // namespace

class PortableNets {
 public:
  static constexpr bool kBatched = true;
  static constexpr bool kScaledViews = true;  // pack_conv applies PConv::weight_at's scales

  PortableNets(const Program<float> &prog, size_t max_batch, int threads)
      : kernels_(choose_kernels()),
        chunk_bytes_(chunk_bytes()),
        max_batch_(max_batch),
        threads_(threads) {
    for (const PStep<float> &step : prog.steps) {
      if (auto *cp = std::get_if<PCoupling<float>>(&step.op)) add(cp->net);
      if (auto *sp = std::get_if<PSplit<float>>(&step.op)) add(sp->prior);
    }
    images_.resize(max_batch_);
  }
  PortableNets(const PortableNets &) = delete;
  PortableNets &operator=(const PortableNets &) = delete;

  // Images per group for a level whose largest net layer is `floats` per image.
  size_t group_size(int64_t floats) const {
    return std::max<size_t>(1, chunk_bytes_ / (2 * sizeof(float) * static_cast<size_t>(floats)));
  }

  void reserve(const PNet<float> &net, int64_t h, int64_t w, size_t m) {
    const int64_t n = static_cast<int64_t>(m) * h * w;
    act_[0].reserve(static_cast<size_t>(net.max_ch * n));
    act_[1].reserve(static_cast<size_t>(net.max_ch * n));
    if (net.has_residual()) skip_.reserve(static_cast<size_t>(net.max_ch * n));
    for (const PNetOp<float> &op : net.ops)
      if (auto *c = std::get_if<PConv<float>>(&op))
        workspace_.reserve(kernels_, packed(*c), static_cast<int64_t>(m), h, w, threads_);
  }

  // See RefNets::run; the outputs are channel-major over the group: out[j] = buffer + j * H * W,
  // channel stride m * H * W.
  int64_t run(const PNet<float> &net, int64_t h, int64_t w, size_t, size_t m,
              const float *const *in, const float **out, int threads) {
    const int64_t plane = h * w, mi = static_cast<int64_t>(m), n = mi * plane;
    int cur = -1;  // the activation buffer holding the current tensor; -1: the inputs `in`
    int64_t ch = net.in_ch;
    // Image j of the current tensor: its first channel and the channel stride.
    auto image = [&](int64_t j) -> const float * {
      return cur < 0 ? in[j] : act_[cur].data() + j * plane;
    };
    const int64_t stride_in = plane;
    for (size_t k = 0; k < net.ops.size(); ++k) {
      const PNetOp<float> &op = net.ops[k];
      if (net.is_residual_source(k)) {  // kept aside (channel-major over the group) until its add
        float *dst = skip_.data();
        if (cur < 0) {
          for (int64_t j = 0; j < mi; ++j)
            for (int64_t c = 0; c < ch; ++c)
              std::memcpy(dst + c * n + j * plane, in[j] + c * plane, sizeof(float) * plane);
        } else {
          std::memcpy(dst, act_[cur].data(), sizeof(float) * ch * n);
        }
      }
      if (auto *c = std::get_if<PConv<float>>(&op)) {
        const PackedConv &pc = packed(*c);
        const int64_t stride = cur < 0 ? stride_in : n;
        for (int64_t j = 0; j < mi; ++j) images_[j] = image(j);
        const int next = cur == 0 ? 1 : 0;
        conv_gemm(kernels_, pc, ConvInput{images_.data(), stride}, mi, h, w, act_[next].data(), n,
                  workspace_, threads);
        cur = next;
        ch = c->out_ch;
        continue;
      }
      if (cur < 0) {  // element-wise ops work in place: never on the caller's images
        float *dst = act_[0].data();
        for (int64_t j = 0; j < mi; ++j)
          for (int64_t k = 0; k < ch; ++k)
            std::memcpy(dst + k * n + j * plane, in[j] + k * plane, sizeof(float) * plane);
        cur = 0;
      }
      float *x = act_[cur].data();
      if (auto *a = std::get_if<PChannelAffine<float>>(&op)) {
        for (int64_t k = 0; k < ch; ++k) {
          const float s = a->scale[k], t = a->shift[k];
          float *p = x + k * n;
          for (int64_t e = 0; e < n; ++e) p[e] = s * p[e] + t;
        }
      } else if (auto *r = std::get_if<PResidualAdd>(&op)) {
        const float *sk = skip_.data();
        if (r->relu) {
          for (int64_t e = 0; e < ch * n; ++e) x[e] = std::max(x[e] + sk[e], 0.f);
        } else {
          for (int64_t e = 0; e < ch * n; ++e) x[e] += sk[e];
        }
      } else {
        for (int64_t e = 0; e < ch * n; ++e) x[e] = x[e] > 0.f ? x[e] : 0.f;
      }
    }
    if (cur < 0) {  // a net without layers: its output is its input
      for (int64_t j = 0; j < mi; ++j)
        for (int64_t k = 0; k < ch; ++k)
          std::memcpy(act_[0].data() + k * n + j * plane, in[j] + k * plane, sizeof(float) * plane);
      cur = 0;
    }
    for (int64_t j = 0; j < mi; ++j) out[j] = act_[cur].data() + j * plane;
    return n;
  }

  const Kernels &kernels() const { return kernels_; }
  size_t packed_bytes() const {
    size_t b = 0;
    for (const PackedConv &c : convs_) b += c.bytes();
    return b;
  }
  size_t scratch_bytes() const {
    return act_[0].bytes() + act_[1].bytes() + skip_.bytes() + workspace_.bytes() +
           images_.capacity() * sizeof(const float *);
  }

 private:
  void add(const PNet<float> &net) {
    for (const PNetOp<float> &op : net.ops)
      if (auto *c = std::get_if<PConv<float>>(&op)) {
        index_.emplace(c, convs_.size());
        convs_.push_back(pack_conv(*c, kernels_));
      }
  }
  const PackedConv &packed(const PConv<float> &c) const {
    const auto it = index_.find(&c);
    if (it == index_.end()) fail(FLOWRT_INTERNAL_ERROR, "portable backend: a conv was not packed");
    return convs_[it->second];
  }

  const Kernels &kernels_;
  size_t chunk_bytes_, max_batch_;
  int threads_;
  std::vector<PackedConv> convs_;
  std::unordered_map<const PConv<float> *, size_t> index_;
  FloatBuffer act_[2];
  FloatBuffer skip_;  // a residual source
  GemmWorkspace workspace_;
  std::vector<const float *> images_;
};

namespace {

class PortableBackend final : public ExecutorBackend<PortableNets, FLOWRT_BACKEND_PORTABLE> {
 public:
  PortableBackend(const Graph &g, const BackendOptions &o)
      : ExecutorBackend(g, o, NetWeights::ViewScaled) {}
  std::vector<std::string> kernels(size_t) override {
    const Kernels &k = exec_.nets().kernels();
    return {std::string("gemm ") + k.name + " " + std::to_string(k.mr[0]) + "x" +
            std::to_string(k.nr)};
  }

  PortableBytes bytes() const {
    PortableBytes b;
    b.packed = exec_.nets().packed_bytes();
    b.program = owned_weight_bytes(exec_.program());
    b.scratch = exec_.nets().scratch_bytes();
    return b;
  }
  std::string kernel_name() const { return exec_.nets().kernels().name; }
};

}  // namespace
}  // namespace portable

std::unique_ptr<Backend> create_portable_backend(const Graph &graph,
                                                 const BackendOptions &options) {
  return std::make_unique<portable::PortableBackend>(graph, options);
}

PortableBytes portable_bytes(const Backend &backend) {
  if (auto *b = dynamic_cast<const portable::PortableBackend *>(&backend)) return b->bytes();
  return {};
}

std::string portable_kernels(const Backend &backend) {
  if (auto *b = dynamic_cast<const portable::PortableBackend *>(&backend)) return b->kernel_name();
  return "";
}

std::string portable_default_kernels() {
  return portable::available_kernels().front()->name;
}

}  // namespace flowrt
