// `flowrt init`: writes a freshly initialised Glow model.
#include <cstdio>
#include <ctime>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"

namespace flowrt {

int cmd_init(int argc, char **argv) {
  CliArgs args(argc, argv, 2,
               {"--image", "--levels", "--depth", "--width", "--coupling", "--permutation",
                "--seed", "--n-bits", "--arch", "--classes", "--squeeze", "-o"},
               {"--random-nets"}, {{"--out", "-o"}});
  if (!args.positional().empty())
    invalid_argument("unexpected argument '" + args.positional()[0] + "'");
  GlowConfig cfg = args.has("--arch") ? standard_architecture(args.get("--arch")) : GlowConfig{};
  if (args.has("--image")) {
    std::vector<int64_t> s = parse_shape(args.get("--image"));
    cfg.channels = s[0], cfg.height = s[1], cfg.width = s[2];
  }
  cfg.levels = static_cast<int>(args.get_int("--levels", cfg.levels, 1, 8));
  cfg.depth = static_cast<int>(args.get_int("--depth", cfg.depth, 1, 256));
  cfg.hidden = static_cast<int>(args.get_int("--width", cfg.hidden, 1, 8192));
  cfg.n_bits = static_cast<int>(args.get_int("--n-bits", cfg.n_bits, 1, 8));
  cfg.n_classes = static_cast<int>(args.get_int("--classes", 0, 0, 65536));
  if (args.has("--coupling")) cfg.coupling = parse_coupling(args.get("--coupling"));
  if (args.has("--permutation")) cfg.permutation = parse_permutation(args.get("--permutation"));
  if (args.has("--squeeze")) {
    const std::string s = args.get("--squeeze");
    if (s == "channel")
      cfg.squeeze = SqueezeOrder::ChannelMajor;
    else if (s == "subpixel")
      cfg.squeeze = SqueezeOrder::SubpixelMajor;
    else
      invalid_argument("--squeeze: '" + s + "' (channel, subpixel)");
  }
  cfg.seed = args.get_u64("--seed", 0);
  cfg.random_nets = args.has("--random-nets");
  const std::string out = args.require("-o");

  Graph g = build_glow(cfg);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  g.metadata = {{"producer", std::string("flowrt init ") + flowrt_version()},
                {"date", date},
                {"seed", std::to_string(cfg.seed)},
                {"init", cfg.random_nets ? "random-nets" : "glow"}};
  save_flow(g, out);
  std::printf("wrote %s: %lldx%lldx%lld, %d levels x %d steps, width %d, %lld parameters\n",
              out.c_str(), (long long)cfg.channels, (long long)cfg.height, (long long)cfg.width,
              cfg.levels, cfg.depth, cfg.hidden, (long long)count_parameters(g));
  return 0;
}

}  // namespace flowrt
