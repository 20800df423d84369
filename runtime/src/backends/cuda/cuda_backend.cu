// The CUDA backend. At creation it uploads the Program's weights (with the load-time foldings:
// actnorm folded into the 1x1 convs, their precomputed inverses, nets' scales folded into convs)
// and allocates all device scratch for the maximum batch. Convolutions are im2col + cuBLAS
// strided-batched GEMM on float data (1x1 convs skip im2col) at the session's precision (fp32, or
// tensor cores with TF32, BF16 or FP16 inputs and float accumulation; at a single position, as
// after a flatten, the whole batch is one GEMM); the rest is element-wise float kernels, among
// them the checkerboard couplings' masked net inputs and the logit layer (in double). The
// decoder for each batch size is captured once into a CUDA Graph and replayed; the temperature,
// seed and first image index it needs are read from device memory, so one graph serves every
// call.
#include <cuda_runtime.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_kernels.cuh"
#include "model/program.hpp"

namespace flowrt {
namespace cuda {
namespace {

enum class OpKind { Conv, Affine, Relu, Add };

struct DevNetOp {
  OpKind kind = OpKind::Relu;
  DeviceBuffer<float> weight, bias;  // conv
  DeviceBuffer<float> scale, shift;  // affine
  int out_ch = 0, in_ch = 0, in_total = 0, kh = 1, kw = 1;
  PaddingMode padding = PaddingMode::Zeros;
  float pad_value = 0.f;
  bool relu = false;    // conv, add: a fused ReLU
  bool source = false;  // the op's input is kept for a residual add
};

struct DevNet {
  std::vector<DevNetOp> ops;
  int in_ch = 0;
  bool empty() const { return ops.empty(); }
};

enum class StepKind { Squeeze, Affine, Linear, Permute, Coupling, Split, Top, Logit };

struct DevStep {
  StepKind kind;
  Shape3 in, out;
  double logdet = 0;
  int64_t latent_offset = 0;
  SqueezeOrder order = SqueezeOrder::ChannelMajor;
  DeviceBuffer<float> a, c, a_inv;  // linear (a, c, a_inv), affine (a = scale, c = shift)
  DeviceBuffer<int32_t> source;     // permute
  CouplingArgs coupling{};
  Half half = Half::First;  // coupling: conditioning; split: leaving
  int checker = -1;         // checkerboard coupling: the parity of x_a's positions, else -1
  bool mask_channel = false;
  DeviceBuffer<float> scale_weight;  // coupling with the tanh scale
  float alpha = 0.f;                 // logit
  DevNet net;                        // coupling net or split prior
  PriorLayout layout = PriorLayout::MeanLogstdHalves;
  DeviceBuffer<float> mean, log_std, offsets;  // top prior
  int64_t n_classes = 0;
};

DevNet upload_net(const PNet<float> &net) {
  DevNet d;
  d.in_ch = static_cast<int>(net.in_ch);
  for (size_t k = 0; k < net.ops.size(); ++k) {
    const PNetOp<float> &op = net.ops[k];
    DevNetOp o;
    o.source = net.is_residual_source(k);
    if (auto *r = std::get_if<PResidualAdd>(&op)) {
      o.kind = OpKind::Add;
      o.relu = r->relu;
    } else if (auto *c = std::get_if<PConv<float>>(&op)) {
      o.kind = OpKind::Conv;
      o.weight = upload(c->weight);
      o.bias = upload(c->bias);
      o.out_ch = static_cast<int>(c->out_ch);
      o.in_ch = static_cast<int>(c->in_ch);
      o.in_total = static_cast<int>(c->in_total);
      o.kh = static_cast<int>(c->kh);
      o.kw = static_cast<int>(c->kw);
      o.padding = c->padding;
      o.pad_value = c->pad_value;
      o.relu = c->relu;
    } else if (auto *a = std::get_if<PChannelAffine<float>>(&op)) {
      o.kind = OpKind::Affine;
      o.scale = upload(a->scale);
      o.shift = upload(a->shift);
    }
    d.ops.push_back(std::move(o));
  }
  return d;
}

// The cuBLAS compute type of a precision: float inputs, outputs and accumulation, the inputs
// rounded to the named format on the tensor cores for the reduced precisions. FP32 keeps the
// pedantic type (standard float arithmetic, no tensor-core shortcuts).
cublasComputeType_t compute_type(flowrt_precision p) {
  switch (p) {
    case FLOWRT_PRECISION_FP32:
      return CUBLAS_COMPUTE_32F_PEDANTIC;
    case FLOWRT_PRECISION_TF32:
      return CUBLAS_COMPUTE_32F_FAST_TF32;
    case FLOWRT_PRECISION_BF16:
      return CUBLAS_COMPUTE_32F_FAST_16BF;
    case FLOWRT_PRECISION_FP16:
      return CUBLAS_COMPUTE_32F_FAST_16F;
  }
  invalid_argument(std::string("unknown precision ") + std::to_string(static_cast<int>(p)));
}

class CudaBackend final : public Backend {
 public:
  CudaBackend(const Graph &g, const BackendOptions &opt)
      : Backend(g.dims()),
        device_(opt.device),
        max_batch_(opt.max_batch),
        gemm_compute_(compute_type(opt.precision)) {
    if (max_batch_ > 65535)  // per-image reductions put images on the grid's y dimension
      invalid_argument("the CUDA backend's max batch is 65535, got " + std::to_string(max_batch_));
    const Program<float> prog = build_program<float>(g, opt.fold);  // checked (check_program)
    if (!cuda_device_available(device_))
      fail(FLOWRT_DEVICE_ERROR, "no device: no usable CUDA device " + std::to_string(device_) +
                                    " (no driver, or no GPU)");
    check(cudaSetDevice(device_), "cudaSetDevice");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasCreate(&blas_), "cublasCreate");
    check(cublasSetStream(blas_, stream_), "cublasSetStream");
    // A user workspace keeps cuBLAS from allocating inside graph capture.
    blas_workspace_ = DeviceBuffer<uint8_t>(size_t{32} << 20);
    check(cublasSetWorkspace(blas_, blas_workspace_.get(), blas_workspace_.size()),
          "cublasSetWorkspace");
    // The products' arithmetic is the compute type every GEMM passes (gemm_compute_); the handle
    // keeps the default math mode so that this type alone decides it.
    check(cublasSetMathMode(blas_, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");

    net_stride_ = std::max<int64_t>(prog.max_net_elems, 1);
    int64_t col_per_image = 1, masked_per_image = 0;
    bool residual = false;  // a net has residual adds: net_skip_ keeps their sources
    for (const PStep<float> &ps : prog.steps) {
      DevStep s;
      s.in = ps.in;
      s.out = ps.out;
      s.logdet = ps.logdet;
      s.latent_offset = ps.latent_offset;
      const auto track_net = [&](const PNet<float> &net) {
        residual |= net.has_residual();
        for (const PNetOp<float> &op : net.ops)
          if (auto *c = std::get_if<PConv<float>>(&op); c && (c->kh > 1 || c->kw > 1))
            col_per_image = std::max(col_per_image, c->in_total * c->kh * c->kw * ps.in.plane());
      };
      if (auto *sq = std::get_if<PSqueeze>(&ps.op)) {
        s.kind = StepKind::Squeeze;
        s.order = sq->order;
      } else if (auto *af = std::get_if<PAffine<float>>(&ps.op)) {
        s.kind = StepKind::Affine;
        s.a = upload(af->scale);
        s.c = upload(af->shift);
      } else if (auto *li = std::get_if<PLinear<float>>(&ps.op)) {
        s.kind = StepKind::Linear;
        s.a = upload(li->a);
        s.c = upload(li->c);
        s.a_inv = upload(li->a_inv);
      } else if (auto *pm = std::get_if<PPermute>(&ps.op)) {
        s.kind = StepKind::Permute;
        s.source = upload(pm->source);
      } else if (auto *cp = std::get_if<PCoupling<float>>(&ps.op)) {
        s.kind = StepKind::Coupling;
        s.coupling = CouplingArgs{cp->type, cp->split, cp->scale_fn, cp->form, cp->scale_bias};
        s.half = cp->conditioning;
        if (is_checkerboard(cp->conditioning)) {
          s.checker = cp->conditioning == Half::CheckerboardEven ? 0 : 1;
          s.mask_channel = cp->mask_channel;
          masked_per_image = std::max(masked_per_image, cp->net.in_ch * ps.in.plane());
        }
        if (cp->type == CouplingType::Affine && cp->scale_fn == ScaleFunction::Tanh)
          s.scale_weight = upload(cp->scale_weight);
        s.net = upload_net(cp->net);
        track_net(cp->net);
      } else if (auto *sp = std::get_if<PSplit<float>>(&ps.op)) {
        s.kind = StepKind::Split;
        s.half = sp->leaving;
        s.layout = sp->layout;
        s.net = upload_net(sp->prior);
        track_net(sp->prior);
      } else if (auto *tp = std::get_if<PTop<float>>(&ps.op)) {
        s.kind = StepKind::Top;
        s.mean = upload(tp->mean);
        s.log_std = upload(tp->log_std);
        s.offsets = upload(tp->class_offsets);
        s.n_classes = tp->n_classes;
      } else if (auto *lg = std::get_if<PLogit<float>>(&ps.op)) {
        s.kind = StepKind::Logit;
        s.alpha = lg->alpha;
      } else {
        fail(FLOWRT_INTERNAL_ERROR, "the CUDA backend has no kernel for a step of this model");
      }
      steps_.push_back(std::move(s));
    }
    const size_t nd = max_batch_ * static_cast<size_t>(dims_);
    cur_ = DeviceBuffer<float>(nd);
    tmp_ = DeviceBuffer<float>(nd);
    io_ = DeviceBuffer<float>(nd);
    net_a_ = DeviceBuffer<float>(max_batch_ * net_stride_);
    net_b_ = DeviceBuffer<float>(max_batch_ * net_stride_);
    if (residual) net_skip_ = DeviceBuffer<float>(max_batch_ * net_stride_);
    masked_ = DeviceBuffer<float>(max_batch_ * static_cast<size_t>(masked_per_image));
    // im2col for up to the whole batch, capped at 64 Mi floats (then convs run in chunks).
    col_images_ =
        std::max<int64_t>(1, std::min<int64_t>(max_batch_, (int64_t{64} << 20) / col_per_image));
    col_per_image_ = col_per_image;
    col_ = DeviceBuffer<float>(static_cast<size_t>(col_images_ * col_per_image));
    logp_ = DeviceBuffer<double>(max_batch_);
    logdet_ = DeviceBuffer<double>(max_batch_);
    labels_ = DeviceBuffer<int32_t>(max_batch_);
    params_ = DeviceBuffer<SampleParams>(1);
    check(cudaMallocHost(reinterpret_cast<void **>(&host_params_), sizeof(SampleParams)),
          "cudaMallocHost");
    host_logp_.resize(max_batch_);
    host_logdet_.resize(max_batch_);
    // The weights went up with synchronous copies on the legacy stream, which the session's
    // non-blocking stream is not ordered after.
    check(cudaDeviceSynchronize(), "upload");
  }

  ~CudaBackend() override {
    cudaSetDevice(device_);
    for (auto &kv : graphs_) cudaGraphExecDestroy(kv.second.exec);
    if (host_params_) cudaFreeHost(host_params_);
    if (blas_) cublasDestroy(blas_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  flowrt_backend kind() const override { return FLOWRT_BACKEND_CUDA; }

  void encode(size_t n, const float *x, const int32_t *labels, float *z, double *log_p,
              double *log_det) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    const int nn = static_cast<int>(n);
    const int64_t d = dims_;
    copy_in(x, cur_.get(), n * d);
    const int32_t *dlabels = upload_labels(n, labels);
    check(cudaMemsetAsync(logp_.get(), 0, n * sizeof(double), stream_), "memset");
    check(cudaMemsetAsync(logdet_.get(), 0, n * sizeof(double), stream_), "memset");
    float *cur = cur_.get(), *tmp = tmp_.get(), *zd = io_.get();
    double constant = 0;
    for (DevStep &s : steps_) {
      const int64_t plane = s.in.plane();
      switch (s.kind) {
        case StepKind::Squeeze:
          squeeze(s.order, s.in, nn, d, cur, tmp, false, stream_);
          std::swap(cur, tmp);
          break;
        case StepKind::Affine:
          channel_affine(s.a.get(), s.c.get(), s.in, nn, d, cur, false, stream_);
          constant += s.logdet;
          break;
        case StepKind::Linear:
          linear(s.a.get(), s.c.get(), s.in, nn, cur, tmp);
          std::swap(cur, tmp);
          constant += s.logdet;
          break;
        case StepKind::Permute:
          permute(s.source.get(), s.in, nn, d, cur, tmp, false, stream_);
          std::swap(cur, tmp);
          break;
        case StepKind::Coupling:
          run_coupling(s, cur, nn, logdet_.get(), false);
          break;
        case StepKind::Logit:
          logit(s.alpha, s.in, nn, d, cur, logdet_.get(), false, stream_);
          break;
        case StepKind::Split: {
          const int64_t cz = s.in.c / 2, m = cz * plane;
          float *leave = cur + (s.half == Half::First ? 0 : m);
          float *keep = cur + (s.half == Half::First ? m : 0);
          copy_rows(zd + s.latent_offset, leave, m, n);
          const float *o = s.net.empty() ? nullptr : run_net(s.net, keep, d, s.in, nn);
          split_log_prob(leave, d, o, net_stride_, s.layout, int(cz), int(plane), nn, logp_.get(),
                         stream_);
          if (s.half == Half::First) copy_rows(cur, keep, m, n);
          break;
        }
        case StepKind::Top:
          copy_rows(zd + s.latent_offset, cur, s.in.numel(), n);
          top_log_prob(cur, d, s.mean.get(), s.log_std.get(), s.offsets.get(), dlabels, int(s.in.c),
                       int(plane), nn, logp_.get(), stream_);
          break;
      }
    }
    check(cudaMemcpyAsync(z, zd, n * d * sizeof(float), cudaMemcpyDeviceToHost, stream_), "copy z");
    check(cudaMemcpyAsync(host_logp_.data(), logp_.get(), n * sizeof(double),
                          cudaMemcpyDeviceToHost, stream_),
          "copy");
    check(cudaMemcpyAsync(host_logdet_.data(), logdet_.get(), n * sizeof(double),
                          cudaMemcpyDeviceToHost, stream_),
          "copy");
    check(cudaStreamSynchronize(stream_), "encode");
    for (size_t i = 0; i < n; ++i) {
      const double ld = host_logdet_[i] + constant;
      if (log_det) log_det[i] = ld;
      if (log_p) log_p[i] = host_logp_[i] + ld;
    }
  }

  void decode(size_t n, const float *z, float *x) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    copy_in(z, io_.get(), n * dims_);
    run_decoder(n, false, false, x);
  }

  void decode_noise(size_t n, const float *eps, float temperature, const int32_t *labels,
                    float *x) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    copy_in(eps, io_.get(), n * dims_);
    set_params(0, 0, temperature);
    upload_labels(n, labels);
    run_decoder(n, true, labels != nullptr, x);
  }

