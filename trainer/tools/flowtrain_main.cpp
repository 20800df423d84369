// flowtrain: trains Glow, RealNVP and NICE flows and writes .flow models for the runtime.
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <string>

#include "commands.hpp"
#include "core/error.hpp"
#include "trainer/dist/communicator.hpp"
#include "trainer/tools/train_commands.hpp"

namespace {

const char *kUsage =
    "usage: flowtrain <command> [options]\n"
    "\n"
    "commands:\n"
    "  init ...                         a freshly initialised model (as `flowrt init`)\n"
    "  train --out RUN_DIR [options]    trains a model (see below)\n"
    "  resume RUN_DIR [--steps S | --epochs E | --time T] [--threads N] [--dist mpi ...]\n"
    "                                   continues a run from its newest checkpoint, bit-exactly\n"
    "  eval M.flow [--data D] [--data-dir DIR] [--limit-test N] [--batch B] [--threads N]\n"
    "       [--dequantize K] [--seed S] [--device cpu|cuda]\n"
    "                                   test bits/dim of a model (full test set by default)\n"
    "  bench [--model M.flow | --arch tiny|fmnist|cifar|celeba64|realnvp|nice] [--batch 16,64]\n"
    "        [--threads N] [--warmup W] [--reps R] [--min-time S] [--recompute]\n"
    "        [--device cpu|cuda]\n"
    "        [--precision fp32|tf32|bf16|fp16]\n"
    "        [--json out.json]\n"
    "                                   training throughput (forward, backward, Adam per step)\n"
    "\n"
    "train options:\n"
    "  --data fashion-mnist|mnist|cifar10|DIR  data set (default fashion-mnist; its 28x28\n"
    "                                   images are zero-padded to 32x32 for 3+ squeezes (glow:\n"
    "                                   3+ levels, realnvp: 4+ scales), used as they are\n"
    "                                   otherwise; DIR: a folder of PNGs)\n"
    "  --data-dir D                     where the data set's files are\n"
    "  --arch glow|realnvp|nice         the model family (default glow)\n"
    "  --levels L --depth K --width W   its size; by family (defaults in parentheses):\n"
    "                                   glow: levels, steps per level, net width (3, 8, 256)\n"
    "                                   realnvp: scales, couplings of each kind per scale,\n"
    "                                   net width (3, 3, 64); nice: 1 level, couplings,\n"
    "                                   hidden units (1, 4, 1000)\n"
    "  --res-blocks N                   realnvp: residual blocks per coupling net (2; 0: plain\n"
    "                                   conv nets)\n"
    "  --coupling affine|additive  --permutation lu|dense|reverse|shuffle   (glow only)\n"
    "  --n-bits N\n"
    "  --model M.flow                   start from this model instead of a fresh one\n"
    "  --batch B (16)  --lr X (1e-3)  --warmup N (200)  --decay cosine|step|none\n"
    "  --epochs E | --steps S           the run's length (and the decay's horizon)\n"
    "  --time 30m                       a wall-clock limit, alone (no decay) or with either\n"
    "  --clip X (50, 0 = off)  --ema DECAY (0 = off; the EMA weights are exported)\n"
    "  --recompute                      keep only the layers' inputs; recompute the nets'\n"
    "                                   activations in backward (memory flat in depth)\n"
    "  --device cpu|cuda  --seed S  --threads N\n"
    "  --precision fp32|tf32|bf16|fp16  the nets' matrix products (default fp32): on the GPU\n"
    "                                   tensor cores with TF32/BF16/FP16 inputs, float\n"
    "                                   accumulation, fp16 with dynamic loss scaling; on the\n"
    "                                   CPU bf16 (CPUs with AVX512_BF16 or AMX)\n"
    "  --limit-train N  --limit-test N  --eval-every N (500)  --eval-images N (1000)\n"
    "  --sample-every N (0 = off)  --checkpoint-every N  --log-every N (50)\n"
    "  --spike-factor X (10, 0 = off)  --spike-window N (100)  a step whose loss is above X\n"
    "                                   times the median of the last N steps' is reported with\n"
    "                                   its worst image and the layer that scored it\n"
    "  --grad-shards S                  the global batch as S equal shards whose gradients are\n"
    "                                   summed in order (the one-process twin of S ranks)\n"
    "\n"
    "data-parallel training (train and resume; launch with mpirun, srun or flowtrain launch):\n"
    "  --dist mpi                       one rank per process; --batch is the global batch\n"
    "                                   (not for realnvp: its batch norms' running averages\n"
    "                                   are per process)\n"
    "  --dist-reduce ordered|fast       ordered (default): the same bytes as one process with\n"
    "                                   --grad-shards N; fast: MPI_Allreduce\n"
    "  --dist-timeout 10m               a collective waiting longer ends the job (default 10m)\n"
    "  launch -n N [--threads T] -- train ...   mpirun on this host with the right flags\n";

}  // namespace

int main(int argc, char **argv) {
  // libgomp reads its wait policy when it is loaded. A training step runs hundreds of short
  // parallel regions, so how idle threads wait decides much of its speed. Measured at batch 16
  // on the fmnist architecture, 2 cores (`flowtrain bench`): on an idle machine, always spinning
  // gives 123 img/s and sleeping at once (passive) 93; with one core busy with another process,
  // libgomp's default (spin 300,000 times, then sleep) collapses to 7.9 img/s, passive keeps 68.
  // A short spin of 3,000 gives 126 idle and 60 busy. So unless the user chose a policy,
  // flowtrain sets GOMP_SPINCOUNT=3000 and runs itself again, once.
  if (!std::getenv("OMP_WAIT_POLICY") && !std::getenv("GOMP_SPINCOUNT")) {
    ::setenv("GOMP_SPINCOUNT", "3000", 1);
    ::execv("/proc/self/exe", argv);  // returns only on failure: then carry on as is
  }
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  // An error on one rank of a job ends the whole job at once (the other ranks may be waiting
  // in a collective for this one), with the rank named.
  auto report = [&](const char *what, int code) -> int {
    flowrt::train::Communicator *world = flowrt::train::dist_world();
    if (world && world->size() > 1) {
      std::fprintf(stderr, "flowtrain: %s: error: %s\n", world->who().c_str(), what);
      world->abort(code);
    }
    std::fprintf(stderr, "flowtrain %s: %s\n", cmd.c_str(), what);
    return code;
  };
  try {
    if (cmd == "init") return flowrt::cmd_init(argc, argv);
    if (cmd == "train") return flowrt::train::cmd_train(argc, argv);
    if (cmd == "resume") return flowrt::train::cmd_resume(argc, argv);
    if (cmd == "eval") return flowrt::train::cmd_eval(argc, argv);
    if (cmd == "bench") return flowrt::train::cmd_bench(argc, argv);
    if (cmd == "launch") return flowrt::train::cmd_launch(argc, argv);
    std::fprintf(stderr, "flowtrain: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const flowrt::Error &e) {
    return report(
        e.what(),
        e.status() == FLOWRT_INVALID_ARGUMENT || e.status() == FLOWRT_UNSUPPORTED ? 2 : 1);
  } catch (const std::exception &e) {
    return report(e.what(), 1);
  }
}
