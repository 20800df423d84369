// GradBuckets, the schedule of the overlapped NCCL reduction, on the CPU: every gradient element
// reduced exactly once per step, each bucket launched at the notification that completes it
// (never before a layer writing it is final, never later), bucket sizes bounded, boundaries fixed
// by the layout alone; odd layouts (empty layers, a layer larger than a bucket, layers out of
// order, shared and scattered ranges, gradients no layer writes); and the layout of real models.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "tiny_models.hpp"
#include "trainer/dist/grad_buckets.hpp"
#include "trainer/dist/nccl_reducer.hpp"
#include "trainer/model/train_model.hpp"

TEST_SUITE_BEGIN("trainer");

namespace flowrt::train {
namespace {

constexpr int kBegin = -1;  // the time of launches made by begin()

struct Launched {
  GradRange range;
  bool last = false;
  int time = 0;  // kBegin, k for the k-th layer_done, the notification count for finish()
};

// One step: begin, layer_done for each layer of `order`, finish.
std::vector<Launched> run_step(GradBuckets &gb, const std::vector<size_t> &order) {
  std::vector<Launched> out;
  int now = kBegin;
  const GradBuckets::Launch record = [&](GradRange r, bool last) { out.push_back({r, last, now}); };
  gb.begin(record);
  for (size_t k = 0; k < order.size(); ++k) {
    now = static_cast<int>(k);
    gb.layer_done(order[k], record);
  }
  now = static_cast<int>(order.size());
  gb.finish(record);
  return out;
}

std::vector<size_t> backward_order(size_t layers) {
  std::vector<size_t> o(layers);
  std::iota(o.rbegin(), o.rend(), size_t{0});
  return o;
}

bool overlaps(const GradRange &a, const GradRange &b) {
  return a.count > 0 && b.count > 0 && a.offset < b.end() && b.offset < a.end();
}

// Everything a step must satisfy, whatever the layout and the order of the notifications.
void check_step(const GradBuckets &gb, const GradLayout &layers, size_t max_bucket,
                const std::vector<size_t> &order, const std::vector<Launched> &launched) {
  const size_t n = gb.size();
  // When each layer was final: its position in `order`, or never (finish() only).
  const int never = static_cast<int>(order.size());
  std::vector<int> final_at(layers.size(), never);
  for (size_t k = 0; k < order.size(); ++k) final_at[order[k]] = static_cast<int>(k);

  std::vector<int> covered(n, 0);
  size_t lasts = 0;
  for (size_t k = 0; k < launched.size(); ++k) {
    const Launched &l = launched[k];
    CAPTURE(l.range.offset);
    CAPTURE(l.range.count);
    CAPTURE(l.time);
    REQUIRE(l.range.end() <= n);
    for (size_t e = l.range.offset; e < l.range.end(); ++e) ++covered[e];
    if (l.last) {
      ++lasts;
      CHECK(k + 1 == launched.size());  // the loss goes with the very last launch
    }
    if (n > 0) {
      CHECK(l.range.count >= 1);
      CHECK(l.range.count <= max_bucket);
    }
    // Not before, and not after, the notification that made it complete.
    int complete = kBegin;
    for (size_t i = 0; i < layers.size(); ++i)
      for (const GradRange &r : layers[i])
        if (overlaps(r, l.range)) complete = std::max(complete, final_at[i]);
    CHECK(l.time == complete);
  }
  CHECK(lasts == 1);
  for (size_t e = 0; e < n; ++e) {
    CAPTURE(e);
    REQUIRE(covered[e] == 1);
  }
  // The same buckets, whatever the order the layers finished in.
  std::vector<GradRange> got, plan = gb.buckets();
  for (const Launched &l : launched)
    if (l.range.count > 0) got.push_back(l.range);
  auto by_offset = [](const GradRange &a, const GradRange &b) { return a.offset < b.offset; };
  std::sort(got.begin(), got.end(), by_offset);
  std::sort(plan.begin(), plan.end(), by_offset);
  CHECK(got == plan);
}

// The plan itself: disjoint buckets covering [0, n), none larger than max_bucket, and no two
// neighbours that would fit in one (so at most 2 n / max_bucket + 1 of them).
void check_plan(const GradBuckets &gb, size_t max_bucket) {
  std::vector<GradRange> b = gb.buckets();
  std::sort(b.begin(), b.end(),
            [](const GradRange &x, const GradRange &y) { return x.offset < y.offset; });
  size_t at = 0;
  for (size_t k = 0; k < b.size(); ++k) {
    CHECK(b[k].offset == at);
    CHECK(b[k].count >= 1);
    CHECK(b[k].count <= max_bucket);
    if (k > 0) CHECK(b[k - 1].count + b[k].count > max_bucket);
    at = b[k].end();
  }
  CHECK(at == gb.size());
  CHECK(b.size() <= 2 * gb.size() / max_bucket + 1);
}

// Layers one after another in forward order (ParamStore's layout), sizes as given.
GradLayout consecutive(const std::vector<size_t> &sizes) {
  GradLayout out;
  size_t at = 0;
  for (size_t s : sizes) {
    out.push_back(s ? std::vector<GradRange>{{at, s}} : std::vector<GradRange>{});
    at += s;
  }
  return out;
}

// The buckets launched (not the empty launch of an empty gradient), in launch order.
std::vector<GradRange> ranges_of(const std::vector<Launched> &l) {
  std::vector<GradRange> out;
  for (const Launched &x : l)
    if (x.range.count > 0) out.push_back(x.range);
  return out;
}

TEST_CASE("grad buckets: forward-order layers, packed from the top, each launched when complete") {
  // Layers 0..4 of 3, 0 (a squeeze), 4, 2 and 6 floats; buckets of at most 6.
  const GradLayout layers = consecutive({3, 0, 4, 2, 6});
  GradBuckets gb(15, layers, 6);
  const std::vector<GradRange> plan = {{9, 6}, {3, 6}, {0, 3}};
  CHECK(gb.buckets() == plan);
  check_plan(gb, 6);
  const std::vector<Launched> l = run_step(gb, backward_order(5));
  check_step(gb, layers, 6, backward_order(5), l);
  REQUIRE(l.size() == 3);
  CHECK(l[0].time == 0);  // layer 4, the first to finish, fills a bucket on its own
  CHECK(l[1].time == 2);  // layers 3 and 2 together: the bucket goes after layer 2
  CHECK(l[2].time == 4);  // layer 0, after the parameterless layer 1
  CHECK((l[2].last && !l[0].last && !l[1].last));
  // The next step launches the same buckets at the same points.
  const std::vector<Launched> again = run_step(gb, backward_order(5));
  CHECK(ranges_of(again) == ranges_of(l));
  for (size_t k = 0; k < l.size(); ++k) CHECK(again[k].time == l[k].time);
}

TEST_CASE("grad buckets: a bucket closes at a layer boundary rather than wait for a later layer") {
  // 1 float on top, then 5: one bucket of 6 would hold the top float back until layer 0.
  const GradLayout layers = consecutive({5, 1});
  GradBuckets gb(6, layers, 5);
  CHECK(gb.buckets() == std::vector<GradRange>{{5, 1}, {0, 5}});
  const std::vector<Launched> l = run_step(gb, {1, 0});
  check_step(gb, layers, 5, {1, 0}, l);
  CHECK(l.front().time == 0);
}

TEST_CASE("grad buckets: a layer larger than a bucket is split into full buckets from its top") {
  const GradLayout layers = consecutive({2, 23, 1});
  GradBuckets gb(26, layers, 5);
  const std::vector<GradRange> plan = {{25, 1}, {20, 5}, {15, 5}, {10, 5}, {5, 5}, {0, 5}};
  CHECK(gb.buckets() == plan);
  check_plan(gb, 5);
  const std::vector<Launched> l = run_step(gb, backward_order(3));
  check_step(gb, layers, 5, backward_order(3), l);
  CHECK(ranges_of(l) == plan);
  // Layer 1 finishing launches its four full buckets at once, in plan order.
  for (size_t k = 1; k <= 4; ++k) CHECK(l[k].time == 1);
  CHECK(l[5].time == 2);
  // A bucket of one float: every float its own launch.
  GradBuckets ones(26, layers, 1);
  check_plan(ones, 1);
  CHECK(ones.buckets().size() == 26);
  check_step(ones, layers, 1, backward_order(3), run_step(ones, backward_order(3)));
}

TEST_CASE("grad buckets: empty layers, an empty gradient, gradients no layer writes") {
  SUBCASE("no parameters at all: the loss alone, at once") {
    const GradLayout layers = {{}, {}, {}};
    GradBuckets gb(0, layers, 4);
    CHECK(gb.buckets().empty());
    const std::vector<Launched> l = run_step(gb, backward_order(3));
    REQUIRE(l.size() == 1);
    CHECK(l[0].range.count == 0);
    CHECK(l[0].last);
    CHECK(l[0].time == kBegin);
    check_step(gb, layers, 4, backward_order(3), l);
  }
  SUBCASE("no layers: everything is final at begin") {
    GradBuckets gb(10, {}, 4);
    check_plan(gb, 4);
    const std::vector<Launched> l = run_step(gb, {});
    for (const Launched &x : l) CHECK(x.time == kBegin);
    check_step(gb, {}, 4, {}, l);
  }
  SUBCASE("holes between and around the layers, zero-length ranges") {
    const GradLayout layers = {{{2, 3}, {5, 0}}, {}, {{9, 2}}, {{11, 0}}};
    GradBuckets gb(14, layers, 3);
    check_plan(gb, 3);
    const std::vector<Launched> l = run_step(gb, backward_order(4));
    check_step(gb, layers, 3, backward_order(4), l);
    // [11, 14) is written by no layer: it goes before any layer has finished.
    CHECK(l.front().range == GradRange{11, 3});
    CHECK(l.front().time == kBegin);
  }
}

TEST_CASE("grad buckets: layers out of order, scattered and shared ranges") {
  SUBCASE("reversed layout: the first layer's gradients at the top") {
    GradLayout layers = consecutive({4, 3, 5, 2});
    std::reverse(layers.begin(), layers.end());
    GradBuckets gb(14, layers, 6);
    check_plan(gb, 6);
    const std::vector<Launched> l = run_step(gb, backward_order(4));
    check_step(gb, layers, 6, backward_order(4), l);
    CHECK(ranges_of(l) == gb.buckets());  // plan order is launch order
  }
  SUBCASE("a layer in pieces, one range two layers write") {
    // Layer 0: [0, 2) and [10, 12); layer 1: [2, 6); layer 2: [6, 10) and [4, 6) (shared).
    const GradLayout layers = {{{0, 2}, {10, 2}}, {{2, 4}}, {{6, 4}, {4, 2}}};
    GradBuckets gb(12, layers, 2);
    check_plan(gb, 2);
    const std::vector<Launched> l = run_step(gb, backward_order(3));
    check_step(gb, layers, 2, backward_order(3), l);
    CHECK(ranges_of(l) == gb.buckets());
    // [4, 6) waits for layer 1 too, though layer 2 writes it first.
    for (const Launched &x : l)
      if (x.range.offset == 4) CHECK(x.time == 1);
    // Layer 0's top piece waits for layer 0, the last to finish.
    for (const Launched &x : l)
      if (x.range.offset == 10) CHECK(x.time == 2);
  }
}

TEST_CASE("grad buckets: random layouts, bucket sizes and notification orders") {
  std::mt19937 rng(20240601);
  auto uniform = [&](size_t lo, size_t hi) {
    return std::uniform_int_distribution<size_t>(lo, hi)(rng);
  };
  for (int trial = 0; trial < 300; ++trial) {
    CAPTURE(trial);
    const size_t n = uniform(0, 200), nl = uniform(0, 12), max_bucket = uniform(1, 40);
    GradLayout layers(nl);
    for (auto &ranges : layers) {
      const size_t pieces = uniform(0, 3);
      for (size_t p = 0; p < pieces && n > 0; ++p) {
        const size_t offset = uniform(0, n - 1);
        ranges.push_back({offset, uniform(0, std::min<size_t>(n - offset, 60))});
      }
    }
    GradBuckets gb(n, layers, max_bucket);
    check_plan(gb, max_bucket);
    // The backward order launches in plan order.
    const std::vector<Launched> back = run_step(gb, backward_order(nl));
    check_step(gb, layers, max_bucket, backward_order(nl), back);
    CHECK(ranges_of(back) == gb.buckets());
    // Any order, and layers that never report (finish() takes their buckets).
    std::vector<size_t> order(nl);
    std::iota(order.begin(), order.end(), size_t{0});
    std::shuffle(order.begin(), order.end(), rng);
    order.resize(uniform(0, nl));
    check_step(gb, layers, max_bucket, order, run_step(gb, order));
    // The plan depends on the layout alone.
    CHECK(GradBuckets(n, layers, max_bucket).buckets() == gb.buckets());
  }
}

TEST_CASE("grad buckets: misuse is refused by name") {
  const GradLayout layers = consecutive({3, 3});
  const GradBuckets::Launch ignore = [](GradRange, bool) {};
  CHECK_THROWS_WITH_AS(GradBuckets(5, layers, 4), doctest::Contains("past the gradient"), Error);
  CHECK_THROWS_WITH_AS(GradBuckets(6, layers, 0), doctest::Contains("bucket size"), Error);
  GradBuckets gb(6, layers, 4);
  CHECK_THROWS_WITH_AS(gb.layer_done(1, ignore), doctest::Contains("outside a step"), Error);
  gb.begin(ignore);
  CHECK_THROWS_WITH_AS(gb.layer_done(2, ignore), doctest::Contains("no layer 2"), Error);
  gb.layer_done(1, ignore);
  CHECK_THROWS_WITH_AS(gb.layer_done(1, ignore), doctest::Contains("twice"), Error);
  gb.finish(ignore);
  CHECK_THROWS_WITH_AS(gb.finish(ignore), doctest::Contains("outside a step"), Error);
}

TEST_CASE("grad buckets: a model's layout tiles its parameters, each range its own layer's") {
  test::TinyVariant dense;  // dense 1x1 convs, an actnorm in every net, class offsets
  dense.permutation = Permutation::Dense;
  dense.net_actnorm = true;
  dense.classes = 3;
  test::TinyVariant plain;  // shuffles, no split prior nets, a standard normal on top
  plain.permutation = Permutation::Shuffle;
  plain.empty_split_prior = true;
  plain.top = TopPriorKind::StandardNormal;
  for (const test::TinyVariant &v : {test::TinyVariant{}, dense, plain}) {
    const Graph g = test::tiny_graph(v);
    const TrainModel<float> model(g);
    const GradLayout layout = model.grad_layout();
    REQUIRE(layout.size() == g.layers.size());
    const std::vector<ParamInfo> &info = model.params().info();
    std::vector<int> owners(model.params().size(), 0);
    for (size_t i = 0; i < layout.size(); ++i) {
      const std::string name =
          g.layers[i].name.empty() ? "layer" + std::to_string(i) : g.layers[i].name;
      for (const GradRange &r : layout[i])
        for (size_t e = r.offset; e < r.end(); ++e) ++owners[e];
      // Every parameter the layer's ranges hold carries the layer's name.
      for (const ParamInfo &p : info) {
        bool inside = false;
        for (const GradRange &r : layout[i]) inside |= overlaps(r, {p.offset, p.size});
        if (!inside) continue;
        CAPTURE(p.name);
        CAPTURE(name);
        CHECK((p.name.rfind(name + ".", 0) == 0 || p.name.rfind(name + "/", 0) == 0));
      }
    }
    for (size_t e = 0; e < owners.size(); ++e) {
      CAPTURE(e);
      REQUIRE(owners[e] == 1);
    }
    // A small bucket makes many launches over the backward pass.
    const size_t max_bucket = std::max<size_t>(1, model.params().size() / 7);
    GradBuckets gb(model.params().size(), layout, max_bucket);
    check_plan(gb, max_bucket);
    const std::vector<size_t> order = backward_order(layout.size());
    const std::vector<Launched> l = run_step(gb, order);
    check_step(gb, layout, max_bucket, order, l);
    CHECK(l.front().time < static_cast<int>(layout.size()) / 2);  // well before the pass ends
  }
}

// Sets an environment variable for the scope (unset when `value` is null), then restores it.
class ScopedEnv {
 public:
  ScopedEnv(const char *name, const char *value) : name_(name) {
    if (const char *v = std::getenv(name)) saved_ = v, had_ = true;
    set(value);
  }
  ScopedEnv(const ScopedEnv &) = delete;
  ScopedEnv &operator=(const ScopedEnv &) = delete;
  ~ScopedEnv() { set(had_ ? saved_.c_str() : nullptr); }
  void set(const char *value) {
    if (value)
      ::setenv(name_.c_str(), value, 1);
    else
      ::unsetenv(name_.c_str());
  }