  void sample(size_t n, uint64_t seed, uint64_t first_image, float temperature,
              const int32_t *labels, float *, float *x) override {
    check(cudaSetDevice(device_), "cudaSetDevice");
    set_params(seed, first_image, temperature);
    upload_labels(n, labels);
    philox_normals(params_.get(), static_cast<int>(n), dims_, io_.get(), stream_);
    run_decoder(n, true, labels != nullptr, x);
  }

 private:
  struct CapturedDecoder {
    cudaGraphExec_t exec = nullptr;
    const float *result = nullptr;
  };

  void copy_in(const float *host, float *dev, size_t count) {
    check(cudaMemcpyAsync(dev, host, count * sizeof(float), cudaMemcpyHostToDevice, stream_),
          "copy in");
  }
  const int32_t *upload_labels(size_t n, const int32_t *labels) {
    if (!labels) return nullptr;
    check(cudaMemcpyAsync(labels_.get(), labels, n * sizeof(int32_t), cudaMemcpyHostToDevice,
                          stream_),
          "labels");
    return labels_.get();
  }
  void set_params(uint64_t seed, uint64_t first, float temperature) {
    check(cudaStreamSynchronize(stream_), "params");  // the pinned block may still be in flight
    *host_params_ = SampleParams{seed, first, temperature};
    check(cudaMemcpyAsync(params_.get(), host_params_, sizeof(SampleParams), cudaMemcpyHostToDevice,
                          stream_),
          "params");
  }
  // `count` floats of each of n images, both with stride D.
  void copy_rows(float *dst, const float *src, int64_t count, size_t n) {
    const size_t pitch = static_cast<size_t>(dims_) * sizeof(float);
    check(cudaMemcpy2DAsync(dst, pitch, src, pitch, count * sizeof(float), n,
                            cudaMemcpyDeviceToDevice, stream_),
          "copy rows");
  }

