#include "bench_peak.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <vector>

#ifdef FLOWRT_HAVE_ONEDNN
#include "backends/onednn/onednn_compat.hpp"
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

namespace flowrt::bench {

#ifdef FLOWRT_HAVE_ONEDNN
namespace {

using dnnl::memory;
using tag = memory::format_tag;

// Best of `reps` timed runs after two warm-up runs, in GFLOP/s.
template <typename Run>
double best_rate(double flops, int reps, Run &&run) {
  for (int i = 0; i < 2; ++i) run();
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    run();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return flops / best * 1e-9;
}

}  // namespace

bool measure_peak(int threads, Peak *peak) {
#ifdef _OPENMP
  const int prev = omp_get_max_threads();
  if (threads > 0) omp_set_num_threads(threads);
#endif
  dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  dnnl::stream strm(eng);
  const auto f32 = memory::data_type::f32;
  {
    const memory::dim n = 2048;
    memory::desc md({n, n}, f32, tag::ab);
    auto pd = onednn::make_matmul_pd(eng, md, md, memory::desc(), md, dnnl::primitive_attr());
    memory a(md, eng), b(md, eng), c(md, eng);
    for (memory *m : {&a, &b}) std::fill_n(static_cast<float *>(m->get_data_handle()), n * n, 0.5f);
    dnnl::matmul mm(pd);
    peak->matmul_gflops = best_rate(2.0 * n * n * n, 5, [&] {
      mm.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
      strm.wait();
    });
  }
  if (onednn::cpu_has_bf16()) {
    // Weights in the layout oneDNN prefers (prepared once, as a session prepares them).
    const memory::dim n = 2048;
    const auto bf16 = memory::data_type::bf16;
    memory::desc src_md({n, n}, bf16, tag::ab), dst_md({n, n}, f32, tag::ab);
    auto pd = onednn::make_matmul_pd(eng, src_md, memory::desc({n, n}, bf16, tag::any),
                                     memory::desc(), dst_md, dnnl::primitive_attr());
    memory a(src_md, eng), b(pd.weights_desc(), eng), c(dst_md, eng);
    for (memory *m : {&a, &b})  // 0x3f00 is bf16 0.5
      std::fill_n(static_cast<uint16_t *>(m->get_data_handle()), m->get_desc().get_size() / 2,
                  uint16_t{0x3f00});
    dnnl::matmul mm(pd);
    peak->bf16_impl = onednn::impl_name(pd);
    peak->bf16_matmul_gflops = best_rate(2.0 * n * n * n, 5, [&] {
      mm.execute(strm, {{DNNL_ARG_SRC, a}, {DNNL_ARG_WEIGHTS, b}, {DNNL_ARG_DST, c}});
      strm.wait();
    });
  } else {
    peak->bf16_impl = onednn::cpu_isa_name();
  }
  {
    const memory::dim n = 16, ch = 512, hw = 16;
    auto any = [&](memory::dims d) { return memory::desc(d, f32, tag::any); };
    auto pd = onednn::make_conv_pd(eng, any({n, ch, hw, hw}), any({ch, ch, 3, 3}),
                                   memory::desc({ch}, f32, tag::x), any({n, ch, hw, hw}), {1, 1},
                                   dnnl::primitive_attr());
    memory src(pd.src_desc(), eng), wei(pd.weights_desc(), eng), bias(pd.bias_desc(), eng),
        dst(pd.dst_desc(), eng);
    for (memory *m : {&src, &wei, &bias})
      std::fill_n(static_cast<float *>(m->get_data_handle()), m->get_desc().get_size() / 4, 0.01f);
    dnnl::convolution_forward conv(pd);
    peak->conv_gflops = best_rate(2.0 * n * ch * ch * 9 * hw * hw, 5, [&] {
      conv.execute(strm, {{DNNL_ARG_SRC, src},
                          {DNNL_ARG_WEIGHTS, wei},
                          {DNNL_ARG_BIAS, bias},
                          {DNNL_ARG_DST, dst}});
      strm.wait();
    });
  }
#ifdef _OPENMP
  omp_set_num_threads(prev);
#endif
  return true;
}
#else
bool measure_peak(int, Peak *) {
  return false;
}
#endif

std::string peak_cache_path() {
  if (const char *x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/flowrt/peak.json";
  if (const char *h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/flowrt/peak.json";
  return "flowrt-peak.json";
}

namespace {
std::string key_of(const std::string &cpu, int threads) {
  return cpu + " / " + std::to_string(threads) + " threads";
}
// The cache is a JSON array with one object per line:
// {"key": "<cpu> / <n> threads", "matmul_gflops": x, "conv_gflops": y, "bf16_matmul_gflops": z}
// (files written before the bf16 peak existed lack z: read as 0)
bool parse_line(const std::string &line, std::string *key, Peak *p) {
  const auto k0 = line.find("\"key\": \"");
  const auto m0 = line.find("\"matmul_gflops\": ");
  const auto c0 = line.find("\"conv_gflops\": ");
  const auto b0 = line.find("\"bf16_matmul_gflops\": ");
  if (k0 == std::string::npos || m0 == std::string::npos || c0 == std::string::npos) return false;
  const auto k1 = line.find('"', k0 + 8);
  *key = line.substr(k0 + 8, k1 - k0 - 8);
  p->matmul_gflops = std::atof(line.c_str() + m0 + 17);
  p->conv_gflops = std::atof(line.c_str() + c0 + 15);
  p->bf16_matmul_gflops = b0 == std::string::npos ? 0.0 : std::atof(line.c_str() + b0 + 22);
  return true;
}
}  // namespace

bool load_peak(const std::string &path, const std::string &cpu, int threads, Peak *peak) {
  std::ifstream in(path);
  std::string line, key;
  Peak p;
  while (std::getline(in, line))
    if (parse_line(line, &key, &p) && key == key_of(cpu, threads)) {
      *peak = p;
      return true;
    }
  return false;
}

void save_peak(const std::string &path, const std::string &cpu, int threads, const Peak &peak) {
  std::vector<std::string> keep;
  {
    std::ifstream in(path);
    std::string line, key;
    Peak p;
    while (std::getline(in, line))
      if (parse_line(line, &key, &p) && key != key_of(cpu, threads))
        keep.push_back(line.substr(0, line.find_last_of('}') + 1));
  }
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1))
    ::mkdir(path.substr(0, pos).c_str(), 0755);
  std::ostringstream line;
  line << "  {\"key\": \"" << key_of(cpu, threads)
       << "\", \"matmul_gflops\": " << peak.matmul_gflops
       << ", \"conv_gflops\": " << peak.conv_gflops
       << ", \"bf16_matmul_gflops\": " << peak.bf16_matmul_gflops << "}";
  keep.push_back(line.str());
  std::ofstream out(path);
  out << "[\n";
  for (size_t i = 0; i < keep.size(); ++i) out << keep[i] << (i + 1 < keep.size() ? ",\n" : "\n");
  out << "]\n";
}

}  // namespace flowrt::bench
