// The backend plugins: the loader refuses each purpose-built broken plugin (tests/plugins/) with
// a message naming the file and what is wrong (another ABI, another release, other type layouts,
// another backend, no entry point, a missing dependency named by its file), searches its
// directories in order (FLOWRT_BACKEND_PATH included), and the real oneDNN plugin computes
// exactly what the same code linked in computes, with errors crossing the boundary as statuses.
#include <doctest/doctest.h>

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "backends/backend_registry.hpp"
#include "core/error.hpp"
#include "flowrt.h"
#include "model/glow_builder.hpp"
#include "plugins/plugin_loader.hpp"
#ifdef FLOWRT_HAVE_ONEDNN
#include "backends/onednn/onednn_backend.hpp"
#endif

namespace flowrt {
namespace {

std::string fake(const char *name) {
  return std::string(FLOWRT_FAKE_PLUGIN_DIR) + "/lib" + name + ".so";
}

bool contains(const std::string &text, const std::string &part) {
  return text.find(part) != std::string::npos;
}

}  // namespace

TEST_SUITE("plugins") {
  TEST_CASE("each broken plugin is refused by name, saying what is wrong") {
    struct Case {
      const char *name;
      std::vector<std::string> says;
    };
    const Case cases[] = {
        {"fake_old_release",
         {"refused", "from flowrt 0.0.1", std::string("flowrt ") + FLOWRT_RELEASE}},
        {"fake_old_abi", {"refused", "plugin ABI 999", "ABI 1"}},
        {"fake_bad_layout", {"refused", "other type layouts"}},
        {"fake_wrong_kind", {"refused", "provides the cuda backend, not onednn"}},
        {"fake_no_entry", {"not a flowrt backend plugin", "flowrt_backend_plugin_entry"}},
        {"fake_needs_dep", {"cannot load", "libflowrt_test_dependency.so"}},
    };
    for (const Case &c : cases) {
      CAPTURE(c.name);
      const PluginLoad r = load_plugin_file(fake(c.name), FLOWRT_BACKEND_ONEDNN);
      CHECK(r.api == nullptr);
      CHECK(contains(r.error, fake(c.name)));
      for (const std::string &s : c.says) {
        CAPTURE(s);
        CAPTURE(r.error);
        CHECK(contains(r.error, s));
      }
    }
  }

  TEST_CASE("a missing file and a search that finds nothing say where they looked") {
    const PluginLoad missing =
        load_plugin_file("/nonexistent/libflowrt-onednn.so", FLOWRT_BACKEND_ONEDNN);
    CHECK(missing.api == nullptr);
    CHECK(contains(missing.error, "/nonexistent/libflowrt-onednn.so"));
    const PluginLoad none = find_plugin(FLOWRT_BACKEND_CUDA, {"/nonexistent-a", "/nonexistent-b"});
    CHECK(none.api == nullptr);
    CHECK(contains(none.error, "libflowrt-cuda.so was not found"));
    CHECK(contains(none.error, "/nonexistent-a, /nonexistent-b"));
    CHECK(contains(none.error, "FLOWRT_BACKEND_PATH"));
  }

  TEST_CASE("the search order: own directory, FLOWRT_BACKEND_PATH, ../lib, the install dir") {
    const std::vector<std::string> plain = plugin_search_dirs();
    REQUIRE(!plain.empty());
    setenv("FLOWRT_BACKEND_PATH", "/opt/a:/opt/b", 1);
    const std::vector<std::string> with_env = plugin_search_dirs();
    unsetenv("FLOWRT_BACKEND_PATH");
    REQUIRE(with_env.size() == plain.size() + 2);
    CHECK(with_env[0] == plain[0]);  // the module's own directory first
    CHECK(with_env[1] == "/opt/a");
    CHECK(with_env[2] == "/opt/b");
  }

  TEST_CASE("a refused plugin in an earlier directory: the next good one loads") {
    // A directory whose libflowrt-onednn.so is a plugin of another release.
    const std::filesystem::path dir =
        std::filesystem::temp_directory_path() / ("flowrt-plugins-" + std::to_string(getpid()));
    std::filesystem::create_directories(dir);
    const std::string stale = (dir / "libflowrt-onednn.so").string();
    std::filesystem::copy_file(fake("fake_old_release"), stale,
                               std::filesystem::copy_options::overwrite_existing);
    const PluginLoad only_stale = find_plugin(FLOWRT_BACKEND_ONEDNN, {dir.string()});
    CHECK(only_stale.api == nullptr);
    CHECK(contains(only_stale.error, "refused " + stale));  // the failure, not "not found"
#ifdef FLOWRT_HAVE_ONEDNN
    const PluginLoad next =
        find_plugin(FLOWRT_BACKEND_ONEDNN, {dir.string(), FLOWRT_PLUGIN_BUILD_DIR});
    CHECK(next.api != nullptr);
    CHECK(next.path == std::string(FLOWRT_PLUGIN_BUILD_DIR) + "/libflowrt-onednn.so");
#endif
    std::filesystem::remove_all(dir);
  }

#ifdef FLOWRT_HAVE_ONEDNN
  TEST_CASE("the oneDNN plugin computes exactly what the linked backend computes") {
    GlowConfig c;
    c.channels = 3, c.height = c.width = 8, c.levels = 2, c.depth = 2, c.hidden = 16;
    c.random_nets = true, c.seed = 3;
    const Graph g = build_glow(c);
    BackendOptions o;
    o.max_batch = 4;
    o.threads = 1;
    const PluginLoad &load = backend_plugin(FLOWRT_BACKEND_ONEDNN);
    REQUIRE_MESSAGE(load.api != nullptr, load.error);
    auto plugged = create_backend(FLOWRT_BACKEND_ONEDNN, g, o);
    auto linked = create_onednn_backend(g, o);
    CHECK(plugged->kind() == FLOWRT_BACKEND_ONEDNN);
    const int64_t d = g.dims();
    std::vector<float> eps(4 * d), xa(4 * d), xb(4 * d), za(4 * d), zb(4 * d);
    plugged->sample(4, 7, 0, 0.7f, nullptr, eps.data(), xa.data());
    linked->sample(4, 7, 0, 0.7f, nullptr, eps.data(), xb.data());
    CHECK(xa == xb);
    std::vector<double> la(4), lb(4), da(4), db(4);
    plugged->encode(4, xa.data(), nullptr, za.data(), la.data(), da.data());
    linked->encode(4, xa.data(), nullptr, zb.data(), lb.data(), db.data());
    CHECK(za == zb);
    CHECK(la == lb);
    CHECK(da == db);
    plugged->decode(4, za.data(), xb.data());
    linked->decode(4, za.data(), xa.data());
    CHECK(xa == xb);
    CHECK(!plugged->kernels(4).empty());  // the introspection hook crosses over too
  }

#endif

  TEST_CASE("an error inside a plugin arrives as the plugin's status and message") {
    // The CUDA plugin on a machine without a GPU: its backend's constructor throws inside the
    // plugin; the core must see FLOWRT_DEVICE_ERROR and the plugin's message.
    const PluginLoad &load = backend_plugin(FLOWRT_BACKEND_CUDA);
    if (!load.api || probe_backend(FLOWRT_BACKEND_CUDA).available) {
      MESSAGE("needs the CUDA plugin on a machine without a usable GPU: " << load.error);
      return;
    }
    GlowConfig c;
    c.channels = 1, c.height = c.width = 8, c.levels = 1, c.depth = 1, c.hidden = 8;
    const Graph g = build_glow(c);
    BackendOptions o;
    o.max_batch = 2;
    bool threw = false;
    try {
      create_backend(FLOWRT_BACKEND_CUDA, g, o);
    } catch (const Error &e) {
      threw = true;
      CHECK(e.status() == FLOWRT_DEVICE_ERROR);
      CHECK(contains(e.what(), "no device"));
    }
    CHECK(threw);
  }

  TEST_CASE("flowrt_backend_available reports why a backend cannot run") {
    CHECK(flowrt_backend_available(FLOWRT_BACKEND_REF) == 1);
    CHECK(flowrt_backend_available(FLOWRT_BACKEND_AUTO) == 1);
    const BackendProbe cuda = probe_backend(FLOWRT_BACKEND_CUDA);
    if (!cuda.available) {
      CHECK(flowrt_backend_available(FLOWRT_BACKEND_CUDA) == 0);
      CHECK(std::string(flowrt_last_error()) == cuda.why);
      CHECK(!cuda.why.empty());
    }
    CHECK(flowrt_backend_available(static_cast<flowrt_backend>(42)) == 0);
    CHECK(contains(flowrt_last_error(), "unknown backend 42"));
  }
}

}  // namespace flowrt
