// The spherical-harmonics kernels compiled for AVX2 + FMA, chosen at run time when the
// CPU has them (spherical_harmonics_cpu.cpp). Wheels target baseline x86-64 (SSE2), so
// without this each 32-byte vector op would be two SSE ops and the (N, K) rows would be
// transposed element by element instead of in AVX2 register tiles.
//
// Only code defined after the pragma gets the target; everything it defines lives in
// the avx2 namespace, so no inline function is shared with the other builds.
#include "sh_tables.h"

#ifdef EQUIOPS_SH_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define EQUIOPS_SH_NS avx2
#define EQUIOPS_SH_AVX2 1
#include "sh_kernels.h"

namespace equiops {
namespace sh {
namespace avx2 {

template <typename T>
static KernelSet<T> make() {
  return {&forward<T>, &backward<T>, &double_backward<T>, &jacobian<T>};
}
KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace avx2
}  // namespace sh
}  // namespace equiops

#pragma GCC pop_options
#endif
