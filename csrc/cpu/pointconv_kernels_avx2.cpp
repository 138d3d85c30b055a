// The PointConv kernels compiled for AVX2 + FMA, chosen at run time when the CPU has
// them (pointconv_cpu.cpp): 32-byte vectors as single instructions, fused multiply-adds
// in the micro-GEMMs.
#include "pointconv_cpu.h"

#ifdef EQUIOPS_POINTCONV_HAVE_AVX2
#pragma GCC push_options
#pragma GCC target("avx2,fma")

#define EQUIOPS_POINTCONV_NS avx2
#define EQUIOPS_POINTCONV_AVX2 1
#include "pointconv_kernels.h"

namespace equiops {
namespace pointconv {
namespace avx2 {

KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace avx2
}  // namespace pointconv
}  // namespace equiops

#pragma GCC pop_options
#endif
