// Torch glue of the CUDA segment / scatter kernels (csrc/cuda/segment_kernels.cuh).
//
// Implements the entry points declared in equiops/cuda_ops.h with the semantics of
// python/equiops/reference/segment.py. Each function checks devices, dtypes and shapes
// (so that a direct call cannot read or write out of bounds through a bad shape), makes
// its inputs contiguous where the kernels need it, and launches on the current stream of
// the inputs' device. Index values are not checked (that would need a synchronisation).
#include <equiops/cuda_ops.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>
#include <tuple>
#include <type_traits>

#include "segment_kernels.cuh"

namespace equiops {
namespace cuda {
namespace {

using kernels::i64;
using kernels::SegmentGeometry;

template <int N>
using IntC = std::integral_constant<int, N>;

// Numbers and shapes in error messages are formatted with std::to_string rather than
// streamed: in one PyTorch 2.11 + CUDA 13 environment, streaming an integer from this
// translation unit (std::ostream::operator<<(long) instantiated here) crashed inside
// libstdc++'s locale code, turning a TORCH_CHECK into a segmentation fault.
std::string num(int64_t v) { return std::to_string(v); }

std::string shape(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

// Calls f(T()) with T the CUDA element type of st.
template <typename F>
void dispatch_float(at::ScalarType st, const char* op, F&& f) {
  switch (st) {
    case at::kFloat:
      f(float());
      break;
    case at::kDouble:
      f(double());
      break;
    case at::kHalf:
      f(__half());
      break;
    case at::kBFloat16:
      f(__nv_bfloat16());
      break;
    default:
      TORCH_CHECK(false, "equiops.", op, ": src must be float16, bfloat16, float32 or float64, got ", st);
  }
}

// Calls f(IntC<V>(), IntC<W>()) for the (V, W) pair chosen by kernels::choose_vector.
// The pairs are those instantiated in compile_check.cu; keep both in sync.
template <typename T, typename F>
void dispatch_vector(int V, int W, F&& f) {
  constexpr int W4 = (16 / sizeof(T)) < 4 ? static_cast<int>(16 / sizeof(T)) : 4;
  if (V == 1 && W == 1) {
    f(IntC<1>(), IntC<1>());
  } else if (V == 2 && W == 1) {
    f(IntC<2>(), IntC<1>());
  } else if (V == 2 && W == 2) {
    f(IntC<2>(), IntC<2>());
  } else if (V == 3 && W == 1) {
    f(IntC<3>(), IntC<1>());
  } else if (V == 4 && W == 1) {
    f(IntC<4>(), IntC<1>());
  } else if (V == 4 && W == W4) {
    f(IntC<4>(), IntC<W4>());
  } else {
    if constexpr (sizeof(T) == 2) {
      if (V == 8 && W == 8) {
        f(IntC<8>(), IntC<8>());
        return;
      }
    }
    TORCH_CHECK(false, "equiops: internal error, no kernel for V=", num(V), " W=", num(W));
  }
}

void check_device(const at::Tensor& t, const char* op, const char* name, const at::Device& device) {
  TORCH_CHECK(t.is_cuda(), "equiops.", op, ": ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == device, "equiops.", op, ": ", name, " must be on ", device, " (like src), got ",
              t.device());
}

void check_src(const at::Tensor& src, const char* op) {
  TORCH_CHECK(src.is_cuda(), "equiops.", op, ": src must be a CUDA tensor, got ", src.device());
  TORCH_CHECK(src.dim() == 3, "equiops.", op, ": src must be 3-D (B, N, C), got shape ", shape(src.sizes()));
  const auto st = src.scalar_type();
  TORCH_CHECK(st == at::kHalf || st == at::kBFloat16 || st == at::kFloat || st == at::kDouble, "equiops.", op,
              ": src must be float16, bfloat16, float32 or float64, got ", st);
}

// Validates indptr (Bi, S + 1), Bi in {1, B}, and perm (P,); returns contiguous copies.
std::tuple<at::Tensor, c10::optional<at::Tensor>> check_indptr_perm(const at::Tensor& src,
                                                                    const at::Tensor& indptr,
                                                                    const c10::optional<at::Tensor>& perm,
                                                                    const char* op) {
  const auto device = src.device();
  check_device(indptr, op, "indptr", device);
  TORCH_CHECK(indptr.scalar_type() == at::kLong, "equiops.", op, ": indptr must be int64, got ",
              indptr.scalar_type());
  TORCH_CHECK(indptr.dim() == 2 && indptr.size(1) >= 1, "equiops.", op,
              ": indptr must have shape (Bi, S + 1), got ", shape(indptr.sizes()));
  TORCH_CHECK(indptr.size(0) == 1 || indptr.size(0) == src.size(0), "equiops.", op,
              ": indptr.size(0) must be 1 or B = ", num(src.size(0)), ", got ", num(indptr.size(0)));
  c10::optional<at::Tensor> p;
  if (perm.has_value() && perm->defined()) {
    check_device(*perm, op, "perm", device);
    TORCH_CHECK(perm->scalar_type() == at::kLong, "equiops.", op, ": perm must be int64, got ",
                perm->scalar_type());
    TORCH_CHECK(perm->dim() == 1, "equiops.", op, ": perm must be 1-D, got shape ", shape(perm->sizes()));
    p = perm->contiguous();
  }
  return {indptr.contiguous(), p};
}

unsigned long long address_of(const void* p) { return static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(p)); }

struct Launch {
  SegmentGeometry g;
  unsigned int grid_x, grid_y, block;
  int V, W;
};

// rows: rows of the row-indexed tensor; base: address of the tensor read with vector loads.
Launch plan_segment_launch(i64 B, i64 S, i64 rows, i64 C, int esize, i64 positions, bool broadcast,
                           const void* base, const char* op) {
  Launch l;
  kernels::choose_vector(C, esize, address_of(base), &l.V, &l.W);
  l.g = kernels::make_segment_geometry(B, S, rows, C, l.V, positions, broadcast, &l.grid_x, &l.grid_y, &l.block);
  TORCH_CHECK(l.grid_y <= 65535u, "equiops.", op, ": too many columns (C = ", num(C), ")");
  TORCH_CHECK(C / l.V <= 0x7fffffffLL, "equiops.", op, ": too many columns (C = ", num(C), ")");
  return l;
}

// Accumulator dtype of the partial results: float32 for the 16-bit types.
at::ScalarType acc_dtype(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

// Blocks of kMaxBlock threads for a grid-stride loop over n > 0 elements.
unsigned int elementwise_blocks(i64 n) {
  i64 blocks = (n + kernels::kMaxBlock - 1) / kernels::kMaxBlock;
  if (blocks > (i64(1) << 20)) blocks = i64(1) << 20;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

}  // namespace

at::Tensor segment_sum(const at::Tensor& src_in, const at::Tensor& indptr_in,
                       const c10::optional<at::Tensor>& perm_in) {
  const char* op = "segment_sum";
  check_src(src_in, op);
  at::Tensor indptr;
  c10::optional<at::Tensor> perm;
  std::tie(indptr, perm) = check_indptr_perm(src_in, indptr_in, perm_in, op);
  c10::cuda::CUDAGuard guard(src_in.device());
  const at::Tensor src = src_in.contiguous();
  const i64 B = src.size(0), N = src.size(1), C = src.size(2);
  const i64 S = indptr.size(1) - 1;
  at::Tensor out = at::empty({B, S, C}, src.options());
  if (out.numel() == 0) return out;
  const i64 positions = perm ? perm->numel() : N;
  if (N == 0 || positions == 0) return out.zero_();  // every segment is empty

  const Launch l = plan_segment_launch(B, S, N, C, static_cast<int>(src.element_size()), positions,
                                       indptr.size(0) == 1, src.data_ptr(), op);
  const int64_t* perm_ptr = perm ? perm->data_ptr<int64_t>() : nullptr;
  // Few long segments: q partial sums per segment (accumulator type), combined in order.
  at::Tensor part;
  if (l.g.q > 1) part = at::empty({l.g.num_vseg * C}, src.options().dtype(acc_dtype(src.scalar_type())));
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(src.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename kernels::AccOf<T>::type;
    Acc* part_ptr = part.defined() ? reinterpret_cast<Acc*>(part.data_ptr()) : nullptr;
    dispatch_vector<T>(l.V, l.W, [&](auto v, auto w) {
      constexpr int V = decltype(v)::value;
      constexpr int W = decltype(w)::value;
      const unsigned int smem = kernels::segment_smem_bytes(l.g, l.block, V, sizeof(Acc), false);
      kernels::segment_sum_kernel<T, V, W, int64_t><<<dim3(l.grid_x, l.grid_y), l.block, smem, stream>>>(
          reinterpret_cast<const T*>(src.data_ptr()), indptr.data_ptr<int64_t>(), perm_ptr,
          reinterpret_cast<T*>(out.data_ptr()), part_ptr, l.g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (l.g.q > 1) {
      kernels::segment_sum_combine_kernel<T><<<elementwise_blocks(l.g.num_seg * C), kernels::kMaxBlock, 0, stream>>>(
          part_ptr, reinterpret_cast<T*>(out.data_ptr()), l.g.num_seg, C, l.g.q);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_minmax(const at::Tensor& src_in, const at::Tensor& indptr_in,
                                                  const c10::optional<at::Tensor>& perm_in, bool is_max) {
  const char* op = is_max ? "segment_max" : "segment_min";
  check_src(src_in, op);
  at::Tensor indptr;
  c10::optional<at::Tensor> perm;
  std::tie(indptr, perm) = check_indptr_perm(src_in, indptr_in, perm_in, op);
  c10::cuda::CUDAGuard guard(src_in.device());
  const at::Tensor src = src_in.contiguous();
  const i64 B = src.size(0), N = src.size(1), C = src.size(2);
  const i64 S = indptr.size(1) - 1;
  at::Tensor values = at::empty({B, S, C}, src.options());
  at::Tensor arg = at::empty({B, S, C}, src.options().dtype(at::kLong));
  if (values.numel() == 0) return {values, arg};
  const i64 positions = perm ? perm->numel() : N;
  if (N == 0 || positions == 0) {  // every segment is empty: value 0, arg N
    values.zero_();
    arg.fill_(N);
    return {values, arg};
  }

  const Launch l = plan_segment_launch(B, S, N, C, static_cast<int>(src.element_size()), positions,
                                       indptr.size(0) == 1, src.data_ptr(), op);
  const int64_t* perm_ptr = perm ? perm->data_ptr<int64_t>() : nullptr;
  // Few long segments: q partial (value, row) pairs per segment, combined in a second pass.
  at::Tensor part, part_arg;
  if (l.g.q > 1) {
    part = at::empty({l.g.num_vseg * C}, src.options().dtype(acc_dtype(src.scalar_type())));
    part_arg = at::empty({l.g.num_vseg * C}, src.options().dtype(at::kLong));
  }
  int64_t* part_arg_ptr = part_arg.defined() ? part_arg.data_ptr<int64_t>() : nullptr;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(src.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    using Acc = typename kernels::AccOf<T>::type;
    Acc* part_ptr = part.defined() ? reinterpret_cast<Acc*>(part.data_ptr()) : nullptr;
    dispatch_vector<T>(l.V, l.W, [&](auto v, auto w) {
      constexpr int V = decltype(v)::value;
      constexpr int W = decltype(w)::value;
      const unsigned int smem = kernels::segment_smem_bytes(l.g, l.block, V, sizeof(Acc), true);
      const dim3 grid(l.grid_x, l.grid_y);
      const T* s = reinterpret_cast<const T*>(src.data_ptr());
      T* o = reinterpret_cast<T*>(values.data_ptr());
      if (is_max) {
        kernels::segment_minmax_kernel<T, V, W, true, int64_t><<<grid, l.block, smem, stream>>>(
            s, indptr.data_ptr<int64_t>(), perm_ptr, o, arg.data_ptr<int64_t>(), part_ptr, part_arg_ptr, l.g);
      } else {
        kernels::segment_minmax_kernel<T, V, W, false, int64_t><<<grid, l.block, smem, stream>>>(
            s, indptr.data_ptr<int64_t>(), perm_ptr, o, arg.data_ptr<int64_t>(), part_ptr, part_arg_ptr, l.g);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    if (l.g.q > 1) {
      const unsigned int blocks = elementwise_blocks(l.g.num_seg * C);
      T* o = reinterpret_cast<T*>(values.data_ptr());
      if (is_max) {
        kernels::segment_minmax_combine_kernel<T, true, int64_t><<<blocks, kernels::kMaxBlock, 0, stream>>>(
            part_ptr, part_arg_ptr, o, arg.data_ptr<int64_t>(), l.g.num_seg, C, l.g.q, N);
      } else {
        kernels::segment_minmax_combine_kernel<T, false, int64_t><<<blocks, kernels::kMaxBlock, 0, stream>>>(
            part_ptr, part_arg_ptr, o, arg.data_ptr<int64_t>(), l.g.num_seg, C, l.g.q, N);
      }
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  });
  return {values, arg};
}

at::Tensor segment_gather(const at::Tensor& src_in, const at::Tensor& indptr_in,
                          const c10::optional<at::Tensor>& perm_in, int64_t num_rows) {
  const char* op = "segment_gather";
  check_src(src_in, op);
  at::Tensor indptr;
  c10::optional<at::Tensor> perm;
  std::tie(indptr, perm) = check_indptr_perm(src_in, indptr_in, perm_in, op);
  TORCH_CHECK(src_in.size(1) == indptr.size(1) - 1, "equiops.", op, ": src.size(1) = ", num(src_in.size(1)),
              " must equal the number of segments S = indptr.size(1) - 1 = ", num(indptr.size(1) - 1));
  TORCH_CHECK(num_rows >= 0, "equiops.", op, ": num_rows must be >= 0, got ", num(num_rows));
  c10::cuda::CUDAGuard guard(src_in.device());
  const at::Tensor src = src_in.contiguous();
  const i64 B = src.size(0), S = src.size(1), C = src.size(2);
  at::Tensor out = at::empty({B, num_rows, C}, src.options());
  if (out.numel() == 0) return out;
  const i64 positions = perm ? perm->numel() : num_rows;
  if (S == 0 || positions == 0) return out.zero_();  // nothing is covered
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  const Launch l = plan_segment_launch(B, S, num_rows, C, static_cast<int>(src.element_size()), positions,
                                       indptr.size(0) == 1, src.data_ptr(), op);
  const int64_t* perm_ptr = perm ? perm->data_ptr<int64_t>() : nullptr;
  if (perm) {
    // Which rows perm covers is unknown without reading it: zero everything first.
    C10_CUDA_CHECK(cudaMemsetAsync(out.data_ptr(), 0, static_cast<size_t>(out.nbytes()), stream));
  }
  dispatch_float(src.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    if (!perm) {
      // Only the rows outside [indptr[b][0], indptr[b][S]) are uncovered.
      const i64 gy = B < 65535 ? B : 65535;
      i64 gx = (num_rows * C + kernels::kMaxBlock - 1) / kernels::kMaxBlock;
      const i64 gx_cap = 4096 / gy > 1 ? 4096 / gy : 1;
      if (gx > gx_cap) gx = gx_cap;
      if (gx < 1) gx = 1;
      kernels::gather_zero_uncovered_kernel<T, int64_t>
          <<<dim3(static_cast<unsigned int>(gx), static_cast<unsigned int>(gy)), kernels::kMaxBlock, 0, stream>>>(
              reinterpret_cast<T*>(out.data_ptr()), indptr.data_ptr<int64_t>(), B, S, num_rows, C,
              l.g.indptr_bstride);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    dispatch_vector<T>(l.V, l.W, [&](auto v, auto w) {
      constexpr int V = decltype(v)::value;
      constexpr int W = decltype(w)::value;
      kernels::segment_gather_kernel<T, V, W, int64_t><<<dim3(l.grid_x, l.grid_y), l.block, 0, stream>>>(
          reinterpret_cast<const T*>(src.data_ptr()), indptr.data_ptr<int64_t>(), perm_ptr,
          reinterpret_cast<T*>(out.data_ptr()), l.g);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

at::Tensor scatter_sum(const at::Tensor& src_in, const at::Tensor& index, int64_t dim_size) {
  const char* op = "scatter_sum";
  check_src(src_in, op);
  check_device(index, op, "index", src_in.device());
  TORCH_CHECK(index.scalar_type() == at::kLong, "equiops.", op, ": index must be int64, got ",
              index.scalar_type());
  TORCH_CHECK(index.sizes() == src_in.sizes(), "equiops.", op, ": index must have the shape of src ",
              shape(src_in.sizes()), ", got ", shape(index.sizes()));
  TORCH_CHECK(dim_size >= 0, "equiops.", op, ": dim_size must be >= 0, got ", num(dim_size));
  c10::cuda::CUDAGuard guard(src_in.device());
  const at::Tensor src = src_in.contiguous();
  const i64 B = src.size(0), N = src.size(1), C = src.size(2);
  at::Tensor out = at::zeros({B, dim_size, C}, src.options());
  const i64 total = src.numel();
  if (total == 0 || out.numel() == 0) return out;

  // The index is read through its own strides (an expanded index has stride 0).
  const i64 sb = index.stride(0), sn = index.stride(1), sc = index.stride(2);
  const i64 threads = kernels::kMaxBlock;
  i64 blocks = (total + threads - 1) / threads;
  if (blocks > (i64(1) << 20)) blocks = i64(1) << 20;  // grid-stride beyond ~268M elements
  const bool small = total + blocks * threads <= 0xffffffffLL;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  dispatch_float(src.scalar_type(), op, [&](auto tag) {
    using T = decltype(tag);
    const T* s = reinterpret_cast<const T*>(src.data_ptr());
    T* o = reinterpret_cast<T*>(out.data_ptr());
    const int64_t* idx = index.data_ptr<int64_t>();
    if (small) {
      kernels::scatter_sum_kernel<T, int64_t, unsigned int>
          <<<static_cast<unsigned int>(blocks), static_cast<unsigned int>(threads), 0, stream>>>(
              s, idx, o, static_cast<unsigned int>(total), static_cast<unsigned int>(N),
              static_cast<unsigned int>(C), dim_size, sb, sn, sc);
    } else {
      kernels::scatter_sum_kernel<T, int64_t, i64>
          <<<static_cast<unsigned int>(blocks), static_cast<unsigned int>(threads), 0, stream>>>(
              s, idx, o, total, N, C, dim_size, sb, sn, sc);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace cuda
}  // namespace equiops
