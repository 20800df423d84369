#include "bench_peak.hpp"

#include <sys/stat.h>
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#ifdef FLOWRT_HAVE_ONEDNN
#include "backends/onednn/onednn_compat.hpp"
#endif
#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define FLOWRT_FMA_X86 1
#endif

namespace flowrt::bench {

#ifdef FLOWRT_HAVE_ONEDNN
namespace {
#ifdef FLOWRT_FMA_X86
// Independent accumulators, more than FMA latency x FMA units (4 x 2 on these cores), each
// updated `iters` times: the loop runs at the FMA units' throughput. Returns the FLOPs done. (A
// macro, not a template taking lambdas: a lambda would not inherit the function's target ISA.)
#define FLOWRT_FMA_CHAINS(V, kAcc, FMA, SET)                    \
  V acc[kAcc];                                                  \
  for (int j = 0; j < kAcc; ++j) acc[j] = SET(1.f + j * 1e-3f); \
  const V m = SET(0.9999999f), c = SET(1e-7f);                  \
  for (int64_t i = 0; i < iters; ++i)                           \
    for (int j = 0; j < kAcc; ++j) acc[j] = FMA(acc[j], m, c);  \
  float lanes[sizeof(V) / sizeof(float)];                       \
  for (int j = 1; j < kAcc; ++j) acc[0] = acc[0] + acc[j];      \
  std::memcpy(lanes, &acc[0], sizeof lanes);                    \
  *sink += lanes[0];                                            \
  return 2.0 * static_cast<double>(iters) * kAcc * (sizeof(V) / sizeof(float))

__attribute__((target("avx512f"))) double fma_avx512(int64_t iters, float *sink) {
  FLOWRT_FMA_CHAINS(__m512, 16, _mm512_fmadd_ps, _mm512_set1_ps);
}
__attribute__((target("avx2,fma"))) double fma_avx2(int64_t iters, float *sink) {
  FLOWRT_FMA_CHAINS(__m256, 12, _mm256_fmadd_ps, _mm256_set1_ps);
}
#undef FLOWRT_FMA_CHAINS
#endif

// The cores' fp32 FMA rate with `threads` threads, in GFLOP/s, and the vector width it used.
double measure_fma_peak(int threads, const char **isa) {
#ifdef FLOWRT_FMA_X86
  double (*run)(int64_t, float *) = nullptr;
  if (__builtin_cpu_supports("avx512f")) {
    run = fma_avx512, *isa = "AVX-512 FMA";
  } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    run = fma_avx2, *isa = "AVX2 FMA";
  } else {
    *isa = "no FMA";
    return 0;
  }
  int team = threads;
#ifdef _OPENMP
  if (team <= 0) team = omp_get_max_threads();
#endif
  if (team <= 0) team = 1;
  const int64_t iters = 20'000'000;  // ~0.1-0.3 s per thread
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    double flops = 0;
    float sink = 0;
    const auto t0 = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(team) reduction(+ : flops, sink)
    flops += run(iters, &sink);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (sink != 0) best = std::max(best, flops / s * 1e-9);  // sink is never 0: keeps the loop
  }
  return best;
#else
  (void)threads;
  *isa = "not measured on this architecture";
  return 0;
#endif
}

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
  peak->fma_gflops = measure_fma_peak(threads, &peak->fma_isa);
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
  const auto f0 = line.find("\"fma_gflops\": ");
  if (k0 == std::string::npos || m0 == std::string::npos || c0 == std::string::npos) return false;
  const auto k1 = line.find('"', k0 + 8);
  *key = line.substr(k0 + 8, k1 - k0 - 8);
  p->matmul_gflops = std::atof(line.c_str() + m0 + 17);
  p->conv_gflops = std::atof(line.c_str() + c0 + 15);
  p->bf16_matmul_gflops = b0 == std::string::npos ? 0.0 : std::atof(line.c_str() + b0 + 22);
  p->fma_gflops = f0 == std::string::npos ? 0.0 : std::atof(line.c_str() + f0 + 15);
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
       << ", \"bf16_matmul_gflops\": " << peak.bf16_matmul_gflops
       << ", \"fma_gflops\": " << peak.fma_gflops << "}";
  keep.push_back(line.str());
  std::ofstream out(path);
  out << "[\n";
  for (size_t i = 0; i < keep.size(); ++i) out << keep[i] << (i + 1 < keep.size() ? ",\n" : "\n");
  out << "]\n";
}

}  // namespace flowrt::bench
