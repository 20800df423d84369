#include "trainer/report/samples.hpp"

#include <cstdio>
#include <memory>

#include "image_io.hpp"
#include "session/session.hpp"

namespace flowrt::train {

std::vector<std::string> write_sample_grids(const Graph &graph, const std::string &dir,
                                            int64_t step, const std::vector<float> &temperatures,
                                            int64_t count, uint64_t seed) {
  InferenceOptions o;
  o.backend = FLOWRT_BACKEND_AUTO;
  o.max_batch = static_cast<size_t>(count);
  InferenceSession session(std::make_shared<const Graph>(graph), o);
  const ImageSpec &im = graph.image;
  ImageBatch batch{count, im.channels, im.height, im.width,
                   std::vector<uint8_t>(static_cast<size_t>(count * graph.dims()))};
  std::vector<std::string> paths;
  for (float t : temperatures) {
    session.sample(static_cast<size_t>(count), t, seed, nullptr, nullptr, batch.pixels.data());
    char name[96];
    std::snprintf(name, sizeof name, "/samples_step%lld_t%.1f.png", static_cast<long long>(step),
                  t);
    paths.push_back(dir + name);
    write_png(paths.back(), make_grid(batch, 0));
  }
  return paths;
}

}  // namespace flowrt::train
