// What the C API's opaque handles hold. A model is an immutable, verified Graph (whose tensors
// may view the file's mapped bytes); sessions share it through a shared_ptr, so models and
// sessions may be freed in any order.
#pragma once

#include <memory>

#include "session/session.hpp"

struct flowrt_model {
  std::shared_ptr<const flowrt::Graph> graph;
};

struct flowrt_session_options {
  flowrt::InferenceOptions options;
};

struct flowrt_session {
  std::unique_ptr<flowrt::InferenceSession> session;
};
