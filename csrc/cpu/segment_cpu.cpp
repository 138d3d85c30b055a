// CPU kernels of the scatter/segment family (OpenMP through at::parallel_for).
//
// Semantics: python/equiops/reference/segment.py. Every output element is produced
// by exactly one thread in a fixed order, so all of these are deterministic (bitwise
// reproducible run to run, whatever the thread count) without sorting.
#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <vector>

#include "equiops/checks.h"

namespace equiops {
namespace cpu {
namespace {

// Records the first out-of-range index seen by any thread; raised after the parallel
// region (exceptions must not leave an OpenMP region).
struct BadIndex {
  std::atomic<bool> seen{false};
  std::atomic<int64_t> value{0};
  void record(int64_t v) {
    bool expected = false;
    if (seen.compare_exchange_strong(expected, true)) value.store(v);
  }
};

// indptr (Bi, S+1): starts at >= 0, non-decreasing, ends at <= limit. One host pass.
void check_indptr_values(const at::Tensor& indptr, int64_t limit, const char* op,
                         const char* limit_what) {
  const int64_t Bi = indptr.size(0), S1 = indptr.size(1);
  const int64_t* p = indptr.data_ptr<int64_t>();
  for (int64_t b = 0; b < Bi; ++b) {
    const int64_t* q = p + b * S1;
    TORCH_CHECK_VALUE(q[0] >= 0, op, ": indptr must start at >= 0, got indptr[", b, ", 0] = ",
                      q[0]);
    for (int64_t s = 0; s + 1 < S1; ++s) {
      TORCH_CHECK_VALUE(q[s] <= q[s + 1], op, ": indptr must be non-decreasing, got indptr[", b,
                        ", ", s, "] = ", q[s], " > indptr[", b, ", ", s + 1, "] = ", q[s + 1]);
    }
    TORCH_CHECK_INDEX(q[S1 - 1] <= limit, op, ": indptr[", b, ", -1] = ", q[S1 - 1],
                      " exceeds ", limit_what, " = ", limit);
  }
}

// Grain (in tasks) so that each chunk handed to a thread holds ~32k elements of work.
int64_t grain_for(int64_t work_per_task) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, work_per_task));
}

// NaN propagates (smallest NaN row wins), otherwise the extreme, ties to the smaller row.
// `rb == empty` marks a slot that holds nothing yet.
template <bool kMax, typename acc_t>
inline bool replaces(acc_t v, int64_t rv, acc_t best, int64_t rb, int64_t empty) {
  if (rb == empty) return true;
  const bool best_nan = std::isnan(best), v_nan = std::isnan(v);
  if (best_nan) return v_nan && rv < rb;
  if (v_nan) return true;
  if (v == best) return rv < rb;
  return kMax ? v > best : v < best;
}

struct SegmentView {
  const int64_t* indptr;
  int64_t indptr_bstride;  // 0 when one indptr serves every batch
  const int64_t* perm;     // nullptr: position e is row e
  int64_t B, N, C, S;
};

SegmentView make_view(const at::Tensor& src, const at::Tensor& indptr, const at::Tensor* perm,
                      int64_t S) {
  return SegmentView{indptr.data_ptr<int64_t>(), indptr.size(0) == 1 ? 0 : indptr.size(1),
                     perm ? perm->data_ptr<int64_t>() : nullptr, src.size(0), src.size(1),
                     src.size(2), S};
}

// The checked, contiguous inputs of a segment op. `rows` bounds the row ids that
// positions may name when there is no perm (with a perm, indptr indexes into it).
struct SegmentInputs {
  at::Tensor src, indptr;
  c10::optional<at::Tensor> perm;
  int64_t S;
  SegmentView view() const { return make_view(src, indptr, perm ? &*perm : nullptr, S); }
};

