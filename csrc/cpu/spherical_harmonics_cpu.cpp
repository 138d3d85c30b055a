// CPU implementations of the spherical-harmonics operators (schemas in ops.cpp):
// argument checks, the coupling table's unpacking, OpenMP over row blocks, and the
// choice of AVX2 or baseline kernels (sh_kernels.h).
//
// Semantics: python/equiops/reference/spherical_harmonics.py. Every output row is
// computed by one thread from its own input row only, so results are deterministic and
// a NaN row affects that row alone.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "cpu_isa.h"
#include "equiops/checks.h"
#include "sh_tables.h"

namespace equiops {
namespace cpu {
namespace {

constexpr const char* kOp = "equiops.spherical_harmonics";

// The table and output plan of one call, owning what sh::Tables points into. Moving
// keeps the vectors' buffers (and so tb's pointers) valid; copying would not.
struct Plan {
  std::vector<int> istart, ej, ek, col_src;
  std::vector<float> coef_f, lcoef_f, col_scale_f;
  std::vector<double> coef_d, lcoef_d, col_scale_d;
  sh::Tables tb{};
  Plan() = default;
  Plan(Plan&&) = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
};

double degree_scale(int l, const std::string& normalization) {
  if (normalization == "component") return 1.0;
  if (normalization == "integral") return 1.0 / std::sqrt(4.0 * M_PI);
  if (normalization == "norm") return 1.0 / std::sqrt(2.0 * l + 1.0);
  TORCH_CHECK_VALUE(false, kOp, ": normalization must be 'integral', 'component' or 'norm', got '",
                    normalization, "'");
  return 0.0;
}

int degree_of(int64_t index) {
  int l = (int)std::sqrt((double)index);
  while ((int64_t)l * l > index) --l;
  while ((int64_t)(l + 1) * (l + 1) <= index) ++l;
  return l;
}

// coupling (nnz, 4) float64 rows (i, j, k, c): see python/equiops/ops/spherical_harmonics.py.
Plan make_plan(const at::Tensor& coupling, at::IntArrayRef ls, const std::string& normalization) {
  TORCH_CHECK_TYPE(coupling.scalar_type() == at::kDouble, kOp, ": coupling must be float64, got ",
                   coupling.scalar_type());
  TORCH_CHECK_VALUE(coupling.device().is_cpu(), kOp, ": coupling must be on the CPU, got ",
                    coupling.device());
  TORCH_CHECK_VALUE(coupling.dim() == 2 && coupling.size(1) == 4, kOp,
                    ": coupling must have shape (nnz, 4), got ", coupling.sizes());
  TORCH_CHECK_VALUE(!ls.empty(), kOp, ": ls must name at least one degree");
  Plan P;
  const at::Tensor c = coupling.contiguous();
  const double* p = c.data_ptr<double>();
  const int64_t nnz = c.size(0);
  int table_lmax = 0;
  std::vector<int> ei;
  for (int64_t e = 0; e < nnz; ++e) {
    const double fi = p[4 * e], fj = p[4 * e + 1], fk = p[4 * e + 2];
    TORCH_CHECK_VALUE(fi >= 1 && fi < 1e6 && fj >= 0 && fk >= 0 && fk <= 2 && fi == std::floor(fi) &&
                          fj == std::floor(fj) && fk == std::floor(fk),
                      kOp, ": coupling row ", e, " is not a valid (i, j, k, c) entry");
    const int i = (int)fi, j = (int)fj, k = (int)fk, l = degree_of(i);
    TORCH_CHECK_VALUE((ei.empty() || i >= ei.back()) && j >= (l - 1) * (l - 1) && j < l * l, kOp,
                      ": coupling row ", e, " (i = ", i, ", j = ", j,
                      ") is out of order or couples the wrong degrees");
    table_lmax = l;
    ei.push_back(i);
    P.ej.push_back(j);
    P.ek.push_back(k);
    P.coef_d.push_back(p[4 * e + 3]);
    P.lcoef_d.push_back(l * p[4 * e + 3]);
  }
  // istart[i] = first entry of component i; every component of degree >= 1 needs one.
  const int n_comp = (table_lmax + 1) * (table_lmax + 1);
  P.istart.assign(n_comp + 1, 0);
  for (int i : ei) ++P.istart[i + 1];
  for (int i = 1; i < n_comp; ++i)
    TORCH_CHECK_VALUE(P.istart[i + 1] > 0, kOp, ": coupling has no entry for component ", i);
  for (int i = 0; i < n_comp; ++i) P.istart[i + 1] += P.istart[i];
  P.coef_f.assign(P.coef_d.begin(), P.coef_d.end());
  P.lcoef_f.assign(P.lcoef_d.begin(), P.lcoef_d.end());

  int lmax_out = 0;
  for (int64_t q = 0; q < (int64_t)ls.size(); ++q) {
    const int64_t l = ls[q];
    TORCH_CHECK_VALUE(l >= 0 && l <= table_lmax, kOp, ": ls[", q, "] = ", l,
                      " is outside the coupling table's degrees 0..", table_lmax);
    const double scale = degree_scale((int)l, normalization);
    for (int m = 0; m < 2 * l + 1; ++m) {
      P.col_src.push_back((int)(l * l + m));
      P.col_scale_d.push_back(scale);
    }
    lmax_out = std::max(lmax_out, (int)l);
  }
  P.col_scale_f.assign(P.col_scale_d.begin(), P.col_scale_d.end());
  sh::Tables& tb = P.tb;
  tb.istart = P.istart.data();
  tb.ej = P.ej.data();
  tb.ek = P.ek.data();
  tb.coef_f = P.coef_f.data();
  tb.coef_d = P.coef_d.data();
  tb.lcoef_f = P.lcoef_f.data();
  tb.lcoef_d = P.lcoef_d.data();
  tb.col_src = P.col_src.data();
  tb.col_scale_f = P.col_scale_f.data();
  tb.col_scale_d = P.col_scale_d.data();
  tb.K = (int)P.col_src.size();
  tb.lmax_out = lmax_out;
  tb.k_full = (lmax_out + 1) * (lmax_out + 1);
  return P;
}

void check_points(const at::Tensor& x, const char* name) {
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble, kOp, ": ", name,
                   " must be float32 or float64, got ", st);
  TORCH_CHECK_VALUE(x.dim() == 2 && x.size(1) == 3, kOp, ": ", name,
                    " must have shape (N, 3), got ", x.sizes());
}

void check_rows(const at::Tensor& t, const at::Tensor& x, int64_t cols, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), kOp, ": ", name, " must have dtype ",
                   x.scalar_type(), " like x, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == 2 && t.size(0) == x.size(0) && t.size(1) == cols, kOp, ": ", name,
                    " must have shape (", x.size(0), ", ", cols, "), got ", t.sizes());
}

