// Writes the seed corpus of the loader fuzz target: small valid models covering every layer kind
// and convention of the format, and a few corrupt ones (truncated, wrong identifier, flipped
// bits, zeroed bytes). Every file stays well under 20 KB.
//   flowrt_make_fuzz_corpus tests/fuzz/corpus
#include <cstdio>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "format/flow_file.hpp"
#include "fuzz/corpus_files.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"
#include "test_support.hpp"

using flowrt::fuzz::write_seed_file;

int main(int argc, char **argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR\n", argv[0]);
    return 2;
  }
  using namespace flowrt;
  const std::string dir = argv[1];
  std::vector<std::pair<std::string, test::Variant>> valid(8);
  valid[0].first = "valid_glow_lu_affine";
  valid[1].first = "valid_dense_additive";
  valid[1].second.permutation = Permutation::Dense;
  valid[1].second.coupling = CouplingType::Additive;
  valid[2].first = "valid_reverse_exp_second";
  valid[2].second.permutation = Permutation::Reverse;
  valid[2].second.scale_fn = ScaleFunction::Exp;
  valid[2].second.form = AffineForm::ScaleThenShift;
  valid[2].second.conditioning = Half::Second;
  valid[3].first = "valid_shuffle_edge_actnorm";
  valid[3].second.permutation = Permutation::Shuffle;
  valid[3].second.split = ShiftScaleSplit::ShiftScaleInterleaved;
  valid[3].second.padding = PaddingMode::EdgeChannel;
  valid[3].second.net_actnorm = true;
  valid[4].first = "valid_subpixel_first_interleaved";
  valid[4].second.squeeze = SqueezeOrder::SubpixelMajor;
  valid[4].second.leaving = Half::First;
  valid[4].second.layout = PriorLayout::MeanLogstdInterleaved;
  valid[4].second.padding = PaddingMode::Constant;
  valid[5].first = "valid_standard_priors";
  valid[5].second.empty_split_prior = true;
  valid[5].second.top = TopPriorKind::StandardNormal;
  valid[6].first = "valid_classes_5bit";
  valid[6].second.classes = 3;
  valid[6].second.n_bits = 5;
  valid[7].first = "valid_rgb_one_level";
  valid[7].second.channels = 3;
  valid[7].second.size = 4;
  valid[7].second.levels = 1;
  std::vector<uint8_t> base;
  for (size_t i = 0; i < valid.size(); ++i) {
    valid[i].second.seed = 1 + i;
    Graph g = test::variant_graph(valid[i].second);
    g.metadata = {{"dataset", "fuzz-seed"}};
    std::vector<uint8_t> bytes = write_flow(g);
    if (i == 0) base = bytes;
    write_seed_file(dir + "/" + valid[i].first + ".flow", bytes);
  }
  // Formats 1.1 and 1.2: RealNVP (logit, checkerboard couplings with and without the mask
  // channel, tanh scales, batch norms written as actnorms, residual nets or plain ones) and NICE
  // (flatten, couplings on the vector).
  std::vector<std::pair<std::string, Graph>> families;
  RealNvpConfig rn;
  rn.channels = 1;
  rn.height = rn.width = 8;
  rn.scales = 2;
  rn.hidden = 4;
  rn.checkerboard = rn.channelwise = 1;
  rn.final_checkerboard = 2;
  rn.random_nets = true;
  rn.res_blocks = 0;
  rn.seed = 21;
  families.emplace_back("valid_realnvp", build_realnvp(rn));
  rn.res_blocks = 1;
  rn.seed = 24;
  families.emplace_back("valid_realnvp_residual", build_realnvp(rn));
  rn.channels = 3;
  rn.height = rn.width = 4;
  rn.mask_channel = rn.batchnorm = false;
  rn.logit_alpha = 0.f;
  rn.res_blocks = 0;
  rn.seed = 22;
  families.emplace_back("valid_realnvp_plain", build_realnvp(rn));
  NiceConfig nc;
  nc.channels = 1;
  nc.height = nc.width = 4;
  nc.couplings = 2;
  nc.hidden = 8;
  nc.hidden_layers = 1;
  nc.random_nets = true;
  nc.seed = 23;
  families.emplace_back("valid_nice", build_nice(nc));
  for (auto &[name, g] : families) {
    g.metadata = {{"dataset", "fuzz-seed"}};
    write_seed_file(dir + "/" + name + ".flow", write_flow(g));
  }
  std::vector<uint8_t> b = base;
  b.resize(base.size() / 2);
  write_seed_file(dir + "/corrupt_truncated.flow", b);
  b = base;
  b[4] = 'W';
  write_seed_file(dir + "/corrupt_identifier.flow", b);
  test::Rng rng(2024);
  for (int k = 0; k < 3; ++k) {
    b = base;
    for (int f = 0; f < 4; ++f)
      b[rng.next() % b.size()] ^= static_cast<uint8_t>(1u << (rng.next() % 8));
    write_seed_file(dir + "/corrupt_bitflips_" + std::to_string(k) + ".flow", b);
  }
  b = base;
  for (size_t k = b.size() / 3; k < b.size() / 3 + 64; ++k) b[k] = 0;
  write_seed_file(dir + "/corrupt_zeroed.flow", b);
  return 0;
}