  // C (per image P x O, as NCHW [O][P]) = W (O x K) * B (K x P); cuBLAS sees the transposes.
  void gemm(const float *b, int64_t b_stride, int64_t ldb_p, const float *w, int64_t ldw, int o,
            int k, int64_t p, float *c, int64_t c_stride, int batch) {
    const float one = 1.f, zero = 0.f;
    if (p == 1) {
      // A single position (NICE's vectors at 1x1): each image is one column, so the batch is one
      // product [O x batch] = W * [K x batch] (column i at image i's offset) rather than `batch`
      // matrix-vector products. cuBLAS reads the row-major W as its transpose.
      check(cublasGemmEx(blas_, CUBLAS_OP_T, CUBLAS_OP_N, o, batch, k, &one, w, CUDA_R_32F,
                         int(ldw), b, CUDA_R_32F, int(b_stride), &zero, c, CUDA_R_32F,
                         int(c_stride), gemm_compute_, CUBLAS_GEMM_DEFAULT),
            "gemm");
      return;
    }
    check(cublasGemmStridedBatchedEx(blas_, CUBLAS_OP_N, CUBLAS_OP_N, int(p), o, k, &one, b,
                                     CUDA_R_32F, int(ldb_p), b_stride, w, CUDA_R_32F, int(ldw), 0,
                                     &zero, c, CUDA_R_32F, int(p), c_stride, batch, gemm_compute_,
                                     CUBLAS_GEMM_DEFAULT),
          "gemm");
  }

