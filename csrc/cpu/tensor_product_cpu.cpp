// CPU implementations of the tensor-product operators (schemas in ops.cpp): argument
// checks, the parsed problem (cached by its string), OpenMP over row ranges, the
// deterministic reduction of broadcast inputs' gradients, and the choice of AVX2 or
// baseline kernels (tp_kernels.h).
//
// Semantics: python/equiops/reference/tensor_product.py. Every output row is computed
// by one thread from its own input rows; the gradient of a broadcast input (one row
// for all N, e.g. shared weights) is summed per fixed row range and the ranges are
// added in order, so results do not depend on the thread count.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <array>
#include <cstdlib>
#include <string>
#include <tuple>
#include <vector>

#include "host_pool.h"
#include "equiops/checks.h"
#include "tp_glue.h"


namespace equiops {
namespace cpu {
namespace {

constexpr const char* kOp = "equiops.tensor_product";
// Ranges the rows are split into when a broadcast input's gradient is reduced: fixed,
// so the summation order never depends on the thread count.
constexpr int64_t kReduceRanges = 16;

using tpglue::in_of;
using tpglue::kernels;

std::shared_ptr<const tp::Problem> problem_of(c10::string_view text) { return tpglue::problem_of(text, kOp); }

// Checks x (rows in {1, N}, `cols` columns, dtype and device of ref); returns its row count.
void check_operand(const at::Tensor& t, const at::Tensor& ref, int64_t cols, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), kOp, ": ", name, " must have dtype ",
                   ref.scalar_type(), " like x1, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), kOp, ": ", name, " must be on ", ref.device(),
                    " like x1, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(1) == cols, kOp, ": ", name,
                    " must have shape (rows, ", cols, "), got ", t.sizes());
}

int64_t rows_of(std::initializer_list<std::pair<const at::Tensor*, const char*>> ts) {
  // N is the first row count other than 1; the error names the first input that differs.
  int64_t N = 1;
  const char* first = nullptr;
  for (auto& [t, name] : ts) {
    if (t->size(0) == 1) continue;
    if (first == nullptr) {
      N = t->size(0);
      first = name;
    }
    TORCH_CHECK_VALUE(t->size(0) == N, kOp, ": ", name, " has ", t->size(0), " rows but ", first, " has ", N,
                      "; every input must have 1 or N rows");
  }
  return N;
}

struct Prepared {
  std::shared_ptr<const tp::Problem> prob;
  at::Tensor x1, x2, w;
  int64_t N;
};

Prepared prepare(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& w, c10::string_view problem,
                 c10::string_view backend) {
  check_cpu_backend(backend, kOp);
  Prepared P;
  P.prob = problem_of(problem);
  const auto st = x1.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, kOp,
                   ": the CPU kernels take float32 or float64, got x1 of dtype ", st);
  check_operand(x1, x1, P.prob->dim1, "x1");
  check_operand(x2, x1, P.prob->dim2, "x2");
  check_operand(w, x1, P.prob->dim_w, "weight");
  P.N = rows_of({{&x1, "x1"}, {&x2, "x2"}, {&w, "weight"}});
  P.x1 = x1.contiguous();
  P.x2 = x2.contiguous();
  P.w = w.contiguous();
  return P;
}

template <typename T>
tp::Call<T> make_call(const Prepared& P) {
  tp::Call<T> c;
  c.prob = P.prob.get();
  c.N = P.N;
  c.x1 = in_of<T>(P.x1);
  c.x2 = in_of<T>(P.x2);
  c.w = in_of<T>(P.w);
  // Outputs too large to stay in cache go around it (see store_cols).
  c.nt = P.N * (P.prob->dim_out + P.prob->dim1) * (int64_t)sizeof(T) >= (int64_t(8) << 20);
  return c;
}

// Zeroes the output columns no path writes (the kernels store only written blocks).
void zero_unwritten(at::Tensor& out, const tp::Problem& prob) {
  for (const auto& [c0, c1] : prob.unwritten) out.narrow(1, c0, c1 - c0).zero_();
}

// Runs kernel over the rows in parallel. With broadcast gradients (partial sums of
// widths d1, d2, dw; 0 = none) the rows are split into at most kReduceRanges fixed
// ranges, each with its own partial sums, reduced in range order afterwards.
template <typename T, typename K>
void run(const tp::Call<T>& c, K kernel, int64_t d1, int64_t d2, int64_t dw, at::Tensor* r1, at::Tensor* r2,
         at::Tensor* rw) {
  constexpr int64_t W = 32 / sizeof(T);
  const int64_t chunks = (c.N + W - 1) / W;
  if (chunks == 0) return;
  if (d1 + d2 + dw == 0) {
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      kernel(c, c0 * W, std::min(c.N, c1 * W), tp::Partials<T>{});
    });
    return;
  }
  const int64_t R = std::min(chunks, kReduceRanges);
  std::vector<int64_t> bounds((size_t)R + 1);
  for (int64_t r = 0; r <= R; ++r) bounds[r] = std::min(c.N, chunks * r / R * W);
  tpglue::run_ranges<T>(c, kernel, bounds, d1, d2, dw, r1, r2, rw);
}

at::Tensor tp_forward(const at::Tensor& x1, const at::Tensor& x2, const at::Tensor& weight,
                      c10::string_view problem, c10::string_view backend) {
  const Prepared P = prepare(x1, x2, weight, problem, backend);
  at::Tensor out = HostPool::get().empty({P.N, P.prob->dim_out}, P.x1.options());
  AT_DISPATCH_FLOATING_TYPES(P.x1.scalar_type(), "equiops_tensor_product", [&] {
    tp::Call<scalar_t> c = make_call<scalar_t>(P);
    c.out = out.data_ptr<scalar_t>();
    run<scalar_t>(c, kernels<scalar_t>().forward, 0, 0, 0, nullptr, nullptr, nullptr);
  });
  zero_unwritten(out, *P.prob);
  return out;
}

