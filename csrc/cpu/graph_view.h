// CSR views of a graph's edges for the CPU message-passing kernels (tp_conv_cpu.cpp,
// egnn_cpu.cpp): checked index tensors, the receiver- or sender-sorted edge order
// (equiops.Graph's view, or a counting sort here when none is given), and fixed
// node-aligned row ranges, so that sums do not depend on the thread count.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

namespace equiops {
namespace cpu {

// Edges in the order of one CSR view: row r of a kernel call is edge edge_of[r] (null:
// edge r), with key key_of[r] (the node it is grouped by) and other end other_of[r].
struct View {
  std::vector<int64_t> indptr;  // (num_nodes + 1)
  std::vector<int64_t> key_of, other_of, edge_store;
  const int64_t* edge_of = nullptr;  // into edge_store or the caller's perm
};

inline void check_index(const at::Tensor& t, int64_t E, int64_t num_nodes, const char* op, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == at::kLong, op, ": ", name, " must be int64, got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device().is_cpu(), op, ": ", name, " must be on the CPU like x, got ", t.device());
  TORCH_CHECK_VALUE(t.dim() == 1 && t.size(0) == E, op, ": ", name, " must have shape (", E, ",), got ",
                    t.sizes());
  // Read through a contiguous copy: a strided or expand()-ed index is not E dense values.
  const at::Tensor dense = t.contiguous();
  const int64_t* p = dense.data_ptr<int64_t>();
  for (int64_t e = 0; e < E; ++e)
    TORCH_CHECK_INDEX(p[e] >= 0 && p[e] < num_nodes, op, ": ", name, "[", e, "] = ", p[e],
                      " is not a node id in [0, ", num_nodes, ")");
}

// key: the end the view groups by (dst forward, src backward); other: the other end.
inline View make_view(const int64_t* key, const int64_t* other, int64_t E, int64_t num_nodes,
               const c10::optional<at::Tensor>& perm, const c10::optional<at::Tensor>& indptr, const char* op,
               const char* key_name) {
  View v;
  v.key_of.resize(E);
  v.other_of.resize(E);
  const bool has_perm = perm.has_value() && perm->defined();
  const bool has_indptr = indptr.has_value() && indptr->defined();
  TORCH_CHECK_VALUE(has_indptr || !has_perm, op, ": perm was given without indptr");
  if (!has_indptr) {
    // Counting sort by key, stable: the view equiops.Graph would build.
    v.indptr.assign(num_nodes + 1, 0);
    for (int64_t e = 0; e < E; ++e) ++v.indptr[key[e] + 1];
    for (int64_t n = 0; n < num_nodes; ++n) v.indptr[n + 1] += v.indptr[n];
    std::vector<int64_t> next(v.indptr.begin(), v.indptr.end() - 1);
    v.edge_store.resize(E);
    for (int64_t e = 0; e < E; ++e) v.edge_store[next[key[e]]++] = e;
    v.edge_of = v.edge_store.data();
  } else {
    const at::Tensor& ip = *indptr;
    TORCH_CHECK_TYPE(ip.scalar_type() == at::kLong, op, ": indptr must be int64, got ", ip.scalar_type());
    TORCH_CHECK_VALUE(ip.dim() == 1 && ip.size(0) == num_nodes + 1, op, ": indptr must have shape (",
                      num_nodes + 1, ",) (num_nodes + 1), got ", ip.sizes());
    const at::Tensor ipc = ip.contiguous();
    const int64_t* q = ipc.data_ptr<int64_t>();
    v.indptr.assign(q, q + num_nodes + 1);
    if (has_perm) {
      const at::Tensor& pm = *perm;
      TORCH_CHECK_TYPE(pm.scalar_type() == at::kLong, op, ": perm must be int64, got ", pm.scalar_type());
      TORCH_CHECK_VALUE(pm.dim() == 1 && pm.size(0) == E, op, ": perm must have shape (", E, ",), got ",
                        pm.sizes());
      TORCH_CHECK_VALUE(pm.is_contiguous(), op, ": perm must be contiguous");
      v.edge_of = pm.data_ptr<int64_t>();
    }
  }
  // Checks the view (a given one could be stale or hand-made): indptr spans [0, E]
  // monotonically, the row order is a permutation of the edges, and every row's key is
  // the node whose range holds it.
  TORCH_CHECK_VALUE(v.indptr[0] == 0 && v.indptr[num_nodes] == E, op, ": indptr must start at 0 and end at E = ",
                    E, ", got ", v.indptr[0], " and ", v.indptr[num_nodes]);
  std::vector<char> seen(v.edge_of != nullptr ? E : 0, 0);
  for (int64_t n = 0; n < num_nodes; ++n) {
    TORCH_CHECK_VALUE(v.indptr[n] <= v.indptr[n + 1], op, ": indptr must be non-decreasing (at node ", n, ")");
    for (int64_t r = v.indptr[n]; r < v.indptr[n + 1]; ++r) {
      int64_t e = r;
      if (v.edge_of != nullptr) {
        e = v.edge_of[r];
        TORCH_CHECK_INDEX(e >= 0 && e < E && !seen[e], op, ": perm must be a permutation of the ", E,
                          " edges (entry ", r, " = ", e, ")");
        seen[e] = 1;
      }
      TORCH_CHECK_VALUE(key[e] == n, op, ": the CSR view does not match ", key_name, " (edge ", e, " has ",
                        key_name, " ", key[e], " but sits in node ", n, "'s range); rebuild the Graph");
      v.key_of[r] = n;
      v.other_of[r] = other[e];
    }
  }
  return v;
}

// Fixed range bounds at node boundaries: min(max_ranges, E / min_rows) ranges of about
// equal edge counts (a function of the view only, never of the thread count).
inline std::vector<int64_t> node_ranges(const View& v, int64_t E, int64_t max_ranges = 64, int64_t min_rows = 256) {
  const int64_t R = std::max<int64_t>(1, std::min<int64_t>(max_ranges, E / min_rows));
  std::vector<int64_t> b{0};
  for (int64_t r = 1; r < R; ++r) {
    const int64_t t = E * r / R;
    // The first node boundary at or after t.
    const int64_t at = *std::lower_bound(v.indptr.begin(), v.indptr.end(), t);
    if (at > b.back() && at < E) b.push_back(at);
  }
  b.push_back(E);
  return b;
}

}  // namespace cpu
}  // namespace equiops
