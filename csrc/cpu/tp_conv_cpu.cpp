// CPU implementation of the fused tensor-product convolution (schemas in ops.cpp;
// semantics: python/equiops/reference/tp_conv.py):
//
//   out[n] = sum over edges e with dst[e] == n of TP(x[src[e]], edge_attr[e], weight[e])
//
// No (E, dim_out) message tensor is ever built. The tensor-product row kernels
// (tp_kernels.h) run over the edges in receiver order with row maps: each chunk of W
// edges (one vector of lanes) gathers its senders' features, and its output rows are
// added into the receivers' rows in edge order. The edges are split into fixed ranges
// at node boundaries (tpglue::run_ranges), one task per range, so a node's sum is taken
// by one thread in CSR order: bitwise reproducible and independent of the thread count.
//
// The backward runs the same way over the edges in sender order: the gradient w.r.t. x
// is added into the senders' rows, grad_out rows are gathered at the receivers, and the
// per-edge gradients (edge_attr, weight) are stored at each edge's own row. The double
// backward is composed of these two in Python (python/equiops/ops/tp_conv.py).
//
// x has a row per sending node and the output a row per receiving node (num_nodes):
// usually the same nodes, but a bipartite convolution (senders != receivers) works too.
// The CSR view (perm, indptr) comes from equiops.Graph; without it (both None) the
// view is built here by a counting sort (O(E + num_nodes), stable). Given views are
// checked against the indices (O(E)), so a direct call cannot race or read out of bounds.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <string>
#include <tuple>
#include <vector>

#include "equiops/checks.h"
#include "host_pool.h"
#include "graph_view.h"
#include "tp_glue.h"

namespace equiops {
namespace cpu {
namespace {

constexpr const char* kFwd = "equiops.tp_conv";
constexpr const char* kBwd = "equiops.tp_conv_backward";

struct ConvArgs {
  std::shared_ptr<const tp::Problem> prob;
  at::Tensor x, a, w;  // contiguous
  int64_t E = 0;
  int64_t num_src = 0;  // x's rows: the nodes edges send from
};

// Shapes: x (num_src, dim1), edge_attr (E or 1, dim2), weight (E or 1, dim_w), src and
// dst (E,) with src[e] < num_src and dst[e] < num_dst.
ConvArgs prepare(const at::Tensor& x, const at::Tensor& edge_attr, const at::Tensor& weight, const at::Tensor& src,
                 const at::Tensor& dst, int64_t num_dst, c10::string_view problem, c10::string_view backend,
                 const char* op) {
  check_cpu_backend(backend, op);
  ConvArgs A;
  A.prob = tpglue::problem_of(problem, op);
  const tp::Problem& P = *A.prob;
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, op, ": the CPU kernels take float32 or float64, got x of dtype ",
                   st);
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == P.dim1, op, ": x must have shape (nodes, ", P.dim1, "), got ",
                    x.sizes());
  TORCH_CHECK_VALUE(src.dim() == 1, op, ": src must be 1-D (E,), got shape ", src.sizes());
  A.E = src.size(0);
  for (auto [t, name, cols] : {std::make_tuple(&edge_attr, "edge_attr", P.dim2), std::make_tuple(&weight, "weight", P.dim_w)}) {
    TORCH_CHECK_TYPE(t->scalar_type() == st, op, ": ", name, " must have x's dtype ", st, ", got ", t->scalar_type());
    TORCH_CHECK_VALUE(t->device() == x.device(), op, ": ", name, " must be on ", x.device(), " like x, got ",
                      t->device());
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(1) == cols && (t->size(0) == A.E || t->size(0) == 1), op, ": ", name,
                      " must have shape (E, ", cols, ") or (1, ", cols, ") with E = ", A.E, " edges, got ", t->sizes());
  }
  A.num_src = x.size(0);
  check_index(src, A.E, A.num_src, op, "src");
  check_index(dst, A.E, num_dst, op, "dst");
  A.x = x.contiguous();
  A.a = edge_attr.contiguous();
  A.w = weight.contiguous();
  return A;
}