  void linear(const float *a, const float *c, const Shape3 &sh, int n, const float *in,
              float *out) {
    gemm(in, dims_, sh.plane(), a, sh.c, int(sh.c), int(sh.c), sh.plane(), out, dims_, n);
    add_bias(c, 1.f, false, sh, n, dims_, out, stream_);
  }

  // Runs a net on `in` (stride in_stride); returns its output (stride net_stride_).
  const float *run_net(const DevNet &net, const float *in, int64_t in_stride, const Shape3 &sp,
                       int n) {
    const int64_t plane = sp.plane();
    const float *cur = in;
    int64_t cur_stride = in_stride;
    int ch = net.in_ch;
    float *next = net_a_.get();
    auto other = [&](float *p) { return p == net_a_.get() ? net_b_.get() : net_a_.get(); };
    for (const DevNetOp &op : net.ops) {
      if (op.source)  // kept until its add
        check(cudaMemcpy2DAsync(net_skip_.get(), net_stride_ * sizeof(float), cur,
                                cur_stride * sizeof(float), ch * plane * sizeof(float), n,
                                cudaMemcpyDeviceToDevice, stream_),
              "residual source");
      if (op.kind == OpKind::Conv) {
        const Shape3 os{op.out_ch, sp.h, sp.w};
        if (op.kh == 1 && op.kw == 1) {
          // The edge channel is 0 everywhere a 1x1 kernel reads: its weights are skipped.
          gemm(cur, cur_stride, plane, op.weight.get(), op.in_total, op.out_ch, op.in_ch, plane,
               next, net_stride_, n);
        } else {
          const int k = op.in_total * op.kh * op.kw;
          for (int i0 = 0; i0 < n; i0 += int(col_images_)) {
            const int m = std::min<int>(int(col_images_), n - i0);
            im2col(cur + i0 * cur_stride, cur_stride, op.in_ch, op.in_total, int(sp.h), int(sp.w),
                   op.kh, op.kw, op.padding, op.pad_value, m, col_.get(), int64_t(k) * plane,
                   stream_);
            gemm(col_.get(), int64_t(k) * plane, plane, op.weight.get(), k, op.out_ch, k, plane,
                 next + i0 * net_stride_, net_stride_, m);
          }
        }
        add_bias(op.bias.get(), 1.f, op.relu, os, n, net_stride_, next, stream_);
        cur = next;
        cur_stride = net_stride_;
        next = other(next);
        ch = op.out_ch;
        continue;
      }
      if (cur == in) {  // element-wise ops work in place: never on the caller's activations
        check(cudaMemcpy2DAsync(next, net_stride_ * sizeof(float), in, in_stride * sizeof(float),
                                ch * plane * sizeof(float), n, cudaMemcpyDeviceToDevice, stream_),
              "net input");
        cur = next;
        cur_stride = net_stride_;
        next = other(next);
      }
      const Shape3 cs{ch, sp.h, sp.w};
      float *x = const_cast<float *>(cur);
      if (op.kind == OpKind::Affine)
        channel_affine(op.scale.get(), op.shift.get(), cs, n, net_stride_, x, false, stream_);
      else if (op.kind == OpKind::Add)
        add_into(net_skip_.get(), op.relu, cs, n, net_stride_, x, stream_);
      else
        add_bias(nullptr, 0.f, true, cs, n, net_stride_, x, stream_);
    }
    return cur;
  }

