// Owning pointers for the C API's handles, for the suites that call flowrt.h directly.
#pragma once

#include <memory>

#include "flowrt.h"

namespace flowrt::test {

struct ModelFree {
  void operator()(flowrt_model *m) const { flowrt_model_free(m); }
};
struct SessionFree {
  void operator()(flowrt_session *s) const { flowrt_session_free(s); }
};
struct OptionsFree {
  void operator()(flowrt_session_options *o) const { flowrt_session_options_free(o); }
};
using ModelPtr = std::unique_ptr<flowrt_model, ModelFree>;
using SessionPtr = std::unique_ptr<flowrt_session, SessionFree>;
using OptionsPtr = std::unique_ptr<flowrt_session_options, OptionsFree>;

}  // namespace flowrt::test
