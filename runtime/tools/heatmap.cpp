#include "heatmap.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

namespace flowrt {
namespace {

// matplotlib's viridis, 256 entries (by Nathaniel J. Smith, Stefan van der Walt and Eric Firing;
// released under CC0), rounded to 8 bits.
constexpr uint8_t kViridis[256 * 3] = {
    68,  1,   84,  68,  2,   86,  69,  4,   87,  69,  5,   89,  70,  7,   90,  70,  8,   92,  70,
    10,  93,  70,  11,  94,  71,  13,  96,  71,  14,  97,  71,  16,  99,  71,  17,  100, 71,  19,
    101, 72,  20,  103, 72,  22,  104, 72,  23,  105, 72,  24,  106, 72,  26,  108, 72,  27,  109,
    72,  28,  110, 72,  29,  111, 72,  31,  112, 72,  32,  113, 72,  33,  115, 72,  35,  116, 72,
    36,  117, 72,  37,  118, 72,  38,  119, 72,  40,  120, 72,  41,  121, 71,  42,  122, 71,  44,
    122, 71,  45,  123, 71,  46,  124, 71,  47,  125, 70,  48,  126, 70,  50,  126, 70,  51,  127,
    70,  52,  128, 69,  53,  129, 69,  55,  129, 69,  56,  130, 68,  57,  131, 68,  58,  131, 68,
    59,  132, 67,  61,  132, 67,  62,  133, 66,  63,  133, 66,  64,  134, 66,  65,  134, 65,  66,
    135, 65,  68,  135, 64,  69,  136, 64,  70,  136, 63,  71,  136, 63,  72,  137, 62,  73,  137,
    62,  74,  137, 62,  76,  138, 61,  77,  138, 61,  78,  138, 60,  79,  138, 60,  80,  139, 59,
    81,  139, 59,  82,  139, 58,  83,  139, 58,  84,  140, 57,  85,  140, 57,  86,  140, 56,  88,
    140, 56,  89,  140, 55,  90,  140, 55,  91,  141, 54,  92,  141, 54,  93,  141, 53,  94,  141,
    53,  95,  141, 52,  96,  141, 52,  97,  141, 51,  98,  141, 51,  99,  141, 50,  100, 142, 50,
    101, 142, 49,  102, 142, 49,  103, 142, 49,  104, 142, 48,  105, 142, 48,  106, 142, 47,  107,
    142, 47,  108, 142, 46,  109, 142, 46,  110, 142, 46,  111, 142, 45,  112, 142, 45,  113, 142,
    44,  113, 142, 44,  114, 142, 44,  115, 142, 43,  116, 142, 43,  117, 142, 42,  118, 142, 42,
    119, 142, 42,  120, 142, 41,  121, 142, 41,  122, 142, 41,  123, 142, 40,  124, 142, 40,  125,
    142, 39,  126, 142, 39,  127, 142, 39,  128, 142, 38,  129, 142, 38,  130, 142, 38,  130, 142,
    37,  131, 142, 37,  132, 142, 37,  133, 142, 36,  134, 142, 36,  135, 142, 35,  136, 142, 35,
    137, 142, 35,  138, 141, 34,  139, 141, 34,  140, 141, 34,  141, 141, 33,  142, 141, 33,  143,
    141, 33,  144, 141, 33,  145, 140, 32,  146, 140, 32,  146, 140, 32,  147, 140, 31,  148, 140,
    31,  149, 139, 31,  150, 139, 31,  151, 139, 31,  152, 139, 31,  153, 138, 31,  154, 138, 30,
    155, 138, 30,  156, 137, 30,  157, 137, 31,  158, 137, 31,  159, 136, 31,  160, 136, 31,  161,
    136, 31,  161, 135, 31,  162, 135, 32,  163, 134, 32,  164, 134, 33,  165, 133, 33,  166, 133,
    34,  167, 133, 34,  168, 132, 35,  169, 131, 36,  170, 131, 37,  171, 130, 37,  172, 130, 38,
    173, 129, 39,  173, 129, 40,  174, 128, 41,  175, 127, 42,  176, 127, 44,  177, 126, 45,  178,
    125, 46,  179, 124, 47,  180, 124, 49,  181, 123, 50,  182, 122, 52,  182, 121, 53,  183, 121,
    55,  184, 120, 56,  185, 119, 58,  186, 118, 59,  187, 117, 61,  188, 116, 63,  188, 115, 64,
    189, 114, 66,  190, 113, 68,  191, 112, 70,  192, 111, 72,  193, 110, 74,  193, 109, 76,  194,
    108, 78,  195, 107, 80,  196, 106, 82,  197, 105, 84,  197, 104, 86,  198, 103, 88,  199, 101,
    90,  200, 100, 92,  200, 99,  94,  201, 98,  96,  202, 96,  99,  203, 95,  101, 203, 94,  103,
    204, 92,  105, 205, 91,  108, 205, 90,  110, 206, 88,  112, 207, 87,  115, 208, 86,  117, 208,
    84,  119, 209, 83,  122, 209, 81,  124, 210, 80,  127, 211, 78,  129, 211, 77,  132, 212, 75,
    134, 213, 73,  137, 213, 72,  139, 214, 70,  142, 214, 69,  144, 215, 67,  147, 215, 65,  149,
    216, 64,  152, 216, 62,  155, 217, 60,  157, 217, 59,  160, 218, 57,  162, 218, 55,  165, 219,
    54,  168, 219, 52,  170, 220, 50,  173, 220, 48,  176, 221, 47,  178, 221, 45,  181, 222, 43,
    184, 222, 41,  186, 222, 40,  189, 223, 38,  192, 223, 37,  194, 223, 35,  197, 224, 33,  200,
    224, 32,  202, 225, 31,  205, 225, 29,  208, 225, 28,  210, 226, 27,  213, 226, 26,  216, 226,
    25,  218, 227, 25,  221, 227, 24,  223, 227, 24,  226, 228, 24,  229, 228, 25,  231, 228, 25,
    234, 229, 26,  236, 229, 27,  239, 229, 28,  241, 229, 29,  244, 230, 30,  246, 230, 32,  248,
    230, 33,  251, 231, 35,  253, 231, 37,
};

// A 3x5 pixel font for the colour bar's labels: each glyph is 5 rows of 3 bits (MSB left).
struct Glyph {
  char ch;
  uint8_t rows[5];
};
constexpr Glyph kFont[] = {
    {'0', {7, 5, 5, 5, 7}}, {'1', {2, 6, 2, 2, 7}}, {'2', {7, 1, 7, 4, 7}}, {'3', {7, 1, 7, 1, 7}},
    {'4', {5, 5, 7, 1, 1}}, {'5', {7, 4, 7, 1, 7}}, {'6', {7, 4, 7, 5, 7}}, {'7', {7, 1, 1, 1, 1}},
    {'8', {7, 5, 7, 5, 7}}, {'9', {7, 5, 7, 1, 7}}, {'.', {0, 0, 0, 0, 2}}, {'-', {0, 0, 7, 0, 0}},
    {'+', {0, 2, 7, 2, 0}}, {'e', {0, 7, 7, 4, 7}},
};
constexpr int64_t kFontScale = 2, kAdvance = 4 * kFontScale, kGlyphHeight = 5 * kFontScale;

struct Canvas {
  ImageBatch img;  // RGB, planar (CHW) like every ImageBatch
  void put(int64_t y, int64_t x, const uint8_t rgb[3]) {
    if (y < 0 || x < 0 || y >= img.h || x >= img.w) return;
    for (int k = 0; k < 3; ++k)
      img.pixels[static_cast<size_t>((k * img.h + y) * img.w + x)] = rgb[k];
  }
  void text(int64_t y, int64_t x, const std::string &s) {
    static constexpr uint8_t kInk[3] = {0, 0, 0};
    for (size_t i = 0; i < s.size(); ++i)
      for (const Glyph &g : kFont) {
        if (g.ch != s[i]) continue;
        for (int64_t r = 0; r < 5; ++r)
          for (int64_t c = 0; c < 3; ++c)
            if (g.rows[r] & (4 >> c))
              for (int64_t dy = 0; dy < kFontScale; ++dy)
                for (int64_t dx = 0; dx < kFontScale; ++dx)
                  put(y + r * kFontScale + dy,
                      x + static_cast<int64_t>(i) * kAdvance + c * kFontScale + dx, kInk);
      }
  }
};

// At most 8 characters of the font: "12.35", "-0.5", "1.2e+03".
std::string label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  if (std::strlen(buf) > 8) std::snprintf(buf, sizeof buf, "%.1e", v);
  return buf;
}

}  // namespace

