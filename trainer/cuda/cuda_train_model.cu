// CudaTrainModel: TrainCompute on one CUDA device. The structure follows TrainModel
// (model/train_model.cpp) layer by layer: flow activations are NCHW batches, the coupling nets
// and split priors run on CNHW activations ([channels][batch * plane]) so that each convolution
// is one cuBLAS GEMM over the whole batch (im2col for 3x3 kernels, none for 1x1), and the tape
// keeps each layer's input, each net's activations (unless recompute) and each net's output.
// Parameters, gradients, Adam's moments and the EMA live in flat device arrays with
// ParamStore's layout, so one kernel each does the gradient norm, Adam and the EMA; a training
// step is launched without any host round trip and synchronised once, to read its loss.
// A CPU TrainModel of the same graph holds the host mirror of the parameters, exports the model
// and runs the one-off data-dependent actnorm initialisation (exactly the CPU trainer's).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "backends/cuda/cuda_backend.hpp"
#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_kernels.cuh"
#include "core/error.hpp"
#include "trainer/cuda/cuda_train_model.hpp"
#include "trainer/cuda/train_kernels.cuh"
#include "trainer/model/train_model.hpp"

namespace flowrt::train {
namespace {

namespace rt = flowrt::cuda;  // the runtime's forward kernels
namespace tk = train::cuda;   // the trainer's kernels
using rt::check;
using rt::DeviceBuffer;
using rt::Stream;

// A device array that grows on demand (contents are not kept when it grows).
template <typename T>
class DevVec {
 public:
  T *ensure(size_t n) {
    if (buf_.size() < n) buf_ = DeviceBuffer<T>(n);
    return buf_.get();
  }
  T *get() const { return buf_.get(); }

 private:
  DeviceBuffer<T> buf_;
};

// Page-locked host memory, for asynchronous copies.
template <typename T>
class Pinned {
 public:
  Pinned() = default;
  Pinned(const Pinned &) = delete;
  Pinned &operator=(const Pinned &) = delete;
  ~Pinned() {
    if (p_) cudaFreeHost(p_);
  }
  T *ensure(size_t n) {
    if (n > n_) {
      if (p_) cudaFreeHost(p_);
      p_ = nullptr;
      n_ = 0;
      check(cudaHostAlloc(reinterpret_cast<void **>(&p_), n * sizeof(T), cudaHostAllocDefault),
            "cudaHostAlloc");
      n_ = n;
    }
    return p_;
  }

 private:
  T *p_ = nullptr;
  size_t n_ = 0;
};

// Row-major GEMMs on cuBLAS (column-major): C = op(A) op(B) is C^T = op(B)^T op(A)^T.
class Blas {
 public:
  explicit Blas(cudaStream_t s) {
    check(cublasCreate(&h_), "cublasCreate");
    check(cublasSetStream(h_, s), "cublasSetStream");
  }
  Blas(const Blas &) = delete;
  Blas &operator=(const Blas &) = delete;
  ~Blas() {
    if (h_) cublasDestroy(h_);
  }
  // The arithmetic of every product: float data, the inputs rounded to TF32/BF16/FP16 on the
  // tensor cores for the reduced precisions (as the CUDA backend's).
  void set_compute(cublasComputeType_t t) { compute_ = t; }
  // C[M,N] = op(A)[M,K] op(B)[K,N] + beta C; lda/ldb/ldc are row strides as stored.
  void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
            const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
    const float one = 1.f;
    check(cublasGemmEx(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n),
                       int(m), int(k), &one, b, CUDA_R_32F, int(ldb), a, CUDA_R_32F, int(lda),
                       &beta, c, CUDA_R_32F, int(ldc), compute_, CUBLAS_GEMM_DEFAULT),
          "gemm");
  }
  // The same for `batch` independent products, operands `sa`, `sb`, `sc` floats apart.
  void gemm_batched(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, int64_t lda,
                    int64_t sa, const float *b, int64_t ldb, int64_t sb, float beta, float *c,
                    int64_t ldc, int64_t sc, int64_t batch) {
    const float one = 1.f;
    check(cublasGemmStridedBatchedEx(
              h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, int(n), int(m),
              int(k), &one, b, CUDA_R_32F, int(ldb), sb, a, CUDA_R_32F, int(lda), sa, &beta, c,
              CUDA_R_32F, int(ldc), sc, int(batch), compute_, CUBLAS_GEMM_DEFAULT),
          "gemm batched");
  }

 private:
  cublasHandle_t h_ = nullptr;
  cublasComputeType_t compute_ = CUBLAS_COMPUTE_32F;
};

class CudaTrainModel final : public TrainCompute<float> {
 public:
  explicit CudaTrainModel(const Graph &graph);

