// The collectives of data-parallel training, behind one interface: a single process (`local`),
// MPI ranks (`mpi`, Open MPI or any MPI; mpirun and srun launch it). Every rank runs the same
// program on its slice of each global batch; these calls are what makes the ranks one run.
//
// Determinism: reduce_shards(..., Ordered) gives every rank the sum of the S gradient shards
// accumulated in shard order, sum = g_0; sum += g_1; ...; the same bytes that one process
// computing the S shards itself gets, whatever the number of ranks (any N dividing S). Fast
// leaves the order to the library (MPI_Allreduce): quicker, reproducible for a given N only.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace flowrt::train {

enum class ReduceMode { Ordered, Fast };
ReduceMode parse_reduce_mode(const std::string &name);
const char *reduce_mode_name(ReduceMode m);

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual const char *kind() const = 0;  // "local", "mpi"
  // "rank r/N (host)", the prefix of every line a rank other than 0 prints.
  std::string who() const;

  // out = the sum over the S = size() * shards.size() gradient shards of the run, where this
  // rank holds shards [rank * k, rank * k + k) (k = shards.size(), the same on every rank), each
  // n floats. `out` may alias shards[0].
  virtual void reduce_shards(const std::vector<const float *> &shards, float *out, size_t n,
                             ReduceMode mode) = 0;
  // Every rank's `mine` (the same count on each), concatenated in rank order, on every rank.
  virtual std::vector<double> allgather(const std::vector<double> &mine) = 0;
  // Variable counts: every rank's values in rank order.
  virtual std::vector<double> allgatherv(const std::vector<double> &mine) = 0;
  // Rank `root`'s bytes on every rank (`data` holds `bytes` on every rank).
  virtual void broadcast(void *data, size_t bytes, int root) = 0;
  // Every rank's string, in rank order (consistency checks at start).
  virtual std::vector<std::string> allgather_strings(const std::string &mine) = 0;
  // Ends every rank of the job now with `code` (an error on one rank must not hang the others).
  [[noreturn]] virtual void abort(int code) = 0;

  // The step being trained, for the watchdog's message.
  std::atomic<int64_t> step{0};
};

// One process: the shards are summed here, in order.
std::unique_ptr<Communicator> make_local_communicator();
// MPI_COMM_WORLD: made once per process (MPI_Init) and finalized at a normal exit only: an
// error unwinding on one rank must end the job (Communicator::abort), not wait in
// MPI_Finalize for ranks that are still inside a collective. Throws Error(FLOWRT_UNSUPPORTED,
// "built without MPI") in builds without MPI, and Error(FLOWRT_INVALID_ARGUMENT) when a launcher
// says N > 1 tasks while the MPI world is 1 (flowtrain built against another MPI).
Communicator &mpi_world(double timeout_s);
// The MPI world if this process made one, else null (error reporting uses it).
Communicator *dist_world();
bool built_with_mpi();

// How many tasks a launcher (mpirun, srun, PMI) says this job has; 0 if none says.
int launcher_task_count();
// This task's rank as the launcher says (0 when none says).
int launcher_rank();

// The ordered sum of shards [0, S) given in order, into out: out = s_0; out += s_1; ... .
void sum_shards_in_order(const std::vector<const float *> &shards, float *out, size_t n);

}  // namespace flowrt::train
