// A small cache of large CPU output buffers, reused across calls.
//
// Why: a tensor product's outputs are large (MACE-medium at 10,000 rows: 133 MB) and
// written exactly once, and PyTorch's CPU allocator returns such blocks to the OS on
// free, so every call pays the first-touch page faults of fresh memory. On the project's
// 2-core VMs those faults cost more than the kernel: the MACE-medium forward (10,000
// rows, a 133 MB output) took 91 ms without the pool and 10.8 ms with it in the
// benchmark (EQUIOPS_CPU_POOL_MB=0 python -m equiops bench --ops tp --tp-problems
// mace-medium --tp-passes forward; benchmarks/results/README.md). A training loop asks for the same
// sizes every step, so freed blocks are kept here and handed out again: resident
// memory, no faults. Sizes are rounded up to classes 1/8 of a power of two apart (and to
// 2 MB), so batches whose row counts vary a little (graphs of different sizes) still
// share blocks, wasting at most 12.5%.
//
// Only blocks of at least 4 MB are pooled; at most EQUIOPS_CPU_POOL_MB megabytes are
// kept (default 1024; 0 turns the pool off): a returned block evicts blocks of other
// sizes to fit, and one larger than the whole cap is freed at once. The
// tensors are ordinary CPU tensors (at::from_blob with a deleter that returns the block),
// except that their storage cannot be resized.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace equiops {
namespace cpu {

class HostPool {
 public:
  static HostPool& get() {
    // Never destroyed: tensors freed during interpreter shutdown may still return blocks.
    static HostPool* pool = new HostPool();
    return *pool;
  }

  at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    int64_t numel = 1;
    for (int64_t s : sizes) numel *= s;
    const size_t bytes = (size_t)numel * options.dtype().itemsize();
    if (cap_ == 0 || bytes < kMinBytes) return at::empty(sizes, options);
    const size_t rounded = size_class(bytes);
    void* p = take(rounded);
    if (p == nullptr) {
      p = std::aligned_alloc(kAlign, rounded);
      if (p == nullptr) return at::empty(sizes, options);  // let PyTorch report the OOM
    }
    return at::from_blob(
        p, sizes, [rounded](void* q) { HostPool::get().give_back(q, rounded); }, options);
  }

 private:
  static constexpr size_t kAlign = size_t(2) << 20;
  static constexpr size_t kMinBytes = size_t(4) << 20;

  static size_t size_class(size_t bytes) {
    size_t pow2 = 1;
    while (pow2 < bytes) pow2 <<= 1;
    const size_t step = std::max(kAlign, pow2 / 8);
    return (bytes + step - 1) / step * step;
  }

  HostPool() {
    // Megabytes; anything but a plain non-negative number (up to 1 TB) turns the pool off.
    const char* v = std::getenv("EQUIOPS_CPU_POOL_MB");
    long long mb = 1024;
    if (v != nullptr) {
      char* end = nullptr;
      mb = std::strtoll(v, &end, 10);
      if (end == v || *end != '\0' || mb < 0 || mb > (1LL << 20)) mb = 0;
    }
    cap_ = (size_t)mb << 20;
  }

  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = free_.find(bytes);
    if (it == free_.end() || it->second.empty()) return nullptr;
    void* p = it->second.back();
    it->second.pop_back();
    cached_ -= bytes;
    return p;
  }

  // Keeps the block if it fits under the cap, first evicting blocks of other sizes: the
  // pool follows the sizes in use now (a model's layers, this batch) instead of staying
  // full of the sizes an earlier phase used.
  void give_back(void* p, size_t bytes) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (bytes <= cap_) {
        for (auto it = free_.begin(); it != free_.end() && cached_ + bytes > cap_; ++it) {
          if (it->first == bytes) continue;
          while (!it->second.empty() && cached_ + bytes > cap_) {
            evicted.push_back(it->second.back());
            it->second.pop_back();
            cached_ -= it->first;
          }
        }
        if (cached_ + bytes <= cap_) {
          free_[bytes].push_back(p);
          cached_ += bytes;
          p = nullptr;
        }
      }
    }
    for (void* q : evicted) std::free(q);
    if (p != nullptr) std::free(p);
  }

  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;
  size_t cached_ = 0;
  size_t cap_ = 0;
};

}  // namespace cpu
}  // namespace equiops
