// A small command-line parser shared by the project's programs: positional arguments and
// `--name value` / `-n value` / `--flag` options, with errors that name the offending argument.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace flowrt {

class CliArgs {
 public:
  // `value_options` take a value ("--seed"); `flags` do not ("--random-nets"). Short aliases map
  // to a long name ({"-n", "--num"}).
  CliArgs(int argc, char **argv, int first, const std::set<std::string> &value_options,
          const std::set<std::string> &flags,
          const std::map<std::string, std::string> &aliases = {});

  const std::vector<std::string> &positional() const { return positional_; }
  bool has(const std::string &name) const { return values_.count(name) > 0; }
  std::string get(const std::string &name, const std::string &fallback = "") const;
  int64_t get_int(const std::string &name, int64_t fallback, int64_t lo, int64_t hi) const;
  double get_double(const std::string &name, double fallback) const;
  // `text` as an integer in [lo, hi]; errors name the option.
  static int64_t parse_int(const std::string &name, const std::string &text, int64_t lo,
                           int64_t hi);
  uint64_t get_u64(const std::string &name, uint64_t fallback) const;
  std::string require(const std::string &name) const;

 private:
  std::vector<std::string> positional_;
  std::map<std::string, std::string> values_;
};

// "3x32x32" -> {3, 32, 32}.
std::vector<int64_t> parse_shape(const std::string &text);
// "1,16,64" -> {"1", "16", "64"}.
std::vector<std::string> split_list(const std::string &text);

}  // namespace flowrt
