// The Python module equiops._C. Importing it runs the static TORCH_LIBRARY
// registrations (schemas in ops.cpp, CPU kernels in cpu/). When built with CUDA it also
// exposes the CUDA kernels' host entry points, which python/equiops/ops/ calls from the
// operators' CUDA implementations (where it chooses between CUDA C++ and Triton).
#include <torch/extension.h>

#ifdef EQUIOPS_WITH_CUDA
#include "equiops/cuda_ops.h"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "equiops compiled kernels";
#ifdef EQUIOPS_WITH_CUDA
  m.attr("with_cuda") = true;
  m.def("segment_sum_cuda", &equiops::cuda::segment_sum, "segment sum (CUDA)");
  m.def("segment_minmax_cuda", &equiops::cuda::segment_minmax, "segment max/min (CUDA)");
  m.def("segment_gather_cuda", &equiops::cuda::segment_gather, "segment gather (CUDA)");
  m.def("scatter_sum_cuda", &equiops::cuda::scatter_sum, "atomic scatter sum (CUDA)");
  m.def("tensor_product_cuda", &equiops::cuda::tensor_product, "tensor product (CUDA)", pybind11::arg("x1"),
        pybind11::arg("x2"), pybind11::arg("weight"), pybind11::arg("problem"));
  m.def("tensor_product_backward_cuda", &equiops::cuda::tensor_product_backward, "tensor product backward (CUDA)",
        pybind11::arg("grad_out"), pybind11::arg("x1"), pybind11::arg("x2"), pybind11::arg("weight"),
        pybind11::arg("problem"), pybind11::arg("need_x1"), pybind11::arg("need_x2"), pybind11::arg("need_w"));
  m.def("tensor_product_double_backward_cuda", &equiops::cuda::tensor_product_double_backward,
        "tensor product double backward (CUDA)", pybind11::arg("gg1"), pybind11::arg("gg2"), pybind11::arg("ggw"),
        pybind11::arg("grad_out"), pybind11::arg("x1"), pybind11::arg("x2"), pybind11::arg("weight"),
        pybind11::arg("problem"));
#else
  m.attr("with_cuda") = false;
#endif
}
