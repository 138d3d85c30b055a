// CPU implementation of the fused PointConv operator of LieConv (schemas in ops.cpp;
// semantics in python/equiops/reference/pointconv.py; the math and the tile pipeline in
// pointconv_kernels.h).
//
// Forward: the B*m queries are split into tiles of kTile, processed in parallel; each
// tile gathers its neighbours' rows, forms its partials (kTile x C*ci) in the task's
// workspace and multiplies them with weight^T into its output rows. No (B, m, K, ci)
// gathered values and no (B, m, C*ci) partials are allocated; every output row is
// computed by one task in a fixed order, so results are bitwise reproducible and
// independent of the thread count.
//
// Backward: fixed query ranges (a function of the shapes only) recompute their tiles'
// partials and apply the chain rule. grad_penult rows are owned by their query. The
// weight and bias gradients go to per-range partial sums, added in range order. The
// values gradient: a counting sort of the valid neighbours by source point (b, idx)
// gives each (q, k) a slot; the tile pass writes the neighbour's contribution row
// there, and the rows are summed per source point in slot order, in parallel over
// points. That (valid neighbours x ci) buffer and the (B*m*K) slot index are the only
// (m*K)-sized allocations, and they live only during the backward. No atomics anywhere.
//
// Memory, measured as the peak resident-set growth of one call (float32, 2 threads;
// inputs excluded): B=1, m=n=20000, K=16, C=16, ci=8, co=32 (90% of neighbours valid):
// forward ~3 MB (the reference: 59 MB), backward op 32 MB of which 20 MB are its
// outputs; B=4, m=n=1000, K=32, C=16, ci=96, co=96: forward ~3 MB (reference 148 MB),
// backward op 64 MB: 44 MB of value rows, 9 MB of weight-gradient partials, 10 MB
// outputs. (Forward + backward through autograd: 67 / 96 MB, the reference 147 / 173.)
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "cpu_isa.h"
#include "equiops/checks.h"
#include "host_pool.h"
#include "pointconv_cpu.h"

