// Device kernels of the segment / scatter operators, in their canonical form.
//
// Plain CUDA C++ with no torch headers, so that the same source can be compiled ahead of
// time (csrc/cuda/segment_cuda.cu, csrc/cuda/compile_check.cu) or at run time with
// NVRTC / CuPy (define EQUIOPS_NO_HOST_HELPERS there, or rely on __CUDACC_RTC__).
// Semantics: python/equiops/reference/segment.py.
//
//   src     (B, N, C) contiguous; N is the reduced ("row") dimension.
//   indptr  (Bi, S + 1) contiguous, Bi in {1, B}; geometry.indptr_bstride is 0 when Bi == 1.
//   perm    nullptr or (P,): position e stands for row perm[e] (else row e).
//
// Segment kernels (sum, min/max, gather) share one thread layout. A block of
// tx * r * spb threads handles spb segments; thread t = (sy * r + rr) * tx + x works on
// (virtual) segment blockIdx.x * spb + sy, on the V consecutive columns starting at
// (blockIdx.y * tx + x) * V ("vector column"), and on the positions
// start + rr, start + rr + r, ... of that segment. V columns are read with W-element
// vector accesses (W * sizeof(T) <= 16 bytes). The r partial results of a segment are
// then combined by a fixed binary tree (warp shuffles when the r lanes of a column lie in
// one warp, shared memory otherwise). When there are too few segments to fill the GPU,
// each segment is also split into q contiguous position ranges ("virtual segments")
// whose partial results go to a workspace and are combined in order by a second kernel
// (segment_*_combine_kernel). r and q only depend on the shapes (never on index values or
// the device), so the results are bitwise reproducible. No atomics.
// make_segment_geometry() below chooses tx, r, q and spb (see there).
//
// scatter_sum_kernel: one thread per src element (grid-stride), atomicAdd into out.
// float/double use the native atomics; __half / __nv_bfloat16 use the native 16-bit
// atomicAdd (sm_70+ / sm_80+, a compare-and-swap loop on older targets), i.e. they
// accumulate in the output precision (each addition rounds to half / bfloat16), as
// torch's own CUDA scatter_add_ does. Not deterministic (atomics).
//
// Index values (indptr, perm) are trusted, as documented in equiops/cuda_ops.h: out of
// range values are undefined behaviour. scatter_sum drops out-of-range indices.
#pragma once

#include <cuda_fp16.h>
#include <cuda_bf16.h>

#if defined(__CUDACC_RTC__) && !defined(EQUIOPS_NO_HOST_HELPERS)
#define EQUIOPS_NO_HOST_HELPERS
#endif

