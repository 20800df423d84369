// Errors inside libflowrt: one exception type carrying a flowrt_status, converted to a status and
// a thread-local message at the C API boundary (nothing throws across it).
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

#include "flowrt.h"

namespace flowrt {

class Error : public std::runtime_error {
 public:
  Error(flowrt_status status, std::string message)
      : std::runtime_error(std::move(message)), status_(status) {}
  flowrt_status status() const { return status_; }

 private:
  flowrt_status status_;
};

[[noreturn]] inline void fail(flowrt_status status, const std::string &message) {
  throw Error(status, message);
}
[[noreturn]] inline void format_error(const std::string &message) {
  throw Error(FLOWRT_FORMAT_ERROR, message);
}
[[noreturn]] inline void invalid_argument(const std::string &message) {
  throw Error(FLOWRT_INVALID_ARGUMENT, message);
}

}  // namespace flowrt