namespace equiops {
namespace cpu {
namespace {

constexpr const char* kFwd = "equiops.pointconv";
constexpr const char* kBwd = "equiops.pointconv_backward";

template <typename T>
pointconv::KernelSet<T> kernels() {
  constexpr bool f32 = sizeof(T) == 4;
#ifdef EQUIOPS_POINTCONV_HAVE_AVX2
  if (cpu_has_avx2()) {
    if constexpr (f32) return pointconv::avx2::kernels_f32();
    else return pointconv::avx2::kernels_f64();
  }
#endif
  if constexpr (f32) return pointconv::generic::kernels_f32();
  else return pointconv::generic::kernels_f64();
}

using OptT = c10::optional<at::Tensor>;

struct Prepared {
  int64_t B = 0, m = 0, n = 0;
  int K = 0, C = 0, ci = 0, co = 0;
  at::Tensor penult, values, idx, mask, weight, weight_t, bias;
  bool has_bias = false;
};

void expect(const at::Tensor& t, const char* name, at::IntArrayRef shape, at::ScalarType st, const char* op) {
  TORCH_CHECK_TYPE(t.scalar_type() == st, op, ": ", name, " must have dtype ", st, ", got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be on the CPU like penult, got ", t.device());
  TORCH_CHECK_VALUE(t.sizes() == shape, op, ": ", name, " must have shape ", shape, ", got ", t.sizes());
}

int narrow(int64_t v, const char* op, const char* what) {
  TORCH_CHECK_VALUE(v >= 0 && v < (int64_t(1) << 30), op, ": ", what, " = ", v, " is too large for this kernel");
  return static_cast<int>(v);
}

Prepared prepare(const at::Tensor& penult, const at::Tensor& values, const at::Tensor& nbhd_idx,
                 const at::Tensor& nbhd_mask, const at::Tensor& weight, const OptT& bias, c10::string_view backend,
                 const char* op) {
  check_cpu_backend(backend, op);
  Prepared p;
  const auto st = penult.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, op, ": penult must be float32 or float64, got ", st);
  TORCH_CHECK_VALUE(penult.device().is_cpu(), op, ": penult must be a CPU tensor here, got ", penult.device());
  TORCH_CHECK_VALUE(penult.dim() == 4, op, ": penult must be 4-D (B, m, K, C), got shape ", penult.sizes());
  TORCH_CHECK_VALUE(values.dim() == 3, op, ": values must be 3-D (B, n, ci), got shape ", values.sizes());
  TORCH_CHECK_VALUE(weight.dim() == 2, op, ": weight must be 2-D (co, C * ci), got shape ", weight.sizes());
  p.B = penult.size(0);
  p.m = penult.size(1);
  p.K = narrow(penult.size(2), op, "K");
  p.C = narrow(penult.size(3), op, "C");
  p.n = values.size(1);
  p.ci = narrow(values.size(2), op, "ci");
  p.co = narrow(weight.size(0), op, "co");
  narrow(int64_t(p.C) * p.ci, op, "C * ci");
  expect(values, "values", {p.B, p.n, p.ci}, st, op);
  TORCH_CHECK_TYPE(nbhd_idx.scalar_type() == at::kLong, op, ": nbhd_idx must be int64, got ", nbhd_idx.scalar_type());
  expect(nbhd_idx, "nbhd_idx", {p.B, p.m, p.K}, at::kLong, op);
  TORCH_CHECK_TYPE(nbhd_mask.scalar_type() == at::kBool, op, ": nbhd_mask must be bool, got ",
                   nbhd_mask.scalar_type());
  expect(nbhd_mask, "nbhd_mask", {p.B, p.m, p.K}, at::kBool, op);
  expect(weight, "weight", {p.co, int64_t(p.C) * p.ci}, st, op);
  p.has_bias = bias.has_value() && bias->defined();
  if (p.has_bias) {
    expect(*bias, "bias", {p.co}, st, op);
    p.bias = bias->contiguous();
  }
  p.penult = penult.contiguous();
  p.values = values.contiguous();
  p.idx = nbhd_idx.contiguous();
  p.mask = nbhd_mask.contiguous();
  p.weight = weight.contiguous();
  p.weight_t = weight.t().contiguous();
  // Every index is read by the reference's gather, masked or not: all must be in range.
  const int64_t* ix = p.idx.data_ptr<int64_t>();
  const int64_t total = p.idx.numel(), n = p.n;
  at::parallel_for(0, total, 1 << 16, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e)
      TORCH_CHECK_INDEX(ix[e] >= 0 && ix[e] < n, op, ": nbhd_idx[", e / (p.m * p.K), ", ", (e / p.K) % p.m, ", ",
                        e % p.K, "] = ", ix[e], " is not a point id in [0, ", n, ")");
  });
  return p;
}

template <typename T>
pointconv::Args<T> args_of(const Prepared& p, bool mean) {
  pointconv::Args<T> a;
  a.m = p.m, a.n = p.n;
  a.K = p.K, a.C = p.C, a.ci = p.ci, a.co = p.co;
  a.penult = p.penult.data_ptr<T>();
  a.values = p.values.data_ptr<T>();
  a.idx = p.idx.data_ptr<int64_t>();
  a.mask = p.mask.data_ptr<bool>();
  a.weight = p.weight.data_ptr<T>();
  a.weight_t = p.weight_t.data_ptr<T>();
  a.bias = p.has_bias ? p.bias.data_ptr<T>() : nullptr;
  a.mean = mean;
  return a;
}