namespace equiops {
namespace kernels {

typedef long long i64;

// Largest block; every launch below uses at most this many threads.
constexpr int kMaxBlock = 256;
// Residency hint of every kernel: at least 4 blocks of 256 threads per SM (<= 64 registers).
constexpr int kMinBlocksPerSM = 4;
// min/max keeps a (value, int64 row) pair per column: allow up to 80 registers.
constexpr int kMinBlocksPerSMMinMax = 3;
// Internal marker of "no row seen yet" in min/max (rows are < N <= this).
constexpr i64 kNoArg = 0x7fffffffffffffffLL;

// ---------------------------------------------------------------------------------------
// Scalar helpers: accumulate half types in float.

template <typename T>
struct AccOf {
  typedef float type;
};
template <>
struct AccOf<double> {
  typedef double type;
};

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
struct FromAcc;
template <>
struct FromAcc<float> {
  static __device__ __forceinline__ float cvt(float x) { return x; }
};
template <>
struct FromAcc<double> {
  static __device__ __forceinline__ double cvt(double x) { return x; }
};
template <>
struct FromAcc<__half> {
  static __device__ __forceinline__ __half cvt(float x) { return __float2half_rn(x); }
};
template <>
struct FromAcc<__nv_bfloat16> {
  static __device__ __forceinline__ __nv_bfloat16 cvt(float x) { return __float2bfloat16_rn(x); }
};

template <typename T>
__device__ __forceinline__ T from_acc(typename AccOf<T>::type x) {
  return FromAcc<T>::cvt(x);
}

template <typename A>
__device__ __forceinline__ bool is_nan(A x) {
  return x != x;
}

// W contiguous elements, aligned so that one access moves W * sizeof(T) bytes.
template <typename T, int W>
struct alignas(sizeof(T) * W) Pack {
  T v[W];
};

// p must be aligned to W * sizeof(T); V % W == 0.
template <typename T, int V, int W>
__device__ __forceinline__ void load_acc(const T* __restrict__ p, typename AccOf<T>::type (&out)[V]) {
  static_assert(V % W == 0, "V must be a multiple of W");
#pragma unroll
  for (int k = 0; k < V / W; ++k) {
    const Pack<T, W> pk = *reinterpret_cast<const Pack<T, W>*>(p + k * W);
#pragma unroll
    for (int j = 0; j < W; ++j) out[k * W + j] = to_acc(pk.v[j]);
  }
}

template <typename T, int V, int W>
__device__ __forceinline__ void store_acc(T* __restrict__ p, const typename AccOf<T>::type (&in)[V]) {
  static_assert(V % W == 0, "V must be a multiple of W");
#pragma unroll
  for (int k = 0; k < V / W; ++k) {
    Pack<T, W> pk;
#pragma unroll
    for (int j = 0; j < W; ++j) pk.v[j] = from_acc<T>(in[k * W + j]);
    *reinterpret_cast<Pack<T, W>*>(p + k * W) = pk;
  }
}

template <typename T, int V, int W>
__device__ __forceinline__ void load_raw(const T* __restrict__ p, Pack<T, W> (&out)[V / W]) {
#pragma unroll
  for (int k = 0; k < V / W; ++k) out[k] = *reinterpret_cast<const Pack<T, W>*>(p + k * W);
}

template <typename T, int V, int W>
__device__ __forceinline__ void store_raw(T* __restrict__ p, const Pack<T, W> (&in)[V / W]) {
#pragma unroll
  for (int k = 0; k < V / W; ++k) *reinterpret_cast<Pack<T, W>*>(p + k * W) = in[k];
}

template <typename index_t>
__device__ __forceinline__ i64 row_of(const index_t* __restrict__ perm, i64 e) {
  return perm == nullptr ? e : static_cast<i64>(perm[e]);
}

// ---------------------------------------------------------------------------------------
// Launch geometry shared by the segment kernels (a plain struct passed by value).

struct SegmentGeometry {
  i64 num_seg;         // B * S
  i64 num_vseg;        // num_seg * q work items ("virtual segments")
  i64 S;               // segments per batch
  i64 rows;            // N: rows of the row-indexed tensor (src of sum/minmax, out of gather)
  i64 C;               // columns
  i64 indptr_bstride;  // 0 when indptr is broadcast over the batch, else S + 1
  int cv;              // vector columns: C / V
  int tx;              // threads over vector columns per segment (per blockIdx.y chunk)
  int r;               // lanes over the rows of a segment (power of two)
  int spb;             // segments per block
  int shfl;            // 1: combine the r lanes with warp shuffles (tx * r <= 32, both powers of 2)
  int q;               // splits per segment: > 1 when there are too few segments to fill the GPU;
                       // each split reduces 1/q of its segment's positions into a partial result
                       // and a second kernel combines the q partials in order
};

// Per-thread coordinates in the segment layout.
struct SegLane {
  int x;     // vector column inside the chunk
  int rr;    // row lane
  int sy;    // segment inside the block
  int t;     // threadIdx.x
  bool col_ok;
  i64 col;   // first column handled
};

template <int V>
__device__ __forceinline__ SegLane seg_lane(const SegmentGeometry& g) {
  SegLane l;
  l.t = static_cast<int>(threadIdx.x);
  l.x = l.t % g.tx;
  l.rr = (l.t / g.tx) % g.r;
  l.sy = l.t / (g.tx * g.r);
  const int cvx = static_cast<int>(blockIdx.y) * g.tx + l.x;
  l.col_ok = cvx < g.cv;
  l.col = static_cast<i64>(cvx) * V;
  return l;
}

// a / d for 0 <= a <= bound, with a 32-bit division when bound fits (a 64-bit division is
// a slow subroutine call).
__device__ __forceinline__ i64 div_bounded(i64 a, i64 d, i64 bound) {
  if (bound <= 0xffffffffLL) {
    return static_cast<i64>(static_cast<unsigned int>(a) / static_cast<unsigned int>(d));
  }
  return a / d;
}

// Work item vseg: segment seg of batch b, positions [lo, hi).
struct SegRange {
  i64 seg, b, lo, hi;
};

template <typename index_t>
__device__ __forceinline__ SegRange seg_range(i64 vseg, const SegmentGeometry& g,
                                              const index_t* __restrict__ indptr) {
  SegRange w;
  i64 part = 0;
  w.seg = vseg;
  if (g.q > 1) {
    w.seg = div_bounded(vseg, g.q, g.num_vseg);
    part = vseg - w.seg * g.q;
  }
  w.b = div_bounded(w.seg, g.S, g.num_seg);
  const i64 s = w.seg - w.b * g.S;
  const index_t* ip = indptr + w.b * g.indptr_bstride;
  w.lo = static_cast<i64>(ip[s]);
  w.hi = static_cast<i64>(ip[s + 1]);
  if (g.q > 1) {
    const i64 len = w.hi > w.lo ? w.hi - w.lo : 0;
    const i64 chunk = (len + g.q - 1) / g.q;
    const i64 lo = w.lo + part * chunk;
    w.lo = lo < w.hi ? lo : w.hi;
    w.hi = lo + chunk < w.hi ? lo + chunk : w.hi;
  }
  return w;
}

// Sum of the r lanes of each (segment, vector column): butterfly over the lane index.
// Lane rr ends with the total of lanes rr ^ ... (all lanes in the shuffle form; lane 0 in
// the shared-memory form); both pair lane rr with rr + h at level h (h = r/2, ..., 1), so
// they give identical results. Must be reached by every thread of the block.
template <int V, typename Acc>
__device__ __forceinline__ void reduce_sum_lanes(Acc (&acc)[V], const SegmentGeometry& g, const SegLane& l,
                                                 Acc* smem) {
  if (g.r == 1) return;
  if (g.shfl) {
#pragma unroll
    for (int j = 0; j < V; ++j) {
      for (int h = g.r >> 1; h > 0; h >>= 1) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], h * g.tx);
    }
  } else {
    for (int h = g.r >> 1; h > 0; h >>= 1) {
      if (l.rr >= h && l.rr < 2 * h) {
#pragma unroll
        for (int j = 0; j < V; ++j) smem[l.t * V + j] = acc[j];
      }
      __syncthreads();
      if (l.rr < h) {
        const Acc* o = smem + (l.t + h * g.tx) * V;
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += o[j];
      }
      __syncthreads();
    }
  }
}

