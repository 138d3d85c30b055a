// Spherical-harmonics row kernels, free of torch headers so that one source compiles
// for several instruction sets (sh_kernels_generic.cpp, sh_kernels_avx2.cpp) without
// two translation units defining the same inline function for different CPUs.
//
// Math (python/equiops/reference/spherical_harmonics.py): Y^0 = 1 and
//   Y[i] = sum over coupling entries e of i:  c_e * Y[j_e] * u[k_e]
//   d Y[i] / d u[k] = l * sum_e c_e * Y[j_e]          (same entries, Euler's identity)
// with u = x / max(|x|, eps) when normalizing, else u = x.
//
// Layout: a chunk is W consecutive rows (one 32-byte vector: 8 floats or 4 doubles);
// every per-chunk quantity is a vector whose lanes are the rows, so each coupling entry
// is one vector multiply-add and a chunk's K_full harmonics stay in L1 (5.4 kB at
// l = 12). The (N, K) row-major input/output is transposed on the way in and out: with
// AVX2, in W x W register tiles; otherwise element by element.
//
// This header is included once per instruction set with EQUIOPS_SH_NS naming the
// namespace (and EQUIOPS_SH_AVX2 defined for the AVX2 build); it must stay free of
// inline functions shared with other translation units.
#ifndef EQUIOPS_SH_NS
#error "define EQUIOPS_SH_NS before including sh_kernels.h"
#endif

#include "sh_tables.h"

namespace equiops {
namespace sh {
namespace EQUIOPS_SH_NS {

#include "row_vectors.h"

// degree_n / contract_n: the recurrence unrolled for degrees up to kGeneratedLmax.
#include "sh_generated.h"

// ------------------------------------------------------------------ transposed I/O
#ifdef EQUIOPS_SH_AVX2
#include "avx2_tiles.h"
// Three contiguous vectors of (x, y, z) triples -> x, y, z lane vectors. Floats: one
// blend per source vector picks each coordinate's lanes, one permute puts them in row
// order (scalar loads into a stack array would stall on store forwarding instead).
template <typename V>
inline void deinterleave3(const float* p, V* v) {
  const __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8), c = _mm256_loadu_ps(p + 16);
  const __m256 tx = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x92), c, 0x24);
  const __m256 ty = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x24), c, 0x49);
  const __m256 tz = _mm256_blend_ps(_mm256_blend_ps(a, b, 0x49), c, 0x92);
  v[0] = (V)_mm256_permutevar8x32_ps(tx, _mm256_setr_epi32(0, 3, 6, 1, 4, 7, 2, 5));
  v[1] = (V)_mm256_permutevar8x32_ps(ty, _mm256_setr_epi32(1, 4, 7, 2, 5, 0, 3, 6));
  v[2] = (V)_mm256_permutevar8x32_ps(tz, _mm256_setr_epi32(2, 5, 0, 3, 6, 1, 4, 7));
}
template <typename V>
inline void deinterleave3(const double* p, V* v) {
  for (int k = 0; k < 3; ++k) v[k] = (V)_mm256_setr_pd(p[k], p[k + 3], p[k + 6], p[k + 9]);
}
#endif

// out[row0 + a, col] (row stride `stride`) = scale[col] * src[col_src[col]][a] for the
// tb.K output columns and the first n rows of the chunk.
template <typename T>
inline void store_chunk(const Tables& tb, const Vec<T>* src, T* out, int64_t row0, int n,
                        int64_t stride) {
  constexpr int W = lanes<T>();
  const T* scale = tb.col_scale<T>();
  const int* col_src = tb.col_src;
  const int K = tb.K;
#ifdef EQUIOPS_SH_AVX2
  if (n == W) {
    using R = typename Reg<T>::type;
    T* o = out + row0 * stride;
    // The last, partial column group first. With dense rows (stride == K) a full-width
    // store may spill into later columns or rows of this chunk, which are rewritten
    // afterwards, in order; a store that would leave the chunk (another thread's rows)
    // or land between rows (the Jacobian's other axes) writes element by element.
    // AVX2 masked stores would avoid the spill, but on this project's AMD EPYC machines
    // they were the profile's top hot spots; replacing them took the forward at
    // N = 1e5, l_max = 2, 1 thread from 0.83 to 0.56 ms (measured ad hoc with perf).
    const int c_tail = K - K % W;
    if (c_tail < K) {
      const int w = K - c_tail;
      R r[W];
      for (int q = 0; q < W; ++q) r[q] = q < w ? (R)(src[col_src[c_tail + q]] * scale[c_tail + q]) : R{};
      transpose(r);
      const int64_t chunk_end = (W - 1) * stride + K;  // one past this chunk's last element
      for (int a = 0; a < W; ++a) {
        T* p = o + a * stride + c_tail;
        if (stride == K && (p - o) + W <= chunk_end) {
          storeu(p, r[a]);
        } else {
          T t[W];
          storeu(t, r[a]);
          for (int q = 0; q < w; ++q) p[q] = t[q];
        }
      }
    }
    for (int c0 = 0; c0 < c_tail; c0 += W) {
      R r[W];
      for (int q = 0; q < W; ++q) r[q] = (R)(src[col_src[c0 + q]] * scale[c0 + q]);
      transpose(r);
      for (int a = 0; a < W; ++a) storeu(o + a * stride + c0, r[a]);
    }
    return;
  }
#endif
  for (int a = 0; a < n; ++a) {
    T* o = out + (row0 + a) * stride;
    for (int c = 0; c < K; ++c) o[c] = scale[c] * src[col_src[c]][a];
  }
}

