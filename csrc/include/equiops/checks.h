// Argument checks shared by the CPU and CUDA entry points of the scatter/segment ops.
//
// The Python layer validates public calls with friendlier messages; these checks make
// a direct torch.ops.equiops.* call safe as well (no out-of-bounds access, a Python
// ValueError/TypeError/IndexError instead of a crash).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>
#include <c10/util/string_view.h>

#include <string>

namespace equiops {

inline void check_float_src(const at::Tensor& src, const char* op, const char* name = "src") {
  const auto st = src.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   op, ": ", name, " must be float16, bfloat16, float32 or float64, got ", st);
}

inline void check_int64(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ",
                   t.scalar_type());
}

inline void check_same_device(const at::Tensor& a, const at::Tensor& b, const char* op,
                              const char* name_b) {
  TORCH_CHECK_VALUE(a.device() == b.device(), op, ": ", name_b, " must be on ", a.device(),
                    " like src, got ", b.device());
}

// src (B, N, C); indptr (Bi, S+1) with Bi in {1, B}; perm (P,) if given.
inline void check_segment_args(const at::Tensor& src, const at::Tensor& indptr,
                               const c10::optional<at::Tensor>& perm, const char* op,
                               const char* src_name = "src") {
  check_float_src(src, op, src_name);
  TORCH_CHECK_VALUE(src.dim() == 3, op, ": ", src_name, " must have shape (B, N, C), got ",
                    src.sizes());
  check_int64(indptr, op, "indptr");
  check_same_device(src, indptr, op, "indptr");
  TORCH_CHECK_VALUE(indptr.dim() == 2 && indptr.size(1) >= 1, op,
                    ": indptr must have shape (Bi, S + 1) with S >= 0, got ", indptr.sizes());
  TORCH_CHECK_VALUE(indptr.size(0) == 1 || indptr.size(0) == src.size(0), op,
                    ": indptr's batch size must be 1 or B = ", src.size(0), ", got ",
                    indptr.size(0));
  if (perm.has_value()) {
    check_int64(*perm, op, "perm");
    check_same_device(src, *perm, op, "perm");
    TORCH_CHECK_VALUE(perm->dim() == 1, op, ": perm must be 1-D, got shape ", perm->sizes());
  }
}

inline void check_scatter_args(const at::Tensor& src, const at::Tensor& index, int64_t dim_size,
                               const char* op) {
  check_float_src(src, op);
  TORCH_CHECK_VALUE(src.dim() == 3, op, ": src must have shape (B, N, C), got ", src.sizes());
  check_int64(index, op, "index");
  check_same_device(src, index, op, "index");
  TORCH_CHECK_VALUE(index.sizes() == src.sizes(), op, ": index must have src's shape ",
                    src.sizes(), " (broadcast it first), got ", index.sizes());
  TORCH_CHECK_VALUE(dim_size >= 0, op, ": dim_size must be >= 0, got ", dim_size);
}

// The CPU kernels serve the "cpu" backend (and "auto", which resolves to it there).
inline void check_cpu_backend(c10::string_view backend, const char* op) {
  TORCH_CHECK_VALUE(backend == "cpu" || backend == "auto", op, ": backend '", std::string(backend),
                    "' cannot run on CPU tensors (this kernel serves 'cpu' and 'auto')");
}

inline bool parse_minmax(const std::string& reduce, const char* op) {
  TORCH_CHECK_VALUE(reduce == "max" || reduce == "min", op,
                    ": reduce must be 'max' or 'min', got '", reduce, "'");
  return reduce == "max";
}

}  // namespace equiops