// ---------------------------------------------------------------------------------------
// segment_sum: out[b, s, c] = sum over positions e of segment s of src[b, row(e), c].

// With g.q > 1, split vseg writes its partial sums (accumulator type) to part[vseg, :]
// instead; segment_sum_combine_kernel then adds the q partials of each segment in order.
template <typename T, int V, int W, typename index_t>
__global__ void __launch_bounds__(kMaxBlock, kMinBlocksPerSM)
    segment_sum_kernel(const T* __restrict__ src, const index_t* __restrict__ indptr,
                       const index_t* __restrict__ perm, T* __restrict__ out,
                       typename AccOf<T>::type* __restrict__ part, SegmentGeometry g) {
  typedef typename AccOf<T>::type Acc;
  extern __shared__ __align__(16) unsigned char eq_smem[];
  Acc* smem = reinterpret_cast<Acc*>(eq_smem);
  const SegLane l = seg_lane<V>(g);
  const i64 step = g.r;

  for (i64 blk = blockIdx.x; blk * g.spb < g.num_vseg; blk += gridDim.x) {
    const i64 vseg = blk * g.spb + l.sy;
    const bool ok = l.col_ok && vseg < g.num_vseg;
    Acc acc[V];
#pragma unroll
    for (int j = 0; j < V; ++j) acc[j] = Acc(0);
    SegRange w{0, 0, 0, 0};
    if (ok) {
      w = seg_range(vseg, g, indptr);
      const i64 end = w.hi;
      const T* base = src + w.b * g.rows * g.C + l.col;
      i64 e = w.lo + l.rr;
      // Four rows in flight per iteration; the additions stay in position order.
      for (; e + 3 * step < end; e += 4 * step) {
        const i64 r0 = row_of(perm, e), r1 = row_of(perm, e + step);
        const i64 r2 = row_of(perm, e + 2 * step), r3 = row_of(perm, e + 3 * step);
        Acc v0[V], v1[V], v2[V], v3[V];
        load_acc<T, V, W>(base + r0 * g.C, v0);
        load_acc<T, V, W>(base + r1 * g.C, v1);
        load_acc<T, V, W>(base + r2 * g.C, v2);
        load_acc<T, V, W>(base + r3 * g.C, v3);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v0[j];
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v1[j];
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v2[j];
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v3[j];
      }
      for (; e < end; e += step) {
        Acc v0[V];
        load_acc<T, V, W>(base + row_of(perm, e) * g.C, v0);
#pragma unroll
        for (int j = 0; j < V; ++j) acc[j] += v0[j];
      }
    }
    reduce_sum_lanes<V, Acc>(acc, g, l, smem);
    if (ok && l.rr == 0) {
      if (g.q == 1) {
        store_acc<T, V, W>(out + w.seg * g.C + l.col, acc);
      } else {
        Acc* p = part + vseg * g.C + l.col;
#pragma unroll
        for (int j = 0; j < V; ++j) p[j] = acc[j];
      }
    }
  }
}