SegmentInputs prepare_segment(const at::Tensor& src, const at::Tensor& indptr,
                              const c10::optional<at::Tensor>& perm, c10::string_view backend,
                              const char* op, int64_t rows, const char* rows_what) {
  check_cpu_backend(backend, op);
  check_segment_args(src, indptr, perm, op);
  SegmentInputs in{src.contiguous(), indptr.contiguous(),
                   perm ? c10::optional<at::Tensor>(perm->contiguous()) : c10::nullopt,
                   indptr.size(1) - 1};
  check_indptr_values(in.indptr, in.perm ? in.perm->numel() : rows, op,
                      in.perm ? "the length of perm" : rows_what);
  return in;
}

// Rows reached through perm are scattered in memory, where the hardware prefetcher
// does not follow. Fetching the row 8 positions ahead was 1.5-1.9x faster at
// D = 64-128 than distance 0, which fetches nothing ahead (E = 1e6, 2 cores, one
// ad-hoc run of distances 0-32; 16 and 32 were no better).
constexpr int64_t kPrefetchDistance = 8;

template <typename scalar_t>
inline void prefetch_row(const scalar_t* base, int64_t row, int64_t C, int64_t N) {
  if (row < 0 || row >= N) return;
  const char* p = reinterpret_cast<const char*>(base + row * C);
  const int64_t bytes = C * static_cast<int64_t>(sizeof(scalar_t));
  for (int64_t off = 0; off < bytes; off += 64) __builtin_prefetch(p + off, 0, 0);
}

// kC > 0 fixes the row width at compile time (unrolled, vectorised); 0 reads v.C.
template <int kC, typename scalar_t>
void segment_sum_kernel(const scalar_t* src, scalar_t* out, const SegmentView& v, BadIndex& bad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = kC > 0 ? kC : v.C;
  const int64_t avg = v.S > 0 ? std::max<int64_t>(1, v.N / std::max<int64_t>(1, v.S)) : 1;
  at::parallel_for(0, v.B * v.S, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> acc(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / v.S, s = task % v.S;
      const int64_t* ip = v.indptr + b * v.indptr_bstride;
      const scalar_t* sb = src + b * v.N * C;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      // Positions are contiguous across segments, so prefetch past this segment's end
      // (up to the batch's last position): short segments are the common case.
      const int64_t lo = ip[s], hi = ip[s + 1], last = ip[v.S];
      for (int64_t e = lo; e < hi; ++e) {
        const int64_t row = v.perm ? v.perm[e] : e;
        if (row < 0 || row >= v.N) {
          bad.record(row);
          continue;
        }
        if (v.perm && e + kPrefetchDistance < last) prefetch_row(sb, v.perm[e + kPrefetchDistance], C, v.N);
        const scalar_t* r = sb + row * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) acc[c] += static_cast<acc_t>(r[c]);
      }
      scalar_t* o = out + task * C;
      for (int64_t c = 0; c < C; ++c) o[c] = static_cast<scalar_t>(acc[c]);
    }
  });
}

template <bool kMax, typename scalar_t>
void segment_minmax_kernel(const scalar_t* src, scalar_t* out, int64_t* arg, const SegmentView& v,
                           BadIndex& bad) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t C = v.C, N = v.N;
  const int64_t avg = v.S > 0 ? std::max<int64_t>(1, N / std::max<int64_t>(1, v.S)) : 1;
  at::parallel_for(0, v.B * v.S, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    std::vector<acc_t> best(C);
    std::vector<int64_t> best_row(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / v.S, s = task % v.S;
      const int64_t* ip = v.indptr + b * v.indptr_bstride;
      const scalar_t* sb = src + b * N * C;
      std::fill(best.begin(), best.end(), acc_t(0));
      std::fill(best_row.begin(), best_row.end(), N);
      for (int64_t e = ip[s]; e < ip[s + 1]; ++e) {
        const int64_t row = v.perm ? v.perm[e] : e;
        if (row < 0 || row >= N) {
          bad.record(row);
          continue;
        }
        const scalar_t* r = sb + row * C;
        for (int64_t c = 0; c < C; ++c) {
          const acc_t x = static_cast<acc_t>(r[c]);
          if (replaces<kMax>(x, row, best[c], best_row[c], N)) {
            best[c] = x;
            best_row[c] = row;
          }
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        out[task * C + c] = static_cast<scalar_t>(best[c]);  // 0 for an empty segment
        arg[task * C + c] = best_row[c];
      }
    }
  });
}

