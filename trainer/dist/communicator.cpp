#include "trainer/dist/communicator.hpp"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "core/error.hpp"

namespace flowrt::train {

ReduceMode parse_reduce_mode(const std::string &name) {
  if (name == "ordered") return ReduceMode::Ordered;
  if (name == "fast") return ReduceMode::Fast;
  invalid_argument("unknown --dist-reduce '" + name + "' (ordered, fast)");
}

const char *reduce_mode_name(ReduceMode m) {
  return m == ReduceMode::Ordered ? "ordered" : "fast";
}

std::string Communicator::who() const {
  char host[256] = "?";
  gethostname(host, sizeof host - 1);
  return "rank " + std::to_string(rank()) + "/" + std::to_string(size()) + " (" + host + ")";
}

void sum_shards_in_order(const std::vector<const float *> &shards, float *out, size_t n) {
  if (shards.empty()) invalid_argument("no gradient shards to sum");
  if (out != shards[0]) std::memcpy(out, shards[0], n * sizeof(float));
  for (size_t s = 1; s < shards.size(); ++s) {
    const float *g = shards[s];
#pragma omp parallel for schedule(static) if (n >= (size_t{1} << 16))
    for (int64_t k = 0; k < static_cast<int64_t>(n); ++k) out[k] += g[k];
  }
}

int launcher_task_count() {
  for (const char *var :
       {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "SLURM_NTASKS", "MPI_LOCALNRANKS"}) {
    const char *v = std::getenv(var);
    if (v && *v) {
      const int n = std::atoi(v);
      if (n > 0) return n;
    }
  }
  return 0;
}

int launcher_rank() {
  for (const char *var : {"OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID"}) {
    const char *v = std::getenv(var);
    if (v && *v) return std::atoi(v);
  }
  return 0;
}

namespace {

class LocalCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const char *kind() const override { return "local"; }
  void reduce_shards(const std::vector<const float *> &shards, float *out, size_t n,
                     ReduceMode) override {
    sum_shards_in_order(shards, out, n);
  }
  std::vector<double> allgather(const std::vector<double> &mine) override { return mine; }
  std::vector<double> allgatherv(const std::vector<double> &mine) override { return mine; }
  void broadcast(void *, size_t, int) override {}
  std::vector<std::string> allgather_strings(const std::string &mine) override { return {mine}; }
  [[noreturn]] void abort(int code) override { std::_Exit(code); }
};

}  // namespace

std::unique_ptr<Communicator> make_local_communicator() {
  return std::make_unique<LocalCommunicator>();
}

#ifndef FLOWRT_HAVE_MPI
bool built_with_mpi() {
  return false;
}
Communicator *dist_world() {
  return nullptr;
}
Communicator &mpi_world(double) {
  fail(FLOWRT_UNSUPPORTED,
       "--dist mpi: this flowtrain was built without MPI (install libopenmpi-dev and reconfigure "
       "with FLOWRT_WITH_MPI=AUTO or ON)");
}
#endif

}  // namespace flowrt::train
