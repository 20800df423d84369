// Semantic validation and load-time preparation of a Graph: shapes are propagated through the
// layer list and checked against every weight, values are checked (finite, invertible, bounded),
// and what does not depend on the input is computed once in double precision (W and W^-1 of every
// 1x1 conv, permutation sources). Every rejection names the layer and what is wrong.
#pragma once

#include "model/graph.hpp"

namespace flowrt {

// Throws Error(FLOWRT_FORMAT_ERROR) on the first problem. Idempotent.
void finalize_graph(Graph &graph);

// W = P * L * (U + diag(sign * exp(log_s))) in double, row-major.
std::vector<double> lu_weight(const InvConvLayer &layer, int64_t c);

}  // namespace flowrt
