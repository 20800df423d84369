// The trainer's float GEMM. With oneDNN, every shape gets a matmul primitive (brgemm kernels),
// created on first use and kept for the life of the thread: the same shapes recur every step,
// and on the fmnist architecture the primitives run the trainer's GEMMs at 333-374 GFLOP/s
// against 226-273 for dnnl_sgemm on 2 AVX-512 cores. Strided (transposed) operands are
// described by memory strides, so nothing is copied. Without oneDNN: the plain kernel.
//
// In bf16 (GemmBf16Scope), each operand is first reordered by oneDNN (round to nearest even)
// into a dense bf16 copy (same orientation) in a per-thread buffer, and the matmul reads the
// copies and accumulates in fp32 into C; the reorders cost O(mk + kn) against O(mkn), which
// at the trainer's shapes is still a third of the time: an operand that several products read
// (a net's activation in forward and in the weight gradient, an output gradient in both
// backward products, the weights) comes converted once, as a caller-made copy (a16, b16).
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

// (bf16, trans_a, trans_b, m, n, k, lda, ldb, ldc, beta, a given in bf16, b given in bf16);
// alpha is always 1 here.
using Key = std::tuple<bool, bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                       float, bool, bool>;

// The primitive with its memories bound once; a call only swaps the data pointers and runs it
// through the runtime's allocation-free executor. In bf16, a and b are the caller's fp32
// operands, which the reorders ra, rb copy into a16, b16 (on the cache's buffers), except an
// operand the caller gives in bf16: then a16 / b16 point at the caller's copy.
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
  // The bf16 copies of op(A) (m x k) and op(B) (k x n) for this call: the caller's, or the
  // cache's buffers (grown, never shrunk) that the reorders fill.
  void bind_bf16(Matmul &mm, int64_t m, int64_t n, int64_t k, const uint16_t *a16,
                 const uint16_t *b16) {
    if (!a16 && a16_.size() < static_cast<size_t>(m * k)) a16_.resize(static_cast<size_t>(m * k));
    if (!b16 && b16_.size() < static_cast<size_t>(k * n)) b16_.resize(static_cast<size_t>(k * n));
    mm.a16.set_data_handle(a16 ? const_cast<uint16_t *>(a16) : a16_.data());
    mm.b16.set_data_handle(b16 ? const_cast<uint16_t *>(b16) : b16_.data());
  }
  // dst = bf16(src) over n elements: the bulk as a 2-D reorder of rows of kRow elements (several
  // times faster than a 1-D one in oneDNN 2.6), the tail as a 1-D one; kept per length.
  void convert(const float *src, int64_t n, uint16_t *dst) {
    auto it = converts_.find(n);
    if (it == converts_.end()) {
      std::vector<Convert> parts;
      const int64_t rows = n / kRow, tail = n % kRow;
      if (rows > 0) parts.push_back(make_convert({rows, kRow}, {kRow, 1}, 0));
      if (tail > 0) parts.push_back(make_convert({tail}, {1}, rows * kRow));
      it = converts_.emplace(n, std::move(parts)).first;
    }
    for (Convert &cv : it->second) {
      cv.from.set_data_handle(const_cast<float *>(src + cv.offset));
      cv.to.set_data_handle(dst + cv.offset);
      cv.exec.run(stream_);
    }
    stream_.wait();
  }

 private:
  struct Convert {
    onednn::Exec exec;
    dnnl::memory from, to;
    int64_t offset = 0;  // of this part, in elements
  };
  static constexpr int64_t kRow = 1024;

  Convert make_convert(const dnnl::memory::dims &dims, const dnnl::memory::dims &strides,
                       int64_t offset) {
    Convert cv;
    const dnnl::memory::desc from(dims, dnnl::memory::data_type::f32, strides);
    const dnnl::memory::desc to(dims, dnnl::memory::data_type::bf16, strides);
    cv.from = dnnl::memory(from, engine_, nullptr);
    cv.to = dnnl::memory(to, engine_, nullptr);
    cv.exec.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, from, engine_, to));
    cv.exec.add(DNNL_ARG_FROM, cv.from);
    cv.exec.add(DNNL_ARG_TO, cv.to);
    cv.offset = offset;
    return cv;
  }

  std::unique_ptr<Matmul> create(const Key &key) {
    const auto [bf16, ta, tb, m, n, k, lda, ldb, ldc, beta, a_given, b_given] = key;
    using md = dnnl::memory::desc;
    using dt = dnnl::memory::data_type;
    // Row-major op(A) is M x K: element (i, kk) of A stored K x M (transposed) is at kk*lda + i.
    const md a({m, k}, dt::f32, ta ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
    const md b({k, n}, dt::f32, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
    const md c({m, n}, dt::f32, dnnl::memory::dims{ldc, 1});
    // The bf16 copies keep the operands' orientation (a transposing reorder is several times
    // slower than a plain one), packed densely (as a caller's copy is: sgemm takes only those).
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
      if (!a_given) {
        mm->ra.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, a, engine_, a16));
        mm->ra.add(DNNL_ARG_FROM, mm->a);
        mm->ra.add(DNNL_ARG_TO, mm->a16);
      }
      if (!b_given) {
        mm->rb.prim = dnnl::reorder(dnnl::reorder::primitive_desc(engine_, b, engine_, b16));
        mm->rb.add(DNNL_ARG_FROM, mm->b);
        mm->rb.add(DNNL_ARG_TO, mm->b16);
      }
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
  std::map<int64_t, std::vector<Convert>> converts_;
  std::vector<uint16_t> a16_, b16_;
};