  ParamStore<float> &params() override { return host_.params(); }
  const ParamStore<float> &params() const override { return host_.params(); }
  double forward(const float *x, const int32_t *labels, int64_t n, bool data_init) override;
  void backward() override;
  const std::vector<double> &bits_per_dim() const override { return bpd_; }
  void set_recompute(bool on) override { recompute_ = on; }
  void set_precision(flowrt_precision p) override;
  Graph export_graph(const std::vector<float> &values) const override {
    return host_.export_graph(values);
  }
  StepOutcome train_step(const float *x, const int32_t *labels, int64_t n, Adam &adam,
                         std::vector<float> &ema, const StepArgs &a) override;
  void sync_to_host(Adam *adam, std::vector<float> *ema) override;
  void set_device_reducer(std::unique_ptr<DeviceReducer> r) override {
    r->plan(static_cast<size_t>(params_), host_.grad_layout());
    reducer_ = std::move(r);
  }
  void sync_to_device(const Adam *adam, const std::vector<float> *ema) override;
  // The device's memory in use (this process's allocations and its CUDA context).
  double device_memory_mib() const override {
    size_t free = 0, total = 0;
    check(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
    return static_cast<double>(total - free) / (1024.0 * 1024.0);
  }

 private:
  using HostLayer = TrainModel<float>::Layer;
  using HostNet = TrainModel<float>::Net;
  using HostNetOp = TrainModel<float>::NetOp;
  // The device side of the host model's layers (host_.layers(): kinds, shapes, conventions,
  // parameter ids, signs), op for op.
  struct NetOp {
    const HostNetOp *host = nullptr;
    tk::ConvShape geo;           // conv: host->geo for the kernels
    DeviceBuffer<float> sign;    // actnorm
    DevVec<float> scale, shift;  // actnorm, output scale: set by the forward pass
  };
  struct Net {
    const HostNet *host = nullptr;
    std::vector<NetOp> ops;
    std::vector<DevVec<float>> bufs;  // the tape (see TrainModel::Net)
    std::vector<int> act;
  };
  struct Layer {
    const HostLayer *host = nullptr;
    DeviceBuffer<float> sign;    // actnorm; LU sign of the diagonal
    DevVec<float> scale, shift;  // actnorm: set by the forward pass
    DeviceBuffer<int32_t> perm, source;
    DevVec<float> w, inv;         // LU: composed W; dense: W^-1
    DeviceBuffer<double> lad{1};  // dense log|det W|
    const float *w_used = nullptr;
    rt::CouplingArgs coupling{};
    DeviceBuffer<float> zeros;  // a standard-normal top prior's mean and log-std
    Net net;
    DevVec<float> input, h;  // tape
  };
  // A layer's sizes at batch B; for a coupling `first`/`second` are the conditioning and the
  // transformed half's first channel, for a split the leaving and the kept half's.
  struct LayerDims {
    int B, C, plane, H, W, half, first, second;
    int64_t in_n, out_n, ld;
    LayerDims(const HostLayer &l, int64_t batch)
        : B(int(batch)),
          C(int(l.in.c)),
          plane(int(l.in.plane())),
          H(int(l.in.h)),
          W(int(l.in.w)),
          half(C / 2),
          first(l.half == Half::First ? 0 : half),
          second(l.half == Half::First ? half : 0),
          in_n(l.in.numel()),
          out_n(l.out.numel()),
          ld(batch * l.in.plane()) {}
  };

  float *P(int id) const { return values_.get() + host_.params().info()[id].offset; }
  float *G(int id) const { return grads_.get() + host_.params().info()[id].offset; }
  Net make_net(const HostNet &src);
  // Uploads the signs (fixed in training, but set to +1 by the data-dependent initialisation).
  void load_signs();
  cudaStream_t s() const { return stream_.get(); }

  void reserve_batch(int64_t n);
  void run_forward(const float *x, const int32_t *labels, int64_t n);
  void fetch_bits_per_dim();
  void layer_forward(Layer &l);
  std::vector<DevVec<float>> &net_bufs(Net &net);
  const float *net_forward(Net &net, int h, int w);
  // dL/d(net output) in net_g_ -> returns dL/d(net input).
  const float *net_backward(Net &net, int h, int w);
  void recompute_net(Layer &l, int c0, int cn);
  void conv_forward(const tk::ConvShape &g, const float *wt, const float *x, float *y, int h,
                    int w);
  void conv_backward(const tk::ConvShape &g, const float *wt, const float *x, const float *dy,
                     float *dw, float *dbias, float *dx, int h, int w);
  // The backward pass; with `reducer`, its hooks around the layers (train_step).
  void run_backward(DeviceReducer *reducer);
  void layer_backward(Layer &l);
  void upload_values();
  void upload_adam(const Adam &adam);
  void upload_ema(const std::vector<float> &ema);
  void to_device(void *dst, const void *src, size_t bytes, const char *what);

  Stream stream_;
  Blas blas_{stream_.get()};
  TrainModel<float> host_;
  std::vector<Layer> layers_;
  int n_bits_ = 8;
  int64_t dims_ = 0, params_ = 0;
  bool recompute_ = false;
  // FP16 products underflow small gradients: the backward pass runs on the loss times
  // loss_scale_ (every gradient source is proportional to it), the update divides it out, a
  // step whose scaled gradients overflow is skipped and halves it, kGrowEvery clean steps in a
  // row double it (dynamic loss scaling). 1 at the other precisions.
  bool scale_loss_ = false;
  double loss_scale_ = 1;
  double grad_scale_ = 1;  // the scale the device's gradients carry (that of the last backward)
  int64_t clean_steps_ = 0;
  static constexpr double kInitialLossScale = 65536, kMaxLossScale = 16777216;
  static constexpr int64_t kGrowEvery = 1000;

  DeviceBuffer<float> values_, grads_, adam_m_, adam_v_, ema_;
  DeviceBuffer<int64_t> adam_t_{1};
  int64_t adam_t_mirror_ = 0;
  bool ema_on_ = false;
  // Whether host_.params() holds the device's values / gradients (no download needed).
  bool host_values_current_ = true, host_grads_current_ = true;
  DeviceBuffer<double> norm_partials_{tk::kNormPartials}, norm_sq_{1};
  DeviceBuffer<tk::UpdatePlan> plan_{1};

  // Batch state.
  int64_t batch_ = 0, capacity_ = 0;
  DeviceBuffer<float> act_[2], grad_buf_[2];
  float *cur_ = nullptr, *next_ = nullptr, *grad_ = nullptr, *dgrad_ = nullptr;
  DeviceBuffer<int32_t> labels_;
  DeviceBuffer<double> log_det_, log_prior_, bpd_dev_;
  std::vector<double> bpd_;
  double mean_bpd_ = 0;
  // Scratch.
  DevVec<float> col_, dcol_, net_g_, net_tmp_, dh_, parts_, dw_, da_;
  DevVec<double> inv_scratch_;
  std::vector<DevVec<float>> pool_;
  Pinned<float> x_host_;
  Pinned<int32_t> labels_host_;
  Pinned<double> bpd_host_;
  Pinned<tk::UpdatePlan> plan_host_;
  // Data-parallel: the ranks' mean gradient and loss. Last, so destroyed first: its collectives
  // have drained before the buffers they use go.
  std::unique_ptr<DeviceReducer> reducer_;
};

CudaTrainModel::CudaTrainModel(const Graph &graph) : host_(graph) {
  host_.set_recompute(true);  // the host model only ever runs the one-off initialisation
  n_bits_ = graph.image.n_bits;
  dims_ = graph.dims();
  params_ = static_cast<int64_t>(host_.params().size());
  values_ = rt::upload(host_.params().values());
  grads_ = rt::upload(std::vector<float>(params_, 0.f));
  adam_m_ = rt::upload(std::vector<float>(params_, 0.f));
  adam_v_ = rt::upload(std::vector<float>(params_, 0.f));
  adam_t_ = rt::upload(std::vector<int64_t>(1, 0));
  for (const HostLayer &hl : host_.layers()) {
    Layer l;
    l.host = &hl;
    if (hl.kind == HostLayer::InvConv && hl.form == InvConvForm::LU) l.perm = rt::upload(hl.perm);
    if (hl.kind == HostLayer::Permute) l.source = rt::upload(hl.source);
    if (hl.kind == HostLayer::Coupling)
      l.coupling = rt::CouplingArgs{hl.coupling.type, hl.coupling.split, hl.coupling.scale_fn,
                                    hl.coupling.form, hl.coupling.scale_bias};
    if (hl.kind == HostLayer::Top && hl.mean < 0)
      l.zeros = rt::upload(std::vector<float>(static_cast<size_t>(hl.in.numel()), 0.f));
    l.net = make_net(hl.net);
    layers_.push_back(std::move(l));
  }
  load_signs();
}

CudaTrainModel::Net CudaTrainModel::make_net(const HostNet &src) {
  Net net;
  net.host = &src;
  for (const HostNetOp &h : src.ops) {
    NetOp op;
    op.host = &h;
    op.geo =
        tk::ConvShape{int(h.geo.in_ch), int(h.geo.in_total), int(h.geo.out_ch),     int(h.geo.kh),
                      int(h.geo.kw),    h.geo.padding,       float(h.geo.pad_value)};
    net.ops.push_back(std::move(op));
  }
  net.bufs.resize(net.ops.size() + 1);
  return net;
}

void CudaTrainModel::load_signs() {
  for (Layer &l : layers_) {
    if (!l.host->sign.empty()) l.sign = rt::upload(l.host->sign);
    for (NetOp &op : l.net.ops)
      if (!op.host->sign.empty()) op.sign = rt::upload(op.host->sign);
  }
  // Synchronous copies on the legacy stream are not ordered before the model's own stream.
  check(cudaDeviceSynchronize(), "upload");
}

void CudaTrainModel::upload_values() {
  to_device(values_.get(), host_.params().values().data(), params_ * sizeof(float),
            "upload parameters");
  host_values_current_ = true;
}

void CudaTrainModel::set_precision(flowrt_precision p) {
  switch (p) {
    case FLOWRT_PRECISION_FP32:
      blas_.set_compute(CUBLAS_COMPUTE_32F);
      break;
    case FLOWRT_PRECISION_TF32:
      blas_.set_compute(CUBLAS_COMPUTE_32F_FAST_TF32);
      break;
    case FLOWRT_PRECISION_BF16:
      blas_.set_compute(CUBLAS_COMPUTE_32F_FAST_16BF);
      break;
    case FLOWRT_PRECISION_FP16:
      blas_.set_compute(CUBLAS_COMPUTE_32F_FAST_16F);
      break;
  }
  scale_loss_ = p == FLOWRT_PRECISION_FP16;
  loss_scale_ = scale_loss_ ? kInitialLossScale : 1.0;
  clean_steps_ = 0;
}

void CudaTrainModel::sync_to_host(Adam *adam, std::vector<float> *ema) {
  const size_t bytes = params_ * sizeof(float);
  if (!host_values_current_)
    check(cudaMemcpyAsync(host_.params().values().data(), values_.get(), bytes,
                          cudaMemcpyDeviceToHost, s()),
          "download parameters");
  const bool grads = !host_grads_current_;
  if (grads)
    check(cudaMemcpyAsync(host_.params().grads().data(), grads_.get(), bytes,
                          cudaMemcpyDeviceToHost, s()),
          "download gradients");
  if (adam) {
    adam->m.resize(params_);
    adam->v.resize(params_);
    check(cudaMemcpyAsync(adam->m.data(), adam_m_.get(), bytes, cudaMemcpyDeviceToHost, s()),
          "download Adam");
    check(cudaMemcpyAsync(adam->v.data(), adam_v_.get(), bytes, cudaMemcpyDeviceToHost, s()),
          "download Adam");
    adam->t = adam_t_mirror_;
  }
  if (ema && ema_on_) {
    ema->resize(params_);
    check(cudaMemcpyAsync(ema->data(), ema_.get(), bytes, cudaMemcpyDeviceToHost, s()),
          "download EMA");
  }
  check(cudaStreamSynchronize(s()), "download");
  check(cudaGetLastError(), "kernel launch");
  if (grads && grad_scale_ != 1)  // the gradients of the loss itself
    for (float &g : host_.params().grads()) g = static_cast<float>(g / grad_scale_);
  host_values_current_ = host_grads_current_ = true;
}

void CudaTrainModel::sync_to_device(const Adam *adam, const std::vector<float> *ema) {
  upload_values();
  if (adam) upload_adam(*adam);
  if (ema) upload_ema(*ema);
}

// Host -> device copies on the model's stream, complete on return (the host data may go away).
void CudaTrainModel::to_device(void *dst, const void *src, size_t bytes, const char *what) {
  check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, s()), what);
  check(cudaStreamSynchronize(s()), what);
}