  // A coupling on the current tensor (stride D), in place: its net on x_a (a checkerboard's on
  // the masked copy of the whole tensor, which the map then leaves intact), then the map or its
  // inverse on x_b. logdet: encode's per-image sums, or null.
  void run_coupling(const DevStep &s, float *cur, int n, double *logdet, bool inverse) {
    const int64_t plane = s.in.plane();
    if (s.checker >= 0) {
      const int64_t stride = int64_t(s.net.in_ch) * plane;
      checker_input(s.checker, s.mask_channel, s.in, n, dims_, cur, masked_.get(), stride, stream_);
      const float *h = run_net(s.net, masked_.get(), stride, s.in, n);
      coupling(s.coupling, s.scale_weight.get(), s.checker, int(s.in.w), h, net_stride_, cur, dims_,
               int(s.in.c), int(plane), n, logdet, inverse, stream_);
      return;
    }
    const int64_t cb = s.in.c / 2;
    const float *xa = cur + (s.half == Half::First ? 0 : cb * plane);
    float *xb = cur + (s.half == Half::First ? cb * plane : 0);
    const float *h = run_net(s.net, xa, dims_, s.in, n);
    coupling(s.coupling, s.scale_weight.get(), -1, int(s.in.w), h, net_stride_, xb, dims_, int(cb),
             int(plane), n, logdet, inverse, stream_);
  }

