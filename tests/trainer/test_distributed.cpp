// Data-parallel training end to end: flowtrain under mpirun (2, 3 and 4 ranks, oversubscribed on
// a small machine, one thread each) against one process computing the same gradient shards:
// bit-identical weights, Adam state, EMA and metrics in ordered mode, close in fast mode; resume
// from N ranks on M ranks; the evaluation independent of the rank count; an error, a stall and a
// death on one rank end the job quickly with the rank named; a rank started differently is named.
#include <doctest/doctest.h>

#include <sys/wait.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "trainer/train/checkpoint.hpp"
#ifdef FLOWRT_TRAIN_CUDA
#include "backends/cuda/cuda_backend.hpp"
#endif

namespace flowrt::train {
namespace {

namespace fs = std::filesystem;

// A fresh directory for this suite.
const fs::path &work_dir() {
  static const fs::path dir = [] {
    fs::path d = fs::temp_directory_path() / ("flowrt-dist-" + std::to_string(::getpid()));
    fs::remove_all(d);
    fs::create_directories(d);
    return d;
  }();
  return dir;
}

struct Result {
  int exit_code = -1;
  std::string output;
  double seconds = 0;
};

// Runs a shell command (stdout and stderr captured).
Result run(const std::string &command) {
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
  ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  ::setenv("OMP_NUM_THREADS", "1", 1);
  const auto t0 = std::chrono::steady_clock::now();
  Result r;
  FILE *p = ::popen(("cd " + work_dir().string() + " && " + command + " 2>&1").c_str(), "r");
  REQUIRE(p != nullptr);
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

const std::string kFlowtrain = FLOWRT_FLOWTRAIN;
const std::string kMpirun = std::string(FLOWRT_MPIEXEC) + " --bind-to none --oversubscribe";

// A tiny Glow on a slice of Fashion-MNIST; clipping low enough to act and the EMA on.
std::string train_args(const std::string &out, int64_t batch, int steps) {
  return "train --levels 2 --depth 2 --width 16 --batch " + std::to_string(batch) + " --steps " +
         std::to_string(steps) +
         " --limit-train 480 --limit-test 90 --eval-every 10 --eval-images 90 --clip 0.5 "
         "--ema 0.99 --lr 2e-3 --warmup 5 --threads 1 --quiet --out " +
         out;
}

std::string one_process(const std::string &args) {
  return kFlowtrain + " " + args;
}
std::string ranks(int n, const std::string &args) {
  return kMpirun + " -np " + std::to_string(n) + " " + kFlowtrain + " " + args + " --dist mpi";
}

std::string read_file(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// metrics.csv without the columns that measure the machine (images/s, peak RSS).
std::vector<std::string> metrics_of(const std::string &dir) {
  std::istringstream in(read_file(work_dir() / dir / "metrics.csv"));
  std::vector<std::string> rows;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> cols;
    std::stringstream ls(line);
    std::string c;
    while (std::getline(ls, c, ',')) cols.push_back(c);
    std::string kept;
    for (size_t k = 0; k < cols.size(); ++k)
      if (k != 5 && k != 7) kept += cols[k] + ",";
    rows.push_back(kept);
  }
  return rows;
}

Checkpoint last_checkpoint(const std::string &dir) {
  const std::vector<std::string> files = list_checkpoints((work_dir() / dir).string());
  REQUIRE(!files.empty());
  return read_checkpoint(files.back());
}

// Weights, Adam's state, the EMA, the step and the best score: the same bytes.
void check_same_state(const std::string &a, const std::string &b) {
  CAPTURE(a);
  CAPTURE(b);
  const Checkpoint ca = last_checkpoint(a), cb = last_checkpoint(b);
  CHECK(ca.step == cb.step);
  CHECK(ca.params == cb.params);
  CHECK(ca.adam_m == cb.adam_m);
  CHECK(ca.adam_v == cb.adam_v);
  CHECK(ca.adam_t == cb.adam_t);
  CHECK(ca.ema == cb.ema);
  CHECK(ca.best_test_bpd == cb.best_test_bpd);
  CHECK(read_file(work_dir() / a / "model.flow") == read_file(work_dir() / b / "model.flow"));
  CHECK(metrics_of(a) == metrics_of(b));
}

void require_ok(const Result &r) {
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
}

}  // namespace

TEST_SUITE("distributed") {
  TEST_CASE("N ranks (ordered) give the bytes of one process with N gradient shards") {
    for (int n : {2, 4}) {
      CAPTURE(n);
      const std::string s = std::to_string(n);
      require_ok(run(one_process(train_args("shards" + s, 8, 20) + " --grad-shards " + s)));
      require_ok(run(ranks(n, train_args("ranks" + s, 8, 20))));
      check_same_state("shards" + s, "ranks" + s);
    }
  }

  TEST_CASE("fast mode stays within 1e-5 of the ordered result") {
    require_ok(run(one_process(train_args("fast_ref", 8, 20) + " --grad-shards 4")));
    require_ok(run(ranks(4, train_args("fast", 8, 20)) + " --dist-reduce fast"));
    const Checkpoint a = last_checkpoint("fast_ref"), b = last_checkpoint("fast");
    REQUIRE(a.params.size() == b.params.size());
    double diff = 0, scale = 0;
    for (size_t k = 0; k < a.params.size(); ++k) {
      diff = std::max(diff, std::fabs(static_cast<double>(a.params[k]) - b.params[k]));
      scale = std::max(scale, std::fabs(static_cast<double>(a.params[k])));
    }
    CHECK(diff <= 1e-5 * scale);
    CHECK(std::fabs(a.best_test_bpd - b.best_test_bpd) <= 1e-4 * a.best_test_bpd);
  }

  TEST_CASE("the evaluation and the whole run are the same for 1, 2 and 3 ranks") {
    require_ok(run(one_process(train_args("n1", 12, 10) + " --grad-shards 6")));
    require_ok(run(ranks(2, train_args("n2", 12, 10)) + " --grad-shards 6"));
    require_ok(run(ranks(3, train_args("n3", 12, 10)) + " --grad-shards 6"));
    check_same_state("n1", "n2");
    check_same_state("n1", "n3");
  }

  TEST_CASE("a run resumes on another number of ranks and continues bit-exactly") {
    require_ok(run(one_process(train_args("whole", 8, 20) + " --grad-shards 2")));
    // 2 ranks stop at step 10 (as if killed), one process finishes.
    require_ok(run(ranks(2, train_args("r21", 8, 20)) + " --stop-at 10"));
    require_ok(run(one_process("resume r21")));
    check_same_state("whole", "r21");
    // One process stops at 10, 2 ranks finish.
    require_ok(run(one_process(train_args("r12", 8, 20) + " --grad-shards 2 --stop-at 10")));
    require_ok(run(kMpirun + " -np 2 " + kFlowtrain + " resume r12 --dist mpi"));
    check_same_state("whole", "r12");
    // 2 shards cannot be split over 3 ranks.
    const Result r = run(kMpirun + " -np 3 " + kFlowtrain + " resume r12 --dist mpi");
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("3 ranks do not divide") != std::string::npos);
  }

