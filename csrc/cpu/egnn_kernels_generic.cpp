// The EGNN message kernels for the baseline instruction set of the build.
#include "egnn_cpu.h"

#define EQUIOPS_EGNN_NS generic
#include "egnn_kernels.h"

namespace equiops {
namespace egnn {
namespace generic {

KernelSet<float> kernels_f32() { return make<float>(); }
KernelSet<double> kernels_f64() { return make<double>(); }

}  // namespace generic
}  // namespace egnn
}  // namespace equiops
