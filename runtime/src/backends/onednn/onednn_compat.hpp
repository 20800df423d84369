// The few oneDNN calls whose spelling changed between 2.x (Debian's 2.6) and 3.x, behind one
// small set of functions keyed on DNNL_VERSION_MAJOR, so the backend compiles against both.
#pragma once

#include <oneapi/dnnl/dnnl.hpp>

namespace flowrt::onednn {

inline void append_relu(dnnl::post_ops &po) {
#if DNNL_VERSION_MAJOR >= 3
  po.append_eltwise(dnnl::algorithm::eltwise_relu, 0.f, 0.f);
#else
  po.append_eltwise(1.f, dnnl::algorithm::eltwise_relu, 0.f, 0.f);
#endif
}

// Forward-inference convolution, stride 1, symmetric padding.
inline dnnl::convolution_forward::primitive_desc make_conv_pd(
    const dnnl::engine &eng, const dnnl::memory::desc &src, const dnnl::memory::desc &weights,
    const dnnl::memory::desc &bias, const dnnl::memory::desc &dst, const dnnl::memory::dims &pad,
    const dnnl::primitive_attr &attr) {
  const dnnl::memory::dims strides = {1, 1};
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::convolution_forward::primitive_desc(eng, dnnl::prop_kind::forward_inference,
                                                   dnnl::algorithm::convolution_direct, src,
                                                   weights, bias, dst, strides, pad, pad, attr);
#else
  dnnl::convolution_forward::desc d(dnnl::prop_kind::forward_inference,
                                    dnnl::algorithm::convolution_direct, src, weights, bias, dst,
                                    strides, pad, pad);
  return dnnl::convolution_forward::primitive_desc(d, attr, eng);
#endif
}

inline dnnl::matmul::primitive_desc make_matmul_pd(const dnnl::engine &eng,
                                                   const dnnl::memory::desc &src,
                                                   const dnnl::memory::desc &weights,
                                                   const dnnl::memory::desc &bias,
                                                   const dnnl::memory::desc &dst,
                                                   const dnnl::primitive_attr &attr) {
#if DNNL_VERSION_MAJOR >= 3
  return dnnl::matmul::primitive_desc(eng, src, weights, bias, dst, attr);
#else
  dnnl::matmul::desc d(src, weights, bias, dst);
  return dnnl::matmul::primitive_desc(d, attr, eng);
#endif
}

// The implementation name oneDNN chose ("brgconv:avx512_core", "gemm:jit", ...).
template <typename PD>
const char *impl_name(const PD &pd) {
  return pd.impl_info_str();
}

}  // namespace flowrt::onednn
