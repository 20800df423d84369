// The GPU gradient reduction of `--dist nccl`: NCCL between the ranks' GPUs (one GPU per rank,
// the local rank's), bootstrapped over MPI (rank 0's ncclUniqueId is broadcast). The gradient
// goes in buckets of at most ~25 MB of ncclAllReduce(ncclAvg) (GradBuckets' plan), the loss
// with the last one. With overlap (the default) each bucket is reduced on a stream of its own as
// soon as the backward pass has finished every layer writing it, while the pass goes on; the
// training stream waits for the reduction before the update. Without, the same collectives run
// on the training stream after the backward pass. Built with CUDA and NCCL only
// (FLOWRT_HAVE_NCCL).
#pragma once

#include <cstddef>
#include <memory>

#include "trainer/dist/communicator.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

struct NcclReduceOptions {
  bool overlap = true;                     // reduce buckets during the backward pass
  size_t bucket_bytes = size_t{25} << 20;  // the most one ncclAllReduce of the gradient takes
};
// The defaults, with FLOWRT_NCCL_OVERLAP=0 turning overlap off (to time one against the other;
// the results are the same bytes) and FLOWRT_NCCL_BUCKET_BYTES setting the bucket size (small
// buckets make even a tiny model launch many during its backward pass, for tests).
NcclReduceOptions nccl_options_from_env();

// This rank's GPU: the launcher's local rank (Open MPI, Slurm, PMI), 0 when none says.
int local_rank();
bool built_with_nccl();
// A reducer over the ranks of `mpi` on CUDA device `device`. Throws Error(FLOWRT_UNSUPPORTED)
// without NCCL, Error(FLOWRT_DEVICE_ERROR) when NCCL cannot start.
std::unique_ptr<TrainCompute<float>::DeviceReducer> make_nccl_reducer(
    Communicator &mpi, int device, const NcclReduceOptions &options);

}  // namespace flowrt::train