at::Tensor conv_forward(const at::Tensor& x, const at::Tensor& edge_attr, const at::Tensor& weight,
                        const at::Tensor& src, const at::Tensor& dst, const c10::optional<at::Tensor>& perm,
                        const c10::optional<at::Tensor>& indptr, const c10::optional<at::Tensor>& /*src_perm*/,
                        const c10::optional<at::Tensor>& /*src_indptr*/, int64_t num_nodes, c10::string_view problem,
                        c10::string_view backend) {
  TORCH_CHECK_VALUE(num_nodes >= 0, kFwd, ": num_nodes must be >= 0, got ", num_nodes);
  const ConvArgs A = prepare(x, edge_attr, weight, src, dst, num_nodes, problem, backend, kFwd);
  const tp::Problem& P = *A.prob;
  // Zeros from the host pool: a fresh block page-faults on first touch, which on the
  // project's VMs cost as much as the fill (the TFN layer's (2000, 3264) sums: ~12 ms).
  at::Tensor out = HostPool::get().empty({num_nodes, P.dim_out}, A.x.options()).zero_();
  if (A.E == 0 || P.paths.empty()) return out;
  const at::Tensor s = src.contiguous(), d = dst.contiguous();
  const View v = make_view(d.data_ptr<int64_t>(), s.data_ptr<int64_t>(), A.E, num_nodes, perm, indptr, kFwd, "dst");
  AT_DISPATCH_FLOATING_TYPES(A.x.scalar_type(), "equiops_tp_conv", [&] {
    tp::Call<scalar_t> c;
    c.prob = A.prob.get();
    c.N = A.E;
    c.x1 = tpglue::in_of<scalar_t>(A.x, v.other_of.data());
    c.x2 = tpglue::in_of<scalar_t>(A.a, v.edge_of);
    c.w = tpglue::in_of<scalar_t>(A.w, v.edge_of);
    c.out = out.data_ptr<scalar_t>();
    c.out_idx = v.key_of.data();
    c.out_acc = true;
    tpglue::run_ranges<scalar_t>(c, tpglue::kernels<scalar_t>().forward, node_ranges(v, A.E), 0, 0, 0, nullptr,
                                 nullptr, nullptr);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> conv_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& edge_attr, const at::Tensor& weight,
    const at::Tensor& src, const at::Tensor& dst, const c10::optional<at::Tensor>& /*dst_perm*/,
    const c10::optional<at::Tensor>& /*dst_indptr*/, const c10::optional<at::Tensor>& perm,
    const c10::optional<at::Tensor>& indptr, std::array<bool, 3> need, c10::string_view problem,
    c10::string_view backend) {
  TORCH_CHECK_VALUE(grad_out.dim() == 2, kBwd, ": grad_out must be 2-D (num_nodes, dim_out), got shape ",
                    grad_out.sizes());
  const ConvArgs A = prepare(x, edge_attr, weight, src, dst, grad_out.size(0), problem, backend, kBwd);
  const tp::Problem& P = *A.prob;
  TORCH_CHECK_TYPE(grad_out.scalar_type() == A.x.scalar_type(), kBwd, ": grad_out must have x's dtype ",
                   A.x.scalar_type(), ", got ", grad_out.scalar_type());
  TORCH_CHECK_VALUE(grad_out.device() == A.x.device(), kBwd, ": grad_out must be on ", A.x.device(), ", got ",
                    grad_out.device());
  TORCH_CHECK_VALUE(grad_out.size(1) == P.dim_out, kBwd, ": grad_out must have ", P.dim_out, " columns, got shape ",
                    grad_out.sizes());
  const int64_t E = A.E;
  // A broadcast edge input (one row for E > 1 edges) gets the sum over edges.
  const bool b2 = A.a.size(0) == 1 && E != 1, bw = A.w.size(0) == 1 && E != 1;
  const bool none = E == 0 || P.paths.empty() || !(need[0] || need[1] || need[2]);
  // The gradient w.r.t. x is summed into (zeros); the per-edge ones are written whole
  // (every column of every edge row, or the reduction's result), so they need no
  // zero fill, and come from the host pool (large: E x dim_w for per-edge weights).
  auto grad_like = [&](const at::Tensor& t, bool want, bool summed) {
    if (!want) return at::empty({0}, t.options());
    return summed || none ? at::zeros(t.sizes(), t.options()) : HostPool::get().empty(t.sizes(), t.options());
  };
  at::Tensor g1 = grad_like(A.x, need[0], true), g2 = grad_like(A.a, need[1], false),
             gw = grad_like(A.w, need[2], false);
  if (none) return {g1, g2, gw};
  const at::Tensor go = grad_out.contiguous();
  const at::Tensor s = src.contiguous(), d = dst.contiguous();
  const View v = make_view(s.data_ptr<int64_t>(), d.data_ptr<int64_t>(), E, A.num_src, perm, indptr, kBwd, "src");
  AT_DISPATCH_FLOATING_TYPES(A.x.scalar_type(), "equiops_tp_conv_backward", [&] {
    tp::Call<scalar_t> c;
    c.prob = A.prob.get();
    c.N = E;
    c.x1 = tpglue::in_of<scalar_t>(A.x, v.key_of.data());
    c.x2 = tpglue::in_of<scalar_t>(A.a, v.edge_of);
    c.w = tpglue::in_of<scalar_t>(A.w, v.edge_of);
    c.go = tpglue::in_of<scalar_t>(go, v.other_of.data());
    if (need[0]) {
      c.g1 = g1.data_ptr<scalar_t>();
      c.g1_idx = v.key_of.data();
      c.g1_acc = true;
    }
    if (need[1] && !b2) {
      c.g2 = g2.data_ptr<scalar_t>();
      c.g2_idx = v.edge_of;
    }
    if (need[2] && !bw) {
      c.gw = gw.data_ptr<scalar_t>();
      c.gw_idx = v.edge_of;
    }
    tpglue::run_ranges<scalar_t>(c, tpglue::kernels<scalar_t>().backward, node_ranges(v, E), 0,
                                 need[1] && b2 ? P.dim2 : 0, need[2] && bw ? P.dim_w : 0, nullptr, &g2, &gw);
  });
  return {g1, g2, gw};
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("tp_conv", &conv_forward);
  m.impl("tp_conv_backward", &conv_backward);
}

}  // namespace cpu
}  // namespace equiops
