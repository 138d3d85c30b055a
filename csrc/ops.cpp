// The schemas of every equiops operator, defined once.
//
// Implementations register elsewhere: the C++ CPU kernels in csrc/cpu/, the CUDA
// dispatch (CUDA C++ or Triton, chosen by the `backend` argument) in
// python/equiops/ops/, fake (meta) kernels and autograd in python/equiops/ops/.
// The `backend` argument is resolved by the Python layer to a concrete name before
// the call ("cpu", "cuda" or "triton"), so a compiled graph bakes the choice in.
#include <torch/library.h>

TORCH_LIBRARY(equiops, m) {
  // Canonical layouts: src (B, N, C); indptr (Bi, S+1) int64 with Bi in {1, B};
  // perm: optional (P,) int64 mapping CSR positions to rows; index (B, N, C) int64.
  // Semantics: python/equiops/reference/segment.py.
  m.def("segment_sum(Tensor src, Tensor indptr, Tensor? perm, str backend) -> Tensor");
  m.def(
      "segment_minmax(Tensor src, Tensor indptr, Tensor? perm, str reduce, str backend)"
      " -> (Tensor, Tensor)");
  m.def(
      "segment_gather(Tensor src, Tensor indptr, Tensor? perm, SymInt num_rows, str backend)"
      " -> Tensor");
  m.def("scatter_sum(Tensor src, Tensor index, SymInt dim_size, str backend) -> Tensor");
  m.def(
      "scatter_minmax(Tensor src, Tensor index, SymInt dim_size, str reduce, str backend)"
      " -> (Tensor, Tensor)");
}