void CudaTrainModel::upload_adam(const Adam &adam) {
  if (adam.m.size() != size_t(params_) || adam.v.size() != size_t(params_))
    invalid_argument("Adam's state has the wrong size for this model");
  to_device(adam_m_.get(), adam.m.data(), params_ * sizeof(float), "upload Adam");
  to_device(adam_v_.get(), adam.v.data(), params_ * sizeof(float), "upload Adam");
  to_device(adam_t_.get(), &adam.t, sizeof(int64_t), "upload Adam");
  adam_t_mirror_ = adam.t;
}

void CudaTrainModel::upload_ema(const std::vector<float> &ema) {
  ema_on_ = !ema.empty();
  if (!ema_on_) return;
  if (ema.size() != size_t(params_)) invalid_argument("the EMA has the wrong size for this model");
  if (ema_.size() != size_t(params_)) ema_ = DeviceBuffer<float>(params_);
  to_device(ema_.get(), ema.data(), params_ * sizeof(float), "upload EMA");
}

void CudaTrainModel::reserve_batch(int64_t n) {
  if (n < 1) invalid_argument("forward: empty batch");
  if (n > 65535)  // per-image reductions put images on the grid's y dimension
    invalid_argument("the CUDA trainer's batch is at most 65535, got " + std::to_string(n));
  batch_ = n;
  if (n <= capacity_) return;
  const size_t count = static_cast<size_t>(n * dims_);
  for (int k = 0; k < 2; ++k) {
    act_[k] = DeviceBuffer<float>(count);
    grad_buf_[k] = DeviceBuffer<float>(count);
  }
  labels_ = DeviceBuffer<int32_t>(n);
  log_det_ = DeviceBuffer<double>(n);
  log_prior_ = DeviceBuffer<double>(n);
  bpd_dev_ = DeviceBuffer<double>(n + 1);
  capacity_ = n;
}

