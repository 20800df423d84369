// `flowrt info`: what a .flow file holds. The summary lines (image, levels, layers, params,
// latent_dim, flops) use a fixed "key: value" form that `python3 -m converters inspect` prints too.
#include <cstdio>
#include <map>

#include "cli_args.hpp"
#include "commands.hpp"
#include "core/error.hpp"
#include "format/flow_file.hpp"
#include "model/program.hpp"

namespace flowrt {
namespace {

int64_t layer_params(const Layer &l) {
  Graph one;
  one.layers.push_back(l);
  return count_parameters(one);
}

std::string layer_detail(const Layer &l) {
  if (auto *s = std::get_if<SqueezeLayer>(&l.op))
    return s->order == SqueezeOrder::ChannelMajor ? "order=channel_major" : "order=subpixel_major";
  if (auto *c = std::get_if<InvConvLayer>(&l.op))
    return c->form == InvConvForm::LU ? "form=lu" : "form=dense";
  if (auto *p = std::get_if<PermuteLayer>(&l.op))
    return p->kind == PermuteKind::Reverse ? "kind=reverse" : "kind=indices";
  if (auto *c = std::get_if<CouplingLayer>(&l.op)) {
    static const char *const cond[] = {"", "first", "second", "checkerboard_even",
                                       "checkerboard_odd"};
    static const char *const scale[] = {"", "sigmoid", "exp", "tanh"};
    std::string s = c->type == CouplingType::Affine ? "affine" : "additive";
    s += std::string(" cond=") + cond[static_cast<int>(c->conditioning)];
    if (c->mask_channel) s += " mask_channel";
    if (c->type == CouplingType::Affine)
      s += std::string(" scale=") + scale[static_cast<int>(c->scale_fn)];
    s += " net_ops=" + std::to_string(c->net.ops.size());
    return s;
  }
  if (auto *s = std::get_if<SplitLayer>(&l.op))
    return std::string("leaving=") + (s->leaving == Half::First ? "first" : "second") +
           (s->prior.empty() ? " prior=standard" : " prior=learned");
  if (auto *lg = std::get_if<LogitLayer>(&l.op)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "alpha=%g", static_cast<double>(lg->alpha));
    return buf;
  }
  if (auto *t = std::get_if<TopPriorLayer>(&l.op))
    return std::string(t->kind == TopPriorKind::Learned ? "learned" : "standard") +
           (t->n_classes() ? " classes=" + std::to_string(t->n_classes()) : "");
  return "";
}

}  // namespace

int cmd_info(int argc, char **argv) {
  CliArgs args(argc, argv, 2, {}, {"--layers"});
  if (args.positional().size() != 1) invalid_argument("usage: flowrt info M.flow [--layers]");
  const std::string path = args.positional()[0];
  Graph g;
  try {
    g = read_flow(map_model_file(path));
  } catch (const Error &e) {
    if (e.status() == FLOWRT_IO_ERROR) throw;
    throw Error(e.status(), path + ": " + e.what());
  }
  const FlopCount fl = count_flops(g);
  std::map<std::string, int> kinds;
  for (const Layer &l : g.layers) kinds[layer_kind_name(l.op)]++;
  std::printf("model: %s\n", path.c_str());
  std::printf("format: %d.%d\n", g.format_major, g.format_minor);
  std::printf("image: %lldx%lldx%lld n_bits=%d\n", (long long)g.image.channels,
              (long long)g.image.height, (long long)g.image.width, g.image.n_bits);
  std::printf("levels: %d\n", g.levels());
  std::printf("layers: %zu\n", g.layers.size());
  std::string counts;
  for (const auto &[k, n] : kinds)
    counts += (counts.empty() ? "" : ", ") + k + "=" + std::to_string(n);
  std::printf("layer_kinds: %s\n", counts.c_str());
  std::printf("params: %lld\n", (long long)count_parameters(g));
  std::printf("latent_dim: %lld\n", (long long)g.dims());
  std::printf("flops_encode: %.0f (%.3f GFLOP per image)\n", fl.encode, fl.encode * 1e-9);
  std::printf("flops_decode: %.0f (%.3f GFLOP per image)\n", fl.decode, fl.decode * 1e-9);
  for (const auto &[k, v] : g.metadata) std::printf("meta.%s: %s\n", k.c_str(), v.c_str());
  if (args.has("--layers")) {
    std::printf("\n%-5s %-28s %-11s %-12s %-12s %10s  %s\n", "#", "name", "kind", "in", "out",
                "params", "detail");
    for (size_t i = 0; i < g.layers.size(); ++i) {
      const Layer &l = g.layers[i];
      std::printf("%-5zu %-28s %-11s %-12s %-12s %10lld  %s\n", i, l.name.c_str(),
                  layer_kind_name(l.op), to_string(l.in).c_str(), to_string(l.out).c_str(),
                  (long long)layer_params(l), layer_detail(l).c_str());
    }
  }
  return 0;
}

}  // namespace flowrt
