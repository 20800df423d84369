// The GPU gradient reduction of `--dist nccl`: NCCL between the ranks' GPUs (one GPU per rank,
// the local rank's), bootstrapped over MPI (rank 0's ncclUniqueId is broadcast). The gradient
// goes in ~25 MB buckets of ncclAllReduce(ncclAvg), grouped into one launch with the loss, on
// the training stream. Built with CUDA and NCCL only (FLOWRT_HAVE_NCCL).
#pragma once

#include "trainer/dist/communicator.hpp"
#include "trainer/model/train_compute.hpp"

namespace flowrt::train {

// This rank's GPU: the launcher's local rank (Open MPI, Slurm, PMI), 0 when none says.
int local_rank();
bool built_with_nccl();
// A reducer over the ranks of `mpi` on CUDA device `device`. Throws Error(FLOWRT_UNSUPPORTED)
// without NCCL, Error(FLOWRT_DEVICE_ERROR) when NCCL cannot start.
TrainCompute<float>::DeviceReducer make_nccl_reducer(Communicator &mpi, int device);

}  // namespace flowrt::train
