// `flowtrain launch -n N [--threads T] -- train ...`: runs mpirun on this host with the flags a
// single-machine job wants: no core binding (each rank runs its own OpenMP threads), the
// shared-memory transport, oversubscription when N exceeds the cores, Open MPI's consent to run
// as root when root, and --dist mpi added to the command when it is missing.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "core/error.hpp"
#include "trainer/tools/train_commands.hpp"

namespace flowrt::train {

int cmd_launch(int argc, char **argv) {
  int ranks = 0, threads = 0, i = 2;
  std::string mpirun = "mpirun";
  for (; i < argc && std::strcmp(argv[i], "--") != 0; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) invalid_argument("launch: " + a + " needs a value");
      return argv[++i];
    };
    if (a == "-n" || a == "--ranks")
      ranks = std::atoi(value().c_str());
    else if (a == "--threads")
      threads = std::atoi(value().c_str());
    else if (a == "--mpirun")
      mpirun = value();
    else
      invalid_argument("launch: unknown option '" + a +
                       "' (usage: flowtrain launch -n N [--threads T] -- train|resume ...)");
  }
  if (ranks < 1 || ranks > 4096) invalid_argument("launch: -n N with N in [1, 4096] is required");
  if (threads < 0) invalid_argument("launch: --threads must be >= 0");
  if (i + 1 >= argc)
    invalid_argument("launch: give the flowtrain command after --, e.g. -- train --out run ...");
  const std::string sub = argv[i + 1];
  if (sub != "train" && sub != "resume")
    invalid_argument("launch: runs `train` or `resume`, not '" + sub + "'");
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  if (len <= 0) fail(FLOWRT_IO_ERROR, "launch: cannot find this program's path");
  self[len] = '\0';

  std::vector<std::string> args = {mpirun,  "-np", std::to_string(ranks), "--bind-to", "none",
                                   "--mca", "btl", "self,vader"};
  if (ranks > static_cast<int>(std::thread::hardware_concurrency()))
    args.push_back("--oversubscribe");
  if (threads > 0) {
    ::setenv("OMP_NUM_THREADS", std::to_string(threads).c_str(), 1);
    args.insert(args.end(), {"-x", "OMP_NUM_THREADS"});
  }
  if (geteuid() == 0) {  // Open MPI refuses root unless told twice
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    ::setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
  }
  args.push_back(self);
  bool has_dist = false;
  for (int k = i + 1; k < argc; ++k) {
    args.push_back(argv[k]);
    if (std::strcmp(argv[k], "--dist") == 0) has_dist = true;
  }
  if (!has_dist) args.insert(args.end(), {"--dist", "mpi"});
  std::vector<char *> cargs;
  for (std::string &s : args) cargs.push_back(s.data());
  cargs.push_back(nullptr);
  std::fflush(stdout);
  execvp(cargs[0], cargs.data());
  fail(FLOWRT_IO_ERROR,
       "launch: cannot run '" + mpirun + "' (install openmpi-bin): " + std::strerror(errno));
}

}  // namespace flowrt::train
