// The subcommands of `flowtrain`. Each returns the exit code; errors are thrown as flowrt::Error.
#pragma once

namespace flowrt::train {

int cmd_train(int argc, char **argv);
int cmd_resume(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_launch(int argc, char **argv);

}  // namespace flowrt::train
