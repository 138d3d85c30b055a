// Shared, torch-free declarations of the CPU tensor-product kernels: what one call
// passes to them (tp_kernels.h has the math and the layout) and one function table per
// instruction set.
#pragma once

// Everything the kernels include comes first, before any per-ISA target pragma.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "equiops/tp_problem.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define EQUIOPS_TP_HAVE_AVX2 1
#endif

namespace equiops {
namespace tp {

// A row-major (rows, ld) input; rows is 1 (broadcast over all N rows) or N. p may be
// null for an absent optional input. With idx, call row r reads row idx[r] (the
// convolution's gathers: node features at each edge's sender, edge rows through a
// sort permutation); the caller guarantees every idx[r] < rows.
template <typename T>
struct In {
  const T* p = nullptr;
  int64_t rows = 0;
  int64_t ld = 0;
  const int64_t* idx = nullptr;
};

// What one call reads and writes. Paths are visited grouped by output block
// (Problem::block_order, block_start).
template <typename T>
struct Call {
  const Problem* prob = nullptr;
  int64_t N = 0;
  In<T> x1, x2, w, go, gg1, gg2, ggw;
  // (N, dim_out): the forward's output, or the double backward's grad of grad_out.
  T* out = nullptr;
  // Gradients w.r.t. x1, x2, weight (null: not wanted). A per-row input's gradient is
  // written here as (N, dim); a broadcast input's (rows == 1) goes to the partial sums.
  T* g1 = nullptr;
  T* g2 = nullptr;
  T* gw = nullptr;
  // Non-temporal stores for the outputs (set for large, write-once outputs).
  bool nt = false;
  // Row maps of the outputs (null: call row r is output row r). With out_acc / g1_acc
  // the row is added into the output row instead of stored: the convolution's sums over
  // a node's edges. Rows are visited in order within a call, so when several rows map to
  // one output row their sum is taken in row order (deterministic); the caller gives
  // concurrent calls disjoint output rows.
  const int64_t* out_idx = nullptr;
  bool out_acc = false;
  const int64_t* g1_idx = nullptr;
  bool g1_acc = false;
  const int64_t* g2_idx = nullptr;
  const int64_t* gw_idx = nullptr;
};

// One range's partial sums of the gradients of broadcast inputs: (dim1), (dim2),
// (dim_w), each null unless that input is broadcast and its gradient is wanted.
template <typename T>
struct Partials {
  T* g1 = nullptr;
  T* g2 = nullptr;
  T* gw = nullptr;
};

// Each kernel handles rows [row0, row1) (row0 a multiple of the vector width).
template <typename T>
struct KernelSet {
  void (*forward)(const Call<T>&, int64_t, int64_t, const Partials<T>&);
  void (*backward)(const Call<T>&, int64_t, int64_t, const Partials<T>&);
  void (*double_backward)(const Call<T>&, int64_t, int64_t, const Partials<T>&);
};

namespace generic {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace generic

#ifdef EQUIOPS_TP_HAVE_AVX2
namespace avx2 {
KernelSet<float> kernels_f32();
KernelSet<double> kernels_f64();
}  // namespace avx2
#endif

}  // namespace tp
}  // namespace equiops
