#include "cli_args.hpp"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "core/error.hpp"

namespace flowrt {

CliArgs::CliArgs(int argc, char **argv, int first, const std::set<std::string> &value_options,
                 const std::set<std::string> &flags,
                 const std::map<std::string, std::string> &aliases) {
  for (int i = first; i < argc; ++i) {
    std::string a = argv[i];
    if (auto it = aliases.find(a); it != aliases.end()) a = it->second;
    if (a.size() > 1 && a[0] == '-' && !(a.size() > 1 && (std::isdigit(a[1]) || a[1] == '.'))) {
      if (auto eq = a.find('='); eq != std::string::npos && a.rfind("--", 0) == 0) {
        const std::string name = a.substr(0, eq);
        if (!value_options.count(name)) invalid_argument("unknown option '" + name + "'");
        values_[name] = a.substr(eq + 1);
      } else if (flags.count(a)) {
        values_[a] = "1";
      } else if (value_options.count(a)) {
        if (i + 1 >= argc) invalid_argument("option '" + a + "' needs a value");
        values_[a] = argv[++i];
      } else {
        invalid_argument("unknown option '" + a + "'");
      }
    } else {
      positional_.push_back(a);
    }
  }
}

std::string CliArgs::get(const std::string &name, const std::string &fallback) const {
  auto it = values_.find(name);
  return it == values_.end() ? fallback : it->second;
}

std::string CliArgs::require(const std::string &name) const {
  if (!has(name)) invalid_argument("missing required option '" + name + "'");
  return get(name);
}

int64_t CliArgs::get_int(const std::string &name, int64_t fallback, int64_t lo, int64_t hi) const {
  if (!has(name)) return fallback;
  return parse_int(name, get(name), lo, hi);
}

int64_t CliArgs::parse_int(const std::string &name, const std::string &s, int64_t lo, int64_t hi) {
  char *end = nullptr;
  errno = 0;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end || errno) invalid_argument(name + ": '" + s + "' is not an integer");
  if (v < lo || v > hi)
    invalid_argument(name + ": " + s + " is out of range [" + std::to_string(lo) + ", " +
                     std::to_string(hi) + "]");
  return v;
}

uint64_t CliArgs::get_u64(const std::string &name, uint64_t fallback) const {
  if (!has(name)) return fallback;
  const std::string s = get(name);
  char *end = nullptr;
  errno = 0;
  const unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || *end || errno || s[0] == '-')
    invalid_argument(name + ": '" + s + "' is not a non-negative integer");
  return v;
}

double CliArgs::get_double(const std::string &name, double fallback) const {
  if (!has(name)) return fallback;
  const std::string s = get(name);
  char *end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || *end || !std::isfinite(v))
    invalid_argument(name + ": '" + s + "' is not a number");
  return v;
}

std::vector<int64_t> parse_shape(const std::string &text) {
  std::vector<int64_t> dims;
  size_t start = 0;
  while (true) {
    const size_t x = text.find('x', start);
    const std::string part =
        text.substr(start, x == std::string::npos ? std::string::npos : x - start);
    char *end = nullptr;
    const long long v = std::strtoll(part.c_str(), &end, 10);
    if (part.empty() || *end || v < 1 || v > 65536)
      invalid_argument("'" + text + "' is not a shape like 3x32x32");
    dims.push_back(v);
    if (x == std::string::npos) break;
    start = x + 1;
  }
  if (dims.size() != 3) invalid_argument("'" + text + "' is not a shape like 3x32x32 (CxHxW)");
  return dims;
}

std::vector<std::string> split_list(const std::string &text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string part =
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    if (!part.empty()) out.push_back(part);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace flowrt
