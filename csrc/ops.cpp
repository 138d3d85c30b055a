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

  // Spherical harmonics in e3nn's convention. x (N, 3) float32/float64; coupling
  // (nnz, 4) float64 on the CPU: the recurrence table built by
  // python/equiops/ops/spherical_harmonics.py; ls: the output's degrees in order, giving
  // K = sum(2l+1) columns; normalization: "integral" | "component" | "norm".
  // Semantics: python/equiops/reference/spherical_harmonics.py.
  m.def(
      "spherical_harmonics(Tensor x, Tensor coupling, int[] ls, bool normalize,"
      " str normalization, str backend) -> Tensor");
  // grad (N, K) -> grad_x (N, 3): the vector-Jacobian product.
  m.def(
      "spherical_harmonics_backward(Tensor grad, Tensor x, Tensor coupling, int[] ls,"
      " bool normalize, str normalization, str backend) -> Tensor");
  // The derivatives of spherical_harmonics_backward against an incoming grad_grad_x
  // (N, 3): (d/d grad (N, K), d/dx (N, 3)).
  m.def(
      "spherical_harmonics_double_backward(Tensor grad_grad_x, Tensor grad, Tensor x,"
      " Tensor coupling, int[] ls, bool normalize, str normalization, str backend)"
      " -> (Tensor, Tensor)");
  // Values (N, K) and the Jacobian (N, 3, K): jac[n, a, c] = d values[n, c] / d x[n, a].
  m.def(
      "spherical_harmonics_jacobian(Tensor x, Tensor coupling, int[] ls, bool normalize,"
      " str normalization, str backend) -> (Tensor, Tensor)");

  // Clebsch-Gordan tensor products. problem: the string of
  // python/equiops/tp_problem.py (TPProblem.encode): widths, paths, CG nonzeros.
  // x1 (N1, dim1), x2 (N2, dim2), weight (Nw, dim_w), each of N1, N2, Nw in {1, N}
  // (1 broadcasts over rows; Nw == 1 is e3nn's shared weights); out (N, dim_out).
  // Semantics: python/equiops/reference/tensor_product.py.
  m.def("tensor_product(Tensor x1, Tensor x2, Tensor weight, str problem, str backend) -> Tensor");
  // Gradients of <grad_out, out> w.r.t. (x1, x2, weight), each the shape of its input
  // (broadcast inputs get the sum over rows); one not asked for in `need` is (0,).
  m.def(
      "tensor_product_backward(Tensor grad_out, Tensor x1, Tensor x2, Tensor weight, str problem,"
      " bool[3] need, str backend) -> (Tensor, Tensor, Tensor)");
  // The derivatives of tensor_product_backward's outputs, contracted with incoming
  // (gg_x1, gg_x2, gg_weight) (None: zero), w.r.t. (grad_out, x1, x2, weight).
  m.def(
      "tensor_product_double_backward(Tensor? gg_x1, Tensor? gg_x2, Tensor? gg_weight,"
      " Tensor grad_out, Tensor x1, Tensor x2, Tensor weight, str problem, str backend)"
      " -> (Tensor, Tensor, Tensor, Tensor)");

  // Fused tensor-product convolution: out[n] = sum over edges e with dst[e] == n of
  // tensor_product(x[src[e]], edge_attr[e], weight[e]) (python/equiops/reference/tp_conv.py).
  // x (num_nodes, dim1); edge_attr (E or 1, dim2); weight (E or 1, dim_w); src, dst (E,)
  // int64. The graph's CSR views (equiops.Graph): dst_perm / dst_indptr sorted by
  // receiver (the forward sums over it), src_perm / src_indptr by sender (the backward's
  // gradient w.r.t. x sums over it); a perm None with its indptr given: edges already in
  // that order. A view None: the CPU builds it itself; CUDA uses atomics (not bitwise
  // reproducible). Both ops take both views so that each one's autograd can call the other.
  m.def(
      "tp_conv(Tensor x, Tensor edge_attr, Tensor weight, Tensor src, Tensor dst, Tensor? dst_perm,"
      " Tensor? dst_indptr, Tensor? src_perm, Tensor? src_indptr, SymInt num_nodes, str problem,"
      " str backend) -> Tensor");
  // Gradients of <grad_out, tp_conv(...)> w.r.t. (x, edge_attr, weight), each the shape of
  // its input ((0,) when not in need); num_nodes is x's row count.
  m.def(
      "tp_conv_backward(Tensor grad_out, Tensor x, Tensor edge_attr, Tensor weight, Tensor src,"
      " Tensor dst, Tensor? dst_perm, Tensor? dst_indptr, Tensor? src_perm, Tensor? src_indptr,"
      " bool[3] need, str problem, str backend)"
" -> (Tensor, Tensor, Tensor)");

  // Fused EGNN message block: per edge e (receiver i = dst[e], sender j = src[e]) the
  // edge MLP of z1 = node_i[i] + node_j[j] + |x_i - x_j|^2 w_radial + w_edge edge_attr[e],
  // the optional attention gate, the coordinate MLP and the coordinate term, summed at
  // the receivers: (m_sum (n, M), t_sum (n, 3)). Semantics and shapes:
  // python/equiops/reference/egnn_message.py. act: "silu" | "relu"; coord_norm: "none" |
  // "detached" | "plus_one" | "clamped"; c_clamp / trans_clamp: 0 = off. The views are
  // equiops.Graph's (None: built by the CPU kernel; atomics on CUDA).
  m.def(
      "egnn_message(Tensor node_i, Tensor node_j, Tensor coord, Tensor edge_attr, Tensor src,"
      " Tensor dst, Tensor? dst_perm, Tensor? dst_indptr, Tensor? src_perm, Tensor? src_indptr,"
      " Tensor w_radial, Tensor w_edge, Tensor w2, Tensor b2, Tensor? w_att, Tensor? b_att,"
      " Tensor wc1, Tensor bc1, Tensor wc2, Tensor? bc2, str act, str coord_norm, bool tanh,"
      " float c_clamp, float trans_clamp, str backend) -> (Tensor, Tensor)");
  // Gradients of <grad_m, m_sum> + <grad_t, t_sum> w.r.t. (node_i, node_j, coord,
  // edge_attr, w_radial, w_edge, w2, b2, w_att, b_att, wc1, bc1, wc2, bc2), each the
  // shape of its input ((0,) for an absent optional one). Edge quantities are recomputed,
  // never stored by the forward.
  m.def(
      "egnn_message_backward(Tensor grad_m, Tensor grad_t, Tensor node_i, Tensor node_j,"
      " Tensor coord, Tensor edge_attr, Tensor src, Tensor dst, Tensor? dst_perm,"
      " Tensor? dst_indptr, Tensor? src_perm, Tensor? src_indptr, Tensor w_radial,"
      " Tensor w_edge, Tensor w2, Tensor b2, Tensor? w_att, Tensor? b_att, Tensor wc1,"
      " Tensor bc1, Tensor wc2, Tensor? bc2, str act, str coord_norm, bool tanh, float c_clamp,"
      " float trans_clamp, str backend) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor,"
      " Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");

  // Fused PointConv of LieConv: out[b, q] = weight @ (sum_k mask penult[b, q, k]^T
  // values[b, nbhd_idx[b, q, k]]).flatten() + bias, divided by max(1, count) with mean.
  // penult (B, m, K, C), values (B, n, ci), nbhd_idx (B, m, K) int64 in [0, n), nbhd_mask
  // (B, m, K) bool, weight (co, C * ci), bias (co,) or None; out (B, m, co). Semantics:
  // python/equiops/reference/pointconv.py. Neither the gathered (B, m, K, ci) values nor
  // the (B, m, C * ci) partials are materialised.
  m.def(
      "pointconv(Tensor penult, Tensor values, Tensor nbhd_idx, Tensor nbhd_mask, Tensor weight,"
      " Tensor? bias, bool mean, str backend) -> Tensor");
  // Gradients of <grad_out, out> w.r.t. (penult, values, weight, bias), each the shape of
  // its input (bias: (0,) when None); the partials are recomputed, never stored.
  m.def(
      "pointconv_backward(Tensor grad_out, Tensor penult, Tensor values, Tensor nbhd_idx,"
      " Tensor nbhd_mask, Tensor weight, Tensor? bias, bool mean, str backend)"
      " -> (Tensor, Tensor, Tensor, Tensor)");
}