// out[seg, c] = part[seg * q, c] + part[seg * q + 1, c] + ... (in this order).
template <typename T>
__global__ void __launch_bounds__(kMaxBlock)
    segment_sum_combine_kernel(const typename AccOf<T>::type* __restrict__ part, T* __restrict__ out, i64 num_seg,
                               i64 C, int q) {
  typedef typename AccOf<T>::type Acc;
  const i64 total = num_seg * C;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 seg = i / C;
    const Acc* p = part + seg * q * C + (i - seg * C);
    Acc acc = Acc(0);
    for (int k = 0; k < q; ++k) acc += p[k * C];
    out[i] = from_acc<T>(acc);
  }
}

// ---------------------------------------------------------------------------------------
// segment_minmax. (value, row) pairs are ranked NaN first, then by value (larger for max,
// smaller for min), then by smaller row; the best pair of a segment is therefore unique
// and independent of the combination order. Empty segment: value 0, arg N.

// True when (v, a) ranks strictly before (cv, ca). kNoArg marks "nothing yet".
template <bool IS_MAX, typename Acc>
__device__ __forceinline__ bool mm_better(Acc v, i64 a, Acc cv, i64 ca) {
  if (a == kNoArg) return false;
  if (ca == kNoArg) return true;
  const bool vn = is_nan(v), cn = is_nan(cv);
  if (vn || cn) return (vn && cn) ? (a < ca) : vn;
  if (v == cv) return a < ca;
  return IS_MAX ? (v > cv) : (v < cv);
}

template <bool IS_MAX, int V, typename Acc>
__device__ __forceinline__ void mm_fold(Acc (&val)[V], i64 (&arg)[V], const Acc (&v)[V], i64 row) {
#pragma unroll
  for (int j = 0; j < V; ++j) {
    if (mm_better<IS_MAX>(v[j], row, val[j], arg[j])) {
      val[j] = v[j];
      arg[j] = row;
    }
  }
}

template <bool IS_MAX, int V, typename Acc>
__device__ __forceinline__ void reduce_mm_lanes(Acc (&val)[V], i64 (&arg)[V], const SegmentGeometry& g,
                                                const SegLane& l, i64* sarg, Acc* sval) {
  if (g.r == 1) return;
  if (g.shfl) {
    // Column-outer: each column's tree is independent (and this order keeps ptxas from
    // spilling the V=3 double/half variants).
#pragma unroll
    for (int j = 0; j < V; ++j) {
      for (int h = g.r >> 1; h > 0; h >>= 1) {
        const Acc ov = __shfl_xor_sync(0xffffffffu, val[j], h * g.tx);
        const i64 oa = __shfl_xor_sync(0xffffffffu, arg[j], h * g.tx);
        if (mm_better<IS_MAX>(ov, oa, val[j], arg[j])) {
          val[j] = ov;
          arg[j] = oa;
        }
      }
    }
  } else {
    for (int h = g.r >> 1; h > 0; h >>= 1) {
      if (l.rr >= h && l.rr < 2 * h) {
#pragma unroll
        for (int j = 0; j < V; ++j) {
          sval[l.t * V + j] = val[j];
          sarg[l.t * V + j] = arg[j];
        }
      }
      __syncthreads();
      if (l.rr < h) {
        const int o = (l.t + h * g.tx) * V;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          if (mm_better<IS_MAX>(sval[o + j], sarg[o + j], val[j], arg[j])) {
            val[j] = sval[o + j];
            arg[j] = sarg[o + j];
          }
        }
      }
      __syncthreads();
    }
  }
}

