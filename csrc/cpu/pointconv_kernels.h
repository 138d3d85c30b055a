// PointConv kernels, free of torch headers so that one source compiles for several
// instruction sets (pointconv_kernels_generic.cpp, pointconv_kernels_avx2.cpp).
//
// Math: python/equiops/reference/pointconv.py. Per query g (batch b) with neighbours k
// (point idx[g, k] of batch b, valid where mask[g, k]):
//   P[g] (C x ci) = sum_k mask penult[g, k]^T values[b, idx[g, k]]   (outer products)
//   out[g] = W P[g].flatten() + bias,   / max(1, count[g]) with mean
//
// Layout: a task owns a range of whole queries and walks them kTile at a time. Per
// query, the valid neighbours' penult rows (Kv x C) and value rows (Kv x ci) are
// gathered into the workspace (masked neighbours are skipped, so neither their penult
// nor their values are read: NaN there does not leak, as in the reference's where), and
// P[g] is one small micro-GEMM over the Kv neighbours into row t of the tile's partials
// (kTile x C*ci, column c * ci + i: nn.Linear's layout of the weight). The tile's output
// rows are then one micro-GEMM with W^T (C*ci x co), plus bias, divided by the count.
// Neither the gathered (B, m, K, ci) values nor the (B, m, C*ci) partials of all queries
// exist at any time: only one tile's (kTile x K x (C + ci) gathered rows, kTile x C*ci
// partials).
//
// Backward (same tiles, partials recomputed, the gathered rows kept for the tile):
// dO' = grad_out / count (mean) per row; grad W += dO'^T P and grad bias += sum dO' go
// to the range's partial (summed by the caller in range order); dP = dO' W (kTile x
// C*ci); then per query (dP[g] as C x ci)
//   grad_penult[g, k, :] = mask values[idx] dP[g]^T   (Kv x ci times ci x C)
//   rows[pos[g, k], :]   = mask penult[g, k] dP[g]    (Kv x C times C x ci)
// The value-gradient rows are written where the caller's counting sort of the neighbours
// by source point put them (pos); the caller sums them per source point, in order.
//
// Cost (one thread, AVX2, float32, thread CPU time on a loaded 2-core VM): the two
// tile GEMMs with the weight dominate the backward and run near the FMA peak; at C=16,
// ci=96, co=96, K=32 the backward's tile pass took ~31 ms for ~1.7 GFMA.
//
// Included once per instruction set with EQUIOPS_POINTCONV_NS naming the namespace
// (and EQUIOPS_POINTCONV_AVX2 for the AVX2 build); no inline function is shared between
// them.
#ifndef EQUIOPS_POINTCONV_NS
#error "define EQUIOPS_POINTCONV_NS before including pointconv_kernels.h"
#endif

#include "pointconv_cpu.h"

