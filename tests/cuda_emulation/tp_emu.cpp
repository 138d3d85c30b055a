// CPU emulation of the CUDA tensor-product kernels (csrc/cuda/tp_kernels.cuh), so that a
// machine without a GPU or CUDA toolkit (CI) runs the real kernel source. Built with g++ and
// driven by tests/test_tp_cuda_emulated.py, which compares the results with
// python/equiops/reference/tensor_product.py.
//
// What is emulated:
//   - every CUDA thread of a block is an OS thread; __syncthreads is a barrier, and a barrier
//     reached by some threads while others left the kernel aborts ("divergent __syncthreads");
//   - blocks run one after the other, each over a fresh dynamic shared-memory buffer filled
//     with NaN bytes (a read of shared memory nobody wrote shows up as NaN in the results);
//     a write past the launch's dynamic size is reported (canary bytes; under ASan the bytes
//     past it are poisoned); more than 48 KiB (the default limit) is an error; an output
//     element changed by two blocks is an error (a race between blocks on a GPU);
//   - inputs sit between NaN guard elements (an out-of-range read shows up as NaN), outputs
//     between canary bytes that must survive (an out-of-range write is reported);
//   - the host side of csrc/cuda/tensor_product_cuda.cu, re-written without torch: problem
//     parsing and flattening (the real tp_problem.h / flatten_problem / plan_tp), row
//     broadcasting, zero-filled outputs, the per-block workspace of broadcast gradients and
//     its tp_sum_rows_kernel reduction, which kernels run when.
// What is not:
//   - warps: no warp-synchronous behaviour, shuffles or memory-model effects beyond what the
//     barrier orders. A race inside a block (a missing __syncthreads) shows only when the OS
//     happens to interleave the threads badly; blocks never run concurrently, so a block
//     reading what another one writes goes unseen (writes by two blocks are caught);
//   - 16-bit types: the cuda_fp16.h / cuda_bf16.h stand-ins in shim/ hold floats, so half and
//     bfloat16 only check that the templates instantiate and index correctly;
//   - the torch glue itself (argument checks, streams, device tables, dtype conversion),
//     launch limits other than shared memory, timing and occupancy.
//
// Protocol (one computation per process). stdin: a text line
//   tp_emu-1 DTYPE OP N1 N2 NW NEED1 NEED2 NEEDW NTHREADS MAXGRID HAS_GO HAS_GG1 HAS_GG2 HAS_GGW LEN
// (DTYPE f32|f64|f16|bf16; OP 0 forward, 1 backward, 2 double backward; NTHREADS threads per
// block, kThreads = 256 on the GPU; MAXGRID > 0 caps the grid so that blocks walk several
// tiles), then the problem string (LEN bytes), then float64 arrays, native byte order:
// x1 (N1, dim1), x2 (N2, dim2), weight (NW, dim_w), then grad_out (N, dim_out) and
// gg_x1 / gg_x2 / gg_weight (shaped like their inputs) where present.
// stdout: "ok R ZCAP GRID SMEM NTILES" (the launch plan; zeros when no kernel ran) and a
// newline, then float64 results: OP 0: out; OP 1: the wanted gradients of x1, x2, weight;
// OP 2: grad_out's, x1's, x2's, weight's. Errors: a message on stderr and a nonzero exit.
#include <condition_variable>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define EMU_ASAN 1
#else
#define EMU_ASAN 0
#endif

// ---------------------------------------------------------------------------------------
// CUDA built-ins.

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
static thread_local dim3 threadIdx, blockIdx;
static dim3 blockDim, gridDim;

namespace emu {

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "tp_emu: %s\n", msg.c_str());
  std::fflush(stderr);
  std::_Exit(3);
}