HeatmapLayout heatmap_layout(int64_t h, int64_t w) {
  HeatmapLayout l;
  const int64_t side = std::max<int64_t>(1, std::max(h, w));
  l.scale = std::max<int64_t>(1, (kHeatmapMinSide + side - 1) / side);
  l.width = 2 * kHeatmapMargin + 2 * l.scale * w + 3 * kHeatmapGap + kHeatmapBarWidth +
            kHeatmapLabelWidth;
  l.height = 2 * kHeatmapMargin + l.scale * h;
  return l;
}

void viridis(double t, uint8_t rgb[3]) {
  if (!(t >= 0)) t = 0;  // NaN too
  if (t > 1) t = 1;
  const size_t i = static_cast<size_t>(std::lround(t * 255));
  std::memcpy(rgb, &kViridis[i * 3], 3);
}

ImageBatch render_heatmap(const ImageBatch &images, int64_t index, const double *values) {
  const int64_t h = images.h, w = images.w, c = images.c;
  const HeatmapLayout l = heatmap_layout(h, w);
  const int64_t s = l.scale;
  Canvas cv{ImageBatch{1, 3, l.height, l.width, {}}};
  cv.img.pixels.assign(static_cast<size_t>(3 * l.height * l.width), 255);

  double lo = values[0], hi = values[0];
  for (int64_t i = 1; i < h * w; ++i) {
    lo = std::min(lo, values[i]);
    hi = std::max(hi, values[i]);
  }
  const auto to_t = [&](double v) { return hi > lo ? (v - lo) / (hi - lo) : 0.5; };

  const uint8_t *src = images.pixels.data() + index * images.image_size();
  const int64_t x_image = kHeatmapMargin, x_map = x_image + s * w + kHeatmapGap;
  const int64_t x_bar = x_map + s * w + kHeatmapGap, y0 = kHeatmapMargin;
  for (int64_t y = 0; y < s * h; ++y)
    for (int64_t x = 0; x < s * w; ++x) {
      const int64_t sy = y / s, sx = x / s;
      uint8_t rgb[3];
      for (int64_t k = 0; k < 3; ++k) rgb[k] = src[((c == 3 ? k : 0) * h + sy) * w + sx];
      cv.put(y0 + y, x_image + x, rgb);
      viridis(to_t(values[sy * w + sx]), rgb);
      cv.put(y0 + y, x_map + x, rgb);
    }
  // The bar: the maximum at the top, the minimum at the bottom.
  const int64_t bar_h = s * h;
  for (int64_t y = 0; y < bar_h; ++y) {
    uint8_t rgb[3];
    viridis(bar_h > 1 ? 1.0 - static_cast<double>(y) / (bar_h - 1) : 0.5, rgb);
    for (int64_t x = 0; x < kHeatmapBarWidth; ++x) cv.put(y0 + y, x_bar + x, rgb);
  }
  // Labels where they fit beside the bar without overlapping.
  const int64_t x_text = x_bar + kHeatmapBarWidth + kHeatmapGap;
  if (bar_h >= 2 * kGlyphHeight + 2) {
    cv.text(y0, x_text, label(hi));
    cv.text(y0 + bar_h - kGlyphHeight, x_text, label(lo));
  }
  return cv.img;
}

}  // namespace flowrt