template <typename scalar_t>
void segment_gather_kernel(const scalar_t* src, scalar_t* out, int64_t num_rows,
                           const SegmentView& v, BadIndex& bad) {
  const int64_t C = v.C;
  const int64_t avg = v.S > 0 ? std::max<int64_t>(1, num_rows / std::max<int64_t>(1, v.S)) : 1;
  at::parallel_for(0, v.B * v.S, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / v.S, s = task % v.S;
      const int64_t* ip = v.indptr + b * v.indptr_bstride;
      const scalar_t* value = src + task * C;
      scalar_t* ob = out + b * num_rows * C;
      for (int64_t e = ip[s]; e < ip[s + 1]; ++e) {
        const int64_t row = v.perm ? v.perm[e] : e;
        if (row < 0 || row >= num_rows) {
          bad.record(row);
          continue;
        }
        std::copy(value, value + C, ob + row * C);
      }
    }
  });
}

// Direct scatter without sorting: the slots [0, S) of each batch are split into ranges,
// one per task; a task scans every row in order and keeps those sent into its range.
// Each output element has one writer and a fixed order, hence determinism; the price
// is that every task reads the whole index, which is small next to src for C >= 2.
struct ScatterPlan {
  int64_t parts;  // slot ranges per batch
  int64_t tasks;  // B * parts
};

ScatterPlan plan_scatter(int64_t B, int64_t S, int64_t C) {
  const int64_t threads = at::get_num_threads();
  // With rows of 1-3 elements the in-range test costs more (a branch mispredicted on
  // half the rows) than the adds it spreads over threads: one task per batch then.
  int64_t parts = (B >= threads || C < 4) ? 1 : (threads + B - 1) / B;
  parts = std::max<int64_t>(1, std::min(parts, S));
  return ScatterPlan{parts, B * parts};
}

struct IndexView {
  const int64_t* data;
  int64_t sb, sn, sc;  // strides; sc == 0 for an index broadcast along C
};

// visit_row(b, n, slot) handles a whole row (index broadcast along C: one index per
// row, so the column loop vectorises); visit(b, n, c, slot) handles one element.
template <typename VisitRow, typename Visit>
void for_each_scattered(const IndexView& ix, int64_t B, int64_t N, int64_t C, int64_t S,
                        BadIndex& bad, VisitRow visit_row, Visit visit) {
  const ScatterPlan plan = plan_scatter(B, S, C);
  at::parallel_for(0, plan.tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / plan.parts, part = task % plan.parts;
      const int64_t lo = S * part / plan.parts, hi = S * (part + 1) / plan.parts;
      const int64_t* ib = ix.data + b * ix.sb;
      if (ix.sc == 0 || C == 1) {
        for (int64_t n = 0; n < N; ++n) {
          const int64_t slot = ib[n * ix.sn];
          if (slot < 0 || slot >= S) {
            bad.record(slot);
            continue;
          }
          if (slot >= lo && slot < hi) visit_row(b, n, slot);
        }
      } else {
        for (int64_t n = 0; n < N; ++n) {
          for (int64_t c = 0; c < C; ++c) {
            const int64_t slot = ib[n * ix.sn + c * ix.sc];
            if (slot < 0 || slot >= S) {
              bad.record(slot);
              continue;
            }
            if (slot >= lo && slot < hi) visit(b, n, c, slot);
          }
        }
      }
    }
  });
}

void raise_bad(const BadIndex& bad, const char* op, const char* name, int64_t limit,
               const char* limit_what) {
  TORCH_CHECK_INDEX(!bad.seen.load(), op, ": ", name, " holds ", bad.value.load(),
                    ", expected values in [0, ", limit, ") (", limit_what, " = ", limit, ")");
}

