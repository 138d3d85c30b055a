// Shared, torch-free declarations of the CPU spherical-harmonics kernels: the coupling
// table in the form the kernels read and one function table per instruction set (see
// sh_kernels.h for the math and the layout).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EQUIOPS_SH_HAVE_AVX2 1
#endif

namespace equiops {
namespace sh {

// torch.nn.functional.normalize's default, which e3nn uses.
constexpr double kNormalizeEps = 1e-12;

struct Tables {
  // Coupling entries sorted by output component: Y[i] += coef[e] * Y[ej[e]] * u[ek[e]]
  // for e in [istart[i], istart[i+1]); lcoef[e] = l * coef[e] (l the degree of i).
  const int* istart;
  const int* ej;
  const int* ek;
  const float* coef_f;
  const double* coef_d;
  const float* lcoef_f;
  const double* lcoef_d;
  // Output column c is component col_src[c] times col_scale[c]; K columns.
  const int* col_src;
  const float* col_scale_f;
  const double* col_scale_d;
  int K;
  int lmax_out;  // largest degree in the output
  int k_full;    // (lmax_out + 1)^2

  template <typename T>
  const T* coef() const;
  template <typename T>
  const T* lcoef() const;
  template <typename T>
  const T* col_scale() const;
};
template <>
inline const float* Tables::coef<float>() const { return coef_f; }
template <>
inline const double* Tables::coef<double>() const { return coef_d; }
template <>
inline const float* Tables::lcoef<float>() const { return lcoef_f; }
template <>
inline const double* Tables::lcoef<double>() const { return lcoef_d; }
template <>
inline const float* Tables::col_scale<float>() const { return col_scale_f; }
template <>
inline const double* Tables::col_scale<double>() const { return col_scale_d; }

// 32-byte vectors of scratch one thread needs (y, dy, gs: k_full each).
inline int64_t scratch_vectors(const Tables& tb) { return 3 * (int64_t)tb.k_full; }

template <typename T>
struct KernelSet {
  void (*forward)(const Tables&, bool, const T*, T*, int64_t, int64_t, void*);
  void (*backward)(const Tables&, bool, const T*, const T*, T*, int64_t, int64_t, void*);
  void (*double_backward)(const Tables&, bool, const T*, const T*, const T*, T*, T*, int64_t,
                          int64_t, void*);
  void (*jacobian)(const Tables&, bool, const T*, T*, T*, int64_t, int64_t, void*);
};

namespace generic {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace generic

#ifdef EQUIOPS_SH_HAVE_AVX2
namespace avx2 {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace avx2
#endif

}  // namespace sh
}  // namespace equiops
