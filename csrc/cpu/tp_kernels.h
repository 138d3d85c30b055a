// Tensor-product row kernels, free of torch headers so that one source compiles for
// several instruction sets (tp_kernels_generic.cpp, tp_kernels_avx2.cpp).
//
// Math (python/equiops/tp_problem.py): per path, z[u,v,k] = sum_ijk C_ijk x1[u,i] x2[v,j]
// and out += c * (the mode's weight mixing of z). Evaluated as
//   A_v[s] = sum_{j: (i_s, j, k_s) nonzero} C x2[v, j]    (x2 contracted first, per v)
//   z[k]   = sum_s A_v[s] x1[u, i_s]                       (per channel pair (u, v))
// where s runs over the (i, k) pairs with a nonzero: fewer multiply-adds than the
// nonzeros themselves whenever l2 > 0, and A_v is reused by every u.
//
// Layout: a chunk is W consecutive rows (one 32-byte vector: 8 floats or 4 doubles);
// every per-chunk quantity is a vector whose lanes are rows, so every mode, shared or
// per-row weights, any multiplicity, vectorises the same way (no dependence on the
// channel count being a multiple of anything). Row-major inputs are transposed into
// lane vectors on the way in and out (AVX2: W x W register tiles). Paths are visited
// grouped by output block, whose accumulators stay in cache and are stored once.
//
// Gradients. out is linear in each of x1, x2, W, so the backward per pair is
//   gz[k] = adjoint of the mixing applied to grad_out;  gx1[u,i_s] += A_v[s] gz[k_s];
//   gA_v[s] += gz[k_s] x1[u,i_s] -> gx2[v,j] += C gA_v[s];  gW += c <grad_out, z>
// and the double backward is the sum of three forwards and three backwards with one
// argument replaced by its incoming gradient (see double_backward below), all in the
// same pass over the rows.
//
// Included once per instruction set with EQUIOPS_TP_NS naming the namespace (and
// EQUIOPS_TP_AVX2 for the AVX2 build); no inline function is shared between them.
#ifndef EQUIOPS_TP_NS
#error "define EQUIOPS_TP_NS before including tp_kernels.h"
#endif

#include <algorithm>
#include <cstring>

#include "tp_cpu.h"