// With g.q > 1, split vseg writes its (value, row) pairs to part / part_arg[vseg, :]
// (row kNoArg: nothing seen) and segment_minmax_combine_kernel picks the best of the q.
template <typename T, int V, int W, bool IS_MAX, typename index_t>
__global__ void __launch_bounds__(kMaxBlock, kMinBlocksPerSMMinMax)
    segment_minmax_kernel(const T* __restrict__ src, const index_t* __restrict__ indptr,
                          const index_t* __restrict__ perm, T* __restrict__ out, index_t* __restrict__ out_arg,
                          typename AccOf<T>::type* __restrict__ part, index_t* __restrict__ part_arg,
                          SegmentGeometry g) {
  typedef typename AccOf<T>::type Acc;
  extern __shared__ __align__(16) unsigned char eq_smem[];
  i64* sarg = reinterpret_cast<i64*>(eq_smem);
  Acc* sval = reinterpret_cast<Acc*>(sarg + static_cast<int>(blockDim.x) * V);
  const SegLane l = seg_lane<V>(g);
  const i64 step = g.r;

  for (i64 blk = blockIdx.x; blk * g.spb < g.num_vseg; blk += gridDim.x) {
    const i64 vseg = blk * g.spb + l.sy;
    const bool ok = l.col_ok && vseg < g.num_vseg;
    Acc val[V];
    i64 arg[V];
#pragma unroll
    for (int j = 0; j < V; ++j) {
      val[j] = Acc(0);
      arg[j] = kNoArg;
    }
    SegRange w{0, 0, 0, 0};
    if (ok) {
      w = seg_range(vseg, g, indptr);
      const i64 end = w.hi;
      const T* base = src + w.b * g.rows * g.C + l.col;
      i64 e = w.lo + l.rr;
      for (; e + step < end; e += 2 * step) {
        const i64 r0 = row_of(perm, e), r1 = row_of(perm, e + step);
        Acc v0[V], v1[V];
        load_acc<T, V, W>(base + r0 * g.C, v0);
        load_acc<T, V, W>(base + r1 * g.C, v1);
        mm_fold<IS_MAX, V, Acc>(val, arg, v0, r0);
        mm_fold<IS_MAX, V, Acc>(val, arg, v1, r1);
      }
      if (e < end) {
        const i64 r0 = row_of(perm, e);
        Acc v0[V];
        load_acc<T, V, W>(base + r0 * g.C, v0);
        mm_fold<IS_MAX, V, Acc>(val, arg, v0, r0);
      }
    }
    reduce_mm_lanes<IS_MAX, V, Acc>(val, arg, g, l, sarg, sval);
    if (ok && l.rr == 0 && g.q > 1) {
      Acc* pv = part + vseg * g.C + l.col;
      index_t* pa = part_arg + vseg * g.C + l.col;
#pragma unroll
      for (int j = 0; j < V; ++j) {
        pv[j] = val[j];
        pa[j] = static_cast<index_t>(arg[j]);
      }
    } else if (ok && l.rr == 0) {
#pragma unroll
      for (int j = 0; j < V; ++j) {
        if (arg[j] == kNoArg) {
          val[j] = Acc(0);
          arg[j] = g.rows;
        }
      }
      store_acc<T, V, W>(out + w.seg * g.C + l.col, val);
      index_t* oa = out_arg + w.seg * g.C + l.col;
#pragma unroll
      for (int j = 0; j < V; ++j) oa[j] = static_cast<index_t>(arg[j]);
    }
  }
}

// Best of the q partial (value, row) pairs of each segment; empty: value 0, arg rows.
template <typename T, bool IS_MAX, typename index_t>
__global__ void __launch_bounds__(kMaxBlock)
    segment_minmax_combine_kernel(const typename AccOf<T>::type* __restrict__ part,
                                  const index_t* __restrict__ part_arg, T* __restrict__ out,
                                  index_t* __restrict__ out_arg, i64 num_seg, i64 C, int q, i64 rows) {
  typedef typename AccOf<T>::type Acc;
  const i64 total = num_seg * C;
  for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<i64>(gridDim.x) * blockDim.x) {
    const i64 seg = i / C;
    const i64 o = seg * q * C + (i - seg * C);
    Acc val = Acc(0);
    i64 arg = kNoArg;
    for (int k = 0; k < q; ++k) {
      const Acc v = part[o + k * C];
      const i64 a = static_cast<i64>(part_arg[o + k * C]);
      if (mm_better<IS_MAX>(v, a, val, arg)) {
        val = v;
        arg = a;
      }
    }
    if (arg == kNoArg) {
      val = Acc(0);
      arg = rows;
    }
    out[i] = from_acc<T>(val);
    out_arg[i] = static_cast<index_t>(arg);
  }
}