at::Tensor segment_sum_cpu(const at::Tensor& src_in, const at::Tensor& indptr_in,
                           const c10::optional<at::Tensor>& perm_in, c10::string_view backend) {
  const char* op = "equiops.segment_sum";
  const SegmentInputs in = prepare_segment(src_in, indptr_in, perm_in, backend, op,
                                           src_in.dim() == 3 ? src_in.size(1) : 0, "the number of rows N");
  const at::Tensor& src = in.src;
  at::Tensor out = at::empty({src.size(0), in.S, src.size(2)}, src.options());
  if (out.numel() == 0) return out;
  const SegmentView v = in.view();
  BadIndex bad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "segment_sum", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    switch (v.C) {
      case 1: segment_sum_kernel<1>(s, o, v, bad); break;
      case 2: segment_sum_kernel<2>(s, o, v, bad); break;
      case 3: segment_sum_kernel<3>(s, o, v, bad); break;
      case 4: segment_sum_kernel<4>(s, o, v, bad); break;
      default: segment_sum_kernel<0>(s, o, v, bad);
    }
  });
  raise_bad(bad, op, "perm", src.size(1), "the number of rows N");
  return out;
}

std::tuple<at::Tensor, at::Tensor> segment_minmax_cpu(const at::Tensor& src_in,
                                                      const at::Tensor& indptr_in,
                                                      const c10::optional<at::Tensor>& perm_in,
                                                      c10::string_view reduce,
                                                      c10::string_view backend) {
  const char* op = "equiops.segment_minmax";
  const bool is_max = parse_minmax(std::string(reduce), op);
  const SegmentInputs in = prepare_segment(src_in, indptr_in, perm_in, backend, op,
                                           src_in.dim() == 3 ? src_in.size(1) : 0, "the number of rows N");
  const at::Tensor& src = in.src;
  at::Tensor out = at::empty({src.size(0), in.S, src.size(2)}, src.options());
  at::Tensor arg = at::empty({src.size(0), in.S, src.size(2)}, src.options().dtype(at::kLong));
  if (out.numel() == 0) return {out, arg};
  const SegmentView v = in.view();
  BadIndex bad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "segment_minmax", [&] {
    auto run = is_max ? segment_minmax_kernel<true, scalar_t> : segment_minmax_kernel<false, scalar_t>;
    run(src.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), arg.data_ptr<int64_t>(), v, bad);
  });
  raise_bad(bad, op, "perm", src.size(1), "the number of rows N");
  return {out, arg};
}

at::Tensor segment_gather_cpu(const at::Tensor& src_in, const at::Tensor& indptr_in,
                              const c10::optional<at::Tensor>& perm_in, int64_t num_rows,
                              c10::string_view backend) {
  const char* op = "equiops.segment_gather";
  TORCH_CHECK_VALUE(num_rows >= 0, op, ": num_rows must be >= 0, got ", num_rows);
  const SegmentInputs in = prepare_segment(src_in, indptr_in, perm_in, backend, op, num_rows, "num_rows");
  const at::Tensor& src = in.src;
  TORCH_CHECK_VALUE(src.size(1) == in.S, op, ": src must hold one row per segment (", in.S,
                    "), got ", src.size(1));
  // Rows that no segment covers stay zero; perm is required to hold distinct rows
  // (a receiver-sorted Graph's permutation), so one writer per row.
  at::Tensor out = at::zeros({src.size(0), num_rows, src.size(2)}, src.options());
  if (out.numel() == 0 || in.S == 0) return out;
  const SegmentView v = in.view();
  BadIndex bad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "segment_gather", [&] {
    segment_gather_kernel(src.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), num_rows, v, bad);
  });
  raise_bad(bad, op, "perm", num_rows, "num_rows");
  return out;
}