namespace equiops {
namespace tp {
namespace EQUIOPS_TP_NS {

#include "row_vectors.h"
#ifdef EQUIOPS_TP_AVX2
#include "avx2_tiles.h"
#endif

template <typename T>
inline Vec<T> splat(T v) {
  return Vec<T>{} + v;
}

// Orders non-temporal stores (store_cols with nt) before the kernel returns.
inline void store_fence() {
#ifdef EQUIOPS_TP_AVX2
  _mm_sfence();
#endif
}

// ------------------------------------------------------------------ transposed I/O
// dst[c][a] = src[row(a) * ld + c0 + c] for c < cnt, a < n, where row(a) is row0 + a,
// or idx[row0 + a] with a row map; lanes a >= n are zero.
template <typename T>
inline void load_cols(const T* src, int64_t ld, int64_t row0, int n, int64_t c0, int64_t cnt,
                      Vec<T>* dst, const int64_t* idx = nullptr) {
  constexpr int W = lanes<T>();
  const T* rp[W];
  for (int a = 0; a < n; ++a) rp[a] = src + (idx != nullptr ? idx[row0 + a] : row0 + a) * ld + c0;
  if (idx != nullptr && n > 1) {
    // Every lane reading one row (the convolution's backward in sender order: a node's
    // outgoing edges share its features): splat it instead of transposing.
    bool same = true;
    for (int a = 1; a < n; ++a) same = same && rp[a] == rp[0];
    if (same) {
      for (int64_t c = 0; c < cnt; ++c) {
        Vec<T> v = splat(rp[0][c]);
        for (int a = n; a < W; ++a) v[a] = T(0);
        dst[c] = v;
      }
      return;
    }
  }
#ifdef EQUIOPS_TP_AVX2
  if (n == W) {
    using R = typename Reg<T>::type;
    int64_t c = 0;
    for (; c + W <= cnt; c += W) {
      R r[W];
      for (int a = 0; a < W; ++a) r[a] = loadu(rp[a] + c);
      transpose(r);
      for (int q = 0; q < W; ++q) dst[c + q] = (Vec<T>)r[q];
    }
    if (c < cnt) {
      const int w = (int)(cnt - c);
      const __m256i m = tail_mask((T*)nullptr, w);
      R r[W];
      for (int a = 0; a < W; ++a) r[a] = load_part(rp[a] + c, m);
      transpose(r);
      for (int q = 0; q < w; ++q) dst[c + q] = (Vec<T>)r[q];
    }
    return;
  }
#endif
  for (int64_t c = 0; c < cnt; ++c) dst[c] = Vec<T>{};
  for (int a = 0; a < n; ++a) {
    const T* s = rp[a];
    for (int64_t c = 0; c < cnt; ++c) dst[c][a] = s[c];
  }
}

// dst[row(a) * ld + c0 + c] = src[c][a] for c < cnt, a < n (row(a) as in load_cols);
// with acc, += instead of =, lane by lane in order (lanes mapping to one row add up in
// lane order). With `nt` (large, write-once outputs; ignored with acc), aligned full
// vectors go out as non-temporal stores, which skip the read-for-ownership of each
// destination line (MACE-medium forward, 10,000 rows, 2 threads: ~11 -> ~10 ms in an
// ad hoc loop; not separately benchmarked). The kernels that pass nt end with a store
// fence.
template <typename T>
inline void store_cols(const Vec<T>* src, T* dst, int64_t ld, int64_t row0, int n, int64_t c0,
                       int64_t cnt, bool nt = false, const int64_t* idx = nullptr, bool acc = false) {
  constexpr int W = lanes<T>();
  T* rp[W];
  for (int a = 0; a < n; ++a) rp[a] = dst + (idx != nullptr ? idx[row0 + a] : row0 + a) * ld + c0;
#ifdef EQUIOPS_TP_AVX2
  if (n == W) {
    using R = typename Reg<T>::type;
    int64_t c = 0;
    for (; c + W <= cnt; c += W) {
      R r[W];
      for (int q = 0; q < W; ++q) r[q] = (R)src[c + q];
      transpose(r);
      if (acc) {
        // Lanes mapping to one row (consecutive: the convolution's rows are sorted by
        // the row they add into) are summed in registers first, in lane order, and
        // added to the row once: one read-modify-write per run instead of a chain of
        // dependent ones through memory.
        for (int a = 0; a < W;) {
          R sum = r[a];
          int b = a + 1;
          for (; b < W && rp[b] == rp[a]; ++b) sum += r[b];
          storeu(rp[a] + c, loadu(rp[a] + c) + sum);
          a = b;
        }
        continue;
      }
      for (int a = 0; a < W; ++a) {
        T* q = rp[a] + c;
        if (nt && ((uintptr_t)q & 31) == 0) {
          stream_store(q, r[a]);
        } else {
          storeu(q, r[a]);
        }
      }
    }
    if (c < cnt) {
      // Element by element: masked stores were slow on this project's AMD machines
      // (see sh_kernels.h), and blocks are mostly multiples of W wide.
      const int w = (int)(cnt - c);
      for (int a = 0; a < W; ++a)
        for (int q = 0; q < w; ++q) {
          if (acc)
            rp[a][c + q] += src[c + q][a];
          else
            rp[a][c + q] = src[c + q][a];
        }
    }
    return;
  }
#endif
  for (int a = 0; a < n; ++a) {
    T* d = rp[a];
    if (acc)
      for (int64_t c = 0; c < cnt; ++c) d[c] += src[c][a];
    else
      for (int64_t c = 0; c < cnt; ++c) d[c] = src[c][a];
  }
}

// Columns [c0, c0 + cnt) of a broadcast row, as lane vectors.
template <typename T>
inline void splat_cols(const T* src, int64_t c0, int64_t cnt, Vec<T>* dst) {
  for (int64_t c = 0; c < cnt; ++c) dst[c] = splat(src[c0 + c]);
}

// An input's columns 0..cols as lane vectors in dst: a broadcast input (one row) is
// splat once per range (load_broadcast), a per-row one transposed per chunk (load_rows).
// Absent optional inputs (p null) are skipped.
template <typename T>
inline void load_broadcast(const In<T>& x, int64_t cols, Vec<T>* dst) {
  if (x.p != nullptr && x.rows == 1) splat_cols(x.p, 0, cols, dst);
}

template <typename T>
inline void load_rows(const In<T>& x, int64_t row0, int n, int64_t cols, Vec<T>* dst) {
  if (x.p != nullptr && x.rows != 1) load_cols(x.p, x.ld, row0, n, 0, cols, dst, x.idx);
}

// Adds the lanes of acc[0..cnt) into part[0..cnt), lanes in order (deterministic).
template <typename T>
inline void flush_lanes(const Vec<T>* acc, int64_t cnt, T* part) {
  constexpr int W = lanes<T>();
  for (int64_t c = 0; c < cnt; ++c) {
    T s = part[c];
    for (int a = 0; a < W; ++a) s += acc[c][a];
    part[c] = s;
  }
}

// ------------------------------------------------------------------ weights
// The weights of one path for the chunk: per-row (lane vectors of the path's block),
// shared (one scalar per weight) or none (an unweighted path: weight 1).
template <typename T>
struct Weights {
  const Vec<T>* v = nullptr;
  const T* s = nullptr;
  // c * W[i] as a lane vector.
  inline Vec<T> times(int64_t i, Vec<T> c) const {
    if (v != nullptr) return v[i] * c;
    if (s != nullptr) return c * s[i];
    return c;
  }
};

// Where a channel pair's z goes: output channel o with weight wi, or (fan-out modes
// uvw, weighted uuw, u<vw) every output channel w with weight wi + w.
struct Mix {
  int o;
  int64_t wi;
  bool fan;
};

inline Mix mix_of(const Path& p, int u, int v, int q) {
  switch (p.mode) {
    case UVW: return {0, (int64_t)q * p.mo, true};
    case UVU: return {u, q, false};
    case UVV: return {v, q, false};
    case UUW: return p.w_off >= 0 ? Mix{0, (int64_t)u * p.mo, true} : Mix{0, -1, false};
    case UUU: return {u, u, false};
    case UVUV: return {q, q, false};
    case UVU_LT_V: return {q, q, false};
    default: return {0, (int64_t)q * p.mo, true};  // U_LT_VW
  }
}

// Visits the channel pairs (u, v, q) of a path, q the pair's index in weight order, with
// begin(v) before and end(v) after the pairs of each v (uu modes: v = u).
template <typename FB, typename FP, typename FE>
inline void for_pairs(const Path& p, FB&& begin, FP&& pair, FE&& end) {
  if (p.mode == UUW || p.mode == UUU) {
    for (int u = 0; u < p.m1; ++u) {
      begin(u);
      pair(u, u, u);
      end(u);
    }
  } else if (p.mode == UVU_LT_V || p.mode == U_LT_VW) {
    for (int v = 1; v < p.m2; ++v) {
      begin(v);
      for (int u = 0; u < v; ++u) pair(u, v, u * p.m2 - u * (u + 1) / 2 + (v - u - 1));
      end(v);
    }
  } else {
    for (int v = 0; v < p.m2; ++v) {
      begin(v);
      for (int u = 0; u < p.m1; ++u) pair(u, v, u * p.m2 + v);
      end(v);
    }
  }
}

// A[s] = sum over the nonzeros of (i_s, k_s) of C * x2[j] (x2: the v-th channel).
template <typename T>
inline void contract_x2(const Path& p, const Vec<T>* x2v, Vec<T>* A) {
  const int S = (int)p.s_i.size();
  for (int s = 0; s < S; ++s) {
    Vec<T> acc = {};
    for (int e = p.s_begin[s]; e < p.s_begin[s + 1]; ++e) acc += x2v[p.g_j[e]] * (T)p.g_c[e];
    A[s] = acc;
  }
}

// z[k] = sum_s A[s] x1[i_s] (x1: the u-th channel). The groups are in k order, so each
// z[k] is one register accumulator: accumulating into z[] in memory made every group a
// store-to-load round trip on the same address, which dominated the forward.
template <typename T>
inline void contract_x1(const Path& p, const Vec<T>* A, const Vec<T>* x1u, Vec<T>* z) {
  const int* kb = p.k_begin.data();
  const int* si = p.s_i.data();
  for (int k = 0; k < p.dk; ++k) {
    Vec<T> acc = {};
    for (int s = kb[k]; s < kb[k + 1]; ++s) acc += A[s] * x1u[si[s]];
    z[k] = acc;
  }
}

// out[k] += cw * z[k] with z from contract_x1, fused (z never stored).
template <typename T>
inline void contract_x1_into(const Path& p, const Vec<T>* A, const Vec<T>* x1u, Vec<T> cw, Vec<T>* out) {
  const int* kb = p.k_begin.data();
  const int* si = p.s_i.data();
  for (int k = 0; k < p.dk; ++k) {
    Vec<T> acc = {};
    for (int s = kb[k]; s < kb[k + 1]; ++s) acc += A[s] * x1u[si[s]];
    out[k] += cw * acc;
  }
}

// g1[i] += sum_s A[s] gz[k_s], one register accumulator per i.
template <typename T>
inline void contract_gz(const Path& p, const Vec<T>* A, const Vec<T>* gz, Vec<T>* g1) {
  const int* ib = p.i_begin.data();
  const int* io = p.i_order.data();
  const int* sk = p.s_k.data();
  for (int i = 0; i < p.d1; ++i) {
    if (ib[i] == ib[i + 1]) continue;
    Vec<T> acc = {};
    for (int t = ib[i]; t < ib[i + 1]; ++t) acc += A[io[t]] * gz[sk[io[t]]];
    g1[i] += acc;
  }
}

// Scratch of one path evaluation: A, gA (S each), z, gz (dk each); for the channel-inner
// uvu kernels, Y (mul1 d1), GZ (mul1 dk) and GWu (mul1).
template <typename T>
struct PathScratch {
  Vec<T>* A;
  Vec<T>* gA;
  Vec<T>* z;
  Vec<T>* gz;
  Vec<T>* Y;
  Vec<T>* GZ;
  Vec<T>* GWu;
};

// ------------------------------------------------------------------ uvu, channel-inner
// The channel-wise product (uvu: NequIP, MACE) with the channel loop innermost: for a
// fixed group of (i, k) pairs the coefficients A[s] and indices are loop-invariant, so
// the inner loop is a fixed-stride stream of multiply-adds over the mul1 channels with
// no index loads (the per-pair loops above re-read the group tables for every channel).
//
// dst[u * ds] += sum_{g < G} a[g] * src[u * ss + idx[g]] for u < m  (G known: unrolled).
template <typename T, int G>
inline void stream_groups(int m, const Vec<T>* a, const int* idx, const Vec<T>* src, int ss, Vec<T>* dst, int ds) {
  Vec<T> av[G > 0 ? G : 1];
  int ix[G > 0 ? G : 1];
  for (int g = 0; g < G; ++g) {
    av[g] = a[g];
    ix[g] = idx[g];
  }
  for (int u = 0; u < m; ++u) {
    const Vec<T>* sr = src + (int64_t)u * ss;
    Vec<T> acc = av[0] * sr[ix[0]];
    for (int g = 1; g < G; ++g) acc += av[g] * sr[ix[g]];
    dst[(int64_t)u * ds] += acc;
  }
}

template <typename T>
inline void stream(int G, int m, const Vec<T>* a, const int* idx, const Vec<T>* src, int ss, Vec<T>* dst, int ds) {
  switch (G) {
    case 0: return;
    case 1: return stream_groups<T, 1>(m, a, idx, src, ss, dst, ds);
    case 2: return stream_groups<T, 2>(m, a, idx, src, ss, dst, ds);
    case 3: return stream_groups<T, 3>(m, a, idx, src, ss, dst, ds);
    case 4: return stream_groups<T, 4>(m, a, idx, src, ss, dst, ds);
    default:
      for (int g0 = 0; g0 < G; g0 += 4) stream<T>(std::min(4, G - g0), m, a + g0, idx + g0, src, ss, dst, ds);
  }
}

// sum_u x[u * sx] * y[u * sy], four accumulators (the FMA latency, not the loads, would
// bound a single chain), combined in a fixed order.
template <typename T>
inline Vec<T> dot_strided(int m, const Vec<T>* x, int sx_, const Vec<T>* y, int sy_) {
  const int64_t sx = sx_, sy = sy_;
  Vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
  int u = 0;
  for (; u + 4 <= m; u += 4, x += 4 * sx, y += 4 * sy) {
    a0 += x[0] * y[0];
    a1 += x[sx] * y[sy];
    a2 += x[2 * sx] * y[2 * sy];
    a3 += x[3 * sx] * y[3 * sy];
  }
  for (; u < m; ++u, x += sx, y += sy) a0 += x[0] * y[0];
  return (a0 + a1) + (a2 + a3);
}

// acc[u] += go[u * ds] * sum_{g < G} a[g] * src[u * ss + idx[g]] for u < m (the weight
// gradient's <grad_out, z> for one k group; G known: unrolled).
template <typename T, int G>
inline void stream_dot_groups(int m, const Vec<T>* a, const int* idx, const Vec<T>* src, int ss, const Vec<T>* go,
                              int ds, Vec<T>* acc) {
  Vec<T> av[G];
  int ix[G];
  for (int g = 0; g < G; ++g) {
    av[g] = a[g];
    ix[g] = idx[g];
  }
  for (int u = 0; u < m; ++u) {
    const Vec<T>* sr = src + (int64_t)u * ss;
    Vec<T> z = av[0] * sr[ix[0]];
    for (int g = 1; g < G; ++g) z += av[g] * sr[ix[g]];
    acc[u] += go[(int64_t)u * ds] * z;
  }
}

template <typename T>
inline void stream_dot(int G, int m, const Vec<T>* a, const int* idx, const Vec<T>* src, int ss, const Vec<T>* go,
                       int ds, Vec<T>* acc) {
  switch (G) {
    case 0: return;
    case 1: return stream_dot_groups<T, 1>(m, a, idx, src, ss, go, ds, acc);
    case 2: return stream_dot_groups<T, 2>(m, a, idx, src, ss, go, ds, acc);
    case 3: return stream_dot_groups<T, 3>(m, a, idx, src, ss, go, ds, acc);
    case 4: return stream_dot_groups<T, 4>(m, a, idx, src, ss, go, ds, acc);
    default:
      // z is linear in the group's terms: split into parts of at most 4.
      for (int g0 = 0; g0 < G; g0 += 4)
        stream_dot<T>(std::min(4, G - g0), m, a + g0, idx + g0, src, ss, go, ds, acc);
  }
}

// uvu forward: out[u, k] += c W[u, v] sum_s A_v[s] x1[u, i_s], as Y = c W x1 (per v)
// followed by one stream per k group.
template <typename T>
inline void uvu_forward(const Path& p, const Vec<T>* X1, const Vec<T>* X2, const Weights<T>& w, Vec<T>* O,
                        const PathScratch<T>& sc) {
  const Vec<T> c = splat((T)p.coef);
  const int m1 = p.m1, d1 = p.d1, dk = p.dk;
  for (int v = 0; v < p.m2; ++v) {
    contract_x2<T>(p, X2 + (int64_t)v * p.d2, sc.A);
    for (int u = 0; u < m1; ++u) {
      const Vec<T> cw = w.times((int64_t)u * p.m2 + v, c);
      for (int i = 0; i < d1; ++i) sc.Y[u * d1 + i] = cw * X1[(int64_t)u * d1 + i];
    }
    for (int k = 0; k < dk; ++k) {
      const int s0 = p.k_begin[k], G = p.k_begin[k + 1] - s0;
      stream<T>(G, m1, sc.A + s0, p.s_i.data() + s0, sc.Y, d1, O + k, dk);
    }
  }
}

// uvu backward: with GZ[u, k] = c W[u, v] GO[u, k],
//   gx1[u, i] += sum_{s: i_s = i} A[s] GZ[u, k_s]          (one stream per i group)
//   gA[s] = sum_u GZ[u, k_s] x1[u, i_s]  -> gx2[v, j] += C gA[s]
//   gW[u, v] += c sum_k GO[u, k] sum_{s in k} A[s] x1[u, i_s]
template <typename T>
inline void uvu_backward(const Path& p, const Vec<T>* GO, const Vec<T>* X1, const Vec<T>* X2, const Weights<T>& w,
                         Vec<T>* GX1, Vec<T>* GX2, Vec<T>* GW, const PathScratch<T>& sc) {
  const Vec<T> c = splat((T)p.coef);
  const int m1 = p.m1, d1 = p.d1, dk = p.dk, S = (int)p.s_i.size();
  for (int v = 0; v < p.m2; ++v) {
    contract_x2<T>(p, X2 + (int64_t)v * p.d2, sc.A);
    if (GX1 != nullptr || GX2 != nullptr) {
      for (int u = 0; u < m1; ++u) {
        const Vec<T> cw = w.times((int64_t)u * p.m2 + v, c);
        for (int k = 0; k < dk; ++k) sc.GZ[u * dk + k] = cw * GO[(int64_t)u * dk + k];
      }
    }
    if (GX1 != nullptr) {
      for (int i = 0; i < d1; ++i) {
        const int t0 = p.i_begin[i], H = p.i_begin[i + 1] - t0;
        Vec<T> a[8];
        int kk[8];
        for (int h0 = 0; h0 < H; h0 += 8) {
          const int hn = std::min(8, H - h0);
          for (int h = 0; h < hn; ++h) {
            const int s = p.i_order[t0 + h0 + h];
            a[h] = sc.A[s];
            kk[h] = p.s_k[s];
          }
          stream<T>(hn, m1, a, kk, sc.GZ, dk, GX1 + i, d1);
        }
      }
    }
    if (GX2 != nullptr) {
      Vec<T>* g2 = GX2 + (int64_t)v * p.d2;
      for (int s = 0; s < S; ++s) {
        const Vec<T> ga = dot_strided<T>(m1, sc.GZ + p.s_k[s], dk, X1 + p.s_i[s], d1);
        for (int e = p.s_begin[s]; e < p.s_begin[s + 1]; ++e) g2[p.g_j[e]] += ga * (T)p.g_c[e];
      }
    }
    if (GW != nullptr) {
      // Z[u, k] into GZ's space is not needed: accumulate <GO[u], z[u]> directly.
      for (int u = 0; u < m1; ++u) sc.GWu[u] = Vec<T>{};
      for (int k = 0; k < dk; ++k) {
        const int s0 = p.k_begin[k], G = p.k_begin[k + 1] - s0;
        stream_dot<T>(G, m1, sc.A + s0, p.s_i.data() + s0, X1, d1, GO + k, dk, sc.GWu);
      }
      for (int u = 0; u < m1; ++u) GW[(int64_t)u * p.m2 + v] += c * sc.GWu[u];
    }
  }
}

// O[offo-relative] += the path applied to (x1, x2, w). X1/X2 point at the path's blocks.
template <typename T>
inline void path_forward(const Path& p, const Vec<T>* X1, const Vec<T>* X2, const Weights<T>& w,
                         Vec<T>* O, const PathScratch<T>& sc) {
  if (p.mode == UVU) return uvu_forward(p, X1, X2, w, O, sc);
  const Vec<T> c = splat((T)p.coef);
  const int dk = p.dk;
  for_pairs(
      p, [&](int v) { contract_x2<T>(p, X2 + (int64_t)v * p.d2, sc.A); },
      [&](int u, int v, int q) {
        const Mix m = mix_of(p, u, v, q);
        if (!m.fan) {
          contract_x1_into<T>(p, sc.A, X1 + (int64_t)u * p.d1, w.times(m.wi, c), O + (int64_t)m.o * dk);
          return;
        }
        contract_x1<T>(p, sc.A, X1 + (int64_t)u * p.d1, sc.z);
        {
          for (int o = 0; o < p.mo; ++o) {
            const Vec<T> cw = w.times(m.wi + o, c);
            Vec<T>* out = O + (int64_t)o * dk;
            for (int k = 0; k < dk; ++k) out[k] += cw * sc.z[k];
          }
        }
      },
      [](int) {});
}

// The path's contributions to the gradients of <GO, out> w.r.t. x1 (GX1), x2 (GX2) and
// its weights (GW, path-relative); a null target is skipped.
template <typename T>
inline void path_backward(const Path& p, const Vec<T>* GO, const Vec<T>* X1, const Vec<T>* X2,
                          const Weights<T>& w, Vec<T>* GX1, Vec<T>* GX2, Vec<T>* GW,
                          const PathScratch<T>& sc) {
  if (p.w_off < 0) GW = nullptr;
  if (p.mode == UVU) return uvu_backward(p, GO, X1, X2, w, GX1, GX2, GW, sc);
  const Vec<T> c = splat((T)p.coef);
  const int dk = p.dk, S = (int)p.s_i.size();
  for_pairs(
      p,
      [&](int v) {
        contract_x2<T>(p, X2 + (int64_t)v * p.d2, sc.A);
        if (GX2 != nullptr)
          for (int s = 0; s < S; ++s) sc.gA[s] = Vec<T>{};
      },
      [&](int u, int v, int q) {
        const Vec<T>* x1u = X1 + (int64_t)u * p.d1;
        const Mix m = mix_of(p, u, v, q);
        if (GW != nullptr) contract_x1<T>(p, sc.A, x1u, sc.z);
        if (m.fan) {
          for (int k = 0; k < dk; ++k) sc.gz[k] = Vec<T>{};
          for (int o = 0; o < p.mo; ++o) {
            const Vec<T>* go = GO + (int64_t)o * dk;
            const Vec<T> cw = w.times(m.wi + o, c);
            for (int k = 0; k < dk; ++k) sc.gz[k] += cw * go[k];
            if (GW != nullptr) {
              Vec<T> acc = {};
              for (int k = 0; k < dk; ++k) acc += go[k] * sc.z[k];
              GW[m.wi + o] += c * acc;
            }
          }
        } else {
          const Vec<T>* go = GO + (int64_t)m.o * dk;
          const Vec<T> cw = w.times(m.wi, c);
          for (int k = 0; k < dk; ++k) sc.gz[k] = cw * go[k];
          if (GW != nullptr) {
            Vec<T> acc = {};
            for (int k = 0; k < dk; ++k) acc += go[k] * sc.z[k];
            GW[m.wi] += c * acc;
          }
        }
        if (GX1 != nullptr) contract_gz<T>(p, sc.A, sc.gz, GX1 + (int64_t)u * p.d1);
        if (GX2 != nullptr)
          for (int s = 0; s < S; ++s) sc.gA[s] += sc.gz[p.s_k[s]] * x1u[p.s_i[s]];
      },
      [&](int v) {
        if (GX2 == nullptr) return;
        Vec<T>* g2 = GX2 + (int64_t)v * p.d2;
        for (int s = 0; s < S; ++s)
          for (int e = p.s_begin[s]; e < p.s_begin[s + 1]; ++e) g2[p.g_j[e]] += sc.gA[s] * (T)p.g_c[e];
      });
}

// ------------------------------------------------------------------ the chunk loop
// Per-call scratch, sized from the problem.
// Held as doubles and aligned by hand: a std::vector of the vector type would be the
// same template instantiation in every per-ISA file (GCC vector types do not carry the
// namespace), compiled with different targets and calling conventions.
template <typename T>
struct Scratch {
  std::vector<double> buf;
  Vec<T> *X1, *X2, *G1in, *G2in, *GX1, *GX2, *O, *GO, *Wp, *GGWp, *GWp, *GWall;
  PathScratch<T> ps;
  int64_t max_blk = 0, max_w = 0;