void CudaTrainModel::run_forward(const float *x, const int32_t *labels, int64_t n) {
  reserve_batch(n);
  const size_t count = static_cast<size_t>(n * dims_);
  float *hx = x_host_.ensure(count);
  std::memcpy(hx, x, count * sizeof(float));
  int32_t *hl = labels_host_.ensure(n);
  for (int64_t b = 0; b < n; ++b) hl[b] = labels ? labels[b] : -1;
  cur_ = act_[0].get();
  next_ = act_[1].get();
  check(cudaMemcpyAsync(cur_, hx, count * sizeof(float), cudaMemcpyHostToDevice, s()), "images");
  check(cudaMemcpyAsync(labels_.get(), hl, n * sizeof(int32_t), cudaMemcpyHostToDevice, s()),
        "labels");
  check(cudaMemsetAsync(log_det_.get(), 0, n * sizeof(double), s()), "memset");
  check(cudaMemsetAsync(log_prior_.get(), 0, n * sizeof(double), s()), "memset");
  for (Layer &l : layers_) layer_forward(l);
  tk::bits_per_dim(log_det_.get(), log_prior_.get(), int(n), double(dims_), n_bits_, bpd_dev_.get(),
                   s());
}

void CudaTrainModel::fetch_bits_per_dim() {
  double *h = bpd_host_.ensure(batch_ + 1);
  check(cudaMemcpyAsync(h, bpd_dev_.get(), (batch_ + 1) * sizeof(double), cudaMemcpyDeviceToHost,
                        s()),
        "bits/dim");
  check(cudaStreamSynchronize(s()), "training step");
  check(cudaGetLastError(), "kernel launch");
  bpd_.assign(h, h + batch_);
  mean_bpd_ = h[batch_];
}

double CudaTrainModel::forward(const float *x, const int32_t *labels, int64_t n, bool data_init) {
  if (data_init) {
    sync_to_host(nullptr, nullptr);
    host_.forward(x, labels, n, true);
    host_.release_tape();
    upload_values();
    load_signs();
  }
  run_forward(x, labels, n);
  fetch_bits_per_dim();
  return mean_bpd_;
}

std::vector<DevVec<float>> &CudaTrainModel::net_bufs(Net &net) {
  if (!recompute_) return net.bufs;
  if (pool_.size() < net.bufs.size()) pool_.resize(net.bufs.size());
  return pool_;
}

void CudaTrainModel::conv_forward(const tk::ConvShape &g, const float *wt, const float *x, float *y,
                                  int h, int w) {
  const int64_t ld = batch_ * h * w;
  if (g.kh == 1 && g.kw == 1) {  // the edge channel is 0 wherever a 1x1 kernel reads
    blas_.gemm(false, false, g.out_ch, ld, g.in_ch, wt, g.in_total, x, ld, 0.f, y, ld);
    return;
  }
  const int64_t k = g.k_total();
  float *col = col_.ensure(static_cast<size_t>(k * ld));
  tk::im2col(g, int(batch_), h, w, x, col, s());
  blas_.gemm(false, false, g.out_ch, ld, k, wt, k, col, ld, 0.f, y, ld);
}

