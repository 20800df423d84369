// The few oneDNN calls whose spelling changed between 2.x (Debian's 2.6) and 3.x, behind one
// small set of functions keyed on DNNL_VERSION_MAJOR, so the backend compiles against both.
#pragma once

#include <cstdio>
#include <oneapi/dnnl/dnnl.hpp>
#include <string>
#include <utility>

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

// The instruction set oneDNN dispatches to here (after ONEDNN_MAX_CPU_ISA), by oneDNN's name.
inline std::string cpu_isa_name() {
  const dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
  const std::pair<dnnl_cpu_isa_t, const char *> names[] = {
      {dnnl_cpu_isa_sse41, "sse41"},
      {dnnl_cpu_isa_avx, "avx"},
      {dnnl_cpu_isa_avx2, "avx2"},
      {dnnl_cpu_isa_avx512_core, "avx512_core"},
      {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"},
      {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
      {dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"},
      {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"}};
  for (const auto &n : names)
    if (n.first == isa) return n.second;
  char buf[32];
  std::snprintf(buf, sizeof buf, "isa 0x%x", static_cast<unsigned>(isa));
  return buf;
}

// Whether oneDNN has bf16 kernels with hardware bf16 units here (AVX512_BF16 or AMX). Below that
// it emulates bf16, several times slower than fp32. The ISA values are cumulative bit masks.
inline bool cpu_has_bf16() {
  const unsigned isa = static_cast<unsigned>(dnnl_get_effective_cpu_isa());
  const unsigned need = static_cast<unsigned>(dnnl_cpu_isa_avx512_core_bf16);
  return (isa & need) == need;
}

// The implementation name oneDNN chose ("brgconv:avx512_core", "gemm:jit", ...).
template <typename PD>
const char *impl_name(const PD &pd) {
  return pd.impl_info_str();
}
// The same for a primitive made without a kept primitive descriptor (a reorder).
inline const char *impl_name(const dnnl::primitive &p) {
  const_dnnl_primitive_desc_t pd = nullptr;
  const char *name = nullptr;
  if (dnnl_primitive_get_primitive_desc(p.get(), &pd) != dnnl_success ||
      dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &name) != dnnl_success || !name)
    return "unknown";
  return name;
}

}  // namespace flowrt::onednn