namespace equiops {
namespace pointconv {
namespace EQUIOPS_POINTCONV_NS {

#include "row_vectors.h"
#ifdef EQUIOPS_POINTCONV_AVX2
#define EQUIOPS_MICRO_GEMM_AVX2 1
#endif
#include "micro_gemm.h"

// ------------------------------------------------------------------ per-query parts
template <typename T>
inline void copy_row(T* y, const T* x, int n) {
  constexpr int L = lanes<T>();
  int k = 0;
  for (; k + L <= n; k += L) vst(y + k, vld(x + k));
  for (; k < n; ++k) y[k] = x[k];
}

// Workspace of one task (see workspace_size): the tile's partials P and their gradient
// dP (kTile x C*ci), output-gradient rows dO (kTile x co), counts, every query's
// gathered neighbour rows (pen: kTile x K x C, vc: kTile x K x ci; kept from the
// partials to the backward's per-query products), and one query's temporaries.
template <typename T>
struct Work {
  T *P, *dP, *dO, *cnt, *pen, *vc, *dpt, *gq, *dq;
  Work(T* w, int K, int C, int ci, int co) {
    const int64_t CI = int64_t(C) * ci;
    P = w, dP = P + kTile * CI, dO = dP + kTile * CI, cnt = dO + int64_t(kTile) * co;
    pen = cnt + kTile, vc = pen + int64_t(kTile) * K * C, dpt = vc + int64_t(kTile) * K * ci;
    gq = dpt + CI, dq = gq + int64_t(K) * C;
  }
};

// Query g's valid neighbours, in k order: ks[j] = k, penult rows into pen (Kv x C),
// value rows into vc (Kv x ci). Returns Kv.
template <typename T>
inline int gather(const Args<T>& a, int64_t g, T* pen, T* vc, int* ks) {
  const int K = a.K, C = a.C, ci = a.ci;
  const bool* mk = a.mask + g * K;
  const int64_t* ix = a.idx + g * K;
  const T* pr = a.penult + g * K * C;
  const T* vb = a.values + (g / a.m) * a.n * ci;
  int kv = 0;
  for (int k = 0; k < K; ++k) {
    if (!mk[k]) continue;
    ks[kv] = k;
    copy_row(pen + int64_t(kv) * C, pr + int64_t(k) * C, C);
    copy_row(vc + int64_t(kv) * ci, vb + ix[k] * ci, ci);
    ++kv;
  }
  return kv;
}

// The tile's partials (rows of P), neighbour lists (ks: kTile x K, kvs) and counts.
template <typename T>
inline void tile_partials(const Args<T>& a, int64_t base, int nt, const Work<T>& w, int* ks, int* kvs) {
  const int K = a.K, C = a.C, ci = a.ci;
  const int64_t CI = int64_t(C) * ci;
  for (int t = 0; t < nt; ++t) {
    T* pen = w.pen + int64_t(t) * K * C;
    T* vc = w.vc + int64_t(t) * K * ci;
    const int kv = gather(a, base + t, pen, vc, ks + t * K);
    kvs[t] = kv;
    w.cnt[t] = static_cast<T>(std::max(kv, 1));
    // P (C x ci) = pen^T (C x Kv) vc (Kv x ci); Kv = 0 gives zeros.
    gemm(C, ci, kv, pen, 1, C, vc, ci, w.P + t * CI, ci, false);
  }
}

template <typename T>
void forward(const Args<T>& a, int64_t g0, int64_t g1, T* work, int* iwork, T* out) {
  const Work<T> w(work, a.K, a.C, a.ci, a.co);
  const int CI = a.C * a.ci, co = a.co;
  int* kvs = iwork;
  int* ks = iwork + kTile;
  for (int64_t base = g0; base < g1; base += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, g1 - base));
    tile_partials(a, base, nt, w, ks, kvs);
    T* o = out + base * co;
    gemm(nt, co, CI, w.P, CI, 1, a.weight_t, co, o, co, false);
    for (int t = 0; t < nt; ++t) {
      T* row = o + int64_t(t) * co;
      if (a.bias != nullptr) add_row(row, a.bias, co);
      if (a.mean) {
        const T c = w.cnt[t];
        for (int j = 0; j < co; ++j) row[j] /= c;
      }
    }
  }
}

template <typename T>
void backward(const Args<T>& a, const Grads<T>& g, int64_t g0, int64_t g1, T* work, int* iwork, T* partial) {
  const Work<T> w(work, a.K, a.C, a.ci, a.co);
  const int K = a.K, C = a.C, ci = a.ci, co = a.co, CI = C * ci;
  T* gw = partial;
  T* gb = partial + int64_t(co) * CI;
  int* kvs = iwork;
  int* ks_all = iwork + kTile;
  for (int64_t base = g0; base < g1; base += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, g1 - base));
    tile_partials(a, base, nt, w, ks_all, kvs);
    // dO' = grad_out / count (mean), rows of the tile.
    for (int t = 0; t < nt; ++t) {
      T* row = w.dO + int64_t(t) * co;
      copy_row(row, g.grad_out + (base + t) * co, co);
      if (a.mean) {
        const T c = w.cnt[t];
        for (int j = 0; j < co; ++j) row[j] /= c;
      }
      add_row(gb, row, co);
    }
    // grad W (co x CI) += dO'^T (co x nt) P (nt x CI); dP (nt x CI) = dO' (nt x co) W (co x CI).
    gemm(co, CI, nt, w.dO, 1, co, w.P, CI, gw, CI, true);
    gemm(nt, CI, co, w.dO, co, 1, a.weight, CI, w.dP, CI, false);
    for (int t = 0; t < nt; ++t) {
      const int64_t q = base + t;
      const int kv = kvs[t];
      const int* ks = ks_all + t * K;
      const T* pen = w.pen + int64_t(t) * K * C;
      const T* vc = w.vc + int64_t(t) * K * ci;
      const T* dp = w.dP + int64_t(t) * CI;  // (C x ci)
      T* gp = g.grad_penult + q * K * C;
      if (kv < K) std::fill(gp, gp + int64_t(K) * C, T(0));
      if (kv == 0) continue;
      // grad penult rows (Kv x C) = vc (Kv x ci) dP^T (ci x C), to the valid k.
      for (int c = 0; c < C; ++c)
        for (int i = 0; i < ci; ++i) w.dpt[int64_t(i) * C + c] = dp[int64_t(c) * ci + i];
      if (kv == K) {
        gemm(kv, C, ci, vc, ci, 1, w.dpt, C, gp, C, false);
      } else {
        gemm(kv, C, ci, vc, ci, 1, w.dpt, C, w.gq, C, false);
        for (int j = 0; j < kv; ++j) copy_row(gp + int64_t(ks[j]) * C, w.gq + int64_t(j) * C, C);
      }
      // Value-gradient rows (Kv x ci) = pen (Kv x C) dP (C x ci), each to its sorted slot.
      gemm(kv, ci, C, pen, C, 1, dp, ci, w.dq, ci, false);
      const int64_t* pos = g.pos + q * K;
      for (int j = 0; j < kv; ++j) copy_row(g.rows + pos[ks[j]] * ci, w.dq + int64_t(j) * ci, ci);
    }
  }
}

template <typename T>
KernelSet<T> make() {
  return {&forward<T>, &backward<T>};
}

}  // namespace EQUIOPS_POINTCONV_NS
}  // namespace pointconv
}  // namespace equiops