void CudaTrainModel::conv_backward(const tk::ConvShape &g, const float *wt, const float *x,
                                   const float *dy, float *dw, float *dbias, float *dx, int h,
                                   int w) {
  const int64_t ld = batch_ * h * w;
  if (dbias) tk::row_sums_add(dy, g.out_ch, ld, dbias, s());
  if (g.kh == 1 && g.kw == 1) {
    blas_.gemm(false, true, g.out_ch, g.in_ch, ld, dy, ld, x, ld, 1.f, dw, g.in_total);
    blas_.gemm(true, false, g.in_ch, ld, g.out_ch, wt, g.in_total, dy, ld, 0.f, dx, ld);
    return;
  }
  const int64_t k = g.k_total();
  float *col = col_.ensure(static_cast<size_t>(k * ld));
  tk::im2col(g, int(batch_), h, w, x, col, s());
  blas_.gemm(false, true, g.out_ch, k, ld, dy, ld, col, ld, 1.f, dw, k);
  float *dcol = dcol_.ensure(static_cast<size_t>(k * ld));
  blas_.gemm(true, false, k, ld, g.out_ch, wt, k, dy, ld, 0.f, dcol, ld);
  tk::col2im(g, int(batch_), h, w, dcol, dx, s());
}

const float *CudaTrainModel::net_forward(Net &net, int h, int w) {
  std::vector<DevVec<float>> &bufs = net_bufs(net);
  const int64_t ld = batch_ * h * w;
  net.act.assign(net.ops.size() + 1, 0);
  int cur = 0, used = 1, ch = int(net.host->in_ch);
  for (size_t k = 0; k < net.ops.size(); ++k) {
    NetOp &op = net.ops[k];
    if (op.host->kind == HostNetOp::Relu) {
      rt::add_bias(nullptr, 0.f, true, Shape3{ch, 1, ld}, 1, 0, bufs[cur].get(), s());
      net.act[k + 1] = cur;
      continue;
    }
    const int out = used++;
    const float *x = bufs[cur].get();
    if (op.host->kind == HostNetOp::Conv) {
      const bool relu = k + 1 < net.ops.size() && net.ops[k + 1].host->kind == HostNetOp::Relu;
      float *y = bufs[out].ensure(static_cast<size_t>(op.geo.out_ch * ld));
      conv_forward(op.geo, P(op.host->weight), x, y, h, w);
      rt::add_bias(op.host->bias >= 0 ? P(op.host->bias) : nullptr, 1.f, relu,
                   Shape3{op.geo.out_ch, 1, ld}, 1, 0, y, s());
      ch = op.geo.out_ch;
      if (relu) {
        net.act[k + 1] = out;
        net.act[k + 2] = out;
        cur = out;
        ++k;
        continue;
      }
    } else {
      float *scale = op.scale.ensure(ch), *shift = op.shift.ensure(ch);
      if (op.host->kind == HostNetOp::ActNorm)
        tk::scale_shift(op.sign.get(), P(op.host->log_scale), 1.f, P(op.host->bias), ch, scale,
                        shift, s());
      else
        tk::scale_shift(nullptr, P(op.host->log_scale), op.host->factor, nullptr, ch, scale, shift,
                        s());
      float *y = bufs[out].ensure(static_cast<size_t>(ch * ld));
      check(cudaMemcpyAsync(y, x, ch * ld * sizeof(float), cudaMemcpyDeviceToDevice, s()),
            "net copy");
      rt::channel_affine(scale, shift, Shape3{ch, 1, ld}, 1, 0, y, false, s());
    }
    net.act[k + 1] = out;
    cur = out;
  }
  return bufs[cur].get();
}

const float *CudaTrainModel::net_backward(Net &net, int h, int w) {
  std::vector<DevVec<float>> &bufs = net_bufs(net);
  const int64_t ld = batch_ * h * w;
  DevVec<float> *g = &net_g_, *other = &net_tmp_;
  int ch = int(net.host->out_ch);
  const float *relu_out = nullptr;  // a ReLU after a conv: masked just before the conv's pass
  for (size_t k = net.ops.size(); k-- > 0;) {
    NetOp &op = net.ops[k];
    const float *x = bufs[net.act[k]].get();
    const float *y = bufs[net.act[k + 1]].get();
    switch (op.host->kind) {
      case HostNetOp::Add:  // refused when the model is built (check_cuda_trainable)
        fail(FLOWRT_INTERNAL_ERROR, "--device cuda: a residual connection reached the GPU trainer");
      case HostNetOp::Relu:
        if (k > 0 && net.ops[k - 1].host->kind == HostNetOp::Conv)
          relu_out = y;
        else
          tk::relu_mask(ch * ld, y, g->get(), s());
        break;
      case HostNetOp::OutputScale:  // op.scale: computed by the forward pass
        tk::output_scale_backward(ch, ld, op.scale.get(), op.host->factor, y, g->get(),
                                  G(op.host->log_scale), s());
        break;
      case HostNetOp::ActNorm:
        tk::actnorm_backward(tk::ChannelView::cnhw(int(batch_), ch, h * w), x, g->get(),
                             op.scale.get(), P(op.host->bias), 0.f, G(op.host->bias),
                             G(op.host->log_scale), s());
        break;
      case HostNetOp::Conv: {
        if (relu_out) tk::relu_mask(op.geo.out_ch * ld, relu_out, g->get(), s());
        relu_out = nullptr;
        float *dx = other->ensure(static_cast<size_t>(op.geo.in_ch * ld));
        conv_backward(op.geo, P(op.host->weight), x, g->get(), G(op.host->weight),
                      op.host->bias >= 0 ? G(op.host->bias) : nullptr, dx, h, w);
        std::swap(g, other);
        ch = op.geo.in_ch;
        break;
      }
    }
  }
  if (g != &net_g_) std::swap(net_g_, net_tmp_);  // the result stays in net_g_
  return net_g_.get();
}

