// Device kernels of the Clebsch-Gordan tensor product (forward, backward, double backward).
//
// Plain CUDA C++ without torch headers (compiled by csrc/cuda/tensor_product_cuda.cu and,
// torch-free, by csrc/cuda/compile_check.cu; NVRTC-ready like segment_kernels.cuh).
// Semantics: the docstring of python/equiops/tp_problem.py and
// python/equiops/reference/tensor_product.py.
//
// One compiled kernel serves every problem: the problem is a device-side table (built by
// the glue from equiops::tp::Problem, layout below) that the kernels interpret. This
// costs some speed against per-problem generated code, but there is nothing to compile
// per problem and one code path to get right.
//
// Thread layout (all three kernels). A block of kThreads threads walks tiles of R
// consecutive rows (grid-stride over tiles). For each tile it takes the paths one after
// the other, and splits each path's channel pairs q (the (u, v) of the path, in weight
// order) into chunks of Qp pairs, so that R * Qp * dk accumulators fit in a shared-memory
// buffer. Per chunk:
//   phase 1: one thread per (row, pair) computes z[q, k] = sum C x1[u, i] x2[v, j] (x2
//            contracted first, through the (i, k) groups of the table) and/or the
//            gradient of z, gz[q, k] = sum_w W(q, w) c grad_out[w, k], into shared memory;
//   __syncthreads();
//   phase 2: one thread per result element (an output element (w, k), a weight, an
//            element (u, i) of x1, or (v, j) of x2) adds the chunk's contribution to it;
//   __syncthreads().
// In phase 2 every result element of the tile has exactly one thread, and the chunks and
// paths of a tile are separated by barriers, so results accumulate in global memory with
// plain read-modify-writes in a fixed order: no atomics, bitwise reproducible. Several
// paths may write the same output block (they simply follow each other).
//
// Row broadcasting. x1 (N1, dim1), x2 (N2, dim2), weight (Nw, dim_w) have N1, N2, Nw in
// {1, N}; an input with one row is read with row stride 0. The gradient of a broadcast
// input is a sum over rows: each block adds its rows into its own row of a zero-filled
// (gridDim.x, width) workspace (a phase-2 thread then owns one element and loops over
// the tile's rows itself), and tp_sum_rows_kernel adds the workspace rows in order. The
// grid size depends on the shapes only, never on the device, so the sum is reproducible.
//
// Types: T in {float, double, __half, __nv_bfloat16}; everything accumulates in
// Acc = AccOf<T>::type (double for double, float otherwise), and the kernels write
// Acc-typed results (the glue converts to T for the 16-bit types).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if defined(__CUDACC_RTC__) && !defined(EQUIOPS_NO_HOST_HELPERS)
#define EQUIOPS_NO_HOST_HELPERS
#endif

#if !defined(EQUIOPS_NO_HOST_HELPERS)
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../include/equiops/tp_problem.h"
#endif

