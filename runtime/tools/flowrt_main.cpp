// flowrt: inspect, create, sample from, score, interpolate and manipulate .flow models.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"

namespace {

const char *kUsage =
    "usage: flowrt <command> [options]\n"
    "\n"
    "commands:\n"
    "  info M.flow                      architecture, parameters, FLOPs, metadata\n"
    "  init --image CxHxW --levels L --depth K --width W [--coupling affine|additive]\n"
    "       [--permutation lu|dense|reverse|shuffle] [--n-bits N] [--seed S] [--random-nets]\n"
    "       [--arch glow|realnvp|nice|tiny|fmnist|cifar|celeba64] [--res-blocks N] -o M.flow\n"
    "                                   a freshly initialised Glow, RealNVP or NICE model\n"
    "  sample M.flow [-n 64] [-t 0.7] [--seed 1] [--cols C] [--backend B] -o grid.png\n"
    "                                   a grid of samples as a PNG\n"
    "  score M.flow INPUT... [--per-level] [--heatmap DIR]\n"
    "                                   bits/dim per image and mean (PNG files, IDX files or\n"
    "                                   directories of PNGs); --per-level: each level's prior and\n"
    "                                   log-det terms; --heatmap: DIR/<name>_nll.png NLL maps\n"
    "  reconstruct M.flow INPUT...      encode -> decode round-trip error\n"
    "  interpolate M.flow A.png B.png [--steps 8] [--slerp] [-t T] -o strip.png\n"
    "                                   frames from A to B: linear in z, or in the standardised\n"
    "                                   latents eps with --slerp (spherical) or -t (interior\n"
    "                                   frames' eps times T)\n"
    "  attributes build M.flow --images IDX_OR_DIR --labels LABELS_IDX [--limit N] -o dirs.npy\n"
    "                                   per label: mean z of its images - mean z of the rest\n"
    "  manipulate M.flow IMG --dirs dirs.npy --label K [--alpha -1,-0.5,0,0.5,1] -o strip.png\n"
    "                                   decodes z + alpha * d_K for each alpha\n"
    "  manipulate M.flow INPUT... --dirs dirs.npy --project\n"
    "                                   each image's coordinate <z, d_k> / |d_k| on each "
    "direction\n"
    "  ood M.flow --in A --out B [--train T] [--batch-size K] [--background M2.flow]\n"
    "      [--complexity png] [--json F] [--plot F.svg] [--seed S]\n"
    "                                   OOD detection: AUROC, AUPR, FPR@95%TPR of bits/dim,\n"
    "                                   typicality, likelihood ratio, complexity-corrected\n"
    "  backends                         which backends run here, from which plugin, or why not\n"
    "\n"
    "common options: --backend auto|ref|portable|onednn|cuda  --threads N  --batch N (max batch)\n"
    "                --limit N (first N images of each IDX file or directory)\n";

}  // namespace

int main(int argc, char **argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::printf("flowrt %s\n", flowrt_version());
    return 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "backends") return flowrt::cmd_backends(argc, argv);
    if (cmd == "info") return flowrt::cmd_info(argc, argv);
    if (cmd == "init") return flowrt::cmd_init(argc, argv);
    if (cmd == "sample") return flowrt::cmd_sample(argc, argv);
    if (cmd == "score") return flowrt::cmd_score(argc, argv);
    if (cmd == "reconstruct") return flowrt::cmd_reconstruct(argc, argv);
    if (cmd == "interpolate") return flowrt::cmd_interpolate(argc, argv);
    if (cmd == "attributes") return flowrt::cmd_attributes(argc, argv);
    if (cmd == "manipulate") return flowrt::cmd_manipulate(argc, argv);
    if (cmd == "ood") return flowrt::cmd_ood(argc, argv);
    std::fprintf(stderr, "flowrt: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
    return 2;
  } catch (const flowrt::Error &e) {
    std::fprintf(stderr, "flowrt %s: %s\n", cmd.c_str(), e.what());
    return e.status() == FLOWRT_INVALID_ARGUMENT ? 2 : 1;
  } catch (const flowrt::Exception &e) {
    std::fprintf(stderr, "flowrt %s: %s\n", cmd.c_str(), e.what());
    return e.status() == FLOWRT_INVALID_ARGUMENT ? 2 : 1;
  } catch (const std::exception &e) {
    std::fprintf(stderr, "flowrt %s: %s\n", cmd.c_str(), e.what());
    return 1;
  }
}
