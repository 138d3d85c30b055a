// Vector loads/stores, row helpers and the register-blocked micro-GEMM shared by the
// CPU tile kernels (egnn_kernels.h, pointconv_kernels.h).
//
// Included *inside* a per-instruction-set namespace after row_vectors.h, like
// avx2_tiles.h: no include guard, no namespace of its own, so each instruction set gets
// its own copy. Define EQUIOPS_MICRO_GEMM_AVX2 first in the AVX2 build (loads and
// stores as intrinsics: see avx2_tiles.h for why not memcpy).
#ifdef EQUIOPS_MICRO_GEMM_AVX2
#include "avx2_tiles.h"
template <typename T>
inline Vec<T> vld(const T* p) {
  return (Vec<T>)loadu(p);
}
template <typename T>
inline void vst(T* p, Vec<T> v) {
  storeu(p, (typename Reg<T>::type)v);
}
#else
template <typename T>
inline Vec<T> vld(const T* p) {
  Vec<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void vst(T* p, Vec<T> v) {
  std::memcpy(p, &v, sizeof v);
}
#endif

// ------------------------------------------------------------------ row helpers
template <typename T>
inline void add_row(T* y, const T* x, int n) {
  constexpr int L = lanes<T>();
  int k = 0;
  for (; k + L <= n; k += L) vst(y + k, vld(y + k) + vld(x + k));
  for (; k < n; ++k) y[k] += x[k];
}

// ------------------------------------------------------------------ micro-GEMM
// C (m x N, ldc) = or += A (m x K) B (K x N, ldb), A(i, k) = A[i * ars + k * acs] (any
// strides: it is read by broadcast scalars, so a transposed A costs nothing), B by
// rows. Register blocks of 4 rows x 2 vectors, 4 rows x 1 vector, then single rows;
// the column tail (< one vector) by scalars, 4 rows at a time. (The 4-row blocks of narrow
// matrices serve the PointConv per-query products, N = ci or Kv, often one vector wide.)
template <typename T>
void gemm_panel(int m, int N, int K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C,
                int64_t ldc, bool acc) {
  constexpr int L = lanes<T>();
  int j = 0;
  for (; j + 2 * L <= N; j += 2 * L) {
    int i = 0;
    for (; i + 4 <= m; i += 4) {
      Vec<T> c00{}, c01{}, c10{}, c11{}, c20{}, c21{}, c30{}, c31{};
      T* c0 = C + i * ldc + j;
      if (acc) {
        c00 = vld(c0), c01 = vld(c0 + L);
        c10 = vld(c0 + ldc), c11 = vld(c0 + ldc + L);
        c20 = vld(c0 + 2 * ldc), c21 = vld(c0 + 2 * ldc + L);
        c30 = vld(c0 + 3 * ldc), c31 = vld(c0 + 3 * ldc + L);
      }
      const T* a0 = A + i * ars;
      const T* b = B + j;
      for (int k = 0; k < K; ++k, b += ldb) {
        const Vec<T> b0 = vld(b), b1 = vld(b + L);
        const T* ak = a0 + k * acs;
        const T x0 = ak[0], x1 = ak[ars], x2 = ak[2 * ars], x3 = ak[3 * ars];
        c00 += x0 * b0, c01 += x0 * b1;
        c10 += x1 * b0, c11 += x1 * b1;
        c20 += x2 * b0, c21 += x2 * b1;
        c30 += x3 * b0, c31 += x3 * b1;
      }
      vst(c0, c00), vst(c0 + L, c01);
      vst(c0 + ldc, c10), vst(c0 + ldc + L, c11);
      vst(c0 + 2 * ldc, c20), vst(c0 + 2 * ldc + L, c21);
      vst(c0 + 3 * ldc, c30), vst(c0 + 3 * ldc + L, c31);
    }
    for (; i < m; ++i) {
      T* c0 = C + i * ldc + j;
      Vec<T> c00{}, c01{};
      if (acc) c00 = vld(c0), c01 = vld(c0 + L);
      const T* b = B + j;
      for (int k = 0; k < K; ++k, b += ldb) {
        const T x = A[i * ars + k * acs];
        c00 += x * vld(b), c01 += x * vld(b + L);
      }
      vst(c0, c00), vst(c0 + L, c01);
    }
  }
  for (; j + L <= N; j += L) {
    int i = 0;
    for (; i + 4 <= m; i += 4) {
      T* c0 = C + i * ldc + j;
      Vec<T> c0v{}, c1v{}, c2v{}, c3v{};
      if (acc) c0v = vld(c0), c1v = vld(c0 + ldc), c2v = vld(c0 + 2 * ldc), c3v = vld(c0 + 3 * ldc);
      const T* a0 = A + i * ars;
      const T* b = B + j;
      for (int k = 0; k < K; ++k, b += ldb) {
        const Vec<T> b0 = vld(b);
        const T* ak = a0 + k * acs;
        c0v += ak[0] * b0, c1v += ak[ars] * b0, c2v += ak[2 * ars] * b0, c3v += ak[3 * ars] * b0;
      }
      vst(c0, c0v), vst(c0 + ldc, c1v), vst(c0 + 2 * ldc, c2v), vst(c0 + 3 * ldc, c3v);
    }
    for (; i < m; ++i) {
      T* c0 = C + i * ldc + j;
      Vec<T> c00 = acc ? vld(c0) : Vec<T>{};
      const T* b = B + j;
      for (int k = 0; k < K; ++k, b += ldb) c00 += A[i * ars + k * acs] * vld(b);
      vst(c0, c00);
    }
  }
  for (; j < N; ++j) {
    int i = 0;
    for (; i + 4 <= m; i += 4) {
      T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      if (acc) s0 = C[i * ldc + j], s1 = C[(i + 1) * ldc + j], s2 = C[(i + 2) * ldc + j], s3 = C[(i + 3) * ldc + j];
      const T* a0 = A + i * ars;
      for (int k = 0; k < K; ++k) {
        const T bk = B[k * ldb + j];
        const T* ak = a0 + k * acs;
        s0 += ak[0] * bk, s1 += ak[ars] * bk, s2 += ak[2 * ars] * bk, s3 += ak[3 * ars] * bk;
      }
      C[i * ldc + j] = s0, C[(i + 1) * ldc + j] = s1, C[(i + 2) * ldc + j] = s2, C[(i + 3) * ldc + j] = s3;
    }
    for (; i < m; ++i) {
      T s = acc ? C[i * ldc + j] : T(0);
      for (int k = 0; k < K; ++k) s += A[i * ars + k * acs] * B[k * ldb + j];
      C[i * ldc + j] = s;
    }
  }
}

// The same product with K split into chunks of kKc: a chunk's column panel of B (kKc x
// 2 vectors) stays in L1 while every row block of A passes over it (the C*ci-long
// products of PointConv with its weight).
constexpr int kKc = 256;
template <typename T>
void gemm(int m, int N, int K, const T* A, int64_t ars, int64_t acs, const T* B, int64_t ldb, T* C, int64_t ldc,
          bool acc) {
  if (K <= kKc) return gemm_panel(m, N, K, A, ars, acs, B, ldb, C, ldc, acc);
  for (int k0 = 0; k0 < K; k0 += kKc) {
    const int kc = std::min(kKc, K - k0);
    gemm_panel(m, N, kc, A + k0 * acs, ars, acs, B + int64_t(k0) * ldb, ldb, C, ldc, acc || k0 > 0);
  }
}