// gs[i] = sum over output columns c of component i: scale[c] * grad[row0 + a, c]
// (a degree repeated in the output sums its gradients); i in 0..k_full-1.
template <typename T>
inline void load_grad_chunk(const Tables& tb, const T* grad, int64_t row0, int n, Vec<T>* gs) {
  constexpr int W = lanes<T>();
  const T* scale = tb.col_scale<T>();
  for (int i = 0; i < tb.k_full; ++i) gs[i] = Vec<T>{};
#ifdef EQUIOPS_SH_AVX2
  if (n == W) {
    using R = typename Reg<T>::type;
    for (int c0 = 0; c0 < tb.K; c0 += W) {
      const int w = std::min(W, tb.K - c0);
      const T* g = grad + row0 * tb.K + c0;
      R r[W];
      if (w == W) {
        // Intrinsics, not memcpy: see loadu in avx2_tiles.h.
        for (int a = 0; a < W; ++a) r[a] = loadu(g + a * tb.K);
      } else {
        const __m256i m = tail_mask((T*)nullptr, w);
        for (int a = 0; a < W; ++a) r[a] = load_part(g + a * tb.K, m);
      }
      transpose(r);
      for (int q = 0; q < w; ++q) gs[tb.col_src[c0 + q]] += (Vec<T>)r[q] * scale[c0 + q];
    }
    return;
  }
#endif
  for (int a = 0; a < n; ++a) {
    const T* g = grad + (row0 + a) * tb.K;
    for (int c = 0; c < tb.K; ++c) gs[tb.col_src[c]][a] += scale[c] * g[c];
  }
}

// Rows [row0, row0 + n) of a (N, 3) array as three lane vectors (zeros past n).
template <typename T>
inline void load_xyz(const T* p, int64_t row0, int n, Vec<T>* v) {
  constexpr int W = lanes<T>();
  p += row0 * 3;
#ifdef EQUIOPS_SH_AVX2
  if (n == W) {
    deinterleave3(p, v);
    return;
  }
#endif
  for (int k = 0; k < 3; ++k) v[k] = Vec<T>{};
  for (int a = 0; a < n; ++a)
    for (int k = 0; k < 3; ++k) v[k][a] = p[a * 3 + k];
}

template <typename T>
inline void store_xyz(const Vec<T>* v, T* p, int64_t row0, int n) {
  for (int a = 0; a < n; ++a)
    for (int k = 0; k < 3; ++k) p[(row0 + a) * 3 + k] = v[k][a];
}

// ------------------------------------------------------------------------ the math
// The evaluation point of a chunk: u, s = 1/max(|x|, eps) (or 1), and `on` = 1 where the
// radial projection of the Jacobian applies (normalizing and |x| >= eps), else 0. The
// comparison `r < eps` keeps NaN: a NaN row stays NaN (NaN < eps is false).
template <typename T>
struct Point {
  Vec<T> u[3], s, on;
};

template <typename T>
inline Vec<T> vsqrt(Vec<T> v) {
#ifdef EQUIOPS_SH_AVX2
  using R = typename Reg<T>::type;
  if constexpr (sizeof(T) == 4) return (Vec<T>)_mm256_sqrt_ps((R)v);
  else return (Vec<T>)_mm256_sqrt_pd((R)v);
#else
  for (int a = 0; a < lanes<T>(); ++a) v[a] = std::sqrt(v[a]);
  return v;
#endif
}

