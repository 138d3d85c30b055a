// The PointConv kernels for the baseline instruction set of the build.
#include "pointconv_cpu.h"

#define EQUIOPS_POINTCONV_NS generic
#include "pointconv_kernels.h"

namespace equiops {
namespace pointconv {
namespace generic {

KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace generic
}  // namespace pointconv
}  // namespace equiops