// ---------------------------------------------------------------------------------------
// segment_gather: out[b, row(e), c] = src[b, s, c] for e in segment s; src (B, S, C),
// out (B, rows, C). Rows no segment covers must be zeroed separately (see below).

template <typename T, int V, int W, typename index_t>
__global__ void __launch_bounds__(kMaxBlock, kMinBlocksPerSM)
    segment_gather_kernel(const T* __restrict__ src, const index_t* __restrict__ indptr,
                          const index_t* __restrict__ perm, T* __restrict__ out, SegmentGeometry g) {
  const SegLane l = seg_lane<V>(g);
  const i64 step = g.r;
  for (i64 blk = blockIdx.x; blk * g.spb < g.num_vseg; blk += gridDim.x) {
    const i64 vseg = blk * g.spb + l.sy;
    if (!(l.col_ok && vseg < g.num_vseg)) continue;
    const SegRange w = seg_range(vseg, g, indptr);
    const i64 end = w.hi;
    Pack<T, W> v[V / W];
    load_raw<T, V, W>(src + w.seg * g.C + l.col, v);
    T* base = out + w.b * g.rows * g.C + l.col;
    i64 e = w.lo + l.rr;
    for (; e + step < end; e += 2 * step) {
      const i64 r0 = row_of(perm, e), r1 = row_of(perm, e + step);
      store_raw<T, V, W>(base + r0 * g.C, v);
      store_raw<T, V, W>(base + r1 * g.C, v);
    }
    if (e < end) store_raw<T, V, W>(base + row_of(perm, e) * g.C, v);
  }
}

// Without perm, batch b's segments cover exactly the rows [indptr[b][0], indptr[b][S]);
// this zeroes the other rows of out (B, rows, C). Grid (any, <= B): blockIdx.y strides over
// batches, the x dimension over that batch's uncovered elements.
template <typename T, typename index_t>
__global__ void __launch_bounds__(kMaxBlock, kMinBlocksPerSM)
    gather_zero_uncovered_kernel(T* __restrict__ out, const index_t* __restrict__ indptr, i64 B, i64 S, i64 rows,
                                 i64 C, i64 indptr_bstride) {
  const T zero = from_acc<T>(typename AccOf<T>::type(0));
  for (i64 b = blockIdx.y; b < B; b += gridDim.y) {
    const index_t* ip = indptr + b * indptr_bstride;
    i64 lo = static_cast<i64>(ip[0]);
    i64 hi = static_cast<i64>(ip[S]);
    lo = lo < 0 ? 0 : (lo > rows ? rows : lo);
    hi = hi < lo ? lo : (hi > rows ? rows : hi);
    const i64 head = lo * C;
    const i64 total = head + (rows - hi) * C;
    T* ob = out + b * rows * C;
    for (i64 i = static_cast<i64>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
         i += static_cast<i64>(gridDim.x) * blockDim.x) {
      ob[i < head ? i : hi * C + (i - head)] = zero;
    }
  }
}

// ---------------------------------------------------------------------------------------
// scatter_sum: out[b, index[b, n, c], c] += src[b, n, c]; out (B, dim_size, C) zeroed.

__device__ __forceinline__ void atomic_add_val(float* p, float v) { atomicAdd(p, v); }

__device__ __forceinline__ void atomic_add_val(double* p, double v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 600
  atomicAdd(p, v);
#else
  unsigned long long* a = reinterpret_cast<unsigned long long*>(p);
  unsigned long long old = *a, assumed;
  do {
    assumed = old;
    old = atomicCAS(a, assumed, __double_as_longlong(__longlong_as_double(assumed) + v));
  } while (assumed != old);
#endif
}

