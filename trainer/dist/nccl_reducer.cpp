#include "trainer/dist/nccl_reducer.hpp"

#include <cstdlib>
#include <memory>

#include "core/error.hpp"

#ifdef FLOWRT_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace flowrt::train {

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

// One NCCL communicator for the process; kept until exit (ranks share its lifetime).
struct NcclComm {
  ncclComm_t comm = nullptr;
  ~NcclComm() {
    if (comm) ncclCommDestroy(comm);
  }
};

}  // namespace

TrainCompute<float>::DeviceReducer make_nccl_reducer(Communicator &mpi, int device) {
  ncclUniqueId id{};
  if (mpi.rank() == 0) check_nccl(ncclGetUniqueId(&id), "ncclGetUniqueId");
  mpi.broadcast(&id, sizeof id, 0);
  if (cudaSetDevice(device) != cudaSuccess)
    fail(FLOWRT_DEVICE_ERROR, "--dist nccl: cannot use CUDA device " + std::to_string(device) +
                                  " (local rank " + std::to_string(local_rank()) + ")");
  auto shared = std::make_shared<NcclComm>();
  check_nccl(ncclCommInitRank(&shared->comm, mpi.size(), id, mpi.rank()), "ncclCommInitRank");
  return [shared](float *grads, size_t n, double *loss, void *stream) {
    constexpr size_t kBucket = (size_t{25} << 20) / sizeof(float);  // ~25 MB
    auto s = static_cast<cudaStream_t>(stream);
    check_nccl(ncclGroupStart(), "ncclGroupStart");
    for (size_t off = 0; off < n; off += kBucket)
      check_nccl(ncclAllReduce(grads + off, grads + off, std::min(kBucket, n - off), ncclFloat32,
                               ncclAvg, shared->comm, s),
                 "ncclAllReduce (gradients)");
    check_nccl(ncclAllReduce(loss, loss, 1, ncclFloat64, ncclAvg, shared->comm, s),
               "ncclAllReduce (loss)");
    check_nccl(ncclGroupEnd(), "ncclGroupEnd");
  };
}

#else

bool built_with_nccl() {
  return false;
}

TrainCompute<float>::DeviceReducer make_nccl_reducer(Communicator &, int) {
  fail(FLOWRT_UNSUPPORTED,
       "--dist nccl: this flowtrain was built without NCCL (it needs the CUDA toolkit's NCCL "
       "and MPI at configure time; FLOWRT_WITH_NCCL)");
}

#endif

}  // namespace flowrt::train
