// TrainModel: the CPU training implementation of a Graph. Forward passes reuse the runtime's
// layer kernels (runtime/src/layers) image by image, except the nets' convolutions, which run
// batched (im2col + GEMM, trainer/layers/conv_backward.hpp), and the couplings' element-wise
// half, logit and batch norm (trainer/layers). The forward pass keeps every
// layer's input and every net activation (the tape; with recompute only the inputs, and the nets
// run again in backward); backward passes are in
// trainer/layers/*_backward.hpp. Instantiated for float (training) and double (gradient tests).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "layers/coupling.hpp"
#include "model/graph.hpp"
#include "trainer/layers/conv_backward.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

template <typename T>
class TrainModel final : public TrainCompute<T> {
 public:
  explicit TrainModel(const Graph &graph);

  ParamStore<T> &params() override { return params_; }
  const ParamStore<T> &params() const override { return params_; }
  double forward(const T *x, const int32_t *labels, int64_t n, bool data_init) override;
  void backward() override;
  const std::vector<double> &bits_per_dim() const override { return bpd_; }
  void set_recompute(bool on) override { recompute_ = on; }
  // fp32, or bf16 (float only, on CPUs with bf16 units): the nets' convolutions take bf16
  // inputs and weights and accumulate in fp32, forward and both backward products; parameters,
  // gradients, the optimiser and everything else stay fp32. Each operand is rounded once per
  // step, where it is made: the weights at the forward, a ReLU's output in the pass that
  // computes it (and kept in bf16 only when the next conv reads nothing else), an output
  // gradient in the pass that masks it; every product that reads it again takes that copy.
  void set_precision(flowrt_precision p) override;
  Graph export_graph(const std::vector<T> &values) const override;

  // The log-likelihood (nats) of each image of the last forward.
  const std::vector<double> &log_p() const { return log_p_; }
  // d(mean bits/dim)/d(forward's input x) of the last backward (NCHW, the batch).
  const std::vector<T> &input_grad() const { return grad_; }
  const std::vector<double> &layer_log_p() const override { return layer_log_p_; }

  // The model's structure as built from the graph: each layer's kind, shapes, conventions,
  // parameter ids (into params()) and signs, and its nets' ops. The CUDA trainer builds its
  // device model from it.
  struct NetOp {
    enum Kind { Conv, ActNorm, Relu, OutputScale, Add } kind = Conv;
    int from = -1;        // add: the op whose input it adds
    bool source = false;  // this op's input is kept for a later add
    ConvGeometry geo;
    int weight = -1, bias = -1;  // conv (bias -1: none); actnorm bias
    int log_scale = -1;          // actnorm log|s|, output scale log_scale
    std::vector<T> sign;         // actnorm
    T factor = 3;                // output scale
  };
  struct Net {
    std::vector<NetOp> ops;
    int64_t in_ch = 0, out_ch = 0;
    // Tape: act[k] is the buffer holding op k's input (act[ops.size()] the output); ReLU works in
    // place, so its input and output share a buffer (unless it is a residual source).
    std::vector<std::vector<T>> bufs;
    std::vector<int> act;
    // bf16 products: the bf16 copy of a buffer that a conv reads (made by its forward, read
    // again by its weight gradient), by buffer index.
    std::vector<Bf16Copy> bufs16;
    bool empty() const { return ops.empty(); }
  };
  struct Layer {
    enum Kind {
      Squeeze,
      ActNorm,
      InvConv,
      Permute,
      Coupling,
      Split,
      Top,
      Logit,
      Flatten,
      BatchNorm
    } kind = Squeeze;
    std::string name;
    Shape3 in, out;
    SqueezeOrder order = SqueezeOrder::ChannelMajor;
    int bias = -1, log_scale = -1;  // actnorm
    std::vector<T> sign;            // actnorm sign of s; LU sign of the diagonal
    InvConvForm form = InvConvForm::LU;
    int weight = -1, lower = -1, upper = -1, log_s = -1;
    std::vector<int32_t> perm;    // LU
    std::vector<T> w;             // W of the last forward
    std::vector<int32_t> source;  // permute
    PCoupling<T> coupling{};      // element-wise settings (its net and scale_weight stay empty)
    Half half = Half::First;      // coupling conditioning / split leaving
    int scale_weight = -1;        // coupling with the tanh scale: its [C_b] weights
    // Checkerboard coupling: the positions it transforms (mask m = 0), and m itself.
    std::vector<uint8_t> active;
    std::vector<T> mask;
    double alpha = 0;  // logit
    // Batch norm: beta, log|gamma| (sign in `sign`), the running averages (parameters that take
    // no gradient: the forward pass in Mode::Train updates them), eps and momentum; tape: the
    // statistics of the last forward and whether they were the batch's.
    int beta = -1, log_gamma = -1, running_mean = -1, running_var = -1;
    double eps = 0, momentum = 0;
    std::vector<double> stat_mean, stat_inv_std;
    bool batch_stats = false;
    PriorLayout layout = PriorLayout::MeanLogstdHalves;
    TopPriorKind top_kind = TopPriorKind::StandardNormal;
    int mean = -1, log_std = -1, offsets = -1;
    int64_t n_classes = 0;
    Net net;  // coupling net or split prior
    // Tape: the layer's input, and the net output h / prior output (NCHW).
    std::vector<T> input, h;
  };

