// Torch glue of the CUDA tensor-product kernels (csrc/cuda/tp_kernels.cuh).
//
// Implements the tensor_product* entry points of equiops/cuda_ops.h with the semantics of
// python/equiops/reference/tensor_product.py: checks (devices, dtypes, shapes, row counts
// in {1, N}, the problem against the widths), parses the problem string
// (equiops::tp::get_problem), uploads its flattened tables once per (problem, device),
// launches on the current stream. Results are computed in the accumulator type (float
// for the 16-bit types) and converted at the end.
#include <equiops/cuda_ops.h>
#include <equiops/tp_problem.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "tp_kernels.cuh"

namespace equiops {
namespace cuda {
namespace {

using tpk::i64;

// Integers in messages go through std::to_string (see segment_cuda.cu for why).
std::string num(int64_t v) { return std::to_string(v); }

std::string shape(at::IntArrayRef sizes) {
  std::string out = "[";
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------
// The problem's device tables, cached per (problem string, device index).

struct DeviceProblem {
  std::shared_ptr<const tp::Problem> prob;
  at::Tensor ints;    // int32: headers, then the per-path tables (tp_kernels.cuh)
  at::Tensor vals_d;  // float64 coefficients
  at::Tensor vals_f;  // the same in float32
  int npaths = 0;
  i64 work = 1;  // plan_tp's inputs
  int max_dk = 1;
  i64 max_zrow = 1;
};

std::shared_ptr<const DeviceProblem> build_device_problem(const std::string& text, const at::Device& device,
                                                          const char* op) {
  auto dp = std::make_shared<DeviceProblem>();
  tpk::TPFlat f;
  try {
    dp->prob = tp::get_problem(text);
    f = tpk::flatten_problem(*dp->prob);
  } catch (const std::exception& e) {
    TORCH_CHECK_VALUE(false, "equiops.", op, ": bad tensor-product problem string (", e.what(), ")");
  }
  dp->npaths = f.npaths;
  dp->work = f.work;
  dp->max_dk = f.max_dk;
  dp->max_zrow = f.max_zrow;
  at::Tensor ih = at::empty({static_cast<int64_t>(f.ints.size())}, at::TensorOptions().dtype(at::kInt));
  std::memcpy(ih.data_ptr(), f.ints.data(), f.ints.size() * sizeof(int32_t));
  at::Tensor vh = at::empty({static_cast<int64_t>(f.vals.size())}, at::TensorOptions().dtype(at::kDouble));
  std::memcpy(vh.data_ptr(), f.vals.data(), f.vals.size() * sizeof(double));
  // Blocking copies (pageable memory): the tables are complete on the device when the
  // entry is published, so kernels on any stream may use them.
  dp->ints = ih.to(device);
  dp->vals_d = vh.to(device);
  dp->vals_f = vh.to(at::kFloat).to(device);
  return dp;
}

std::shared_ptr<const DeviceProblem> device_problem(const std::string& text, const at::Device& device,
                                                    const char* op) {
  // Never destroyed (nor evicted): tensors freed at exit after CUDA's teardown would
  // fail, and an evicted table could still be read by a kernel in flight on another
  // stream. A process builds few problems.
  static std::mutex* mu = new std::mutex();
  static auto* cache = new std::map<std::pair<std::string, int>, std::shared_ptr<const DeviceProblem>>();
  const auto key = std::make_pair(text, static_cast<int>(device.index()));
  std::lock_guard<std::mutex> lock(*mu);
  auto it = cache->find(key);
  if (it != cache->end()) return it->second;
  auto dp = build_device_problem(text, device, op);
  cache->emplace(key, dp);
  return dp;
}

// ---------------------------------------------------------------------------------------
// Argument checks.

void check_tensor(const at::Tensor& t, const char* op, const char* name, int64_t width, at::ScalarType st,
                  const at::Device& device) {
  TORCH_CHECK(t.defined(), "equiops.", op, ": ", name, " is undefined");
  TORCH_CHECK(t.is_cuda(), "equiops.", op, ": ", name, " must be a CUDA tensor, got ", t.device());
  TORCH_CHECK(t.device() == device, "equiops.", op, ": ", name, " must be on ", device, " like x1, got ",
              t.device());
  TORCH_CHECK_TYPE(t.scalar_type() == st, "equiops.", op, ": ", name, " must have x1's dtype ", st, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == width, "equiops.", op, ": ", name, " must have shape (rows, ",
                    num(width), "), got ", shape(t.sizes()));
}

// N from the row counts, each of which must be 1 or N (as reference/tensor_product.py).
int64_t broadcast_rows(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& w, const char* op) {
  int64_t n = 1;
  for (const at::Tensor* t : {&x1, &x2, &w}) {
    const int64_t r = t->size(0);
    if (r != 1) {
      TORCH_CHECK_VALUE(n == 1 || r == n, "equiops.", op, ": row counts ", num(x1.size(0)), ", ",
                        num(x2.size(0)), ", ", num(w.size(0)), " (x1, x2, weight) do not broadcast (each must be 1 or N)");
      n = r;
    }
  }
  return n;
}

struct Inputs {
  std::shared_ptr<const DeviceProblem> dp;
  at::Tensor x1, x2, w;
  int64_t N;
};

Inputs check_inputs(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& weight, const std::string& problem,
                    const char* op) {
  TORCH_CHECK(x1.defined() && x1.is_cuda(), "equiops.", op, ": x1 must be a CUDA tensor");
  const auto st = x1.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16, "equiops.", op,
                   ": x1 must be float16, bfloat16, float32 or float64, got ", st);
  const at::Device device = x1.device();
  c10::cuda::CUDAGuard guard(device);
  Inputs in;
  in.dp = device_problem(problem, device, op);
  const tp::Problem& pr = *in.dp->prob;
  check_tensor(x1, op, "x1", pr.dim1, st, device);
  check_tensor(x2, op, "x2", pr.dim2, st, device);
  check_tensor(weight, op, "weight", pr.dim_w, st, device);
  in.N = broadcast_rows(x1, x2, weight, op);
  in.x1 = x1.contiguous();
  in.x2 = x2.contiguous();
  in.w = weight.contiguous();
  return in;
}

// Calls f(T()) with T the CUDA element type of st.
template <typename F>
void dispatch_tp(at::ScalarType st, F&& f) {
  switch (st) {
    case at::kFloat: f(float()); break;
    case at::kDouble: f(double()); break;
    case at::kHalf: f(__half()); break;
    case at::kBFloat16: f(__nv_bfloat16()); break;
    default: TORCH_CHECK(false, "equiops: internal error, unsupported dtype ", st);
  }
}

at::ScalarType acc_dtype(at::ScalarType st) { return st == at::kDouble ? at::kDouble : at::kFloat; }

// A gradient with the shape (rows, width) of its input, computed in the accumulator type:
// straight into a zero-filled (rows, width) tensor, or (a broadcast input, rows == 1 < N)
// into a zero-filled (grid, width) workspace that sum_rows() then reduces.
struct Grad {
  at::Tensor acc;  // (rows, width), accumulator dtype
  at::Tensor ws;   // (grid, width) when broadcast
  bool bc = false;

