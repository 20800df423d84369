#include "trainer/layers/gemm.hpp"

#ifdef FLOWRT_HAVE_ONEDNN
#include <oneapi/dnnl/dnnl.h>

#include "core/error.hpp"
#endif

namespace flowrt::train {

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
           int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
#ifdef FLOWRT_HAVE_ONEDNN
  if (dnnl_sgemm(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, alpha, a, lda, b, ldb, beta, c,
                 ldc) != dnnl_success)
    fail(FLOWRT_INTERNAL_ERROR, "oneDNN sgemm failed");
#else
  gemm_plain(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

}  // namespace flowrt::train
