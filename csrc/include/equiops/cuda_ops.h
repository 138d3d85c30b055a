// Host entry points of the CUDA kernels (built only when equiops is compiled with CUDA).
//
// They implement the canonical-form semantics documented in
// python/equiops/reference/segment.py; the Python layer (python/equiops/ops/)
// reduces every public call to these shapes and validates arguments before calling.
// Each function still checks shapes/dtypes/devices with TORCH_CHECK so that a direct
// call cannot read or write out of bounds, but it does not check index *values*
// (that would need a host synchronisation); see ARCHITECTURE.md.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>
#include <tuple>

namespace equiops {
namespace cuda {

// src (B, N, C) contiguous float; indptr (Bi, S+1) int64 contiguous, Bi in {1, B};
// perm: none or (P,) int64. Returns (B, S, C).
at::Tensor segment_sum(const at::Tensor& src, const at::Tensor& indptr,
                       const c10::optional<at::Tensor>& perm);

// Returns (values (B, S, C), arg (B, S, C) int64); is_max selects max or min.
std::tuple<at::Tensor, at::Tensor> segment_minmax(const at::Tensor& src, const at::Tensor& indptr,
                                                  const c10::optional<at::Tensor>& perm, bool is_max);

// src (B, S, C) -> (B, num_rows, C); transpose of segment_sum.
at::Tensor segment_gather(const at::Tensor& src, const at::Tensor& indptr,
                          const c10::optional<at::Tensor>& perm, int64_t num_rows);

// src (B, N, C) contiguous; index (B, N, C) int64, any strides. Atomic: not deterministic.
at::Tensor scatter_sum(const at::Tensor& src, const at::Tensor& index, int64_t dim_size);

// Clebsch-Gordan tensor product (semantics: python/equiops/reference/tensor_product.py).
// problem: TPProblem.encode()'s string. x1 (N1, dim1), x2 (N2, dim2), weight (Nw, dim_w),
// one floating dtype, N1, N2, Nw in {1, N}. These check everything they rely on (shapes,
// dtypes, devices, the problem itself), so a direct call cannot read out of bounds.
// Deterministic (no atomics; broadcast inputs' gradients are reduced in a fixed order).
// Returns out (N, dim_out).
at::Tensor tensor_product(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& weight,
                          const std::string& problem);

// Gradients of <grad_out, out> (grad_out (N, dim_out)) w.r.t. x1, x2, weight, each with its
// input's shape (summed over rows for a broadcast input); one not needed is (0,).
std::tuple<at::Tensor, at::Tensor, at::Tensor> tensor_product_backward(const at::Tensor& grad_out,
                                                                       const at::Tensor& x1, const at::Tensor& x2,
                                                                       const at::Tensor& weight,
                                                                       const std::string& problem, bool need_x1,
                                                                       bool need_x2, bool need_w);

// Derivatives of tensor_product_backward's outputs contracted with (gg1, gg2, ggw) (each
// with its input's shape; absent = zero), w.r.t. (grad_out, x1, x2, weight). Returns the
// four, each with the shape of what it differentiates.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tensor_product_double_backward(
    const c10::optional<at::Tensor>& gg1, const c10::optional<at::Tensor>& gg2,
    const c10::optional<at::Tensor>& ggw, const at::Tensor& grad_out, const at::Tensor& x1, const at::Tensor& x2,
    const at::Tensor& weight, const std::string& problem);

}  // namespace cuda
}  // namespace equiops
