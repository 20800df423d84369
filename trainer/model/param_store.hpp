// Every trainable tensor of a model in one flat vector (plus a gradient vector of the same
// layout), so the optimiser, gradient clipping, EMA and checkpoints treat a model as one array.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace flowrt::train {

struct ParamInfo {
  std::string name;  // "level0/step3/coupling/net0.weight"
  std::vector<int64_t> shape;
  size_t offset = 0, size = 0;
};

template <typename T>
class ParamStore {
 public:
  int add(std::string name, std::vector<int64_t> shape, const std::vector<T> &init) {
    ParamInfo p{std::move(name), std::move(shape), values_.size(), init.size()};
    values_.insert(values_.end(), init.begin(), init.end());
    grads_.resize(values_.size(), T(0));
    info_.push_back(std::move(p));
    return static_cast<int>(info_.size() - 1);
  }
  T *value(int id) { return values_.data() + info_[id].offset; }
  const T *value(int id) const { return values_.data() + info_[id].offset; }
  T *grad(int id) { return grads_.data() + info_[id].offset; }
  const T *grad(int id) const { return grads_.data() + info_[id].offset; }
  std::vector<T> &values() { return values_; }
  const std::vector<T> &values() const { return values_; }
  std::vector<T> &grads() { return grads_; }
  const std::vector<T> &grads() const { return grads_; }
  const std::vector<ParamInfo> &info() const { return info_; }
  size_t size() const { return values_.size(); }
  void zero_grads() { std::fill(grads_.begin(), grads_.end(), T(0)); }

 private:
  std::vector<ParamInfo> info_;
  std::vector<T> values_, grads_;
};

}  // namespace flowrt::train