// The threads of a block meet here. kind: 0 at __syncthreads, 1 and 2 at the end of the
// block (harness); all threads must arrive with the same kind.
class Barrier {
 public:
  explicit Barrier(int n) : n_(n) {}
  void wait(int kind) {
    std::unique_lock<std::mutex> lock(mu_);
    if (arrived_ == 0)
      kind_ = kind;
    else if (kind != kind_)
      die("divergent __syncthreads: some threads of a block left the kernel while others wait at a barrier");
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    const unsigned long long gen = generation_;
    cv_.wait(lock, [&] { return generation_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_, arrived_ = 0, kind_ = 0;
  unsigned long long generation_ = 0;
};

Barrier* g_barrier = nullptr;

}  // namespace emu

inline void __syncthreads() { emu::g_barrier->wait(0); }

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n)
#define __restrict__

#include "tp_kernels.cuh"  // -I csrc/cuda; <cuda_fp16.h> and <cuda_bf16.h> come from -I shim

// The kernels' `extern __shared__ unsigned char tp_smem[]`: one buffer, blocks run in turn.
namespace equiops {
namespace tpk {
alignas(16) unsigned char tp_smem[1 << 16];
}
}  // namespace equiops

namespace emu {

using namespace equiops;
using equiops::tpk::i64;
using equiops::tpk::tp_smem;

constexpr size_t kSmemLimit = 48 * 1024;  // dynamic shared memory without an opt-in

void fresh_smem(size_t smem) {
#if EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(tp_smem, sizeof(tp_smem));
#endif
  std::memset(tp_smem, 0xff, sizeof(tp_smem));  // NaN as float and as double
#if EMU_ASAN
  ASAN_POISON_MEMORY_REGION(tp_smem + smem, sizeof(tp_smem) - smem);
#else
  (void)smem;
#endif
}

void check_smem_tail(size_t smem, const char* name) {
#if !EMU_ASAN  // (under ASan the tail is poisoned: the write itself is reported)
  for (size_t b = smem; b < sizeof(tp_smem); ++b)
    if (tp_smem[b] != 0xff)
      die(std::string(name) + " wrote shared memory byte " + std::to_string(b) + " past its dynamic size " +
          std::to_string(smem));
#else
  (void)smem;
  (void)name;
#endif
}

// A global output of a launch. Blocks run one after the other, so two blocks writing the
// same element would go unnoticed (on a GPU, a race): after each block the buffer is compared
// with its state before, and an element changed by two blocks is an error.
struct Watch {
  const char* name;
  unsigned char* p;
  size_t n, size;  // elements, bytes each
  std::vector<unsigned char> before;
  std::vector<int> writer;  // block that changed each element, -1: none yet

  template <typename X>
  Watch(const char* name_, X* p_, size_t n_)
      : name(name_), p(reinterpret_cast<unsigned char*>(p_)), n(p_ ? n_ : 0), size(sizeof(X)),
        before(p, p + n * size), writer(n, -1) {}
  void after_block(int b) {
    for (size_t i = 0; i < n; ++i) {
      if (std::memcmp(p + i * size, before.data() + i * size, size) == 0) continue;
      if (writer[i] >= 0 && writer[i] != b)
        die(std::string("blocks ") + std::to_string(writer[i]) + " and " + std::to_string(b) + " both wrote element " +
            std::to_string(i) + " of " + name + " (a race between blocks on a GPU)");
      writer[i] = b;
      std::memcpy(before.data() + i * size, p + i * size, size);
    }
  }
};

// kernel<<<grid, nthreads, smem>>>(): the blocks in turn, each run by nthreads OS threads.
template <typename F>
void launch(const char* name, unsigned grid, int nthreads, size_t smem, std::vector<Watch> watch, F&& kernel) {
  if (smem > kSmemLimit) die(std::string(name) + ": " + std::to_string(smem) + " bytes of shared memory > 48 KiB");
  if (nthreads < 1 || nthreads > 1024) die("threads per block must be in [1, 1024]");
  if (grid < 1) die(std::string(name) + ": empty grid");
  gridDim.x = grid;
  blockDim.x = static_cast<unsigned>(nthreads);
  Barrier bar(nthreads);
  g_barrier = &bar;
  fresh_smem(smem);
  std::vector<std::thread> threads;
  for (int t = 0; t < nthreads; ++t) {
    threads.emplace_back([&, t] {
      threadIdx.x = static_cast<unsigned>(t);
      for (unsigned b = 0; b < grid; ++b) {
        blockIdx.x = b;
        kernel();
        bar.wait(1);  // the block is done
        if (t == 0) {
          check_smem_tail(smem, name);
          for (Watch& w : watch) w.after_block(static_cast<int>(b));
          fresh_smem(smem);
        }
        bar.wait(2);
      }
    });
  }
  for (auto& th : threads) th.join();
  g_barrier = nullptr;
#if EMU_ASAN
  ASAN_UNPOISON_MEMORY_REGION(tp_smem, sizeof(tp_smem));
#endif
}

// An array between guard elements: `pad` bytes around it must be left alone (outputs), or
// NaN values (inputs) turn any stray read into a NaN result.
template <typename X>
struct Guarded {
  static constexpr size_t kPad = 64;  // elements each side
  std::vector<X> mem;
  size_t n = 0;
  std::vector<unsigned char> pad_bytes;