template <typename T>
inline Point<T> make_point(const Vec<T>* xv, bool normalize) {
  Point<T> P;
  const Vec<T> one = Vec<T>{} + 1;
  if (!normalize) {
    for (int k = 0; k < 3; ++k) P.u[k] = xv[k];
    P.s = one;
    P.on = Vec<T>{};
    return P;
  }
  const Vec<T> r = vsqrt<T>(xv[0] * xv[0] + xv[1] * xv[1] + xv[2] * xv[2]);
  const Vec<T> eps = Vec<T>{} + (T)kNormalizeEps;
  const auto small = r < eps;
  P.s = one / (small ? eps : r);
  P.on = small ? Vec<T>{} : one;
  for (int k = 0; k < 3; ++k) P.u[k] = xv[k] * P.s;
  return P;
}

// y[0 .. (lmax+1)^2) from the point: generated code up to kGeneratedLmax, the table
// beyond.
template <typename T>
inline void eval_values(const Tables& tb, int lmax, const Vec<T>* u, Vec<T>* y) {
  const T* coef = tb.coef<T>();
  y[0] = Vec<T>{} + 1;
  for (int l = 1; l <= lmax; ++l) {
    if (l <= kGeneratedLmax) {
      degree_n<T>(l, y, u, y, (T)1);
      continue;
    }
    for (int i = l * l; i < (l + 1) * (l + 1); ++i) {
      Vec<T> acc = {};
      for (int e = tb.istart[i]; e < tb.istart[i + 1]; ++e) acc += coef[e] * y[tb.ej[e]] * u[tb.ek[e]];
      y[i] = acc;
    }
  }
}

// dy[0 .. (lmax+1)^2): derivative of Y along w (needs y up to lmax - 1).
template <typename T>
inline void eval_directional(const Tables& tb, int lmax, const Vec<T>* w, const Vec<T>* y,
                             Vec<T>* dy) {
  const T* lcoef = tb.lcoef<T>();
  dy[0] = Vec<T>{};
  for (int l = 1; l <= lmax; ++l) {
    if (l <= kGeneratedLmax) {
      degree_n<T>(l, y, w, dy, (T)l);
      continue;
    }
    for (int i = l * l; i < (l + 1) * (l + 1); ++i) {
      Vec<T> acc = {};
      for (int e = tb.istart[i]; e < tb.istart[i + 1]; ++e) acc += lcoef[e] * y[tb.ej[e]] * w[tb.ek[e]];
      dy[i] = acc;
    }
  }
}

// out[k] = sum_i gs[i] dY_i/du_k, with src = y; with src = dy, the Hessian-vector
// product sum_i gs[i] d(dY_i/du_k)/dw.
template <typename T>
inline void contract_grad(const Tables& tb, int lmax, const Vec<T>* gs, const Vec<T>* src,
                          Vec<T>* out) {
  const T* lcoef = tb.lcoef<T>();
  out[0] = out[1] = out[2] = Vec<T>{};
  for (int l = 1; l <= lmax; ++l) {
    if (l <= kGeneratedLmax) {
      contract_n<T>(l, gs, src, out);
      continue;
    }
    for (int i = l * l; i < (l + 1) * (l + 1); ++i) {
      const Vec<T> g = gs[i];
      for (int e = tb.istart[i]; e < tb.istart[i + 1]; ++e) out[tb.ek[e]] += lcoef[e] * g * src[tb.ej[e]];
    }
  }
}

// v <- J v, J = s (I - on u u^T) (symmetric).
template <typename T>
inline void apply_jacobian(const Point<T>& P, Vec<T>* v) {
  const Vec<T> d = P.on * (P.u[0] * v[0] + P.u[1] * v[1] + P.u[2] * v[2]);
  for (int k = 0; k < 3; ++k) v[k] = P.s * (v[k] - d * P.u[k]);
}

// ------------------------------------------------------------------------ kernels
// Each processes rows [r0, r1) (r0 a multiple of the lane count) with scratch of
// scratch_vectors(tb) vectors, 32-byte aligned.

template <typename T>
void forward(const Tables& tb, bool normalize, const T* x, T* out, int64_t r0, int64_t r1, void* ws) {
  constexpr int W = lanes<T>();
  Vec<T>* y = (Vec<T>*)ws;
  for (int64_t b = r0; b < r1; b += W) {
    const int n = (int)std::min<int64_t>(W, r1 - b);
    Vec<T> xv[3];
    load_xyz<T>(x, b, n, xv);
    const Point<T> P = make_point<T>(xv, normalize);
    eval_values<T>(tb, tb.lmax_out, P.u, y);
    store_chunk<T>(tb, y, out, b, n, tb.K);
  }
}