at::Tensor pointconv_forward(const at::Tensor& penult, const at::Tensor& values, const at::Tensor& nbhd_idx,
                             const at::Tensor& nbhd_mask, const at::Tensor& weight, const OptT& bias, bool mean,
                             c10::string_view backend) {
  const Prepared p = prepare(penult, values, nbhd_idx, nbhd_mask, weight, bias, backend, kFwd);
  at::Tensor out = at::empty({p.B, p.m, p.co}, p.penult.options());
  const int64_t Q = p.B * p.m;
  if (Q == 0 || p.co == 0) return out;
  const int64_t tiles = (Q + pointconv::kTile - 1) / pointconv::kTile;
  AT_DISPATCH_FLOATING_TYPES(p.penult.scalar_type(), "equiops_pointconv", [&] {
    const pointconv::Args<scalar_t> a = args_of<scalar_t>(p, mean);
    const auto k = kernels<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    // Each tile's rows depend on that tile only: any split over threads gives the same bits.
    at::parallel_for(0, tiles, 1, [&](int64_t lo, int64_t hi) {
      std::unique_ptr<scalar_t[]> work(new scalar_t[pointconv::workspace_size(p.K, p.C, p.ci, p.co)]);
      std::unique_ptr<int[]> iwork(new int[pointconv::iwork_size(p.K)]);
      k.forward(a, lo * pointconv::kTile, std::min(Q, hi * pointconv::kTile), work.get(), iwork.get(), o);
    });
  });
  return out;
}

// Query ranges of the backward, a function of the shapes only (never of the thread
// count): up to 64 ranges of whole tiles, fewer when their weight-gradient partials
// would exceed 8 MB together (at least 16 then, or one per tile).
std::vector<int64_t> backward_ranges(int64_t Q, int64_t partial_bytes) {
  const int64_t tiles = (Q + pointconv::kTile - 1) / pointconv::kTile;
  int64_t R = std::min<int64_t>(tiles, 64);
  const int64_t budget = int64_t(8) << 20;
  if (R * partial_bytes > budget) R = std::min(tiles, std::max<int64_t>(16, budget / std::max<int64_t>(partial_bytes, 1)));
  R = std::max<int64_t>(R, 1);
  std::vector<int64_t> b(static_cast<size_t>(R + 1));
  for (int64_t r = 0; r <= R; ++r) b[r] = std::min(Q, (tiles * r / R) * pointconv::kTile);
  return b;
}

