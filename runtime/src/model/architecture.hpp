// The architecture families `flowrt init` and `flowtrain` build (`--arch glow|realnvp|nice`) and
// what their common size options mean in each:
//   glow:    --levels levels, --depth steps per level, --width coupling-net width (3, 8, 256)
//   realnvp: --levels scales, --depth couplings of each kind per scale (the last scale has
//            depth + 1 checkerboard couplings), --width net width, --res-blocks residual
//            blocks per net (3, 3, 64, 2; 0 blocks: a plain conv net)
//   nice:    one level, --depth additive couplings, --width hidden units of each of the 5
//            fully-connected layers of a net (1, 4, 1000)
// Glow's own options (coupling, permutation, squeeze, classes) stay with GlowConfig.
#pragma once

#include <cstdint>
#include <string>

#include "model/graph.hpp"

namespace flowrt {

enum class Family { Glow, RealNvp, Nice };

// "glow", "realnvp" or "nice"; throws Error(FLOWRT_INVALID_ARGUMENT) for anything else.
Family parse_family(const std::string &name);
const char *family_name(Family f);

struct FamilySize {
  int levels = 3, depth = 8, width = 256;
  int res_blocks = 0;  // RealNVP only
};
FamilySize family_defaults(Family f);

// RealNVP or NICE at the given size (see above), freshly initialised.
Graph build_family(Family f, const ImageSpec &image, const FamilySize &size, uint64_t seed,
                   bool random_nets);

}  // namespace flowrt
