// Torch-side glue shared by the CPU tensor-product operators (tensor_product_cpu.cpp)
// and the fused convolution (tp_conv_cpu.cpp): the kernel table for this CPU, the
// parsed problem, input views, and the parallel runner over fixed row ranges.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu_isa.h"
#include "tp_cpu.h"

namespace equiops {
namespace cpu {
namespace tpglue {

template <typename T>
tp::KernelSet<T> kernels() {
  constexpr bool f32 = sizeof(T) == 4;
#ifdef EQUIOPS_TP_HAVE_AVX2
  if (cpu_has_avx2()) {
    if constexpr (f32) return tp::avx2::kernels_f32();
    else return tp::avx2::kernels_f64();
  }
#endif
  if constexpr (f32) return tp::generic::kernels_f32();
  else return tp::generic::kernels_f64();
}

inline std::shared_ptr<const tp::Problem> problem_of(c10::string_view text, const char* op) {
  try {
    return tp::get_problem(std::string(text));
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, op, ": malformed problem string (", e.what(), ")");
  }
}

template <typename T>
tp::In<T> in_of(const at::Tensor& t, const int64_t* idx = nullptr) {
  tp::In<T> r;
  if (t.defined()) {
    r.p = t.data_ptr<T>();
    r.rows = t.size(0);
    r.ld = t.size(1);
    r.idx = idx;
  }
  return r;
}

// Runs kernel over the row ranges [bounds[r], bounds[r + 1]) in parallel (one range per
// task). The gradients of broadcast inputs (partial-sum widths d1, d2, dw; 0 = none)
// are summed per range and the ranges added in order into r1, r2, rw: with bounds that
// depend only on the problem's sizes, results do not depend on the thread count.
template <typename T, typename K>
void run_ranges(const tp::Call<T>& c, K kernel, const std::vector<int64_t>& bounds, int64_t d1, int64_t d2,
                int64_t dw, at::Tensor* r1, at::Tensor* r2, at::Tensor* rw) {
  const int64_t R = static_cast<int64_t>(bounds.size()) - 1;
  if (R <= 0) return;
  const int64_t width = d1 + d2 + dw;
  std::vector<T> part(static_cast<size_t>(R * width), T(0));
  at::parallel_for(0, R, 1, [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r) {
      if (bounds[r] >= bounds[r + 1]) continue;
      T* base = part.data() + r * width;
      tp::Partials<T> pr{d1 ? base : nullptr, d2 ? base + d1 : nullptr, dw ? base + d1 + d2 : nullptr};
      kernel(c, bounds[r], bounds[r + 1], pr);
    }
  });
  auto reduce_into = [&](at::Tensor* dst, int64_t off, int64_t d) {
    if (d == 0) return;
    T* o = dst->data_ptr<T>();
    for (int64_t i = 0; i < d; ++i) {
      T s = 0;
      for (int64_t r = 0; r < R; ++r) s += part[r * width + off + i];
      o[i] = s;
    }
  };
  reduce_into(r1, 0, d1);
  reduce_into(r2, d1, d2);
  reduce_into(rw, d1 + d2, dw);
}

}  // namespace tpglue
}  // namespace cpu
}  // namespace equiops
