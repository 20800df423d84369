// The picture `flowrt score --heatmap` writes for an image: the image beside a colour-mapped
// per-pixel map of values (bits per pixel), with a colour bar labelled with the map's range.
#pragma once

#include <cstdint>

#include "image_io.hpp"

namespace flowrt {

// The layout, in pixels, for an h x w image: every panel is the image scaled by `scale`
// (nearest neighbour, the smallest integer making the longer side at least kHeatmapMinSide),
// on a white background:
//   margin | image | gap | map | gap | colour bar (kHeatmapBarWidth) | gap | labels | margin
// horizontally and margin | panel | margin vertically.
constexpr int64_t kHeatmapMinSide = 128;
constexpr int64_t kHeatmapMargin = 4, kHeatmapGap = 4, kHeatmapBarWidth = 12;
constexpr int64_t kHeatmapLabelWidth = 8 * 4 * 2;  // 8 characters of the 3x5 font at 2x
struct HeatmapLayout {
  int64_t scale = 1, width = 0, height = 0;
};
HeatmapLayout heatmap_layout(int64_t h, int64_t w);

// viridis (matplotlib's perceptually uniform map, CC0) at t in [0, 1]: 3 bytes of RGB.
void viridis(double t, uint8_t rgb[3]);

// Image `index` of `images` (1 or 3 channels) beside `values` (h*w, row-major) mapped from
// [min, max] of the values to viridis, with the colour bar; an RGB picture of heatmap_layout().
ImageBatch render_heatmap(const ImageBatch &images, int64_t index, const double *values);

}  // namespace flowrt