void CudaTrainModel::recompute_net(Layer &l, int c0, int cn) {
  const Shape3 &in = l.host->in;
  const int plane = int(in.plane());
  float *in0 = net_bufs(l.net)[0].ensure(static_cast<size_t>(cn * batch_ * plane));
  tk::gather_cnhw(l.input.get(), int(batch_), int(in.c), plane, c0, cn, in0, s());
  net_forward(l.net, int(in.h), int(in.w));
}

void CudaTrainModel::layer_forward(Layer &l) {
  const HostLayer &hl = *l.host;
  const LayerDims d(hl, batch_);
  const int B = d.B, C = d.C, plane = d.plane, H = d.H, W = d.W;
  const int64_t in_n = d.in_n, out_n = d.out_n, ld = d.ld;
  if (hl.kind != HostLayer::Squeeze && hl.kind != HostLayer::Permute &&
      hl.kind != HostLayer::Flatten)
    check(cudaMemcpyAsync(l.input.ensure(B * in_n), cur_, B * in_n * sizeof(float),
                          cudaMemcpyDeviceToDevice, s()),
          "tape");
  switch (hl.kind) {
    case HostLayer::Squeeze:
      rt::squeeze(hl.order, hl.in, B, in_n, cur_, next_, false, s());
      std::swap(cur_, next_);
      break;
    case HostLayer::Permute:
      rt::permute(l.source.get(), hl.in, B, in_n, cur_, next_, false, s());
      std::swap(cur_, next_);
      break;
    case HostLayer::ActNorm: {
      float *scale = l.scale.ensure(C), *shift = l.shift.ensure(C);
      tk::scale_shift(l.sign.get(), P(hl.log_scale), 1.f, P(hl.bias), C, scale, shift, s());
      rt::channel_affine(scale, shift, hl.in, B, in_n, cur_, false, s());
      tk::add_scaled_sum(P(hl.log_scale), C, plane, log_det_.get(), B, s());
      break;
    }
    case HostLayer::InvConv: {
      if (hl.form == InvConvForm::LU) {
        float *w = l.w.ensure(static_cast<size_t>(C) * C);
        tk::lu_compose(C, l.perm.get(), P(hl.lower), P(hl.upper), l.sign.get(), P(hl.log_s), w,
                       s());
        tk::add_scaled_sum(P(hl.log_s), C, plane, log_det_.get(), B, s());
        l.w_used = w;
      } else {
        l.w_used = P(hl.weight);
        tk::dense_inverse(C, l.w_used, inv_scratch_.ensure(2 * static_cast<size_t>(C) * C),
                          l.lad.get(), l.inv.ensure(static_cast<size_t>(C) * C), s());
        tk::add_scaled_value(l.lad.get(), plane, log_det_.get(), B, s());
      }
      blas_.gemm_batched(false, false, C, plane, C, l.w_used, C, 0, cur_, plane, in_n, 0.f, next_,
                         plane, in_n, B);
      std::swap(cur_, next_);
      break;
    }
    case HostLayer::Coupling: {
      const int cb = d.half, ch = int(hl.net.out_ch), a0 = d.first, b0 = d.second;
      float *in0 = net_bufs(l.net)[0].ensure(static_cast<size_t>(cb * ld));
      tk::gather_cnhw(cur_, B, C, plane, a0, cb, in0, s());
      const float *hc = net_forward(l.net, H, W);
      float *h = l.h.ensure(static_cast<size_t>(B) * ch * plane);
      tk::scatter_nchw(hc, B, ch, plane, 0, ch, h, false, s());
      rt::coupling(l.coupling, h, int64_t(ch) * plane, cur_ + int64_t(b0) * plane, in_n, cb, plane,
                   B, log_det_.get(), false, s());
      break;
    }
    case HostLayer::Split: {
      const int cz = d.half, lo = d.first, ko = d.second;
      const float *prior = nullptr;
      if (!hl.net.empty()) {
        float *in0 = net_bufs(l.net)[0].ensure(static_cast<size_t>(cz * ld));
        tk::gather_cnhw(cur_, B, C, plane, ko, cz, in0, s());
        const float *o = net_forward(l.net, H, W);
        float *h = l.h.ensure(static_cast<size_t>(B) * 2 * cz * plane);
        tk::scatter_nchw(o, B, 2 * cz, plane, 0, 2 * cz, h, false, s());
        prior = h;
      }
      rt::split_log_prob(cur_ + int64_t(lo) * plane, in_n, prior, int64_t(2) * cz * plane,
                         hl.layout, cz, plane, B, log_prior_.get(), s());
      check(cudaMemcpy2DAsync(next_, out_n * sizeof(float), cur_ + int64_t(ko) * plane,
                              in_n * sizeof(float), out_n * sizeof(float), B,
                              cudaMemcpyDeviceToDevice, s()),
            "split");
      std::swap(cur_, next_);
      break;
    }
    case HostLayer::Top: {
      const float *mean = hl.mean >= 0 ? P(hl.mean) : l.zeros.get();
      const float *ls = hl.log_std >= 0 ? P(hl.log_std) : l.zeros.get();
      rt::top_log_prob(cur_, in_n, mean, ls, hl.offsets >= 0 ? P(hl.offsets) : nullptr,
                       labels_.get(), C, plane, B, log_prior_.get(), s());
      break;
    }
    case HostLayer::Flatten:  // the NCHW memory already is the flattened vector
      break;
    case HostLayer::Logit:
    case HostLayer::BatchNorm:
      invalid_argument("cuda trainer: layer '" + hl.name + "' is not implemented");
  }
}

