// A read-only float32 tensor: a shape and a pointer to data that some owner keeps alive. The owner
// is either the tensor's own vector or the model's file bytes (zero-copy for memory-mapped files);
// copies share the owner, so a Tensor is cheap to copy and always safe to read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace flowrt {

class Tensor {
 public:
  Tensor() = default;

  static Tensor from_vector(std::vector<int64_t> shape, std::vector<float> values) {
    auto storage = std::make_shared<std::vector<float>>(std::move(values));
    Tensor t;
    t.shape_ = std::move(shape);
    t.data_ = storage->data();
    t.size_ = storage->size();
    t.owner_ = std::move(storage);
    return t;
  }
  static Tensor view(std::vector<int64_t> shape, const float *data, size_t size,
                     std::shared_ptr<const void> owner) {
    Tensor t;
    t.shape_ = std::move(shape);
    t.data_ = data;
    t.size_ = size;
    t.owner_ = std::move(owner);
    return t;
  }

  bool empty() const { return size_ == 0; }
  size_t size() const { return size_; }
  const float *data() const { return data_; }
  float operator[](size_t i) const { return data_[i]; }
  const std::vector<int64_t> &shape() const { return shape_; }
  int64_t dim(size_t i) const { return shape_[i]; }
  size_t rank() const { return shape_.size(); }
  std::vector<float> to_vector() const { return std::vector<float>(data_, data_ + size_); }
  std::vector<double> to_double() const { return std::vector<double>(data_, data_ + size_); }

 private:
  std::vector<int64_t> shape_;
  const float *data_ = nullptr;
  size_t size_ = 0;
  std::shared_ptr<const void> owner_;
};

std::string shape_string(const std::vector<int64_t> &shape);

}  // namespace flowrt