// The AVX2 kernels where the CPU has AVX2 and FMA, else the baseline build's.
template <typename T>
sh::KernelSet<T> kernels() {
  constexpr bool f32 = sizeof(T) == 4;
#ifdef EQUIOPS_SH_HAVE_AVX2
  if (cpu_has_avx2()) {
    if constexpr (f32) return sh::avx2::kernels_f32();
    else return sh::avx2::kernels_f64();
  }
#endif
  if constexpr (f32) return sh::generic::kernels_f32();
  else return sh::generic::kernels_f64();
}

// Runs body(r0, r1, scratch) over row ranges in parallel (whole 32-byte chunks of rows
// except at the end), one 32-byte-aligned scratch buffer per range.
template <typename T, typename F>
void for_rows(const sh::Tables& tb, int64_t N, int64_t work_per_row, const F& body) {
  constexpr int64_t W = 32 / sizeof(T);
  const int64_t chunks = (N + W - 1) / W;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, work_per_row * W));
  at::parallel_for(0, chunks, grain, [&](int64_t c0, int64_t c1) {
    std::vector<double> buf((size_t)(sh::scratch_vectors(tb) + 1) * 4);
    void* ws = (void*)(((uintptr_t)buf.data() + 31) & ~(uintptr_t)31);
    body(c0 * W, std::min(N, c1 * W), ws);
  });
}

// The checks every entry point starts with, and its plan.
Plan prepare(const at::Tensor& x, const at::Tensor& coupling, at::IntArrayRef ls,
             c10::string_view normalization, c10::string_view backend) {
  check_cpu_backend(backend, kOp);
  check_points(x, "x");
  return make_plan(coupling, ls, std::string(normalization));
}

