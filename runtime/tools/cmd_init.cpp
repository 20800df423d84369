// `flowrt init`: writes a freshly initialised Glow, RealNVP or NICE model.
#include <cstdio>
#include <ctime>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/architecture.hpp"
#include "model/glow_builder.hpp"
#include "model/program.hpp"

namespace flowrt {

namespace {

void write_model(Graph &g, const std::string &out, uint64_t seed, bool random_nets) {
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d", std::gmtime(&now));
  std::vector<std::pair<std::string, std::string>> md = {
      {"producer", std::string("flowrt init ") + flowrt_version()},
      {"date", date},
      {"seed", std::to_string(seed)},
      {"init", random_nets ? "random-nets" : "identity"}};
  for (const auto &kv : g.metadata)
    if (kv.first == "architecture") md.push_back(kv);
  g.metadata = std::move(md);
  save_flow(g, out);
}

int init_family(const CliArgs &args, Family family) {
  for (const char *glow_only : {"--coupling", "--permutation", "--squeeze", "--classes"})
    if (args.has(glow_only))
      invalid_argument(std::string(glow_only) + " is a Glow option (--arch " + family_name(family) +
                       ")");
  ImageSpec image{1, 28, 28, 8};
  if (args.has("--image")) {
    std::vector<int64_t> s = parse_shape(args.get("--image"));
    image.channels = s[0], image.height = s[1], image.width = s[2];
  }
  image.n_bits = static_cast<int>(args.get_int("--n-bits", 8, 1, 8));
  FamilySize size = family_defaults(family);
  size.levels = static_cast<int>(args.get_int("--levels", size.levels, 1, 8));
  size.depth = static_cast<int>(args.get_int("--depth", size.depth, 1, 64));
  size.width = static_cast<int>(args.get_int("--width", size.width, 1, 8192));
  size.res_blocks = static_cast<int>(args.get_int("--res-blocks", size.res_blocks, 0, 16));
  const uint64_t seed = args.get_u64("--seed", 0);
  const bool random_nets = args.has("--random-nets");
  const std::string out = args.require("-o");
  Graph g = build_family(family, image, size, seed, random_nets);
  write_model(g, out, seed, random_nets);
  std::printf("wrote %s: %s, %lldx%lldx%lld, levels %d, depth %d, width %d, %lld parameters\n",
              out.c_str(), family_name(family), (long long)image.channels, (long long)image.height,
              (long long)image.width, size.levels, size.depth, size.width,
              (long long)count_parameters(g));
  return 0;
}

}  // namespace

int cmd_init(int argc, char **argv) {
  CliArgs args(argc, argv, 2,
               {"--image", "--levels", "--depth", "--width", "--coupling", "--permutation",
                "--seed", "--n-bits", "--arch", "--classes", "--squeeze", "--res-blocks", "-o"},
               {"--random-nets"}, {{"--out", "-o"}});
  if (!args.positional().empty())
    invalid_argument("unexpected argument '" + args.positional()[0] + "'");
  // --arch names a family (glow, realnvp, nice) or one of Glow's standard sizes.
  const std::string arch = args.get("--arch", "glow");
  if (arch == "realnvp" || arch == "nice") return init_family(args, parse_family(arch));
  GlowConfig cfg = arch == "glow" ? GlowConfig{} : standard_architecture(arch);
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
  write_model(g, out, cfg.seed, cfg.random_nets);
  std::printf("wrote %s: %lldx%lldx%lld, %d levels x %d steps, width %d, %lld parameters\n",
              out.c_str(), (long long)cfg.channels, (long long)cfg.height, (long long)cfg.width,
              cfg.levels, cfg.depth, cfg.hidden, (long long)count_parameters(g));
  return 0;
}

}  // namespace flowrt
