// EGNN message kernels, free of torch headers so that one source compiles for several
// instruction sets (egnn_kernels_generic.cpp, egnn_kernels_avx2.cpp).
//
// Math: python/equiops/reference/egnn_message.py. Per edge (receiver i, sender j):
//   z1 = node_i[i] + node_j[j] + r w_radial + W_edge a      s1 = act(z1)
//   z2 = W2 s1 + b2       m0 = act(z2)      m = g m0,  g = sigmoid(w_att . m0 + b_att)
//   p  = Wc1 m + bc1      c = wc2 . act(p) + bc2   (tanh, clamp)   t = u(d) c  (clamp)
//
// Layout: a task owns a range of whole receivers and walks its edges in receiver
// order, kTile edges at a time. A tile's activations are kTile x width row-major
// buffers in the task's workspace (L1/L2-resident), the two width x width products per
// tile are register-blocked micro-GEMMs (4 rows x 2 vectors of accumulators), the
// elementwise parts are vectorised over the flat buffers (the activations' exp is a
// polynomial of the vector type, accurate to float/double rounding). The receiver sums
// are added row by row in edge order: deterministic, no atomics, nothing of size E x
// width written in the forward.
//
// Backward: the same tile pipeline recomputes the forward's intermediates, then runs
// the chain rule back through them. The weight gradients are sums over edges of outer
// products: micro-GEMMs over the tile's rows into the task's partial (reduced by the
// caller in range order). What flows to the senders (dz1 = dL/dz1 and the coordinate
// gradient per edge) is stored per edge for the caller's sender-order sums.
//
// Included once per instruction set with EQUIOPS_EGNN_NS naming the namespace (and
// EQUIOPS_EGNN_AVX2 for the AVX2 build); no inline function is shared between them.
#ifndef EQUIOPS_EGNN_NS
#error "define EQUIOPS_EGNN_NS before including egnn_kernels.h"
#endif

#include "egnn_cpu.h"