  // The decoder's device work from io_ (latents or noise) to an image buffer; returns it.
  const float *record_decoder(int n, bool noise, bool has_labels) {
    const int64_t d = dims_;
    float *cur = cur_.get(), *tmp = tmp_.get();
    const float *src = io_.get();
    const int32_t *dl = has_labels ? labels_.get() : nullptr;
    const DevStep &top = steps_.back();
    if (noise)
      top_sample(src + top.latent_offset, d, top.mean.get(), top.log_std.get(), top.offsets.get(),
                 dl, int(top.in.c), int(top.in.plane()), n, params_.get(), cur, d, stream_);
    else
      copy_rows(cur, src + top.latent_offset, top.in.numel(), n);
    for (size_t k = steps_.size() - 1; k-- > 0;) {
      const DevStep &s = steps_[k];
      const int64_t plane = s.in.plane();
      switch (s.kind) {
        case StepKind::Squeeze:
          squeeze(s.order, s.in, n, d, cur, tmp, true, stream_);
          std::swap(cur, tmp);
          break;
        case StepKind::Affine:
          channel_affine(s.a.get(), s.c.get(), s.in, n, d, cur, true, stream_);
          break;
        case StepKind::Linear:
          add_bias(s.c.get(), -1.f, false, s.in, n, d, cur, stream_);
          gemm(cur, d, plane, s.a_inv.get(), s.in.c, int(s.in.c), int(s.in.c), plane, tmp, d, n);
          std::swap(cur, tmp);
          break;
        case StepKind::Permute:
          permute(s.source.get(), s.in, n, d, cur, tmp, true, stream_);
          std::swap(cur, tmp);
          break;
        case StepKind::Coupling:
          run_coupling(s, cur, n, nullptr, true);
          break;
        case StepKind::Logit:
          logit(s.alpha, s.in, n, d, cur, nullptr, true, stream_);
          break;
        case StepKind::Split: {
          const int64_t cz = s.in.c / 2, m = cz * plane;
          if (s.half == Half::First) copy_rows(cur + m, cur, m, n);
          float *leave = cur + (s.half == Half::First ? 0 : m);
          const float *keep = cur + (s.half == Half::First ? m : 0);
          if (!noise) {
            copy_rows(leave, src + s.latent_offset, m, n);
          } else {
            const float *o = s.net.empty() ? nullptr : run_net(s.net, keep, d, s.in, n);
            split_sample(src + s.latent_offset, d, o, net_stride_, s.layout, int(cz), int(plane), n,
                         params_.get(), leave, d, stream_);
          }
          break;
        }
        case StepKind::Top:
          break;
      }
    }
    return cur;
  }