  Guarded() = default;
  Guarded(size_t n_, X fill, X pad) : mem(n_ + 2 * kPad, pad), n(n_) {
    for (size_t i = 0; i < n; ++i) mem[kPad + i] = fill;
    snapshot();
  }
  X* data() { return mem.empty() ? nullptr : mem.data() + kPad; }
  void snapshot() {
    pad_bytes.resize(2 * kPad * sizeof(X));
    std::memcpy(pad_bytes.data(), mem.data(), kPad * sizeof(X));
    std::memcpy(pad_bytes.data() + kPad * sizeof(X), mem.data() + kPad + n, kPad * sizeof(X));
  }
  void check(const char* what) const {
    if (mem.empty()) return;
    if (std::memcmp(pad_bytes.data(), mem.data(), kPad * sizeof(X)) != 0 ||
        std::memcmp(pad_bytes.data() + kPad * sizeof(X), mem.data() + kPad + n, kPad * sizeof(X)) != 0)
      die(std::string("a kernel wrote outside ") + what);
  }
};

template <typename T>
T from_double(double x);
template <>
float from_double<float>(double x) { return static_cast<float>(x); }
template <>
double from_double<double>(double x) { return x; }
template <>
__half from_double<__half>(double x) { return __float2half_rn(static_cast<float>(x)); }
template <>
__nv_bfloat16 from_double<__nv_bfloat16>(double x) { return __float2bfloat16_rn(static_cast<float>(x)); }

struct Request {
  std::string dtype;
  int op = 0;
  i64 N1 = 0, N2 = 0, Nw = 0;
  int need[3] = {0, 0, 0};
  int nthreads = tpk::kThreads;
  unsigned max_grid = 0;
  int has[4] = {0, 0, 0, 0};  // grad_out, gg_x1, gg_x2, gg_weight
  std::string problem;
  std::vector<double> data;  // the arrays, in protocol order
  size_t at = 0;             // next unread element of data

  const double* take(size_t n) {
    if (data.size() - at < n) die("input shorter than the shapes say");
    const double* p = data.data() + at;
    at += n;
    return p;
  }
};

// An input as the kernels' T, between NaN guards; empty (nullptr) when absent.
template <typename T>
Guarded<T> input(Request& rq, bool present, size_t n) {
  if (!present) return Guarded<T>();
  const T nan = from_double<T>(std::nan(""));
  Guarded<T> g(n, from_double<T>(0.0), nan);
  const double* src = rq.take(n);
  for (size_t i = 0; i < n; ++i) g.data()[i] = from_double<T>(src[i]);
  return g;
}

// A result as in the glue's Grad: zero-filled (rows, width), or for a broadcast input
// (rows == 1 < N) a zero-filled (grid, width) workspace reduced by tp_sum_rows_kernel.
template <typename Acc>
struct Result {
  i64 rows = 0, width = 0;
  bool bc = false, ran = false;
  Guarded<Acc> acc, ws;

