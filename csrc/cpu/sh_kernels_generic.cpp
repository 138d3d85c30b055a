// The spherical-harmonics kernels for the baseline instruction set of the build.
#include "sh_tables.h"

#define EQUIOPS_SH_NS generic
#include "sh_kernels.h"

namespace equiops {
namespace sh {
namespace generic {

template <typename T>
static KernelSet<T> make() {
  return {&forward<T>, &backward<T>, &double_backward<T>, &jacobian<T>};
}
KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace generic
}  // namespace sh
}  // namespace equiops