thread_local MatmulCache t_cache;

// Whether a product takes the caller's bf16 copy of an operand (rows x cols as op() reads it,
// leading dimension ld): only in bf16, and only of a dense operand — oneDNN runs a strided bf16
// operand on its slower gemm kernel rather than the brgemm matmul, so that one is packed here.
bool uses_copy(bool bf16, bool trans, int64_t rows, int64_t cols, int64_t ld) {
  return bf16 && ld == (trans ? rows : cols);
}

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

bool gemm_bf16_active() {
  return g_bf16_scopes.load(std::memory_order_relaxed) > 0;
}

void to_bf16(const float *src, int64_t n, uint16_t *dst) {
  if (n <= 0) return;
#ifdef FLOWRT_HAVE_ONEDNN
  // oneDNN's reorder is the fast path where bf16 products run; below avx512_core_bf16 its
  // reorder takes another kernel (on AVX2 it drops the sign of -0), and nothing reads the copy
  // but code that expects bf16_bits' rounding.
  static const bool reorder = onednn::cpu_has_bf16();
  if (reorder) {
    t_cache.convert(src, n, dst);
    return;
  }
#endif
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_bits(src[i]);
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc,
           const uint16_t *a16, const uint16_t *b16) {
#ifdef FLOWRT_HAVE_ONEDNN
  const bool bf16 = gemm_bf16_active();
  if (!uses_copy(bf16, trans_a, m, k, lda)) a16 = nullptr;
  if (!uses_copy(bf16, trans_b, k, n, ldb)) b16 = nullptr;
  if ((!a && !a16) || (!b && !b16))
    fail(FLOWRT_INTERNAL_ERROR, "sgemm: an operand given only in bf16 is not a dense one");
  if (k > 0 && alpha == 1.f) {
    const Key key{bf16, trans_a,        trans_b,       m, n, k, lda, ldb, ldc,
                  beta, a16 != nullptr, b16 != nullptr};
    if (Matmul *mm = t_cache.get(key)) {
      mm->a.set_data_handle(const_cast<float *>(a));
      mm->b.set_data_handle(const_cast<float *>(b));
      mm->c.set_data_handle(c);
      if (bf16) {
        t_cache.bind_bf16(*mm, m, n, k, a16, b16);
        if (!a16) mm->ra.run(t_cache.stream());
        if (!b16) mm->rb.run(t_cache.stream());
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
  (void)a16, (void)b16;
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

std::string sgemm_impl(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, int64_t lda,
                       int64_t ldb, int64_t ldc, float beta, bool a16, bool b16) {
#ifdef FLOWRT_HAVE_ONEDNN
  const bool bf16 = gemm_bf16_active();
  a16 = a16 && uses_copy(bf16, trans_a, m, k, lda);
  b16 = b16 && uses_copy(bf16, trans_b, k, n, ldb);
  if (Matmul *mm = t_cache.get(Key{bf16, trans_a, trans_b, m, n, k, lda, ldb, ldc, beta, a16, b16}))
    return mm->impl;
  return "dnnl_sgemm";
#else
  (void)trans_a, (void)trans_b, (void)m, (void)n, (void)k, (void)lda, (void)ldb, (void)ldc;
  (void)beta, (void)a16, (void)b16;
  return "plain";
#endif
}

}  // namespace flowrt::train
