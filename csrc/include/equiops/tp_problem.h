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
#include <cctype>
#include <cerrno>
#include <climits>
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

// Whitespace-separated tokens of a problem string, read with strtoll/strtod. Not an
// istringstream: a GPU build of this header (nvcc's host pass, linked into the same
// module as the CPU code) crashed inside libstdc++'s istream number extraction on an
// H100 machine with PyTorch 2.11 (backtrace: _M_extract<long> -> codecvt::do_unshift),
// while the C functions are safe everywhere. Each read throws on a missing or malformed
// token, so a truncated or hand-edited string is an error, never a partial parse.
class ProblemTokens {
 public:
  explicit ProblemTokens(const std::string& text) : s_(text) {}
  std::string word(const char* what) {
    skip_space();
    const size_t b = pos_;
    while (pos_ < s_.size() && !std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
    if (b == pos_) throw std::invalid_argument(std::string("problem string ends before ") + what);
    return s_.substr(b, pos_ - b);
  }
  int64_t int64(const char* what) {
    const std::string w = word(what);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(w.c_str(), &end, 10);
    if (end == w.c_str() || *end != '\0' || errno == ERANGE)
      throw std::invalid_argument(std::string("bad integer '") + w + "' for " + what);
    return static_cast<int64_t>(v);
  }
  int int32(const char* what) {
    const int64_t v = int64(what);
    if (v < INT_MIN || v > INT_MAX) throw std::invalid_argument(std::string("integer out of range for ") + what);
    return static_cast<int>(v);
  }

 private:
  void skip_space() {
    while (pos_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[pos_]))) ++pos_;
  }
  const std::string& s_;
  size_t pos_ = 0;
};

// Parses and validates the string; throws std::invalid_argument naming what is wrong.
inline Problem parse_problem(const std::string& text) {
  ProblemTokens in(text);
  Problem p;
  if (in.word("the tag") != "equiops-tp-1") throw std::invalid_argument("not an equiops tensor-product problem string");
  p.dim1 = in.int64("dim1");
  p.dim2 = in.int64("dim2");
  p.dim_out = in.int64("dim_out");
  p.dim_w = in.int64("dim_w");
  const int64_t npaths = in.int64("the path count");
  if (npaths < 0 || p.dim1 < 0 || p.dim2 < 0 || p.dim_out < 0 || p.dim_w < 0)
    throw std::invalid_argument("negative width or path count in the problem string");
  for (int64_t n = 0; n < npaths; ++n) {
    Path q;
    const std::string mode = in.word("a path's mode");
    q.l1 = in.int32("l1");
    q.l2 = in.int32("l2");
    q.lo = in.int32("l_out");
    q.m1 = in.int32("mul_in1");
    q.m2 = in.int32("mul_in2");
    q.mo = in.int32("mul_out");
    q.off1 = in.int32("off1");
    q.off2 = in.int32("off2");
    q.offo = in.int32("off_out");
    q.w_off = in.int32("w_off");
    const std::string coef = in.word("a path coefficient");
    q.instruction = in.int32("instruction");
    const int nnz = in.int32("the nonzero count");
    if (nnz < 0) throw std::invalid_argument("negative nonzero count in path " + std::to_string(n));
    if (q.l1 < 0 || q.l2 < 0 || q.lo < 0 || q.l1 > 1000 || q.l2 > 1000 || q.lo > 1000)
      throw std::invalid_argument("degree out of range in path " + std::to_string(n));
    q.mode = parse_mode(mode);
    q.coef = parse_hex(coef);
    q.d1 = 2 * q.l1 + 1;
    q.d2 = 2 * q.l2 + 1;
    q.dk = 2 * q.lo + 1;
    for (int e = 0; e < nnz; ++e) {
      const int i = in.int32("a CG index"), j = in.int32("a CG index"), k = in.int32("a CG index");
      const std::string c = in.word("a CG coefficient");
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
