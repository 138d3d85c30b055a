// CPU implementation of the fused EGNN message block (schemas in ops.cpp; semantics in
// python/equiops/reference/egnn_message.py; the math and the tile pipeline in
// egnn_kernels.h).
//
// Forward: the edges in receiver order are split into fixed node-aligned ranges
// (graph_view.h), one task each; a task sums its receivers' messages and coordinate
// terms in edge order, so results are bitwise reproducible and independent of the
// thread count. Nothing of size E x width is allocated.
//
// Backward: the same ranges recompute the edge intermediates tile by tile and apply
// the chain rule. Receiver-side gradients (node_i, the coordinate's receiver part) are
// summed by the owning task; weight gradients go to per-range partials added in range
// order; what belongs to the senders (dL/dz1 and the coordinate gradient of each edge)
// is written per edge ((E, H1) + (E, 3), the only edge-sized buffers) and summed per
// sender over the sender view, in parallel over senders. No atomics anywhere.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <string>
#include <tuple>
#include <vector>

#include "cpu_isa.h"
#include "egnn_cpu.h"
#include "equiops/checks.h"
#include "graph_view.h"
#include "host_pool.h"

namespace equiops {
namespace cpu {
namespace {

constexpr const char* kFwd = "equiops.egnn_message";
constexpr const char* kBwd = "equiops.egnn_message_backward";

template <typename T>
egnn::KernelSet<T> kernels() {
  constexpr bool f32 = sizeof(T) == 4;
#ifdef EQUIOPS_EGNN_HAVE_AVX2
  if (cpu_has_avx2()) {
    if constexpr (f32) return egnn::avx2::kernels_f32();
    else return egnn::avx2::kernels_f64();
  }
#endif
  if constexpr (f32) return egnn::generic::kernels_f32();
  else return egnn::generic::kernels_f64();
}

using OptT = c10::optional<at::Tensor>;

bool given(const OptT& t) { return t.has_value() && t->defined(); }

// Checked, contiguous inputs of one call (transposed weight copies included).
struct Prepared {
  int64_t n = 0, E = 0;
  int H1 = 0, M = 0, Hc = 0, D = 0;
  at::Tensor node_i, node_j, coord, edge_attr, w_radial, w_edge_t, w2, w2_t, b2, w_att, wc1, wc1_t, bc1, wc2;
  double b_att = 0, bc2 = 0;
  bool has_att = false, has_bc2 = false;
  int act = egnn::kSilu, coord_norm = egnn::kNone;
  at::Tensor src, dst;
};

void expect(const at::Tensor& t, const char* name, std::vector<int64_t> shape, at::ScalarType st, const char* op) {
  TORCH_CHECK_TYPE(t.scalar_type() == st, op, ": ", name, " must have node_i's dtype ", st, ", got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be on the CPU like node_i, got ", t.device());
  TORCH_CHECK_VALUE(t.sizes() == at::IntArrayRef(shape), op, ": ", name, " must have shape ", at::IntArrayRef(shape),
                    ", got ", t.sizes());
}

Prepared prepare(const at::Tensor& node_i, const at::Tensor& node_j, const at::Tensor& coord,
                 const at::Tensor& edge_attr, const at::Tensor& src, const at::Tensor& dst, const at::Tensor& w_radial,
                 const at::Tensor& w_edge, const at::Tensor& w2, const at::Tensor& b2, const OptT& w_att,
                 const OptT& b_att, const at::Tensor& wc1, const at::Tensor& bc1, const at::Tensor& wc2,
                 const OptT& bc2, c10::string_view act, c10::string_view coord_norm, double c_clamp,
                 double trans_clamp, c10::string_view backend, const char* op) {
  check_cpu_backend(backend, op);
  Prepared p;
  const auto st = node_i.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, op, ": node_i must be float32 or float64, got ", st);
  TORCH_CHECK_VALUE(node_i.device().is_cpu(), op, ": node_i must be a CPU tensor here, got ", node_i.device());
  TORCH_CHECK_VALUE(node_i.dim() == 2, op, ": node_i must be 2-D (n, H1), got shape ", node_i.sizes());
  TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(1) == node_i.size(1), op, ": w2 must have shape (M, ", node_i.size(1),
                    "), got ", w2.sizes());
  TORCH_CHECK_VALUE(wc1.dim() == 2 && wc1.size(1) == w2.size(0), op, ": wc1 must have shape (Hc, ", w2.size(0),
                    "), got ", wc1.sizes());
  TORCH_CHECK_VALUE(edge_attr.dim() == 2, op, ": edge_attr must be 2-D (E, D), got shape ", edge_attr.sizes());
  TORCH_CHECK_VALUE(src.dim() == 1, op, ": src must be 1-D (E,), got shape ", src.sizes());
  p.n = node_i.size(0);
  p.E = src.size(0);
  p.H1 = static_cast<int>(node_i.size(1));
  p.M = static_cast<int>(w2.size(0));
  p.Hc = static_cast<int>(wc1.size(0));
  p.D = static_cast<int>(edge_attr.size(1));
  const int64_t n = p.n, E = p.E, H1 = p.H1, M = p.M, Hc = p.Hc, D = p.D;
  expect(node_j, "node_j", {n, H1}, st, op);
  expect(coord, "coord", {n, 3}, st, op);
  expect(edge_attr, "edge_attr", {E, D}, st, op);
  expect(w_radial, "w_radial", {H1}, st, op);
  expect(w_edge, "w_edge", {H1, D}, st, op);
  expect(w2, "w2", {M, H1}, st, op);
  expect(b2, "b2", {M}, st, op);
  expect(wc1, "wc1", {Hc, M}, st, op);
  expect(bc1, "bc1", {Hc}, st, op);
  expect(wc2, "wc2", {Hc}, st, op);
  TORCH_CHECK_VALUE(given(w_att) == given(b_att), op, ": w_att and b_att must be given together or both be None");
  p.has_att = given(w_att);
  if (p.has_att) {
    expect(*w_att, "w_att", {M}, st, op);
    expect(*b_att, "b_att", {1}, st, op);
    p.w_att = w_att->contiguous();
    p.b_att = b_att->item<double>();
  }
  p.has_bc2 = given(bc2);
  if (p.has_bc2) {
    expect(*bc2, "bc2", {1}, st, op);
    p.bc2 = bc2->item<double>();
  }
  check_index(src, E, n, op, "src");
  check_index(dst, E, n, op, "dst");
  if (act == "silu") p.act = egnn::kSilu;
  else if (act == "relu") p.act = egnn::kRelu;
  else TORCH_CHECK_VALUE(false, op, ": act must be 'silu' or 'relu', got '", std::string(act), "'");
  if (coord_norm == "none") p.coord_norm = egnn::kNone;
  else if (coord_norm == "detached") p.coord_norm = egnn::kDetached;
  else if (coord_norm == "plus_one") p.coord_norm = egnn::kPlusOne;
  else if (coord_norm == "clamped") p.coord_norm = egnn::kClamped;
  else
    TORCH_CHECK_VALUE(false, op, ": coord_norm must be 'none', 'detached', 'plus_one' or 'clamped', got '",
                      std::string(coord_norm), "'");
  TORCH_CHECK_VALUE(c_clamp >= 0 && trans_clamp >= 0, op, ": c_clamp and trans_clamp must be >= 0 (0 = off), got ",
                    c_clamp, " and ", trans_clamp);
  p.node_i = node_i.contiguous();
  p.node_j = node_j.contiguous();
  p.coord = coord.contiguous();
  p.edge_attr = edge_attr.contiguous();
  p.w_radial = w_radial.contiguous();
  p.w_edge_t = w_edge.t().contiguous();
  p.w2 = w2.contiguous();
  p.w2_t = w2.t().contiguous();
  p.b2 = b2.contiguous();
  p.wc1 = wc1.contiguous();
  p.wc1_t = wc1.t().contiguous();
  p.bc1 = bc1.contiguous();
  p.wc2 = wc2.contiguous();
  p.src = src.contiguous();
  p.dst = dst.contiguous();
  return p;
}

template <typename T>
egnn::Args<T> args_of(const Prepared& p, const View& v, double c_clamp, double trans_clamp, bool tanh) {
  egnn::Args<T> a;
  a.E = p.E;
  a.H1 = p.H1, a.M = p.M, a.Hc = p.Hc, a.D = p.D;
  a.edge_of = v.edge_of;
  a.key_of = v.key_of.data();
  a.other_of = v.other_of.data();
  a.node_i = p.node_i.data_ptr<T>();
  a.node_j = p.node_j.data_ptr<T>();
  a.coord = p.coord.data_ptr<T>();
  a.edge_attr = p.edge_attr.data_ptr<T>();
  a.w_radial = p.w_radial.data_ptr<T>();
  a.w_edge_t = p.w_edge_t.data_ptr<T>();
  a.w2 = p.w2.data_ptr<T>();
  a.w2_t = p.w2_t.data_ptr<T>();
  a.b2 = p.b2.data_ptr<T>();
  a.w_att = p.has_att ? p.w_att.data_ptr<T>() : nullptr;
  a.b_att = static_cast<T>(p.b_att);
  a.wc1 = p.wc1.data_ptr<T>();
  a.wc1_t = p.wc1_t.data_ptr<T>();
  a.bc1 = p.bc1.data_ptr<T>();
  a.wc2 = p.wc2.data_ptr<T>();
  a.bc2 = static_cast<T>(p.bc2);
  a.act = p.act;
  a.coord_norm = p.coord_norm;
  a.tanh = tanh;
  a.c_clamp = static_cast<T>(c_clamp);
  a.trans_clamp = static_cast<T>(trans_clamp);
  return a;
}

// Ranges of at least 2 tiles' worth of edges, at most 64.
std::vector<int64_t> ranges_of(const View& v, int64_t E) { return node_ranges(v, E, 64, 4 * egnn::kTile); }

std::tuple<at::Tensor, at::Tensor> message_forward(
    const at::Tensor& node_i, const at::Tensor& node_j, const at::Tensor& coord, const at::Tensor& edge_attr,
    const at::Tensor& src, const at::Tensor& dst, const OptT& dst_perm, const OptT& dst_indptr,
    const OptT& /*src_perm*/, const OptT& /*src_indptr*/, const at::Tensor& w_radial, const at::Tensor& w_edge,
    const at::Tensor& w2, const at::Tensor& b2, const OptT& w_att, const OptT& b_att, const at::Tensor& wc1,
    const at::Tensor& bc1, const at::Tensor& wc2, const OptT& bc2, c10::string_view act,
    c10::string_view coord_norm, bool tanh, double c_clamp, double trans_clamp, c10::string_view backend) {
  const Prepared p = prepare(node_i, node_j, coord, edge_attr, src, dst, w_radial, w_edge, w2, b2, w_att, b_att, wc1,
                             bc1, wc2, bc2, act, coord_norm, c_clamp, trans_clamp, backend, kFwd);
  at::Tensor m_sum = at::zeros({p.n, p.M}, p.node_i.options());
  at::Tensor t_sum = at::zeros({p.n, 3}, p.node_i.options());
  if (p.E == 0) return {m_sum, t_sum};
  const View v = make_view(p.dst.data_ptr<int64_t>(), p.src.data_ptr<int64_t>(), p.E, p.n, dst_perm, dst_indptr,
                           kFwd, "dst");
  const std::vector<int64_t> bounds = ranges_of(v, p.E);
  const int64_t R = static_cast<int64_t>(bounds.size()) - 1;
  AT_DISPATCH_FLOATING_TYPES(p.node_i.scalar_type(), "equiops_egnn_message", [&] {
    const egnn::Args<scalar_t> a = args_of<scalar_t>(p, v, c_clamp, trans_clamp, tanh);
    const auto k = kernels<scalar_t>();
    scalar_t* ms = m_sum.data_ptr<scalar_t>();
    scalar_t* ts = t_sum.data_ptr<scalar_t>();
    at::parallel_for(0, R, 1, [&](int64_t lo, int64_t hi) {
      std::vector<scalar_t> work(static_cast<size_t>(egnn::workspace_size(p.H1, p.M, p.Hc)));
      for (int64_t r = lo; r < hi; ++r) k.forward(a, bounds[r], bounds[r + 1], work.data(), ms, ts);
    });
  });
  return {m_sum, t_sum};
}

using Grad14 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
                          at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grad14 message_backward(const at::Tensor& grad_m, const at::Tensor& grad_t, const at::Tensor& node_i,
                        const at::Tensor& node_j, const at::Tensor& coord, const at::Tensor& edge_attr,
                        const at::Tensor& src, const at::Tensor& dst, const OptT& dst_perm, const OptT& dst_indptr,
                        const OptT& src_perm, const OptT& src_indptr, const at::Tensor& w_radial,
                        const at::Tensor& w_edge, const at::Tensor& w2, const at::Tensor& b2, const OptT& w_att,
                        const OptT& b_att, const at::Tensor& wc1, const at::Tensor& bc1, const at::Tensor& wc2,
                        const OptT& bc2, c10::string_view act, c10::string_view coord_norm, bool tanh,
                        double c_clamp, double trans_clamp, c10::string_view backend) {
  const Prepared p = prepare(node_i, node_j, coord, edge_attr, src, dst, w_radial, w_edge, w2, b2, w_att, b_att, wc1,
                             bc1, wc2, bc2, act, coord_norm, c_clamp, trans_clamp, backend, kBwd);
  const auto st = p.node_i.scalar_type();
  expect(grad_m, "grad_m", {p.n, p.M}, st, kBwd);
  expect(grad_t, "grad_t", {p.n, 3}, st, kBwd);
  const at::Tensor gm = grad_m.contiguous(), gt = grad_t.contiguous();
  const auto opts = p.node_i.options();
  at::Tensor g_node_i = at::zeros({p.n, p.H1}, opts), g_node_j = at::zeros({p.n, p.H1}, opts);
  at::Tensor g_coord = at::zeros({p.n, 3}, opts), g_edge_attr = at::zeros({p.E, p.D}, opts);
  at::Tensor g_w_radial = at::zeros({p.H1}, opts), g_w_edge = at::zeros({p.H1, p.D}, opts);
  at::Tensor g_w2 = at::zeros({p.M, p.H1}, opts), g_b2 = at::zeros({p.M}, opts);
  at::Tensor g_w_att = p.has_att ? at::zeros({p.M}, opts) : at::empty({0}, opts);
  at::Tensor g_b_att = p.has_att ? at::zeros({1}, opts) : at::empty({0}, opts);
  at::Tensor g_wc1 = at::zeros({p.Hc, p.M}, opts), g_bc1 = at::zeros({p.Hc}, opts), g_wc2 = at::zeros({p.Hc}, opts);
  at::Tensor g_bc2 = p.has_bc2 ? at::zeros({1}, opts) : at::empty({0}, opts);
  auto result = [&] {
    return Grad14{g_node_i, g_node_j, g_coord, g_edge_attr, g_w_radial, g_w_edge, g_w2, g_b2,
                  g_w_att,  g_b_att,  g_wc1,   g_bc1,       g_wc2,      g_bc2};
  };
  if (p.E == 0) return result();
  const View v = make_view(p.dst.data_ptr<int64_t>(), p.src.data_ptr<int64_t>(), p.E, p.n, dst_perm, dst_indptr,
                           kBwd, "dst");
  const View vs = make_view(p.src.data_ptr<int64_t>(), p.dst.data_ptr<int64_t>(), p.E, p.n, src_perm, src_indptr,
                            kBwd, "src");
  const std::vector<int64_t> bounds = ranges_of(v, p.E);
  const int64_t R = static_cast<int64_t>(bounds.size()) - 1;
  const egnn::PartialLayout L(p.H1, p.M, p.Hc, p.D);
  // Per-edge rows for the sender sums: every row is written, so no zero fill.
  at::Tensor dz1 = HostPool::get().empty({p.E, p.H1}, opts), dd = at::empty({p.E, 3}, opts);
  AT_DISPATCH_FLOATING_TYPES(st, "equiops_egnn_message_backward", [&] {
    using T = scalar_t;
    const egnn::Args<T> a = args_of<T>(p, v, c_clamp, trans_clamp, tanh);
    const auto k = kernels<T>();
    egnn::Grads<T> g;
    g.grad_m = gm.data_ptr<T>();
    g.grad_t = gt.data_ptr<T>();
    g.grad_node_i = g_node_i.data_ptr<T>();
    g.grad_coord = g_coord.data_ptr<T>();
    g.dz1 = dz1.data_ptr<T>();
    g.dd = dd.data_ptr<T>();
    g.grad_edge_attr = g_edge_attr.data_ptr<T>();
    std::vector<T> part(static_cast<size_t>(R * L.size), T(0));
    at::parallel_for(0, R, 1, [&](int64_t lo, int64_t hi) {
      std::vector<T> work(static_cast<size_t>(egnn::workspace_size(p.H1, p.M, p.Hc)));
      for (int64_t r = lo; r < hi; ++r) k.backward(a, g, bounds[r], bounds[r + 1], work.data(), part.data() + r * L.size);
    });
    // Weight gradients: the ranges' partials added in range order.
    std::vector<T> total(static_cast<size_t>(L.size), T(0));
    for (int64_t r = 0; r < R; ++r)
      for (int64_t q = 0; q < L.size; ++q) total[q] += part[r * L.size + q];
    auto copy_out = [&](at::Tensor& out, int64_t off) {
      if (out.numel() > 0) std::copy(total.begin() + off, total.begin() + off + out.numel(), out.data_ptr<T>());
    };
    copy_out(g_w2, L.w2);
    copy_out(g_b2, L.b2);
    copy_out(g_wc1, L.wc1);
    copy_out(g_bc1, L.bc1);
    copy_out(g_wc2, L.wc2);
    copy_out(g_w_att, L.w_att);
    copy_out(g_b_att, L.b_att);
    copy_out(g_bc2, L.bc2);
    copy_out(g_w_radial, L.w_radial);
    T* gwe = g_w_edge.data_ptr<T>();
    for (int h = 0; h < p.H1; ++h)
      for (int c = 0; c < p.D; ++c) gwe[h * p.D + c] = total[L.w_edge_t + int64_t(c) * p.H1 + h];
    // Sender sums over the sender view, in parallel over senders (each row owned).
    const T* z = dz1.data_ptr<T>();
    const T* ddp = dd.data_ptr<T>();
    T* gj = g_node_j.data_ptr<T>();
    T* gc = g_coord.data_ptr<T>();
    const int64_t H1 = p.H1;
    at::parallel_for(0, p.n, 64, [&](int64_t lo, int64_t hi) {
      for (int64_t j = lo; j < hi; ++j) {
        T* row = gj + j * H1;
        for (int64_t r = vs.indptr[j]; r < vs.indptr[j + 1]; ++r) {
          const int64_t e = vs.edge_of != nullptr ? vs.edge_of[r] : r;
          const T* zr = z + e * H1;
          for (int64_t h = 0; h < H1; ++h) row[h] += zr[h];
          for (int c = 0; c < 3; ++c) gc[j * 3 + c] -= ddp[e * 3 + c];
        }
      }
    });
  });
  return result();
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("egnn_message", &message_forward);
  m.impl("egnn_message_backward", &message_backward);
}

}  // namespace cpu
}  // namespace equiops