 private:
  std::string name_, saved_;
  bool had_ = false;
};

TEST_CASE("grad buckets: the NCCL reduction's switches, FLOWRT_NCCL_OVERLAP and _BUCKET_BYTES") {
  ScopedEnv overlap("FLOWRT_NCCL_OVERLAP", nullptr), bytes("FLOWRT_NCCL_BUCKET_BYTES", nullptr);
  CHECK(nccl_options_from_env().overlap);
  CHECK(nccl_options_from_env().bucket_bytes == size_t{25} << 20);
  overlap.set("0");
  CHECK_FALSE(nccl_options_from_env().overlap);
  overlap.set("1");
  CHECK(nccl_options_from_env().overlap);
  overlap.set("off");
  CHECK_THROWS_WITH_AS(nccl_options_from_env(), doctest::Contains("must be 0 or 1, not 'off'"),
                       Error);
  overlap.set(nullptr);
  bytes.set("4096");
  CHECK(nccl_options_from_env().bucket_bytes == 4096);
  for (const char *bad : {"2", "-8", "4k", "1099511627777"}) {
    CAPTURE(bad);
    bytes.set(bad);
    CHECK_THROWS_WITH_AS(nccl_options_from_env(), doctest::Contains("FLOWRT_NCCL_BUCKET_BYTES"),
                         Error);
  }
}

}  // namespace
}  // namespace flowrt::train

TEST_SUITE_END();
