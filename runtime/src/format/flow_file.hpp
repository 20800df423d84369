// .flow bytes <-> Graph. Reading verifies the buffer's structure (FlatBuffers verifier, with our
// own size and identifier checks first), converts every table into the Graph, then runs the
// semantic checks and load-time preparation (model/finalize.hpp). Writing is the inverse.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "model/graph.hpp"

namespace flowrt {

// Bytes that stay alive as long as any Tensor viewing them (mmap'd file or an owned copy).
struct ModelBytes {
  virtual ~ModelBytes() = default;
  virtual const uint8_t *data() const = 0;
  virtual size_t size() const = 0;
};

std::shared_ptr<ModelBytes> map_model_file(const std::string &path);
std::shared_ptr<ModelBytes> copy_model_bytes(const void *data, size_t size);

// Throws Error with FLOWRT_FORMAT_ERROR / FLOWRT_UNSUPPORTED naming what is wrong. Tensors view
// the bytes without copying where they are 4-byte aligned.
Graph read_flow(std::shared_ptr<ModelBytes> bytes);

std::vector<uint8_t> write_flow(const Graph &graph);
// Writes atomically: a temporary file beside `path`, fsync, rename.
void save_flow(const Graph &graph, const std::string &path);

}  // namespace flowrt
