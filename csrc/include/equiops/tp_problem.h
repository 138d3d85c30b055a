// The tensor-product problem description, parsed from the string that
// python/equiops/tp_problem.py (TPProblem.encode) writes. Header-only and torch-free,
// shared by the CPU kernels and the CUDA glue.
//
// Format: a head line "equiops-tp-1 dim1 dim2 dim_out dim_w npaths", then one line per
// path: "mode l1 l2 lo m1 m2 mo off1 off2 offo w_off coef instruction nnz" followed by
// nnz quadruples "i j k C". Floats are C99 hexadecimal (exact). Semantics of a path:
// the module docstring of python/equiops/tp_problem.py.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace equiops {
namespace tp {

enum Mode : int { UVW = 0, UVU, UVV, UUW, UUU, UVUV, UVU_LT_V, U_LT_VW };

inline int parse_mode(const std::string& s) {
  static const char* names[] = {"uvw", "uvu", "uvv", "uuw", "uuu", "uvuv", "uvu<v", "u<vw"};
  for (int m = 0; m < 8; ++m)
    if (s == names[m]) return m;
  throw std::invalid_argument("unknown connection mode '" + s + "'");
}

struct Path {
  int mode, l1, l2, lo, m1, m2, mo, off1, off2, offo, w_off, instruction;
  int d1, d2, dk;
  double coef;
  // CG nonzeros, sorted by (i, j, k).
  std::vector<int> nz_i, nz_j, nz_k;
  std::vector<double> nz_c;
  // The same nonzeros grouped by (i, k), the groups ordered by (k, i): group s is the
  // pair (s_i[s], s_k[s]) and owns nonzeros [s_begin[s], s_begin[s+1]) of (g_j, g_c).
  // A kernel contracts x2 first, A[s] = sum over its nonzeros of C * x2[j], then
  // z[k] = sum over s in [k_begin[k], k_begin[k+1]) of A[s] * x1[s_i[s]]: one register
  // accumulator per k. i_order lists the groups by i (i_begin[i] .. i_begin[i+1]), for
  // the transposed contraction gx1[i] = sum_s A[s] gz[s_k[s]].
  std::vector<int> s_i, s_k, s_begin, g_j, k_begin, i_order, i_begin;
  std::vector<double> g_c;
  // Channel pairs (u, v) this path reads, in weight order (see TPPath.pairs()).
  int num_pairs() const {
    if (mode == UUW || mode == UUU) return m1;
    if (mode == UVU_LT_V || mode == U_LT_VW) return m1 * (m2 - 1) / 2;
    return m1 * m2;
  }
  int64_t w_numel() const {
    if (w_off < 0) return 0;
    switch (mode) {
      case UVW: return (int64_t)m1 * m2 * mo;
      case UVU: case UVV: case UVUV: return (int64_t)m1 * m2;
      case UUW: return (int64_t)m1 * mo;
      case UUU: return m1;
      case UVU_LT_V: return (int64_t)m1 * (m2 - 1) / 2;
      default: return (int64_t)m1 * (m2 - 1) / 2 * mo;  // U_LT_VW
    }
  }
};

struct Problem {
  int64_t dim1 = 0, dim2 = 0, dim_out = 0, dim_w = 0;
  std::vector<Path> paths;
  // Paths grouped by output block: block_order[block_start[b] .. block_start[b+1]) are
  // the indices of the paths writing the columns of block b (same offo, mo, dk).
  std::vector<int> block_order, block_start;
  // Output column ranges [first, second) no path writes (kernels must zero them).
  std::vector<std::pair<int64_t, int64_t>> unwritten;
};

// Fills Problem::block_order, block_start and unwritten from its paths.
inline void index_blocks(Problem& p) {
  const auto& paths = p.paths;
  p.block_order.resize(paths.size());
  for (size_t i = 0; i < paths.size(); ++i) p.block_order[i] = (int)i;
  std::stable_sort(p.block_order.begin(), p.block_order.end(),
                   [&](int a, int b) { return paths[a].offo < paths[b].offo; });
  for (size_t i = 0; i < p.block_order.size(); ++i)
    if (i == 0 || paths[p.block_order[i]].offo != paths[p.block_order[i - 1]].offo)
      p.block_start.push_back((int)i);
  p.block_start.push_back((int)p.block_order.size());
  std::vector<char> written((size_t)p.dim_out, 0);
  for (const auto& q : paths)
    for (int64_t c = q.offo; c < q.offo + (int64_t)q.mo * q.dk; ++c) written[c] = 1;
  for (int64_t c = 0; c < p.dim_out;) {
    if (written[c]) {
      ++c;
      continue;
    }
    int64_t e = c;
    while (e < p.dim_out && !written[e]) ++e;
    p.unwritten.emplace_back(c, e);
    c = e;
  }
}

inline double parse_hex(const std::string& s) {
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0') throw std::invalid_argument("bad number '" + s + "'");
  return v;
}

// Parses and validates the string; throws std::invalid_argument naming what is wrong.
inline Problem parse_problem(const std::string& text) {
  std::istringstream in(text);
  std::string tag;
  Problem p;
  int64_t npaths = -1;
  in >> tag >> p.dim1 >> p.dim2 >> p.dim_out >> p.dim_w >> npaths;
  if (!in || tag != "equiops-tp-1" || npaths < 0)
    throw std::invalid_argument("not an equiops tensor-product problem string");
  for (int64_t n = 0; n < npaths; ++n) {
    Path q;
    std::string mode, coef;
    int nnz = -1;
    in >> mode >> q.l1 >> q.l2 >> q.lo >> q.m1 >> q.m2 >> q.mo >> q.off1 >> q.off2 >> q.offo >>
        q.w_off >> coef >> q.instruction >> nnz;
    if (!in || nnz < 0) throw std::invalid_argument("truncated path " + std::to_string(n));
    q.mode = parse_mode(mode);
    q.coef = parse_hex(coef);
    q.d1 = 2 * q.l1 + 1;
    q.d2 = 2 * q.l2 + 1;
    q.dk = 2 * q.lo + 1;
    for (int e = 0; e < nnz; ++e) {
      int i, j, k;
      std::string c;
      in >> i >> j >> k >> c;
      if (!in) throw std::invalid_argument("truncated nonzeros of path " + std::to_string(n));
      if (i < 0 || i >= q.d1 || j < 0 || j >= q.d2 || k < 0 || k >= q.dk)
        throw std::invalid_argument("CG index out of range in path " + std::to_string(n));
      q.nz_i.push_back(i);
      q.nz_j.push_back(j);
      q.nz_k.push_back(k);
      q.nz_c.push_back(parse_hex(c));
    }
    bool bad = q.m1 < 1 || q.m2 < 1 || q.mo < 1 || q.off1 < 0 || q.off2 < 0 || q.offo < 0 ||
               q.off1 + (int64_t)q.m1 * q.d1 > p.dim1 || q.off2 + (int64_t)q.m2 * q.d2 > p.dim2 ||
               q.offo + (int64_t)q.mo * q.dk > p.dim_out ||
               (q.w_off >= 0 && q.w_off + q.w_numel() > p.dim_w);
    if (bad) throw std::invalid_argument("path " + std::to_string(n) + " does not fit the widths");
    // Each mode's multiplicity rules: the kernels index outputs and weights by them, so a
    // hand-made string that broke one could otherwise write outside its block.
    const int64_t pairs = (int64_t)q.m1 * (q.m2 - 1) / 2;
    bool ok = q.l1 >= 0 && q.l2 >= 0 && q.lo >= 0;
    switch (q.mode) {
      case UVW: ok = ok && q.w_off >= 0; break;
      case UVU: ok = ok && q.mo == q.m1; break;
      case UVV: ok = ok && q.mo == q.m2; break;
      case UUW: ok = ok && q.m1 == q.m2 && (q.w_off >= 0 || q.mo == 1); break;
      case UUU: ok = ok && q.m1 == q.m2 && q.mo == q.m1; break;
      case UVUV: ok = ok && (int64_t)q.mo == (int64_t)q.m1 * q.m2; break;
      case UVU_LT_V: ok = ok && q.m1 == q.m2 && q.mo == pairs; break;
      default: ok = ok && q.m1 == q.m2 && q.w_off >= 0; break;  // U_LT_VW
    }
    if (!ok)
      throw std::invalid_argument("path " + std::to_string(n) + ": multiplicities or weights do not fit mode '" +
                                  mode + "'");
    // Group by (i, k), groups in (k, i) order.
    for (int k = 0; k < q.dk; ++k) {
      q.k_begin.push_back((int)q.s_i.size());
      for (int i = 0; i < q.d1; ++i) {
        bool any = false;
        for (size_t e = 0; e < q.nz_i.size(); ++e)
          if (q.nz_i[e] == i && q.nz_k[e] == k) {
            if (!any) {
              q.s_i.push_back(i);
              q.s_k.push_back(k);
              q.s_begin.push_back((int)q.g_j.size());
              any = true;
            }
            q.g_j.push_back(q.nz_j[e]);
            q.g_c.push_back(q.nz_c[e]);
          }
      }
    }
    q.k_begin.push_back((int)q.s_i.size());
    q.s_begin.push_back((int)q.g_j.size());
    for (int i = 0; i < q.d1; ++i) {
      q.i_begin.push_back((int)q.i_order.size());
      for (size_t t = 0; t < q.s_i.size(); ++t)
        if (q.s_i[t] == i) q.i_order.push_back((int)t);
    }
    q.i_begin.push_back((int)q.i_order.size());
    p.paths.push_back(std::move(q));
  }
  index_blocks(p);
  return p;
}

// Parsed problems, cached by their string (process-wide, thread-safe).
inline std::shared_ptr<const Problem> get_problem(const std::string& text) {
  static std::mutex mu;
  static std::unordered_map<std::string, std::shared_ptr<const Problem>> cache;
  std::lock_guard<std::mutex> lock(mu);
  auto it = cache.find(text);
  if (it != cache.end()) return it->second;
  auto p = std::make_shared<const Problem>(parse_problem(text));
  if (cache.size() > 4096) cache.clear();  // bounded: a process builds few problems
  cache.emplace(text, p);
  return p;
}

}  // namespace tp
}  // namespace equiops