at::Tensor scatter_sum_cpu(const at::Tensor& src_in, const at::Tensor& index,
                           int64_t dim_size, c10::string_view backend) {
  const char* op = "equiops.scatter_sum";
  check_cpu_backend(backend, op);
  check_scatter_args(src_in, index, dim_size, op);
  const int64_t B = src_in.size(0), N = src_in.size(1), C = src_in.size(2), S = dim_size;
  // Half types accumulate in float32: a half accumulator loses the sum after ~2k terms.
  const bool low_precision = src_in.scalar_type() == at::kHalf || src_in.scalar_type() == at::kBFloat16;
  const at::Tensor src = low_precision ? src_in.to(at::kFloat) : src_in.contiguous();
  at::Tensor out = at::zeros({B, S, C}, src.options());
  if (src.numel() == 0) return low_precision ? out.to(src_in.scalar_type()) : out;
  const IndexView ix{index.data_ptr<int64_t>(), index.stride(0), index.stride(1), index.stride(2)};
  BadIndex bad;
  AT_DISPATCH_FLOATING_TYPES(src.scalar_type(), "scatter_sum", [&] {
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    auto add_row = [&](int64_t b, int64_t n, int64_t slot) {
      scalar_t* __restrict__ orow = o + (b * S + slot) * C;
      const scalar_t* __restrict__ srow = s + (b * N + n) * C;
      _Pragma("omp simd")  // a #pragma cannot stand inside the dispatch macro's argument
      for (int64_t c = 0; c < C; ++c) orow[c] += srow[c];
    };
    auto add_one = [&](int64_t b, int64_t n, int64_t c, int64_t slot) {
      o[(b * S + slot) * C + c] += s[(b * N + n) * C + c];
    };
    for_each_scattered(ix, B, N, C, S, bad, add_row, add_one);
  });
  raise_bad(bad, op, "index", S, "dim_size");
  return low_precision ? out.to(src_in.scalar_type()) : out;
}

std::tuple<at::Tensor, at::Tensor> scatter_minmax_cpu(const at::Tensor& src_in,
                                                      const at::Tensor& index, int64_t dim_size,
                                                      c10::string_view reduce,
                                                      c10::string_view backend) {
  const char* op = "equiops.scatter_minmax";
  check_cpu_backend(backend, op);
  const bool is_max = parse_minmax(std::string(reduce), op);
  check_scatter_args(src_in, index, dim_size, op);
  const at::Tensor src = src_in.contiguous();
  const int64_t B = src.size(0), N = src.size(1), C = src.size(2), S = dim_size;
  at::Tensor out = at::zeros({B, S, C}, src.options());
  at::Tensor arg = at::full({B, S, C}, N, src.options().dtype(at::kLong));
  if (src.numel() == 0) return {out, arg};
  const IndexView ix{index.data_ptr<int64_t>(), index.stride(0), index.stride(1), index.stride(2)};
  BadIndex bad;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, src.scalar_type(), "scatter_minmax", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* s = src.data_ptr<scalar_t>();
    scalar_t* o = out.data_ptr<scalar_t>();
    int64_t* a = arg.data_ptr<int64_t>();
    auto visit = [&](auto is_max_tag) {
      constexpr bool kMax = decltype(is_max_tag)::value;
      auto update = [&](int64_t b, int64_t n, int64_t c, int64_t slot) {
        const int64_t at_out = (b * S + slot) * C + c;
        const acc_t x = static_cast<acc_t>(s[(b * N + n) * C + c]);
        if (replaces<kMax>(x, n, static_cast<acc_t>(o[at_out]), a[at_out], N)) {
          o[at_out] = static_cast<scalar_t>(x);
          a[at_out] = n;
        }
      };
      auto update_row = [&](int64_t b, int64_t n, int64_t slot) {
        for (int64_t c = 0; c < C; ++c) update(b, n, c, slot);
      };
      for_each_scattered(ix, B, N, C, S, bad, update_row, update);
    };
    if (is_max) visit(std::true_type{}); else visit(std::false_type{});
  });
  raise_bad(bad, op, "index", S, "dim_size");
  return {out, arg};
}

}  // namespace

TORCH_LIBRARY_IMPL(equiops, CPU, m) {
  m.impl("segment_sum", &segment_sum_cpu);
  m.impl("segment_minmax", &segment_minmax_cpu);
  m.impl("segment_gather", &segment_gather_cpu);
  m.impl("scatter_sum", &scatter_sum_cpu);
  m.impl("scatter_minmax", &scatter_minmax_cpu);
}

}  // namespace cpu
}  // namespace equiops
