// `flowrt sample`: a PNG grid of samples at a temperature.
#include <chrono>
#include <cstdio>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "flowrt.hpp"
#include "image_io.hpp"

namespace flowrt {

flowrt_backend parse_backend(const std::string &name) {
  static const flowrt_backend all[] = {FLOWRT_BACKEND_AUTO, FLOWRT_BACKEND_REF,
                                       FLOWRT_BACKEND_PORTABLE, FLOWRT_BACKEND_ONEDNN,
                                       FLOWRT_BACKEND_CUDA};
  std::string names;
  for (flowrt_backend b : all) {
    if (name == flowrt_backend_name(b)) return b;
    names += (names.empty() ? "" : ", ") + std::string(flowrt_backend_name(b));
  }
  invalid_argument("unknown backend '" + name + "' (" + names + ")");
}

int cmd_sample(int argc, char **argv) {
  CliArgs args(argc, argv, 2,
               {"-n", "-t", "--seed", "--cols", "--backend", "--threads", "--batch", "-o"}, {},
               {{"--num", "-n"}, {"--temperature", "-t"}, {"--out", "-o"}});
  if (args.positional().size() != 1)
    invalid_argument("usage: flowrt sample M.flow [-n 64] [-t 0.7] [--seed 1] -o grid.png");
  const int64_t n = args.get_int("-n", 64, 1, 4096);
  const double t = args.get_double("-t", 0.7);
  if (t < 0 || t > 100) invalid_argument("-t: temperature must be in [0, 100]");
  const std::string out = args.require("-o");

  Model model(args.positional()[0]);
  SessionOptions opts;
  opts.backend(parse_backend(args.get("--backend", "auto")))
      .threads(static_cast<int>(args.get_int("--threads", 0, 0, 4096)))
      .max_batch(static_cast<size_t>(args.get_int("--batch", std::min<int64_t>(n, 64), 1, 65536)));
  Session session(model, opts);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<uint8_t> px =
      session.sample(static_cast<size_t>(n), static_cast<float>(t), args.get_u64("--seed", 1));
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  ImageBatch batch{n, model.channels(), model.height(), model.width(), std::move(px)};
  write_png(out, make_grid(batch, args.get_int("--cols", 0, 0, 4096)));
  std::printf("wrote %s: %lld samples at temperature %.2f (%s backend, %.1f ms)\n", out.c_str(),
              (long long)n, t, flowrt_backend_name(session.backend()), ms);
  return 0;
}

}  // namespace flowrt
