// Documented limits of a .flow model. They bound every allocation the loader or a session makes
// from numbers in a file, well above any published Glow/RealNVP model.
#pragma once

#include <cstdint>

namespace flowrt::limits {

constexpr uint64_t kMaxFileBytes = (uint64_t{1} << 31) - 2;  // FlatBuffers' own cap is 2^31-1
constexpr int64_t kMaxImageChannels = 64;
constexpr int64_t kMaxImageSide = 8192;
constexpr int64_t kMaxImageDims = int64_t{1} << 26;  // C*H*W
constexpr int64_t kMaxLayers = 100000;
constexpr int64_t kMaxNetOps = 64;
constexpr int64_t kMaxChannels = 65536;  // channels of any activation or weight
constexpr int64_t kMaxKernel = 15;       // odd kernels 1..15
constexpr int64_t kMaxTensorRank = 4;
constexpr int64_t kMaxTensorDim = int64_t{1} << 24;
constexpr int64_t kMaxTensorElements = int64_t{1} << 28;
constexpr int64_t kMaxActivationElements = int64_t{1} << 28;  // per image, any net activation
constexpr int64_t kMaxClasses = 65536;
constexpr int64_t kMaxMetadataEntries = 4096;
constexpr double kMaxConditionNumber = 1e8;  // of every 1x1 conv W
constexpr double kMaxAbsLogScale = 60.0;     // |log s| of LU diagonals, log-stds, output scales

}  // namespace flowrt::limits
