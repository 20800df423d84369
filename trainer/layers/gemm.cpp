// The trainer's float GEMM. With oneDNN, every shape gets a matmul primitive (brgemm kernels),
// created on first use and kept for the life of the thread: the same shapes recur every step,
// and on the fmnist architecture the primitives run the trainer's GEMMs at 333-374 GFLOP/s
// against 226-273 for dnnl_sgemm on 2 AVX-512 cores. Strided (transposed) operands are
// described by memory strides, so nothing is copied. Without oneDNN: the plain kernel.
//
// In bf16 (GemmBf16Scope), each operand is first reordered by oneDNN (round to nearest even)
// into a dense bf16 copy (same orientation) in a per-thread buffer, and the matmul reads the
// copies and accumulates in fp32 into C; the reorders cost O(mk + kn) against O(mkn).
#include "trainer/layers/gemm.hpp"

#include <atomic>

#ifdef FLOWRT_HAVE_ONEDNN
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "backends/onednn/onednn_compat.hpp"
#include "backends/onednn/onednn_net.hpp"
#endif
#include "core/error.hpp"

namespace flowrt::train {
namespace {

// How many GemmBf16Scopes are alive (any thread): the products run in bf16 while it is > 0.
std::atomic<int> g_bf16_scopes{0};

}  // namespace

#ifdef FLOWRT_HAVE_ONEDNN
namespace {

// (bf16, trans_a, trans_b, m, n, k, lda, ldb, ldc, beta); alpha is always 1 here.
using Key =
    std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float>;

// The primitive with its memories bound once; a call only swaps the data pointers and runs it
// through the runtime's allocation-free executor. In bf16, a and b are the caller's fp32
// operands, which the reorders ra, rb copy into a16, b16 (on the cache's buffers).
struct Matmul {
  onednn::Exec exec, ra, rb;
  dnnl::memory a, b, c, a16, b16, scratch;
  std::vector<unsigned char> scratch_buf;
  std::string impl;
};

class MatmulCache {
 public:
  // Returns null when oneDNN has no matmul for this case (then dnnl_sgemm runs it). alpha is 1
  // (the caller sends other values to dnnl_sgemm: output scales are spelt differently in 3.x).
  Matmul *get(const Key &key) {
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second.get();
    std::unique_ptr<Matmul> mm;
    try {
      mm = create(key);
    } catch (const dnnl::error &) {
      mm.reset();
    }
    return cache_.emplace(key, std::move(mm)).first->second.get();
  }
  dnnl::stream &stream() { return stream_; }
  // The bf16 copies of op(A) (m x k) and op(B) (k x n) for this call; grown, never shrunk.
  void bind_bf16(Matmul &mm, int64_t m, int64_t n, int64_t k) {
    if (a16_.size() < static_cast<size_t>(m * k)) a16_.resize(static_cast<size_t>(m * k));
    if (b16_.size() < static_cast<size_t>(k * n)) b16_.resize(static_cast<size_t>(k * n));
    mm.a16.set_data_handle(a16_.data());
    mm.b16.set_data_handle(b16_.data());
  }