// Gradient outputs shaped like their inputs (zero-filled: a broadcast input's gradient
// is written by the reduction; a per-row one by the kernel, whole rows).
struct GradOuts {
  at::Tensor g1, g2, gw;
};

GradOuts grad_outputs(const Prepared& P, bool n1, bool n2, bool nw) {
  auto like = [&](const at::Tensor& t, bool need) {
    return need ? HostPool::get().empty(t.sizes(), t.options()) : at::empty({0}, t.options());
  };
  return {like(P.x1, n1), like(P.x2, n2), like(P.w, nw)};
}

template <typename T>
void run_grads(tp::Call<T>& c, void (*kernel)(const tp::Call<T>&, int64_t, int64_t, const tp::Partials<T>&),
               GradOuts& g, const Prepared& P) {
  const tp::Problem& prob = *P.prob;
  const bool n1 = g.g1.numel() > 0, n2 = g.g2.numel() > 0, nw = g.gw.numel() > 0;
  const bool b1 = n1 && P.x1.size(0) == 1 && P.N != 1;
  const bool b2 = n2 && P.x2.size(0) == 1 && P.N != 1;
  const bool bw = nw && P.w.size(0) == 1 && P.N != 1;
  c.g1 = n1 && !b1 ? g.g1.data_ptr<T>() : nullptr;
  c.g2 = n2 && !b2 ? g.g2.data_ptr<T>() : nullptr;
  c.gw = nw && !bw ? g.gw.data_ptr<T>() : nullptr;
  if (P.N == 0) {
    // No rows: gradients of broadcast inputs are sums over nothing.
    if (n1) g.g1.zero_();
    if (n2) g.g2.zero_();
    if (nw) g.gw.zero_();
    return;
  }
  run<T>(c, kernel, b1 ? prob.dim1 : 0, b2 ? prob.dim2 : 0, bw ? prob.dim_w : 0, &g.g1, &g.g2, &g.gw);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tp_backward(const at::Tensor& grad_out, const at::Tensor& x1,
                                                           const at::Tensor& x2, const at::Tensor& weight,
                                                           c10::string_view problem, std::array<bool, 3> need,
                                                           c10::string_view backend) {
  const Prepared P = prepare(x1, x2, weight, problem, backend);
  check_operand(grad_out, P.x1, P.prob->dim_out, "grad_out");
  TORCH_CHECK_VALUE(grad_out.size(0) == P.N, kOp, ": grad_out must have N = ", P.N, " rows, got ",
                    grad_out.size(0));
  const at::Tensor go = grad_out.contiguous();
  GradOuts g = grad_outputs(P, need[0], need[1], need[2]);
  AT_DISPATCH_FLOATING_TYPES(P.x1.scalar_type(), "equiops_tensor_product_backward", [&] {
    tp::Call<scalar_t> c = make_call<scalar_t>(P);
    c.go = in_of<scalar_t>(go);
    run_grads<scalar_t>(c, kernels<scalar_t>().backward, g, P);
  });
  return {g.g1, g.g2, g.gw};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> tp_double_backward(
    const c10::optional<at::Tensor>& gg1, const c10::optional<at::Tensor>& gg2,
    const c10::optional<at::Tensor>& ggw, const at::Tensor& grad_out, const at::Tensor& x1,
    const at::Tensor& x2, const at::Tensor& weight, c10::string_view problem, c10::string_view backend) {
  const Prepared P = prepare(x1, x2, weight, problem, backend);
  check_operand(grad_out, P.x1, P.prob->dim_out, "grad_out");
  TORCH_CHECK_VALUE(grad_out.size(0) == P.N, kOp, ": grad_out must have N = ", P.N, " rows, got ",
                    grad_out.size(0));
  auto opt = [&](const c10::optional<at::Tensor>& t, const at::Tensor& like, int64_t cols, const char* name) {
    if (!t.has_value() || !t->defined()) return at::Tensor();
    check_operand(*t, P.x1, cols, name);
    TORCH_CHECK_VALUE(t->size(0) == like.size(0), kOp, ": ", name, " must have ", like.size(0),
                      " rows like its input, got ", t->size(0));
    return t->contiguous();
  };
  const at::Tensor y1 = opt(gg1, P.x1, P.prob->dim1, "gg_x1");
  const at::Tensor y2 = opt(gg2, P.x2, P.prob->dim2, "gg_x2");
  const at::Tensor yw = opt(ggw, P.w, P.prob->dim_w, "gg_weight");
  const at::Tensor go = grad_out.contiguous();
  at::Tensor ggo = HostPool::get().empty({P.N, P.prob->dim_out}, P.x1.options());
  GradOuts g = grad_outputs(P, true, true, true);
  AT_DISPATCH_FLOATING_TYPES(P.x1.scalar_type(), "equiops_tensor_product_double_backward", [&] {
    tp::Call<scalar_t> c = make_call<scalar_t>(P);
    c.go = in_of<scalar_t>(go);
    c.gg1 = in_of<scalar_t>(y1);
    c.gg2 = in_of<scalar_t>(y2);
    c.ggw = in_of<scalar_t>(yw);
    c.out = ggo.data_ptr<scalar_t>();
    run_grads<scalar_t>(c, kernels<scalar_t>().double_backward, g, P);
  });
  zero_unwritten(ggo, *P.prob);
  return {ggo, g.g1, g.g2, g.gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("tensor_product", &tp_forward);
  m.impl("tensor_product_backward", &tp_backward);
  m.impl("tensor_product_double_backward", &tp_double_backward);
}

}  // namespace cpu
}  // namespace equiops