namespace equiops {
namespace egnn {
namespace EQUIOPS_EGNN_NS {

#include "row_vectors.h"
#ifdef EQUIOPS_EGNN_AVX2
#define EQUIOPS_MICRO_GEMM_AVX2 1
#endif
#include "micro_gemm.h"

template <typename T>
inline Vec<T> splat(T x) {
  return Vec<T>{} + x;
}

// ------------------------------------------------------------------ vector exp
// exp(x) = 2^n e^f, n = round(x / ln 2), |f| <= ln2 / 2, e^f by its Taylor polynomial
// (degree 7: 5e-9 relative for float; 13: 4e-18 for double, i.e. below rounding).
// n is read from the bits of x / ln2 + 1.5 * 2^mantissa (round to nearest), 2^n built
// from the exponent bits. x is clamped to the range where 2^n is a normal number.
template <typename T>
struct ExpK;
template <>
struct ExpK<float> {
  typedef int32_t I __attribute__((vector_size(32)));
  static constexpr float lo = -87.0f, hi = 88.0f, log2e = 1.44269504088896341f;
  static constexpr float ln2hi = 0.693359375f, ln2lo = -2.12194440e-4f, magic = 12582912.0f;
  static constexpr int deg = 7, mant = 23;
  static constexpr int32_t bias = 127;
};
template <>
struct ExpK<double> {
  typedef int64_t I __attribute__((vector_size(32)));
  static constexpr double lo = -708.0, hi = 709.0, log2e = 1.4426950408889634;
  static constexpr double ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;
  static constexpr double magic = 6755399441055744.0;
  static constexpr int deg = 13, mant = 52;
  static constexpr int64_t bias = 1023;
};

template <typename T>
inline Vec<T> vexp(Vec<T> x) {
  using K = ExpK<T>;
  using I = typename K::I;
  const Vec<T> lo = splat<T>(K::lo), hi = splat<T>(K::hi);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const Vec<T> magic = splat<T>(K::magic);
  const Vec<T> t = x * K::log2e + magic;
  const Vec<T> n = t - magic;
  const Vec<T> f = x - n * K::ln2hi - n * K::ln2lo;
  T coef = T(1);
  for (int k = 2; k <= K::deg; ++k) coef /= T(k);  // 1 / deg!
  Vec<T> p = splat<T>(coef);
  for (int k = K::deg; k >= 1; --k) {
    coef *= T(k);  // 1 / (k - 1)!
    p = p * f + coef;
  }
  const I ni = (I)t - (I)magic;
  const I scale = (ni + K::bias) << K::mant;
  return p * (Vec<T>)scale;
}

template <typename T>
inline Vec<T> vsigmoid(Vec<T> x) {
  return T(1) / (T(1) + vexp<T>(-x));
}

// Applies f to n consecutive elements (full vectors, then one padded tail vector).
template <typename T, typename F>
inline void map_flat(T* out, const T* in, int64_t n, F f) {
  constexpr int L = lanes<T>();
  int64_t k = 0;
  for (; k + L <= n; k += L) vst(out + k, f(vld(in + k)));
  if (k < n) {
    T a[L] = {}, b[L];
    for (int64_t q = k; q < n; ++q) a[q - k] = in[q];
    vst(b, f(vld(a)));
    for (int64_t q = k; q < n; ++q) out[q] = b[q - k];
  }
}
// out[q] = g(out[q], z[q]) over n elements.
template <typename T, typename F>
inline void map_flat2(T* out, const T* z, int64_t n, F g) {
  constexpr int L = lanes<T>();
  int64_t k = 0;
  for (; k + L <= n; k += L) vst(out + k, g(vld(out + k), vld(z + k)));
  if (k < n) {
    T a[L] = {}, b[L] = {}, c[L];
    for (int64_t q = k; q < n; ++q) a[q - k] = out[q], b[q - k] = z[q];
    vst(c, g(vld(a), vld(b)));
    for (int64_t q = k; q < n; ++q) out[q] = c[q - k];
  }
}

template <typename T>
inline void act_forward(T* out, const T* z, int64_t n, int act) {
  if (act == kSilu)
    map_flat(out, z, n, [](Vec<T> v) { return v * vsigmoid<T>(v); });
  else
    map_flat(out, z, n, [](Vec<T> v) { return v > Vec<T>{} ? v : Vec<T>{}; });
}
// g *= act'(z), elementwise.
template <typename T>
inline void act_backward(T* g, const T* z, int64_t n, int act) {
  if (act == kSilu)
    map_flat2(g, z, n, [](Vec<T> gv, Vec<T> v) {
      const Vec<T> s = vsigmoid<T>(v);
      return gv * (s * (T(1) + v * (T(1) - s)));
    });
  else
    map_flat2(g, z, n, [](Vec<T> gv, Vec<T> v) { return v > Vec<T>{} ? gv : Vec<T>{}; });
}

// ------------------------------------------------------------------ row helpers
template <typename T>
inline T dot(const T* a, const T* b, int n) {
  constexpr int L = lanes<T>();
  Vec<T> acc{};
  int k = 0;
  for (; k + L <= n; k += L) acc += vld(a + k) * vld(b + k);
  T s = 0;
  for (int q = 0; q < L; ++q) s += acc[q];
  for (; k < n; ++k) s += a[k] * b[k];
  return s;
}
// y += alpha * x
template <typename T>
inline void axpy(T* y, T alpha, const T* x, int n) {
  constexpr int L = lanes<T>();
  int k = 0;
  for (; k + L <= n; k += L) vst(y + k, vld(y + k) + alpha * vld(x + k));
  for (; k < n; ++k) y[k] += alpha * x[k];
}
template <typename T>
inline void scale_row(T* y, T alpha, int n) {
  constexpr int L = lanes<T>();
  int k = 0;
  for (; k + L <= n; k += L) vst(y + k, vld(y + k) * alpha);
  for (; k < n; ++k) y[k] *= alpha;
}

// ------------------------------------------------------------------ per-edge parts
// Per-row scalars of a tile (kEx of them per row, see workspace_size).
enum Ex : int { kD = 0, kR = 3, kG = 4, kC1 = 5, kC = 6, kU = 7, kRho = 10, kDc = 11, kDd = 12, kEx = 16 };

template <typename T>
inline int64_t edge_id(const Args<T>& a, int64_t r) {
  return a.edge_of != nullptr ? a.edge_of[r] : r;
}

// Z1 (nt x H1) pre-activations and each row's d, r.
template <typename T>
inline void edge_inputs(const Args<T>& a, int64_t base, int nt, T* Z1, T* ex) {
  const int H1 = a.H1;
  for (int t = 0; t < nt; ++t) {
    const int64_t r = base + t, e = edge_id(a, r), i = a.key_of[r], j = a.other_of[r];
    T* x = ex + t * kEx;
    T rr = 0;
    for (int k = 0; k < 3; ++k) {
      x[kD + k] = a.coord[i * 3 + k] - a.coord[j * 3 + k];
      rr += x[kD + k] * x[kD + k];
    }
    x[kR] = rr;
    T* z = Z1 + int64_t(t) * H1;
    const T* pi = a.node_i + i * H1;
    const T* pj = a.node_j + j * H1;
    constexpr int L = lanes<T>();
    int h = 0;
    for (; h + L <= H1; h += L) vst(z + h, vld(pi + h) + vld(pj + h) + rr * vld(a.w_radial + h));
    for (; h < H1; ++h) z[h] = pi[h] + pj[h] + rr * a.w_radial[h];
    for (int k = 0; k < a.D; ++k) axpy(z, a.edge_attr[e * a.D + k], a.w_edge_t + int64_t(k) * H1, H1);
  }
}

template <typename T>
inline void add_bias_rows(T* X, const T* b, int nt, int W) {
  for (int t = 0; t < nt; ++t) add_row(X + int64_t(t) * W, b, W);
}

// u(d) of the coordinate norm; stores u and rho in the row's scalars.
template <typename T>
inline void coord_unit(int mode, T* x) {
  const T* d = x + kD;
  T* u = x + kU;
  T scale = 1;
  if (mode != kNone) {
    const T rho = std::sqrt(x[kR]);
    x[kRho] = rho;
    if (mode == kDetached) scale = T(1) / (rho + T(1e-8));
    else if (mode == kPlusOne) scale = T(1) / (rho + T(1));
    else scale = T(1) / std::max(rho, T(1e-8));
  }
  for (int k = 0; k < 3; ++k) u[k] = d[k] * scale;
}

// The gradient w.r.t. d through u(d), given du.
template <typename T>
inline void coord_unit_backward(int mode, const T* x, const T* du, T* dd) {
  const T* d = x + kD;
  const T rho = x[kRho];
  if (mode == kNone) {
    for (int k = 0; k < 3; ++k) dd[k] = du[k];
    return;
  }
  if (mode == kDetached) {
    const T s = T(1) / (rho + T(1e-8));
    for (int k = 0; k < 3; ++k) dd[k] = du[k] * s;
    return;
  }
  const T ddu = d[0] * du[0] + d[1] * du[1] + d[2] * du[2];
  if (mode == kPlusOne) {
    const T s = T(1) / (rho + T(1));
    const T q = rho > T(0) ? ddu * s * s / rho : T(0);
    for (int k = 0; k < 3; ++k) dd[k] = du[k] * s - d[k] * q;
    return;
  }
  // kClamped: u = d / max(rho, eps); torch's clamp passes the gradient at rho >= eps.
  if (rho >= T(1e-8)) {
    const T s = T(1) / rho;
    for (int k = 0; k < 3; ++k) dd[k] = du[k] * s - d[k] * (ddu * s * s * s);
  } else {
    for (int k = 0; k < 3; ++k) dd[k] = du[k] * T(1e8);
  }
}

// The per-edge coordinate scalar from the coordinate MLP's hidden row: c before tanh
// in kC1 (after tanh when on), clamped c in kC.
template <typename T>
inline void coord_scalar(const Args<T>& a, const T* c1row, T* x) {
  T c = dot(c1row, a.wc2, a.Hc) + a.bc2;
  if (a.tanh) c = std::tanh(c);
  x[kC1] = c;
  if (a.c_clamp > 0) c = std::min(std::max(c, -a.c_clamp), a.c_clamp);
  x[kC] = c;
}

template <typename T>
struct Tile {
  T *Z1, *S1, *Z2, *M0, *MG, *DM, *C1P, *C1, *ex;
  Tile(T* w, int H1, int M, int Hc) {
    const int64_t t = kTile;
    Z1 = w, S1 = Z1 + t * H1, Z2 = S1 + t * H1, M0 = Z2 + t * M, MG = M0 + t * M, DM = MG + t * M;
    C1P = DM + t * M, C1 = C1P + t * Hc, ex = C1 + t * Hc;
  }
};

// The forward pipeline of one tile, keeping every intermediate the backward needs.
template <typename T>
inline void tile_forward(const Args<T>& a, int64_t base, int nt, const Tile<T>& b) {
  const int H1 = a.H1, M = a.M, Hc = a.Hc;
  edge_inputs(a, base, nt, b.Z1, b.ex);
  act_forward(b.S1, b.Z1, int64_t(nt) * H1, a.act);
  gemm(nt, M, H1, b.S1, H1, 1, a.w2_t, M, b.Z2, M, false);
  add_bias_rows(b.Z2, a.b2, nt, M);
  act_forward(b.M0, b.Z2, int64_t(nt) * M, a.act);
  if (a.w_att != nullptr) {
    for (int t = 0; t < nt; ++t) {
      const T* m0 = b.M0 + int64_t(t) * M;
      const T g = T(1) / (T(1) + std::exp(-(dot(m0, a.w_att, M) + a.b_att)));
      b.ex[t * kEx + kG] = g;
      T* mg = b.MG + int64_t(t) * M;
      std::memcpy(mg, m0, sizeof(T) * M);
      scale_row(mg, g, M);
    }
  } else {
    std::memcpy(b.MG, b.M0, sizeof(T) * nt * M);
  }
  gemm(nt, Hc, M, b.MG, M, 1, a.wc1_t, Hc, b.C1P, Hc, false);
  add_bias_rows(b.C1P, a.bc1, nt, Hc);
  act_forward(b.C1, b.C1P, int64_t(nt) * Hc, a.act);
  for (int t = 0; t < nt; ++t) {
    T* x = b.ex + t * kEx;
    coord_scalar(a, b.C1 + int64_t(t) * Hc, x);
    coord_unit(a.coord_norm, x);
  }
}

template <typename T>
void forward(const Args<T>& a, int64_t r0, int64_t r1, T* work, T* m_sum, T* t_sum) {
  const Tile<T> b(work, a.H1, a.M, a.Hc);
  const int M = a.M;
  for (int64_t base = r0; base < r1; base += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, r1 - base));
    tile_forward(a, base, nt, b);
    for (int t = 0; t < nt; ++t) {
      const int64_t i = a.key_of[base + t];
      const T* x = b.ex + t * kEx;
      add_row(m_sum + i * M, b.MG + int64_t(t) * M, M);
      for (int k = 0; k < 3; ++k) {
        T v = x[kU + k] * x[kC];
        if (a.trans_clamp > 0) v = std::min(std::max(v, -a.trans_clamp), a.trans_clamp);
        t_sum[i * 3 + k] += v;
      }
    }
  }
}

template <typename T>
void backward(const Args<T>& a, const Grads<T>& g, int64_t r0, int64_t r1, T* work, T* partial) {
  const Tile<T> b(work, a.H1, a.M, a.Hc);
  const int H1 = a.H1, M = a.M, Hc = a.Hc, D = a.D;
  const PartialLayout P(H1, M, Hc, D);
  for (int64_t base = r0; base < r1; base += kTile) {
    const int nt = static_cast<int>(std::min<int64_t>(kTile, r1 - base));
    tile_forward(a, base, nt, b);
    // Coordinate term: dc (into kDc) and the gradient w.r.t. d through u (into kDd).
    for (int t = 0; t < nt; ++t) {
      T* x = b.ex + t * kEx;
      const int64_t i = a.key_of[base + t];
      T dt[3], du[3], dc = 0;
      for (int k = 0; k < 3; ++k) {
        dt[k] = g.grad_t[i * 3 + k];
        if (a.trans_clamp > 0 && std::abs(x[kU + k] * x[kC]) > a.trans_clamp) dt[k] = 0;
        dc += dt[k] * x[kU + k];
        du[k] = dt[k] * x[kC];
      }
      if (a.c_clamp > 0 && std::abs(x[kC1]) > a.c_clamp) dc = 0;
      if (a.tanh) dc *= T(1) - x[kC1] * x[kC1];
      x[kDc] = dc;
      coord_unit_backward(a.coord_norm, x, du, x + kDd);
      partial[P.bc2] += dc;
      axpy(partial + P.wc2, dc, b.C1 + int64_t(t) * Hc, Hc);
      // dC1 row (into C1): dc * wc2, times act' at C1P.
      T* dc1 = b.C1 + int64_t(t) * Hc;
      std::memcpy(dc1, a.wc2, sizeof(T) * Hc);
      scale_row(dc1, dc, Hc);
    }
    act_backward(b.C1, b.C1P, int64_t(nt) * Hc, a.act);
    for (int t = 0; t < nt; ++t) add_row(partial + P.bc1, b.C1 + int64_t(t) * Hc, Hc);
    gemm(Hc, M, nt, b.C1, 1, Hc, b.MG, M, partial + P.wc1, M, true);
    // dL/dm: the feature sum's incoming gradient plus the coordinate MLP's.
    for (int t = 0; t < nt; ++t)
      std::memcpy(b.DM + int64_t(t) * M, g.grad_m + a.key_of[base + t] * M, sizeof(T) * M);
    gemm(nt, M, Hc, b.C1, Hc, 1, a.wc1, M, b.DM, M, true);
    if (a.w_att != nullptr) {
      for (int t = 0; t < nt; ++t) {
        T* dm = b.DM + int64_t(t) * M;
        const T* m0 = b.M0 + int64_t(t) * M;
        const T gt = b.ex[t * kEx + kG];
        const T ds = dot(dm, m0, M) * gt * (T(1) - gt);
        partial[P.b_att] += ds;
        axpy(partial + P.w_att, ds, m0, M);
        scale_row(dm, gt, M);
        axpy(dm, ds, a.w_att, M);
      }
    }
    act_backward(b.DM, b.Z2, int64_t(nt) * M, a.act);  // now dZ2
    for (int t = 0; t < nt; ++t) add_row(partial + P.b2, b.DM + int64_t(t) * M, M);
    gemm(M, H1, nt, b.DM, 1, M, b.S1, H1, partial + P.w2, H1, true);
    gemm(nt, H1, M, b.DM, M, 1, a.w2, H1, b.S1, H1, false);  // S1 <- dS1
    act_backward(b.S1, b.Z1, int64_t(nt) * H1, a.act);       // S1 <- dZ1
    for (int t = 0; t < nt; ++t) {
      const int64_t r = base + t, e = edge_id(a, r), i = a.key_of[r];
      const T* dz = b.S1 + int64_t(t) * H1;
      T* x = b.ex + t * kEx;
      const T dr = dot(dz, a.w_radial, H1);
      axpy(partial + P.w_radial, x[kR], dz, H1);
      // A self loop's coordinate gradient adds at i and subtracts at j == i: exactly
      // zero, so it is dropped rather than left to cancel in rounding (with the
      // detached or clamped norms it is of order 1e8 at d = 0).
      const bool loop = i == a.other_of[r];
      T* dd = g.dd + e * 3;
      for (int k = 0; k < 3; ++k) {
        dd[k] = loop ? T(0) : x[kDd + k] + T(2) * x[kD + k] * dr;
        g.grad_coord[i * 3 + k] += dd[k];
      }
      add_row(g.grad_node_i + i * H1, dz, H1);
      std::memcpy(g.dz1 + e * H1, dz, sizeof(T) * H1);
      for (int k = 0; k < D; ++k) {
        g.grad_edge_attr[e * D + k] = dot(dz, a.w_edge_t + int64_t(k) * H1, H1);
        axpy(partial + P.w_edge_t + int64_t(k) * H1, a.edge_attr[e * D + k], dz, H1);
      }
    }
  }
}

template <typename T>
KernelSet<T> make() {
  return {&forward<T>, &backward<T>};
}

}  // namespace EQUIOPS_EGNN_NS
}  // namespace egnn
}  // namespace equiops
