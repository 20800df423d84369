#include "model/architecture.hpp"

#include "core/error.hpp"
#include "model/nice_builder.hpp"
#include "model/realnvp_builder.hpp"

namespace flowrt {

Family parse_family(const std::string &name) {
  if (name == "glow") return Family::Glow;
  if (name == "realnvp") return Family::RealNvp;
  if (name == "nice") return Family::Nice;
  invalid_argument("unknown architecture family '" + name + "' (glow, realnvp, nice)");
}

const char *family_name(Family f) {
  switch (f) {
    case Family::Glow:
      return "glow";
    case Family::RealNvp:
      return "realnvp";
    case Family::Nice:
      return "nice";
  }
  return "?";
}

FamilySize family_defaults(Family f) {
  switch (f) {
    case Family::Glow:
      return {3, 8, 256};
    case Family::RealNvp: {
      const RealNvpConfig r;
      return {r.scales, r.checkerboard, r.hidden, r.res_blocks};
    }
    case Family::Nice: {
      const NiceConfig n;
      return {1, n.couplings, n.hidden};
    }
  }
  return {};
}

Graph build_family(Family f, const ImageSpec &image, const FamilySize &size, uint64_t seed,
                   bool random_nets) {
  if (f == Family::RealNvp) {
    RealNvpConfig r;
    r.channels = image.channels, r.height = image.height, r.width = image.width;
    r.n_bits = image.n_bits;
    r.scales = size.levels;
    r.checkerboard = r.channelwise = size.depth;
    r.final_checkerboard = size.depth + 1;
    r.hidden = size.width;
    r.res_blocks = size.res_blocks;
    r.seed = seed;
    r.random_nets = random_nets;
    return build_realnvp(r);
  }
  if (size.res_blocks != 0)
    invalid_argument("--res-blocks is RealNVP's option (--arch " + std::string(family_name(f)) +
                     ")");
  if (f == Family::Nice) {
    if (size.levels != 1)
      invalid_argument("NICE has a single level (got --levels " + std::to_string(size.levels) +
                       ")");
    NiceConfig n;
    n.channels = image.channels, n.height = image.height, n.width = image.width;
    n.n_bits = image.n_bits;
    n.couplings = size.depth;
    n.hidden = size.width;
    n.seed = seed;
    n.random_nets = random_nets;
    return build_nice(n);
  }
  invalid_argument("build_family builds realnvp or nice; glow has its own GlowConfig");
}

}  // namespace flowrt
