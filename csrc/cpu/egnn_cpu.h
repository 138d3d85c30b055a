// Shared, torch-free declarations of the CPU EGNN message kernels (egnn_kernels.h has
// the math; egnn_cpu.cpp the torch glue): what one call passes and one function table
// per instruction set.
#pragma once

// Everything the kernels include comes first, before any per-ISA target pragma.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EQUIOPS_EGNN_HAVE_AVX2 1
#endif

namespace equiops {
namespace egnn {

enum Act : int { kSilu = 0, kRelu = 1 };
enum CoordNorm : int { kNone = 0, kDetached = 1, kPlusOne = 2, kClamped = 3 };

// Rows of the tile pipeline: edges are processed kTile at a time, their intermediate
// activations (kTile x width each) living in a per-task workspace that stays in L1/L2.
constexpr int kTile = 32;

// One call. Rows r = 0..E-1 are the edges in receiver order: edge edge_of[r] (null:
// edge r) with receiver key_of[r] and sender other_of[r]. Matrices are row-major; the
// *_t ones are transposed copies (so every product reads its right operand by rows).
template <typename T>
struct Args {
  int64_t E = 0;
  int H1 = 0, M = 0, Hc = 0, D = 0;
  const int64_t* edge_of = nullptr;
  const int64_t* key_of = nullptr;
  const int64_t* other_of = nullptr;
  const T* node_i = nullptr;    // (n, H1)
  const T* node_j = nullptr;    // (n, H1)
  const T* coord = nullptr;     // (n, 3)
  const T* edge_attr = nullptr; // (E, D)
  const T* w_radial = nullptr;  // (H1)
  const T* w_edge_t = nullptr;  // (D, H1)
  const T* w2 = nullptr;        // (M, H1)
  const T* w2_t = nullptr;      // (H1, M)
  const T* b2 = nullptr;        // (M)
  const T* w_att = nullptr;     // (M) or null: no gate
  T b_att = 0;
  const T* wc1 = nullptr;       // (Hc, M)
  const T* wc1_t = nullptr;     // (M, Hc)
  const T* bc1 = nullptr;       // (Hc)
  const T* wc2 = nullptr;       // (Hc)
  T bc2 = 0;
  int act = kSilu;
  int coord_norm = kNone;
  bool tanh = false;
  T c_clamp = 0, trans_clamp = 0;  // 0: off
};

// Backward outputs. grad_node_i and grad_coord are summed at receivers (rows owned by
// the task's range); dz1 (E, H1) and dd (E, 3) are per-edge rows for the sender sums;
// grad_edge_attr (E, D) per edge. The weight gradients go to `partial` (layout below).
template <typename T>
struct Grads {
  const T* grad_m = nullptr;  // (n, M)
  const T* grad_t = nullptr;  // (n, 3)
  T* grad_node_i = nullptr;   // (n, H1), accumulated
  T* grad_coord = nullptr;    // (n, 3), accumulated (receiver side)
  T* dz1 = nullptr;           // (E, H1) by edge id
  T* dd = nullptr;            // (E, 3) by edge id
  T* grad_edge_attr = nullptr;  // (E, D) by edge id
};

// Per-range weight-gradient partials, in this order.
struct PartialLayout {
  int64_t w2, b2, wc1, bc1, wc2, w_att, b_att, bc2, w_radial, w_edge_t, size;
  PartialLayout(int H1, int M, int Hc, int D) {
    int64_t o = 0;
    w2 = o, o += int64_t(M) * H1;
    b2 = o, o += M;
    wc1 = o, o += int64_t(Hc) * M;
    bc1 = o, o += Hc;
    wc2 = o, o += Hc;
    w_att = o, o += M;
    b_att = o, o += 1;
    bc2 = o, o += 1;
    w_radial = o, o += H1;
    w_edge_t = o, o += int64_t(D) * H1;
    size = o;
  }
};

// Workspace elements one task needs (tile buffers), for forward and backward.
inline int64_t workspace_size(int H1, int M, int Hc) {
  return int64_t(kTile) * (2 * H1 + 4 * M + 2 * Hc + 16);
}

template <typename T>
struct KernelSet {
  // Rows [r0, r1) (whole receivers); sums into m_sum (n, M) and t_sum (n, 3).
  void (*forward)(const Args<T>&, int64_t r0, int64_t r1, T* work, T* m_sum, T* t_sum);
  void (*backward)(const Args<T>&, const Grads<T>&, int64_t r0, int64_t r1, T* work, T* partial);
};

namespace generic {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace generic

#ifdef EQUIOPS_EGNN_HAVE_AVX2
namespace avx2 {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace avx2
#endif

}  // namespace egnn
}  // namespace equiops
