// The tensor-product kernels for the baseline instruction set of the build.
#include "tp_cpu.h"

#define EQUIOPS_TP_NS generic
#include "tp_kernels.h"

namespace equiops {
namespace tp {
namespace generic {

template <typename T>
static KernelSet<T> make() {
  return {&forward<T>, &backward<T>, &double_backward<T>};
}
KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace generic
}  // namespace tp
}  // namespace equiops