  Scratch(const Problem& P, bool gg, bool gw_all) {
    int64_t S = 1, dk = 1, y = 1, gzs = 1, m = 1;
    for (const Path& p : P.paths) {
      y = std::max<int64_t>(y, (int64_t)p.m1 * p.d1);
      gzs = std::max<int64_t>(gzs, (int64_t)p.m1 * p.dk);
      m = std::max<int64_t>(m, p.m1);
      S = std::max<int64_t>(S, (int64_t)p.s_i.size());
      dk = std::max<int64_t>(dk, p.dk);
      max_blk = std::max<int64_t>(max_blk, (int64_t)p.mo * p.dk);
      max_w = std::max<int64_t>(max_w, p.w_numel());
    }
    const int64_t n1 = P.dim1, n2 = P.dim2;
    const int64_t total = 2 * (n1 + n2) + (gg ? n1 + n2 : 0) + 2 * max_blk + 3 * max_w +
                          (gw_all ? P.dim_w : 0) + 2 * S + 2 * dk + y + gzs + m;
    buf.assign((size_t)(std::max<int64_t>(total, 1) + 1) * 4, 0.0);
    Vec<T>* q = (Vec<T>*)(((uintptr_t)buf.data() + 31) & ~(uintptr_t)31);
    auto take = [&](int64_t n) {
      Vec<T>* r = q;
      q += n;
      return r;
    };
    X1 = take(n1);
    X2 = take(n2);
    GX1 = take(n1);
    GX2 = take(n2);
    G1in = gg ? take(n1) : nullptr;
    G2in = gg ? take(n2) : nullptr;
    O = take(max_blk);
    GO = take(max_blk);
    Wp = take(max_w);
    GGWp = take(max_w);
    GWp = take(max_w);
    GWall = gw_all ? take(P.dim_w) : nullptr;
    ps.A = take(S);
    ps.gA = take(S);
    ps.z = take(dk);
    ps.gz = take(dk);
    ps.Y = take(y);
    ps.GZ = take(gzs);
    ps.GWu = take(m);
  }
};

// The weights of path p for the chunk from input w (per-row: transposed into dst).
template <typename T>
inline Weights<T> path_weights(const Path& p, const In<T>& w, int64_t row0, int n, Vec<T>* dst) {
  Weights<T> r;
  if (p.w_off < 0 || w.p == nullptr) return r;
  if (w.rows == 1) {
    r.s = w.p + p.w_off;
  } else {
    load_cols(w.p, w.ld, row0, n, p.w_off, p.w_numel(), dst, w.idx);
    r.v = dst;
  }
  return r;
}

// Where a path's weight gradient accumulates: a per-chunk block (per-row weights,
// stored after the path) or the range's accumulator (shared weights).
template <typename T>
inline Vec<T>* weight_grad_target(const Path& p, const Call<T>& call, Scratch<T>& sc) {
  if (call.gw == nullptr && sc.GWall == nullptr) return nullptr;
  if (p.w_off < 0) return nullptr;
  if (sc.GWall != nullptr) return sc.GWall + p.w_off;
  for (int64_t i = 0; i < p.w_numel(); ++i) sc.GWp[i] = Vec<T>{};
  return sc.GWp;
}

template <typename T>
inline void store_weight_grad(const Path& p, const Call<T>& call, Scratch<T>& sc, int64_t row0, int n) {
  if (p.w_off < 0 || call.gw == nullptr || sc.GWall != nullptr) return;
  store_cols(sc.GWp, call.gw, call.prob->dim_w, row0, n, p.w_off, p.w_numel(), call.nt, call.gw_idx);
}

// Gradient outputs of one call: per-row ones are stored per chunk; broadcast ones
// accumulate over the range and are flushed into the range's partials at the end.
template <typename T>
struct GradTargets {
  bool g1, g2, gw, b1, b2, bw;
  GradTargets(const Call<T>& c, const Partials<T>& part)
      : g1(c.g1 != nullptr || part.g1 != nullptr),
        g2(c.g2 != nullptr || part.g2 != nullptr),
        gw(c.gw != nullptr || part.gw != nullptr),
        b1(part.g1 != nullptr),
        b2(part.g2 != nullptr),
        bw(part.gw != nullptr) {}
};

template <typename T>
inline void begin_grads(const Call<T>& c, const GradTargets<T>& t, Scratch<T>& sc, bool first) {
  const Problem& P = *c.prob;
  if (t.g1 && (!t.b1 || first))
    for (int64_t i = 0; i < P.dim1; ++i) sc.GX1[i] = Vec<T>{};
  if (t.g2 && (!t.b2 || first))
    for (int64_t i = 0; i < P.dim2; ++i) sc.GX2[i] = Vec<T>{};
  if (t.bw && first)
    for (int64_t i = 0; i < P.dim_w; ++i) sc.GWall[i] = Vec<T>{};
}

template <typename T>
inline void end_chunk_grads(const Call<T>& c, const GradTargets<T>& t, Scratch<T>& sc, int64_t row0,
                            int n) {
  const Problem& P = *c.prob;
  if (t.g1 && !t.b1) store_cols(sc.GX1, c.g1, P.dim1, row0, n, 0, P.dim1, c.nt, c.g1_idx, c.g1_acc);
  if (t.g2 && !t.b2) store_cols(sc.GX2, c.g2, P.dim2, row0, n, 0, P.dim2, c.nt, c.g2_idx);
}

template <typename T>
inline void end_range_grads(const Call<T>& c, const GradTargets<T>& t, Scratch<T>& sc,
                            const Partials<T>& part) {
  const Problem& P = *c.prob;
  if (t.b1) flush_lanes(sc.GX1, P.dim1, part.g1);
  if (t.b2) flush_lanes(sc.GX2, P.dim2, part.g2);
  if (t.bw) flush_lanes(sc.GWall, P.dim_w, part.gw);
}

// Prefetches the rows that the next chunk [r, r + n) of a row-mapped input will read
// (the convolution gathers per-edge rows, e.g. the weights, in an order the hardware
// prefetchers cannot follow). Inputs read in row order, or broadcast, need none.
template <typename T>
inline void prefetch_rows(const In<T>& x, int64_t r, int64_t row1, int64_t cols) {
  if (x.p == nullptr || x.idx == nullptr || x.rows == 1) return;
  constexpr int64_t per_line = 64 / sizeof(T);
  const int64_t end = std::min<int64_t>(row1, r + lanes<T>());
  for (int64_t q = r; q < end; ++q) {
    const T* row = x.p + x.idx[q] * x.ld;
    for (int64_t c = 0; c < cols; c += per_line) __builtin_prefetch(row + c);
  }
}

template <typename T>
void forward(const Call<T>& c, int64_t row0, int64_t row1, const Partials<T>&) {
  constexpr int W = lanes<T>();
  const Problem& P = *c.prob;
  Scratch<T> sc(P, false, false);
  load_broadcast(c.x1, P.dim1, sc.X1);
  load_broadcast(c.x2, P.dim2, sc.X2);
  for (int64_t r = row0; r < row1; r += W) {
    const int n = (int)std::min<int64_t>(W, row1 - r);
    prefetch_rows(c.w, r + W, row1, P.dim_w);
    load_rows(c.x1, r, n, P.dim1, sc.X1);
    load_rows(c.x2, r, n, P.dim2, sc.X2);
    for (size_t b = 0; b + 1 < P.block_start.size(); ++b) {
      const Path& first = P.paths[P.block_order[P.block_start[b]]];
      const int64_t width = (int64_t)first.mo * first.dk;
      for (int64_t i = 0; i < width; ++i) sc.O[i] = Vec<T>{};
      for (int e = P.block_start[b]; e < P.block_start[b + 1]; ++e) {
        const Path& p = P.paths[P.block_order[e]];
        const Weights<T> w = path_weights(p, c.w, r, n, sc.Wp);
        path_forward(p, sc.X1 + p.off1, sc.X2 + p.off2, w, sc.O, sc.ps);
      }
      store_cols(sc.O, c.out, P.dim_out, r, n, first.offo, width, c.nt, c.out_idx, c.out_acc);
    }
  }
  store_fence();
}

template <typename T>
void backward(const Call<T>& c, int64_t row0, int64_t row1, const Partials<T>& part) {
  constexpr int W = lanes<T>();
  const Problem& P = *c.prob;
  const GradTargets<T> t(c, part);
  Scratch<T> sc(P, false, t.bw);
  load_broadcast(c.x1, P.dim1, sc.X1);
  load_broadcast(c.x2, P.dim2, sc.X2);
  for (int64_t r = row0; r < row1; r += W) {
    const int n = (int)std::min<int64_t>(W, row1 - r);
    prefetch_rows(c.w, r + W, row1, P.dim_w);
    prefetch_rows(c.go, r + W, row1, P.dim_out);
    load_rows(c.x1, r, n, P.dim1, sc.X1);
    load_rows(c.x2, r, n, P.dim2, sc.X2);
    begin_grads(c, t, sc, r == row0);
    for (size_t b = 0; b + 1 < P.block_start.size(); ++b) {
      const Path& first = P.paths[P.block_order[P.block_start[b]]];
      load_cols(c.go.p, c.go.ld, r, n, first.offo, (int64_t)first.mo * first.dk, sc.GO, c.go.idx);
      for (int e = P.block_start[b]; e < P.block_start[b + 1]; ++e) {
        const Path& p = P.paths[P.block_order[e]];
        const Weights<T> w = path_weights(p, c.w, r, n, sc.Wp);
        Vec<T>* gw = t.gw ? weight_grad_target(p, c, sc) : nullptr;
        path_backward(p, sc.GO, sc.X1 + p.off1, sc.X2 + p.off2, w, t.g1 ? sc.GX1 + p.off1 : nullptr,
                      t.g2 ? sc.GX2 + p.off2 : nullptr, gw, sc.ps);
        if (gw != nullptr) store_weight_grad(p, c, sc, r, n);
      }
    }
    end_chunk_grads(c, t, sc, r, n);
  }
  end_range_grads(c, t, sc, part);
  store_fence();
}

// With f the forward and b_x1, b_x2, b_W the backward's partials (all linear in each
// argument), the derivatives of the backward's outputs contracted with (gg1, gg2, ggW):
//   d/d grad_out: f(gg1, x2, W) + f(x1, gg2, W) + f(x1, x2, ggW)
//   d/d x1:       b_x1(grad_out; x2 = gg2, W) + b_x1(grad_out; x2, W = ggW)
//   d/d x2:       b_x2(grad_out; x1 = gg1, W) + b_x2(grad_out; x1, W = ggW)
//   d/d W:        b_W(grad_out; x1 = gg1, x2) + b_W(grad_out; x1, x2 = gg2)
template <typename T>
void double_backward(const Call<T>& c, int64_t row0, int64_t row1, const Partials<T>& part) {
  constexpr int W = lanes<T>();
  const Problem& P = *c.prob;
  const GradTargets<T> t(c, part);
  Scratch<T> sc(P, true, t.bw);
  const bool h1 = c.gg1.p != nullptr, h2 = c.gg2.p != nullptr, hw = c.ggw.p != nullptr;
  load_broadcast(c.x1, P.dim1, sc.X1);
  load_broadcast(c.x2, P.dim2, sc.X2);
  load_broadcast(c.gg1, P.dim1, sc.G1in);
  load_broadcast(c.gg2, P.dim2, sc.G2in);
  for (int64_t r = row0; r < row1; r += W) {
    const int n = (int)std::min<int64_t>(W, row1 - r);
    load_rows(c.x1, r, n, P.dim1, sc.X1);
    load_rows(c.x2, r, n, P.dim2, sc.X2);
    load_rows(c.gg1, r, n, P.dim1, sc.G1in);
    load_rows(c.gg2, r, n, P.dim2, sc.G2in);
    begin_grads(c, t, sc, r == row0);
    for (size_t b = 0; b + 1 < P.block_start.size(); ++b) {
      const Path& first = P.paths[P.block_order[P.block_start[b]]];
      const int64_t width = (int64_t)first.mo * first.dk;
      load_cols(c.go.p, c.go.ld, r, n, first.offo, width, sc.GO, c.go.idx);
      for (int64_t i = 0; i < width; ++i) sc.O[i] = Vec<T>{};
      for (int e = P.block_start[b]; e < P.block_start[b + 1]; ++e) {
        const Path& p = P.paths[P.block_order[e]];
        const Vec<T>*x1 = sc.X1 + p.off1, *x2 = sc.X2 + p.off2;
        const Vec<T>*y1 = h1 ? sc.G1in + p.off1 : nullptr, *y2 = h2 ? sc.G2in + p.off2 : nullptr;
        Vec<T>* g1 = t.g1 ? sc.GX1 + p.off1 : nullptr;
        Vec<T>* g2 = t.g2 ? sc.GX2 + p.off2 : nullptr;
        const Weights<T> w = path_weights(p, c.w, r, n, sc.Wp);
        const bool wgg = hw && p.w_off >= 0;
        const Weights<T> ww = wgg ? path_weights(p, c.ggw, r, n, sc.GGWp) : Weights<T>{};
        Vec<T>* gw = t.gw ? weight_grad_target(p, c, sc) : nullptr;
        if (h1) path_forward(p, y1, x2, w, sc.O, sc.ps);
        if (h2) path_forward(p, x1, y2, w, sc.O, sc.ps);
        if (wgg) path_forward(p, x1, x2, ww, sc.O, sc.ps);
        if (h2 && (g1 != nullptr || gw != nullptr)) path_backward(p, sc.GO, x1, y2, w, g1, (Vec<T>*)nullptr, gw, sc.ps);
        if (h1 && (g2 != nullptr || gw != nullptr)) path_backward(p, sc.GO, y1, x2, w, (Vec<T>*)nullptr, g2, gw, sc.ps);
        if (wgg && (g1 != nullptr || g2 != nullptr))
          path_backward(p, sc.GO, x1, x2, ww, g1, g2, (Vec<T>*)nullptr, sc.ps);
        if (gw != nullptr) store_weight_grad(p, c, sc, r, n);
      }
      if (c.out != nullptr) store_cols(sc.O, c.out, P.dim_out, r, n, first.offo, width, c.nt, c.out_idx, c.out_acc);
    }
    end_chunk_grads(c, t, sc, r, n);
  }
  end_range_grads(c, t, sc, part);
  store_fence();
}

}  // namespace EQUIOPS_TP_NS
}  // namespace tp
}  // namespace equiops
