// The one check every Program passes before a backend sees it (build_program calls it): each step
// is one the format defines, with weights that fit its shapes, in an order the walk can run (the
// logit first, the top prior last, shapes that change between steps only by a flatten). A graph
// the loader accepted always passes; a graph built or edited in code may not, and is refused
// here, once for every backend, with Error(FLOWRT_UNSUPPORTED) naming the step and its layer.
#pragma once

#include "model/graph.hpp"
#include "model/program.hpp"

namespace flowrt {

template <typename T>
void check_program(const Graph &graph, const Program<T> &prog);

}  // namespace flowrt