  // How long a 2-rank job takes to start and run its first 5 steps here: the fault tests bound
  // the time a job takes to end after a fault at step 5, not the launcher's start-up.
  double job_to_step_5() {
    static const double t = [] {
      const Result r = run(ranks(2, train_args("to_step_5", 8, 5)));
      REQUIRE(r.exit_code == 0);
      return r.seconds;
    }();
    return t;
  }

  TEST_CASE("an error on one rank ends the job at once, naming the rank") {
    const double base = job_to_step_5();
    ::setenv("FLOWRT_TEST_FAULT", "error:1:5", 1);
    const Result r = run(ranks(2, train_args("fault_error", 8, 20)));
    ::unsetenv("FLOWRT_TEST_FAULT");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("flowtrain: rank 1/2 (") != std::string::npos);
    CHECK(r.output.find("injected fault at step 5") != std::string::npos);
    CHECK(r.seconds < base + 10);
  }

  TEST_CASE("a rank that stops answering trips the watchdog") {
    const double base = job_to_step_5();
    ::setenv("FLOWRT_TEST_FAULT", "stall:1:5", 1);
    const Result r = run(ranks(2, train_args("fault_stall", 8, 20)) + " --dist-timeout 3s");
    ::unsetenv("FLOWRT_TEST_FAULT");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("watchdog") != std::string::npos);
    CHECK(r.output.find("of step 5") != std::string::npos);
    CHECK(r.seconds < base + 3 + 10);  // the 3 s timeout, then the job ends
  }

  TEST_CASE("a rank that dies ends the job and leaves a run that resumes") {
    const double base = job_to_step_5();
    ::setenv("FLOWRT_TEST_FAULT", "exit:1:15", 1);
    const Result r = run(ranks(2, train_args("fault_exit", 8, 20)));
    ::unsetenv("FLOWRT_TEST_FAULT");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.seconds < base + 10);
    require_ok(run(kMpirun + " -np 2 " + kFlowtrain + " resume fault_exit --dist mpi"));
    require_ok(run(one_process(train_args("fault_ref", 8, 20) + " --grad-shards 2")));
    check_same_state("fault_ref", "fault_exit");
  }

  TEST_CASE("a rank started with other settings is named") {
    const std::string a = kFlowtrain + " " + train_args("misconf", 8, 4);
    const Result r = run(std::string(FLOWRT_MPIEXEC) + " --bind-to none --oversubscribe -np 1 " +
                         a + " --dist mpi --seed 1 : -np 1 " + a + " --dist mpi --seed 2");
    INFO(r.output);
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("rank 1 differs from rank 0 in seed (rank 0: 1; rank 1: 2)") !=
          std::string::npos);
  }

  TEST_CASE("one NCCL rank on a GPU gives the bytes of the plain GPU run") {
#ifdef FLOWRT_TRAIN_CUDA
    if (cuda_device_available(0)) {
      require_ok(run(one_process(train_args("gpu1", 8, 20) + " --device cuda")));
      require_ok(run(kMpirun + " -np 1 " + kFlowtrain + " " + train_args("nccl1", 8, 20) +
                     " --device cuda --dist nccl"));
      check_same_state("gpu1", "nccl1");
      // The reduction after the backward pass instead of during it, and in 4 KiB buckets that
      // go one by one as the backward pass reaches them: the same bytes.
      for (const std::string env : {"FLOWRT_NCCL_OVERLAP=0", "FLOWRT_NCCL_BUCKET_BYTES=4096"}) {
        CAPTURE(env);
        const std::string name = env.substr(0, env.find('='));
        require_ok(run(env + " " + kMpirun + " -x " + name + " -np 1 " + kFlowtrain + " " +
                       train_args("nccl1_" + name, 8, 20) + " --device cuda --dist nccl"));
        check_same_state("gpu1", "nccl1_" + name);
      }
    } else {
      MESSAGE("skipped: no usable CUDA device (--dist nccl runs on GPUs only)");
    }
#else
    MESSAGE("skipped: built without CUDA");
#endif
    const Result r = run(ranks(1, train_args("nccl_cpu", 8, 2)) + " --dist-timeout 1m");
    CHECK(r.exit_code == 0);  // --dist mpi with one rank is a plain run
    const Result cpu = run(kMpirun + " -np 1 " + kFlowtrain + " " + train_args("nccl_cpu2", 8, 2) +
                           " --dist nccl");
    CHECK(cpu.exit_code != 0);
    CHECK(cpu.output.find("--dist nccl trains on GPUs") != std::string::npos);
  }

  TEST_CASE("several launched tasks without --dist, and a global batch that does not split") {
    Result r = run("OMPI_COMM_WORLD_SIZE=2 " + one_process(train_args("nodist", 8, 2)));
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("without --dist mpi") != std::string::npos);
    // Slurm's srun says so in its own variables: alike, and with --dist mpi a world of 1 (an MPI
    // that srun cannot wire up) is named rather than trained in.
    r = run("SLURM_NTASKS=2 SLURM_PROCID=0 " + one_process(train_args("srun_nodist", 8, 2)));
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("started as 2 tasks") != std::string::npos);
    r = run("SLURM_NTASKS=2 SLURM_PROCID=1 SLURM_LOCALID=1 " +
            one_process(train_args("srun_world1", 8, 2) + " --dist mpi"));
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("the launcher started 2 tasks but this process's MPI world has 1") !=
          std::string::npos);
    r = run(ranks(2, train_args("oddbatch", 7, 2)));
    CHECK(r.exit_code != 0);
    CHECK(r.output.find("--batch 7 is the global batch") != std::string::npos);
  }
}

}  // namespace flowrt::train
