#include "trainer/train/run_config.hpp"

#include <cstdio>
#include <cstdlib>
#include <map>

#include "core/error.hpp"

namespace flowrt::train {
namespace {

std::string num(double v) {
  char b[64];
  std::snprintf(b, sizeof b, "%.17g", v);
  return b;
}

}  // namespace

double parse_duration(const std::string &t) {
  char *end = nullptr;
  const double v = std::strtod(t.c_str(), &end);
  const std::string unit = end ? std::string(end) : "";
  double f = 0;
  if (unit.empty() || unit == "s")
    f = 1;
  else if (unit == "m" || unit == "min")
    f = 60;
  else if (unit == "h")
    f = 3600;
  if (end == t.c_str() || f == 0 || !(v > 0))
    invalid_argument("--time '" + t + "': expected a positive duration like 90s, 30m or 2h");
  return v * f;
}

std::vector<std::pair<std::string, std::string>> RunConfig::to_kv() const {
  return {{"data", data},
          {"data_dir", data_dir},
          {"limit_train", std::to_string(limit_train)},
          {"limit_test", std::to_string(limit_test)},
          {"init_model", init_model},
          {"arch", arch},
          {"levels", std::to_string(levels)},
          {"depth", std::to_string(depth)},
          {"width", std::to_string(width)},
          {"res_blocks", std::to_string(res_blocks)},
          {"coupling", coupling},
          {"permutation", permutation},
          {"n_bits", std::to_string(n_bits)},
          {"batch", std::to_string(batch)},
          {"lr", num(lr)},
          {"epochs", std::to_string(epochs)},
          {"steps", std::to_string(steps)},
          {"time_s", num(time_s)},
          {"warmup", std::to_string(warmup)},
          {"decay", decay},
          {"clip", num(clip)},
          {"ema", num(ema)},
          {"recompute", recompute ? "1" : "0"},
          {"bounded_priors", bounded_priors ? "1" : "0"},
          {"precision", precision},
          {"device", device},
          {"seed", std::to_string(seed)},
          {"threads", std::to_string(threads)},
          {"eval_every", std::to_string(eval_every)},
          {"eval_images", std::to_string(eval_images)},
          {"sample_every", std::to_string(sample_every)},
          {"sample_count", std::to_string(sample_count)},
          {"checkpoint_every", std::to_string(checkpoint_every)},
          {"log_every", std::to_string(log_every)},
          {"keep_checkpoints", std::to_string(keep_checkpoints)},
          {"spike_factor", num(spike_factor)},
          {"spike_window", std::to_string(spike_window)},
          {"grad_shards", std::to_string(grad_shards)},
          {"out", out}};
}

RunConfig RunConfig::from_kv(const std::vector<std::pair<std::string, std::string>> &kv) {
  std::map<std::string, std::string> m(kv.begin(), kv.end());
  auto get = [&](const char *k) -> const std::string & {
    auto it = m.find(k);
    if (it == m.end()) format_error(std::string("checkpoint settings lack '") + k + "'");
    return it->second;
  };
  auto i64 = [&](const char *k) { return std::stoll(get(k)); };
  RunConfig c;
  try {
    c.data = get("data"), c.data_dir = get("data_dir");
    c.limit_train = i64("limit_train"), c.limit_test = i64("limit_test");
    c.init_model = get("init_model");
    if (m.count("arch")) c.arch = m["arch"];  // absent before other families: Glow
    if (c.arch != "glow" && c.arch != "realnvp" && c.arch != "nice")
      format_error("checkpoint settings: unknown arch '" + c.arch + "'");
    c.levels = static_cast<int>(i64("levels")), c.depth = static_cast<int>(i64("depth"));
    c.width = static_cast<int>(i64("width"));
    if (m.count("res_blocks")) c.res_blocks = std::stoi(m["res_blocks"]);  // absent: plain nets
    c.coupling = get("coupling"), c.permutation = get("permutation");
    c.n_bits = static_cast<int>(i64("n_bits"));
    c.batch = i64("batch"), c.lr = std::stod(get("lr"));
    c.epochs = i64("epochs"), c.steps = i64("steps"), c.time_s = std::stod(get("time_s"));
    c.warmup = i64("warmup"), c.decay = get("decay"), c.clip = std::stod(get("clip"));
    c.ema = std::stod(get("ema")), c.device = get("device");
    c.recompute = m.count("recompute") && m["recompute"] == "1";  // absent before it existed
    c.bounded_priors = m.count("bounded_priors") && m["bounded_priors"] == "1";  // likewise
    if (m.count("precision")) c.precision = m["precision"];                      // likewise
    c.seed = std::stoull(get("seed")), c.threads = static_cast<int>(i64("threads"));
    c.eval_every = i64("eval_every"), c.eval_images = i64("eval_images");
    c.sample_every = i64("sample_every"), c.sample_count = i64("sample_count");
    c.checkpoint_every = i64("checkpoint_every"), c.log_every = i64("log_every");
    c.keep_checkpoints = static_cast<int>(i64("keep_checkpoints"));
    if (m.count("grad_shards")) c.grad_shards = std::stoi(m["grad_shards"]);     // absent before
    if (m.count("spike_factor")) c.spike_factor = std::stod(m["spike_factor"]);  // likewise
    if (m.count("spike_window")) c.spike_window = std::stoll(m["spike_window"]);
    c.out = get("out");
  } catch (const std::logic_error &e) {  // stoll / stod
    format_error(std::string("checkpoint settings: malformed number (") + e.what() + ")");
  }
  return c;
}

}  // namespace flowrt::train
