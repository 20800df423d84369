// Sample grids of a run: the exported model is loaded into a runtime InferenceSession (the same
// code every application uses) and sampled at fixed noise (a fixed seed) for each temperature,
// so grids of successive steps are directly comparable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/graph.hpp"

namespace flowrt::train {

// Writes dir/samples_step<step>_t<T>.png for every temperature; returns the paths.
std::vector<std::string> write_sample_grids(const Graph &graph, const std::string &dir,
                                            int64_t step, const std::vector<float> &temperatures,
                                            int64_t count, uint64_t seed);

}  // namespace flowrt::train