  void run_decoder(size_t n, bool noise, bool has_labels, float *x) {
    const auto key = std::make_tuple(n, noise, has_labels);
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      CapturedDecoder cd;
      cudaGraph_t graph = nullptr;
      check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "begin capture");
      try {
        cd.result = record_decoder(static_cast<int>(n), noise, has_labels);
      } catch (...) {
        cudaStreamEndCapture(stream_, &graph);
        if (graph) cudaGraphDestroy(graph);
        throw;
      }
      check(cudaStreamEndCapture(stream_, &graph), "end capture");
      const cudaError_t e = cudaGraphInstantiate(&cd.exec, graph, 0);
      cudaGraphDestroy(graph);
      check(e, "cudaGraphInstantiate");
      it = graphs_.emplace(key, cd).first;
    }
    check(cudaGraphLaunch(it->second.exec, stream_), "cudaGraphLaunch");
    check(cudaMemcpyAsync(x, it->second.result, n * dims_ * sizeof(float), cudaMemcpyDeviceToHost,
                          stream_),
          "copy x");
    check(cudaStreamSynchronize(stream_), "decode");
  }

  int device_;
  size_t max_batch_;
  cublasComputeType_t gemm_compute_;  // the products' arithmetic (float in and out throughout)
  cudaStream_t stream_ = nullptr;
  cublasHandle_t blas_ = nullptr;
  DeviceBuffer<uint8_t> blas_workspace_;
  std::vector<DevStep> steps_;
  int64_t net_stride_ = 1, col_images_ = 1, col_per_image_ = 1;
  DeviceBuffer<float> cur_, tmp_, io_, net_a_, net_b_, net_skip_, col_;
  DeviceBuffer<float> masked_;  // checkerboard couplings' net inputs
  DeviceBuffer<double> logp_, logdet_;
  DeviceBuffer<int32_t> labels_;
  DeviceBuffer<SampleParams> params_;
  SampleParams *host_params_ = nullptr;
  std::vector<double> host_logp_, host_logdet_;
  std::map<std::tuple<size_t, bool, bool>, CapturedDecoder> graphs_;
};

}  // namespace
}  // namespace cuda

std::unique_ptr<Backend> create_cuda_backend(const Graph &graph, const BackendOptions &options) {
  return std::make_unique<cuda::CudaBackend>(graph, options);
}

}  // namespace flowrt