__device__ __forceinline__ unsigned short bits16(__half x) { return __half_as_ushort(x); }
__device__ __forceinline__ unsigned short bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
template <typename T>
__device__ __forceinline__ T from_bits16(unsigned short b);
template <>
__device__ __forceinline__ __half from_bits16<__half>(unsigned short b) {
  return __ushort_as_half(b);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_bits16<__nv_bfloat16>(unsigned short b) {
  return __ushort_as_bfloat16(b);
}

// 16-bit compare-and-swap fallback on the aligned 32-bit word holding *p.
template <typename T>
__device__ __forceinline__ void atomic_add_16_cas(T* p, T v) {
  const unsigned long long addr = reinterpret_cast<unsigned long long>(p);
  unsigned int* word = reinterpret_cast<unsigned int*>(addr & ~3ULL);
  const unsigned int shift = (addr & 2) ? 16u : 0u;
  unsigned int old = *word, assumed;
  do {
    assumed = old;
    const unsigned short cur = static_cast<unsigned short>((assumed >> shift) & 0xffffu);
    const unsigned short nb = bits16(from_acc<T>(to_acc(from_bits16<T>(cur)) + to_acc(v)));
    const unsigned int next = (assumed & ~(0xffffu << shift)) | (static_cast<unsigned int>(nb) << shift);
    old = atomicCAS(word, assumed, next);
  } while (assumed != old);
}

__device__ __forceinline__ void atomic_add_val(__half* p, __half v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700
  atomicAdd(p, v);
#else
  atomic_add_16_cas(p, v);
#endif
}

__device__ __forceinline__ void atomic_add_val(__nv_bfloat16* p, __nv_bfloat16 v) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  atomicAdd(p, v);
#else
  atomic_add_16_cas(p, v);
#endif
}

// off_t: 32-bit unsigned when B * N * C fits, to avoid 64-bit divisions; else i64.
template <typename T, typename index_t, typename off_t>
__global__ void __launch_bounds__(kMaxBlock, kMinBlocksPerSM)
    scatter_sum_kernel(const T* __restrict__ src, const index_t* __restrict__ index, T* __restrict__ out,
                       off_t total, off_t N, off_t C, i64 dim_size, i64 stride_b, i64 stride_n, i64 stride_c) {
  for (off_t i = static_cast<off_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<off_t>(gridDim.x) * blockDim.x) {
    const off_t c = i % C;
    const off_t t = i / C;
    const off_t n = t % N;
    const off_t b = t / N;
    const i64 idx = static_cast<i64>(
        index[static_cast<i64>(b) * stride_b + static_cast<i64>(n) * stride_n + static_cast<i64>(c) * stride_c]);
    if (idx < 0 || idx >= dim_size) continue;
    atomic_add_val(out + (static_cast<i64>(b) * dim_size + idx) * static_cast<i64>(C) + static_cast<i64>(c), src[i]);
  }
}

// ---------------------------------------------------------------------------------------
// Host-side helpers (plain C++): vector width and launch geometry.
#if !defined(EQUIOPS_NO_HOST_HELPERS)

// Enough threads to fill a current GPU (about 132 SMs x 2048). A constant rather than the
// device's SM count, so that the reduction tree (hence every bit of the result) is the
// same on every GPU.
constexpr i64 kTargetThreads = i64(1) << 18;

inline i64 floor_pow2(i64 v) {
  i64 p = 1;
  while (p * 2 <= v) p *= 2;
  return p;
}

// Upper bound of the splits per segment.
constexpr i64 kMaxSplits = 4096;

// Threads over the cv vector columns of a segment (per blockIdx.y chunk).
inline i64 segment_tx(i64 cv) {
  i64 tx = cv <= 32 ? cv : ((cv + 31) / 32) * 32;
  if (tx > kMaxBlock) tx = kMaxBlock;
  return tx < 1 ? 1 : tx;
}

// Elements per vector access for V columns of esize bytes, when every access is aligned.
inline int max_access_width(int V, int esize) {
  int w = 1;
  while (w * 2 <= V && V % (w * 2) == 0 && (w * 2) * esize <= 16) w *= 2;
  return w;
}

// Columns per thread (V) and elements per access (W). C <= 4: a thread owns a whole row
// (V = C). Otherwise V is the widest power of two with V * esize <= 16 bytes that divides C
// and keeps every row start aligned (addr_bits: OR of the base addresses involved).
// W is V's widest aligned access, or 1 when the base address is not aligned to it.
inline void choose_vector(i64 C, int esize, unsigned long long addr_bits, int* V, int* W) {
  if (C <= 4) {
    *V = C < 1 ? 1 : static_cast<int>(C);
    const int w = max_access_width(*V, esize);
    *W = (addr_bits % static_cast<unsigned long long>(w * esize) == 0) ? w : 1;
    return;
  }
  int v = 16 / esize;
  while (v > 1 && (C % v != 0 || addr_bits % static_cast<unsigned long long>(v * esize) != 0)) v /= 2;
  *V = v;
  *W = v;
}