void CudaTrainModel::backward() {
  run_backward(nullptr);
}

void CudaTrainModel::run_backward(DeviceReducer *reducer) {
  if (batch_ < 1) invalid_argument("backward without a forward pass");
  grad_scale_ = loss_scale_;
  host_grads_current_ = false;
  check(cudaMemsetAsync(grads_.get(), 0, params_ * sizeof(float), s()), "memset");
  grad_ = grad_buf_[0].get();
  dgrad_ = grad_buf_[1].get();
  check(cudaMemsetAsync(grad_, 0, batch_ * layers_.back().host->in.numel() * sizeof(float), s()),
        "memset");
  // Layer i's backward pass writes only the gradients of its own parameters (grad_layout()):
  // once it is enqueued, the reducer may take every bucket no layer still to come writes.
  if (reducer) reducer->begin(grads_.get(), bpd_dev_.get() + batch_, s());
  for (size_t i = layers_.size(); i-- > 0;) {
    layer_backward(layers_[i]);
    if (reducer) reducer->layer_done(i, s());
  }
  if (reducer) reducer->finish(s());
}

void CudaTrainModel::layer_backward(Layer &l) {
  const HostLayer &hl = *l.host;
  const LayerDims d(hl, batch_);
  const int B = d.B, C = d.C, plane = d.plane, H = d.H, W = d.W;
  const int64_t in_n = d.in_n, out_n = d.out_n, ld = d.ld;
  // dL/dlog p of every image, and of every per-image log-determinant term (as the CPU's), times
  // the loss scale.
  const float w =
      static_cast<float>(-loss_scale_ / (static_cast<double>(B) * dims_ * std::log(2.0)));
  const float logdet_weight = static_cast<float>(int64_t(B) * plane) * w;
  switch (hl.kind) {
    case HostLayer::Squeeze:
      rt::squeeze(hl.order, hl.in, B, in_n, grad_, dgrad_, true, s());
      std::swap(grad_, dgrad_);
      break;
    case HostLayer::Permute:
      rt::permute(l.source.get(), hl.in, B, in_n, grad_, dgrad_, true, s());
      std::swap(grad_, dgrad_);
      break;
    case HostLayer::ActNorm: {  // l.scale: computed by the forward pass, same parameters
      tk::actnorm_backward(tk::ChannelView::nchw(B, C, plane), l.input.get(), grad_, l.scale.get(),
                           P(hl.bias), logdet_weight, G(hl.bias), G(hl.log_scale), s());
      break;
    }
    case HostLayer::InvConv: {
      const size_t cc = static_cast<size_t>(C) * C;
      blas_.gemm_batched(true, false, C, plane, C, l.w_used, C, 0, grad_, plane, in_n, 0.f, dgrad_,
                         plane, in_n, B);
      float *parts = parts_.ensure(B * cc), *dw = dw_.ensure(cc);
      blas_.gemm_batched(false, true, C, C, plane, grad_, plane, in_n, l.input.get(), plane, in_n,
                         0.f, parts, C, int64_t(cc), B);
      tk::sum_parts(parts, B, int64_t(cc), dw, s());
      if (hl.form == InvConvForm::LU)
        tk::lu_backward(C, l.perm.get(), P(hl.lower), P(hl.upper), l.sign.get(), P(hl.log_s), dw,
                        logdet_weight, da_.ensure(cc), G(hl.lower), G(hl.upper), G(hl.log_s), s());
      else
        tk::add_dense_grad(C, dw, l.inv.get(), logdet_weight, G(hl.weight), s());
      std::swap(grad_, dgrad_);
      break;
    }
    case HostLayer::Coupling: {
      const int cb = d.half, ch = int(hl.net.out_ch), a0 = d.first, b0 = d.second;
      check(cudaMemcpy2DAsync(dgrad_ + int64_t(a0) * plane, in_n * sizeof(float),
                              grad_ + int64_t(a0) * plane, in_n * sizeof(float),
                              size_t(cb) * plane * sizeof(float), B, cudaMemcpyDeviceToDevice, s()),
            "coupling");
      float *dh = dh_.ensure(static_cast<size_t>(B) * ch * plane);
      tk::coupling_backward(l.coupling, l.h.get(), int64_t(ch) * plane,
                            l.input.get() + int64_t(b0) * plane, grad_ + int64_t(b0) * plane, in_n,
                            cb, plane, B, w, dgrad_ + int64_t(b0) * plane, dh, s());
      tk::gather_cnhw(dh, B, ch, plane, 0, ch, net_g_.ensure(static_cast<size_t>(ch * ld)), s());
      if (recompute_) recompute_net(l, a0, cb);
      const float *din = net_backward(l.net, H, W);
      tk::scatter_nchw(din, B, C, plane, a0, cb, dgrad_, true, s());
      std::swap(grad_, dgrad_);
      break;
    }
    case HostLayer::Split: {
      const int cz = d.half, lo = d.first, ko = d.second;
      check(cudaMemcpy2DAsync(dgrad_ + int64_t(ko) * plane, in_n * sizeof(float), grad_,
                              out_n * sizeof(float), out_n * sizeof(float), B,
                              cudaMemcpyDeviceToDevice, s()),
            "split");
      const bool net = !hl.net.empty();
      float *dprior = net ? dh_.ensure(static_cast<size_t>(B) * 2 * cz * plane) : nullptr;
      tk::split_backward(l.input.get() + int64_t(lo) * plane, in_n, net ? l.h.get() : nullptr,
                         int64_t(2) * cz * plane, hl.layout, cz, plane, B, w,
                         dgrad_ + int64_t(lo) * plane, dprior, s());
      if (net) {
        tk::gather_cnhw(dprior, B, 2 * cz, plane, 0, 2 * cz,
                        net_g_.ensure(static_cast<size_t>(2 * cz * ld)), s());
        if (recompute_) recompute_net(l, ko, cz);
        const float *din = net_backward(l.net, H, W);
        tk::scatter_nchw(din, B, C, plane, ko, cz, dgrad_, true, s());
      }
      std::swap(grad_, dgrad_);
      break;
    }
    case HostLayer::Top: {
      const float *mean = hl.mean >= 0 ? P(hl.mean) : l.zeros.get();
      const float *ls = hl.log_std >= 0 ? P(hl.log_std) : l.zeros.get();
      tk::top_backward(l.input.get(), in_n, mean, ls, hl.offsets >= 0 ? P(hl.offsets) : nullptr,
                       labels_.get(), C, plane, B, int(hl.n_classes), w, grad_,
                       hl.mean >= 0 ? G(hl.mean) : nullptr,
                       hl.log_std >= 0 ? G(hl.log_std) : nullptr,
                       hl.offsets >= 0 ? G(hl.offsets) : nullptr, s());
      break;
    }
    case HostLayer::Flatten:
      break;
    case HostLayer::Logit:
    case HostLayer::BatchNorm:
      invalid_argument("cuda trainer: layer '" + hl.name + "' is not implemented");
  }
}

