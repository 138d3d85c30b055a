// Torch-free translation unit: explicitly instantiates every kernel template of
// segment_kernels.cuh and tp_kernels.cuh for every element type and every (V, W) vector shape the launchers
// in segment_cuda.cu use, so that CI can check the device code without torch headers:
//
//   nvcc -std=c++17 -arch=sm_90 -c csrc/cuda/compile_check.cu -o /tmp/x.o
//
// Keep the (V, W) lists in sync with choose_vector() / dispatch_vector() in segment_cuda.cu.
#include <cstdint>

#include "segment_kernels.cuh"
#include "tp_kernels.cuh"

namespace equiops {
namespace kernels {

#define EQ_INST_SEGMENT(T, V, W)                                                                           \
  template __global__ void segment_sum_kernel<T, V, W, int64_t>(const T*, const int64_t*, const int64_t*, T*, \
                                                                 AccOf<T>::type*, SegmentGeometry);         \
  template __global__ void segment_minmax_kernel<T, V, W, true, int64_t>(                                   \
      const T*, const int64_t*, const int64_t*, T*, int64_t*, AccOf<T>::type*, int64_t*, SegmentGeometry);   \
  template __global__ void segment_minmax_kernel<T, V, W, false, int64_t>(                                  \
      const T*, const int64_t*, const int64_t*, T*, int64_t*, AccOf<T>::type*, int64_t*, SegmentGeometry);   \
  template __global__ void segment_gather_kernel<T, V, W, int64_t>(const T*, const int64_t*, const int64_t*, \
                                                                    T*, SegmentGeometry);

// W4: widest access for V = 4 (min(4, 16 / sizeof(T))).
#define EQ_INST_TYPE(T, W4)                                                                                  \
  EQ_INST_SEGMENT(T, 1, 1)                                                                                   \
  EQ_INST_SEGMENT(T, 2, 1)                                                                                   \
  EQ_INST_SEGMENT(T, 2, 2)                                                                                   \
  EQ_INST_SEGMENT(T, 3, 1)                                                                                   \
  EQ_INST_SEGMENT(T, 4, 1)                                                                                   \
  EQ_INST_SEGMENT(T, 4, W4)                                                                                  \
  template __global__ void segment_sum_combine_kernel<T>(const AccOf<T>::type*, T*, i64, i64, int);         \
  template __global__ void segment_minmax_combine_kernel<T, true, int64_t>(                                 \
      const AccOf<T>::type*, const int64_t*, T*, int64_t*, i64, i64, int, i64);                               \
  template __global__ void segment_minmax_combine_kernel<T, false, int64_t>(                                \
      const AccOf<T>::type*, const int64_t*, T*, int64_t*, i64, i64, int, i64);                               \
  template __global__ void gather_zero_uncovered_kernel<T, int64_t>(T*, const int64_t*, i64, i64, i64, i64,  \
                                                                    i64);                                    \
  template __global__ void scatter_sum_kernel<T, int64_t, unsigned int>(                                    \
      const T*, const int64_t*, T*, unsigned int, unsigned int, unsigned int, i64, i64, i64, i64);           \
  template __global__ void scatter_sum_kernel<T, int64_t, i64>(const T*, const int64_t*, T*, i64, i64, i64, \
                                                               i64, i64, i64, i64);

EQ_INST_TYPE(float, 4)
EQ_INST_TYPE(double, 2)
EQ_INST_TYPE(__half, 4)
EQ_INST_TYPE(__nv_bfloat16, 4)
// 16-byte accesses of the 2-byte types.
EQ_INST_SEGMENT(__half, 8, 8)
EQ_INST_SEGMENT(__nv_bfloat16, 8, 8)

#undef EQ_INST_TYPE
#undef EQ_INST_SEGMENT

}  // namespace kernels

// Tensor-product kernels (tp_kernels.cuh), every element type tensor_product_cuda.cu uses.
namespace tpk {

#define EQ_INST_TP(T)                                                                                         \
  template __global__ void tp_forward_kernel<T>(TPTables, const AccOf<T>::type*, TPGeom, const T*, const T*, \
                                                const T*, AccOf<T>::type*);                                 \
  template __global__ void tp_backward_kernel<T>(TPTables, const AccOf<T>::type*, TPGeom, const T*, const T*, \
                                                 const T*, const T*, AccOf<T>::type*, AccOf<T>::type*,       \
                                                 AccOf<T>::type*);                                           \
  template __global__ void tp_double_backward_kernel<T>(                                                     \
      TPTables, const AccOf<T>::type*, TPGeom, const T*, const T*, const T*, const T*, const T*, const T*,    \
      const T*, AccOf<T>::type*, AccOf<T>::type*, AccOf<T>::type*, AccOf<T>::type*);

EQ_INST_TP(float)
EQ_INST_TP(double)
EQ_INST_TP(__half)
EQ_INST_TP(__nv_bfloat16)
template __global__ void tp_sum_rows_kernel<float>(const float*, i64, i64, float*);
template __global__ void tp_sum_rows_kernel<double>(const double*, i64, i64, double*);

#undef EQ_INST_TP

// The host planner, so that it is compiled here too.
TPPlan compile_check_plan() { return plan_tp(1000, 64, 5, 320, 4, 8, 128); }

}  // namespace tpk
}  // namespace equiops