  void init(int64_t rows, int64_t width, int64_t N, const at::TensorOptions& aopt) {
    bc = rows == 1 && N > 1;
    acc = bc ? at::empty({1, width}, aopt) : at::zeros({rows, width}, aopt);
  }
  // Called once the plan (grid) is known and a kernel will run.
  void alloc_ws(unsigned int grid, const at::TensorOptions& aopt) {
    if (bc) ws = at::zeros({static_cast<int64_t>(grid), acc.size(1)}, aopt);
  }
  template <typename Acc>
  Acc* kernel_ptr() {
    return reinterpret_cast<Acc*>((bc ? ws : acc).data_ptr());
  }
  template <typename Acc>
  void finish(cudaStream_t stream) {
    if (!bc) return;
    const int64_t D = acc.size(1);
    if (D == 0) return;
    if (!ws.defined()) {  // no kernel ran: the sum of nothing
      acc.zero_();
      return;
    }
    int64_t blocks = (D + tpk::kThreads - 1) / tpk::kThreads;
    if (blocks > 4096) blocks = 4096;
    tpk::tp_sum_rows_kernel<Acc><<<static_cast<unsigned int>(blocks), tpk::kThreads, 0, stream>>>(
        reinterpret_cast<const Acc*>(ws.data_ptr()), ws.size(0), D, reinterpret_cast<Acc*>(acc.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor result(at::ScalarType st) const { return acc.scalar_type() == st ? acc : acc.to(st); }
};

tpk::TPGeom make_geom(const tp::Problem& pr, const Inputs& in, const tpk::TPPlan& pl) {
  tpk::TPGeom g;
  g.N = in.N;
  g.dim1 = pr.dim1;
  g.dim2 = pr.dim2;
  g.dim_out = pr.dim_out;
  g.dim_w = pr.dim_w;
  g.s1 = in.x1.size(0) == 1 ? 0 : pr.dim1;
  g.s2 = in.x2.size(0) == 1 ? 0 : pr.dim2;
  g.sw = in.w.size(0) == 1 ? 0 : pr.dim_w;
  g.ntiles = pl.ntiles;
  g.R = pl.R;
  g.zcap = pl.zcap;
  g.bc1 = g.bc2 = g.bcw = 0;
  return g;
}

tpk::TPPlan make_plan(const DeviceProblem& dp, int64_t N, int nbuf, int acc_size, int64_t ws_width, const char* op) {
  const tpk::TPPlan pl = tpk::plan_tp(N, dp.work, dp.max_dk, dp.max_zrow, nbuf, acc_size, ws_width);
  TORCH_CHECK_VALUE(pl.ok, "equiops.", op, ": an output degree of ", num(dp.max_dk),
                    " components does not fit the CUDA kernels' shared memory");
  return pl;
}

template <typename Acc>
const Acc* coefs(const DeviceProblem& dp);
template <>
const float* coefs<float>(const DeviceProblem& dp) {
  return dp.vals_f.data_ptr<float>();
}
template <>
const double* coefs<double>(const DeviceProblem& dp) {
  return dp.vals_d.data_ptr<double>();
}

tpk::TPTables tables(const DeviceProblem& dp) {
  tpk::TPTables t;
  t.ints = dp.ints.data_ptr<int32_t>();
  t.npaths = dp.npaths;
  return t;
}

template <typename T>
const T* ptr(const at::Tensor& t) {
  return reinterpret_cast<const T*>(t.data_ptr());
}

}  // namespace

at::Tensor tensor_product(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& weight,
                          const std::string& problem) {
  const char* op = "tensor_product";
  const Inputs in = check_inputs(x1, x2, weight, problem, op);
  c10::cuda::CUDAGuard guard(x1.device());
  const DeviceProblem& dp = *in.dp;
  const tp::Problem& pr = *dp.prob;
  const auto st = in.x1.scalar_type();
  const auto aopt = in.x1.options().dtype(acc_dtype(st));
  at::Tensor out = at::zeros({in.N, pr.dim_out}, aopt);
  if (in.N > 0 && dp.npaths > 0 && pr.dim_out > 0) {
    const int acc_size = static_cast<int>(out.element_size());
    const tpk::TPPlan pl = make_plan(dp, in.N, 1, acc_size, 0, op);
    const tpk::TPGeom g = make_geom(pr, in, pl);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    dispatch_tp(st, [&](auto tag) {
      using T = decltype(tag);
      using Acc = typename tpk::AccOf<T>::type;
      tpk::tp_forward_kernel<T><<<pl.grid, tpk::kThreads, pl.smem, stream>>>(
          tables(dp), coefs<Acc>(dp), g, ptr<T>(in.x1), ptr<T>(in.x2), ptr<T>(in.w),
          reinterpret_cast<Acc*>(out.data_ptr()));
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return out.scalar_type() == st ? out : out.to(st);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tensor_product_backward(const at::Tensor& grad_out,
                                                                       const at::Tensor& x1, const at::Tensor& x2,
                                                                       const at::Tensor& weight,
                                                                       const std::string& problem, bool need_x1,
                                                                       bool need_x2, bool need_w) {
  const char* op = "tensor_product_backward";
  const Inputs in = check_inputs(x1, x2, weight, problem, op);
  c10::cuda::CUDAGuard guard(x1.device());
  const DeviceProblem& dp = *in.dp;
  const tp::Problem& pr = *dp.prob;
  const auto st = in.x1.scalar_type();
  check_tensor(grad_out, op, "grad_out", pr.dim_out, st, in.x1.device());
  TORCH_CHECK_VALUE(grad_out.size(0) == in.N, "equiops.", op, ": grad_out must have N = ", num(in.N),
                    " rows, got ", num(grad_out.size(0)));
  const at::Tensor go = grad_out.contiguous();
  const auto aopt = in.x1.options().dtype(acc_dtype(st));
  Grad G1, G2, GW;
  if (need_x1) G1.init(in.x1.size(0), pr.dim1, in.N, aopt);
  if (need_x2) G2.init(in.x2.size(0), pr.dim2, in.N, aopt);
  if (need_w) GW.init(in.w.size(0), pr.dim_w, in.N, aopt);
  const bool any = need_x1 || need_x2 || need_w;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (any && in.N > 0 && dp.npaths > 0) {
    const int acc_size = st == at::kDouble ? 8 : 4;
    const int64_t ws_width = (need_x1 && G1.bc ? pr.dim1 : 0) + (need_x2 && G2.bc ? pr.dim2 : 0) +
                             (need_w && GW.bc ? pr.dim_w : 0);
    const tpk::TPPlan pl = make_plan(dp, in.N, 2, acc_size, ws_width, op);
    tpk::TPGeom g = make_geom(pr, in, pl);
    g.bc1 = need_x1 && G1.bc;
    g.bc2 = need_x2 && G2.bc;
    g.bcw = need_w && GW.bc;
    if (need_x1) G1.alloc_ws(pl.grid, aopt);
    if (need_x2) G2.alloc_ws(pl.grid, aopt);
    if (need_w) GW.alloc_ws(pl.grid, aopt);
    dispatch_tp(st, [&](auto tag) {
      using T = decltype(tag);
      using Acc = typename tpk::AccOf<T>::type;
      tpk::tp_backward_kernel<T><<<pl.grid, tpk::kThreads, pl.smem, stream>>>(
          tables(dp), coefs<Acc>(dp), g, ptr<T>(go), ptr<T>(in.x1), ptr<T>(in.x2), ptr<T>(in.w),
          need_x1 ? G1.kernel_ptr<Acc>() : nullptr, need_x2 ? G2.kernel_ptr<Acc>() : nullptr,
          need_w ? GW.kernel_ptr<Acc>() : nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  // Not wanted: (0,) each (distinct tensors: outputs of one op must not alias).
  at::Tensor r1 = at::empty({0}, in.x1.options()), r2 = at::empty({0}, in.x1.options()),
             rw = at::empty({0}, in.x1.options());
  dispatch_tp(st, [&](auto tag) {
    using Acc = typename tpk::AccOf<decltype(tag)>::type;
    if (need_x1) {
      G1.finish<Acc>(stream);
      r1 = G1.result(st);
    }
    if (need_x2) {
      G2.finish<Acc>(stream);
      r2 = G2.result(st);
    }
    if (need_w) {
      GW.finish<Acc>(stream);
      rw = GW.result(st);
    }
  });
  return {r1, r2, rw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tensor_product_double_backward(
    const c10::optional<at::Tensor>& gg1_in, const c10::optional<at::Tensor>& gg2_in,
    const c10::optional<at::Tensor>& ggw_in, const at::Tensor& grad_out, const at::Tensor& x1, const at::Tensor& x2,
    const at::Tensor& weight, const std::string& problem) {
  const char* op = "tensor_product_double_backward";
  const Inputs in = check_inputs(x1, x2, weight, problem, op);
  c10::cuda::CUDAGuard guard(x1.device());
  const DeviceProblem& dp = *in.dp;
  const tp::Problem& pr = *dp.prob;
  const auto st = in.x1.scalar_type();
  const at::Device device = in.x1.device();
  check_tensor(grad_out, op, "grad_out", pr.dim_out, st, device);
  TORCH_CHECK_VALUE(grad_out.size(0) == in.N, "equiops.", op, ": grad_out must have N = ", num(in.N),
                    " rows, got ", num(grad_out.size(0)));
  const at::Tensor go = grad_out.contiguous();
  // Each gg has its input's shape (rows included): it multiplies that input's gradient.
  auto take = [&](const c10::optional<at::Tensor>& gg, const at::Tensor& like, const char* name) {
    at::Tensor t;
    if (gg.has_value() && gg->defined()) {
      check_tensor(*gg, op, name, like.size(1), st, device);
      TORCH_CHECK_VALUE(gg->size(0) == like.size(0), "equiops.", op, ": ", name, " must have the shape ",
                        shape(like.sizes()), ", got ", shape(gg->sizes()));
      t = gg->contiguous();
    }
    return t;
  };
  const at::Tensor gg1 = take(gg1_in, in.x1, "gg_x1");
  const at::Tensor gg2 = take(gg2_in, in.x2, "gg_x2");
  const at::Tensor ggw = take(ggw_in, in.w, "gg_weight");

  const auto aopt = in.x1.options().dtype(acc_dtype(st));
  at::Tensor ggo = at::zeros({in.N, pr.dim_out}, aopt);
  Grad G1, G2, GW;
  G1.init(in.x1.size(0), pr.dim1, in.N, aopt);
  G2.init(in.x2.size(0), pr.dim2, in.N, aopt);
  GW.init(in.w.size(0), pr.dim_w, in.N, aopt);
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool any = gg1.defined() || gg2.defined() || ggw.defined();
  if (any && in.N > 0 && dp.npaths > 0) {
    const int acc_size = st == at::kDouble ? 8 : 4;
    const int64_t ws_width = (G1.bc ? pr.dim1 : 0) + (G2.bc ? pr.dim2 : 0) + (GW.bc ? pr.dim_w : 0);
    const tpk::TPPlan pl = make_plan(dp, in.N, 4, acc_size, ws_width, op);
    tpk::TPGeom g = make_geom(pr, in, pl);
    g.bc1 = G1.bc;
    g.bc2 = G2.bc;
    g.bcw = GW.bc;
    G1.alloc_ws(pl.grid, aopt);
    G2.alloc_ws(pl.grid, aopt);
    GW.alloc_ws(pl.grid, aopt);
    dispatch_tp(st, [&](auto tag) {
      using T = decltype(tag);
      using Acc = typename tpk::AccOf<T>::type;
      auto opt_ptr = [](const at::Tensor& t) { return t.defined() ? ptr<T>(t) : static_cast<const T*>(nullptr); };
      tpk::tp_double_backward_kernel<T><<<pl.grid, tpk::kThreads, pl.smem, stream>>>(
          tables(dp), coefs<Acc>(dp), g, opt_ptr(gg1), opt_ptr(gg2), opt_ptr(ggw), ptr<T>(go), ptr<T>(in.x1),
          ptr<T>(in.x2), ptr<T>(in.w), reinterpret_cast<Acc*>(ggo.data_ptr()), G1.kernel_ptr<Acc>(),
          G2.kernel_ptr<Acc>(), GW.kernel_ptr<Acc>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  dispatch_tp(st, [&](auto tag) {
    using Acc = typename tpk::AccOf<decltype(tag)>::type;
    G1.finish<Acc>(stream);
    G2.finish<Acc>(stream);
    GW.finish<Acc>(stream);
  });
  return {ggo.scalar_type() == st ? ggo : ggo.to(st), G1.result(st), G2.result(st), GW.result(st)};
}

}  // namespace cuda
}  // namespace equiops
