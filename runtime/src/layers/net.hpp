// Runs a coupling net or split prior (a PNet) on one CHW image: convs ping-pong between two
// scratch buffers, element-wise ops work in place, a residual source is copied aside until its
// add. The input is never modified.
#pragma once

#include <cstring>

#include "layers/channel_affine.hpp"
#include "layers/conv2d.hpp"

namespace flowrt::layers {

// scratch_a/scratch_b (and scratch_skip, when the net has residual adds) hold net.max_ch * h * w
// each. Returns the buffer holding the output.
template <typename T>
const T *run_net(const PNet<T> &net, const T *in, int64_t h, int64_t w, T *scratch_a, T *scratch_b,
                 T *scratch_skip, int threads) {
  const int64_t plane = h * w;
  const T *cur = in;
  int64_t ch = net.in_ch;
  T *next = scratch_a;
  for (size_t k = 0; k < net.ops.size(); ++k) {
    const PNetOp<T> &op = net.ops[k];
    if (net.is_residual_source(k)) std::memcpy(scratch_skip, cur, sizeof(T) * ch * plane);
    if (auto *c = std::get_if<PConv<T>>(&op)) {
      conv2d(*c, cur, h, w, next, threads);
      cur = next;
      next = (next == scratch_a) ? scratch_b : scratch_a;
      ch = c->out_ch;
      continue;
    }
    if (cur == in) {  // element-wise ops work in place: never on the caller's input
      std::memcpy(next, in, sizeof(T) * ch * plane);
      cur = next;
      next = (next == scratch_a) ? scratch_b : scratch_a;
    }
    T *x = const_cast<T *>(cur);
    if (auto *a = std::get_if<PChannelAffine<T>>(&op)) {
      channel_affine(a->scale.data(), a->shift.data(), ch, plane, x, false);
    } else if (auto *r = std::get_if<PResidualAdd>(&op)) {
      for (int64_t e = 0; e < ch * plane; ++e) x[e] += scratch_skip[e];
      if (r->relu)
        for (int64_t e = 0; e < ch * plane; ++e) x[e] = x[e] > T(0) ? x[e] : T(0);
    } else {
      for (int64_t k = 0; k < ch * plane; ++k) x[k] = x[k] > T(0) ? x[k] : T(0);
    }
  }
  return cur;
}

}  // namespace flowrt::layers
