// The trainer's float GEMM. With oneDNN, every shape gets a matmul primitive (brgemm kernels),
// created on first use and kept for the life of the thread: the same shapes recur every step,
// and on the fmnist architecture the primitives run the trainer's GEMMs at 333-374 GFLOP/s
// against 226-273 for dnnl_sgemm on 2 AVX-512 cores. Strided (transposed) operands are
// described by memory strides, so nothing is copied. Without oneDNN: the plain kernel.
#include "trainer/layers/gemm.hpp"

#ifdef FLOWRT_HAVE_ONEDNN
#include <map>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#include <vector>

#include "backends/onednn/onednn_compat.hpp"
#include "backends/onednn/onednn_net.hpp"
#include "core/error.hpp"
#endif

namespace flowrt::train {

#ifdef FLOWRT_HAVE_ONEDNN
namespace {

// (trans_a, trans_b, m, n, k, lda, ldb, ldc, beta); alpha is always 1 here.
using Key = std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float>;

// The primitive with its memories bound once; a call only swaps the data pointers and runs it
// through the runtime's allocation-free executor.
struct Matmul {
  onednn::Exec exec;
  dnnl::memory a, b, c, scratch;
  std::vector<unsigned char> scratch_buf;
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

 private:
  std::unique_ptr<Matmul> create(const Key &key) {
    const auto [ta, tb, m, n, k, lda, ldb, ldc, beta] = key;
    using md = dnnl::memory::desc;
    const auto f32 = dnnl::memory::data_type::f32;
    // Row-major op(A) is M x K: element (i, kk) of A stored K x M (transposed) is at kk*lda + i.
    const md a({m, k}, f32, ta ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
    const md b({k, n}, f32, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const md c({m, n}, f32, dnnl::memory::dims{ldc, 1});
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    if (beta != 0.f) {
      dnnl::post_ops po;
      po.append_sum(beta);
      attr.set_post_ops(po);
    }
    const auto pd = onednn::make_matmul_pd(engine_, a, b, md(), c, attr);
    auto mm = std::make_unique<Matmul>();
    mm->a = dnnl::memory(a, engine_, nullptr);
    mm->b = dnnl::memory(b, engine_, nullptr);
    mm->c = dnnl::memory(c, engine_, nullptr);
    mm->scratch_buf.resize(pd.scratchpad_desc().get_size());
    mm->scratch = dnnl::memory(pd.scratchpad_desc(), engine_, mm->scratch_buf.data());
    mm->exec.prim = dnnl::matmul(pd);
    mm->exec.add(DNNL_ARG_SRC, mm->a);
    mm->exec.add(DNNL_ARG_WEIGHTS, mm->b);
    mm->exec.add(DNNL_ARG_DST, mm->c);
    mm->exec.add(DNNL_ARG_SCRATCHPAD, mm->scratch);
    return mm;
  }

  dnnl::engine engine_{dnnl::engine::kind::cpu, 0};
  dnnl::stream stream_{engine_};
  std::map<Key, std::unique_ptr<Matmul>> cache_;
};

}  // namespace
#endif

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
#ifdef FLOWRT_HAVE_ONEDNN
  thread_local MatmulCache cache;
  if (k > 0 && alpha == 1.f) {
    if (Matmul *mm = cache.get(Key{trans_a, trans_b, m, n, k, lda, ldb, ldc, beta})) {
      mm->a.set_data_handle(const_cast<float *>(a));
      mm->b.set_data_handle(const_cast<float *>(b));
      mm->c.set_data_handle(c);
      mm->exec.run(cache.stream());
      cache.stream().wait();
      return;
    }
  }
  if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                 ldc) != dnnl_success)
    fail(FLOWRT_INTERNAL_ERROR, "oneDNN sgemm failed");
#else
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

}  // namespace flowrt::train
