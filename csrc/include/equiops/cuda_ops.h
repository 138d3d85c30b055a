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

}  // namespace cuda
}  // namespace equiops
