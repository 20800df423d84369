// The MPI communicator (MPI_COMM_WORLD) and its watchdog. Built when FLOWRT_WITH_MPI finds an MPI;
// libflowrt itself never links MPI, only flowtrain does.
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

#include "core/error.hpp"
#include "trainer/dist/communicator.hpp"

namespace flowrt::train {
namespace {

using Clock = std::chrono::steady_clock;

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_s) : timeout_s_(timeout_s) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // The watchdog thread never calls MPI except MPI_Abort, which any thread may call.
      MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
      owns_init_ = true;
    }
    MPI_Comm_rank(MPI_COMM_WORLD, &rank_);
    MPI_Comm_size(MPI_COMM_WORLD, &size_);
    const int advertised = launcher_task_count();
    if (size_ == 1 && advertised > 1)
      fail(FLOWRT_INVALID_ARGUMENT,
           "--dist mpi: the launcher started " + std::to_string(advertised) +
               " tasks but this process's MPI world has 1: flowtrain was built against another "
               "MPI than the launcher's (use the same MPI's mpirun, or srun --mpi=pmix)");
    if (timeout_s_ > 0) watchdog_ = std::thread([this] { watch(); });
  }
  ~MpiCommunicator() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (watchdog_.joinable()) watchdog_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (owns_init_ && !finalized) MPI_Finalize();
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const char *kind() const override { return "mpi"; }

  void reduce_shards(const std::vector<const float *> &shards, float *out, size_t n,
                     ReduceMode mode) override {
    Collective c(*this, "gradient reduction");
    const size_t k = shards.size();
    if (k == 0) invalid_argument("no gradient shards to reduce");
    if (mode == ReduceMode::Fast || size_ == 1) {
      sum_shards_in_order(shards, out, n);
      if (size_ > 1) {
        for (size_t off = 0; off < n; off += kMaxCount) {
          const int count = static_cast<int>(std::min(kMaxCount, n - off));
          MPI_Allreduce(MPI_IN_PLACE, out + off, count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
        }
      }
      return;
    }
    // Ordered: a reduce-scatter by all-to-all (rank c owns chunk c and receives every shard's
    // piece of it), a sum in shard order, then an all-gather: the bytes of a ring all-reduce.
    const size_t N = static_cast<size_t>(size_);
    std::vector<int> send_counts(N), send_displs(N), recv_counts(N), recv_displs(N);
    std::vector<size_t> off(N + 1);
    for (size_t c = 0; c <= N; ++c) off[c] = n * c / N;
    const size_t mine = off[rank_ + 1] - off[rank_];
    if (k * n > static_cast<size_t>(INT32_MAX))
      fail(FLOWRT_UNSUPPORTED, "gradient reduction: " + std::to_string(k * n) +
                                   " floats exceed one MPI message; use fewer shards per rank");
    // With one shard per rank its chunks go out as they lie; with several they are packed by
    // destination first.
    if (k > 1) send_.resize(k * n);
    for (size_t c = 0; c < N; ++c) {
      const size_t len = off[c + 1] - off[c];
      send_counts[c] = static_cast<int>(k * len);
      send_displs[c] = static_cast<int>(k * off[c]);
      if (k > 1)
        for (size_t j = 0; j < k; ++j)
          std::memcpy(send_.data() + k * off[c] + j * len, shards[j] + off[c], len * sizeof(float));
      recv_counts[c] = static_cast<int>(k * mine);
      recv_displs[c] = static_cast<int>(c * k * mine);
    }
    recv_.resize(N * k * mine);
    MPI_Alltoallv(k > 1 ? send_.data() : shards[0], send_counts.data(), send_displs.data(),
                  MPI_FLOAT, recv_.data(), recv_counts.data(), recv_displs.data(), MPI_FLOAT,
                  MPI_COMM_WORLD);
    // recv_ holds shard s's piece at s * mine (rank r's shard j is s = r * k + j).
    std::vector<const float *> pieces(N * k);
    for (size_t s = 0; s < N * k; ++s) pieces[s] = recv_.data() + s * mine;
    acc_.resize(mine);
    if (mine > 0) sum_shards_in_order(pieces, acc_.data(), mine);
    std::vector<int> counts(N), displs(N);
    for (size_t c = 0; c < N; ++c) {
      counts[c] = static_cast<int>(off[c + 1] - off[c]);
      displs[c] = static_cast<int>(off[c]);
    }
    MPI_Allgatherv(acc_.data(), static_cast<int>(mine), MPI_FLOAT, out, counts.data(),
                   displs.data(), MPI_FLOAT, MPI_COMM_WORLD);
  }

  std::vector<double> allgather(const std::vector<double> &mine) override {
    Collective c(*this, "all-gather");
    std::vector<double> all(mine.size() * static_cast<size_t>(size_));
    MPI_Allgather(mine.data(), static_cast<int>(mine.size()), MPI_DOUBLE, all.data(),
                  static_cast<int>(mine.size()), MPI_DOUBLE, MPI_COMM_WORLD);
    return all;
  }

  std::vector<double> allgatherv(const std::vector<double> &mine) override {
    Collective c(*this, "all-gather");
    const int count = static_cast<int>(mine.size());
    std::vector<int> counts(size_), displs(size_);
    MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD);
    int total = 0;
    for (int r = 0; r < size_; ++r) displs[r] = total, total += counts[r];
    std::vector<double> all(static_cast<size_t>(total));
    MPI_Allgatherv(mine.data(), count, MPI_DOUBLE, all.data(), counts.data(), displs.data(),
                   MPI_DOUBLE, MPI_COMM_WORLD);
    return all;
  }

  void broadcast(void *data, size_t bytes, int root) override {
    Collective c(*this, "broadcast");
    auto *p = static_cast<char *>(data);
    for (size_t off = 0; off < bytes; off += kMaxCount) {
      const int count = static_cast<int>(std::min(kMaxCount, bytes - off));
      MPI_Bcast(p + off, count, MPI_BYTE, root, MPI_COMM_WORLD);
    }
  }

  std::vector<std::string> allgather_strings(const std::string &mine) override {
    Collective c(*this, "consistency check");
    const int len = static_cast<int>(mine.size());
    std::vector<int> lens(size_), displs(size_);
    MPI_Allgather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, MPI_COMM_WORLD);
    int total = 0;
    for (int r = 0; r < size_; ++r) displs[r] = total, total += lens[r];
    std::vector<char> all(static_cast<size_t>(std::max(total, 1)));
    MPI_Allgatherv(mine.data(), len, MPI_CHAR, all.data(), lens.data(), displs.data(), MPI_CHAR,
                   MPI_COMM_WORLD);
    std::vector<std::string> out;
    for (int r = 0; r < size_; ++r) out.emplace_back(all.data() + displs[r], lens[r]);
    return out;
  }

  [[noreturn]] void abort(int code) override {
    std::fflush(stdout);
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);
  }

 private:
  static constexpr size_t kMaxCount = size_t{1} << 30;

  // Marks a collective in progress for the watchdog.
  struct Collective {
    Collective(MpiCommunicator &m, const char *what) : m_(m) {
      std::lock_guard<std::mutex> lock(m_.mutex_);
      m_.what_ = what;
      m_.since_ = Clock::now();
      m_.busy_ = true;
    }
    ~Collective() {
      std::lock_guard<std::mutex> lock(m_.mutex_);
      m_.busy_ = false;
    }
    MpiCommunicator &m_;
  };

  // A collective that does not complete within the timeout means a rank stopped answering (it
  // hangs, or died without taking the job down): name it and end the job.
  void watch() {
    std::unique_lock<std::mutex> lock(mutex_);
    while (!stopping_) {
      cv_.wait_for(lock, std::chrono::milliseconds(200));
      if (stopping_ || !busy_) continue;
      const double waited = std::chrono::duration<double>(Clock::now() - since_).count();
      if (waited < timeout_s_) continue;
      std::fprintf(stderr,
                   "flowtrain: %s: error: watchdog: the %s of step %lld has waited %.0f s "
                   "(--dist-timeout %.0f s): a rank stopped answering; ending the job\n",
                   who().c_str(), what_, static_cast<long long>(step.load()), waited, timeout_s_);
      std::fflush(stderr);
      MPI_Abort(MPI_COMM_WORLD, 3);
      std::_Exit(3);
    }
  }

  int rank_ = 0, size_ = 1;
  bool owns_init_ = false;
  double timeout_s_;
  std::vector<float> send_, recv_, acc_;
  std::thread watchdog_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false, busy_ = false;
  const char *what_ = "";
  Clock::time_point since_;
};

MpiCommunicator *g_world = nullptr;

}  // namespace

bool built_with_mpi() {
  return true;
}

Communicator *dist_world() {
  return g_world;
}

Communicator &mpi_world(double timeout_s) {
  if (!g_world) {
    g_world = new MpiCommunicator(timeout_s);  // lives until exit
    std::atexit([] {
      delete g_world;
      g_world = nullptr;
    });
  }
  return *g_world;
}

}  // namespace flowrt::train
