#include "trainer/model/train_compute.hpp"

#include "core/error.hpp"
#include "trainer/model/train_model.hpp"
#ifdef FLOWRT_TRAIN_CUDA
#include "trainer/cuda/cuda_train_model.hpp"
#endif

namespace flowrt::train {

Device parse_device(const std::string &name) {
  if (name == "cpu") return Device::Cpu;
  if (name == "cuda") return Device::Cuda;
  invalid_argument("unknown device '" + name + "' (cpu, cuda)");
}

flowrt_precision parse_precision(const std::string &name) {
  flowrt_precision p = FLOWRT_PRECISION_FP32;
  if (!precision_from_name(name, &p))
    invalid_argument("unknown precision '" + name + "' (" + precision_names() + ")");
  return p;
}

std::unique_ptr<TrainCompute<float>> make_train_compute(const Graph &graph, Device device,
                                                        int device_index) {
  if (device == Device::Cuda) {
#ifdef FLOWRT_TRAIN_CUDA
    return make_cuda_train_compute(graph, device_index);
#else
    (void)device_index;
    fail(FLOWRT_UNSUPPORTED,
         "--device cuda: this flowtrain was built without CUDA (use --device cpu)");
#endif
  }
  return std::make_unique<TrainModel<float>>(graph);
}

}  // namespace flowrt::train