using Grad4 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Grad4 pointconv_backward(const at::Tensor& grad_out, const at::Tensor& penult, const at::Tensor& values,
                         const at::Tensor& nbhd_idx, const at::Tensor& nbhd_mask, const at::Tensor& weight,
                         const OptT& bias, bool mean, c10::string_view backend) {
  const Prepared p = prepare(penult, values, nbhd_idx, nbhd_mask, weight, bias, backend, kBwd);
  const auto st = p.penult.scalar_type();
  expect(grad_out, "grad_out", {p.B, p.m, p.co}, st, kBwd);
  const at::Tensor go = grad_out.contiguous();
  const auto opts = p.penult.options();
  const int64_t Q = p.B * p.m, K = p.K, CI = int64_t(p.C) * p.ci;
  at::Tensor g_penult = at::empty({p.B, p.m, p.K, p.C}, opts);
  at::Tensor g_values = at::zeros({p.B, p.n, p.ci}, opts);
  at::Tensor g_weight = at::zeros({p.co, CI}, opts);
  at::Tensor g_bias = p.has_bias ? at::zeros({p.co}, opts) : at::empty({0}, opts);
  if (Q == 0) return {g_penult, g_values, g_weight, g_bias};
  // Counting sort of the valid neighbours by source point s = b * n + idx: slot
  // pos[g, k] (stable: (g, k) order within a point), indptr over the B*n points.
  const int64_t S = p.B * p.n, QK = Q * K;
  at::Tensor pos_t = at::empty({QK}, p.idx.options());
  std::vector<int64_t> indptr(static_cast<size_t>(S + 1), 0);
  {
    const int64_t* ix = p.idx.data_ptr<int64_t>();
    const bool* mk = p.mask.data_ptr<bool>();
    int64_t* pos = pos_t.data_ptr<int64_t>();
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t base = (q / p.m) * p.n;
      for (int64_t e = q * K; e < (q + 1) * K; ++e)
        if (mk[e]) ++indptr[base + ix[e] + 1];
    }
    for (int64_t s = 0; s < S; ++s) indptr[s + 1] += indptr[s];
    std::vector<int64_t> next(indptr.begin(), indptr.end() - 1);
    for (int64_t q = 0; q < Q; ++q) {
      const int64_t base = (q / p.m) * p.n;
      for (int64_t e = q * K; e < (q + 1) * K; ++e) pos[e] = mk[e] ? next[base + ix[e]]++ : -1;
    }
  }
  const int64_t V = indptr[S];
  // One row per valid neighbour, every one written by the tile pass: no zero fill.
  at::Tensor rows = HostPool::get().empty({V, p.ci}, opts);
  const int64_t psize = pointconv::partial_size(p.C, p.ci, p.co);
  const std::vector<int64_t> bounds = backward_ranges(Q, psize * int64_t(p.penult.element_size()));
  const int64_t R = static_cast<int64_t>(bounds.size()) - 1;
  AT_DISPATCH_FLOATING_TYPES(st, "equiops_pointconv_backward", [&] {
    using T = scalar_t;
    const pointconv::Args<T> a = args_of<T>(p, mean);
    const auto k = kernels<T>();
    pointconv::Grads<T> g;
    g.grad_out = go.data_ptr<T>();
    g.grad_penult = g_penult.data_ptr<T>();
    g.rows = rows.data_ptr<T>();
    g.pos = pos_t.data_ptr<int64_t>();
    std::vector<T> part(static_cast<size_t>(R * psize), T(0));
    at::parallel_for(0, R, 1, [&](int64_t lo, int64_t hi) {
      std::unique_ptr<T[]> work(new T[pointconv::workspace_size(p.K, p.C, p.ci, p.co)]);
      std::unique_ptr<int[]> iwork(new int[pointconv::iwork_size(p.K)]);
      for (int64_t r = lo; r < hi; ++r)
        k.backward(a, g, bounds[r], bounds[r + 1], work.get(), iwork.get(), part.data() + r * psize);
    });
    // Weight and bias gradients: the ranges' partials added in range order (in
    // parallel over elements; each element's sum runs over r = 0..R-1).
    T* gw = g_weight.data_ptr<T>();
    T* gb = p.has_bias ? g_bias.data_ptr<T>() : nullptr;
    const int64_t nw = int64_t(p.co) * CI;
    at::parallel_for(0, psize, 4096, [&](int64_t lo, int64_t hi) {
      for (int64_t q = lo; q < hi; ++q) {
        T s = 0;
        for (int64_t r = 0; r < R; ++r) s += part[r * psize + q];
        if (q < nw) gw[q] = s;
        else if (gb != nullptr) gb[q - nw] = s;
      }
    });
    // Values gradient: each source point's rows, contiguous in slot order, summed.
    const T* rp = rows.data_ptr<T>();
    T* gv = g_values.data_ptr<T>();
    const int64_t ci = p.ci;
    at::parallel_for(0, S, 256, [&](int64_t lo, int64_t hi) {
      for (int64_t s = lo; s < hi; ++s) {
        T* out = gv + s * ci;
        for (int64_t r = indptr[s]; r < indptr[s + 1]; ++r) {
          const T* x = rp + r * ci;
          for (int64_t i = 0; i < ci; ++i) out[i] += x[i];
        }
      }
    });
  });
  return {g_penult, g_values, g_weight, g_bias};
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("pointconv", &pointconv_forward);
  m.impl("pointconv_backward", &pointconv_backward);
}

}  // namespace cpu
}  // namespace equiops
