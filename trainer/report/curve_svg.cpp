// A small line chart of bits/dim against step: train (per logging interval) and test (per
// evaluation), with axes, ticks and a legend. No dependencies: the SVG is written by hand.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>

#include "core/atomic_file.hpp"
#include "trainer/report/metrics.hpp"

namespace flowrt::train {
namespace {

std::string escape(const std::string &s) {
  std::string o;
  for (char c : s) {
    if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else if (c == '&')
      o += "&amp;";
    else
      o += c;
  }
  return o;
}

}  // namespace

void write_curve_svg(const std::string &path, const std::vector<MetricsRow> &rows,
                     const std::string &title) {
  const double W = 720, H = 420, left = 70, right = 20, top = 40, bottom = 50;
  double x_max = 1, y_min = 1e300, y_max = -1e300;
  for (const MetricsRow &r : rows) x_max = std::max(x_max, static_cast<double>(r.step));
  // The first steps sit far above the rest: the axis covers the last 90% of the run (earlier
  // values are clamped to the top), or everything when that leaves nothing.
  for (double from : {0.1 * x_max, 0.0}) {
    for (const MetricsRow &r : rows)
      if (r.step >= from)
        for (double v : {r.train_bpd, r.test_bpd})
          if (v > 0 && std::isfinite(v)) y_min = std::min(y_min, v), y_max = std::max(y_max, v);
    if (y_min <= y_max) break;
  }
  if (y_min > y_max) y_min = 0, y_max = 8;
  const double pad = std::max(0.05, 0.05 * (y_max - y_min));
  y_min -= pad, y_max += pad;
  auto px = [&](double step) { return left + (W - left - right) * step / x_max; };
  auto py = [&](double v) { return top + (H - top - bottom) * (y_max - v) / (y_max - y_min); };
  std::string s;
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%%\" "
                "height=\"100%%\" fill=\"white\"/>\n",
                W, H);
  s += buf;
  std::snprintf(buf, sizeof buf, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">%s</text>\n", left,
                escape(title).c_str());
  s += buf;
  // Axes and ticks.
  std::snprintf(buf, sizeof buf,
                "<path d=\"M%.1f %.1f V%.1f H%.1f\" stroke=\"black\" fill=\"none\"/>\n", left, top,
                H - bottom, W - right);
  s += buf;
  for (int i = 0; i <= 5; ++i) {
    const double v = y_min + (y_max - y_min) * i / 5, y = py(v);
    std::snprintf(buf, sizeof buf,
                  "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.3f</text>\n",
                  left, y, W - right, y, left - 6, y + 4, v);
    s += buf;
    const double st = x_max * i / 5, x = px(st);
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.0f</text>\n", x,
                  H - bottom + 18, st);
    s += buf;
  }
  std::snprintf(buf, sizeof buf,
                "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">step</text>\n"
                "<text x=\"16\" y=\"%.1f\" transform=\"rotate(-90 16 %.1f)\" "
                "text-anchor=\"middle\">bits/dim</text>\n",
                (left + W - right) / 2, H - 12, (top + H - bottom) / 2, (top + H - bottom) / 2);
  s += buf;
  // Series.
  auto series = [&](bool test, const char *color) {
    std::string d;
    for (const MetricsRow &r : rows) {
      const double v = test ? r.test_bpd : r.train_bpd;
      if (!(v > 0) || !std::isfinite(v)) continue;
      std::snprintf(buf, sizeof buf, "%s%.1f %.1f ", d.empty() ? "M" : "L", px(r.step),
                    py(std::clamp(v, y_min, y_max)));
      d += buf;
      if (test) {
        std::snprintf(buf, sizeof buf, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
                      px(r.step), py(std::clamp(v, y_min, y_max)), color);
        s += buf;
      }
    }
    if (!d.empty()) {
      s += "<path d=\"" + d + "\" stroke=\"" + color + "\" stroke-width=\"1.5\" fill=\"none\"/>\n";
    }
  };
  series(false, "#1f77b4");
  series(true, "#d62728");
  std::snprintf(buf, sizeof buf,
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"#1f77b4\"/>"
                "<text x=\"%.1f\" y=\"%.1f\">train</text>\n"
                "<rect x=\"%.1f\" y=\"%.1f\" width=\"12\" height=\"3\" fill=\"#d62728\"/>"
                "<text x=\"%.1f\" y=\"%.1f\">test</text>\n",
                W - 130, top + 6, W - 114, top + 11, W - 70, top + 6, W - 54, top + 11);
  s += buf;
  s += "</svg>\n";
  atomic_write_file(path, s.data(), s.size());
}

}  // namespace flowrt::train