  const std::vector<Layer> &layers() const { return layers_; }
  // The gradient ranges each layer's backward pass writes (its parameters and its net's, in
  // params()' layout), one list per layer, sorted and merged.
  GradLayout grad_layout() const;
  // Frees the tape and scratch of the last passes (a model kept only for its parameters and
  // structure).
  void release_tape();

 private:
  Net build_net(const flowrt::Net &net, const std::string &prefix);
  const T *net_forward(Net &net, const BatchGeometry &bg, bool data_init);
  void net_backward(Net &net, const BatchGeometry &bg, std::vector<T> &dout, std::vector<T> &din);
  void layer_forward(Layer &l, bool data_init);
  // The net's input (net.bufs[0], CNHW) from the NCHW batch x: channels [c0, c0 + cn) (a channel
  // coupling, a split), or a checkerboard's x * m and the mask channel.
  void net_input(Layer &l, const BatchGeometry &bg, const T *x, int64_t c0, int64_t cn);
  void batchnorm_forward(Layer &l, bool data_init);
  // With recompute_, a net's activations live in pool_ except while it runs: swapping them in
  // and out makes every net share one set of buffers.
  void swap_pool(Net &net);
  // bf16 products only (null otherwise): the bf16 copy of parameter `id` (weights16_), and of a
  // conv's input buffer when its products read it directly.
  const uint16_t *weights16(int id);
  const uint16_t *input16(Net &net, int buf, const ConvGeometry &g, const BatchGeometry &bg);
  // Whether net op k (an actnorm or a conv), the ReLU after it and the conv after that hand
  // over the ReLU's output in bf16 only: the actnorm's or the conv's output pass writes the next
  // conv's operand (bf16 products; neither the ReLU's nor the conv's input kept for an add; a
  // conv whose products read its input directly).
  bool relu_into_bf16(const Net &net, size_t k) const;
  // Runs a layer's net again on channels [c0, c0 + cn) of its stored input (recompute mode).
  void recompute_net(Layer &l, const BatchGeometry &bg, int64_t c0, int64_t cn);
  void layer_backward(Layer &l);

  Graph template_;  // the structure (and fixed tensors) export starts from
  ParamStore<T> params_;
  std::vector<Layer> layers_;
  int n_bits_ = 8;
  int64_t dims_ = 0;
  // State of the last forward.
  int64_t batch_ = 0;
  std::vector<int32_t> labels_;
  std::vector<T> cur_, next_, grad_, dgrad_;
  std::vector<double> log_det_, log_prior_, log_p_, bpd_;
  std::vector<double> layer_log_p_;  // [layer][image]
  // Scratch for convolutions and the nets' gradients.
  std::vector<T> col_, dcol_, net_g_, net_dg_, net_skip_g_, cnhw_;
  std::vector<T> product_;  // a conv's fp32 product whose ReLU'd output is kept in bf16 only
  bool recompute_ = false;
  bool bf16_ = false;
  // bf16 products: every parameter in bf16, converted once per forward (the weights do not
  // change until the update), and the output-gradient copy conv_backward makes.
  Bf16Copy weights16_, grad16_;
  std::vector<std::vector<T>> pool_;
  std::vector<Bf16Copy> pool16_;
};

}  // namespace flowrt::train