at::Tensor sh_forward(const at::Tensor& x, const at::Tensor& coupling, at::IntArrayRef ls,
                      bool normalize, c10::string_view normalization, c10::string_view backend) {
  const Plan P = prepare(x, coupling, ls, normalization, backend);
  const sh::Tables& tb = P.tb;
  const at::Tensor xc = x.contiguous();
  const int64_t N = x.size(0);
  at::Tensor out = at::empty({N, tb.K}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "equiops_sh_forward", [&] {
    const auto ks = kernels<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    for_rows<scalar_t>(tb, N, tb.k_full * 5, [&](int64_t r0, int64_t r1, void* ws) {
      ks.forward(tb, normalize, xp, op, r0, r1, ws);
    });
  });
  return out;
}

at::Tensor sh_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& coupling,
                       at::IntArrayRef ls, bool normalize, c10::string_view normalization,
                       c10::string_view backend) {
  const Plan P = prepare(x, coupling, ls, normalization, backend);
  const sh::Tables& tb = P.tb;
  check_rows(grad, x, tb.K, "grad");
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous();
  const int64_t N = x.size(0);
  at::Tensor gx = at::empty({N, 3}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "equiops_sh_backward", [&] {
    const auto ks = kernels<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    scalar_t* op = gx.data_ptr<scalar_t>();
    for_rows<scalar_t>(tb, N, tb.k_full * 10, [&](int64_t r0, int64_t r1, void* ws) {
      ks.backward(tb, normalize, gp, xp, op, r0, r1, ws);
    });
  });
  return gx;
}

std::tuple<at::Tensor, at::Tensor> sh_double_backward(
    const at::Tensor& grad_grad_x, const at::Tensor& grad, const at::Tensor& x,
    const at::Tensor& coupling, at::IntArrayRef ls, bool normalize,
    c10::string_view normalization, c10::string_view backend) {
  const Plan P = prepare(x, coupling, ls, normalization, backend);
  const sh::Tables& tb = P.tb;
  check_rows(grad, x, tb.K, "grad");
  check_rows(grad_grad_x, x, 3, "grad_grad_x");
  const at::Tensor xc = x.contiguous(), gc = grad.contiguous(), vc = grad_grad_x.contiguous();
  const int64_t N = x.size(0);
  at::Tensor gg = at::empty({N, tb.K}, x.options());
  at::Tensor gx = at::empty({N, 3}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "equiops_sh_double_backward", [&] {
    const auto ks = kernels<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    const scalar_t* gp = gc.data_ptr<scalar_t>();
    const scalar_t* vp = vc.data_ptr<scalar_t>();
    scalar_t* ggp = gg.data_ptr<scalar_t>();
    scalar_t* gxp = gx.data_ptr<scalar_t>();
    for_rows<scalar_t>(tb, N, tb.k_full * 20, [&](int64_t r0, int64_t r1, void* ws) {
      ks.double_backward(tb, normalize, vp, gp, xp, ggp, gxp, r0, r1, ws);
    });
  });
  return {gg, gx};
}

std::tuple<at::Tensor, at::Tensor> sh_jacobian(const at::Tensor& x, const at::Tensor& coupling,
                                               at::IntArrayRef ls, bool normalize,
                                               c10::string_view normalization,
                                               c10::string_view backend) {
  const Plan P = prepare(x, coupling, ls, normalization, backend);
  const sh::Tables& tb = P.tb;
  const at::Tensor xc = x.contiguous();
  const int64_t N = x.size(0);
  at::Tensor out = at::empty({N, tb.K}, x.options());
  at::Tensor jac = at::empty({N, 3, tb.K}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "equiops_sh_jacobian", [&] {
    const auto ks = kernels<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    scalar_t* jp = jac.data_ptr<scalar_t>();
    for_rows<scalar_t>(tb, N, tb.k_full * 20, [&](int64_t r0, int64_t r1, void* ws) {
      ks.jacobian(tb, normalize, xp, op, jp, r0, r1, ws);
    });
  });
  return {out, jac};
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("spherical_harmonics", &sh_forward);
  m.impl("spherical_harmonics_backward", &sh_backward);
  m.impl("spherical_harmonics_double_backward", &sh_double_backward);
  m.impl("spherical_harmonics_jacobian", &sh_jacobian);
}

}  // namespace cpu
}  // namespace equiops