// Launch geometry for explicit lanes r (a power of two, tx * r <= kMaxBlock) and splits q;
// make_segment_geometry() below chooses them. tx threads cover the C / V vector columns
// (all of them up to 32, else a multiple of 32 up to 256 per blockIdx.y chunk); spb
// segments (or splits) fill a 256-thread block.
inline SegmentGeometry segment_geometry_with(i64 B, i64 S, i64 rows, i64 C, int V, bool indptr_broadcast, i64 r,
                                             i64 q, unsigned int* grid_x, unsigned int* grid_y,
                                             unsigned int* block) {
  SegmentGeometry g;
  g.num_seg = B * S;
  g.num_vseg = g.num_seg * q;
  g.S = S;
  g.rows = rows;
  g.C = C;
  g.indptr_bstride = indptr_broadcast ? 0 : S + 1;
  const i64 cv = C / V;
  g.cv = static_cast<int>(cv);
  const i64 tx = segment_tx(cv);
  const i64 chunks = (cv + tx - 1) / tx;
  i64 spb = kMaxBlock / (tx * r);
  if (spb < 1) spb = 1;
  g.tx = static_cast<int>(tx);
  g.r = static_cast<int>(r);
  g.spb = static_cast<int>(spb);
  g.q = static_cast<int>(q);
  const bool tx_pow2 = (tx & (tx - 1)) == 0;
  g.shfl = (r > 1 && tx_pow2 && tx * r <= 32) ? 1 : 0;
  const i64 blocks = (g.num_vseg + spb - 1) / spb;
  const i64 max_grid_x = 0x7fffffffLL;
  *grid_x = static_cast<unsigned int>(blocks < max_grid_x ? blocks : max_grid_x);
  *grid_y = static_cast<unsigned int>(chunks);
  *block = static_cast<unsigned int>(tx * r * spb);
  return g;
}

// Chooses the lanes r and splits q from the shapes alone (never from index values or the
// device), so that the reduction order, hence every bit of the result, is reproducible.
// avg = positions / S (positions: P with perm, else N).
//  * One vector column (C <= 4, or C * sizeof <= 16 bytes): r starts at avg / 8 rounded down
//    to a power of two, in [1, 32] (a group of lanes, each with ~8 rows, so that every
//    thread has several loads in flight). Wider rows: r starts at 1 (a thread loops over
//    its segment's rows for its columns).
//  * r doubles while the grid has fewer than kTargetThreads threads and each lane keeps
//    >= 4 rows on average, up to tx * r = 256 (a block per segment).
//  * Still too few threads (few long segments): each segment is split into q contiguous
//    position ranges (q <= target / threads, each lane keeping >= 4 rows), reduced
//    separately and combined in a second, ordered pass.
inline SegmentGeometry make_segment_geometry(i64 B, i64 S, i64 rows, i64 C, int V, i64 positions,
                                             bool indptr_broadcast, unsigned int* grid_x, unsigned int* grid_y,
                                             unsigned int* block) {
  const i64 cv = C / V;
  const i64 tx = segment_tx(cv);
  const i64 chunks = (cv + tx - 1) / tx;
  const i64 rmax = floor_pow2(kMaxBlock / tx);
  const i64 avg = S > 0 ? positions / S : 0;
  i64 r = 1;
  if (tx == 1) {
    r = floor_pow2(avg / 8 < 1 ? 1 : avg / 8);
    if (r > 32) r = 32;
  }
  if (r > rmax) r = rmax;
  const i64 base_threads = B * S * chunks * tx;
  while (2 * r <= rmax && base_threads * r < kTargetThreads && 2 * r * 4 <= avg) r *= 2;
  i64 q = 1;
  const i64 threads = base_threads * r;
  if (threads > 0 && threads < kTargetThreads) {
    q = (kTargetThreads + threads - 1) / threads;
    const i64 qmax = avg / (4 * r);
    if (q > qmax) q = qmax;
    if (q > kMaxSplits) q = kMaxSplits;
    if (q < 1) q = 1;
  }
  return segment_geometry_with(B, S, rows, C, V, indptr_broadcast, r, q, grid_x, grid_y, block);
}

// Dynamic shared memory of a segment launch (0 when no shared-memory reduction is needed).
inline unsigned int segment_smem_bytes(const SegmentGeometry& g, unsigned int block, int V, int acc_size,
                                       bool with_arg) {
  if (g.r == 1 || g.shfl) return 0;
  return block * static_cast<unsigned int>(V) * static_cast<unsigned int>(acc_size + (with_arg ? 8 : 0));
}

#endif  // !EQUIOPS_NO_HOST_HELPERS

}  // namespace kernels
}  // namespace equiops
