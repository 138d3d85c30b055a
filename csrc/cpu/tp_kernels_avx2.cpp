// The tensor-product kernels compiled for AVX2 + FMA, chosen at run time when the CPU
// has them (tensor_product_cpu.cpp): 32-byte lane vectors as single instructions and
// the row-major blocks transposed in register tiles (see sh_kernels_avx2.cpp).
#include "tp_cpu.h"

#ifdef EQUIOPS_TP_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define EQUIOPS_TP_NS avx2
#define EQUIOPS_TP_AVX2 1
#include "tp_kernels.h"

namespace equiops {
namespace tp {
namespace avx2 {

template <typename T>
static KernelSet<T> make() {
  return {&forward<T>, &backward<T>, &double_backward<T>};
}
KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace avx2
}  // namespace tp
}  // namespace equiops

#pragma GCC pop_options
#endif