StepOutcome CudaTrainModel::train_step(const float *x, const int32_t *labels, int64_t n, Adam &adam,
                                       std::vector<float> &ema, const StepArgs &a) {
  // Optimiser state the device has not seen (a fresh Adam is zeros, as the device starts).
  if (adam.t != adam_t_mirror_) upload_adam(adam);
  const bool use_ema = a.ema_decay > 0 && !ema.empty();
  if (use_ema && !ema_on_) upload_ema(ema);
  host_values_current_ = false;  // the update below changes them
  run_forward(x, labels, n);
  run_backward(reducer_.get());
  tk::sum_squares(grads_.get(), params_, norm_partials_.get(), norm_sq_.get(), s());
  tk::plan_update(norm_sq_.get(), bpd_dev_.get() + n, loss_scale_, a.clip, a.lr, adam.beta1,
                  adam.beta2, adam_t_.get(), plan_.get(), s());
  tk::adam_update(plan_.get(), params_, grads_.get(), static_cast<float>(adam.beta1),
                  static_cast<float>(adam.beta2), static_cast<float>(adam.eps), values_.get(),
                  adam_m_.get(), adam_v_.get(), s());
  if (use_ema)
    tk::ema_update(plan_.get(), params_, values_.get(), static_cast<float>(a.ema_decay),
                   static_cast<float>(1.0 - a.ema_decay), ema_.get(), s());
  tk::UpdatePlan *plan = plan_host_.ensure(1);
  check(cudaMemcpyAsync(plan, plan_.get(), sizeof(tk::UpdatePlan), cudaMemcpyDeviceToHost, s()),
        "update");
  fetch_bits_per_dim();
  StepOutcome o;
  o.loss = mean_bpd_;
  o.update.grad_norm = plan->grad_norm;
  o.update.applied = plan->applied != 0;
  if (o.update.applied) adam.t = ++adam_t_mirror_;
  if (scale_loss_ && std::isfinite(o.loss)) {
    if (!o.update.applied) {
      o.update.loss_scale_overflow = true;
      loss_scale_ = std::max(1.0, loss_scale_ / 2);
      clean_steps_ = 0;
    } else if (++clean_steps_ >= kGrowEvery) {
      loss_scale_ = std::min(kMaxLossScale, loss_scale_ * 2);
      clean_steps_ = 0;
    }
  }
  return o;
}

// The layers and options of formats 1.1 and 1.2 the device code has no kernels for (flatten moves
// no data, so it runs as it is).
const char *unsupported_on_device(const LayerOp &op) {
  if (std::holds_alternative<LogitLayer>(op)) return "a logit layer";
  if (std::holds_alternative<BatchNormLayer>(op)) return "a batch norm";
  if (auto *c = std::get_if<CouplingLayer>(&op)) {
    if (is_checkerboard(c->conditioning)) return "a checkerboard coupling";
    if (c->type == CouplingType::Affine && c->scale_fn == ScaleFunction::Tanh)
      return "a coupling with the tanh scale";
    if (c->net.has_residual()) return "a coupling whose net has residual connections";
  }
  if (auto *s = std::get_if<SplitLayer>(&op))
    if (s->prior.has_residual()) return "a split whose prior has residual connections";
  return nullptr;
}

}  // namespace

void check_cuda_trainable(const Graph &graph) {
  for (const Layer &l : graph.layers)
    if (const char *what = unsupported_on_device(l.op))
      fail(FLOWRT_UNSUPPORTED, "--device cuda: layer '" + l.name + "' is " + what +
                                   ", which the GPU trainer does not implement (train this "
                                   "model with --device cpu)");
}

std::unique_ptr<TrainCompute<float>> make_cuda_train_compute(const Graph &graph, int device) {
  check_cuda_trainable(graph);
  if (!cuda_device_available(device))
    fail(FLOWRT_DEVICE_ERROR, "--device cuda: no usable CUDA device " + std::to_string(device) +
                                  " (no driver, or no GPU)");
  check(cudaSetDevice(device), "cudaSetDevice");
  return std::make_unique<CudaTrainModel>(graph);
}

}  // namespace flowrt::train