 private:
  std::unique_ptr<Matmul> create(const Key &key) {
    const auto [bf16, ta, tb, m, n, k, lda, ldb, ldc, beta] = key;
    using md = dnnl::memory::desc;
    using dt = dnnl::memory::data_type;
    // Row-major op(A) is M x K: element (i, kk) of A stored K x M (transposed) is at kk*lda + i.
    const md a({m, k}, dt::f32, ta ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
    const md b({k, n}, dt::f32, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const md c({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    // The bf16 copies keep the operands' orientation (a transposing reorder is several times
    // slower than a plain one), packed densely.
    const md a16({m, k}, dt::bf16, ta ? dnnl::memory::dims{1, m} : dnnl::memory::dims{k, 1});
    const md b16({k, n}, dt::bf16, tb ? dnnl::memory::dims{1, k} : dnnl::memory::dims{n, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (beta != 0.f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    const auto pd = onednn::make_matmul_pd(engine_, bf16 ? a16 : a, bf16 ? b16 : b, md(), c, attr);
    auto mm = std::make_unique<Matmul>();
    mm->impl = onednn::impl_name(pd);
    mm->a = dnnl::memory(a, engine_, nullptr);
    mm->b = dnnl::memory(b, engine_, nullptr);
    mm->c = dnnl::memory(c, engine_, nullptr);
    mm->scratch_buf.resize(pd.scratchpad_desc().get_size());
    mm->scratch = dnnl::memory(pd.scratchpad_desc(), engine_, mm->scratch_buf.data());
    mm->exec.prim = dnnl::matmul(pd);
    if (bf16) {
      mm->a16 = dnnl::memory(a16, engine_, nullptr);
      mm->b16 = dnnl::memory(b16, engine_, nullptr);
      mm->ra.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, a, engine_, a16));
      mm->ra.add(DNNL_ARG_FROM, mm->a);
      mm->ra.add(DNNL_ARG_TO, mm->a16);
      mm->rb.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, b, engine_, b16));
      mm->rb.add(DNNL_ARG_FROM, mm->b);
      mm->rb.add(DNNL_ARG_TO, mm->b16);
    }
    mm->exec.add(DNNL_ARG_SRC, bf16 ? mm->a16 : mm->a);
    mm->exec.add(DNNL_ARG_WEIGHTS, bf16 ? mm->b16 : mm->b);
    mm->exec.add(DNNL_ARG_DST, mm->c);
    mm->exec.add(DNNL_ARG_SCRATCHPAD, mm->scratch);
    return mm;
  }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::map<Key, std::unique_ptr<Matmul>> cache_;
  std::vector<uint16_t> a16_, b16_;
};

thread_local MatmulCache t_cache;

}  // namespace
#endif

bool gemm_bf16_available(std::string *why) {
#ifdef FLOWRT_HAVE_ONEDNN
  if (onednn::cpu_has_bf16()) return true;
  if (why)
    *why =
        "needs a CPU with bf16 units (oneDNN ISA avx512_core_bf16 or avx512_core_amx); "
        "oneDNN reports this CPU as " +
        onednn::cpu_isa_name();
#else
  if (why) *why = "needs the trainer built with oneDNN";
#endif
  return false;
}

GemmBf16Scope::GemmBf16Scope(bool on) : on_(on) {
  if (!on_) return;
  std::string why;
  if (!gemm_bf16_available(&why)) fail(FLOWRT_UNSUPPORTED, "bf16 products " + why);
  ++g_bf16_scopes;
}

GemmBf16Scope::~GemmBf16Scope() {
  if (on_) --g_bf16_scopes;
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
#ifdef FLOWRT_HAVE_ONEDNN
  const bool bf16 = g_bf16_scopes.load(std::memory_order_relaxed) > 0;
  if (k > 0 && alpha == 1.f) {
    if (Matmul *mm = t_cache.get(Key{bf16, trans_a, trans_b, m, n, k, lda, ldb, ldc, beta})) {
      mm->a.set_data_handle(const_cast<float *>(a));
      mm->b.set_data_handle(const_cast<float *>(b));
      mm->c.set_data_handle(c);
      if (bf16) {
        t_cache.bind_bf16(*mm, m, n, k);
        mm->ra.run(t_cache.stream());
        mm->rb.run(t_cache.stream());
      }
      mm->exec.run(t_cache.stream());
      t_cache.stream().wait();
      return;
    }
  }
  if (bf16)
    fail(FLOWRT_INTERNAL_ERROR, "oneDNN has no bf16 matmul for a " + std::to_string(m) + "x" +
                                    std::to_string(k) + " by " + std::to_string(k) + "x" +
                                    std::to_string(n) + " product");
  if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                 ldc) != dnnl_success)
    fail(FLOWRT_INTERNAL_ERROR, "oneDNN sgemm failed");
#else
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

std::string sgemm_impl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                       int64_t ldb, int64_t ldc, float beta) {
#ifdef FLOWRT_HAVE_ONEDNN
  const bool bf16 = g_bf16_scopes.load(std::memory_order_relaxed) > 0;
  if (Matmul *mm = t_cache.get(Key{bf16, trans_a, trans_b, m, n, k, lda, ldb, ldc, beta}))
    return mm->impl;
  return "dnnl_sgemm";
#else
  (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k, (void)lda, (void)ldb, (void)ldc;
  (void)beta;
  return "plain";
#endif
}

}  // namespace flowrt::train
