// Which instruction set the CPU kernels run with: the AVX2 + FMA builds where the CPU
// has them, else the baseline build. EQUIOPS_CPU_ISA=generic forces the baseline (the
// tests use it to cover those kernels on AVX2 machines). Decided once per process.
#pragma once

#include <cstdlib>
#include <string>

namespace equiops {
namespace cpu {

inline bool cpu_has_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool avx2 = [] {
    const char* isa = std::getenv("EQUIOPS_CPU_ISA");
    if (isa != nullptr && std::string(isa) == "generic") return false;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return avx2;
#else
  return false;
#endif
}

}  // namespace cpu
}  // namespace equiops