namespace equiops {
namespace tpk {

typedef long long i64;

// Threads per block of the main kernels (every launch uses exactly this many).
constexpr int kThreads = 256;
// Shared memory of the main kernels, all buffers together (below the 48 KiB default).
constexpr int kSmemBudget = 32768;
// Most rows per tile.
constexpr int kMaxRowsPerTile = 32;

// Connection modes, numbered as equiops::tp::Mode (csrc/include/equiops/tp_problem.h).
enum : int { M_UVW = 0, M_UVU, M_UVV, M_UUW, M_UUU, M_UVUV, M_UVU_LT_V, M_U_LT_VW };

// ---------------------------------------------------------------------------------------
// Device table of a problem: one int buffer and one coefficient buffer (Acc).
//
// ints[p * kHdr + H_*]: the header of path p. The H_SI.. fields are offsets into the same
// int buffer, H_C* offsets into the coefficient buffer. Per path:
//   si[ns], sk[ns]   the (i, k) groups of the CG nonzeros (sorted by i, then k)
//   sb[ns + 1]       group s owns nonzeros [sb[s], sb[s+1]) of gj / gc
//   ib[d1 + 1]       the groups with i == i0 are [ib[i0], ib[i0+1])
//   gj[nnz], gc[nnz] column j and value C of the nonzeros, group by group
//   jb[d2 + 1]       the same nonzeros grouped by j: [jb[j0], jb[j0+1]) of ji / jk / jc
//   ji[nnz], jk[nnz], jc[nnz]
//   coef             the path coefficient (at H_CCOEF)
enum HdrField : int {
  H_MODE = 0, H_M1, H_M2, H_MO, H_D1, H_D2, H_DK, H_OFF1, H_OFF2, H_OFFO, H_WOFF,
  H_P,     // number of channel pairs
  H_NS,    // number of (i, k) groups
  H_NNZ,   // number of CG nonzeros
  H_SI, H_SK, H_SB, H_IB, H_GJ, H_JB, H_JI, H_JK,  // int offsets
  H_CCOEF, H_CGC, H_CJC,                           // coefficient offsets
  kHdr
};

struct TPTables {
  const int* ints;
  int npaths;
};

// Shapes of one launch (plain struct passed by value).
struct TPGeom {
  i64 N;                           // rows of the output
  i64 dim1, dim2, dim_out, dim_w;  // row widths
  i64 s1, s2, sw;                  // row strides of x1, x2, weight: 0 when broadcast, else the width
  i64 ntiles;                      // ceil(N / R)
  int R;                           // rows per tile
  int zcap;                        // Acc elements of each shared-memory buffer (>= R * max dk)
  int bc1, bc2, bcw;               // gradient of x1 / x2 / weight goes to the per-block workspace
};

// ---------------------------------------------------------------------------------------
// Scalars.

template <typename T>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

__device__ __forceinline__ float ld_acc(const float* p) { return *p; }
__device__ __forceinline__ double ld_acc(const double* p) { return *p; }
__device__ __forceinline__ float ld_acc(const __half* p) { return __half2float(*p); }
__device__ __forceinline__ float ld_acc(const __nv_bfloat16* p) { return __bfloat162float(*p); }

__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }

// Weight idx of a path's weight row; unweighted paths (wr == nullptr) have weight 1.
template <typename Acc, typename T>
__device__ __forceinline__ Acc wgt(const T* wr, int idx) {
  return wr == nullptr ? Acc(1) : ld_acc(wr + idx);
}

// ---------------------------------------------------------------------------------------
// One path, read from the table.

template <typename Acc>
struct PathView {
  int mode, m1, m2, mo, d1, d2, dk, off1, off2, offo, w_off, P, ns;
  bool mixing;    // uvw, uuw, u<vw: every pair meets every output channel through W[q, w]
  bool weighted;
  const int *si, *sk, *sb, *ib, *gj, *jb, *ji, *jk;
  const Acc *gc, *jc;
  Acc coef;
};

template <typename Acc>
__device__ __forceinline__ PathView<Acc> load_path(const TPTables& tab, const Acc* cv, int p) {
  const int* h = tab.ints + p * kHdr;
  PathView<Acc> v;
  v.mode = h[H_MODE];
  v.m1 = h[H_M1];
  v.m2 = h[H_M2];
  v.mo = h[H_MO];
  v.d1 = h[H_D1];
  v.d2 = h[H_D2];
  v.dk = h[H_DK];
  v.off1 = h[H_OFF1];
  v.off2 = h[H_OFF2];
  v.offo = h[H_OFFO];
  v.w_off = h[H_WOFF];
  v.P = h[H_P];
  v.ns = h[H_NS];
  v.mixing = v.mode == M_UVW || v.mode == M_UUW || v.mode == M_U_LT_VW;
  v.weighted = v.w_off >= 0;
  v.si = tab.ints + h[H_SI];
  v.sk = tab.ints + h[H_SK];
  v.sb = tab.ints + h[H_SB];
  v.ib = tab.ints + h[H_IB];
  v.gj = tab.ints + h[H_GJ];
  v.jb = tab.ints + h[H_JB];
  v.ji = tab.ints + h[H_JI];
  v.jk = tab.ints + h[H_JK];
  v.gc = cv + h[H_CGC];
  v.jc = cv + h[H_CJC];
  v.coef = cv[h[H_CCOEF]];
  return v;
}

// Pairs per chunk: R rows of Qp pairs of dk accumulators fill one buffer of zcap.
template <typename Acc>
__device__ __forceinline__ int chunk_pairs(const PathView<Acc>& p, int R, int zcap) {
  const int q = zcap / (R * p.dk);
  return imin(p.P, imax(q, 1));
}

// First pair of row u among the pairs u < v (torch.triu_indices(m1, m2, 1) order).
__device__ __forceinline__ int tri_start(int m2, int u) { return u * (m2 - 1) - u * (u - 1) / 2; }

// The channels (u, v) of pair q (0 <= q < P).
template <typename Acc>
__device__ __forceinline__ void pair_uv(const PathView<Acc>& p, int q, int& u, int& v) {
  switch (p.mode) {
    case M_UUW:
    case M_UUU:
      u = q;
      v = q;
      return;
    case M_UVU_LT_V:
    case M_U_LT_VW: {
      // Rows of m2 - 1 - u pairs; a short walk (m1 steps at most) instead of a sqrt formula
      // whose rounding would need care.
      int uu = 0, rem = q;
      while (uu < p.m1 - 1 && rem >= p.m2 - 1 - uu) {
        rem -= p.m2 - 1 - uu;
        ++uu;
      }
      u = uu;
      v = uu + 1 + rem;
      return;
    }
    default:
      u = q / p.m2;
      v = q - u * p.m2;
      return;
  }
}

// Output channel of pair q in the modes that are not mixing (uvu, uvv, uuu, uvuv, uvu<v).
template <typename Acc>
__device__ __forceinline__ int out_channel(const PathView<Acc>& p, int q) {
  if (p.mode == M_UVU) return q / p.m2;
  if (p.mode == M_UVV) return q % p.m2;
  return q;  // uuu: u = q; uvuv: u m2 + v = q; uvu<v: q
}

// Index into the path's weights of the weight joining pair q to output channel w.
template <typename Acc>
__device__ __forceinline__ int weight_index(const PathView<Acc>& p, int q, int w) {
  return p.mixing ? q * p.mo + w : q;
}

// f(q, v) for the pairs q in [q0, q1) whose first channel is u, in increasing q.
template <typename Acc, typename F>
__device__ __forceinline__ void for_pairs_of_u(const PathView<Acc>& p, int u, int q0, int q1, F&& f) {
  switch (p.mode) {
    case M_UUW:
    case M_UUU:
      if (u >= q0 && u < q1) f(u, u);
      return;
    case M_UVU_LT_V:
    case M_U_LT_VW: {
      const int s = tri_start(p.m2, u);
      const int hi = imin(s + (p.m2 - 1 - u), q1);
      for (int q = imax(s, q0); q < hi; ++q) f(q, u + 1 + (q - s));
      return;
    }
    default: {
      const int s = u * p.m2;
      const int hi = imin(s + p.m2, q1);
      for (int q = imax(s, q0); q < hi; ++q) f(q, q - s);
      return;
    }
  }
}

// f(q, u) for the pairs q in [q0, q1) whose second channel is v, in increasing q.
template <typename Acc, typename F>
__device__ __forceinline__ void for_pairs_of_v(const PathView<Acc>& p, int v, int q0, int q1, F&& f) {
  switch (p.mode) {
    case M_UUW:
    case M_UUU:
      if (v >= q0 && v < q1) f(v, v);
      return;
    case M_UVU_LT_V:
    case M_U_LT_VW: {
      const int ue = imin(v, p.m1);
      for (int u = 0; u < ue; ++u) {
        const int q = tri_start(p.m2, u) + (v - u - 1);  // increasing in u
        if (q >= q1) break;
        if (q >= q0) f(q, u);
      }
      return;
    }
    default: {
      int u = q0 > v ? (q0 - v + p.m2 - 1) / p.m2 : 0;
      for (int q = u * p.m2 + v; u < p.m1 && q < q1; ++u, q += p.m2) f(q, u);
      return;
    }
  }
}

// f(q) for the pairs q in [q0, q1) that write output channel w, in increasing q.
template <typename Acc, typename F>
__device__ __forceinline__ void for_pairs_of_out(const PathView<Acc>& p, int w, int q0, int q1, F&& f) {
  switch (p.mode) {
    case M_UVW:
    case M_UUW:
    case M_U_LT_VW:
      for (int q = q0; q < q1; ++q) f(q);
      return;
    case M_UVU:
      for_pairs_of_u(p, w, q0, q1, [&](int q, int) { f(q); });
      return;
    case M_UVV:
      for_pairs_of_v(p, w, q0, q1, [&](int q, int) { f(q); });
      return;
    default:  // uuu, uvuv, uvu<v: output channel w is pair w
      if (w >= q0 && w < q1) f(w);
      return;
  }
}

// ---------------------------------------------------------------------------------------
// Building blocks (a: an x1-like row at the path's block, b: an x2-like row at its block).

// z[k] += sum_{(i, j, k)} C a[u, i] b[v, j], for all k (z: this pair's dk accumulators).
template <typename Acc, typename T>
__device__ __forceinline__ void add_z(const PathView<Acc>& p, const T* a, const T* b, int u, int v, Acc* z) {
  const T* au = a + u * p.d1;
  const T* bv = b + v * p.d2;
  for (int s = 0; s < p.ns; ++s) {
    Acc acc = Acc(0);
    const int e1 = p.sb[s + 1];
    for (int e = p.sb[s]; e < e1; ++e) acc += p.gc[e] * ld_acc(bv + p.gj[e]);
    z[p.sk[s]] += acc * ld_acc(au + p.si[s]);
  }
}

// gz[k] = c sum_w W(q, w) go[w, k] (go: the grad_out row at the path's output block).
template <typename Acc, typename T>
__device__ __forceinline__ void set_gz(const PathView<Acc>& p, const T* go, const T* wr, int q, Acc* gz) {
  if (p.mixing) {
    for (int k = 0; k < p.dk; ++k) {
      Acc acc = Acc(0);
      for (int w = 0; w < p.mo; ++w) acc += wgt<Acc>(wr, q * p.mo + w) * ld_acc(go + w * p.dk + k);
      gz[k] = p.coef * acc;
    }
  } else {
    const int w = out_channel(p, q);
    const Acc s = p.coef * wgt<Acc>(wr, q);
    for (int k = 0; k < p.dk; ++k) gz[k] = s * ld_acc(go + w * p.dk + k);
  }
}

// sum over the chunk's pairs q of output channel w of W(q, w) z[q, k] (z: the row's
// chunk buffer, pair q at (q - q0) * dk).
template <typename Acc, typename T>
__device__ __forceinline__ Acc out_contrib(const PathView<Acc>& p, int w, int k, int q0, int q1, const T* wr,
                                           const Acc* z) {
  Acc acc = Acc(0);
  for_pairs_of_out(p, w, q0, q1, [&](int q) { acc += wgt<Acc>(wr, weight_index(p, q, w)) * z[(q - q0) * p.dk + k]; });
  return acc;
}

// sum over the chunk's pairs (u, v) of sum_{(i, j, k)} C b[v, j] gz[q, k]: what x1[u, i]
// receives.
template <typename Acc, typename T>
__device__ __forceinline__ Acc x1_contrib(const PathView<Acc>& p, int u, int i, int q0, int q1, const T* b,
                                          const Acc* gz) {
  Acc acc = Acc(0);
  const int s0 = p.ib[i], s1 = p.ib[i + 1];
  if (s0 == s1) return acc;
  for_pairs_of_u(p, u, q0, q1, [&](int q, int v) {
    const T* bv = b + v * p.d2;
    const Acc* gzq = gz + (q - q0) * p.dk;
    for (int s = s0; s < s1; ++s) {
      Acc a = Acc(0);
      const int e1 = p.sb[s + 1];
      for (int e = p.sb[s]; e < e1; ++e) a += p.gc[e] * ld_acc(bv + p.gj[e]);
      acc += a * gzq[p.sk[s]];
    }
  });
  return acc;
}

// sum over the chunk's pairs (u, v) of sum_{(i, j, k)} C a[u, i] gz[q, k]: what x2[v, j]
// receives.
template <typename Acc, typename T>
__device__ __forceinline__ Acc x2_contrib(const PathView<Acc>& p, int v, int j, int q0, int q1, const T* a,
                                          const Acc* gz) {
  Acc acc = Acc(0);
  const int e0 = p.jb[j], e1 = p.jb[j + 1];
  if (e0 == e1) return acc;
  for_pairs_of_v(p, v, q0, q1, [&](int q, int u) {
    const T* au = a + u * p.d1;
    const Acc* gzq = gz + (q - q0) * p.dk;
    for (int e = e0; e < e1; ++e) acc += p.jc[e] * ld_acc(au + p.ji[e]) * gzq[p.jk[e]];
  });
  return acc;
}

// sum_k go[w, k] z[q, k].
template <typename Acc, typename T>
__device__ __forceinline__ Acc dot_k(const PathView<Acc>& p, const T* go, int w, const Acc* zq) {
  Acc acc = Acc(0);
  for (int k = 0; k < p.dk; ++k) acc += ld_acc(go + w * p.dk + k) * zq[k];
  return acc;
}

// The rows a phase-2 item covers. `bc`: the item's result is summed over the tile's rows
// (a broadcast input's gradient; there is one item per element, `per` of them); else one
// item per (row, element). Sets *e (the element), [*r0, *r1) (tile rows); false when the
// item's row lies past the end.
__device__ __forceinline__ bool item_rows(int t, int per, bool bc, int R, i64 n0, i64 N, int* e, int* r0,
                                          int* r1) {
  if (bc) {
    *e = t;
    *r0 = 0;
    const i64 left = N - n0;
    *r1 = left < R ? static_cast<int>(left) : R;
    return true;
  }
  const int r = t / per;
  *e = t - r * per;
  *r0 = r;
  *r1 = r + 1;
  return n0 + r < N;
}

// ---------------------------------------------------------------------------------------
// Forward: out (N, dim_out) Acc, zero-filled by the caller.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tp_forward_kernel(TPTables tab, const typename AccOf<T>::type* __restrict__ cv, TPGeom g,
                      const T* __restrict__ x1, const T* __restrict__ x2, const T* __restrict__ w,
                      typename AccOf<T>::type* __restrict__ out) {
  typedef typename AccOf<T>::type Acc;
  extern __shared__ __align__(16) unsigned char tp_smem[];
  Acc* zbuf = reinterpret_cast<Acc*>(tp_smem);
  const int R = g.R;
  const int tid = static_cast<int>(threadIdx.x);
  const int nth = static_cast<int>(blockDim.x);

  for (i64 tile = blockIdx.x; tile < g.ntiles; tile += gridDim.x) {
    const i64 n0 = tile * R;
    for (int pi = 0; pi < tab.npaths; ++pi) {
      const PathView<Acc> p = load_path(tab, cv, pi);
      if (p.P <= 0) continue;
      const int Qp = chunk_pairs(p, R, g.zcap);
      for (int q0 = 0; q0 < p.P; q0 += Qp) {
        const int q1 = imin(q0 + Qp, p.P), Qc = q1 - q0;
        for (int t = tid; t < R * Qc; t += nth) {
          const int r = t / Qc, ql = t - r * Qc;
          const i64 n = n0 + r;
          if (n >= g.N) continue;
          int u, v;
          pair_uv(p, q0 + ql, u, v);
          Acc* z = zbuf + (r * Qp + ql) * p.dk;
          for (int k = 0; k < p.dk; ++k) z[k] = Acc(0);
          add_z(p, x1 + n * g.s1 + p.off1, x2 + n * g.s2 + p.off2, u, v, z);
        }
        __syncthreads();
        const int per = p.mo * p.dk;
        for (int t = tid; t < R * per; t += nth) {
          const int r = t / per, e = t - r * per;
          const i64 n = n0 + r;
          if (n >= g.N) continue;
          const int wc = e / p.dk, k = e - wc * p.dk;
          const T* wr = p.weighted ? w + n * g.sw + p.w_off : nullptr;
          const Acc acc = out_contrib(p, wc, k, q0, q1, wr, zbuf + r * Qp * p.dk);
          out[n * g.dim_out + p.offo + e] += p.coef * acc;
        }
        __syncthreads();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Backward: gradients of <grad_out, out>. g1 / g2 / gw: nullptr when not wanted; else
// (N, width) zero-filled, or with g.bc* the zero-filled (gridDim.x, width) workspace.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tp_backward_kernel(TPTables tab, const typename AccOf<T>::type* __restrict__ cv, TPGeom g,
                       const T* __restrict__ go, const T* __restrict__ x1, const T* __restrict__ x2,
                       const T* __restrict__ w, typename AccOf<T>::type* __restrict__ g1,
                       typename AccOf<T>::type* __restrict__ g2, typename AccOf<T>::type* __restrict__ gw) {
  typedef typename AccOf<T>::type Acc;
  extern __shared__ __align__(16) unsigned char tp_smem[];
  Acc* zbuf = reinterpret_cast<Acc*>(tp_smem);  // z of the chunk (for the weight gradient)
  Acc* gzbuf = zbuf + g.zcap;                   // gradient of z (for the x1 / x2 gradients)
  const int R = g.R;
  const int tid = static_cast<int>(threadIdx.x);
  const int nth = static_cast<int>(blockDim.x);
  const i64 blk = blockIdx.x;

  for (i64 tile = blockIdx.x; tile < g.ntiles; tile += gridDim.x) {
    const i64 n0 = tile * R;
    for (int pi = 0; pi < tab.npaths; ++pi) {
      const PathView<Acc> p = load_path(tab, cv, pi);
      if (p.P <= 0) continue;
      const bool do_w = gw != nullptr && p.weighted;
      const bool do_gz = g1 != nullptr || g2 != nullptr;
      if (!do_w && !do_gz) continue;
      const int Qp = chunk_pairs(p, R, g.zcap);
      for (int q0 = 0; q0 < p.P; q0 += Qp) {
        const int q1 = imin(q0 + Qp, p.P), Qc = q1 - q0;
        for (int t = tid; t < R * Qc; t += nth) {
          const int r = t / Qc, ql = t - r * Qc;
          const i64 n = n0 + r;
          if (n >= g.N) continue;
          const int q = q0 + ql;
          const int off = (r * Qp + ql) * p.dk;
          if (do_w) {
            int u, v;
            pair_uv(p, q, u, v);
            Acc* z = zbuf + off;
            for (int k = 0; k < p.dk; ++k) z[k] = Acc(0);
            add_z(p, x1 + n * g.s1 + p.off1, x2 + n * g.s2 + p.off2, u, v, z);
          }
          if (do_gz) {
            const T* wr = p.weighted ? w + n * g.sw + p.w_off : nullptr;
            set_gz(p, go + n * g.dim_out + p.offo, wr, q, gzbuf + off);
          }
        }
        __syncthreads();
        // Phase 2: the weight, x1 and x2 items, one after the other in one index space.
        const int perW = do_w ? Qc * (p.mixing ? p.mo : 1) : 0;
        const int per1 = g1 != nullptr ? p.m1 * p.d1 : 0;
        const int per2 = g2 != nullptr ? p.m2 * p.d2 : 0;
        const int nW = (g.bcw ? 1 : R) * perW;
        const int n1 = (g.bc1 ? 1 : R) * per1;
        const int n2 = (g.bc2 ? 1 : R) * per2;
        for (int t = tid; t < nW + n1 + n2; t += nth) {
          int e, r0, r1;
          if (t < nW) {
            if (!item_rows(t, perW, g.bcw, R, n0, g.N, &e, &r0, &r1)) continue;
            int q, wc;
            if (p.mixing) {
              q = q0 + e / p.mo;
              wc = e - (e / p.mo) * p.mo;
            } else {
              q = q0 + e;
              wc = out_channel(p, q);
            }
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r)
              acc += dot_k(p, go + (n0 + r) * g.dim_out + p.offo, wc, zbuf + (r * Qp + (q - q0)) * p.dk);
            Acc* dst = gw + (g.bcw ? blk : n0 + r0) * g.dim_w + p.w_off;
            dst[weight_index(p, q, wc)] += p.coef * acc;
          } else if (t < nW + n1) {
            if (!item_rows(t - nW, per1, g.bc1, R, n0, g.N, &e, &r0, &r1)) continue;
            const int u = e / p.d1, i = e - u * p.d1;
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r)
              acc += x1_contrib(p, u, i, q0, q1, x2 + (n0 + r) * g.s2 + p.off2, gzbuf + r * Qp * p.dk);
            g1[(g.bc1 ? blk : n0 + r0) * g.dim1 + p.off1 + e] += acc;
          } else {
            if (!item_rows(t - nW - n1, per2, g.bc2, R, n0, g.N, &e, &r0, &r1)) continue;
            const int v = e / p.d2, j = e - v * p.d2;
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r)
              acc += x2_contrib(p, v, j, q0, q1, x1 + (n0 + r) * g.s1 + p.off1, gzbuf + r * Qp * p.dk);
            g2[(g.bc2 ? blk : n0 + r0) * g.dim2 + p.off2 + e] += acc;
          }
        }
        __syncthreads();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// Double backward. With f the forward and b_x1 / b_x2 / b_W the backward's parts:
//   ggo = f(gg1, x2, W) + f(x1, gg2, W) + f(x1, x2, ggW)
//   g1  = b_x1(go; x2 = gg2, W) + b_x1(go; x2, W = ggW)
//   g2  = b_x2(go; x1 = gg1, W) + b_x2(go; x1, W = ggW)
//   gw  = b_W(go; x1 = gg1, x2) + b_W(go; x1, x2 = gg2)
// gg1 / gg2 / ggw: nullptr for zero (shapes of x1 / x2 / weight, same row strides).
// ggo: (N, dim_out) zero-filled; g1 / g2 / gw as in the backward (always wanted).
// Shared memory: four buffers, zA = z(gg1, x2) + z(x1, gg2), zB = z(x1, x2),
// gzW = gz with W, gzG = gz with ggW.

template <typename T>
__global__ void __launch_bounds__(kThreads)
    tp_double_backward_kernel(TPTables tab, const typename AccOf<T>::type* __restrict__ cv, TPGeom g,
                              const T* __restrict__ gg1, const T* __restrict__ gg2, const T* __restrict__ ggw,
                              const T* __restrict__ go, const T* __restrict__ x1, const T* __restrict__ x2,
                              const T* __restrict__ w, typename AccOf<T>::type* __restrict__ ggo,
                              typename AccOf<T>::type* __restrict__ g1, typename AccOf<T>::type* __restrict__ g2,
                              typename AccOf<T>::type* __restrict__ gw) {
  typedef typename AccOf<T>::type Acc;
  extern __shared__ __align__(16) unsigned char tp_smem[];
  Acc* zA = reinterpret_cast<Acc*>(tp_smem);
  Acc* zB = zA + g.zcap;
  Acc* gzW = zB + g.zcap;
  Acc* gzG = gzW + g.zcap;
  const int R = g.R;
  const int tid = static_cast<int>(threadIdx.x);
  const int nth = static_cast<int>(blockDim.x);
  const i64 blk = blockIdx.x;

  for (i64 tile = blockIdx.x; tile < g.ntiles; tile += gridDim.x) {
    const i64 n0 = tile * R;
    for (int pi = 0; pi < tab.npaths; ++pi) {
      const PathView<Acc> p = load_path(tab, cv, pi);
      if (p.P <= 0) continue;
      const bool hasA = gg1 != nullptr || gg2 != nullptr;  // terms through gg1 / gg2 (and W)
      const bool hasB = ggw != nullptr && p.weighted;      // terms through ggW
      if (!hasA && !hasB) continue;
      const int Qp = chunk_pairs(p, R, g.zcap);
      for (int q0 = 0; q0 < p.P; q0 += Qp) {
        const int q1 = imin(q0 + Qp, p.P), Qc = q1 - q0;
        for (int t = tid; t < R * Qc; t += nth) {
          const int r = t / Qc, ql = t - r * Qc;
          const i64 n = n0 + r;
          if (n >= g.N) continue;
          const int q = q0 + ql;
          const int off = (r * Qp + ql) * p.dk;
          int u, v;
          pair_uv(p, q, u, v);
          const T* x1r = x1 + n * g.s1 + p.off1;
          const T* x2r = x2 + n * g.s2 + p.off2;
          const T* gor = go + n * g.dim_out + p.offo;
          if (hasA) {
            Acc* z = zA + off;
            for (int k = 0; k < p.dk; ++k) z[k] = Acc(0);
            if (gg1 != nullptr) add_z(p, gg1 + n * g.s1 + p.off1, x2r, u, v, z);
            if (gg2 != nullptr) add_z(p, x1r, gg2 + n * g.s2 + p.off2, u, v, z);
            set_gz(p, gor, p.weighted ? w + n * g.sw + p.w_off : static_cast<const T*>(nullptr), q, gzW + off);
          }
          if (hasB) {
            Acc* z = zB + off;
            for (int k = 0; k < p.dk; ++k) z[k] = Acc(0);
            add_z(p, x1r, x2r, u, v, z);
            set_gz(p, gor, ggw + n * g.sw + p.w_off, q, gzG + off);
          }
        }
        __syncthreads();
        // Phase 2: grad_out, weight, x1 and x2 items in one index space.
        const int perO = p.mo * p.dk;
        const int perW = (hasA && p.weighted) ? Qc * (p.mixing ? p.mo : 1) : 0;
        const bool any1 = (hasA && gg2 != nullptr) || hasB;
        const bool any2 = (hasA && gg1 != nullptr) || hasB;
        const int per1 = any1 ? p.m1 * p.d1 : 0;
        const int per2 = any2 ? p.m2 * p.d2 : 0;
        const int nO = R * perO;
        const int nW = (g.bcw ? 1 : R) * perW;
        const int n1 = (g.bc1 ? 1 : R) * per1;
        const int n2 = (g.bc2 ? 1 : R) * per2;
        for (int t = tid; t < nO + nW + n1 + n2; t += nth) {
          int e, r0, r1;
          if (t < nO) {
            if (!item_rows(t, perO, false, R, n0, g.N, &e, &r0, &r1)) continue;
            const i64 n = n0 + r0;
            const int wc = e / p.dk, k = e - wc * p.dk;
            const int zo = r0 * Qp * p.dk;
            Acc acc = Acc(0);
            if (hasA) {
              const T* wr = p.weighted ? w + n * g.sw + p.w_off : nullptr;
              acc += out_contrib(p, wc, k, q0, q1, wr, zA + zo);
            }
            if (hasB) acc += out_contrib(p, wc, k, q0, q1, ggw + n * g.sw + p.w_off, zB + zo);
            ggo[n * g.dim_out + p.offo + e] += p.coef * acc;
          } else if (t < nO + nW) {
            if (!item_rows(t - nO, perW, g.bcw, R, n0, g.N, &e, &r0, &r1)) continue;
            int q, wc;
            if (p.mixing) {
              q = q0 + e / p.mo;
              wc = e - (e / p.mo) * p.mo;
            } else {
              q = q0 + e;
              wc = out_channel(p, q);
            }
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r)
              acc += dot_k(p, go + (n0 + r) * g.dim_out + p.offo, wc, zA + (r * Qp + (q - q0)) * p.dk);
            Acc* dst = gw + (g.bcw ? blk : n0 + r0) * g.dim_w + p.w_off;
            dst[weight_index(p, q, wc)] += p.coef * acc;
          } else if (t < nO + nW + n1) {
            if (!item_rows(t - nO - nW, per1, g.bc1, R, n0, g.N, &e, &r0, &r1)) continue;
            const int u = e / p.d1, i = e - u * p.d1;
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r) {
              const i64 n = n0 + r;
              const int zo = r * Qp * p.dk;
              if (hasA && gg2 != nullptr) acc += x1_contrib(p, u, i, q0, q1, gg2 + n * g.s2 + p.off2, gzW + zo);
              if (hasB) acc += x1_contrib(p, u, i, q0, q1, x2 + n * g.s2 + p.off2, gzG + zo);
            }
            g1[(g.bc1 ? blk : n0 + r0) * g.dim1 + p.off1 + e] += acc;
          } else {
            if (!item_rows(t - nO - nW - n1, per2, g.bc2, R, n0, g.N, &e, &r0, &r1)) continue;
            const int v = e / p.d2, j = e - v * p.d2;
            Acc acc = Acc(0);
            for (int r = r0; r < r1; ++r) {
              const i64 n = n0 + r;
              const int zo = r * Qp * p.dk;
              if (hasA && gg1 != nullptr) acc += x2_contrib(p, v, j, q0, q1, gg1 + n * g.s1 + p.off1, gzW + zo);
              if (hasB) acc += x2_contrib(p, v, j, q0, q1, x1 + n * g.s1 + p.off1, gzG + zo);
            }
            g2[(g.bc2 ? blk : n0 + r0) * g.dim2 + p.off2 + e] += acc;
          }
        }
        __syncthreads();
      }
    }
  }
}

// ---------------------------------------------------------------------------------------
// out[d] = ws[0, d] + ws[1, d] + ... + ws[nb - 1, d], in this order (deterministic).

template <typename Acc>
__global__ void __launch_bounds__(kThreads)
    tp_sum_rows_kernel(const Acc* __restrict__ ws, i64 nb, i64 D, Acc* __restrict__ out) {
  for (i64 d = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; d < D;
       d += static_cast<i64>(gridDim.x) * blockDim.x) {
    Acc s = Acc(0);
    for (i64 b = 0; b < nb; ++b) s += ws[b * D + d];
    out[d] = s;
  }
}

#if !defined(EQUIOPS_NO_HOST_HELPERS)

// Launch plan of a main kernel. work: most phase items of one row over the paths (the
// largest of P, mo dk, m1 d1, m2 d2); max_dk, max_zrow (largest P dk): over the paths;
// nbuf: shared-memory buffers of the kernel (1 forward, 2 backward, 4 double backward);
// ws_width: total width of the gradients summed through the workspace (0: none).
// Depends only on its arguments (shapes), never on the device: see the top of the file.
struct TPPlan {
  int R;
  int zcap;
  i64 ntiles;
  unsigned int grid;
  unsigned int smem;
  bool ok;  // false: a single row's dk accumulators do not fit (absurdly large l)
};

inline TPPlan plan_tp(i64 N, i64 work, int max_dk, i64 max_zrow, int nbuf, int acc_size, i64 ws_width) {
  TPPlan pl;
  const i64 budget = kSmemBudget / (static_cast<i64>(nbuf) * acc_size);  // elements per buffer
  int R = 1;
  if (work < 1) work = 1;
  // Small paths: several rows per tile so that a block has work for its threads.
  while (2 * R <= kMaxRowsPerTile && 2 * R * work <= kThreads && 2 * static_cast<i64>(R) * max_dk <= budget &&
         R < N)
    R *= 2;
  pl.R = R;
  pl.ok = static_cast<i64>(R) * max_dk <= budget && max_dk >= 1;
  i64 zcap = static_cast<i64>(R) * (max_zrow > 0 ? max_zrow : 1);
  if (zcap > budget) zcap = budget;
  if (zcap < static_cast<i64>(R) * max_dk) zcap = static_cast<i64>(R) * max_dk;
  pl.zcap = static_cast<int>(zcap);
  pl.ntiles = N > 0 ? (N + R - 1) / R : 0;
  i64 grid = pl.ntiles < 65535 ? pl.ntiles : 65535;
  if (ws_width > 0) {
    // The workspace holds one row per block: bound its size (2^25 elements), and keep
    // enough blocks (2048) to fill a GPU when it allows.
    i64 cap = (i64(1) << 25) / ws_width;
    if (cap > 2048) cap = 2048;
    if (cap < 1) cap = 1;
    if (grid > cap) grid = cap;
  }
  pl.grid = static_cast<unsigned int>(grid < 1 ? 1 : grid);
  pl.smem = static_cast<unsigned int>(static_cast<i64>(nbuf) * pl.zcap * acc_size);
  return pl;
}

// The device table of a problem (layout at the top of this file), built on the host.
struct TPFlat {
  std::vector<int32_t> ints;
  std::vector<double> vals;  // coefficients in float64 (the glue also uploads a float32 copy)
  int npaths = 0;
  i64 work = 1;      // most phase items of one row (plan_tp)
  int max_dk = 1;
  i64 max_zrow = 1;  // largest P * dk
};

inline i64 tp_num_pairs(const tp::Path& q) {
  if (q.mode == tp::UUW || q.mode == tp::UUU) return q.m1;
  if (q.mode == tp::UVU_LT_V || q.mode == tp::U_LT_VW) return static_cast<i64>(q.m1) * (q.m2 - 1) / 2;
  return static_cast<i64>(q.m1) * q.m2;
}

// What tp_problem.h's parser leaves unchecked but the kernels rely on: the multiplicity
// rule of each mode (an output or weight index past its block otherwise), weights where
// the semantics need them, and sizes that keep the kernels' int arithmetic exact.
// Throws std::invalid_argument.
inline void tp_validate_path(const tp::Path& q, size_t n) {
  const std::string where = "problem path " + std::to_string(n) + ": ";
  auto fail = [&](const std::string& what) { throw std::invalid_argument(where + what); };
  if (q.l1 < 0 || q.l2 < 0 || q.lo < 0) fail("negative degree");
  if (q.l1 > 1000 || q.l2 > 1000 || q.lo > 1000) fail("degree too large");
  const i64 m1 = q.m1, m2 = q.m2, mo = q.mo;
  const std::string got =
      ", got mul_in1=" + std::to_string(m1) + ", mul_in2=" + std::to_string(m2) + ", mul_out=" + std::to_string(mo);
  switch (q.mode) {
    case tp::UVU:
      if (mo != m1) fail("uvu needs mul_out == mul_in1" + got);
      break;
    case tp::UVV:
      if (mo != m2) fail("uvv needs mul_out == mul_in2" + got);
      break;
    case tp::UUW:
      if (m1 != m2) fail("uuw needs mul_in1 == mul_in2" + got);
      if (q.w_off < 0 && mo != 1) fail("unweighted uuw needs mul_out == 1" + got);
      break;
    case tp::UUU:
      if (m1 != m2 || m2 != mo) fail("uuu needs mul_in1 == mul_in2 == mul_out" + got);
      break;
    case tp::UVUV:
      if (mo != m1 * m2) fail("uvuv needs mul_out == mul_in1 * mul_in2" + got);
      break;
    case tp::UVU_LT_V:
      if (m1 != m2 || mo != m1 * (m1 - 1) / 2) fail("uvu<v needs mul_in1 == mul_in2 and mul_out == mul_in1 (mul_in1 - 1) / 2" + got);
      break;
    case tp::U_LT_VW:
      if (m1 != m2) fail("u<vw needs mul_in1 == mul_in2" + got);
      break;
    default:
      break;
  }
  if ((q.mode == tp::UVW || q.mode == tp::U_LT_VW) && q.w_off < 0) fail("this mode must have weights");
  // Every per-row index of a path (pairs x output channels; one row's items times the
  // tile's rows) must stay far inside int.
  const i64 lim = i64(1) << 25;
  const i64 P = tp_num_pairs(q);
  if (P * mo >= lim || mo * q.dk >= lim || m1 * q.d1 >= lim || m2 * q.d2 >= lim)
    fail("multiplicities too large for the CUDA kernels");
  const size_t nnz = q.nz_i.size();
  if (q.nz_j.size() != nnz || q.nz_k.size() != nnz || q.nz_c.size() != nnz) fail("inconsistent CG nonzeros");
  for (size_t e = 0; e < nnz; ++e)
    if (q.nz_i[e] < 0 || q.nz_i[e] >= q.d1 || q.nz_j[e] < 0 || q.nz_j[e] >= q.d2 || q.nz_k[e] < 0 ||
        q.nz_k[e] >= q.dk)
      fail("CG index out of range");
}

// Throws std::invalid_argument when the problem is unusable.
inline TPFlat flatten_problem(const tp::Problem& pr) {
  const i64 lim = 0x7fffffffLL / 64;
  if (pr.dim1 < 0 || pr.dim2 < 0 || pr.dim_out < 0 || pr.dim_w < 0 || pr.dim1 >= lim || pr.dim2 >= lim ||
      pr.dim_out >= lim || pr.dim_w >= lim)
    throw std::invalid_argument("problem widths out of range");
  TPFlat f;
  const size_t np = pr.paths.size();
  f.npaths = static_cast<int>(np);
  f.ints.assign(np * kHdr, 0);
  auto append = [&](const std::vector<int>& v) {
    const int32_t at = static_cast<int32_t>(f.ints.size());
    f.ints.insert(f.ints.end(), v.begin(), v.end());
    return at;
  };
  for (size_t n = 0; n < np; ++n) {
    const tp::Path& q = pr.paths[n];
    tp_validate_path(q, n);
    // The kernels' own groupings, built here from the nonzeros so that they do not depend
    // on the order of tp_problem.h's groups: by (i, k) (x2 contracted first, and the x1
    // gradient taking the groups of one i), and by j (the x2 gradient).
    const int nnz = static_cast<int>(q.nz_i.size());
    std::vector<int> ord(nnz);
    for (int e = 0; e < nnz; ++e) ord[e] = e;
    std::stable_sort(ord.begin(), ord.end(), [&](int a, int b) {
      if (q.nz_i[a] != q.nz_i[b]) return q.nz_i[a] < q.nz_i[b];
      if (q.nz_k[a] != q.nz_k[b]) return q.nz_k[a] < q.nz_k[b];
      return q.nz_j[a] < q.nz_j[b];
    });
    std::vector<int> si, sk, sb, gj;
    std::vector<double> gc;
    for (int t = 0; t < nnz; ++t) {
      const int e = ord[t];
      if (t == 0 || q.nz_i[e] != q.nz_i[ord[t - 1]] || q.nz_k[e] != q.nz_k[ord[t - 1]]) {
        si.push_back(q.nz_i[e]);
        sk.push_back(q.nz_k[e]);
        sb.push_back(static_cast<int>(gj.size()));
      }
      gj.push_back(q.nz_j[e]);
      gc.push_back(q.nz_c[e]);
    }
    const int ns = static_cast<int>(si.size());
    sb.push_back(static_cast<int>(gj.size()));
    // Groups with i == i0: [ib[i0], ib[i0 + 1]).
    std::vector<int> ib(q.d1 + 1, 0);
    for (int i = 0, s = 0; i <= q.d1; ++i) {
      while (s < ns && si[s] < i) ++s;
      ib[i] = s;
    }
    // By j (then i, k).
    std::stable_sort(ord.begin(), ord.end(), [&](int a, int b) {
      if (q.nz_j[a] != q.nz_j[b]) return q.nz_j[a] < q.nz_j[b];
      if (q.nz_i[a] != q.nz_i[b]) return q.nz_i[a] < q.nz_i[b];
      return q.nz_k[a] < q.nz_k[b];
    });
    std::vector<int> jb(q.d2 + 1, 0), ji, jk;
    std::vector<double> jc;
    for (int t = 0; t < nnz; ++t) {
      const int e = ord[t];
      ji.push_back(q.nz_i[e]);
      jk.push_back(q.nz_k[e]);
      jc.push_back(q.nz_c[e]);
    }
    for (int j = 0, t = 0; j <= q.d2; ++j) {
      while (t < nnz && q.nz_j[ord[t]] < j) ++t;
      jb[j] = t;
    }
    const i64 P = tp_num_pairs(q);

    int32_t h[kHdr];
    h[H_MODE] = q.mode;
    h[H_M1] = q.m1;
    h[H_M2] = q.m2;
    h[H_MO] = q.mo;
    h[H_D1] = q.d1;
    h[H_D2] = q.d2;
    h[H_DK] = q.dk;
    h[H_OFF1] = q.off1;
    h[H_OFF2] = q.off2;
    h[H_OFFO] = q.offo;
    h[H_WOFF] = q.w_off;
    h[H_P] = static_cast<int32_t>(P);
    h[H_NS] = ns;
    h[H_NNZ] = nnz;
    h[H_SI] = append(si);
    h[H_SK] = append(sk);
    h[H_SB] = append(sb);
    h[H_IB] = append(ib);
    h[H_GJ] = append(gj);
    h[H_JB] = append(jb);
    h[H_JI] = append(ji);
    h[H_JK] = append(jk);
    h[H_CCOEF] = static_cast<int32_t>(f.vals.size());
    f.vals.push_back(q.coef);
    h[H_CGC] = static_cast<int32_t>(f.vals.size());
    f.vals.insert(f.vals.end(), gc.begin(), gc.end());
    h[H_CJC] = static_cast<int32_t>(f.vals.size());
    f.vals.insert(f.vals.end(), jc.begin(), jc.end());
    std::memcpy(f.ints.data() + n * kHdr, h, sizeof(h));
    if (f.ints.size() >= 0x3fffffffu || f.vals.size() >= 0x3fffffffu) throw std::invalid_argument("problem too large");

    i64 work = P;
    const i64 items[3] = {static_cast<i64>(q.mo) * q.dk, static_cast<i64>(q.m1) * q.d1, static_cast<i64>(q.m2) * q.d2};
    for (i64 x : items)
      if (x > work) work = x;
    if (work > f.work) f.work = work;
    if (q.dk > f.max_dk) f.max_dk = q.dk;
    if (P * q.dk > f.max_zrow) f.max_zrow = P * q.dk;
  }
  if (f.ints.empty()) f.ints.push_back(0);  // never empty: a valid device pointer either way
  if (f.vals.empty()) f.vals.push_back(0.0);
  return f;
}

#endif  // !EQUIOPS_NO_HOST_HELPERS

}  // namespace tpk
}  // namespace equiops
