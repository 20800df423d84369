#include "trainer/dist/nccl_reducer.hpp"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"

#ifdef FLOWRT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include "backends/cuda/cuda_check.hpp"
#endif

namespace flowrt::train {

NcclReduceOptions nccl_options_from_env() {
  NcclReduceOptions o;
  if (const char *v = std::getenv("FLOWRT_NCCL_OVERLAP"); v && *v) {
    if (std::strcmp(v, "0") && std::strcmp(v, "1"))
      invalid_argument(std::string("FLOWRT_NCCL_OVERLAP must be 0 or 1, not '") + v + "'");
    o.overlap = *v == '1';
  }
  if (const char *v = std::getenv("FLOWRT_NCCL_BUCKET_BYTES"); v && *v) {
    char *end = nullptr;
    const unsigned long long bytes = std::strtoull(v, &end, 10);
    if (*v == '-' || *end || bytes < sizeof(float) || bytes > (1ull << 40))
      invalid_argument(std::string("FLOWRT_NCCL_BUCKET_BYTES must be a byte count from 4 to ") +
                       "2^40, not '" + v + "'");
    o.bucket_bytes = static_cast<size_t>(bytes);
  }
  return o;
}

int local_rank() {
  for (const char *var :
       {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID", "PMI_LOCAL_RANK"}) {
    const char *v = std::getenv(var);
    if (v && *v) return std::atoi(v);
  }
  return 0;
}

#ifdef FLOWRT_HAVE_NCCL

bool built_with_nccl() {
  return true;
}

namespace {

void check_nccl(ncclResult_t r, const char *what) {
  if (r != ncclSuccess)
    fail(FLOWRT_DEVICE_ERROR, std::string("NCCL ") + what + ": " + ncclGetErrorString(r));
}
// One NCCL communicator for the process, kept as long as its reducer.
struct NcclComm {
  ncclComm_t comm = nullptr;
  NcclComm() = default;
  NcclComm(const NcclComm &) = delete;
  NcclComm &operator=(const NcclComm &) = delete;
  ~NcclComm() {
    if (comm) ncclCommDestroy(comm);
  }
};

class NcclReducer final : public TrainCompute<float>::DeviceReducer {
 public:
  NcclReducer(std::unique_ptr<NcclComm> comm, const NcclReduceOptions &options)
      : comm_(std::move(comm)), options_(options) {}

  void plan(size_t n, const GradLayout &layers) override {
    buckets_.emplace(n, layers, std::max<size_t>(1, options_.bucket_bytes / sizeof(float)));
  }
  void begin(float *grads, double *loss, void *stream) override {
    if (!buckets_) invalid_argument("NCCL reduction: a step before the gradient's layout");
    grads_ = grads;
    loss_ = loss;
    at(stream);
    buckets_->begin(launch_);
  }
  void layer_done(size_t layer, void *stream) override {
    at(stream);
    buckets_->layer_done(layer, launch_);
  }
  void finish(void *stream) override {
    at(stream);
    buckets_->finish(launch_);
    if (options_.overlap) {
      done_.order(nccl_.get(), compute_);  // the update reads the means
    } else {
      for (const auto &[bucket, last] : deferred_) issue(bucket, last, compute_);
      deferred_.clear();
    }
  }

 private:
  // A new point of the compute stream: the next launch waits for it.
  void at(void *stream) {
    compute_ = static_cast<cudaStream_t>(stream);
    waited_ = false;
  }
  void launch(GradRange bucket, bool last) {
    if (!options_.overlap) {
      deferred_.emplace_back(bucket, last);
      return;
    }
    if (!waited_) ready_.order(compute_, nccl_.get());  // the bucket's gradients are final
    waited_ = true;
    issue(bucket, last, nccl_.get());
  }
  void issue(GradRange bucket, bool last, cudaStream_t s) {
    const bool group = last && bucket.count > 0;
    if (group) check_nccl(ncclGroupStart(), "ncclGroupStart");
    if (bucket.count > 0)
      check_nccl(ncclAllReduce(grads_ + bucket.offset, grads_ + bucket.offset, bucket.count,
                               ncclFloat32, ncclAvg, comm_->comm, s),
                 "ncclAllReduce (gradients)");
    if (last)
      check_nccl(ncclAllReduce(loss_, loss_, 1, ncclFloat64, ncclAvg, comm_->comm, s),
                 "ncclAllReduce (loss)");
    if (group) check_nccl(ncclGroupEnd(), "ncclGroupEnd");
  }

  // Declared first, destroyed last: after the stream has drained.
  std::unique_ptr<NcclComm> comm_;
  NcclReduceOptions options_;
  flowrt::cuda::Stream nccl_;
  flowrt::cuda::Event ready_, done_;
  std::optional<GradBuckets> buckets_;
  const GradBuckets::Launch launch_ = [this](GradRange b, bool last) { launch(b, last); };
  float *grads_ = nullptr;
  double *loss_ = nullptr;
  cudaStream_t compute_ = nullptr;
  bool waited_ = false;
  std::vector<std::pair<GradRange, bool>> deferred_;  // without overlap: until finish()
};

}  // namespace

std::unique_ptr<TrainCompute<float>::DeviceReducer> make_nccl_reducer(
    Communicator &mpi, int device, const NcclReduceOptions &options) {
  ncclUniqueId id{};
  if (mpi.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  mpi.broadcast(&id, sizeof id, 0);
  if (cudaSetDevice(device) != cudaSuccess)
    fail(FLOWRT_DEVICE_ERROR, "--dist nccl: cannot use CUDA device " + std::to_string(device) +
                                  " (local rank " + std::to_string(local_rank()) + ")");
  auto comm = std::make_unique<NcclComm>();
  check_nccl(ncclCommInitRank(&comm->comm, mpi.size(), id, mpi.rank()), "ncclCommInitRank");
  return std::make_unique<NcclReducer>(std::move(comm), options);
}

#else

bool built_with_nccl() {
  return false;
}

std::unique_ptr<TrainCompute<float>::DeviceReducer> make_nccl_reducer(Communicator &, int,
                                                                      const NcclReduceOptions &) {
  fail(FLOWRT_UNSUPPORTED,
       "--dist nccl: this flowtrain was built without NCCL (it needs the CUDA toolkit's NCCL "
       "and MPI at configure time; FLOWRT_WITH_NCCL)");
}

#endif

}  // namespace flowrt::train