// grad_x (N, 3) = J (sum_i g_i dY_i/du).
template <typename T>
void backward(const Tables& tb, bool normalize, const T* grad, const T* x, T* gx, int64_t r0,
              int64_t r1, void* ws) {
  constexpr int W = lanes<T>();
  Vec<T>* y = (Vec<T>*)ws;
  Vec<T>* gs = y + tb.k_full;
  for (int64_t b = r0; b < r1; b += W) {
    const int n = (int)std::min<int64_t>(W, r1 - b);
    Vec<T> xv[3], f[3];
    load_xyz<T>(x, b, n, xv);
    const Point<T> P = make_point<T>(xv, normalize);
    eval_values<T>(tb, tb.lmax_out - 1, P.u, y);
    load_grad_chunk<T>(tb, grad, b, n, gs);
    contract_grad<T>(tb, tb.lmax_out, gs, y, f);
    apply_jacobian<T>(P, f);
    store_xyz<T>(f, gx, b, n);
  }
}

// Derivatives of grad_x = J F(u, g) against an incoming v (N, 3):
//   grad_grad (N, K) = d/dw Y, w = J v;
//   grad_x2 (N, 3) = J (H_g w) - on s^2 [(a - 3 b c) u + c v + b F],
// a = v.F, b = u.v, c = u.F (the second term differentiates J itself).
template <typename T>
void double_backward(const Tables& tb, bool normalize, const T* vin, const T* grad, const T* x,
                     T* gg, T* gx2, int64_t r0, int64_t r1, void* ws) {
  constexpr int W = lanes<T>();
  Vec<T>* y = (Vec<T>*)ws;
  Vec<T>* dy = y + tb.k_full;
  Vec<T>* gs = dy + tb.k_full;
  const int lmax = tb.lmax_out;
  for (int64_t b = r0; b < r1; b += W) {
    const int n = (int)std::min<int64_t>(W, r1 - b);
    Vec<T> xv[3], v[3], w[3], f[3], h[3];
    load_xyz<T>(x, b, n, xv);
    load_xyz<T>(vin, b, n, v);
    const Point<T> P = make_point<T>(xv, normalize);
    for (int k = 0; k < 3; ++k) w[k] = v[k];
    apply_jacobian<T>(P, w);
    eval_values<T>(tb, lmax - 1, P.u, y);
    eval_directional<T>(tb, lmax, w, y, dy);
    store_chunk<T>(tb, dy, gg, b, n, tb.K);
    load_grad_chunk<T>(tb, grad, b, n, gs);
    contract_grad<T>(tb, lmax, gs, y, f);
    contract_grad<T>(tb, lmax, gs, dy, h);
    apply_jacobian<T>(P, h);
    const Vec<T>* u = P.u;
    const Vec<T> A = v[0] * f[0] + v[1] * f[1] + v[2] * f[2];
    const Vec<T> B = u[0] * v[0] + u[1] * v[1] + u[2] * v[2];
    const Vec<T> C = u[0] * f[0] + u[1] * f[1] + u[2] * f[2];
    const Vec<T> q = P.on * P.s * P.s;
    for (int k = 0; k < 3; ++k) h[k] -= q * ((A - 3 * B * C) * u[k] + C * v[k] + B * f[k]);
    store_xyz<T>(h, gx2, b, n);
  }
}

// values (N, K) and the Jacobian jac (N, 3, K): jac[n, a, col] = d out[n, col] / d x[n, a].
template <typename T>
void jacobian(const Tables& tb, bool normalize, const T* x, T* out, T* jac, int64_t r0, int64_t r1,
              void* ws) {
  constexpr int W = lanes<T>();
  Vec<T>* y = (Vec<T>*)ws;
  Vec<T>* g = y + tb.k_full;
  const int lmax = tb.lmax_out;
  const int end = (lmax + 1) * (lmax + 1);
  for (int64_t b = r0; b < r1; b += W) {
    const int n = (int)std::min<int64_t>(W, r1 - b);
    Vec<T> xv[3];
    load_xyz<T>(x, b, n, xv);
    const Point<T> P = make_point<T>(xv, normalize);
    eval_values<T>(tb, lmax, P.u, y);
    store_chunk<T>(tb, y, out, b, n, tb.K);
    // The derivative along axis k is the directional derivative along e_k; then
    // jac_k = s (dY/du_k - on u_k l Y), using sum_k u_k dY/du_k = l Y (Euler).
    for (int k = 0; k < 3; ++k) {
      Vec<T> e[3] = {};
      e[k] = Vec<T>{} + 1;
      eval_directional<T>(tb, lmax, e, y, g);
      for (int l = 0; l <= lmax; ++l)
        for (int i = l * l; i < (l + 1) * (l + 1) && i < end; ++i)
          g[i] = P.s * (g[i] - P.on * P.u[k] * (T)l * y[i]);
      store_chunk<T>(tb, g, jac + k * tb.K, b, n, 3 * (int64_t)tb.K);
    }
  }
}

}  // namespace EQUIOPS_SH_NS
}  // namespace sh
}  // namespace equiops