  static Acc canary() {
    Acc c;
    std::memset(&c, 0xa5, sizeof(c));
    return c;
  }
  void init(i64 rows_, i64 width_, i64 N) {
    rows = rows_;
    width = width_;
    bc = rows == 1 && N > 1;
    acc = Guarded<Acc>(static_cast<size_t>(rows * width), Acc(0), canary());
  }
  void alloc_ws(unsigned grid) {
    if (bc) ws = Guarded<Acc>(static_cast<size_t>(grid) * width, Acc(0), canary());
    ran = true;
  }
  Acc* kernel_ptr() { return bc ? ws.data() : acc.data(); }
  size_t kernel_size() const { return bc ? ws.n : acc.n; }
  void finish(int nthreads, const char* what) {
    if (bc && ran) ws.check(what);
    if (bc && ran && width > 0) {
      i64 blocks = (width + tpk::kThreads - 1) / tpk::kThreads;
      if (blocks > 4096) blocks = 4096;
      const Acc* w = ws.data();
      Acc* a = acc.data();
      const i64 nb = static_cast<i64>(ws.n) / width, D = width;
      launch("tp_sum_rows_kernel", static_cast<unsigned>(blocks), nthreads, 0, {Watch(what, a, acc.n)},
             [&] { tpk::tp_sum_rows_kernel<Acc>(w, nb, D, a); });
    }
    acc.check(what);
  }
  void write(std::string& out) const {
    for (size_t i = 0; i < acc.n; ++i) {
      const double v = static_cast<double>(acc.mem[Guarded<Acc>::kPad + i]);
      out.append(reinterpret_cast<const char*>(&v), sizeof(v));
    }
  }
};

template <typename T>
std::string run(Request& rq) {
  typedef typename tpk::AccOf<T>::type Acc;
  std::shared_ptr<const tp::Problem> prob;
  tpk::TPFlat f;
  try {
    prob = tp::get_problem(rq.problem);
    f = tpk::flatten_problem(*prob);
  } catch (const std::exception& e) {
    die(std::string("bad tensor-product problem string (") + e.what() + ")");
  }
  const tp::Problem& pr = *prob;
  // N from the row counts, each 1 or N.
  i64 N = 1;
  for (i64 r : {rq.N1, rq.N2, rq.Nw}) {
    if (r == 1) continue;
    if (N != 1 && r != N) die("row counts do not broadcast");
    N = r;
  }
  const std::vector<Acc> cv(f.vals.begin(), f.vals.end());  // the glue's float64 / float32 copy
  const tpk::TPTables tab{f.ints.data(), f.npaths};
  Guarded<T> x1 = input<T>(rq, true, rq.N1 * pr.dim1), x2 = input<T>(rq, true, rq.N2 * pr.dim2),
             w = input<T>(rq, true, rq.Nw * pr.dim_w), go = input<T>(rq, rq.has[0], N * pr.dim_out),
             gg1 = input<T>(rq, rq.has[1], rq.N1 * pr.dim1), gg2 = input<T>(rq, rq.has[2], rq.N2 * pr.dim2),
             ggw = input<T>(rq, rq.has[3], rq.Nw * pr.dim_w);
  if (rq.at != rq.data.size()) die("input longer than the shapes say");
  if (rq.op > 0 && !rq.has[0]) die("the backward ops need grad_out");

  const int op = rq.op;
  const int nbuf = op == 0 ? 1 : op == 1 ? 2 : 4;
  bool need[3] = {op == 2 || rq.need[0], op == 2 || rq.need[1], op == 2 || rq.need[2]};
  if (op == 0) need[0] = need[1] = need[2] = false;
  Result<Acc> out, g[3];
  const i64 rows[3] = {rq.N1, rq.N2, rq.Nw}, widths[3] = {pr.dim1, pr.dim2, pr.dim_w};
  if (op != 1) out.init(N, pr.dim_out, N);
  for (int k = 0; k < 3; ++k)
    if (need[k]) g[k].init(rows[k], widths[k], N);

  const char* names[3] = {"the x1 gradient", "the x2 gradient", "the weight gradient"};
  bool launch_main = N > 0 && f.npaths > 0;
  if (op == 0) launch_main = launch_main && pr.dim_out > 0;
  if (op == 1) launch_main = launch_main && (need[0] || need[1] || need[2]);
  if (op == 2) launch_main = launch_main && (rq.has[1] || rq.has[2] || rq.has[3]);
  tpk::TPPlan pl{};
  if (launch_main) {
    i64 ws_width = 0;
    for (int k = 0; k < 3; ++k)
      if (need[k] && g[k].bc) ws_width += widths[k];
    pl = tpk::plan_tp(N, f.work, f.max_dk, f.max_zrow, nbuf, static_cast<int>(sizeof(Acc)), ws_width);
    if (!pl.ok) die("an output degree does not fit the CUDA kernels' shared memory");
    if (rq.max_grid > 0 && pl.grid > rq.max_grid) pl.grid = rq.max_grid;
    tpk::TPGeom geo;
    geo.N = N;
    geo.dim1 = pr.dim1;
    geo.dim2 = pr.dim2;
    geo.dim_out = pr.dim_out;
    geo.dim_w = pr.dim_w;
    geo.s1 = rq.N1 == 1 ? 0 : pr.dim1;
    geo.s2 = rq.N2 == 1 ? 0 : pr.dim2;
    geo.sw = rq.Nw == 1 ? 0 : pr.dim_w;
    geo.ntiles = pl.ntiles;
    geo.R = pl.R;
    geo.zcap = pl.zcap;
    geo.bc1 = need[0] && g[0].bc;
    geo.bc2 = need[1] && g[1].bc;
    geo.bcw = need[2] && g[2].bc;
    for (int k = 0; k < 3; ++k)
      if (need[k]) g[k].alloc_ws(pl.grid);
    Acc* gp[3];
    Acc* o = op != 1 ? out.kernel_ptr() : nullptr;
    std::vector<Watch> watch = {Watch("the output", o, out.kernel_size())};
    for (int k = 0; k < 3; ++k) {
      gp[k] = need[k] ? g[k].kernel_ptr() : nullptr;
      watch.emplace_back(names[k], gp[k], g[k].kernel_size());
    }
    const Acc* c = cv.data();
    if (op == 0) {
      launch("tp_forward_kernel", pl.grid, rq.nthreads, pl.smem, watch,
             [&] { tpk::tp_forward_kernel<T>(tab, c, geo, x1.data(), x2.data(), w.data(), o); });
    } else if (op == 1) {
      launch("tp_backward_kernel", pl.grid, rq.nthreads, pl.smem, watch, [&] {
        tpk::tp_backward_kernel<T>(tab, c, geo, go.data(), x1.data(), x2.data(), w.data(), gp[0], gp[1], gp[2]);
      });
    } else {
      launch("tp_double_backward_kernel", pl.grid, rq.nthreads, pl.smem, watch, [&] {
        tpk::tp_double_backward_kernel<T>(tab, c, geo, gg1.data(), gg2.data(), ggw.data(), go.data(), x1.data(),
                                          x2.data(), w.data(), o, gp[0], gp[1], gp[2]);
      });
    }
  }
  std::ostringstream head;
  head << "ok " << pl.R << " " << pl.zcap << " " << pl.grid << " " << pl.smem << " " << pl.ntiles << "\n";
  std::string res = head.str();
  if (op != 1) {
    out.acc.check("the output");
    out.write(res);
  }
  for (int k = 0; k < 3; ++k)
    if (need[k]) {
      g[k].finish(rq.nthreads, names[k]);
      g[k].write(res);
    }
  return res;
}

Request read_request() {
  std::string in;
  char buf[1 << 16];
  size_t got;
  while ((got = std::fread(buf, 1, sizeof(buf), stdin)) > 0) in.append(buf, got);
  const size_t eol = in.find('\n');
  if (eol == std::string::npos) die("no request line");
  std::istringstream head(in.substr(0, eol));
  Request rq;
  std::string tag;
  size_t len = 0;
  head >> tag >> rq.dtype >> rq.op >> rq.N1 >> rq.N2 >> rq.Nw >> rq.need[0] >> rq.need[1] >> rq.need[2] >>
      rq.nthreads >> rq.max_grid >> rq.has[0] >> rq.has[1] >> rq.has[2] >> rq.has[3] >> len;
  if (!head || tag != "tp_emu-1" || rq.op < 0 || rq.op > 2 || rq.N1 < 0 || rq.N2 < 0 || rq.Nw < 0)
    die("bad request line");
  const size_t body = eol + 1;
  if (in.size() < body + len || (in.size() - body - len) % sizeof(double) != 0) die("bad request length");
  rq.problem = in.substr(body, len);
  rq.data.resize((in.size() - body - len) / sizeof(double));
  if (!rq.data.empty()) std::memcpy(rq.data.data(), in.data() + body + len, rq.data.size() * sizeof(double));
  return rq;
}

}  // namespace emu

int main() {
  emu::Request rq = emu::read_request();
  std::string res;
  if (rq.dtype == "f32")
    res = emu::run<float>(rq);
  else if (rq.dtype == "f64")
    res = emu::run<double>(rq);
  else if (rq.dtype == "f16")
    res = emu::run<__half>(rq);
  else if (rq.dtype == "bf16")
    res = emu::run<__nv_bfloat16>(rq);
  else
    emu::die("unknown dtype " + rq.dtype);
  std::fwrite(res.data(), 1, res.size(), stdout);
  return std::fflush(stdout) == 0 ? 0 : 1;
}
