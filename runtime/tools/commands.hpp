// The subcommands of the `flowrt` program. Each returns the process exit code and throws
// flowrt::Error / flowrt::Exception for errors (reported by main).
#pragma once

#include <string>

#include "flowrt.h"

namespace flowrt {

int cmd_backends(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_sample(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_reconstruct(int argc, char **argv);
int cmd_interpolate(int argc, char **argv);
int cmd_attributes(int argc, char **argv);
int cmd_manipulate(int argc, char **argv);
int cmd_ood(int argc, char **argv);

flowrt_backend parse_backend(const std::string &name);

}  // namespace flowrt
