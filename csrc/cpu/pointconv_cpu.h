// Shared, torch-free declarations of the CPU PointConv kernels (pointconv_kernels.h has
// the math; pointconv_cpu.cpp the torch glue): what one call passes and one function
// table per instruction set.
#pragma once

// Everything the kernels include comes first, before any per-ISA target pragma.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EQUIOPS_POINTCONV_HAVE_AVX2 1
#endif

namespace equiops {
namespace pointconv {

// Queries per tile: a tile's partials (kTile x C*ci) and its other rows live in the
// task's workspace, and the tile's output rows come from one micro-GEMM with weight^T.
constexpr int kTile = 32;

// One call. Queries are flattened: g = b * m + q, g in [0, B*m). Every tensor is
// contiguous, row-major.
template <typename T>
struct Args {
  int64_t m = 0, n = 0;
  int K = 0, C = 0, ci = 0, co = 0;
  const T* penult = nullptr;     // (B*m, K, C)
  const T* values = nullptr;     // (B*n, ci)
  const int64_t* idx = nullptr;  // (B*m, K), in [0, n)
  const bool* mask = nullptr;    // (B*m, K)
  const T* weight = nullptr;     // (co, C*ci): column c * ci + i
  const T* weight_t = nullptr;   // (C*ci, co): its transpose
  const T* bias = nullptr;       // (co) or null
  bool mean = false;
};

// Backward outputs of the tile pass. grad_penult is written whole (zeros at masked
// neighbours); the values gradient of each valid neighbour (q, k) is one row of `rows`
// at row pos[g * K + k] (-1 for masked neighbours), summed per source point by the
// caller.
template <typename T>
struct Grads {
  const T* grad_out = nullptr;   // (B*m, co)
  T* grad_penult = nullptr;      // (B*m, K, C)
  T* rows = nullptr;             // (valid neighbours, ci)
  const int64_t* pos = nullptr;  // (B*m, K)
};

// Workspace elements of one task (forward and backward; layout in pointconv_kernels.h's
// Work): two tiles of partials (P, dP), the tile's output-gradient rows and counts, the
// tile's gathered neighbour rows, one query's temporaries. Plus iwork_size ints.
inline int64_t workspace_size(int K, int C, int ci, int co) {
  const int64_t CI = int64_t(C) * ci;
  return 2 * int64_t(kTile) * CI + int64_t(kTile) * co + kTile + int64_t(kTile) * K * (C + ci) + CI +
         int64_t(K) * (C + ci);
}
inline int64_t iwork_size(int K) { return int64_t(kTile) * (K + 1); }

// Per-range weight-gradient partial: grad weight (co x C*ci), then grad bias (co).
inline int64_t partial_size(int C, int ci, int co) { return int64_t(co) * C * ci + co; }

template <typename T>
struct KernelSet {
  // Queries [g0, g1): writes their output rows of out (B*m, co).
  void (*forward)(const Args<T>&, int64_t g0, int64_t g1, T* work, int* iwork, T* out);
  // Queries [g0, g1): grad_penult rows, value-gradient rows, and sums into partial.
  void (*backward)(const Args<T>&, const Grads<T>&, int64_t g0, int64_t g1, T* work, int* iwork, T* partial);
};

namespace generic {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace generic

#ifdef EQUIOPS_POINTCONV_HAVE_AVX2
namespace avx2 {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace avx2
#endif

}  // namespace pointconv
}  // namespace equiops
